//! The `spanmetrics` connector: traces in, RED metrics out. Every span counts in `calls`
//! (a monotonic sum) and `duration` (an explicit or exponential histogram), by service, span
//! name, kind, status and the configured dimensions; span events count in `events` when
//! enabled. The Collector's connector, with its keys, metric names and value formats.
//!
//! Place it before any sampling: it must see every span. Series are kept per tenant and per
//! resource, so two tenants never share a series; every `metrics_flush_interval` the
//! aggregate is handed to the metrics pipelines that receive from the connector (waiting for
//! room: backpressure). It must never hold more series than `aggregation_cardinality_limit`
//! per metric and resource (past it, the overflow series takes the rest) nor more resources
//! than `resource_metrics_cache_size`.
pub mod config;
pub mod expo;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, Exemplar, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, Span};
use tokio::sync::watch;

use crate::config::loader::Body;
use crate::pdata::{attr as find, now_unix_nanos as now_nanos};
use crate::pdata::{Batch, Payload, Signal};
use crate::pipeline::registry::{
    BoxFuture, Connector, ConnectorSettings, Decode, Factory, Handles, Stability, Targets,
};
use crate::telemetry::metrics::{Counter, Registry};
use config::{Dimension, SpanMetricsConfig, Unit};

pub static FACTORY: Factory = Factory {
    type_name: "spanmetrics",
    aliases: &["span_metrics"],
    stability: &[(Handles::Pair(Signal::Traces, Signal::Metrics), Stability::Alpha)],
    description: "RED metrics from spans: calls and duration by service, operation, kind, status and your dimensions",
    decode: Decode::Connector(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ConnectorSettings>> {
    let c = b.decode_checked::<SpanMetricsConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ConnectorSettings for SpanMetricsConfig {
    fn build(&self, id: &str, registry: &Arc<Registry>) -> Arc<dyn Connector> {
        SpanMetrics::start(id, self.clone(), registry)
    }
    fn start_warnings(&self) -> Vec<String> {
        self.without_effect()
    }
}

const SCOPE: &str = "spanmetricsconnector";
const OVERFLOW_KEY: &str = "otel.metric.overflow";

/// One series of a sum.
struct CountSeries {
    attrs: Vec<KeyValue>,
    value: u64,
    start: u64,
    exemplars: Vec<Exemplar>,
}

enum Buckets {
    Explicit(Vec<u64>),
    Exponential(expo::ExpoHistogram),
}

/// One series of the duration histogram.
struct HistSeries {
    attrs: Vec<KeyValue>,
    count: u64,
    sum: f64,
    buckets: Buckets,
    start: u64,
    exemplars: Vec<Exemplar>,
}

/// The series of one resource (of one tenant).
struct ResourceAgg {
    tenant: Option<Arc<str>>,
    attrs: Vec<KeyValue>,
    last_seen: Instant,
    calls: HashMap<String, CountSeries, FxBuild>,
    durations: HashMap<String, HistSeries, FxBuild>,
    events: HashMap<String, CountSeries, FxBuild>,
}

#[derive(Default)]
struct State {
    resources: HashMap<(Option<Arc<str>>, String), ResourceAgg>,
    /// Delta: series key -> the time of the flush that last reported it (its next start).
    last_flush: HashMap<String, u64>,
}

/// What the connector shares with its flush task.
struct Shared {
    id: Arc<str>,
    cfg: SpanMetricsConfig,
    unit: Unit,
    bounds: Vec<f64>,
    defaults: Vec<&'static str>,
    state: Mutex<State>,
    targets: Mutex<Targets>,
    dropped: Counter,
    overflowed: Counter,
}

/// The running connector. Dropping the last reference (the pipelines that feed it and the
/// engine) makes its task flush once more and end.
pub struct SpanMetrics {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Drop for SpanMetrics {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl SpanMetrics {
    pub fn start(id: &str, cfg: SpanMetricsConfig, registry: &Registry) -> Arc<SpanMetrics> {
        let shared = Arc::new(Shared::new(id, cfg, registry));
        let (stop, mut stop_rx) = watch::channel(false);
        let task = shared.clone();
        let interval = task
            .cfg
            .metrics_flush_interval
            .0
            .max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => task.flush_and_send().await,
                    r = stop_rx.changed() => {
                        if r.is_err() || *stop_rx.borrow() {
                            break;
                        }
                    }
                }
            }
            task.flush_and_send().await;
            // Let go of the target pipelines' inboxes so they can finish.
            task.targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        });
        Arc::new(SpanMetrics { shared, stop })
    }

    #[cfg(test)]
    fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Connector for SpanMetrics {
    fn push(&self, mut batch: Batch) -> BoxFuture<'_, ()> {
        if let Err(e) = batch.decode() {
            self.shared.dropped.add(e.lost as u64);
            tracing::error!(connector = %self.shared.id, "dropping {} spans: {e}", e.lost);
        }
        if let Payload::Traces(req) = &batch.payload {
            let tenant = batch.context.tenant.clone();
            self.shared.aggregate(tenant, &req.resource_spans);
        }
        Box::pin(std::future::ready(()))
    }

    fn set_targets(&self, targets: Targets) {
        *self
            .shared
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = targets;
    }
}

/// A value's text for series keys (type-tagged, so `1` and `"1"` differ).
fn key_text(out: &mut String, v: &AnyValue) {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => {
            out.push('s');
            out.push_str(s);
        }
        Some(any_value::Value::BoolValue(b)) => {
            let _ = write!(out, "b{b}");
        }
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "i{i}");
        }
        Some(any_value::Value::DoubleValue(d)) => {
            let _ = write!(out, "d{d}");
        }
        other => {
            let _ = write!(out, "o{other:?}");
        }
    }
}

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

