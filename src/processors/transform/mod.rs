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
}

impl Group {
    fn holds(&self, f: impl FnOnce(&ConditionSet) -> bool) -> bool {
        self.conditions.is_empty() || f(&self.conditions)
    }

    fn on_resource(&self, res: &mut Option<Resource>) {
        if self.holds(|c| c.eval_resource(res.as_ref())) {
            self.statements.iter().for_each(|s| s.run_resource(res));
        }
    }

    fn on_scope(&self, res: &mut Option<Resource>, scope: &mut Option<InstrumentationScope>) {
        if self.holds(|c| c.eval_scope(res.as_ref(), scope.as_ref())) {
            self.statements.iter().for_each(|s| s.run_scope(res, scope));
        }
    }

    /// A span group on one span, or a span event group on each of its events.
    fn on_span(
        &self,
        res: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        span: &mut Span,
    ) {
        if self.ctx == C::Span {
            if self.holds(|c| c.eval_span(res.as_ref(), scope.as_ref(), span)) {
                self.statements
                    .iter()
                    .for_each(|s| s.run_span(res, scope, span));
            }
            return;
        }
        for i in 0..span.events.len() {
            let hold = self
                .holds(|c| c.eval_span_event(res.as_ref(), scope.as_ref(), span, &span.events[i]));
            if hold {
                self.statements
                    .iter()
                    .for_each(|s| s.run_span_event(res, scope, span, i));
            }
        }
    }

    fn on_log(
        &self,
        res: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        r: &mut LogRecord,
    ) {
        if self.holds(|c| c.eval_log(res.as_ref(), scope.as_ref(), r)) {
            self.statements
                .iter()
                .for_each(|s| s.run_log(res, scope, r));
        }
    }
}

/// A signal's groups, level by level, for the wire path (which runs them item by item).
struct Levels<'a>(&'a [Group]);

impl<'a> Levels<'a> {
    fn at<'l>(&self, level: &'l [ContextKind]) -> impl Iterator<Item = &'a Group> + 'l
    where
        'a: 'l,
    {
        self.0.iter().filter(move |g| level.contains(&g.ctx))
    }
}

impl wire::Run<Span> for Levels<'_> {
    fn resource(&self, res: &mut Option<Resource>) {
        self.at(&[C::Resource]).for_each(|g| g.on_resource(res));
    }
    fn scope(&self, res: &mut Option<Resource>, scope: &mut Option<InstrumentationScope>) {
        self.at(&[C::Scope]).for_each(|g| g.on_scope(res, scope));
    }
    fn item(
        &self,
        res: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        span: &mut Span,
    ) {
        self.at(&[C::Span, C::SpanEvent])
            .for_each(|g| g.on_span(res, scope, span));
    }
}

impl wire::Run<LogRecord> for Levels<'_> {
    fn resource(&self, res: &mut Option<Resource>) {
        self.at(&[C::Resource]).for_each(|g| g.on_resource(res));
    }
    fn scope(&self, res: &mut Option<Resource>, scope: &mut Option<InstrumentationScope>) {
        self.at(&[C::Scope]).for_each(|g| g.on_scope(res, scope));
    }
    fn item(
        &self,
        res: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        r: &mut LogRecord,
    ) {
        self.at(&[C::Log]).for_each(|g| g.on_log(res, scope, r));
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
        let mut t = Transform {
            traces_wire: None,
            logs_wire: None,
            traces: compile(
                &cfg.trace_statements,
                "trace_statements",
                TRACE_CONTEXTS,
                &mut problems,
            ),
            metrics: compile(
                &cfg.metric_statements,
                "metric_statements",
                METRIC_CONTEXTS,
                &mut problems,
            ),
            logs: compile(
                &cfg.log_statements,
                "log_statements",
                LOG_CONTEXTS,
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

    pub fn traces(&self, req: &mut ExportTraceServiceRequest) {
        for g in &self.traces {
            for rs in &mut req.resource_spans {
                let res = &mut rs.resource;
                if g.ctx == C::Resource {
                    g.on_resource(res);
                    continue;
                }
                for ss in &mut rs.scope_spans {
                    let scope = &mut ss.scope;
                    if g.ctx == C::Scope {
                        g.on_scope(res, scope);
                        continue;
                    }
                    for span in &mut ss.spans {
                        g.on_span(res, scope, span);
                    }
                }
            }
        }
    }

    pub fn metrics(&self, req: &mut ExportMetricsServiceRequest) {
        for g in &self.metrics {
            let all = g.conditions.is_empty();
            for rm in &mut req.resource_metrics {
                let res = &mut rm.resource;
                if g.ctx == C::Resource {
                    g.on_resource(res);
                    continue;
                }
                for sm in &mut rm.scope_metrics {
                    let scope = &mut sm.scope;
                    match g.ctx {
                        C::Scope => g.on_scope(res, scope),
                        C::Metric => {
                            for m in &mut sm.metrics {
                                if all || g.conditions.eval_metric(res.as_ref(), scope.as_ref(), m)
                                {
                                    g.statements
                                        .iter()
                                        .for_each(|s| s.run_metric(res, scope, m));
                                }
                            }
                        }
                        _ => {
                            for m in &mut sm.metrics {
                                for i in 0..point_count(m) {
                                    let hold = all
                                        || point_at(m, i).is_some_and(|p| {
                                            g.conditions.eval_datapoint(
                                                res.as_ref(),
                                                scope.as_ref(),
                                                m,
                                                p,
                                            )
                                        });
                                    if hold {
                                        g.statements
                                            .iter()
                                            .for_each(|s| s.run_datapoint(res, scope, m, i));
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
        for g in &self.logs {
            for rl in &mut req.resource_logs {
                let res = &mut rl.resource;
                if g.ctx == C::Resource {
                    g.on_resource(res);
                    continue;
                }
                for sl in &mut rl.scope_logs {
                    let scope = &mut sl.scope;
                    if g.ctx == C::Scope {
                        g.on_scope(res, scope);
                        continue;
                    }
                    for r in &mut sl.log_records {
                        g.on_log(res, scope, r);
                    }
                }
            }
        }
    }

    /// Runs the statements on an encoded request without decoding it (see [`wire`]):
    /// `None` when this signal's groups or these bytes need the decoded path.
    fn on_wire(
        &self,
        signal: crate::pdata::Signal,
        bytes: &[u8],
        scratch: &mut wire::Scratch,
    ) -> Option<Vec<u8>> {
        match signal {
            crate::pdata::Signal::Traces => {
                let plan = self.traces_wire.as_ref()?;
                wire::rewrite::<Span>(bytes, plan, &Levels(&self.traces), scratch).ok()
            }
            crate::pdata::Signal::Logs => {
                let plan = self.logs_wire.as_ref()?;
                wire::rewrite::<LogRecord>(bytes, plan, &Levels(&self.logs), scratch).ok()
            }
            crate::pdata::Signal::Metrics => None,
        }
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
    scratch: wire::Scratch,
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
            scratch: wire::Scratch::default(),
        }
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
            if let Some(b) = self.t.on_wire(batch.signal, bytes, &mut self.scratch) {
                batch.payload = Payload::Encoded(b.into());
                out.push(batch);
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
        match &mut batch.payload {
            Payload::Traces(r) => self.t.traces(r),
            Payload::Metrics(r) => self.t.metrics(r),
            Payload::Logs(r) => self.t.logs(r),
            Payload::Encoded(_) => {}
        }
        out.push(batch);
    }
}
