//! weir's own logs exported over OTLP (`service.telemetry.logs.processors`): a tracing layer
//! copies each of weir's log events into the bounded queue of every configured processor, and
//! one task per processor sends them in batches. A full queue drops the record (counted):
//! logging never waits on a backend. The exporters' own events are not exported, so a failing
//! backend cannot feed itself.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender as Tx, TrySendError};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::BatchLogProcessor;
use crate::pdata::{Batch, Payload, Signal};

/// The queues of the processors in force (replaced on reload).
fn queues() -> &'static Mutex<Vec<Tx<LogRecord>>> {
    static Q: OnceLock<Mutex<Vec<Tx<LogRecord>>>> = OnceLock::new();
    Q.get_or_init(|| Mutex::new(Vec::new()))
}

/// Records dropped because a processor's queue was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The layer that feeds the processors.
pub struct OtlpLogLayer;

struct Fields {
    message: String,
    attributes: Vec<KeyValue>,
}

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.attributes.push(kv(field.name(), format!("{value:?}")));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.attributes.push(kv(field.name(), value.to_string()));
        }
    }
}

fn severity(level: &tracing::Level) -> (i32, &'static str) {
    match *level {
        tracing::Level::TRACE => (1, "TRACE"),
        tracing::Level::DEBUG => (5, "DEBUG"),
        tracing::Level::INFO => (9, "INFO"),
        tracing::Level::WARN => (13, "WARN"),
        tracing::Level::ERROR => (17, "ERROR"),
    }
}

impl<S: Subscriber> Layer<S> for OtlpLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let target = meta.target();
        // weir's own events, not the exporters' (a failing backend must not feed itself).
        if !target.starts_with("weir")
            || target.starts_with("weir::telemetry::logs_export")
            || target.starts_with("weir::exporters")
        {
            return;
        }
        let q = queues().lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() {
            return;
        }
        let mut f = Fields {
            message: String::new(),
            attributes: Vec::new(),
        };
        event.record(&mut f);
        let (number, text) = severity(meta.level());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let record = LogRecord {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number: number,
            severity_text: text.into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(f.message)),
            }),
            attributes: f.attributes,
            ..Default::default()
        };
        for tx in q.iter() {
            if let Err(TrySendError::Full(_)) = tx.try_send(record.clone()) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Replaces the processors' queues (a reload); an empty list stops the copying.
pub fn set_queues(txs: Vec<Tx<LogRecord>>) {
    *queues().lock().unwrap_or_else(|e| e.into_inner()) = txs;
}

/// Starts one processor: its queue (to hand to [`set_queues`]) and its sending task, which
/// sends what is left and ends when `stop` turns true.
pub fn start(
    p: &BatchLogProcessor,
    resource: Vec<(String, String)>,
    mut stop: watch::Receiver<bool>,
) -> Result<(Tx<LogRecord>, JoinHandle<()>), String> {
    let sender = super::push::otlp_sender(&p.exporter.otlp, Signal::Logs)?;
    let (tx, rx) = crossbeam_channel::bounded::<LogRecord>(p.max_queue_size.max(1));
    let batch_size = p.max_export_batch_size.max(1);
    let delay = Duration::from_millis(p.schedule_delay).max(Duration::from_millis(20));
    let timeout = Duration::from_millis(p.export_timeout.max(1));
    let resource = Arc::new(resource);
    let send = move |rx: Receiver<LogRecord>,
                     resource: Arc<Vec<(String, String)>>,
                     sender: Arc<dyn crate::exporters::helper::Sender>| async move {
        loop {
            let records: Vec<LogRecord> = rx.try_iter().take(batch_size).collect();
            if records.is_empty() {
                return;
            }
            let full = records.len() == batch_size;
            let req = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(Resource {
                        attributes: resource.iter().map(|(k, v)| kv(k, v.clone())).collect(),
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: "weir".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        log_records: records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let items = crate::pdata::count_logs(&req);
            let batch = Batch {
                signal: Signal::Logs,
                items,
                payload: Payload::Logs(req),
                context: Arc::new(crate::pdata::Context::default()),
                held: None,
                compressed: None,
            };
            // A failure is not logged (that would feed the queue); the records are dropped.
            if !matches!(
                tokio::time::timeout(timeout, sender.send(&batch)).await,
                Ok(Ok(_))
            ) {
                DROPPED.fetch_add(items as u64, Ordering::Relaxed);
            }
            if !full {
                return;
            }
        }
    };
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => send(rx.clone(), resource.clone(), sender.clone()).await,
                _ = crate::net::until_true(&mut stop) => {
                    send(rx.clone(), resource.clone(), sender.clone()).await;
                    break;
                }
            }
        }
    });
    Ok((tx, task))
}
