//! The receiver check must agree with the prost decoder on every input: the inputs of the
//! trust issue as a table, and many mutated requests of every signal.
use super::*;
use crate::pdata::{count_logs, count_points, count_spans};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn attrs() -> Vec<KeyValue> {
    vec![
        kv("s", Value::StringValue("x".into())),
        kv("i", Value::IntValue(-7)),
        kv("d", Value::DoubleValue(1.5)),
        kv("b", Value::BoolValue(true)),
        kv("y", Value::BytesValue(vec![0xff, 0xfe])),
        kv(
            "a",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::StringValue("e".into())),
                }],
            }),
        ),
        kv(
            "m",
            Value::KvlistValue(KeyValueList {
                values: vec![kv("k", Value::IntValue(1))],
            }),
        ),
    ]
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: attrs(),
        dropped_attributes_count: 1,
        entity_refs: vec![EntityRef {
            schema_url: "u".into(),
            r#type: "service".into(),
            id_keys: vec!["service.name".into()],
            description_keys: vec!["d".into()],
        }],
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lib".into(),
        version: "1".into(),
        attributes: attrs(),
        dropped_attributes_count: 2,
    })
}

fn traces() -> ExportTraceServiceRequest {
    let span = |i: u8| Span {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        trace_state: "a=b".into(),
        parent_span_id: vec![1; 8],
        flags: 1,
        name: format!("span {i}"),
        kind: 2,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: attrs(),
        dropped_attributes_count: 1,
        events: vec![span::Event {
            time_unix_nano: 3,
            name: "ev".into(),
            attributes: attrs(),
            dropped_attributes_count: 0,
        }],
        dropped_events_count: 1,
        links: vec![span::Link {
            trace_id: vec![2; 16],
            span_id: vec![2; 8],
            trace_state: "c=d".into(),
            attributes: attrs(),
            dropped_attributes_count: 3,
            flags: 1,
        }],
        dropped_links_count: 1,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans: vec![span(1), span(2), span(3)],
                schema_url: "s".into(),
            }],
            schema_url: "r".into(),
        }],
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    let exemplar = Exemplar {
        filtered_attributes: attrs(),
        time_unix_nano: 1,
        span_id: vec![1; 8],
        trace_id: vec![1; 16],
        value: Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsInt(3)),
    };
    let number = |v| NumberDataPoint {
        attributes: attrs(),
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        exemplars: vec![exemplar.clone()],
        flags: 1,
        value: Some(v),
    };
    let metric = |name: &str, data| Metric {
        name: name.into(),
        description: "d".into(),
        unit: "1".into(),
        metadata: attrs(),
        data: Some(data),
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![
                    metric(
                        "g",
                        Data::Gauge(Gauge {
                            data_points: vec![
                                number(number_data_point::Value::AsDouble(1.0)),
                                number(number_data_point::Value::AsInt(2)),
                            ],
                        }),
                    ),
                    metric(
                        "s",
                        Data::Sum(Sum {
                            data_points: vec![number(number_data_point::Value::AsInt(2))],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "h",
                        Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: attrs(),
                                start_time_unix_nano: 1,
                                time_unix_nano: 2,
                                count: 3,
                                sum: Some(4.0),
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![1.0],
                                exemplars: vec![exemplar.clone()],
                                flags: 0,
                                min: Some(0.5),
                                max: Some(9.0),
                            }],
                            aggregation_temporality: 1,
                        }),
                    ),
                    metric(
                        "e",
                        Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                attributes: attrs(),
                                start_time_unix_nano: 1,
                                time_unix_nano: 2,
                                count: 3,
                                sum: Some(1.0),
                                scale: -2,
                                zero_count: 1,
                                positive: Some(Buckets {
                                    offset: -1,
                                    bucket_counts: vec![1, 300, 70000],
                                }),
                                negative: Some(Buckets::default()),
                                flags: 0,
                                exemplars: vec![exemplar],
                                min: Some(0.1),
                                max: Some(2.0),
                                zero_threshold: 0.01,
                            }],
                            aggregation_temporality: 2,
                        }),
                    ),
                    metric(
                        "q",
                        Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                attributes: attrs(),
                                start_time_unix_nano: 1,
                                time_unix_nano: 2,
                                count: 1,
                                sum: 2.0,
                                quantile_values: vec![ValueAtQuantile {
                                    quantile: 0.5,
                                    value: 1.0,
                                }],
                                flags: 0,
                            }],
                        }),
                    ),
                ],
                schema_url: "s".into(),
            }],
            schema_url: "r".into(),
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    let record = |i: u8| LogRecord {
        time_unix_nano: 1,
        observed_time_unix_nano: 2,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(Value::KvlistValue(KeyValueList { values: attrs() })),
        }),
        attributes: attrs(),
        dropped_attributes_count: 1,
        flags: 1,
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        event_name: "e".into(),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: vec![record(1), record(2)],
                schema_url: "s".into(),
            }],
            schema_url: "r".into(),
        }],
    }
}

