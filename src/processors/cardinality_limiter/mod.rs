//! `cardinality_limiter` (metrics): caps the number of distinct series per metric and per
//! tenant, so one bad deploy that puts a user id in a label cannot blow up the backend.
//!
//! A series is the metric name, its data point attributes, the resource's attributes and the
//! tenant, identified by a 64-bit hash (exact counting in bounded memory). Series already
//! admitted keep flowing; only a *new* series over a limit is limited, by `action`:
//!
//! - `overflow` folds it into one series per metric labelled `otel_metric_overflow="true"`
//!   (the OpenTelemetry SDK's convention). Sums and counts stay right: for cumulative data
//!   the overflow series carries the sum of the latest value of every folded series; delta
//!   data is summed per batch; gauges keep the latest value.
//! - `strip_labels` folds it the same way into the series without `strip_labels`.
//! - `drop` drops its points.
//!
//! Exponential histograms and summaries cannot be folded: their limited points are dropped
//! and counted. A series unseen for `window` stops counting. The state is owned by the stage
//! (the pipeline's task), so the per-point path takes no lock.
pub mod config;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, AggregationTemporality, HistogramDataPoint, NumberDataPoint,
};
use regex::Regex;
use tokio::time::Instant;

use crate::config::loader::Body;
use crate::pdata::{Batch, Payload};
use crate::pipeline::registry::{
    BuildEnv, Carry, Decode, Factory, Handles, ProcessorSettings, Stability,
};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Gauge, Registry};
use config::{Action, CardinalityLimiterConfig, Per};

pub static FACTORY: Factory = Factory {
    type_name: "cardinality_limiter",
    aliases: &[],
    stability: &[(
        Handles::Signal(crate::pdata::Signal::Metrics),
        Stability::Alpha,
    )],
    description: "caps distinct series per metric and per tenant (overflow, drop, strip_labels)",
    decode: Decode::Processor(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<CardinalityLimiterConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ProcessorSettings for CardinalityLimiterConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        Box::new(CardinalityLimiter::new(id, self, Arc::clone(env.registry)))
    }
    fn carry(&self) -> Carry {
        Carry::State
    }
}

/// The label an overflow series carries.
pub const OVERFLOW_LABEL: &str = "otel_metric_overflow";

enum NameMatch {
    Glob(String),
    Regex(Regex),
}

impl NameMatch {
    fn is_match(&self, name: &str) -> bool {
        match self {
            NameMatch::Glob(g) => glob(g.as_bytes(), name.as_bytes()),
            NameMatch::Regex(r) => r.is_match(name),
        }
    }
}

/// `*` matches any run, `?` one byte.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

struct MetricState {
    /// Series id -> last seen (seconds since the stage started).
    series: HashMap<u64, u32>,
    limit: usize,
    logged: bool,
    active: Gauge,
}

/// The latest value one folded series contributed.
#[derive(Clone)]
enum Contribution {
    Value(f64),
    Histogram {
        count: u64,
        sum: f64,
        buckets: Vec<u64>,
    },
}

struct Member {
    last_seen: u32,
    value: Contribution,
}

/// One target series (overflow, or stripped) and the limited series folded into it.
struct Fold {
    members: HashMap<u64, Member>,
    total: Contribution,
    bounds: Vec<f64>,
    start: u64,
}

/// The folded points a batch emits for one target series of one metric.
enum Out {
    Number(NumberDataPoint),
    Histogram(HistogramDataPoint),
}

