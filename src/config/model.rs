//! The validated configuration: the Collector's envelope (`receivers`, `processors`,
//! `exporters`, `connectors`, `extensions`, `service`) with every component body decoded by
//! its type's settings struct. Validation is pure: no sockets, no files written. It reports
//! every problem it finds, each with file, line and YAML path.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::loader::{ConfigError, ConfigErrors, Loaded, Mapping, Value};
use super::units::DurationValue;
use crate::exporters::debug::DebugConfig;
use crate::exporters::loki::config::LokiExporterConfig;
use crate::exporters::otlp::config::OtlpExporterConfig;
use crate::exporters::otlphttp::config::OtlpHttpExporterConfig;
use crate::exporters::prometheusremotewrite::config::PrwExporterConfig;
use crate::extensions::auth;
use crate::extensions::health_check::HealthCheckConfig;
use crate::pdata::Signal;
use crate::processors::attributes::config::{AttributesConfig, ResourceConfig};
use crate::processors::batch::config::BatchConfig;
use crate::processors::cardinality_limiter::config::CardinalityLimiterConfig;
use crate::processors::tail_sampling::config::TailSamplingConfig;
use crate::processors::tenant::config::TenantConfig;
use crate::receivers::otlp::config::OtlpReceiverConfig;
use crate::telemetry::TelemetryConfig;

