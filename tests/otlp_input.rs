//! The OTLP receiver against raw requests: OTLP/JSON, gzip, and every kind of bad input,
//! with the exact status and message a client sees.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::sink::Sink;
use common::{free_port, wait_until_async, Weir};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn config(grpc: u16, http: u16, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
        max_recv_msg_size_mib: 1
      http:
        endpoint: 127.0.0.1:{http}
        max_request_body_size: 1048576
exporters:
  otlp:
    endpoint: 127.0.0.1:{port}
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
    logs:
      receivers: [otlp]
      exporters: [otlp]
"#,
        port = sink.grpc_port
    )
}

fn spans(n: usize, name_len: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: "x".repeat(name_len),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    port: u16,
}

impl Http {
    fn new(port: u16) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            port,
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .client
            .request(b.body(Full::new(body.into())).unwrap())
            .await
            .expect("http request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn rpc_message(body: &[u8]) -> String {
    weir::grpc::RpcStatus::decode(body)
        .map(|s| s.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).to_string())
}

const OTLP_JSON: &str = r#"{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
    "scopeSpans": [{
      "scope": {"name": "manual"},
      "spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
         "name": "json-span-1", "kind": 2, "startTimeUnixNano": "1544712660000000000",
         "endTimeUnixNano": "1544712661000000000",
         "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}}],
         "status": {"code": 2, "message": "boom"}},
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
         "parentSpanId": "eee19b7ec3c1b174", "name": "json-span-2", "kind": 3,
         "startTimeUnixNano": 1544712660100000000, "endTimeUnixNano": 1544712660900000000}
      ]
    }]
  }]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_gzip_requests_are_accepted_and_forwarded() {
    let sink = Sink::start().await;
    let (grpc, http) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, http, &sink), http);
    let c = Http::new(http);

    // OTLP/JSON: hex ids, enum integers, int64 as strings or numbers.
    let (st, h, body) = c
        .send(
            "POST",
            "/v1/traces",
            &[("content-type", "application/json")],
            OTLP_JSON,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(&body[..], b"{}");

    // gzip JSON.
    let (st, _, _) = c
        .send(
            "POST",
            "/v1/traces",
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            gzip(OTLP_JSON.as_bytes()),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    // gzip protobuf, with a charset parameter on the content type.
    let (st, h, body) = c
        .send(
            "POST",
            "/v1/traces",
            &[
                ("content-type", "application/x-protobuf; charset=utf-8"),
                ("content-encoding", "gzip"),
            ],
            gzip(&spans(10, 8).encode_to_vec()),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert!(body.is_empty());

    // zlib, deflate (zlib-wrapped, as the Collector reads it), snappy (block) and lz4 (frame)
    // protobuf.
    let raw = spans(2, 8).encode_to_vec();
    let zl = {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&raw).expect("zlib");
        z.finish().expect("zlib")
    };
    let sn = snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy");
    let lz = {
        use std::io::Write;
        let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
        e.write_all(&raw).expect("lz4");
        e.finish().expect("lz4")
    };
    for (coding, bytes) in [
        ("zlib", zl.clone()),
        ("deflate", zl),
        ("snappy", sn),
        ("lz4", lz),
    ] {
        let (st, _, body) = c
            .send(
                "POST",
                "/v1/traces",
                &[
                    ("content-type", "application/x-protobuf"),
                    ("content-encoding", coding),
                ],
                bytes,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{coding}: {}", rpc_message(&body));
    }

    wait_until_async("22 spans at the sink", Duration::from_secs(10), || {
        sink.state.spans() >= 22
    })
    .await;
    assert_eq!(sink.state.spans(), 22);
    let names = sink.state.span_names.lock().unwrap().clone();
    assert!(names.contains(&"json-span-1".to_string()));
    let attrs = sink.state.span_attrs.lock().unwrap().clone();
    assert!(attrs
        .iter()
        .any(|a| a.get("http.status_code").map(String::as_str) == Some("200")));
    let res = sink.state.resource_attrs.lock().unwrap().clone();
    assert!(res
        .iter()
        .any(|a| a.get("service.name").map(String::as_str) == Some("json-svc")));

    // gRPC with the generated client, gzip on.
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("grpc connect")
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client.export(spans(5, 4)).await.expect("grpc export");
    wait_until_async("19 spans", Duration::from_secs(10), || {
        sink.state.spans() >= 19
    })
    .await;
    assert!(weir.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bad_input_gets_clear_errors() {
    let sink = Sink::start().await;
    let (grpc, http) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, http, &sink), http);
    let c = Http::new(http);
    let proto = [("content-type", "application/x-protobuf")];
    let json = [("content-type", "application/json")];

    // Malformed protobuf: a length that runs past the end.
    let (st, h, body) = c
        .send("POST", "/v1/traces", &proto, vec![0x0a, 0xff, 0x01])
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(
        rpc_message(&body),
        "malformed OTLP traces request: field at byte 3 claims 255 bytes but only 0 remain"
    );

    // Malformed JSON: the error comes back as JSON.
    let (st, h, body) = c
        .send("POST", "/v1/traces", &json, "{\"resourceSpans\": [")
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(h["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed OTLP traces request: EOF while parsing"),
        "{v}"
    );

    // A bad trace id in JSON.
    let bad_id = OTLP_JSON.replace("5b8efff798038103d269b633813fc60c", "zz");
    let (st, _, body) = c.send("POST", "/v1/traces", &json, bad_id).await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Wrong content type.
    let (st, _, body) = c
        .send(
            "POST",
            "/v1/traces",
            &[("content-type", "text/plain")],
            "hello",
        )
        .await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        String::from_utf8_lossy(&body).trim(),
        "415 unsupported media type \"text/plain\", supported: [application/json, application/x-protobuf]"
    );

    // Unsupported content encoding.
    let (st, _, body) = c
        .send(
            "POST",
            "/v1/traces",
            &[proto[0], ("content-encoding", "br")],
            "x",
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        rpc_message(&body),
        "unsupported Content-Encoding \"br\", supported: gzip, zstd, zlib, snappy, deflate, lz4"
    );

    // Corrupt gzip.
    let (st, _, body) = c
        .send(
            "POST",
            "/v1/traces",
            &[proto[0], ("content-encoding", "gzip")],
            "not gzip at all",
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        rpc_message(&body).starts_with("invalid gzip data"),
        "{}",
        rpc_message(&body)
    );

    // Too large before decompression (the limit is 1 MiB).
    let big = spans(1, 2 << 20).encode_to_vec();
    let (st, _, body) = c.send("POST", "/v1/traces", &proto, big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        rpc_message(&body),
        "request body exceeds the limit of 1048576 bytes (max_request_body_size)"
    );

    // Too large after decompression: a 2 MiB body that gzips to a few KiB.
    let bomb = gzip(&spans(1, 2 << 20).encode_to_vec());
    assert!(bomb.len() < 16 * 1024);
    let (st, _, body) = c
        .send(
            "POST",
            "/v1/traces",
            &[proto[0], ("content-encoding", "gzip")],
            bomb,
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        rpc_message(&body),
        "decompressed body exceeds the limit of 1048576 bytes (max_request_body_size)"
    );

    // The same with zstd, and invalid zstd data.
    let zbomb = weir::compression::zstd(&spans(1, 2 << 20).encode_to_vec());
    let (st, _, body) = c
        .send(
            "POST",
            "/v1/traces",
            &[proto[0], ("content-encoding", "zstd")],
            zbomb,
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        rpc_message(&body),
        "decompressed body exceeds the limit of 1048576 bytes (max_request_body_size)"
    );
    let (st, _, body) = c
        .send(
            "POST",
            "/v1/traces",
            &[proto[0], ("content-encoding", "zstd")],
            "not zstd at all",
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        rpc_message(&body).starts_with("invalid zstd data"),
        "{}",
        rpc_message(&body)
    );

    // Wrong path, wrong method, and a signal with no pipeline.
    let (st, _, _) = c.send("POST", "/v1/spans", &proto, "").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, h, _) = c.send("GET", "/v1/traces", &[], "").await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h["allow"], "POST");
    let (st, _, _) = c.send("POST", "/v1/metrics", &proto, "").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Nothing malformed reached the backend, and weir still serves.
    let (st, _, _) = c
        .send("POST", "/v1/traces", &proto, spans(3, 1).encode_to_vec())
        .await;
    assert_eq!(st, StatusCode::OK);
    wait_until_async("3 spans", Duration::from_secs(10), || {
        sink.state.spans() >= 3
    })
    .await;
    assert_eq!(sink.state.spans(), 3);
    assert!(weir.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bad_input_gets_clear_errors() {
    let sink = Sink::start().await;
    let (grpc, http) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, http, &sink), grpc);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let raw = |body: Vec<u8>, gz: bool| {
        let channel = channel.clone();
        let path = path.clone();
        async move {
            let mut g = tonic::client::Grpc::new(channel);
            if gz {
                g = g.send_compressed(tonic::codec::CompressionEncoding::Gzip);
            }
            g.ready().await.unwrap();
            g.unary(
                tonic::Request::new(Bytes::from(body)),
                path,
                weir::grpc::BytesCodec,
            )
            .await
        }
    };

    let err = raw(vec![0x0a, 0xff, 0x01], false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "malformed OTLP traces request: field at byte 3 claims 255 bytes but only 0 remain"
    );

    let err = raw(spans(1, 2 << 20).encode_to_vec(), false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    let err = raw(spans(1, 2 << 20).encode_to_vec(), true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("size limit"), "{}", err.message());

    // Metrics has no pipeline here.
    let mut g = tonic::client::Grpc::new(channel.clone());
    g.ready().await.unwrap();
    let err = g
        .unary(
            tonic::Request::new(Bytes::new()),
            http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            ),
            weir::grpc::BytesCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    // Still serving.
    raw(spans(2, 1).encode_to_vec(), true)
        .await
        .expect("valid export");
    wait_until_async("2 spans", Duration::from_secs(10), || {
        sink.state.spans() >= 2
    })
    .await;
    assert_eq!(sink.state.spans(), 2);
    assert!(weir.stop().success());
}
