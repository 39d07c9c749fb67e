//! The `sum` connector: sums a numeric attribute of spans, span events, log records or data
//! points into metrics — e.g. the tokens of every LLM call (`gen_ai.usage.input_tokens`) per
//! model. The Collector's `sum` connector, with its keys: per output metric a
//! `source_attribute`, OTTL `conditions` (any may match; none: all items) and `attributes`
//! (`{key, default_value}`) that become the points' attributes.
//!
//! Like upstream it keeps no state: each batch it is given becomes one metrics request of
//! delta, monotonic double sums, one resource per resource of the input (its attributes
//! kept), handed to the metrics pipelines at once. Put the `deltatocumulative` processor in
//! that pipeline before exporters that need cumulative sums (remote write). It must never
//! add an item twice.
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use serde::Deserialize;

use crate::config::loader::Body;
use crate::ottl::{Condition, ContextKind};
use crate::pdata::{attr as find, now_unix_nanos as now_nanos};
use crate::pdata::{Batch, Context, Payload, Signal};
use crate::pipeline::registry::{
    BoxFuture, Connector, ConnectorSettings, Decode, Factory, Handles, Stability, Targets,
};
use crate::telemetry::metrics::{Counter, Registry};

pub static FACTORY: Factory = Factory {
    type_name: "sum",
    aliases: &[],
    stability: &[
        (Handles::Pair(Signal::Traces, Signal::Metrics), Stability::Alpha),
        (Handles::Pair(Signal::Logs, Signal::Metrics), Stability::Alpha),
        (Handles::Pair(Signal::Metrics, Signal::Metrics), Stability::Alpha),
    ],
    description: "sums a numeric attribute of spans, events, logs or data points into metrics (e.g. LLM tokens per model)",
    decode: Decode::Connector(decode),
};

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SumConfig {
    /// Output metric name -> how to sum it, per kind of item.
    pub spans: BTreeMap<String, MetricInfo>,
    pub spanevents: BTreeMap<String, MetricInfo>,
    pub logs: BTreeMap<String, MetricInfo>,
    pub datapoints: BTreeMap<String, MetricInfo>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricInfo {
    pub description: String,
    /// OTTL conditions on the item; any may match (none: every item counts).
    pub conditions: Vec<String>,
    /// The point's attributes: the item's own attribute, else `default_value`; an item
    /// with neither is not counted.
    pub attributes: Vec<AttributeConfig>,
    /// The item attribute whose number is added.
    pub source_attribute: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeConfig {
    pub key: String,
    #[serde(default)]
    pub default_value: Option<DefaultValue>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DefaultValue {
    Int(i64),
    Double(f64),
    Bool(bool),
    Str(String),
}

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ConnectorSettings>> {
    let c = b.decode_checked::<SumConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl SumConfig {
    fn groups(&self) -> [(&'static str, ContextKind, &BTreeMap<String, MetricInfo>); 4] {
        [
            ("spans", ContextKind::Span, &self.spans),
            ("spanevents", ContextKind::SpanEvent, &self.spanevents),
            ("logs", ContextKind::Log, &self.logs),
            ("datapoints", ContextKind::DataPoint, &self.datapoints),
        ]
    }

    /// Upstream's checks, with its messages; OTTL errors carry the column.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (group, ctx, metrics) in self.groups() {
            for (name, m) in metrics {
                let at = format!("{group}.{name}");
                if name.is_empty() {
                    errs.push((group.to_string(), format!("{group}: metric name missing")));
                }
                if m.source_attribute.is_empty() {
                    errs.push((
                        format!("{at}.source_attribute"),
                        format!("{group}: metric source_attribute missing"),
                    ));
                }
                for (i, c) in m.conditions.iter().enumerate() {
                    if let Err(e) = Condition::parse(c, ctx) {
                        errs.push((
                            format!("{at}.conditions[{i}]"),
                            format!("{group} condition: metric {name:?}: {e}"),
                        ));
                    }
                }
                for (i, a) in m.attributes.iter().enumerate() {
                    if a.key.is_empty() {
                        errs.push((
                            format!("{at}.attributes[{i}].key"),
                            format!("{group} attributes: metric {name:?}: attribute key missing"),
                        ));
                    }
                }
            }
        }
        if self.groups().iter().all(|(_, _, m)| m.is_empty()) {
            errs.push((
                String::new(),
                "no metrics configured: add spans, spanevents, logs or datapoints".into(),
            ));
        }
        errs
    }
}

impl ConnectorSettings for SumConfig {
    fn build(&self, id: &str, registry: &Arc<Registry>) -> Arc<dyn Connector> {
        Arc::new(SumConnector::new(id, self, registry))
    }
}

/// One output metric, compiled.
struct Rule {
    name: String,
    description: String,
    conditions: Vec<Condition>,
    attributes: Vec<AttributeConfig>,
    source: String,
}

pub struct SumConnector {
    id: Arc<str>,
    spans: Vec<Rule>,
    spanevents: Vec<Rule>,
    logs: Vec<Rule>,
    datapoints: Vec<Rule>,
    targets: std::sync::Mutex<Targets>,
    /// The end of the last interval reported (the next one's start).
    last: std::sync::Mutex<u64>,
    unreadable: Counter,
}

/// The number in an attribute: ints, doubles, and strings that parse as one.
fn number(v: &AnyValue) -> Option<f64> {
    let n = match &v.value {
        Some(any_value::Value::IntValue(i)) => *i as f64,
        Some(any_value::Value::DoubleValue(d)) => *d,
        Some(any_value::Value::StringValue(s)) => s.trim().parse().ok()?,
        _ => return None,
    };
    // NaN or infinity would poison every cumulative sum after it.
    n.is_finite().then_some(n)
}

fn text(v: &AnyValue) -> Option<String> {
    match &v.value {
        Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        Some(any_value::Value::IntValue(i)) => Some(i.to_string()),
        Some(any_value::Value::DoubleValue(d)) => Some(d.to_string()),
        Some(any_value::Value::BoolValue(b)) => Some(b.to_string()),
        _ => None,
    }
}

/// Per output metric: attribute set (as text key) -> (attributes, sum).
type Sums = BTreeMap<String, BTreeMap<String, (Vec<KeyValue>, f64)>>;

impl SumConnector {
    pub fn new(id: &str, cfg: &SumConfig, registry: &Registry) -> SumConnector {
        let compile = |m: &BTreeMap<String, MetricInfo>, ctx: ContextKind| -> Vec<Rule> {
            m.iter()
                .map(|(name, info)| Rule {
                    name: name.clone(),
                    description: info.description.clone(),
                    // Validated before: a condition that does not parse cannot be here.
                    conditions: info
                        .conditions
                        .iter()
                        .filter_map(|c| Condition::parse(c, ctx).ok())
                        .collect(),
                    attributes: info.attributes.clone(),
                    source: info.source_attribute.clone(),
                })
                .collect()
        };
        SumConnector {
            id: Arc::from(id),
            spans: compile(&cfg.spans, ContextKind::Span),
            spanevents: compile(&cfg.spanevents, ContextKind::SpanEvent),
            logs: compile(&cfg.logs, ContextKind::Log),
            datapoints: compile(&cfg.datapoints, ContextKind::DataPoint),
            targets: std::sync::Mutex::new(Targets::new()),
            last: std::sync::Mutex::new(now_nanos()),
            unreadable: registry.counter(
                "weir_connector_sum_unreadable_items_total",
                "Items whose source attribute is missing or not a number: not added.",
                &[("connector", id)],
            ),
        }
    }

    /// Adds `item`'s source attribute to `rule`'s sums when a condition matches and every
    /// attribute is found or defaulted.
    fn add(
        &self,
        sums: &mut Sums,
        rule: &Rule,
        attrs: &[KeyValue],
        matches: impl Fn(&Condition) -> bool,
    ) {
        if !rule.conditions.is_empty() && !rule.conditions.iter().any(matches) {
            return;
        }
        let Some(v) = find(attrs, &rule.source).and_then(number) else {
            self.unreadable.inc();
            return;
        };
        let mut out = Vec::with_capacity(rule.attributes.len());
        let mut key = String::new();
        for a in &rule.attributes {
            let value = match (find(attrs, &a.key).and_then(text), &a.default_value) {
                (Some(t), _) => any_value::Value::StringValue(t),
                (None, Some(DefaultValue::Str(s))) if !s.is_empty() => {
                    any_value::Value::StringValue(s.clone())
                }
                (None, Some(DefaultValue::Int(i))) if *i != 0 => any_value::Value::IntValue(*i),
                (None, Some(DefaultValue::Double(d))) if *d != 0.0 => {
                    any_value::Value::DoubleValue(*d)
                }
                (None, Some(DefaultValue::Bool(b))) => any_value::Value::BoolValue(*b),
                _ => return,
            };
            key.push_str(&format!("{}\u{1}{value:?}\u{0}", a.key));
            out.push(KeyValue {
                key: a.key.clone(),
                value: Some(AnyValue { value: Some(value) }),
                ..Default::default()
            });
        }
        let e = sums
            .entry(rule.name.clone())
            .or_default()
            .entry(key)
            .or_insert((out, 0.0));
        e.1 += v;
    }

    /// The request for one batch: a resource per input resource.
    pub fn sum(&self, payload: &Payload) -> Option<(ExportMetricsServiceRequest, usize)> {
        let mut resources: Vec<ResourceMetrics> = Vec::new();
        let mut points = 0;
        // Intervals follow each other: [last, now), then [now, ...).
        let (start, now) = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_nanos().max(*last + 1);
            (std::mem::replace(&mut *last, now), now)
        };
        let mut emit = |resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
                        sums: Sums,
                        rules: &[&Rule]| {
            if sums.is_empty() {
                return;
            }
            let metrics: Vec<Metric> = sums
                .into_iter()
                .map(|(name, series)| {
                    points += series.len();
                    Metric {
                        description: rules
                            .iter()
                            .find(|r| r.name == name)
                            .map(|r| r.description.clone())
                            .unwrap_or_default(),
                        name,
                        data: Some(metric::Data::Sum(Sum {
                            data_points: series
                                .into_values()
                                .map(|(attributes, v)| NumberDataPoint {
                                    attributes,
                                    start_time_unix_nano: start,
                                    time_unix_nano: now,
                                    value: Some(number_data_point::Value::AsDouble(v)),
                                    ..Default::default()
                                })
                                .collect(),
                            aggregation_temporality: 1,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }
                })
                .collect();
            resources.push(ResourceMetrics {
                resource: resource.cloned(),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                schema_url: String::new(),
            });
        };
        match payload {
            Payload::Traces(req) => {
                let rules: Vec<&Rule> = self.spans.iter().chain(&self.spanevents).collect();
                for rs in &req.resource_spans {
                    let mut sums = Sums::new();
                    let res = rs.resource.as_ref();
                    for ss in &rs.scope_spans {
                        let scope = ss.scope.as_ref();
                        for sp in &ss.spans {
                            for r in &self.spans {
                                self.add(&mut sums, r, &sp.attributes, |c| {
                                    c.eval_span(res, scope, sp)
                                });
                            }
                            for ev in &sp.events {
                                for r in &self.spanevents {
                                    self.add(&mut sums, r, &ev.attributes, |c| {
                                        c.eval_span_event(res, scope, sp, ev)
                                    });
                                }
                            }
                        }
                    }
                    emit(res, sums, &rules);
                }
            }
            Payload::Logs(req) => {
                let rules: Vec<&Rule> = self.logs.iter().collect();
                for rl in &req.resource_logs {
                    let mut sums = Sums::new();
                    let res = rl.resource.as_ref();
                    for sl in &rl.scope_logs {
                        let scope = sl.scope.as_ref();
                        for lr in &sl.log_records {
                            for r in &self.logs {
                                self.add(&mut sums, r, &lr.attributes, |c| {
                                    c.eval_log(res, scope, lr)
                                });
                            }
                        }
                    }
                    emit(res, sums, &rules);
                }
            }
            Payload::Metrics(req) => {
                let rules: Vec<&Rule> = self.datapoints.iter().collect();
                for rm in &req.resource_metrics {
                    let mut sums = Sums::new();
                    let res = rm.resource.as_ref();
                    for sm in &rm.scope_metrics {
                        let scope = sm.scope.as_ref();
                        for m in &sm.metrics {
                            for p in crate::ottl::points_of(m) {
                                for r in &self.datapoints {
                                    self.add(&mut sums, r, p.attributes(), |c| {
                                        c.eval_datapoint(res, scope, m, p)
                                    });
                                }
                            }
                        }
                    }
                    emit(res, sums, &rules);
                }
            }
            Payload::Encoded(_) => {}
        }
        (!resources.is_empty()).then_some((
            ExportMetricsServiceRequest {
                resource_metrics: resources,
            },
            points,
        ))
    }
}

impl Connector for SumConnector {
    fn push(&self, mut batch: Batch) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = batch.decode() {
                tracing::error!(connector = %self.id, "dropping {} items: {e}", e.lost);
            }
            let Some((req, points)) = self.sum(&batch.payload) else {
                return;
            };
            let out = Batch {
                signal: Signal::Metrics,
                items: points,
                payload: Payload::Metrics(req),
                context: Arc::new(Context {
                    receiver: self.id.clone(),
                    tenant: batch.context.tenant.clone(),
                    metadata: batch.context.metadata.clone(),
                    ..Default::default()
                }),
                held: None,
                compressed: None,
            };
            let targets: Vec<(String, tokio::sync::mpsc::Sender<Batch>)> = self
                .targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (p, tx) in targets {
                if tx.send(out.clone()).await.is_err() {
                    tracing::error!(connector = %self.id, "pipeline {p} has stopped; dropped {points} data points");
                }
            }
        })
    }

    fn set_targets(&self, targets: Targets) {
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = targets;
    }
}
