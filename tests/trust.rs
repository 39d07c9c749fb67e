//! What weir's OK promises: a request the decoder would refuse is refused before acceptance
//! (400 / INVALID_ARGUMENT naming the field), and refusing it costs the requests around it
//! nothing; the edge cases the decoder accepts (empty requests, unknown fields) are accepted.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::sink::Sink;
use common::{free_port, wait_until_async, Weir};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const PROTO: &str = "application/x-protobuf";
const REFUSED: &str = "malformed OTLP traces request: ";

fn config(grpc: u16, http: u16, sink: &Sink) -> String {
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
    timeout: 200ms
  attributes:
    actions: [{{key: gateway, value: weir, action: insert}}]
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
      processors: [batch, attributes]
      exporters: [otlp]
"#,
        port = sink.grpc_port
    )
}

fn one_span(name: &str, attributes: Vec<KeyValue>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![1; 8],
                    name: name.to_string(),
                    attributes,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A span whose one attribute nests `levels` kvlists deep: AnyValue.kvlist_value →
/// KeyValueList.values → KeyValue.value → AnyValue ... (three messages a level).
fn deep_request(levels: usize) -> ExportTraceServiceRequest {
    let mut kv = KeyValue {
        key: "leaf".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue("bottom".into())),
        }),
        ..Default::default()
    };
    for _ in 0..levels {
        kv = KeyValue {
            key: "nest".into(),
            value: Some(AnyValue {
                value: Some(Value::KvlistValue(KeyValueList { values: vec![kv] })),
            }),
            ..Default::default()
        };
    }
    one_span("deep", vec![kv])
}

/// POSTs `body` to weir's OTLP/HTTP traces endpoint; returns the status and the body.
async fn post(port: u16, content_type: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a well-formed request");
    let resp = client.request(req).await.expect("weir answers");
    let st = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("read the response body")
        .to_bytes();
    (st, body)
}

