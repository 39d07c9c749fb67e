//! weir's own telemetry: self-metrics on `/metrics` (Prometheus text, the Collector's metric
//! names), process metrics, and the log format. Configured under `service.telemetry`.
pub mod logs_export;
pub mod metrics;
pub mod push;
pub mod server;

use serde::Deserialize;

/// `service.telemetry`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub metrics: MetricsTelemetry,
    pub logs: LogsTelemetry,
    /// Attributes of weir's own telemetry resource, over the defaults `service.name: weir`,
    /// `service.version` and `service.instance.id`; `null` removes one. Shown on `/metrics`
    /// as `target_info`, as the Collector's Prometheus endpoint does.
    pub resource: std::collections::BTreeMap<String, Option<String>>,
}

/// What `/metrics` shows besides the metrics themselves, from `service.telemetry`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exposition {
    /// `target_info`'s labels: the resource attributes, as label names.
    pub target_info: Vec<(String, String)>,
    /// Resource attributes copied onto every series (`with_resource_constant_labels`).
    pub constant_labels: Vec<(String, String)>,
    /// Counters without their `_total` suffix (`without_type_suffix`).
    pub without_type_suffix: bool,
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

/// One of `readers`: `pull` (a Prometheus endpoint to scrape) or `periodic` (push over OTLP).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reader {
    pub pull: Option<PullReader>,
    pub periodic: Option<PeriodicReader>,
}

/// `periodic`: weir's own metrics pushed over OTLP every `interval` milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodicReader {
    /// Milliseconds between pushes (default 60000).
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Milliseconds a push may take (default 30000).
    #[serde(default = "default_push_timeout")]
    pub timeout: u64,
    pub exporter: PushExporter,
}

fn default_interval() -> u64 {
    60_000
}

fn default_push_timeout() -> u64 {
    30_000
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushExporter {
    pub otlp: OtlpPush,
}

/// The OTLP exporter of a `periodic` reader (the OpenTelemetry configuration schema's keys).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpPush {
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: String,
    /// gRPC: `host:port` or `http://host:port`; HTTP: a base URL (`/v1/metrics` is appended
    /// when it has no path) or the full URL.
    pub endpoint: String,
    #[serde(default)]
    pub headers: Vec<NameValue>,
    /// `gzip` or `none` (default).
    #[serde(default)]
    pub compression: Option<String>,
    /// Milliseconds per request (default 10000).
    #[serde(default = "default_request_timeout")]
    pub timeout: u64,
    /// Plaintext gRPC without an `http://` scheme.
    #[serde(default)]
    pub insecure: bool,
    /// Only `cumulative`: weir's counters are cumulative.
    #[serde(default)]
    pub temporality_preference: Option<String>,
}

fn default_request_timeout() -> u64 {
    10_000
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameValue {
    pub name: String,
    pub value: String,
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
    /// weir's metrics carry no instrumentation scope, so there is no scope info to leave out:
    /// both values give the same output.
    #[serde(default)]
    pub without_scope_info: bool,
    /// Counters are shown without their `_total` suffix.
    #[serde(default)]
    pub without_type_suffix: bool,
    /// weir's metric names carry no unit suffix added from units, so both values give the
    /// same output.
    #[serde(default)]
    pub without_units: bool,
    /// Resource attributes copied as labels onto every series.
    #[serde(default)]
    pub with_resource_constant_labels: Option<IncludeExclude>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncludeExclude {
    pub included: Vec<String>,
    pub excluded: Vec<String>,
}

/// A resource attribute key as a Prometheus label name (`service.name` → `service_name`).
use crate::exporters::prometheusremotewrite::names::label_name;

/// This process's instance id: stable for its life, different for the next.
fn instance_id() -> String {
    use std::sync::OnceLock;
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut b = [0u8; 16];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
            .is_ok();
        if !ok {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                ^ u128::from(std::process::id());
            b = t.to_le_bytes();
        }
        // A version-4 UUID, as the Collector uses.
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    })
    .clone()
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
    /// weir's own logs exported over OTLP too (`batch` or `simple` processors with an `otlp`
    /// exporter, the configuration schema's keys).
    pub processors: Vec<LogProcessor>,
}

/// One of `logs.processors`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogProcessor {
    pub batch: Option<BatchLogProcessor>,
    pub simple: Option<SimpleLogProcessor>,
}

/// `batch`: records are sent in batches of `max_export_batch_size`, at least every
/// `schedule_delay` milliseconds; past `max_queue_size` waiting records, new ones are dropped
/// (and counted).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchLogProcessor {
    #[serde(default = "default_schedule_delay")]
    pub schedule_delay: u64,
    #[serde(default = "default_push_timeout")]
    pub export_timeout: u64,
    #[serde(default = "default_max_queue")]
    pub max_queue_size: usize,
    #[serde(default = "default_max_batch")]
    pub max_export_batch_size: usize,
    pub exporter: PushExporter,
}

/// `simple`: each record is sent as it is logged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimpleLogProcessor {
    pub exporter: PushExporter,
}

fn default_schedule_delay() -> u64 {
    1_000
}

fn default_max_queue() -> usize {
    2_048
}

