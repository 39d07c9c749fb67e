//! The `routing` connector: sends each resource's data to the pipelines of the first route
//! whose OTTL condition (resource context: `resource.attributes["k"]`, ...) matches, or to
//! `default_pipelines`. The routing connector of the Collector, with its `table` of
//! `{condition, pipelines}`.
//!
//! At run time a [`Router`] sits among a pipeline's outputs: it decodes the batch, splits it by
//! route and hands each part to the target pipelines' inboxes (waiting for room:
//! backpressure). The targets can be repointed by a reload.
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tokio::sync::mpsc;

use crate::config::loader::Body;
use crate::ottl::{Condition, ContextKind};
use crate::pdata::{Batch, Payload, Signal};
use crate::pipeline::registry::{
    BoxFuture, Connector, ConnectorSettings, Decode, Factory, Handles, Stability,
};
use crate::telemetry::metrics::Registry;

pub static FACTORY: Factory = Factory {
    type_name: "routing",
    aliases: &[],
    stability: &[
        (
            Handles::Pair(Signal::Traces, Signal::Traces),
            Stability::Alpha,
        ),
        (
            Handles::Pair(Signal::Metrics, Signal::Metrics),
            Stability::Alpha,
        ),
        (Handles::Pair(Signal::Logs, Signal::Logs), Stability::Alpha),
    ],
    description: "routes each resource's data to pipelines by OTTL condition (e.g. by tenant)",
    decode: Decode::Connector(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ConnectorSettings>> {
    let c = b.decode_checked::<RoutingConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ConnectorSettings for RoutingConfig {
    fn build(&self, id: &str, _registry: &Arc<Registry>) -> Arc<dyn Connector> {
        Arc::new(Router::new(id, self))
    }
    fn named_pipelines(&self) -> Vec<(String, String)> {
        self.targets()
    }
}

impl Connector for Router {
    fn push(&self, batch: Batch) -> BoxFuture<'_, ()> {
        Box::pin(Router::push(self, batch))
    }
    fn set_targets(&self, targets: crate::pipeline::registry::Targets) {
        *self.targets.write().unwrap_or_else(|e| e.into_inner()) = targets;
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub default_pipelines: Vec<String>,
    /// `propagate` (default) | `ignore` | `silent`: what a condition that fails does (a
    /// converter given a value it cannot take): the request is dropped, or the resource goes
    /// to the default pipelines and the next routes are tried, as upstream.
    pub error_mode: Option<String>,
    pub table: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Route {
    /// An OTTL condition in the resource context; `request["header"]` reads the client's
    /// request headers (the receiver needs `include_metadata`).
    pub condition: String,
    /// The same as an OTTL statement, as the current Collector writes it:
    /// `route() where <condition>` (`route()` alone always routes). One of `condition` and
    /// `statement`.
    pub statement: String,
    /// `resource` (default) or `request`: both read the same paths here.
    pub context: Option<String>,
    pub pipelines: Vec<String>,
}

impl Route {
    /// The route's condition, from `condition` or `statement`.
    pub fn condition_text(&self) -> Result<String, String> {
        match (self.condition.is_empty(), self.statement.is_empty()) {
            (false, false) => Err("invalid route: both condition and statement provided".into()),
            (true, true) => Err("invalid route: no condition or statement provided".into()),
            (false, true) => Ok(self.condition.clone()),
            (true, false) => {
                let st = self.statement.trim();
                let rest = st
                    .strip_prefix("route")
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix('('))
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix(')'))
                    .map(str::trim)
                    .ok_or_else(|| {
                        format!("statement {st:?} must be route(), optionally followed by `where <condition>`")
                    })?;
                if rest.is_empty() {
                    return Ok("true".into());
                }
                match rest.strip_prefix("where") {
                    Some(c) if c.starts_with(char::is_whitespace) && !c.trim().is_empty() => {
                        Ok(c.trim().to_string())
                    }
                    _ => Err(format!(
                        "statement {st:?} must be route(), optionally followed by `where <condition>`"
                    )),
                }
            }
        }
    }
}

impl RoutingConfig {
    /// Problems with the table itself (pipeline references are checked with the service).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.table.is_empty() {
            errs.push(("table".into(), "must list at least one route".into()));
        }
        for (i, r) in self.table.iter().enumerate() {
            if let Some(c) = &r.context {
                if c != "resource" && c != "request" {
                    errs.push((
                        format!("table[{i}].context"),
                        format!(
                            "context {c:?} is not supported; use resource (default) or request"
                        ),
                    ));
                }
            }
            let key = if r.statement.is_empty() {
                "condition"
            } else {
                "statement"
            };
            match r.condition_text() {
                Err(e) => errs.push((format!("table[{i}]"), e)),
                Ok(c) => {
                    if let Err(e) = Condition::parse(&c, ContextKind::Resource) {
                        errs.push((format!("table[{i}].{key}"), e.to_string()));
                    }
                }
            }
            if r.pipelines.is_empty() {
                errs.push((
                    format!("table[{i}].pipelines"),
                    "must list at least one pipeline".into(),
                ));
            }
        }
        errs
    }

    /// Every pipeline this connector may send to.
    pub fn targets(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, r) in self.table.iter().enumerate() {
            for (j, p) in r.pipelines.iter().enumerate() {
                out.push((format!("table[{i}].pipelines[{j}]"), p.clone()));
            }
        }
        for (j, p) in self.default_pipelines.iter().enumerate() {
            out.push((format!("default_pipelines[{j}]"), p.clone()));
        }
        out
    }
}

