//! `pipelines/agent-platform.yaml` as a user runs it, on top of a base config: the Python SDK
//! reports an MCP server's tool calls (each with an LLM call) under a tenant; the RED metrics
//! per tool and model and the tokens per model reach a real Prometheus by remote write with
//! every call and token counted, and the tail-sampled traces reach
//! Tempo (a faithful OTLP sink) under the tenant's header — errors kept, most others not.
mod common;

use std::process::Command;
use std::time::Duration;

use common::prometheus::Prometheus;
use common::sink::Sink;
use common::{free_port, wait_until_async, Weir};

fn sum(prom: &Prometheus, q: &str) -> f64 {
    prom.query(q).iter().map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_platform_piece_counts_every_call_and_keeps_the_failed_traces() {
    common::require_python_sdk();
    let prom = Prometheus::start();
    let tempo = Sink::start().await;
    let http = free_port();
    // The base a user already has: a receiver and batch. The piece brings the rest.
    let base = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{timeout: 100ms}}
service:
  telemetry: {{metrics: {{level: none}}}}
"#
    );
    let piece = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/agent-platform.yaml");
    let tempo_endpoint = format!("127.0.0.1:{}", tempo.grpc_port);
    let write_url = prom.write_url();
    let loki = format!("http://127.0.0.1:{}/loki/api/v1/push", free_port());
    let weir = Weir::start_with_env(
        &base,
        http,
        &["--config", piece],
        &[
            ("TEMPO_ENDPOINT", tempo_endpoint.as_str()),
            ("PROMETHEUS_WRITE_URL", write_url.as_str()),
            ("LOKI_URL", loki.as_str()),
        ],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_server.py");
    let endpoint = format!("http://127.0.0.1:{http}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &endpoint, "2", "200", "4", "acme"])
            .env("MCP_LLM_CALLS", "1")
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
        "sent calls=200 errors=50"
    );

    // RED per tool and model (the piece flushes every 15 s).
    let calls = "sum(traces_span_metrics_calls_total{service_name=\"weather-mcp\",gen_ai_operation_name=\"execute_tool\"})";
    wait_until_async("200 calls in prometheus", Duration::from_secs(60), || {
        sum(&prom, calls) >= 200.0
    })
    .await;
    assert_eq!(sum(&prom, calls), 200.0);
    let per_tool = prom.query(
        "sum by (gen_ai_tool_name, gen_ai_request_model, gen_ai_operation_name) (traces_span_metrics_calls_total{gen_ai_operation_name=\"execute_tool\"})",
    );
    assert_eq!(per_tool.len(), 2, "{per_tool:?}");
    for (labels, v) in &per_tool {
        assert_eq!(*v, 100.0, "{labels:?}");
        assert_eq!(labels["gen_ai_request_model"], "gpt-4o-mini");
        assert_eq!(labels["gen_ai_operation_name"], "execute_tool");
    }
    assert_eq!(
        sum(
            &prom,
            "sum(traces_span_metrics_calls_total{status_code=\"STATUS_CODE_ERROR\"})"
        ),
        50.0
    );
    // Every tool call's LLM call: RED per model, and its tokens added up (sum connector,
    // deltatocumulative, remote write).
    assert_eq!(
        sum(
            &prom,
            "sum(traces_span_metrics_calls_total{gen_ai_operation_name=\"chat\",gen_ai_request_model=\"gpt-4o-mini\"})"
        ),
        200.0
    );
    let input = "sum(gen_ai_usage_input_tokens_total{gen_ai_request_model=\"gpt-4o-mini\",gen_ai_provider_name=\"openai\"})";
    wait_until_async("20,000 input tokens", Duration::from_secs(30), || {
        sum(&prom, input) >= 20_000.0
    })
    .await;
    assert_eq!(sum(&prom, input), 20_000.0);
    assert_eq!(
        sum(
            &prom,
            "sum(gen_ai_usage_output_tokens_total{gen_ai_request_model=\"gpt-4o-mini\"})"
        ),
        4_000.0
    );

    // Tail sampling (10 s decisions): the 50 failed calls' traces (tool and LLM span each)
    // and about 5 % of the rest, all under the tenant's header.
    wait_until_async(
        "the failed traces in tempo",
        Duration::from_secs(60),
        || tempo.state.spans() >= 100,
    )
    .await;
    let per_tenant = tempo.state.items_per_header("x-scope-orgid");
    let kept = per_tenant.get("acme").copied().unwrap_or(0);
    assert!(
        (100..=180).contains(&kept) && kept % 2 == 0,
        "{per_tenant:?}"
    );
    assert_eq!(per_tenant.len(), 1, "{per_tenant:?}");
    assert!(weir.stop().success());
}
