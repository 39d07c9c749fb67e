//! Builds the running graph from a validated [`Config`] and tears it down in order:
//! receivers stop accepting, pipelines drain their inboxes and flush their processors,
//! exporters drain their queues within the shutdown deadline.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::inbox::{ReceiverOutput, SignalConsumers, INBOX_CAPACITY};
use super::Processor;
use crate::config::model::{
    Config, ExporterConfig, ExtensionConfig, ProcessorConfig, ReceiverConfig,
};
use crate::exporters::helper::{self, ExporterHandle, ExporterTask, Sender};
use crate::exporters::{debug::DebugSender, otlp::OtlpGrpcSender, otlphttp::OtlpHttpSender};
use crate::extensions::health_check::HealthService;
use crate::net::{self, Protocol};
use crate::pdata::{Batch, Payload};
use crate::telemetry::metrics::Registry;
use crate::telemetry::server::TelemetryService;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] crate::receivers::otlp::BindError),
    #[error("{what}: cannot listen on {endpoint}: {source}")]
    Listen {
        what: String,
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exporter {id}: {message}")]
    Exporter { id: String, message: String },
}

/// A running graph.
pub struct Engine {
    /// Bound addresses: `receivers.<id>.grpc`, `receivers.<id>.http`, `telemetry`,
    /// `extensions.<id>` (useful when a config asks for port 0).
    pub addrs: BTreeMap<String, SocketAddr>,
    pub registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    stop_receivers: watch::Sender<bool>,
    drain_pipelines: watch::Sender<bool>,
    stop_servers: watch::Sender<bool>,
    receiver_tasks: Vec<JoinHandle<()>>,
    pipeline_tasks: Vec<JoinHandle<()>>,
    exporter_tasks: Vec<ExporterTask>,
    server_tasks: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

fn build_sender(
    id: &str,
    cfg: &ExporterConfig,
    registry: &Registry,
) -> Result<(Arc<dyn Sender>, ExporterSettings), String> {
    Ok(match cfg {
        ExporterConfig::Otlp(c) => (
            OtlpGrpcSender::new(c)? as Arc<dyn Sender>,
            ExporterSettings {
                queue: c.sending_queue.clone(),
                retry: c.retry_on_failure.clone(),
                timeout: c.timeout.0,
            },
        ),
        ExporterConfig::OtlpHttp(c) => (
            OtlpHttpSender::new(c)? as Arc<dyn Sender>,
            ExporterSettings {
                queue: c.sending_queue.clone(),
                retry: c.retry_on_failure.clone(),
                timeout: c.timeout.0,
            },
        ),
        ExporterConfig::PrometheusRemoteWrite(c) => (
            crate::exporters::prometheusremotewrite::PrwSender::new(id, c, registry)?
                as Arc<dyn Sender>,
            ExporterSettings {
                // One request at a time, in order: Prometheus rejects a sample older than
                // one it already has for the series, so concurrent senders could reorder and
                // lose data. `num_consumers` is accepted for compatibility.
                queue: helper::config::QueueConfig {
                    enabled: c.remote_write_queue.enabled,
                    num_consumers: 1,
                    queue_size: c.remote_write_queue.queue_size,
                    ..Default::default()
                },
                retry: c.retry_on_failure.clone(),
                timeout: c.timeout.0,
            },
        ),
        ExporterConfig::Debug(c) => (
            DebugSender::new(id, c) as Arc<dyn Sender>,
            ExporterSettings {
                queue: Default::default(),
                retry: Default::default(),
                timeout: Duration::from_secs(5),
            },
        ),
    })
}

struct ExporterSettings {
    queue: helper::config::QueueConfig,
    retry: helper::config::RetryConfig,
    timeout: Duration,
}

fn build_processor(
    id: &str,
    cfg: &ProcessorConfig,
    registry: &Arc<Registry>,
    wake: &Arc<Notify>,
) -> Box<dyn Processor> {
    match cfg {
        ProcessorConfig::Batch(c) => Box::new(crate::processors::batch::BatchProcessor::new(
            id,
            c.clone(),
            registry,
        )),
        ProcessorConfig::Attributes(c) => crate::processors::attributes_stage(id, c, registry),
        ProcessorConfig::Resource(c) => crate::processors::resource_stage(id, c, registry),
        ProcessorConfig::CardinalityLimiter(c) => Box::new(
            crate::processors::cardinality_limiter::CardinalityLimiter::new(
                id,
                c,
                Arc::clone(registry),
            ),
        ),
        ProcessorConfig::TailSampling(c) => Box::new(
            crate::processors::tail_sampling::TailSampling::new(id, c, registry, wake.clone()),
        ),
    }
}

impl Engine {
    /// Starts everything the config's pipelines use. Nothing is left running on error.
    pub async fn start(cfg: &Config, registry: Arc<Registry>) -> Result<Engine, StartError> {
        let (stop_receivers, stop_rx) = watch::channel(false);
        let (drain_pipelines, drain_rx) = watch::channel(false);
        let (stop_servers, servers_rx) = watch::channel(false);
        let grace = cfg.service.shutdown_timeout;
        let mut engine = Engine {
            addrs: BTreeMap::new(),
            registry: registry.clone(),
            ready: Arc::new(AtomicBool::new(false)),
            stop_receivers,
            drain_pipelines,
            stop_servers,
            receiver_tasks: Vec::new(),
            pipeline_tasks: Vec::new(),
            exporter_tasks: Vec::new(),
            server_tasks: Vec::new(),
            shutdown_timeout: grace,
        };

        // Self-telemetry first, so a failing start can still be observed.
        if let Some(addr) = cfg.service.telemetry.metrics_address() {
            let l = net::bind(&addr)
                .await
                .map_err(|source| StartError::Listen {
                    what: "service.telemetry.metrics".into(),
                    endpoint: addr.clone(),
                    source,
                })?;
            if let Ok(a) = l.local_addr() {
                engine.addrs.insert("telemetry".into(), a);
            }
            let svc = TelemetryService {
                registry: registry.clone(),
            };
            engine.server_tasks.push(net::serve(
                l,
                svc,
                Protocol::Auto,
                servers_rx.clone(),
                Duration::from_secs(1),
            ));
        }
        registry.gauge_fn(
            "otelcol_process_memory_rss",
            "Total physical memory (resident set size) in bytes.",
            &[],
            crate::telemetry::rss_bytes,
        );
        registry.gauge_fn(
            "otelcol_process_cpu_seconds",
            "Total CPU user and system time in seconds.",
            &[],
            crate::telemetry::cpu_seconds,
        );
        let started = std::time::Instant::now();
        registry.gauge_fn(
            "otelcol_process_uptime",
            "Uptime of the process in seconds.",
            &[],
            move || started.elapsed().as_secs_f64(),
        );

        // Exporters that some pipeline uses.
        let mut exporters: BTreeMap<String, ExporterHandle> = BTreeMap::new();
        for p in cfg.service.pipelines.values() {
            for id in &p.exporters {
                if exporters.contains_key(id) {
                    continue;
                }
                let Some(ecfg) = cfg.exporters.get(id) else {
                    continue;
                };
                let (sender, s) =
                    build_sender(id, ecfg, &registry).map_err(|message| StartError::Exporter {
                        id: id.clone(),
                        message,
                    })?;
                let (handle, task) =
                    helper::start(id, sender, &s.queue, &s.retry, s.timeout, &registry);
                exporters.insert(id.clone(), handle);
                engine.exporter_tasks.push(task);
            }
        }

        // Pipelines, each with its own inbox and processor instances.
        let mut consumers: BTreeMap<String, SignalConsumers> = BTreeMap::new();
        for (pid, p) in &cfg.service.pipelines {
            let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
            let wake = Arc::new(Notify::new());
            for r in &p.receivers {
                consumers
                    .entry(r.clone())
                    .or_default()
                    .get_mut(p.signal)
                    .inboxes
                    .push(tx.clone());
            }
            let procs = p
                .processors
                .iter()
                .filter_map(|id| {
                    cfg.processors
                        .get(id)
                        .map(|c| build_processor(id, c, &registry, &wake))
                })
                .collect();
            let outs = p
                .exporters
                .iter()
                .filter_map(|id| exporters.get(id).cloned())
                .collect();
            let task = tokio::spawn(run_pipeline(
                pid.clone(),
                rx,
                procs,
                outs,
                drain_rx.clone(),
                wake,
            ));
            engine.pipeline_tasks.push(task);
        }
        drop(exporters);

        for id in cfg.receivers.keys() {
            if !consumers.contains_key(id) {
                tracing::warn!("receiver {id} is configured but not used in any pipeline");
            }
        }
        for id in cfg.exporters.keys() {
            if !cfg
                .service
                .pipelines
                .values()
                .any(|p| p.exporters.contains(id))
            {
                tracing::warn!("exporter {id} is configured but not used in any pipeline");
            }
        }

        for (id, sc) in consumers {
            let Some(rcfg) = cfg.receivers.get(&id) else {
                continue;
            };
            let out = ReceiverOutput {
                id: Arc::from(id.as_str()),
                consumers: sc,
                registry: registry.clone(),
            };
            let ReceiverConfig::Otlp(c) = rcfg;
            let running = match crate::receivers::otlp::start(c, out, stop_rx.clone(), grace).await
            {
                Ok(r) => r,
                Err(e) => {
                    engine.shutdown().await;
                    return Err(e.into());
                }
            };
            for (transport, addr) in running.addrs {
                engine
                    .addrs
                    .insert(format!("receivers.{id}.{transport}"), addr);
            }
            engine.receiver_tasks.extend(running.tasks);
        }

        for ext in &cfg.service.extensions {
            let Some(ExtensionConfig::HealthCheck(h)) = cfg.extensions.get(ext) else {
                continue;
            };
            let l = match net::bind(&h.endpoint).await {
                Ok(l) => l,
                Err(source) => {
                    engine.shutdown().await;
                    return Err(StartError::Listen {
                        what: format!("extension {ext}"),
                        endpoint: h.endpoint.clone(),
                        source,
                    });
                }
            };
            if let Ok(a) = l.local_addr() {
                engine.addrs.insert(format!("extensions.{ext}"), a);
            }
            let svc = HealthService {
                path: Arc::from(h.path.as_str()),
                ready: engine.ready.clone(),
            };
            engine.server_tasks.push(net::serve(
                l,
                svc,
                Protocol::Auto,
                servers_rx.clone(),
                Duration::from_secs(1),
            ));
        }

        engine.ready.store(true, Ordering::Relaxed);
        Ok(engine)
    }

