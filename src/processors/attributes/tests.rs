use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;

fn s(v: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    }
}

fn i(v: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(v)),
    }
}

fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(v),
        ..Default::default()
    }
}

fn get(attrs: &[KeyValue], k: &str) -> Option<AnyValue> {
    attrs
        .iter()
        .find(|x| x.key == k)
        .and_then(|x| x.value.clone())
}

fn attributes(yaml: &str) -> AttributesProcessor {
    let c: AttributesConfig = serde_yaml::from_str(yaml).expect("yaml");
    AttributesProcessor::new(&c).unwrap_or_else(|p| panic!("{}: {}", p.path, p.message))
}

fn problem_of(yaml: &str) -> (String, String) {
    let c: AttributesConfig = serde_yaml::from_str(yaml).expect("yaml");
    match AttributesProcessor::new(&c) {
        Ok(_) => panic!("expected a config problem for {yaml}"),
        Err(p) => (p.path, p.message),
    }
}

fn no_ctx(_: &str) -> Option<String> {
    None
}

fn traces(spans: Vec<Span>, service: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(service))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span(name: &str, attrs: Vec<KeyValue>) -> Span {
    Span {
        name: name.into(),
        kind: 2,
        attributes: attrs,
        ..Default::default()
    }
}

#[test]
fn insert_update_upsert_delete_on_spans() {
    let p = attributes(
        "actions:
  - {key: env, value: prod, action: insert}
  - {key: region, value: eu, action: insert}
  - {key: http.method, value: POST, action: update}
  - {key: absent, value: x, action: update}
  - {key: team, value: 7, action: upsert}
  - {key: copy, from_attribute: http.method, action: upsert}
  - {key: nocopy, from_attribute: nope, action: insert}
  - {key: secret, action: delete}
  - {pattern: ^tmp\\., action: delete}",
    );
    let mut r = traces(
        vec![span(
            "op",
            vec![
                kv("region", s("us")),
                kv("http.method", s("GET")),
                kv("secret", s("x")),
                kv("tmp.a", s("1")),
                kv("tmp.b", s("2")),
            ],
        )],
        "svc",
    );
    p.apply_traces(&mut r, &no_ctx);
    let a = &r.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(get(a, "env"), Some(s("prod")));
    assert_eq!(get(a, "region"), Some(s("us")), "insert never overwrites");
    assert_eq!(get(a, "http.method"), Some(s("POST")));
    assert_eq!(get(a, "absent"), None, "update never creates");
    assert_eq!(get(a, "team"), Some(i(7)));
    assert_eq!(get(a, "copy"), Some(s("POST")));
    assert_eq!(get(a, "nocopy"), None);
    assert_eq!(get(a, "secret"), None);
    assert!(a.iter().all(|x| !x.key.starts_with("tmp.")));
}

#[test]
fn hash_matches_the_collectors_sha256() {
    let p = attributes("actions: [{key: user.email, action: hash}, {key: n, action: hash}, {key: b, action: hash}, {key: l, action: hash}]");
    let list = AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![s("x")],
        })),
    };
    let mut r = traces(
        vec![span(
            "op",
            vec![
                kv("user.email", s("jane@example.com")),
                kv("n", i(1)),
                kv(
                    "b",
                    AnyValue {
                        value: Some(any_value::Value::BoolValue(true)),
                    },
                ),
                kv("l", list),
            ],
        )],
        "svc",
    );
    p.apply_traces(&mut r, &no_ctx);
    let a = &r.resource_spans[0].scope_spans[0].spans[0].attributes;
    // sha256("jane@example.com")
    let want: String = Sha256::digest(b"jane@example.com")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(get(a, "user.email"), Some(s(&want)));
    assert_eq!(want.len(), 64);
    let int_want: String = Sha256::digest(1i64.to_le_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(get(a, "n"), Some(s(&int_want)));
    let bool_want: String = Sha256::digest([1u8])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(get(a, "b"), Some(s(&bool_want)));
    assert_eq!(get(a, "l"), Some(s("")), "lists hash to empty, as upstream");
}

#[test]
fn hash_of_a_known_string() {
    // Known SHA-256 test vector: "abc".
    assert_eq!(
        hash_value(Some(&s("abc"))),
        s("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
}

#[test]
fn extract_and_convert() {
    let p = attributes(
        "actions:
  - {key: http.url, pattern: '^https?://(?P<host>[^/]+)/api/(?P<version>v\\d+)/', action: extract}
  - {key: code, action: convert, converted_type: int}
  - {key: ratio, action: convert, converted_type: double}
  - {key: n, action: convert, converted_type: string}
  - {key: bad, action: convert, converted_type: int}",
    );
    let mut r = traces(
        vec![span(
            "op",
            vec![
                kv("http.url", s("https://shop.example/api/v2/cart")),
                kv("code", s("404")),
                kv("ratio", s("0.5")),
                kv("n", i(12)),
                kv("bad", s("twelve")),
            ],
        )],
        "svc",
    );
    p.apply_traces(&mut r, &no_ctx);
    let a = &r.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(get(a, "host"), Some(s("shop.example")));
    assert_eq!(get(a, "version"), Some(s("v2")));
    assert_eq!(get(a, "code"), Some(i(404)));
    assert_eq!(
        get(a, "ratio"),
        Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(0.5))
        })
    );
    assert_eq!(get(a, "n"), Some(s("12")));
    assert_eq!(
        get(a, "bad"),
        Some(s("twelve")),
        "a value that does not convert stays"
    );
}

