//! What every exporter shares: the bounded sending queue and its workers, retry with backoff,
//! the per-request timeout and the exporter self-metrics. An exporter only supplies a
//! [`Sender`]: how to send one batch and which failures are worth retrying.
//!
//! A slow or dead backend fills its own queue and nobody else's; whatever is given up on is
//! counted and logged, never dropped silently.
pub mod config;
pub mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::pdata::{Batch, Signal};
use crate::telemetry::metrics::{Counter, Registry};
use config::{QueueConfig, RetryConfig, Sizer};
use retry::Backoff;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why one send failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportError {
    /// Worth trying again, after `retry_after` if the backend said so.
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Will fail again: counted and logged, not retried.
    Permanent { message: String },
}

impl ExportError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ExportError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        ExportError::Permanent {
            message: message.into(),
        }
    }
}

/// What a backend accepted: `rejected` items it refused in a partial success.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sent {
    pub rejected: usize,
    pub message: Option<String>,
}

/// One exporter's way of sending a batch.
pub trait Sender: Send + Sync + 'static {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>>;
    /// Called once the exporter's own queue is drained (or `deadline` passed): a sender that
    /// queues further (the load balancer's backends) delivers what it holds by `deadline`.
    fn close(&self, _deadline: Instant) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
    /// Called when retries for `batch` run out: a sender that can deliver it another way
    /// (the load balancer's backends fail over) does so and returns true; else it is dropped.
    fn rescue<'a>(&'a self, _batch: &'a Batch) -> BoxFuture<'a, bool> {
        Box::pin(std::future::ready(false))
    }
}

fn signal_index(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

#[derive(Clone)]
struct PerSignal([Counter; 3]);

impl PerSignal {
    fn new(registry: &Registry, what: &str, exporter: &str) -> PerSignal {
        let mk = |s: Signal| {
            let name: &'static str = match (what, s) {
                ("sent", Signal::Traces) => "otelcol_exporter_sent_spans_total",
                ("sent", Signal::Metrics) => "otelcol_exporter_sent_metric_points_total",
                ("sent", Signal::Logs) => "otelcol_exporter_sent_log_records_total",
                ("send_failed", Signal::Traces) => "otelcol_exporter_send_failed_spans_total",
                ("send_failed", Signal::Metrics) => {
                    "otelcol_exporter_send_failed_metric_points_total"
                }
                ("send_failed", Signal::Logs) => "otelcol_exporter_send_failed_log_records_total",
                (_, Signal::Traces) => "otelcol_exporter_enqueue_failed_spans_total",
                (_, Signal::Metrics) => "otelcol_exporter_enqueue_failed_metric_points_total",
                (_, Signal::Logs) => "otelcol_exporter_enqueue_failed_log_records_total",
            };
            let help = match what {
                "sent" => "Items successfully sent to the destination.",
                "send_failed" => "Items the exporter failed to send (given up on).",
                _ => "Items that could not be added to the sending queue.",
            };
            registry.counter(name, help, &[("exporter", exporter)])
        };
        PerSignal([mk(Signal::Traces), mk(Signal::Metrics), mk(Signal::Logs)])
    }
    fn add(&self, s: Signal, n: usize) {
        self.0[signal_index(s)].add(n as u64);
    }
}

/// A queued batch and its room in the queue (given back when a worker takes it).
type Queued = (Batch, OwnedSemaphorePermit);

/// What pipelines hold to hand batches to an exporter.
#[derive(Clone)]
pub struct ExporterHandle {
    pub id: Arc<str>,
    /// With `sending_queue.batch`: the batcher, which merges requests before they are queued.
    batcher: Option<mpsc::Sender<Batch>>,
    tx: mpsc::UnboundedSender<Queued>,
    /// Room in the queue, in `sizer` units.
    room: Arc<Semaphore>,
    capacity: usize,
    sizer: Sizer,
    block_on_overflow: bool,
    queued: Arc<AtomicUsize>,
    enqueue_failed: PerSignal,
}

