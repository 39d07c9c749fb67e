//! Splitting a decoded batch at an item boundary, keeping each item's resource and scope.
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    logs::v1::{ResourceLogs, ScopeLogs},
    metrics::v1::{metric::Data, Metric, ResourceMetrics, ScopeMetrics},
    trace::v1::{ResourceSpans, ScopeSpans},
};

use crate::pdata::{Batch, Payload};

/// Moves the first `n` items of a decoded `batch` into a new batch.
/// An encoded batch is returned whole (callers decode first).
pub fn split_off_front(batch: &mut Batch, n: usize) -> Batch {
    let payload = match &mut batch.payload {
        Payload::Traces(r) => Payload::Traces(split_traces(r, n)),
        Payload::Logs(r) => Payload::Logs(split_logs(r, n)),
        Payload::Metrics(r) => Payload::Metrics(split_metrics(r, n)),
        Payload::Encoded(_) => {
            let whole = batch.clone();
            batch.items = 0;
            batch.payload = Payload::Encoded(bytes::Bytes::new());
            return whole;
        }
    };
    let mut front = Batch {
        signal: batch.signal,
        items: 0,
        payload,
        context: batch.context.clone(),
        held: batch.held.clone(),
        compressed: None,
    };
    front.recount();
    batch.recount();
    front
}

fn split_traces(r: &mut ExportTraceServiceRequest, mut n: usize) -> ExportTraceServiceRequest {
    let mut out = ExportTraceServiceRequest::default();
    while n > 0 && !r.resource_spans.is_empty() {
        let rs = &mut r.resource_spans[0];
        let mut taken = ResourceSpans {
            resource: rs.resource.clone(),
            scope_spans: Vec::new(),
            schema_url: rs.schema_url.clone(),
        };
        while n > 0 && !rs.scope_spans.is_empty() {
            let ss = &mut rs.scope_spans[0];
            if ss.spans.len() <= n {
                n -= ss.spans.len();
                taken.scope_spans.push(rs.scope_spans.remove(0));
            } else {
                let rest = ss.spans.split_off(n);
                let front = std::mem::replace(&mut ss.spans, rest);
                taken.scope_spans.push(ScopeSpans {
                    scope: ss.scope.clone(),
                    spans: front,
                    schema_url: ss.schema_url.clone(),
                });
                n = 0;
            }
        }
        if rs.scope_spans.is_empty() {
            r.resource_spans.remove(0);
        }
        out.resource_spans.push(taken);
    }
    out
}

fn split_logs(r: &mut ExportLogsServiceRequest, mut n: usize) -> ExportLogsServiceRequest {
    let mut out = ExportLogsServiceRequest::default();
    while n > 0 && !r.resource_logs.is_empty() {
        let rl = &mut r.resource_logs[0];
        let mut taken = ResourceLogs {
            resource: rl.resource.clone(),
            scope_logs: Vec::new(),
            schema_url: rl.schema_url.clone(),
        };
        while n > 0 && !rl.scope_logs.is_empty() {
            let sl = &mut rl.scope_logs[0];
            if sl.log_records.len() <= n {
                n -= sl.log_records.len();
                taken.scope_logs.push(rl.scope_logs.remove(0));
            } else {
                let rest = sl.log_records.split_off(n);
                let front = std::mem::replace(&mut sl.log_records, rest);
                taken.scope_logs.push(ScopeLogs {
                    scope: sl.scope.clone(),
                    log_records: front,
                    schema_url: sl.schema_url.clone(),
                });
                n = 0;
            }
        }
        if rl.scope_logs.is_empty() {
            r.resource_logs.remove(0);
        }
        out.resource_logs.push(taken);
    }
    out
}

fn points(m: &Metric) -> usize {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Moves the first `n` data points of `m` into a copy of `m` (same name, unit, type).
fn split_metric(m: &mut Metric, n: usize) -> Metric {
    let mut front = Metric {
        name: m.name.clone(),
        description: m.description.clone(),
        unit: m.unit.clone(),
        metadata: m.metadata.clone(),
        data: None,
    };
    fn cut<T>(v: &mut Vec<T>, n: usize) -> Vec<T> {
        let rest = v.split_off(n.min(v.len()));
        std::mem::replace(v, rest)
    }
    front.data = match &mut m.data {
        Some(Data::Gauge(g)) => Some(Data::Gauge(
            opentelemetry_proto::tonic::metrics::v1::Gauge {
                data_points: cut(&mut g.data_points, n),
            },
        )),
        Some(Data::Sum(s)) => Some(Data::Sum(opentelemetry_proto::tonic::metrics::v1::Sum {
            data_points: cut(&mut s.data_points, n),
            aggregation_temporality: s.aggregation_temporality,
            is_monotonic: s.is_monotonic,
        })),
        Some(Data::Histogram(h)) => Some(Data::Histogram(
            opentelemetry_proto::tonic::metrics::v1::Histogram {
                data_points: cut(&mut h.data_points, n),
                aggregation_temporality: h.aggregation_temporality,
            },
        )),
        Some(Data::ExponentialHistogram(h)) => Some(Data::ExponentialHistogram(
            opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                data_points: cut(&mut h.data_points, n),
                aggregation_temporality: h.aggregation_temporality,
            },
        )),
        Some(Data::Summary(s)) => Some(Data::Summary(
            opentelemetry_proto::tonic::metrics::v1::Summary {
                data_points: cut(&mut s.data_points, n),
            },
        )),
        None => None,
    };
    front
}

fn split_metrics(r: &mut ExportMetricsServiceRequest, mut n: usize) -> ExportMetricsServiceRequest {
    let mut out = ExportMetricsServiceRequest::default();
    while n > 0 && !r.resource_metrics.is_empty() {
        let rm = &mut r.resource_metrics[0];
        let mut taken = ResourceMetrics {
            resource: rm.resource.clone(),
            scope_metrics: Vec::new(),
            schema_url: rm.schema_url.clone(),
        };
        while n > 0 && !rm.scope_metrics.is_empty() {
            let sm = &mut rm.scope_metrics[0];
            let mut scope_taken = ScopeMetrics {
                scope: sm.scope.clone(),
                metrics: Vec::new(),
                schema_url: sm.schema_url.clone(),
            };
            while n > 0 && !sm.metrics.is_empty() {
                let p = points(&sm.metrics[0]);
                if p <= n {
                    n -= p;
                    scope_taken.metrics.push(sm.metrics.remove(0));
                } else {
                    scope_taken
                        .metrics
                        .push(split_metric(&mut sm.metrics[0], n));
                    n = 0;
                }
            }
            if sm.metrics.is_empty() {
                rm.scope_metrics.remove(0);
            }
            taken.scope_metrics.push(scope_taken);
        }
        if rm.scope_metrics.is_empty() {
            r.resource_metrics.remove(0);
        }
        out.resource_metrics.push(taken);
    }
    out
}
