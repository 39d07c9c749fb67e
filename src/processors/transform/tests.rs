//! Statements from the transform processor's and OTTL functions' documentation, with their
//! documented effect: input item, statement, what the item holds after.
use super::*;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// The first problem `statement` in list `list` (`trace_statements`, ...) is refused with.
fn refused(list: &str, statement: &str) -> String {
    let cfg: TransformConfig =
        serde_yaml::from_str(&format!("{list}: ['{}']", statement.replace('\'', "''")))
            .expect("yaml");
    match Transform::new(&cfg) {
        Ok(_) => panic!("{statement} compiled"),
        Err(p) => p[0].1.clone(),
    }
}

fn transform(yaml: &str) -> Transform {
    let cfg: TransformConfig = serde_yaml::from_str(yaml).expect("yaml");
    Transform::new(&cfg).unwrap_or_else(|p| panic!("{yaml}: {p:?}"))
}

fn one_span(attrs: Vec<KeyValue>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("checkout")),
                    kv("host.name", s("web-1")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "GET /orders".into(),
                    attributes: attrs,
                    events: vec![span::Event {
                        name: "exception".into(),
                        attributes: vec![kv("exception.message", s("token=abc123 failed"))],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A map's entries as `key=value` text, sorted, for comparisons.
fn show(attrs: &[KeyValue]) -> Vec<String> {
    let mut v: Vec<String> = attrs
        .iter()
        .map(|kv| {
            let val = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(x)) => x.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => "nil".into(),
            };
            format!("{}={val}", kv.key)
        })
        .collect();
    v.sort();
    v
}

fn span_attrs() -> Vec<KeyValue> {
    vec![
        kv(
            "http.url",
            s("https://shop.example/cart?session=42&user=bob"),
        ),
        kv("user.email", s("bob@example.com")),
        kv("http.status_code", Value::IntValue(200)),
        kv("k8s.pod.uid", s("0a1b")),
        kv("k8s.pod.name", s("web-abc")),
        kv("long", s("abcdefghij")),
    ]
}

#[test]
fn span_statements_as_documented() {
    // (statement, the span's attributes after, its name after)
    let cases: &[(&str, &[&str], &str)] = &[
        (
            r#"set(span.attributes["environment"], "prod")"#,
            &["environment=prod"],
            "GET /orders",
        ),
        (
            r#"set(span.attributes["user.email"], SHA256(span.attributes["user.email"]))"#,
            &["user.email=5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018"],
            "GET /orders",
        ),
        (
            r#"replace_pattern(span.attributes["http.url"], "\\?.*", "?redacted")"#,
            &["http.url=https://shop.example/cart?redacted"],
            "GET /orders",
        ),
        (
            r#"replace_pattern(span.attributes["http.url"], "user=([a-z]+)", "user=$$1-hidden")"#,
            &["http.url=https://shop.example/cart?session=42&user=$1-hidden"],
            "GET /orders",
        ),
        (
            r#"delete_key(span.attributes, "user.email")"#,
            &["!user.email"],
            "GET /orders",
        ),
        (
            r#"delete_matching_keys(span.attributes, "^k8s\\.pod\\..*")"#,
            &["!k8s.pod.uid", "!k8s.pod.name"],
            "GET /orders",
        ),
        (
            r#"keep_keys(span.attributes, ["http.url", "user.email"])"#,
            &["!http.status_code", "!long", "user.email=bob@example.com"],
            "GET /orders",
        ),
        (
            r#"keep_matching_keys(span.attributes, "^http")"#,
            &["!user.email", "http.status_code=200"],
            "GET /orders",
        ),
        (
            r#"replace_all_patterns(span.attributes, "value", "[a-z]+@example\\.com", "{email}")"#,
            &["user.email={email}"],
            "GET /orders",
        ),
        (
            r#"replace_all_patterns(span.attributes, "key", "^k8s\\.pod\\.", "pod.")"#,
            &["pod.uid=0a1b", "pod.name=web-abc", "!k8s.pod.uid"],
            "GET /orders",
        ),
        (
            r#"replace_match(span.attributes["http.url"], "https://shop.example/*", "https://shop.example/{path}")"#,
            &["http.url=https://shop.example/{path}"],
            "GET /orders",
        ),
        (
            r#"replace_all_matches(span.attributes, "*@example.com", "{redacted}")"#,
            &["user.email={redacted}"],
            "GET /orders",
        ),
        (
            r#"truncate_all(span.attributes, 4)"#,
            &["long=abcd", "user.email=bob@"],
            "GET /orders",
        ),
        (
            r#"limit(span.attributes, 2, ["user.email"])"#,
            &["user.email=bob@example.com", "!long"],
            "GET /orders",
        ),
        (
            r#"set(span.name, Concat([span.name, span.attributes["http.status_code"]], " "))"#,
            &[],
            "GET /orders 200",
        ),
        (
            r#"set(span.name, ConvertCase(span.name, "upper"))"#,
            &[],
            "GET /ORDERS",
        ),
        (
            r#"set(span.attributes["service"], resource.attributes["service.name"])"#,
            &["service=checkout"],
            "GET /orders",
        ),
        // Value converters.
        (
            r#"set(span.attributes["code"], Int("42"))"#,
            &["code=42"],
            "GET /orders",
        ),
        (
            r#"set(span.attributes["status"], String(span.attributes["http.status_code"]))"#,
            &["status=200"],
            "GET /orders",
        ),
        (
            r#"set(span.attributes["n"], Len(span.attributes["long"]))"#,
            &["n=10"],
            "GET /orders",
        ),
        (
            r#"set(span.attributes["sub"], Substring(span.attributes["long"], 2, 3))"#,
            &["sub=cde"],
            "GET /orders",
        ),
        (
            r#"set(span.attributes["bad"], Int("4x2"))"#,
            &["!bad"],
            "GET /orders",
        ),
        (
            r#"merge_maps(span.attributes, ParseJSON("{\"a\":1,\"user.email\":\"x\"}"), "insert")"#,
            &["a=1", "user.email=bob@example.com"],
            "GET /orders",
        ),
        (
            r#"merge_maps(span.attributes, ExtractPatterns(span.attributes["http.url"], "session=(?P<session>[0-9]+)"), "upsert")"#,
            &["session=42"],
            "GET /orders",
        ),
        // where clauses: only matching items change.
        (
            r#"set(span.attributes["big"], true) where span.attributes["http.status_code"] >= 500"#,
            &["!big"],
            "GET /orders",
        ),
        (
            r#"set(span.attributes["ok"], true) where span.attributes["http.status_code"] == 200"#,
            &["ok=true"],
            "GET /orders",
        ),
        // set with a nil value does nothing; a value of the wrong type leaves a field alone.
        (
            r#"set(span.attributes["x"], span.attributes["missing"])"#,
            &["!x"],
            "GET /orders",
        ),
        (r#"set(span.name, 42)"#, &[], "GET /orders"),
        // Editors on values that are not strings do nothing.
        (
            r#"replace_pattern(span.attributes["http.status_code"], "2", "5")"#,
            &["http.status_code=200"],
            "GET /orders",
        ),
    ];
    for (stmt, want, name) in cases {
        let t = transform(&format!(
            "trace_statements: ['{}']",
            stmt.replace('\'', "''")
        ));
        let mut r = one_span(span_attrs());
        t.traces(&mut r);
        let sp = &r.resource_spans[0].scope_spans[0].spans[0];
        let got = show(&sp.attributes);
        for w in *want {
            match w.strip_prefix('!') {
                Some(absent) => assert!(
                    !got.iter().any(|g| g.split('=').next() == Some(absent)),
                    "{stmt}: {absent} should be gone: {got:?}"
                ),
                None => assert!(got.contains(&w.to_string()), "{stmt}: want {w} in {got:?}"),
            }
        }
        assert_eq!(sp.name, *name, "{stmt}");
    }
}

#[test]
fn resource_events_groups_and_conditions() {
    let t = transform(
        r#"
trace_statements:
  - context: resource
    statements:
      - 'delete_key(attributes, "host.name")'
      - 'set(attributes["deployment.environment"], "prod")'
  - context: spanevent
    statements:
      - 'replace_pattern(attributes["exception.message"], "token=\\w+", "token=***")'
  - context: span
    conditions: ['name == "other"']
    statements: ['set(attributes["never"], true)']
"#,
    );
    let mut r = one_span(span_attrs());
    t.traces(&mut r);
    let rs = &r.resource_spans[0];
    assert_eq!(
        show(&rs.resource.as_ref().unwrap().attributes),
        ["deployment.environment=prod", "service.name=checkout"]
    );
    let sp = &rs.scope_spans[0].spans[0];
    assert_eq!(
        show(&sp.events[0].attributes),
        ["exception.message=token=*** failed"]
    );
    assert!(!show(&sp.attributes).iter().any(|a| a.starts_with("never")));
}

#[test]
fn logs_and_metrics_as_documented() {
    let t = transform(
        r#"
log_statements:
  - 'set(log.severity_text, "WARN") where log.severity_number >= SEVERITY_NUMBER_WARN and log.severity_number < SEVERITY_NUMBER_ERROR'
  - 'replace_pattern(log.body, "password=\\S+", "password=***")'
  - 'set(log.attributes["body.copy"], log.body)'
metric_statements:
  - 'set(metric.name, "http.server.request.duration") where metric.name == "http_request_duration"'
  - 'set(metric.description, "Duration of HTTP server requests")'
  - 'set(datapoint.attributes["region"], "eu") where datapoint.value_int > 1'
  - 'delete_key(datapoint.attributes, "pod")'
"#,
    );
    let mut logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    severity_number: 13,
                    body: Some(AnyValue {
                        value: Some(s("login user=bob password=hunter2 ok")),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.logs(&mut logs);
    let rec = &logs.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(rec.severity_text, "WARN");
    assert_eq!(
        rec.body.as_ref().and_then(|b| b.value.clone()),
        Some(s("login user=bob password=*** ok"))
    );
    assert_eq!(
        show(&rec.attributes),
        ["body.copy=login user=bob password=*** ok"]
    );

    let point = |v: i64| NumberDataPoint {
        attributes: vec![kv("pod", s("p1"))],
        value: Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(v)),
        ..Default::default()
    };
    let mut metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http_request_duration".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![point(1), point(5)],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.metrics(&mut metrics);
    let m = &metrics.resource_metrics[0].scope_metrics[0].metrics[0];
    assert_eq!(m.name, "http.server.request.duration");
    assert_eq!(m.description, "Duration of HTTP server requests");
    let Some(metric::Data::Gauge(g)) = &m.data else {
        panic!("gauge")
    };
    assert!(show(&g.data_points[0].attributes).is_empty());
    assert_eq!(show(&g.data_points[1].attributes), ["region=eu"]);
}

#[test]
fn config_errors_name_the_statement_and_column() {
    let cfg: TransformConfig = serde_yaml::from_str(
        r#"
error_mode: sometimes
trace_statements:
  - context: span
    statements:
      - 'set(attributes["a"], "b"'
      - 'sort(attributes)'
      - 'set(trace_id, "x")'
      - 'replace_pattern(name, "(", "x")'
  - context: moon
    statements: ['set(attributes["a"], 1)']
log_statements: ['set(attributes["a"], 1)']
"#,
    )
    .unwrap();
    let p = Transform::new(&cfg).unwrap_err();
    let got: Vec<(&str, &str)> = p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(got[0], ("error_mode", "unknown error mode sometimes"));
    assert_eq!(got[1].0, "trace_statements[0].statements[0]");
    assert!(
        got[1].1.contains("column 25: expected \",\" or \")\""),
        "{}",
        got[1].1
    );
    assert!(
        got[2].1.contains("unsupported editor \"sort\""),
        "{}",
        got[2].1
    );
    assert!(
        got[3]
            .1
            .contains("set cannot change this path in the span context"),
        "{}",
        got[3].1
    );
    assert!(
        got[3].1.starts_with("invalid OTTL statement"),
        "{}",
        got[3].1
    );
    assert!(
        got[4].1.contains("invalid regex \"(\" in replace_pattern"),
        "{}",
        got[4].1
    );
    assert_eq!(
        got[5],
        ("trace_statements[1].context", "unknown context moon")
    );
    assert_eq!(got[6].0, "log_statements[0]");
    assert!(got[6]
        .1
        .starts_with("unable to infer a valid context (log, scope, resource)"));
}

#[test]
fn lists_from_split_and_append() {
    let t = transform(
        r#"
trace_statements:
  - 'set(span.attributes["parts"], Split(span.attributes["k8s.pod.name"], "-"))'
  - 'append(span.attributes["parts"], "x")'
  - 'append(span.attributes["tags"], "first")'
  - 'append(span.attributes["long"], "more")'
"#,
    );
    let mut r = one_span(span_attrs());
    t.traces(&mut r);
    let attrs = &r.resource_spans[0].scope_spans[0].spans[0].attributes;
    let list = |k: &str| -> Vec<String> {
        match attrs
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
        {
            Some(Value::ArrayValue(a)) => a
                .values
                .iter()
                .map(|v| match &v.value {
                    Some(Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                })
                .collect(),
            other => panic!("{k}: {other:?}"),
        }
    };
    assert_eq!(list("parts"), ["web", "abc", "x"]);
    assert_eq!(list("tags"), ["first"]);
    assert_eq!(list("long"), ["abcdefghij", "more"]);
}

#[test]
fn trim_hex_flatten_and_ids() {
    let t = transform(
        r#"
trace_statements:
  - 'set(span.attributes["t"], Trim("  padded  "))'
  - 'set(span.attributes["t2"], Trim("--x--", "-"))'
  - 'set(span.attributes["h"], Hex("AB"))'
  - 'set(span.attributes["nested"], ParseJSON("{\"a\":{\"b\":1},\"l\":[\"x\",\"y\"]}"))'
  - 'flatten(span.attributes, "f", 1)'
  - 'set(span.name, "mine") where span.trace_id == TraceID(0x01010101010101010101010101010101)'
"#,
    );
    let mut r = one_span(vec![kv("keep", s("k"))]);
    r.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 16];
    t.traces(&mut r);
    let sp = &r.resource_spans[0].scope_spans[0].spans[0];
    let got = show(&sp.attributes);
    for want in ["f.t=padded", "f.t2=x", "f.h=4142", "f.keep=k", "f.nested.l=ArrayValue(ArrayValue { values: [AnyValue { value: Some(StringValue(\"x\")) }, AnyValue { value: Some(StringValue(\"y\")) }] })"] {
        assert!(got.iter().any(|g| g == want), "{want} in {got:?}");
    }
    // Depth 1 under the prefix: nested.a stays a map one level down.
    assert!(
        got.iter().any(|g| g.starts_with("f.nested.a=KvlistValue")),
        "{got:?}"
    );
    assert_eq!(sp.name, "mine");
    let cfg: TransformConfig = serde_yaml::from_str(
        "trace_statements: ['set(span.name, \"x\") where span.trace_id == TraceID(0x01)']",
    )
    .unwrap();
    let e = Transform::new(&cfg).unwrap_err();
    assert!(e[0].1.contains("TraceID takes 16 bytes"), "{e:?}");
}

/// A request with every span field set, two resources and two scopes each, for comparing the
/// wire path with the decoded one.
fn rich_traces() -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::trace::v1::Status;
    let span = |i: u8| Span {
        trace_id: vec![i; 16],
        span_id: vec![i + 1; 8],
        parent_span_id: vec![i + 2; 8],
        trace_state: "ot=th:8".into(),
        flags: 257,
        name: format!("GET /orders/{i}"),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
        end_time_unix_nano: 1_700_000_000_500_000_000 + u64::from(i),
        attributes: {
            let mut a = span_attrs();
            a.push(kv("http.route", s(&format!("/api/items/{i}"))));
            a
        },
        dropped_attributes_count: 1,
        events: vec![span::Event {
            name: "exception".into(),
            time_unix_nano: 5,
            attributes: vec![kv("exception.message", s("token=abc123 failed"))],
            dropped_attributes_count: 2,
        }],
        dropped_events_count: 3,
        links: vec![span::Link {
            trace_id: vec![9; 16],
            span_id: vec![8; 8],
            ..Default::default()
        }],
        dropped_links_count: 4,
        status: Some(Status {
            code: if i.is_multiple_of(2) { 2 } else { 1 },
            message: "boom".into(),
        }),
    };
    let scope = |name: &str, i: u8| ScopeSpans {
        scope: Some(InstrumentationScope {
            name: name.into(),
            version: "1.0".into(),
            attributes: vec![kv("lib", s(name))],
            ..Default::default()
        }),
        spans: vec![span(i), span(i + 10), span(i + 20)],
        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
    };
    let resource = |svc: &str, i: u8| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s(svc)), kv("host.name", s("web-1"))],
            ..Default::default()
        }),
        scope_spans: vec![scope("http", i), scope("db", i + 1)],
        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![resource("checkout", 1), resource("cart", 2)],
    }
}