impl ExporterHandle {
    /// Queues a batch. With `block_on_overflow` this waits for room (backpressure);
    /// otherwise a full queue drops the batch for this exporter and counts it.
    pub async fn push(&self, batch: Batch) {
        if let Some(b) = &self.batcher {
            let (items, signal) = (batch.items, batch.signal);
            if let Err(e) = b.send(batch).await {
                abandon(&e.0);
                self.enqueue_failed.add(signal, items);
                tracing::error!(exporter = %self.id, "exporter stopped; dropped {items} {}", signal.item_noun());
            }
            return;
        }
        self.enqueue(batch).await
    }

    /// Puts a batch in the sending queue.
    /// Waits for room for `batch` without queueing it: [`ExporterHandle::commit`] queues it
    /// at once. A caller that queues several parts (the load balancer) reserves them all
    /// first, so giving up half-way (a timeout) queues nothing and a retry sends nothing
    /// twice. `None`: no room will come (the queue is closed, or full without
    /// `block_on_overflow`); the batch is counted and dropped as `push` would.
    pub async fn reserve(&self, batch: &Batch) -> Option<Reservation<'_>> {
        if let Some(b) = &self.batcher {
            return match b.reserve().await {
                Ok(p) => Some(Reservation::Batcher(p)),
                Err(_) => {
                    self.enqueue_failed.add(batch.signal, batch.items);
                    abandon(batch);
                    None
                }
            };
        }
        let size = self.sizer.size(batch).clamp(1, self.capacity);
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let permit = if self.block_on_overflow {
            Arc::clone(&self.room)
                .acquire_many_owned(permits)
                .await
                .ok()
        } else {
            Arc::clone(&self.room).try_acquire_many_owned(permits).ok()
        };
        match permit {
            Some(p) => Some(Reservation::Queue(p, size)),
            None => {
                self.enqueue_failed.add(batch.signal, batch.items);
                abandon(batch);
                tracing::warn!(exporter = %self.id, "sending queue is full or stopped; dropped {} {}", batch.items, batch.signal.item_noun());
                None
            }
        }
    }

    /// Queues `batch` into the room `r` reserved for it.
    pub fn commit(&self, r: Reservation<'_>, batch: Batch) {
        match r {
            Reservation::Batcher(p) => p.send(batch),
            Reservation::Queue(permit, size) => {
                let (items, signal) = (batch.items, batch.signal);
                self.queued.fetch_add(size, Ordering::Relaxed);
                if let Err(e) = self.tx.send((batch, permit)) {
                    self.queued.fetch_sub(size, Ordering::Relaxed);
                    self.enqueue_failed.add(signal, items);
                    abandon(&(e.0).0);
                    tracing::error!(exporter = %self.id, "exporter stopped; dropped {items} {}", signal.item_noun());
                }
            }
        }
    }

    async fn enqueue(&self, batch: Batch) {
        let items = batch.items;
        let signal = batch.signal;
        // A batch larger than the whole queue takes all of it, rather than never fitting.
        let size = self.sizer.size(&batch).clamp(1, self.capacity);
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let permit = if self.block_on_overflow {
            Arc::clone(&self.room)
                .acquire_many_owned(permits)
                .await
                .ok()
        } else {
            Arc::clone(&self.room).try_acquire_many_owned(permits).ok()
        };
        let Some(permit) = permit else {
            self.enqueue_failed.add(signal, items);
            if self.room.is_closed() {
                abandon(&batch);
                tracing::error!(exporter = %self.id, "exporter stopped; dropped {items} {}", signal.item_noun());
            } else {
                tracing::warn!(exporter = %self.id, "sending queue is full; dropped {items} {}", signal.item_noun());
            }
            return;
        };
        self.queued.fetch_add(size, Ordering::Relaxed);
        if let Err(e) = self.tx.send((batch, permit)) {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.enqueue_failed.add(signal, items);
            abandon(&(e.0).0);
            tracing::error!(exporter = %self.id, "exporter stopped; dropped {items} {}", signal.item_noun());
        }
    }
}

