//! `cardinality_limiter` settings.
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::DurationValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Fold new series over the limit into one `otel_metric_overflow="true"` series per metric.
    #[default]
    Overflow,
    /// Drop points of new series over the limit.
    Drop,
    /// Remove `strip_labels` from points of new series over the limit (folding them into the
    /// series without those labels).
    StripLabels,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Overflow => "overflow",
            Action::Drop => "drop",
            Action::StripLabels => "strip_labels",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// Each tenant has its own budget.
    #[default]
    Tenant,
    /// One budget shared by all tenants.
    Global,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultLimit {
    pub max_series_per_metric: usize,
    pub max_series_per_tenant: usize,
}

impl Default for DefaultLimit {
    fn default() -> Self {
        DefaultLimit {
            max_series_per_metric: 10_000,
            max_series_per_tenant: 200_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchRule {
    /// A glob on the metric name (`*` any run, `?` one character).
    pub metric: Option<String>,
    /// A regex on the metric name (anchored: it must match the whole name).
    pub regex: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    #[serde(rename = "match")]
    pub matcher: MatchRule,
    pub max_series: usize,
    #[serde(default)]
    pub per: Per,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardinalityLimiterConfig {
    /// A series unseen this long stops counting (default 10m).
    pub window: DurationValue,
    pub action: Action,
    pub strip_labels: Vec<String>,
    pub default_limit: DefaultLimit,
    /// First match wins; metrics matching none get `default_limit.max_series_per_metric`.
    pub limits: Vec<LimitRule>,
    /// Limited series remembered for folding (overflow, strip_labels) at most; past it their
    /// points are dropped and counted (default 1000000).
    pub max_tracked_overflow_series: usize,
}

impl Default for CardinalityLimiterConfig {
    fn default() -> Self {
        CardinalityLimiterConfig {
            window: Duration::from_secs(600).into(),
            action: Action::Overflow,
            strip_labels: Vec::new(),
            default_limit: DefaultLimit::default(),
            limits: Vec::new(),
            max_tracked_overflow_series: 1_000_000,
        }
    }
}

impl CardinalityLimiterConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.window.0.is_zero() {
            errs.push(("window".into(), "must be greater than 0".into()));
        }
        if self.action == Action::StripLabels && self.strip_labels.is_empty() {
            errs.push((
                "strip_labels".into(),
                "action strip_labels needs the labels to strip, e.g. [user_id]".into(),
            ));
        }
        if self.action != Action::StripLabels && !self.strip_labels.is_empty() {
            errs.push((
                "strip_labels".into(),
                format!(
                    "only used with action strip_labels (action is {})",
                    self.action.as_str()
                ),
            ));
        }
        if self.default_limit.max_series_per_metric == 0 {
            errs.push((
                "default_limit.max_series_per_metric".into(),
                "must be greater than 0".into(),
            ));
        }
        if self.default_limit.max_series_per_tenant == 0 {
            errs.push((
                "default_limit.max_series_per_tenant".into(),
                "must be greater than 0".into(),
            ));
        }
        for (i, l) in self.limits.iter().enumerate() {
            let at = format!("limits[{i}]");
            match (&l.matcher.metric, &l.matcher.regex) {
                (Some(_), Some(_)) => errs.push((
                    format!("{at}.match"),
                    "set either metric (a glob) or regex, not both".into(),
                )),
                (None, None) => errs.push((
                    format!("{at}.match"),
                    "needs metric (a glob like \"http_*\") or regex".into(),
                )),
                (None, Some(r)) => {
                    if let Err(e) = regex::Regex::new(&format!("^(?:{r})$")) {
                        errs.push((
                            format!("{at}.match.regex"),
                            format!("invalid regex {r:?}: {e}"),
                        ));
                    }
                }
                (Some(g), None) if g.is_empty() => {
                    errs.push((format!("{at}.match.metric"), "must not be empty".into()))
                }
                _ => {}
            }
            if l.max_series == 0 {
                errs.push((format!("{at}.max_series"), "must be greater than 0".into()));
            }
        }
        errs
    }
}
