//! The `filter` processor: drops spans, span events, metrics, data points and log records that
//! match OTTL conditions, with the Collector's semantics (processor/filterprocessor):
//!
//! - conditions of a context are ORed: the first that is true drops the item;
//! - contexts are checked from the top (resource → scope → span → span event; resource →
//!   scope → metric → data point; resource → scope → log record): what a higher level drops
//!   is not looked at below, a dropped span takes its events with it;
//! - a scope or resource with nothing left is removed, and so is a metric whose data points
//!   were all dropped (a metric without data is never dropped by data point conditions);
//! - a batch with nothing left is not forwarded; what was dropped is counted in
//!   `otelcol_processor_filter_{spans,datapoints,logs}_filtered_total{filter="<id>"}`.
//!
//! The data is decoded once per batch (a decoded batch stays decoded for the next stage).
pub mod config;
pub mod legacy;
#[cfg(test)]
pub(crate) mod tests;
mod wire;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use std::cell::Cell;

use opentelemetry_proto::tonic::metrics::v1::{metric, Metric};

use crate::config::loader::Body;
use crate::ottl::{infer_context, point_count, points_of, Condition, ConditionSet, ContextKind};
use crate::pdata::{Batch, Payload, Signal};
use crate::pipeline::registry::{
    all_signals, BuildEnv, Decode, Factory, ProcessorSettings, Stability,
};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Registry};
use config::{check_error_mode, ConditionEntry, FilterConfig};

pub static FACTORY: Factory = Factory {
    type_name: "filter",
    aliases: &[],
    stability: &all_signals(Stability::Alpha),
    description: "drops spans, span events, metrics, data points and logs matching OTTL conditions",
    decode: Decode::Processor(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<FilterConfig>(|c| Filter::new(c).err().unwrap_or_default())?;
    Some(Box::new(c))
}

impl ProcessorSettings for FilterConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        Box::new(FilterProcessor::new(id, self, env.registry))
    }
}

use ContextKind as C;

type Pair<T> = (Option<T>, Option<T>);

/// The compiled conditions, one set per context.
#[derive(Default)]
pub struct Filter {
    legacy_spans: Pair<crate::processors::attributes::SpanMatch>,
    legacy_metrics: Pair<legacy::MetricMatch>,
    legacy_logs: Pair<legacy::LogMatch>,
    t_resource: ConditionSet,
    t_scope: ConditionSet,
    t_span: ConditionSet,
    t_event: ConditionSet,
    m_resource: ConditionSet,
    m_scope: ConditionSet,
    m_metric: ConditionSet,
    m_point: ConditionSet,
    l_resource: ConditionSet,
    l_scope: ConditionSet,
    l_log: ConditionSet,
}

/// The contexts each flat list may use, most specific first (for inference).
const TRACE_CONTEXTS: &[ContextKind] = &[C::SpanEvent, C::Span, C::Scope, C::Resource];
const METRIC_CONTEXTS: &[ContextKind] = &[C::DataPoint, C::Metric, C::Scope, C::Resource];
const LOG_CONTEXTS: &[ContextKind] = &[C::Log, C::Scope, C::Resource];

type Problems = Vec<(String, String)>;

