//! The `loki` exporter: logs to Loki's push API (`POST /loki/api/v1/push`).
//!
//! Each log record becomes an entry of the stream its labels name: labels come from the
//! configured maps (resource attributes and log attributes to label names), from the
//! Collector's former hints (`loki.resource.labels`, `loki.attribute.labels`, `loki.format`,
//! `loki.tenant` as resource or log attributes, for configs migrating from it) and `level`
//! from the severity. The line is the body plus what is not a label (`json`, `logfmt` or
//! `raw`), or, with `structured_metadata`, the body alone with the rest as structured
//! metadata. Entries are ordered by timestamp within a stream; requests never mix tenants
//! (each carries its tenant's header) and stay under `max_batch_size_bytes`.
//!
//! 429 and 5xx are retried (honouring `Retry-After`); 400 (too old, out of order, line too
//! long, ...) is permanent, counted by reason in `weir_loki_rejected_records_total` with
//! Loki's message logged.
pub mod config;
pub mod proto;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;

use crate::config::loader::Body;
use crate::exporters::helper::{BoxFuture, ExportError, Sender, Sent};
use crate::exporters::prometheusremotewrite::names::label_name;
use crate::exporters::Compression;
use crate::pdata::{Batch, Payload, Signal};
use crate::pipeline::registry::{
    AuthSlot, Decode, ExporterParts, ExporterSettings, Factory, Handles, Stability,
};
use crate::telemetry::metrics::{Counter, Registry};
use config::{LineFormat, LokiEncoding, LokiExporterConfig};
use proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};

pub static FACTORY: Factory = Factory {
    type_name: "loki",
    aliases: &[],
    stability: &[(Handles::Signal(Signal::Logs), Stability::Beta)],
    description:
        "Loki push API (protobuf+snappy or JSON), labels from attributes, per-tenant requests",
    decode: Decode::Exporter(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExporterSettings>> {
    let c = b.decode_checked::<LokiExporterConfig>(|c| {
        c.normalize();
        c.validate()
    })?;
    Some(Box::new(c))
}

impl ExporterSettings for LokiExporterConfig {
    fn build(
        &self,
        id: &str,
        registry: &Arc<crate::telemetry::metrics::Registry>,
    ) -> Result<ExporterParts, String> {
        let _ = (id, registry);
        Ok(ExporterParts {
            sender: LokiSender::new(id, self, registry)?,
            queue: self.sending_queue.clone(),
            retry: self.retry_on_failure.clone(),
            timeout: self.timeout.0,
        })
    }
    fn sending_queue(&self) -> Option<&crate::exporters::helper::config::QueueConfig> {
        Some(&self.sending_queue)
    }
    fn auth_slot(&mut self) -> Option<AuthSlot<'_>> {
        self.auth.as_mut().map(|auth| AuthSlot {
            key: "auth".into(),
            auth,
        })
    }
}

const HINT_RESOURCE_LABELS: &str = "loki.resource.labels";
const HINT_ATTRIBUTE_LABELS: &str = "loki.attribute.labels";
const HINT_FORMAT: &str = "loki.format";
const HINT_TENANT: &str = "loki.tenant";

fn is_hint(key: &str) -> bool {
    matches!(
        key,
        HINT_RESOURCE_LABELS | HINT_ATTRIBUTE_LABELS | HINT_FORMAT | HINT_TENANT
    )
}

/// An OTLP value as text (strings bare, the rest as JSON).
pub fn value_text(v: &AnyValue) -> String {
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => json_value(v).to_string(),
    }
}

