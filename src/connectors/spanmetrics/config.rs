//! The `spanmetrics` connector's settings: the Collector's keys, with its defaults.
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::DurationValue;

/// The reserved dimensions every series has (unless excluded).
pub const DEFAULT_DIMENSIONS: [&str; 4] = ["service.name", "span.name", "span.kind", "status.code"];

/// Upstream's default explicit buckets, in milliseconds.
pub const DEFAULT_BUCKETS_MS: [u64; 16] = [
    2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10_000, 15_000,
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    pub histogram: HistogramConfig,
    /// Extra dimensions on every metric, looked up in span attributes, then resource
    /// attributes, then `default`.
    pub dimensions: Vec<Dimension>,
    /// Extra dimensions on `calls` only.
    pub calls_dimensions: Vec<Dimension>,
    /// Default dimensions to leave out (`service.name`, `span.name`, `span.kind`,
    /// `status.code`).
    pub exclude_dimensions: Vec<String>,
    /// Instrumentation scopes whose name (and version) become dimensions.
    pub include_instrumentation_scope: Vec<String>,
    /// Deprecated upstream (v0.130): a cache of series keys. weir keeps no such cache; the
    /// key has no effect (logged at start).
    pub dimensions_cache_size: Option<usize>,
    /// How many resources are aggregated at once; the least recently seen goes first.
    pub resource_metrics_cache_size: usize,
    /// The resource attributes that tell resources apart (all of them when empty).
    pub resource_metrics_key_attributes: Vec<String>,
    /// `AGGREGATION_TEMPORALITY_CUMULATIVE` (default) or `AGGREGATION_TEMPORALITY_DELTA`.
    pub aggregation_temporality: String,
    pub metrics_flush_interval: DurationValue,
    /// Cumulative: a resource with no spans for this long is forgotten (0: never).
    pub metrics_expiration: DurationValue,
    /// Delta: how many series remember their last flush time (their next start time).
    pub metric_timestamp_cache_size: usize,
    /// Prefix of the metric names (`traces.span.metrics` → `traces.span.metrics.calls`).
    pub namespace: String,
    pub exemplars: ExemplarsConfig,
    pub events: EventsConfig,
    /// Series per metric and resource; past it, new series go to one series with
    /// `otel.metric.overflow=true` (0: no limit).
    pub aggregation_cardinality_limit: i64,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            histogram: HistogramConfig::default(),
            dimensions: Vec::new(),
            calls_dimensions: Vec::new(),
            exclude_dimensions: Vec::new(),
            include_instrumentation_scope: Vec::new(),
            dimensions_cache_size: None,
            resource_metrics_cache_size: 1000,
            resource_metrics_key_attributes: Vec::new(),
            aggregation_temporality: CUMULATIVE.into(),
            metrics_flush_interval: Duration::from_secs(60).into(),
            metrics_expiration: DurationValue::default(),
            metric_timestamp_cache_size: 1000,
            namespace: "traces.span.metrics".into(),
            exemplars: ExemplarsConfig::default(),
            events: EventsConfig::default(),
            aggregation_cardinality_limit: 0,
        }
    }
}

pub const CUMULATIVE: &str = "AGGREGATION_TEMPORALITY_CUMULATIVE";
pub const DELTA: &str = "AGGREGATION_TEMPORALITY_DELTA";

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    pub name: String,
    /// The value when neither the span nor its resource has the attribute; without it the
    /// dimension is left out of that series.
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistogramConfig {
    /// No `duration` metric at all.
    pub disable: bool,
    /// `ms` (default) or `s`.
    pub unit: Option<String>,
    pub explicit: Option<ExplicitConfig>,
    pub exponential: Option<ExponentialConfig>,
    /// Extra dimensions on `duration` only.
    pub dimensions: Vec<Dimension>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExplicitConfig {
    /// Bucket upper bounds as durations (`2ms`, `1s`); upstream's 16 when empty.
    pub buckets: Vec<DurationValue>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExponentialConfig {
    /// Most buckets per sign (0: 160).
    pub max_size: i32,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExemplarsConfig {
    pub enabled: bool,
    /// Most exemplars a point carries per flush (default 5).
    pub max_per_data_point: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub enabled: bool,
    /// Dimensions of the `events` metric, looked up in the event's attributes, then the
    /// span's, then the resource's.
    pub dimensions: Vec<Dimension>,
}

/// The duration unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ms,
    S,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::S => "s",
        }
    }
    /// Nanoseconds per unit.
    pub fn divider(self) -> f64 {
        match self {
            Unit::Ms => 1e6,
            Unit::S => 1e9,
        }
    }
}

