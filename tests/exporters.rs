//! Exporter failure handling through the real binary: retryable answers are retried until
//! the backend recovers, permanent ones are not retried and are counted with the backend's
//! message logged; the health endpoint tracks readiness.
mod common;

use std::time::Duration;

use common::sink::{Mode, Sink};
use common::{free_port, http_get, metric, wait_until_async, Weir};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn spans(n: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![9; 16],
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

fn config(grpc: u16, tel: u16, health: u16, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
    compression: none
    headers: {{X-Scope-OrgID: team-a}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms}}
  otlphttp:
    endpoint: http://127.0.0.1:{sh}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms}}
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces/grpc: {{receivers: [otlp], exporters: [otlp]}}
    traces/http: {{receivers: [otlp], exporters: [otlphttp]}}
"#,
        sg = sink.grpc_port,
        sh = sink.http_port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_permanent_ones_counted_and_logged() {
    let sink = Sink::start().await;
    let (grpc, tel, health) = (free_port(), free_port(), free_port());
    let weir = Weir::start(&config(grpc, tel, health, &sink), grpc);
    assert_eq!(http_get(health, "/").map(|r| r.0), Some(200));

    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();

    // Retryable (UNAVAILABLE / HTTP 503): retried until the backend recovers.
    sink.state.set_mode(Mode::Fail(tonic::Code::Unavailable));
    client.export(spans(4)).await.unwrap();
    wait_until_async("several failed attempts", Duration::from_secs(10), || {
        sink.state.attempts() >= 6
    })
    .await;
    sink.state.set_mode(Mode::Accept);
    wait_until_async("8 spans after recovery", Duration::from_secs(10), || {
        sink.state.spans() >= 8
    })
    .await;
    assert_eq!(sink.state.spans(), 8);
    // Headers configured on the exporter reach the backend as gRPC metadata.
    let grpc_req = sink
        .state
        .requests()
        .into_iter()
        .find(|r| r.transport == "grpc")
        .unwrap();
    assert_eq!(
        grpc_req.headers.get("x-scope-orgid").map(String::as_str),
        Some("team-a")
    );

    // Permanent (INVALID_ARGUMENT / HTTP 400): one attempt each, counted, message logged.
    sink.state
        .set_mode(Mode::Fail(tonic::Code::InvalidArgument));
    let before = sink.state.attempts();
    client.export(spans(3)).await.unwrap();
    let (_, text) = (0..200)
        .find_map(|_| {
            let r = http_get(tel, "/metrics")?;
            (metric(&r.1, "otelcol_exporter_send_failed_spans_total", &[]) >= 6.0).then_some(r)
        })
        .expect("send_failed reaches 6");
    assert_eq!(
        metric(
            &text,
            "otelcol_exporter_send_failed_spans_total",
            &["exporter=\"otlp\""]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "otelcol_exporter_send_failed_spans_total",
            &["exporter=\"otlphttp\""]
        ),
        3.0
    );
    assert_eq!(
        sink.state.attempts() - before,
        2,
        "one attempt per exporter, no retries"
    );
    // The failure is counted before it is logged, and the log is read through a pipe: wait
    // for both lines.
    wait_until_async(
        "both permanent errors logged",
        Duration::from_secs(10),
        || {
            let log = weir.log();
            log.contains(
                "permanent error: rpc error: code = InvalidArgument desc = sink told to fail",
            ) && log.contains("HTTP 400 from http://127.0.0.1:")
        },
    )
    .await;

    // While stopping, the health check stops saying ready (or stops answering).
    let status = weir.stop();
    assert!(status.success());
    assert!(http_get(health, "/").map(|r| r.0) != Some(200));
}

/// `sending_queue.batch` with `sizer: bytes`: requests (~1 KB each) are merged up to
/// `min_size` bytes and
/// none reaches the backend over `max_size` bytes; every span arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_side_batching_by_bytes() {
    use prost::Message;
    let sink = Sink::start().await;
    let grpc = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{grpc}"}}}}}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
    compression: none
    sending_queue: {{sizer: bytes, queue_size: 10000000, batch: {{flush_timeout: 300ms, min_size: 3000, max_size: 5000}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    );
    let weir = Weir::start(&yaml, grpc);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    for _ in 0..10 {
        client.export(spans(30)).await.unwrap();
    }
    wait_until_async("300 spans", Duration::from_secs(10), || {
        sink.state.spans() >= 300
    })
    .await;
    assert_eq!(sink.state.spans(), 300);
    // The smallest span's share of a request bounds how many fit in 5000 bytes.
    let smallest = spans(30).resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.encoded_len() + 2)
        .min()
        .unwrap();
    let per_request: Vec<usize> = sink.state.requests().iter().map(|r| r.items).collect();
    assert!(
        per_request.iter().all(|&n| n <= 5000 / smallest),
        "{per_request:?} (at most {} spans of {smallest} bytes)",
        5000 / smallest
    );
    assert!(
        per_request.len() < 10 && per_request.iter().any(|&n| n > 30),
        "requests of ~1 KB merged up to 3000 bytes: {per_request:?}"
    );
    assert!(weir.stop().success());
}
