//! Self-metrics: counters and gauges registered by components, rendered as Prometheus text.
//!
//! Counters are plain atomics held by the component that bumps them, so the hot path costs
//! one relaxed add. The registry only walks them when `/metrics` is scraped. Registering the
//! same name and labels twice yields the same counter, so a component rebuilt on reload keeps
//! counting where it left off.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing counter.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as f64 bits).
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A histogram with fixed bucket bounds: one relaxed add per bucket hit, sum kept as f64 bits.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
pub struct HistogramInner {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last is +Inf.
    counts: Vec<AtomicU64>,
    sum_bits: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Arc::new(HistogramInner {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, v: f64) {
        let i = self
            .0
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.0.bounds.len());
        if let Some(c) = self.0.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .0
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
    }

    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum_bits.load(Ordering::Relaxed))
    }
}

type GaugeFn = Arc<dyn Fn() -> f64 + Send + Sync>;

enum Value {
    Counter(Counter),
    Gauge(Gauge),
    GaugeFn(GaugeFn),
    Histogram(Histogram),
}

struct Family {
    help: &'static str,
    kind: &'static str,
    series: BTreeMap<Vec<(&'static str, String)>, Value>,
}

/// The process's self-metrics.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

pub type Labels<'a> = &'a [(&'static str, &'a str)];

fn owned(labels: Labels<'_>) -> Vec<(&'static str, String)> {
    let mut v: Vec<_> = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    v.sort();
    v
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    fn with_family<R>(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        f: impl FnOnce(&mut Family) -> R,
    ) -> R {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let fam = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        f(fam)
    }

    /// A counter; `name` should end in `_total`.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: Labels<'_>) -> Counter {
        self.with_family(name, help, "counter", |fam| {
            match fam
                .series
                .entry(owned(labels))
                .or_insert_with(|| Value::Counter(Counter::default()))
            {
                Value::Counter(c) => c.clone(),
                // A name registered as another kind: hand out a detached counter rather than
                // panic; the conflict is a programming error caught by tests.
                _ => Counter::default(),
            }
        })
    }

    pub fn gauge(&self, name: &'static str, help: &'static str, labels: Labels<'_>) -> Gauge {
        self.with_family(name, help, "gauge", |fam| {
            match fam
                .series
                .entry(owned(labels))
                .or_insert_with(|| Value::Gauge(Gauge::default()))
            {
                Value::Gauge(g) => g.clone(),
                _ => Gauge::default(),
            }
        })
    }

