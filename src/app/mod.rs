//! The run loop: load the config, start the graph, then serve until SIGTERM/SIGINT, applying
//! reloads (SIGHUP, `POST /-/reload` on the telemetry endpoint, or `--watch-config`) as they
//! come, and finally drain and stop.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config;
use crate::pipeline::graph::{Engine, ReloadRequest};
use crate::telemetry::metrics::{Counter, Gauge, Registry};

/// How often `--watch-config` looks at the files.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Options of `weir run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub watch_config: bool,
}

/// A digest of the config files' bytes (the embedded default when there are none): what the
/// info metric shows and what `--watch-config` compares.
pub fn config_hash(paths: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    if paths.is_empty() {
        h.update(config::DEFAULT_CONFIG.as_bytes());
    }
    for p in paths {
        h.update(p.display().to_string().as_bytes());
        h.update([0]);
        match std::fs::read(p) {
            Ok(b) => h.update(&b),
            Err(e) => h.update(e.to_string().as_bytes()),
        }
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct ReloadMetrics {
    registry: Arc<Registry>,
    reloads: Counter,
    failures: Counter,
    last_ok: Gauge,
    last_time: Gauge,
    info_hash: String,
}

impl ReloadMetrics {
    fn new(registry: &Arc<Registry>, hash: &str) -> ReloadMetrics {
        let m = ReloadMetrics {
            registry: Arc::clone(registry),
            reloads: registry.counter(
                "weir_config_reloads_total",
                "Config reloads attempted (SIGHUP, POST /-/reload, --watch-config).",
                &[],
            ),
            failures: registry.counter(
                "weir_config_reload_failures_total",
                "Config reloads refused because the new config is invalid (the old one stays).",
                &[],
            ),
            last_ok: registry.gauge(
                "weir_config_last_reload_successful",
                "1 if the last reload applied, 0 if it was refused.",
                &[],
            ),
            last_time: registry.gauge(
                "weir_config_last_reload_timestamp_seconds",
                "When the config in force was loaded (Unix time).",
                &[],
            ),
            info_hash: String::new(),
        };
        m.last_ok.set(1.0);
        m.last_time.set(unix_now());
        let mut m = m;
        m.set_hash(hash);
        m
    }

    fn set_hash(&mut self, hash: &str) {
        if !self.info_hash.is_empty() {
            self.registry
                .gauge(
                    "weir_config_info",
                    "The config in force (hash of its files).",
                    &[("hash", &self.info_hash)],
                )
                .set(0.0);
        }
        self.registry
            .gauge(
                "weir_config_info",
                "The config in force (hash of its files).",
                &[("hash", hash)],
            )
            .set(1.0);
        self.info_hash = hash.to_owned();
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs weir until SIGTERM or SIGINT. Returns the process exit code.
pub fn run(paths: &[PathBuf], opts: RunOptions) -> i32 {
    // Hashed before reading, so a change made while starting is seen by --watch-config.
    let initial_hash = config_hash(paths);
    let cfg = match config::load(paths) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("weir: invalid configuration:\n{errs}");
            return 1;
        }
    };
    crate::telemetry::init_logging(&cfg.service.telemetry.logs);
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the runtime: {e}");
            return 1;
        }
    };
    let paths = paths.to_vec();
    rt.block_on(async move {
        // Signal handlers first: a SIGHUP that arrives while starting must not take the
        // default action (terminate); it is handled once the loop runs.
        let mut signals = Signals::new();
        let registry = Registry::new();
        let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
        let mut engine = match Engine::start(&cfg, Arc::clone(&registry), Some(reload_tx)).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("cannot start: {e}");
                return 1;
            }
        };
        for (what, addr) in &engine.addrs {
            tracing::info!("{what} listening on {addr}");
        }
        tracing::info!("Everything is ready. Begin running and processing data.");
        let mut hash = initial_hash;
        let mut metrics = ReloadMetrics::new(&registry, &hash);
        let mut watch = tokio::time::interval(WATCH_INTERVAL);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut timeout = cfg.service.shutdown_timeout;
        loop {
            tokio::select! {
                ev = signals.next() => match ev {
                    Event::Stop(name) => {
                        tracing::info!("received {name}");
                        break;
                    }
                    Event::Reload => {
                        tracing::info!("received SIGHUP: reloading the config");
                        let _ = reload(&mut engine, &paths, &mut metrics, &mut hash, &mut timeout).await;
                    }
                },
                Some(req) = reload_rx.recv() => {
                    tracing::info!("reload requested over HTTP");
                    let outcome = reload(&mut engine, &paths, &mut metrics, &mut hash, &mut timeout).await;
                    let _ = req.send(outcome);
                }
                _ = watch.tick(), if opts.watch_config => {
                    let now = config_hash(&paths);
                    if now != hash {
                        tracing::info!("config files changed: reloading (--watch-config)");
                        let _ = reload(&mut engine, &paths, &mut metrics, &mut hash, &mut timeout).await;
                        // A refused config is not retried until the files change again.
                        hash = now;
                    }
                }
            }
        }
        tracing::info!("shutting down: draining within {timeout:?}");
        engine.shutdown().await;
        tracing::info!("shutdown complete");
        0
    })
}

/// Re-reads and validates every config file; applies it only if it is valid. The counters
/// move last, so whoever watches `weir_config_reloads_total` sees the outcome with it.
async fn reload(
    engine: &mut Engine,
    paths: &[PathBuf],
    m: &mut ReloadMetrics,
    hash: &mut String,
    timeout: &mut Duration,
) -> Result<String, String> {
    let outcome = match config::load(paths) {
        Err(errs) => {
            m.failures.inc();
            m.last_ok.set(0.0);
            tracing::error!(
                "reload refused: the new config is invalid; still running the previous one:\n{errs}\n{} error(s)",
                errs.0.len()
            );
            Err(format!("{errs}\n{} error(s)", errs.0.len()))
        }
        Ok(cfg) => {
            for w in &cfg.warnings {
                tracing::warn!("config: {w}");
            }
            let report = engine.reload(&cfg).await;
            *timeout = cfg.service.shutdown_timeout;
            *hash = config_hash(paths);
            m.set_hash(hash);
            m.last_time.set(unix_now());
            if report.failed.is_empty() {
                m.last_ok.set(1.0);
                tracing::info!("config reloaded: {report}");
                Ok(format!("config reloaded: {report}"))
            } else {
                m.last_ok.set(0.0);
                tracing::error!("config reloaded with failures: {report}");
                Err(format!("config reloaded with failures: {report}"))
            }
        }
    };
    m.reloads.inc();
    outcome
}

enum Event {
    Stop(&'static str),
    Reload,
}

#[cfg(unix)]
struct Signals {
    streams: Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
}

#[cfg(unix)]
impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => Some((t, i, h)),
            _ => {
                tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
                None
            }
        };
        Signals { streams }
    }

    async fn next(&mut self) -> Event {
        match &mut self.streams {
            Some((term, int, hup)) => tokio::select! {
                _ = term.recv() => Event::Stop("SIGTERM"),
                _ = int.recv() => Event::Stop("SIGINT"),
                _ = hup.recv() => Event::Reload,
            },
            None => {
                let _ = tokio::signal::ctrl_c().await;
                Event::Stop("Ctrl-C")
            }
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> Signals {
        Signals
    }
    async fn next(&mut self) -> Event {
        let _ = tokio::signal::ctrl_c().await;
        Event::Stop("Ctrl-C")
    }
}
