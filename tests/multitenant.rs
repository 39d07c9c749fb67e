//! Multi-tenancy end to end through the real binary: two teams send traces, metrics and logs
//! with their own `X-Scope-OrgID` through one weir; the `tenant` processor tags and splits;
//! every request out carries exactly one tenant's data under that tenant's header (OTLP sink
//! for traces and metrics, the Loki fake for logs). A request without a tenant is refused
//! before acceptance (`missing: reject`: 401), and counted.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::loki::FakeLoki;
use common::sink::Sink;
use common::{free_port, http_get, metric, wait_until_async, Weir};
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};

fn config(http: u16, tel: u16, sink: &Sink, loki: &FakeLoki) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http}
        include_metadata: true
processors:
  tenant:
    sources:
      - header: X-Scope-OrgID
    missing: reject
  batch:
    timeout: 50ms
exporters:
  otlp:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
    tenant_header: X-Scope-OrgID
  loki:
    endpoint: {loki}
    labels:
      resource: {{service.name: service_name, tenant.id: tenant}}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{tel}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tenant, batch]
      exporters: [otlp]
    metrics:
      receivers: [otlp]
      processors: [tenant, batch]
      exporters: [otlp]
    logs:
      receivers: [otlp]
      processors: [tenant, batch]
      exporters: [loki]
"#,
        sg = sink.grpc_port,
        loki = loki.url()
    )
}

fn headers(team: Option<&str>) -> HashMap<String, String> {
    team.map(|t| HashMap::from([("X-Scope-OrgID".to_string(), t.to_string())]))
        .unwrap_or_default()
}