#[test]
fn from_context_reads_client_metadata() {
    let p = attributes("actions: [{key: tenant, from_context: metadata.x-tenant, action: insert}]");
    let ctx = |k: &str| (k == "metadata.x-tenant").then(|| "acme".to_owned());
    let mut r = traces(vec![span("op", vec![])], "svc");
    p.apply_traces(&mut r, &ctx);
    assert_eq!(
        get(
            &r.resource_spans[0].scope_spans[0].spans[0].attributes,
            "tenant"
        ),
        Some(s("acme"))
    );
}

#[test]
fn include_and_exclude_select_items() {
    let p = attributes(
        "include: {match_type: strict, services: [checkout], span_names: [a, b]}
exclude: {match_type: regexp, attributes: [{key: http.route, value: ^/health}]}
actions: [{key: marked, value: true, action: insert}]",
    );
    let mut r = traces(
        vec![
            span("a", vec![]),
            span("b", vec![kv("http.route", s("/healthz"))]),
            span("c", vec![]),
        ],
        "checkout",
    );
    p.apply_traces(&mut r, &no_ctx);
    let spans = &r.resource_spans[0].scope_spans[0].spans;
    let marked: Vec<bool> = spans
        .iter()
        .map(|sp| get(&sp.attributes, "marked").is_some())
        .collect();
    assert_eq!(marked, vec![true, false, false]);

    let mut other = traces(vec![span("a", vec![])], "cart");
    p.apply_traces(&mut other, &no_ctx);
    assert!(get(
        &other.resource_spans[0].scope_spans[0].spans[0].attributes,
        "marked"
    )
    .is_none());

    let kinds = attributes("include: {span_kinds: [SPAN_KIND_SERVER], libraries: [{name: lib, version: '1.2'}]}\nactions: [{key: k, value: 1, action: insert}]");
    let mut r = traces(
        vec![
            span("a", vec![]),
            Span {
                kind: 3,
                ..span("b", vec![])
            },
        ],
        "x",
    );
    kinds.apply_traces(&mut r, &no_ctx);
    let spans = &r.resource_spans[0].scope_spans[0].spans;
    assert!(get(&spans[0].attributes, "k").is_some());
    assert!(get(&spans[1].attributes, "k").is_none());
}

#[test]
fn logs_and_every_metric_type() {
    let p = attributes("actions: [{key: env, value: prod, action: upsert}]");
    let mut logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(), LogRecord::default()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    p.apply_logs(&mut logs, &no_ctx);
    for rec in &logs.resource_logs[0].scope_logs[0].log_records {
        assert_eq!(get(&rec.attributes, "env"), Some(s("prod")));
    }

    let metric = |name: &str, data: metric::Data| Metric {
        name: name.into(),
        data: Some(data),
        ..Default::default()
    };
    let mut m = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(
                        "g",
                        metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint::default()],
                        }),
                    ),
                    metric(
                        "s",
                        metric::Data::Sum(Sum {
                            data_points: vec![NumberDataPoint::default()],
                            ..Default::default()
                        }),
                    ),
                    metric(
                        "h",
                        metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint::default()],
                            ..Default::default()
                        }),
                    ),
                    metric(
                        "q",
                        metric::Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint::default()],
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    p.apply_metrics(&mut m, &no_ctx);
    let mut n = 0;
    for mt in &mut m.resource_metrics[0].scope_metrics[0].metrics {
        for_each_point_attrs(mt, |a| {
            assert_eq!(get(a, "env"), Some(s("prod")));
            n += 1;
        });
    }
    assert_eq!(n, 4);

    // metric_names selects metrics.
    let only_g = attributes(
        "include: {metric_names: [g]}\nactions: [{key: only, value: 1, action: insert}]",
    );
    only_g.apply_metrics(&mut m, &no_ctx);
    let got: Vec<bool> = m.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter_mut()
        .map(|mt| {
            let mut has = false;
            for_each_point_attrs(mt, |a| has |= get(a, "only").is_some());
            has
        })
        .collect();
    assert_eq!(got, vec![true, false, false, false]);
    assert_eq!(
        m.resource_metrics[0].scope_metrics[0].metrics[0].name, "g",
        "names survive"
    );
}

