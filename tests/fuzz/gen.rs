//! The fuzzer's generators: a seeded random source, structure-aware OTLP requests (every
//! field, odd values, deep nesting), and byte mutations that know protobuf's varints and keys.
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

/// splitmix64: small, fast, and every seed gives a good stream.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    pub fn pick_ref<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Up to `max` random bytes.
    pub fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
    /// A count that is usually small and sometimes not.
    pub fn count(&mut self, small: usize) -> usize {
        if self.chance(3) {
            self.below(small * 20)
        } else {
            self.below(small + 1)
        }
    }
    /// Integers at the edges as often as in the middle.
    pub fn u64(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => self.below(1000) as u64,
            3 => 1_700_000_000_000_000_000 + self.below(1 << 30) as u64,
            4 => 1 << self.below(64),
            _ => self.next(),
        }
    }
    pub fn i64(&mut self) -> i64 {
        match self.below(5) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => -(self.below(1000) as i64),
            _ => self.u64() as i64,
        }
    }
    pub fn f64(&mut self) -> f64 {
        self.pick(&[
            0.0,
            -0.0,
            1.5,
            -7.25,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            1e-300,
            123456.789,
        ])
    }
}

/// Strings that have broken parsers and encoders before: empty, unicode, control characters,
/// names that are not valid Prometheus or Loki names, the keys weir's stages look at.
const WORDS: &[&str] = &[
    "",
    "a",
    "service.name",
    "service.namespace",
    "service.instance.id",
    "tenant",
    "level",
    "severity",
    "job",
    "instance",
    "__name__",
    "le",
    "quantile",
    "http.method",
    "http.route",
    "9starts_with_digit",
    "a-b.c/d:e",
    "ünïcödé",
    "😀",
    " spaced out ",
    "line\nbreak",
    "quote\"and\\backslash",
    "nul\u{0}byte",
    "{label=\"x\"}",
    "loki.attribute.labels",
    "loki.resource.labels",
    "loki.format",
    "json",
    "logfmt",
    "raw",
    "gen_ai.tool.name",
    "_",
    "__",
    "::",
    "x.y.z.w.v.u.t.s.r.q.p.o.n.m.l.k.j.i.h.g.f.e.d.c.b.a",
];

pub fn word(r: &mut Rng) -> String {
    if r.chance(3) {
        return "x".repeat(r.below(5000));
    }
    r.pick(WORDS).to_string()
}

fn id(r: &mut Rng, n: usize) -> Vec<u8> {
    match r.below(8) {
        0 => Vec::new(),
        1 => vec![0; n],
        2 => {
            let n = r.below(40);
            r.bytes(n)
        }
        _ => r.bytes(n),
    }
}

/// An AnyValue; `depth` bounds how far arrays and maps nest (a chain may go past the decoder's
/// limit on purpose).
pub fn any(r: &mut Rng, depth: usize) -> AnyValue {
    let value = match r.below(if depth == 0 { 6 } else { 8 }) {
        0 => None,
        1 => Some(Value::StringValue(word(r))),
        2 => Some(Value::BoolValue(r.chance(50))),
        3 => Some(Value::IntValue(r.i64())),
        4 => Some(Value::DoubleValue(r.f64())),
        5 => Some(Value::BytesValue(r.some_bytes(20))),
        6 => Some(Value::ArrayValue(ArrayValue {
            values: (0..r.count(3)).map(|_| any(r, depth - 1)).collect(),
        })),
        _ => Some(Value::KvlistValue(KeyValueList {
            values: attrs(r, depth - 1),
        })),
    };
    AnyValue { value }
}