pub struct CardinalityLimiter {
    id: Arc<str>,
    cfg: CardinalityLimiterConfig,
    rules: Vec<(NameMatch, usize, Per)>,
    registry: Arc<Registry>,
    metrics: HashMap<(String, String), MetricState>,
    tenants: HashMap<String, usize>,
    folds: HashMap<u64, Fold>,
    fold_members: usize,
    limited: HashMap<(String, String, &'static str), Counter>,
    started: std::time::Instant,
    next_sweep: Instant,
    /// Per folded target series: (last timestamp emitted, when, in stage seconds).
    last_emit: HashMap<u64, (u64, u32)>,
}

fn hash_any(v: &AnyValue, h: &mut DefaultHasher) {
    use any_value::Value as V;
    match v.value.as_ref() {
        Some(V::StringValue(s)) => (0u8, s).hash(h),
        Some(V::IntValue(i)) => (1u8, i).hash(h),
        Some(V::DoubleValue(d)) => (2u8, d.to_bits()).hash(h),
        Some(V::BoolValue(b)) => (3u8, b).hash(h),
        Some(V::BytesValue(b)) => (4u8, b).hash(h),
        Some(V::ArrayValue(a)) => {
            5u8.hash(h);
            for x in &a.values {
                hash_any(x, h);
            }
        }
        Some(V::KvlistValue(kv)) => {
            6u8.hash(h);
            h.write_u64(attrs_hash(&kv.values));
        }
        Some(V::StringValueStrindex(i)) => (7u8, i).hash(h),
        None => 8u8.hash(h),
    }
}

/// Order-independent hash of an attribute set (each pair hashed, then summed).
pub fn attrs_hash(attrs: &[KeyValue]) -> u64 {
    let mut acc: u64 = 0x9e37_79b9_7f4a_7c15;
    for kv in attrs {
        let mut h = DefaultHasher::new();
        kv.key.hash(&mut h);
        if let Some(v) = &kv.value {
            hash_any(v, &mut h);
        }
        acc = acc.wrapping_add(h.finish());
    }
    acc
}

fn series_id(tenant: &str, metric: &str, resource: u64, attrs: u64) -> u64 {
    let mut h = DefaultHasher::new();
    (tenant, metric, resource, attrs).hash(&mut h);
    h.finish()
}

impl CardinalityLimiter {
    pub fn new(id: &str, cfg: &CardinalityLimiterConfig, registry: Arc<Registry>) -> Self {
        let rules = cfg
            .limits
            .iter()
            .filter_map(|l| {
                let m = match (&l.matcher.metric, &l.matcher.regex) {
                    (Some(g), _) => NameMatch::Glob(g.clone()),
                    (None, Some(r)) => NameMatch::Regex(Regex::new(&format!("^(?:{r})$")).ok()?),
                    (None, None) => return None,
                };
                Some((m, l.max_series, l.per))
            })
            .collect();
        CardinalityLimiter {
            id: Arc::from(id),
            cfg: cfg.clone(),
            rules,
            registry,
            metrics: HashMap::new(),
            tenants: HashMap::new(),
            folds: HashMap::new(),
            fold_members: 0,
            limited: HashMap::new(),
            started: std::time::Instant::now(),
            next_sweep: Instant::now() + sweep_interval(cfg),
            last_emit: HashMap::new(),
        }
    }

    /// Applies new settings (a reload) keeping the series already admitted.
    pub fn reconfigure(&mut self, cfg: &CardinalityLimiterConfig) {
        let fresh = CardinalityLimiter::new(&self.id, cfg, Arc::clone(&self.registry));
        self.rules = fresh.rules;
        self.cfg = cfg.clone();
        for ((name, _), st) in self.metrics.iter_mut() {
            st.limit = limit_for(&self.rules, &self.cfg, name).0;
        }
    }

