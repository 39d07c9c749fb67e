//! The `tenant` processor (all signals): decides each resource's tenant, writes it into a
//! resource attribute (`tenant.id`) and into the batch context, and splits batches so one
//! batch (and so one exporter request) never mixes tenants.
//!
//! Sources, tried in order (the first that yields a tenant wins): `auth` (the client's bearer
//! token mapped through `tokens`/`tokens_file`), `header` (a request header; the receiver
//! needs `include_metadata`), `attribute` (a resource attribute, mapped exactly or by regex),
//! `static`. With nothing found, `missing: default` uses `default_tenant` and
//! `missing: reject` drops the data (counted). `trust_client_header: false` drops data whose
//! tenant header disagrees with its bearer token's tenant, so one tenant cannot write as
//! another.
pub mod config;
mod encoded;
pub mod gate;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use regex::Regex;

use crate::config::loader::Body;
use crate::pdata::{Batch, Context, Payload};
use crate::pipeline::registry::{
    all_signals, BuildEnv, Decode, Factory, ProcessorSettings, Stability,
};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Registry};
use config::{Missing, SourceConfig, TenantConfig};

pub static FACTORY: Factory = Factory {
    type_name: "tenant",
    aliases: &[],
    stability: &all_signals(Stability::Beta),
    description:
        "decides each resource's tenant (token, header, attribute, static) and keeps tenants apart",
    decode: Decode::Processor(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<TenantConfig>(prepare)?;
    Some(Box::new(c))
}

impl ProcessorSettings for TenantConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        Box::new(TenantProcessor::new(id, self, env.registry))
    }
    fn gate(
        &self,
        id: &str,
        registry: &Arc<Registry>,
    ) -> Option<Arc<dyn crate::pipeline::inbox::Gate>> {
        Some(Arc::new(gate::TenantGate::new(id, self, registry)))
    }
}

/// Reads a tokens file: one `token tenant` pair a line, `#` comments, blank lines ignored.
pub fn read_tokens_file(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut parts = l.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(tenant), None) => out.push((t.to_owned(), tenant.to_owned())),
            _ => {
                return Err(format!(
                    "{}:{}: expected `token tenant`",
                    path.display(),
                    i + 1
                ))
            }
        }
    }
    Ok(out)
}

/// Checks a config the way building it would; loads `tokens_file` into `tokens` (so a reload
/// that finds a changed file sees a changed config).
pub fn prepare(cfg: &mut TenantConfig) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if cfg.sources.is_empty() {
        errs.push((
            "sources".into(),
            "must list at least one source (auth, header, attribute, static)".into(),
        ));
    }
    let mut needs_tokens = false;
    for (i, s) in cfg.sources.iter().enumerate() {
        match s {
            SourceConfig::Named(n) if n == "auth" => needs_tokens = true,
            SourceConfig::Named(n) => errs.push((
                format!("sources[{i}]"),
                format!("unknown source {n:?}; expected auth, {{header: ...}}, {{attribute: {{key, map}}}} or {{static: ...}}"),
            )),
            SourceConfig::Header { header } if http::HeaderName::from_bytes(header.as_bytes()).is_err() => {
                errs.push((format!("sources[{i}].header"), format!("invalid header name {header:?}")))
            }
            SourceConfig::Attribute { attribute } => {
                if attribute.key.is_empty() {
                    errs.push((format!("sources[{i}].attribute.key"), "is required".into()));
                }
                for pat in attribute.map.keys() {
                    if let Err(e) = Regex::new(&format!("^(?:{pat})$")) {
                        errs.push((format!("sources[{i}].attribute.map.{pat}"), format!("invalid regex {pat:?}: {e}")));
                    }
                }
            }
            SourceConfig::Static { value } if value.is_empty() => {
                errs.push((format!("sources[{i}].static"), "must not be empty".into()))
            }
            _ => {}
        }
    }
    if let Some(path) = &cfg.tokens_file {
        match read_tokens_file(path) {
            Ok(pairs) => cfg.tokens.extend(pairs),
            Err(e) => errs.push(("tokens_file".into(), e)),
        }
    }
    if needs_tokens && cfg.tokens.is_empty() && cfg.identities.is_empty() && errs.is_empty() {
        errs.push((
            "tokens".into(),
            "source auth needs tokens (inline), tokens_file or identities".into(),
        ));
    }
    let has_header = cfg
        .sources
        .iter()
        .any(|s| matches!(s, SourceConfig::Header { .. }));
    if !cfg.trust_client_header && has_header && !needs_tokens {
        errs.push((
            "trust_client_header".into(),
            "false honours a tenant header only for a client that authenticated: add the auth source, or set it to true".into(),
        ));
    }
    if cfg.missing == Missing::Default && cfg.default_tenant.is_empty() {
        errs.push((
            "default_tenant".into(),
            "must not be empty with missing: default".into(),
        ));
    }
    if cfg.attribute.is_empty() {
        errs.push(("attribute".into(), "must not be empty".into()));
    }
    errs
}

