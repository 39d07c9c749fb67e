//! The filter processor against the Collector's documented examples (processor/filterprocessor
//! README and the v0.146 context-inference examples): input, conditions, what is left.
use super::config::FilterConfig;
use super::*;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    number_data_point, Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

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

fn filter(yaml: &str) -> Filter {
    let cfg: FilterConfig = serde_yaml::from_str(yaml).expect("yaml");
    Filter::new(&cfg).unwrap_or_else(|p| panic!("{yaml}: {p:?}"))
}

fn problems(yaml: &str) -> Vec<(String, String)> {
    let cfg: FilterConfig = serde_yaml::from_str(yaml).expect("yaml");
    match Filter::new(&cfg) {
        Ok(_) => panic!("{yaml} compiled"),
        Err(p) => p,
    }
}

/// One resource (`host.name`, `k8s.pod.name`) with spans of the given names and attributes.
fn traces(host: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("host.name", s(host)),
                    kv("k8s.pod.name", s("my-pod-name-7")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
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
        attributes: attrs,
        ..Default::default()
    }
}

fn names(r: &ExportTraceServiceRequest) -> Vec<String> {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn spans_the_combined_readme_example() {
    let f = filter(
        r#"
traces:
  span:
    - 'attributes["container.name"] == "app_container_1"'
    - 'resource.attributes["host.name"] == "localhost"'
    - 'name == "app_3"'
  spanevent:
    - 'attributes["grpc"] == true'
    - 'IsMatch(name, ".*grpc.*")'
"#,
    );
    let mut keep_me = span("keep", vec![]);
    keep_me.events = vec![
        span::Event {
            name: "grpc.call".into(),
            ..Default::default()
        },
        span::Event {
            name: "flagged".into(),
            attributes: vec![kv("grpc", Value::BoolValue(true))],
            ..Default::default()
        },
        span::Event {
            name: "kept event".into(),
            ..Default::default()
        },
    ];
    let mut r = traces(
        "web-1",
        vec![
            span("a", vec![kv("container.name", s("app_container_1"))]),
            span("app_3", vec![]),
            keep_me,
            span("other", vec![kv("container.name", s("app_container_2"))]),
        ],
    );
    f.traces(&mut r);
    assert_eq!(names(&r), ["keep", "other"]);
    let events: Vec<&str> = r.resource_spans[0].scope_spans[0].spans[0]
        .events
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(events, ["kept event"]);
    // A resource attribute drops every span of the resource, and the empty resource goes.
    let mut r = traces("localhost", vec![span("x", vec![]), span("y", vec![])]);
    f.traces(&mut r);
    assert!(r.resource_spans.is_empty());
}

#[test]
fn spans_by_resource_pattern_and_http_presence() {
    // "Dropping data based on a resource attribute".
    let f = filter(
        r#"traces: {span: ['IsMatch(resource.attributes["k8s.pod.name"], "my-pod-name.*")']}"#,
    );
    let mut r = traces("h", vec![span("a", vec![])]);
    f.traces(&mut r);
    assert!(names(&r).is_empty());
    // "Dropping non-HTTP spans" and "Dropping HTTP spans".
    let http = || {
        traces(
            "h",
            vec![
                span("GET /", vec![kv("http.request.method", s("GET"))]),
                span("internal", vec![]),
            ],
        )
    };
    let mut r = http();
    filter(r#"traces: {span: ['attributes["http.request.method"] == nil']}"#).traces(&mut r);
    assert_eq!(names(&r), ["GET /"]);
    let mut r = http();
    filter(r#"traces: {span: ['attributes["http.request.method"] != nil']}"#).traces(&mut r);
    assert_eq!(names(&r), ["internal"]);
}

#[test]
fn context_inferred_trace_conditions_as_the_v0_146_example() {
    let f = filter(
        r#"
trace_conditions:
  - resource.attributes["host.name"] == "localhost"
  - span.attributes["container.name"] == "app_container_1"
  - span.name == "app_3"
  - spanevent.attributes["grpc"] == true
  - IsMatch(spanevent.name, ".*grpc.*")
"#,
    );
    let mut keep = span("keep", vec![]);
    keep.events = vec![
        span::Event {
            name: "grpc.x".into(),
            ..Default::default()
        },
        span::Event {
            name: "y".into(),
            ..Default::default()
        },
    ];
    let mut r = traces(
        "web",
        vec![
            span("app_3", vec![]),
            span("c", vec![kv("container.name", s("app_container_1"))]),
            keep,
        ],
    );
    f.traces(&mut r);
    assert_eq!(names(&r), ["keep"]);
    assert_eq!(r.resource_spans[0].scope_spans[0].spans[0].events.len(), 1);
    // A condition that mixes contexts runs in the lower one: it drops span events, never
    // their spans.
    let f = filter(
        r#"trace_conditions: ['resource.attributes["host.name"] == "localhost" or spanevent.name == "grpc.timeout"']"#,
    );
    let mut with_events = span("s", vec![]);
    with_events.events = vec![span::Event {
        name: "other".into(),
        ..Default::default()
    }];
    let mut r = traces("localhost", vec![with_events]);
    f.traces(&mut r);
    assert_eq!(names(&r), ["s"]);
    assert!(r.resource_spans[0].scope_spans[0].spans[0]
        .events
        .is_empty());
}

#[test]
fn status_and_kind_enums_in_span_conditions() {
    let f = filter(
        r#"trace_conditions: ['span.status.code != STATUS_CODE_ERROR and span.kind == SPAN_KIND_INTERNAL']"#,
    );
    let mut err = span("err", vec![]);
    err.kind = 1;
    err.status = Some(Status {
        code: 2,
        ..Default::default()
    });
    let mut ok = span("ok", vec![]);
    ok.kind = 1;
    let mut server = span("server", vec![]);
    server.kind = 2;
    let mut r = traces("h", vec![err, ok, server]);
    f.traces(&mut r);
    assert_eq!(names(&r), ["err", "server"]);
}

fn gauge(name: &str, points: Vec<(i64, Vec<KeyValue>)>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points
                .into_iter()
                .map(|(v, a)| NumberDataPoint {
                    attributes: a,
                    value: Some(number_data_point::Value::AsInt(v)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    }
}

fn metrics(service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(service)), kv("my_label", s("abc123"))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric_names(r: &ExportMetricsServiceRequest) -> Vec<String> {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| format!("{}:{}", m.name, points_of(m).len()))
        .collect()
}

fn summary(name: &str) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint::default()],
        })),
        ..Default::default()
    }
}

