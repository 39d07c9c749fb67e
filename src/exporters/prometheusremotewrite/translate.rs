//! OTLP metrics to Prometheus remote-write time series, per the OpenTelemetry "Prometheus and
//! OpenMetrics compatibility" spec and the Collector's translator:
//!
//! - gauges and non-monotonic cumulative sums → gauge samples; monotonic cumulative sums →
//!   `<name>_total`; histograms → `_bucket{le}` (cumulative, with `+Inf`), `_sum`, `_count`;
//!   summaries → `{quantile}` series plus `_sum`, `_count`; exponential histograms → native
//!   histograms (schema = scale, capped at 8 by merging buckets; spans and deltas);
//! - delta temporality is not representable in Prometheus: such points are dropped and
//!   counted (the caller logs and exports the count);
//! - `job` = `service.namespace/service.name`, `instance` = `service.instance.id`; the other
//!   resource attributes go to one `target_info` series per resource; `otel_scope_name` and
//!   `otel_scope_version` label every series of a scope;
//! - attribute keys are sanitised (colliding keys join their values with `;`), labels sorted,
//!   samples of one series in time order; the NoRecordedValue flag becomes the staleness NaN;
//!   exemplars carry `trace_id` and `span_id`.
use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, AggregationTemporality, Exemplar as OtlpExemplar,
    ExponentialHistogramDataPoint,
};

use super::names::{label_name, metric_name, Kind};
use super::proto::{
    histogram, BucketSpan, Exemplar, Histogram, Label, MetricMetadata, Sample, TimeSeries,
    TYPE_COUNTER, TYPE_GAUGE, TYPE_HISTOGRAM, TYPE_SUMMARY,
};

/// Prometheus' staleness marker.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
const NO_RECORDED_VALUE: u32 = 1;

#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub namespace: String,
    /// Sorted, names already valid.
    pub external_labels: Vec<Label>,
    pub resource_to_telemetry: bool,
    pub target_info: bool,
    pub add_suffixes: bool,
    pub send_metadata: bool,
}

#[derive(Debug, Default)]
pub struct Translated {
    pub series: Vec<TimeSeries>,
    pub metadata: Vec<MetricMetadata>,
    /// Points dropped because their temporality is delta.
    pub dropped_delta: usize,
    /// Points dropped because they cannot be represented (e.g. a native-histogram scale
    /// below -4).
    pub dropped_invalid: usize,
}

