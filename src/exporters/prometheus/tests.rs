use super::*;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, number_data_point, Exemplar as OtlpExemplar, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn store(yaml: &str) -> Store {
    let c: PrometheusExporterConfig = serde_yaml::from_str(yaml).expect("yaml");
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    Store::new("prometheus", &c, &Registry::new())
}

const T: u64 = 1_700_000_000_000_000_000;

fn req(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout"), kv("host.name", "h1")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

fn counter(name: &str, v: i64, temporality: AggregationTemporality) -> Metric {
    Metric {
        name: name.into(),
        description: "Calls made.".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("span.name", "GET \"/\"")],
                time_unix_nano: T,
                value: Some(number_data_point::Value::AsInt(v)),
                exemplars: vec![OtlpExemplar {
                    trace_id: vec![0xab; 16],
                    span_id: vec![0xcd; 8],
                    time_unix_nano: T,
                    value: Some(exemplar::Value::AsDouble(3.0)),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn histogram(temporality: AggregationTemporality) -> Metric {
    Metric {
        name: "latency".into(),
        unit: "ms".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: T,
                count: 3,
                sum: Some(12.0),
                bucket_counts: vec![1, 2, 0],
                explicit_bounds: vec![2.0, 10.0],
                ..Default::default()
            }],
            aggregation_temporality: temporality as i32,
        })),
        ..Default::default()
    }
}

#[test]
fn text_format_with_types_help_suffixes_and_target_info() {
    let s = store("{endpoint: '127.0.0.1:0', namespace: app, const_labels: {region: eu}}");
    s.update(&req(vec![
        counter("calls", 5, AggregationTemporality::Cumulative),
        histogram(AggregationTemporality::Cumulative),
    ]));
    let text = s.render(false);
    for want in [
        "# HELP app_calls_total Calls made.\n# TYPE app_calls_total counter\n",
        "app_calls_total{job=\"checkout\",region=\"eu\",span_name=\"GET \\\"/\\\"\"} 5\n",
        "# TYPE app_latency_milliseconds histogram\n",
        "app_latency_milliseconds_bucket{job=\"checkout\",le=\"2\",region=\"eu\"} 1\n",
        "app_latency_milliseconds_bucket{job=\"checkout\",le=\"10\",region=\"eu\"} 3\n",
        "app_latency_milliseconds_bucket{job=\"checkout\",le=\"+Inf\",region=\"eu\"} 3\n",
        "app_latency_milliseconds_sum{job=\"checkout\",region=\"eu\"} 12\n",
        "app_latency_milliseconds_count{job=\"checkout\",region=\"eu\"} 3\n",
        "target_info{host_name=\"h1\",job=\"checkout\",region=\"eu\"} 1\n",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert!(!text.contains("# EOF"));
    assert!(
        !text.contains("trace_id"),
        "no exemplars in the text format"
    );
}

#[test]
fn open_metrics_names_counter_families_and_carries_exemplars() {
    let s = store("{endpoint: '127.0.0.1:0', enable_open_metrics: true}");
    s.update(&req(vec![counter(
        "calls",
        5,
        AggregationTemporality::Cumulative,
    )]));
    let text = s.render(true);
    assert!(text.contains("# TYPE calls counter\n"), "{text}");
    assert!(
        text.contains("calls_total{job=\"checkout\",span_name=\"GET \\\"/\\\"\"} 5 # {span_id=\"cdcdcdcdcdcdcdcd\",trace_id=\"abababababababababababababababab\"} 3 1700000000\n"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn delta_points_add_up_into_cumulative_ones() {
    let s = store("{endpoint: '127.0.0.1:0'}");
    for k in 0..3u64 {
        // Each delta point newer than the last (a repeated one would be dropped).
        let mut r = req(vec![
            counter("calls", 2, AggregationTemporality::Delta),
            histogram(AggregationTemporality::Delta),
        ]);
        for m in &mut r.resource_metrics[0].scope_metrics[0].metrics {
            match &mut m.data {
                Some(metric::Data::Sum(x)) => x.data_points[0].time_unix_nano = T + k,
                Some(metric::Data::Histogram(x)) => x.data_points[0].time_unix_nano = T + k,
                _ => {}
            }
        }
        s.update(&r);
    }
    let text = s.render(false);
    assert!(
        text.contains("calls_total{job=\"checkout\",span_name=\"GET \\\"/\\\"\"} 6\n"),
        "{text}"
    );
    assert!(
        text.contains("latency_milliseconds_count{job=\"checkout\"} 9\n"),
        "{text}"
    );
    assert!(
        text.contains("latency_milliseconds_bucket{job=\"checkout\",le=\"10\"} 9\n"),
        "{text}"
    );
}

#[test]
fn timestamps_on_request_and_series_expire() {
    let s = store("{endpoint: '127.0.0.1:0', send_timestamps: true, metric_expiration: 50ms, resource_to_telemetry_conversion: {enabled: true}}");
    s.update(&req(vec![counter(
        "calls",
        1,
        AggregationTemporality::Cumulative,
    )]));
    let text = s.render(false);
    assert!(
        text.contains("calls_total{host_name=\"h1\",job=\"checkout\",service_name=\"checkout\",span_name=\"GET \\\"/\\\"\"} 1 1700000000000\n"),
        "{text}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.render(false).contains("calls_total") {
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::yield_now();
    }
}

#[test]
fn bad_settings_are_refused() {
    let c: PrometheusExporterConfig =
        serde_yaml::from_str("{const_labels: {'1bad': x}, metric_expiration: 0s}").expect("yaml");
    let text = format!("{:?}", c.validate());
    for want in [
        "endpoint\", \"is required",
        "\\\"1bad\\\" is not a valid Prometheus label name",
        "metric_expiration\", \"must be positive",
    ] {
        assert!(text.contains(want), "{want} not in {text}");
    }
}