#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverConfig {
    Otlp(OtlpReceiverConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorConfig {
    Batch(BatchConfig),
    Attributes(AttributesConfig),
    Resource(ResourceConfig),
    TailSampling(TailSamplingConfig),
    CardinalityLimiter(CardinalityLimiterConfig),
    Tenant(TenantConfig),
    MemoryLimiter(crate::processors::memory_limiter::config::MemoryLimiterConfig),
    Filter(Box<crate::processors::filter::config::FilterConfig>),
    ProbabilisticSampler(crate::processors::probabilistic_sampler::ProbabilisticSamplerConfig),
    Transform(Box<crate::processors::transform::TransformConfig>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExporterConfig {
    Otlp(OtlpExporterConfig),
    OtlpHttp(OtlpHttpExporterConfig),
    PrometheusRemoteWrite(Box<PrwExporterConfig>),
    Loki(Box<LokiExporterConfig>),
    Debug(DebugConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorConfig {
    Routing(crate::connectors::routing::RoutingConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExtensionConfig {
    HealthCheck(HealthCheckConfig),
    /// `bearertokenauth`, `basicauth`, `headers_setter`: used through `auth:` references.
    Auth(crate::extensions::auth::AuthConfig),
    /// `file_storage`: used through exporters' `sending_queue.storage`.
    FileStorage(crate::extensions::file_storage::FileStorageConfig),
    /// `zpages`: live pages about the running weir.
    ZPages(crate::extensions::zpages::ZPagesConfig),
    /// `pprof`: CPU profiles over HTTP.
    Pprof(crate::extensions::pprof::PprofConfig),
}

/// The kinds of component, as the config's sections name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Receiver,
    Processor,
    Exporter,
    Connector,
    Extension,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
            Kind::Connector => "connector",
            Kind::Extension => "extension",
        }
    }
}

/// A component type weir has.
pub struct ComponentInfo {
    pub kind: Kind,
    pub type_name: &'static str,
    /// Other names the Collector knows the type by (`otlp_grpc` for `otlp`).
    pub aliases: &'static [&'static str],
    pub signals: &'static [Signal],
    pub description: &'static str,
}

const ALL: &[Signal] = &[Signal::Traces, Signal::Metrics, Signal::Logs];

/// Every component type, for `weir components` and validation.
pub const COMPONENTS: &[ComponentInfo] = &[
    ComponentInfo {
        kind: Kind::Receiver,
        type_name: "otlp",
        aliases: &[],
        signals: ALL,
        description: "OTLP over gRPC and HTTP (protobuf, JSON, gzip, zstd)",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "memory_limiter",
        aliases: &[],
        signals: ALL,
        description: "refuses new data (retryable) while memory is over its soft limit",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "batch",
        aliases: &[],
        signals: ALL,
        description: "groups data into batches by size and time",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "attributes",
        aliases: &[],
        signals: ALL,
        description: "inserts, updates, deletes or hashes span, log and data point attributes",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "resource",
        aliases: &[],
        signals: ALL,
        description: "inserts, updates, deletes or hashes resource attributes",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "filter",
        aliases: &[],
        signals: ALL,
        description: "drops spans, span events, metrics, data points and logs matching OTTL conditions",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "probabilistic_sampler",
        aliases: &[],
        signals: &[Signal::Traces, Signal::Logs],
        description: "keeps a percentage of traces and logs, consistently with the Collector (hash seed, OTEP 235 thresholds)",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "transform",
        aliases: &[],
        signals: ALL,
        description: "edits spans, events, metrics, data points and logs with OTTL statements (set, delete_key, replace_pattern, ...)",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "tail_sampling",
        aliases: &[],
        signals: &[Signal::Traces],
        description: "keeps whole traces by policy (errors, latency, attributes, rates)",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "tenant",
        aliases: &[],
        signals: ALL,
        description: "decides each resource's tenant (token, header, attribute, static) and keeps tenants apart",
    },
    ComponentInfo {
        kind: Kind::Processor,
        type_name: "cardinality_limiter",
        aliases: &[],
        signals: &[Signal::Metrics],
        description:
            "caps distinct series per metric and per tenant (overflow, drop, strip_labels)",
    },
    ComponentInfo {
        kind: Kind::Exporter,
        type_name: "otlp",
        aliases: &["otlp_grpc"],
        signals: ALL,
        description: "OTLP over gRPC (Tempo, Jaeger, collectors)",
    },
    ComponentInfo {
        kind: Kind::Exporter,
        type_name: "otlphttp",
        aliases: &["otlp_http"],
        signals: ALL,
        description: "OTLP over HTTP, protobuf or JSON",
    },
    ComponentInfo {
        kind: Kind::Connector,
        type_name: "routing",
        aliases: &[],
        signals: ALL,
        description: "routes each resource's data to pipelines by OTTL condition (e.g. by tenant)",
    },
    ComponentInfo {
        kind: Kind::Exporter,
        type_name: "loki",
        aliases: &[],
        signals: &[Signal::Logs],
        description:
            "Loki push API (protobuf+snappy or JSON), labels from attributes, per-tenant requests",
    },
    ComponentInfo {
        kind: Kind::Exporter,
        type_name: "prometheusremotewrite",
        aliases: &[],
        signals: &[Signal::Metrics],
        description:
            "Prometheus Remote-Write 1.0 (Prometheus, Mimir, Cortex, Thanos, VictoriaMetrics)",
    },
    ComponentInfo {
        kind: Kind::Exporter,
        type_name: "debug",
        aliases: &[],
        signals: ALL,
        description: "prints data to stdout",
    },
    ComponentInfo {
        kind: Kind::Extension,
        type_name: "health_check",
        aliases: &[],
        signals: &[],
        description: "HTTP health endpoint (200 when ready)",
    },
    ComponentInfo {
        kind: Kind::Extension,
        type_name: "pprof",
        aliases: &[],
        signals: &[],
        description: "CPU profiles over HTTP in pprof format (/debug/pprof/profile)",
    },
    ComponentInfo {
        kind: Kind::Extension,
        type_name: "zpages",
        aliases: &[],
        signals: &[],
        description: "live pages: service, pipelines, extensions, feature gates (/debug/*z)",
    },
    ComponentInfo {
        kind: Kind::Extension,
        type_name: "file_storage",
        aliases: &[],
        signals: &[],
        description: "a directory for persistent sending queues (write-ahead log before the client's OK, replayed after a crash)",
    },
    ComponentInfo {
        kind: Kind::Extension,
        type_name: "bearertokenauth",
        aliases: &[],
        signals: &[],
        description: "bearer token authentication: receivers check it, exporters send it",
    },
    ComponentInfo {
        kind: Kind::Extension,
        type_name: "basicauth",
        aliases: &[],
        signals: &[],
        description: "HTTP Basic authentication: receivers check htpasswd users, exporters send client_auth",
    },
    ComponentInfo {
        kind: Kind::Extension,
        type_name: "headers_setter",
        aliases: &[],
        signals: &[],
        description: "exporter headers from the request's client metadata (e.g. forward X-Scope-OrgID)",
    },
];

fn types_of(kind: Kind) -> Vec<&'static str> {
    COMPONENTS
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| c.type_name)
        .collect()
}

fn info(kind: Kind, type_name: &str) -> Option<&'static ComponentInfo> {
    COMPONENTS
        .iter()
        .find(|c| c.kind == kind && (c.type_name == type_name || c.aliases.contains(&type_name)))
}

/// The type name weir files `type_name` under (an alias gives its type).
fn canonical(kind: Kind, type_name: &str) -> &str {
    info(kind, type_name).map_or(type_name, |c| c.type_name)
}

