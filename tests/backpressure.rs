//! Backpressure, isolation and draining, through the real binary:
//! - a stalled backend with a small queue makes clients see retryable refusals, counted in
//!   `otelcol_receiver_refused_spans`, and nothing accepted is lost;
//! - a dead backend does not hold up another exporter of the same pipeline;
//! - SIGTERM drains queues within `service.shutdown_timeout` and logs what it could not send.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::sink::{Mode, Sink};
use common::{free_port, http_get, metric, wait_until_async, Weir};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn spans(n: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![3; 16],
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: format!("s{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    port: u16,
    body: Vec<u8>,
) -> (StatusCode, Option<String>) {
    let req = Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.expect("post");
    let ra = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (resp.status(), ra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_backend_pushes_back_to_clients_and_loses_nothing() {
    let sink = Sink::start().await;
    sink.state.set_mode(Mode::Stall);
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
    timeout: 60s
    sending_queue: {{num_consumers: 1, queue_size: 2}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    );
    let weir = Weir::start(&cfg, http);
    let client = Client::builder(TokioExecutor::new()).build_http();
    let body = spans(10).encode_to_vec();
    let mut accepted = 0usize;
    let mut refusal = None;
    for _ in 0..500 {
        match post(&client, http, body.clone()).await {
            (StatusCode::OK, _) => accepted += 10,
            other => {
                refusal = Some(other);
                break;
            }
        }
    }
    let (status, retry_after) = refusal.expect("a stalled backend must eventually refuse clients");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(accepted > 0);

    // gRPC clients are refused with UNAVAILABLE (retryable) at the same time.
    let mut g = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let err = g.export(spans(10)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    let (_, text) = http_get(tel, "/metrics").unwrap();
    assert_eq!(
        metric(&text, "otelcol_receiver_refused_spans_total", &[]),
        20.0
    );
    assert_eq!(
        metric(&text, "otelcol_receiver_accepted_spans_total", &[]),
        accepted as f64
    );

    // The backend recovers: everything accepted arrives, nothing more.
    sink.state.set_mode(Mode::Accept);
    wait_until_async(
        "all accepted spans delivered",
        Duration::from_secs(30),
        || sink.state.spans() >= accepted,
    )
    .await;
    assert_eq!(sink.state.spans(), accepted);
    assert!(weir.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_does_not_hold_up_the_other_exporter() {
    let sink = Sink::start().await;
    let dead = free_port();
    let http = free_port();
    let tel = free_port();
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  otlp/dead:
    endpoint: 127.0.0.1:{dead}
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms}}
  otlp/live:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp/dead, otlp/live]}}
"#,
        sg = sink.grpc_port
    );
    let weir = Weir::start(&cfg, http);
    let client = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..200 {
        let (st, _) = post(&client, http, spans(5).encode_to_vec()).await;
        assert_eq!(st, StatusCode::OK);
    }
    wait_until_async(
        "1000 spans at the live sink",
        Duration::from_secs(15),
        || sink.state.spans() >= 1000,
    )
    .await;
    assert_eq!(sink.state.spans(), 1000);
    // The sink counts a request before the exporter has its answer: wait for the counter.
    let sent_live = || {
        http_get(tel, "/metrics").map(|(_, t)| {
            metric(
                &t,
                "otelcol_exporter_sent_spans_total",
                &["exporter=\"otlp/live\""],
            )
        })
    };
    wait_until_async(
        "otlp/live counts 1000 sent",
        Duration::from_secs(10),
        || sent_live() == Some(1000.0),
    )
    .await;
    let (_, text) = http_get(tel, "/metrics").unwrap();
    assert_eq!(
        metric(
            &text,
            "otelcol_exporter_sent_spans_total",
            &["exporter=\"otlp/dead\""]
        ),
        0.0
    );
    assert!(
        metric(
            &text,
            "otelcol_exporter_queue_size",
            &["exporter=\"otlp/dead\""]
        ) > 0.0
    );
    assert!(weir.log().contains("retrying in"), "{}", weir.log());
    drop(weir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_queues_and_reports_what_it_could_not_send() {
    let sink = Sink::start().await;
    sink.state.set_mode(Mode::Stall);
    let dead = free_port();
    let http = free_port();
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{timeout: 10s, send_batch_size: 100000}}
exporters:
  otlp/slow:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
    timeout: 60s
  otlp/dead:
    endpoint: 127.0.0.1:{dead}
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 100ms}}
service:
  shutdown_timeout: 3s
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp/slow, otlp/dead]}}
"#,
        sg = sink.grpc_port
    );
    let weir = Weir::start(&cfg, http);
    let client = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..20 {
        let (st, _) = post(&client, http, spans(7).encode_to_vec()).await;
        assert_eq!(st, StatusCode::OK);
    }
    // The batch processor holds everything (10s timeout); SIGTERM must flush it.
    weir.signal("TERM");
    let log = weir.log.clone();
    wait_until_async("shutdown to start", Duration::from_secs(10), || {
        log.lock().unwrap().contains("shutting down")
    })
    .await;
    sink.state.set_mode(Mode::Accept);
    let status = tokio::task::spawn_blocking(move || {
        let mut weir = weir;
        let s = weir.stop_after_signal();
        (s, weir)
    })
    .await
    .unwrap();
    let (status, weir) = status;
    assert!(status.success(), "exit {status}\n{}", weir.log());
    assert_eq!(
        sink.state.spans(),
        140,
        "the reachable backend got everything"
    );
    let log = weir.log();
    assert!(
        log.contains("dropping 140 spans") || log.contains("were not delivered"),
        "the dead backend's loss is logged:\n{log}"
    );
}
