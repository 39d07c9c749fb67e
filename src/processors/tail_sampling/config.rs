//! `tail_sampling` settings, with the Collector's keys, defaults and validation messages.
use serde::Deserialize;
use std::time::Duration;

use crate::config::units::{ByteSize, DurationValue};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailSamplingConfig {
    /// How long after a trace's first span to decide (default 30s).
    pub decision_wait: DurationValue,
    /// When > 0, decide this long after the root span arrives, if that is sooner.
    pub decision_wait_after_root_received: DurationValue,
    /// Traces held at once (default 50000); past it the oldest is decided early.
    pub num_traces: u64,
    /// Sizing hint for the trace table (default 0).
    pub expected_new_traces_per_sec: u64,
    /// Stop evaluating policies at the first that samples.
    pub sample_on_first_match: bool,
    pub decision_cache: DecisionCacheConfig,
    /// A trace whose buffered spans pass this many bytes is dropped (0 = no limit).
    pub maximum_trace_size_bytes: u64,
    /// When the table is full, hold ingest (backpressure) instead of deciding the oldest
    /// trace early.
    pub block_on_overflow: bool,
    /// On shutdown, drop traces still waiting instead of deciding them at once.
    pub drop_pending_traces_on_shutdown: bool,
    /// Worker threads the traces are sharded over (default: one per core, at most 8).
    pub num_shards: usize,
    /// weir: budget for the encoded spans held, all traces together (default 512MiB); when
    /// full, the oldest trace is decided early (or ingest waits, with block_on_overflow).
    pub max_buffered_bytes: ByteSize,
    pub policies: Vec<PolicyConfig>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            decision_wait: Duration::from_secs(30).into(),
            decision_wait_after_root_received: Duration::ZERO.into(),
            num_traces: 50_000,
            expected_new_traces_per_sec: 0,
            sample_on_first_match: false,
            decision_cache: DecisionCacheConfig::default(),
            maximum_trace_size_bytes: 0,
            block_on_overflow: false,
            drop_pending_traces_on_shutdown: false,
            num_shards: 0,
            max_buffered_bytes: ByteSize(0),
            policies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Trace ids remembered as sampled, so late spans follow (0 = off).
    pub sampled_cache_size: usize,
    /// Trace ids remembered as not sampled (0 = off).
    pub non_sampled_cache_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    AlwaysSample,
    Latency,
    NumericAttribute,
    Probabilistic,
    StatusCode,
    StringAttribute,
    RateLimiting,
    BytesLimiting,
    SpanCount,
    TraceState,
    TraceFlags,
    BooleanAttribute,
    OttlCondition,
    And,
    Not,
    Drop,
    Composite,
}

/// One policy: `{name, type, <type>: {...}}`. Sub-policies of `and`, `not`, `drop` and
/// `composite` have the same shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: PolicyType,
    #[serde(default)]
    pub latency: Option<LatencyCfg>,
    #[serde(default)]
    pub numeric_attribute: Option<NumericAttributeCfg>,
    #[serde(default)]
    pub probabilistic: Option<ProbabilisticCfg>,
    #[serde(default)]
    pub status_code: Option<StatusCodeCfg>,
    #[serde(default)]
    pub string_attribute: Option<StringAttributeCfg>,
    #[serde(default)]
    pub rate_limiting: Option<RateLimitingCfg>,
    #[serde(default)]
    pub bytes_limiting: Option<BytesLimitingCfg>,
    #[serde(default)]
    pub span_count: Option<SpanCountCfg>,
    #[serde(default)]
    pub trace_state: Option<TraceStateCfg>,
    #[serde(default)]
    pub trace_flags: Option<TraceFlagsCfg>,
    #[serde(default)]
    pub boolean_attribute: Option<BooleanAttributeCfg>,
    #[serde(default)]
    pub ottl_condition: Option<OttlConditionCfg>,
    #[serde(default)]
    pub and: Option<AndCfg>,
    #[serde(default)]
    pub not: Option<NotCfg>,
    #[serde(default)]
    pub drop: Option<DropCfg>,
    #[serde(default)]
    pub composite: Option<CompositeCfg>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyCfg {
    pub threshold_ms: i64,
    pub upper_threshold_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumericAttributeCfg {
    pub key: String,
    pub min_value: Option<i64>,
    pub max_value: Option<i64>,
    pub invert_match: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbabilisticCfg {
    pub hash_salt: String,
    pub sampling_percentage: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusCodeCfg {
    pub status_codes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StringAttributeCfg {
    pub key: String,
    pub values: Vec<String>,
    pub enabled_regex_matching: bool,
    pub cache_max_size: usize,
    pub invert_match: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitingCfg {
    pub spans_per_second: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BytesLimitingCfg {
    pub bytes_per_second: i64,
    pub burst_capacity: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanCountCfg {
    pub min_spans: i32,
    pub max_spans: i32,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceStateCfg {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceFlagsCfg {}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BooleanAttributeCfg {
    pub key: String,
    pub value: bool,
    pub invert_match: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    #[default]
    Propagate,
    Ignore,
    Silent,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OttlConditionCfg {
    pub error_mode: ErrorMode,
    pub span: Vec<String>,
    pub spanevent: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AndCfg {
    pub and_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotCfg {
    pub not_sub_policy: Box<PolicyConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropCfg {
    pub drop_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompositeCfg {
    pub max_total_spans_per_second: i64,
    pub policy_order: Vec<String>,
    pub composite_sub_policy: Vec<PolicyConfig>,
    pub rate_allocation: Vec<RateAllocation>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateAllocation {
    pub policy: String,
    pub percent: i64,
}
