//! Multi-tenancy end to end through the real binary: two teams send traces, metrics and logs
//! with their own `X-Scope-OrgID` through one weir; the `tenant` processor tags and splits;
//! every request out carries exactly one tenant's data under that tenant's header (OTLP sink
//! for traces and metrics, the Loki fake for logs). A request without a tenant is dropped
//! (`missing: reject`) and counted.
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
    tp.force_flush().expect("flush spans");

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
    mp.force_flush().expect("flush metrics");

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
    lp.force_flush().expect("flush logs");
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
    // The sender without a tenant: dropped and counted (5 spans, its points, 5 logs).
    let dropped = || {
        let m = http_get(tel, "/metrics")
            .map(|(_, m)| m)
            .unwrap_or_default();
        metric(
            &m,
            "weir_tenant_dropped_items_total",
            &["reason=\"missing\""],
        )
    };
    wait_until_async(
        "the untenanted data counted",
        Duration::from_secs(10),
        || dropped() >= 13.0,
    )
    .await;
    weir.stop();
}
