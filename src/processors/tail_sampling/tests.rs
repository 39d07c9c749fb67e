use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::TailSamplingConfig;
use super::split::{join, split};
use super::*;
use crate::pdata::{count_spans, Context};
use crate::telemetry::metrics::Registry;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn span(trace: u8, id: u8, parent: Option<u8>, error: bool) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("s{trace}-{id}"),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + u64::from(id) * 1_000_000,
        status: error.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}

fn request(groups: Vec<(&str, &str, Vec<Span>)>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(svc, scope, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", svc)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: scope.into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: "https://schema".into(),
                }],
                schema_url: "https://res-schema".into(),
            })
            .collect(),
    }
}

fn batch(r: &ExportTraceServiceRequest) -> Batch {
    Batch::encoded(
        Signal::Traces,
        Bytes::from(r.encode_to_vec()),
        count_spans(r),
        Arc::new(Context::default()),
    )
}

fn cfg(yaml: &str) -> TailSamplingConfig {
    let c: TailSamplingConfig = serde_yaml::from_str(yaml).expect("config");
    assert!(validate(&c).is_empty(), "{:?}", validate(&c));
    c
}

/// Spans released by `ts` until `want` have come out (or the deadline passes), waiting on
/// the output channel itself.
fn collect(ts: &mut TailSampling, want: usize, within: Duration) -> Vec<Span> {
    let end = std::time::Instant::now() + within;
    let mut spans = Vec::new();
    while spans.len() < want {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let Some(b) = ts.next_output(left) else {
            break;
        };
        let r = ExportTraceServiceRequest::decode(b.to_bytes()).expect("decodes");
        assert_eq!(b.items, count_spans(&r));
        for rs in r.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    spans
}

fn names(spans: &[Span]) -> Vec<String> {
    let mut v: Vec<String> = spans.iter().map(|s| s.name.clone()).collect();
    v.sort();
    v
}

#[test]
fn split_then_join_keeps_every_span_with_its_resource_and_scope() {
    let r = request(vec![
        (
            "a",
            "lib-a",
            vec![span(1, 1, None, false), span(2, 2, None, false)],
        ),
        ("b", "lib-b", vec![span(1, 3, Some(1), true)]),
    ]);
    let bytes = Bytes::from(r.encode_to_vec());
    let mut out = vec![Vec::new()];
    let n = split(&bytes, &Arc::new(Context::default()), 1, &mut out).expect("splits");
    assert_eq!(n, 3);
    assert!(out[0][0].root && !out[0][2].root);
    let joined = ExportTraceServiceRequest::decode(join(&out[0])).expect("decodes");
    assert_eq!(
        joined, r,
        "join of all chunks in order rebuilds the request"
    );

    // Over several shards every trace lands in exactly one.
    let mut out: Vec<Vec<_>> = (0..4).map(|_| Vec::new()).collect();
    split(&bytes, &Arc::new(Context::default()), 4, &mut out).expect("splits");
    assert_eq!(out.iter().map(Vec::len).sum::<usize>(), 3);
    let shards_of_trace_1: Vec<usize> = (0..4)
        .filter(|i| out[*i].iter().any(|c| c.trace_id == [1; 16]))
        .collect();
    assert_eq!(shards_of_trace_1.len(), 1);
}

#[test]
fn hostile_bytes_are_an_error_not_a_panic() {
    let mut out = vec![Vec::new()];
    for bad in [
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        &[0x0a, 0x05, 0x12, 0x10][..],
        &[0xff][..],
    ] {
        let b = Bytes::copy_from_slice(bad);
        assert!(split(&b, &Arc::new(Context::default()), 1, &mut out).is_err());
    }
}

#[test]
fn keeps_whole_error_traces_and_drops_the_rest() {
    let c = cfg("decision_wait: 100ms\nnum_shards: 2\npolicies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]");
    let reg = Registry::new();
    let mut ts = TailSampling::new("tail_sampling", &c, &reg, Arc::new(Notify::new()));
    let mut out = Vec::new();
    // Trace 1's error span arrives in a later request than its other spans.
    ts.process(
        batch(&request(vec![(
            "a",
            "l",
            vec![
                span(1, 1, None, false),
                span(2, 2, None, false),
                span(2, 3, Some(2), false),
            ],
        )])),
        &mut out,
    );
    ts.process(
        batch(&request(vec![("b", "l", vec![span(1, 4, Some(1), true)])])),
        &mut out,
    );
    assert!(out.is_empty(), "nothing leaves before decision_wait");
    let spans = collect(&mut ts, 2, Duration::from_secs(5));
    assert_eq!(names(&spans), vec!["s1-1", "s1-4"]);
    // Trace 2 is decided by its timer or, at the latest, by the flush: either way not kept.
    let mut rest = Vec::new();
    ts.flush(&mut rest);
    assert!(rest.is_empty(), "trace 2 has no error");
    let v = |s: &str| {
        reg.value(
            "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
            &[("processor", "tail_sampling"), ("sampled", s)],
        )
    };
    assert_eq!((v("true"), v("false")), (Some(1.0), Some(1.0)));
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_count_traces_sampled_total",
            &[
                ("processor", "tail_sampling"),
                ("policy", "errors"),
                ("sampled", "true")
            ]
        ),
        Some(1.0)
    );
}