fn value_string(v: &AnyValue) -> String {
    use any_value::Value as V;
    match v.value.as_ref() {
        Some(V::StringValue(s)) => s.clone(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::DoubleValue(d)) => d.to_string(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(V::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(value_string).collect();
            format!("[{}]", items.join(","))
        }
        Some(V::KvlistValue(kv)) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|kv| {
                    format!(
                        "{}:{}",
                        kv.key,
                        kv.value.as_ref().map(value_string).unwrap_or_default()
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        // A string-table reference only means something in profiles.
        Some(V::StringValueStrindex(_)) | None => String::new(),
    }
}

fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// Labels being built: a handful of entries, so a vector beats a map.
#[derive(Clone, Default)]
struct LabelSet(Vec<Label>);

impl LabelSet {
    fn pos(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|l| l.name == name)
    }
    fn set(&mut self, name: String, value: String) {
        match self.pos(&name) {
            Some(i) => self.0[i].value = value,
            None => self.0.push(Label { name, value }),
        }
    }
    fn set_if_absent(&mut self, name: String, value: String) {
        if self.pos(&name).is_none() {
            self.0.push(Label { name, value });
        }
    }
    /// Attributes: sanitised keys; keys that collide after sanitising join values with `;`
    /// in key order (as upstream).
    fn add_attributes(&mut self, attrs: &[KeyValue]) {
        let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        for kv in sorted {
            let name = label_name(&kv.key);
            if name.is_empty() {
                continue;
            }
            let value = kv.value.as_ref().map(value_string).unwrap_or_default();
            match self.pos(&name) {
                Some(i) => {
                    let v = &mut self.0[i].value;
                    v.push(';');
                    v.push_str(&value);
                }
                None => self.0.push(Label { name, value }),
            }
        }
    }
    fn finish(mut self) -> Vec<Label> {
        self.0.retain(|l| !l.value.is_empty());
        self.0.sort_by(|a, b| a.name.cmp(&b.name));
        self.0
    }
}

struct Builder<'s> {
    s: &'s Settings,
    index: HashMap<Vec<Label>, usize>,
    out: Translated,
    families: HashMap<String, ()>,
}

fn ms(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

fn exemplar_of(e: &OtlpExemplar) -> Exemplar {
    let mut labels = LabelSet::default();
    labels.add_attributes(&e.filtered_attributes);
    if !e.trace_id.is_empty() {
        labels.set(
            "trace_id".into(),
            e.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
        );
    }
    if !e.span_id.is_empty() {
        labels.set(
            "span_id".into(),
            e.span_id.iter().map(|b| format!("{b:02x}")).collect(),
        );
    }
    Exemplar {
        labels: labels.finish(),
        value: match e.value {
            Some(exemplar::Value::AsDouble(d)) => d,
            Some(exemplar::Value::AsInt(i)) => i as f64,
            None => 0.0,
        },
        timestamp: ms(e.time_unix_nano),
    }
}

impl Builder<'_> {
    fn series(&mut self, labels: Vec<Label>) -> &mut TimeSeries {
        let i = match self.index.get(&labels) {
            Some(i) => *i,
            None => {
                let i = self.out.series.len();
                self.index.insert(labels.clone(), i);
                self.out.series.push(TimeSeries {
                    labels,
                    ..Default::default()
                });
                i
            }
        };
        &mut self.out.series[i]
    }

    /// Labels for one sample: base (resource/scope) + point attributes + name + extra.
    fn labels(
        &self,
        base: &LabelSet,
        attrs: &[KeyValue],
        name: &str,
        extra: Option<(&str, String)>,
    ) -> Vec<Label> {
        let mut l = LabelSet::default();
        l.add_attributes(attrs);
        for b in &base.0 {
            // Resource-derived job/instance and scope labels win over point attributes.
            l.set(b.name.clone(), b.value.clone());
        }
        for e in &self.s.external_labels {
            l.set_if_absent(e.name.clone(), e.value.clone());
        }
        if let Some((k, v)) = extra {
            l.set(k.to_owned(), v);
        }
        l.set("__name__".into(), name.to_owned());
        l.finish()
    }

    fn sample(&mut self, labels: Vec<Label>, value: f64, ts: i64) {
        self.series(labels).samples.push(Sample {
            value,
            timestamp: ts,
        });
    }

    fn metadata(&mut self, family: &str, typ: i32, help: &str, unit: &str) {
        if !self.s.send_metadata || self.families.insert(family.to_owned(), ()).is_some() {
            return;
        }
        self.out.metadata.push(MetricMetadata {
            r#type: typ,
            metric_family_name: family.to_owned(),
            help: help.to_owned(),
            unit: unit.to_owned(),
        });
    }
}

fn value_or_stale(v: f64, flags: u32) -> f64 {
    if flags & NO_RECORDED_VALUE != 0 {
        f64::from_bits(STALE_NAN)
    } else {
        v
    }
}

fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        v.to_string()
    }
}

