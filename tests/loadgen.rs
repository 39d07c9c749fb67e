//! The end-to-end harness in its short mode: weir-loadgen sends through the real weir to the
//! loadgen sink for about a second per path, and everything sent is received. Correctness
//! only: the figures come from `benches/e2e.sh`, never from a timed assertion.
mod common;

use common::loadgen::{finish, run, start_sink};
use common::{free_port, Weir};

#[test]
fn sent_equals_received_through_weir() {
    let (grpc, http, sink_port) = (free_port(), free_port(), free_port());
    let sink = start_sink(sink_port);
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink_port}
    tls: {{insecure: true}}
    compression: none
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
    metrics: {{receivers: [otlp], exporters: [otlp]}}
    logs: {{receivers: [otlp], exporters: [otlp]}}
"#
    );
    let weir = Weir::start(&yaml, grpc);
    let t = run(&[
        "send",
        "--endpoint",
        &format!("127.0.0.1:{grpc}"),
        "--duration",
        "1s",
        "--conns",
        "2",
        "--batch",
        "256",
    ]);
    let tl = run(&[
        "send",
        "--endpoint",
        &format!("127.0.0.1:{grpc}"),
        "--duration",
        "500ms",
        "--conns",
        "1",
        "--batch",
        "64",
        "--shape",
        "large",
    ]);
    let m = run(&[
        "send",
        "--endpoint",
        &format!("127.0.0.1:{http}"),
        "--protocol",
        "http",
        "--signal",
        "metrics",
        "--duration",
        "500ms",
        "--batch",
        "100",
        "--gzip",
    ]);
    let l = run(&[
        "send",
        "--endpoint",
        &format!("127.0.0.1:{grpc}"),
        "--signal",
        "logs",
        "--duration",
        "500ms",
        "--batch",
        "100",
        "--rate",
        "20000",
    ]);
    // zstd, over gRPC and HTTP (what the Collector also accepts).
    let zg = run(&[
        "send",
        "--endpoint",
        &format!("127.0.0.1:{grpc}"),
        "--signal",
        "logs",
        "--duration",
        "300ms",
        "--batch",
        "50",
        "--zstd",
    ]);
    let zh = run(&[
        "send",
        "--endpoint",
        &format!("127.0.0.1:{http}"),
        "--protocol",
        "http",
        "--signal",
        "logs",
        "--duration",
        "300ms",
        "--batch",
        "50",
        "--zstd",
    ]);
    for r in [&t, &tl, &m, &l, &zg, &zh] {
        assert_eq!(r["failed"], serde_json::json!({}), "{r}");
        assert!(r["sent_items"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(r["p99_ms"].as_f64().is_some(), "{r}");
    }
    assert!(
        tl["bytes_per_item"].as_f64().unwrap_or(0.0) > 500.0,
        "large spans: {tl}"
    );
    let s = finish(sink);
    let sent = |v: &serde_json::Value| v["sent_items"].as_u64().unwrap_or(0);
    assert_eq!(
        s["traces"].as_u64(),
        Some(sent(&t) + sent(&tl)),
        "traces: sent {t} {tl}, received {s}"
    );
    assert_eq!(
        s["metrics"].as_u64(),
        Some(sent(&m)),
        "metrics: sent {m}, received {s}"
    );
    assert_eq!(
        s["logs"].as_u64(),
        Some(sent(&l) + sent(&zg) + sent(&zh)),
        "logs: sent {l} {zg} {zh}, received {s}"
    );
    weir.stop();
}