fn default_max_batch() -> usize {
    512
}

impl LogProcessor {
    /// As a batch processor (`simple` is one record at a time, at once).
    pub fn as_batch(&self) -> Option<BatchLogProcessor> {
        match (&self.batch, &self.simple) {
            (Some(b), None) => Some(b.clone()),
            (None, Some(s)) => Some(BatchLogProcessor {
                schedule_delay: 0,
                export_timeout: default_push_timeout(),
                max_queue_size: default_max_queue(),
                max_export_batch_size: 1,
                exporter: s.exporter.clone(),
            }),
            _ => None,
        }
    }
}

impl TelemetryConfig {
    /// weir's own resource: the defaults with `resource` applied.
    pub fn resource(&self) -> Vec<(String, String)> {
        let mut r: std::collections::BTreeMap<String, String> = [
            ("service.name", "weir".to_string()),
            ("service.version", env!("CARGO_PKG_VERSION").to_string()),
            ("service.instance.id", instance_id()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in &self.resource {
            match v {
                Some(v) => r.insert(k.clone(), v.clone()),
                None => r.remove(k),
            };
        }
        r.into_iter().collect()
    }

    /// What `/metrics` shows besides the metrics.
    pub fn exposition(&self) -> Exposition {
        let resource = self.resource();
        let pull = self.pull().map(|p| &p.exporter.prometheus);
        let constant_labels = pull
            .and_then(|p| p.with_resource_constant_labels.as_ref())
            .map(|f| {
                resource
                    .iter()
                    .filter(|(k, _)| {
                        (f.included.is_empty() || f.included.contains(k)) && !f.excluded.contains(k)
                    })
                    .map(|(k, v)| (label_name(k), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Exposition {
            target_info: resource
                .iter()
                .map(|(k, v)| (label_name(k), v.clone()))
                .collect(),
            constant_labels,
            without_type_suffix: pull.is_some_and(|p| p.without_type_suffix),
        }
    }

    /// Where `/metrics` is served, or None when turned off.
    pub fn metrics_address(&self) -> Option<String> {
        if self.metrics.level == MetricsLevel::None {
            return None;
        }
        if !self.metrics.readers.is_empty() {
            // With readers, only a pull reader serves /metrics.
            return self.pull().map(|r| {
                let p = &r.exporter.prometheus;
                format!("{}:{}", p.host, p.port)
            });
        }
        Some(
            self.metrics
                .address
                .clone()
                .unwrap_or_else(|| "127.0.0.1:8888".into()),
        )
    }

    /// The pull (Prometheus) reader, if any.
    pub fn pull(&self) -> Option<&PullReader> {
        self.metrics.readers.iter().find_map(|r| r.pull.as_ref())
    }

    /// The periodic (OTLP push) readers.
    pub fn periodic(&self) -> Vec<&PeriodicReader> {
        self.metrics
            .readers
            .iter()
            .filter_map(|r| r.periodic.as_ref())
            .collect()
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (i, r) in self.metrics.readers.iter().enumerate() {
            if r.pull.is_some() == r.periodic.is_some() {
                errs.push((
                    format!("metrics.readers[{i}]"),
                    "must be one of pull or periodic".into(),
                ));
            }
            if let Some(p) = &r.periodic {
                let base = format!("metrics.readers[{i}].periodic");
                let o = &p.exporter.otlp;
                if !["grpc", "http/protobuf", "http/json"].contains(&o.protocol.as_str()) {
                    errs.push((
                        format!("{base}.exporter.otlp.protocol"),
                        format!(
                            "unknown protocol {:?}; expected grpc, http/protobuf or http/json",
                            o.protocol
                        ),
                    ));
                }
                if o.endpoint.is_empty() {
                    errs.push((
                        format!("{base}.exporter.otlp.endpoint"),
                        "is required".into(),
                    ));
                }
                if !matches!(o.compression.as_deref(), None | Some("gzip") | Some("none")) {
                    errs.push((
                        format!("{base}.exporter.otlp.compression"),
                        "expected gzip or none".into(),
                    ));
                }
                if !matches!(
                    o.temporality_preference.as_deref(),
                    None | Some("cumulative")
                ) {
                    errs.push((
                        format!("{base}.exporter.otlp.temporality_preference"),
                        "weir pushes cumulative values; only cumulative is supported".into(),
                    ));
                }
                if p.interval == 0 {
                    errs.push((format!("{base}.interval"), "must be greater than 0".into()));
                }
            }
        }
        if self
            .metrics
            .readers
            .iter()
            .filter(|r| r.pull.is_some())
            .count()
            > 1
        {
            errs.push((
                "metrics.readers".into(),
                "weir serves one Prometheus pull endpoint; list one pull reader".into(),
            ));
        }
        if let Some(a) = &self.metrics.address {
            if let Err(e) = crate::net::check_endpoint(a) {
                errs.push(("metrics.address".into(), e));
            }
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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match cfg.level {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    let (json, console) = match cfg.encoding {
        LogEncoding::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            ),
            None,
        ),
        LogEncoding::Console => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(false),
            ),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::from_level(level))
        .with(json)
        .with(console)
        .with(logs_export::OtlpLogLayer)
        .try_init();
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