/// What the client presented in `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential<'a> {
    /// No `Authorization` header, or one of another scheme (`Basic ...`).
    Absent,
    /// `Bearer <token>`.
    Bearer(&'a str),
    /// `Bearer` with no token. One rule for HTTP and gRPC: HTTP strips the trailing space
    /// of `Bearer `, gRPC metadata keeps it; both are a credential that cannot match.
    Empty,
}

/// The client's bearer token, read the same way for every transport: the scheme is
/// case-insensitive, the token is what follows it, trimmed.
pub(crate) fn credential(ctx: &Context) -> Credential<'_> {
    let Some(h) = ctx.metadata_value("authorization") else {
        return Credential::Absent;
    };
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Credential::Absent;
    }
    match rest.trim() {
        "" => Credential::Empty,
        t => Credential::Bearer(t),
    }
}

/// The tenant a request's credential proves, if any: the identity an authenticator accepted
/// (through `identities`, or `tokens` for a bearer token), else a bearer token in the client's
/// metadata.
pub(crate) fn authenticated(
    ctx: &Context,
    tokens: &HashMap<String, Arc<str>>,
    identities: &HashMap<String, Arc<str>>,
) -> Option<Arc<str>> {
    if let Some(id) = &ctx.auth {
        if let Some(t) = identities.get(&*id.subject) {
            return Some(t.clone());
        }
        if id.method == "bearertokenauth" {
            if let Some(t) = tokens.get(&*id.subject) {
                return Some(t.clone());
            }
        }
    }
    match credential(ctx) {
        Credential::Bearer(t) => tokens.get(t).cloned(),
        Credential::Absent | Credential::Empty => None,
    }
}

enum Source {
    Auth,
    Header(String),
    Attribute {
        key: String,
        exact: HashMap<String, Arc<str>>,
        rules: Vec<(Regex, Arc<str>)>,
    },
    Static(Arc<str>),
}

/// Why a resource got no tenant.
enum NoTenant {
    Missing,
    Spoofed,
}

pub struct TenantProcessor {
    id: Arc<str>,
    sources: Vec<Source>,
    missing: Missing,
    default_tenant: Arc<str>,
    attribute: String,
    trust_header: bool,
    tokens: HashMap<String, Arc<str>>,
    identities: HashMap<String, Arc<str>>,
    dropped_missing: Counter,
    dropped_spoofed: Counter,
    dropped_undecodable: Counter,
}

fn str_value(v: &AnyValue) -> Option<&str> {
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn set_attr(resource: &mut Option<Resource>, key: &str, value: &str) {
    let r = resource.get_or_insert_with(Resource::default);
    let v = Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    });
    // Every copy the client sent goes: a second one must not carry a tenant it chose.
    r.attributes.retain(|kv| kv.key != key);
    r.attributes.push(KeyValue {
        key: key.to_owned(),
        value: v,
        ..Default::default()
    });
}