    fn now(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    fn limited_counter(&mut self, metric: &str, tenant: &str, action: &'static str) -> Counter {
        let key = (metric.to_owned(), tenant.to_owned(), action);
        if let Some(c) = self.limited.get(&key) {
            return c.clone();
        }
        let c = self.registry.counter(
            "weir_cardinality_limited_points_total",
            "Data points of series over a cardinality limit, by the action taken.",
            &[("metric", metric), ("tenant", tenant), ("action", action)],
        );
        self.limited.insert(key, c.clone());
        c
    }

    /// The state key of `metric` for `tenant` (its rule decides whether the budget is the
    /// tenant's or shared), creating the state on first sight. Once per metric and request,
    /// not per point.
    fn scope_key(&mut self, metric: &str, tenant: &str) -> (String, String) {
        let (limit, per) = limit_for(&self.rules, &self.cfg, metric);
        let scope = match per {
            Per::Tenant => tenant.to_owned(),
            Per::Global => String::new(),
        };
        let key = (metric.to_owned(), scope);
        if !self.metrics.contains_key(&key) {
            let active = self.registry.gauge(
                "weir_cardinality_active_series",
                "Series counted against the limit (seen within the window).",
                &[("metric", metric), ("tenant", &key.1)],
            );
            self.metrics.insert(
                key.clone(),
                MetricState {
                    series: HashMap::new(),
                    limit,
                    logged: false,
                    active,
                },
            );
        }
        key
    }

    /// Whether series `sid` of the metric under `key` may pass (admitting it if there is room).
    fn admit(&mut self, key: &(String, String), tenant: &str, sid: u64, now: u32) -> bool {
        let metric = key.0.as_str();
        // Series count against their scope's budget: the tenant's, or the shared one ("") for
        // rules with `per: global`.
        let tenant_total = self.tenants.get(&key.1).copied().unwrap_or(0);
        let tenant_limit = self.cfg.default_limit.max_series_per_tenant;
        let Some(st) = self.metrics.get_mut(key) else {
            return false;
        };
        if let Some(seen) = st.series.get_mut(&sid) {
            *seen = now;
            return true;
        }
        if st.series.len() < st.limit && tenant_total < tenant_limit {
            st.series.insert(sid, now);
            st.active.set(st.series.len() as f64);
            *self.tenants.entry(key.1.clone()).or_default() += 1;
            return true;
        }
        if !st.logged {
            st.logged = true;
            let why = if st.series.len() >= st.limit {
                format!("{} series for this metric", st.limit)
            } else {
                format!("{tenant_limit} series for tenant {tenant:?}")
            };
            tracing::warn!(
                processor = %self.id,
                "metric {metric:?} (tenant {tenant:?}) reached its cardinality limit of {why}: new series are handled by action {}",
                self.cfg.action.as_str()
            );
        }
        false
    }

    /// Forgets series (and folded members) unseen for `window`.
    fn sweep(&mut self) {
        let now = self.now();
        let window = self.cfg.window.0.as_secs().max(1) as u32;
        let cutoff = now.saturating_sub(window);
        if now < window {
            return;
        }
        for ((_, scope_tenant), st) in self.metrics.iter_mut() {
            let before = st.series.len();
            st.series.retain(|_, seen| *seen >= cutoff);
            let gone = before - st.series.len();
            if gone > 0 {
                if let Some(t) = self.tenants.get_mut(scope_tenant) {
                    *t = t.saturating_sub(gone);
                }
                st.active.set(st.series.len() as f64);
            }
        }
        let mut removed = 0usize;
        for fold in self.folds.values_mut() {
            let expired: Vec<u64> = fold
                .members
                .iter()
                .filter(|(_, m)| m.last_seen < cutoff)
                .map(|(k, _)| *k)
                .collect();
            for k in expired {
                if let Some(m) = fold.members.remove(&k) {
                    subtract(&mut fold.total, &m.value);
                    removed += 1;
                }
            }
        }
        self.fold_members -= removed.min(self.fold_members);
        self.last_emit.retain(|_, (_, seen)| *seen >= cutoff);
        self.folds.retain(|_, f| !f.members.is_empty());
    }

    fn limit_points(
        &mut self,
        req: &mut opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
        tenant: &str,
    ) {
        let now = self.now();
        let cumulative = AggregationTemporality::Cumulative as i32;
        let action = self.cfg.action;
        let strip = self.cfg.strip_labels.clone();
        for rm in &mut req.resource_metrics {
            let rhash = rm
                .resource
                .as_ref()
                .map(|r| attrs_hash(&r.attributes))
                .unwrap_or(0);
            for sm in &mut rm.scope_metrics {
                for m in &mut sm.metrics {
                    let name = m.name.clone();
                    let Some(data) = m.data.as_mut() else {
                        continue;
                    };
                    let mut outs: Vec<(u64, Out)> = Vec::new();
                    match data {
                        metric::Data::Gauge(g) => {
                            let pts = std::mem::take(&mut g.data_points);
                            g.data_points = self.numbers(
                                &name,
                                tenant,
                                rhash,
                                now,
                                pts,
                                Temporality::Gauge,
                                action,
                                &strip,
                                &mut outs,
                            );
                            self.stamp(&mut outs, now);
                            g.data_points
                                .extend(outs.into_iter().filter_map(|(_, o)| match o {
                                    Out::Number(p) => Some(p),
                                    Out::Histogram(_) => None,
                                }));
                        }
                        metric::Data::Sum(s) => {
                            let t = if s.aggregation_temporality == cumulative {
                                Temporality::Cumulative
                            } else {
                                Temporality::Delta
                            };
                            let pts = std::mem::take(&mut s.data_points);
                            s.data_points = self.numbers(
                                &name, tenant, rhash, now, pts, t, action, &strip, &mut outs,
                            );
                            self.stamp(&mut outs, now);
                            s.data_points
                                .extend(outs.into_iter().filter_map(|(_, o)| match o {
                                    Out::Number(p) => Some(p),
                                    Out::Histogram(_) => None,
                                }));
                        }
                        metric::Data::Histogram(h) => {
                            let t = if h.aggregation_temporality == cumulative {
                                Temporality::Cumulative
                            } else {
                                Temporality::Delta
                            };
                            let pts = std::mem::take(&mut h.data_points);
                            h.data_points = self.histograms(
                                &name, tenant, rhash, now, pts, t, action, &strip, &mut outs,
                            );
                            self.stamp(&mut outs, now);
                            h.data_points
                                .extend(outs.into_iter().filter_map(|(_, o)| match o {
                                    Out::Histogram(p) => Some(p),
                                    Out::Number(_) => None,
                                }));
                        }
                        metric::Data::ExponentialHistogram(h) => {
                            let pts = std::mem::take(&mut h.data_points);
                            let key = self.scope_key(&name, tenant);
                            let mut keep = Vec::with_capacity(pts.len());
                            for p in pts {
                                let sid =
                                    series_id(tenant, &name, rhash, attrs_hash(&p.attributes));
                                if self.admit(&key, tenant, sid, now) {
                                    keep.push(p);
                                } else {
                                    self.limited_counter(&name, tenant, "drop").inc();
                                }
                            }
                            h.data_points = keep;
                        }
                        metric::Data::Summary(s) => {
                            let pts = std::mem::take(&mut s.data_points);
                            let key = self.scope_key(&name, tenant);
                            let mut keep = Vec::with_capacity(pts.len());
                            for p in pts {
                                let sid =
                                    series_id(tenant, &name, rhash, attrs_hash(&p.attributes));
                                if self.admit(&key, tenant, sid, now) {
                                    keep.push(p);
                                } else {
                                    self.limited_counter(&name, tenant, "drop").inc();
                                }
                            }
                            s.data_points = keep;
                        }
                    }
                }
                sm.metrics.retain(|m| !metric_is_empty(m));
            }
            rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
        }
        req.resource_metrics
            .retain(|rm| !rm.scope_metrics.is_empty());
    }

    /// Folded points get strictly increasing timestamps per target series: a backend such as
    /// Prometheus rejects a second, different value at the same timestamp, which is what a
    /// fold whose total changed would otherwise send when two batches carry points of the
    /// same instant.
    fn stamp(&mut self, outs: &mut [(u64, Out)], now: u32) {
        for (tid, o) in outs.iter_mut() {
            let t = match o {
                Out::Number(p) => &mut p.time_unix_nano,
                Out::Histogram(p) => &mut p.time_unix_nano,
            };
            if let Some((last, _)) = self.last_emit.get(tid) {
                if *t <= *last {
                    *t = last + 1_000_000;
                }
            }
            self.last_emit.insert(*tid, (*t, now));
        }
    }

    /// The target series of a limited point: its attributes and id.
    fn target(
        &self,
        action: Action,
        strip: &[String],
        tenant: &str,
        name: &str,
        rhash: u64,
        attrs: &[KeyValue],
    ) -> (Vec<KeyValue>, u64) {
        let target: Vec<KeyValue> = match action {
            Action::StripLabels => attrs
                .iter()
                .filter(|kv| !strip.contains(&kv.key))
                .cloned()
                .collect(),
            _ => vec![KeyValue {
                key: OVERFLOW_LABEL.into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("true".into())),
                }),
                ..Default::default()
            }],
        };
        // The target's id is distinct from any ordinary series id of the same attributes.
        let tid = series_id(tenant, name, rhash, attrs_hash(&target)) ^ 0x5bd1_e995_0000_0001;
        (target, tid)
    }

    #[allow(clippy::too_many_arguments)]
    fn numbers(
        &mut self,
        name: &str,
        tenant: &str,
        rhash: u64,
        now: u32,
        pts: Vec<NumberDataPoint>,
        t: Temporality,
        action: Action,
        strip: &[String],
        outs: &mut Vec<(u64, Out)>,
    ) -> Vec<NumberDataPoint> {
        let key = &self.scope_key(name, tenant);
        let mut keep = Vec::with_capacity(pts.len());
        for p in pts {
            let sid = series_id(tenant, name, rhash, attrs_hash(&p.attributes));
            if self.admit(key, tenant, sid, now) {
                keep.push(p);
                continue;
            }
            if action == Action::Drop {
                self.limited_counter(name, tenant, "drop").inc();
                continue;
            }
            let (attrs, tid) = self.target(action, strip, tenant, name, rhash, &p.attributes);
            let v = number(&p);
            let value = match t {
                Temporality::Cumulative => match self.fold_value(
                    tid,
                    sid,
                    now,
                    Contribution::Value(v),
                    &[],
                    p.start_time_unix_nano,
                ) {
                    Some(Contribution::Value(total)) => total,
                    _ => {
                        self.limited_counter(name, tenant, "drop").inc();
                        continue;
                    }
                },
                Temporality::Delta | Temporality::Gauge => v,
            };
            self.limited_counter(name, tenant, action.as_str()).inc();
            let start = self
                .folds
                .get(&tid)
                .map(|f| f.start)
                .unwrap_or(p.start_time_unix_nano);
            match outs.iter_mut().find(|(k, _)| *k == tid) {
                Some((_, Out::Number(o))) => {
                    match t {
                        Temporality::Delta => set_number(o, number(o) + v),
                        Temporality::Cumulative => set_number(o, value),
                        Temporality::Gauge => {
                            if p.time_unix_nano >= o.time_unix_nano {
                                set_number(o, v)
                            }
                        }
                    }
                    o.time_unix_nano = o.time_unix_nano.max(p.time_unix_nano);
                    o.start_time_unix_nano = o.start_time_unix_nano.min(p.start_time_unix_nano);
                }
                _ => {
                    let mut o = NumberDataPoint {
                        attributes: attrs,
                        start_time_unix_nano: if t == Temporality::Cumulative {
                            start
                        } else {
                            p.start_time_unix_nano
                        },
                        time_unix_nano: p.time_unix_nano,
                        ..Default::default()
                    };
                    set_number(&mut o, value);
                    outs.push((tid, Out::Number(o)));
                }
            }
        }
        keep
    }

    #[allow(clippy::too_many_arguments)]
    fn histograms(
        &mut self,
        name: &str,
        tenant: &str,
        rhash: u64,
        now: u32,
        pts: Vec<HistogramDataPoint>,
        t: Temporality,
        action: Action,
        strip: &[String],
        outs: &mut Vec<(u64, Out)>,
    ) -> Vec<HistogramDataPoint> {
        let key = &self.scope_key(name, tenant);
        let mut keep = Vec::with_capacity(pts.len());
        for p in pts {
            let sid = series_id(tenant, name, rhash, attrs_hash(&p.attributes));
            if self.admit(key, tenant, sid, now) {
                keep.push(p);
                continue;
            }
            if action == Action::Drop {
                self.limited_counter(name, tenant, "drop").inc();
                continue;
            }
            let (attrs, tid) = self.target(action, strip, tenant, name, rhash, &p.attributes);
            let mine = Contribution::Histogram {
                count: p.count,
                sum: p.sum.unwrap_or(0.0),
                buckets: p.bucket_counts.clone(),
            };
            let value = match t {
                Temporality::Cumulative => {
                    match self.fold_value(
                        tid,
                        sid,
                        now,
                        mine,
                        &p.explicit_bounds,
                        p.start_time_unix_nano,
                    ) {
                        Some(v) => v,
                        None => {
                            self.limited_counter(name, tenant, "drop").inc();
                            continue;
                        }
                    }
                }
                _ => mine,
            };
            let Contribution::Histogram {
                count,
                sum,
                buckets,
            } = value
            else {
                continue;
            };
            let existing = outs.iter_mut().find(|(k, _)| *k == tid);
            match existing {
                Some((_, Out::Histogram(o))) => {
                    if o.explicit_bounds != p.explicit_bounds {
                        self.limited_counter(name, tenant, "drop").inc();
                        continue;
                    }
                    if t == Temporality::Cumulative {
                        o.count = count;
                        o.sum = Some(sum);
                        o.bucket_counts = buckets;
                    } else {
                        o.count += count;
                        o.sum = Some(o.sum.unwrap_or(0.0) + sum);
                        for (a, b) in o.bucket_counts.iter_mut().zip(&buckets) {
                            *a += b;
                        }
                    }
                    o.time_unix_nano = o.time_unix_nano.max(p.time_unix_nano);
                }
                _ => outs.push((
                    tid,
                    Out::Histogram(HistogramDataPoint {
                        attributes: attrs,
                        start_time_unix_nano: p.start_time_unix_nano,
                        time_unix_nano: p.time_unix_nano,
                        count,
                        sum: Some(sum),
                        bucket_counts: buckets,
                        explicit_bounds: p.explicit_bounds.clone(),
                        ..Default::default()
                    }),
                )),
            }
            self.limited_counter(name, tenant, action.as_str()).inc();
        }
        keep
    }

    /// Records series `sid`'s latest cumulative value in fold `tid`; returns the fold's total,
    /// or None when it cannot be folded (member cap, histogram bounds differ).
    fn fold_value(
        &mut self,
        tid: u64,
        sid: u64,
        now: u32,
        v: Contribution,
        bounds: &[f64],
        start: u64,
    ) -> Option<Contribution> {
        let cap = self.cfg.max_tracked_overflow_series;
        let fold = self.folds.entry(tid).or_insert_with(|| Fold {
            members: HashMap::new(),
            total: match &v {
                Contribution::Value(_) => Contribution::Value(0.0),
                Contribution::Histogram { buckets, .. } => Contribution::Histogram {
                    count: 0,
                    sum: 0.0,
                    buckets: vec![0; buckets.len()],
                },
            },
            bounds: bounds.to_vec(),
            start,
        });
        if fold.bounds != bounds
            || std::mem::discriminant(&fold.total) != std::mem::discriminant(&v)
        {
            return None;
        }
        match fold.members.get_mut(&sid) {
            Some(m) => {
                subtract(&mut fold.total, &m.value);
                add(&mut fold.total, &v);
                m.value = v;
                m.last_seen = now;
            }
            None => {
                if self.fold_members >= cap {
                    return None;
                }
                add(&mut fold.total, &v);
                fold.members.insert(
                    sid,
                    Member {
                        last_seen: now,
                        value: v,
                    },
                );
                fold.start = fold.start.min(start);
                self.fold_members += 1;
            }
        }
        Some(fold.total.clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Temporality {
    Cumulative,
    Delta,
    Gauge,
}

fn add(total: &mut Contribution, v: &Contribution) {
    match (total, v) {
        (Contribution::Value(t), Contribution::Value(x)) => *t += x,
        (
            Contribution::Histogram {
                count,
                sum,
                buckets,
            },
            Contribution::Histogram {
                count: c,
                sum: s,
                buckets: b,
            },
        ) => {
            *count += c;
            *sum += s;
            if buckets.len() < b.len() {
                buckets.resize(b.len(), 0);
            }
            for (a, x) in buckets.iter_mut().zip(b) {
                *a += x;
            }
        }
        _ => {}
    }
}

fn subtract(total: &mut Contribution, v: &Contribution) {
    match (total, v) {
        (Contribution::Value(t), Contribution::Value(x)) => *t -= x,
        (
            Contribution::Histogram {
                count,
                sum,
                buckets,
            },
            Contribution::Histogram {
                count: c,
                sum: s,
                buckets: b,
            },
        ) => {
            *count = count.saturating_sub(*c);
            *sum -= s;
            for (a, x) in buckets.iter_mut().zip(b) {
                *a = a.saturating_sub(*x);
            }
        }
        _ => {}
    }
}

fn number(p: &NumberDataPoint) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match p.value {
        Some(Value::AsDouble(d)) => d,
        Some(Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

/// Keeps an int point an int when the value is whole.
fn set_number(p: &mut NumberDataPoint, v: f64) {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    p.value = Some(match p.value {
        Some(Value::AsInt(_)) | None if v.fract() == 0.0 && v.abs() < 9.0e15 => {
            Value::AsInt(v as i64)
        }
        _ => Value::AsDouble(v),
    });
}

fn metric_is_empty(m: &opentelemetry_proto::tonic::metrics::v1::Metric) -> bool {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.is_empty(),
        Some(metric::Data::Sum(s)) => s.data_points.is_empty(),
        Some(metric::Data::Histogram(h)) => h.data_points.is_empty(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.is_empty(),
        Some(metric::Data::Summary(s)) => s.data_points.is_empty(),
        None => true,
    }
}

fn limit_for(
    rules: &[(NameMatch, usize, Per)],
    cfg: &CardinalityLimiterConfig,
    metric: &str,
) -> (usize, Per) {
    rules
        .iter()
        .find(|(m, _, _)| m.is_match(metric))
        .map(|(_, n, per)| (*n, *per))
        .unwrap_or((cfg.default_limit.max_series_per_metric, Per::Tenant))
}

fn sweep_interval(cfg: &CardinalityLimiterConfig) -> Duration {
    (cfg.window.0 / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

impl Processor for CardinalityLimiter {
    fn reconfigure(&mut self, cfg: &dyn ProcessorSettings, _registry: &Arc<Registry>) -> bool {
        match cfg.as_any().downcast_ref::<CardinalityLimiterConfig>() {
            Some(c) => {
                CardinalityLimiter::reconfigure(self, c);
                true
            }
            None => false,
        }
    }

    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if batch.signal != crate::pdata::Signal::Metrics {
            out.push(batch);
            return;
        }
        if let Err(e) = batch.decode() {
            tracing::error!(processor = %self.id, "dropping {} points: {e}", e.lost);
            if batch.items == 0 {
                return;
            }
        }
        let tenant = batch.context.tenant.as_deref().unwrap_or("").to_owned();
        if let Payload::Metrics(req) = &mut batch.payload {
            self.limit_points(req, &tenant);
        }
        batch.recount();
        if batch.items > 0 {
            out.push(batch);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.next_sweep)
    }

    fn tick(&mut self, now: Instant, _out: &mut Vec<Batch>) {
        if now >= self.next_sweep {
            self.sweep();
            self.next_sweep = now + sweep_interval(&self.cfg);
        }
    }
}
