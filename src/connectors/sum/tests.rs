use super::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn i(k: &str, v: i64) -> KeyValue {
    kv(k, any_value::Value::IntValue(v))
}

fn connector(yaml: &str) -> SumConnector {
    let c: SumConfig = serde_yaml::from_str(yaml).expect("yaml");
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    SumConnector::new("sum", &c, &Registry::new())
}

fn llm_spans() -> Payload {
    let span = |model: &str, input: i64, output: &str| Span {
        name: "chat".into(),
        attributes: vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", model),
            i("gen_ai.usage.input_tokens", input),
            s("gen_ai.usage.output_tokens", output),
        ],
        ..Default::default()
    };
    let mut no_model = span("x", 5, "5");
    no_model.attributes.remove(1);
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "agent")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span("gpt-4o", 100, "20"),
                    span("gpt-4o", 50, "10"),
                    span("claude", 7, "not a number"),
                    no_model,
                    Span {
                        name: "tool".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    })
}

/// (metric, attribute text, value), sorted.
fn points(req: &ExportMetricsServiceRequest) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(metric::Data::Sum(sum)) = &m.data else {
                    panic!("not a sum")
                };
                assert_eq!(sum.aggregation_temporality, 1, "delta, as upstream");
                assert!(sum.is_monotonic);
                for p in &sum.data_points {
                    let attrs: Vec<String> = p
                        .attributes
                        .iter()
                        .map(|a| {
                            format!(
                                "{}={:?}",
                                a.key,
                                a.value.as_ref().and_then(|v| v.value.clone())
                            )
                        })
                        .collect();
                    let v = match p.value {
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        _ => panic!("not a double"),
                    };
                    out.push((m.name.clone(), attrs.join(","), v));
                }
            }
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    out
}

#[test]
fn llm_tokens_per_model_from_spans() {
    let c = connector(
        r#"
spans:
  gen_ai.client.token.usage.input:
    description: Input tokens.
    source_attribute: gen_ai.usage.input_tokens
    conditions: ['attributes["gen_ai.operation.name"] == "chat"']
    attributes: [{key: gen_ai.request.model, default_value: unknown}]
  gen_ai.client.token.usage.output:
    source_attribute: gen_ai.usage.output_tokens
    attributes: [{key: gen_ai.request.model}]
"#,
    );
    let (req, n) = c.sum(&llm_spans()).expect("a request");
    assert_eq!(
        req.resource_metrics[0]
            .resource
            .as_ref()
            .map(|r| r.attributes.clone()),
        Some(vec![s("service.name", "agent")]),
        "the input's resource is kept"
    );
    let text = |m: &str| format!("gen_ai.request.model=Some(StringValue({m:?}))");
    assert_eq!(
        points(&req),
        vec![
            (
                "gen_ai.client.token.usage.input".into(),
                text("claude"),
                7.0
            ),
            (
                "gen_ai.client.token.usage.input".into(),
                text("gpt-4o"),
                150.0
            ),
            (
                "gen_ai.client.token.usage.input".into(),
                text("unknown"),
                5.0
            ),
            (
                "gen_ai.client.token.usage.output".into(),
                text("gpt-4o"),
                30.0
            ),
        ],
        "one value per item however many attributes (upstream adds it once per attribute)"
    );
    assert_eq!(n, 4);
    // "not a number", a missing model without default, and the tool span's missing token
    // count are not added.
    assert_eq!(c.unreadable.get(), 2);
}

#[test]
fn logs_and_conditions_that_match_nothing() {
    let c = connector(
        r#"
logs:
  checkout.total:
    source_attribute: total.payment
    conditions: ['attributes["total.payment"] != "NULL"']
    attributes: [{key: payment.processor, default_value: unspecified_processor}]
"#,
    );
    let logs = |v: &str| LogRecord {
        attributes: vec![s("total.payment", v)],
        ..Default::default()
    };
    let payload = Payload::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![logs("12.5"), logs("NULL"), logs("7.5")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    let (req, _) = c.sum(&payload).expect("a request");
    assert_eq!(
        points(&req),
        vec![(
            "checkout.total".into(),
            "payment.processor=Some(StringValue(\"unspecified_processor\"))".into(),
            20.0
        )]
    );
    // Nothing to sum: no request at all.
    assert!(c.sum(&llm_spans()).is_none());
}

#[test]
fn bad_settings_are_refused_with_upstreams_messages() {
    let c: SumConfig = serde_yaml::from_str(
        r#"
spans:
  a: {conditions: ['attributes["x" == 1']}
  b: {source_attribute: x, attributes: [{key: ""}]}
"#,
    )
    .expect("yaml");
    let text = format!("{:?}", c.validate());
    for want in [
        "spans: metric source_attribute missing",
        "spans condition: metric \\\"a\\\"",
        "spans attributes: metric \\\"b\\\": attribute key missing",
    ] {
        assert!(text.contains(want), "{want} not in {text}");
    }
    let empty: SumConfig = serde_yaml::from_str("{}").expect("yaml");
    assert!(format!("{:?}", empty.validate()).contains("no metrics configured"));
    assert!(serde_yaml::from_str::<SumConfig>("{metrics: {}}").is_err());
}