/// What the decoder says: Ok(items) or Err.
fn decoded(signal: Signal, buf: &[u8]) -> Result<usize, prost::DecodeError> {
    match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(buf).map(|r| count_spans(&r)),
        Signal::Metrics => ExportMetricsServiceRequest::decode(buf).map(|r| count_points(&r)),
        Signal::Logs => ExportLogsServiceRequest::decode(buf).map(|r| count_logs(&r)),
    }
}

fn agree(signal: Signal, buf: &[u8]) {
    // The fast walk and the detailed one give the same verdict and count.
    let root = match signal {
        Signal::Traces => Msg::TraceRequest,
        Signal::Metrics => Msg::MetricsRequest,
        Signal::Logs => Msg::LogsRequest,
    } as usize;
    let fast = FAST[root](buf, MAX_DEPTH);
    let slow = WALK[root](buf, 0, MAX_DEPTH).ok();
    assert_eq!(
        fast, slow,
        "{signal}: fast and detailed walks differ on {buf:02x?}"
    );
    let ours = check_request(signal, buf);
    let theirs = decoded(signal, buf);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{signal} counts differ on {buf:02x?}"),
        (Err(_), Err(_)) => {}
        _ => panic!("{signal}: check {ours:?} but decoder {theirs:?} on {buf:02x?}"),
    }
}

fn samples() -> Vec<(Signal, Vec<u8>)> {
    vec![
        (Signal::Traces, traces().encode_to_vec()),
        (Signal::Metrics, metrics().encode_to_vec()),
        (Signal::Logs, logs().encode_to_vec()),
    ]
}

#[test]
fn valid_requests_pass_with_the_decoders_counts() {
    for (signal, buf) in samples() {
        let n = check_request(signal, &buf).expect("valid");
        assert_eq!(Ok(n), decoded(signal, &buf).map_err(|_| ()));
        assert!(n > 0);
        // Concatenated requests (what the batch processor makes) stay valid and add up.
        let twice = [buf.clone(), buf.clone()].concat();
        assert_eq!(check_request(signal, &twice), Ok(2 * n));
    }
    assert_eq!(check_request(Signal::Traces, &[]), Ok(0));
}

