//! A gRPC client that stops half-way through a request body: the bytes it sent count against
//! the memory budget while they wait (so stalled clients cannot hold more than the budget:
//! past it, requests are refused retryably mid-body), and the stream is given up at the
//! client's deadline (grpc-timeout; 60 s at most), giving the bytes back.
mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{free_port, http_get, metric, wait_until_async, Weir};
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A request body fed by the test, one chunk at a time; it never ends while the sender lives.
struct Chan(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Chan {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

const MIB: usize = 1 << 20;

/// Starts a unary Export that declares `declared` bytes, sends `sent` of them and stalls.
/// Returns the sender (keep it alive to keep stalling) and the response's grpc-status.
async fn stalled_export(
    port: u16,
    declared: usize,
    sent: usize,
    timeout: &str,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<Option<String>>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let req = http::Request::post(format!(
        "http://127.0.0.1:{port}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", timeout)
    .body(Chan(rx))
    .expect("request");
    let answer = tokio::spawn(async move {
        use http_body_util::BodyExt;
        let resp = client.send_request(req).await.ok()?;
        if let Some(s) = resp.headers().get("grpc-status") {
            return s.to_str().ok().map(str::to_owned);
        }
        let body = resp.into_body().collect().await.ok()?;
        body.trailers()?
            .get("grpc-status")?
            .to_str()
            .ok()
            .map(str::to_owned)
    });
    let mut head = vec![0u8];
    head.extend_from_slice(&(declared as u32).to_be_bytes());
    tx.send(Bytes::from(head)).await.expect("send header");
    let chunk = Bytes::from(vec![0x0a; 64 * 1024]);
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        tx.send(chunk.slice(..n)).await.expect("send chunk");
        left -= n;
    }
    (tx, answer)
}

fn used(tel: u16) -> f64 {
    http_get(tel, "/metrics")
        .map(|(_, body)| metric(&body, "weir_memory_budget_used_bytes", &[]))
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_count_against_the_budget_and_are_given_up_at_the_deadline() {
    let (grpc, tel) = (free_port(), free_port());
    // memory_limiter: soft limit 32 MiB, so the memory budget is 16 MiB.
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", max_recv_msg_size_mib: 8}}
processors:
  memory_limiter: {{check_interval: 1s, limit_mib: 4000, spike_limit_mib: 3968}}
exporters:
  debug: {{verbosity: basic}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [memory_limiter], exporters: [debug]}}
"#
    );
    let weir = Weir::start(&yaml, grpc);
    wait_until_async("telemetry up", Duration::from_secs(10), || used(tel) >= 0.0).await;
    assert_eq!(used(tel), 0.0);
    let limit = http_get(tel, "/metrics")
        .map(|(_, b)| metric(&b, "weir_memory_budget_limit_bytes", &[]))
        .unwrap_or(0.0);
    assert_eq!(limit, (16 * MIB) as f64, "the test expects a 16 MiB budget");

    // Two clients stall 6 MiB into 7 MiB messages: 12 MiB held, and counted.
    let (a_tx, a) = stalled_export(grpc, 7 * MIB, 6 * MIB, "3S").await;
    let (b_tx, b) = stalled_export(grpc, 7 * MIB, 6 * MIB, "3S").await;
    wait_until_async(
        "12 MiB of stalled bodies charged",
        Duration::from_secs(10),
        || used(tel) >= (12 * MIB) as f64,
    )
    .await;
    // A third would pass the budget: refused, retryably (UNAVAILABLE), its bytes read and
    // dropped (not held) until it ends or its deadline passes.
    let (c_tx, c) = stalled_export(grpc, 7 * MIB, 6 * MIB, "3S").await;
    assert!(used(tel) <= (16 * MIB) as f64, "never past the budget");
    let c = tokio::time::timeout(Duration::from_secs(10), c)
        .await
        .expect("the third is answered by its deadline")
        .expect("join");
    assert_eq!(c.as_deref(), Some("14"), "UNAVAILABLE");
    assert!(used(tel) <= (16 * MIB) as f64, "never past the budget");
    // At their deadline the stalled ones are given up (DEADLINE_EXCEEDED) and their bytes
    // given back.
    for s in [a, b] {
        let st = tokio::time::timeout(Duration::from_secs(10), s)
            .await
            .expect("answered at the deadline")
            .expect("join");
        assert_eq!(st.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    }
    wait_until_async("the budget given back", Duration::from_secs(10), || {
        used(tel) == 0.0
    })
    .await;
    drop((a_tx, b_tx, c_tx));
    let log = weir.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(weir.stop().success());
}
