//! `tail_sampling`: holds each trace until it is complete, then keeps or drops the whole trace
//! by policy, with the OpenTelemetry Collector's config and semantics.
//!
//! Concurrency (DESIGN.md): the pipeline stage only splits incoming requests by trace id; the
//! traces live on `num_shards` worker threads that own their state outright, fed through
//! bounded crossbeam channels. Each worker checks its decision timers after every message and
//! whenever its channel is idle, so a flood of spans cannot starve decisions. Sampled traces
//! come back over a channel and a `Notify` wakes the pipeline to forward them.
//!
//! Memory: spans are kept as zero-copy slices of the received request (no decoding until the
//! decision), with each resource's and scope's header shared between its spans. Bounded by
//! `num_traces` and `max_buffered_bytes` (when either is full the oldest trace is decided early,
//! or with `block_on_overflow` ingest waits and backpressure reaches clients), and by
//! `maximum_trace_size_bytes` per trace.
pub mod config;
pub mod policy;
mod shard;
pub use shard::DEFAULT_BUFFER_BYTES;
mod split;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::loader::Body;
use crate::pdata::{Batch, Signal};
use crate::pipeline::registry::{
    BuildEnv, Carry, Decode, Factory, Handles, ProcessorSettings, Stability,
};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Histogram, Registry};
use config::TailSamplingConfig;

pub static FACTORY: Factory = Factory {
    type_name: "tail_sampling",
    aliases: &[],
    stability: &[(Handles::Signal(Signal::Traces), Stability::Beta)],
    description: "keeps whole traces by policy (errors, latency, attributes, rates)",
    decode: Decode::Processor(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<TailSamplingConfig>(|c| validate(c))?;
    Some(Box::new(c))
}

impl ProcessorSettings for TailSamplingConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        Box::new(TailSampling::new(id, self, env.registry, env.wake.clone()))
    }
    fn carry(&self) -> Carry {
        Carry::State
    }
    fn buffered_bytes(&self) -> usize {
        if self.max_buffered_bytes.0 == 0 {
            DEFAULT_BUFFER_BYTES as usize
        } else {
            self.max_buffered_bytes.0 as usize
        }
    }
}
use shard::{Control, Reconfigure, Shard};

/// Messages a shard's data channel holds before ingest waits.
const SHARD_CHANNEL: usize = 64;

