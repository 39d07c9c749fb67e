//! Pipeline inboxes and the admission step receivers use to hand a batch to every pipeline
//! they feed, all or nothing.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::pdata::{Batch, Signal};
use crate::telemetry::metrics::{Counter, Registry};

/// Batches a pipeline inbox holds before receivers have to wait.
pub const INBOX_CAPACITY: usize = 64;

/// How long a receiver waits for room in a full inbox before refusing the client.
pub const ADMISSION_WAIT: Duration = Duration::from_millis(250);

/// Why a batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A pipeline is full: retry later.
    Busy,
    /// The memory budget is spent: retry later.
    OverBudget,
    /// A `memory_limiter` finds the process over its soft limit: retry later.
    MemoryLimited(String),
    /// The pipeline is shutting down.
    Closed,
    /// The client could not be identified (no tenant, unknown token): HTTP 401 /
    /// UNAUTHENTICATED.
    Unauthenticated(String),
    /// A persistent queue cannot take the request (full, or its disk failed): retry later.
    Storage(String),
    /// The client is known but may not do this (a tenant header that is not its own): HTTP
    /// 401 / PERMISSION_DENIED.
    PermissionDenied(String),
    /// The client's tenant is over its rate: HTTP 429 / RESOURCE_EXHAUSTED, retry after.
    RateLimited {
        message: String,
        retry_after: Duration,
    },
}

/// A check a pipeline stage asks receivers to make before they accept a request for it, so
/// the client hears the answer (the `tenant` processor: identity and per-tenant rates).
pub trait Gate: Send + Sync {
    /// `items` of `signal` in a request of `bytes` bytes from the client in `ctx`.
    fn check(
        &self,
        ctx: &crate::pdata::Context,
        signal: Signal,
        items: usize,
        bytes: usize,
    ) -> Result<(), Refused>;
}

/// The pipelines one receiver feeds for one signal.
#[derive(Clone, Default)]
pub struct Consumers {
    pub inboxes: Vec<mpsc::Sender<Batch>>,
    /// For each inbox, the write-ahead logs the request is written to before it is accepted
    /// (empty for pipelines without a persistent queue).
    pub wals: Vec<Vec<Arc<crate::extensions::file_storage::wal::Wal>>>,
    /// Checks the pipelines' stages ask for, made before anything is queued.
    pub gates: Vec<Arc<dyn Gate>>,
}

impl Consumers {
    pub fn is_empty(&self) -> bool {
        self.inboxes.is_empty()
    }

    /// Hands `batch` to every pipeline, or to none of them.
    pub async fn admit(&self, batch: Batch) -> Result<(), Refused> {
        if !self.gates.is_empty() {
            let bytes = batch.encoded_len();
            for g in &self.gates {
                g.check(&batch.context, batch.signal, batch.items, bytes)?;
            }
        }
        let mut permits = Vec::with_capacity(self.inboxes.len());
        for tx in &self.inboxes {
            let permit = match tx.try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Closed(())) => return Err(Refused::Closed),
                Err(mpsc::error::TrySendError::Full(())) => {
                    match tokio::time::timeout(ADMISSION_WAIT, tx.reserve()).await {
                        Ok(Ok(p)) => p,
                        Ok(Err(_)) => return Err(Refused::Closed),
                        Err(_) => return Err(Refused::Busy),
                    }
                }
            };
            permits.push(permit);
        }
        // Durable pipelines: on disk before the client hears OK. A request refused here
        // releases what it already wrote (its acks are dropped).
        let mut acks: Vec<Option<Arc<crate::pdata::ack::Ack>>> = Vec::new();
        if self.wals.iter().any(|w| !w.is_empty()) {
            for logs in &self.wals {
                let mut leaves = Vec::with_capacity(logs.len());
                for w in logs {
                    leaves.push(
                        w.append(&batch)
                            .await
                            .map_err(|e| Refused::Storage(e.to_string()))?,
                    );
                }
                acks.push(crate::pdata::ack::Ack::merge(&leaves));
            }
        }
        let n = permits.len();
        let mut batch = Some(batch);
        for (i, p) in permits.into_iter().enumerate() {
            let Some(b) = (if i + 1 == n {
                batch.take()
            } else {
                batch.clone()
            }) else {
                break;
            };
            match acks.get_mut(i).and_then(Option::take) {
                Some(ack) => {
                    let mut b = b;
                    b.context = Arc::new(crate::pdata::Context {
                        ack: Some(ack),
                        ..(*b.context).clone()
                    });
                    p.send(b);
                }
                None => p.send(b),
            }
        }
        Ok(())
    }
}

