use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, AggregationTemporality, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::time::Duration;

use super::proto::{histogram, BucketSpan, Label, TimeSeries, WriteRequest};
use super::translate::{native_histogram, translate, Settings, STALE_NAN};
use super::*;

const T: u64 = 1_700_000_000_123_456_789;
const T_MS: i64 = 1_700_000_000_123;
const CUM: i32 = AggregationTemporality::Cumulative as i32;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn req(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "io.weir.test".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn svc() -> Vec<KeyValue> {
    vec![
        kv("service.name", "checkout"),
        kv("service.namespace", "shop"),
        kv("service.instance.id", "pod-1"),
    ]
}

fn point(v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: T,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("{name} help"),
        data: Some(data),
        ..Default::default()
    }
}

fn settings() -> Settings {
    Settings {
        target_info: true,
        add_suffixes: true,
        ..Default::default()
    }
}

fn labels(ts: &TimeSeries) -> Vec<(String, String)> {
    ts.labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

fn find<'a>(series: &'a [TimeSeries], name: &str, extra: &[(&str, &str)]) -> &'a TimeSeries {
    series
        .iter()
        .find(|t| {
            t.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == name)
                && extra
                    .iter()
                    .all(|(k, v)| t.labels.iter().any(|l| l.name == *k && l.value == *v))
        })
        .unwrap_or_else(|| {
            panic!(
                "no series {name} {extra:?} in {:#?}",
                series.iter().map(labels).collect::<Vec<_>>()
            )
        })
}

#[test]
fn counter_gets_total_job_instance_scope_and_sorted_labels() {
    let m = metric(
        "http.requests",
        "{request}",
        metric::Data::Sum(Sum {
            data_points: vec![point(7.0, vec![kv("http.method", "GET")])],
            aggregation_temporality: CUM,
            is_monotonic: true,
        }),
    );
    let t = translate(&req(svc(), vec![m]), &settings());
    let s = find(&t.series, "http_requests_total", &[]);
    assert_eq!(
        labels(s),
        vec![
            ("__name__".into(), "http_requests_total".into()),
            ("http_method".into(), "GET".into()),
            ("instance".into(), "pod-1".into()),
            ("job".into(), "shop/checkout".into()),
            ("otel_scope_name".into(), "io.weir.test".into()),
            ("otel_scope_version".into(), "1.0".into()),
        ]
    );
    assert_eq!(s.samples.len(), 1);
    assert_eq!((s.samples[0].value, s.samples[0].timestamp), (7.0, T_MS));
}

#[test]
fn gauges_ratio_and_non_monotonic_sums() {
    let g = metric(
        "cpu.utilization",
        "1",
        metric::Data::Gauge(Gauge {
            data_points: vec![point(0.5, vec![])],
        }),
    );
    let ud = metric(
        "queue.depth",
        "{item}",
        metric::Data::Sum(Sum {
            data_points: vec![point(3.0, vec![])],
            aggregation_temporality: CUM,
            is_monotonic: false,
        }),
    );
    let t = translate(
        &req(vec![kv("service.name", "a")], vec![g, ud]),
        &settings(),
    );
    assert_eq!(
        find(&t.series, "cpu_utilization_ratio", &[("job", "a")]).samples[0].value,
        0.5
    );
    assert_eq!(find(&t.series, "queue_depth", &[]).samples[0].value, 3.0);
}

