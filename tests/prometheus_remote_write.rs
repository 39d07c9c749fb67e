//! Metrics into a real Prometheus through weir's `prometheusremotewrite` exporter: the
//! OpenTelemetry SDK sends a counter, a gauge and a histogram, a raw OTLP client an
//! exponential histogram; Prometheus' query API returns them under the spec's names, labels
//! and values, with `target_info` and native histograms.
mod common;

use std::time::Duration;

use common::prometheus::Prometheus;
use common::{free_port, http_get, metric, wait_until_async, Weir};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as PKeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

fn config(grpc: u16, tel: u16, prom: &Prometheus) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  batch:
    timeout: 50ms
exporters:
  prometheusremotewrite:
    endpoint: {url}
    external_labels: {{cluster: test-1}}
    retry_on_failure: {{initial_interval: 100ms}}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{tel}
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [prometheusremotewrite]
"#,
        url = prom.write_url()
    )
}

fn s(k: &str, v: &str) -> PKeyValue {
    PKeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn label<'a>(l: &'a serde_json::Map<String, serde_json::Value>, k: &str) -> Option<&'a str> {
    l.get(k).and_then(|v| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_land_in_prometheus_under_the_spec_names() {
    let prom = Prometheus::start();
    let (grpc, tel) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, tel, &prom), grpc);

    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .build()
        .expect("metric exporter");
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("checkout")
        .with_attributes([
            KeyValue::new("service.namespace", "shop"),
            KeyValue::new("service.instance.id", "pod-1"),
            KeyValue::new("host.name", "node-7"),
        ])
        .build();
    let mp = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(exporter)
        .build();
    let meter = mp.meter("io.weir.prw-test");
    let counter = meter
        .u64_counter("http.requests")
        .with_unit("{request}")
        .build();
    counter.add(5, &[KeyValue::new("http.method", "GET")]);
    counter.add(2, &[KeyValue::new("http.method", "POST")]);
    let gauge = meter.f64_gauge("cpu.utilization").with_unit("1").build();
    gauge.record(0.75, &[]);
    let hist = meter
        .f64_histogram("http.server.duration")
        .with_unit("s")
        .with_boundaries(vec![0.1, 0.5, 1.0, 5.0])
        .build();
    for v in [0.05, 0.2, 0.3, 2.0] {
        hist.record(v, &[]);
    }
    mp.force_flush().expect("flush metrics");

    // An exponential histogram and a delta counter (which Prometheus cannot take) over raw OTLP.
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");
    let t = now_nanos();
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![s("service.name", "uploads")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "upload.size".into(),
                        unit: "By".into(),
                        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                time_unix_nano: t,
                                start_time_unix_nano: t - 1_000_000_000,
                                count: 6,
                                sum: Some(4200.0),
                                scale: 1,
                                zero_count: 1,
                                positive: Some(Buckets {
                                    offset: 10,
                                    bucket_counts: vec![2, 0, 3],
                                }),
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "deltas".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![Default::default()],
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    client.export(req).await.expect("export");

    // Counter: `_total`, job = namespace/name, instance, scope, attributes, external labels.
    let r = prom.wait_for("http_requests_total");
    assert_eq!(r.len(), 2, "{r:?}");
    let get = prom.wait_for(r#"http_requests_total{http_method="GET"}"#);
    let (l, v) = &get[0];
    assert_eq!(*v, 5.0);
    assert_eq!(label(l, "job"), Some("shop/checkout"));
    assert_eq!(label(l, "instance"), Some("pod-1"));
    assert_eq!(label(l, "otel_scope_name"), Some("io.weir.prw-test"));
    assert_eq!(label(l, "cluster"), Some("test-1"));
    assert_eq!(
        prom.wait_for(r#"http_requests_total{http_method="POST"}"#)[0].1,
        2.0
    );

    // Gauge of unit 1: `_ratio`.
    assert_eq!(prom.wait_for("cpu_utilization_ratio")[0].1, 0.75);

    // Histogram: cumulative buckets with +Inf, _sum, _count.
    let b = |le: &str| {
        prom.wait_for(&format!(
            r#"http_server_duration_seconds_bucket{{le="{le}"}}"#
        ))[0]
            .1
    };
    assert_eq!(b("0.1"), 1.0);
    assert_eq!(b("0.5"), 3.0);
    assert_eq!(b("1"), 3.0);
    assert_eq!(b("5"), 4.0);
    assert_eq!(b("+Inf"), 4.0);
    assert_eq!(
        prom.wait_for("http_server_duration_seconds_count")[0].1,
        4.0
    );
    let sum = prom.wait_for("http_server_duration_seconds_sum")[0].1;
    assert!((sum - 2.55).abs() < 1e-9, "{sum}");

    // Exponential histogram as a native histogram.
    assert_eq!(
        prom.wait_for("histogram_count(upload_size_bytes)")[0].1,
        6.0
    );
    assert_eq!(
        prom.wait_for("histogram_sum(upload_size_bytes)")[0].1,
        4200.0
    );
    let (l, count) = &prom.wait_for("upload_size_bytes")[0];
    assert_eq!(*count, 6.0);
    assert_eq!(label(l, "job"), Some("uploads"));

    // target_info with the non-identifying resource attributes.
    let (l, v) = &prom.wait_for(r#"target_info{job="shop/checkout"}"#)[0];
    assert_eq!(*v, 1.0);
    assert_eq!(label(l, "host_name"), Some("node-7"));
    assert_eq!(label(l, "instance"), Some("pod-1"));

    // The delta counter was dropped, counted and never written.
    wait_until_async("delta points counted", Duration::from_secs(10), || {
        http_get(tel, "/metrics").is_some_and(|(_, b)| {
            metric(
                &b,
                "weir_prometheusremotewrite_dropped_points_total",
                &["reason=\"delta_temporality\""],
            ) == 1.0
        })
    })
    .await;
    assert!(prom.query("deltas_total").is_empty());
    assert!(weir.log().contains("delta temporality"), "{}", weir.log());
    let _ = mp.shutdown();
    weir.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_then_up_loses_nothing() {
    // weir retries while the backend is unreachable; once Prometheus is up everything arrives.
    let (grpc, tel) = (free_port(), free_port());
    let prom_port = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
exporters:
  prometheusremotewrite:
    endpoint: http://127.0.0.1:{prom_port}/api/v1/write
    retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms}}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{tel}
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [prometheusremotewrite]
"#
    );
    let weir = Weir::start(&yaml, grpc);
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");
    let t = now_nanos();
    let points: Vec<_> = (0..20)
        .map(
            |i| opentelemetry_proto::tonic::metrics::v1::NumberDataPoint {
                attributes: vec![s("shard", &i.to_string())],
                time_unix_nano: t,
                value: Some(
                    opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i),
                ),
                ..Default::default()
            },
        )
        .collect();
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![s("service.name", "late")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "jobs.done".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    client
        .export(req)
        .await
        .expect("accepted while the backend is down");
    wait_until_async("a failed attempt logged", Duration::from_secs(10), || {
        weir.log().contains("retrying in")
    })
    .await;

    // Now start Prometheus on the port weir is sending to.
    let prom = Prometheus::start_on(prom_port);
    let r = prom.wait_for("jobs_done_total");
    let got = prom.wait_for("count(jobs_done_total)");
    assert_eq!(got[0].1, 20.0, "{r:?}");
    assert_eq!(prom.wait_for("sum(jobs_done_total)")[0].1, 190.0);
    weir.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_user_ids_against_a_limit_of_100() {
    let prom = Prometheus::start();
    let (grpc, tel) = (free_port(), free_port());
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  cardinality_limiter:
    window: 10m
    action: overflow
    limits:
      - match: {{metric: "logins*"}}
        max_series: 100
exporters:
  prometheusremotewrite:
    endpoint: {url}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{tel}
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [cardinality_limiter]
      exporters: [prometheusremotewrite]
"#,
        url = prom.write_url()
    );
    let weir = Weir::start(&yaml, grpc);
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");
    let t = now_nanos();
    for chunk in 0..10 {
        let points: Vec<_> = (chunk * 1000..(chunk + 1) * 1000)
            .map(
                |i| opentelemetry_proto::tonic::metrics::v1::NumberDataPoint {
                    attributes: vec![s("user_id", &format!("user-{i}"))],
                    start_time_unix_nano: t - 60_000_000_000,
                    time_unix_nano: t,
                    value: Some(
                        opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(1),
                    ),
                    ..Default::default()
                },
            )
            .collect();
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![s("service.name", "auth")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "logins".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: points,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        client.export(req).await.expect("export");
    }
    // The last overflow value written is the total over all folded series.
    let mut series = Vec::new();
    wait_until_async(
        "the overflow series to carry 9,900",
        Duration::from_secs(30),
        || {
            series = prom.query("logins_total");
            series
                .iter()
                .any(|(l, v)| label(l, "otel_metric_overflow") == Some("true") && *v == 9900.0)
        },
    )
    .await;
    let overflow: Vec<_> = series
        .iter()
        .filter(|(l, _)| label(l, "otel_metric_overflow") == Some("true"))
        .collect();
    assert_eq!(
        overflow.len(),
        1,
        "{overflow:?} of {} series: {:?}\n{}",
        series.len(),
        prom.query("count by (__name__) ({__name__=~\".+\"})"),
        weir.log()
    );
    assert_eq!(
        overflow[0].1,
        9900.0,
        "the overflow series carries the rest\n{}",
        weir.log()
    );
    assert_eq!(
        series.len(),
        101,
        "100 admitted series plus the overflow series"
    );
    assert_eq!(series.iter().map(|(_, v)| v).sum::<f64>(), 10_000.0);
    let (_, body) = http_get(tel, "/metrics").expect("metrics");
    assert_eq!(
        metric(
            &body,
            "weir_cardinality_active_series",
            &["metric=\"logins\""]
        ),
        100.0
    );
    assert_eq!(
        metric(
            &body,
            "weir_cardinality_limited_points_total",
            &["action=\"overflow\""]
        ),
        9900.0
    );
    assert!(
        weir.log().contains("reached its cardinality limit"),
        "{}",
        weir.log()
    );
    weir.stop();
}