/// One pipeline of `service.pipelines`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub signal: Signal,
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub pipelines: BTreeMap<String, PipelineConfig>,
    pub extensions: Vec<String>,
    pub telemetry: TelemetryConfig,
    /// How long SIGTERM waits for queues to drain (default 10s).
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub receivers: BTreeMap<String, ReceiverConfig>,
    pub processors: BTreeMap<String, ProcessorConfig>,
    pub exporters: BTreeMap<String, ExporterConfig>,
    pub connectors: BTreeMap<String, ConnectorConfig>,
    pub extensions: BTreeMap<String, ExtensionConfig>,
    pub service: ServiceConfig,
    /// Loader warnings (an unset environment variable), logged once logging is up.
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    receivers: Vec<String>,
    #[serde(default)]
    processors: Vec<String>,
    #[serde(default)]
    exporters: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawService {
    extensions: Vec<String>,
    pipelines: BTreeMap<String, Value>,
    telemetry: Value,
    shutdown_timeout: Option<DurationValue>,
}

/// Splits `type/name` and checks both parts.
pub fn parse_id(id: &str) -> Result<(&str, Option<&str>), String> {
    let (ty, name) = match id.split_once('/') {
        Some((t, n)) => (t, Some(n)),
        None => (id, None),
    };
    let ok_type = ty.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && ty.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_type {
        return Err(format!(
            "invalid component id {id:?}: the type must start with a letter and hold only letters, digits and '_'"
        ));
    }
    if let Some(n) = name {
        if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!(
                "invalid component id {id:?}: the name after '/' must be non-empty, without spaces or '/'"
            ));
        }
    }
    Ok((ty, name))
}

struct Ctx<'a> {
    loaded: &'a Loaded,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(self.loaded.error(path, msg));
    }

    fn decode<T: serde::de::DeserializeOwned + Default>(
        &mut self,
        path: &str,
        v: &Value,
    ) -> Option<T> {
        // `batch:` with nothing under it means "all defaults".
        if v.is_null() {
            return Some(T::default());
        }
        match self.loaded.decode_all::<T>(path, v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.errors.extend(e);
                None
            }
        }
    }

    fn problems(&mut self, base: &str, problems: Vec<(String, String)>) -> bool {
        let ok = problems.is_empty();
        for (k, m) in problems {
            self.err(&format!("{base}.{k}"), m);
        }
        ok
    }

    /// The components of one section as (id, type, body).
    fn section<'v>(&mut self, root: &'v Mapping, key: &str) -> Vec<(String, String, &'v Value)> {
        let mut out = Vec::new();
        let Some(v) = root.get(key) else {
            return out;
        };
        if v.is_null() {
            return out;
        }
        let Some(m) = v.as_mapping() else {
            self.err(key, "must be a mapping of component id to settings");
            return out;
        };
        for (k, body) in m {
            let Some(id) = k.as_str() else {
                self.err(key, format!("component ids must be strings, got {k:?}"));
                continue;
            };
            let path = format!("{key}.{id}");
            match parse_id(id) {
                Ok((ty, _)) => out.push((id.to_string(), ty.to_string(), body)),
                Err(e) => self.err(&path, e),
            }
        }
        out
    }
}

const TOP_LEVEL: &[&str] = &[
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
    "service",
];