    /// A histogram with the given upper bounds (ascending; +Inf is implied).
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Labels<'_>,
        bounds: &'static [f64],
    ) -> Histogram {
        self.with_family(name, help, "histogram", |fam| {
            match fam
                .series
                .entry(owned(labels))
                .or_insert_with(|| Value::Histogram(Histogram::new(bounds)))
            {
                Value::Histogram(h) => h.clone(),
                _ => Histogram::new(bounds),
            }
        })
    }

    /// A gauge read from `f` at scrape time (replaces an earlier one with the same labels).
    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Labels<'_>,
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.with_family(name, help, "gauge", |fam| {
            fam.series
                .insert(owned(labels), Value::GaugeFn(Arc::new(f)));
        })
    }

    /// Removes every series of every family that has label `key` = `value` and is computed
    /// at scrape time (used when a component that registered gauge callbacks goes away).
    pub fn remove_gauge_fns(&self, key: &str, value: &str) {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for fam in families.values_mut() {
            fam.series.retain(|labels, v| {
                !(matches!(v, Value::GaugeFn(_))
                    && labels.iter().any(|(k, val)| *k == key && val == value))
            });
        }
    }

    /// The value of a counter or gauge, for tests and logs.
    pub fn value(&self, name: &str, labels: Labels<'_>) -> Option<f64> {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let fam = families.get(name)?;
        fam.series.get(&owned(labels)).map(|v| match v {
            Value::Counter(c) => c.get() as f64,
            Value::Gauge(g) => g.get(),
            Value::GaugeFn(f) => f(),
            Value::Histogram(h) => h.count() as f64,
        })
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        self.render_with(&super::Exposition::default())
    }

    /// [`Registry::render`] with the resource (`target_info`), constant labels and suffix
    /// options of `service.telemetry`.
    pub fn render_with(&self, x: &super::Exposition) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(4096);
        if !x.target_info.is_empty() {
            out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\n");
            let labels: Vec<(&str, String)> = x
                .target_info
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            write_series(&mut out, "target_info", &labels, None);
            out.push_str(" 1\n");
        }
        let constant: Vec<(&str, String)> = x
            .constant_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        for (name, fam) in families.iter() {
            if fam.series.is_empty() {
                continue;
            }
            let shown;
            let name: &str = if x.without_type_suffix && fam.kind == "counter" {
                shown = name.strip_suffix("_total").unwrap_or(name).to_string();
                &shown
            } else {
                name
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind);
            for (labels, v) in &fam.series {
                let with_constant: Vec<(&str, String)>;
                let labels: &[(&str, String)] = if constant.is_empty() {
                    labels
                } else {
                    with_constant = labels
                        .iter()
                        .map(|(k, v)| (*k, v.clone()))
                        .chain(constant.iter().cloned())
                        .collect();
                    &with_constant
                };
                let v = match v {
                    Value::Counter(c) => c.get() as f64,
                    Value::Gauge(g) => g.get(),
                    Value::GaugeFn(f) => f(),
                    Value::Histogram(h) => {
                        render_histogram(&mut out, name, labels, h);
                        continue;
                    }
                };
                write_series(&mut out, name, labels, None);
                let _ = writeln!(out, " {v}");
            }
        }
        out
    }
}

fn write_series(
    out: &mut String,
    name: &str,
    labels: &[(&str, String)],
    extra: Option<(&str, &str)>,
) {
    out.push_str(name);
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, val) in labels.iter().map(|(k, v)| (*k, v.as_str())).chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape(val));
    }
    out.push('}');
}

