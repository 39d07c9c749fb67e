//! `attributes` and `resource` through the real binary: the OpenTelemetry SDK sends spans;
//! the sink sees the hashed, inserted and deleted attributes, and the resource changes.
mod common;

use std::time::Duration;

use common::sink::Sink;
use common::{free_port, wait_until_async, Weir};
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_and_resource_attributes_are_edited_in_flight() {
    let sink = Sink::start().await;
    let grpc = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  attributes/scrub:
    include:
      match_type: strict
      services: [checkout]
    actions:
      - {{key: user.email, action: hash}}
      - {{key: password, action: delete}}
      - {{key: env, value: prod, action: insert}}
  resource:
    attributes:
      - {{key: deployment.environment, value: "${{env:WEIR_TEST_ENV:-staging}}", action: upsert}}
      - {{key: host.name, action: delete}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{port}
    tls: {{insecure: true}}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [resource, attributes/scrub]
      exporters: [otlp]
"#,
        port = sink.grpc_port
    );
    let weir = Weir::start(&yaml, grpc);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .build()
        .expect("exporter");
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("checkout")
        .with_attribute(KeyValue::new("host.name", "node-1"))
        .build();
    let tp = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build();
    let tracer = tp.tracer("attrs");
    for n in 0..10 {
        tracer
            .span_builder(format!("login-{n}"))
            .with_attributes(vec![
                KeyValue::new("user.email", "jane@example.com"),
                KeyValue::new("password", "hunter2"),
                KeyValue::new("env", "dev"),
            ])
            .start(&tracer);
    }
    tp.force_flush().expect("flush");
    wait_until_async("10 spans at the sink", Duration::from_secs(15), || {
        sink.state.spans() >= 10
    })
    .await;
    assert_eq!(sink.state.spans(), 10);
    for attrs in sink.state.span_attrs.lock().unwrap().iter() {
        // sha256("jane@example.com") in hex, as the Collector writes it.
        let want: String = {
            use sha2::Digest;
            sha2::Sha256::digest(b"jane@example.com")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let hashed = attrs.get("user.email").expect("hashed email");
        assert_eq!(hashed, &want, "{attrs:?}");
        assert!(hashed.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!attrs.contains_key("password"), "{attrs:?}");
        assert_eq!(
            attrs.get("env").map(String::as_str),
            Some("dev"),
            "insert keeps the existing value"
        );
    }
    for res in sink.state.resource_attrs.lock().unwrap().iter() {
        assert_eq!(
            res.get("deployment.environment").map(String::as_str),
            Some("staging")
        );
        assert!(!res.contains_key("host.name"), "{res:?}");
        assert_eq!(
            res.get("service.name").map(String::as_str),
            Some("checkout")
        );
    }
    let _ = tp.shutdown();
    weir.stop();
}