impl Filter {
    /// Compiles `cfg`, reporting every problem with its path (relative to the processor).
    pub fn new(cfg: &FilterConfig) -> Result<Filter, Problems> {
        let mut problems: Problems = Vec::new();
        let mut f = Filter::default();
        if let Some(m) = &cfg.error_mode {
            if let Err(e) = check_error_mode(m) {
                problems.push(("error_mode".into(), e));
            }
        }
        if cfg.profile_conditions.is_some() || cfg.profiles.is_some() {
            problems.push((
                if cfg.profiles.is_some() {
                    "profiles"
                } else {
                    "profile_conditions"
                }
                .into(),
                "weir has no profiles signal; remove the profile conditions".into(),
            ));
        }
        // The legacy match form.
        if let Some(sp) = &cfg.spans {
            match legacy::spans(sp) {
                Ok(pair) => f.legacy_spans = pair,
                Err(p) => problems.push(p),
            }
        }
        let mm = |m: &Option<legacy::MetricMatchConfig>, at: &str, problems: &mut Problems| {
            m.as_ref()
                .map(|m| legacy::MetricMatch::compile(m, at))
                .transpose()
                .unwrap_or_else(|p| {
                    problems.push(p);
                    None
                })
        };
        f.legacy_metrics = (
            mm(&cfg.metrics.include, "metrics.include", &mut problems),
            mm(&cfg.metrics.exclude, "metrics.exclude", &mut problems),
        );
        let lm = |m: &Option<legacy::LogMatchConfig>, at: &str, problems: &mut Problems| {
            m.as_ref()
                .map(|m| legacy::LogMatch::compile(m, at))
                .transpose()
                .unwrap_or_else(|p| {
                    problems.push(p);
                    None
                })
        };
        f.legacy_logs = (
            lm(&cfg.logs.include, "logs.include", &mut problems),
            lm(&cfg.logs.exclude, "logs.exclude", &mut problems),
        );

        // The nested form.
        let t = &cfg.traces;
        let m = &cfg.metrics;
        let l = &cfg.logs;
        // upstream's default error_mode: propagate.
        let top_mode = cfg.error_mode.clone().unwrap_or_else(|| "propagate".into());
        let mut nested = |list: &[String], path: &str, ctx: ContextKind, set: &mut ConditionSet| {
            for (i, c) in list.iter().enumerate() {
                match Condition::parse(c, ctx) {
                    Ok(mut c) => {
                        c.set_error_mode(&top_mode);
                        set.push(c)
                    }
                    Err(e) => problems.push((format!("{path}[{i}]"), e.to_string())),
                }
            }
        };
        nested(
            &t.resource,
            "traces.resource",
            C::Resource,
            &mut f.t_resource,
        );
        nested(&t.span, "traces.span", C::Span, &mut f.t_span);
        nested(
            &t.spanevent,
            "traces.spanevent",
            C::SpanEvent,
            &mut f.t_event,
        );
        nested(
            &m.resource,
            "metrics.resource",
            C::Resource,
            &mut f.m_resource,
        );
        nested(&m.metric, "metrics.metric", C::Metric, &mut f.m_metric);
        nested(
            &m.datapoint,
            "metrics.datapoint",
            C::DataPoint,
            &mut f.m_point,
        );
        nested(&l.resource, "logs.resource", C::Resource, &mut f.l_resource);
        nested(&l.log_record, "logs.log_record", C::Log, &mut f.l_log);

        // Upstream's rule: the flat list of a signal excludes its nested settings.
        let t_nested = !t.resource.is_empty() || !t.span.is_empty() || !t.spanevent.is_empty();
        let m_nested = !m.resource.is_empty() || !m.metric.is_empty() || !m.datapoint.is_empty();
        let l_nested = !l.resource.is_empty() || !l.log_record.is_empty();
        let conflicts = [
            (
                !cfg.trace_conditions.is_empty() && t_nested,
                "trace_conditions",
                r#"cannot use context inferred trace conditions "trace_conditions" and the settings "traces.resource", "traces.span", "traces.spanevent" at the same time"#,
            ),
            (
                !cfg.metric_conditions.is_empty() && m_nested,
                "metric_conditions",
                r#"cannot use context inferred metric conditions "metric_conditions" and the settings "metrics.resource", "metrics.metric", "metrics.datapoint", "metrics.include", "metrics.exclude" at the same time"#,
            ),
            (
                !cfg.log_conditions.is_empty() && l_nested,
                "log_conditions",
                r#"cannot use context inferred log conditions "log_conditions" and the settings "logs.resource", "logs.log", "logs.include", "logs.exclude" at the same time"#,
            ),
        ];
        let spans_legacy = cfg.spans.is_some();
        let metrics_legacy = m.include.is_some() || m.exclude.is_some();
        let logs_legacy = l.include.is_some() || l.exclude.is_some();
        let conflicts = [
            conflicts[0],
            (
                conflicts[1].0 || (!cfg.metric_conditions.is_empty() && metrics_legacy),
                conflicts[1].1,
                conflicts[1].2,
            ),
            (
                conflicts[2].0 || (!cfg.log_conditions.is_empty() && logs_legacy),
                conflicts[2].1,
                conflicts[2].2,
            ),
            (
                t_nested && spans_legacy,
                "spans",
                r#"cannot use "traces.resource", "traces.span", "traces.spanevent" and the span settings "spans.include", "spans.exclude" at the same time"#,
            ),
            (
                m_nested && metrics_legacy,
                "metrics",
                r#"cannot use "metrics.resource", "metrics.metric", "metrics.datapoint" and the settings "metrics.include", "metrics.exclude" at the same time"#,
            ),
            (
                l_nested && logs_legacy,
                "logs",
                r#"cannot use "logs.resource", "logs.log" and the settings "logs.include", "logs.exclude" at the same time"#,
            ),
        ];
        for (bad, path, msg) in conflicts {
            if bad {
                problems.push((path.into(), msg.into()));
            }
        }

        // The flat form.
        flat(
            &cfg.trace_conditions,
            "trace_conditions",
            TRACE_CONTEXTS,
            &top_mode,
            &mut problems,
            &mut |ctx, c| match ctx {
                C::Resource => f.t_resource.push(c),
                C::Scope => f.t_scope.push(c),
                C::Span => f.t_span.push(c),
                _ => f.t_event.push(c),
            },
        );
        flat(
            &cfg.metric_conditions,
            "metric_conditions",
            METRIC_CONTEXTS,
            &top_mode,
            &mut problems,
            &mut |ctx, c| match ctx {
                C::Resource => f.m_resource.push(c),
                C::Scope => f.m_scope.push(c),
                C::Metric => f.m_metric.push(c),
                _ => f.m_point.push(c),
            },
        );
        flat(
            &cfg.log_conditions,
            "log_conditions",
            LOG_CONTEXTS,
            &top_mode,
            &mut problems,
            &mut |ctx, c| match ctx {
                C::Resource => f.l_resource.push(c),
                C::Scope => f.l_scope.push(c),
                _ => f.l_log.push(c),
            },
        );
        if problems.is_empty() {
            Ok(f)
        } else {
            Err(problems)
        }
    }

