//! The run loop: load the config, start the graph, wait for a signal, drain and stop.
use std::path::PathBuf;
use std::sync::Arc;

use crate::config;
use crate::pipeline::graph::Engine;
use crate::telemetry::metrics::Registry;

/// Runs weir until SIGTERM or SIGINT. Returns the process exit code.
pub fn run(paths: &[PathBuf]) -> i32 {
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
    rt.block_on(async move {
        let registry = Registry::new();
        let engine = match Engine::start(&cfg, Arc::clone(&registry)).await {
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
        wait_for_stop().await;
        tracing::info!(
            "shutting down: draining within {:?}",
            cfg.service.shutdown_timeout
        );
        engine.shutdown().await;
        tracing::info!("shutdown complete");
        0
    })
}

#[cfg(unix)]
async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("received SIGTERM"); return; }
            _ = int.recv() => { tracing::info!("received SIGINT"); return; }
            _ = hup.recv() => {
                tracing::warn!("received SIGHUP: config reload is not implemented yet; still running the config loaded at start");
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_stop() {
    let _ = tokio::signal::ctrl_c().await;
}
