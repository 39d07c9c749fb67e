//! The HTTP receiver does not let a slow or silent client hold a connection: headers at a byte
//! a second, a body that stops half-way, a connection that says nothing.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::sink::Sink;
use common::{free_port, Weir};

fn config(http: u16, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: "127.0.0.1:{http}"
        read_header_timeout: 1s
        read_timeout: 1s
        idle_timeout: 2s
exporters:
  otlp:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    )
}

/// Reads until the peer closes (Ok with what it said) or `deadline` passes (Err).
fn read_until_closed(s: &mut TcpStream, deadline: Duration) -> Result<String, String> {
    read_bytes_until_closed(s, deadline).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// [`read_until_closed`], the raw bytes.
fn read_bytes_until_closed(s: &mut TcpStream, deadline: Duration) -> Result<Vec<u8>, String> {
    let until = Instant::now() + deadline;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset by the peer: closed too.
            Err(_) => return Ok(got),
        }
        if Instant::now() > until {
            return Err(format!(
                "still open after {deadline:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off() {
    let sink = Sink::start().await;
    let http = free_port();
    let weir = Weir::start(&config(http, &sink), http);
    let addr = ("127.0.0.1", http);

    let results = tokio::task::spawn_blocking(move || {
        // Headers at a byte every 200 ms: closed by read_header_timeout (1 s), long before
        // the 60 header bytes would have arrived.
        let mut slow = TcpStream::connect(addr).expect("connect");
        let started = Instant::now();
        let head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n";
        let mut closed_at = None;
        for b in head.iter() {
            if slow.write_all(&[*b]).is_err() {
                closed_at = Some(started.elapsed());
                break;
            }
            // Wait up to 200 ms for the server to close the connection; a read that times
            // out means it is still open, and the next byte goes.
            let mut probe = [0u8; 1];
            slow.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let r = slow.read(&mut probe);
            let still_open = matches!(&r, Err(e) if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ));
            if !still_open {
                closed_at = Some(started.elapsed());
                break;
            }
        }
        let slow_headers = closed_at;

        // A body that stops after 3 of 1000 bytes: 408 after read_timeout (1 s).
        let mut stalled = TcpStream::connect(addr).expect("connect");
        stalled
            .write_all(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\nabc",
            )
            .expect("write");
        let stalled_answer = read_until_closed(&mut stalled, Duration::from_secs(10));

        // A connection that says nothing: closed after idle_timeout (2 s).
        let mut idle = TcpStream::connect(addr).expect("connect");
        let t = Instant::now();
        let idle_result = read_until_closed(&mut idle, Duration::from_secs(10)).map(|_| t.elapsed());
        (slow_headers, stalled_answer, idle_result)
    })
    .await
    .expect("client thread");

    let (slow_headers, stalled_answer, idle_result) = results;
    let closed = slow_headers.expect("the slow-header connection was never closed");
    assert!(
        closed < Duration::from_secs(8),
        "slow headers closed only after {closed:?}"
    );
    let answer = stalled_answer.expect("stalled body");
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "stalled body answered {answer:?}"
    );
    let idle_for = idle_result.expect("idle connection");
    assert!(
        idle_for >= Duration::from_millis(1500) && idle_for < Duration::from_secs(8),
        "idle connection closed after {idle_for:?}"
    );
    // And an ordinary client is served as before.
    let st = reqwest_like_post(http).await;
    assert_eq!(st, 200);
    assert!(weir.stop().success());
}

/// One empty OTLP/HTTP request; its status code.
async fn reqwest_like_post(port: u16) -> u16 {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .expect("request");
    client.request(req).await.expect("post").status().as_u16()
}

#[test]
fn keepalive_disabled_closes_after_each_request() {
    let http = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: "127.0.0.1:{http}"
        keepalive: {{enabled: false}}
exporters:
  debug: {{}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
    );
    let weir = Weir::start(&yaml, http);
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    // An empty OTLP request on a connection the client would keep open.
    s.write_all(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
    )
    .expect("write");
    let answer = read_until_closed(&mut s, Duration::from_secs(10)).expect("closed by weir");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(weir.stop().success());
}

#[test]
fn grpc_connections_are_aged_out_with_goaway() {
    let grpc = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "127.0.0.1:{grpc}"
        max_concurrent_streams: 16
        keepalive:
          server_parameters: {{max_connection_age: 500ms, max_connection_age_grace: 500ms, time: 1h, timeout: 5s}}
exporters:
  debug: {{}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
    );
    let weir = Weir::start(&yaml, grpc);
    let mut s = TcpStream::connect(("127.0.0.1", grpc)).expect("connect");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .expect("preface");
    // The server must close the connection within the age and its grace.
    let got = read_bytes_until_closed(&mut s, Duration::from_secs(10))
        .expect("the connection was never aged out");
    // Walk the frames: SETTINGS first, then a GOAWAY (type 7).
    let mut types = Vec::new();
    let mut i = 0;
    while i + 9 <= got.len() {
        let len =
            (usize::from(got[i]) << 16) | (usize::from(got[i + 1]) << 8) | usize::from(got[i + 2]);
        types.push(got[i + 3]);
        i += 9 + len;
    }
    assert_eq!(types.first(), Some(&4), "frames {types:?}");
    assert!(types.contains(&7), "a GOAWAY among {types:?}");
    // SETTINGS carries max_concurrent_streams = 16 (id 3).
    let settings_len = (usize::from(got[1]) << 8) | usize::from(got[2]);
    let settings = &got[9..9 + settings_len];
    assert!(
        settings.chunks(6).any(|c| c == [0, 3, 0, 0, 0, 16]),
        "SETTINGS {settings:02x?}"
    );
    assert!(weir.stop().success());
}