    /// Stops accepting, delivers what is held within `service.shutdown_timeout`, and logs
    /// whatever could not be delivered.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.shutdown_timeout;
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.stop_receivers.send(true);
        for t in self.receiver_tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        let _ = self.drain_pipelines.send(true);
        for t in self.pipeline_tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        for e in self.exporter_tasks {
            e.drain(deadline).await;
        }
        let _ = self.stop_servers.send(true);
        for t in self.server_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

/// Pushes `input` through `procs` in order.
fn push_through(procs: &mut [Box<dyn Processor>], input: Vec<Batch>) -> Vec<Batch> {
    let mut cur = input;
    for p in procs.iter_mut() {
        if cur.is_empty() {
            break;
        }
        let mut next = Vec::with_capacity(cur.len());
        for b in cur {
            p.process(b, &mut next);
        }
        cur = next;
    }
    cur
}

async fn fan_out(outs: &[ExporterHandle], batches: Vec<Batch>) {
    for mut b in batches {
        if b.items == 0 {
            continue;
        }
        // Encode once so every exporter shares the same bytes.
        if outs.len() > 1 && !matches!(b.payload, Payload::Encoded(_)) {
            b.payload = Payload::Encoded(b.to_bytes());
        }
        if let Some((last, rest)) = outs.split_last() {
            for o in rest {
                o.push(b.clone()).await;
            }
            last.push(b).await;
        }
    }
}

async fn run_pipeline(
    id: String,
    mut inbox: mpsc::Receiver<Batch>,
    mut procs: Vec<Box<dyn Processor>>,
    outs: Vec<ExporterHandle>,
    mut drain: watch::Receiver<bool>,
    wake: Arc<Notify>,
) {
    let mut draining = false;
    loop {
        let deadline = procs.iter().filter_map(|p| p.deadline()).min();
        let ready = tokio::select! {
            b = inbox.recv() => match b {
                Some(b) => push_through(&mut procs, vec![b]),
                None => break,
            },
            _ = wake.notified() => tick_all(&mut procs, Instant::now(), true),
            _ = sleep_until(deadline) => tick_all(&mut procs, Instant::now(), false),
            _ = crate::net::until_true(&mut drain), if !draining => {
                // Take what is already queued, then finish.
                draining = true;
                inbox.close();
                continue;
            }
        };
        fan_out(&outs, ready).await;
    }
    // Flush stage by stage: what stage i releases still runs through stages after it.
    for i in 0..procs.len() {
        let mut out = Vec::new();
        procs[i].flush(&mut out);
        let ready = push_through(&mut procs[i + 1..], out);
        fan_out(&outs, ready).await;
    }
    tracing::debug!(pipeline = %id, "pipeline stopped");
}

/// Gives due stages (or all, when a stage woke the pipeline) their tick; what they release
/// runs through the stages after them.
fn tick_all(procs: &mut [Box<dyn Processor>], now: Instant, all: bool) -> Vec<Batch> {
    let mut ready = Vec::new();
    for i in 0..procs.len() {
        if all || procs[i].deadline().is_some_and(|d| d <= now) {
            let mut out = Vec::new();
            procs[i].tick(now, &mut out);
            ready.extend(push_through(&mut procs[i + 1..], out));
        }
    }
    ready
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
