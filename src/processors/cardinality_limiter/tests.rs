use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::config::CardinalityLimiterConfig;
use super::*;
use crate::pdata::{Context, Signal};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn counter(name: &str, points: Vec<(Vec<KeyValue>, i64)>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points
                .into_iter()
                .map(|(attrs, v)| NumberDataPoint {
                    attributes: attrs,
                    start_time_unix_nano: 1,
                    time_unix_nano: 10,
                    value: Some(number_data_point::Value::AsInt(v)),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn req(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api")],
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

fn users(range: std::ops::Range<usize>, v: i64) -> Vec<(Vec<KeyValue>, i64)> {
    range
        .map(|i| (vec![kv("user_id", &format!("u{i}"))], v))
        .collect()
}

fn limiter(yaml: &str) -> (CardinalityLimiter, Arc<Registry>) {
    let cfg: CardinalityLimiterConfig = serde_yaml::from_str(yaml).expect("yaml");
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let reg = Registry::new();
    (
        CardinalityLimiter::new("cardinality_limiter", &cfg, Arc::clone(&reg)),
        reg,
    )
}

fn run(
    l: &mut CardinalityLimiter,
    r: ExportMetricsServiceRequest,
    tenant: Option<&str>,
) -> ExportMetricsServiceRequest {
    let ctx = Context {
        tenant: tenant.map(Arc::from),
        auth: None,
        ..Default::default()
    };
    let b = Batch::encoded(
        Signal::Metrics,
        Bytes::from(r.encode_to_vec()),
        0,
        Arc::new(ctx),
    );
    let mut out = Vec::new();
    l.process(b, &mut out);
    match out.pop() {
        Some(b) => ExportMetricsServiceRequest::decode(b.to_bytes()).expect("decodes"),
        None => ExportMetricsServiceRequest::default(),
    }
}

/// (attributes as "k=v,..", value) of every number point of metric `name`.
fn points(r: &ExportMetricsServiceRequest, name: &str) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    for rm in &r.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in sm.metrics.iter().filter(|m| m.name == name) {
                let pts = match &m.data {
                    Some(metric::Data::Sum(s)) => &s.data_points,
                    Some(metric::Data::Gauge(g)) => &g.data_points,
                    _ => continue,
                };
                for p in pts {
                    let attrs: Vec<String> = p
                        .attributes
                        .iter()
                        .map(|kv| {
                            format!(
                                "{}={}",
                                kv.key,
                                match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(any_value::Value::StringValue(s)) => s.clone(),
                                    _ => String::new(),
                                }
                            )
                        })
                        .collect();
                    v.push((attrs.join(","), number(p)));
                }
            }
        }
    }
    v
}

const OVERFLOW: &str = "otel_metric_overflow=true";

#[test]
fn overflow_folds_new_series_over_the_limit_and_keeps_the_total() {
    let (mut l, reg) = limiter("default_limit: {max_series_per_metric: 100}");
    let out = run(&mut l, req(vec![counter("logins", users(0..150, 1))]), None);
    let p = points(&out, "logins");
    assert_eq!(p.len(), 101, "100 series and one overflow series");
    let overflow: Vec<&(String, f64)> = p.iter().filter(|(a, _)| a == OVERFLOW).collect();
    assert_eq!(overflow.len(), 1);
    assert_eq!(
        overflow[0].1, 50.0,
        "the overflow series carries the rest of the total"
    );
    assert_eq!(p.iter().map(|(_, v)| v).sum::<f64>(), 150.0);
    let limited = reg.value(
        "weir_cardinality_limited_points_total",
        &[("metric", "logins"), ("tenant", ""), ("action", "overflow")],
    );
    assert_eq!(limited, Some(50.0));
    assert_eq!(
        reg.value(
            "weir_cardinality_active_series",
            &[("metric", "logins"), ("tenant", "")]
        ),
        Some(100.0)
    );

    // Admitted series keep flowing; the overflow total follows each folded series' latest
    // cumulative value: 10 of the 50 now report 3.
    let mut next = users(0..100, 2);
    next.extend(users(100..110, 3));
    let out = run(&mut l, req(vec![counter("logins", next)]), None);
    let p = points(&out, "logins");
    assert_eq!(p.len(), 101);
    let o = p.iter().find(|(a, _)| a == OVERFLOW).expect("overflow");
    assert_eq!(o.1, 40.0 + 30.0);
}

#[test]
fn drop_and_strip_labels() {
    let (mut l, reg) = limiter("action: drop\ndefault_limit: {max_series_per_metric: 10}");
    let out = run(&mut l, req(vec![counter("c", users(0..25, 1))]), None);
    assert_eq!(points(&out, "c").len(), 10);
    assert_eq!(
        reg.value(
            "weir_cardinality_limited_points_total",
            &[("metric", "c"), ("tenant", ""), ("action", "drop")]
        ),
        Some(15.0)
    );

    let (mut l, _) = limiter(
        "action: strip_labels\nstrip_labels: [user_id]\ndefault_limit: {max_series_per_metric: 4}",
    );
    let pts: Vec<(Vec<KeyValue>, i64)> = (0..12)
        .map(|i| {
            (
                vec![
                    kv("user_id", &format!("u{i}")),
                    kv("route", if i % 2 == 0 { "/a" } else { "/b" }),
                ],
                1,
            )
        })
        .collect();
    let out = run(&mut l, req(vec![counter("hits", pts)]), None);
    let p = points(&out, "hits");
    // 4 admitted, the other 8 folded by route without user_id.
    assert_eq!(p.len(), 6, "{p:?}");
    assert!(p.contains(&("route=/a".to_string(), 4.0)), "{p:?}");
    assert!(p.contains(&("route=/b".to_string(), 4.0)), "{p:?}");
}