/// Runs `yaml`'s trace statements on the wire and decoded; both must give the same request.
fn same_on_wire(yaml: &str) -> ExportTraceServiceRequest {
    let t = transform(yaml);
    let input = rich_traces();
    let mut decoded = input.clone();
    t.traces(&mut decoded);
    let bytes = input.encode_to_vec();
    let mut scratch = wire::Scratch::default();
    let out = t
        .on_wire_bytes(crate::pdata::Signal::Traces, &bytes, &mut scratch)
        .unwrap_or_else(|| panic!("{yaml}: not run on the wire"));
    let mut on_wire = ExportTraceServiceRequest::decode(&out[..]).expect("decodes");
    // Attributes are a map: the wire path may write the keys it edited where the first of
    // them stood, the decoded path where each was.
    let by_key = |r: &mut ExportTraceServiceRequest| {
        for rs in &mut r.resource_spans {
            for ss in &mut rs.scope_spans {
                for sp in &mut ss.spans {
                    sp.attributes.sort_by(|a, b| a.key.cmp(&b.key));
                }
            }
        }
    };
    by_key(&mut on_wire);
    let mut sorted = decoded.clone();
    by_key(&mut sorted);
    assert_eq!(on_wire, sorted, "{yaml}");
    // The wire path's encoding is canonical enough for the decoded form to re-encode alike.
    assert_eq!(out.len(), decoded.encoded_len(), "{yaml}");
    decoded
}

