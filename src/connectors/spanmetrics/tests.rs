use super::*;
use crate::pdata::Context;
use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans, Status};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(string_value(v)),
        ..Default::default()
    }
}

fn span(name: &str, kind: i32, error: bool, ms: u64, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![9; 8],
        name: name.into(),
        kind,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
        attributes: attrs,
        status: Some(Status {
            code: if error { 2 } else { 1 },
            message: String::new(),
        }),
        ..Default::default()
    }
}

fn rs(service: Option<&str>, spans: Vec<Span>) -> ResourceSpans {
    let mut attrs = vec![kv("host.name", "h1")];
    if let Some(s) = service {
        attrs.push(kv("service.name", s));
    }
    ResourceSpans {
        resource: Some(Resource {
            attributes: attrs,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

fn cfg(yaml: &str) -> SpanMetricsConfig {
    let c: SpanMetricsConfig = serde_yaml::from_str(yaml).expect("yaml");
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    c
}

fn shared(c: SpanMetricsConfig) -> Shared {
    Shared::new("spanmetrics", c, &Registry::new())
}

fn attr<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a str> {
    find(attrs, k).and_then(|v| match &v.value {
        Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    })
}

/// (metric name, points) of the one request a flush made.
fn metrics_of(req: &ExportMetricsServiceRequest) -> Vec<&Metric> {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .collect()
}

fn sums(m: &Metric) -> Vec<&NumberDataPoint> {
    match &m.data {
        Some(metric::Data::Sum(s)) => s.data_points.iter().collect(),
        _ => panic!("{} is not a sum", m.name),
    }
}

fn hists(m: &Metric) -> Vec<&HistogramDataPoint> {
    match &m.data {
        Some(metric::Data::Histogram(h)) => h.data_points.iter().collect(),
        _ => panic!("{} is not a histogram", m.name),
    }
}

fn value(p: &NumberDataPoint) -> i64 {
    match p.value {
        Some(number_data_point::Value::AsInt(i)) => i,
        _ => panic!("not an int"),
    }
}

#[test]
fn calls_and_durations_by_the_default_dimensions_with_upstreams_names_and_values() {
    let s = shared(cfg("{}"));
    s.aggregate(
        None,
        &[rs(
            Some("checkout"),
            vec![
                span("GET /cart", 2, false, 3, vec![]),
                span("GET /cart", 2, false, 50, vec![]),
                span("GET /cart", 2, true, 2000, vec![]),
                span("SELECT", 3, false, 1, vec![]),
            ],
        )],
    );
    let out = s.flush();
    assert_eq!(out.len(), 1);
    let (tenant, req, points) = &out[0];
    assert!(tenant.is_none());
    assert_eq!(req.resource_metrics.len(), 1);
    let sm = &req.resource_metrics[0].scope_metrics[0];
    assert_eq!(
        sm.scope.as_ref().map(|s| s.name.as_str()),
        Some("spanmetricsconnector")
    );
    let ms = metrics_of(req);
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["traces.span.metrics.calls", "traces.span.metrics.duration"]
    );
    let calls = sums(ms[0]);
    assert_eq!(calls.len(), 3, "server ok, server error, client ok");
    assert_eq!(calls.iter().map(|p| value(p)).sum::<i64>(), 4);
    assert_eq!(*points, 6);
    let err = calls
        .iter()
        .find(|p| attr(&p.attributes, "status.code") == Some("STATUS_CODE_ERROR"))
        .expect("error series");
    assert_eq!(value(err), 1);
    assert_eq!(attr(&err.attributes, "service.name"), Some("checkout"));
    assert_eq!(attr(&err.attributes, "span.name"), Some("GET /cart"));
    assert_eq!(attr(&err.attributes, "span.kind"), Some("SPAN_KIND_SERVER"));
    let client = calls
        .iter()
        .find(|p| attr(&p.attributes, "span.kind") == Some("SPAN_KIND_CLIENT"))
        .expect("client series");
    assert_eq!(
        attr(&client.attributes, "status.code"),
        Some("STATUS_CODE_OK")
    );
    // Duration: upstream's 16 default bounds in ms; 3 ms in (2, 4], 50 in (10, 50].
    assert_eq!(ms[1].unit, "ms");
    let h = hists(ms[1]);
    let ok = h
        .iter()
        .find(|p| {
            attr(&p.attributes, "status.code") == Some("STATUS_CODE_OK")
                && attr(&p.attributes, "span.kind") == Some("SPAN_KIND_SERVER")
        })
        .expect("ok series");
    assert_eq!(ok.explicit_bounds.len(), 16);
    assert_eq!(ok.bucket_counts.len(), 17);
    assert_eq!(ok.count, 2);
    assert_eq!(ok.sum, Some(53.0));
    assert_eq!(ok.bucket_counts[1], 1, "3 ms in (2, 4]");
    assert_eq!(
        ok.bucket_counts[5], 1,
        "50 ms in (10, 50]: a bound's own value is in its bucket"
    );
}

#[test]
fn dimensions_come_from_the_span_then_the_resource_then_the_default() {
    let s = shared(cfg(r#"
dimensions:
  - name: gen_ai.tool.name
  - name: host.name
  - name: mcp.method.name
    default: none
  - name: absent
"#));
    s.aggregate(
        None,
        &[rs(
            Some("mcp"),
            vec![span(
                "tools/call",
                2,
                false,
                5,
                vec![
                    kv("gen_ai.tool.name", "search"),
                    kv("host.name", "from-span"),
                ],
            )],
        )],
    );
    let out = s.flush();
    let p = sums(metrics_of(&out[0].1)[0])[0].clone();
    assert_eq!(attr(&p.attributes, "gen_ai.tool.name"), Some("search"));
    assert_eq!(
        attr(&p.attributes, "host.name"),
        Some("from-span"),
        "the span's value wins"
    );
    assert_eq!(attr(&p.attributes, "mcp.method.name"), Some("none"));
    assert!(
        find(&p.attributes, "absent").is_none(),
        "no value, no default: left out"
    );
}

#[test]
fn resources_without_a_service_name_are_skipped_as_upstream_does() {
    let s = shared(cfg("{}"));
    s.aggregate(None, &[rs(None, vec![span("x", 1, false, 1, vec![])])]);
    assert!(s.flush().is_empty());
}

#[test]
fn past_the_cardinality_limit_new_series_go_to_the_overflow_series() {
    let s = shared(cfg(
        "{aggregation_cardinality_limit: 3, dimensions: [{name: user.id}]}",
    ));
    let spans: Vec<Span> = (0..10)
        .map(|i| span("op", 2, false, 1, vec![kv("user.id", &format!("u{i}"))]))
        .collect();
    s.aggregate(None, &[rs(Some("svc"), spans)]);
    let out = s.flush();
    let calls = sums(metrics_of(&out[0].1)[0]);
    assert_eq!(calls.len(), 4, "3 series and the overflow series");
    assert_eq!(
        calls.iter().map(|p| value(p)).sum::<i64>(),
        10,
        "nothing lost"
    );
    let overflow = calls
        .iter()
        .find(|p| find(&p.attributes, OVERFLOW_KEY).is_some())
        .expect("overflow series");
    assert_eq!(overflow.attributes.len(), 1, "only otel.metric.overflow");
    assert_eq!(
        overflow.attributes[0]
            .value
            .as_ref()
            .and_then(|v| v.value.clone()),
        Some(any_value::Value::BoolValue(true))
    );
    assert_eq!(value(overflow), 7);
    assert_eq!(s.overflowed.get(), 7);
}

#[test]
fn delta_resets_after_each_flush_and_cumulative_keeps_counting() {
    let d = shared(cfg(
        "{aggregation_temporality: AGGREGATION_TEMPORALITY_DELTA}",
    ));
    let c = shared(cfg("{}"));
    for s in [&d, &c] {
        s.aggregate(
            None,
            &[rs(Some("svc"), vec![span("op", 2, false, 1, vec![])])],
        );
    }
    let first_d = d.flush();
    let first_c = c.flush();
    for s in [&d, &c] {
        s.aggregate(
            None,
            &[rs(Some("svc"), vec![span("op", 2, false, 1, vec![]); 2])],
        );
    }
    let second_d = d.flush();
    let second_c = c.flush();
    let calls = |o: &Vec<(Option<Arc<str>>, ExportMetricsServiceRequest, usize)>| {
        let m = metrics_of(&o[0].1)[0].clone();
        let p = sums(&m)[0].clone();
        let t = match &m.data {
            Some(metric::Data::Sum(s)) => s.aggregation_temporality,
            _ => 0,
        };
        (value(&p), p.start_time_unix_nano, p.time_unix_nano, t)
    };
    let (v1, _, t1, temp) = calls(&first_d);
    let (v2, s2, _, _) = calls(&second_d);
    assert_eq!((v1, v2, temp), (1, 2, 1), "delta: each flush its own count");
    assert_eq!(s2, t1, "delta: a series starts where its last flush ended");
    let (c1, cs1, _, ctemp) = calls(&first_c);
    let (c2, cs2, _, _) = calls(&second_c);
    assert_eq!((c1, c2, ctemp), (1, 3, 2), "cumulative: counts add up");
    assert_eq!(cs1, cs2, "cumulative: the start time stays");
    assert!(d.flush().is_empty(), "delta: nothing new, nothing sent");
    assert!(!c.flush().is_empty(), "cumulative: reported again");
}

#[test]
fn exemplars_carry_trace_and_span_ids_up_to_the_limit_once() {
    let s = shared(cfg("{exemplars: {enabled: true, max_per_data_point: 2}}"));
    s.aggregate(
        None,
        &[rs(Some("svc"), vec![span("op", 2, false, 7, vec![]); 5])],
    );
    let out = s.flush();
    let ms = metrics_of(&out[0].1);
    let p = sums(ms[0])[0].clone();
    assert_eq!(p.exemplars.len(), 2);
    assert_eq!(p.exemplars[0].trace_id, vec![7; 16]);
    assert_eq!(p.exemplars[0].span_id, vec![9; 8]);
    assert_eq!(p.exemplars[0].value, Some(exemplar::Value::AsDouble(7.0)));
    assert_eq!(p.exemplars[0].time_unix_nano, p.time_unix_nano);
    assert_eq!(hists(ms[1])[0].exemplars.len(), 2);
    let again = s.flush();
    assert!(
        sums(metrics_of(&again[0].1)[0])[0].exemplars.is_empty(),
        "reported once"
    );
}

#[test]
fn two_tenants_never_share_a_series() {
    let s = shared(cfg("{}"));
    let a: Option<Arc<str>> = Some(Arc::from("acme"));
    let b: Option<Arc<str>> = Some(Arc::from("globex"));
    s.aggregate(
        a.clone(),
        &[rs(Some("svc"), vec![span("op", 2, false, 1, vec![]); 3])],
    );
    s.aggregate(
        b.clone(),
        &[rs(Some("svc"), vec![span("op", 2, false, 1, vec![])])],
    );
    let mut out = s.flush();
    out.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, a);
    assert_eq!(value(sums(metrics_of(&out[0].1)[0])[0]), 3);
    assert_eq!(out[1].0, b);
    assert_eq!(value(sums(metrics_of(&out[1].1)[0])[0]), 1);
}

#[test]
fn events_count_by_their_dimensions_when_enabled() {
    let s = shared(cfg(
        "{events: {enabled: true, dimensions: [{name: exception.type}]}}",
    ));
    let mut sp = span("op", 2, true, 1, vec![]);
    sp.events = vec![
        Event {
            name: "exception".into(),
            attributes: vec![kv("exception.type", "Timeout")],
            ..Default::default()
        };
        2
    ];
    s.aggregate(None, &[rs(Some("svc"), vec![sp])]);
    let out = s.flush();
    let ms = metrics_of(&out[0].1);
    let events = ms
        .iter()
        .find(|m| m.name == "traces.span.metrics.events")
        .expect("events metric");
    let p = sums(events)[0];
    assert_eq!(value(p), 2);
    assert_eq!(attr(&p.attributes, "exception.type"), Some("Timeout"));
}

#[test]
fn seconds_exponential_namespace_and_exclusions() {
    let s = shared(cfg(
        "{namespace: '', histogram: {unit: s, exponential: {max_size: 10}}, exclude_dimensions: [span.kind]}",
    ));
    s.aggregate(
        None,
        &[rs(Some("svc"), vec![span("op", 2, false, 1500, vec![])])],
    );
    let out = s.flush();
    let ms = metrics_of(&out[0].1);
    assert_eq!(ms[0].name, "calls");
    assert_eq!(ms[1].name, "duration");
    assert_eq!(ms[1].unit, "s");
    assert!(find(&sums(ms[0])[0].attributes, "span.kind").is_none());
    match &ms[1].data {
        Some(metric::Data::ExponentialHistogram(e)) => {
            assert_eq!(e.data_points[0].count, 1);
            assert_eq!(e.data_points[0].sum, Some(1.5));
        }
        _ => panic!("not exponential"),
    }
}

#[test]
fn the_resource_cache_forgets_the_least_recently_seen_resource() {
    let s = shared(cfg("{resource_metrics_cache_size: 2}"));
    for name in ["a", "b", "c"] {
        s.aggregate(
            None,
            &[rs(Some(name), vec![span("op", 2, false, 1, vec![])])],
        );
    }
    let out = s.flush();
    let services: Vec<String> = out[0]
        .1
        .resource_metrics
        .iter()
        .filter_map(|r| r.resource.as_ref())
        .filter_map(|r| attr(&r.attributes, "service.name").map(str::to_owned))
        .collect();
    assert_eq!(services.len(), 2);
    assert!(!services.contains(&"a".to_string()), "{services:?}");
}

#[test]
fn bad_settings_are_refused_with_upstreams_messages() {
    let c: SpanMetricsConfig = serde_yaml::from_str(
        r#"
dimensions: [{name: span.name}]
histogram: {explicit: {buckets: [10ms, 5ms]}, exponential: {}, unit: minutes}
metrics_flush_interval: 0s
aggregation_temporality: delta
aggregation_cardinality_limit: -1
events: {enabled: true}
exclude_dimensions: [host.name]
"#,
    )
    .expect("yaml");
    let errs = c.validate();
    let text = format!("{errs:?}");
    for want in [
        "failed validating dimensions: duplicate dimension name span.name",
        "use either `explicit` or `exponential` buckets histogram",
        "unknown Unit \\\"minutes\\\", allowed units are \\\"ms\\\" and \\\"s\\\"",
        "invalid metrics_flush_interval: 0s, the duration should be positive",
        "must be AGGREGATION_TEMPORALITY_CUMULATIVE or AGGREGATION_TEMPORALITY_DELTA",
        "invalid aggregation_cardinality_limit: -1, the limit should be positive",
        "failed validating event dimensions: no dimensions configured for events",
        "must be in increasing order",
        "is not a default dimension",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
}

#[tokio::test]
async fn the_connector_hands_its_aggregate_to_the_target_pipelines() {
    let c = cfg("{metrics_flush_interval: 50ms}");
    let conn = SpanMetrics::start("spanmetrics", c, &Registry::new());
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut targets = Targets::new();
    targets.insert("metrics".to_string(), tx);
    conn.set_targets(targets);
    let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![rs(Some("svc"), vec![span("op", 2, false, 1, vec![]); 4])],
    };
    let batch = Batch {
        signal: Signal::Traces,
        items: 4,
        payload: Payload::Traces(req),
        context: Arc::new(Context::default()),
        held: None,
        compressed: None,
    };
    conn.push(batch).await;
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a flush within 5s")
        .expect("a batch");
    assert_eq!(got.signal, Signal::Metrics);
    let Payload::Metrics(m) = &got.payload else {
        panic!("not metrics")
    };
    assert_eq!(value(sums(metrics_of(m)[0])[0]), 4);
    assert_eq!(conn.shared().id.as_ref(), "spanmetrics");
    // Dropping the connector flushes once more and lets go of the target.
    drop(conn);
    let last = tokio::time::timeout(Duration::from_secs(5), async {
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    })
    .await
    .expect("the target is let go");
    assert!(last <= 1);
}
