//! Compression on the wire, through the real binary: gRPC `snappy` both ways (weir → weir →
//! sink), every `grpc-encoding` the receiver takes, and the exact errors for compressed
//! requests that are broken, lie about their size or use an encoding weir does not have.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::sink::Sink;
use common::{free_port, wait_until_async, Weir};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

fn spans(n: usize, tag: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![tag; 16],
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: format!("compressed-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One unary gRPC call with a hand-made frame: (grpc-status, grpc-message).
async fn call(
    channel: &tonic::transport::Channel,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (String, String) {
    call_chunks(channel, encoding, vec![body]).await
}

async fn call_chunks(
    channel: &tonic::transport::Channel,
    encoding: Option<&str>,
    chunks: Vec<Vec<u8>>,
) -> (String, String) {
    let mut b = http::Request::post(PATH)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        b = b.header("grpc-encoding", e);
    }
    let req = b
        .body(tonic::body::Body::new(weir::exporters::otlp::Chunks(
            chunks.into_iter().map(Bytes::from).collect(),
        )))
        .expect("request");
    let mut ch = channel.clone();
    std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut ch, cx))
        .await
        .expect("ready");
    let resp = tower_service::Service::call(&mut ch, req)
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let get = |k: &str| {
        trailers
            .get(k)
            .or_else(|| parts.headers.get(k))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let message = percent_decode(&get("grpc-message"));
    (get("grpc-status"), message)
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// weir receiving OTLP/gRPC on `port` and forwarding traces to `to` with `compression`.
fn forwarder(port: u16, to: u16, compression: &str, max_mib: u32) -> Weir {
    Weir::start(
        &format!(
            r#"
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}", max_recv_msg_size_mib: {max_mib}}}}}}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{to}", tls: {{insecure: true}}, compression: {compression}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [otlp]}}}}
"#
        ),
        port,
    )
}

fn frame(flag: u8, msg: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f
}

/// gRPC snappy (the framing format) from weir's otlp exporter into weir's receiver, and
/// every encoding a client may send: all arrive, counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snappy_over_grpc_from_exporter_to_receiver_and_every_encoding_in() {
    let sink = Sink::start().await;
    let (a, b) = (free_port(), free_port());
    // weir B: receives (any encoding), forwards uncompressed to the sink; weir A forwards
    // to B with snappy.
    let weir_b = forwarder(b, sink.grpc_port, "none", 4);
    let weir_a = forwarder(a, b, "snappy", 4);
    let chan_a = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{a}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect A");
    let chan_b = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{b}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect B");
    let msg = spans(40, 1).encode_to_vec();
    // Into A uncompressed; A → B snappy.
    assert_eq!(call(&chan_a, None, frame(0, &msg)).await.0, "0");
    // Straight into B with each encoding (and "identity" with the flag clear).
    let gz = weir::compression::gzip(&msg);
    let zs = weir::compression::zstd(&msg);
    let sn = weir::compression::snappy_framed(&msg);
    for (enc, body) in [
        ("gzip", frame(1, &gz)),
        ("zstd", frame(1, &zs)),
        ("snappy", frame(1, &sn)),
        ("identity", frame(0, &msg)),
        ("gzip", frame(0, &msg)),
    ] {
        assert_eq!(
            call(&chan_b, Some(enc), body).await,
            ("0".into(), "".into()),
            "{enc}"
        );
    }
    // The same request split over several DATA frames is one message.
    let whole = frame(1, &sn);
    let split: Vec<Vec<u8>> = [&whole[..3], &whole[3..9], &whole[9..]]
        .iter()
        .map(|c| c.to_vec())
        .collect();
    assert_eq!(call_chunks(&chan_b, Some("snappy"), split).await.0, "0");
    wait_until_async("7 × 40 spans at the sink", Duration::from_secs(15), || {
        sink.state.spans() >= 7 * 40
    })
    .await;
    assert_eq!(sink.state.spans(), 7 * 40);
    drop(weir_a);
    drop(weir_b);
}

