//! The `attributes` processor (actions on span, log record and data point attributes, with
//! optional `include`/`exclude` matching) and the `resource` processor (the same actions on
//! resource attributes), with the Collector's semantics (`internal/coreinternal/attraction`):
//!
//! - `insert` sets the key only when absent, `update` only when present, `upsert` always; the
//!   value comes from `value`, `from_attribute` (another attribute of the same item; nothing
//!   happens when it is absent) or `from_context` (`metadata.<key>`: client metadata).
//! - `delete` removes `key`, or every key matching `pattern`.
//! - `hash` replaces the value with the hex SHA-256 of it (strings as UTF-8; ints and doubles
//!   as 8 little-endian bytes; bools as one byte) — the same digest the Collector writes, so
//!   hashed ids join across both. Values of other types become "".
//! - `extract` applies `pattern` (a regex with named groups) to the string value of `key` and
//!   upserts one attribute per group.
//! - `convert` changes the value's type to `converted_type` (`int`, `double`, `string`); a
//!   value that does not convert is left as it is.
//!
//! Actions run in order on each item. Everything is compiled (regexes, values) when the config
//! is validated; applying allocates only for the values it writes.
pub mod config;

// The pipeline stage and its registration.

/// A stage that edits decoded data in place with `apply`.
struct Editing<F> {
    id: Arc<str>,
    apply: F,
    dropped: Counter,
}

/// `from_context` lookups: `metadata.<key>` reads client metadata, as upstream does.
fn context_lookup(ctx: &Context) -> impl Fn(&str) -> Option<String> + '_ {
    move |key: &str| {
        let k = key.strip_prefix("metadata.").unwrap_or(key);
        ctx.metadata_value(k).map(str::to_owned)
    }
}

impl<F> Processor for Editing<F>
where
    F: FnMut(&mut Payload, &dyn Fn(&str) -> Option<String>) + Send,
{
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if let Err(e) = batch.decode() {
            self.dropped.add(e.lost as u64);
            tracing::error!(processor = %self.id, "dropping {} items: {e}", e.lost);
            if batch.items == 0 {
                return;
            }
        }
        let ctx = batch.context.clone();
        let lookup = context_lookup(&ctx);
        (self.apply)(&mut batch.payload, &lookup);
        out.push(batch);
    }
}

fn dropped_counter(id: &str, registry: &Registry) -> Counter {
    registry.counter(
        "weir_processor_dropped_items_total",
        "Items a processor could not handle and dropped.",
        &[("processor", id)],
    )
}

/// The `attributes` processor as a pipeline stage.
fn attributes_stage(id: &str, cfg: &AttributesConfig, registry: &Registry) -> Box<dyn Processor> {
    // The config was validated before the graph is built; a failure here cannot happen, but
    // if it did the stage passes data through unchanged rather than taking weir down.
    let p = AttributesProcessor::new(cfg).ok();
    Box::new(Editing {
        id: Arc::from(id),
        dropped: dropped_counter(id, registry),
        apply: move |payload: &mut Payload, ctx: &dyn Fn(&str) -> Option<String>| {
            let Some(p) = &p else { return };
            match payload {
                Payload::Traces(r) => p.apply_traces(r, ctx),
                Payload::Metrics(r) => p.apply_metrics(r, ctx),
                Payload::Logs(r) => p.apply_logs(r, ctx),
                Payload::Encoded(_) => {}
            }
        },
    })
}

/// The `resource` processor as a pipeline stage.
fn resource_stage(id: &str, cfg: &ResourceConfig, registry: &Registry) -> Box<dyn Processor> {
    let p = ResourceProcessor::new(cfg).ok();
    Box::new(Editing {
        id: Arc::from(id),
        dropped: dropped_counter(id, registry),
        apply: move |payload: &mut Payload, ctx: &dyn Fn(&str) -> Option<String>| {
            let Some(p) = &p else { return };
            match payload {
                Payload::Traces(r) => p.apply_traces(r, ctx),
                Payload::Metrics(r) => p.apply_metrics(r, ctx),
                Payload::Logs(r) => p.apply_logs(r, ctx),
                Payload::Encoded(_) => {}
            }
        },
    })
}

pub static FACTORY: Factory = Factory {
    type_name: "attributes",
    aliases: &[],
    stability: &all_signals(Stability::Beta),
    description: "inserts, updates, deletes or hashes span, log and data point attributes",
    decode: Decode::Processor(decode_attributes),
};