/// Target pipeline id -> its inbox; swapped by a reload.
pub type Targets = Arc<RwLock<BTreeMap<String, mpsc::Sender<Batch>>>>;

pub struct Router {
    pub id: Arc<str>,
    routes: Vec<(Condition, Vec<String>)>,
    default: Vec<String>,
    propagate: bool,
    pub targets: Targets,
    /// When a dropped request was last logged (10 s apart at most).
    logged: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Router {
    pub fn new(id: &str, cfg: &RoutingConfig) -> Router {
        Router {
            id: Arc::from(id),
            routes: cfg
                .table
                .iter()
                .filter_map(|r| {
                    let text = r.condition_text().ok()?;
                    Condition::parse(&text, ContextKind::Resource)
                        .ok()
                        .map(|c| (c, r.pipelines.clone()))
                })
                .collect(),
            default: cfg.default_pipelines.clone(),
            propagate: cfg
                .error_mode
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case("propagate")),
            targets: Arc::new(RwLock::new(BTreeMap::new())),
            logged: std::sync::Mutex::new(None),
        }
    }

    /// The pipelines a resource goes to: the first matching route's, else the default. A
    /// condition that fails sends the resource to the default pipelines too and the next
    /// routes are tried (`ignore`, `silent`); under `propagate` it is `None`: the request is
    /// dropped, as upstream's returned error drops the payload.
    fn route(
        &self,
        resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
        headers: Option<&[(String, String)]>,
    ) -> Option<Vec<String>> {
        let mut to: Vec<String> = Vec::new();
        let add = |to: &mut Vec<String>, ps: &[String]| {
            for p in ps {
                if !to.contains(p) {
                    to.push(p.clone());
                }
            }
        };
        for (c, pipelines) in &self.routes {
            crate::ottl::take_condition_failures();
            let hit = c.eval_resource_request(resource, headers);
            if crate::ottl::take_condition_failures() != [0; 3] {
                if self.propagate {
                    return None;
                }
                add(&mut to, &self.default);
                continue;
            }
            if hit {
                add(&mut to, pipelines);
                return Some(to);
            }
        }
        if to.is_empty() {
            to = self.default.clone();
        }
        Some(to)
    }