#[test]
fn histograms_are_cumulative_buckets_with_inf_sum_count_and_exemplars() {
    let h = metric(
        "http.server.duration",
        "s",
        metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: T,
                count: 10,
                sum: Some(4.5),
                bucket_counts: vec![2, 3, 4, 1],
                explicit_bounds: vec![0.1, 0.5, 1.0],
                exemplars: vec![Exemplar {
                    time_unix_nano: T,
                    value: Some(exemplar::Value::AsDouble(0.3)),
                    trace_id: vec![0xab; 16],
                    span_id: vec![0xcd; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            aggregation_temporality: CUM,
        }),
    );
    let t = translate(&req(svc(), vec![h]), &settings());
    let b = |le| {
        find(
            &t.series,
            "http_server_duration_seconds_bucket",
            &[("le", le)],
        )
    };
    assert_eq!(b("0.1").samples[0].value, 2.0);
    assert_eq!(b("0.5").samples[0].value, 5.0);
    assert_eq!(b("1").samples[0].value, 9.0);
    assert_eq!(b("+Inf").samples[0].value, 10.0);
    assert_eq!(
        find(&t.series, "http_server_duration_seconds_sum", &[]).samples[0].value,
        4.5
    );
    assert_eq!(
        find(&t.series, "http_server_duration_seconds_count", &[]).samples[0].value,
        10.0
    );
    let ex = &b("0.5").exemplars;
    assert_eq!(ex.len(), 1, "the 0.3 exemplar belongs to le=0.5");
    assert!(b("0.1").exemplars.is_empty());
    assert_eq!(ex[0].value, 0.3);
    assert!(ex[0].labels.contains(&Label {
        name: "trace_id".into(),
        value: "ab".repeat(16)
    }));
    assert!(ex[0].labels.contains(&Label {
        name: "span_id".into(),
        value: "cd".repeat(8)
    }));
}

#[test]
fn summaries_have_quantiles_sum_and_count() {
    let s = metric(
        "rpc.latency",
        "ms",
        metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                time_unix_nano: T,
                count: 4,
                sum: 100.0,
                quantile_values: vec![
                    ValueAtQuantile {
                        quantile: 0.5,
                        value: 20.0,
                    },
                    ValueAtQuantile {
                        quantile: 0.99,
                        value: 45.0,
                    },
                ],
                ..Default::default()
            }],
        }),
    );
    let t = translate(&req(svc(), vec![s]), &settings());
    assert_eq!(
        find(
            &t.series,
            "rpc_latency_milliseconds",
            &[("quantile", "0.5")]
        )
        .samples[0]
            .value,
        20.0
    );
    assert_eq!(
        find(
            &t.series,
            "rpc_latency_milliseconds",
            &[("quantile", "0.99")]
        )
        .samples[0]
            .value,
        45.0
    );
    assert_eq!(
        find(&t.series, "rpc_latency_milliseconds_sum", &[]).samples[0].value,
        100.0
    );
    assert_eq!(
        find(&t.series, "rpc_latency_milliseconds_count", &[]).samples[0].value,
        4.0
    );
}

#[test]
fn exponential_histograms_become_native_histograms() {
    // Scale 2; positive buckets at OTLP indexes 0..=5 with counts [1,0,0,0,2,3]: the run of
    // three empty buckets starts a new span; Prometheus indexes are one higher.
    let p = ExponentialHistogramDataPoint {
        time_unix_nano: T,
        count: 8,
        sum: Some(12.5),
        scale: 2,
        zero_count: 2,
        zero_threshold: 1e-9,
        positive: Some(Buckets {
            offset: 0,
            bucket_counts: vec![1, 0, 0, 0, 2, 3],
        }),
        negative: Some(Buckets {
            offset: -2,
            bucket_counts: vec![0],
        }),
        ..Default::default()
    };
    let h = native_histogram(&p).expect("representable");
    assert_eq!(h.schema, 2);
    assert_eq!(h.count, Some(histogram::Count::CountInt(8)));
    assert_eq!(h.zero_count, Some(histogram::ZeroCount::ZeroCountInt(2)));
    assert_eq!(h.sum, 12.5);
    assert_eq!(h.zero_threshold, 1e-9);
    assert_eq!(h.timestamp, T_MS);
    assert_eq!(
        h.positive_spans,
        vec![
            BucketSpan {
                offset: 1,
                length: 1
            },
            BucketSpan {
                offset: 3,
                length: 2
            }
        ]
    );
    assert_eq!(h.positive_deltas, vec![1, 1, 1]);
    assert!(h.negative_spans.is_empty());

    // A gap of two empty buckets stays inside the span, as zero deltas.
    let p2 = ExponentialHistogramDataPoint {
        scale: 0,
        positive: Some(Buckets {
            offset: -1,
            bucket_counts: vec![4, 0, 0, 1],
        }),
        ..Default::default()
    };
    let h2 = native_histogram(&p2).expect("representable");
    assert_eq!(
        h2.positive_spans,
        vec![BucketSpan {
            offset: 0,
            length: 4
        }]
    );
    assert_eq!(h2.positive_deltas, vec![4, -4, 0, 1]);

    // Scale 10 is finer than Prometheus takes: buckets merge 4 at a time down to schema 8.
    let p3 = ExponentialHistogramDataPoint {
        scale: 10,
        positive: Some(Buckets {
            offset: 0,
            bucket_counts: vec![1, 1, 1, 1, 2, 2],
        }),
        ..Default::default()
    };
    let h3 = native_histogram(&p3).expect("representable");
    assert_eq!(h3.schema, 8);
    assert_eq!(
        h3.positive_spans,
        vec![BucketSpan {
            offset: 1,
            length: 2
        }]
    );
    assert_eq!(h3.positive_deltas, vec![4, 0]);

    let too_coarse = ExponentialHistogramDataPoint {
        scale: -5,
        ..Default::default()
    };
    assert!(native_histogram(&too_coarse).is_none());

    let m = metric(
        "request.size",
        "By",
        metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![p, too_coarse],
            aggregation_temporality: CUM,
        }),
    );
    let t = translate(&req(svc(), vec![m]), &settings());
    let s = find(&t.series, "request_size_bytes", &[]);
    assert_eq!(s.histograms.len(), 1);
    assert!(s.samples.is_empty());
    assert_eq!(t.dropped_invalid, 1);
}

