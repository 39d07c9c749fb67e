//! Logs to Loki through the real binary: the OpenTelemetry SDK sends logs for two teams; the
//! faithful Loki fake (tests/common/loki.rs, built from Loki's push.proto) sees protobuf +
//! snappy, the configured labels, json lines, entries in order, and each team's records in
//! its own requests under its own X-Scope-OrgID. Also JSON + gzip, retries on 429, and 400s
//! counted by reason.
mod common;

use std::time::Duration;

use common::loki::FakeLoki;
use common::{free_port, http_get, metric, wait_until_async, Weir};
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;

fn config(http: u16, tel: u16, loki: &FakeLoki, extra: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http}
processors:
  batch:
    timeout: 50ms
exporters:
  loki:
    endpoint: {url}
    labels:
      resource: {{service.name: service_name, deployment.environment: env}}
      attributes: {{http.method: method}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms}}
{extra}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{tel}
  pipelines:
    logs:
      receivers: [otlp]
      processors: [batch]
      exporters: [loki]
"#,
        url = loki.url()
    )
}

fn provider(http: u16, team: &str) -> opentelemetry_sdk::logs::SdkLoggerProvider {
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{http}/v1/logs"))
        .build()
        .expect("log exporter");
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(format!("{team}-api"))
        .with_attributes([
            KeyValue::new("deployment.environment", "prod"),
            KeyValue::new("k8s.namespace.name", team.to_string()),
            // The Collector's hint: the tenant is this resource attribute's value.
            KeyValue::new("loki.tenant", "k8s.namespace.name"),
        ])
        .build();
    opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build()
}

fn emit(p: &opentelemetry_sdk::logs::SdkLoggerProvider, n: usize, tag: &str) {
    let logger = p.logger("loki-test");
    for i in 0..n {
        let mut rec = logger.create_log_record();
        rec.set_body(format!("{tag} line {i}").into());
        rec.set_severity_number(if i % 5 == 0 {
            Severity::Error
        } else {
            Severity::Info
        });
        rec.set_severity_text(if i % 5 == 0 { "ERROR" } else { "INFO" });
        rec.add_attribute("http.method", if i % 2 == 0 { "GET" } else { "POST" });
        rec.add_attribute("request.id", format!("r{i}"));
        logger.emit(rec);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_teams_logs_reach_loki_under_their_own_tenant() {
    let loki = FakeLoki::start(true).await;
    let (http, tel) = (free_port(), free_port());
    let weir = Weir::start(&config(http, tel, &loki, ""), http);
    let a = provider(http, "team-a");
    let b = provider(http, "team-b");
    emit(&a, 120, "a");
    emit(&b, 80, "b");
    a.force_flush().expect("flush a");
    b.force_flush().expect("flush b");
    wait_until_async("200 entries at Loki", Duration::from_secs(20), || {
        loki.entries().len() >= 200
    })
    .await;
    let entries = loki.entries();
    assert_eq!(entries.len(), 200);
    for e in &entries {
        let team = e.tenant.as_deref().expect("every request has a tenant");
        // Never another tenant's data: the line's tag matches the tenant.
        let tag = if team == "team-a" { "a line" } else { "b line" };
        assert!(e.line.contains(tag), "{team}: {}", e.line);
        assert_eq!(
            e.labels.get("service_name").map(String::as_str),
            Some(format!("{team}-api").as_str())
        );
        assert_eq!(e.labels.get("env").map(String::as_str), Some("prod"));
        assert!(matches!(
            e.labels.get("method").map(String::as_str),
            Some("GET") | Some("POST")
        ));
        assert!(matches!(
            e.labels.get("level").map(String::as_str),
            Some("info") | Some("error")
        ));
        let line: serde_json::Value = serde_json::from_str(&e.line).expect("json line");
        assert!(
            line["attributes"]["request.id"]
                .as_str()
                .is_some_and(|r| r.starts_with('r')),
            "{}",
            e.line
        );
        assert!(
            line["attributes"].get("http.method").is_none(),
            "labels are not repeated in the line"
        );
    }
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.tenant.as_deref() == Some("team-a"))
            .count(),
        120
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.tenant.as_deref() == Some("team-b"))
            .count(),
        80
    );
    for p in loki.pushes() {
        assert_eq!(p.content_type, "application/x-protobuf");
    }
    let _ = (a.shutdown(), b.shutdown());
    weir.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gzip_retries_on_429_and_counts_400s() {
    let loki = FakeLoki::start(false).await;
    let (http, tel) = (free_port(), free_port());
    let weir = Weir::start(
        &config(
            http,
            tel,
            &loki,
            "    encoding: json\n    compression: gzip\n    line_format: logfmt",
        ),
        http,
    );
    loki.fail_next(429, "Ingestion rate limit exceeded", 2);
    let a = provider(http, "team-a");
    emit(&a, 30, "a");
    a.force_flush().expect("flush");
    wait_until_async("30 entries after the 429s", Duration::from_secs(20), || {
        loki.entries().len() >= 30
    })
    .await;
    assert_eq!(loki.entries().len(), 30);
    assert!(
        loki.entries()[0].line.starts_with("body=\"a line"),
        "{}",
        loki.entries()[0].line
    );
    assert!(loki
        .pushes()
        .iter()
        .all(|p| p.content_type == "application/json"));
    assert!(
        *loki.state.attempts.lock().unwrap() >= 3,
        "two refused attempts, then accepted"
    );

    // A 400 is permanent: counted by reason, Loki's message logged, not retried.
    loki.fail_next(
        400,
        "entry for stream '{service_name=\"x\"}' has timestamp too old",
        1,
    );
    emit(&a, 10, "old");
    a.force_flush().expect("flush");
    wait_until_async("the 400 counted", Duration::from_secs(20), || {
        http_get(tel, "/metrics").is_some_and(|(_, m)| {
            metric(
                &m,
                "weir_loki_rejected_records_total",
                &["reason=\"too_old\""],
            ) == 10.0
        })
    })
    .await;
    assert_eq!(loki.entries().len(), 30);
    wait_until_async("the message in the log", Duration::from_secs(5), || {
        weir.log().contains("timestamp too old")
    })
    .await;
    let _ = a.shutdown();
    weir.stop();
}
