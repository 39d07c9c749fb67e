//! The `transform` processor: OTTL statements that edit spans, span events, metrics, data
//! points and log records in place, with the Collector's config (processor/transformprocessor):
//! `trace_statements`, `metric_statements`, `log_statements`, each a list of groups
//! (`context`, `conditions`, `statements`, `error_mode`) or of plain statements whose context
//! is inferred from their paths. Groups run in order; a group's statements run in order on
//! each item of its context whose group conditions (ORed; none means all) hold, each statement
//! only where its own `where` clause holds.
#[cfg(test)]
mod tests;
mod wire;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::Deserialize;

use crate::ottl::{
    infer_context, point_at, point_count, Condition, ConditionSet, ContextKind, Statement,
};
use crate::pdata::{Batch, Payload};
use crate::pipeline::Processor;
use crate::processors::filter::config::check_error_mode;
use crate::telemetry::metrics::{Counter, Registry};

use crate::config::loader::Body;
use crate::pipeline::registry::{
    all_signals, BuildEnv, Decode, Factory, ProcessorSettings, Stability,
};
use ContextKind as C;

pub static FACTORY: Factory = Factory {
    type_name: "transform",
    aliases: &[],
    stability: &all_signals(Stability::Beta),
    description: "edits spans, events, metrics, data points and logs with OTTL statements (set, delete_key, replace_pattern, ...)",
    decode: Decode::Processor(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<TransformConfig>(|c| Transform::new(c).err().unwrap_or_default())?;
    Some(Box::new(c))
}

impl ProcessorSettings for TransformConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        Box::new(TransformProcessor::new(id, self, env.registry))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StatementEntry {
    Basic(String),
    Group(StatementGroup),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementGroup {
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub conditions: Vec<String>,
    #[serde(default)]
    pub statements: Vec<String>,
    #[serde(default)]
    pub error_mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformConfig {
    pub error_mode: Option<String>,
    pub trace_statements: Vec<StatementEntry>,
    pub metric_statements: Vec<StatementEntry>,
    pub log_statements: Vec<StatementEntry>,
    /// Upstream's `flatten_data` (logs): not supported; refused when true.
    pub flatten_data: bool,
}

/// One group: its context, conditions and statements.
#[derive(Debug)]
struct Group {
    ctx: ContextKind,
    conditions: ConditionSet,
    statements: Vec<Statement>,
    mode: Mode,
}

/// `error_mode`: what a statement that fails does (upstream's meanings; `propagate` is the
/// default, as upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The error is logged and counted; the next statement runs.
    Ignore,
    /// Counted only; the next statement runs.
    Silent,
    /// The whole request is dropped (counted, logged).
    #[default]
    Propagate,
}

impl Mode {
    fn parse(m: Option<&str>) -> Option<Mode> {
        Some(match m?.to_ascii_lowercase().as_str() {
            "ignore" => Mode::Ignore,
            "silent" => Mode::Silent,
            "propagate" => Mode::Propagate,
            _ => return None,
        })
    }
}

/// What running statements on a request met.
#[derive(Debug, Default)]
pub struct Errors {
    /// Failed statements under `ignore`, and the first of them.
    pub ignored: usize,
    pub first_ignored: Option<String>,
    /// Failed statements under `silent`.
    pub silent: usize,
    /// The statement that failed under `propagate`: the request is to be dropped.
    pub propagated: Option<String>,
}

impl Errors {
    fn record(&mut self, mode: Mode, s: &str) {
        match mode {
            Mode::Ignore => {
                self.ignored += 1;
                if self.first_ignored.is_none() {
                    self.first_ignored = Some(s.to_string());
                }
            }
            Mode::Silent => self.silent += 1,
            Mode::Propagate => self.propagated = Some(s.to_string()),
        }
    }
}

impl Group {
    /// Whether the group's conditions (ORed) hold. One that fails is false and counts as a
    /// failure under the group's error_mode (under `propagate` nothing runs after it).
    fn holds(&self, errs: &mut Errors, f: impl FnOnce(&ConditionSet) -> bool) -> bool {
        if self.conditions.is_empty() {
            return true;
        }
        if errs.propagated.is_some() {
            return false;
        }
        crate::ottl::take_condition_failures();
        let hold = f(&self.conditions);
        if crate::ottl::take_condition_failures() != [0; 3] {
            errs.record(self.mode, "a group condition");
            return hold && self.mode != Mode::Propagate;
        }
        hold
    }

    /// Runs the statements in order with `run` (which says whether one failed), stopping at a
    /// failure under `propagate`.
    fn each(&self, errs: &mut Errors, mut run: impl FnMut(&Statement) -> bool) {
        for s in &self.statements {
            if errs.propagated.is_some() {
                return;
            }
            if run(s) {
                errs.record(self.mode, s.as_str());
            }
        }
    }

    fn on_resource(&self, res: &mut Option<Resource>, errs: &mut Errors) {
        if self.holds(errs, |c| c.eval_resource(res.as_ref())) {
            self.each(errs, |s| s.run_resource(res));
        }
    }

    fn on_scope(
        &self,
        res: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        errs: &mut Errors,
    ) {
        if self.holds(errs, |c| c.eval_scope(res.as_ref(), scope.as_ref())) {
            self.each(errs, |s| s.run_scope(res, scope));
        }
    }

    /// A span group on one span, or a span event group on each of its events.
    fn on_span(
        &self,
        res: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        span: &mut Span,
        errs: &mut Errors,
    ) {
        if self.ctx == C::Span {
            if self.holds(errs, |c| c.eval_span(res.as_ref(), scope.as_ref(), span)) {
                self.each(errs, |s| s.run_span(res, scope, span));
            }
            return;
        }
        for i in 0..span.events.len() {
            let hold = self.holds(errs, |c| {
                c.eval_span_event(res.as_ref(), scope.as_ref(), span, &span.events[i])
            });
            if hold {
                self.each(errs, |s| s.run_span_event(res, scope, span, i));
            }
        }
    }

    fn on_log(
        &self,
        res: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        r: &mut LogRecord,
        errs: &mut Errors,
    ) {
        if self.holds(errs, |c| c.eval_log(res.as_ref(), scope.as_ref(), r)) {
            self.each(errs, |s| s.run_log(res, scope, r));
        }
    }
}

/// A signal's groups, level by level, for the wire path (which runs them item by item),
/// with what the statements met.
struct Levels<'a>(&'a [Group], std::cell::RefCell<Errors>);

impl<'a> Levels<'a> {
    fn new(groups: &'a [Group]) -> Levels<'a> {
        Levels(groups, Default::default())
    }

    fn run(&self, level: &[ContextKind], mut f: impl FnMut(&Group, &mut Errors)) {
        let mut errs = self.1.borrow_mut();
        for g in self.0.iter().filter(|g| level.contains(&g.ctx)) {
            f(g, &mut errs);
        }
    }
}

impl wire::Outer for Levels<'_> {
    fn resource(&self, res: &mut Option<Resource>) {
        self.run(&[C::Resource], |g, e| g.on_resource(res, e));
    }
    fn scope(&self, res: &mut Option<Resource>, scope: &mut Option<InstrumentationScope>) {
        self.run(&[C::Scope], |g, e| g.on_scope(res, scope, e));
    }
}

impl wire::Run<Span> for Levels<'_> {
    fn item(
        &self,
        res: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        span: &mut Span,
    ) {
        self.run(&[C::Span, C::SpanEvent], |g, e| {
            g.on_span(res, scope, span, e)
        });
    }
}