#[test]
fn delta_points_are_dropped_and_counted() {
    let delta = AggregationTemporality::Delta as i32;
    let m = metric(
        "hits",
        "1",
        metric::Data::Sum(Sum {
            data_points: vec![point(1.0, vec![]), point(2.0, vec![kv("a", "b")])],
            aggregation_temporality: delta,
            is_monotonic: true,
        }),
    );
    let t = translate(&req(svc(), vec![m]), &settings());
    assert_eq!(t.dropped_delta, 2);
    assert!(t
        .series
        .iter()
        .all(|s| !labels(s).contains(&("__name__".into(), "hits_total".into()))));
}

#[test]
fn target_info_carries_the_other_resource_attributes() {
    let mut attrs = svc();
    attrs.push(kv("host.name", "node-7"));
    attrs.push(kv("k8s.pod.name", "checkout-abc"));
    let g = metric(
        "up",
        "",
        metric::Data::Gauge(Gauge {
            data_points: vec![point(1.0, vec![])],
        }),
    );
    let t = translate(&req(attrs, vec![g.clone()]), &settings());
    let ti = find(&t.series, "target_info", &[]);
    assert_eq!(
        labels(ti),
        vec![
            ("__name__".into(), "target_info".into()),
            ("host_name".into(), "node-7".into()),
            ("instance".into(), "pod-1".into()),
            ("job".into(), "shop/checkout".into()),
            ("k8s_pod_name".into(), "checkout-abc".into()),
        ]
    );
    assert_eq!((ti.samples[0].value, ti.samples[0].timestamp), (1.0, T_MS));
    // Only identifying attributes: no target_info. Disabled: none either.
    let t = translate(&req(svc(), vec![g.clone()]), &settings());
    assert!(t
        .series
        .iter()
        .all(|s| !labels(s).contains(&("__name__".into(), "target_info".into()))));
    let mut off = settings();
    off.target_info = false;
    let mut attrs = svc();
    attrs.push(kv("host.name", "n"));
    let t = translate(&req(attrs, vec![g]), &off);
    assert_eq!(t.series.len(), 1);
}