impl TenantProcessor {
    pub fn new(id: &str, cfg: &TenantConfig, registry: &Registry) -> TenantProcessor {
        let sources = cfg
            .sources
            .iter()
            .filter_map(|s| match s {
                SourceConfig::Named(n) if n == "auth" => Some(Source::Auth),
                SourceConfig::Named(_) => None,
                SourceConfig::Header { header } => Some(Source::Header(header.clone())),
                SourceConfig::Attribute { attribute } => {
                    let mut exact = HashMap::new();
                    let mut rules = Vec::new();
                    for (pat, tenant) in &attribute.map {
                        let t: Arc<str> = Arc::from(tenant.as_str());
                        exact.insert(pat.clone(), t.clone());
                        if let Ok(re) = Regex::new(&format!("^(?:{pat})$")) {
                            rules.push((re, t));
                        }
                    }
                    Some(Source::Attribute {
                        key: attribute.key.clone(),
                        exact,
                        rules,
                    })
                }
                SourceConfig::Static { value } => Some(Source::Static(Arc::from(value.as_str()))),
            })
            .collect();
        let dropped = |reason: &str| {
            registry.counter(
                "weir_tenant_dropped_items_total",
                "Items the tenant processor dropped: no tenant (missing: reject) or a tenant header that disagrees with the client's token.",
                &[("processor", id), ("reason", reason)],
            )
        };
        TenantProcessor {
            id: Arc::from(id),
            sources,
            missing: cfg.missing,
            default_tenant: Arc::from(cfg.default_tenant.as_str()),
            attribute: cfg.attribute.clone(),
            trust_header: cfg.trust_client_header,
            tokens: cfg
                .tokens
                .iter()
                .map(|(k, v)| (k.clone(), Arc::from(v.as_str())))
                .collect(),
            identities: cfg
                .identities
                .iter()
                .map(|(k, v)| (k.clone(), Arc::from(v.as_str())))
                .collect(),
            dropped_missing: dropped("missing"),
            dropped_spoofed: dropped("header_mismatch"),
            dropped_undecodable: dropped("undecodable"),
        }
    }

    /// Whether a resource's attributes can decide its tenant (else one tenant per batch).
    fn per_resource(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, Source::Attribute { .. }))
    }

    fn tenant<'r>(
        &self,
        ctx: &Context,
        attr: impl Fn(&str) -> Option<&'r str>,
    ) -> Result<Arc<str>, NoTenant> {
        let auth = authenticated(ctx, &self.tokens, &self.identities);
        // Untrusted claims (a header, a resource attribute the client wrote) are honoured only
        // for a client that authenticated; otherwise anyone could write as any tenant.
        let claims_count = self.trust_header || auth.is_some();
        if !self.trust_header {
            if let Some(a) = &auth {
                for s in &self.sources {
                    if let Source::Header(h) = s {
                        if let Some(v) = ctx.metadata_value(h) {
                            if v != &**a {
                                return Err(NoTenant::Spoofed);
                            }
                        }
                    }
                }
            }
        }
        for s in &self.sources {
            let found = match s {
                Source::Auth => auth.clone(),
                Source::Header(_) | Source::Attribute { .. } if !claims_count => None,
                Source::Header(h) => ctx
                    .metadata_value(h)
                    .filter(|v| !v.is_empty())
                    .map(Arc::from),
                Source::Static(v) => Some(v.clone()),
                Source::Attribute { key, exact, rules } => attr(key).and_then(|v| {
                    if exact.is_empty() {
                        return Some(Arc::from(v));
                    }
                    exact.get(v).cloned().or_else(|| {
                        rules
                            .iter()
                            .find(|(re, _)| re.is_match(v))
                            .map(|(_, t)| t.clone())
                    })
                }),
            };
            if let Some(t) = found {
                return Ok(t);
            }
        }
        match self.missing {
            Missing::Default => Ok(self.default_tenant.clone()),
            Missing::Reject => Err(NoTenant::Missing),
        }
    }

    fn count_drop(&self, why: NoTenant, items: usize) {
        match why {
            NoTenant::Missing => {
                self.dropped_missing.add(items as u64);
                tracing::warn!(processor = %self.id, "dropped {items} items with no tenant (missing: reject)");
            }
            NoTenant::Spoofed => {
                self.dropped_spoofed.add(items as u64);
                tracing::warn!(processor = %self.id, "dropped {items} items whose tenant header disagrees with the client's token (trust_client_header: false)");
            }
        }
    }
}