/// Broken, lying and unknown compression: the exact status and message a client sees, and
/// weir keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_compressed_requests_get_exact_errors() {
    let sink = Sink::start().await;
    let port = free_port();
    let weir = forwarder(port, sink.grpc_port, "none", 1);
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let msg = spans(10, 2).encode_to_vec();
    let limit = 1 << 20;

    // An encoding weir does not have: UNIMPLEMENTED (12), as grpc-go and tonic answer.
    assert_eq!(
        call(&ch, Some("br"), frame(1, &msg)).await,
        (
            "12".into(),
            "Content is compressed with `br` which isn't supported".into()
        )
    );
    // The compressed flag with no encoding: INTERNAL (13), as the gRPC spec requires.
    assert_eq!(
        call(&ch, None, frame(1, &msg)).await,
        (
            "13".into(),
            "protocol error: received message with compressed-flag but no grpc-encoding was specified".into()
        )
    );
    // A flag that is neither 0 nor 1.
    let (code, m) = call(&ch, None, frame(7, &msg)).await;
    assert_eq!(code, "13");
    assert!(m.contains("invalid compression flag: 7"), "{m}");
    // Garbage under each encoding.
    for (enc, what) in [
        ("gzip", "invalid gzip data"),
        ("zstd", "invalid zstd data"),
        ("snappy", "invalid snappy data"),
    ] {
        let (code, m) = call(&ch, Some(enc), frame(1, b"definitely not compressed")).await;
        assert_eq!(code, "13", "{enc}: {m}");
        assert!(
            m.starts_with(&format!("Error decompressing: {what}")),
            "{enc}: {m}"
        );
    }
    // Bombs: small bodies that inflate past the 1 MiB limit: RESOURCE_EXHAUSTED (8).
    let bomb = vec![0u8; limit + 1];
    for (enc, body) in [
        ("gzip", weir::compression::gzip(&bomb)),
        ("zstd", weir::compression::zstd(&bomb)),
        ("snappy", weir::compression::snappy_framed(&bomb)),
    ] {
        assert!(body.len() < 100_000, "{enc} bomb is small: {}", body.len());
        assert_eq!(
            call(&ch, Some(enc), frame(1, &body)).await,
            (
                "8".into(),
                format!("Error decompressing: size limit, of {limit} bytes, exceeded while decompressing message")
            ),
            "{enc}"
        );
    }
    // A gzip trailer that claims 1 GiB for a small body: not trusted, the body is read.
    let mut liar = weir::compression::gzip(&msg);
    let n = liar.len();
    liar[n - 4..].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let (code, m) = call(&ch, Some("gzip"), frame(1, &liar)).await;
    assert_eq!(code, "13", "{m}");
    // A frame header that claims more than the limit.
    let mut big = vec![0u8];
    big.extend_from_slice(&((limit as u32) + 1).to_be_bytes());
    big.extend_from_slice(&[0; 16]);
    assert_eq!(
        call(&ch, None, big).await,
        (
            "8".into(),
            format!("Error, decoded message length too large: found {} bytes, the limit is: {limit} bytes", limit + 1)
        )
    );
    // A frame cut short, and no frame at all.
    let mut short = frame(0, &msg);
    short.truncate(20);
    let (code, m) = call(&ch, None, short).await;
    assert_eq!(code, "13");
    assert!(m.contains("ended 15 bytes into a message of"), "{m}");
    assert_eq!(
        call(&ch, None, Vec::new()).await,
        ("13".into(), "Missing request message.".into())
    );
    assert_eq!(call(&ch, None, vec![0, 0]).await.0, "13");

    // Still serving, and only the good request arrived.
    assert_eq!(
        call(
            &ch,
            Some("snappy"),
            frame(1, &weir::compression::snappy_framed(&msg))
        )
        .await
        .0,
        "0"
    );
    wait_until_async("10 spans", Duration::from_secs(10), || {
        sink.state.spans() >= 10
    })
    .await;
    assert_eq!(sink.state.spans(), 10);
    drop(weir);
}