/// POSTs a protobuf request that must be refused: 400 with a google.rpc.Status of code 3
/// (INVALID_ARGUMENT) and the receiver's prefix. Returns the message.
async fn refused(port: u16, body: Vec<u8>) -> String {
    let (st, resp) = post(port, PROTO, body).await;
    let status = weir::grpc::RpcStatus::decode(resp).expect("a google.rpc.Status body");
    assert_eq!(
        (st, status.code),
        (StatusCode::BAD_REQUEST, 3),
        "{}",
        status.message
    );
    assert!(status.message.starts_with(REFUSED), "{}", status.message);
    status.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_is_refused_and_costs_its_neighbours_nothing() {
    let sink = Sink::start().await;
    let (grpc, http) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, http, &sink), http);

    // (a) A span name of bytes ff fe: encode "XX" and overwrite it in place.
    let mut utf8 = one_span("XX", vec![]).encode_to_vec();
    let at = utf8
        .windows(4)
        .position(|w| w == [0x2a, 2, b'X', b'X']) // Span.name: key 5 << 3 | LEN, 2 bytes
        .expect("the encoded span name");
    utf8[at + 2..at + 4].copy_from_slice(&[0xff, 0xfe]);
    // (b) An attribute 200 kvlists deep: 600 nested messages, the decoder stops at 100.
    let deep = deep_request(200).encode_to_vec();
    // (c) Request{1: ResourceSpans{2: ScopeSpans{2: Span{7: varint 1}}}}, where
    // start_time_unix_nano is a fixed64.
    let varint = vec![0x0a, 6, 0x12, 4, 0x12, 2, 0x38, 1];
    // The decoder refuses each of them as well: these are the inputs meant.
    for bad in [&utf8, &deep, &varint] {
        assert!(
            ExportTraceServiceRequest::decode(&bad[..]).is_err(),
            "{bad:?}"
        );
    }

    for i in 0..60 {
        let good = one_span(&format!("good-{i}"), vec![]).encode_to_vec();
        let (st, body) = post(http, PROTO, good).await;
        assert_eq!(st, StatusCode::OK, "good request {i}: {body:?}");
        if i != 29 {
            continue;
        }
        // After the 30th: the bad ones, in among the good ones of the same batch.
        assert_eq!(
            refused(http, utf8.clone()).await,
            format!(
                "{REFUSED}Span.name (5) is not valid UTF-8 (string at byte {})",
                at + 2
            )
        );
        let m = refused(http, deep.clone()).await;
        assert!(m.contains("nested deeper than 100"), "{m}");
        assert_eq!(
            refused(http, varint.clone()).await,
            format!("{REFUSED}Span.start_time_unix_nano (7) sent with wire type 0 at byte 6")
        );
        // The deep one over gRPC...
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .expect("grpc connect");
        let err = client
            .export(deep_request(200))
            .await
            .expect_err("a 200-deep request is refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().starts_with(REFUSED) && err.message().contains("nested deeper than 100"),
            "{}",
            err.message()
        );
        // ...and as OTLP/JSON. serde recurses through all 600 messages: give it stack room.
        let json = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(|| serde_json::to_vec(&deep_request(200)))
            .expect("spawn the serializing thread")
            .join()
            .expect("the serializing thread")
            .expect("serialize as OTLP/JSON");
        let (st, body) = post(http, "application/json", json).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body:?}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON status body");
        assert_eq!(v["code"], 3, "{v}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(REFUSED)),
            "{v}"
        );
    }

    wait_until_async("60 spans at the sink", Duration::from_secs(20), || {
        sink.state.spans() >= 60
    })
    .await;
    // Stopping flushes whatever weir still holds: after it, nothing more can arrive.
    assert!(weir.stop().success());
    assert_eq!(sink.state.spans(), 60);
    let mut names = sink.state.span_names.lock().expect("sink names").clone();
    names.sort();
    let mut want: Vec<String> = (0..60).map(|i| format!("good-{i}")).collect();
    want.sort();
    assert_eq!(names, want);
    let attrs = sink
        .state
        .span_attrs
        .lock()
        .expect("sink attributes")
        .clone();
    assert_eq!(attrs.len(), 60);
    assert!(
        attrs
            .iter()
            .all(|a| a.get("gateway").map(String::as_str) == Some("weir")),
        "{attrs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_valid_edge_requests_are_accepted() {
    let sink = Sink::start().await;
    let (grpc, http) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, http, &sink), http);

    // An empty request is valid OTLP, on both transports.
    let (st, body) = post(http, PROTO, Vec::new()).await;
    assert_eq!(st, StatusCode::OK, "{body:?}");
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("grpc connect");
    client
        .export(ExportTraceServiceRequest::default())
        .await
        .expect("an empty export is accepted");

    // Unknown top-level field 99 as a varint (key 99 << 3 | 0 = 792: bytes 98 06) holding 1,
    // then one good span: the decoder skips the field, and so must weir.
    let mut edge = vec![0x98, 0x06, 0x01];
    edge.extend(one_span("edge", vec![]).encode_to_vec());
    let decoded = ExportTraceServiceRequest::decode(&edge[..]).expect("prost skips field 99");
    assert_eq!(decoded, one_span("edge", vec![]));
    let (st, body) = post(http, PROTO, edge).await;
    assert_eq!(st, StatusCode::OK, "{body:?}");

    wait_until_async("the edge span at the sink", Duration::from_secs(20), || {
        sink.state.spans() >= 1
    })
    .await;
    assert!(weir.stop().success());
    assert_eq!(sink.state.spans(), 1);
    let names = sink.state.span_names.lock().expect("sink names").clone();
    assert_eq!(names, ["edge"]);
    let attrs = sink
        .state
        .span_attrs
        .lock()
        .expect("sink attributes")
        .clone();
    assert_eq!(
        attrs[0].get("gateway").map(String::as_str),
        Some("weir"),
        "{attrs:?}"
    );
}