/// Splits the resource-level items of a request by tenant.
macro_rules! split_by_tenant {
    ($self:ident, $req:expr, $field:ident, $ctor:ident, $count:path, $variant:ident, $batch:ident, $out:ident) => {{
        let ctx = $batch.context.clone();
        let mut groups: Vec<(Arc<str>, $ctor)> = Vec::new();
        for mut item in std::mem::take(&mut $req.$field) {
            let resource = item.resource.as_ref();
            let found = $self.tenant(&ctx, |k| {
                resource
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == k))
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(str_value)
            });
            match found {
                Ok(t) => {
                    set_attr(&mut item.resource, &$self.attribute, &t);
                    match groups.iter_mut().find(|(g, _)| *g == t) {
                        Some((_, r)) => r.$field.push(item),
                        None => groups.push((t, $ctor { $field: vec![item] })),
                    }
                }
                Err(why) => {
                    let one = $ctor { $field: vec![item] };
                    $self.count_drop(why, $count(&one));
                }
            }
        }
        for (t, r) in groups {
            let mut c = (*ctx).clone();
            c.tenant = Some(t);
            let items = $count(&r);
            $out.push(Batch {
                signal: $batch.signal,
                items,
                payload: Payload::$variant(r),
                context: Arc::new(c),
                held: $batch.held.clone(),
                compressed: None,
            });
        }
    }};
}

impl TenantProcessor {
    /// Tags and splits an encoded batch without decoding it; `Err` (bytes that do not walk)
    /// hands it back for the decoding path.
    fn process_encoded(&self, batch: Batch, out: &mut Vec<Batch>) -> Result<(), Batch> {
        let Payload::Encoded(bytes) = &batch.payload else {
            return Err(batch);
        };
        let Ok(entries) = encoded::resources(bytes) else {
            return Err(batch);
        };
        if entries.is_empty() {
            return Ok(());
        }
        let ctx = batch.context.clone();
        // (tenant, request bytes, items)
        let mut groups: Vec<(Arc<str>, Vec<u8>, usize)> = Vec::new();
        if !self.per_resource() {
            // One tenant for the whole batch: no counting, no split.
            match self.tenant(&ctx, |_| None) {
                Ok(t) => {
                    let mut buf = Vec::with_capacity(
                        bytes.len() + entries.len() * (self.attribute.len() + t.len() + 16),
                    );
                    for e in &entries {
                        e.write_tagged(&self.attribute, &t, &mut buf);
                    }
                    groups.push((t, buf, batch.items));
                }
                Err(why) => {
                    self.count_drop(why, batch.items);
                    return Ok(());
                }
            }
        } else {
            for e in &entries {
                let Ok(items) = e.items(batch.signal) else {
                    return Err(batch);
                };
                match self.tenant(&ctx, |k| e.attribute(k)) {
                    Ok(t) => {
                        let g = match groups.iter().position(|(g, _, _)| *g == t) {
                            Some(i) => i,
                            None => {
                                groups.push((t.clone(), Vec::with_capacity(bytes.len()), 0));
                                groups.len() - 1
                            }
                        };
                        let (_, buf, n) = &mut groups[g];
                        e.write_tagged(&self.attribute, &t, buf);
                        *n += items;
                    }
                    Err(why) => self.count_drop(why, items),
                }
            }
        }
        for (t, buf, items) in groups {
            let mut c = (*ctx).clone();
            c.tenant = Some(t);
            out.push(Batch {
                signal: batch.signal,
                items,
                payload: Payload::Encoded(bytes::Bytes::from(buf)),
                context: Arc::new(c),
                held: batch.held.clone(),
                compressed: None,
            });
        }
        Ok(())
    }
}

impl Processor for TenantProcessor {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let mut batch = match self.process_encoded(batch, out) {
            Ok(()) => return,
            Err(b) => b,
        };
        if let Err(e) = batch.decode() {
            self.dropped_undecodable.add(e.lost as u64);
            tracing::error!(processor = %self.id, "dropping {} items: {e}", e.lost);
        }
        let payload = std::mem::replace(&mut batch.payload, Payload::Encoded(Default::default()));
        match payload {
            Payload::Traces(mut r) => split_by_tenant!(
                self,
                r,
                resource_spans,
                ExportTraceServiceRequest,
                crate::pdata::count_spans,
                Traces,
                batch,
                out
            ),
            Payload::Metrics(mut r) => split_by_tenant!(
                self,
                r,
                resource_metrics,
                ExportMetricsServiceRequest,
                crate::pdata::count_points,
                Metrics,
                batch,
                out
            ),
            Payload::Logs(mut r) => split_by_tenant!(
                self,
                r,
                resource_logs,
                ExportLogsServiceRequest,
                crate::pdata::count_logs,
                Logs,
                batch,
                out
            ),
            Payload::Encoded(_) => {}
        }
    }
}
