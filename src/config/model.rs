//! The validated configuration: the Collector's envelope (`receivers`, `processors`,
//! `exporters`, `connectors`, `extensions`, `service`) with every component body decoded by
//! its type's settings struct. Validation is pure: no sockets, no files written. It reports
//! every problem it finds, each with file, line and YAML path.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::loader::{Body, ConfigError, ConfigErrors, Loaded, Mapping, Value};
use super::units::DurationValue;
use crate::pdata::Signal;
pub use crate::pipeline::registry::Kind;
use crate::pipeline::registry::{
    lookup, type_names, Component, ConnectorSettings, Decode, ExporterSettings, ExtensionSettings,
    Handles, ProcessorSettings, ReceiverSettings,
};
use crate::telemetry::TelemetryConfig;

pub type ReceiverConfig = Component<dyn ReceiverSettings>;
pub type ProcessorConfig = Component<dyn ProcessorSettings>;
pub type ExporterConfig = Component<dyn ExporterSettings>;
pub type ConnectorConfig = Component<dyn ConnectorSettings>;
pub type ExtensionConfig = Component<dyn ExtensionSettings>;

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

        // Every component body, decoded by its type's factory. Receivers and exporters stay
        // boxed until their `auth:` references are resolved.
        let mut receivers: BTreeMap<String, (&'static str, Box<dyn ReceiverSettings>)> =
            BTreeMap::new();
        let mut processors = BTreeMap::new();
        let mut exporters: BTreeMap<String, (&'static str, Box<dyn ExporterSettings>)> =
            BTreeMap::new();
        let mut connectors = BTreeMap::new();
        let mut extensions = BTreeMap::new();
        for kind in [
            Kind::Receiver,
            Kind::Processor,
            Kind::Exporter,
            Kind::Connector,
            Kind::Extension,
        ] {
            for (id, ty, body) in cx.section(root, kind.section()) {
                let path = format!("{}.{id}", kind.section());
                let Some(f) = lookup(kind, &ty) else {
                    cx.err(&path, unknown_type(kind, &ty));
                    continue;
                };
                let type_name = f.type_name;
                let mut b = Body::new(loaded, path, body, &mut cx.errors);
                match f.decode {
                    Decode::Receiver(d) => {
                        if let Some(s) = d(&mut b) {
                            receivers.insert(id, (type_name, s));
                        }
                    }
                    Decode::Processor(d) => {
                        if let Some(s) = d(&mut b) {
                            processors.insert(id, component(type_name, s));
                        }
                    }
                    Decode::Exporter(d) => {
                        if let Some(s) = d(&mut b) {
                            exporters.insert(id, (type_name, s));
                        }
                    }
                    Decode::Connector(d) => {
                        if let Some(s) = d(&mut b) {
                            connectors.insert(id, component(type_name, s));
                        }
                    }
                    Decode::Extension(d) => {
                        if let Some(s) = d(&mut b) {
                            extensions.insert(id, component(type_name, s));
                        }
                    }
                }
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
            cx.check_ports(&receivers, &exporters, &extensions, service);
            cx.resolve_auth(&mut receivers, &mut exporters, &extensions, service);
            cx.check_storage(&exporters, &extensions, service);
        }

        match service {
            Some(service) if cx.errors.is_empty() => Ok(Config {
                receivers: receivers
                    .into_iter()
                    .map(|(id, (t, s))| (id, component(t, s)))
                    .collect(),
                processors,
                exporters: exporters
                    .into_iter()
                    .map(|(id, (t, s))| (id, component(t, s)))
                    .collect(),
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
        type_names(kind).join(", ")
    )
}

fn component<S: ?Sized>(type_name: &'static str, settings: Box<S>) -> Component<S> {
    Component {
        type_name,
        settings: settings.into(),
    }
}

type Boxed<S> = BTreeMap<String, (&'static str, Box<S>)>;

impl Ctx<'_> {
    /// Every `sending_queue.storage` names a `file_storage` extension enabled in
    /// `service.extensions` (upstream fails at start otherwise; weir says so at load).
    fn check_storage(
        &mut self,
        exporters: &Boxed<dyn ExporterSettings>,
        extensions: &BTreeMap<String, ExtensionConfig>,
        service: &ServiceConfig,
    ) {
        for (id, (_, e)) in exporters {
            let Some(name) = e.sending_queue().and_then(|q| q.storage.as_deref()) else {
                continue;
            };
            let path = format!("exporters.{id}.sending_queue.storage");
            match extensions.get(name) {
                None => self.err(
                    &path,
                    format!("no storage client extension found: {name:?} is not configured under extensions"),
                ),
                Some(x) if x.settings.is_storage() && !service.extensions.iter().any(|x| x == name) => {
                    self.err(
                        &path,
                        format!("no storage client extension found: {name:?} is not enabled; add it to service.extensions"),
                    )
                }
                Some(x) if x.settings.is_storage() => {}
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
        receivers: &mut Boxed<dyn ReceiverSettings>,
        exporters: &mut Boxed<dyn ExporterSettings>,
        extensions: &BTreeMap<String, ExtensionConfig>,
        service: &ServiceConfig,
    ) {
        use crate::extensions::auth;
        let mut refs: Vec<(String, &mut auth::AuthRef, bool)> = Vec::new();
        for (id, (_, r)) in receivers.iter_mut() {
            for slot in r.auth_slots() {
                refs.push((format!("receivers.{id}.{}", slot.key), slot.auth, true));
            }
        }
        for (id, (_, e)) in exporters.iter_mut() {
            if let Some(slot) = e.auth_slot() {
                refs.push((format!("exporters.{id}.{}", slot.key), slot.auth, false));
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
            let Some(cfg) = ext.settings.authenticator() else {
                self.err(&path, format!("extension {name:?} is not an authenticator"));
                continue;
            };
            let problem = cfg.unfit_for(server);
            match problem {
                Some(p) => self.err(&path, format!("extension {name:?}: {p}")),
                None => a.resolved = Some(cfg.clone()),
            }
        }
    }

    fn service(
        &mut self,
        root: &Mapping,
        receivers: &Boxed<dyn ReceiverSettings>,
        processors: &BTreeMap<String, ProcessorConfig>,
        exporters: &Boxed<dyn ExporterSettings>,
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
            let path = format!("connectors.{cid}");
            // (fed, emitted) signal pairs this connector's type handles.
            let pairs: Vec<(Signal, Signal)> = lookup(Kind::Connector, c.type_name)
                .map(|f| {
                    f.stability
                        .iter()
                        .filter_map(|(h, _)| match h {
                            Handles::Pair(a, b) => Some((*a, *b)),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let emits = |from: &[Signal], to: Signal| {
                pairs.iter().any(|(a, b)| from.contains(a) && *b == to)
            };
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
            for (pid, p) in &pipelines {
                if p.exporters.contains(cid) && !pairs.iter().any(|(a, _)| *a == p.signal) {
                    self.err(
                        &path,
                        format!(
                            "pipeline {pid:?} is {}, which {} connector {cid:?} does not take",
                            p.signal, c.type_name
                        ),
                    );
                }
                if p.receivers.contains(cid) && !emits(&sources, p.signal) {
                    self.err(
                        &path,
                        format!(
                            "pipeline {pid:?} is {}, which {} connector {cid:?} does not emit from {}",
                            p.signal, c.type_name, sources[0]
                        ),
                    );
                }
            }
            for (key, target) in c.settings.named_pipelines() {
                match pipelines.get(&target) {
                    None => self.err(
                        &format!("{path}.{key}"),
                        format!("names pipeline {target:?}, which is not configured under service.pipelines"),
                    ),
                    Some(t) if !t.receivers.contains(cid) => self.err(
                        &format!("{path}.{key}"),
                        format!("pipeline {target:?} must list {cid:?} among its receivers"),
                    ),
                    Some(t) if !emits(&sources, t.signal) => self.err(
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
            if let Some(f) = lookup(kind, ty) {
                if !f.handles(signal) {
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
        receivers: &Boxed<dyn ReceiverSettings>,
        exporters: &Boxed<dyn ExporterSettings>,
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
        for (id, (_, r)) in receivers {
            if !used.contains(&id) {
                continue;
            }
            for (key, ep) in r.endpoints() {
                check(self, format!("receivers.{id}.{key}"), &ep);
            }
        }
        let used_exporters: Vec<&String> = service
            .pipelines
            .values()
            .flat_map(|p| &p.exporters)
            .collect();
        for (id, (_, e)) in exporters {
            if !used_exporters.contains(&id) {
                continue;
            }
            for (key, ep) in e.endpoints() {
                check(self, format!("exporters.{id}.{key}"), &ep);
            }
        }
        for (id, e) in extensions {
            if !service.extensions.contains(id) {
                continue;
            }
            let Some(endpoint) = e.settings.endpoint() else {
                continue;
            };
            check(self, format!("extensions.{id}.endpoint"), endpoint);
        }
        if let Some(addr) = service.telemetry.metrics_address() {
            check(self, "service.telemetry.metrics.address".into(), &addr);
        }
    }
}
