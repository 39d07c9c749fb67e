use super::*;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};

fn req(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn sum(v: f64, start: u64, time: u64, temporality: AggregationTemporality, model: &str) -> Metric {
    Metric {
        name: "tokens".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![KeyValue {
                    key: "model".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(model.into())),
                    }),
                    ..Default::default()
                }],
                start_time_unix_nano: start,
                time_unix_nano: time,
                value: Some(number_data_point::Value::AsDouble(v)),
                ..Default::default()
            }],
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn value(r: &ExportMetricsServiceRequest) -> Vec<(f64, u64, i32)> {
    r.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .flat_map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s
                .data_points
                .iter()
                .map(|p| {
                    let v = match p.value {
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        _ => -1.0,
                    };
                    (v, p.start_time_unix_nano, s.aggregation_temporality)
                })
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn delta_sums_add_up_per_stream_from_their_first_start() {
    let mut a = Accumulator::new(Duration::from_secs(300), 100);
    let now = Instant::now();
    let d = AggregationTemporality::Delta;
    let mut r1 = req(vec![
        sum(10.0, 100, 200, d, "a"),
        sum(1.0, 100, 200, d, "b"),
    ]);
    assert_eq!(a.apply(&mut r1, None, now), 0);
    assert_eq!(value(&r1), vec![(10.0, 100, 2), (1.0, 100, 2)]);
    let mut r2 = req(vec![sum(5.0, 200, 300, d, "a")]);
    a.apply(&mut r2, None, now);
    assert_eq!(
        value(&r2),
        vec![(15.0, 100, 2)],
        "cumulative from the first start"
    );
    // Out of order (not newer than the last point): dropped.
    let mut r3 = req(vec![sum(7.0, 150, 250, d, "a")]);
    assert_eq!(a.apply(&mut r3, None, now), 1);
    assert!(value(&r3).is_empty());
    // Cumulative data passes untouched.
    let mut c = req(vec![sum(
        3.0,
        1,
        2,
        AggregationTemporality::Cumulative,
        "z",
    )]);
    a.apply(&mut c, None, now);
    assert_eq!(value(&c), vec![(3.0, 1, 2)]);
    assert_eq!(a.streams(), 2);
}

#[test]
fn new_streams_past_max_streams_are_dropped_and_stale_ones_forgotten() {
    let mut a = Accumulator::new(Duration::from_secs(60), 1);
    let now = Instant::now();
    let d = AggregationTemporality::Delta;
    let mut r = req(vec![sum(1.0, 1, 2, d, "a"), sum(1.0, 1, 2, d, "b")]);
    assert_eq!(a.apply(&mut r, None, now), 1);
    assert_eq!(value(&r).len(), 1);
    let later = now + Duration::from_secs(120);
    let mut r = req(vec![sum(4.0, 2, 3, d, "b")]);
    assert_eq!(
        a.apply(&mut r, None, later),
        0,
        "a was forgotten: room for b"
    );
    assert_eq!(value(&r), vec![(4.0, 2, 2)]);
}

#[test]
fn delta_histograms_add_bucket_by_bucket() {
    let mut a = Accumulator::new(Duration::from_secs(300), 100);
    let h = |counts: Vec<u64>, time: u64| Metric {
        name: "latency".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: time - 10,
                time_unix_nano: time,
                count: counts.iter().sum(),
                sum: Some(1.0),
                bucket_counts: counts,
                explicit_bounds: vec![1.0, 2.0],
                min: Some(0.5),
                max: Some(3.0),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    };
    let now = Instant::now();
    let mut r1 = req(vec![h(vec![1, 2, 0], 100)]);
    a.apply(&mut r1, None, now);
    let mut r2 = req(vec![h(vec![0, 1, 4], 200)]);
    a.apply(&mut r2, None, now);
    let Some(metric::Data::Histogram(out)) =
        &r2.resource_metrics[0].scope_metrics[0].metrics[0].data
    else {
        panic!()
    };
    let p = &out.data_points[0];
    assert_eq!(p.bucket_counts, vec![1, 3, 4]);
    assert_eq!(p.count, 8);
    assert_eq!(p.sum, Some(2.0));
    assert_eq!(p.start_time_unix_nano, 90);
    assert_eq!(out.aggregation_temporality, 2);
}

#[test]
fn two_tenants_streams_never_add_up() {
    let mut a = Accumulator::new(Duration::from_secs(300), 100);
    let now = Instant::now();
    let d = AggregationTemporality::Delta;
    let mut x = req(vec![sum(10.0, 1, 2, d, "m")]);
    a.apply(&mut x, Some("acme"), now);
    let mut y = req(vec![sum(1.0, 1, 2, d, "m")]);
    a.apply(&mut y, Some("globex"), now);
    assert_eq!(value(&y), vec![(1.0, 1, 2)], "globex's own sum");
    let mut z = req(vec![sum(5.0, 2, 3, d, "m")]);
    a.apply(&mut z, Some("acme"), now);
    assert_eq!(value(&z), vec![(15.0, 1, 2)], "acme's own sum");
}

#[test]
fn bad_settings_are_refused() {
    let c: DeltaToCumulativeConfig =
        serde_yaml::from_str("{max_stale: 0s, max_streams: 0}").expect("yaml");
    let text = format!("{:?}", c.validate());
    assert!(
        text.contains("max_stale must be a positive duration"),
        "{text}"
    );
    assert!(
        text.contains("max_streams must be a positive number, got 0"),
        "{text}"
    );
}
