//! The Grafana dashboards and provisioning in `deploy/grafana/`: the committed JSON is what
//! Grafana's Foundation SDK builds (`build.py --check`), every PromQL query parses in a real
//! Prometheus, every metric a panel reads is one weir or its connectors produce, and the
//! datasources the dashboards and links name are provisioned.
mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::http_get;
use common::prometheus::Prometheus;

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn dashboards() -> Vec<(String, serde_json::Value)> {
    ["weir.json", "services-red.json"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(repo(&format!("deploy/grafana/dashboards/{f}")))
                .expect("dashboard");
            (
                f.to_string(),
                serde_json::from_str(&text).expect("dashboard JSON"),
            )
        })
        .collect()
}

/// Every Prometheus query of a dashboard.
fn exprs(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.to_string());
            }
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]
            .as_str()
            .filter(|q| q.starts_with("label_values("))
        {
            // label_values(metric, label): the metric must exist.
            let inner = &q["label_values(".len()..];
            if let Some((metric, _)) = inner.split_once(',') {
                out.push(metric.trim().to_string());
            }
        }
    }
    out
}

#[test]
fn the_dashboards_are_what_the_grafana_sdk_builds() {
    let out = Command::new("python3")
        .arg(repo("deploy/grafana/build.py"))
        .arg("--check")
        .output()
        .expect("run build.py");
    assert!(
        out.status.success(),
        "python3 deploy/grafana/build.py --check failed (needs grafana-foundation-sdk, which .ci/run installs):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, d) in dashboards() {
        assert!(
            d["uid"].as_str().is_some_and(|u| u.starts_with("weir-")),
            "{name}"
        );
        let panels = d["panels"].as_array().expect("panels");
        let ids: BTreeSet<i64> = panels.iter().filter_map(|p| p["id"].as_i64()).collect();
        assert_eq!(ids.len(), panels.len(), "{name}: panel ids must be unique");
        assert!(panels.len() >= 10, "{name}: {} panels", panels.len());
    }
}

#[test]
fn every_query_parses_in_prometheus_and_reads_metrics_weir_produces() {
    let prom = Prometheus::start();
    let sources: String = ["src"]
        .iter()
        .flat_map(|d| walk(&repo(d)))
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    // What the connectors' metrics are called in Prometheus (remote write or the prometheus
    // exporter, suffixes on).
    let connector_names = [
        "traces_span_metrics_calls_total",
        "traces_span_metrics_duration_milliseconds_bucket",
        "traces_service_graph_request_total",
        "traces_service_graph_request_failed_total",
        "traces_service_graph_request_server_seconds_bucket",
        "traces_service_graph_request_client_seconds_bucket",
    ];
    let mut checked = 0;
    for (name, d) in dashboards() {
        for e in exprs(&d) {
            let concrete = e
                .replace("$__rate_interval", "1m")
                .replace("$service", ".*")
                .replace("$instance", ".*");
            let path = format!("/api/v1/query?query={}", urlencode(&concrete));
            let (status, body) = http_get(prom.port, &path).expect("query prometheus");
            assert_eq!(status, 200, "{name}: {e}\n{body}");
            for metric in metric_names(&e) {
                let known = if metric.starts_with("otelcol_") || metric.starts_with("weir_") {
                    let base = metric
                        .strip_suffix("_bucket")
                        .unwrap_or(&metric)
                        .to_string();
                    sources.contains(&format!("\"{base}\""))
                } else {
                    connector_names.contains(&metric.as_str())
                };
                assert!(
                    known,
                    "{name}: {metric} (in {e}) is not a metric weir produces"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} queries");
}

#[test]
fn the_datasources_the_dashboards_and_links_name_are_provisioned() {
    let text = std::fs::read_to_string(repo(
        "deploy/grafana/provisioning/datasources/datasources.yaml",
    ))
    .expect("datasources.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let list = doc["datasources"].as_sequence().expect("datasources");
    let uid = |t: &str| {
        list.iter()
            .find(|d| d["type"].as_str() == Some(t))
            .and_then(|d| d["uid"].as_str())
            .unwrap_or_else(|| panic!("no {t} datasource"))
            .to_string()
    };
    let (prom, tempo, loki) = (uid("prometheus"), uid("tempo"), uid("loki"));
    let by_uid = |u: &str| {
        list.iter()
            .find(|d| d["uid"].as_str() == Some(u))
            .expect("uid")
    };
    let p = by_uid(&prom);
    assert_eq!(
        p["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"].as_str(),
        Some(tempo.as_str()),
        "exemplars open traces"
    );
    assert_eq!(
        p["jsonData"]["exemplarTraceIdDestinations"][0]["name"].as_str(),
        Some("trace_id"),
        "the exemplar label the exporters write"
    );
    let t = by_uid(&tempo);
    assert_eq!(
        t["jsonData"]["tracesToLogsV2"]["datasourceUid"].as_str(),
        Some(loki.as_str())
    );
    assert_eq!(
        t["jsonData"]["tracesToLogsV2"]["filterByTraceID"].as_bool(),
        Some(true)
    );
    assert_eq!(
        t["jsonData"]["serviceMap"]["datasourceUid"].as_str(),
        Some(prom.as_str())
    );
    let l = by_uid(&loki);
    assert_eq!(
        l["jsonData"]["derivedFields"][0]["datasourceUid"].as_str(),
        Some(tempo.as_str())
    );
    // The dashboards name Tempo by its uid and Prometheus through the datasource variable.
    for (name, d) in dashboards() {
        let text = d.to_string();
        assert!(text.contains("\"uid\":\"${datasource}\""), "{name}");
        if text.contains("\"type\":\"tempo\"") {
            assert!(text.contains(&format!("\"uid\":\"{tempo}\"")), "{name}");
        }
    }
    let provider =
        std::fs::read_to_string(repo("deploy/grafana/provisioning/dashboards/weir.yaml"))
            .expect("dashboard provider");
    let provider: serde_yaml::Value = serde_yaml::from_str(&provider).expect("YAML");
    assert_eq!(provider["providers"][0]["type"].as_str(), Some("file"));
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Metric names in a query: identifiers that start like weir's and its connectors' metrics.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            if [
                "otelcol_",
                "weir_",
                "traces_span_metrics_",
                "traces_service_graph_",
            ]
            .iter()
            .any(|p| word.starts_with(p))
            {
                out.push(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
