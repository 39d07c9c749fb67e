//! `pipelines/redact-and-filter.yaml` through the real binary, fed by the OpenTelemetry Rust
//! SDK: health checks and debug logs are dropped, `user.email` is hashed (SHA-256, as the
//! Collector writes it), URL query strings and secrets in log bodies are redacted, attributes
//! named like secrets are removed, a metric is renamed and an internal one dropped — all
//! checked at an independent sink.
mod common;

use std::time::Duration;

use common::sink::Sink;
use common::{free_port, scratch_dir, wait_until_async, Weir};
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use sha2::{Digest, Sha256};

fn repo(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redact_and_filter_piece_redacts_and_drops_as_documented() {
    let sink = Sink::start().await;
    let grpc = free_port();
    // The base: a receiver and the sink as exporter; the piece adds the processors; the last
    // file points the piece's pipelines at the sink.
    let base = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  debug:
  otlp/sink:
    endpoint: 127.0.0.1:{}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
"#,
        sink.grpc_port
    );
    let over = scratch_dir().join("sink.yaml");
    std::fs::write(
        &over,
        "service:\n  pipelines:\n    traces: {exporters: [otlp/sink]}\n    metrics: {exporters: [otlp/sink]}\n    logs: {exporters: [otlp/sink]}\n",
    )
    .unwrap();
    let piece = repo("pipelines/redact-and-filter.yaml");
    let over = over.display().to_string();
    let weir = Weir::start_with(&base, grpc, &["--config", &piece, "--config", &over]);
    let endpoint = format!("http://127.0.0.1:{grpc}");

    let exp = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .build()
        .expect("span exporter");
    let tp = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exp)
        .build();
    let t = tp.tracer("redact-e2e");
    for i in 0..50 {
        let mut s = t.start(format!("GET /cart/{i}"));
        s.set_attribute(KeyValue::new("user.email", format!("user{i}@example.com")));
        s.set_attribute(KeyValue::new(
            "url.full",
            format!("https://shop.example/cart/{i}?session=s{i}&token=t{i}"),
        ));
        s.set_attribute(KeyValue::new("auth.token", "secret-value"));
        s.set_attribute(KeyValue::new("http.route", "/cart/{id}"));
        s.end();
    }
    for _ in 0..10 {
        let mut s = t.start("GET /health");
        s.set_attribute(KeyValue::new("http.route", "/health"));
        s.end();
    }
    for _ in 0..5 {
        t.in_span("GET /healthz", |_| {});
    }
    tp.force_flush().expect("flush");

    let lexp = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .build()
        .expect("log exporter");
    let lp = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_batch_exporter(lexp)
        .build();
    let logger = lp.logger("redact-e2e");
    for i in 0..20 {
        let mut rec = logger.create_log_record();
        rec.set_body(format!("login user{i} password=hunter{i} ok").into());
        rec.set_severity_number(Severity::Info);
        rec.add_attribute("user.email", format!("user{i}@example.com"));
        logger.emit(rec);
        let mut dbg = logger.create_log_record();
        dbg.set_body(format!("debug {i}").into());
        dbg.set_severity_number(Severity::Debug);
        logger.emit(dbg);
    }
    lp.force_flush().expect("flush logs");

    let mexp = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .build()
        .expect("metric exporter");
    let mp = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(mexp)
        .build();
    let meter = mp.meter("redact-e2e");
    meter
        .f64_histogram("http_server_duration")
        .build()
        .record(0.2, &[]);
    meter.u64_counter("internal.gc_runs").build().add(3, &[]);
    mp.force_flush().expect("flush metrics");

    wait_until_async("the kept data at the sink", Duration::from_secs(20), || {
        sink.state.spans() >= 50 && sink.state.logs() >= 20 && sink.state.points() >= 1
    })
    .await;
    assert_eq!(sink.state.spans(), 50, "health checks dropped");
    let attrs = sink.state.span_attrs.lock().unwrap().clone();
    let sha = |s: &str| {
        Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    for a in &attrs {
        let url = &a["url.full"];
        assert!(
            url.ends_with("?redacted") && !url.contains("token"),
            "{url}"
        );
        assert!(!a.contains_key("auth.token"), "{a:?}");
        let email = &a["user.email"];
        assert_eq!(email.len(), 64, "{email}");
    }
    assert!(attrs
        .iter()
        .any(|a| a["user.email"] == sha("user7@example.com")));
    assert_eq!(sink.state.logs(), 20, "debug logs dropped");
    let bodies = sink.state.log_bodies.lock().unwrap().clone();
    assert!(
        bodies
            .iter()
            .all(|b| b.contains("password=***") && !b.contains("hunter")),
        "{bodies:?}"
    );
    let names = sink.state.metric_names.lock().unwrap().clone();
    assert_eq!(
        names,
        ["http.server.request.duration"],
        "renamed; internal dropped"
    );
    assert!(weir.stop().success());
}