impl wire::Run<LogRecord> for Levels<'_> {
    fn item(
        &self,
        res: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        r: &mut LogRecord,
    ) {
        self.run(&[C::Log], |g, e| g.on_log(res, scope, r, e));
    }
}

#[derive(Debug, Default)]
pub struct Transform {
    traces: Vec<Group>,
    metrics: Vec<Group>,
    logs: Vec<Group>,
    /// Whether, and how, traces and logs can be edited without decoding whole requests.
    traces_wire: Option<wire::WirePlan>,
    logs_wire: Option<wire::WirePlan>,
}

const TRACE_CONTEXTS: &[ContextKind] = &[C::SpanEvent, C::Span, C::Scope, C::Resource];
const METRIC_CONTEXTS: &[ContextKind] = &[C::DataPoint, C::Metric, C::Scope, C::Resource];
const LOG_CONTEXTS: &[ContextKind] = &[C::Log, C::Scope, C::Resource];

type Problems = Vec<(String, String)>;

fn compile(
    list: &[StatementEntry],
    path: &str,
    allowed: &[ContextKind],
    mode: Mode,
    problems: &mut Problems,
) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let basic = list
        .iter()
        .filter(|e| matches!(e, StatementEntry::Basic(_)))
        .count();
    if basic != 0 && basic != list.len() {
        problems.push((
            path.into(),
            "configuring multiple configuration styles is not supported, please use only Basic configuration or only Advanced configuration".into(),
        ));
        return groups;
    }
    let names: Vec<&str> = allowed.iter().map(|c| c.name()).collect();
    let infer = |s: &str, at: &str, problems: &mut Problems| -> Option<ContextKind> {
        let c = infer_context(s, allowed);
        if c.is_none() {
            problems.push((
                at.to_string(),
                format!(
                    "unable to infer a valid context ({}) from statement {s:?}: prefix its paths with their context (e.g. {}.attributes[\"k\"]), or give the group a context",
                    names.join(", "),
                    names[0]
                ),
            ));
        }
        c
    };
    for (i, e) in list.iter().enumerate() {
        match e {
            StatementEntry::Basic(s) => {
                let at = format!("{path}[{i}]");
                let Some(ctx) = infer(s, &at, problems) else {
                    continue;
                };
                match Statement::parse(s, ctx) {
                    Ok(st) => match groups.last_mut() {
                        // Consecutive statements of one context share a pass over the data.
                        Some(g) if g.ctx == ctx && g.conditions.is_empty() => g.statements.push(st),
                        _ => groups.push(Group {
                            ctx,
                            conditions: ConditionSet::default(),
                            statements: vec![st],
                            mode,
                        }),
                    },
                    Err(e) => problems.push((at, e.to_string())),
                }
            }
            StatementEntry::Group(g) => {
                if let Some(m) = &g.error_mode {
                    if let Err(e) = check_error_mode(m) {
                        problems.push((format!("{path}[{i}].error_mode"), e));
                    }
                }
                let ctx = match g.context.as_deref() {
                    None | Some("") => {
                        // Inferred from all of the group's statements and conditions.
                        let all = g
                            .statements
                            .iter()
                            .chain(&g.conditions)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(" and ");
                        match infer(&all, &format!("{path}[{i}]"), problems) {
                            Some(c) => c,
                            None => continue,
                        }
                    }
                    Some(name) => match allowed.iter().find(|c| c.name() == name) {
                        Some(c) => *c,
                        None => {
                            problems.push((
                                format!("{path}[{i}].context"),
                                format!("unknown context {name}"),
                            ));
                            continue;
                        }
                    },
                };
                let mut conditions = ConditionSet::default();
                for (j, c) in g.conditions.iter().enumerate() {
                    match Condition::parse(c, ctx) {
                        Ok(c) => conditions.push(c),
                        Err(e) => {
                            problems.push((format!("{path}[{i}].conditions[{j}]"), e.to_string()))
                        }
                    }
                }
                let mut statements = Vec::new();
                for (j, s) in g.statements.iter().enumerate() {
                    match Statement::parse(s, ctx) {
                        Ok(st) => statements.push(st),
                        Err(e) => {
                            problems.push((format!("{path}[{i}].statements[{j}]"), e.to_string()))
                        }
                    }
                }
                groups.push(Group {
                    ctx,
                    conditions,
                    statements,
                    mode: Mode::parse(g.error_mode.as_deref()).unwrap_or(mode),
                });
            }
        }
    }
    groups
}

