//! The end-to-end harness in its short mode: weir-loadgen sends through the real weir to the
//! loadgen sink for about a second per path, and everything sent is received. Correctness
//! only: the figures come from `benches/e2e.sh`, never from a timed assertion.
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_until, Weir};

fn loadgen() -> &'static str {
    env!("CARGO_BIN_EXE_weir-loadgen")
}

/// The sink process; killed on drop if the test did not collect it.
struct SinkProc(Option<std::process::Child>);

impl Drop for SinkProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_sink(port: u16) -> SinkProc {
    let child = Command::new(loadgen())
        .args([
            "sink",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--idle",
            "1s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sink");
    wait_until("the sink to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    SinkProc(Some(child))
}

fn json(out: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(out);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {text}"))
}

fn finish(mut sink: SinkProc) -> serde_json::Value {
    // The sink stops on its own one idle second after the last request.
    let child = sink.0.take().expect("sink running");
    let out = child.wait_with_output().expect("sink output");
    json(&out.stdout)
}

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(loadgen())
        .args(args)
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out.stdout)
}

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