fn histogram(name: &str) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint::default(), HistogramDataPoint::default()],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    }
}

#[test]
fn metrics_the_combined_readme_example() {
    let f = filter(
        r#"
metrics:
  metric:
    - 'name == "my.metric" and resource.attributes["my_label"] == "abc123"'
    - 'type == METRIC_DATA_TYPE_HISTOGRAM'
  datapoint:
    - 'metric.type == METRIC_DATA_TYPE_SUMMARY'
    - 'resource.attributes["service.name"] == "my_service_name"'
"#,
    );
    let mut r = metrics(
        "svc",
        vec![
            gauge("my.metric", vec![(1, vec![])]),
            histogram("latency"),
            summary("sizes"),
            gauge("kept", vec![(1, vec![]), (2, vec![])]),
        ],
    );
    f.metrics(&mut r);
    assert_eq!(metric_names(&r), ["kept:2"]);
    // Every point of the service dropped: its metrics, scope and resource go too.
    let mut r = metrics("my_service_name", vec![gauge("a", vec![(1, vec![])])]);
    f.metrics(&mut r);
    assert!(r.resource_metrics.is_empty());
}

#[test]
fn metric_type_value_and_datapoint_attribute_examples() {
    // "Dropping metrics with invalid type": a metric without data.
    let f = filter("metrics: {metric: ['type == METRIC_DATA_TYPE_NONE']}");
    let mut r = metrics(
        "s",
        vec![
            Metric {
                name: "empty".into(),
                ..Default::default()
            },
            gauge("g", vec![(1, vec![])]),
        ],
    );
    f.metrics(&mut r);
    assert_eq!(metric_names(&r), ["g:1"]);
    // "Dropping specific metric and value".
    let f =
        filter(r#"metrics: {datapoint: ['metric.name == "k8s.pod.phase" and value_int == 4']}"#);
    let mut r = metrics(
        "s",
        vec![
            gauge("k8s.pod.phase", vec![(4, vec![]), (2, vec![])]),
            gauge("other", vec![(4, vec![])]),
            Metric {
                name: "k8s.pod.phase".into(),
                ..Default::default()
            },
        ],
    );
    f.metrics(&mut r);
    // The metric without data is never dropped by data point conditions.
    assert_eq!(
        metric_names(&r),
        ["k8s.pod.phase:1", "other:1", "k8s.pod.phase:0"]
    );
    // HasAttrKeyOnDatapoint / HasAttrOnDatapoint: the first point with the key decides.
    let bad = || {
        metrics(
            "s",
            vec![
                gauge(
                    "with",
                    vec![(1, vec![]), (2, vec![kv("bad.metric", s("true"))])],
                ),
                gauge("other value", vec![(1, vec![kv("bad.metric", s("false"))])]),
                gauge("without", vec![(1, vec![kv("ok", s("x"))])]),
            ],
        )
    };
    let mut r = bad();
    filter(r#"metrics: {metric: ['HasAttrKeyOnDatapoint("bad.metric")']}"#).metrics(&mut r);
    assert_eq!(metric_names(&r), ["without:1"]);
    let mut r = bad();
    filter(r#"metrics: {metric: ['HasAttrOnDatapoint("bad.metric", "true")']}"#).metrics(&mut r);
    assert_eq!(metric_names(&r), ["other value:1", "without:1"]);
}

#[test]
fn datapoint_fields_of_another_kind_read_as_nil() {
    let f = filter(
        r#"metric_conditions: ['datapoint.count > 5', 'metric.is_monotonic == true', 'datapoint.value_double == 0.5']"#,
    );
    let mut hist = histogram("h");
    if let Some(metric::Data::Histogram(h)) = &mut hist.data {
        h.data_points[0].count = 10;
    }
    let sum = Metric {
        name: "mono".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint::default()],
            is_monotonic: true,
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    let half = Metric {
        name: "half".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![
                NumberDataPoint {
                    value: Some(number_data_point::Value::AsDouble(0.5)),
                    ..Default::default()
                },
                // value_double of an int point reads 0, not nil (pdata's DoubleValue()).
                NumberDataPoint {
                    value: Some(number_data_point::Value::AsInt(7)),
                    ..Default::default()
                },
            ],
        })),
        ..Default::default()
    };
    let mut r = metrics("s", vec![hist, sum, half, gauge("g", vec![(9, vec![])])]);
    f.metrics(&mut r);
    assert_eq!(metric_names(&r), ["h:1", "half:1", "g:1"]);
}

