//! One tail-sampling worker: owns the traces whose ids hash to it, their timers, the decision
//! caches and its copy of the policies. Nothing here is shared with other threads except the
//! policies' rate state and the counters.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::sync::Notify;

use super::config::TailSamplingConfig;
use super::policy::{self, Decision, Policy, SpanRef, TraceView};
use super::split::{join, Chunk, Group};
use super::Metrics;
use crate::pdata::{Batch, Signal};

/// Spans per output batch at most; larger releases are cut into several batches.
const OUT_BATCH_SPANS: usize = 8192;

/// Memory a buffered trace costs beyond its chunks: its map slot, timer, arrival entry and
/// chunk list.
const TRACE_OVERHEAD: usize = 192;
/// Budget of buffered span bytes when `max_buffered_bytes` is not set (for all shards).
pub const DEFAULT_BUFFER_BYTES: u64 = 512 << 20;

pub enum Control {
    /// Decide (or, with `drop_pending_traces_on_shutdown`, drop) everything held, send the
    /// results, then answer.
    Flush(Sender<()>),
    /// New settings and policies (a config reload): buffered traces stay and are decided by
    /// the new policies.
    Reconfigure(Box<Reconfigure>),
    /// Answer once everything sent before this has been taken in (a barrier, no decisions).
    Sync(Sender<()>),
}

pub struct Reconfigure {
    pub cfg: TailSamplingConfig,
    pub shards: usize,
    pub policies: Vec<Policy>,
    pub metrics: Metrics,
}

struct Trace {
    /// Distinguishes this trace from an earlier one with the same id in the timer heap.
    seq: u64,
    chunks: Vec<Chunk>,
    /// What the trace costs in memory (its part of the buffer budget).
    bytes: usize,
    /// Its spans' encoded bytes (what `maximum_trace_size_bytes` limits).
    span_bytes: usize,
    deadline: Instant,
    root_seen: bool,
}

/// A bounded map of trace id -> when it was decided; forgets its oldest entry first.
struct FifoSet {
    cap: usize,
    set: HashMap<[u8; 16], Instant>,
    order: VecDeque<[u8; 16]>,
}

