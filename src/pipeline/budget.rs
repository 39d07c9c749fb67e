//! The memory budget: the bytes of accepted data weir holds at once, wherever it waits
//! (request bodies being read, inboxes, the batch processor, exporter queues, requests being
//! sent and retried). Receivers reserve a request's bytes before they read or accept it and
//! refuse the client with a retryable error when the budget is spent; the reservation travels
//! with the data (in its [`Context`](crate::pdata::Context)) and is given back when the last
//! piece of it is delivered or dropped. Accepted data is never dropped to make room.
//!
//! Stages that make new batches out of accepted ones (batch merging, tail sampling's
//! decisions) charge the new batch without asking: the data is already accepted, and the
//! charge makes receivers refuse until it is delivered.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::telemetry::metrics::{Counter, Registry};

/// The budget when the config sets none (no `memory_limiter`, no `--memory-budget`).
pub const DEFAULT_BUDGET: usize = 128 << 20;

/// The budget a config sets: half of the lowest soft limit of the `memory_limiter`s its
/// pipelines use, less twice what tail sampling may buffer (the other half
/// is room for decoded copies, compression buffers and the stages' own state), else
/// [`DEFAULT_BUDGET`].
pub fn budget_for(cfg: &crate::config::model::Config) -> usize {
    let used: Vec<&crate::config::model::ProcessorConfig> = cfg
        .service
        .pipelines
        .values()
        .flat_map(|p| &p.processors)
        .filter_map(|id| cfg.processors.get(id))
        .collect();
    // Stages that buffer on their own budget (tail sampling's max_buffered_bytes) take their
    // share of the memory_limiter's half first, twice: what they hold, and as much again
    // decided and waiting to be delivered.
    let buffered: usize = used.iter().map(|p| p.settings.buffered_bytes()).sum();
    let mut total = None;
    used.iter()
        .filter_map(|p| {
            let total = *total.get_or_insert_with(crate::processors::memory_limiter::total_memory);
            p.settings.memory_budget(total)
        })
        .map(|b| (b as usize).saturating_sub(2 * buffered).max(MIN_BUDGET))
        .min()
        .unwrap_or(DEFAULT_BUDGET)
}

/// The least budget a `memory_limiter` leaves (one large request at a time still passes).
pub const MIN_BUDGET: usize = 16 << 20;

pub struct Budget {
    used: AtomicUsize,
    limit: AtomicUsize,
    refused: Counter,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Budget({}/{})", self.used(), self.limit())
    }
}

impl Budget {
    pub fn new(limit: usize, registry: &Registry) -> Arc<Budget> {
        let b = Arc::new(Budget {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            refused: registry.counter(
                "weir_memory_budget_refused_requests_total",
                "Requests refused (retryable) because the memory budget was spent.",
                &[],
            ),
        });
        let used = Arc::downgrade(&b);
        registry.gauge_fn(
            "weir_memory_budget_used_bytes",
            "Bytes of accepted data weir holds now (bodies being read, queued, in flight).",
            &[],
            move || used.upgrade().map(|b| b.used() as f64).unwrap_or(0.0),
        );
        let limit = Arc::downgrade(&b);
        registry.gauge_fn(
            "weir_memory_budget_limit_bytes",
            "The memory budget: receivers refuse new data while this much is held.",
            &[],
            move || limit.upgrade().map(|b| b.limit() as f64).unwrap_or(0.0),
        );
        b
    }

    /// A budget that never refuses (unit tests, stages built outside an engine).
    pub fn unlimited() -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(usize::MAX),
            refused: Counter::default(),
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Applies a new limit (a reload); data already held keeps its charges.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }

    /// Reserves `bytes` if the budget has room for them. One request may always be taken when
    /// nothing else is held, so a request larger than the whole budget is not refused forever.
    pub fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let limit = self.limit();
        let mut used = self.used();
        loop {
            if used > 0 && used.saturating_add(bytes) > limit {
                self.refused.inc();
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Charge {
                        budget: Arc::clone(self),
                        bytes,
                    })
                }
                Err(now) => used = now,
            }
        }
    }

    /// Whether anything more may be read now: false (and counted as a refusal) when the budget
    /// is already spent. For bodies whose size is known only once read (gRPC), so a full weir
    /// does not read them at all.
    pub fn has_room(&self) -> bool {
        let used = self.used();
        if used > 0 && used >= self.limit() {
            self.refused.inc();
            return false;
        }
        true
    }

    /// Charges `bytes` whether or not there is room (data already accepted).
    pub fn force(self: &Arc<Self>, bytes: usize) -> Charge {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        Charge {
            budget: Arc::clone(self),
            bytes,
        }
    }
}