    /// Splits `batch` by route and hands each part to its pipelines (waiting for room).
    pub async fn push(&self, mut batch: Batch) {
        if let Err(e) = batch.decode() {
            tracing::error!(connector = %self.id, "dropping {} items: {e}", e.lost);
            if batch.items == 0 {
                return;
            }
        }
        let ctx = batch.context.clone();
        let held = batch.held.clone();
        let headers: Option<&[(String, String)]> = ctx.metadata.as_deref().map(|v| v.as_slice());
        let signal = batch.signal;
        // route (as pipeline list) -> payload
        let mut parts: Vec<(Vec<String>, Payload)> = Vec::new();
        let mut failed = false;
        macro_rules! split {
            ($req:expr, $field:ident, $ty:ident, $variant:ident) => {{
                for item in std::mem::take(&mut $req.$field) {
                    let Some(to) = self.route(item.resource.as_ref(), headers) else {
                        failed = true;
                        break;
                    };
                    match parts.iter_mut().find(|(p, _)| *p == to) {
                        Some((_, Payload::$variant(r))) => r.$field.push(item),
                        _ => parts.push((to, Payload::$variant($ty { $field: vec![item] }))),
                    }
                }
            }};
        }
        use opentelemetry_proto::tonic::collector::{
            logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
            trace::v1::ExportTraceServiceRequest,
        };
        match &mut batch.payload {
            Payload::Traces(r) => split!(r, resource_spans, ExportTraceServiceRequest, Traces),
            Payload::Metrics(r) => {
                split!(r, resource_metrics, ExportMetricsServiceRequest, Metrics)
            }
            Payload::Logs(r) => split!(r, resource_logs, ExportLogsServiceRequest, Logs),
            Payload::Encoded(_) => {}
        }
        if failed {
            let mut last = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10)) {
                tracing::error!(connector = %self.id, "dropping {} {}: a routing condition failed (error_mode: propagate)", batch.items, signal_noun(signal));
                *last = Some(std::time::Instant::now());
            }
            return;
        }
        for (to, payload) in parts {
            let mut b = Batch {
                signal,
                items: 0,
                payload,
                context: ctx.clone(),
                held: held.clone(),
                compressed: None,
            };
            b.recount();
            if to.is_empty() {
                tracing::debug!(connector = %self.id, "{} items matched no route and there is no default", b.items);
                continue;
            }
            let txs: Vec<(String, mpsc::Sender<Batch>)> = {
                let t = self.targets.read().unwrap_or_else(|e| e.into_inner());
                to.iter()
                    .filter_map(|p| t.get(p).map(|tx| (p.clone(), tx.clone())))
                    .collect()
            };
            for (p, tx) in txs {
                if tx.send(b.clone()).await.is_err() {
                    tracing::error!(connector = %self.id, "pipeline {p} has stopped; dropped {} {}", b.items, signal_noun(signal));
                }
            }
        }
    }
}

fn signal_noun(s: Signal) -> &'static str {
    s.item_noun()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> Route {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    #[test]
    fn a_statement_is_route_where_condition() {
        assert_eq!(
            route("statement: route() where resource.attributes[\"x\"] == \"y\"").condition_text(),
            Ok("resource.attributes[\"x\"] == \"y\"".to_string())
        );
        assert_eq!(
            route("statement: route()").condition_text(),
            Ok("true".to_string())
        );
        assert_eq!(
            route("statement: drop() where true").condition_text(),
            Err("statement \"drop() where true\" must be route(), optionally followed by `where <condition>`".to_string())
        );
        assert_eq!(
            route("{condition: 'true', statement: route()}").condition_text(),
            Err("invalid route: both condition and statement provided".to_string())
        );
        assert_eq!(
            route("pipelines: [logs/x]").condition_text(),
            Err("invalid route: no condition or statement provided".to_string())
        );
        let cfg: RoutingConfig = serde_yaml::from_str(
            "table: [{statement: 'route() where resource.attributes[\"x\"] ==', pipelines: [logs/a]}]",
        )
        .expect("yaml");
        let errs = cfg.validate();
        assert_eq!(errs[0].0, "table[0].statement", "{errs:?}");
    }
}

#[cfg(test)]
mod error_mode_tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    #[test]
    fn a_failing_condition_goes_to_the_default_or_drops_as_upstream() {
        let cfg = |mode: &str| -> RoutingConfig {
            serde_yaml::from_str(&format!(
                r#"
{mode}
default_pipelines: [traces/default]
table:
  - condition: 'SHA256(attributes["tenant"]) == "nothing"'
    pipelines: [traces/a]
  - condition: 'attributes["env"] == "prod"'
    pipelines: [traces/prod]
"#
            ))
            .unwrap()
        };
        let prod = Resource {
            attributes: vec![KeyValue {
                key: "env".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("prod".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        // ignore / silent: the failing route sends to the default, the next route still
        // matches (upstream's routing connector does both).
        for mode in ["error_mode: ignore", "error_mode: silent"] {
            let r = Router::new("routing", &cfg(mode));
            assert_eq!(
                r.route(Some(&prod), None),
                Some(vec![
                    "traces/default".to_string(),
                    "traces/prod".to_string()
                ])
            );
            assert_eq!(
                r.route(None, None),
                Some(vec!["traces/default".to_string()])
            );
        }
        // propagate (the default): the request is dropped.
        for mode in ["", "error_mode: propagate"] {
            let r = Router::new("routing", &cfg(mode));
            assert_eq!(r.route(Some(&prod), None), None, "{mode:?}");
        }
    }
}
