//! weir's own telemetry: self-metrics on `/metrics` (Prometheus text, the Collector's metric
//! names), process metrics, and the log format. Configured under `service.telemetry`.
pub mod metrics;
pub mod server;

use serde::Deserialize;

/// `service.telemetry`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub metrics: MetricsTelemetry,
    pub logs: LogsTelemetry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsLevel {
    None,
    Basic,
    #[default]
    Normal,
    Detailed,
}

/// `service.telemetry.metrics`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetry {
    /// `none` turns the endpoint off; other levels all serve every metric.
    pub level: MetricsLevel,
    /// `host:port` of the `/metrics` endpoint (default `127.0.0.1:8888`).
    pub address: Option<String>,
    /// The Collector's newer form: `readers: [{pull: {exporter: {prometheus: {host, port}}}}]`.
    pub readers: Vec<Reader>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reader {
    pub pull: PullReader,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullReader {
    pub exporter: PullExporter,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullExporter {
    pub prometheus: PrometheusPull,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusPull {
    #[serde(default = "default_host")]
    pub host: String,
    pub port: u16,
}

fn default_host() -> String {
    "127.0.0.1".into()
}

/// Read in any case, as the Collector reads it (`DEBUG`, `Info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl TryFrom<String> for LogLevel {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err(format!(
                "unknown log level {s:?}; expected debug, info, warn or error (any case)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    #[default]
    Console,
    Json,
}

/// `service.telemetry.logs`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetry {
    pub level: LogLevel,
    pub encoding: LogEncoding,
}

impl TelemetryConfig {
    /// Where `/metrics` is served, or None when turned off.
    pub fn metrics_address(&self) -> Option<String> {
        if self.metrics.level == MetricsLevel::None {
            return None;
        }
        if let Some(r) = self.metrics.readers.first() {
            let p = &r.pull.exporter.prometheus;
            return Some(format!("{}:{}", p.host, p.port));
        }
        Some(
            self.metrics
                .address
                .clone()
                .unwrap_or_else(|| "127.0.0.1:8888".into()),
        )
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Some(a) = &self.metrics.address {
            if let Err(e) = crate::net::check_endpoint(a) {
                errs.push(("metrics.address".into(), e));
            }
        }
        if self.metrics.readers.len() > 1 {
            errs.push((
                "metrics.readers".into(),
                "weir serves one Prometheus pull endpoint; list one reader".into(),
            ));
        }
        if self.metrics.address.is_some() && !self.metrics.readers.is_empty() {
            errs.push((
                "metrics.address".into(),
                "set either address or readers, not both".into(),
            ));
        }
        errs
    }
}

/// Installs the global log subscriber (once per process; later calls are ignored).
pub fn init_logging(cfg: &LogsTelemetry) {
    let level = match cfg.level {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match cfg.encoding {
        LogEncoding::Json => builder.json().try_init(),
        LogEncoding::Console => builder.with_ansi(false).try_init(),
    };
}

/// Resident set size of this process in bytes (Linux), for `otelcol_process_memory_rss`.
pub fn rss_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|pages| pages * 4096.0)
        .unwrap_or(0.0)
}

/// User + system CPU seconds of this process (Linux).
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}
