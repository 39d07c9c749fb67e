//! The `filter` processor's config, with the Collector's keys (processor/filterprocessor):
//! the nested OTTL form (`traces.span`, `metrics.datapoint`, `logs.log_record`, ...) and the
//! flat form with context inference (`trace_conditions`, `metric_conditions`,
//! `log_conditions`: a list of strings, or a list of `{context, conditions, error_mode}`).
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConditions {
    pub resource: Vec<String>,
    pub span: Vec<String>,
    pub spanevent: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConditions {
    pub resource: Vec<String>,
    pub metric: Vec<String>,
    pub datapoint: Vec<String>,
    /// The legacy match form.
    pub include: Option<super::legacy::MetricMatchConfig>,
    pub exclude: Option<super::legacy::MetricMatchConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConditions {
    pub resource: Vec<String>,
    pub log_record: Vec<String>,
    /// The legacy match form.
    pub include: Option<super::legacy::LogMatchConfig>,
    pub exclude: Option<super::legacy::LogMatchConfig>,
}

/// One entry of a flat list: a condition whose context is inferred from its paths, or a
/// group with an explicit context.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConditionEntry {
    Basic(String),
    Advanced(ConditionGroup),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionGroup {
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub conditions: Vec<String>,
    #[serde(default)]
    pub error_mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// `ignore` (the default), `silent` or `propagate`.
    pub error_mode: Option<String>,
    pub traces: TracesConditions,
    pub metrics: MetricsConditions,
    pub logs: LogsConditions,
    pub trace_conditions: Vec<ConditionEntry>,
    pub metric_conditions: Vec<ConditionEntry>,
    pub log_conditions: Vec<ConditionEntry>,
    /// The legacy span match form.
    pub spans: Option<super::legacy::SpanFilter>,
    /// Profiles: weir has no profiles signal.
    pub profile_conditions: Option<serde_yaml::Value>,
    pub profiles: Option<serde_yaml::Value>,
}

/// Upstream's error modes, case-insensitive (`pkg/ottl/config.go`).
pub fn check_error_mode(mode: &str) -> Result<(), String> {
    match mode.to_ascii_lowercase().as_str() {
        "ignore" | "silent" | "propagate" => Ok(()),
        _ => Err(format!("unknown error mode {mode}")),
    }
}