#[test]
fn tenants_have_their_own_budgets_and_rules_match_names() {
    let (mut l, _) = limiter(
        "default_limit: {max_series_per_metric: 1000, max_series_per_tenant: 5}
limits:
  - match: {metric: 'http_*'}
    max_series: 2
  - match: {regex: 'db\\.(query|exec)'}
    max_series: 3
    per: global",
    );
    let out = run(
        &mut l,
        req(vec![counter("http_requests", users(0..5, 1))]),
        Some("a"),
    );
    assert_eq!(points(&out, "http_requests").len(), 3, "2 + overflow");
    let out = run(
        &mut l,
        req(vec![counter("http_requests", users(0..5, 1))]),
        Some("b"),
    );
    assert_eq!(
        points(&out, "http_requests").len(),
        3,
        "tenant b has its own 2"
    );
    // A global rule: both tenants share 3.
    let out = run(
        &mut l,
        req(vec![counter("db.query", users(0..2, 1))]),
        Some("a"),
    );
    assert_eq!(points(&out, "db.query").len(), 2);
    let out = run(
        &mut l,
        req(vec![counter("db.query", users(10..14, 1))]),
        Some("b"),
    );
    assert_eq!(
        points(&out, "db.query").len(),
        2,
        "1 left of the shared 3, plus overflow"
    );
    // The per-tenant total: tenant a already has 2 series; 3 more fit, then overflow.
    let out = run(
        &mut l,
        req(vec![counter("other", users(0..6, 1))]),
        Some("a"),
    );
    assert_eq!(
        points(&out, "other").len(),
        4,
        "{:?}",
        points(&out, "other")
    );
}

#[test]
fn histograms_fold_bucket_by_bucket_and_unfoldable_types_drop() {
    let (mut l, reg) = limiter("default_limit: {max_series_per_metric: 1}");
    let h = |attrs: Vec<KeyValue>, buckets: Vec<u64>| HistogramDataPoint {
        attributes: attrs,
        time_unix_nano: 10,
        count: buckets.iter().sum(),
        sum: Some(1.0),
        bucket_counts: buckets,
        explicit_bounds: vec![1.0],
        ..Default::default()
    };
    let m = Metric {
        name: "lat".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![
                h(vec![kv("u", "1")], vec![1, 0]),
                h(vec![kv("u", "2")], vec![2, 1]),
                h(vec![kv("u", "3")], vec![0, 4]),
            ],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let s = Metric {
        name: "sum".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![
                SummaryDataPoint {
                    attributes: vec![kv("u", "1")],
                    ..Default::default()
                },
                SummaryDataPoint {
                    attributes: vec![kv("u", "2")],
                    ..Default::default()
                },
            ],
        })),
        ..Default::default()
    };
    let out = run(&mut l, req(vec![m, s]), None);
    let metrics = &out.resource_metrics[0].scope_metrics[0].metrics;
    let Some(metric::Data::Histogram(hh)) = &metrics[0].data else {
        panic!("histogram")
    };
    assert_eq!(hh.data_points.len(), 2);
    let o = &hh.data_points[1];
    assert_eq!(o.bucket_counts, vec![2, 5]);
    assert_eq!(o.count, 7);
    assert_eq!(o.sum, Some(2.0));
    let Some(metric::Data::Summary(ss)) = &metrics[1].data else {
        panic!("summary")
    };
    assert_eq!(ss.data_points.len(), 1);
    assert_eq!(
        reg.value(
            "weir_cardinality_limited_points_total",
            &[("metric", "sum"), ("tenant", ""), ("action", "drop")]
        ),
        Some(1.0)
    );
}

#[test]
fn series_unseen_for_the_window_stop_counting() {
    let (mut l, _) = limiter("window: 10s\ndefault_limit: {max_series_per_metric: 2}");
    let out = run(&mut l, req(vec![counter("c", users(0..2, 1))]), None);
    assert_eq!(points(&out, "c").len(), 2);
    let out = run(&mut l, req(vec![counter("c", users(2..3, 1))]), None);
    assert!(points(&out, "c").iter().all(|(a, _)| a == OVERFLOW));
    // Time passes beyond the window; the sweep forgets the old series.
    l.started = std::time::Instant::now()
        .checked_sub(Duration::from_secs(30))
        .expect("clock");
    l.tick(Instant::now() + Duration::from_secs(60), &mut Vec::new());
    let out = run(&mut l, req(vec![counter("c", users(5..7, 1))]), None);
    assert_eq!(points(&out, "c").len(), 2);
    assert!(points(&out, "c").iter().all(|(a, _)| a != OVERFLOW));
}

#[test]
fn globs() {
    assert!(glob(b"http_*", b"http_requests"));
    assert!(glob(b"*_total", b"a_total"));
    assert!(glob(b"a?c", b"abc"));
    assert!(!glob(b"a?c", b"abbc"));
    assert!(glob(b"*", b""));
    assert!(!glob(b"http_*", b"grpc_requests"));
}

#[test]
fn config_errors() {
    let c: CardinalityLimiterConfig = serde_yaml::from_str(
        "window: 0s\naction: strip_labels\nlimits: [{match: {}, max_series: 0}, {match: {metric: a, regex: b}, max_series: 1}, {match: {regex: '('}, max_series: 1}]",
    )
    .expect("yaml");
    let keys: Vec<String> = c.validate().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        vec![
            "window",
            "strip_labels",
            "limits[0].match",
            "limits[0].max_series",
            "limits[1].match",
            "limits[2].match.regex"
        ]
    );
    assert!(serde_yaml::from_str::<CardinalityLimiterConfig>("action: squash").is_err());
}