/// An OTLP value as JSON (the Loki exporter's lines; OTTL's `String()` of maps and lists).
pub fn json_value(v: &AnyValue) -> serde_json::Value {
    use any_value::Value as V;
    use serde_json::Value as J;
    match v.value.as_ref() {
        Some(V::StringValue(s)) => J::String(s.clone()),
        Some(V::BoolValue(b)) => J::Bool(*b),
        Some(V::IntValue(i)) => J::from(*i),
        Some(V::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or(J::Null),
        Some(V::BytesValue(b)) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        Some(V::ArrayValue(a)) => J::Array(a.values.iter().map(json_value).collect()),
        Some(V::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map(json_value).unwrap_or(J::Null),
                    )
                })
                .collect(),
        ),
        Some(V::StringValueStrindex(_)) | None => J::Null,
    }
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn hint_list(attrs: &[KeyValue], key: &str) -> Vec<String> {
    find(attrs, key)
        .map(value_text)
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `level` from a record's severity: its text when set, else from the number.
fn level(r: &LogRecord) -> Option<String> {
    if !r.severity_text.is_empty() {
        return Some(r.severity_text.to_ascii_lowercase());
    }
    Some(
        match r.severity_number {
            1..=4 => "trace",
            5..=8 => "debug",
            9..=12 => "info",
            13..=16 => "warn",
            17..=20 => "error",
            21..=24 => "fatal",
            _ => return None,
        }
        .to_owned(),
    )
}

fn hex_into(out: &mut String, b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(b.len() * 2);
    for x in b {
        out.push(DIGITS[(x >> 4) as usize] as char);
        out.push(DIGITS[(x & 15) as usize] as char);
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    hex_into(&mut s, b);
    s
}

/// Appends `s` as a JSON string literal.
fn json_str_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends an OTLP value as JSON (strings directly, the rest through serde_json).
fn json_value_into(out: &mut String, v: &AnyValue) {
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => json_str_into(out, s),
        _ => out.push_str(&json_value(v).to_string()),
    }
}

/// Prometheus text form of a label set, as Loki parses it: `{a="b", c="d"}`.
pub fn labels_string(labels: &BTreeMap<String, String>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

fn logfmt_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '=', '"', '\n', '\t']) {
        return v.to_owned();
    }
    let escaped = v
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// The settings encoding needs (split from the sender so benches and tests can use it).
#[derive(Debug, Clone)]
pub struct Encoder {
    pub labels: config::LabelsConfig,
    pub line_format: LineFormat,
    pub structured_metadata: bool,
    pub max_labels: usize,
    /// Upstream's default labels that are on: exporter, job, instance, level.
    pub exporter_label: bool,
    pub job_label: bool,
    pub instance_label: bool,
    pub level_label: bool,
}

/// One tenant's streams, ready to send.
#[derive(Debug, Default)]
pub struct TenantStreams {
    pub tenant: Option<String>,
    pub streams: Vec<StreamAdapter>,
    pub records: usize,
}

impl Encoder {
    pub fn new(cfg: &LokiExporterConfig) -> Encoder {
        Encoder {
            labels: cfg.labels.clone(),
            line_format: cfg.line_format,
            structured_metadata: cfg.structured_metadata,
            max_labels: cfg.max_labels,
            exporter_label: cfg.default_label("exporter"),
            job_label: cfg.default_label("job"),
            instance_label: cfg.default_label("instance"),
            level_label: cfg.default_label("level"),
        }
    }