#[test]
fn late_spans_follow_the_cached_decision() {
    let c = cfg("decision_wait: 50ms\nnum_shards: 1\ndecision_cache: {sampled_cache_size: 100, non_sampled_cache_size: 100}\npolicies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]");
    let reg = Registry::new();
    let mut ts = TailSampling::new("ts", &c, &reg, Arc::new(Notify::new()));
    let mut out = Vec::new();
    ts.process(
        batch(&request(vec![(
            "a",
            "l",
            vec![span(1, 1, None, true), span(2, 2, None, false)],
        )])),
        &mut out,
    );
    assert_eq!(
        names(&collect(&mut ts, 1, Duration::from_secs(5))),
        vec!["s1-1"]
    );
    // Late spans: trace 1's goes straight out, trace 2's is dropped.
    ts.process(
        batch(&request(vec![(
            "a",
            "l",
            vec![span(1, 9, Some(1), false), span(2, 8, Some(2), false)],
        )])),
        &mut out,
    );
    // A barrier: the late spans have been handled and anything released is out.
    ts.sync();
    ts.tick(Instant::now(), &mut out);
    let mut spans = Vec::new();
    for b in out {
        let r = ExportTraceServiceRequest::decode(b.to_bytes()).expect("decodes");
        spans.extend(
            r.resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans),
        );
    }
    assert_eq!(names(&spans), vec!["s1-9"]);
    let late = |s: &str| {
        reg.value(
            "otelcol_processor_tail_sampling_early_releases_from_cache_decision_total",
            &[("processor", "ts"), ("sampled", s)],
        )
    };
    assert_eq!((late("true"), late("false")), (Some(1.0), Some(1.0)));
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_sampling_late_span_age",
            &[("processor", "ts")]
        ),
        Some(2.0),
        "both late spans had their age observed"
    );
}

#[test]
fn a_full_buffer_decides_the_oldest_trace_early() {
    let c = cfg("decision_wait: 1h\nnum_traces: 2\nnum_shards: 1\npolicies: [{name: all, type: always_sample}]");
    let reg = Registry::new();
    let mut ts = TailSampling::new("ts", &c, &reg, Arc::new(Notify::new()));
    let mut out = Vec::new();
    for t in 1..=4u8 {
        ts.process(
            batch(&request(vec![("a", "l", vec![span(t, 1, None, false)])])),
            &mut out,
        );
    }
    // Traces 1 and 2 were decided early to make room for 3 and 4.
    let spans = collect(&mut ts, 2, Duration::from_secs(5));
    assert_eq!(names(&spans), vec!["s1-1", "s2-1"]);
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total",
            &[("processor", "ts")]
        ),
        Some(2.0)
    );
    // Shutdown decides what is left.
    let mut rest = Vec::new();
    ts.flush(&mut rest);
    let n: usize = rest.iter().map(|b| b.items).sum();
    assert_eq!(n, 2);
}