/// `SPAN_KIND_SERVER`, as upstream's traceutil writes it.
pub fn kind_text(kind: i32) -> &'static str {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Internal) => "SPAN_KIND_INTERNAL",
        Ok(span::SpanKind::Server) => "SPAN_KIND_SERVER",
        Ok(span::SpanKind::Client) => "SPAN_KIND_CLIENT",
        Ok(span::SpanKind::Producer) => "SPAN_KIND_PRODUCER",
        Ok(span::SpanKind::Consumer) => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

/// `STATUS_CODE_ERROR`, as upstream's traceutil writes it.
pub fn status_text(s: Option<&opentelemetry_proto::tonic::trace::v1::Status>) -> &'static str {
    match s.map(|s| status::StatusCode::try_from(s.code)) {
        Some(Ok(status::StatusCode::Ok)) => "STATUS_CODE_OK",
        Some(Ok(status::StatusCode::Error)) => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

/// A dimension's value as found: borrowed from the span or resource, or a fixed text.
#[derive(Clone, Copy)]
enum DimValue<'a> {
    Found(&'a AnyValue),
    Text(&'a str),
    True,
}

/// Series dimensions under construction: the key is built as values are found; the
/// attributes only when the series is new.
#[derive(Clone, Default)]
struct Dims<'a> {
    /// (slot, name, value): the slot tells dimensions apart in the key.
    parts: Vec<(u16, &'a str, DimValue<'a>)>,
}

/// Key slots of each group of dimensions.
const SLOT_DEFAULT: u16 = 0;
const SLOT_DIMENSIONS: u16 = 16;
const SLOT_CALLS: u16 = 4096;
const SLOT_HISTOGRAM: u16 = 8192;
const SLOT_EVENTS: u16 = 12288;
const SLOT_SCOPE: u16 = 16384;

impl<'a> Dims<'a> {
    fn push(&mut self, slot: u16, name: &'a str, v: DimValue<'a>) {
        self.parts.push((slot, name, v));
    }

    /// Adds the configured dimensions found in `sources` (first match wins), else their
    /// default; a dimension with neither is left out.
    fn extend(&mut self, first_slot: u16, dims: &'a [Dimension], sources: &[&'a [KeyValue]]) {
        for (i, d) in dims.iter().enumerate() {
            let slot = first_slot.saturating_add(i as u16);
            let found = sources.iter().find_map(|s| find(s, &d.name));
            match (found, &d.default) {
                (Some(v), _) => self.push(slot, &d.name, DimValue::Found(v)),
                (None, Some(def)) => self.push(slot, &d.name, DimValue::Text(def)),
                (None, None) => {}
            }
        }
    }

    /// The series key into `out` (cleared first): each value tagged with its slot (some
    /// dimensions may be absent), so the names need not be written.
    fn key(&self, out: &mut String) {
        out.clear();
        for (slot, _, v) in &self.parts {
            out.push(char::from_u32(u32::from(*slot) + 1).unwrap_or('\u{1}'));
            match v {
                DimValue::Found(v) => key_text(out, v),
                DimValue::Text(t) => {
                    out.push('s');
                    out.push_str(t);
                }
                DimValue::True => out.push_str("btrue"),
            }
            out.push('\u{0}');
        }
    }

    fn attrs(&self) -> Vec<KeyValue> {
        self.parts
            .iter()
            .map(|(_, name, v)| KeyValue {
                key: name.to_string(),
                value: Some(match v {
                    DimValue::Found(v) => (*v).clone(),
                    DimValue::Text(t) => string_value(t),
                    DimValue::True => AnyValue {
                        value: Some(any_value::Value::BoolValue(true)),
                    },
                }),
                ..Default::default()
            })
            .collect()
    }
}