fn logs(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("noisy-service"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn rec(body: &str, severity: i32) -> LogRecord {
    LogRecord {
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        severity_number: severity,
        ..Default::default()
    }
}

fn bodies(r: &ExportLogsServiceRequest) -> Vec<String> {
    r.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .map(|l| match l.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            _ => String::new(),
        })
        .collect()
}

#[test]
fn logs_the_combined_readme_example() {
    let f = filter(
        r#"
logs:
  log_record:
    - 'IsMatch(body, ".*password.*")'
    - 'severity_number < SEVERITY_NUMBER_WARN'
"#,
    );
    let mut r = logs(vec![
        rec("user password=hunter2", 17),
        rec("debug noise", 5),
        rec("disk almost full", 13),
        rec("failed", 17),
    ]);
    f.logs(&mut r);
    assert_eq!(bodies(&r), ["disk almost full", "failed"]);
}

#[test]
fn advanced_log_groups_with_their_own_error_modes() {
    let f = filter(
        r#"
error_mode: ignore
log_conditions:
  - error_mode: propagate
    conditions: [log.severity_number < SEVERITY_NUMBER_WARN]
  - error_mode: silent
    context: resource
    conditions: ['attributes["service.name"] == "other"']
"#,
    );
    let mut r = logs(vec![rec("info", 9), rec("warn", 13)]);
    f.logs(&mut r);
    assert_eq!(bodies(&r), ["warn"]);
    let f = filter(r#"log_conditions: ['resource.attributes["service.name"] == "noisy-service"']"#);
    let mut r = logs(vec![rec("x", 13)]);
    f.logs(&mut r);
    assert!(r.resource_logs.is_empty());
}

#[test]
fn config_errors_are_upstreams_and_all_reported() {
    let p = problems(
        r#"
error_mode: loud
trace_conditions: ['span.name == "a"', {conditions: ['span.name == "b"']}]
metric_conditions: [{context: span, conditions: ['name == "x"']}]
log_conditions: ['severity_number < 9']
traces: {span: ['name === "x"']}
logs: {include: {match_type: strict}}
"#,
    );
    let got: Vec<(&str, &str)> = p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        got,
        [
            ("error_mode", "unknown error mode loud"),
            (
                "logs.include",
                r#"at least one of "resource_attributes", "record_attributes", "severity_texts", "severity_number" or "bodies" field must be specified"#
            ),
            (
                "traces.span[0]",
                r#"invalid OTTL condition "name === \"x\"": column 8: expected a value, got "=""#
            ),
            (
                "trace_conditions",
                r#"cannot use context inferred trace conditions "trace_conditions" and the settings "traces.resource", "traces.span", "traces.spanevent" at the same time"#
            ),
            (
                "log_conditions",
                r#"cannot use context inferred log conditions "log_conditions" and the settings "logs.resource", "logs.log", "logs.include", "logs.exclude" at the same time"#
            ),
            (
                "trace_conditions",
                "configuring multiple configuration styles is not supported, please use only Basic configuration or only Advanced configuration"
            ),
            ("metric_conditions[0].context", "unknown context span"),
            (
                "log_conditions[0]",
                r#"unable to infer a valid context (log, scope, resource) from condition "severity_number < 9": prefix its paths with their context (e.g. log.attributes["k"]), or give the group a context"#
            ),
        ]
    );
    // Functions of another context, unknown paths.
    let p = problems(r#"traces: {span: ['HasAttrKeyOnDatapoint("k")', 'value_int == 1']}"#);
    assert_eq!(
        p[0].1,
        r#"invalid OTTL condition "HasAttrKeyOnDatapoint(\"k\")": column 1: HasAttrKeyOnDatapoint is only available in the metric context"#
    );
    assert!(
        p[1].1
            .contains(r#"unknown path "value_int" in the span context"#),
        "{p:?}"
    );
    let p = problems("profile_conditions: ['x == 1']");
    assert_eq!(p[0].0, "profile_conditions");
}

#[test]
fn the_stage_counts_what_it_drops_and_forwards_nothing_empty() {
    use crate::pdata::Context;
    use std::sync::Arc;
    let reg = Registry::default();
    let cfg: FilterConfig =
        serde_yaml::from_str(r#"trace_conditions: ['span.name == "/health"']"#).unwrap();
    let mut stage = FilterProcessor::new("filter/health", &cfg, &reg);
    let batch = |r: ExportTraceServiceRequest| {
        let n = crate::pdata::count_spans(&r);
        Batch::encoded(
            Signal::Traces,
            bytes::Bytes::from(prost::Message::encode_to_vec(&r)),
            n,
            Arc::new(Context::default()),
        )
    };
    let mut out = Vec::new();
    stage.process(
        batch(traces(
            "h",
            vec![span("/health", vec![]), span("GET /a", vec![])],
        )),
        &mut out,
    );
    stage.process(batch(traces("h", vec![span("/health", vec![])])), &mut out);
    assert_eq!(out.len(), 1, "the batch left empty is not forwarded");
    assert_eq!(out[0].items, 1);
    let text = reg.render();
    assert!(
        text.contains(r#"otelcol_processor_filter_spans_filtered_total{filter="filter/health"} 2"#),
        "{text}"
    );
    // A batch it drops nothing from goes on as the bytes that came in (no re-encoding).
    let bytes = prost::Message::encode_to_vec(&traces("h", vec![span("GET /b", vec![])]));
    stage.process(
        Batch::encoded(
            Signal::Traces,
            bytes::Bytes::from(bytes.clone()),
            1,
            Arc::new(Context::default()),
        ),
        &mut out,
    );
    match &out[1].payload {
        Payload::Encoded(b) => assert_eq!(&b[..], &bytes[..]),
        _ => panic!("re-encoded"),
    }
    assert!(
        out[1].held.is_none(),
        "the decoded copy's charge is given back"
    );
    // Logs pass a trace filter untouched, without being decoded.
    let l = Batch::encoded(
        Signal::Logs,
        bytes::Bytes::from_static(b"\x0a\x00"),
        0,
        Arc::new(Context::default()),
    );
    stage.process(l, &mut out);
    assert!(matches!(out[2].payload, Payload::Encoded(_)));
}

#[test]
fn the_legacy_match_form_as_upstream() {
    // Spans: include keeps only what matches (every property given), exclude drops.
    let f = filter(
        r#"
spans:
  include:
    match_type: regexp
    services: ["check.*"]
  exclude:
    match_type: strict
    span_names: ["GET /health"]
    attributes: [{key: synthetic, value: true}]
"#,
    );
    let mut synthetic = span("GET /health", vec![kv("synthetic", Value::BoolValue(true))]);
    synthetic.kind = 2;
    let mut r = traces(
        "h",
        vec![
            synthetic,
            span("GET /health", vec![]),
            span("GET /a", vec![]),
        ],
    );
    r.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("service.name", s("checkout")));
    let other = traces("h", vec![span("GET /b", vec![])]);
    f.traces(&mut r);
    assert_eq!(names(&r), ["GET /health", "GET /a"]);
    let mut other = other;
    f.traces(&mut other);
    assert!(
        other.resource_spans.is_empty(),
        "no service.name: not included"
    );

    // Logs: "Filter out logs below INFO (no DEBUG or TRACE level logs), retaining logs with
    // undefined severity".
    let f = filter("logs:\n  include:\n    match_type: strict\n    severity_number: {min: INFO, match_undefined: true}\n");
    let mut r = logs(vec![
        rec("trace", 1),
        rec("debug", 5),
        rec("info", 9),
        rec("none", 0),
        rec("error", 17),
    ]);
    f.logs(&mut r);
    assert_eq!(bodies(&r), ["info", "none", "error"]);
    let f = filter(
        "logs:\n  exclude:\n    match_type: regexp\n    bodies: ['^health']\n    resource_attributes: [{key: service.name, value: 'noisy.*'}]\n",
    );
    let mut r = logs(vec![rec("health ok", 9), rec("order placed", 9)]);
    f.logs(&mut r);
    assert_eq!(bodies(&r), ["order placed"]);

    // Metrics: exclude by name.
    let f =
        filter("metrics:\n  exclude:\n    match_type: strict\n    metric_names: [internal.gc]\n");
    let mut r = metrics(
        "s",
        vec![
            gauge("internal.gc", vec![(1, vec![])]),
            gauge("kept", vec![(1, vec![])]),
        ],
    );
    f.metrics(&mut r);
    assert_eq!(metric_names(&r), ["kept:1"]);

    // Errors as upstream's.
    let p = problems(
        r#"
spans: {include: {match_type: strict, log_bodies: [x]}}
metrics:
  exclude: {match_type: expr, expressions: ['MetricName == "x"']}
  metric: ['name == "x"']
logs:
  include: {match_type: fuzzy, bodies: [x]}
  exclude: {match_type: strict, severity_number: {min: LOUD}}
"#,
    );
    let got: Vec<(&str, &str)> = p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        got,
        [
            ("spans.include.log_bodies", "log_bodies should not be specified for trace spans"),
            (
                "metrics.exclude.match_type",
                "the expr match type is not supported by weir; write OTTL conditions (metric_conditions) instead"
            ),
            (
                "logs.include.match_type",
                "unrecognized match_type: 'fuzzy', valid types are: [regexp strict]"
            ),
            (
                "logs.exclude.severity_number.min",
                "'LOUD' is not a valid severity: not a valid severity"
            ),
            (
                "metrics",
                r#"cannot use "metrics.resource", "metrics.metric", "metrics.datapoint" and the settings "metrics.include", "metrics.exclude" at the same time"#
            ),
        ]
    );
}

#[test]
fn short_non_error_spans_as_the_readme_example() {
    // "Dropping non-error spans with a duration of less than 1 second".
    let f = filter(
        r#"traces: {span: ['(end_time - start_time) < Duration("1s") and status.code != STATUS_CODE_ERROR']}"#,
    );
    let timed = |name: &str, nanos: u64, error: bool| {
        let mut s = span(name, vec![]);
        s.start_time_unix_nano = 1_000_000_000;
        s.end_time_unix_nano = 1_000_000_000 + nanos;
        if error {
            s.status = Some(Status {
                code: 2,
                ..Default::default()
            });
        }
        s
    };
    let mut r = traces(
        "h",
        vec![
            timed("fast", 5_000_000, false),
            timed("fast error", 5_000_000, true),
            timed("slow", 2_000_000_000, false),
        ],
    );
    f.traces(&mut r);
    assert_eq!(names(&r), ["fast error", "slow"]);
}

/// Two resources of two scopes each, spans of every kind of field, for comparing the wire
/// path with the decoded one.
fn mixed_traces() -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    let sp = |i: u8, name: &str, route: &str| Span {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        name: name.into(),
        kind: i32::from(i % 3),
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 1_000 + u64::from(i) * 1_000_000,
        attributes: vec![
            kv("http.route", s(route)),
            kv(
                "http.status_code",
                Value::IntValue(200 + i64::from(i % 4) * 100),
            ),
        ],
        events: vec![span::Event {
            name: "e".into(),
            ..Default::default()
        }],
        status: Some(Status {
            code: i32::from(i % 3),
            ..Default::default()
        }),
        ..Default::default()
    };
    let scope = |name: &str, base: u8| ScopeSpans {
        scope: Some(InstrumentationScope {
            name: name.into(),
            ..Default::default()
        }),
        spans: vec![
            sp(base, "GET /health", "/health"),
            sp(base + 1, "readinessProbe", "/ready"),
            sp(base + 2, "GET /cart", "/api/cart"),
            sp(base + 3, "POST /pay", "/api/pay"),
        ],
        schema_url: "s".into(),
    };
    let resource = |svc: &str, base: u8| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s(svc))],
            ..Default::default()
        }),
        scope_spans: vec![scope("http", base), scope("db", base + 10)],
        schema_url: "r".into(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![resource("checkout", 1), resource("cart", 30)],
    }
}