#[test]
fn an_oversized_trace_is_dropped_and_stays_dropped() {
    let c = cfg("decision_wait: 1h\nnum_shards: 1\nmaximum_trace_size_bytes: 300\npolicies: [{name: all, type: always_sample}]");
    let reg = Registry::new();
    let mut ts = TailSampling::new("ts", &c, &reg, Arc::new(Notify::new()));
    let mut out = Vec::new();
    let many: Vec<Span> = (1..=10).map(|i| span(7, i, Some(1), false)).collect();
    ts.process(batch(&request(vec![("a", "l", many)])), &mut out);
    ts.process(
        batch(&request(vec![(
            "a",
            "l",
            vec![span(7, 11, Some(1), false), span(8, 1, None, false)],
        )])),
        &mut out,
    );
    let mut rest = Vec::new();
    ts.flush(&mut rest);
    let mut spans = Vec::new();
    for b in rest.into_iter().chain(out) {
        let r = ExportTraceServiceRequest::decode(b.to_bytes()).expect("decodes");
        spans.extend(
            r.resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans),
        );
    }
    assert_eq!(names(&spans), vec!["s8-1"]);
    assert_eq!(
        reg.value(
            "weir_tail_sampling_traces_too_large_total",
            &[("processor", "ts")]
        ),
        Some(1.0)
    );
}

#[test]
fn root_arrival_shortens_the_wait() {
    let c = cfg("decision_wait: 1h\ndecision_wait_after_root_received: 50ms\nnum_shards: 1\npolicies: [{name: all, type: always_sample}]");
    let reg = Registry::new();
    let mut ts = TailSampling::new("ts", &c, &reg, Arc::new(Notify::new()));
    let mut out = Vec::new();
    ts.process(
        batch(&request(vec![("a", "l", vec![span(3, 2, Some(1), false)])])),
        &mut out,
    );
    ts.process(
        batch(&request(vec![(
            "a",
            "l",
            vec![span(3, 1, None, false), span(4, 5, Some(1), false)],
        )])),
        &mut out,
    );
    // Trace 3 got its root: decided within ~50ms. Trace 4 has none: still waiting.
    let spans = collect(&mut ts, 2, Duration::from_secs(5));
    assert_eq!(names(&spans), vec!["s3-1", "s3-2"]);
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_sampling_traces_on_memory",
            &[("processor", "ts")]
        ),
        Some(1.0)
    );
}

#[test]
fn drop_pending_on_shutdown_drops() {
    let c = cfg("decision_wait: 1h\nnum_shards: 1\ndrop_pending_traces_on_shutdown: true\npolicies: [{name: all, type: always_sample}]");
    let reg = Registry::new();
    let mut ts = TailSampling::new("ts", &c, &reg, Arc::new(Notify::new()));
    let mut out = Vec::new();
    ts.process(
        batch(&request(vec![("a", "l", vec![span(3, 1, None, false)])])),
        &mut out,
    );
    ts.flush(&mut out);
    assert!(out.is_empty());
}

#[test]
fn validation_names_policy_and_key() {
    let c: TailSamplingConfig = serde_yaml::from_str(
        "decision_wait: 0s\npolicies: [{name: a, type: always_sample}, {name: a, type: numeric_attribute, numeric_attribute: {key: k, min_value: 10, max_value: 5}}]",
    )
    .expect("parses");
    let p = validate(&c);
    assert_eq!(
        p,
        vec![
            (
                "decision_wait".to_string(),
                "must be greater than 0 (how long to wait for a trace's spans)".to_string()
            ),
            (
                "policies[1].name".to_string(),
                "duplicate policy name \"a\"".to_string()
            ),
            (
                "policies[1].numeric_attribute.min_value".to_string(),
                "policy \"a\": min_value (10) must not be greater than max_value (5)".to_string()
            ),
        ]
    );
    let empty: TailSamplingConfig = serde_yaml::from_str("{}").expect("parses");
    assert_eq!(validate(&empty)[0].0, "policies");
}

