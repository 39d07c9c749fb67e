//! End to end through the real binary: OpenTelemetry SDK clients (opentelemetry-otlp over
//! gRPC and HTTP) send traces, metrics and logs to weir, which fans them out to two
//! independent OTLP sinks (one over gRPC via `otlp`, one over HTTP via `otlphttp`).
//! Every item sent must arrive at both.
mod common;

use std::time::Duration;

use common::sink::Sink;
use common::{free_port, http_get, metric, wait_until_async, Weir};
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};

fn config(grpc: u16, http: u16, telemetry: u16, a: &Sink, b: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http:
        endpoint: 127.0.0.1:{http}
processors:
  batch:
    timeout: 50ms
exporters:
  otlp/a:
    endpoint: 127.0.0.1:{ag}
    tls:
      insecure: true
  otlphttp/b:
    endpoint: http://127.0.0.1:{bh}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{telemetry}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/a, otlphttp/b]
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/a, otlphttp/b]
    logs:
      receivers: [otlp]
      exporters: [otlp/a, otlphttp/b]
"#,
        ag = a.grpc_port,
        bh = b.http_port,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_traces_metrics_logs_over_grpc_and_http_reach_both_exporters() {
    let a = Sink::start().await;
    let b = Sink::start().await;
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let weir = Weir::start(&config(grpc, http, tel, &a, &b), grpc);

    // Traces: 300 spans over gRPC (gzip) and 200 over HTTP/protobuf.
    let grpc_exp = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .expect("grpc span exporter");
    let http_exp = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{http}/v1/traces"))
        .build()
        .expect("http span exporter");
    let tp_grpc = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(grpc_exp)
        .build();
    let tp_http = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(http_exp)
        .build();
    let t1 = tp_grpc.tracer("e2e-grpc");
    let t2 = tp_http.tracer("e2e-http");
    for i in 0..300 {
        t1.in_span(format!("grpc-span-{i}"), |_| {});
    }
    for i in 0..200 {
        t2.in_span(format!("http-span-{i}"), |_| {});
    }
    tp_grpc.force_flush().expect("flush grpc spans");
    tp_http.force_flush().expect("flush http spans");

    // Metrics: 5 counters with 4 attribute sets each = 20 data points, over gRPC.
    let mexp = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .build()
        .expect("metric exporter");
    let mp = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(mexp)
        .build();
    let meter = mp.meter("e2e");
    for c in 0..5 {
        let counter = meter.u64_counter(format!("requests_{c}")).build();
        for k in 0..4 {
            counter.add(k + 1, &[KeyValue::new("route", format!("/r{k}"))]);
        }
    }
    mp.force_flush().expect("flush metrics");

    // Logs: 150 records over HTTP.
    let lexp = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{http}/v1/logs"))
        .build()
        .expect("log exporter");
    let lp = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_batch_exporter(lexp)
        .build();
    let logger = lp.logger("e2e");
    for i in 0..150 {
        let mut rec = logger.create_log_record();
        rec.set_body(format!("log line {i}").into());
        rec.set_severity_text("INFO");
        logger.emit(rec);
    }
    lp.force_flush().expect("flush logs");

    for s in [&a, &b] {
        wait_until_async(
            "500 spans, 20 points, 150 logs at each sink",
            Duration::from_secs(20),
            || s.state.spans() >= 500 && s.state.points() >= 20 && s.state.logs() >= 150,
        )
        .await;
    }
    for (name, s) in [("otlp/a", &a), ("otlphttp/b", &b)] {
        assert_eq!(s.state.spans(), 500, "{name} spans");
        assert_eq!(s.state.points(), 20, "{name} data points");
        assert_eq!(s.state.logs(), 150, "{name} log records");
    }
    let names = a.state.span_names.lock().unwrap().clone();
    assert!(
        names.contains(&"grpc-span-0".to_string()) && names.contains(&"http-span-199".to_string())
    );
    // The HTTP sink got what otlphttp sends: gzip protobuf.
    let req = &b.state.requests()[0];
    assert_eq!(
        req.headers.get("content-encoding").map(String::as_str),
        Some("gzip")
    );
    assert_eq!(
        req.headers.get("content-type").map(String::as_str),
        Some("application/x-protobuf")
    );

    // Self-metrics with the Collector's names.
    // Sinks count a request before the exporter has its answer: wait for the counters.
    wait_until_async("exporter counters settle", Duration::from_secs(10), || {
        http_get(tel, "/metrics").is_some_and(|(_, t)| {
            metric(&t, "otelcol_exporter_sent_spans_total", &[]) == 1000.0
                && metric(&t, "otelcol_exporter_sent_log_records_total", &[]) == 300.0
        })
    })
    .await;
    let (status, text) = http_get(tel, "/metrics").expect("scrape /metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &text,
            "otelcol_receiver_accepted_spans_total",
            &["transport=\"grpc\""]
        ),
        300.0
    );
    assert_eq!(
        metric(
            &text,
            "otelcol_receiver_accepted_spans_total",
            &["transport=\"http\""]
        ),
        200.0
    );
    assert_eq!(
        metric(&text, "otelcol_receiver_accepted_metric_points_total", &[]),
        20.0
    );
    assert_eq!(
        metric(&text, "otelcol_receiver_accepted_log_records_total", &[]),
        150.0
    );
    assert_eq!(
        metric(
            &text,
            "otelcol_exporter_sent_spans_total",
            &["exporter=\"otlp/a\""]
        ),
        500.0
    );
    assert_eq!(
        metric(
            &text,
            "otelcol_exporter_sent_spans_total",
            &["exporter=\"otlphttp/b\""]
        ),
        500.0
    );
    assert_eq!(
        metric(&text, "otelcol_exporter_sent_log_records_total", &[]),
        300.0
    );
    assert_eq!(
        metric(&text, "otelcol_exporter_send_failed_spans_total", &[]),
        0.0
    );
    assert!(metric(&text, "otelcol_process_memory_rss", &[]) > 0.0);
    assert_eq!(
        metric(
            &text,
            "otelcol_exporter_queue_capacity",
            &["exporter=\"otlp/a\""]
        ),
        1000.0
    );

    let _ = tp_grpc.shutdown();
    let _ = tp_http.shutdown();
    let _ = mp.shutdown();
    let _ = lp.shutdown();
    let status = weir.stop();
    assert!(status.success(), "weir exit status {status}");
}