    /// Groups a request's records by tenant and stream; entries sorted by time per stream.
    pub fn group(
        &self,
        req: &ExportLogsServiceRequest,
        batch_tenant: Option<&str>,
    ) -> Vec<TenantStreams> {
        // (tenant, labels text) -> entries
        let mut groups: HashMap<(Option<String>, String), Vec<EntryAdapter>> = HashMap::new();
        let mut order: Vec<(Option<String>, String)> = Vec::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        for rl in &req.resource_logs {
            let rattrs: &[KeyValue] = rl
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let mut base: BTreeMap<String, String> = BTreeMap::new();
            // Upstream's default labels, then the configured ones (which win).
            if self.exporter_label {
                base.insert("exporter".into(), "OTLP".into());
            }
            if self.job_label {
                let name = find(rattrs, "service.name").map(value_text);
                let ns = find(rattrs, "service.namespace").map(value_text);
                match (ns, name) {
                    (Some(ns), Some(name)) if !ns.is_empty() => {
                        base.insert("job".into(), format!("{ns}/{name}"));
                    }
                    (_, Some(name)) => {
                        base.insert("job".into(), name);
                    }
                    _ => {}
                }
            }
            if self.instance_label {
                if let Some(i) = find(rattrs, "service.instance.id") {
                    base.insert("instance".into(), value_text(i));
                }
            }
            for (key, label) in &self.labels.resource {
                if let Some(v) = find(rattrs, key) {
                    base.insert(label.clone(), value_text(v));
                }
            }
            for key in hint_list(rattrs, HINT_RESOURCE_LABELS) {
                if let Some(v) = find(rattrs, &key) {
                    base.insert(label_name(&key), value_text(v));
                }
            }
            let tenant_hint = find(rattrs, HINT_TENANT)
                .map(value_text)
                .and_then(|k| find(rattrs, &k).map(value_text));
            let tenant = tenant_hint.or_else(|| batch_tenant.map(str::to_owned));
            let format_hint = find(rattrs, HINT_FORMAT)
                .map(value_text)
                .and_then(|f| LineFormat::parse(&f));
            let resource_attr_hints = hint_list(rattrs, HINT_ATTRIBUTE_LABELS);
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    let mut labels = base.clone();
                    let mut promoted: Vec<&str> = Vec::new();
                    for (key, label) in &self.labels.attributes {
                        if let Some(v) = find(&r.attributes, key) {
                            labels.insert(label.clone(), value_text(v));
                            promoted.push(key);
                        }
                    }
                    let rec_hints = hint_list(&r.attributes, HINT_ATTRIBUTE_LABELS);
                    for key in resource_attr_hints.iter().chain(&rec_hints) {
                        if let Some(v) = find(&r.attributes, key) {
                            labels.insert(label_name(key), value_text(v));
                            promoted.push(key);
                        }
                    }
                    if self.level_label {
                        if let Some(l) = level(r) {
                            labels.entry("level".into()).or_insert(l);
                        }
                    }
                    if labels.is_empty() {
                        // Loki needs at least one label per stream.
                        labels.insert("exporter".into(), "OTLP".into());
                    }
                    while labels.len() > self.max_labels {
                        // Over the cap (only hints can do this; configured maps are checked at
                        // load): drop the last labels in name order rather than lose the entry.
                        let last = labels.keys().next_back().cloned().unwrap_or_default();
                        labels.remove(&last);
                    }
                    let rest: Vec<&KeyValue> = r
                        .attributes
                        .iter()
                        .filter(|kv| !is_hint(&kv.key) && !promoted.contains(&kv.key.as_str()))
                        .collect();
                    let format = find(&r.attributes, HINT_FORMAT)
                        .map(value_text)
                        .and_then(|f| LineFormat::parse(&f))
                        .or(format_hint)
                        .unwrap_or(self.line_format);
                    let (line, metadata) = self.line(r, &rest, format);
                    let ts = if r.time_unix_nano != 0 {
                        r.time_unix_nano
                    } else if r.observed_time_unix_nano != 0 {
                        r.observed_time_unix_nano
                    } else {
                        now
                    };
                    let entry = EntryAdapter {
                        timestamp: Some(Timestamp {
                            seconds: (ts / 1_000_000_000) as i64,
                            nanos: (ts % 1_000_000_000) as i32,
                        }),
                        line,
                        structured_metadata: metadata,
                    };
                    let key = (tenant.clone(), labels_string(&labels));
                    match groups.get_mut(&key) {
                        Some(v) => v.push(entry),
                        None => {
                            order.push(key.clone());
                            groups.insert(key, vec![entry]);
                        }
                    }
                }
            }
        }
        let mut by_tenant: Vec<TenantStreams> = Vec::new();
        for key in order {
            let Some(mut entries) = groups.remove(&key) else {
                continue;
            };
            entries.sort_by_key(|e| e.timestamp);
            let (tenant, labels) = key;
            let slot = match by_tenant.iter().position(|t| t.tenant == tenant) {
                Some(i) => i,
                None => {
                    by_tenant.push(TenantStreams {
                        tenant: tenant.clone(),
                        ..Default::default()
                    });
                    by_tenant.len() - 1
                }
            };
            let t = &mut by_tenant[slot];
            t.records += entries.len();
            t.streams.push(StreamAdapter {
                labels,
                entries,
                hash: 0,
            });
        }
        by_tenant
    }

    /// The entry line (and structured metadata) for a record.
    fn line(
        &self,
        r: &LogRecord,
        rest: &[&KeyValue],
        format: LineFormat,
    ) -> (String, Vec<LabelPairAdapter>) {
        let body = r.body.as_ref();
        let mut metadata = Vec::new();
        if self.structured_metadata {
            for kv in rest {
                if let Some(v) = &kv.value {
                    metadata.push(LabelPairAdapter {
                        name: label_name(&kv.key),
                        value: value_text(v),
                    });
                }
            }
            if !r.trace_id.is_empty() {
                metadata.push(LabelPairAdapter {
                    name: "trace_id".into(),
                    value: hex(&r.trace_id),
                });
            }
            if !r.span_id.is_empty() {
                metadata.push(LabelPairAdapter {
                    name: "span_id".into(),
                    value: hex(&r.span_id),
                });
            }
        }
        let inline: &[&KeyValue] = if self.structured_metadata { &[] } else { rest };
        let ids = !self.structured_metadata;
        let line = match format {
            LineFormat::Raw => body.map(value_text).unwrap_or_default(),
            LineFormat::Json => {
                // Keys in sorted order, as a JSON object map would print them.
                let mut out = String::with_capacity(128);
                out.push('{');
                let mut first = true;
                let mut key = |out: &mut String, k: &str| {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    json_str_into(out, k);
                    out.push(':');
                };
                if !inline.is_empty() {
                    key(&mut out, "attributes");
                    let mut sorted: Vec<&&KeyValue> = inline.iter().collect();
                    sorted.sort_by(|a, b| a.key.cmp(&b.key));
                    out.push('{');
                    for (i, kv) in sorted.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        json_str_into(&mut out, &kv.key);
                        out.push(':');
                        match &kv.value {
                            Some(v) => json_value_into(&mut out, v),
                            None => out.push_str("null"),
                        }
                    }
                    out.push('}');
                }
                if let Some(b) = body {
                    key(&mut out, "body");
                    json_value_into(&mut out, b);
                }
                if ids && !r.span_id.is_empty() {
                    key(&mut out, "span_id");
                    out.push('"');
                    hex_into(&mut out, &r.span_id);
                    out.push('"');
                }
                if ids && !r.trace_id.is_empty() {
                    key(&mut out, "trace_id");
                    out.push('"');
                    hex_into(&mut out, &r.trace_id);
                    out.push('"');
                }
                out.push('}');
                out
            }
            LineFormat::Logfmt => {
                let mut parts = Vec::new();
                if let Some(b) = body {
                    parts.push(format!("body={}", logfmt_value(&value_text(b))));
                }
                if ids && !r.trace_id.is_empty() {
                    parts.push(format!("trace_id={}", hex(&r.trace_id)));
                }
                if ids && !r.span_id.is_empty() {
                    parts.push(format!("span_id={}", hex(&r.span_id)));
                }
                for kv in inline {
                    let v = kv.value.as_ref().map(value_text).unwrap_or_default();
                    parts.push(format!("{}={}", label_name(&kv.key), logfmt_value(&v)));
                }
                parts.join(" ")
            }
        };
        (line, metadata)
    }
}

