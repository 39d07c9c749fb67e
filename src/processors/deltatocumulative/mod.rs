//! The `deltatocumulative` processor: delta sums and histograms become cumulative ones, per
//! stream (resource, scope, metric and point attributes), so backends that only take
//! cumulative data (Prometheus remote write) get what delta producers send — the `sum`
//! connector, SDKs set to delta. The Collector's processor, with its keys `max_stale` and
//! `max_streams`.
//!
//! A stream's first delta point starts its cumulative series (its start time stays); later
//! points add to it. A point not newer than the last one of its stream is dropped (out of
//! order or repeated), as is a new stream past `max_streams`; streams not seen for
//! `max_stale` are forgotten. Cumulative data passes untouched. It must never hold more than
//! `max_streams` streams.
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality};
use serde::Deserialize;

use crate::config::loader::Body;
use crate::config::units::DurationValue;
use crate::connectors::spanmetrics::FxBuild;
use crate::pdata::{Batch, Payload, Signal};
use crate::pipeline::registry::{
    BuildEnv, Carry, Decode, Factory, Handles, ProcessorSettings, Stability,
};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Registry};

pub static FACTORY: Factory = Factory {
    type_name: "deltatocumulative",
    aliases: &[],
    stability: &[(Handles::Signal(Signal::Metrics), Stability::Alpha)],
    description:
        "turns delta sums and histograms into cumulative ones, per stream (for remote write)",
    decode: Decode::Processor(decode),
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeltaToCumulativeConfig {
    /// A stream not seen for this long is forgotten (its next point starts it again).
    pub max_stale: DurationValue,
    /// Streams tracked at once; points of new streams past it are dropped.
    pub max_streams: i64,
}

impl Default for DeltaToCumulativeConfig {
    fn default() -> Self {
        DeltaToCumulativeConfig {
            max_stale: Duration::from_secs(300).into(),
            max_streams: i64::MAX,
        }
    }
}

impl DeltaToCumulativeConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.max_stale.0.is_zero() {
            errs.push((
                "max_stale".into(),
                "max_stale must be a positive duration".into(),
            ));
        }
        if self.max_streams <= 0 {
            errs.push((
                "max_streams".into(),
                format!(
                    "max_streams must be a positive number, got {}",
                    self.max_streams
                ),
            ));
        }
        errs
    }
}

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<DeltaToCumulativeConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ProcessorSettings for DeltaToCumulativeConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        Box::new(DeltaToCumulative {
            id: id.into(),
            acc: Accumulator::new(self.max_stale.0, self.max_streams.max(1) as u64),
            dropped: env.registry.counter(
                "weir_deltatocumulative_dropped_points_total",
                "Delta points dropped: out of order, or of a new stream past max_streams.",
                &[("processor", id)],
            ),
        })
    }
    /// The running sums are its state: a reload that keeps it keeps them.
    fn carry(&self) -> Carry {
        Carry::State
    }
}

enum Stream {
    Sum {
        value: f64,
        start: u64,
        last: u64,
        seen: Instant,
    },
    Histogram {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        count: u64,
        sum: f64,
        min: Option<f64>,
        max: Option<f64>,
        start: u64,
        last: u64,
        seen: Instant,
    },
}

impl Stream {
    fn seen(&self) -> Instant {
        match self {
            Stream::Sum { seen, .. } | Stream::Histogram { seen, .. } => *seen,
        }
    }
}

/// The running cumulative values of delta streams.
pub struct Accumulator {
    max_stale: Duration,
    max_streams: u64,
    streams: HashMap<String, Stream, FxBuild>,
    last_sweep: Instant,
}

fn attrs_key(out: &mut String, attrs: &[KeyValue]) {
    let mut v: Vec<String> = attrs
        .iter()
        .map(|kv| format!("{}={:?}", kv.key, kv.value))
        .collect();
    v.sort();
    for a in v {
        out.push_str(&a);
        out.push('\u{0}');
    }
}

