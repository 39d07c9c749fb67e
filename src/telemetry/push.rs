//! The `periodic` metrics reader: weir's own metrics pushed over OTLP (gRPC or HTTP) every
//! `interval`, with the telemetry resource, and once more at shutdown, as the Collector's
//! periodic reader does. A failed push is logged and the next one tried; nothing else waits
//! on it.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::metrics::{to_otlp, Registry};
use super::PeriodicReader;
use crate::exporters::helper::Sender;
use crate::exporters::Compression;
use crate::pdata::{Batch, Context, Payload, Signal};

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The URL `signal` is posted to: the endpoint as given when it has a path, else with
/// `/v1/<signal>` appended (the configuration schema's rule).
pub fn signal_url(endpoint: &str, signal: Signal) -> String {
    let after_scheme = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    match after_scheme.find('/') {
        Some(i) if after_scheme.len() > i + 1 => endpoint.to_string(),
        _ => format!("{}{}", endpoint.trim_end_matches('/'), signal.http_path()),
    }
}

/// The exporter of a push reader or log processor.
pub fn otlp_sender(o: &super::OtlpPush, signal: Signal) -> Result<Arc<dyn Sender>, String> {
    let compression = match o.compression.as_deref() {
        Some("gzip") => Compression::Gzip,
        _ => Compression::None,
    };
    let headers = o
        .headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let timeout = Duration::from_millis(o.timeout);
    if o.protocol == "grpc" {
        crate::exporters::otlp::plain_sender(&o.endpoint, headers, compression, timeout)
    } else {
        crate::exporters::otlphttp::plain_sender(
            signal,
            signal_url(&o.endpoint, signal),
            headers,
            compression,
            o.protocol == "http/json",
            timeout,
        )
    }
}

/// Starts pushing; the task ends (after a last push) when `stop` turns true.
pub fn start(
    r: &PeriodicReader,
    registry: Arc<Registry>,
    resource: Vec<(String, String)>,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let sender = otlp_sender(&r.exporter.otlp, Signal::Metrics)?;
    let interval = Duration::from_millis(r.interval.max(1));
    let push_timeout = Duration::from_millis(r.timeout.max(1));
    let start_ns = now_ns();
    let push = move |sender: Arc<dyn Sender>,
                     registry: Arc<Registry>,
                     resource: Vec<(String, String)>| async move {
        let req = to_otlp(&registry, &resource, now_ns(), start_ns);
        let items = crate::pdata::count_points(&req);
        let batch = Batch {
            signal: Signal::Metrics,
            items,
            payload: Payload::Metrics(req),
            context: Arc::new(Context::default()),
            held: None,
            compressed: None,
        };
        match tokio::time::timeout(push_timeout, sender.send(&batch)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("pushing weir's own metrics failed: {e:?}"),
            Err(_) => tracing::warn!("pushing weir's own metrics timed out after {push_timeout:?}"),
        }
    };
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => push(sender.clone(), registry.clone(), resource.clone()).await,
                _ = crate::net::until_true(&mut stop) => {
                    push(sender.clone(), registry.clone(), resource.clone()).await;
                    break;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signal_url_appends_the_path_only_when_there_is_none() {
        use super::signal_url;
        use crate::pdata::Signal;
        let m = |e| signal_url(e, Signal::Metrics);
        assert_eq!(m("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(m("http://c:4318/"), "http://c:4318/v1/metrics");
        assert_eq!(
            m("http://c:4318/otlp/v1/metrics"),
            "http://c:4318/otlp/v1/metrics"
        );
        assert_eq!(
            signal_url("http://c:4318", Signal::Logs),
            "http://c:4318/v1/logs"
        );
    }
}
