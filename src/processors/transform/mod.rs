//! The `transform` processor: OTTL statements that edit spans, span events, metrics, data
//! points and log records in place, with the Collector's config (processor/transformprocessor):
//! `trace_statements`, `metric_statements`, `log_statements`, each a list of groups
//! (`context`, `conditions`, `statements`, `error_mode`) or of plain statements whose context
//! is inferred from their paths. Groups run in order; a group's statements run in order on
//! each item of its context whose group conditions (ORed; none means all) hold, each statement
//! only where its own `where` clause holds.
#[cfg(test)]
mod tests;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
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

#[derive(Debug, Default)]
pub struct Transform {
    traces: Vec<Group>,
    metrics: Vec<Group>,
    logs: Vec<Group>,
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
        let t = Transform {
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
        if problems.is_empty() {
            Ok(t)
        } else {
            Err(problems)
        }
    }

    pub fn traces(&self, req: &mut ExportTraceServiceRequest) {
        for g in &self.traces {
            let all = g.conditions.is_empty();
            for rs in &mut req.resource_spans {
                let res = &mut rs.resource;
                if g.ctx == C::Resource {
                    if all || g.conditions.eval_resource(res.as_ref()) {
                        g.statements.iter().for_each(|s| s.run_resource(res));
                    }
                    continue;
                }
                for ss in &mut rs.scope_spans {
                    let scope = &mut ss.scope;
                    match g.ctx {
                        C::Scope => {
                            if all || g.conditions.eval_scope(res.as_ref(), scope.as_ref()) {
                                g.statements.iter().for_each(|s| s.run_scope(res, scope));
                            }
                        }
                        C::Span => {
                            for span in &mut ss.spans {
                                if all || g.conditions.eval_span(res.as_ref(), scope.as_ref(), span)
                                {
                                    g.statements
                                        .iter()
                                        .for_each(|s| s.run_span(res, scope, span));
                                }
                            }
                        }
                        _ => {
                            for span in &mut ss.spans {
                                for i in 0..span.events.len() {
                                    let hold = all
                                        || g.conditions.eval_span_event(
                                            res.as_ref(),
                                            scope.as_ref(),
                                            span,
                                            &span.events[i],
                                        );
                                    if hold {
                                        g.statements
                                            .iter()
                                            .for_each(|s| s.run_span_event(res, scope, span, i));
                                    }
                                }
                            }
                        }
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
                    if all || g.conditions.eval_resource(res.as_ref()) {
                        g.statements.iter().for_each(|s| s.run_resource(res));
                    }
                    continue;
                }
                for sm in &mut rm.scope_metrics {
                    let scope = &mut sm.scope;
                    match g.ctx {
                        C::Scope => {
                            if all || g.conditions.eval_scope(res.as_ref(), scope.as_ref()) {
                                g.statements.iter().for_each(|s| s.run_scope(res, scope));
                            }
                        }
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
            let all = g.conditions.is_empty();
            for rl in &mut req.resource_logs {
                let res = &mut rl.resource;
                if g.ctx == C::Resource {
                    if all || g.conditions.eval_resource(res.as_ref()) {
                        g.statements.iter().for_each(|s| s.run_resource(res));
                    }
                    continue;
                }
                for sl in &mut rl.scope_logs {
                    let scope = &mut sl.scope;
                    if g.ctx == C::Scope {
                        if all || g.conditions.eval_scope(res.as_ref(), scope.as_ref()) {
                            g.statements.iter().for_each(|s| s.run_scope(res, scope));
                        }
                        continue;
                    }
                    for r in &mut sl.log_records {
                        if all || g.conditions.eval_log(res.as_ref(), scope.as_ref(), r) {
                            g.statements.iter().for_each(|s| s.run_log(res, scope, r));
                        }
                    }
                }
            }
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
        }
    }
}

impl Processor for TransformProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if !self.t.acts_on(batch.signal) {
            out.push(batch);
            return;
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