    /// Whether it drops anything of `signal` at all.
    pub fn acts_on(&self, signal: Signal) -> bool {
        match signal {
            Signal::Traces => {
                self.legacy_spans.0.is_some()
                    || self.legacy_spans.1.is_some()
                    || !(self.t_resource.is_empty()
                        && self.t_scope.is_empty()
                        && self.t_span.is_empty()
                        && self.t_event.is_empty())
            }
            Signal::Metrics => {
                self.legacy_metrics.0.is_some()
                    || self.legacy_metrics.1.is_some()
                    || !(self.m_resource.is_empty()
                        && self.m_scope.is_empty()
                        && self.m_metric.is_empty()
                        && self.m_point.is_empty())
            }
            Signal::Logs => {
                self.legacy_logs.0.is_some()
                    || self.legacy_logs.1.is_some()
                    || !(self.l_resource.is_empty()
                        && self.l_scope.is_empty()
                        && self.l_log.is_empty())
            }
        }
    }

    /// Filters an encoded request without decoding it whole (see [`wire`]); `None` when this
    /// signal's conditions or these bytes need the decoded path.
    fn on_wire(
        &self,
        signal: Signal,
        bytes: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Option<wire::Outcome> {
        use opentelemetry_proto::tonic::logs::v1::LogRecord;
        use opentelemetry_proto::tonic::trace::v1::Span;
        match signal {
            Signal::Traces => {
                let legacy = self.legacy_spans.0.is_some() || self.legacy_spans.1.is_some();
                if legacy || !self.t_event.is_empty() {
                    return None;
                }
                let levels = wire::Levels::<Span> {
                    resource: &self.t_resource,
                    scope: &self.t_scope,
                    item: &self.t_span,
                    reach: wire::reach(&self.t_span)?,
                    attrs_field: 9,
                    eval: |c, r, s, span| c.eval_span(r, s, span),
                };
                wire::filter(bytes, &levels, scratch).ok()
            }
            Signal::Logs => {
                if self.legacy_logs.0.is_some() || self.legacy_logs.1.is_some() {
                    return None;
                }
                let levels = wire::Levels::<LogRecord> {
                    resource: &self.l_resource,
                    scope: &self.l_scope,
                    item: &self.l_log,
                    reach: wire::reach(&self.l_log)?,
                    attrs_field: 6,
                    eval: |c, r, s, log| c.eval_log(r, s, log),
                };
                wire::filter(bytes, &levels, scratch).ok()
            }
            Signal::Metrics => None,
        }
    }

    /// Drops what matches; returns whether anything was dropped.
    pub fn traces(&self, req: &mut ExportTraceServiceRequest) -> bool {
        let changed = Cell::new(false);
        let gone = |keep: bool| {
            if !keep {
                changed.set(true);
            }
            keep
        };
        req.resource_spans.retain_mut(|rs| {
            let res = rs.resource.as_ref();
            if self.t_resource.eval_resource(res) {
                return gone(false);
            }
            rs.scope_spans.retain_mut(|ss| {
                let scope = ss.scope.as_ref();
                if self.t_scope.eval_scope(res, scope) {
                    return gone(false);
                }
                let legacy = self.legacy_spans.0.is_some() || self.legacy_spans.1.is_some();
                if self.t_span.is_empty() && self.t_event.is_empty() && !legacy {
                    return true;
                }
                ss.spans.retain_mut(|span| {
                    if self.t_span.eval_span(res, scope, span)
                        || (legacy && legacy::span_dropped(&self.legacy_spans, res, scope, span))
                    {
                        return gone(false);
                    }
                    if !self.t_event.is_empty() && !span.events.is_empty() {
                        let mut events = std::mem::take(&mut span.events);
                        let n = events.len();
                        events.retain(|e| !self.t_event.eval_span_event(res, scope, span, e));
                        gone(events.len() == n);
                        span.events = events;
                    }
                    true
                });
                gone(!ss.spans.is_empty())
            });
            gone(!rs.scope_spans.is_empty())
        });
        changed.get()
    }

    /// Drops what matches; returns whether anything was dropped.
    pub fn metrics(&self, req: &mut ExportMetricsServiceRequest) -> bool {
        let changed = Cell::new(false);
        let gone = |keep: bool| {
            if !keep {
                changed.set(true);
            }
            keep
        };
        req.resource_metrics.retain_mut(|rm| {
            let res = rm.resource.as_ref();
            if self.m_resource.eval_resource(res) {
                return gone(false);
            }
            rm.scope_metrics.retain_mut(|sm| {
                let scope = sm.scope.as_ref();
                if self.m_scope.eval_scope(res, scope) {
                    return gone(false);
                }
                let lm = &self.legacy_metrics;
                let legacy = lm.0.is_some() || lm.1.is_some();
                if self.m_metric.is_empty() && self.m_point.is_empty() && !legacy {
                    return true;
                }
                sm.metrics.retain_mut(|m| {
                    let legacy_drop = legacy
                        && legacy::drops(
                            lm.0.as_ref().map(|x| x.matches(res, m)),
                            lm.1.as_ref().map(|x| x.matches(res, m)),
                        );
                    if legacy_drop || self.m_metric.eval_metric(res, scope, m) {
                        return gone(false);
                    }
                    if self.m_point.is_empty() || m.data.is_none() {
                        return true;
                    }
                    let keep: Vec<bool> = points_of(m)
                        .into_iter()
                        .map(|p| !self.m_point.eval_datapoint(res, scope, m, p))
                        .collect();
                    if keep.iter().all(|k| *k) {
                        return true;
                    }
                    retain_points(m, keep);
                    changed.set(true);
                    point_count(m) > 0
                });
                gone(!sm.metrics.is_empty())
            });
            gone(!rm.scope_metrics.is_empty())
        });
        changed.get()
    }

    /// Drops what matches; returns whether anything was dropped.
    pub fn logs(&self, req: &mut ExportLogsServiceRequest) -> bool {
        let changed = Cell::new(false);
        let gone = |keep: bool| {
            if !keep {
                changed.set(true);
            }
            keep
        };
        req.resource_logs.retain_mut(|rl| {
            let res = rl.resource.as_ref();
            if self.l_resource.eval_resource(res) {
                return gone(false);
            }
            rl.scope_logs.retain_mut(|sl| {
                let scope = sl.scope.as_ref();
                if self.l_scope.eval_scope(res, scope) {
                    return gone(false);
                }
                let ll = &self.legacy_logs;
                let legacy = ll.0.is_some() || ll.1.is_some();
                if self.l_log.is_empty() && !legacy {
                    return true;
                }
                sl.log_records.retain(|r| {
                    let legacy_drop = legacy
                        && legacy::drops(
                            ll.0.as_ref().map(|x| x.matches(res, r)),
                            ll.1.as_ref().map(|x| x.matches(res, r)),
                        );
                    gone(!(legacy_drop || self.l_log.eval_log(res, scope, r)))
                });
                gone(!sl.log_records.is_empty())
            });
            gone(!rl.scope_logs.is_empty())
        });
        changed.get()
    }
}

/// Keeps the points of `m` whose flag in `keep` (in order) is true.
fn retain_points(m: &mut Metric, keep: Vec<bool>) {
    let mut it = keep.into_iter();
    let mut next = || it.next().unwrap_or(true);
    match &mut m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.retain(|_| next()),
        Some(metric::Data::Sum(s)) => s.data_points.retain(|_| next()),
        Some(metric::Data::Histogram(h)) => h.data_points.retain(|_| next()),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.retain(|_| next()),
        Some(metric::Data::Summary(s)) => s.data_points.retain(|_| next()),
        None => {}
    }
}