impl SpanMetricsConfig {
    pub fn unit(&self) -> Unit {
        match self
            .histogram
            .unit
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("s") => Unit::S,
            _ => Unit::Ms,
        }
    }

    pub fn delta(&self) -> bool {
        self.aggregation_temporality == DELTA
    }

    pub fn max_exemplars(&self) -> usize {
        self.exemplars.max_per_data_point.unwrap_or(5)
    }

    /// The explicit bucket bounds in the configured unit.
    pub fn bounds(&self) -> Vec<f64> {
        let unit = self.unit();
        match self
            .histogram
            .explicit
            .as_ref()
            .filter(|e| !e.buckets.is_empty())
        {
            Some(e) => e
                .buckets
                .iter()
                .map(|d| d.0.as_nanos() as f64 / unit.divider())
                .collect(),
            None => DEFAULT_BUCKETS_MS
                .iter()
                .map(|ms| (*ms as f64 * 1e6) / unit.divider())
                .collect(),
        }
    }

    /// The metric name `name` under the namespace.
    pub fn metric_name(&self, name: &str) -> String {
        if self.namespace.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.namespace)
        }
    }

    /// The default dimensions left after `exclude_dimensions`.
    pub fn default_dimensions(&self) -> Vec<&'static str> {
        DEFAULT_DIMENSIONS
            .iter()
            .copied()
            .filter(|d| !self.exclude_dimensions.iter().any(|x| x == d))
            .collect()
    }

    /// Upstream's checks, with its messages.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut names: Vec<&str> = DEFAULT_DIMENSIONS.to_vec();
        for (i, d) in self.dimensions.iter().enumerate() {
            if names.contains(&d.name.as_str()) {
                errs.push((
                    format!("dimensions[{i}].name"),
                    format!(
                        "failed validating dimensions: duplicate dimension name {}",
                        d.name
                    ),
                ));
            }
            names.push(&d.name);
        }
        for (key, extra) in [
            ("calls_dimensions", &self.calls_dimensions),
            ("histogram.dimensions", &self.histogram.dimensions),
        ] {
            let mut own = names.clone();
            for (i, d) in extra.iter().enumerate() {
                if own.contains(&d.name.as_str()) {
                    errs.push((
                        format!("{key}[{i}].name"),
                        format!(
                            "failed validating dimensions: duplicate dimension name {}",
                            d.name
                        ),
                    ));
                }
                own.push(&d.name);
            }
        }
        for (key, list) in [
            ("dimensions", &self.dimensions),
            ("calls_dimensions", &self.calls_dimensions),
            ("histogram.dimensions", &self.histogram.dimensions),
            ("events.dimensions", &self.events.dimensions),
        ] {
            if list.len() > 4000 {
                errs.push((
                    key.into(),
                    format!("at most 4000 dimensions, got {}", list.len()),
                ));
            }
        }
        if self.events.enabled && self.events.dimensions.is_empty() {
            errs.push((
                "events.dimensions".into(),
                "failed validating event dimensions: no dimensions configured for events".into(),
            ));
        }
        let mut own = names.clone();
        for (i, d) in self.events.dimensions.iter().enumerate() {
            if own.contains(&d.name.as_str()) {
                errs.push((
                    format!("events.dimensions[{i}].name"),
                    format!(
                        "failed validating event dimensions: duplicate dimension name {}",
                        d.name
                    ),
                ));
            }
            own.push(&d.name);
        }
        for (i, d) in self.exclude_dimensions.iter().enumerate() {
            if !DEFAULT_DIMENSIONS.contains(&d.as_str()) {
                errs.push((
                    format!("exclude_dimensions[{i}]"),
                    format!(
                        "{d:?} is not a default dimension; exclude one of: {}",
                        DEFAULT_DIMENSIONS.join(", ")
                    ),
                ));
            }
        }
        if self.histogram.explicit.is_some() && self.histogram.exponential.is_some() {
            errs.push((
                "histogram".into(),
                "use either `explicit` or `exponential` buckets histogram".into(),
            ));
        }
        if let Some(u) = &self.histogram.unit {
            if !matches!(u.to_ascii_lowercase().as_str(), "ms" | "s") {
                errs.push((
                    "histogram.unit".into(),
                    format!("unknown Unit {u:?}, allowed units are \"ms\" and \"s\""),
                ));
            }
        }
        if let Some(e) = &self.histogram.explicit {
            if e.buckets.windows(2).any(|w| w[0] >= w[1]) {
                errs.push((
                    "histogram.explicit.buckets".into(),
                    "must be in increasing order".into(),
                ));
            }
        }
        if let Some(x) = &self.histogram.exponential {
            if x.max_size < 0 {
                errs.push((
                    "histogram.exponential.max_size".into(),
                    format!("must be positive, got {}", x.max_size),
                ));
            }
        }
        if self.metrics_flush_interval.0.is_zero() {
            errs.push((
                "metrics_flush_interval".into(),
                format!(
                    "invalid metrics_flush_interval: {}, the duration should be positive",
                    self.metrics_flush_interval
                ),
            ));
        }
        if self.aggregation_temporality != CUMULATIVE && self.aggregation_temporality != DELTA {
            errs.push((
                "aggregation_temporality".into(),
                format!(
                    "must be {CUMULATIVE} or {DELTA}, got {:?}",
                    self.aggregation_temporality
                ),
            ));
        }
        if self.delta() && self.metric_timestamp_cache_size == 0 {
            errs.push((
                "metric_timestamp_cache_size".into(),
                "invalid delta timestamp cache size: 0, the maximum number of the items in the cache should be positive".into(),
            ));
        }
        if self.aggregation_cardinality_limit < 0 {
            errs.push((
                "aggregation_cardinality_limit".into(),
                format!(
                    "invalid aggregation_cardinality_limit: {}, the limit should be positive",
                    self.aggregation_cardinality_limit
                ),
            ));
        }
        if self.resource_metrics_cache_size == 0 {
            errs.push((
                "resource_metrics_cache_size".into(),
                "must be positive".into(),
            ));
        }
        errs
    }

    /// Keys accepted for compatibility that have no effect in weir.
    pub fn without_effect(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.dimensions_cache_size.is_some() {
            v.push("dimensions_cache_size has no effect in weir (deprecated upstream since v0.130; weir keeps no key cache, aggregation_cardinality_limit bounds the series)".to_string());
        }
        v
    }
}
