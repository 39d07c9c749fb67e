//! RED metrics from traces, end to end with real parts: the OpenTelemetry Python SDK reports
//! an MCP server's tool calls (some failing) to weir; weir's `spanmetrics` connector counts
//! every span before tail sampling keeps the failed traces; the metrics go by remote write to
//! a real Prometheus that evaluates `deploy/prometheus/services.rules.yaml` (its windows
//! shortened for the test). The calls, errors and per-tool series are queryable with the
//! counts sent, exemplars carry trace ids, and the error-rate alert fires while errors flow
//! and resolves once they stop.
mod common;

use std::process::Command;
use std::time::Duration;

use common::prometheus::Prometheus;
use common::sink::Sink;
use common::{free_port, wait_until_async, Weir};

/// Runs the MCP server client: `seconds` long, `calls` tool calls, every `error_every`-th
/// failing.
async fn mcp_calls(endpoint: String, seconds: f64, calls: usize, error_every: usize) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_server.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                script,
                &endpoint,
                &seconds.to_string(),
                &calls.to_string(),
                &error_every.to_string(),
            ])
            .output()
            .expect("run the python client")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The service rules with windows a test can wait for: 5 m rates over 20 s, `for:` 0 s.
fn test_rules() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/services.rules.yaml"
    ))
    .expect("services.rules.yaml");
    let shortened = text.replace("[5m]", "[20s]").replace("for: 5m", "for: 0s");
    assert_ne!(shortened, text, "the rules use 5 m windows");
    shortened
}

fn sum(prom: &Prometheus, q: &str) -> f64 {
    prom.query(q).iter().map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_spans_become_red_metrics_exemplars_and_an_alert_in_prometheus() {
    common::require_python_sdk();
    let prom = Prometheus::start_with_rules(&test_rules());
    let sink = Sink::start().await;
    let http = free_port();
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
connectors:
  spanmetrics:
    dimensions:
      - name: gen_ai.tool.name
      - name: mcp.method.name
    exemplars: {{enabled: true}}
    metrics_flush_interval: 500ms
processors:
  tail_sampling:
    decision_wait: 500ms
    policies:
      - name: errors
        type: status_code
        status_code: {{status_codes: [ERROR]}}
exporters:
  otlp/tempo:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
  prometheusremotewrite:
    endpoint: {url}
    send_metadata: true
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    # Every span counts: the RED pipeline sees everything the receiver takes...
    traces/red:
      receivers: [otlp]
      exporters: [spanmetrics]
    # ...while only the failed traces are kept.
    traces/sampled:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [otlp/tempo]
    metrics/red:
      receivers: [spanmetrics]
      exporters: [prometheusremotewrite]
"#,
        sg = sink.grpc_port,
        url = prom.write_url()
    );
    let weir = Weir::start(&cfg, http);
    let endpoint = format!("http://127.0.0.1:{http}");

    // Errors flow: 300 calls over 6 s, one in four failing (all on get_forecast).
    let said = mcp_calls(endpoint.clone(), 6.0, 300, 4).await;
    assert_eq!(said, "sent calls=300 errors=75");
    let calls = "sum(traces_span_metrics_calls_total{service_name=\"weather-mcp\"})";
    let errors = "sum(traces_span_metrics_calls_total{service_name=\"weather-mcp\",status_code=\"STATUS_CODE_ERROR\"})";
    wait_until_async("300 calls in prometheus", Duration::from_secs(30), || {
        sum(&prom, calls) >= 300.0
    })
    .await;
    assert_eq!(sum(&prom, calls), 300.0, "calls == spans sent");
    assert_eq!(sum(&prom, errors), 75.0, "errors == failed spans");
    let per_tool = prom.query(
        "sum by (gen_ai_tool_name, mcp_method_name, span_kind) (traces_span_metrics_calls_total)",
    );
    assert_eq!(per_tool.len(), 2, "{per_tool:?}");
    for (labels, v) in &per_tool {
        assert_eq!(*v, 150.0, "{labels:?}");
        assert_eq!(labels["mcp_method_name"], "tools/call");
        assert_eq!(labels["span_kind"], "SPAN_KIND_SERVER");
    }
    // Latency histogram under the unit-suffixed name, every span in it.
    let count =
        "sum(traces_span_metrics_duration_milliseconds_count{service_name=\"weather-mcp\"})";
    assert_eq!(sum(&prom, count), 300.0);
    assert!(!prom
        .query("traces_span_metrics_duration_milliseconds_bucket{le=\"2\"}")
        .is_empty());
    // Exemplars take the dashboard to the trace.
    let ex = prom.exemplars("traces_span_metrics_duration_milliseconds_bucket");
    assert!(!ex.is_empty(), "no exemplars");
    for (_, labels, _) in &ex {
        let tid = labels["trace_id"].as_str().unwrap_or("");
        assert_eq!(tid.len(), 32, "{labels}");
        assert!(tid.chars().all(|c| c.is_ascii_hexdigit()), "{labels}");
    }
    // Tail sampling after the connector kept only the failed traces.
    wait_until_async("75 sampled spans", Duration::from_secs(15), || {
        sink.state.spans() >= 75
    })
    .await;
    assert_eq!(sink.state.spans(), 75);

    // The error-rate alert fires...
    let firing =
        "ALERTS{alertname=\"ServiceErrorRateHigh\",alertstate=\"firing\",service_name=\"weather-mcp\"}";
    wait_until_async(
        "ServiceErrorRateHigh firing",
        Duration::from_secs(60),
        || !prom.query(firing).is_empty(),
    )
    .await;

    // ...and resolves once the errors stop (calls go on, all succeeding).
    let healthy = tokio::spawn(mcp_calls(endpoint, 30.0, 300, 0));
    wait_until_async(
        "ServiceErrorRateHigh resolved",
        Duration::from_secs(90),
        || prom.query(firing).is_empty(),
    )
    .await;
    assert_eq!(healthy.await.expect("join"), "sent calls=300 errors=0");
    wait_until_async("600 calls in prometheus", Duration::from_secs(30), || {
        sum(&prom, calls) >= 600.0
    })
    .await;
    assert_eq!(sum(&prom, calls), 600.0);
    assert_eq!(sum(&prom, errors), 75.0);
    assert!(weir.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dimension_unique_per_span_stays_under_the_cardinality_limit_and_loses_nothing() {
    common::require_python_sdk();
    let sink = Sink::start().await;
    let http = free_port();
    // enduser.id is unique per call: 100 would-be series against a limit of 10.
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
connectors:
  spanmetrics:
    dimensions: [{{name: enduser.id}}]
    aggregation_cardinality_limit: 10
    dimensions_cache_size: 1000
    metrics_flush_interval: 200ms
exporters:
  otlp:
    endpoint: 127.0.0.1:{sg}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [spanmetrics]}}
    metrics: {{receivers: [spanmetrics], exporters: [otlp]}}
"#,
        sg = sink.grpc_port
    );
    let weir = Weir::start(&cfg, http);
    // A deprecated key with no effect here is said at start.
    wait_until_async(
        "the dimensions_cache_size warning",
        Duration::from_secs(10),
        || {
            weir.log()
                .contains("connectors.spanmetrics: dimensions_cache_size has no effect in weir")
        },
    )
    .await;
    let said = mcp_calls(format!("http://127.0.0.1:{http}"), 1.0, 100, 0).await;
    assert_eq!(said, "sent calls=100 errors=0");
    // Ten real series and the overflow series with the other 90 calls: nothing lost.
    let calls_points = || {
        sink.state
            .sum_points
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _, _)| name == "traces.span.metrics.calls")
            .cloned()
            .collect::<Vec<_>>()
    };
    // Cumulative: each series' latest value is its count so far.
    let latest = || {
        let mut m = std::collections::BTreeMap::new();
        for (_, attrs, v) in calls_points() {
            m.insert(attrs, v);
        }
        m
    };
    wait_until_async("100 calls counted", Duration::from_secs(20), || {
        latest().values().sum::<f64>() >= 100.0
    })
    .await;
    let series = latest();
    assert_eq!(series.values().sum::<f64>(), 100.0);
    assert_eq!(series.len(), 11, "{series:?}");
    assert_eq!(
        series.get("otel.metric.overflow=true"),
        Some(&90.0),
        "{series:?}"
    );
    assert!(weir.stop().success());
}

