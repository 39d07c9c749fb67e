//! Builds the running graph from a validated [`Config`], applies a new config to it (a
//! reload: only what changed is touched), and tears it down in order: receivers stop
//! accepting, pipelines drain their inboxes and flush their processors, exporters drain their
//! queues within the shutdown deadline.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::inbox::{ConsumerHandle, ReceiverOutput, SignalConsumers, INBOX_CAPACITY};
use super::registry::{BuildEnv, Carry, Connector, ServerEnv};
use super::Processor;
use crate::config::model::{
    Config, ConnectorConfig, ExporterConfig, ProcessorConfig, ReceiverConfig,
};
use crate::exporters::helper::{self, ExporterHandle, ExporterTask};
use crate::net::{self, Protocol};
use crate::pdata::{Batch, Payload};
use crate::telemetry::metrics::Registry;
use crate::telemetry::server::TelemetryService;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Receiver(Box<dyn std::error::Error + Send + Sync>),
    #[error("{what}: cannot listen on {endpoint}: {source}")]
    Listen {
        what: String,
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exporter {id}: {message}")]
    Exporter { id: String, message: String },
    #[error("pipeline {pipeline}: {source}")]
    Storage {
        pipeline: String,
        #[source]
        source: crate::extensions::file_storage::StorageError,
    },
}

pub use crate::telemetry::server::ReloadRequest;

/// Where a pipeline sends what its stages release: an exporter's queue, or a connector
/// that hands it to other pipelines.
#[derive(Clone)]
enum Out {
    Exporter(ExporterHandle),
    Connector(Arc<dyn Connector>),
}

impl Out {
    async fn push(&self, b: Batch) {
        match self {
            Out::Exporter(e) => e.push(b).await,
            Out::Connector(c) => c.push(b).await,
        }
    }
}

/// What a reload did, by component: `kind.id` entries.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    /// Components that could not start (the rest of the new config is in force).
    pub failed: Vec<String>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "added: {}; changed: {}; removed: {}; kept: {}",
            list(&self.added),
            list(&self.changed),
            list(&self.removed),
            list(&self.kept)
        )?;
        if !self.failed.is_empty() {
            write!(f, "; failed: {}", self.failed.join(", "))?;
        }
        Ok(())
    }
}

struct RunningReceiver {
    cfg: ReceiverConfig,
    consumers: ConsumerHandle,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    listeners: Vec<(&'static str, String, std::net::TcpListener)>,
}

/// Messages to a running pipeline.
enum Ctl {
    /// The pipeline is being replaced: finish the inbox (it closes once receivers point at
    /// the new pipeline), flush every stage not in `keep` (in order, through the stages after
    /// it, to the old exporters), then hand the `keep` stages over with their state.
    Handover {
        keep: Vec<String>,
        reply: oneshot::Sender<Handover>,
    },
}

/// Stateful stages passed from a replaced pipeline to its successor.
struct Handover {
    stages: Vec<(String, Box<dyn Processor>)>,
    wake: Arc<Notify>,
}

struct RunningPipeline {
    signal: crate::pdata::Signal,
    stages: Vec<(String, ProcessorConfig)>,
    /// Checks receivers make before accepting for this pipeline (from its tenant stages).
    gates: Vec<Arc<dyn super::inbox::Gate>>,
    exporters: Vec<String>,
    /// The write-ahead logs receivers write to before they accept for this pipeline (one per
    /// `file_storage` its exporters persist to).
    wals: Vec<Arc<crate::extensions::file_storage::wal::Wal>>,
    tx: Option<mpsc::Sender<Batch>>,
    ctl: mpsc::Sender<Ctl>,
    task: JoinHandle<()>,
}

struct RunningExporter {
    cfg: ExporterConfig,
    handle: ExporterHandle,
    task: ExporterTask,
}

struct RunningServer {
    /// What the server was started from (a reload restarts it when this changes).
    spec: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A running graph.
pub struct Engine {
    /// Bound addresses: `receivers.<id>.grpc`, `receivers.<id>.http`, `telemetry`,
    /// `extensions.<id>` (useful when a config asks for port 0).
    pub addrs: BTreeMap<String, SocketAddr>,
    pub registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    /// When this weir started (zpages' servicez).
    started: std::time::SystemTime,
    reload_requests: Option<mpsc::Sender<ReloadRequest>>,
    drain: watch::Sender<bool>,
    shutdown_timeout: Duration,
    receivers: BTreeMap<String, RunningReceiver>,
    pipelines: BTreeMap<String, RunningPipeline>,
    exporters: BTreeMap<String, RunningExporter>,
    /// Connectors: id -> (settings, the running connector).
    connectors: BTreeMap<String, (ConnectorConfig, Arc<dyn Connector>)>,
    servers: BTreeMap<String, RunningServer>,
    /// `periodic` metrics readers pushing weir's own metrics, and the log processors
    /// exporting its logs.
    pushers: BTreeMap<String, RunningServer>,
    /// The memory budget every receiver reserves against.
    pub budget: Arc<super::budget::Budget>,
}

impl Engine {
    /// Starts everything the config's pipelines use. Nothing is left running on error.
    /// `reload_requests` is where the telemetry endpoint's `POST /-/reload` sends requests.
    pub async fn start(
        cfg: &Config,
        registry: Arc<Registry>,
        reload_requests: Option<mpsc::Sender<ReloadRequest>>,
    ) -> Result<Engine, StartError> {
        let (drain, _) = watch::channel(false);
        let mut engine = Engine {
            addrs: BTreeMap::new(),
            registry: registry.clone(),
            ready: Arc::new(AtomicBool::new(false)),
            started: std::time::SystemTime::now(),
            reload_requests,
            drain,
            shutdown_timeout: cfg.service.shutdown_timeout,
            receivers: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            exporters: BTreeMap::new(),
            connectors: BTreeMap::new(),
            servers: BTreeMap::new(),
            pushers: BTreeMap::new(),
            budget: super::budget::Budget::new(super::budget::budget_for(cfg), &registry),
        };
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
        match engine.apply(cfg, true).await {
            Ok(_) => {
                engine.ready.store(true, Ordering::Relaxed);
                Ok(engine)
            }
            Err(e) => {
                engine.shutdown().await;
                Err(e)
            }
        }
    }