impl Transform {
    pub fn new(cfg: &TransformConfig) -> Result<Transform, Problems> {
        let mut problems = Vec::new();
        if let Some(m) = &cfg.error_mode {
            if let Err(e) = check_error_mode(m) {
                problems.push(("error_mode".into(), e));
            }
        }
        if cfg.flatten_data {
            problems.push((
                "flatten_data".into(),
                "flatten_data is not supported by weir".into(),
            ));
        }
        let mode = Mode::parse(cfg.error_mode.as_deref()).unwrap_or_default();
        let mut t = Transform {
            traces_wire: None,
            logs_wire: None,
            traces: compile(
                &cfg.trace_statements,
                "trace_statements",
                TRACE_CONTEXTS,
                mode,
                &mut problems,
            ),
            metrics: compile(
                &cfg.metric_statements,
                "metric_statements",
                METRIC_CONTEXTS,
                mode,
                &mut problems,
            ),
            logs: compile(
                &cfg.log_statements,
                "log_statements",
                LOG_CONTEXTS,
                mode,
                &mut problems,
            ),
        };
        t.traces_wire = wire::WirePlan::new(&t.traces, 9);
        t.logs_wire = wire::WirePlan::new(&t.logs, 6);
        if problems.is_empty() {
            Ok(t)
        } else {
            Err(problems)
        }
    }