/// A kvlist chain `n` levels deep: past the decoder's nesting limit when `n` is large.
pub fn deep(n: usize) -> AnyValue {
    let mut v = AnyValue {
        value: Some(Value::StringValue("bottom".into())),
    };
    for _ in 0..n {
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
    v
}

pub fn attrs(r: &mut Rng, depth: usize) -> Vec<KeyValue> {
    (0..r.count(3))
        .map(|_| KeyValue {
            key: word(r),
            value: if r.chance(90) {
                Some(if r.chance(2) {
                    deep(20 + r.below(100))
                } else {
                    any(r, depth)
                })
            } else {
                None
            },
            ..Default::default()
        })
        .collect()
}

fn resource(r: &mut Rng) -> Option<Resource> {
    r.chance(85).then(|| Resource {
        attributes: attrs(r, 2),
        dropped_attributes_count: r.below(3) as u32,
        entity_refs: Vec::new(),
    })
}

fn scope(r: &mut Rng) -> Option<InstrumentationScope> {
    r.chance(70).then(|| InstrumentationScope {
        name: word(r),
        version: word(r),
        attributes: attrs(r, 1),
        dropped_attributes_count: r.below(2) as u32,
    })
}

pub fn traces(r: &mut Rng) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: (0..r.count(2))
            .map(|_| ResourceSpans {
                resource: resource(r),
                schema_url: word(r),
                scope_spans: (0..r.count(2))
                    .map(|_| ScopeSpans {
                        scope: scope(r),
                        schema_url: String::new(),
                        spans: (0..r.count(3)).map(|_| one_span(r)).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn one_span(r: &mut Rng) -> Span {
    Span {
        trace_id: id(r, 16),
        span_id: id(r, 8),
        trace_state: if r.chance(20) {
            "ot=th:8;rv:0123456789abcd".into()
        } else {
            word(r)
        },
        parent_span_id: id(r, 8),
        flags: r.next() as u32,
        name: word(r),
        kind: r.below(7) as i32 - 1,
        start_time_unix_nano: r.u64(),
        end_time_unix_nano: r.u64(),
        attributes: attrs(r, 2),
        dropped_attributes_count: r.below(3) as u32,
        events: (0..r.count(1))
            .map(|_| span::Event {
                time_unix_nano: r.u64(),
                name: word(r),
                attributes: attrs(r, 1),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: r.below(2) as u32,
        links: (0..r.count(1))
            .map(|_| span::Link {
                trace_id: id(r, 16),
                span_id: id(r, 8),
                trace_state: word(r),
                attributes: attrs(r, 1),
                dropped_attributes_count: 0,
                flags: r.next() as u32,
            })
            .collect(),
        dropped_links_count: 0,
        status: r.chance(60).then(|| Status {
            message: word(r),
            code: r.below(5) as i32 - 1,
        }),
    }
}

pub fn logs(r: &mut Rng) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: (0..r.count(2))
            .map(|_| ResourceLogs {
                resource: resource(r),
                schema_url: String::new(),
                scope_logs: (0..r.count(2))
                    .map(|_| ScopeLogs {
                        scope: scope(r),
                        schema_url: String::new(),
                        log_records: (0..r.count(3))
                            .map(|_| LogRecord {
                                time_unix_nano: r.u64(),
                                observed_time_unix_nano: r.u64(),
                                severity_number: r.below(30) as i32 - 2,
                                severity_text: word(r),
                                body: r.chance(85).then(|| any(r, 2)),
                                attributes: attrs(r, 2),
                                dropped_attributes_count: 0,
                                flags: r.next() as u32,
                                trace_id: id(r, 16),
                                span_id: id(r, 8),
                                event_name: word(r),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn exemplars(r: &mut Rng) -> Vec<Exemplar> {
    (0..r.count(1))
        .map(|_| Exemplar {
            filtered_attributes: attrs(r, 1),
            time_unix_nano: r.u64(),
            span_id: id(r, 8),
            trace_id: id(r, 16),
            value: Some(if r.chance(50) {
                exemplar::Value::AsDouble(r.f64())
            } else {
                exemplar::Value::AsInt(r.i64())
            }),
        })
        .collect()
}

fn number_points(r: &mut Rng) -> Vec<NumberDataPoint> {
    (0..r.count(2))
        .map(|_| NumberDataPoint {
            attributes: attrs(r, 1),
            start_time_unix_nano: r.u64(),
            time_unix_nano: r.u64(),
            exemplars: exemplars(r),
            flags: r.below(3) as u32,
            value: match r.below(3) {
                0 => None,
                1 => Some(number_data_point::Value::AsInt(r.i64())),
                _ => Some(number_data_point::Value::AsDouble(r.f64())),
            },
        })
        .collect()
}

fn data(r: &mut Rng) -> Option<Data> {
    let temporality = r.below(4) as i32;
    Some(match r.below(6) {
        0 => return None,
        1 => Data::Gauge(Gauge {
            data_points: number_points(r),
        }),
        2 => Data::Sum(Sum {
            data_points: number_points(r),
            aggregation_temporality: temporality,
            is_monotonic: r.chance(50),
        }),
        3 => Data::Histogram(Histogram {
            aggregation_temporality: temporality,
            data_points: (0..r.count(2))
                .map(|_| {
                    let bounds: Vec<f64> = (0..r.count(3)).map(|_| r.f64()).collect();
                    // Usually one more count than bounds; sometimes not.
                    let n = if r.chance(80) {
                        bounds.len() + 1
                    } else {
                        r.below(6)
                    };
                    HistogramDataPoint {
                        attributes: attrs(r, 1),
                        start_time_unix_nano: r.u64(),
                        time_unix_nano: r.u64(),
                        count: r.u64(),
                        sum: r.chance(70).then(|| r.f64()),
                        bucket_counts: (0..n).map(|_| r.u64()).collect(),
                        explicit_bounds: bounds,
                        exemplars: exemplars(r),
                        flags: r.below(3) as u32,
                        min: r.chance(50).then(|| r.f64()),
                        max: r.chance(50).then(|| r.f64()),
                    }
                })
                .collect(),
        }),
        4 => Data::ExponentialHistogram(ExponentialHistogram {
            aggregation_temporality: temporality,
            data_points: (0..r.count(2))
                .map(|_| {
                    let buckets = |r: &mut Rng| {
                        r.chance(80).then(|| Buckets {
                            offset: r.pick(&[0, -1, 1, i32::MIN, i32::MAX, -300, 300]),
                            bucket_counts: (0..r.count(4)).map(|_| r.u64()).collect(),
                        })
                    };
                    ExponentialHistogramDataPoint {
                        attributes: attrs(r, 1),
                        start_time_unix_nano: r.u64(),
                        time_unix_nano: r.u64(),
                        count: r.u64(),
                        sum: r.chance(70).then(|| r.f64()),
                        scale: r.pick(&[0, 1, -4, -5, 8, 9, 20, -10, i32::MIN, i32::MAX]),
                        zero_count: r.u64(),
                        positive: buckets(r),
                        negative: buckets(r),
                        flags: r.below(3) as u32,
                        exemplars: exemplars(r),
                        min: r.chance(50).then(|| r.f64()),
                        max: r.chance(50).then(|| r.f64()),
                        zero_threshold: r.f64(),
                    }
                })
                .collect(),
        }),
        _ => Data::Summary(Summary {
            data_points: (0..r.count(2))
                .map(|_| SummaryDataPoint {
                    attributes: attrs(r, 1),
                    start_time_unix_nano: r.u64(),
                    time_unix_nano: r.u64(),
                    count: r.u64(),
                    sum: r.f64(),
                    quantile_values: (0..r.count(3))
                        .map(|_| ValueAtQuantile {
                            quantile: r.f64(),
                            value: r.f64(),
                        })
                        .collect(),
                    flags: r.below(3) as u32,
                })
                .collect(),
        }),
    })
}

pub fn metrics(r: &mut Rng) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: (0..r.count(2))
            .map(|_| ResourceMetrics {
                resource: resource(r),
                schema_url: String::new(),
                scope_metrics: (0..r.count(2))
                    .map(|_| ScopeMetrics {
                        scope: scope(r),
                        schema_url: String::new(),
                        metrics: (0..r.count(3))
                            .map(|_| Metric {
                                name: word(r),
                                description: word(r),
                                unit: r
                                    .pick(&["", "ms", "s", "By", "1", "{request}", "%"])
                                    .to_string(),
                                metadata: attrs(r, 0),
                                data: data(r),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Protobuf-aware byte mutations: flips, inserts, cuts, duplicated ranges, splices from
/// another input, and well-formed fields (any number, any wire type) dropped in anywhere.
pub fn mutate(r: &mut Rng, buf: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..=r.below(4) {
        let i = r.below(buf.len() + 1);
        match r.below(11) {
            0 if !buf.is_empty() => {
                let at = i.min(buf.len() - 1);
                buf[at] ^= 1 << r.below(8);
            }
            1 if !buf.is_empty() => {
                let at = i.min(buf.len() - 1);
                buf[at] = r.next() as u8;
            }
            2 => buf.truncate(i),
            3 => {
                let end = (i + r.below(16)).min(buf.len());
                buf.drain(i..end);
            }
            4 => {
                let end = (i + r.below(32)).min(buf.len());
                let chunk = buf[i..end].to_vec();
                let at = r.below(buf.len() + 1);
                buf.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let a = r.below(other.len());
                let b = (a + r.below(64)).min(other.len());
                buf.splice(i..i, other[a..b].iter().copied());
            }
            6 => {
                // A varint at its edges: overlong, overflowing, huge.
                let v: &[u8] = r.pick(&[
                    &[0xff; 10],
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                    &[
                        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
                    ],
                    &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    &[0x00],
                    &[0x80, 0x00],
                ]);
                buf.splice(i..i, v.iter().copied());
            }
            7 => {
                // A well-formed field of any number and wire type.
                let number = r.pick(&[
                    1u64, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 19, 536870911,
                ]);
                let wire = r.below(8) as u64;
                let mut f = Vec::new();
                put_varint(&mut f, number << 3 | wire);
                match wire {
                    0 => put_varint(&mut f, r.u64()),
                    1 => f.extend_from_slice(&r.bytes(8)),
                    2 => {
                        let body = if r.chance(50) {
                            vec![0xff, 0xfe]
                        } else {
                            r.some_bytes(12)
                        };
                        put_varint(&mut f, body.len() as u64);
                        f.extend_from_slice(&body);
                    }
                    5 => f.extend_from_slice(&r.bytes(4)),
                    _ => {}
                }
                buf.splice(i..i, f);
            }
            8 => buf.splice(i..i, [0xff, 0xfe]).for_each(drop),
            9 => {
                // Groups: start with an end or none, end with no start.
                let number = 1 + r.below(20) as u64;
                let mut f = Vec::new();
                put_varint(&mut f, number << 3 | (3 + r.below(2) as u64));
                buf.splice(i..i, f);
            }
            _ => {
                let n = r.below(8);
                let junk = r.bytes(n);
                buf.splice(i..i, junk);
            }
        }
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