pub static RESOURCE_FACTORY: Factory = Factory {
    type_name: "resource",
    aliases: &[],
    stability: &all_signals(Stability::Beta),
    description: "inserts, updates, deletes or hashes resource attributes",
    decode: Decode::Processor(decode_resource),
};

fn decode_attributes(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<AttributesConfig>(|c| match AttributesProcessor::new(c) {
        Ok(_) => Vec::new(),
        Err(p) => vec![(p.path, p.message)],
    })?;
    Some(Box::new(c))
}

fn decode_resource(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<ResourceConfig>(|c| match ResourceProcessor::new(c) {
        Ok(_) => Vec::new(),
        Err(p) => vec![(p.path, p.message)],
    })?;
    Some(Box::new(c))
}

impl ProcessorSettings for AttributesConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        attributes_stage(id, self, env.registry)
    }
}

impl ProcessorSettings for ResourceConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        resource_stage(id, self, env.registry)
    }
}

#[cfg(test)]
mod tests;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::metrics::v1::{metric, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::config::loader::Body;
use crate::config::loader::Value as Yaml;
use crate::pdata::{Batch, Context, Payload};
use crate::pipeline::registry::{
    all_signals, BuildEnv, Decode, Factory, ProcessorSettings, Stability,
};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Registry};
use config::{
    ActionConfig, ActionKind, AttributesConfig, KeyValueMatch, MatchConfig, MatchType,
    ResourceConfig,
};
use std::sync::Arc;

/// A config mistake: `path` is relative to the processor (`actions[2].value`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Debug)]
enum Source {
    Value(AnyValue),
    Attribute(String),
    Context(String),
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Int,
    Double,
    String,
}

#[derive(Debug)]
enum Op {
    Insert(Source),
    Update(Source),
    Upsert(Source),
    Delete,
    Hash,
    Extract(Regex, Vec<String>),
    Convert(Target),
}

#[derive(Debug)]
struct Action {
    key: String,
    /// For delete/hash: keys matching this are acted on (as well as `key`).
    pattern: Option<Regex>,
    op: Op,
}

/// A compiled action list.
#[derive(Debug, Default)]
struct Actions(Vec<Action>);