impl Config {
    /// Validates a loaded config, collecting every error.
    pub fn from_loaded(loaded: &Loaded) -> Result<Config, ConfigErrors> {
        let mut cx = Ctx {
            loaded,
            errors: Vec::new(),
        };
        let empty = Mapping::new();
        let root = match &loaded.root {
            Value::Mapping(m) => m,
            Value::Null => &empty,
            _ => {
                cx.err("", "the config must be a mapping at the top level");
                return Err(ConfigErrors(cx.errors));
            }
        };
        for k in root.keys() {
            let name = k.as_str().unwrap_or("");
            if !TOP_LEVEL.contains(&name) {
                cx.err(
                    name,
                    format!(
                        "unknown top-level key {name:?}; expected one of: {}",
                        TOP_LEVEL.join(", ")
                    ),
                );
            }
        }

        let mut receivers = BTreeMap::new();
        for (id, ty, body) in cx.section(root, "receivers") {
            let path = format!("receivers.{id}");
            match canonical(Kind::Receiver, &ty) {
                "otlp" => {
                    // `otlp:` with no body has no protocols, which the check below reports.
                    if let Some(mut c) = cx.decode::<OtlpReceiverConfig>(&path, body) {
                        c.normalize();
                        if cx.problems(&path, c.validate()) {
                            receivers.insert(id, ReceiverConfig::Otlp(c));
                        }
                    }
                }
                _ => cx.err(&path, unknown_type(Kind::Receiver, &ty)),
            }
        }

        let mut processors = BTreeMap::new();
        for (id, ty, body) in cx.section(root, "processors") {
            let path = format!("processors.{id}");
            match canonical(Kind::Processor, &ty) {
                "batch" => {
                    if let Some(c) = cx.decode::<BatchConfig>(&path, body) {
                        match c.validate() {
                            Ok(()) => {
                                processors.insert(id, ProcessorConfig::Batch(c));
                            }
                            Err((k, m)) => cx.err(&format!("{path}.{k}"), m),
                        }
                    }
                }
                "attributes" => {
                    if let Some(c) = cx.decode::<AttributesConfig>(&path, body) {
                        match crate::processors::attributes::AttributesProcessor::new(&c) {
                            Ok(_) => {
                                processors.insert(id, ProcessorConfig::Attributes(c));
                            }
                            Err(p) => cx.err(&format!("{path}.{}", p.path), p.message),
                        }
                    }
                }
                "resource" => {
                    if let Some(c) = cx.decode::<ResourceConfig>(&path, body) {
                        match crate::processors::attributes::ResourceProcessor::new(&c) {
                            Ok(_) => {
                                processors.insert(id, ProcessorConfig::Resource(c));
                            }
                            Err(p) => cx.err(&format!("{path}.{}", p.path), p.message),
                        }
                    }
                }
                "memory_limiter" => {
                    if let Some(c) = cx
                        .decode::<crate::processors::memory_limiter::config::MemoryLimiterConfig>(
                        &path, body,
                    ) {
                        if cx.problems(&path, c.validate()) {
                            processors.insert(id, ProcessorConfig::MemoryLimiter(c));
                        }
                    }
                }
                "tenant" => {
                    if let Some(mut c) = cx.decode::<TenantConfig>(&path, body) {
                        let problems = crate::processors::tenant::prepare(&mut c);
                        if cx.problems(&path, problems) {
                            processors.insert(id, ProcessorConfig::Tenant(c));
                        }
                    }
                }
                "cardinality_limiter" => {
                    if let Some(c) = cx.decode::<CardinalityLimiterConfig>(&path, body) {
                        if cx.problems(&path, c.validate()) {
                            processors.insert(id, ProcessorConfig::CardinalityLimiter(c));
                        }
                    }
                }
                "filter" => {
                    if let Some(c) =
                        cx.decode::<crate::processors::filter::config::FilterConfig>(&path, body)
                    {
                        let problems = match crate::processors::filter::Filter::new(&c) {
                            Ok(_) => Vec::new(),
                            Err(p) => p,
                        };
                        if cx.problems(&path, problems) {
                            processors.insert(id, ProcessorConfig::Filter(Box::new(c)));
                        }
                    }
                }
                "probabilistic_sampler" => {
                    if let Some(c) = cx.decode::<
                        crate::processors::probabilistic_sampler::ProbabilisticSamplerConfig,
                    >(&path, body)
                    {
                        if cx.problems(&path, c.validate()) {
                            processors.insert(id, ProcessorConfig::ProbabilisticSampler(c));
                        }
                    }
                }
                "transform" => {
                    if let Some(c) =
                        cx.decode::<crate::processors::transform::TransformConfig>(&path, body)
                    {
                        let problems = match crate::processors::transform::Transform::new(&c) {
                            Ok(_) => Vec::new(),
                            Err(p) => p,
                        };
                        if cx.problems(&path, problems) {
                            processors.insert(id, ProcessorConfig::Transform(Box::new(c)));
                        }
                    }
                }
                "tail_sampling" => {
                    if let Some(c) = cx.decode::<TailSamplingConfig>(&path, body) {
                        if cx.problems(&path, crate::processors::tail_sampling::validate(&c)) {
                            processors.insert(id, ProcessorConfig::TailSampling(c));
                        }
                    }
                }
                _ => cx.err(&path, unknown_type(Kind::Processor, &ty)),
            }
        }

        let mut exporters = BTreeMap::new();
        for (id, ty, body) in cx.section(root, "exporters") {
            let path = format!("exporters.{id}");
            match canonical(Kind::Exporter, &ty) {
                "otlp" => {
                    if let Some(c) = cx.decode::<OtlpExporterConfig>(&path, body) {
                        if cx.problems(&path, c.validate()) {
                            exporters.insert(id, ExporterConfig::Otlp(c));
                        }
                    }
                }
                "otlphttp" => {
                    if let Some(c) = cx.decode::<OtlpHttpExporterConfig>(&path, body) {
                        if cx.problems(&path, c.validate()) {
                            exporters.insert(id, ExporterConfig::OtlpHttp(c));
                        }
                    }
                }
                "loki" => {
                    if let Some(mut c) = cx.decode::<LokiExporterConfig>(&path, body) {
                        c.normalize();
                        if cx.problems(&path, c.validate()) {
                            exporters.insert(id, ExporterConfig::Loki(Box::new(c)));
                        }
                    }
                }
                "prometheusremotewrite" => {
                    if let Some(mut c) = cx.decode::<PrwExporterConfig>(&path, body) {
                        c.normalize();
                        if cx.problems(&path, c.validate()) {
                            exporters
                                .insert(id, ExporterConfig::PrometheusRemoteWrite(Box::new(c)));
                        }
                    }
                }
                "debug" => {
                    if let Some(c) = cx.decode::<DebugConfig>(&path, body) {
                        exporters.insert(id, ExporterConfig::Debug(c));
                    }
                }
                _ => cx.err(&path, unknown_type(Kind::Exporter, &ty)),
            }
        }

        let mut connectors = BTreeMap::new();
        for (id, ty, body) in cx.section(root, "connectors") {
            let path = format!("connectors.{id}");
            match canonical(Kind::Connector, &ty) {
                "routing" => {
                    if let Some(c) =
                        cx.decode::<crate::connectors::routing::RoutingConfig>(&path, body)
                    {
                        if cx.problems(&path, c.validate()) {
                            connectors.insert(id, ConnectorConfig::Routing(c));
                        }
                    }
                }
                _ => cx.err(&path, unknown_type(Kind::Connector, &ty)),
            }
        }

        let mut extensions = BTreeMap::new();
        for (id, ty, body) in cx.section(root, "extensions") {
            let path = format!("extensions.{id}");
            match canonical(Kind::Extension, &ty) {
                "health_check" => {
                    if let Some(c) = cx.decode::<HealthCheckConfig>(&path, body) {
                        if cx.problems(&path, c.validate()) {
                            extensions.insert(id, ExtensionConfig::HealthCheck(c));
                        }
                    }
                }
                "pprof" => {
                    if let Some(c) = cx.decode::<crate::extensions::pprof::PprofConfig>(&path, body)
                    {
                        if cx.problems(&path, c.validate()) {
                            extensions.insert(id, ExtensionConfig::Pprof(c));
                        }
                    }
                }
                "zpages" => {
                    if let Some(c) =
                        cx.decode::<crate::extensions::zpages::ZPagesConfig>(&path, body)
                    {
                        if cx.problems(&path, c.validate()) {
                            extensions.insert(id, ExtensionConfig::ZPages(c));
                        }
                    }
                }
                "file_storage" => {
                    if let Some(c) =
                        cx.decode::<crate::extensions::file_storage::FileStorageConfig>(&path, body)
                    {
                        if cx.problems(&path, c.validate()) {
                            extensions.insert(id, ExtensionConfig::FileStorage(c));
                        }
                    }
                }
                "bearertokenauth" => {
                    if let Some(c) = cx.decode::<auth::BearerTokenConfig>(&path, body) {
                        if cx.problems(&path, c.validate()) {
                            extensions
                                .insert(id, ExtensionConfig::Auth(auth::AuthConfig::Bearer(c)));
                        }
                    }
                }
                "basicauth" => {
                    if let Some(c) = cx.decode::<auth::BasicAuthConfig>(&path, body) {
                        if cx.problems(&path, c.validate()) {
                            extensions
                                .insert(id, ExtensionConfig::Auth(auth::AuthConfig::Basic(c)));
                        }
                    }
                }
                "headers_setter" => {
                    if let Some(c) = cx.decode::<auth::HeadersSetterConfig>(&path, body) {
                        if cx.problems(&path, c.validate()) {
                            extensions.insert(
                                id,
                                ExtensionConfig::Auth(auth::AuthConfig::HeadersSetter(c)),
                            );
                        }
                    }
                }
                _ => cx.err(&path, unknown_type(Kind::Extension, &ty)),
            }
        }

        let service = cx.service(
            root,
            &receivers,
            &processors,
            &exporters,
            &connectors,
            &extensions,
        );

        if let Some(service) = &service {
            cx.check_ports(&receivers, &extensions, service);
            cx.resolve_auth(&mut receivers, &mut exporters, &extensions, service);
            cx.check_storage(&exporters, &extensions, service);
        }

        match service {
            Some(service) if cx.errors.is_empty() => Ok(Config {
                receivers,
                processors,
                exporters,
                connectors,
                extensions,
                service,
                warnings: loaded.warnings.clone(),
            }),
            _ => Err(ConfigErrors(cx.errors)),
        }
    }
}