#[test]
fn the_wire_path_filters_as_the_decoded_path_does() {
    use prost::Message;
    let cases = [
        // (config, spans the decoded path drops)
        (
            r#"traces: {span: ['attributes["http.route"] == "/health"', 'IsMatch(name, "^readiness")']}"#,
            8,
        ),
        (
            r#"traces: {span: ['attributes["http.route"] == "/nothing"']}"#,
            0,
        ),
        (
            r#"traces: {span: ['resource.attributes["service.name"] == "cart" and kind == SPAN_KIND_SERVER']}"#,
            2,
        ),
        (
            r#"traces: {span: ['status.code == STATUS_CODE_ERROR', 'end_time - start_time > Duration("2ms")']}"#,
            15,
        ),
        (
            r#"traces: {span: ['attributes["http.status_code"] >= 400']}"#,
            8,
        ),
        (
            r#"traces: {span: ['trace_id == TraceID(0x02020202020202020202020202020202)']}"#,
            1,
        ),
        (
            r#"traces: {span: ['instrumentation_scope.name == "db"']}"#,
            8,
        ),
        (r#"traces: {span: ['name != ""']}"#, 16),
        (
            r#"traces: {span: ['IsRootSpan() and attributes["http.route"] == "/ready"']}"#,
            4,
        ),
        (
            r#"trace_conditions: ['instrumentation_scope.name == "http"']"#,
            8,
        ),
        (
            r#"traces: {resource: ['attributes["service.name"] == "checkout"']}"#,
            8,
        ),
        (
            r#"trace_conditions: ['span.name == "GET /cart"', 'resource.attributes["service.name"] == "cart"']"#,
            10,
        ),
    ];
    for (yaml, want_gone) in cases {
        let f = filter(yaml);
        let input = mixed_traces();
        let bytes = input.encode_to_vec();
        let mut decoded = input.clone();
        let changed = f.traces(&mut decoded);
        let outcome = f
            .on_wire(Signal::Traces, &bytes, &mut Vec::new())
            .unwrap_or_else(|| panic!("{yaml}: not on the wire"));
        let before = crate::pdata::wire::count_items(Signal::Traces, &bytes).unwrap();
        let after =
            crate::pdata::wire::count_items(Signal::Traces, &decoded.encode_to_vec()).unwrap();
        assert_eq!(before - after, want_gone, "{yaml}");
        match outcome {
            wire::Outcome::Unchanged => assert!(!changed, "{yaml}"),
            wire::Outcome::Filtered(kept, gone) => {
                assert!(changed, "{yaml}");
                assert_eq!(gone, want_gone, "{yaml}");
                assert_eq!(
                    ExportTraceServiceRequest::decode(&kept[..]).unwrap(),
                    decoded,
                    "{yaml}"
                );
            }
        }
    }
    // Event conditions and the legacy form take the decoded path.
    for yaml in [
        r#"traces: {spanevent: ['name == "e"']}"#,
        "spans: {exclude: {match_type: strict, span_names: [x]}}",
    ] {
        let bytes = mixed_traces().encode_to_vec();
        assert!(
            filter(yaml)
                .on_wire(Signal::Traces, &bytes, &mut Vec::new())
                .is_none(),
            "{yaml}"
        );
    }
    // Bytes that do not walk: the decoded path decides what survives.
    let f = filter(r#"traces: {span: ['name == "x"']}"#);
    let bytes = mixed_traces().encode_to_vec();
    assert!(f
        .on_wire(Signal::Traces, &bytes[..bytes.len() - 3], &mut Vec::new())
        .is_none());
}

#[test]
fn logs_filtered_on_the_wire_as_decoded() {
    use prost::Message;
    let f = filter(
        r#"logs: {log_record: ['severity_number < SEVERITY_NUMBER_WARN', 'IsMatch(body, "^debug")']}"#,
    );
    let input = logs(vec![
        rec("debug a", 13),
        rec("hello", 5),
        rec("kept", 17),
        rec("warn", 13),
    ]);
    let mut decoded = input.clone();
    assert!(f.logs(&mut decoded));
    match f.on_wire(Signal::Logs, &input.encode_to_vec(), &mut Vec::new()) {
        Some(wire::Outcome::Filtered(kept, gone)) => {
            assert_eq!(gone, 2);
            assert_eq!(
                ExportLogsServiceRequest::decode(&kept[..]).unwrap(),
                decoded
            );
            assert_eq!(bodies(&decoded), ["kept", "warn"]);
        }
        other => panic!("{other:?}"),
    }
    // Everything dropped: an empty request, which the stage forwards as nothing.
    let f = filter(r#"logs: {log_record: ['true']}"#);
    assert_eq!(
        f.on_wire(Signal::Logs, &input.encode_to_vec(), &mut Vec::new()),
        Some(wire::Outcome::Filtered(Vec::new(), 4))
    );
}

#[test]
fn resources_left_empty_keep_the_wire_path_in_step() {
    use prost::Message;
    // Resources emptied by item conditions or by a scope condition, beside kept ones: the
    // wire path's two passes must stay in step (a found bug: the next resource was dropped).
    let rl = |bodies: &[(&str, i32)]| ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: bodies.iter().map(|(b, n)| rec(b, *n)).collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let input = ExportLogsServiceRequest {
        resource_logs: vec![
            rl(&[("drop", 5)]),
            rl(&[("keep", 13), ("drop", 5)]),
            rl(&[("drop", 5)]),
            rl(&[("keep too", 17)]),
        ],
    };
    let f = filter(r#"logs: {log_record: ['severity_number < SEVERITY_NUMBER_INFO']}"#);
    let mut decoded = input.clone();
    assert!(f.logs(&mut decoded));
    match f.on_wire(Signal::Logs, &input.encode_to_vec(), &mut Vec::new()) {
        Some(wire::Outcome::Filtered(kept, gone)) => {
            assert_eq!(gone, 3);
            let got = ExportLogsServiceRequest::decode(&kept[..]).unwrap();
            assert_eq!(got, decoded);
            assert_eq!(bodies(&got), ["keep", "keep too"]);
        }
        other => panic!("{other:?}"),
    }
    // A scope condition emptying the first resource.
    let mut t = mixed_traces();
    t.resource_spans[0].scope_spans.truncate(1); // checkout: http only
    t.resource_spans[1].scope_spans.remove(0); // cart: db only
    let f = filter(r#"trace_conditions: ['instrumentation_scope.name == "http"']"#);
    let mut decoded = t.clone();
    assert!(f.traces(&mut decoded));
    match f.on_wire(Signal::Traces, &t.encode_to_vec(), &mut Vec::new()) {
        Some(wire::Outcome::Filtered(kept, gone)) => {
            assert_eq!(gone, 4);
            assert_eq!(
                ExportTraceServiceRequest::decode(&kept[..]).unwrap(),
                decoded
            );
            assert_eq!(decoded.resource_spans.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    // Everything dropped, with an unknown top-level field: nothing is forwarded.
    let mut bytes = input.encode_to_vec();
    bytes.extend_from_slice(&[0x78, 0x01]); // field 15, varint 1
    let f = filter(r#"logs: {log_record: ['true']}"#);
    assert_eq!(
        f.on_wire(Signal::Logs, &bytes, &mut Vec::new()),
        Some(wire::Outcome::Filtered(Vec::new(), 5))
    );
}

/// A request of one span whose one attribute is `kv` (raw `KeyValue` bytes).
pub(crate) fn span_with_raw_attribute(kv: &[u8]) -> Vec<u8> {
    use crate::pdata::wire::put_len_header;
    use prost::Message;
    let mut span = Span {
        name: "s".into(),
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    }
    .encode_to_vec();
    put_len_header(&mut span, 9, kv.len());
    span.extend_from_slice(kv);
    let mut scope = Vec::new();
    put_len_header(&mut scope, 2, span.len());
    scope.extend_from_slice(&span);
    let mut rs = Vec::new();
    put_len_header(&mut rs, 2, scope.len());
    rs.extend_from_slice(&scope);
    let mut req = Vec::new();
    put_len_header(&mut req, 1, rs.len());
    req.extend_from_slice(&rs);
    req
}

#[test]
fn a_key_sent_twice_is_read_as_a_decoder_reads_it() {
    use prost::Message;
    // KeyValue{key: "x", key: "a", value: "v"}: a decoder keeps the last key, "a". Reading
    // the first would let a sender slip a span past `attributes["a"]` (a found bug).
    let kv = [0x0a, 1, b'x', 0x0a, 1, b'a', 0x12, 3, 0x0a, 1, b'v'];
    let bytes = span_with_raw_attribute(&kv);
    let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
    assert_eq!(
        decoded.resource_spans[0].scope_spans[0].spans[0].attributes[0].key,
        "a"
    );
    let f = filter(r#"traces: {span: ['attributes["a"] == "v"']}"#);
    assert_eq!(
        f.on_wire(Signal::Traces, &bytes, &mut Vec::new()),
        Some(wire::Outcome::Filtered(Vec::new(), 1))
    );
    // A KeyValue without a key field is the empty key.
    let kv = [0x12, 3, 0x0a, 1, b'v'];
    let f = filter(r#"traces: {span: ['attributes[""] == "v"']}"#);
    assert_eq!(
        f.on_wire(
            Signal::Traces,
            &span_with_raw_attribute(&kv),
            &mut Vec::new()
        ),
        Some(wire::Outcome::Filtered(Vec::new(), 1))
    );
}

#[test]
fn random_shapes_filter_alike_on_the_wire_and_decoded() {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use prost::Message;
    // Requests of 0-4 resources, 0-3 scopes each, 0-4 spans each, names from small sets, under
    // conditions at every level: the wire path must keep exactly what the decoded path keeps.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let configs = [
        r#"traces: {span: ['name == "a"']}"#,
        r#"traces: {span: ['name != "b"']}"#,
        r#"trace_conditions: ['instrumentation_scope.name == "s1"']"#,
        r#"trace_conditions: ['instrumentation_scope.name == "s1"', 'span.name == "c"']"#,
        r#"traces: {resource: ['attributes["service.name"] == "x"'], span: ['name == "a"']}"#,
        r#"traces: {span: ['resource.attributes["service.name"] == "y" and attributes["k"] == 1']}"#,
    ];
    for round in 0..400 {
        let mut req = ExportTraceServiceRequest::default();
        for _ in 0..next(5) {
            let mut rs = ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s(["x", "y"][next(2) as usize]))],
                    ..Default::default()
                }),
                ..Default::default()
            };
            for _ in 0..next(4) {
                let mut ss = ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: ["s1", "s2"][next(2) as usize].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                for _ in 0..next(5) {
                    ss.spans.push(span(
                        ["a", "b", "c"][next(3) as usize],
                        vec![kv("k", Value::IntValue(next(2) as i64))],
                    ));
                }
                rs.scope_spans.push(ss);
            }
            req.resource_spans.push(rs);
        }
        let yaml = configs[round % configs.len()];
        let f = filter(yaml);
        let bytes = req.encode_to_vec();
        let mut decoded = req.clone();
        let changed = f.traces(&mut decoded);
        let before = crate::pdata::wire::count_items(Signal::Traces, &bytes).unwrap();
        let after =
            crate::pdata::wire::count_items(Signal::Traces, &decoded.encode_to_vec()).unwrap();
        match f.on_wire(Signal::Traces, &bytes, &mut Vec::new()) {
            Some(wire::Outcome::Unchanged) => assert!(!changed, "round {round}: {yaml}"),
            Some(wire::Outcome::Filtered(kept, gone)) => {
                assert!(changed, "round {round}: {yaml}");
                assert_eq!(gone, before - after, "round {round}: {yaml}");
                if decoded.resource_spans.is_empty() {
                    assert!(kept.is_empty(), "round {round}: {yaml}");
                } else {
                    assert_eq!(
                        ExportTraceServiceRequest::decode(&kept[..]).unwrap(),
                        decoded,
                        "round {round}: {yaml}"
                    );
                }
            }
            None => panic!("round {round}: {yaml}: not on the wire"),
        }
    }
}

#[test]
fn error_mode_as_upstream_on_both_paths() {
    use crate::pdata::Context;
    use std::sync::Arc;
    // SHA256 of a missing attribute is an error upstream. The condition that meets it is
    // false (even under `not`), counted, and under propagate (the default) drops the request.
    let spans = || {
        traces(
            "h",
            vec![
                span("a", vec![kv("user.email", s("x@y"))]),
                span("b", vec![]),
            ],
        )
    };
    let cond = r#"'not (SHA256(attributes["user.email"]) == "nothing")'"#;
    for encoded in [true, false] {
        for (mode, forwarded, kept) in [
            ("", false, 0),
            ("error_mode: propagate", false, 0),
            ("error_mode: ignore", true, 1),
            ("error_mode: silent", true, 1),
        ] {
            let yaml = format!("{mode}\ntraces: {{span: [{cond}]}}");
            let cfg: FilterConfig = serde_yaml::from_str(&yaml).unwrap();
            let reg = Registry::default();
            let mut stage = FilterProcessor::new("filter/x", &cfg, &reg);
            let r = spans();
            let batch = Batch::traces_for_test(r, encoded);
            let mut out = Vec::new();
            stage.process(batch, &mut out);
            let what = format!("{mode:?} encoded={encoded}");
            let text = reg.render();
            assert!(
                text.contains(
                    r#"weir_processor_filter_condition_errors_total{filter="filter/x"} 1"#
                ),
                "{what}: {text}"
            );
            if !forwarded {
                assert!(out.is_empty(), "{what}");
                assert!(
                    text.contains(r#"weir_processor_dropped_items_total{processor="filter/x"} 2"#),
                    "{what}: {text}"
                );
                continue;
            }
            // "a" matched (its hash is not "nothing") and went; "b" failed: false, kept.
            assert_eq!(out.len(), 1, "{what}");
            assert_eq!(out[0].items, kept, "{what}");
            let got: ExportTraceServiceRequest = match &out[0].payload {
                Payload::Encoded(b) => prost::Message::decode(&b[..]).unwrap(),
                Payload::Traces(r) => r.clone(),
                _ => panic!("{what}"),
            };
            assert_eq!(names(&got), ["b"], "{what}");
        }
    }
    // A group's error_mode wins over the processor's.
    let cfg: FilterConfig = serde_yaml::from_str(&format!(
        "error_mode: propagate\ntrace_conditions:\n  - error_mode: silent\n    context: span\n    conditions: [{cond}]"
    ))
    .unwrap();
    let reg = Registry::default();
    let mut stage = FilterProcessor::new("f", &cfg, &reg);
    let mut out = Vec::new();
    stage.process(
        Batch::encoded(
            Signal::Traces,
            prost::Message::encode_to_vec(&spans()).into(),
            2,
            Arc::new(Context::default()),
        ),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items, 1);
}