#[test]
fn wrong_signals_and_bad_settings_are_config_errors_all_at_once() {
    let dir = common::scratch_dir();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        r#"receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:4317"}
connectors:
  spanmetrics:
    histogram: {unit: minutes}
    aggregation_temporality: delta
  spanmetrics/2:
    dimensions_cache_size: 500
exporters:
  debug:
service:
  pipelines:
    metrics/in: {receivers: [otlp], exporters: [spanmetrics]}
    traces/out: {receivers: [spanmetrics], exporters: [debug]}
    traces/in: {receivers: [otlp], exporters: [spanmetrics/2]}
    metrics/out: {receivers: [spanmetrics/2], exporters: [debug]}
"#,
    )
    .expect("write");
    let (ok, out) = common::validate(std::slice::from_ref(&path));
    assert!(!ok, "{out}");
    for want in [
        "bad.yaml:7: connectors.spanmetrics.histogram.unit: unknown Unit \"minutes\", allowed units are \"ms\" and \"s\"",
        "connectors.spanmetrics.aggregation_temporality: must be AGGREGATION_TEMPORALITY_CUMULATIVE or AGGREGATION_TEMPORALITY_DELTA, got \"delta\"",
    ] {
        assert!(out.contains(want), "{want}\nnot in:\n{out}");
    }
    // Fix the settings: what is left is the signals.
    let text = std::fs::read_to_string(&path).expect("read").replace(
        "    histogram: {unit: minutes}\n    aggregation_temporality: delta\n",
        "    namespace: x\n",
    );
    std::fs::write(&path, text).expect("write");
    let (ok, out) = common::validate(std::slice::from_ref(&path));
    assert!(!ok, "{out}");
    for want in [
        "bad.yaml:6: connectors.spanmetrics: pipeline \"metrics/in\" is metrics, which spanmetrics connector \"spanmetrics\" does not take",
        "bad.yaml:6: connectors.spanmetrics: pipeline \"traces/out\" is traces, which spanmetrics connector \"spanmetrics\" does not emit from metrics",
        "2 error(s)",
    ] {
        assert!(out.contains(want), "{want}\nnot in:\n{out}");
    }
    assert!(
        !out.contains("spanmetrics/2"),
        "spanmetrics/2 is fine:\n{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