/// Splits one tenant's streams into PushRequests of at most `max` encoded bytes (a single
/// entry larger than that goes alone); streams may be cut between entries.
pub fn split(streams: Vec<StreamAdapter>, max: usize) -> Vec<PushRequest> {
    let mut out = Vec::new();
    let mut cur = PushRequest::default();
    let mut size = 0usize;
    for s in streams {
        let mut part = StreamAdapter {
            labels: s.labels.clone(),
            entries: Vec::new(),
            hash: 0,
        };
        let head = s.labels.len() + 16;
        let mut part_size = head;
        for e in s.entries {
            let len = e.encoded_len() + 4;
            if size + part_size + len > max && (!part.entries.is_empty() || !cur.streams.is_empty())
            {
                if !part.entries.is_empty() {
                    cur.streams.push(std::mem::replace(
                        &mut part,
                        StreamAdapter {
                            labels: s.labels.clone(),
                            entries: Vec::new(),
                            hash: 0,
                        },
                    ));
                }
                out.push(std::mem::take(&mut cur));
                size = 0;
                part_size = head;
            }
            part_size += len;
            part.entries.push(e);
        }
        if !part.entries.is_empty() {
            size += part_size;
            cur.streams.push(part);
        }
    }
    if !cur.streams.is_empty() {
        out.push(cur);
    }
    out
}