#[test]
fn colliding_keys_join_values_and_resource_labels_and_external_labels_apply() {
    let g = metric(
        "x",
        "",
        metric::Data::Gauge(Gauge {
            data_points: vec![point(
                1.0,
                vec![kv("a.b", "1"), kv("a_b", "2"), kv("env", "mine")],
            )],
        }),
    );
    let mut s = settings();
    s.external_labels = vec![
        Label {
            name: "cluster".into(),
            value: "eu-1".into(),
        },
        Label {
            name: "env".into(),
            value: "external".into(),
        },
    ];
    s.resource_to_telemetry = true;
    let mut attrs = svc();
    attrs.push(kv("region", "eu"));
    let t = translate(&req(attrs, vec![g]), &s);
    let x = find(&t.series, "x", &[]);
    let l = labels(x);
    assert!(l.contains(&("a_b".into(), "1;2".into())), "{l:?}");
    assert!(l.contains(&("cluster".into(), "eu-1".into())));
    assert!(
        l.contains(&("env".into(), "mine".into())),
        "the series' own label wins"
    );
    assert!(
        l.contains(&("region".into(), "eu".into())),
        "resource_to_telemetry_conversion"
    );
    assert!(l.contains(&("service_name".into(), "checkout".into())));
}

#[test]
fn no_recorded_value_is_the_staleness_marker_and_samples_are_time_ordered() {
    let mut p1 = point(5.0, vec![]);
    p1.time_unix_nano = T + 2_000_000_000;
    let mut p0 = point(4.0, vec![]);
    p0.time_unix_nano = T;
    let mut stale = point(0.0, vec![]);
    stale.time_unix_nano = T + 4_000_000_000;
    stale.flags = 1;
    let g = metric(
        "temp",
        "Cel",
        metric::Data::Gauge(Gauge {
            data_points: vec![p1, stale, p0],
        }),
    );
    let t = translate(&req(svc(), vec![g]), &settings());
    let s = find(&t.series, "temp_celsius", &[]);
    let ts: Vec<i64> = s.samples.iter().map(|x| x.timestamp).collect();
    assert_eq!(ts, vec![T_MS, T_MS + 2000, T_MS + 4000]);
    assert_eq!(s.samples[2].value.to_bits(), STALE_NAN);
}

#[test]
fn metadata_when_asked() {
    let g = metric(
        "up",
        "",
        metric::Data::Gauge(Gauge {
            data_points: vec![point(1.0, vec![])],
        }),
    );
    let mut s = settings();
    s.send_metadata = true;
    let t = translate(&req(svc(), vec![g]), &s);
    assert_eq!(t.metadata.len(), 1);
    assert_eq!(t.metadata[0].metric_family_name, "up");
    assert_eq!(t.metadata[0].help, "up help");
    assert_eq!(t.metadata[0].r#type, super::proto::TYPE_GAUGE);
}

#[test]
fn requests_are_split_under_the_size_limit() {
    let points: Vec<NumberDataPoint> = (0..500)
        .map(|i| point(i as f64, vec![kv("i", &i.to_string())]))
        .collect();
    let g = metric(
        "many",
        "",
        metric::Data::Gauge(Gauge {
            data_points: points,
        }),
    );
    let t = translate(&req(svc(), vec![g]), &settings());
    let n = t.series.len();
    let parts = split(t.series, Vec::new(), 4096);
    assert!(parts.len() > 1);
    let mut total = 0;
    for p in &parts {
        assert!(p.len() <= 4096, "{}", p.len());
        total += WriteRequest::decode(p.as_slice())
            .expect("decodes")
            .timeseries
            .len();
    }
    assert_eq!(total, n);
}

#[test]
fn config_validation_messages() {
    let mut bad: config::PrwExporterConfig = serde_yaml::from_str(
        "endpoint: ftp://x\nexternal_labels: {1bad: x}\nnamespace: 'a-b'\nmax_batch_size_bytes: 0",
    )
    .expect("yaml");
    // A namespace with characters a metric name cannot hold is made one, as upstream does.
    bad.normalize();
    assert_eq!(bad.namespace, "a_b");
    let errs = bad.validate();
    let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        vec!["endpoint", "max_batch_size_bytes", "external_labels.1bad"]
    );
    assert_eq!(
        errs[0].1,
        "invalid URL \"ftp://x\": expected http://host:port/api/v1/write"
    );
    let none: config::PrwExporterConfig = serde_yaml::from_str("{}").expect("yaml");
    assert_eq!(
        none.validate()[0].1,
        "is required (e.g. http://prometheus:9090/api/v1/write)"
    );
}