/// Room reserved in an exporter's queue (or its batcher) for one batch.
pub enum Reservation<'a> {
    Queue(tokio::sync::OwnedSemaphorePermit, usize),
    Batcher(mpsc::Permit<'a, Batch>),
}

/// A batch this exporter could not take because it is stopping: a durable pipeline keeps it
/// in its write-ahead log for the next start.
fn abandon(batch: &Batch) {
    if let Some(ack) = &batch.context.ack {
        if crate::extensions::file_storage::is_stopping() {
            ack.abandon();
        }
    }
}

/// The running side of an exporter: its workers.
pub struct ExporterTask {
    pub id: Arc<str>,
    sender: Arc<dyn Sender>,
    workers: Vec<JoinHandle<()>>,
    cancel: watch::Sender<bool>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>,
    room: Arc<Semaphore>,
    send_failed: PerSignal,
    queued: Arc<AtomicUsize>,
}

impl ExporterTask {
    /// Whether every worker has ended (its handles dropped and its queue delivered).
    pub fn is_finished(&self) -> bool {
        self.workers.iter().all(|w| w.is_finished())
    }

    /// Waits for the workers to drain the queue once every handle is dropped. At `deadline`
    /// they are told to stop; whatever is still queued is counted as failed and logged.
    pub async fn drain(self, deadline: Instant) {
        let cancel = self.cancel;
        // A finished handle must not be polled again: keep each as an Option and take it out
        // once it has completed.
        let mut workers: Vec<Option<JoinHandle<()>>> = self.workers.into_iter().map(Some).collect();
        let all = async {
            for w in workers.iter_mut() {
                if let Some(h) = w.as_mut() {
                    let _ = h.await;
                    *w = None;
                }
            }
        };
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            let _ = cancel.send(true);
            // Give workers a moment to count what they were holding.
            for w in workers.iter_mut() {
                let Some(h) = w.as_mut() else { continue };
                match tokio::time::timeout(Duration::from_millis(500), &mut *h).await {
                    Ok(_) => *w = None,
                    Err(_) => h.abort(),
                }
            }
        }
        let mut rx = self.rx.lock().await;
        rx.close();
        self.room.close();
        let mut lost = 0usize;
        let mut kept = 0usize;
        while let Ok((b, permit)) = rx.try_recv() {
            self.queued
                .fetch_sub(permit.num_permits(), Ordering::Relaxed);
            if let (Some(ack), true) = (
                &b.context.ack,
                crate::extensions::file_storage::is_stopping(),
            ) {
                // Durable: replayed at the next start.
                ack.abandon();
                kept += b.items;
                continue;
            }
            self.send_failed.add(b.signal, b.items);
            lost += b.items;
        }
        if kept > 0 {
            tracing::warn!(exporter = %self.id, "shutdown deadline passed; {kept} queued items stay in the persistent queue for the next start");
        }
        if lost > 0 {
            tracing::error!(exporter = %self.id, "shutdown deadline passed; {lost} queued items were not delivered");
        }
        drop(rx);
        self.sender.close(deadline).await;
    }
}