#[test]
fn block_on_overflow_holds_ingest_instead_of_deciding_early() {
    let c = cfg("decision_wait: 100ms\nnum_traces: 2\nnum_shards: 1\nblock_on_overflow: true\npolicies: [{name: all, type: always_sample}]");
    let reg = Registry::new();
    let mut ts = TailSampling::new("ts", &c, &reg, Arc::new(Notify::new()));
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    // One trace per request: the worker stops reading once it holds 2 traces, so the later
    // requests wait for decisions rather than forcing them early.
    for t in 1..=6u8 {
        ts.process(
            batch(&request(vec![("a", "l", vec![span(t, 1, None, false)])])),
            &mut out,
        );
    }
    let mut spans = collect(&mut ts, 6, Duration::from_secs(10));
    for b in out {
        let r = ExportTraceServiceRequest::decode(b.to_bytes()).expect("decodes");
        spans.extend(
            r.resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans),
        );
    }
    assert_eq!(spans.len(), 6);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "later traces waited for room"
    );
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total",
            &[("processor", "ts")]
        ),
        Some(0.0)
    );
}

#[test]
fn reconfigure_keeps_buffered_traces_and_decides_them_with_the_new_policies() {
    let c = cfg("decision_wait: 300ms\nnum_shards: 2\npolicies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]");
    let reg = Registry::new();
    let mut ts = TailSampling::new("ts", &c, &reg, Arc::new(Notify::new()));
    let mut out = Vec::new();
    ts.process(
        batch(&request(vec![(
            "a",
            "l",
            vec![span(1, 1, None, false), span(2, 1, None, false)],
        )])),
        &mut out,
    );
    // Under the old policy neither trace would be kept; the new one keeps both.
    let new = cfg("decision_wait: 300ms\npolicies: [{name: all, type: always_sample}]");
    ts.reconfigure(&new, &reg);
    let spans = collect(&mut ts, 2, Duration::from_secs(5));
    assert_eq!(names(&spans), vec!["s1-1", "s2-1"]);
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_count_traces_sampled_total",
            &[("processor", "ts"), ("policy", "all"), ("sampled", "true")]
        ),
        Some(2.0)
    );
    assert_eq!(
        reg.value(
            "otelcol_processor_tail_sampling_sampling_traces_on_memory",
            &[("processor", "ts")]
        ),
        Some(0.0)
    );
}

#[test]
fn decisions_keep_coming_while_ingest_never_pauses() {
    // A worker busy with a constant stream of new traces still decides the due ones: output
    // appears while ingest is still running, not only once it stops.
    let c = cfg("decision_wait: 20ms\nnum_shards: 1\npolicies: [{name: all, type: always_sample}]");
    let reg = Registry::new();
    let mut ts = TailSampling::new("ts", &c, &reg, Arc::new(Notify::new()));
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    let mut seen_during_ingest = 0usize;
    let mut n: u64 = 0;
    while start.elapsed() < Duration::from_millis(400) {
        let spans = (0..64u64)
            .map(|k| {
                let t = n * 64 + k;
                Span {
                    trace_id: (u128::from(t) + 1).to_be_bytes().to_vec(),
                    name: "x".into(),
                    ..Default::default()
                }
            })
            .collect();
        ts.process(batch(&request(vec![("a", "l", spans)])), &mut out);
        n += 1;
        seen_during_ingest += out.drain(..).map(|b| b.items).sum::<usize>();
        let mut ticked = Vec::new();
        ts.tick(Instant::now(), &mut ticked);
        seen_during_ingest += ticked.iter().map(|b| b.items).sum::<usize>();
    }
    assert!(
        seen_during_ingest > 0,
        "no decision during {n} requests of ingest"
    );
    let mut rest = Vec::new();
    ts.flush(&mut rest);
    let total = seen_during_ingest + rest.iter().map(|b| b.items).sum::<usize>();
    assert_eq!(total as u64, n * 64, "every span comes out once");
}