/// Compiles a flat list: all strings (each condition's context inferred from its paths) or all
/// groups (`context` given, or inferred per condition).
fn flat(
    list: &[ConditionEntry],
    path: &str,
    allowed: &[ContextKind],
    mode: &str,
    problems: &mut Problems,
    add: &mut dyn FnMut(ContextKind, Condition),
) {
    let basic = list
        .iter()
        .filter(|e| matches!(e, ConditionEntry::Basic(_)))
        .count();
    if basic != 0 && basic != list.len() {
        problems.push((
            path.into(),
            "configuring multiple configuration styles is not supported, please use only Basic configuration or only Advanced configuration".into(),
        ));
        return;
    }
    let names: Vec<&str> = allowed.iter().map(|c| c.name()).collect();
    let mut one = |problems: &mut Problems,
                   cond: &str,
                   at: String,
                   ctx: Option<ContextKind>,
                   mode: &str| {
        let ctx = match ctx.or_else(|| infer_context(cond, allowed)) {
            Some(c) => c,
            None => {
                problems.push((
                    at,
                    format!(
                        "unable to infer a valid context ({}) from condition {cond:?}: prefix its paths with their context (e.g. {}.attributes[\"k\"]), or give the group a context",
                        names.join(", "),
                        names[0]
                    ),
                ));
                return;
            }
        };
        match Condition::parse(cond, ctx) {
            Ok(mut c) => {
                c.set_error_mode(mode);
                add(ctx, c)
            }
            Err(e) => problems.push((at, e.to_string())),
        }
    };
    for (i, e) in list.iter().enumerate() {
        match e {
            ConditionEntry::Basic(c) => one(problems, c, format!("{path}[{i}]"), None, mode),
            ConditionEntry::Advanced(g) => {
                if let Some(m) = &g.error_mode {
                    if let Err(e) = check_error_mode(m) {
                        problems.push((format!("{path}[{i}].error_mode"), e));
                    }
                }
                let ctx = match g.context.as_deref() {
                    None | Some("") => None,
                    Some(name) => match allowed.iter().find(|c| c.name() == name) {
                        Some(c) => Some(*c),
                        None => {
                            problems.push((
                                format!("{path}[{i}].context"),
                                format!("unknown context {name}"),
                            ));
                            continue;
                        }
                    },
                };
                let mode = g.error_mode.as_deref().unwrap_or(mode);
                for (j, c) in g.conditions.iter().enumerate() {
                    one(
                        problems,
                        c,
                        format!("{path}[{i}].conditions[{j}]"),
                        ctx,
                        mode,
                    );
                }
            }
        }
    }
}

