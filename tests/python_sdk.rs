//! The OpenTelemetry Python SDK (opentelemetry-sdk + the OTLP/HTTP exporter from PyPI)
//! sends traces, metrics and logs through weir to the sink. `.ci/run` installs the packages;
//! without them this test fails loudly rather than skipping.
mod common;

use std::process::Command;
use std::time::Duration;

use common::sink::Sink;
use common::{free_port, wait_until_async, Weir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_http_arrives_in_full() {
    let check = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
        ])
        .status();
    assert!(
        matches!(check, Ok(s) if s.success()),
        "python3 with opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http is required: \
         pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
    );
    let sink = Sink::start().await;
    let http = free_port();
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{timeout: 20ms}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
    metrics: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
    logs: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    );
    let weir = Weir::start(&cfg, http);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/send_otlp.py");
    let endpoint = format!("http://127.0.0.1:{http}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &endpoint, "120", "40"])
            .output()
            .expect("run python client")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent spans=120 points=3 logs=40"
    );
    wait_until_async(
        "120 spans, 3 points, 40 logs",
        Duration::from_secs(15),
        || sink.state.spans() >= 120 && sink.state.points() >= 3 && sink.state.logs() >= 40,
    )
    .await;
    assert_eq!(
        (sink.state.spans(), sink.state.points(), sink.state.logs()),
        (120, 3, 40)
    );
    let res = sink.state.resource_attrs.lock().unwrap().clone();
    assert!(res
        .iter()
        .any(|a| a.get("service.name").map(String::as_str) == Some("python-client")));
    assert!(weir.stop().success());
}