use prost::Message as _;

#[test]
fn the_wire_path_edits_as_the_decoded_path_does() {
    let statements = [
        r#"set(span.attributes["environment"], "prod")"#,
        r#"set(span.attributes["user.email"], SHA256(span.attributes["user.email"]))"#,
        r#"replace_pattern(span.attributes["http.route"], "/api/items/(.*)", "/api/items/{id}")"#,
        r#"replace_pattern(span.attributes["http.url"], "\\?.*", "?redacted")"#,
        r#"delete_key(span.attributes, "user.email")"#,
        r#"delete_matching_keys(span.attributes, "^k8s\\.pod\\..*")"#,
        r#"keep_keys(span.attributes, ["http.url"])"#,
        r#"keep_keys(span.attributes, [])"#,
        r#"replace_all_patterns(span.attributes, "key", "^k8s\\.pod\\.", "pod.")"#,
        r#"truncate_all(span.attributes, 4)"#,
        r#"limit(span.attributes, 2, ["user.email"])"#,
        r#"set(span.name, Concat([span.name, span.attributes["http.status_code"]], " "))"#,
        r#"set(span.attributes["service"], resource.attributes["service.name"])"#,
        r#"set(span.attributes["lib"], instrumentation_scope.name)"#,
        r#"set(span.status.message, "redacted") where span.status.code == STATUS_CODE_ERROR"#,
        r#"set(span.attributes["id"], span.trace_id.string) where span.kind == SPAN_KIND_SERVER"#,
        r#"set(span.attributes["d"], span.end_time_unix_nano - span.start_time_unix_nano)"#,
        r#"set(span.attributes["late"], true) where span.end_time - span.start_time > Duration("1ms")"#,
        r#"set(span.attributes["sampled"], span.flags)"#,
        r#"set(span.attributes["ts"], span.trace_state)"#,
        r#"set(span.attributes["drops"], span.dropped_events_count + span.dropped_links_count)"#,
        r#"set(span.name, "x") where span.parent_span_id.string == "0404040404040404""#,
        r#"merge_maps(span.attributes, ExtractPatterns(span.attributes["http.url"], "session=(?P<session>[0-9]+)"), "upsert")"#,
        r#"flatten(span.attributes, "f")"#,
        r#"append(span.attributes["tags"], span.name)"#,
    ];
    for st in statements {
        let out = same_on_wire(&format!("trace_statements: ['{}']", st.replace('\'', "''")));
        if st.contains("span.end_time_unix_nano - ") {
            // Math as a value, as upstream: the span's duration in nanoseconds.
            let sp = &out.resource_spans[0].scope_spans[0].spans[0];
            assert!(show(&sp.attributes).contains(&"d=500000000".to_string()));
        }
    }
    // Groups of every level, in order, with conditions.
    let out = same_on_wire(
        r#"
trace_statements:
  - context: resource
    conditions: ['attributes["service.name"] == "cart"']
    statements:
      - 'delete_key(attributes, "host.name")'
      - 'set(attributes["deployment.environment"], "prod")'
  - context: scope
    statements: ['set(name, Concat([name, "-lib"], "")) where name == "db"']
  - context: spanevent
    statements:
      - 'replace_pattern(attributes["exception.message"], "token=\\w+", "token=***")'
      - 'set(name, span.name)'
  - context: span
    conditions: ['resource.attributes["deployment.environment"] == "prod"']
    statements: ['set(attributes["from.scope"], instrumentation_scope.name)']
"#,
    );
    let rs = &out.resource_spans[1];
    assert_eq!(rs.scope_spans[1].scope.as_ref().unwrap().name, "db-lib");
    assert_eq!(
        show(&rs.scope_spans[1].spans[0].attributes)
            .iter()
            .filter(|a| a.starts_with("from.scope"))
            .collect::<Vec<_>>(),
        ["from.scope=db-lib"]
    );
}