/// Validates a config the way building it would: every policy compiles.
pub fn validate(cfg: &TailSamplingConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if cfg.decision_wait.0.is_zero() {
        problems.push((
            "decision_wait".into(),
            "must be greater than 0 (how long to wait for a trace's spans)".into(),
        ));
    }
    if cfg.num_traces == 0 {
        problems.push(("num_traces".into(), "must be greater than 0".into()));
    }
    if cfg.num_shards > 256 {
        problems.push(("num_shards".into(), "must be at most 256".into()));
    }
    if cfg.policies.is_empty() {
        problems.push((
            "policies".into(),
            "must list at least one policy (e.g. {name: all, type: always_sample})".into(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in cfg.policies.iter().enumerate() {
        if !p.name.is_empty() && !names.insert(p.name.as_str()) {
            problems.push((
                format!("policies[{i}].name"),
                format!("duplicate policy name {:?}", p.name),
            ));
        }
        if let Err(e) = policy::Policy::compile(p, &format!("policies[{i}]")) {
            problems.push(e);
        }
    }
    problems
}

/// Counters shared by the stage and its shards.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub sampled_traces: Counter,
    pub not_sampled_traces: Counter,
    pub sampled_spans: Counter,
    pub not_sampled_spans: Counter,
    pub dropped_too_early: Counter,
    pub late_sampled_spans: Counter,
    pub late_dropped_spans: Counter,
    pub new_traces: Counter,
    pub too_large: Counter,
    pub undecodable_spans: Counter,
    pub policy: Vec<(Counter, Counter)>,
    /// Per policy: evaluation time in microseconds.
    pub decision_latency: Vec<Histogram>,
    /// Seconds between a trace's decision and a late span of it.
    pub late_span_age: Histogram,
    pub traces_on_memory: Arc<AtomicI64>,
    pub bytes_on_memory: Arc<AtomicI64>,
}

impl Metrics {
    fn new(id: &str, cfg: &TailSamplingConfig, registry: &Registry) -> Metrics {
        let p = [("processor", id)];
        let sampled = |s: &'static str| [("processor", id), ("sampled", s)];
        let c = |name, help, labels: &[(&'static str, &str)]| registry.counter(name, help, labels);
        let traces_on_memory = Arc::new(AtomicI64::new(0));
        let bytes_on_memory = Arc::new(AtomicI64::new(0));
        let t = Arc::clone(&traces_on_memory);
        registry.gauge_fn(
            "otelcol_processor_tail_sampling_sampling_traces_on_memory",
            "Traces held in memory waiting for a decision.",
            &p,
            move || t.load(Ordering::Relaxed) as f64,
        );
        let b = Arc::clone(&bytes_on_memory);
        registry.gauge_fn(
            "weir_tail_sampling_buffered_bytes",
            "Encoded bytes of the spans held waiting for a decision.",
            &p,
            move || b.load(Ordering::Relaxed) as f64,
        );
        let global = "otelcol_processor_tail_sampling_global_count_traces_sampled_total";
        let global_help = "Traces decided, by final decision.";
        let spans = "otelcol_processor_tail_sampling_sampled_spans_total";
        let spans_help = "Spans of decided traces, by final decision.";
        let late = "otelcol_processor_tail_sampling_early_releases_from_cache_decision_total";
        let late_help = "Spans of already-decided traces that followed the cached decision.";
        Metrics {
            sampled_traces: c(global, global_help, &sampled("true")),
            not_sampled_traces: c(global, global_help, &sampled("false")),
            sampled_spans: c(spans, spans_help, &sampled("true")),
            not_sampled_spans: c(spans, spans_help, &sampled("false")),
            dropped_too_early: c(
                "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total",
                "Traces decided before decision_wait because the buffer was full.",
                &p,
            ),
            late_sampled_spans: c(late, late_help, &sampled("true")),
            late_dropped_spans: c(late, late_help, &sampled("false")),
            new_traces: c(
                "otelcol_processor_tail_sampling_new_trace_id_received_total",
                "Traces started (first span seen).",
                &p,
            ),
            too_large: c(
                "weir_tail_sampling_traces_too_large_total",
                "Traces dropped because they passed maximum_trace_size_bytes.",
                &p,
            ),
            undecodable_spans: c(
                "weir_tail_sampling_undecodable_spans_total",
                "Spans dropped because their bytes did not decode.",
                &p,
            ),
            policy: cfg
                .policies
                .iter()
                .map(|pc| {
                    let name = "otelcol_processor_tail_sampling_count_traces_sampled_total";
                    let help = "Traces each policy voted on, by its vote.";
                    let l = |s| {
                        [
                            ("processor", id),
                            ("policy", pc.name.as_str()),
                            ("sampled", s),
                        ]
                    };
                    (c(name, help, &l("true")), c(name, help, &l("false")))
                })
                .collect(),
            decision_latency: cfg
                .policies
                .iter()
                .map(|pc| {
                    registry.histogram(
                        "otelcol_processor_tail_sampling_sampling_decision_latency",
                        "Microseconds each policy took to evaluate a trace.",
                        &[("processor", id), ("policy", pc.name.as_str())],
                        &[
                            1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
                            20000.0,
                        ],
                    )
                })
                .collect(),
            late_span_age: registry.histogram(
                "otelcol_processor_tail_sampling_sampling_late_span_age",
                "Seconds between a trace's decision and a span of it arriving late.",
                &p,
                &[
                    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                ],
            ),
            traces_on_memory,
            bytes_on_memory,
        }
    }
}

struct ShardHandle {
    data: Sender<Vec<split::Chunk>>,
    control: Sender<Control>,
}

/// The pipeline stage.
pub struct TailSampling {
    id: Arc<str>,
    shards: Vec<ShardHandle>,
    output: Receiver<Batch>,
    scratch: Vec<Vec<split::Chunk>>,
    malformed: Counter,
}

/// Default shard count: one per core, at most 8.
fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

impl TailSampling {
    pub fn new(
        id: &str,
        cfg: &TailSamplingConfig,
        registry: &Registry,
        wake: Arc<Notify>,
    ) -> TailSampling {
        let n = if cfg.num_shards == 0 {
            default_shards()
        } else {
            cfg.num_shards
        };
        // Validated before the graph is built; a policy that does not compile here cannot
        // happen, and would be skipped rather than take weir down.
        let policies: Vec<policy::Policy> = cfg
            .policies
            .iter()
            .enumerate()
            .filter_map(|(i, p)| policy::Policy::compile(p, &format!("policies[{i}]")).ok())
            .collect();
        let metrics = Metrics::new(id, cfg, registry);
        let (out_tx, out_rx) = unbounded();
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let (data_tx, data_rx) = bounded(SHARD_CHANNEL);
            let (ctl_tx, ctl_rx) = unbounded();
            let shard = Shard::new(
                cfg,
                n,
                policies.clone(),
                metrics.clone(),
                out_tx.clone(),
                Arc::clone(&wake),
            );
            let name = format!("weir-tail-{i}");
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || shard.run(data_rx, ctl_rx));
            if let Err(e) = spawned {
                tracing::error!(processor = %id, "cannot start a tail sampling worker: {e}");
                continue;
            }
            shards.push(ShardHandle {
                data: data_tx,
                control: ctl_tx,
            });
        }
        TailSampling {
            id: Arc::from(id),
            scratch: (0..shards.len()).map(|_| Vec::new()).collect(),
            shards,
            output: out_rx,
            malformed: registry.counter(
                "weir_processor_dropped_items_total",
                "Items a processor could not handle and dropped.",
                &[("processor", id)],
            ),
        }
    }

    /// Applies a changed config to a running stage (a reload): buffered traces, their timers
    /// and the decision caches stay, and new policies decide traces already held. The shard
    /// count is fixed for the stage's life (trace ids are already spread over the workers).
    pub fn reconfigure(&mut self, cfg: &TailSamplingConfig, registry: &Registry) {
        let policies: Vec<policy::Policy> = cfg
            .policies
            .iter()
            .enumerate()
            .filter_map(|(i, p)| policy::Policy::compile(p, &format!("policies[{i}]")).ok())
            .collect();
        let metrics = Metrics::new(&self.id, cfg, registry);
        let n = self.shards.len();
        for s in &self.shards {
            let r = Reconfigure {
                cfg: cfg.clone(),
                shards: n,
                policies: policies.clone(),
                metrics: metrics.clone(),
            };
            if s.control.send(Control::Reconfigure(Box::new(r))).is_err() {
                tracing::error!(processor = %self.id, "a tail sampling worker has stopped");
            }
        }
    }

    /// Waits until every worker has taken in all it was sent and released what that let
    /// out (late spans of kept traces); no decision is forced.
    pub fn sync(&self) {
        let acks: Vec<_> = self
            .shards
            .iter()
            .filter_map(|s| {
                let (tx, rx) = bounded(1);
                s.control.send(Control::Sync(tx)).ok().map(|_| rx)
            })
            .collect();
        blocking(|| {
            for rx in acks {
                let _ = rx.recv_timeout(Duration::from_secs(30));
            }
        });
    }

    /// Waits up to `timeout` for the next batch the workers release (instead of polling).
    pub fn next_output(&self, timeout: Duration) -> Option<Batch> {
        blocking(|| self.output.recv_timeout(timeout).ok())
    }

    fn drain_output(&self, out: &mut Vec<Batch>) {
        while let Ok(b) = self.output.try_recv() {
            out.push(b);
        }
    }
}

/// Runs a blocking wait from inside the pipeline's async task without stalling the runtime's
/// other tasks (on the multi-threaded runtime weir runs).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Processor for TailSampling {
    fn reconfigure(&mut self, cfg: &dyn ProcessorSettings, registry: &Arc<Registry>) -> bool {
        match cfg.as_any().downcast_ref::<TailSamplingConfig>() {
            Some(c) => {
                TailSampling::reconfigure(self, c, registry);
                true
            }
            None => false,
        }
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        if batch.signal != Signal::Traces || self.shards.is_empty() {
            out.push(batch);
            return;
        }
        let bytes = batch.to_bytes();
        let n = self.shards.len();
        if let Err(e) = split::split(&bytes, &batch.context, n, &mut self.scratch) {
            self.malformed.add(batch.items as u64);
            tracing::error!(processor = %self.id, "dropping {} spans: {e}", batch.items);
            self.scratch.iter_mut().for_each(Vec::clear);
            return;
        }
        for (i, shard) in self.shards.iter().enumerate() {
            let chunks = std::mem::take(&mut self.scratch[i]);
            if chunks.is_empty() {
                continue;
            }
            match shard.data.try_send(chunks) {
                Ok(()) => {}
                Err(TrySendError::Full(chunks)) => {
                    // The shard is behind (or holding ingest for block_on_overflow): wait. The
                    // pipeline's inbox fills meanwhile and receivers refuse with a retryable
                    // error, which is the backpressure we want.
                    if blocking(|| shard.data.send(chunks)).is_err() {
                        tracing::error!(processor = %self.id, "a tail sampling worker has stopped");
                    }
                }
                Err(TrySendError::Disconnected(_)) => {
                    tracing::error!(processor = %self.id, "a tail sampling worker has stopped");
                }
            }
        }
        self.drain_output(out);
    }

    fn tick(&mut self, _now: Instant, out: &mut Vec<Batch>) {
        self.drain_output(out);
    }

    fn flush(&mut self, out: &mut Vec<Batch>) {
        let mut acks = Vec::new();
        for s in &self.shards {
            let (tx, rx) = bounded(1);
            if s.control.send(Control::Flush(tx)).is_ok() {
                acks.push(rx);
            }
        }
        blocking(|| {
            for rx in acks {
                // A worker answers once it has decided (or dropped) everything it holds.
                let _ = rx.recv_timeout(Duration::from_secs(30));
            }
        });
        self.drain_output(out);
    }
}