/// Translates one request.
pub fn translate(req: &ExportMetricsServiceRequest, s: &Settings) -> Translated {
    let mut b = Builder {
        s,
        index: HashMap::new(),
        out: Translated::default(),
        families: HashMap::new(),
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    for rm in &req.resource_metrics {
        let rattrs: &[KeyValue] = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let mut base = LabelSet::default();
        if s.resource_to_telemetry {
            base.add_attributes(rattrs);
        }
        let service = get_str(rattrs, "service.name");
        let namespace = get_str(rattrs, "service.namespace");
        if let Some(svc) = service {
            let job = match namespace {
                Some(ns) if !ns.is_empty() => format!("{ns}/{svc}"),
                _ => svc.to_owned(),
            };
            base.set("job".into(), job);
        }
        if let Some(inst) = get_str(rattrs, "service.instance.id") {
            base.set("instance".into(), inst.to_owned());
        }
        let mut latest: i64 = 0;
        for sm in &rm.scope_metrics {
            let mut scope_base = base.clone();
            if let Some(scope) = &sm.scope {
                if !scope.name.is_empty() {
                    scope_base.set("otel_scope_name".into(), scope.name.clone());
                }
                if !scope.version.is_empty() {
                    scope_base.set("otel_scope_version".into(), scope.version.clone());
                }
            }
            for m in &sm.metrics {
                let Some(data) = &m.data else { continue };
                match data {
                    metric::Data::Gauge(g) => {
                        let name = metric_name(
                            &m.name,
                            &m.unit,
                            Kind::Gauge,
                            &s.namespace,
                            s.add_suffixes,
                        );
                        b.metadata(&name, TYPE_GAUGE, &m.description, &m.unit);
                        for p in &g.data_points {
                            let v = number(&p.value);
                            let ts = ms(p.time_unix_nano);
                            latest = latest.max(ts);
                            let labels = b.labels(&scope_base, &p.attributes, &name, None);
                            let series = b.series(labels);
                            series.samples.push(Sample {
                                value: value_or_stale(v, p.flags),
                                timestamp: ts,
                            });
                            series.exemplars.extend(p.exemplars.iter().map(exemplar_of));
                        }
                    }
                    metric::Data::Sum(sum) => {
                        if sum.aggregation_temporality != cumulative {
                            b.out.dropped_delta += sum.data_points.len();
                            continue;
                        }
                        let kind = if sum.is_monotonic {
                            Kind::Counter
                        } else {
                            Kind::Other
                        };
                        let name =
                            metric_name(&m.name, &m.unit, kind, &s.namespace, s.add_suffixes);
                        let typ = if sum.is_monotonic {
                            TYPE_COUNTER
                        } else {
                            TYPE_GAUGE
                        };
                        b.metadata(&name, typ, &m.description, &m.unit);
                        for p in &sum.data_points {
                            let v = number(&p.value);
                            let ts = ms(p.time_unix_nano);
                            latest = latest.max(ts);
                            let labels = b.labels(&scope_base, &p.attributes, &name, None);
                            let series = b.series(labels);
                            series.samples.push(Sample {
                                value: value_or_stale(v, p.flags),
                                timestamp: ts,
                            });
                            series.exemplars.extend(p.exemplars.iter().map(exemplar_of));
                        }
                    }
                    metric::Data::Histogram(h) => {
                        if h.aggregation_temporality != cumulative {
                            b.out.dropped_delta += h.data_points.len();
                            continue;
                        }
                        let name = metric_name(
                            &m.name,
                            &m.unit,
                            Kind::Other,
                            &s.namespace,
                            s.add_suffixes,
                        );
                        b.metadata(&name, TYPE_HISTOGRAM, &m.description, &m.unit);
                        let (bucket, sum_n, count_n) = (
                            format!("{name}_bucket"),
                            format!("{name}_sum"),
                            format!("{name}_count"),
                        );
                        for p in &h.data_points {
                            let ts = ms(p.time_unix_nano);
                            latest = latest.max(ts);
                            let stale = |v: f64| value_or_stale(v, p.flags);
                            let mut cum = 0u64;
                            let mut bounds: Vec<(f64, u64)> =
                                Vec::with_capacity(p.explicit_bounds.len() + 1);
                            for (i, bound) in p.explicit_bounds.iter().enumerate() {
                                let c = p.bucket_counts.get(i).copied().unwrap_or(0);
                                cum = cum.saturating_add(c);
                                bounds.push((*bound, cum));
                            }
                            bounds.push((f64::INFINITY, p.count));
                            // Each exemplar goes to the first bucket that holds its value.
                            let mut exemplars: Vec<(usize, Exemplar)> = p
                                .exemplars
                                .iter()
                                .map(|e| {
                                    let ev = exemplar_of(e);
                                    let i = p
                                        .explicit_bounds
                                        .iter()
                                        .position(|bd| ev.value <= *bd)
                                        .unwrap_or(p.explicit_bounds.len());
                                    (i, ev)
                                })
                                .collect();
                            for (i, (bound, c)) in bounds.into_iter().enumerate() {
                                let labels = b.labels(
                                    &scope_base,
                                    &p.attributes,
                                    &bucket,
                                    Some(("le", float(bound))),
                                );
                                let series = b.series(labels);
                                series.samples.push(Sample {
                                    value: stale(c as f64),
                                    timestamp: ts,
                                });
                                let (mine, rest): (Vec<_>, Vec<_>) =
                                    exemplars.into_iter().partition(|(k, _)| *k == i);
                                series.exemplars.extend(mine.into_iter().map(|(_, e)| e));
                                exemplars = rest;
                            }
                            if let Some(sv) = p.sum {
                                let labels = b.labels(&scope_base, &p.attributes, &sum_n, None);
                                b.sample(labels, stale(sv), ts);
                            }
                            let labels = b.labels(&scope_base, &p.attributes, &count_n, None);
                            b.sample(labels, stale(p.count as f64), ts);
                        }
                    }
                    metric::Data::ExponentialHistogram(h) => {
                        if h.aggregation_temporality != cumulative {
                            b.out.dropped_delta += h.data_points.len();
                            continue;
                        }
                        let name = metric_name(
                            &m.name,
                            &m.unit,
                            Kind::Other,
                            &s.namespace,
                            s.add_suffixes,
                        );
                        b.metadata(&name, TYPE_HISTOGRAM, &m.description, &m.unit);
                        for p in &h.data_points {
                            let ts = ms(p.time_unix_nano);
                            let Some(native) = native_histogram(p) else {
                                b.out.dropped_invalid += 1;
                                continue;
                            };
                            latest = latest.max(ts);
                            let labels = b.labels(&scope_base, &p.attributes, &name, None);
                            b.series(labels).histograms.push(native);
                        }
                    }
                    metric::Data::Summary(sm) => {
                        let name = metric_name(
                            &m.name,
                            &m.unit,
                            Kind::Other,
                            &s.namespace,
                            s.add_suffixes,
                        );
                        b.metadata(&name, TYPE_SUMMARY, &m.description, &m.unit);
                        let (sum_n, count_n) = (format!("{name}_sum"), format!("{name}_count"));
                        for p in &sm.data_points {
                            let ts = ms(p.time_unix_nano);
                            latest = latest.max(ts);
                            for q in &p.quantile_values {
                                let labels = b.labels(
                                    &scope_base,
                                    &p.attributes,
                                    &name,
                                    Some(("quantile", float(q.quantile))),
                                );
                                b.sample(labels, value_or_stale(q.value, p.flags), ts);
                            }
                            let labels = b.labels(&scope_base, &p.attributes, &sum_n, None);
                            b.sample(labels, value_or_stale(p.sum, p.flags), ts);
                            let labels = b.labels(&scope_base, &p.attributes, &count_n, None);
                            b.sample(labels, value_or_stale(p.count as f64, p.flags), ts);
                        }
                    }
                }
            }
        }
        // target_info: the resource's other attributes, once per resource.
        if s.target_info && latest > 0 {
            let identifying = ["service.name", "service.namespace", "service.instance.id"];
            let others: Vec<KeyValue> = rattrs
                .iter()
                .filter(|kv| !identifying.contains(&kv.key.as_str()))
                .cloned()
                .collect();
            if !others.is_empty() {
                let name = if s.namespace.is_empty() {
                    "target_info".to_owned()
                } else if s.namespace.starts_with(|c: char| c.is_ascii_digit()) {
                    format!("_{}_target_info", s.namespace)
                } else {
                    format!("{}_target_info", s.namespace)
                };
                let mut l = LabelSet::default();
                l.add_attributes(&others);
                for key in ["job", "instance"] {
                    if let Some(i) = base.pos(key) {
                        l.set(key.into(), base.0[i].value.clone());
                    }
                }
                for e in &s.external_labels {
                    l.set_if_absent(e.name.clone(), e.value.clone());
                }
                l.set("__name__".into(), name.clone());
                b.metadata(&name, TYPE_GAUGE, "Target metadata", "");
                b.sample(l.finish(), 1.0, latest);
            }
        }
    }
    // A metric whose name has nothing Prometheus can hold (empty, or only characters that are
    // not name characters, without a namespace) has no name: Prometheus would refuse the
    // whole request for it, so it is dropped and counted instead.
    let before = b.out.series.len();
    let mut unnamed = 0;
    b.out.series.retain(|ts| {
        let named = ts.labels.iter().any(|l| l.name == "__name__");
        if !named {
            unnamed += ts.samples.len() + ts.histograms.len();
        }
        named
    });
    b.out.dropped_invalid += unnamed;
    if b.out.series.len() != before {
        b.out.metadata.retain(|m| !m.metric_family_name.is_empty());
    }
    for ts in &mut b.out.series {
        ts.samples.sort_by_key(|x| x.timestamp);
        ts.histograms.sort_by_key(|x| x.timestamp);
    }
    b.out
}

fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

/// Prometheus allows schemas -4..=8.
const MAX_SCHEMA: i32 = 8;
const MIN_SCHEMA: i32 = -4;

/// An exponential histogram point as a native histogram; None if the scale is too coarse.
pub fn native_histogram(p: &ExponentialHistogramDataPoint) -> Option<Histogram> {
    if p.scale < MIN_SCHEMA {
        return None;
    }
    let shift = (p.scale - MAX_SCHEMA).max(0) as u32;
    let schema = p.scale.min(MAX_SCHEMA);
    let (pos_spans, pos_deltas) = p
        .positive
        .as_ref()
        .map(|b| buckets(b.offset, &b.bucket_counts, shift))
        .unwrap_or_default();
    let (neg_spans, neg_deltas) = p
        .negative
        .as_ref()
        .map(|b| buckets(b.offset, &b.bucket_counts, shift))
        .unwrap_or_default();
    let stale = p.flags & NO_RECORDED_VALUE != 0;
    Some(Histogram {
        count: Some(histogram::Count::CountInt(p.count)),
        sum: if stale {
            f64::from_bits(STALE_NAN)
        } else {
            p.sum.unwrap_or(0.0)
        },
        schema,
        zero_threshold: p.zero_threshold,
        zero_count: Some(histogram::ZeroCount::ZeroCountInt(p.zero_count)),
        negative_spans: neg_spans,
        negative_deltas: neg_deltas,
        negative_counts: Vec::new(),
        positive_spans: pos_spans,
        positive_deltas: pos_deltas,
        positive_counts: Vec::new(),
        reset_hint: 0,
        timestamp: ms(p.time_unix_nano),
    })
}

/// OTLP buckets (index `offset + i` covers (base^idx, base^(idx+1)]) to Prometheus spans and
/// delta-encoded counts (Prometheus' index for the same bucket is one more). Buckets are
/// merged `2^shift` at a time when the scale was above what Prometheus accepts; gaps of up to
/// two empty buckets stay inside a span, longer ones start a new span.
fn buckets(offset: i32, counts: &[u64], shift: u32) -> (Vec<BucketSpan>, Vec<i64>) {
    // Merge for downscaling: new index = floor(old index / 2^shift).
    let mut merged: Vec<(i64, u64)> = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        // Shifts past 63 (a scale far above OTLP's 20) keep the sign, as Go's shift does.
        let idx = (i64::from(offset) + i as i64) >> shift.min(63);
        match merged.last_mut() {
            Some((last, n)) if *last == idx => *n = n.saturating_add(*c),
            _ => merged.push((idx, *c)),
        }
    }
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas: Vec<i64> = Vec::new();
    let mut prev: i64 = 0;
    let mut next_idx: i64 = 0;
    for (idx, count) in merged {
        if count == 0 {
            continue;
        }
        let prom_idx = idx + 1;
        let gap = prom_idx - next_idx;
        if spans.is_empty() || gap > 2 {
            spans.push(BucketSpan {
                offset: if spans.is_empty() {
                    prom_idx as i32
                } else {
                    gap as i32
                },
                length: 0,
            });
        } else {
            for _ in 0..gap {
                if let Some(s) = spans.last_mut() {
                    s.length += 1;
                }
                deltas.push(prev.wrapping_neg());
                prev = 0;
            }
        }
        if let Some(s) = spans.last_mut() {
            s.length += 1;
        }
        // Counts past i64::MAX wrap, as the Go translator's int64 conversion does.
        deltas.push((count as i64).wrapping_sub(prev));
        prev = count as i64;
        next_idx = prom_idx + 1;
    }
    (spans, deltas)
}