    /// Runs the trace statements (what they met is left out: see [`Transform::traces_checked`]).
    pub fn traces(&self, req: &mut ExportTraceServiceRequest) {
        self.traces_checked(req, &mut Errors::default());
    }

    pub fn traces_checked(&self, req: &mut ExportTraceServiceRequest, errs: &mut Errors) {
        for g in &self.traces {
            for rs in &mut req.resource_spans {
                let res = &mut rs.resource;
                if g.ctx == C::Resource {
                    g.on_resource(res, errs);
                    continue;
                }
                for ss in &mut rs.scope_spans {
                    let scope = &mut ss.scope;
                    if g.ctx == C::Scope {
                        g.on_scope(res, scope, errs);
                        continue;
                    }
                    for span in &mut ss.spans {
                        g.on_span(res, scope, span, errs);
                    }
                }
            }
        }
    }

    pub fn metrics(&self, req: &mut ExportMetricsServiceRequest) {
        self.metrics_checked(req, &mut Errors::default());
    }

    pub fn metrics_checked(&self, req: &mut ExportMetricsServiceRequest, errs: &mut Errors) {
        for g in &self.metrics {
            let all = g.conditions.is_empty();
            for rm in &mut req.resource_metrics {
                let res = &mut rm.resource;
                if g.ctx == C::Resource {
                    g.on_resource(res, errs);
                    continue;
                }
                for sm in &mut rm.scope_metrics {
                    let scope = &mut sm.scope;
                    match g.ctx {
                        C::Scope => g.on_scope(res, scope, errs),
                        C::Metric => {
                            for m in &mut sm.metrics {
                                if all
                                    || g.holds(errs, |c| {
                                        c.eval_metric(res.as_ref(), scope.as_ref(), m)
                                    })
                                {
                                    g.each(errs, |s| s.run_metric(res, scope, m));
                                }
                            }
                        }
                        _ => {
                            for m in &mut sm.metrics {
                                for i in 0..point_count(m) {
                                    let hold = all
                                        || g.holds(errs, |c| {
                                            point_at(m, i).is_some_and(|p| {
                                                c.eval_datapoint(res.as_ref(), scope.as_ref(), m, p)
                                            })
                                        });
                                    if hold {
                                        g.each(errs, |s| s.run_datapoint(res, scope, m, i));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn logs(&self, req: &mut ExportLogsServiceRequest) {
        self.logs_checked(req, &mut Errors::default());
    }

    pub fn logs_checked(&self, req: &mut ExportLogsServiceRequest, errs: &mut Errors) {
        for g in &self.logs {
            for rl in &mut req.resource_logs {
                let res = &mut rl.resource;
                if g.ctx == C::Resource {
                    g.on_resource(res, errs);
                    continue;
                }
                for sl in &mut rl.scope_logs {
                    let scope = &mut sl.scope;
                    if g.ctx == C::Scope {
                        g.on_scope(res, scope, errs);
                        continue;
                    }
                    for r in &mut sl.log_records {
                        g.on_log(res, scope, r, errs);
                    }
                }
            }
        }
    }

    /// Runs the statements on an encoded request without decoding it (see [`wire`]), with
    /// what they met: `None` when this signal's groups or these bytes need the decoded path.
    fn on_wire(
        &self,
        signal: crate::pdata::Signal,
        bytes: &[u8],
        scratch: &mut wire::Scratch,
    ) -> Option<(Vec<u8>, Errors)> {
        let (plan, groups) = match signal {
            crate::pdata::Signal::Traces => (self.traces_wire.as_ref()?, &self.traces),
            crate::pdata::Signal::Logs => (self.logs_wire.as_ref()?, &self.logs),
            crate::pdata::Signal::Metrics => return None,
        };
        let levels = Levels::new(groups);
        let out = match signal {
            crate::pdata::Signal::Traces => wire::rewrite::<Span>(bytes, plan, &levels, scratch),
            _ => wire::rewrite::<LogRecord>(bytes, plan, &levels, scratch),
        }
        .ok()?;
        Some((out, levels.1.into_inner()))
    }

    /// [`Transform::on_wire`]'s bytes (tests).
    #[cfg(test)]
    fn on_wire_bytes(
        &self,
        signal: crate::pdata::Signal,
        bytes: &[u8],
        scratch: &mut wire::Scratch,
    ) -> Option<Vec<u8>> {
        self.on_wire(signal, bytes, scratch).map(|(b, _)| b)
    }

    fn acts_on(&self, signal: crate::pdata::Signal) -> bool {
        match signal {
            crate::pdata::Signal::Traces => !self.traces.is_empty(),
            crate::pdata::Signal::Metrics => !self.metrics.is_empty(),
            crate::pdata::Signal::Logs => !self.logs.is_empty(),
        }
    }
}

/// The processor as a pipeline stage.
pub struct TransformProcessor {
    id: String,
    t: Transform,
    dropped: Counter,
    errors: Counter,
    scratch: wire::Scratch,
    /// When errors were last logged, and how many failed since (a log line every 10 s at
    /// most, so a statement failing on every span cannot flood the log).
    logged: Option<std::time::Instant>,
    unlogged: usize,
}

impl TransformProcessor {
    pub fn new(id: &str, cfg: &TransformConfig, registry: &Registry) -> TransformProcessor {
        TransformProcessor {
            id: id.into(),
            // Validated at load; should it fail here, the stage changes nothing.
            t: Transform::new(cfg).unwrap_or_default(),
            dropped: registry.counter(
                "weir_processor_dropped_items_total",
                "Items a processor could not handle and dropped.",
                &[("processor", id)],
            ),
            errors: registry.counter(
                "weir_processor_transform_statement_errors_total",
                "Statements that failed on an item (upstream's errors: a converter given a value it cannot take, a time that does not parse, ...), under any error_mode.",
                &[("processor", id)],
            ),
            scratch: wire::Scratch::default(),
            logged: None,
            unlogged: 0,
        }
    }

    /// Counts and reports what the statements met; whether the batch goes on (`false`: a
    /// failure under `propagate` drops it, as upstream's error drops the payload).
    fn settle(&mut self, errs: Errors, items: usize) -> bool {
        let failed = errs.ignored + errs.silent + usize::from(errs.propagated.is_some());
        if failed > 0 {
            self.errors.add(failed as u64);
        }
        self.unlogged += errs.ignored;
        if let Some(st) = errs.propagated {
            self.dropped.add(items as u64);
            tracing::error!(processor = %self.id, "dropping {items} items: statement {st:?} failed (error_mode: propagate)");
            return false;
        }
        let due = self
            .logged
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10));
        if self.unlogged > 0 && due {
            tracing::warn!(
                processor = %self.id,
                "{} statement runs failed and were skipped (error_mode: ignore), e.g. {:?}",
                self.unlogged,
                errs.first_ignored.as_deref().unwrap_or("")
            );
            self.logged = Some(std::time::Instant::now());
            self.unlogged = 0;
        }
        true
    }
}

impl Processor for TransformProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if !self.t.acts_on(batch.signal) {
            out.push(batch);
            return;
        }
        // An encoded batch is edited on the wire when its statements allow; a batch a stage
        // before decoded stays decoded (decoded once, whatever runs after).
        if let Payload::Encoded(bytes) = &batch.payload {
            if let Some((b, errs)) = self.t.on_wire(batch.signal, bytes, &mut self.scratch) {
                if self.settle(errs, batch.items) {
                    batch.payload = Payload::Encoded(b.into());
                    out.push(batch);
                }
                return;
            }
        }
        if let Err(e) = batch.decode() {
            self.dropped.add(e.lost as u64);
            tracing::error!(processor = %self.id, "dropping {} items: {e}", e.lost);
            if batch.items == 0 {
                return;
            }
        }
        let mut errs = Errors::default();
        match &mut batch.payload {
            Payload::Traces(r) => self.t.traces_checked(r, &mut errs),
            Payload::Metrics(r) => self.t.metrics_checked(r, &mut errs),
            Payload::Logs(r) => self.t.logs_checked(r, &mut errs),
            Payload::Encoded(_) => {}
        }
        if self.settle(errs, batch.items) {
            out.push(batch);
        }
    }
}
