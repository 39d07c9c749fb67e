//! The `memory_limiter` processor (all signals): measures the process's resident memory every
//! `check_interval` and, while it is above the soft limit (`limit - spike`), has receivers
//! refuse new data with a retryable error (gRPC UNAVAILABLE, HTTP 503: "data refused due to
//! high memory usage"), as the Collector's does. Data already accepted always passes: it is
//! never dropped to make room. Over a limit it asks the allocator to return freed memory to
//! the OS (the Collector forces a garbage collection), at most once per
//! `min_gc_interval_when_{soft,hard}_limited`.
//!
//! It also sizes weir's memory budget (see `pipeline::budget`): half the soft limit.
//!
//! Unlike the Collector, which measures the Go heap, weir measures resident memory (RSS):
//! what the kernel's OOM killer and a cgroup limit count.
pub mod config;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::config::loader::Body;
use crate::pdata::{Batch, Context, Signal};
use crate::pipeline::inbox::{Gate, Refused};
use crate::pipeline::registry::{
    all_signals, BuildEnv, Decode, Factory, ProcessorSettings, Stability,
};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Registry};
use config::{Limits, MemoryLimiterConfig};

pub static FACTORY: Factory = Factory {
    type_name: "memory_limiter",
    aliases: &[],
    stability: &all_signals(Stability::Beta),
    description: "refuses new data (retryable) while memory is over its soft limit",
    decode: Decode::Processor(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<MemoryLimiterConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ProcessorSettings for MemoryLimiterConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        Box::new(MemoryLimiter::new(id, env.registry))
    }
    fn gate(&self, id: &str, registry: &Arc<Registry>) -> Option<Arc<dyn Gate>> {
        Some(Arc::new(MemoryGate::new(id, self, registry)))
    }
    /// Half the soft limit: the other half is room for decoded copies, compression buffers
    /// and the stages' own state.
    fn memory_budget(&self, total_memory: u64) -> Option<u64> {
        Some(self.limits(total_memory).soft / 2)
    }
}

/// The message clients get, the Collector's.
pub const REFUSED: &str = "data refused due to high memory usage";

/// Memory this process may use: the cgroup's limit (v2, then v1), else the machine's.
pub fn total_memory() -> u64 {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        // "max", or v1's "no limit" (a page-rounded i64::MAX).
        .filter(|&v| v > 0 && v < (1 << 62));
    let machine = read("/proc/meminfo").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m),
        (Some(c), None) => c,
        (None, Some(m)) => m,
        (None, None) => 0,
    }
}

/// Resident memory of this process in bytes.
fn rss() -> u64 {
    crate::telemetry::rss_bytes() as u64
}

/// Returns freed memory to the OS (the allocator's collect; a no-op for memory it does not
/// manage).
fn collect() {
    // SAFETY: mi_collect has no preconditions; it walks mimalloc's own heaps.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// What the monitor thread shares with the gate.
struct State {
    refusing: AtomicBool,
    rss: AtomicU64,
}

/// The measuring thread: lives as long as its gate.
fn monitor(state: Weak<State>, cfg: MemoryLimiterConfig, limits: Limits, id: Arc<str>) {
    let mut last_collect: Option<Instant> = None;
    loop {
        std::thread::sleep(cfg.check_interval.0);
        let Some(state) = state.upgrade() else { return };
        let mut used = rss();
        let min_gap = if used >= limits.hard {
            Some(cfg.min_gc_interval_when_hard_limited.0)
        } else if used >= limits.soft {
            Some(cfg.min_gc_interval_when_soft_limited.0)
        } else {
            None
        };
        if let Some(gap) = min_gap {
            if last_collect.is_none_or(|t| t.elapsed() >= gap) {
                collect();
                last_collect = Some(Instant::now());
                used = rss();
            }
        }
        state.rss.store(used, Ordering::Relaxed);
        let refuse = used >= limits.soft;
        if state.refusing.swap(refuse, Ordering::Relaxed) != refuse {
            if refuse {
                tracing::warn!(
                    processor = %id,
                    "Memory usage is above soft limit. Refusing data. (rss {} MiB, soft limit {} MiB)",
                    used >> 20,
                    limits.soft >> 20
                );
            } else {
                tracing::info!(
                    processor = %id,
                    "Memory usage back within limits. Resuming normal operation. (rss {} MiB)",
                    used >> 20
                );
            }
        }
    }
}

/// The receiver-side half: refuses while memory is over the soft limit.
pub struct MemoryGate {
    state: Arc<State>,
    refused: [Counter; 3],
}

fn per_signal(registry: &Registry, what: &str, id: &str) -> [Counter; 3] {
    let mk = |s: Signal| {
        let name: &'static str = match (what, s) {
            ("refused", Signal::Traces) => "otelcol_processor_refused_spans_total",
            ("refused", Signal::Metrics) => "otelcol_processor_refused_metric_points_total",
            ("refused", Signal::Logs) => "otelcol_processor_refused_log_records_total",
            (_, Signal::Traces) => "otelcol_processor_accepted_spans_total",
            (_, Signal::Metrics) => "otelcol_processor_accepted_metric_points_total",
            (_, Signal::Logs) => "otelcol_processor_accepted_log_records_total",
        };
        let help = if what == "refused" {
            "Items the processor refused (the client was told to retry)."
        } else {
            "Items the processor passed on."
        };
        registry.counter(name, help, &[("processor", id)])
    };
    [mk(Signal::Traces), mk(Signal::Metrics), mk(Signal::Logs)]
}

fn idx(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

impl MemoryGate {
    /// Starts measuring (a thread that ends when the gate is dropped).
    pub fn new(id: &str, cfg: &MemoryLimiterConfig, registry: &Registry) -> MemoryGate {
        let limits = cfg.limits(total_memory());
        let state = Arc::new(State {
            refusing: AtomicBool::new(false),
            rss: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&state);
        let cfg = cfg.clone();
        let id_arc: Arc<str> = Arc::from(id);
        let spawned = std::thread::Builder::new()
            .name(format!("memory_limiter {id}"))
            .spawn(move || monitor(weak, cfg, limits, id_arc));
        if let Err(e) = spawned {
            tracing::error!(processor = %id, "cannot start the memory monitor: {e}");
        }
        MemoryGate {
            state,
            refused: per_signal(registry, "refused", id),
        }
    }

    /// Whether receivers are being told to retry now.
    pub fn refusing(&self) -> bool {
        self.state.refusing.load(Ordering::Relaxed)
    }
}

impl Gate for MemoryGate {
    fn check(&self, _: &Context, signal: Signal, items: usize, _: usize) -> Result<(), Refused> {
        if self.state.refusing.load(Ordering::Relaxed) {
            self.refused[idx(signal)].add(items as u64);
            return Err(Refused::MemoryLimited(REFUSED.into()));
        }
        Ok(())
    }
}

/// The pipeline stage: everything that reaches it was accepted, and passes.
pub struct MemoryLimiter {
    accepted: [Counter; 3],
}

impl MemoryLimiter {
    pub fn new(id: &str, registry: &Registry) -> MemoryLimiter {
        MemoryLimiter {
            accepted: per_signal(registry, "accepted", id),
        }
    }
}

impl Processor for MemoryLimiter {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        self.accepted[idx(batch.signal)].add(batch.items as u64);
        out.push(batch);
    }
}