#[test]
fn groups_that_see_each_others_items_take_the_decoded_path() {
    // A span group before a resource group, a span statement writing the resource, a scope
    // statement writing the resource: item by item would differ from group by group.
    for yaml in [
        r#"
trace_statements:
  - context: span
    statements: ['set(attributes["r"], resource.attributes["x"])']
  - context: resource
    statements: ['set(attributes["x"], "new")']
"#,
        r#"trace_statements: ['set(resource.attributes["x"], span.name)']"#,
        r#"
trace_statements:
  - context: scope
    statements: ['set(resource.attributes["x"], name)']
"#,
    ] {
        let t = transform(yaml);
        let bytes = rich_traces().encode_to_vec();
        assert!(
            t.on_wire_bytes(
                crate::pdata::Signal::Traces,
                &bytes,
                &mut wire::Scratch::default()
            )
            .is_none(),
            "{yaml}"
        );
    }
    // Metrics always take the decoded path.
    let t = transform(r#"metric_statements: ['set(metric.name, "x")']"#);
    assert!(t
        .on_wire_bytes(
            crate::pdata::Signal::Metrics,
            &[],
            &mut wire::Scratch::default()
        )
        .is_none());
}

#[test]
fn bytes_that_do_not_walk_take_the_decoded_path() {
    let t = transform(r#"trace_statements: ['set(span.attributes["x"], "y")']"#);
    let good = rich_traces().encode_to_vec();
    let mut scratch = wire::Scratch::default();
    for cut in [1, 7, good.len() / 2, good.len() - 1] {
        assert!(
            t.on_wire_bytes(crate::pdata::Signal::Traces, &good[..cut], &mut scratch)
                .is_none(),
            "cut at {cut}"
        );
    }
    // A span name that is not a string (wire type varint for field 5), where the statement
    // reads it: prost refuses it, so the decoded path decides.
    let t = transform(r#"trace_statements: ['set(span.name, "y") where span.name == "x"']"#);
    let mut bad = Vec::new();
    crate::pdata::wire::put_len_header(&mut bad, 1, 6);
    crate::pdata::wire::put_len_header(&mut bad, 2, 4);
    crate::pdata::wire::put_len_header(&mut bad, 2, 2);
    bad.extend_from_slice(&[5 << 3, 1]);
    assert!(t
        .on_wire_bytes(crate::pdata::Signal::Traces, &bad, &mut scratch)
        .is_none());
    // The scratch is reusable after a failure.
    assert!(t
        .on_wire_bytes(crate::pdata::Signal::Traces, &good, &mut scratch)
        .is_some());
}

#[test]
fn logs_on_the_wire_as_decoded() {
    let t = transform(
        r#"
log_statements:
  - 'set(log.severity_text, "WARN") where log.severity_number >= SEVERITY_NUMBER_WARN'
  - 'replace_pattern(log.body, "password=\\S+", "password=***")'
  - 'set(log.attributes["body.copy"], log.body)'
  - 'set(log.attributes["svc"], resource.attributes["service.name"])'
"#,
    );
    let rec = |n: i32, body: &str| LogRecord {
        time_unix_nano: 7,
        observed_time_unix_nano: 8,
        severity_number: n,
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        attributes: vec![kv("a", s("b"))],
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        flags: 1,
        event_name: "e".into(),
        ..Default::default()
    };
    let input = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("auth"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![rec(13, "login password=hunter2 ok"), rec(5, "debug")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut decoded = input.clone();
    t.logs(&mut decoded);
    let out = t
        .on_wire_bytes(
            crate::pdata::Signal::Logs,
            &input.encode_to_vec(),
            &mut wire::Scratch::default(),
        )
        .expect("on the wire");
    let mut on_wire = ExportLogsServiceRequest::decode(&out[..]).unwrap();
    for r in [&mut on_wire, &mut decoded] {
        for rec in &mut r.resource_logs[0].scope_logs[0].log_records {
            rec.attributes.sort_by(|a, b| a.key.cmp(&b.key));
        }
    }
    assert_eq!(on_wire, decoded);
    let r = &decoded.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(r[0].severity_text, "WARN");
    assert_eq!(
        show(&r[1].attributes),
        ["a=b", "body.copy=debug", "svc=auth"]
    );
}

#[test]
fn time_converter_and_time_fields_as_documented() {
    let t = transform(
        r#"
log_statements:
  - 'set(log.time, Time(log.attributes["ts"], "%Y-%m-%dT%H:%M:%S%z"))'
  - 'set(log.attributes["parsed"], Time("2012-11-01T22:08:41+0000 EST", "%Y-%m-%dT%H:%M:%S%z %Z"))'
  - 'set(log.attributes["ctime"], Time(log.attributes["c"], "%a %b %e %H:%M:%S %Y", "UTC", "en"))'
  - 'set(log.observed_time, Now()) where log.observed_time_unix_nano == 0'
  - 'set(log.attributes["bad"], Time(log.attributes["c"], "%F"))'
trace_statements:
  - 'set(span.end_time_unix_nano, span.start_time_unix_nano + 1500)'
  - 'set(span.start_time, Time("2024-01-02 03:04:05.25", "%Y-%m-%d %H:%M:%S.%L"))'
"#,
    );
    let input = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    attributes: vec![
                        kv("ts", s("2023-05-06T07:08:09+0200")),
                        kv("c", s("Sat Jan  2 15:04:05 2021")),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut logs = input.clone();
    t.logs(&mut logs);
    let r = &logs.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(r.time_unix_nano, 1_683_349_689_000_000_000);
    assert!(r.observed_time_unix_nano > 1_700_000_000_000_000_000);
    let got = show(&r.attributes);
    assert!(
        got.contains(&"parsed=1351807721000000000".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"ctime=1609599845000000000".to_string()),
        "{got:?}"
    );
    assert!(!got.iter().any(|a| a.starts_with("bad=")), "{got:?}");
    // The same on the wire.
    let out = t
        .on_wire_bytes(
            crate::pdata::Signal::Logs,
            &input.encode_to_vec(),
            &mut wire::Scratch::default(),
        )
        .expect("on the wire");
    let w = ExportLogsServiceRequest::decode(&out[..]).unwrap();
    let wr = &w.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(wr.time_unix_nano, r.time_unix_nano);
    assert!(wr.observed_time_unix_nano > 1_700_000_000_000_000_000);

    let mut tr = one_span(vec![]);
    tr.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano = 1_000;
    t.traces(&mut tr);
    let sp = &tr.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(sp.end_time_unix_nano, 2_500);
    assert_eq!(sp.start_time_unix_nano, 1_704_164_645_250_000_000);
}

#[test]
fn time_converter_config_errors() {
    for (stmt, want) in [
        (
            r#"set(log.time, Time(log.body, "%Y-%m-%d", "America/New_York"))"#,
            "column 42: location \"America/New_York\" is not supported: weir has no time zone database",
        ),
        (
            r#"set(log.time, Time(log.body, "%A %h %e %Y", "", "it"))"#,
            "column 49: locale \"it\" is not supported",
        ),
        (
            r#"set(log.time, Time(log.body, "%Y %Q"))"#,
            "column 30: invalid strptime format: [unsupported ctimefmt.toNative() directive: %Q]",
        ),
        (
            r#"set(log.time, Time(log.body, "%H:%M:%S%L"))"#,
            "invalid fractional seconds directive: 'S%L'. must be preceded with '.' or ','",
        ),
        (r#"set(log.time, Time(log.body))"#, "Time expects 2 to 4 arguments"),
        (
            r#"set(log.time, Time(log.body, log.body))"#,
            "column 30: the format of Time must be a string",
        ),
        (r#"set(log.time, Time(log.body, ""))"#, "format cannot be nil"),
    ] {
        let e = refused("log_statements", stmt);
        assert!(e.contains(want), "{stmt}: {e}");
    }
}

#[test]
fn time_duration_and_case_converters_as_documented() {
    let t = transform(
        r#"
trace_statements:
  - 'set(span.attributes["start_s"], UnixSeconds(span.start_time))'
  - 'set(span.attributes["start_ms"], UnixMilli(span.start_time))'
  - 'set(span.attributes["start_us"], UnixMicro(span.start_time))'
  - 'set(span.attributes["start_ns"], UnixNano(span.start_time))'
  - 'set(span.attributes["dur_ms"], Milliseconds(span.end_time - span.start_time))'
  - 'set(span.attributes["dur_s"], Seconds(span.end_time - span.start_time))'
  - 'set(span.attributes["dur_min"], Minutes(Duration("90s")))'
  - 'set(span.attributes["dur_h"], Hours(Duration("90m")))'
  - 'set(span.attributes["dur_us"], Microseconds(Duration("3ms")))'
  - 'set(span.attributes["dur_ns"], Nanoseconds(Duration("2us")))'
  - 'set(span.attributes["day"], FormatTime(TruncateTime(span.start_time, Duration("24h")), "%Y-%m-%d %H:%M"))'
  - 'set(span.attributes["when"], FormatTime(span.start_time, "%a, %d %b %Y %T.%L %z"))'
  - 'set(span.attributes["epoch"], FormatTime(Unix(1700000000, 5000000), "%FT%T.%L"))'
  - 'set(span.attributes["lower"], ToLowerCase(span.name))'
  - 'set(span.attributes["upper"], ToUpperCase(span.name))'
  - 'set(span.attributes["snake"], ToSnakeCase("HTTPServerDuration"))'
  - 'set(span.attributes["camel"], ToCamelCase("http_server_duration"))'
  - 'set(span.attributes["root"], true) where IsRootSpan()'
"#,
    );
    let mut r = one_span(vec![]);
    {
        let sp = &mut r.resource_spans[0].scope_spans[0].spans[0];
        // 2023-05-06 07:08:09.250 UTC, 1.5 s long.
        sp.start_time_unix_nano = 1_683_356_889_250_000_000;
        sp.end_time_unix_nano = 1_683_356_890_750_000_000;
    }
    t.traces(&mut r);
    let got = show(&r.resource_spans[0].scope_spans[0].spans[0].attributes);
    for want in [
        "start_s=1683356889",
        "start_ms=1683356889250",
        "start_us=1683356889250000",
        "start_ns=1683356889250000000",
        "dur_ms=1500",
        "dur_s=1.5",
        "dur_min=1.5",
        "dur_h=1.5",
        "dur_us=3000",
        "dur_ns=2000",
        "day=2023-05-06 00:00",
        "when=Sat, 06 May 2023 07:08:09.25 Z",
        "epoch=2023-11-14T22:13:20.005",
        "lower=get /orders",
        "upper=GET /ORDERS",
        "snake=http_server_duration",
        "camel=HttpServerDuration",
        "root=true",
    ] {
        assert!(got.contains(&want.to_string()), "{want} in {got:?}");
    }
    // A span with a parent is not a root.
    let mut r = one_span(vec![]);
    r.resource_spans[0].scope_spans[0].spans[0].parent_span_id = vec![1; 8];
    t.traces(&mut r);
    assert!(
        !show(&r.resource_spans[0].scope_spans[0].spans[0].attributes)
            .iter()
            .any(|a| a.starts_with("root="))
    );
    // Errors: arity, a format that is not a literal, IsRootSpan outside spans.
    for (yaml, want) in [
        (
            r#"trace_statements: ['set(span.attributes["x"], Unix())']"#,
            "Unix expects 1 or 2 arguments, got 0",
        ),
        (
            r#"trace_statements: ['set(span.attributes["x"], FormatTime(span.start_time, span.name))']"#,
            "the format of FormatTime must be a string",
        ),
        (
            r#"trace_statements: ['set(span.attributes["x"], FormatTime(span.start_time, "%Q"))']"#,
            "unsupported ctimefmt.toNative() directive: %Q",
        ),
        (
            r#"log_statements: ['set(log.attributes["x"], true) where IsRootSpan()']"#,
            "IsRootSpan is only available in the span context",
        ),
        (
            r#"trace_statements: ['set(span.attributes["x"], ToLowerCase(span.name, "x"))']"#,
            "ToLowerCase expects 1 argument, got 2",
        ),
    ] {
        let cfg: TransformConfig = serde_yaml::from_str(yaml).unwrap();
        let e = Transform::new(&cfg).unwrap_err();
        assert!(e[0].1.contains(want), "{yaml}: {e:?}");
    }
}

#[test]
fn parse_key_value_as_upstream() {
    let t = transform(
        r#"
error_mode: ignore
log_statements:
  - 'merge_maps(log.attributes, ParseKeyValue(log.body), "upsert")'
  - 'set(log.attributes["custom"], ParseKeyValue(log.attributes["c"], ":", "!"))'
"#,
    );
    let run = |body: &str, c: &str| -> Vec<String> {
        let mut r = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue {
                            value: Some(s(body)),
                        }),
                        attributes: vec![kv("c", s(c))],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        t.logs(&mut r);
        show(&r.resource_logs[0].scope_logs[0].log_records[0].attributes)
    };
    assert_eq!(
        run("name=ottl func=key_value", "x"),
        ["c=x", "func=key_value", "name=ottl"]
    );
    // Quotes keep delimiters in and are left out; a value may hold the delimiter; leading,
    // trailing and doubled pair delimiters are ignored; the last of a repeated key wins.
    assert_eq!(
        run(r#"  msg="value with spaces" 'k 2'=v2=v3  k=1  k=2 "#, "x"),
        ["c=x", "k 2=v2=v3", "k=2", "msg=value with spaces"]
    );
    // A pair without the delimiter, an unclosed quote, an empty body: nothing set.
    assert_eq!(run("a=1 b", "x"), ["c=x"]);
    assert_eq!(run(r#"a="1 b=2"#, "x"), ["c=x"]);
    assert_eq!(run("", "x"), ["c=x"]);
    // Custom delimiters.
    let got = run("", "name:ottl!func:kv");
    assert!(
        got.iter()
            .any(|g| g.starts_with("custom=KvlistValue") && g.contains("ottl") && g.contains("kv")),
        "{got:?}"
    );
    // Config errors, as upstream's.
    for (st, want) in [
        (
            r#"set(log.attributes["x"], ParseKeyValue(log.body, ""))"#,
            "delimiter cannot be set to an empty string",
        ),
        (
            r#"set(log.attributes["x"], ParseKeyValue(log.body, "=", ""))"#,
            "pair delimiter cannot be set to an empty string",
        ),
        (
            r#"set(log.attributes["x"], ParseKeyValue(log.body, "=", "="))"#,
            "pair delimiter \"=\" cannot be equal to delimiter \"=\"",
        ),
        (
            r#"set(log.attributes["x"], ParseKeyValue(log.body, log.body))"#,
            "the delimiter of ParseKeyValue must be a string",
        ),
    ] {
        let e = refused("log_statements", st);
        assert!(e.contains(want), "{st}: {e}");
    }
}

#[test]
fn a_key_sent_twice_is_redacted_as_a_decoder_reads_it() {
    // KeyValue{key: "x", key: "password", value: "hunter2"}: a decoder keeps the last key.
    let mut kv = vec![0x0a, 1, b'x', 0x0a, 8];
    kv.extend_from_slice(b"password");
    kv.extend_from_slice(&[0x12, 9, 0x0a, 7]);
    kv.extend_from_slice(b"hunter2");
    let bytes = crate::processors::filter::tests::span_with_raw_attribute(&kv);
    for st in [
        r#"delete_key(span.attributes, "password")"#,
        r#"set(span.attributes["password"], "***")"#,
    ] {
        let t = transform(&format!("trace_statements: ['{st}']"));
        let out = t
            .on_wire_bytes(
                crate::pdata::Signal::Traces,
                &bytes,
                &mut wire::Scratch::default(),
            )
            .expect("on the wire");
        let got = ExportTraceServiceRequest::decode(&out[..]).unwrap();
        let attrs = show(&got.resource_spans[0].scope_spans[0].spans[0].attributes);
        assert!(
            !attrs.iter().any(|a| a.contains("hunter2")),
            "{st}: {attrs:?}"
        );
        assert!(attrs.len() <= 1, "{st}: one password at most: {attrs:?}");
    }
}

#[test]
fn error_mode_as_upstream_on_both_paths() {
    use crate::pdata::{Batch, Context, Payload, Signal};
    use crate::pipeline::Processor;
    use crate::telemetry::metrics::Registry;
    use std::sync::Arc;
    // Two spans, one with user.email. SHA256 of a missing attribute is an error upstream (its
    // target must be a string): what happens then is the error_mode's business.
    let req = || {
        let mut r = one_span(span_attrs());
        let mut other = r.resource_spans[0].scope_spans[0].spans[0].clone();
        other.attributes.retain(|kv| kv.key != "user.email");
        r.resource_spans[0].scope_spans[0].spans.push(other);
        r
    };
    let statements = r#"
  - 'set(span.attributes["email.hash"], SHA256(span.attributes["user.email"]))'
  - 'set(span.attributes["after"], true)'"#;
    for encoded in [true, false] {
        for (mode, forwarded, errors, after) in [
            ("", false, 1, 0),
            ("error_mode: propagate", false, 1, 0),
            ("error_mode: ignore", true, 1, 2),
            ("error_mode: silent", true, 1, 2),
        ] {
            let yaml = format!("{mode}\ntrace_statements:{statements}");
            let cfg: TransformConfig = serde_yaml::from_str(&yaml).unwrap();
            let reg = Registry::default();
            let mut stage = TransformProcessor::new("transform/x", &cfg, &reg);
            let r = req();
            let batch = Batch::traces_for_test(r, encoded);
            let mut out = Vec::new();
            stage.process(batch, &mut out);
            let what = format!("{mode:?} encoded={encoded}");
            assert_eq!(out.len(), usize::from(forwarded), "{what}");
            let text = reg.render();
            assert!(
                text.contains(&format!(
                    r#"weir_processor_transform_statement_errors_total{{processor="transform/x"}} {errors}"#
                )),
                "{what}: {text}"
            );
            if !forwarded {
                assert!(
                    text.contains(
                        r#"weir_processor_dropped_items_total{processor="transform/x"} 2"#
                    ),
                    "{what}: {text}"
                );
                continue;
            }
            let got = match &out[0].payload {
                Payload::Encoded(b) => ExportTraceServiceRequest::decode(&b[..]).unwrap(),
                Payload::Traces(r) => r.clone(),
                _ => panic!("{what}"),
            };
            let spans = &got.resource_spans[0].scope_spans[0].spans;
            // The failing statement did nothing; the next one ran on both spans.
            let with = |k: &str| {
                spans
                    .iter()
                    .filter(|s| show(&s.attributes).iter().any(|a| a.starts_with(k)))
                    .count()
            };
            assert_eq!(with("after="), after, "{what}");
            assert_eq!(with("email.hash="), 1, "{what}");
        }
    }
    // A group's own error_mode wins over the processor's.
    let cfg: TransformConfig = serde_yaml::from_str(
        r#"
error_mode: propagate
trace_statements:
  - context: span
    error_mode: ignore
    statements: ['set(attributes["h"], SHA256(attributes["user.email"]))']
"#,
    )
    .unwrap();
    let reg = Registry::default();
    let mut stage = TransformProcessor::new("t", &cfg, &reg);
    let mut out = Vec::new();
    let r = req();
    stage.process(
        Batch::encoded(
            Signal::Traces,
            r.encode_to_vec().into(),
            2,
            Arc::new(Context::default()),
        ),
        &mut out,
    );
    assert_eq!(out.len(), 1);
}

#[test]
fn format_as_documented() {
    let t = transform(
        r#"
trace_statements:
  - 'set(span.attributes["route"], Format("%s %v", [span.name, span.attributes["http.status_code"]]))'
  - 'set(span.attributes["code"], Format("%03d", [span.attributes["http.status_code"]]))'
"#,
    );
    let mut r = one_span(span_attrs());
    t.traces(&mut r);
    let got = show(&r.resource_spans[0].scope_spans[0].spans[0].attributes);
    assert!(
        got.contains(&"route=GET /orders 200".to_string()),
        "{got:?}"
    );
    assert!(got.contains(&"code=200".to_string()), "{got:?}");
    for (st, want) in [
        (
            r#"set(span.name, Format(span.name, []))"#,
            "the format of Format must be a string",
        ),
        (
            r#"set(span.name, Format("%s", span.name))"#,
            "the values of Format must be a list",
        ),
        (
            r#"set(span.name, Format("%s"))"#,
            "Format expects 2 arguments",
        ),
    ] {
        let e = refused("trace_statements", st);
        assert!(e.contains(want), "{st}: {e}");
    }
}

#[test]
fn hash_converters_as_upstreams_tests() {
    let t = transform(
        r#"
log_statements:
  - 'set(log.attributes["m32"], Murmur3Hash(log.body))'
  - 'set(log.attributes["m128"], Murmur3Hash128(log.body))'
  - 'set(log.attributes["fnv"], FNV(log.attributes["w"]))'
  - 'set(log.attributes["sha512"], SHA512(log.body))'
  - 'set(log.attributes["e32"], Murmur3Hash(log.attributes["empty"]))'
  - 'set(log.attributes["e128"], Murmur3Hash128(log.attributes["empty"]))'
"#,
    );
    let mut r = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue {
                        value: Some(s("Hello World")),
                    }),
                    attributes: vec![kv("w", s("hello world")), kv("empty", s(""))],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.logs(&mut r);
    let got = show(&r.resource_logs[0].scope_logs[0].log_records[0].attributes);
    // Upstream's test cases (pkg/ottl/ottlfuncs), FNV-1a and SHA-512 from their definitions.
    for want in [
        "m32=ce837619",
        "m128=dbc2a0c1ab26631a27b4c09fcf1fe683",
        "e32=00000000",
        "e128=00000000000000000000000000000000",
        "fnv=8618312879776256743",
        "sha512=2c74fd17edafd80e8447b0d46741ee243b7eb74dd2149a0ab1b9246fb30382f27e853d8585719e0e67cbda0daa8f51671064615d645ae27acb15bfb1447f459b",
    ] {
        assert!(got.contains(&want.to_string()), "{want} in {got:?}");
    }
}

#[test]
fn failures_in_where_clauses_and_group_conditions_follow_error_mode() {
    use crate::pdata::{Batch, Context, Payload, Signal};
    use crate::pipeline::Processor;
    use crate::telemetry::metrics::Registry;
    use std::sync::Arc;
    // A where clause that fails skips the edit even when its nil would compare true.
    let t = transform(
        r#"
error_mode: ignore
trace_statements:
  - 'set(span.attributes["touched"], true) where Len(span.attributes["missing"]) != 0'
  - 'set(span.attributes["hex"], Hex(span.attributes["missing"]))'
  - 'set(span.attributes["sub"], Substring("héllo", 0, 2))'
"#,
    );
    let mut r = one_span(vec![]);
    t.traces(&mut r);
    let got = show(&r.resource_spans[0].scope_spans[0].spans[0].attributes);
    assert!(!got.iter().any(|a| a.starts_with("touched")), "{got:?}");
    // Hex of nil is "" (no bytes), not a failure; Substring cuts bytes, keeping UTF-8.
    assert!(got.contains(&"hex=".to_string()), "{got:?}");
    assert!(got.contains(&"sub=h\u{fffd}".to_string()), "{got:?}");
    // A group condition that fails: false under ignore, the request dropped under propagate.
    for (mode, forwarded) in [("ignore", true), ("propagate", false)] {
        let cfg: TransformConfig = serde_yaml::from_str(&format!(
            r#"
trace_statements:
  - context: span
    error_mode: {mode}
    conditions: ['SHA256(attributes["missing"]) == "x"', 'name == "GET /orders"']
    statements: ['set(attributes["ran"], true)']
"#
        ))
        .unwrap();
        let reg = Registry::default();
        let mut stage = TransformProcessor::new("t", &cfg, &reg);
        let mut out = Vec::new();
        stage.process(
            Batch::encoded(
                Signal::Traces,
                one_span(vec![]).encode_to_vec().into(),
                1,
                Arc::new(Context::default()),
            ),
            &mut out,
        );
        assert_eq!(out.len(), usize::from(forwarded), "{mode}");
        if let Some(b) = out.first() {
            let Payload::Encoded(bytes) = &b.payload else {
                panic!("encoded")
            };
            let got = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
            // The other condition held.
            assert!(
                show(&got.resource_spans[0].scope_spans[0].spans[0].attributes)
                    .contains(&"ran=true".to_string())
            );
        }
        assert!(reg
            .render()
            .contains(r#"weir_processor_transform_statement_errors_total{processor="t"} 1"#));
    }
    // ParseKeyValue on 100,000 distinct pairs: linear, the last of a repeated key wins.
    let body: String = (0..100_000)
        .map(|i| format!("k{i}=v{i} "))
        .collect::<String>()
        + "k7=last";
    let t = transform(r#"log_statements: ['set(log.attributes["m"], ParseKeyValue(log.body))']"#);
    let mut r = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue {
                        value: Some(s(&body)),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let started = std::time::Instant::now();
    t.logs(&mut r);
    let attrs = &r.resource_logs[0].scope_logs[0].log_records[0].attributes;
    let Some(Value::KvlistValue(m)) = attrs[0].value.as_ref().and_then(|v| v.value.as_ref()) else {
        panic!("a map")
    };
    assert_eq!(m.values.len(), 100_000);
    assert_eq!(
        m.values[7].value.as_ref().and_then(|v| v.value.clone()),
        Some(s("last"))
    );
    eprintln!("100,000 pairs parsed in {:?}", started.elapsed());
}

#[test]
fn uuid_is_a_random_version_4_uuid() {
    let t = transform(
        r#"trace_statements: ['set(span.attributes["id"], UUID())', 'set(span.attributes["id2"], UUID())']"#,
    );
    let mut r = one_span(vec![]);
    t.traces(&mut r);
    let attrs = &r.resource_spans[0].scope_spans[0].spans[0].attributes;
    let get = |k: &str| match attrs
        .iter()
        .find(|kv| kv.key == k)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
    {
        Some(Value::StringValue(s)) => s,
        other => panic!("{k}: {other:?}"),
    };
    let (a, b) = (get("id"), get("id2"));
    assert_ne!(a, b);
    for u in [&a, &b] {
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{u}"
        );
        assert!(u
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(parts[2].starts_with('4'), "{u}");
        assert!(
            matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
            "{u}"
        );
    }
    assert!(refused(
        "trace_statements",
        r#"set(span.attributes["x"], UUID(span.name))"#
    )
    .contains("UUID expects 0 arguments, got 1"));
}
