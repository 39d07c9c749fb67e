//! Metrics hot paths: OTLP → Prometheus remote-write (translate, encode, snappy) in data
//! points/s, and the cardinality limiter's cost per point.
//!
//! Run: `cargo bench --bench metrics`
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use weir::exporters::prometheusremotewrite::split;
use weir::exporters::prometheusremotewrite::translate::{translate, Settings};
use weir::pdata::{Batch, Context, Payload, Signal};
use weir::pipeline::Processor;
use weir::processors::cardinality_limiter::config::CardinalityLimiterConfig;
use weir::processors::cardinality_limiter::CardinalityLimiter;
use weir::telemetry::metrics::Registry;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

const T: u64 = 1_700_000_000_000_000_000;

/// 1000 data points: 10 counters × 90 series (3 attributes) + 1 histogram × 10 series (each
/// histogram point has 10 buckets: 13 samples).
fn request() -> (ExportMetricsServiceRequest, u64) {
    let mut metrics = Vec::new();
    for m in 0..10 {
        let points = (0..90)
            .map(|i| NumberDataPoint {
                attributes: vec![
                    kv("http.method", if i % 2 == 0 { "GET" } else { "POST" }),
                    kv("http.route", &format!("/api/v1/items/{}", i % 15)),
                    kv("http.status_code", &format!("{}", 200 + i % 3)),
                ],
                start_time_unix_nano: T - 60_000_000_000,
                time_unix_nano: T,
                value: Some(number_data_point::Value::AsInt(i)),
                ..Default::default()
            })
            .collect();
        metrics.push(Metric {
            name: format!("http.server.requests.{m}"),
            unit: "{request}".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    }
    metrics.push(Metric {
        name: "http.server.duration".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: (0..10)
                .map(|i| HistogramDataPoint {
                    attributes: vec![kv("http.route", &format!("/r{i}"))],
                    time_unix_nano: T,
                    count: 100,
                    sum: Some(12.5),
                    bucket_counts: vec![10; 10],
                    explicit_bounds: (1..10).map(|b| b as f64 * 0.1).collect(),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    });
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.instance.id", "pod-1"),
                    kv("host.name", "node-7"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (req, 1000)
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let (req, points) = request();
    let settings = Settings {
        target_info: true,
        add_suffixes: true,
        ..Default::default()
    };
    let mut g = c.benchmark_group("remote_write_1000_points");
    g.throughput(Throughput::Elements(points));
    g.bench_function("translate", |b| {
        b.iter(|| translate(&req, &settings).series.len())
    });
    g.bench_function("translate_encode_snappy", |b| {
        b.iter(|| {
            let t = translate(&req, &settings);
            split(t.series, t.metadata, 3_000_000)
                .into_iter()
                .map(|body| {
                    snap::raw::Encoder::new()
                        .compress_vec(&body)
                        .map(|v| v.len())
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("cardinality_limiter_1000_points");
    g.throughput(Throughput::Elements(points));
    let cfg: CardinalityLimiterConfig =
        serde_yaml::from_str("default_limit: {max_series_per_metric: 50}").expect("config");
    let mut limiter = CardinalityLimiter::new("cardinality_limiter", &cfg, Registry::new());
    let batch = Batch {
        signal: Signal::Metrics,
        items: points as usize,
        payload: Payload::Metrics(req.clone()),
        context: Arc::new(Context::default()),
        held: None,
        compressed: None,
    };
    // Steady state: 50 of 90 series per metric admitted, the rest folded into overflow.
    g.bench_function("process", |b| {
        b.iter_batched(
            || batch.clone(),
            |bt| {
                let mut out = Vec::new();
                limiter.process(bt, &mut out);
                out.len()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    c.final_summary();
}