fn render_histogram(out: &mut String, name: &str, labels: &[(&str, String)], h: &Histogram) {
    let mut cumulative = 0u64;
    let bucket = format!("{name}_bucket");
    for (i, c) in h.0.counts.iter().enumerate() {
        cumulative += c.load(Ordering::Relaxed);
        let le =
            h.0.bounds
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
        write_series(out, &bucket, labels, Some(("le", &le)));
        let _ = writeln!(out, " {cumulative}");
    }
    write_series(out, &format!("{name}_sum"), labels, None);
    let _ = writeln!(out, " {}", h.sum());
    write_series(out, &format!("{name}_count"), labels, None);
    let _ = writeln!(out, " {cumulative}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// weir's own metrics as an OTLP request (for the `periodic` reader): counters as cumulative
/// monotonic sums (named without `_total`, as the Collector names them in OTLP), gauges as
/// gauges, histograms with their buckets; `resource` becomes the resource's attributes.
pub fn to_otlp(
    registry: &Registry,
    resource: &[(String, String)],
    now_ns: u64,
    start_ns: u64,
) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, Gauge as OGauge,
        Histogram as OHistogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    };
    let attrs = |labels: &[(&'static str, String)]| -> Vec<KeyValue> {
        labels.iter().map(|(k, v)| kv(k, v)).collect()
    };
    let families = registry.families.lock().unwrap_or_else(|p| p.into_inner());
    let mut metrics = Vec::new();
    for (name, fam) in families.iter() {
        if fam.series.is_empty() {
            continue;
        }
        let number = |labels: &[(&'static str, String)], v: f64| NumberDataPoint {
            attributes: attrs(labels),
            start_time_unix_nano: start_ns,
            time_unix_nano: now_ns,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        };
        let data = match fam.kind {
            "counter" => Data::Sum(Sum {
                data_points: fam
                    .series
                    .iter()
                    .map(|(l, v)| number(l, scalar(v)))
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            "histogram" => Data::Histogram(OHistogram {
                data_points: fam
                    .series
                    .iter()
                    .filter_map(|(l, v)| match v {
                        Value::Histogram(h) => Some(HistogramDataPoint {
                            attributes: attrs(l),
                            start_time_unix_nano: start_ns,
                            time_unix_nano: now_ns,
                            count: h.count(),
                            sum: Some(h.sum()),
                            bucket_counts: h
                                .0
                                .counts
                                .iter()
                                .map(|c| c.load(Ordering::Relaxed))
                                .collect(),
                            explicit_bounds: h.0.bounds.to_vec(),
                            ..Default::default()
                        }),
                        _ => None,
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
            _ => Data::Gauge(OGauge {
                data_points: fam
                    .series
                    .iter()
                    .map(|(l, v)| number(l, scalar(v)))
                    .collect(),
            }),
        };
        let otlp_name = if fam.kind == "counter" {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name
        };
        metrics.push(Metric {
            name: otlp_name.to_string(),
            description: fam.help.to_string(),
            data: Some(data),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "weir".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A counter's or gauge's current value (0 for a histogram).
fn scalar(v: &Value) -> f64 {
    match v {
        Value::Counter(c) => c.get() as f64,
        Value::Gauge(g) => g.get(),
        Value::GaugeFn(f) => f(),
        Value::Histogram(_) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_labels_same_counter_and_text_format() {
        let r = Registry::new();
        let a = r.counter(
            "x_total",
            "help",
            &[("receiver", "otlp"), ("transport", "grpc")],
        );
        let b = r.counter(
            "x_total",
            "help",
            &[("transport", "grpc"), ("receiver", "otlp")],
        );
        a.add(2);
        b.inc();
        r.gauge_fn("q", "queue", &[("exporter", "otlp/a\"b")], || 7.0);
        let text = r.render();
        assert!(text.contains("# TYPE x_total counter\n"));
        assert!(text.contains("x_total{receiver=\"otlp\",transport=\"grpc\"} 3\n"));
        assert!(text.contains("q{exporter=\"otlp/a\\\"b\"} 7\n"));
        assert_eq!(
            r.value("x_total", &[("receiver", "otlp"), ("transport", "grpc")]),
            Some(3.0)
        );
        r.remove_gauge_fns("exporter", "otlp/a\"b");
        assert!(!r.render().contains("q{"));
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let r = Registry::new();
        let h = r.histogram("lat", "latency", &[("policy", "p")], &[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        let text = r.render();
        assert!(text.contains("# TYPE lat histogram\n"), "{text}");
        assert!(
            text.contains("lat_bucket{policy=\"p\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_bucket{policy=\"p\",le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_bucket{policy=\"p\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("lat_sum{policy=\"p\"} 55.5\n"), "{text}");
        assert!(text.contains("lat_count{policy=\"p\"} 3\n"), "{text}");
        assert_eq!(r.value("lat", &[("policy", "p")]), Some(3.0));
    }

    #[test]
    fn to_otlp_carries_counters_gauges_histograms_and_the_resource() {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let r = Registry::new();
        r.counter("a_total", "A.", &[("k", "v")]).add(3);
        r.gauge("g", "G.", &[]).set(1.5);
        r.histogram("h", "H.", &[], &[1.0, 2.0]).observe(1.5);
        let req = to_otlp(&r, &[("service.name".into(), "weir".into())], 10, 1);
        let rm = &req.resource_metrics[0];
        let res = rm.resource.as_ref().expect("resource");
        assert_eq!(res.attributes[0].key, "service.name");
        let ms = &rm.scope_metrics[0].metrics;
        let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["a", "g", "h"]);
        match ms[0].data.as_ref() {
            Some(Data::Sum(s)) => {
                assert!(s.is_monotonic);
                assert_eq!(s.data_points[0].attributes[0].key, "k");
            }
            other => panic!("a sum, got {other:?}"),
        }
        match ms[2].data.as_ref() {
            Some(Data::Histogram(h)) => {
                assert_eq!(h.data_points[0].bucket_counts, vec![0, 1, 0]);
                assert_eq!(h.data_points[0].count, 1);
            }
            other => panic!("a histogram, got {other:?}"),
        }
    }
}