/// The receiver-side self-metrics for one receiver and transport.
#[derive(Clone)]
pub struct ReceiverCounters {
    accepted: [Counter; 3],
    refused: [Counter; 3],
}

impl ReceiverCounters {
    pub fn new(registry: &Registry, receiver: &str, transport: &str) -> Self {
        let labels = [("receiver", receiver), ("transport", transport)];
        let acc = "Items successfully pushed into the pipeline.";
        let refu = "Items that could not be pushed into the pipeline.";
        ReceiverCounters {
            accepted: [
                registry.counter("otelcol_receiver_accepted_spans_total", acc, &labels),
                registry.counter(
                    "otelcol_receiver_accepted_metric_points_total",
                    acc,
                    &labels,
                ),
                registry.counter("otelcol_receiver_accepted_log_records_total", acc, &labels),
            ],
            refused: [
                registry.counter("otelcol_receiver_refused_spans_total", refu, &labels),
                registry.counter(
                    "otelcol_receiver_refused_metric_points_total",
                    refu,
                    &labels,
                ),
                registry.counter("otelcol_receiver_refused_log_records_total", refu, &labels),
            ],
        }
    }

    fn idx(s: Signal) -> usize {
        match s {
            Signal::Traces => 0,
            Signal::Metrics => 1,
            Signal::Logs => 2,
        }
    }

    pub fn accepted(&self, s: Signal, n: usize) {
        self.accepted[Self::idx(s)].add(n as u64);
    }

    pub fn refused(&self, s: Signal, n: usize) {
        self.refused[Self::idx(s)].add(n as u64);
    }
}

/// Per-signal consumers of one receiver.
#[derive(Clone, Default)]
pub struct SignalConsumers {
    pub traces: Consumers,
    pub metrics: Consumers,
    pub logs: Consumers,
}

impl SignalConsumers {
    pub fn get(&self, s: Signal) -> &Consumers {
        match s {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }
    pub fn get_mut(&mut self, s: Signal) -> &mut Consumers {
        match s {
            Signal::Traces => &mut self.traces,
            Signal::Metrics => &mut self.metrics,
            Signal::Logs => &mut self.logs,
        }
    }
}

/// The pipelines a receiver feeds, swappable while it runs: a config reload points a
/// receiver at new pipelines without touching its sockets. A request reads the set once and
/// keeps that snapshot to the end, so it goes where the config in force at acceptance said.
#[derive(Clone, Default)]
pub struct ConsumerHandle(Arc<std::sync::RwLock<Arc<SignalConsumers>>>);

impl ConsumerHandle {
    pub fn new(c: SignalConsumers) -> Self {
        ConsumerHandle(Arc::new(std::sync::RwLock::new(Arc::new(c))))
    }
    pub fn current(&self) -> Arc<SignalConsumers> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
    pub fn swap(&self, c: SignalConsumers) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
    }
}

/// What a receiver needs to push data: where to, and what to count.
#[derive(Clone)]
pub struct ReceiverOutput {
    pub id: Arc<str>,
    pub consumers: ConsumerHandle,
    pub registry: Arc<Registry>,
    /// What request bodies are reserved against before they are read.
    pub budget: Arc<super::budget::Budget>,
}