/// A span whose name is `name` (raw bytes), in a request.
fn span_named(name: &[u8]) -> Vec<u8> {
    let mut req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "X".repeat(name.len()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let at = req
        .windows(name.len())
        .position(|w| w == "X".repeat(name.len()).as_bytes())
        .expect("placeholder");
    req[at..at + name.len()].copy_from_slice(name);
    req
}

/// An attribute whose value is nested `depth` AnyValues deep (kvlist → values → value → ...).
fn nested(depth: usize) -> ExportTraceServiceRequest {
    let mut v = AnyValue {
        value: Some(Value::IntValue(1)),
    };
    for _ in 1..depth {
        v = AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(v),
                    ..Default::default()
                }],
            })),
        };
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    attributes: vec![KeyValue {
                        key: "deep".into(),
                        value: Some(v),
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

#[test]
fn the_trust_issue_inputs_are_refused_with_what_is_wrong() {
    // Invalid UTF-8 in a span name.
    let bad = span_named(&[0xff, 0xfe]);
    assert!(decoded(Signal::Traces, &bad).is_err());
    let e = check_request(Signal::Traces, &bad).expect_err("refused");
    assert!(
        e.to_string()
            .starts_with("Span.name (5) is not valid UTF-8"),
        "{e}"
    );
    // start_time_unix_nano (field 7, fixed64) sent as a varint.
    let mut wrong = Vec::new();
    let span = [0x38u8, 0x05]; // field 7, wire type 0, value 5
    let scope = [&[0x12u8, span.len() as u8][..], &span].concat();
    let rs = [&[0x12u8, scope.len() as u8][..], &scope].concat();
    wrong.extend_from_slice(&[0x0a, rs.len() as u8]);
    wrong.extend_from_slice(&rs);
    assert!(decoded(Signal::Traces, &wrong).is_err());
    assert_eq!(
        check_request(Signal::Traces, &wrong)
            .expect_err("refused")
            .to_string(),
        "Span.start_time_unix_nano (7) sent with wire type 0 at byte 6"
    );
    // 200 levels of AnyValue.
    let deep = nested(200).encode_to_vec();
    assert!(decoded(Signal::Traces, &deep).is_err());
    assert!(matches!(
        check_request(Signal::Traces, &deep),
        Err(WireError::Depth { .. })
    ));
}

#[test]
fn the_depth_limit_is_the_decoders_to_the_level() {
    let mut last_ok = 0;
    for depth in 1..=60 {
        let buf = nested(depth).encode_to_vec();
        agree(Signal::Traces, &buf);
        if check_request(Signal::Traces, &buf).is_ok() {
            last_ok = depth;
        }
    }
    // Request (0) → ResourceSpans → ScopeSpans → Span → KeyValue → AnyValue (5), then three
    // messages (KeyValueList, KeyValue, AnyValue) per further level, up to the decoder's 100.
    assert_eq!(last_ok, 32);
}

#[test]
fn groups_and_odd_keys_as_the_decoder_reads_them() {
    let cases: Vec<Vec<u8>> = vec![
        // Unknown field 9 as a group holding a varint, closed properly.
        vec![0x4b, 0x08, 0x01, 0x4c],
        // A group closed by the wrong field's end tag.
        vec![0x4b, 0x54],
        // A lone end-group.
        vec![0x4c],
        // Wire types 6 and 7.
        vec![0x4e, 0x00],
        vec![0x4f, 0x00],
        // A key above u32::MAX.
        vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00],
        // A 10-byte varint whose last byte overflows.
        vec![
            0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ],
        vec![
            0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
        // Unknown fixed32 / fixed64, truncated or whole.
        vec![0x4d, 1, 2, 3],
        vec![0x4d, 1, 2, 3, 4],
        vec![0x49, 1, 2, 3, 4, 5, 6, 7, 8],
    ];
    for c in cases {
        for s in Signal::ALL {
            agree(s, &c);
        }
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn agrees_with_the_decoder_on_mutated_requests() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let samples = samples();
    for round in 0..30_000 {
        let (signal, base) = &samples[round % samples.len()];
        let mut buf = base.clone();
        for _ in 0..=rng.below(3) {
            let i = rng.below(buf.len());
            match rng.below(6) {
                0 => buf[i] = rng.next() as u8,
                1 => buf[i] ^= 1 << rng.below(8),
                2 => buf.truncate(i),
                3 => buf.insert(i, rng.next() as u8),
                4 => {
                    buf.remove(i.min(buf.len().saturating_sub(1)));
                }
                // Invalid UTF-8 somewhere.
                _ => buf[i] = 0xff,
            }
            if buf.is_empty() {
                break;
            }
        }
        agree(*signal, &buf);
    }
}

#[test]
fn a_metric_counts_only_the_data_the_decoder_keeps() {
    // gauge{2 points} then sum{1 point} in one Metric: the decoder keeps the sum.
    let point = NumberDataPoint::default().encode_to_vec();
    let dp = |n: usize| -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(0x0a);
            out.push(point.len() as u8);
            out.extend_from_slice(&point);
        }
        out
    };
    let field = |tag: u8, body: &[u8]| [&[tag, body.len() as u8][..], body].concat();
    for (metric, expect) in [
        ([field(0x2a, &dp(2)), field(0x3a, &dp(1))].concat(), 1),
        ([field(0x2a, &dp(2)), field(0x2a, &dp(3))].concat(), 5),
        (
            [
                field(0x2a, &dp(2)),
                field(0x3a, &dp(1)),
                field(0x2a, &dp(1)),
            ]
            .concat(),
            1,
        ),
    ] {
        let sm = field(0x12, &metric);
        let rm = field(0x12, &sm);
        let req = field(0x0a, &rm);
        agree(Signal::Metrics, &req);
        assert_eq!(check_request(Signal::Metrics, &req), Ok(expect));
    }
}

#[test]
fn a_merged_batch_that_does_not_decode_keeps_its_good_parts() {
    use crate::pdata::{Batch, Context, Payload};
    use std::sync::Arc;
    let good = traces().encode_to_vec();
    let bad = span_named(&[0xff, 0xfe]);
    let merged = [good.clone(), bad, good].concat();
    let mut b = Batch::encoded(
        Signal::Traces,
        bytes::Bytes::from(merged),
        7,
        Arc::new(Context::default()),
    );
    let e = b.decode().expect_err("one part is bad");
    assert_eq!((e.lost, e.kept, b.items), (1, 6, 6));
    let Payload::Traces(r) = &b.payload else {
        panic!("decoded")
    };
    assert_eq!(r.resource_spans.len(), 2);
}