fn unknown_type(kind: Kind, ty: &str) -> String {
    format!(
        "unknown {} type {ty:?}; weir has: {}",
        kind.as_str(),
        types_of(kind).join(", ")
    )
}

impl ExporterConfig {
    /// The `sending_queue` of this exporter, when it has one.
    pub fn sending_queue(&self) -> Option<&crate::exporters::helper::config::QueueConfig> {
        match self {
            ExporterConfig::Otlp(c) => Some(&c.sending_queue),
            ExporterConfig::OtlpHttp(c) => Some(&c.sending_queue),
            ExporterConfig::Loki(c) => Some(&c.sending_queue),
            ExporterConfig::PrometheusRemoteWrite(_) | ExporterConfig::Debug(_) => None,
        }
    }

    /// The `file_storage` extension its sending queue persists to.
    pub fn storage(&self) -> Option<&str> {
        self.sending_queue()
            .filter(|q| q.enabled)
            .and_then(|q| q.storage.as_deref())
    }
}

impl Ctx<'_> {
    /// Every `sending_queue.storage` names a `file_storage` extension enabled in
    /// `service.extensions` (upstream fails at start otherwise; weir says so at load).
    fn check_storage(
        &mut self,
        exporters: &BTreeMap<String, ExporterConfig>,
        extensions: &BTreeMap<String, ExtensionConfig>,
        service: &ServiceConfig,
    ) {
        for (id, e) in exporters {
            let Some(name) = e.sending_queue().and_then(|q| q.storage.as_deref()) else {
                continue;
            };
            let path = format!("exporters.{id}.sending_queue.storage");
            match extensions.get(name) {
                None => self.err(
                    &path,
                    format!("no storage client extension found: {name:?} is not configured under extensions"),
                ),
                Some(ExtensionConfig::FileStorage(_)) if !service.extensions.iter().any(|x| x == name) => {
                    self.err(
                        &path,
                        format!("no storage client extension found: {name:?} is not enabled; add it to service.extensions"),
                    )
                }
                Some(ExtensionConfig::FileStorage(_)) => {}
                Some(_) => self.err(
                    &path,
                    format!("requested extension is not a storage extension: {name:?}"),
                ),
            }
        }
    }

    /// Points every `auth: {authenticator: id}` at its extension's settings, checking that the
    /// extension exists, is enabled in `service.extensions`, and can serve that side.
    fn resolve_auth(
        &mut self,
        receivers: &mut BTreeMap<String, ReceiverConfig>,
        exporters: &mut BTreeMap<String, ExporterConfig>,
        extensions: &BTreeMap<String, ExtensionConfig>,
        service: &ServiceConfig,
    ) {
        let mut refs: Vec<(String, &mut auth::AuthRef, bool)> = Vec::new();
        for (id, r) in receivers.iter_mut() {
            let ReceiverConfig::Otlp(c) = r;
            if let Some(a) = c.protocols.grpc.as_mut().and_then(|g| g.auth.as_mut()) {
                refs.push((format!("receivers.{id}.protocols.grpc.auth"), a, true));
            }
            if let Some(a) = c.protocols.http.as_mut().and_then(|h| h.auth.as_mut()) {
                refs.push((format!("receivers.{id}.protocols.http.auth"), a, true));
            }
        }
        for (id, e) in exporters.iter_mut() {
            let a = match e {
                ExporterConfig::Otlp(c) => c.auth.as_mut(),
                ExporterConfig::OtlpHttp(c) => c.auth.as_mut(),
                ExporterConfig::Loki(c) => c.auth.as_mut(),
                ExporterConfig::PrometheusRemoteWrite(c) => c.auth.as_mut(),
                ExporterConfig::Debug(_) => None,
            };
            if let Some(a) = a {
                refs.push((format!("exporters.{id}.auth"), a, false));
            }
        }
        for (path, a, server) in refs {
            let path = format!("{path}.authenticator");
            let name = a.authenticator.clone();
            let Some(ext) = extensions.get(&name) else {
                self.err(
                    &path,
                    format!(
                        "references extension {name:?}, which is not configured under extensions"
                    ),
                );
                continue;
            };
            if !service.extensions.contains(&name) {
                self.err(
                    &path,
                    format!("extension {name:?} is not enabled: add it to service.extensions"),
                );
                continue;
            }
            let ExtensionConfig::Auth(cfg) = ext else {
                self.err(&path, format!("extension {name:?} is not an authenticator"));
                continue;
            };
            let problem = match (cfg, server) {
                (auth::AuthConfig::HeadersSetter(_), true) => Some(
                    "headers_setter sets an exporter's headers; a receiver needs bearertokenauth or basicauth",
                ),
                (auth::AuthConfig::Basic(b), true) if b.htpasswd.is_none() => {
                    Some("this basicauth has no htpasswd to check clients against")
                }
                (auth::AuthConfig::Basic(b), false) if b.client_auth.is_none() => {
                    Some("this basicauth has no client_auth to send")
                }
                _ => None,
            };
            match problem {
                Some(p) => self.err(&path, format!("extension {name:?}: {p}")),
                None => a.resolved = Some(cfg.clone()),
            }
        }
    }

    fn service(
        &mut self,
        root: &Mapping,
        receivers: &BTreeMap<String, ReceiverConfig>,
        processors: &BTreeMap<String, ProcessorConfig>,
        exporters: &BTreeMap<String, ExporterConfig>,
        connectors: &BTreeMap<String, ConnectorConfig>,
        extensions: &BTreeMap<String, ExtensionConfig>,
    ) -> Option<ServiceConfig> {
        let declared = |section: &str| -> Vec<String> {
            root.get(section)
                .and_then(|v| v.as_mapping())
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let Some(svc_value) = root.get("service") else {
            self.err("service", "is required: declare service.pipelines");
            return None;
        };
        let raw: RawService = if svc_value.is_null() {
            RawService::default()
        } else {
            match self.loaded.decode_all::<RawService>("service", svc_value) {
                Ok(r) => r,
                Err(e) => {
                    self.errors.extend(e);
                    return None;
                }
            }
        };
        let telemetry = if raw.telemetry.is_null() {
            TelemetryConfig::default()
        } else {
            match self
                .loaded
                .decode_all::<TelemetryConfig>("service.telemetry", &raw.telemetry)
            {
                Ok(t) => {
                    self.problems("service.telemetry", t.validate());
                    t
                }
                Err(e) => {
                    self.errors.extend(e);
                    TelemetryConfig::default()
                }
            }
        };
        for (i, ext) in raw.extensions.iter().enumerate() {
            let path = format!("service.extensions[{i}]");
            if !extensions.contains_key(ext) && !declared("extensions").contains(ext) {
                self.err(
                    &path,
                    format!(
                        "references extension {ext:?}, which is not configured under extensions"
                    ),
                );
            }
        }
        if raw.pipelines.is_empty() {
            self.err("service.pipelines", "at least one pipeline is required");
        }
        let mut pipelines = BTreeMap::new();
        for (pid, body) in &raw.pipelines {
            let path = format!("service.pipelines.{pid}");
            let signal = match parse_id(pid) {
                Ok((ty, _)) => match Signal::parse(ty) {
                    Some(s) => s,
                    None => {
                        self.err(
                            &path,
                            format!("unknown pipeline type {ty:?}; expected traces, metrics or logs (optionally traces/<name>)"),
                        );
                        continue;
                    }
                },
                Err(e) => {
                    self.err(&path, e);
                    continue;
                }
            };
            let p: RawPipeline = if body.is_null() {
                RawPipeline {
                    receivers: vec![],
                    processors: vec![],
                    exporters: vec![],
                }
            } else {
                match self.loaded.decode_all::<RawPipeline>(&path, body) {
                    Ok(p) => p,
                    Err(e) => {
                        self.errors.extend(e);
                        continue;
                    }
                }
            };
            if p.receivers.is_empty() {
                self.err(
                    &format!("{path}.receivers"),
                    "must list at least one receiver",
                );
            }
            if p.exporters.is_empty() {
                self.err(
                    &format!("{path}.exporters"),
                    "must list at least one exporter",
                );
            }
            // A connector is an exporter of one pipeline and a receiver of others.
            let with_connectors = |list: &str| {
                let mut v = declared(list);
                v.extend(declared("connectors"));
                v
            };
            self.refs(
                &path,
                "receivers",
                Kind::Receiver,
                &p.receivers,
                &with_connectors("receivers"),
                |id| receivers.contains_key(id) || connectors.contains_key(id),
                signal,
            );
            self.refs(
                &path,
                "processors",
                Kind::Processor,
                &p.processors,
                &declared("processors"),
                |id| processors.contains_key(id),
                signal,
            );
            self.refs(
                &path,
                "exporters",
                Kind::Exporter,
                &p.exporters,
                &with_connectors("exporters"),
                |id| exporters.contains_key(id) || connectors.contains_key(id),
                signal,
            );
            pipelines.insert(
                pid.clone(),
                PipelineConfig {
                    signal,
                    receivers: p.receivers,
                    processors: p.processors,
                    exporters: p.exporters,
                },
            );
        }
        // Connectors: used on both sides; routes name pipelines that receive from them, of the
        // signal they are fed.
        for (cid, c) in connectors {
            let ConnectorConfig::Routing(r) = c;
            let path = format!("connectors.{cid}");
            let sources: Vec<Signal> = pipelines
                .values()
                .filter(|p: &&PipelineConfig| p.exporters.contains(cid))
                .map(|p| p.signal)
                .collect();
            let fed = pipelines.values().any(|p| p.receivers.contains(cid));
            if sources.is_empty() || !fed {
                self.err(
                    &path,
                    "a connector must be an exporter of one pipeline and a receiver of another",
                );
                continue;
            }
            for (key, target) in r.targets() {
                match pipelines.get(&target) {
                    None => self.err(
                        &format!("{path}.{key}"),
                        format!("names pipeline {target:?}, which is not configured under service.pipelines"),
                    ),
                    Some(t) if !t.receivers.contains(cid) => self.err(
                        &format!("{path}.{key}"),
                        format!("pipeline {target:?} must list {cid:?} among its receivers"),
                    ),
                    Some(t) if !sources.contains(&t.signal) => self.err(
                        &format!("{path}.{key}"),
                        format!("pipeline {target:?} is {}, but {cid:?} is fed {}", t.signal, sources[0]),
                    ),
                    _ => {}
                }
            }
        }
        Some(ServiceConfig {
            pipelines,
            extensions: raw.extensions,
            telemetry,
            shutdown_timeout: raw
                .shutdown_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(10)),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn refs(
        &mut self,
        path: &str,
        list: &str,
        kind: Kind,
        ids: &[String],
        declared: &[String],
        valid: impl Fn(&str) -> bool,
        signal: Signal,
    ) {
        for (i, id) in ids.iter().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            if ids[..i].contains(id) {
                self.err(&p, format!("{} {id:?} is listed twice", kind.as_str()));
                continue;
            }
            if !declared.contains(id) {
                self.err(
                    &p,
                    format!(
                        "references {} {id:?}, which is not configured under {list}",
                        kind.as_str()
                    ),
                );
                continue;
            }
            // Declared but invalid: its own error was already reported.
            if !valid(id) {
                continue;
            }
            let ty = parse_id(id).map(|(t, _)| t).unwrap_or("");
            if let Some(info) = info(kind, ty) {
                if !info.signals.contains(&signal) {
                    self.err(
                        &p,
                        format!("{} {id:?} does not support {signal}", kind.as_str()),
                    );
                }
            }
        }
    }

    /// Two listeners on one port fail at start; say so before anything starts.
    fn check_ports(
        &mut self,
        receivers: &BTreeMap<String, ReceiverConfig>,
        extensions: &BTreeMap<String, ExtensionConfig>,
        service: &ServiceConfig,
    ) {
        let used: Vec<&String> = service
            .pipelines
            .values()
            .flat_map(|p| &p.receivers)
            .collect();
        let mut seen: Vec<((String, u16), String)> = Vec::new();
        let mut check = |cx: &mut Self, path: String, endpoint: &str| {
            let Some((host, port)) = crate::net::endpoint_parts(endpoint) else {
                return;
            };
            if port == 0 {
                return;
            }
            if let Some((_, other)) = seen
                .iter()
                .find(|((h, p), _)| *p == port && (h == &host || h == "*" || host == "*"))
            {
                cx.err(
                    &path,
                    format!("endpoint {endpoint:?} uses the same port as {other}"),
                );
            } else {
                seen.push(((host, port), path));
            }
        };
        for (id, r) in receivers {
            if !used.contains(&id) {
                continue;
            }
            let ReceiverConfig::Otlp(c) = r;
            for (key, ep) in c.endpoints() {
                check(self, format!("receivers.{id}.{key}"), ep);
            }
        }
        for (id, e) in extensions {
            if !service.extensions.contains(id) {
                continue;
            }
            let endpoint = match e {
                ExtensionConfig::HealthCheck(c) => &c.endpoint,
                ExtensionConfig::ZPages(c) => &c.endpoint,
                ExtensionConfig::Pprof(c) => &c.endpoint,
                _ => continue,
            };
            check(self, format!("extensions.{id}.endpoint"), endpoint);
        }
        if let Some(addr) = service.telemetry.metrics_address() {
            check(self, "service.telemetry.metrics.address".into(), &addr);
        }
    }
}