/// FxHash: series keys are ours, not an attacker's choice of hash flooding target beyond
/// what the cardinality limit already bounds, and SipHash was a tenth of the time here.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

fn resource_key(attrs: &[KeyValue], only: &[String]) -> String {
    let mut picked: Vec<&KeyValue> = attrs
        .iter()
        .filter(|kv| only.is_empty() || only.contains(&kv.key))
        .collect();
    picked.sort_by(|a, b| a.key.cmp(&b.key));
    let mut key = String::new();
    for kv in picked {
        key.push_str(&kv.key);
        key.push('\u{1}');
        if let Some(v) = &kv.value {
            key_text(&mut key, v);
        }
        key.push('\u{0}');
    }
    key
}

impl Shared {
    fn new(id: &str, cfg: SpanMetricsConfig, registry: &Registry) -> Shared {
        let labels = [("connector", id)];
        Shared {
            id: Arc::from(id),
            unit: cfg.unit(),
            bounds: cfg.bounds(),
            defaults: cfg.default_dimensions(),
            cfg,
            state: Mutex::new(State::default()),
            targets: Mutex::new(Targets::new()),
            dropped: registry.counter(
                "weir_connector_dropped_items_total",
                "Items a connector could not handle and dropped.",
                &labels,
            ),
            overflowed: registry.counter(
                "weir_connector_spanmetrics_overflow_total",
                "Spans counted in the otel.metric.overflow series because aggregation_cardinality_limit was reached.",
                &labels,
            ),
        }
    }

    fn limit(&self) -> usize {
        self.cfg.aggregation_cardinality_limit.max(0) as usize
    }