/// Bytes held against a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Grows the reservation by `more` bytes if there is room (a body still arriving).
    pub fn try_grow(&mut self, more: usize) -> bool {
        match self.budget.try_charge(more) {
            Some(c) => {
                self.bytes += c.bytes;
                std::mem::forget(c);
                true
            }
            None => false,
        }
    }

    /// Sets the reservation to `bytes` (a body decompressed, or read and found smaller than
    /// announced). Growing here does not ask: the data is already in memory.
    pub fn resize(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget
                .used
                .fetch_add(bytes - self.bytes, Ordering::AcqRel);
        } else {
            self.budget
                .used
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
        }
        self.bytes = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> crate::config::model::Config {
        let loaded = crate::config::loader::load_sources(
            &[crate::config::loader::SourceFile {
                name: "t.yaml".into(),
                text: yaml.into(),
            }],
            &|_| None,
        )
        .expect("loads");
        crate::config::model::Config::from_loaded(&loaded).expect("valid")
    }

    #[test]
    fn a_decoded_batch_holds_its_decoded_size_until_it_is_gone() {
        use crate::pdata::{Batch, Context, Signal, DECODED_EXTRA_FACTOR};
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use prost::Message;
        let reg = Registry::new();
        let b = Budget::new(1 << 30, &reg);
        let bytes = ExportLogsServiceRequest::default().encode_to_vec();
        let body = [bytes.as_slice(), &[0x0a, 0x00]].concat(); // one empty ResourceLogs
        let charge = b.try_charge(body.len()).expect("room");
        let ctx = Context {
            charge: Some(std::sync::Arc::new(charge)),
            ..Default::default()
        };
        let mut batch = Batch::encoded(
            Signal::Logs,
            bytes::Bytes::from(body.clone()),
            0,
            std::sync::Arc::new(ctx),
        );
        assert_eq!(b.used(), body.len());
        batch.decode().expect("decodes");
        assert_eq!(b.used(), body.len() * (1 + DECODED_EXTRA_FACTOR));
        let split = batch.clone();
        drop(batch);
        assert_eq!(b.used(), body.len() * (1 + DECODED_EXTRA_FACTOR));
        drop(split);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn the_budget_is_half_the_soft_limit_of_a_memory_limiter_in_use() {
        let base = "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\nexporters: {debug: {}}\nprocessors:\n  memory_limiter: {check_interval: 1s, limit_mib: 1000, spike_limit_mib: 200}\n";
        let used = format!("{base}service: {{pipelines: {{traces: {{receivers: [otlp], processors: [memory_limiter], exporters: [debug]}}}}}}");
        assert_eq!(budget_for(&cfg(&used)), 400 << 20);
        let unused = format!(
            "{base}service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}}}"
        );
        assert_eq!(budget_for(&cfg(&unused)), DEFAULT_BUDGET);
        // Tail sampling's buffer takes its share twice (held, and decided awaiting delivery).
        let ts = format!(
            "{base}  tail_sampling: {{max_buffered_bytes: 100MiB, policies: [{{name: all, type: always_sample}}]}}\nservice: {{pipelines: {{traces: {{receivers: [otlp], processors: [memory_limiter, tail_sampling], exporters: [debug]}}}}}}"
        );
        assert_eq!(budget_for(&cfg(&ts)), 200 << 20);
    }

    #[test]
    fn charges_are_given_back_and_refusals_counted() {
        let reg = Registry::new();
        let b = Budget::new(100, &reg);
        let a = b.try_charge(60).expect("room");
        assert!(b.try_charge(50).is_none());
        let mut c = b.try_charge(40).expect("room");
        assert_eq!(b.used(), 100);
        assert!(!c.try_grow(1));
        c.resize(10);
        assert!(c.try_grow(30));
        assert_eq!(b.used(), 100);
        drop(a);
        drop(c);
        assert_eq!(b.used(), 0);
        // One request bigger than the whole budget passes when nothing else is held.
        let big = b.try_charge(1000).expect("alone");
        let forced = b.force(5);
        assert_eq!(b.used(), 1005);
        drop((big, forced));
        assert_eq!(b.used(), 0);
        assert!(b.has_room());
        let full = b.try_charge(100).expect("room");
        assert!(!b.has_room());
        drop(full);
        assert_eq!(
            reg.value("weir_memory_budget_refused_requests_total", &[]),
            Some(3.0)
        );
    }
}