impl FifoSet {
    fn new(cap: usize) -> FifoSet {
        FifoSet {
            cap,
            set: HashMap::new(),
            order: VecDeque::new(),
        }
    }
    fn insert(&mut self, id: [u8; 16]) {
        if self.cap == 0 || self.set.insert(id, Instant::now()).is_some() {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
    /// When `id` was decided, if it is remembered.
    fn get(&self, id: &[u8; 16]) -> Option<Instant> {
        self.set.get(id).copied()
    }
}

pub struct Shard {
    decision_wait: Duration,
    after_root: Duration,
    max_traces: usize,
    max_bytes: usize,
    max_trace_bytes: usize,
    block_on_overflow: bool,
    drop_on_shutdown: bool,
    first_match: bool,
    policies: Vec<Policy>,
    metrics: Metrics,
    traces: HashMap<[u8; 16], Trace>,
    /// (deadline, seq, id): the next trace to decide is on top.
    timers: BinaryHeap<Reverse<(Instant, u64, [u8; 16])>>,
    /// (seq, id) in arrival order: the oldest trace is at the front.
    arrivals: VecDeque<(u64, [u8; 16])>,
    next_seq: u64,
    bytes: usize,
    sampled_cache: FifoSet,
    not_sampled_cache: FifoSet,
    /// Sampled spans waiting to be sent, by context.
    pending: Vec<Chunk>,
    out: Sender<Batch>,
    wake: Arc<Notify>,
    /// What this shard last added to the shared gauges.
    reported: (i64, i64),
}

impl Shard {
    pub fn new(
        cfg: &TailSamplingConfig,
        shards: usize,
        policies: Vec<Policy>,
        metrics: Metrics,
        out: Sender<Batch>,
        wake: Arc<Notify>,
    ) -> Shard {
        let cache = |n: usize| if n == 0 { 0 } else { n.div_ceil(shards) };
        let mut shard = Shard {
            decision_wait: Duration::ZERO,
            after_root: Duration::ZERO,
            max_traces: 1,
            max_bytes: 1,
            max_trace_bytes: 0,
            block_on_overflow: false,
            drop_on_shutdown: false,
            first_match: false,
            policies: Vec::new(),
            metrics: metrics.clone(),
            traces: HashMap::with_capacity(
                (cfg.expected_new_traces_per_sec as usize / shards).min(1 << 20),
            ),
            timers: BinaryHeap::new(),
            arrivals: VecDeque::new(),
            next_seq: 0,
            bytes: 0,
            sampled_cache: FifoSet::new(cache(cfg.decision_cache.sampled_cache_size)),
            not_sampled_cache: FifoSet::new(cache(cfg.decision_cache.non_sampled_cache_size)),
            pending: Vec::new(),
            out,
            wake,
            reported: (0, 0),
        };
        shard.configure(Reconfigure {
            cfg: cfg.clone(),
            shards,
            policies,
            metrics,
        });
        shard
    }

    /// Applies settings; traces held, their timers and the caches' contents stay.
    fn configure(&mut self, r: Reconfigure) {
        let Reconfigure {
            cfg,
            shards,
            policies,
            metrics,
        } = r;
        let per = |total: u64| ((total as usize).div_ceil(shards)).max(1);
        let buffer = if cfg.max_buffered_bytes.0 == 0 {
            DEFAULT_BUFFER_BYTES
        } else {
            cfg.max_buffered_bytes.0
        };
        let cache = |n: usize| if n == 0 { 0 } else { n.div_ceil(shards) };
        self.decision_wait = cfg.decision_wait.0;
        self.after_root = cfg.decision_wait_after_root_received.0;
        self.max_traces = per(cfg.num_traces);
        self.max_bytes = per(buffer);
        self.max_trace_bytes = cfg.maximum_trace_size_bytes as usize;
        self.block_on_overflow = cfg.block_on_overflow;
        self.drop_on_shutdown = cfg.drop_pending_traces_on_shutdown;
        self.first_match = cfg.sample_on_first_match;
        self.policies = policies;
        self.sampled_cache.cap = cache(cfg.decision_cache.sampled_cache_size);
        self.not_sampled_cache.cap = cache(cfg.decision_cache.non_sampled_cache_size);
        // The gauges are shared handles: carry this shard's share over to the new ones.
        if !Arc::ptr_eq(&self.metrics.traces_on_memory, &metrics.traces_on_memory) {
            self.metrics
                .traces_on_memory
                .fetch_sub(self.reported.0, Ordering::Relaxed);
            self.metrics
                .bytes_on_memory
                .fetch_sub(self.reported.1, Ordering::Relaxed);
            self.reported = (0, 0);
        }
        self.metrics = metrics;
        self.report();
    }

    fn full(&self) -> bool {
        self.traces.len() >= self.max_traces || self.bytes >= self.max_bytes
    }

    /// The worker loop: ends when the stage goes away (its senders drop).
    pub fn run(mut self, data: Receiver<Vec<Chunk>>, control: Receiver<Control>) {
        loop {
            let now = Instant::now();
            let timeout = self
                .timers
                .peek()
                .map(|Reverse((d, _, _))| d.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(3600));
            if self.block_on_overflow && self.full() {
                // Hold ingest: the data channel fills and the pipeline waits; only timers
                // (and a flush) make progress here.
                match control.recv_timeout(timeout) {
                    Ok(Control::Flush(ack)) => self.flush(&data, ack),
                    Ok(Control::Reconfigure(r)) => self.configure(*r),
                    Ok(Control::Sync(ack)) => self.sync(&data, ack),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                select! {
                    recv(control) -> m => match m {
                        Ok(Control::Flush(ack)) => self.flush(&data, ack),
                        Ok(Control::Reconfigure(r)) => self.configure(*r),
                        Ok(Control::Sync(ack)) => self.sync(&data, ack),
                        Err(_) => return,
                    },
                    recv(data) -> m => match m {
                        Ok(chunks) => self.ingest(chunks),
                        Err(_) => return,
                    },
                    default(timeout) => {}
                }
            }
            self.decide_due(Instant::now());
            self.send_pending();
        }
    }

    fn sync(&mut self, data: &Receiver<Vec<Chunk>>, ack: Sender<()>) {
        while let Ok(chunks) = data.try_recv() {
            self.ingest_unbounded(chunks);
        }
        // Late spans of kept traces go out before the answer.
        self.send_pending();
        self.report();
        let _ = ack.send(());
    }

    fn flush(&mut self, data: &Receiver<Vec<Chunk>>, ack: Sender<()>) {
        while let Ok(chunks) = data.try_recv() {
            self.ingest_unbounded(chunks);
        }
        let ids: Vec<[u8; 16]> = self.arrivals.iter().map(|(_, id)| *id).collect();
        for id in ids {
            if let Some(t) = self.traces.remove(&id) {
                self.bytes -= t.bytes;
                if self.drop_on_shutdown {
                    self.metrics.not_sampled_traces.inc();
                    self.metrics.not_sampled_spans.add(t.chunks.len() as u64);
                    tracing::warn!(
                        "tail_sampling: dropping a pending trace of {} spans at shutdown (drop_pending_traces_on_shutdown)",
                        t.chunks.len()
                    );
                } else {
                    self.decide(id, t);
                }
            }
        }
        self.arrivals.clear();
        self.timers.clear();
        self.send_pending();
        self.report();
        let _ = ack.send(());
    }

    fn ingest(&mut self, chunks: Vec<Chunk>) {
        self.ingest_inner(chunks, true);
    }

    fn ingest_unbounded(&mut self, chunks: Vec<Chunk>) {
        self.ingest_inner(chunks, false);
    }

    fn ingest_inner(&mut self, chunks: Vec<Chunk>, enforce: bool) {
        let now = Instant::now();
        for c in chunks {
            let id = c.trace_id;
            if let Some(t) = self.traces.get_mut(&id) {
                let len = c.cost;
                t.bytes += len;
                t.span_bytes += c.span.len();
                self.bytes += len;
                if c.root && !t.root_seen {
                    t.root_seen = true;
                    if !self.after_root.is_zero() {
                        let d = now + self.after_root;
                        if d < t.deadline {
                            t.deadline = d;
                            self.timers.push(Reverse((d, t.seq, id)));
                        }
                    }
                }
                t.chunks.push(c);
                if self.max_trace_bytes > 0 && t.span_bytes > self.max_trace_bytes {
                    self.drop_too_large(id);
                }
                continue;
            }
            // Not buffered: a late span of a decided trace follows the cached decision.
            if let Some(at) = self.sampled_cache.get(&id) {
                self.metrics
                    .late_span_age
                    .observe(now.saturating_duration_since(at).as_secs_f64());
                self.metrics.late_sampled_spans.inc();
                self.metrics.sampled_spans.inc();
                self.pending.push(c);
                continue;
            }
            if let Some(at) = self.not_sampled_cache.get(&id) {
                self.metrics
                    .late_span_age
                    .observe(now.saturating_duration_since(at).as_secs_f64());
                self.metrics.late_dropped_spans.inc();
                self.metrics.not_sampled_spans.inc();
                continue;
            }
            // A new trace.
            if enforce && !self.block_on_overflow {
                while self.full() && self.evict_oldest() {}
            }
            self.metrics.new_traces.inc();
            let seq = self.next_seq;
            self.next_seq += 1;
            let mut deadline = now + self.decision_wait;
            if c.root && !self.after_root.is_zero() {
                deadline = deadline.min(now + self.after_root);
            }
            // The trace's own entries: map slot, timer, arrival, decision bookkeeping.
            let len = c.cost + TRACE_OVERHEAD;
            self.bytes += len;
            self.timers.push(Reverse((deadline, seq, id)));
            self.arrivals.push_back((seq, id));
            let root = c.root;
            let span_bytes = c.span.len();
            self.traces.insert(
                id,
                Trace {
                    seq,
                    chunks: vec![c],
                    bytes: len,
                    span_bytes,
                    deadline,
                    root_seen: root,
                },
            );
            if self.max_trace_bytes > 0 && span_bytes > self.max_trace_bytes {
                self.drop_too_large(id);
            }
        }
        self.report();
    }

    /// Decides the oldest buffered trace now; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((seq, id)) = self.arrivals.pop_front() {
            if self.traces.get(&id).is_some_and(|t| t.seq == seq) {
                if let Some(t) = self.traces.remove(&id) {
                    self.bytes -= t.bytes;
                    self.metrics.dropped_too_early.inc();
                    self.decide(id, t);
                    return true;
                }
            }
        }
        false
    }

    fn drop_too_large(&mut self, id: [u8; 16]) {
        if let Some(t) = self.traces.remove(&id) {
            self.bytes -= t.bytes;
            self.metrics.too_large.inc();
            self.metrics.not_sampled_traces.inc();
            self.metrics.not_sampled_spans.add(t.chunks.len() as u64);
            // Later spans of this trace are dropped too (even without a configured cache:
            // the point is that one huge trace cannot come back and eat the budget).
            self.not_sampled_cache.cap = self.not_sampled_cache.cap.max(1024);
            self.not_sampled_cache.insert(id);
            tracing::warn!(
                "tail_sampling: dropped a trace of {} spans ({} bytes): larger than maximum_trace_size_bytes ({})",
                t.chunks.len(),
                t.span_bytes,
                self.max_trace_bytes
            );
        }
    }

    fn decide_due(&mut self, now: Instant) {
        while let Some(Reverse((d, seq, id))) = self.timers.peek().copied() {
            if d > now {
                break;
            }
            self.timers.pop();
            let current = self
                .traces
                .get(&id)
                .is_some_and(|t| t.seq == seq && t.deadline == d);
            if !current {
                continue;
            }
            if let Some(t) = self.traces.remove(&id) {
                self.bytes -= t.bytes;
                self.decide(id, t);
            }
        }
        // Arrival entries of decided traces are dropped lazily; keep the queue from growing
        // past the live set.
        if self.arrivals.len() > 2 * self.traces.len() + 1024 {
            let traces = &self.traces;
            self.arrivals
                .retain(|(seq, id)| traces.get(id).is_some_and(|t| t.seq == *seq));
        }
        self.report();
    }

    /// Runs the policies over a whole trace and releases or drops it.
    fn decide(&mut self, id: [u8; 16], t: Trace) {
        let mut spans: Vec<Span> = Vec::with_capacity(t.chunks.len());
        let mut keep: Vec<Chunk> = Vec::with_capacity(t.chunks.len());
        for c in t.chunks {
            match Span::decode(c.span.clone()) {
                Ok(s) => {
                    spans.push(s);
                    keep.push(c);
                }
                Err(e) => {
                    self.metrics.undecodable_spans.inc();
                    tracing::warn!("tail_sampling: dropping a span that does not decode: {e}");
                }
            }
        }
        if keep.is_empty() {
            return;
        }
        // Resource and scope headers are shared by many spans: decode each once.
        let mut headers: Vec<(*const Group, ResourceSpans, ScopeSpans)> = Vec::new();
        let mut idx = Vec::with_capacity(keep.len());
        for c in &keep {
            let key = Arc::as_ptr(&c.group);
            let pos = match headers.iter().position(|(k, _, _)| *k == key) {
                Some(p) => p,
                None => {
                    let rs = ResourceSpans::decode(c.group.resource.clone()).unwrap_or_default();
                    let ss = ScopeSpans::decode(c.group.scope.clone()).unwrap_or_default();
                    headers.push((key, rs, ss));
                    headers.len() - 1
                }
            };
            idx.push(pos);
        }
        let view = TraceView {
            trace_id: &id,
            spans: spans
                .iter()
                .zip(&idx)
                .map(|(s, &h)| SpanRef {
                    resource: headers[h].1.resource.as_ref(),
                    scope: headers[h].2.scope.as_ref(),
                    span: s,
                })
                .collect(),
            bytes: t.bytes,
        };
        let latency = &self.metrics.decision_latency;
        let (sampled, votes) =
            policy::decide_timed(&mut self.policies, &view, self.first_match, &mut |i, d| {
                if let Some(h) = latency.get(i) {
                    h.observe(d.as_secs_f64() * 1e6);
                }
            });
        for (i, d) in votes {
            if let Some((yes, no)) = self.metrics.policy.get(i) {
                match d {
                    Decision::Sampled | Decision::InvertSampled => yes.inc(),
                    _ => no.inc(),
                }
            }
        }
        let n = keep.len() as u64;
        if sampled {
            self.metrics.sampled_traces.inc();
            self.metrics.sampled_spans.add(n);
            self.sampled_cache.insert(id);
            self.pending.extend(keep);
        } else {
            self.metrics.not_sampled_traces.inc();
            self.metrics.not_sampled_spans.add(n);
            self.not_sampled_cache.insert(id);
        }
    }

    /// Sends released spans downstream, one request per context, at most
    /// [`OUT_BATCH_SPANS`] spans each.
    fn send_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Stable: spans of one trace stay together and in order.
        let mut by_ctx: Vec<Vec<Chunk>> = Vec::new();
        for c in pending.drain(..) {
            let slot = by_ctx.iter_mut().find(|v| {
                v.first().is_some_and(|f| {
                    Arc::ptr_eq(&f.group.context, &c.group.context)
                        || same_context(&f.group.context, &c.group.context)
                })
            });
            match slot {
                Some(v) => v.push(c),
                None => by_ctx.push(vec![c]),
            }
        }
        for mut v in by_ctx {
            // Each part's spans are freed as soon as the part is joined, so a flush of the
            // whole buffer never holds the spans and their requests at once.
            while !v.is_empty() {
                let n = v.len().min(OUT_BATCH_SPANS);
                let part: Vec<Chunk> = v.drain(..n).collect();
                let part = part.as_slice();
                let bytes = join(part);
                // Sent on: charged to the budget so receivers wait while it is delivered.
                // It holds the write-ahead-log records of every request its spans came from.
                let ack = crate::pdata::ack::Ack::merge(
                    part.iter().filter_map(|c| c.group.context.ack.as_ref()),
                );
                let charge = part[0]
                    .group
                    .budget
                    .as_ref()
                    .map(|b| Arc::new(b.force(bytes.len())));
                let context = if charge.is_none() && ack.is_none() {
                    Arc::clone(&part[0].group.context)
                } else {
                    Arc::new(crate::pdata::Context {
                        charge,
                        ack,
                        ..(*part[0].group.context).clone()
                    })
                };
                let batch = Batch::encoded(Signal::Traces, bytes, part.len(), context);
                if self.out.send(batch).is_err() {
                    return;
                }
            }
        }
        self.pending = pending;
        self.wake.notify_one();
    }

    /// Adds this shard's change since the last report to the shared gauges.
    fn report(&mut self) {
        let now = (self.traces.len() as i64, self.bytes as i64);
        let m = &self.metrics;
        m.traces_on_memory
            .fetch_add(now.0 - self.reported.0, Ordering::Relaxed);
        m.bytes_on_memory
            .fetch_add(now.1 - self.reported.1, Ordering::Relaxed);
        self.reported = now;
    }
}

fn same_context(a: &crate::pdata::Context, b: &crate::pdata::Context) -> bool {
    a.receiver == b.receiver
        && a.transport == b.transport
        && a.tenant == b.tenant
        && a.metadata == b.metadata
}

impl Drop for Shard {
    fn drop(&mut self) {
        // Take this shard's share back out of the shared gauges.
        let m = &self.metrics;
        m.traces_on_memory
            .fetch_sub(self.reported.0, Ordering::Relaxed);
        m.bytes_on_memory
            .fetch_sub(self.reported.1, Ordering::Relaxed);
    }
}
