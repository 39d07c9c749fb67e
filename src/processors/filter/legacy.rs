//! The filter processor's older match form (`spans`, `logs`, `metrics` with `include` /
//! `exclude`), as upstream (internal/filter/filterconfig): within one `include` or `exclude`
//! every property given must match (and), within a list any entry may (or), except the
//! attribute lists, which must all match. `include` keeps only what matches, `exclude` drops
//! what matches; with both, `include` is applied first.
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use regex::Regex;
use serde::Deserialize;

use crate::config::loader::Value as Yaml;
use crate::processors::attributes::config::{KeyValueMatch, MatchConfig};
use crate::processors::attributes::{SpanMatch, StrMatch as Str};

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanFilter {
    pub include: Option<MatchConfig>,
    pub exclude: Option<MatchConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityNumberMatch {
    pub min: Option<Yaml>,
    pub match_undefined: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogMatchConfig {
    pub match_type: String,
    pub resource_attributes: Vec<KeyValueMatch>,
    pub record_attributes: Vec<KeyValueMatch>,
    pub severity_texts: Vec<String>,
    pub severity_number: Option<SeverityNumberMatch>,
    pub bodies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricMatchConfig {
    pub match_type: String,
    pub metric_names: Vec<String>,
    pub resource_attributes: Vec<KeyValueMatch>,
    pub expressions: Vec<String>,
}

type Problem = (String, String);

enum Val {
    Any,
    Exact(AnyValue),
    Re(Regex),
}

fn regexp(match_type: &str, at: &str) -> Result<bool, Problem> {
    match match_type {
        "strict" => Ok(false),
        "regexp" => Ok(true),
        other => Err((
            format!("{at}.match_type"),
            format!("unrecognized match_type: '{other}', valid types are: [regexp strict]"),
        )),
    }
}

fn strs(v: &[String], re: bool, at: &str) -> Result<Vec<Str>, Problem> {
    v.iter()
        .enumerate()
        .map(|(i, s)| {
            if re {
                Regex::new(s)
                    .map(Str::Re)
                    .map_err(|e| (format!("{at}[{i}]"), format!("invalid regex {s:?}: {e}")))
            } else {
                Ok(Str::Exact(s.clone()))
            }
        })
        .collect()
}

fn yaml_value(v: &Yaml) -> Option<AnyValue> {
    use any_value::Value as V;
    let value = match v {
        Yaml::String(s) => V::StringValue(s.clone()),
        Yaml::Bool(b) => V::BoolValue(*b),
        Yaml::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64()?),
        },
        _ => return None,
    };
    Some(AnyValue { value: Some(value) })
}

fn kvs(v: &[KeyValueMatch], re: bool, at: &str) -> Result<Vec<(String, Val)>, Problem> {
    v.iter()
        .enumerate()
        .map(|(i, kv)| {
            let at = format!("{at}[{i}]");
            let val =
                match &kv.value {
                    None => Val::Any,
                    Some(Yaml::String(s)) if re => Val::Re(Regex::new(s).map_err(|e| {
                        (format!("{at}.value"), format!("invalid regex {s:?}: {e}"))
                    })?),
                    Some(y) => Val::Exact(yaml_value(y).ok_or_else(|| {
                        (
                            format!("{at}.value"),
                            "must be a string, number or bool".to_string(),
                        )
                    })?),
                };
            Ok((kv.key.clone(), val))
        })
        .collect()
}

fn as_text(v: &AnyValue) -> String {
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn kv_all(list: &[(String, Val)], attrs: &[KeyValue]) -> bool {
    list.iter().all(|(k, want)| {
        match attrs
            .iter()
            .find(|kv| kv.key == *k)
            .and_then(|kv| kv.value.as_ref())
        {
            None => false,
            Some(v) => match want {
                Val::Any => true,
                Val::Exact(w) => v == w,
                Val::Re(re) => re.is_match(&as_text(v)),
            },
        }
    })
}

fn any(list: &[Str], s: &str) -> bool {
    list.is_empty() || list.iter().any(|m| m.is_match(s))
}

/// A severity name or number as upstream reads `severity_number.min`.
fn severity(v: &Yaml) -> Option<i32> {
    if let Some(n) = v.as_i64() {
        return (1..=24).contains(&n).then_some(n as i32);
    }
    let s = v.as_str()?.to_ascii_uppercase();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=24).contains(&n).then_some(n);
    }
    crate::ottl::severity_number(&format!("SEVERITY_NUMBER_{s}"))
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n > 0)
}

pub struct LogMatch {
    resource: Vec<(String, Val)>,
    record: Vec<(String, Val)>,
    severity_texts: Vec<Str>,
    severity: Option<(i32, bool)>,
    bodies: Vec<Str>,
}

