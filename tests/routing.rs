//! The `routing` connector through the real binary: logs tagged by the `tenant` processor are
//! routed by `resource.attributes["tenant.id"]`, so one tenant's logs reach only its own Loki
//! and the rest go to the default pipeline's. Also the config errors a routing table can have.
mod common;

use std::time::Duration;

use common::loki::FakeLoki;
use common::{free_port, validate, wait_until_async, Weir};
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

fn logs(tag: &str, n: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("{tag} {i}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn config(grpc: u16, a: &FakeLoki, rest: &FakeLoki) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", include_metadata: true}}
processors:
  tenant:
    sources: [{{header: X-Scope-OrgID}}]
  batch:
    timeout: 50ms
connectors:
  routing:
    default_pipelines: [logs/shared]
    table:
      - condition: resource.attributes["tenant.id"] == "team-a"
        pipelines: [logs/team-a]
exporters:
  loki/a:
    endpoint: {a}
    labels: {{resource: {{tenant.id: tenant}}}}
  loki/shared:
    endpoint: {rest}
    labels: {{resource: {{tenant.id: tenant}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs/in:
      receivers: [otlp]
      processors: [tenant]
      exporters: [routing]
    logs/team-a:
      receivers: [routing]
      processors: [batch]
      exporters: [loki/a]
    logs/shared:
      receivers: [routing]
      processors: [batch]
      exporters: [loki/shared]
"#,
        a = a.url(),
        rest = rest.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_logs_reach_only_its_own_loki() {
    let a = FakeLoki::start(true).await;
    let rest = FakeLoki::start(true).await;
    let grpc = free_port();
    let weir = Weir::start(&config(grpc, &a, &rest), grpc);
    let mut client = LogsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");
    for (team, n) in [("team-a", 30), ("team-b", 20), ("team-c", 10)] {
        let mut req = tonic::Request::new(logs(team, n));
        req.metadata_mut()
            .insert("x-scope-orgid", team.parse().expect("ascii"));
        client.export(req).await.expect("accepted");
    }
    wait_until_async(
        "60 entries across both Lokis",
        Duration::from_secs(15),
        || a.entries().len() + rest.entries().len() >= 60,
    )
    .await;
    let at_a = a.entries();
    assert_eq!(at_a.len(), 30);
    assert!(at_a
        .iter()
        .all(|e| e.tenant.as_deref() == Some("team-a") && e.line.contains("team-a")));
    let at_rest = rest.entries();
    assert_eq!(at_rest.len(), 30);
    assert!(at_rest
        .iter()
        .all(|e| e.tenant.as_deref() != Some("team-a")));
    assert_eq!(
        at_rest
            .iter()
            .filter(|e| e.tenant.as_deref() == Some("team-b"))
            .count(),
        20
    );
    // SIGTERM: what the routed pipelines hold is delivered.
    let mut req = tonic::Request::new(logs("late-b", 5));
    req.metadata_mut()
        .insert("x-scope-orgid", "team-b".parse().expect("ascii"));
    client.export(req).await.expect("accepted");
    let status = weir.stop();
    assert!(status.success());
    assert_eq!(
        rest.entries().len(),
        35,
        "flushed at shutdown through the connector"
    );
}

#[test]
fn routing_tables_are_checked() {
    let dir = std::env::temp_dir().join(format!("weir-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let f = dir.join("bad.yaml");
    std::fs::write(
        &f,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4317\nconnectors:\n  routing:\n    default_pipelines: [logs/nope]\n    table:\n      - condition: 'resource.attributes[\"x\"] =='\n        pipelines: [logs/out]\n      - condition: 'resource.attributes[\"x\"] == \"y\"'\n        pipelines: [traces/out]\nexporters:\n  debug:\nservice:\n  pipelines:\n    logs/in:\n      receivers: [otlp]\n      exporters: [routing]\n    logs/out:\n      receivers: [otlp]\n      exporters: [debug]\n    traces/out:\n      receivers: [routing]\n      exporters: [debug]\n",
    )
    .expect("write");
    let (ok, out) = validate(std::slice::from_ref(&f));
    assert!(!ok);
    assert!(
        out.contains("connectors.routing.table[0].condition: invalid OTTL condition"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let g = dir.join("refs.yaml");
    std::fs::write(
        &g,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4317\nconnectors:\n  routing:\n    default_pipelines: [logs/nope]\n    table:\n      - condition: 'resource.attributes[\"x\"] == \"y\"'\n        pipelines: [logs/out]\n      - condition: 'resource.attributes[\"x\"] == \"z\"'\n        pipelines: [traces/out]\nexporters:\n  debug:\nservice:\n  pipelines:\n    logs/in:\n      receivers: [otlp]\n      exporters: [routing]\n    logs/out:\n      receivers: [otlp]\n      exporters: [debug]\n    traces/out:\n      receivers: [routing]\n      exporters: [debug]\n",
    )
    .expect("write");
    let (ok, out) = validate(std::slice::from_ref(&g));
    assert!(!ok);
    assert!(out.contains("connectors.routing.table[0].pipelines[0]: pipeline \"logs/out\" must list \"routing\" among its receivers"), "{out}");
    assert!(out.contains("connectors.routing.table[1].pipelines[0]: pipeline \"traces/out\" is traces, but \"routing\" is fed logs"), "{out}");
    assert!(out.contains("connectors.routing.default_pipelines[0]: names pipeline \"logs/nope\", which is not configured under service.pipelines"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_request_header() {
    let a = FakeLoki::start(false).await;
    let rest = FakeLoki::start(false).await;
    let grpc = free_port();
    let yaml = config(grpc, &a, &rest)
        .replace("      processors: [tenant]\n", "")
        .replace(
            r#"condition: resource.attributes["tenant.id"] == "team-a""#,
            // The current Collector's statement form.
            r#"context: request
        statement: route() where request["X-Team"] == "blue""#,
        );
    let weir = Weir::start(&yaml, grpc);
    let mut client = LogsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");
    for (team, n) in [("blue", 7), ("red", 3)] {
        let mut req = tonic::Request::new(logs(team, n));
        req.metadata_mut()
            .insert("x-team", team.parse().expect("ascii"));
        client.export(req).await.expect("accepted");
    }
    wait_until_async("10 entries", Duration::from_secs(15), || {
        a.entries().len() + rest.entries().len() >= 10
    })
    .await;
    assert_eq!(a.entries().len(), 7);
    assert!(a.entries().iter().all(|e| e.line.contains("blue")));
    assert_eq!(rest.entries().len(), 3);
    weir.stop();
}