    /// Applies a new (validated) config to the running graph: components whose id and
    /// settings are unchanged keep running untouched; receivers keep their sockets when their
    /// endpoint stays; a replaced pipeline finishes what it accepted and hands its stateful
    /// stages (batch, tail_sampling, cardinality_limiter) to its successor; removed exporters
    /// drain their queues within `service.shutdown_timeout`. New components start before
    /// traffic is switched to them.
    pub async fn reload(&mut self, cfg: &Config) -> ReloadReport {
        self.shutdown_timeout = cfg.service.shutdown_timeout;
        match self.apply(cfg, false).await {
            Ok(r) => r,
            Err(e) => ReloadReport {
                failed: vec![e.to_string()],
                ..Default::default()
            },
        }
    }

    async fn apply(&mut self, cfg: &Config, starting: bool) -> Result<ReloadReport, StartError> {
        let mut report = ReloadReport::default();
        let deadline = Instant::now() + self.shutdown_timeout;
        self.budget.set_limit(super::budget::budget_for(cfg));

        // Telemetry first, so a failing start can still be observed.
        self.apply_servers(cfg, starting, &mut report).await?;
        if starting {
            for (id, e) in &cfg.extensions {
                for w in e.settings.start_warnings() {
                    tracing::warn!("extensions.{id}: {w}");
                }
            }
            for (id, c) in &cfg.connectors {
                for w in c.settings.start_warnings() {
                    tracing::warn!("connectors.{id}: {w}");
                }
            }
        }

        // 1. Exporters some pipeline uses: start the new and the changed ones.
        let used_exporters: BTreeMap<&String, &ExporterConfig> = cfg
            .service
            .pipelines
            .values()
            .flat_map(|p| &p.exporters)
            .filter_map(|id| cfg.exporters.get(id).map(|c| (id, c)))
            .collect();
        let mut retired_exporters = Vec::new();
        let mut fresh_exporters: Vec<String> = Vec::new();
        for (id, ecfg) in &used_exporters {
            let same = self.exporters.get(*id).is_some_and(|r| r.cfg == **ecfg);
            if same {
                report.kept.push(format!("exporters.{id}"));
                continue;
            }
            let parts = match ecfg.settings.build(id, &self.registry) {
                Ok(x) => x,
                Err(message) => {
                    let e = StartError::Exporter {
                        id: (*id).clone(),
                        message,
                    };
                    if starting {
                        return Err(e);
                    }
                    report.failed.push(e.to_string());
                    continue;
                }
            };
            let (handle, task) = helper::start(
                id,
                parts.sender,
                &parts.queue,
                &parts.retry,
                parts.timeout,
                &self.registry,
            );
            let new = RunningExporter {
                cfg: (*ecfg).clone(),
                handle,
                task,
            };
            match self.exporters.insert((*id).clone(), new) {
                Some(old) => {
                    report.changed.push(format!("exporters.{id}"));
                    retired_exporters.push(old);
                }
                None => report.added.push(format!("exporters.{id}")),
            }
            fresh_exporters.push((*id).clone());
        }
        let gone: Vec<String> = self
            .exporters
            .keys()
            .filter(|id| !used_exporters.contains_key(id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(old) = self.exporters.remove(&id) {
                report.removed.push(format!("exporters.{id}"));
                retired_exporters.push(old);
            }
        }

        // Connectors: one whose settings changed is new, and so are the pipelines that feed
        // it.
        let mut fresh_connectors: Vec<String> = Vec::new();
        let mut retired_connectors = Vec::new();
        let ids: Vec<String> = self.connectors.keys().cloned().collect();
        for id in ids {
            if !cfg.connectors.contains_key(&id) {
                if let Some((_, c)) = self.connectors.remove(&id) {
                    retired_connectors.push(c);
                }
            }
        }
        for (id, c) in &cfg.connectors {
            if self.connectors.get(id).is_some_and(|(old, _)| old == c) {
                continue;
            }
            let running = c.settings.build(id, &self.registry);
            if let Some((_, old)) = self.connectors.insert(id.clone(), (c.clone(), running)) {
                retired_connectors.push(old);
            }
            fresh_connectors.push(id.clone());
        }

        // 2. Pipelines: keep the unchanged, replace the changed (handing state over), start
        // the new, let the removed finish.
        let mut retired_pipelines = Vec::new();
        for (pid, p) in &cfg.service.pipelines {
            let stages: Vec<(String, ProcessorConfig)> = p
                .processors
                .iter()
                .filter_map(|id| cfg.processors.get(id).map(|c| (id.clone(), c.clone())))
                .collect();
            let exporters_changed = p
                .exporters
                .iter()
                .any(|e| fresh_exporters.contains(e) || fresh_connectors.contains(e));
            if let Some(r) = self.pipelines.get(pid) {
                if r.signal == p.signal
                    && r.stages == stages
                    && r.exporters == p.exporters
                    && !exporters_changed
                {
                    report.kept.push(format!("pipelines.{pid}"));
                    continue;
                }
            }
            let outs: Vec<Out> = p
                .exporters
                .iter()
                .filter_map(|id| match self.exporters.get(id) {
                    Some(r) => Some(Out::Exporter(r.handle.clone())),
                    None => self
                        .connectors
                        .get(id)
                        .map(|(_, c)| Out::Connector(c.clone())),
                })
                .collect();
            let fed_by_connector = p.receivers.iter().any(|r| cfg.connectors.contains_key(r));
            let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
            let (ctl_tx, ctl_rx) = mpsc::channel(1);
            let inherit = match self.pipelines.remove(pid) {
                Some(mut old) => {
                    report.changed.push(format!("pipelines.{pid}"));
                    // Stateful stages that stay (same id and type) carry their state over;
                    // a batch stage only when the exporters stay, so what it holds goes where
                    // it was accepted for.
                    let keep: Vec<String> = old
                        .stages
                        .iter()
                        .filter(|(id, c)| {
                            let same_type = stages
                                .iter()
                                .any(|(nid, nc)| nid == id && nc.type_name == c.type_name);
                            same_type
                                && match c.settings.carry() {
                                    Carry::Rebuild => false,
                                    Carry::State => true,
                                    Carry::StateWhenOutputsStay => {
                                        old.exporters == p.exporters && !exporters_changed
                                    }
                                }
                        })
                        .map(|(id, _)| id.clone())
                        .collect();
                    let (reply_tx, reply_rx) = oneshot::channel();
                    let _ = old
                        .ctl
                        .send(Ctl::Handover {
                            keep,
                            reply: reply_tx,
                        })
                        .await;
                    old.tx = None;
                    retired_pipelines.push(old.task);
                    Some(reply_rx)
                }
                None => {
                    report.added.push(format!("pipelines.{pid}"));
                    None
                }
            };
            let gates: Vec<Arc<dyn super::inbox::Gate>> = stages
                .iter()
                .filter_map(|(sid, c)| c.settings.gate(sid, &self.registry))
                .collect();
            let wals = match self.open_logs(cfg, pid) {
                Ok(w) => w,
                Err(e) if starting => return Err(e),
                Err(e) => {
                    tracing::error!("{e}; this pipeline runs without its persistent queue until the next reload or start that can open it");
                    report.failed.push(e.to_string());
                    Vec::new()
                }
            };
            for w in &wals {
                self.replay(w, &tx);
            }
            let task = tokio::spawn(run_pipeline(PipelineRun {
                id: pid.clone(),
                inbox: rx,
                stages: stages.clone(),
                registry: self.registry.clone(),
                inherit,
                outs,
                drain: self.drain.subscribe(),
                fed_by_connector,
                ctl: ctl_rx,
            }));
            self.pipelines.insert(
                pid.clone(),
                RunningPipeline {
                    signal: p.signal,
                    stages,
                    gates,
                    exporters: p.exporters.clone(),
                    wals,
                    tx: Some(tx),
                    ctl: ctl_tx,
                    task,
                },
            );
        }
        let gone: Vec<String> = self
            .pipelines
            .keys()
            .filter(|id| !cfg.service.pipelines.contains_key(*id))
            .cloned()
            .collect();
        for pid in gone {
            if let Some(mut old) = self.pipelines.remove(&pid) {
                report.removed.push(format!("pipelines.{pid}"));
                // Its inbox closes once no receiver points at it; then it flushes and ends.
                old.tx = None;
                retired_pipelines.push(old.task);
            }
        }

        // Point every connector at the inboxes of the pipelines it feeds.
        for (cid, (_, connector)) in &self.connectors {
            let mut targets = BTreeMap::new();
            for (pid, p) in &cfg.service.pipelines {
                if p.receivers.contains(cid) {
                    if let Some(tx) = self.pipelines.get(pid).and_then(|r| r.tx.clone()) {
                        targets.insert(pid.clone(), tx);
                    }
                }
            }
            connector.set_targets(targets);
        }

        // 3. Receivers: point every receiver at the pipelines now in force.
        let mut consumers: BTreeMap<String, SignalConsumers> = BTreeMap::new();
        for (pid, p) in &cfg.service.pipelines {
            let Some(running) = self.pipelines.get(pid) else {
                continue;
            };
            let Some(tx) = running.tx.clone() else {
                continue;
            };
            for r in &p.receivers {
                let c = consumers.entry(r.clone()).or_default().get_mut(p.signal);
                c.inboxes.push(tx.clone());
                c.wals.push(running.wals.clone());
                c.gates.extend(running.gates.iter().cloned());
            }
        }
        if starting {
            for id in cfg.receivers.keys() {
                if !consumers.contains_key(id) {
                    tracing::warn!("receiver {id} is configured but not used in any pipeline");
                }
            }
            for id in cfg.exporters.keys() {
                if !used_exporters.contains_key(id) {
                    tracing::warn!("exporter {id} is configured but not used in any pipeline");
                }
            }
        }
        let mut stopping: Vec<RunningReceiver> = Vec::new();
        for (rid, sc) in consumers {
            let Some(rcfg) = cfg.receivers.get(&rid) else {
                continue;
            };
            if let Some(r) = self.receivers.get(&rid) {
                if r.cfg == *rcfg {
                    r.consumers.swap(sc);
                    report.kept.push(format!("receivers.{rid}"));
                    continue;
                }
            }
            let old = self.receivers.remove(&rid);
            let handle = old
                .as_ref()
                .map(|o| o.consumers.clone())
                .unwrap_or_else(|| ConsumerHandle::new(SignalConsumers::default()));
            let reuse: &[(&'static str, String, std::net::TcpListener)] =
                old.as_ref().map(|o| o.listeners.as_slice()).unwrap_or(&[]);
            let (stop_tx, stop_rx) = watch::channel(false);
            let out = ReceiverOutput {
                id: Arc::from(rid.as_str()),
                consumers: handle.clone(),
                registry: self.registry.clone(),
                budget: self.budget.clone(),
            };
            match rcfg
                .settings
                .start(out, stop_rx, self.shutdown_timeout, reuse)
                .await
            {
                Ok(running) => {
                    handle.swap(sc);
                    for (transport, addr) in &running.addrs {
                        self.addrs
                            .insert(format!("receivers.{rid}.{transport}"), *addr);
                    }
                    match old {
                        Some(o) => {
                            report.changed.push(format!("receivers.{rid}"));
                            stopping.push(o);
                        }
                        None => report.added.push(format!("receivers.{rid}")),
                    }
                    self.receivers.insert(
                        rid.clone(),
                        RunningReceiver {
                            cfg: rcfg.clone(),
                            consumers: handle,
                            stop: stop_tx,
                            tasks: running.tasks,
                            listeners: running.listeners,
                        },
                    );
                }
                Err(e) => {
                    let e = StartError::Receiver(e);
                    if starting {
                        return Err(e);
                    }
                    report.failed.push(e.to_string());
                    // Keep the old server (pointed at the new pipelines) rather than lose it.
                    if let Some(o) = old {
                        handle.swap(sc);
                        self.receivers.insert(rid.clone(), o);
                    }
                }
            }
        }
        let used: Vec<&String> = cfg
            .service
            .pipelines
            .values()
            .flat_map(|p| &p.receivers)
            .collect();
        let gone: Vec<String> = self
            .receivers
            .keys()
            .filter(|id| !used.contains(id))
            .cloned()
            .collect();
        for rid in gone {
            if let Some(o) = self.receivers.remove(&rid) {
                report.removed.push(format!("receivers.{rid}"));
                o.consumers.swap(SignalConsumers::default());
                self.addrs
                    .retain(|k, _| !k.starts_with(&format!("receivers.{rid}.")));
                stopping.push(o);
            }
        }
        // Replaced receivers stop accepting (their sockets stay open in the new servers when
        // the endpoint is the same) and finish the requests they carry.
        for o in stopping {
            let _ = o.stop.send(true);
            for t in o.tasks {
                let _ = tokio::time::timeout_at(deadline, t).await;
            }
        }

        // 4. Replaced and removed pipelines finish what they accepted.
        for t in retired_pipelines {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                tracing::error!(
                    "a replaced pipeline did not finish within service.shutdown_timeout"
                );
            }
        }
        // Replaced and removed connectors hand on what they hold when their last reference
        // (the retired pipelines') goes: their flush tasks end on drop.
        drop(retired_connectors);
        // 5. Replaced and removed exporters deliver what they queued.
        for e in retired_exporters {
            drop(e.handle);
            e.task.drain(deadline).await;
        }
        Ok(report)
    }

    /// The write-ahead logs of pipeline `pid`: one per `file_storage` that an exporter it
    /// reaches (directly or through connectors) persists its queue to. Opening a storage takes
    /// its directory's lock; the first open of a log reads what a previous run left.
    fn open_logs(
        &self,
        cfg: &Config,
        pid: &str,
    ) -> Result<Vec<Arc<crate::extensions::file_storage::wal::Wal>>, StartError> {
        let mut wanted: Vec<(String, helper::config::QueueConfig)> = Vec::new();
        let mut seen = vec![pid.to_string()];
        let mut todo = vec![pid.to_string()];
        while let Some(p) = todo.pop() {
            let Some(pc) = cfg.service.pipelines.get(&p) else {
                continue;
            };
            for e in &pc.exporters {
                if let Some(ec) = cfg.exporters.get(e) {
                    if let (Some(st), Some(q)) =
                        (ec.settings.storage(), ec.settings.sending_queue())
                    {
                        if !wanted.iter().any(|(w, _)| w == st) {
                            wanted.push((st.to_string(), q.clone()));
                        }
                    }
                } else if cfg.connectors.contains_key(e) {
                    for (next, npc) in &cfg.service.pipelines {
                        if npc.receivers.contains(e) && !seen.contains(next) {
                            seen.push(next.clone());
                            todo.push(next.clone());
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (st, q) in wanted {
            let Some(ext) = cfg.extensions.get(&st) else {
                continue;
            };
            let Some(log) = ext.settings.open_log(&st, pid, &q, &self.registry) else {
                continue;
            };
            out.push(log.map_err(|source| StartError::Storage {
                pipeline: pid.to_string(),
                source,
            })?);
        }
        Ok(out)
    }

    /// Sends what a previous run left in `wal` through its pipeline again, in the background:
    /// each record waits for room in the memory budget and the inbox like a new request.
    fn replay(
        &self,
        wal: &Arc<crate::extensions::file_storage::wal::Wal>,
        tx: &mpsc::Sender<Batch>,
    ) {
        let it = wal.take_replay();
        if it.is_empty() {
            return;
        }
        let tx = tx.clone();
        let budget = self.budget.clone();
        let mut drain = self.drain.subscribe();
        tokio::spawn(async move {
            let mut it = it;
            loop {
                let Ok((next, back)) = tokio::task::spawn_blocking(move || {
                    let b = it.next_batch();
                    (b, it)
                })
                .await
                else {
                    return;
                };
                it = back;
                let Some(mut batch) = next else { return };
                let bytes = batch.encoded_len();
                let charge = loop {
                    if *drain.borrow() {
                        // Stopping: the rest stays in the log (this record too: abandoned).
                        if let Some(a) = &batch.context.ack {
                            a.abandon();
                        }
                        return;
                    }
                    if let Some(c) = budget.try_charge(bytes) {
                        break c;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = drain.changed() => {}
                    }
                };
                let mut ctx = (*batch.context).clone();
                ctx.charge = Some(Arc::new(charge));
                batch.context = Arc::new(ctx);
                if let Err(e) = tx.send(batch).await {
                    if let Some(a) = &e.0.context.ack {
                        a.abandon();
                    }
                    return;
                }
            }
        });
    }

    /// Telemetry endpoint and extensions: restarted only when their settings change.
    async fn apply_servers(
        &mut self,
        cfg: &Config,
        starting: bool,
        report: &mut ReloadReport,
    ) -> Result<(), StartError> {
        let mut wanted: BTreeMap<String, (String, ServerKind)> = BTreeMap::new();
        if let Some(addr) = cfg.service.telemetry.metrics_address() {
            wanted.insert(
                "telemetry".into(),
                (
                    format!("{addr} {:?}", cfg.service.telemetry.exposition()),
                    ServerKind::Telemetry(addr, Arc::new(cfg.service.telemetry.exposition())),
                ),
            );
        }
        let pipelines: Vec<super::registry::PipelineRow> = cfg
            .service
            .pipelines
            .iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    p.receivers.clone(),
                    p.processors.clone(),
                    p.exporters.clone(),
                )
            })
            .collect();
        let env = ServerEnv {
            registry: &self.registry,
            ready: &self.ready,
            started: self.started,
            pipelines: &pipelines,
            extensions: &cfg.service.extensions,
        };
        for ext in &cfg.service.extensions {
            let Some(e) = cfg.extensions.get(ext) else {
                continue;
            };
            if let Some(server) = e.settings.server(&env) {
                let key = format!("extensions.{ext}");
                wanted.insert(key, (server.spec.clone(), ServerKind::Extension(server)));
            }
        }
        let gone: Vec<String> = self
            .servers
            .keys()
            .filter(|k| {
                wanted
                    .get(*k)
                    .is_none_or(|(spec, _)| self.servers.get(*k).is_some_and(|s| &s.spec != spec))
            })
            .cloned()
            .collect();
        // A server whose settings changed is stopped first, so it can listen on the same port.
        for k in &gone {
            if let Some(s) = self.servers.remove(k) {
                let _ = s.stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(2), s.task).await;
                self.addrs.remove(k);
                if !wanted.contains_key(k) {
                    report.removed.push(k.clone());
                }
            }
        }
        for (key, (spec, kind)) in wanted {
            if self.servers.contains_key(&key) {
                report.kept.push(key);
                continue;
            }
            let (endpoint, what) = match &kind {
                ServerKind::Telemetry(a, _) => (a.clone(), "service.telemetry.metrics".to_string()),
                ServerKind::Extension(x) => {
                    (x.endpoint.clone(), key.replace("extensions.", "extension "))
                }
            };
            let l = match net::bind(&endpoint).await {
                Ok(l) => l,
                Err(source) => {
                    let e = StartError::Listen {
                        what,
                        endpoint,
                        source,
                    };
                    if starting {
                        return Err(e);
                    }
                    report.failed.push(e.to_string());
                    continue;
                }
            };
            if let Ok(a) = l.local_addr() {
                self.addrs.insert(key.clone(), a);
            }
            let (stop, stop_rx) = watch::channel(false);
            let task = match kind {
                ServerKind::Telemetry(_, exposition) => net::serve(
                    l,
                    TelemetryService {
                        registry: self.registry.clone(),
                        exposition,
                        reload: self.reload_requests.clone(),
                    },
                    Protocol::Auto,
                    stop_rx,
                    Duration::from_secs(1),
                ),
                ServerKind::Extension(x) => (x.serve)(l, stop_rx),
            };
            if gone.contains(&key) {
                report.changed.push(key.clone());
            } else if !starting {
                report.added.push(key.clone());
            }
            self.servers.insert(key, RunningServer { spec, stop, task });
        }
        self.apply_pushers(cfg, report).await
    }

    /// Starts, restarts or stops the `periodic` readers that push weir's own metrics.
    async fn apply_pushers(
        &mut self,
        cfg: &Config,
        report: &mut ReloadReport,
    ) -> Result<(), StartError> {
        let resource = cfg.service.telemetry.resource();
        let logs = &cfg.service.telemetry.logs.processors;
        let log_spec = format!("{logs:?} {resource:?}");
        let wanted: BTreeMap<String, (String, &crate::telemetry::PeriodicReader)> = cfg
            .service
            .telemetry
            .periodic()
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    format!("telemetry.metrics.readers.periodic[{i}]"),
                    (format!("{r:?} {resource:?}"), r),
                )
            })
            .collect();
        let stale: Vec<String> = self
            .pushers
            .iter()
            .filter(|(k, p)| {
                if k.starts_with("telemetry.logs.") {
                    p.spec != log_spec
                } else {
                    wanted.get(*k).is_none_or(|(spec, _)| *spec != p.spec)
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        let restart_logs = stale.iter().any(|k| k.starts_with("telemetry.logs."))
            || (!logs.is_empty()
                && !self
                    .pushers
                    .keys()
                    .any(|k| k.starts_with("telemetry.logs.")));
        if restart_logs {
            crate::telemetry::logs_export::set_queues(Vec::new());
        }
        for k in stale {
            if let Some(p) = self.pushers.remove(&k) {
                let _ = p.stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(2), p.task).await;
            }
        }
        for (key, (spec, r)) in wanted {
            if self.pushers.contains_key(&key) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let task =
                crate::telemetry::push::start(r, self.registry.clone(), resource.clone(), stop_rx)
                    .map_err(|e| StartError::Exporter {
                        id: key.clone(),
                        message: e,
                    })?;
            report.added.push(key.clone());
            self.pushers.insert(key, RunningServer { spec, stop, task });
        }
        if restart_logs {
            let mut queues = Vec::new();
            for (i, p) in logs.iter().enumerate() {
                let Some(b) = p.as_batch() else { continue };
                let key = format!("telemetry.logs.processors[{i}]");
                let (stop, stop_rx) = watch::channel(false);
                let (tx, task) =
                    crate::telemetry::logs_export::start(&b, resource.clone(), stop_rx).map_err(
                        |e| StartError::Exporter {
                            id: key.clone(),
                            message: e,
                        },
                    )?;
                queues.push(tx);
                report.added.push(key.clone());
                self.pushers.insert(
                    key,
                    RunningServer {
                        spec: log_spec.clone(),
                        stop,
                        task,
                    },
                );
            }
            crate::telemetry::logs_export::set_queues(queues);
        }
        Ok(())
    }

    /// Stops accepting, delivers what is held within `service.shutdown_timeout`, and logs
    /// whatever could not be delivered.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.shutdown_timeout;
        crate::extensions::file_storage::set_stopping();
        self.ready.store(false, Ordering::Relaxed);
        let mut receiver_tasks = Vec::new();
        for (_, r) in self.receivers {
            let _ = r.stop.send(true);
            receiver_tasks.extend(r.tasks);
        }
        for t in receiver_tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        let _ = self.drain.send(true);
        // Connectors' inboxes close once the pipelines feeding them have finished (they hold
        // the connectors); the engine lets go of its own references first.
        drop(self.connectors);
        let mut tasks = Vec::new();
        for (_, p) in self.pipelines {
            drop(p.tx);
            tasks.push(p.task);
        }
        for t in tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        for (_, e) in self.exporters {
            drop(e.handle);
            e.task.drain(deadline).await;
        }
        // What is still held now stays in the write-ahead logs: close them before anything
        // left over is dropped (which would release it).
        for w in crate::extensions::file_storage::open_logs() {
            w.close();
        }
        for (_, s) in self.servers.into_iter().chain(self.pushers) {
            let _ = s.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(2), s.task).await;
        }
    }
}

enum ServerKind {
    Telemetry(String, Arc<crate::telemetry::Exposition>),
    Extension(super::registry::ExtensionServer),
}

struct PipelineRun {
    id: String,
    inbox: mpsc::Receiver<Batch>,
    stages: Vec<(String, ProcessorConfig)>,
    registry: Arc<Registry>,
    inherit: Option<oneshot::Receiver<Handover>>,
    outs: Vec<Out>,
    drain: watch::Receiver<bool>,
    /// Fed by a connector: at shutdown it ends when its feeders have finished (its inbox
    /// closes), so what they flush still gets through.
    fed_by_connector: bool,
    ctl: mpsc::Receiver<Ctl>,
}

async fn run_pipeline(run: PipelineRun) {
    let PipelineRun {
        id,
        mut inbox,
        stages,
        registry,
        inherit,
        outs,
        mut drain,
        fed_by_connector,
        mut ctl,
    } = run;
    // A successor waits for its predecessor's stateful stages (while its own inbox fills).
    let (mut inherited, wake) = match inherit {
        Some(rx) => match rx.await {
            Ok(h) => (h.stages, h.wake),
            Err(_) => (Vec::new(), Arc::new(Notify::new())),
        },
        None => (Vec::new(), Arc::new(Notify::new())),
    };
    let mut ids: Vec<String> = Vec::with_capacity(stages.len());
    let mut procs: Vec<Box<dyn Processor>> = Vec::with_capacity(stages.len());
    for (sid, scfg) in &stages {
        let reused = match inherited.iter().position(|(i, _)| i == sid) {
            Some(pos) => {
                let (_, mut p) = inherited.swap_remove(pos);
                if p.reconfigure(&*scfg.settings, &registry) {
                    Some(p)
                } else {
                    None
                }
            }
            None => None,
        };
        procs.push(reused.unwrap_or_else(|| {
            scfg.settings.build(
                sid,
                &BuildEnv {
                    registry: &registry,
                    wake: &wake,
                },
            )
        }));
        ids.push(sid.clone());
    }
    let mut draining = false;
    let mut handover: Option<(Vec<String>, oneshot::Sender<Handover>)> = None;
    let mut ctl_open = true;
    loop {
        let deadline = procs.iter().filter_map(|p| p.deadline()).min();
        let ready = tokio::select! {
            b = inbox.recv() => match b {
                Some(b) => push_through(&mut procs, vec![b]),
                None => break,
            },
            _ = wake.notified() => tick_all(&mut procs, Instant::now(), true),
            _ = sleep_until(deadline) => tick_all(&mut procs, Instant::now(), false),
            c = ctl.recv(), if ctl_open && handover.is_none() => {
                match c {
                    Some(Ctl::Handover { keep, reply }) => handover = Some((keep, reply)),
                    None => ctl_open = false,
                }
                continue;
            }
            _ = crate::net::until_true(&mut drain), if !draining && !fed_by_connector => {
                // Take what is already queued, then finish.
                draining = true;
                inbox.close();
                continue;
            }
        };
        fan_out(&outs, ready).await;
    }
    // The engine sends a handover before it lets the inbox close, so one may be waiting even
    // if the closed inbox was seen first.
    if handover.is_none() {
        if let Ok(Ctl::Handover { keep, reply }) = ctl.try_recv() {
            handover = Some((keep, reply));
        }
    }
    // Flush stage by stage: what stage i releases still runs through the stages after it.
    // Stages handed to a successor keep what they hold.
    let keep: Vec<String> = handover
        .as_ref()
        .map(|(k, _)| k.clone())
        .unwrap_or_default();
    for i in 0..procs.len() {
        if keep.contains(&ids[i]) {
            continue;
        }
        let mut out = Vec::new();
        procs[i].flush(&mut out);
        let ready = push_through(&mut procs[i + 1..], out);
        fan_out(&outs, ready).await;
    }
    if let Some((_, reply)) = handover {
        let mut stages = Vec::new();
        for (sid, p) in ids.into_iter().zip(procs) {
            if keep.contains(&sid) {
                stages.push((sid, p));
            }
        }
        let _ = reply.send(Handover { stages, wake });
        tracing::debug!(pipeline = %id, "pipeline handed over");
    } else {
        tracing::debug!(pipeline = %id, "pipeline stopped");
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

async fn fan_out(outs: &[Out], batches: Vec<Batch>) {
    for mut b in batches {
        if b.items == 0 {
            continue;
        }
        // Encode once so every exporter shares the same bytes.
        if outs.len() > 1 {
            if !matches!(b.payload, Payload::Encoded(_)) {
                b.payload = Payload::Encoded(b.to_bytes());
            }
            // ... and compress once for the exporters that compress alike.
            b.compressed = Some(Default::default());
        }
        if let Some((last, rest)) = outs.split_last() {
            for o in rest {
                o.push(b.clone()).await;
            }
            last.push(b).await;
        }
    }
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