/// The processor as a pipeline stage.
pub struct FilterProcessor {
    id: String,
    filter: Filter,
    spans: Counter,
    points: Counter,
    logs: Counter,
    dropped: Counter,
    errors: Counter,
    scratch: Vec<u8>,
    /// When condition failures were last logged, and how many since (10 s apart at most).
    logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl FilterProcessor {
    pub fn new(id: &str, cfg: &FilterConfig, registry: &Registry) -> FilterProcessor {
        let counter = |name: &'static str, help: &'static str| {
            registry.counter(name, help, &[("filter", id)])
        };
        FilterProcessor {
            id: id.to_string(),
            // Validated at load; should it fail here, the stage filters nothing.
            filter: Filter::new(cfg).unwrap_or_default(),
            spans: counter(
                "otelcol_processor_filter_spans_filtered_total",
                "Number of spans dropped by the filter processor",
            ),
            points: counter(
                "otelcol_processor_filter_datapoints_filtered_total",
                "Number of metric data points dropped by the filter processor",
            ),
            logs: counter(
                "otelcol_processor_filter_logs_filtered_total",
                "Number of logs dropped by the filter processor",
            ),
            dropped: registry.counter(
                "weir_processor_dropped_items_total",
                "Items a processor could not handle and dropped.",
                &[("processor", id)],
            ),
            errors: registry.counter(
                "weir_processor_filter_condition_errors_total",
                "Conditions that failed on an item (upstream's errors: a converter given a value it cannot take), under any error_mode; a failed condition is false.",
                &[("filter", id)],
            ),
            scratch: Vec::new(),
            logged: None,
            unlogged: 0,
        }
    }

    /// Counts and reports the conditions that failed on this batch; whether it goes on
    /// (`false`: one failed under `propagate`, which drops the request, as upstream).
    fn settle(&mut self, items: usize) -> bool {
        let [ignored, silent, propagated] = crate::ottl::take_condition_failures();
        let failed = u64::from(ignored) + u64::from(silent) + u64::from(propagated);
        if failed > 0 {
            self.errors.add(failed);
        }
        if propagated > 0 {
            self.dropped.add(items as u64);
            tracing::error!(filter = %self.id, "dropping {items} items: {propagated} condition evaluations failed (error_mode: propagate)");
            return false;
        }
        self.unlogged += u64::from(ignored);
        let due = self
            .logged
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10));
        if self.unlogged > 0 && due {
            tracing::warn!(filter = %self.id, "{} condition evaluations failed and read as false (error_mode: ignore)", self.unlogged);
            self.logged = Some(std::time::Instant::now());
            self.unlogged = 0;
        }
        true
    }

    fn count(&self, signal: Signal, filtered: u64) {
        if filtered > 0 {
            match signal {
                Signal::Traces => self.spans.add(filtered),
                Signal::Metrics => self.points.add(filtered),
                Signal::Logs => self.logs.add(filtered),
            }
        }
    }
}