/// The JSON push body.
pub fn to_json(req: &PushRequest) -> Vec<u8> {
    let streams: Vec<serde_json::Value> = req
        .streams
        .iter()
        .map(|s| {
            let values: Vec<serde_json::Value> = s
                .entries
                .iter()
                .map(|e| {
                    let ts = e
                        .timestamp
                        .map(|t| (t.seconds as i128) * 1_000_000_000 + t.nanos as i128)
                        .unwrap_or(0);
                    let mut v = vec![
                        serde_json::Value::String(ts.to_string()),
                        serde_json::Value::String(e.line.clone()),
                    ];
                    if !e.structured_metadata.is_empty() {
                        let m: serde_json::Map<String, serde_json::Value> = e
                            .structured_metadata
                            .iter()
                            .map(|p| (p.name.clone(), serde_json::Value::String(p.value.clone())))
                            .collect();
                        v.push(serde_json::Value::Object(m));
                    }
                    serde_json::Value::Array(v)
                })
                .collect();
            serde_json::json!({"stream": parse_labels(&s.labels), "values": values})
        })
        .collect();
    serde_json::json!({ "streams": streams })
        .to_string()
        .into_bytes()
}

/// `{a="b", c="d"}` back to a map (for the JSON form).
fn parse_labels(s: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut rest = inner;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let mut val = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => val.push('\n'),
                    Some((_, x)) => val.push(x),
                    None => {}
                },
                '"' => {
                    end = eq + 2 + i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        m.insert(name, serde_json::Value::String(val));
        rest = &rest[end.min(rest.len())..];
    }
    m
}

/// Why Loki refused entries, from its message.
pub fn reason(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("too far behind") || m.contains("older than") || m.contains("too old") {
        "too_old"
    } else if m.contains("out of order") {
        "out_of_order"
    } else if m.contains("rate limit") {
        "rate_limited"
    } else if m.contains("line too long") || m.contains("line size") || m.contains("exceed") {
        "too_long"
    } else if m.contains("label") {
        "labels"
    } else {
        "other"
    }
}

pub struct LokiSender {
    id: Arc<str>,
    client: crate::exporters::HttpClient,
    url: http::Uri,
    headers: HeaderMap,
    tenant_header: Option<HeaderName>,
    /// The `auth` authenticator's headers, added to every request.
    auth: Option<std::sync::Arc<crate::extensions::auth::ClientAuth>>,
    encoding: LokiEncoding,
    gzip: bool,
    max_bytes: usize,
    encoder: Encoder,
    registry: Arc<Registry>,
}

