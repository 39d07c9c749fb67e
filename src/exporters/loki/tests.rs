use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::config::LokiExporterConfig;
use super::*;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn rec(ts: u64, body: &str, sev: &str, attrs: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: ts,
        severity_text: sev.into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        attributes: attrs,
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        ..Default::default()
    }
}

fn req(resources: Vec<(Vec<KeyValue>, Vec<LogRecord>)>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: resources
            .into_iter()
            .map(|(attrs, records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: attrs,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn encoder(yaml: &str) -> Encoder {
    let mut c: LokiExporterConfig = serde_yaml::from_str(yaml).expect("yaml");
    if c.endpoint.is_empty() {
        c.endpoint = "http://127.0.0.1:3100/loki/api/v1/push".into();
    }
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    Encoder::new(&c)
}

#[test]
fn labels_from_maps_level_and_hints_streams_by_tenant_entries_in_time_order() {
    let e = encoder(
        "labels:\n  resource: {service.name: service_name, deployment.environment: env}\n  attributes: {http.method: method}\ndefault_labels_enabled: {exporter: false, job: false, instance: false}",
    );
    let r = req(vec![
        (
            vec![
                kv("service.name", "checkout"),
                kv("deployment.environment", "prod"),
                kv("host.name", "n1"),
            ],
            vec![
                rec(3_000, "third", "INFO", vec![kv("http.method", "GET")]),
                rec(
                    1_000,
                    "first",
                    "INFO",
                    vec![kv("http.method", "GET"), kv("user", "u1")],
                ),
                rec(2_000, "oops", "ERROR", vec![kv("http.method", "GET")]),
            ],
        ),
        (
            vec![
                kv("service.name", "billing"),
                kv("k8s.namespace.name", "team-b"),
                kv("loki.tenant", "k8s.namespace.name"),
                kv("loki.resource.labels", "k8s.namespace.name"),
            ],
            vec![rec(5_000, "b", "", vec![])],
        ),
    ]);
    let groups = e.group(&r, Some("team-a"));
    assert_eq!(groups.len(), 2);
    let a = &groups[0];
    assert_eq!(a.tenant.as_deref(), Some("team-a"));
    let labels: Vec<&str> = a.streams.iter().map(|s| s.labels.as_str()).collect();
    assert_eq!(
        labels,
        vec![
            r#"{env="prod", level="info", method="GET", service_name="checkout"}"#,
            r#"{env="prod", level="error", method="GET", service_name="checkout"}"#,
        ]
    );
    let info = &a.streams[0];
    let order: Vec<i32> = info
        .entries
        .iter()
        .map(|e| e.timestamp.map(|t| t.nanos).unwrap_or(0))
        .collect();
    assert_eq!(
        order,
        vec![1_000, 3_000],
        "entries in time order within a stream"
    );
    assert_eq!(
        info.entries[0].line,
        r#"{"attributes":{"user":"u1"},"body":"first","span_id":"cdcdcdcdcdcdcdcd","trace_id":"abababababababababababababababab"}"#
    );
    let b = &groups[1];
    assert_eq!(
        b.tenant.as_deref(),
        Some("team-b"),
        "the loki.tenant hint names the attribute"
    );
    assert_eq!(
        b.streams[0].labels,
        r#"{k8s_namespace_name="team-b", service_name="billing"}"#
    );
}

#[test]
fn line_formats_and_structured_metadata() {
    let r = |fmt: &str| {
        let e = encoder(&format!("line_format: {fmt}"));
        let g = e.group(
            &req(vec![(
                vec![],
                vec![rec(1, "hello world", "", vec![kv("k", "v w")])],
            )]),
            None,
        );
        g[0].streams[0].entries[0].line.clone()
    };
    assert_eq!(r("raw"), "hello world");
    assert_eq!(
        r("logfmt"),
        r#"body="hello world" trace_id=abababababababababababababababab span_id=cdcdcdcdcdcdcdcd k="v w""#
    );
    let e = encoder("line_format: raw\nstructured_metadata: true");
    let g = e.group(
        &req(vec![(
            vec![],
            vec![rec(1, "x", "", vec![kv("http.route", "/a")])],
        )]),
        None,
    );
    let entry = &g[0].streams[0].entries[0];
    assert_eq!(
        g[0].streams[0].labels, r#"{exporter="OTLP"}"#,
        "a stream always has a label"
    );
    let md: Vec<(String, String)> = entry
        .structured_metadata
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    assert_eq!(
        md,
        vec![
            ("http_route".to_string(), "/a".to_string()),
            ("trace_id".to_string(), "ab".repeat(16)),
            ("span_id".to_string(), "cd".repeat(8)),
        ]
    );
    // The loki.format hint overrides the configured format.
    let e = encoder("line_format: json");
    let g = e.group(
        &req(vec![(
            vec![kv("loki.format", "raw")],
            vec![rec(1, "plain", "", vec![])],
        )]),
        None,
    );
    assert_eq!(g[0].streams[0].entries[0].line, "plain");
}

#[test]
fn severity_numbers_give_levels() {
    let mut r = rec(1, "x", "", vec![]);
    for (n, want) in [
        (1, "trace"),
        (5, "debug"),
        (9, "info"),
        (13, "warn"),
        (17, "error"),
        (21, "fatal"),
    ] {
        r.severity_number = n;
        assert_eq!(level(&r).as_deref(), Some(want));
    }
    r.severity_number = 0;
    assert_eq!(level(&r), None);
}

#[test]
fn requests_split_under_the_size_limit_and_json_round_trips_labels() {
    let records: Vec<LogRecord> = (0..200)
        .map(|i| rec(i, &"x".repeat(100), "", vec![]))
        .collect();
    let e = encoder("line_format: raw");
    let g = e.group(
        &req(vec![(vec![kv("service.name", "a\"b\\c")], records)]),
        None,
    );
    let parts = split(
        g.into_iter().next().map(|t| t.streams).unwrap_or_default(),
        4096,
    );
    assert!(parts.len() > 3);
    let mut n = 0;
    for p in &parts {
        assert!(p.encoded_len() <= 4096, "{}", p.encoded_len());
        n += p.streams.iter().map(|s| s.entries.len()).sum::<usize>();
    }
    assert_eq!(n, 200);
    let e = encoder("line_format: raw\nlabels: {resource: {service.name: svc}}");
    let g = e.group(
        &req(vec![(
            vec![kv("service.name", "a\"b\\c\nd")],
            vec![rec(1_500_000_000, "l", "", vec![])],
        )]),
        None,
    );
    let json: serde_json::Value = serde_json::from_slice(&to_json(
        &split(
            g.into_iter().next().map(|t| t.streams).unwrap_or_default(),
            1 << 20,
        )[0],
    ))
    .expect("json");
    assert_eq!(json["streams"][0]["stream"]["svc"], "a\"b\\c\nd");
    assert_eq!(json["streams"][0]["values"][0][0], "1500000000");
    assert_eq!(json["streams"][0]["values"][0][1], "l");
}

#[test]
fn rejection_reasons() {
    assert_eq!(
        reason("entry for stream '{a=\"b\"}' has timestamp too old"),
        "too_old"
    );
    assert_eq!(
        reason("entry too far behind, oldest acceptable timestamp is ..."),
        "too_old"
    );
    assert_eq!(reason("entry out of order"), "out_of_order");
    assert_eq!(reason("Ingestion rate limit exceeded"), "rate_limited");
    assert_eq!(reason("max line size exceeded"), "too_long");
    assert_eq!(reason("stream has 20 label names, limit 15"), "labels");
    assert_eq!(reason("nope"), "other");
}

#[test]
fn upstreams_default_labels_unless_turned_off() {
    let r = req(vec![(
        vec![
            kv("service.name", "checkout"),
            kv("service.namespace", "shop"),
            kv("service.instance.id", "pod-7"),
        ],
        vec![rec(1, "x", "ERROR", vec![])],
    )]);
    let labels = |yaml: &str| encoder(yaml).group(&r, None)[0].streams[0].labels.clone();
    assert_eq!(
        labels("{}"),
        r#"{exporter="OTLP", instance="pod-7", job="shop/checkout", level="error"}"#
    );
    assert_eq!(
        labels("default_labels_enabled: {exporter: false, instance: false, level: false}"),
        r#"{job="shop/checkout"}"#
    );
}

#[test]
fn config_validation() {
    let c: LokiExporterConfig = serde_yaml::from_str(
        "endpoint: http://l:3100/loki/api/v1/push\nmax_labels: 2\nlabels: {resource: {a: x, b: y}, attributes: {c: 1bad}}\ncompression: gzip",
    )
    .expect("yaml");
    let errs = c.validate();
    let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["labels.attributes.c", "labels", "compression"]);
    assert_eq!(
        errs[1].1,
        "maps 3 attributes to labels (plus 4 default labels), more than max_labels (2): Loki rejects streams with too many labels"
    );
    let bad: LokiExporterConfig = serde_yaml::from_str(
        "endpoint: http://l:3100/loki/api/v1/push\ndefault_labels_enabled: {host: true}",
    )
    .expect("yaml");
    assert_eq!(
        bad.validate(),
        vec![(
            "default_labels_enabled.host".to_string(),
            "unknown default label \"host\"; expected exporter, job, instance or level".to_string()
        )]
    );
    let none: LokiExporterConfig = serde_yaml::from_str("{}").expect("yaml");
    assert_eq!(none.validate()[0].0, "endpoint");
}

#[test]
fn json_lines_escape_like_serde_json() {
    let e = encoder("line_format: json");
    let body = "quote \" backslash \\ newline \n tab \t bell \u{7} é 日本";
    let g = e.group(
        &req(vec![(
            vec![],
            vec![rec(1, body, "", vec![kv("k\"ey", "v\u{1}")])],
        )]),
        None,
    );
    let line = &g[0].streams[0].entries[0].line;
    let v: serde_json::Value = serde_json::from_str(line).expect("valid json");
    assert_eq!(v["body"], body);
    assert_eq!(v["attributes"]["k\"ey"], "v\u{1}");
    assert_eq!(v["trace_id"], "ab".repeat(16));
}