/// A one-shot HTTP server answering every request with `status` and `body`; returns its port
/// and the requests' (headers, decompressed body).
async fn fake(
    status: u16,
    extra: &'static str,
    body: &'static str,
) -> (u16, tokio::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let payload = buf[end + 4..end + 4 + len].to_vec();
                    let raw = snap::raw::Decoder::new()
                        .decompress_vec(&payload)
                        .unwrap_or_default();
                    let _ = tx.send((head, raw)).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n{extra}\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    buf.clear();
                }
            });
        }
    });
    (port, rx)
}

fn sender(port: u16) -> Arc<PrwSender> {
    let cfg: config::PrwExporterConfig = serde_yaml::from_str(&format!(
        "endpoint: http://127.0.0.1:{port}/api/v1/write\nheaders: {{X-Scope-OrgID: t1}}"
    ))
    .expect("yaml");
    PrwSender::new("prometheusremotewrite", &cfg, &Registry::new()).expect("sender")
}

fn one_gauge_batch() -> Batch {
    let g = metric(
        "up",
        "",
        metric::Data::Gauge(Gauge {
            data_points: vec![point(1.0, vec![])],
        }),
    );
    let r = req(svc(), vec![g]);
    Batch::encoded(
        Signal::Metrics,
        Bytes::from(r.encode_to_vec()),
        1,
        Default::default(),
    )
}

#[tokio::test]
async fn sends_snappy_protobuf_with_the_remote_write_headers() {
    let (port, mut rx) = fake(204, "", "").await;
    let s = sender(port);
    s.send(&one_gauge_batch()).await.expect("sent");
    let (head, body) = rx.recv().await.expect("a request");
    let h = head.to_ascii_lowercase();
    assert!(h.starts_with("post /api/v1/write http/1.1"), "{head}");
    assert!(h.contains("content-encoding: snappy"));
    assert!(h.contains("content-type: application/x-protobuf"));
    assert!(h.contains("x-prometheus-remote-write-version: 0.1.0"));
    assert!(h.contains("x-scope-orgid: t1"));
    let wr = WriteRequest::decode(body.as_slice()).expect("a WriteRequest");
    assert_eq!(
        wr.timeseries.len(),
        1,
        "`up` (no target_info: only identifying attributes)"
    );
}

#[tokio::test]
async fn server_errors_and_429_retry_other_4xx_are_permanent() {
    let (port, _rx) = fake(503, "retry-after: 7\r\n", "overloaded").await;
    match sender(port).send(&one_gauge_batch()).await {
        Err(ExportError::Retryable {
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
            assert!(
                message.contains("503") && message.contains("overloaded"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let (port, _rx) = fake(429, "", "slow down").await;
    assert!(matches!(
        sender(port).send(&one_gauge_batch()).await,
        Err(ExportError::Retryable { .. })
    ));
    let (port, _rx) = fake(400, "", "out of order sample").await;
    match sender(port).send(&one_gauge_batch()).await {
        Err(ExportError::Permanent { message }) => {
            assert!(message.contains("out of order sample"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn each_tenant_is_sent_under_its_own_header() {
    let (port, mut rx) = fake(204, "", "").await;
    let cfg: config::PrwExporterConfig = serde_yaml::from_str(&format!(
        "endpoint: http://127.0.0.1:{port}/api/v1/write\ntenant_header: X-Scope-OrgID"
    ))
    .expect("yaml");
    let s = PrwSender::new("prometheusremotewrite", &cfg, &Registry::new()).expect("sender");
    for t in ["team-a", "team-b"] {
        let mut b = one_gauge_batch();
        b.context = Arc::new(crate::pdata::Context {
            tenant: Some(Arc::from(t)),
            auth: None,
            ..Default::default()
        });
        s.send(&b).await.expect("sent");
        let (head, _) = rx.recv().await.expect("a request");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("x-scope-orgid: {t}")),
            "{head}"
        );
    }
    // No tenant: no header.
    s.send(&one_gauge_batch()).await.expect("sent");
    let (head, _) = rx.recv().await.expect("a request");
    assert!(
        !head.to_ascii_lowercase().contains("x-scope-orgid"),
        "{head}"
    );
}