impl Accumulator {
    pub fn new(max_stale: Duration, max_streams: u64) -> Accumulator {
        Accumulator {
            max_stale,
            max_streams,
            streams: HashMap::default(),
            last_sweep: Instant::now(),
        }
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Turns every delta sum and histogram of `req` (of `tenant`: tenants' streams never
    /// add up together) cumulative in place; returns how many points were dropped.
    pub fn apply(
        &mut self,
        req: &mut ExportMetricsServiceRequest,
        tenant: Option<&str>,
        now: Instant,
    ) -> usize {
        if now.duration_since(self.last_sweep) >= self.max_stale.min(Duration::from_secs(10)) {
            let stale = self.max_stale;
            self.streams
                .retain(|_, s| now.duration_since(s.seen()) < stale);
            self.last_sweep = now;
        }
        let delta = AggregationTemporality::Delta as i32;
        let cumulative = AggregationTemporality::Cumulative as i32;
        let mut dropped = 0;
        for rm in &mut req.resource_metrics {
            let mut rkey = String::new();
            rkey.push_str(tenant.unwrap_or(""));
            rkey.push('\u{2}');
            if let Some(r) = &rm.resource {
                attrs_key(&mut rkey, &r.attributes);
            }
            for sm in &mut rm.scope_metrics {
                let (scope, version) = sm
                    .scope
                    .as_ref()
                    .map(|s| (s.name.clone(), s.version.clone()))
                    .unwrap_or_default();
                for m in &mut sm.metrics {
                    let base = format!("{rkey}\u{1}{scope}\u{1}{version}\u{1}{}\u{1}", m.name);
                    match &mut m.data {
                        Some(metric::Data::Sum(s)) if s.aggregation_temporality == delta => {
                            s.aggregation_temporality = cumulative;
                            let before = s.data_points.len();
                            s.data_points.retain_mut(|p| {
                                let mut k = base.clone();
                                attrs_key(&mut k, &p.attributes);
                                let v = match p.value {
                                    Some(number_data_point::Value::AsInt(i)) => i as f64,
                                    Some(number_data_point::Value::AsDouble(d)) => d,
                                    None => 0.0,
                                };
                                let Some(Stream::Sum {
                                    value,
                                    start,
                                    last,
                                    seen,
                                }) = self.stream(k, || Stream::Sum {
                                    value: 0.0,
                                    start: p.start_time_unix_nano,
                                    last: 0,
                                    seen: now,
                                })
                                else {
                                    return false;
                                };
                                if p.time_unix_nano <= *last && *last != 0 {
                                    return false;
                                }
                                *value += v;
                                *last = p.time_unix_nano;
                                *seen = now;
                                p.start_time_unix_nano = *start;
                                p.value = Some(match p.value {
                                    Some(number_data_point::Value::AsInt(_)) => {
                                        number_data_point::Value::AsInt(*value as i64)
                                    }
                                    _ => number_data_point::Value::AsDouble(*value),
                                });
                                true
                            });
                            dropped += before - s.data_points.len();
                        }
                        Some(metric::Data::Histogram(h)) if h.aggregation_temporality == delta => {
                            h.aggregation_temporality = cumulative;
                            let before = h.data_points.len();
                            h.data_points.retain_mut(|p| {
                                let mut k = base.clone();
                                attrs_key(&mut k, &p.attributes);
                                let fresh = || Stream::Histogram {
                                    bounds: p.explicit_bounds.clone(),
                                    counts: vec![0; p.bucket_counts.len()],
                                    count: 0,
                                    sum: 0.0,
                                    min: None,
                                    max: None,
                                    start: p.start_time_unix_nano,
                                    last: 0,
                                    seen: now,
                                };
                                let Some(st) = self.stream(k, fresh) else {
                                    return false;
                                };
                                let Stream::Histogram {
                                    bounds,
                                    counts,
                                    count,
                                    sum,
                                    min,
                                    max,
                                    start,
                                    last,
                                    seen,
                                } = st
                                else {
                                    return false;
                                };
                                if p.time_unix_nano <= *last && *last != 0 {
                                    return false;
                                }
                                if *bounds != p.explicit_bounds
                                    || counts.len() != p.bucket_counts.len()
                                {
                                    // The buckets changed: the series starts again here.
                                    *bounds = p.explicit_bounds.clone();
                                    *counts = vec![0; p.bucket_counts.len()];
                                    (*count, *sum, *min, *max) = (0, 0.0, None, None);
                                    *start = p.start_time_unix_nano;
                                }
                                for (a, b) in counts.iter_mut().zip(&p.bucket_counts) {
                                    *a += b;
                                }
                                *count += p.count;
                                *sum += p.sum.unwrap_or(0.0);
                                *min = match (*min, p.min) {
                                    (Some(a), Some(b)) => Some(a.min(b)),
                                    (a, b) => a.or(b),
                                };
                                *max = match (*max, p.max) {
                                    (Some(a), Some(b)) => Some(a.max(b)),
                                    (a, b) => a.or(b),
                                };
                                *last = p.time_unix_nano;
                                *seen = now;
                                p.bucket_counts = counts.clone();
                                p.count = *count;
                                p.sum = Some(*sum);
                                p.min = *min;
                                p.max = *max;
                                p.start_time_unix_nano = *start;
                                true
                            });
                            dropped += before - h.data_points.len();
                        }
                        _ => {}
                    }
                }
            }
        }
        dropped
    }

    /// The stream under `key`, made by `fresh` when new and there is room.
    fn stream(&mut self, key: String, fresh: impl FnOnce() -> Stream) -> Option<&mut Stream> {
        if !self.streams.contains_key(&key) {
            if self.streams.len() as u64 >= self.max_streams {
                return None;
            }
            self.streams.insert(key.clone(), fresh());
        }
        self.streams.get_mut(&key)
    }
}

struct DeltaToCumulative {
    id: String,
    acc: Accumulator,
    dropped: Counter,
}

impl Processor for DeltaToCumulative {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if batch.signal != Signal::Metrics {
            out.push(batch);
            return;
        }
        if let Err(e) = batch.decode() {
            self.dropped.add(e.lost as u64);
            tracing::error!(processor = %self.id, "dropping {} points: {e}", e.lost);
        }
        if let Payload::Metrics(req) = &mut batch.payload {
            let n = self
                .acc
                .apply(req, batch.context.tenant.as_deref(), Instant::now());
            if n > 0 {
                self.dropped.add(n as u64);
                tracing::debug!(processor = %self.id, "dropped {n} delta points (out of order or past max_streams)");
            }
        }
        batch.recount();
        if batch.items > 0 {
            out.push(batch);
        }
    }

    fn reconfigure(
        &mut self,
        cfg: &dyn ProcessorSettings,
        _registry: &std::sync::Arc<Registry>,
    ) -> bool {
        match cfg.as_any().downcast_ref::<DeltaToCumulativeConfig>() {
            Some(c) => {
                self.acc.max_stale = c.max_stale.0;
                self.acc.max_streams = c.max_streams.max(1) as u64;
                true
            }
            None => false,
        }
    }
}