#[test]
fn resource_processor_edits_resource_attributes_of_every_signal() {
    let c: ResourceConfig = serde_yaml::from_str(
        "attributes: [{key: deployment.environment, value: prod, action: upsert}, {key: host.name, action: delete}]",
    )
    .expect("yaml");
    let p = ResourceProcessor::new(&c).expect("valid");
    let mut t = traces(vec![span("a", vec![])], "svc");
    if let Some(r) = t.resource_spans[0].resource.as_mut() {
        r.attributes.push(kv("host.name", s("h")));
    }
    p.apply_traces(&mut t, &no_ctx);
    let ra = &t.resource_spans[0]
        .resource
        .as_ref()
        .expect("resource")
        .attributes;
    assert_eq!(get(ra, "deployment.environment"), Some(s("prod")));
    assert_eq!(get(ra, "host.name"), None);
    // A request without a resource gets one.
    let mut l = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs::default()],
    };
    p.apply_logs(&mut l, &no_ctx);
    assert!(l.resource_logs[0].resource.is_some());
    let mut m = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics::default()],
    };
    p.apply_metrics(&mut m, &no_ctx);
    let ma = &m.resource_metrics[0]
        .resource
        .as_ref()
        .expect("resource")
        .attributes;
    assert_eq!(get(ma, "deployment.environment"), Some(s("prod")));
}

#[test]
fn config_mistakes_are_named_exactly() {
    let cases: Vec<(&str, &str, &str)> = vec![
        ("actions: []", "actions", "must list at least one action"),
        ("actions: [{value: x, action: insert}]", "actions[0].key", "action \"insert\" needs a key"),
        ("actions: [{action: delete}]", "actions[0].key", "action \"delete\" needs a key or a pattern"),
        ("actions: [{key: k, action: upsert}]", "actions[0]", "action \"upsert\" needs exactly one of value, from_attribute, from_context"),
        ("actions: [{key: k, value: 1, from_attribute: j, action: upsert}]", "actions[0]", "action \"upsert\" needs exactly one of value, from_attribute, from_context (more than one is set)"),
        ("actions: [{key: k, value: 1, action: delete}]", "actions[0]", "action \"delete\" takes no value, from_attribute or from_context"),
        ("actions: [{key: k, value: ~, action: insert}]", "actions[0]", "action \"insert\" needs exactly one of value, from_attribute, from_context"),
        ("actions: [{key: k, pattern: x, value: 1, action: insert}]", "actions[0].pattern", "action \"insert\" does not take a pattern (only delete, hash and extract do)"),
        ("actions: [{pattern: '(', action: hash}]", "actions[0].pattern", "invalid regex \"(\""),
        ("actions: [{key: k, action: extract}]", "actions[0].pattern", "action \"extract\" needs a pattern"),
        ("actions: [{key: k, pattern: '^(a)$', action: extract}]", "actions[0].pattern", "pattern \"^(a)$\" has no named groups"),
        ("actions: [{key: k, action: convert}]", "actions[0].converted_type", "action \"convert\" needs converted_type: int, double or string"),
        ("actions: [{key: k, action: convert, converted_type: float}]", "actions[0].converted_type", "unknown type \"float\"; expected int, double or string"),
        ("actions: [{key: k, value: 1, action: insert, converted_type: int}]", "actions[0].converted_type", "only the convert action takes converted_type, not \"insert\""),
        ("include: {}\nactions: [{key: k, action: delete}]", "include", "names nothing to match"),
        ("include: {span_kinds: [sideways]}\nactions: [{key: k, action: delete}]", "include.span_kinds[0]", "unknown span kind \"sideways\""),
        ("exclude: {match_type: regexp, span_names: ['[']}\nactions: [{key: k, action: delete}]", "exclude.span_names[0]", "invalid regex \"[\""),
    ];
    for (yaml, path, msg) in cases {
        let (p, m) = problem_of(yaml);
        assert_eq!(p, path, "{yaml}");
        assert!(m.starts_with(msg), "{yaml}\n got: {m}\nwant: {msg}");
    }
    // An unknown action is a decode error (serde), reported by the loader with its path.
    assert!(serde_yaml::from_str::<AttributesConfig>("actions: [{key: k, action: frob}]").is_err());
    let c: ResourceConfig = serde_yaml::from_str("attributes: []").expect("yaml");
    assert_eq!(
        ResourceProcessor::new(&c).err().map(|p| p.path),
        Some("attributes".into())
    );
}

#[test]
fn hostile_input_is_handled() {
    // Empty keys, a huge value, many attributes: no panic, bounded work.
    let p = attributes("actions: [{pattern: '.*', action: hash}]");
    let big = "x".repeat(1 << 20);
    let attrs: Vec<KeyValue> = (0..1000)
        .map(|n| kv(&format!("k{n}"), s(&big[..n])))
        .chain([kv("", s(&big))])
        .collect();
    let mut r = traces(vec![span("op", attrs)], "svc");
    p.apply_traces(&mut r, &no_ctx);
    let a = &r.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(a.len(), 1001);
    assert!(a.iter().all(|x| get(std::slice::from_ref(x), &x.key)
        .and_then(|v| as_str(&v).map(str::len))
        == Some(64)));
}
