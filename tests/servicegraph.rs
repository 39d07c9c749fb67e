//! The service graph end to end: the OpenTelemetry Python SDK reports `frontend` calling
//! `checkout` and `checkout` querying its database; weir's `servicegraph` connector pairs the
//! client and server spans and a real Prometheus gets the Collector's
//! `traces_service_graph_*` series (what Grafana's service map reads) with the counts sent.
mod common;

use std::process::Command;
use std::time::Duration;

use common::prometheus::Prometheus;
use common::{free_port, wait_until_async, Weir};

fn sum(prom: &Prometheus, q: &str) -> f64 {
    prom.query(q).iter().map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_spans_become_the_service_graph_in_prometheus() {
    common::require_python_sdk();
    let prom = Prometheus::start();
    let http = free_port();
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
connectors:
  servicegraph:
    dimensions: [http.route]
    metrics_flush_interval: 300ms
    store: {{ttl: 5s, max_items: 10000}}
exporters:
  prometheusremotewrite:
    endpoint: {url}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [servicegraph]}}
    metrics: {{receivers: [servicegraph], exporters: [prometheusremotewrite]}}
"#,
        url = prom.write_url()
    );
    let weir = Weir::start(&cfg, http);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/two_services.py");
    let endpoint = format!("http://127.0.0.1:{http}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &endpoint, "40", "5"])
            .output()
            .expect("run the python client")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent calls=40 errors=8"
    );
    let edge = "traces_service_graph_request_total{client=\"frontend\",server=\"checkout\"}";
    wait_until_async(
        "40 frontend → checkout requests",
        Duration::from_secs(30),
        || sum(&prom, &format!("sum({edge})")) >= 40.0,
    )
    .await;
    assert_eq!(sum(&prom, &format!("sum({edge})")), 40.0);
    assert_eq!(
        sum(&prom, "sum(traces_service_graph_request_failed_total{client=\"frontend\",server=\"checkout\"})"),
        8.0
    );
    assert_eq!(
        sum(&prom, "sum(traces_service_graph_request_total{client=\"frontend\",server=\"checkout\",failed=\"true\"})"),
        8.0
    );
    assert_eq!(
        sum(&prom, "sum(traces_service_graph_request_total{client=\"checkout\",server=\"orders-db\",connection_type=\"database\"})"),
        40.0
    );
    assert_eq!(
        sum(&prom, "sum(traces_service_graph_request_server_seconds_count{client=\"frontend\",server=\"checkout\"})"),
        40.0
    );
    assert!(!prom
        .query("traces_service_graph_request_client_seconds_bucket{le=\"+Inf\"}")
        .is_empty());
    assert!(weir.stop().success());
}