async fn send(http: u16, team: Option<&str>, spans: usize, logs: usize) {
    let name = team.unwrap_or("nobody");
    let span_exp = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{http}/v1/traces"))
        .with_headers(headers(team))
        .build()
        .expect("span exporter");
    let tp = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(span_exp)
        .build();
    let tracer = tp.tracer("mt");
    for i in 0..spans {
        tracer.in_span(format!("{name}-span-{i}"), |_| {});
    }
    let flushed = tp.force_flush();
    // A sender without a tenant is refused (401): its flush fails, as it should.
    assert!(team.is_none() || flushed.is_ok(), "{flushed:?}");

    let metric_exp = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{http}/v1/metrics"))
        .with_headers(headers(team))
        .build()
        .expect("metric exporter");
    let mp = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(metric_exp)
        .build();
    let counter = mp
        .meter("mt")
        .u64_counter(format!("{name}_requests"))
        .build();
    for k in 0..3 {
        counter.add(1, &[KeyValue::new("route", format!("/r{k}"))]);
    }
    let flushed = mp.force_flush();
    assert!(team.is_none() || flushed.is_ok(), "{flushed:?}");

    let log_exp = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{http}/v1/logs"))
        .with_headers(headers(team))
        .build()
        .expect("log exporter");
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(format!("{name}-svc"))
        .build();
    let lp = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(log_exp)
        .build();
    let logger = lp.logger("mt");
    for i in 0..logs {
        let mut rec = logger.create_log_record();
        rec.set_body(format!("{name} log {i}").into());
        logger.emit(rec);
    }
    let flushed = lp.force_flush();
    assert!(team.is_none() || flushed.is_ok(), "{flushed:?}");
    let _ = (tp.shutdown(), mp.shutdown(), lp.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_is_delivered_under_its_own_header_never_mixed() {
    let sink = Sink::start().await;
    let loki = FakeLoki::start(true).await;
    let (http, tel) = (free_port(), free_port());
    let weir = Weir::start(&config(http, tel, &sink, &loki), http);
    send(http, Some("team-a"), 30, 40).await;
    send(http, Some("team-b"), 20, 25).await;
    send(http, None, 5, 5).await;

    wait_until_async(
        "50 spans, 6 points, 65 logs",
        Duration::from_secs(20),
        || sink.state.spans() >= 50 && sink.state.points() >= 6 && loki.entries().len() >= 65,
    )
    .await;
    // Traces and metrics: every request has one tenant's header; counts add up per tenant.
    let mut per: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for r in sink.state.requests() {
        let t = r
            .headers
            .get("x-scope-orgid")
            .cloned()
            .unwrap_or_else(|| panic!("a {} request without a tenant header", r.signal));
        *per.entry((t, r.signal)).or_default() += r.items;
    }
    assert_eq!(per.get(&("team-a".into(), "traces")), Some(&30), "{per:?}");
    assert_eq!(per.get(&("team-b".into(), "traces")), Some(&20), "{per:?}");
    // Metrics: 3 points per export (the SDK exports on flush and again on shutdown).
    for t in ["team-a", "team-b"] {
        let n = per.get(&(t.to_string(), "metrics")).copied().unwrap_or(0);
        assert!(n >= 3 && n % 3 == 0, "{t}: {per:?}");
    }
    assert_eq!(per.len(), 4, "no other tenant: {per:?}");
    // tenant.id written on the resources.
    assert!(sink
        .state
        .resource_attrs
        .lock()
        .unwrap()
        .iter()
        .all(|r| matches!(
            r.get("tenant.id").map(String::as_str),
            Some("team-a") | Some("team-b")
        )));
    // Logs: Loki saw each team's lines only under its own tenant, labelled with it.
    for e in loki.entries() {
        let t = e.tenant.clone().expect("tenant header");
        assert!(e.line.contains(&format!("{t} log")), "{t}: {}", e.line);
        assert_eq!(e.labels.get("tenant"), Some(&t));
    }
    let count = |t: &str| {
        loki.entries()
            .iter()
            .filter(|e| e.tenant.as_deref() == Some(t))
            .count()
    };
    assert_eq!((count("team-a"), count("team-b")), (40, 25));
    // The sender without a tenant was refused before acceptance (401), and counted.
    let refused = || {
        let m = http_get(tel, "/metrics")
            .map(|(_, m)| m)
            .unwrap_or_default();
        metric(
            &m,
            "weir_tenant_refused_requests_total",
            &["reason=\"unauthenticated\""],
        )
    };
    wait_until_async(
        "the untenanted requests refused",
        Duration::from_secs(10),
        || refused() >= 3.0,
    )
    .await;
    weir.stop();
}

mod gate {
    use super::*;
    use bytes::Bytes;
    use http::{Request, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
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
                            trace_id: vec![1; 16],
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
        port: u16,
        n: usize,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String) {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut b = Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
            .header("content-type", "application/x-protobuf");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = client
            .request(
                b.body(Full::new(Bytes::from(spans(n).encode_to_vec())))
                    .expect("request"),
            )
            .await
            .expect("post");
        let st = resp.status();
        let ra = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = weir::grpc::RpcStatus::decode(body.as_ref())
            .map(|s| s.message)
            .unwrap_or_default();
        (st, ra, msg)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_hear_identity_and_rate_refusals_and_only_their_own() {
        let sink = Sink::start().await;
        let (grpc, http) = (free_port(), free_port());
        let yaml = format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", include_metadata: true}}
      http: {{endpoint: "127.0.0.1:{http}", include_metadata: true}}
processors:
  tenant:
    sources: [auth, {{header: X-Scope-OrgID}}]
    missing: reject
    trust_client_header: false
    tokens: {{tok-a: team-a, tok-b: team-b}}
    rate_limits:
      default: {{spans_per_second: 1000000}}
      overrides:
        team-a: {{spans_per_second: 100}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
    tenant_header: X-Scope-OrgID
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [tenant], exporters: [otlp]}}
"#,
            sg = sink.grpc_port
        );
        let weir = Weir::start(&yaml, http);
        // Unknown token, no identity at all, someone else's tenant header: 401 with reasons.
        let (st, _, msg) = post(http, 1, &[("authorization", "Bearer nope")]).await;
        assert_eq!(
            (st, msg.as_str()),
            (StatusCode::UNAUTHORIZED, "unknown bearer token")
        );
        let no_tenant = "no tenant: send a bearer token (tenant headers count only with one)";
        let (st, _, msg) = post(http, 1, &[]).await;
        assert_eq!((st, msg.as_str()), (StatusCode::UNAUTHORIZED, no_tenant));
        // A tenant header with no token proves nothing: it is not a way around the token.
        let (st, _, msg) = post(http, 1, &[("x-scope-orgid", "team-b")]).await;
        assert_eq!((st, msg.as_str()), (StatusCode::UNAUTHORIZED, no_tenant));
        // `Bearer` with no token is a credential that fails, on every transport.
        let (st, _, msg) = post(http, 1, &[("authorization", "Bearer ")]).await;
        assert_eq!(
            (st, msg.as_str()),
            (StatusCode::UNAUTHORIZED, "empty bearer token")
        );
        let (st, _, msg) = post(
            http,
            1,
            &[
                ("authorization", "Bearer tok-a"),
                ("x-scope-orgid", "team-b"),
            ],
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert_eq!(
            msg,
            "X-Scope-OrgID \"team-b\" is not the tenant of this client's token"
        );
        // team-a has 100 spans/s: 100 pass (the bucket is empty after them), the next 60 get 429 +
        // Retry-After (600 ms of refill away); team-b is unaffected.
        let (st, _, _) = post(http, 100, &[("authorization", "Bearer tok-a")]).await;
        assert_eq!(st, StatusCode::OK);
        let (st, ra, msg) = post(http, 60, &[("authorization", "Bearer tok-a")]).await;
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{msg}");
        assert_eq!(ra.as_deref(), Some("1"));
        assert_eq!(
            msg,
            "tenant \"team-a\" is over its rate of 100 spans per second; retry later"
        );
        for _ in 0..3 {
            let (st, _, _) = post(http, 60, &[("authorization", "Bearer tok-b")]).await;
            assert_eq!(
                st,
                StatusCode::OK,
                "team-b is not limited by team-a's budget"
            );
        }
        // gRPC clients get the matching codes.
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .expect("connect");
        let mut req = tonic::Request::new(spans(1));
        req.metadata_mut()
            .insert("authorization", "Bearer nope".parse().expect("ascii"));
        assert_eq!(
            client.export(req).await.expect_err("refused").code(),
            tonic::Code::Unauthenticated
        );
        let mut req = tonic::Request::new(spans(1));
        req.metadata_mut()
            .insert("authorization", "Bearer tok-a".parse().expect("ascii"));
        req.metadata_mut()
            .insert("x-scope-orgid", "team-b".parse().expect("ascii"));
        assert_eq!(
            client.export(req).await.expect_err("refused").code(),
            tonic::Code::PermissionDenied
        );
        let mut req = tonic::Request::new(spans(1));
        req.metadata_mut()
            .insert("x-scope-orgid", "team-b".parse().expect("ascii"));
        let st = client.export(req).await.expect_err("refused");
        assert_eq!(
            (st.code(), st.message()),
            (tonic::Code::Unauthenticated, no_tenant)
        );
        let mut req = tonic::Request::new(spans(1));
        req.metadata_mut()
            .insert("authorization", "Bearer ".parse().expect("ascii"));
        let st = client.export(req).await.expect_err("refused");
        assert_eq!(
            (st.code(), st.message()),
            (tonic::Code::Unauthenticated, "empty bearer token")
        );
        wait_until_async(
            "accepted spans at the sink",
            Duration::from_secs(10),
            || sink.state.spans() >= 280,
        )
        .await;
        let per: BTreeMap<String, usize> =
            sink.state
                .requests()
                .iter()
                .fold(BTreeMap::new(), |mut m, r| {
                    *m.entry(r.headers.get("x-scope-orgid").cloned().unwrap_or_default())
                        .or_default() += r.items;
                    m
                });
        assert_eq!(per.get("team-a"), Some(&100), "{per:?}");
        assert_eq!(per.get("team-b"), Some(&180), "{per:?}");
        weir.stop();
    }
}