impl LogMatch {
    pub fn compile(m: &LogMatchConfig, at: &str) -> Result<LogMatch, Problem> {
        let re = regexp(&m.match_type, at)?;
        let severity = match &m.severity_number {
            None => None,
            Some(s) => {
                let min = match &s.min {
                    None => 0,
                    Some(v) => severity(v).ok_or_else(|| {
                        let text = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("{v:?}"));
                        (
                            format!("{at}.severity_number.min"),
                            format!("'{text}' is not a valid severity: not a valid severity"),
                        )
                    })?,
                };
                Some((min, s.match_undefined))
            }
        };
        let lm = LogMatch {
            resource: kvs(
                &m.resource_attributes,
                re,
                &format!("{at}.resource_attributes"),
            )?,
            record: kvs(&m.record_attributes, re, &format!("{at}.record_attributes"))?,
            severity_texts: strs(&m.severity_texts, re, &format!("{at}.severity_texts"))?,
            severity,
            bodies: strs(&m.bodies, re, &format!("{at}.bodies"))?,
        };
        if lm.resource.is_empty()
            && lm.record.is_empty()
            && lm.severity_texts.is_empty()
            && lm.severity.is_none()
            && lm.bodies.is_empty()
        {
            return Err((
                at.into(),
                r#"at least one of "resource_attributes", "record_attributes", "severity_texts", "severity_number" or "bodies" field must be specified"#.into(),
            ));
        }
        Ok(lm)
    }

    pub fn matches(&self, resource: Option<&Resource>, r: &LogRecord) -> bool {
        let res: &[KeyValue] = resource.map(|x| x.attributes.as_slice()).unwrap_or(&[]);
        kv_all(&self.resource, res)
            && kv_all(&self.record, &r.attributes)
            && (self.severity_texts.is_empty()
                || self
                    .severity_texts
                    .iter()
                    .any(|m| m.is_match(&r.severity_text)))
            && self.severity.is_none_or(|(min, undefined)| {
                if r.severity_number == 0 {
                    undefined
                } else {
                    r.severity_number >= min
                }
            })
            && (self.bodies.is_empty()
                || r.body
                    .as_ref()
                    .is_some_and(|b| any(&self.bodies, &as_text(b))))
    }
}

pub struct MetricMatch {
    names: Vec<Str>,
    resource: Vec<(String, Val)>,
}

impl MetricMatch {
    pub fn compile(m: &MetricMatchConfig, at: &str) -> Result<MetricMatch, Problem> {
        if m.match_type == "expr" || !m.expressions.is_empty() {
            return Err((
                format!("{at}.match_type"),
                "the expr match type is not supported by weir; write OTTL conditions (metric_conditions) instead".into(),
            ));
        }
        let re = regexp(&m.match_type, at)?;
        let mm = MetricMatch {
            names: strs(&m.metric_names, re, &format!("{at}.metric_names"))?,
            resource: kvs(
                &m.resource_attributes,
                re,
                &format!("{at}.resource_attributes"),
            )?,
        };
        if mm.names.is_empty() && mm.resource.is_empty() {
            return Err((
                at.into(),
                r#"at least one of "metric_names" or "resource_attributes" field must be specified"#.into(),
            ));
        }
        Ok(mm)
    }

    pub fn matches(&self, resource: Option<&Resource>, m: &Metric) -> bool {
        let res: &[KeyValue] = resource.map(|x| x.attributes.as_slice()).unwrap_or(&[]);
        any(&self.names, &m.name) && kv_all(&self.resource, res)
    }
}

/// An include/exclude pair: whether to drop an item given how each matches.
pub fn drops(include: Option<bool>, exclude: Option<bool>) -> bool {
    include == Some(false) || exclude == Some(true)
}

/// Compiles a span filter.
pub(crate) fn spans(f: &SpanFilter) -> Result<(Option<SpanMatch>, Option<SpanMatch>), Problem> {
    let c = |m: &Option<MatchConfig>, at: &str| {
        m.as_ref()
            .map(|m| SpanMatch::compile(m, at))
            .transpose()
            .map_err(|p| (p.path, p.message))
    };
    Ok((
        c(&f.include, "spans.include")?,
        c(&f.exclude, "spans.exclude")?,
    ))
}

/// Whether a span is dropped by a legacy span filter.
pub(crate) fn span_dropped(
    m: &(Option<SpanMatch>, Option<SpanMatch>),
    res: Option<&Resource>,
    scope: Option<&InstrumentationScope>,
    s: &Span,
) -> bool {
    drops(
        m.0.as_ref().map(|i| i.span(res, scope, s)),
        m.1.as_ref().map(|e| e.span(res, scope, s)),
    )
}