    fn aggregate(
        &self,
        tenant: Option<Arc<str>>,
        resource_spans: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans],
    ) {
        let now = Instant::now();
        let start = now_nanos();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = String::with_capacity(256);
        for rs in resource_spans {
            let empty = Vec::new();
            let rattrs: &[KeyValue] = rs.resource.as_ref().map_or(&empty, |r| &r.attributes);
            // Upstream skips resources without a service name.
            let Some(service) = find(rattrs, "service.name") else {
                continue;
            };
            let rkey = (
                tenant.clone(),
                resource_key(rattrs, &self.cfg.resource_metrics_key_attributes),
            );
            if !st.resources.contains_key(&rkey) {
                self.make_room(&mut st);
                st.resources.insert(
                    rkey.clone(),
                    ResourceAgg {
                        tenant: tenant.clone(),
                        attrs: rattrs.to_vec(),
                        last_seen: now,
                        calls: HashMap::default(),
                        durations: HashMap::default(),
                        events: HashMap::default(),
                    },
                );
            }
            let Some(agg) = st.resources.get_mut(&rkey) else {
                continue;
            };
            agg.last_seen = now;
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref();
                for sp in &ss.spans {
                    self.count_span(agg, service, scope, sp, rattrs, start, &mut key);
                }
            }
        }
    }

    /// Forgets the least recently seen resource when the cache is full.
    fn make_room(&self, st: &mut State) {
        if st.resources.len() < self.cfg.resource_metrics_cache_size {
            return;
        }
        if let Some(oldest) = st
            .resources
            .iter()
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(k, _)| k.clone())
        {
            st.resources.remove(&oldest);
        }
    }

    fn base_dims<'a>(
        &'a self,
        service: &'a AnyValue,
        scope: Option<&'a InstrumentationScope>,
        sp: &'a Span,
        rattrs: &'a [KeyValue],
    ) -> Dims<'a> {
        let mut d = Dims::default();
        for (i, name) in self.defaults.iter().enumerate() {
            let slot = SLOT_DEFAULT + i as u16;
            match *name {
                "service.name" => d.push(slot, name, DimValue::Found(service)),
                "span.name" => d.push(slot, name, DimValue::Text(&sp.name)),
                "span.kind" => d.push(slot, name, DimValue::Text(kind_text(sp.kind))),
                _ => d.push(slot, name, DimValue::Text(status_text(sp.status.as_ref()))),
            }
        }
        d.extend(
            SLOT_DIMENSIONS,
            &self.cfg.dimensions,
            &[&sp.attributes, rattrs],
        );
        if let Some(sc) = scope {
            if !sc.name.is_empty() && self.cfg.include_instrumentation_scope.contains(&sc.name) {
                d.push(
                    SLOT_SCOPE,
                    "span.instrumentation.scope.name",
                    DimValue::Text(&sc.name),
                );
                if !sc.version.is_empty() {
                    d.push(
                        SLOT_SCOPE + 1,
                        "span.instrumentation.scope.version",
                        DimValue::Text(&sc.version),
                    );
                }
            }
        }
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn count_span(
        &self,
        agg: &mut ResourceAgg,
        service: &AnyValue,
        scope: Option<&InstrumentationScope>,
        sp: &Span,
        rattrs: &[KeyValue],
        start: u64,
        key: &mut String,
    ) {
        let base = self.base_dims(service, scope, sp, rattrs);
        let value = if sp.end_time_unix_nano > sp.start_time_unix_nano {
            (sp.end_time_unix_nano - sp.start_time_unix_nano) as f64 / self.unit.divider()
        } else {
            0.0
        };
        let exemplars = self.cfg.exemplars.enabled && !sp.trace_id.is_empty();
        let exemplar = || Exemplar {
            filtered_attributes: Vec::new(),
            time_unix_nano: 0,
            span_id: sp.span_id.clone(),
            trace_id: sp.trace_id.clone(),
            value: Some(exemplar::Value::AsDouble(value)),
        };
        let limit = self.limit();
        let max_ex = self.cfg.max_exemplars();

        // calls
        let extra;
        let calls_dims = if self.cfg.calls_dimensions.is_empty() {
            &base
        } else {
            let mut d = base.clone();
            d.extend(
                SLOT_CALLS,
                &self.cfg.calls_dimensions,
                &[&sp.attributes, rattrs],
            );
            extra = d;
            &extra
        };
        calls_dims.key(key);
        let s = self.count_series(&mut agg.calls, calls_dims, key.as_str(), limit, start);
        s.value += 1;
        if exemplars && s.exemplars.len() < max_ex {
            s.exemplars.push(exemplar());
        }

        // duration
        if !self.cfg.histogram.disable {
            let extra;
            let hist_dims = if self.cfg.histogram.dimensions.is_empty() {
                if !self.cfg.calls_dimensions.is_empty() {
                    base.key(key);
                }
                &base
            } else {
                let mut d = base.clone();
                d.extend(
                    SLOT_HISTOGRAM,
                    &self.cfg.histogram.dimensions,
                    &[&sp.attributes, rattrs],
                );
                d.key(key);
                extra = d;
                &extra
            };
            let h = self.hist_series(&mut agg.durations, hist_dims, key.as_str(), limit, start);
            h.count += 1;
            h.sum += value;
            match &mut h.buckets {
                Buckets::Explicit(counts) => {
                    // (lower, upper]: a value equal to a bound falls in that bound's bucket.
                    let i = self.bounds.partition_point(|b| *b < value);
                    if let Some(c) = counts.get_mut(i) {
                        *c += 1;
                    }
                }
                Buckets::Exponential(e) => e.record(value),
            }
            if exemplars && h.exemplars.len() < max_ex {
                h.exemplars.push(exemplar());
            }
        }

        // events
        if self.cfg.events.enabled {
            for ev in &sp.events {
                let mut d = base.clone();
                d.extend(
                    SLOT_EVENTS,
                    &self.cfg.events.dimensions,
                    &[&ev.attributes, &sp.attributes, rattrs],
                );
                d.key(key);
                let s = self.count_series(&mut agg.events, &d, key.as_str(), limit, start);
                s.value += 1;
                if exemplars && s.exemplars.len() < max_ex {
                    s.exemplars.push(exemplar());
                }
            }
        }
    }

    fn overflow_dims() -> Dims<'static> {
        let mut d = Dims::default();
        d.push(SLOT_SCOPE + 2, OVERFLOW_KEY, DimValue::True);
        d
    }

    /// The series `key` names (made from `dims` when new), or the overflow series when the
    /// limit is reached.
    fn count_series<'m>(
        &self,
        map: &'m mut HashMap<String, CountSeries, FxBuild>,
        dims: &Dims<'_>,
        key: &str,
        limit: usize,
        start: u64,
    ) -> &'m mut CountSeries {
        let mut overflow = String::new();
        let key = if map.contains_key(key) {
            key
        } else {
            let (k, attrs) = if limit > 0 && map.len() >= limit {
                self.overflowed.inc();
                let o = Self::overflow_dims();
                o.key(&mut overflow);
                (overflow.as_str(), o.attrs())
            } else {
                (key, dims.attrs())
            };
            if !map.contains_key(k) {
                map.insert(
                    k.to_string(),
                    CountSeries {
                        attrs,
                        value: 0,
                        start,
                        exemplars: Vec::new(),
                    },
                );
            }
            k
        };
        map.get_mut(key)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn hist_series<'m>(
        &self,
        map: &'m mut HashMap<String, HistSeries, FxBuild>,
        dims: &Dims<'_>,
        key: &str,
        limit: usize,
        start: u64,
    ) -> &'m mut HistSeries {
        let mut overflow = String::new();
        let key = if map.contains_key(key) {
            key
        } else {
            let (key, attrs) = if limit > 0 && map.len() >= limit {
                let o = Self::overflow_dims();
                o.key(&mut overflow);
                (overflow.as_str(), o.attrs())
            } else {
                (key, dims.attrs())
            };
            if !map.contains_key(key) {
                let expo = self.cfg.histogram.exponential.as_ref().map(|e| e.max_size);
                map.insert(
                    key.to_string(),
                    HistSeries {
                        attrs,
                        count: 0,
                        sum: 0.0,
                        buckets: match expo {
                            Some(max) => {
                                Buckets::Exponential(expo::ExpoHistogram::new(if max == 0 {
                                    160
                                } else {
                                    max as usize
                                }))
                            }
                            None => Buckets::Explicit(vec![0; self.bounds.len() + 1]),
                        },
                        start,
                        exemplars: Vec::new(),
                    },
                );
            }
            key
        };
        map.get_mut(key)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// The aggregate as one request per tenant; delta resets it, cumulative keeps it (and
    /// forgets resources past `metrics_expiration`). Exemplars are reported once.
    fn flush(&self) -> super::TenantRequests {
        let now = now_nanos();
        let delta = self.cfg.delta();
        let temporality = if delta { 1 } else { 2 };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !delta && !self.cfg.metrics_expiration.0.is_zero() {
            let exp = self.cfg.metrics_expiration.0;
            st.resources.retain(|_, r| r.last_seen.elapsed() < exp);
        }
        let State {
            resources,
            last_flush,
        } = &mut *st;
        if delta && last_flush.len() > self.cfg.metric_timestamp_cache_size {
            last_flush.clear();
        }
        let mut out: Vec<(Option<Arc<str>>, ExportMetricsServiceRequest, usize)> = Vec::new();
        let stamp = |e: &mut Vec<Exemplar>| {
            let mut v = std::mem::take(e);
            for x in &mut v {
                x.time_unix_nano = now;
            }
            v
        };
        for (rkey, r) in resources.iter_mut() {
            let mut start_of = |key: &str, created: u64| -> u64 {
                if !delta {
                    return created;
                }
                let k = format!(
                    "{}\u{2}{}\u{2}{key}",
                    rkey.0.as_deref().unwrap_or(""),
                    rkey.1
                );
                let s = last_flush.get(&k).copied().unwrap_or(created);
                last_flush.insert(k, now);
                s
            };
            let mut metrics = Vec::new();
            let mut points = 0;
            let sum_metric =
                |name: &str,
                 series: &mut HashMap<String, CountSeries, FxBuild>,
                 start_of: &mut dyn FnMut(&str, u64) -> u64| {
                    let data_points: Vec<NumberDataPoint> = series
                        .iter_mut()
                        .map(|(k, s)| NumberDataPoint {
                            attributes: s.attrs.clone(),
                            start_time_unix_nano: start_of(&format!("{name}\u{3}{k}"), s.start),
                            time_unix_nano: now,
                            exemplars: stamp(&mut s.exemplars),
                            flags: 0,
                            value: Some(number_data_point::Value::AsInt(s.value as i64)),
                        })
                        .collect();
                    Metric {
                        name: self.cfg.metric_name(name),
                        description: String::new(),
                        unit: String::new(),
                        metadata: Vec::new(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points,
                            aggregation_temporality: temporality,
                            is_monotonic: true,
                        })),
                    }
                };
            if !r.calls.is_empty() {
                points += r.calls.len();
                metrics.push(sum_metric("calls", &mut r.calls, &mut start_of));
            }
            if !r.durations.is_empty() {
                points += r.durations.len();
                metrics.push(self.duration_metric(
                    &mut r.durations,
                    now,
                    temporality,
                    &mut start_of,
                    &stamp,
                ));
            }
            if !r.events.is_empty() {
                points += r.events.len();
                metrics.push(sum_metric("events", &mut r.events, &mut start_of));
            }
            if metrics.is_empty() {
                continue;
            }
            let rm = ResourceMetrics {
                resource: Some(Resource {
                    attributes: r.attrs.clone(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE.into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            };
            match out.iter_mut().find(|(t, _, _)| *t == r.tenant) {
                Some((_, req, n)) => {
                    req.resource_metrics.push(rm);
                    *n += points;
                }
                None => out.push((
                    r.tenant.clone(),
                    ExportMetricsServiceRequest {
                        resource_metrics: vec![rm],
                    },
                    points,
                )),
            }
        }
        if delta {
            resources.clear();
        }
        out
    }

    fn duration_metric(
        &self,
        series: &mut HashMap<String, HistSeries, FxBuild>,
        now: u64,
        temporality: i32,
        start_of: &mut dyn FnMut(&str, u64) -> u64,
        stamp: &dyn Fn(&mut Vec<Exemplar>) -> Vec<Exemplar>,
    ) -> Metric {
        let name = self.cfg.metric_name("duration");
        let data = if self.cfg.histogram.exponential.is_some() {
            let data_points = series
                .iter_mut()
                .filter_map(|(k, s)| {
                    let Buckets::Exponential(e) = &s.buckets else {
                        return None;
                    };
                    Some(e.point(
                        s.attrs.clone(),
                        start_of(&format!("duration\u{3}{k}"), s.start),
                        now,
                        s.sum,
                        stamp(&mut s.exemplars),
                    ))
                })
                .collect();
            metric::Data::ExponentialHistogram(
                opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                    data_points,
                    aggregation_temporality: temporality,
                },
            )
        } else {
            let data_points = series
                .iter_mut()
                .map(|(k, s)| HistogramDataPoint {
                    attributes: s.attrs.clone(),
                    start_time_unix_nano: start_of(&format!("duration\u{3}{k}"), s.start),
                    time_unix_nano: now,
                    count: s.count,
                    sum: Some(s.sum),
                    bucket_counts: match &s.buckets {
                        Buckets::Explicit(c) => c.clone(),
                        Buckets::Exponential(_) => Vec::new(),
                    },
                    explicit_bounds: self.bounds.clone(),
                    exemplars: stamp(&mut s.exemplars),
                    flags: 0,
                    min: None,
                    max: None,
                })
                .collect();
            metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: temporality,
            })
        };
        Metric {
            name,
            description: String::new(),
            unit: self.unit.as_str().into(),
            metadata: Vec::new(),
            data: Some(data),
        }
    }

    /// Flushes and hands each tenant's request to every target pipeline (waiting for room).
    async fn flush_and_send(&self) {
        super::emit_metrics(&self.id, &self.targets, self.flush()).await;
    }
}