/// YAML scalar (or list/map) to an OTLP value.
fn any_value(v: &Yaml) -> Option<AnyValue> {
    use any_value::Value as V;
    let value = match v {
        Yaml::String(s) => V::StringValue(s.clone()),
        Yaml::Bool(b) => V::BoolValue(*b),
        Yaml::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64()?),
        },
        Yaml::Sequence(items) => V::ArrayValue(ArrayValue {
            values: items.iter().map(any_value).collect::<Option<Vec<_>>>()?,
        }),
        Yaml::Mapping(m) => V::KvlistValue(KeyValueList {
            values: m
                .iter()
                .map(|(k, v)| {
                    Some(KeyValue {
                        key: k.as_str()?.to_owned(),
                        value: Some(any_value(v)?),
                        ..Default::default()
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        }),
        Yaml::Null | Yaml::Tagged(_) => return None,
    };
    Some(AnyValue { value: Some(value) })
}

impl Actions {
    fn compile(list: &[ActionConfig], base: &str) -> Result<Actions, ConfigProblem> {
        let mut out = Vec::with_capacity(list.len());
        for (i, a) in list.iter().enumerate() {
            let at = format!("{base}[{i}]");
            let name = a.action.as_str();
            let sources = [
                a.value.is_some(),
                a.from_attribute.is_some(),
                a.from_context.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            let sets = matches!(
                a.action,
                ActionKind::Insert | ActionKind::Update | ActionKind::Upsert
            );
            if a.key.is_empty()
                && !(a.pattern.is_some()
                    && matches!(a.action, ActionKind::Delete | ActionKind::Hash))
            {
                return Err(problem(
                    format!("{at}.key"),
                    format!(
                        "action \"{name}\" needs a key{}",
                        if matches!(a.action, ActionKind::Delete | ActionKind::Hash) {
                            " or a pattern"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            if sets && sources != 1 {
                return Err(problem(
                    at,
                    format!(
                        "action \"{name}\" needs exactly one of value, from_attribute, from_context{}",
                        if sources > 1 { " (more than one is set)" } else { "" }
                    ),
                ));
            }
            if !sets && sources > 0 {
                return Err(problem(
                    at,
                    format!("action \"{name}\" takes no value, from_attribute or from_context"),
                ));
            }
            if a.pattern.is_some() && sets {
                return Err(problem(
                    format!("{at}.pattern"),
                    format!("action \"{name}\" does not take a pattern (only delete, hash and extract do)"),
                ));
            }
            if a.converted_type.is_some() && a.action != ActionKind::Convert {
                return Err(problem(
                    format!("{at}.converted_type"),
                    format!("only the convert action takes converted_type, not \"{name}\""),
                ));
            }
            let compile_pattern = |p: &str| {
                Regex::new(p).map_err(|e| {
                    problem(format!("{at}.pattern"), format!("invalid regex {p:?}: {e}"))
                })
            };
            let source = || -> Result<Source, ConfigProblem> {
                if let Some(v) = &a.value {
                    return any_value(v).map(Source::Value).ok_or_else(|| {
                        problem(
                            format!("{at}.value"),
                            "must be a string, number, bool, list or map (not null)",
                        )
                    });
                }
                if let Some(f) = &a.from_attribute {
                    return Ok(Source::Attribute(f.clone()));
                }
                match &a.from_context {
                    Some(c) if !c.is_empty() => Ok(Source::Context(c.clone())),
                    _ => Err(problem(format!("{at}.from_context"), "must not be empty")),
                }
            };
            let op = match a.action {
                ActionKind::Insert => Op::Insert(source()?),
                ActionKind::Update => Op::Update(source()?),
                ActionKind::Upsert => Op::Upsert(source()?),
                ActionKind::Delete => Op::Delete,
                ActionKind::Hash => Op::Hash,
                ActionKind::Extract => {
                    let Some(p) = &a.pattern else {
                        return Err(problem(
                            format!("{at}.pattern"),
                            "action \"extract\" needs a pattern: a regex with named groups, e.g. ^/api/(?P<version>v\\d+)/",
                        ));
                    };
                    let re = compile_pattern(p)?;
                    let names: Vec<String> =
                        re.capture_names().flatten().map(str::to_owned).collect();
                    if names.is_empty() {
                        return Err(problem(
                            format!("{at}.pattern"),
                            format!("pattern {p:?} has no named groups ((?P<name>...)); extract writes one attribute per group"),
                        ));
                    }
                    Op::Extract(re, names)
                }
                ActionKind::Convert => match a.converted_type.as_deref() {
                    Some("int") => Op::Convert(Target::Int),
                    Some("double") => Op::Convert(Target::Double),
                    Some("string") => Op::Convert(Target::String),
                    Some(other) => {
                        return Err(problem(
                            format!("{at}.converted_type"),
                            format!("unknown type {other:?}; expected int, double or string"),
                        ))
                    }
                    None => {
                        return Err(problem(
                            format!("{at}.converted_type"),
                            "action \"convert\" needs converted_type: int, double or string",
                        ))
                    }
                },
            };
            let pattern = match (&op, &a.pattern) {
                (Op::Delete | Op::Hash, Some(p)) => Some(compile_pattern(p)?),
                _ => None,
            };
            out.push(Action {
                key: a.key.clone(),
                pattern,
                op,
            });
        }
        Ok(Actions(out))
    }

    fn apply(&self, attrs: &mut Vec<KeyValue>, ctx: &dyn Fn(&str) -> Option<String>) {
        for a in &self.0 {
            let pos = (!a.key.is_empty())
                .then(|| attrs.iter().position(|kv| kv.key == a.key))
                .flatten();
            match &a.op {
                Op::Insert(src) | Op::Update(src) | Op::Upsert(src) => {
                    let allowed = match a.op {
                        Op::Insert(_) => pos.is_none(),
                        Op::Update(_) => pos.is_some(),
                        _ => true,
                    };
                    if !allowed {
                        continue;
                    }
                    let value = match src {
                        Source::Value(v) => Some(v.clone()),
                        Source::Attribute(from) => attrs
                            .iter()
                            .find(|kv| &kv.key == from)
                            .and_then(|kv| kv.value.clone()),
                        Source::Context(key) => ctx(key).map(|s| AnyValue {
                            value: Some(any_value::Value::StringValue(s)),
                        }),
                    };
                    let Some(value) = value else { continue };
                    match pos {
                        Some(i) => attrs[i].value = Some(value),
                        None => attrs.push(KeyValue {
                            key: a.key.clone(),
                            value: Some(value),
                            ..Default::default()
                        }),
                    }
                }
                Op::Delete => attrs.retain(|kv| {
                    kv.key != a.key && !a.pattern.as_ref().is_some_and(|p| p.is_match(&kv.key))
                }),
                Op::Hash => {
                    for kv in attrs.iter_mut() {
                        let hit = (!a.key.is_empty() && kv.key == a.key)
                            || a.pattern.as_ref().is_some_and(|p| p.is_match(&kv.key));
                        if hit {
                            kv.value = Some(hash_value(kv.value.as_ref()));
                        }
                    }
                }
                Op::Extract(re, names) => {
                    let Some(i) = pos else { continue };
                    let Some(any_value::Value::StringValue(s)) =
                        attrs[i].value.as_ref().and_then(|v| v.value.as_ref())
                    else {
                        continue;
                    };
                    let Some(caps) = re.captures(s) else { continue };
                    let found: Vec<(String, String)> = names
                        .iter()
                        .filter_map(|n| caps.name(n).map(|m| (n.clone(), m.as_str().to_owned())))
                        .collect();
                    for (k, v) in found {
                        let value = Some(AnyValue {
                            value: Some(any_value::Value::StringValue(v)),
                        });
                        match attrs.iter_mut().find(|kv| kv.key == k) {
                            Some(kv) => kv.value = value,
                            None => attrs.push(KeyValue {
                                key: k,
                                value,
                                ..Default::default()
                            }),
                        }
                    }
                }
                Op::Convert(t) => {
                    let Some(i) = pos else { continue };
                    if let Some(v) = attrs[i].value.as_mut() {
                        convert(v, *t);
                    }
                }
            }
        }
    }
}

/// The Collector's hash: hex SHA-256 of the value's bytes.
fn hash_value(v: Option<&AnyValue>) -> AnyValue {
    use any_value::Value as V;
    let digest = match v.and_then(|v| v.value.as_ref()) {
        Some(V::StringValue(s)) => Some(Sha256::digest(s.as_bytes())),
        Some(V::BoolValue(b)) => Some(Sha256::digest([u8::from(*b)])),
        Some(V::IntValue(i)) => Some(Sha256::digest(i.to_le_bytes())),
        Some(V::DoubleValue(d)) => Some(Sha256::digest(d.to_bits().to_le_bytes())),
        _ => None,
    };
    let s = match digest {
        Some(d) => d.iter().map(|b| format!("{b:02x}")).collect(),
        None => String::new(),
    };
    AnyValue {
        value: Some(V::StringValue(s)),
    }
}

fn convert(v: &mut AnyValue, t: Target) {
    use any_value::Value as V;
    let new = match (t, v.value.as_ref()) {
        (Target::Int, Some(V::StringValue(s))) => s.trim().parse::<i64>().ok().map(V::IntValue),
        (Target::Int, Some(V::DoubleValue(d))) if d.is_finite() => Some(V::IntValue(*d as i64)),
        (Target::Int, Some(V::BoolValue(b))) => Some(V::IntValue(i64::from(*b))),
        (Target::Double, Some(V::StringValue(s))) => {
            s.trim().parse::<f64>().ok().map(V::DoubleValue)
        }
        (Target::Double, Some(V::IntValue(i))) => Some(V::DoubleValue(*i as f64)),
        (Target::Double, Some(V::BoolValue(b))) => Some(V::DoubleValue(f64::from(u8::from(*b)))),
        (Target::String, Some(V::IntValue(i))) => Some(V::StringValue(i.to_string())),
        (Target::String, Some(V::DoubleValue(d))) => Some(V::StringValue(d.to_string())),
        (Target::String, Some(V::BoolValue(b))) => Some(V::StringValue(b.to_string())),
        _ => None,
    };
    if let Some(n) = new {
        v.value = Some(n);
    }
}

/// A string to match exactly or a regex (`match_type: strict | regexp`).
pub(crate) enum StrMatch {
    Exact(String),
    Re(Regex),
}

impl StrMatch {
    pub(crate) fn is_match(&self, s: &str) -> bool {
        match self {
            StrMatch::Exact(e) => e == s,
            StrMatch::Re(r) => r.is_match(s),
        }
    }
}

/// A compiled `include` or `exclude`.
struct Matcher {
    services: Vec<StrMatch>,
    span_names: Vec<StrMatch>,
    span_kinds: Vec<i32>,
    log_bodies: Vec<StrMatch>,
    log_severity_texts: Vec<StrMatch>,
    metric_names: Vec<StrMatch>,
    attributes: Vec<(String, Option<ValueMatch>)>,
    resources: Vec<(String, Option<ValueMatch>)>,
    libraries: Vec<(StrMatch, Option<StrMatch>)>,
}

enum ValueMatch {
    Equal(AnyValue),
    Re(Regex),
}

/// What an item offers to matching; `None` for fields the item does not have.
#[derive(Default, Clone, Copy)]
struct Item<'a> {
    resource: Option<&'a Resource>,
    scope: Option<&'a InstrumentationScope>,
    span_name: Option<&'a str>,
    span_kind: Option<i32>,
    log_body: Option<&'a AnyValue>,
    severity_text: Option<&'a str>,
    metric_name: Option<&'a str>,
    attributes: &'a [KeyValue],
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn as_str(v: &AnyValue) -> Option<&str> {
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

impl Matcher {
    fn compile(m: &MatchConfig, base: &str) -> Result<Matcher, ConfigProblem> {
        let regexp = m.match_type == MatchType::Regexp;
        let strs = |v: &[String], key: &str| -> Result<Vec<StrMatch>, ConfigProblem> {
            v.iter()
                .enumerate()
                .map(|(i, s)| {
                    if regexp {
                        Regex::new(s).map(StrMatch::Re).map_err(|e| {
                            problem(
                                format!("{base}.{key}[{i}]"),
                                format!("invalid regex {s:?}: {e}"),
                            )
                        })
                    } else {
                        Ok(StrMatch::Exact(s.clone()))
                    }
                })
                .collect()
        };
        let kvs = |v: &[KeyValueMatch],
                   key: &str|
         -> Result<Vec<(String, Option<ValueMatch>)>, ConfigProblem> {
            v.iter()
                .enumerate()
                .map(|(i, kv)| {
                    let at = format!("{base}.{key}[{i}]");
                    if kv.key.is_empty() {
                        return Err(problem(format!("{at}.key"), "must not be empty"));
                    }
                    let value = match &kv.value {
                        None => None,
                        Some(Yaml::String(s)) if regexp => {
                            Some(ValueMatch::Re(Regex::new(s).map_err(|e| {
                                problem(format!("{at}.value"), format!("invalid regex {s:?}: {e}"))
                            })?))
                        }
                        Some(_) if regexp => {
                            return Err(problem(
                                format!("{at}.value"),
                                "with match_type regexp the value must be a string (a regex)",
                            ))
                        }
                        Some(v) => Some(ValueMatch::Equal(any_value(v).ok_or_else(|| {
                            problem(format!("{at}.value"), "must be a string, number or bool")
                        })?)),
                    };
                    Ok((kv.key.clone(), value))
                })
                .collect()
        };
        let mut span_kinds = Vec::new();
        for (i, k) in m.span_kinds.iter().enumerate() {
            let norm = k.trim_start_matches("SPAN_KIND_").to_ascii_lowercase();
            span_kinds.push(match norm.as_str() {
                "unspecified" => 0,
                "internal" => 1,
                "server" => 2,
                "client" => 3,
                "producer" => 4,
                "consumer" => 5,
                _ => {
                    return Err(problem(
                        format!("{base}.span_kinds[{i}]"),
                        format!("unknown span kind {k:?}; expected SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_CLIENT, SPAN_KIND_PRODUCER or SPAN_KIND_CONSUMER"),
                    ))
                }
            });
        }
        let mut libraries = Vec::new();
        for (i, l) in m.libraries.iter().enumerate() {
            let one = |s: &str, k: &str| -> Result<StrMatch, ConfigProblem> {
                if regexp {
                    Regex::new(s).map(StrMatch::Re).map_err(|e| {
                        problem(
                            format!("{base}.libraries[{i}].{k}"),
                            format!("invalid regex {s:?}: {e}"),
                        )
                    })
                } else {
                    Ok(StrMatch::Exact(s.to_owned()))
                }
            };
            libraries.push((
                one(&l.name, "name")?,
                l.version
                    .as_deref()
                    .map(|v| one(v, "version"))
                    .transpose()?,
            ));
        }
        let matcher = Matcher {
            services: strs(&m.services, "services")?,
            span_names: strs(&m.span_names, "span_names")?,
            span_kinds,
            log_bodies: strs(&m.log_bodies, "log_bodies")?,
            log_severity_texts: strs(&m.log_severity_texts, "log_severity_texts")?,
            metric_names: strs(&m.metric_names, "metric_names")?,
            attributes: kvs(&m.attributes, "attributes")?,
            resources: kvs(&m.resources, "resources")?,
            libraries,
        };
        if matcher.is_empty() {
            return Err(problem(
                base.to_owned(),
                "names nothing to match: set at least one of services, span_names, span_kinds, log_bodies, log_severity_texts, metric_names, attributes, resources, libraries",
            ));
        }
        Ok(matcher)
    }

    fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.span_names.is_empty()
            && self.span_kinds.is_empty()
            && self.log_bodies.is_empty()
            && self.log_severity_texts.is_empty()
            && self.metric_names.is_empty()
            && self.attributes.is_empty()
            && self.resources.is_empty()
            && self.libraries.is_empty()
    }

    /// Every field given must match; a field the item does not have does not match.
    fn matches(&self, it: &Item<'_>) -> bool {
        let any = |list: &[StrMatch], s: Option<&str>| {
            list.is_empty() || s.is_some_and(|s| list.iter().any(|m| m.is_match(s)))
        };
        let res_attrs: &[KeyValue] = it.resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let service = find(res_attrs, "service.name").and_then(as_str);
        let kv_all = |list: &[(String, Option<ValueMatch>)], attrs: &[KeyValue]| {
            list.iter().all(|(k, vm)| match (find(attrs, k), vm) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(v), Some(ValueMatch::Equal(want))) => v == want,
                (Some(v), Some(ValueMatch::Re(re))) => as_str(v).is_some_and(|s| re.is_match(s)),
            })
        };
        any(&self.services, service)
            && any(&self.span_names, it.span_name)
            && (self.span_kinds.is_empty()
                || it.span_kind.is_some_and(|k| self.span_kinds.contains(&k)))
            && any(&self.log_bodies, it.log_body.and_then(as_str))
            && any(&self.log_severity_texts, it.severity_text)
            && any(&self.metric_names, it.metric_name)
            && kv_all(&self.attributes, it.attributes)
            && kv_all(&self.resources, res_attrs)
            && (self.libraries.is_empty()
                || it.scope.is_some_and(|s| {
                    self.libraries.iter().any(|(n, v)| {
                        n.is_match(&s.name) && v.as_ref().is_none_or(|v| v.is_match(&s.version))
                    })
                }))
    }
}

/// The `attributes` processor.
pub struct AttributesProcessor {
    actions: Actions,
    include: Option<Matcher>,
    exclude: Option<Matcher>,
}

impl AttributesProcessor {
    pub fn new(c: &AttributesConfig) -> Result<Self, ConfigProblem> {
        if c.actions.is_empty() {
            return Err(problem("actions", "must list at least one action"));
        }
        Ok(AttributesProcessor {
            actions: Actions::compile(&c.actions, "actions")?,
            include: c
                .include
                .as_ref()
                .map(|m| Matcher::compile(m, "include"))
                .transpose()?,
            exclude: c
                .exclude
                .as_ref()
                .map(|m| Matcher::compile(m, "exclude"))
                .transpose()?,
        })
    }

    fn selected(&self, it: &Item<'_>) -> bool {
        self.include.as_ref().is_none_or(|m| m.matches(it))
            && !self.exclude.as_ref().is_some_and(|m| m.matches(it))
    }

    pub fn apply_traces(
        &self,
        r: &mut ExportTraceServiceRequest,
        ctx: &dyn Fn(&str) -> Option<String>,
    ) {
        for rs in &mut r.resource_spans {
            let resource = rs.resource.as_ref();
            for ss in &mut rs.scope_spans {
                let scope = ss.scope.as_ref();
                for span in &mut ss.spans {
                    let it = Item {
                        resource,
                        scope,
                        span_name: Some(&span.name),
                        span_kind: Some(span.kind),
                        attributes: &span.attributes,
                        ..Default::default()
                    };
                    if self.selected(&it) {
                        self.actions.apply(&mut span.attributes, ctx);
                    }
                }
            }
        }
    }

    pub fn apply_logs(
        &self,
        r: &mut ExportLogsServiceRequest,
        ctx: &dyn Fn(&str) -> Option<String>,
    ) {
        for rl in &mut r.resource_logs {
            let resource = rl.resource.as_ref();
            for sl in &mut rl.scope_logs {
                let scope = sl.scope.as_ref();
                for rec in &mut sl.log_records {
                    let it = Item {
                        resource,
                        scope,
                        log_body: rec.body.as_ref(),
                        severity_text: Some(&rec.severity_text),
                        attributes: &rec.attributes,
                        ..Default::default()
                    };
                    if self.selected(&it) {
                        self.actions.apply(&mut rec.attributes, ctx);
                    }
                }
            }
        }
    }

    pub fn apply_metrics(
        &self,
        r: &mut ExportMetricsServiceRequest,
        ctx: &dyn Fn(&str) -> Option<String>,
    ) {
        for rm in &mut r.resource_metrics {
            let resource = rm.resource.as_ref();
            for sm in &mut rm.scope_metrics {
                let scope = sm.scope.as_ref();
                for m in &mut sm.metrics {
                    let name = std::mem::take(&mut m.name);
                    for_each_point_attrs(m, |attrs| {
                        let it = Item {
                            resource,
                            scope,
                            metric_name: Some(&name),
                            attributes: attrs,
                            ..Default::default()
                        };
                        if self.selected(&it) {
                            self.actions.apply(attrs, ctx);
                        }
                    });
                    m.name = name;
                }
            }
        }
    }
}

/// Calls `f` with the attributes of every data point of a metric, whatever its type.
fn for_each_point_attrs(m: &mut Metric, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    match m.data.as_mut() {
        Some(metric::Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(metric::Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| f(&mut p.attributes)),
        Some(metric::Data::Histogram(h)) => {
            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
        }
        Some(metric::Data::Summary(s)) => {
            s.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
        }
        None => {}
    }
}

/// The `resource` processor.
pub struct ResourceProcessor {
    actions: Actions,
}

impl ResourceProcessor {
    pub fn new(c: &ResourceConfig) -> Result<Self, ConfigProblem> {
        if c.attributes.is_empty() {
            return Err(problem("attributes", "must list at least one action"));
        }
        Ok(ResourceProcessor {
            actions: Actions::compile(&c.attributes, "attributes")?,
        })
    }

    fn apply(&self, r: &mut Option<Resource>, ctx: &dyn Fn(&str) -> Option<String>) {
        let res = r.get_or_insert_with(Resource::default);
        self.actions.apply(&mut res.attributes, ctx);
    }

    pub fn apply_traces(
        &self,
        r: &mut ExportTraceServiceRequest,
        ctx: &dyn Fn(&str) -> Option<String>,
    ) {
        r.resource_spans
            .iter_mut()
            .for_each(|rs| self.apply(&mut rs.resource, ctx));
    }

    pub fn apply_metrics(
        &self,
        r: &mut ExportMetricsServiceRequest,
        ctx: &dyn Fn(&str) -> Option<String>,
    ) {
        r.resource_metrics
            .iter_mut()
            .for_each(|rm| self.apply(&mut rm.resource, ctx));
    }

    pub fn apply_logs(
        &self,
        r: &mut ExportLogsServiceRequest,
        ctx: &dyn Fn(&str) -> Option<String>,
    ) {
        r.resource_logs
            .iter_mut()
            .for_each(|rl| self.apply(&mut rl.resource, ctx));
    }
}

/// The Collector's span MatchProperties as the filter processor's legacy `spans` form uses
/// them (the same matching as `include`/`exclude` here).
pub(crate) struct SpanMatch(Matcher);

impl SpanMatch {
    pub(crate) fn compile(m: &MatchConfig, base: &str) -> Result<SpanMatch, ConfigProblem> {
        for (key, set) in [
            ("log_bodies", !m.log_bodies.is_empty()),
            ("log_severity_texts", !m.log_severity_texts.is_empty()),
            ("metric_names", !m.metric_names.is_empty()),
        ] {
            if set {
                return Err(problem(
                    format!("{base}.{key}"),
                    format!("{key} should not be specified for trace spans"),
                ));
            }
        }
        Matcher::compile(m, base).map(SpanMatch)
    }

    pub(crate) fn span(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &opentelemetry_proto::tonic::trace::v1::Span,
    ) -> bool {
        self.0.matches(&Item {
            resource,
            scope,
            span_name: Some(&span.name),
            span_kind: Some(span.kind),
            attributes: &span.attributes,
            ..Default::default()
        })
    }
}