/// Starts an exporter's queue and workers.
pub fn start(
    id: &str,
    sender: Arc<dyn Sender>,
    queue: &QueueConfig,
    retry: &RetryConfig,
    timeout: Duration,
    registry: &Registry,
) -> (ExporterHandle, ExporterTask) {
    let (capacity, consumers, sizer) = if queue.enabled {
        (
            queue.queue_size.clamp(1, Semaphore::MAX_PERMITS),
            queue.num_consumers.max(1),
            queue.sizer,
        )
    } else {
        (1, 1, Sizer::Requests)
    };
    let id: Arc<str> = Arc::from(id);
    let (tx, rx) = mpsc::unbounded_channel::<Queued>();
    let room = Arc::new(Semaphore::new(capacity));
    let rx = Arc::new(Mutex::new(rx));
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let queued = Arc::new(AtomicUsize::new(0));
    let sent = PerSignal::new(registry, "sent", &id);
    let send_failed = PerSignal::new(registry, "send_failed", &id);
    let enqueue_failed = PerSignal::new(registry, "enqueue_failed", &id);
    let latency = registry.histogram(
        "weir_exporter_send_duration_seconds",
        "How long each attempt to send a request to the backend took (timeouts included).",
        &[("exporter", &id)],
        SEND_BUCKETS,
    );
    {
        let q = queued.clone();
        registry.gauge_fn(
            "otelcol_exporter_queue_size",
            "Current size of the retry queue (in units of its sizer).",
            &[("exporter", &id), ("sizer", sizer.as_str())],
            move || q.load(Ordering::Relaxed) as f64,
        );
        registry.gauge_fn(
            "otelcol_exporter_queue_capacity",
            "Fixed capacity of the retry queue (in units of its sizer).",
            &[("exporter", &id), ("sizer", sizer.as_str())],
            move || capacity as f64,
        );
    }
    let workers = (0..consumers)
        .map(|_| {
            let w = Worker {
                id: id.clone(),
                sender: sender.clone(),
                retry: retry.clone(),
                timeout,
                sent: sent.clone(),
                send_failed: send_failed.clone(),
                latency: latency.clone(),
                cancel: cancel_rx.clone(),
            };
            let rx = rx.clone();
            let queued = queued.clone();
            tokio::spawn(async move {
                loop {
                    let next = { rx.lock().await.recv().await };
                    let Some((batch, permit)) = next else { break };
                    queued.fetch_sub(permit.num_permits(), Ordering::Relaxed);
                    drop(permit);
                    w.deliver(batch).await;
                }
            })
        })
        .collect();
    let mut handle = ExporterHandle {
        id: id.clone(),
        batcher: None,
        tx,
        room: room.clone(),
        capacity,
        sizer,
        block_on_overflow: queue.block_on_overflow,
        queued: queued.clone(),
        enqueue_failed,
    };
    if let Some(b) = queue.batch.as_ref().filter(|_| queue.enabled) {
        handle.batcher = Some(spawn_batcher(
            &id,
            b,
            queue.batch_in_bytes(),
            handle.clone(),
            registry,
        ));
    }
    let task = ExporterTask {
        id,
        sender: sender.clone(),
        workers,
        cancel: cancel_tx,
        rx,
        room,
        send_failed,
        queued,
    };
    (handle, task)
}

/// Exporter-side batching: a task that merges what pipelines push (the `batch` processor's
/// merge and split, by items) and queues what is ready. It ends, flushing what it holds, when
/// every handle is gone; the queue's workers end after it.
fn spawn_batcher(
    id: &str,
    cfg: &config::QueueBatchConfig,
    in_bytes: bool,
    queue: ExporterHandle,
    registry: &Registry,
) -> mpsc::Sender<Batch> {
    use crate::pipeline::Processor;
    let (tx, mut rx) = mpsc::channel::<Batch>(64);
    let mut stage = crate::processors::batch::BatchProcessor::for_queue(
        &format!("{id}/sending_queue.batch"),
        cfg.flush_timeout.0,
        cfg.min_size,
        cfg.max_size,
        in_bytes,
        registry,
    );
    tokio::spawn(async move {
        let mut out = Vec::new();
        loop {
            let deadline = stage.deadline();
            tokio::select! {
                next = rx.recv() => match next {
                    Some(b) => stage.process(b, &mut out),
                    None => {
                        stage.flush(&mut out);
                        for b in out.drain(..) {
                            queue.enqueue(b).await;
                        }
                        break;
                    }
                },
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => stage.tick(Instant::now(), &mut out),
            }
            for b in out.drain(..) {
                queue.enqueue(b).await;
            }
        }
    });
    tx
}