impl Processor for FilterProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if !self.filter.acts_on(batch.signal) {
            out.push(batch);
            return;
        }
        // Failures counted from here on are this batch's.
        crate::ottl::take_condition_failures();
        // Conditions that can be evaluated on the wire: nothing decoded whole, and the bytes
        // received go on untouched when nothing matches.
        if let Payload::Encoded(b) = &batch.payload {
            let outcome = self.filter.on_wire(batch.signal, b, &mut self.scratch);
            if outcome.is_some() && !self.settle(batch.items) {
                return;
            }
            match outcome {
                Some(wire::Outcome::Unchanged) => {
                    out.push(batch);
                    return;
                }
                Some(wire::Outcome::Filtered(kept, gone)) => {
                    self.count(batch.signal, gone as u64);
                    batch.items = batch.items.saturating_sub(gone);
                    if !kept.is_empty() {
                        batch.payload = Payload::Encoded(kept.into());
                        out.push(batch);
                    }
                    return;
                }
                None => {
                    // The decoded path evaluates again from the start.
                    crate::ottl::take_condition_failures();
                }
            }
        }
        // The bytes as received: forwarded again when nothing is dropped, so the common case
        // (nothing matches) pays no re-encoding.
        let mut original = match &batch.payload {
            Payload::Encoded(b) => Some(b.clone()),
            _ => None,
        };
        if let Err(e) = batch.decode() {
            // Part of it did not decode: only what did goes on, re-encoded.
            original = None;
            self.dropped.add(e.lost as u64);
            tracing::error!(processor = %self.id, "dropping {} items: {e}", e.lost);
            if batch.items == 0 {
                return;
            }
        }
        let before = batch.items;
        let changed = match &mut batch.payload {
            Payload::Traces(r) => self.filter.traces(r),
            Payload::Metrics(r) => self.filter.metrics(r),
            Payload::Logs(r) => self.filter.logs(r),
            Payload::Encoded(_) => false,
        };
        if !self.settle(before) {
            return;
        }
        if !changed {
            if let Some(b) = original {
                // Nothing dropped (and the request decoded whole): the original bytes, and the
                // decoded copy's memory charge given back.
                batch.payload = Payload::Encoded(b);
                batch.held = None;
                out.push(batch);
                return;
            }
        }
        batch.recount();
        self.count(batch.signal, before.saturating_sub(batch.items) as u64);
        // Nothing left: nothing to forward (its memory charge and any write-ahead-log record
        // are released as the batch is dropped).
        let empty = match &batch.payload {
            Payload::Traces(r) => r.resource_spans.is_empty(),
            Payload::Metrics(r) => r.resource_metrics.is_empty(),
            Payload::Logs(r) => r.resource_logs.is_empty(),
            Payload::Encoded(b) => b.is_empty(),
        };
        if !empty {
            out.push(batch);
        }
    }
}
