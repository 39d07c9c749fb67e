//! The `prometheus` exporter scraped by a real Prometheus: the OpenTelemetry Rust SDK's
//! metrics and the `spanmetrics` connector's RED metrics (the setup of Jaeger's monitor tab)
//! are served on weir's endpoint; Prometheus scrapes them (negotiating OpenMetrics, so
//! exemplars come along) and answers queries with the values sent. A reload that changes the
//! exporter's labels keeps serving on the same port.
mod common;

use std::time::Duration;

use common::prometheus::Prometheus;
use common::{free_port, http_get, wait_until_async, Weir};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as PKeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

fn config(grpc: u16, prom_port: u16, gateway: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
connectors:
  spanmetrics:
    exemplars: {{enabled: true}}
    metrics_flush_interval: 200ms
exporters:
  prometheus:
    endpoint: 127.0.0.1:{prom_port}
    const_labels: {{gateway: {gateway}}}
    enable_open_metrics: true
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [spanmetrics]}}
    metrics: {{receivers: [otlp], exporters: [prometheus]}}
    metrics/red: {{receivers: [spanmetrics], exporters: [prometheus]}}
"#
    )
}

fn spans(n: usize, every_error: usize) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![PKeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("frontend".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: "GET /".into(),
                        kind: 2,
                        start_time_unix_nano: now - 30_000_000,
                        end_time_unix_nano: now,
                        status: Some(Status {
                            code: if i % every_error == 0 { 2 } else { 0 },
                            message: String::new(),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

fn sum(prom: &Prometheus, q: &str) -> f64 {
    prom.query(q).iter().map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_sdk_metrics_and_red_metrics_with_exemplars() {
    let (grpc, port) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, port, "weir-1"), grpc);
    let prom = Prometheus::start_scraping(&format!("127.0.0.1:{port}"));

    // The SDK's metrics.
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .build()
        .expect("metric exporter");
    let mp = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("checkout")
                .build(),
        )
        .with_periodic_exporter(exporter)
        .build();
    let meter = mp.meter("io.weir.prometheus-test");
    let counter = meter.u64_counter("http.requests").build();
    counter.add(5, &[KeyValue::new("http.method", "GET")]);
    counter.add(2, &[KeyValue::new("http.method", "POST")]);
    let hist = meter
        .f64_histogram("http.server.duration")
        .with_unit("s")
        .with_boundaries(vec![0.1, 0.5, 1.0])
        .build();
    for v in [0.05, 0.2, 0.3, 2.0] {
        hist.record(v, &[]);
    }
    mp.force_flush().expect("flush metrics");

    // 20 spans, 5 failing: the RED metrics.
    let mut traces = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");
    traces.export(spans(20, 4)).await.expect("export spans");

    let get = "http_requests_total{http_method=\"GET\",gateway=\"weir-1\",job=\"weir\"}";
    wait_until_async("the counter scraped", Duration::from_secs(30), || {
        sum(&prom, get) == 5.0
    })
    .await;
    assert_eq!(sum(&prom, "http_requests_total{http_method=\"POST\"}"), 2.0);
    assert_eq!(
        sum(&prom, "http_server_duration_seconds_bucket{le=\"0.5\"}"),
        3.0
    );
    assert_eq!(sum(&prom, "http_server_duration_seconds_count"), 4.0);
    let calls = "sum(traces_span_metrics_calls_total{service_name=\"frontend\"})";
    wait_until_async("the RED metrics scraped", Duration::from_secs(30), || {
        sum(&prom, calls) == 20.0
    })
    .await;
    assert_eq!(
        sum(
            &prom,
            "sum(traces_span_metrics_calls_total{status_code=\"STATUS_CODE_ERROR\"})"
        ),
        5.0
    );
    assert_eq!(sum(&prom, "up{job=\"weir\"}"), 1.0);
    // OpenMetrics carried the exemplars.
    let mut ex = Vec::new();
    wait_until_async("exemplars", Duration::from_secs(30), || {
        ex = prom.exemplars("traces_span_metrics_duration_milliseconds_bucket");
        !ex.is_empty()
    })
    .await;
    for (_, labels, _) in &ex {
        assert_eq!(
            labels["trace_id"].as_str().map(str::len),
            Some(32),
            "{labels}"
        );
    }
    // Anything but /metrics is not found.
    assert_eq!(http_get(port, "/other").map(|(s, _)| s), Some(404));

    // A reload that changes the labels serves on the same port, the RED metrics again.
    weir.rewrite_config(&config(grpc, port, "weir-2"));
    weir.signal("HUP");
    let relabelled = "sum(traces_span_metrics_calls_total{gateway=\"weir-2\"})";
    wait_until_async("the new labels scraped", Duration::from_secs(30), || {
        sum(&prom, relabelled) == 20.0
    })
    .await;
    assert!(weir.stop().success());
}

#[test]
fn an_endpoint_taken_by_a_receiver_or_missing_is_a_config_error() {
    let dir = common::scratch_dir();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "receivers:\n  otlp:\n    protocols:\n      grpc: {endpoint: \"127.0.0.1:4317\"}\nexporters:\n  prometheus:\n    endpoint: 127.0.0.1:4317\n  prometheus/2:\n    namespace: x\nservice:\n  pipelines:\n    metrics: {receivers: [otlp], exporters: [prometheus, prometheus/2]}\n",
    )
    .expect("write");
    let (ok, out) = common::validate(std::slice::from_ref(&path));
    assert!(!ok, "{out}");
    for want in [
        "bad.yaml:7: exporters.prometheus.endpoint: endpoint \"127.0.0.1:4317\" uses the same port as receivers.otlp.protocols.grpc.endpoint",
        "exporters.prometheus/2.endpoint: is required: where to serve /metrics, e.g. 0.0.0.0:8889",
    ] {
        assert!(out.contains(want), "{want}\nnot in:\n{out}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