struct Worker {
    id: Arc<str>,
    sender: Arc<dyn Sender>,
    retry: RetryConfig,
    timeout: Duration,
    sent: PerSignal,
    send_failed: PerSignal,
    latency: crate::telemetry::metrics::Histogram,
    cancel: watch::Receiver<bool>,
}

/// Send attempt durations, in seconds: 1 ms to 30 s.
const SEND_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Worker {
    /// Stops delivering `batch` because weir is stopping: data from a durable pipeline stays
    /// in its write-ahead log for the next start; other data is given up on.
    fn stopping(&self, batch: &Batch, why: &str) {
        match &batch.context.ack {
            Some(ack) if crate::extensions::file_storage::is_stopping() => {
                ack.abandon();
                tracing::warn!(
                    exporter = %self.id,
                    "{} {} not delivered ({why}); kept in the persistent queue for the next start",
                    batch.items,
                    batch.signal.item_noun()
                );
            }
            _ => self.give_up(batch, why),
        }
    }

    fn give_up(&self, batch: &Batch, why: &str) {
        self.send_failed.add(batch.signal, batch.items);
        tracing::error!(
            exporter = %self.id,
            "dropping {} {}: {why}",
            batch.items,
            batch.signal.item_noun()
        );
    }

    async fn deliver(&self, batch: Batch) {
        let started = Instant::now();
        let mut backoff = Backoff::new(&self.retry);
        let mut cancel = self.cancel.clone();
        loop {
            let attempt_started = Instant::now();
            let attempt = tokio::time::timeout(self.timeout, self.sender.send(&batch));
            let result = tokio::select! {
                r = attempt => match r {
                    Ok(r) => r,
                    Err(_) => Err(ExportError::retryable(format!(
                        "request timed out after {:?}",
                        self.timeout
                    ))),
                },
                _ = crate::net::until_true(&mut cancel) => {
                    self.stopping(&batch, "shutdown deadline passed while sending");
                    return;
                }
            };
            self.latency
                .observe(attempt_started.elapsed().as_secs_f64());
            let (message, retry_after) = match result {
                Ok(ok) => {
                    let accepted = batch.items.saturating_sub(ok.rejected);
                    self.sent.add(batch.signal, accepted);
                    if ok.rejected > 0 {
                        self.send_failed.add(batch.signal, ok.rejected);
                        tracing::warn!(
                            exporter = %self.id,
                            "backend rejected {} of {} {}: {}",
                            ok.rejected,
                            batch.items,
                            batch.signal.item_noun(),
                            ok.message.as_deref().unwrap_or("")
                        );
                    }
                    return;
                }
                Err(ExportError::Permanent { message }) => {
                    self.give_up(&batch, &format!("permanent error: {message}"));
                    return;
                }
                Err(ExportError::Retryable {
                    message,
                    retry_after,
                }) => (message, retry_after),
            };
            if !self.retry.enabled {
                if self.sender.rescue(&batch).await {
                    return;
                }
                self.give_up(&batch, &format!("{message} (retry_on_failure is disabled)"));
                return;
            }
            let wait = retry_after.unwrap_or_else(|| backoff.next_wait());
            let budget = self.retry.max_elapsed_time.0;
            if !budget.is_zero() && started.elapsed() + wait > budget {
                if self.sender.rescue(&batch).await {
                    return;
                }
                self.give_up(
                    &batch,
                    &format!("{message} (no more retries left after {budget:?})"),
                );
                return;
            }
            if *cancel.borrow() {
                self.stopping(&batch, &format!("{message} (shutting down)"));
                return;
            }
            tracing::warn!(exporter = %self.id, "send failed, retrying in {wait:?}: {message}");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::net::until_true(&mut cancel) => {
                    self.stopping(&batch, &format!("{message} (shutting down)"));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