impl LokiSender {
    pub fn new(
        id: &str,
        cfg: &LokiExporterConfig,
        registry: &Arc<Registry>,
    ) -> Result<Arc<Self>, String> {
        let client = crate::exporters::http_client(cfg.proxy_url.as_deref(), &cfg.tls)?;
        let url = cfg
            .endpoint
            .parse()
            .map_err(|e| format!("invalid URL {:?}: {e}", cfg.endpoint))?;
        let headers = crate::exporters::header_map(&cfg.headers)?;
        let tenant_header = crate::exporters::tenant_header_name(Some(&cfg.tenant_header))?;
        Ok(Arc::new(LokiSender {
            id: Arc::from(id),
            client,
            url,
            headers,
            tenant_header,
            auth: crate::extensions::auth::ClientAuth::for_ref(&cfg.auth)?,
            encoding: cfg.encoding,
            gzip: cfg.compression == Compression::Gzip,
            max_bytes: cfg.max_batch_size_bytes,
            encoder: Encoder::new(cfg),
            registry: Arc::clone(registry),
        }))
    }

    fn rejected(&self, reason: &'static str) -> Counter {
        self.registry.counter(
            "weir_loki_rejected_records_total",
            "Log records Loki refused for good (400), by reason.",
            &[("exporter", &self.id), ("reason", reason)],
        )
    }

    async fn post(
        &self,
        req: &PushRequest,
        tenant: Option<&str>,
        records: usize,
        ctx: &crate::pdata::Context,
    ) -> Result<(), ExportError> {
        let (body, ct, enc) = match self.encoding {
            LokiEncoding::Protobuf => {
                let c = crate::compression::snappy_block(req.encode_to_vec())
                    .await
                    .map_err(ExportError::permanent)?;
                (c, "application/x-protobuf", None)
            }
            LokiEncoding::Json => {
                let j = to_json(req);
                if self.gzip {
                    (
                        crate::compression::gzip_owned(j).await,
                        "application/json",
                        Some("gzip"),
                    )
                } else {
                    (j, "application/json", None)
                }
            }
        };
        let mut r = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, ct)
            .header(
                header::USER_AGENT,
                concat!("weir/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ExportError::permanent(format!("cannot build request: {e}")))?;
        if let Some(e) = enc {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
        }
        for (k, v) in &self.headers {
            r.headers_mut().insert(k.clone(), v.clone());
        }
        if let (Some(h), Some(t)) = (&self.tenant_header, tenant) {
            r.headers_mut()
                .insert(h.clone(), crate::exporters::tenant_value(t)?);
        }
        if let Some(a) = &self.auth {
            a.apply(ctx, r.headers_mut());
        }
        let resp =
            self.client.request(r).await.map_err(|e| {
                ExportError::retryable(format!("request to {} failed: {e}", self.url))
            })?;
        if resp.status().is_success() {
            return Ok(());
        }
        let (err, text) = crate::exporters::http_failure("loki push", &self.url, resp).await;
        if matches!(err, ExportError::Permanent { .. }) {
            self.rejected(reason(&text)).add(records as u64);
        }
        Err(err)
    }
}

impl Sender for LokiSender {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            if batch.signal != Signal::Logs {
                return Err(ExportError::permanent(format!(
                    "loki exports logs, not {}",
                    batch.signal
                )));
            }
            let decoded;
            let req = match &batch.payload {
                Payload::Logs(r) => r,
                _ => {
                    decoded = ExportLogsServiceRequest::decode(batch.to_bytes())
                        .map_err(|e| ExportError::permanent(format!("cannot decode logs: {e}")))?;
                    &decoded
                }
            };
            for t in self.encoder.group(req, batch.context.tenant.as_deref()) {
                let parts = split(t.streams, self.max_bytes);
                for p in &parts {
                    let n: usize = p.streams.iter().map(|s| s.entries.len()).sum();
                    self.post(p, t.tenant.as_deref(), n, &batch.context).await?;
                }
            }
            Ok(Sent::default())
        })
    }
}
