//! Sampling policies: compiled from config once, evaluated on a whole trace.
//!
//! Semantics follow the Collector's tail sampling processor: string, numeric and boolean
//! attribute policies look at resource and span attributes; latency spans the earliest start
//! to the latest end; `invert_match` yields the "inverted" decisions that the final rule
//! treats specially; `drop` wins over everything.
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::config::{ErrorMode, PolicyConfig, PolicyType};
use crate::ottl::{ConditionSet, ContextKind};

/// What one policy says about one trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Sampled,
    NotSampled,
    /// `invert_match` policy found no match: sample unless another policy said NotSampled.
    InvertSampled,
    /// `invert_match` policy found a match: do not sample, whatever else says.
    InvertNotSampled,
    /// A `drop` policy matched: never sample.
    Dropped,
}

/// One span of a trace with the resource it came with.
pub struct SpanRef<'a> {
    pub resource: Option<&'a Resource>,
    pub scope: Option<&'a opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
    pub span: &'a Span,
}

/// A decoded trace, as policies see it.
pub struct TraceView<'a> {
    pub trace_id: &'a [u8],
    pub spans: Vec<SpanRef<'a>>,
    /// Encoded size of the trace's spans.
    pub bytes: usize,
}

/// Cloning a policy shares its rate state (`rate_limiting`, `bytes_limiting`, `composite`), so
/// every shard thread holds its own copy and the limits still hold for the processor as a
/// whole. The lock is taken once per trace decision, never per span.
#[derive(Debug, Clone)]
enum Kind {
    Always,
    Latency {
        lo: i64,
        hi: i64,
    },
    Numeric {
        key: String,
        min: i64,
        max: i64,
        invert: bool,
    },
    Probabilistic {
        salt: String,
        threshold: u64,
    },
    Status {
        codes: Vec<i32>,
    },
    StringAttr {
        key: String,
        values: Vec<String>,
        regexes: Vec<regex::Regex>,
        invert: bool,
    },
    RateLimit {
        per_sec: i64,
        state: Arc<Mutex<(u64, i64)>>,
    },
    BytesLimit {
        rate: f64,
        burst: f64,
        state: Arc<Mutex<(f64, Option<Instant>)>>,
    },
    SpanCount {
        min: i32,
        max: i32,
    },
    TraceState {
        key: String,
        values: Vec<String>,
    },
    TraceFlags,
    Bool {
        key: String,
        value: bool,
        invert: bool,
    },
    Ottl {
        span: ConditionSet,
        event: ConditionSet,
        /// `error_mode: propagate`: a condition that fails ends the evaluation, not sampled
        /// (upstream returns the error with NotSampled); otherwise it is false.
        propagate: bool,
    },
    And(Vec<Policy>),
    Not(Box<Policy>),
    Drop(Vec<Policy>),
    Composite {
        max_total: i64,
        state: Arc<Mutex<(u64, Vec<i64>)>>,
        subs: Vec<(Policy, i64)>,
    },
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    kind: Kind,
}

/// A config problem: (path inside the policy list, message).
pub type Problem = (String, String);

fn need<'a, T>(v: &'a Option<T>, path: &str, key: &str) -> Result<&'a T, Problem> {
    v.as_ref().ok_or_else(|| {
        (
            path.to_string(),
            format!("policy of type {key} needs a `{key}` section"),
        )
    })
}

fn unix_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// FNV-1a 64 over salt then trace id, as upstream hashes for `probabilistic`, so every
/// instance (weir or Collector) makes the same decision for the same trace id.
pub fn hash_trace_id(salt: &str, id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.as_bytes().iter().chain(id) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn threshold(percent: f64) -> u64 {
    let ratio = (percent / 100.0).clamp(0.0, 1.0);
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * u64::MAX as f64) as u64
    }
}

impl Policy {
    /// Compiles and validates one policy; `path` names it in errors
    /// (e.g. `policies[2]`).
    pub fn compile(cfg: &PolicyConfig, path: &str) -> Result<Policy, Problem> {
        let at = |k: &str| format!("{path}.{k}");
        let kind = match cfg.kind {
            PolicyType::AlwaysSample => Kind::Always,
            PolicyType::Latency => {
                let c = need(&cfg.latency, path, "latency")?;
                if c.upper_threshold_ms != 0 && c.upper_threshold_ms < c.threshold_ms {
                    return Err((
                        at("latency.upper_threshold_ms"),
                        format!(
                            "policy {:?}: upper_threshold_ms ({}) must be greater than threshold_ms ({})",
                            cfg.name, c.upper_threshold_ms, c.threshold_ms
                        ),
                    ));
                }
                Kind::Latency {
                    lo: c.threshold_ms,
                    hi: c.upper_threshold_ms,
                }
            }
            PolicyType::NumericAttribute => {
                let c = need(&cfg.numeric_attribute, path, "numeric_attribute")?;
                if c.key.is_empty() {
                    return Err((
                        at("numeric_attribute.key"),
                        format!("policy {:?}: key is required", cfg.name),
                    ));
                }
                if c.min_value.is_none() && c.max_value.is_none() {
                    return Err((
                        at("numeric_attribute"),
                        format!(
                            "policy {:?}: numeric_attribute needs min_value or max_value (or both)",
                            cfg.name
                        ),
                    ));
                }
                let min = c.min_value.unwrap_or(i64::MIN);
                let max = c.max_value.unwrap_or(i64::MAX);
                if min > max {
                    return Err((
                        at("numeric_attribute.min_value"),
                        format!(
                            "policy {:?}: min_value ({min}) must not be greater than max_value ({max})",
                            cfg.name
                        ),
                    ));
                }
                Kind::Numeric {
                    key: c.key.clone(),
                    min,
                    max,
                    invert: c.invert_match,
                }
            }
            PolicyType::Probabilistic => {
                let c = need(&cfg.probabilistic, path, "probabilistic")?;
                if !(0.0..=100.0).contains(&c.sampling_percentage) {
                    return Err((
                        at("probabilistic.sampling_percentage"),
                        format!(
                            "policy {:?}: sampling_percentage must be between 0 and 100, got {}",
                            cfg.name, c.sampling_percentage
                        ),
                    ));
                }
                Kind::Probabilistic {
                    salt: if c.hash_salt.is_empty() {
                        "default-hash-seed".into()
                    } else {
                        c.hash_salt.clone()
                    },
                    threshold: threshold(c.sampling_percentage),
                }
            }
            PolicyType::StatusCode => {
                let c = need(&cfg.status_code, path, "status_code")?;
                if c.status_codes.is_empty() {
                    return Err((
                        at("status_code.status_codes"),
                        format!(
                            "policy {:?}: status_codes must list at least one of OK, ERROR, UNSET",
                            cfg.name
                        ),
                    ));
                }
                let mut codes = Vec::new();
                for (i, s) in c.status_codes.iter().enumerate() {
                    codes.push(match s.as_str() {
                        "UNSET" => 0,
                        "OK" => 1,
                        "ERROR" => 2,
                        other => {
                            return Err((
                                at(&format!("status_code.status_codes[{i}]")),
                                format!("policy {:?}: unknown status code {other:?}; expected OK, ERROR or UNSET", cfg.name),
                            ))
                        }
                    });
                }
                Kind::Status { codes }
            }
            PolicyType::StringAttribute => {
                let c = need(&cfg.string_attribute, path, "string_attribute")?;
                if c.key.is_empty() {
                    return Err((
                        at("string_attribute.key"),
                        format!("policy {:?}: key is required", cfg.name),
                    ));
                }
                let mut regexes = Vec::new();
                if c.enabled_regex_matching {
                    for (i, v) in c.values.iter().enumerate() {
                        regexes.push(regex::Regex::new(v).map_err(|e| {
                            (
                                at(&format!("string_attribute.values[{i}]")),
                                format!("policy {:?}: invalid regex {v:?}: {e}", cfg.name),
                            )
                        })?);
                    }
                }
                Kind::StringAttr {
                    key: c.key.clone(),
                    values: c.values.clone(),
                    regexes,
                    invert: c.invert_match,
                }
            }
            PolicyType::RateLimiting => {
                let c = need(&cfg.rate_limiting, path, "rate_limiting")?;
                if c.spans_per_second <= 0 {
                    return Err((
                        at("rate_limiting.spans_per_second"),
                        format!(
                            "policy {:?}: spans_per_second must be greater than 0",
                            cfg.name
                        ),
                    ));
                }
                Kind::RateLimit {
                    per_sec: c.spans_per_second,
                    state: Arc::new(Mutex::new((0, 0))),
                }
            }
            PolicyType::BytesLimiting => {
                let c = need(&cfg.bytes_limiting, path, "bytes_limiting")?;
                if c.bytes_per_second <= 0 {
                    return Err((
                        at("bytes_limiting.bytes_per_second"),
                        format!(
                            "policy {:?}: bytes_per_second must be greater than 0",
                            cfg.name
                        ),
                    ));
                }
                let burst = if c.burst_capacity > 0 {
                    c.burst_capacity as f64
                } else {
                    2.0 * c.bytes_per_second as f64
                };
                Kind::BytesLimit {
                    rate: c.bytes_per_second as f64,
                    burst,
                    state: Arc::new(Mutex::new((burst, None))),
                }
            }
            PolicyType::SpanCount => {
                let c = need(&cfg.span_count, path, "span_count")?;
                if c.max_spans != 0 && c.max_spans < c.min_spans {
                    return Err((
                        at("span_count.max_spans"),
                        format!(
                            "policy {:?}: max_spans ({}) must be 0 or at least min_spans ({})",
                            cfg.name, c.max_spans, c.min_spans
                        ),
                    ));
                }
                Kind::SpanCount {
                    min: c.min_spans,
                    max: c.max_spans,
                }
            }
            PolicyType::TraceState => {
                let c = need(&cfg.trace_state, path, "trace_state")?;
                if c.key.is_empty() || c.values.is_empty() {
                    return Err((
                        at("trace_state"),
                        format!(
                            "policy {:?}: trace_state needs a key and at least one value",
                            cfg.name
                        ),
                    ));
                }
                Kind::TraceState {
                    key: c.key.clone(),
                    values: c.values.clone(),
                }
            }
            PolicyType::TraceFlags => Kind::TraceFlags,
            PolicyType::BooleanAttribute => {
                let c = need(&cfg.boolean_attribute, path, "boolean_attribute")?;
                if c.key.is_empty() {
                    return Err((
                        at("boolean_attribute.key"),
                        format!("policy {:?}: key is required", cfg.name),
                    ));
                }
                Kind::Bool {
                    key: c.key.clone(),
                    value: c.value,
                    invert: c.invert_match,
                }
            }
            PolicyType::OttlCondition => {
                let c = need(&cfg.ottl_condition, path, "ottl_condition")?;
                if c.span.is_empty() && c.spanevent.is_empty() {
                    return Err((
                        at("ottl_condition"),
                        format!(
                            "policy {:?}: ottl_condition needs span or spanevent conditions",
                            cfg.name
                        ),
                    ));
                }
                let propagate = matches!(c.error_mode, ErrorMode::Propagate);
                let span = ConditionSet::parse_all(&c.span, ContextKind::Span).map_err(|e| {
                    (
                        at("ottl_condition.span"),
                        format!("policy {:?}: {e}", cfg.name),
                    )
                })?;
                let event =
                    ConditionSet::parse_all(&c.spanevent, ContextKind::SpanEvent).map_err(|e| {
                        (
                            at("ottl_condition.spanevent"),
                            format!("policy {:?}: {e}", cfg.name),
                        )
                    })?;
                Kind::Ottl {
                    span,
                    event,
                    propagate,
                }
            }
            PolicyType::And => {
                let c = need(&cfg.and, path, "and")?;
                if c.and_sub_policy.is_empty() {
                    return Err((
                        at("and.and_sub_policy"),
                        format!("policy {:?}: and_sub_policy must not be empty", cfg.name),
                    ));
                }
                Kind::And(compile_list(&c.and_sub_policy, &at("and.and_sub_policy"))?)
            }
            PolicyType::Drop => {
                let c = need(&cfg.drop, path, "drop")?;
                if c.drop_sub_policy.is_empty() {
                    return Err((
                        at("drop.drop_sub_policy"),
                        format!("policy {:?}: drop_sub_policy must not be empty", cfg.name),
                    ));
                }
                Kind::Drop(compile_list(
                    &c.drop_sub_policy,
                    &at("drop.drop_sub_policy"),
                )?)
            }
            PolicyType::Not => {
                let c = need(&cfg.not, path, "not")?;
                Kind::Not(Box::new(Policy::compile(
                    &c.not_sub_policy,
                    &at("not.not_sub_policy"),
                )?))
            }
            PolicyType::Composite => {
                let c = need(&cfg.composite, path, "composite")?;
                if c.max_total_spans_per_second <= 0 {
                    return Err((
                        at("composite.max_total_spans_per_second"),
                        format!(
                            "policy {:?}: max_total_spans_per_second must be greater than 0",
                            cfg.name
                        ),
                    ));
                }
                let mut subs = Vec::new();
                let order: Vec<&String> = if c.policy_order.is_empty() {
                    c.composite_sub_policy.iter().map(|p| &p.name).collect()
                } else {
                    c.policy_order.iter().collect()
                };
                for (i, name) in order.iter().enumerate() {
                    let Some((j, sub)) = c
                        .composite_sub_policy
                        .iter()
                        .enumerate()
                        .find(|(_, p)| &p.name == *name)
                    else {
                        return Err((
                            at(&format!("composite.policy_order[{i}]")),
                            format!("policy {:?}: policy_order names {name:?}, which is not in composite_sub_policy", cfg.name),
                        ));
                    };
                    let alloc = c
                        .rate_allocation
                        .iter()
                        .find(|r| &r.policy == *name)
                        .map(|r| c.max_total_spans_per_second * r.percent / 100)
                        .unwrap_or(c.max_total_spans_per_second);
                    subs.push((
                        Policy::compile(sub, &at(&format!("composite.composite_sub_policy[{j}]")))?,
                        alloc,
                    ));
                }
                let total: i64 = c.rate_allocation.iter().map(|r| r.percent).sum();
                if total > 100 {
                    return Err((
                        at("composite.rate_allocation"),
                        format!("policy {:?}: rate_allocation percents add up to {total}, more than 100", cfg.name),
                    ));
                }
                Kind::Composite {
                    max_total: c.max_total_spans_per_second,
                    state: Arc::new(Mutex::new((0, vec![0; subs.len()]))),
                    subs,
                }
            }
        };
        Ok(Policy {
            name: cfg.name.clone(),
            kind,
        })
    }

    /// Evaluates this policy on a trace.
    pub fn evaluate(&mut self, t: &TraceView<'_>) -> Decision {
        use Decision::*;
        let yes = |b: bool| if b { Sampled } else { NotSampled };
        match &mut self.kind {
            Kind::Always => Sampled,
            Kind::Latency { lo, hi } => {
                let start = t
                    .spans
                    .iter()
                    .map(|s| s.span.start_time_unix_nano)
                    .min()
                    .unwrap_or(0);
                let end = t
                    .spans
                    .iter()
                    .map(|s| s.span.end_time_unix_nano)
                    .max()
                    .unwrap_or(0);
                let ms = (end.saturating_sub(start) / 1_000_000) as i64;
                yes(if *hi == 0 {
                    ms >= *lo
                } else {
                    ms >= *lo && ms <= *hi
                })
            }
            Kind::Numeric {
                key,
                min,
                max,
                invert,
            } => {
                let hit = any_attr(t, key, |v| match v {
                    Value::IntValue(i) => *i >= *min && *i <= *max,
                    Value::DoubleValue(d) => *d >= *min as f64 && *d <= *max as f64,
                    _ => false,
                });
                inverted(hit, *invert)
            }
            Kind::Probabilistic { salt, threshold } => {
                yes(hash_trace_id(salt, t.trace_id) <= *threshold)
            }
            Kind::Status { codes } => yes(t.spans.iter().any(|s| {
                let c = s.span.status.as_ref().map(|st| st.code).unwrap_or(0);
                codes.contains(&c)
            })),
            Kind::StringAttr {
                key,
                values,
                regexes,
                invert,
            } => {
                let hit = any_attr(t, key, |v| match v {
                    Value::StringValue(s) => {
                        if regexes.is_empty() {
                            values.iter().any(|x| x == s)
                        } else {
                            regexes.iter().any(|r| r.is_match(s))
                        }
                    }
                    _ => false,
                });
                inverted(hit, *invert)
            }
            Kind::RateLimit { per_sec, state } => {
                let now = unix_second();
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                let (second, used) = &mut *st;
                if *second != now {
                    *second = now;
                    *used = 0;
                }
                let n = t.spans.len() as i64;
                if *used + n <= *per_sec {
                    *used += n;
                    Sampled
                } else {
                    NotSampled
                }
            }
            Kind::BytesLimit { rate, burst, state } => {
                let now = Instant::now();
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                let (tokens, last) = &mut *st;
                if let Some(l) = last {
                    *tokens = (*tokens + now.duration_since(*l).as_secs_f64() * *rate).min(*burst);
                }
                *last = Some(now);
                let need = t.bytes as f64;
                if need <= *tokens {
                    *tokens -= need;
                    Sampled
                } else {
                    NotSampled
                }
            }
            Kind::SpanCount { min, max } => {
                let n = t.spans.len() as i32;
                yes(n >= *min && (*max == 0 || n <= *max))
            }
            Kind::TraceState { key, values } => yes(t.spans.iter().any(|s| {
                s.span.trace_state.split(',').any(|kv| {
                    kv.trim()
                        .split_once('=')
                        .is_some_and(|(k, v)| k == key && values.iter().any(|x| x == v))
                })
            })),
            Kind::TraceFlags => yes(t.spans.iter().any(|s| s.span.flags & 1 == 1)),
            Kind::Bool { key, value, invert } => {
                let hit = any_attr(t, key, |v| matches!(v, Value::BoolValue(b) if b == value));
                inverted(hit, *invert)
            }
            Kind::Ottl {
                span,
                event,
                propagate,
            } => {
                crate::ottl::take_condition_failures();
                for s in &t.spans {
                    let hit = span.eval_span(s.resource, s.scope, s.span)
                        || s.span
                            .events
                            .iter()
                            .any(|e| event.eval_span_event(s.resource, s.scope, s.span, e));
                    if *propagate && crate::ottl::take_condition_failures() != [0; 3] {
                        POLICY_FAILED.with(|f| f.set(true));
                        return NotSampled;
                    }
                    if hit {
                        return Sampled;
                    }
                }
                NotSampled
            }
            Kind::And(subs) => {
                for p in subs.iter_mut() {
                    match p.evaluate(t) {
                        Sampled | InvertSampled => {}
                        _ => return NotSampled,
                    }
                }
                Sampled
            }
            Kind::Not(p) => {
                // A sub-policy that failed (an OTTL condition under propagate) is not sampled,
                // and its failure is not inverted into a sample.
                let before = POLICY_FAILED.with(|f| f.replace(false));
                let d = p.evaluate(t);
                let failed = POLICY_FAILED.with(|f| f.get());
                POLICY_FAILED.with(|f| f.set(before || failed));
                match d {
                    _ if failed => NotSampled,
                    Sampled | InvertSampled => NotSampled,
                    _ => Sampled,
                }
            }
            Kind::Drop(subs) => {
                for p in subs.iter_mut() {
                    match p.evaluate(t) {
                        Sampled | InvertSampled => {}
                        _ => return NotSampled,
                    }
                }
                Dropped
            }
            Kind::Composite {
                max_total,
                state,
                subs,
            } => {
                let n = t.spans.len() as i64;
                for (i, (p, alloc)) in subs.iter_mut().enumerate() {
                    if matches!(p.evaluate(t), Sampled | InvertSampled) {
                        let now = unix_second();
                        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                        let (second, used) = &mut *st;
                        if *second != now {
                            *second = now;
                            used.iter_mut().for_each(|u| *u = 0);
                        }
                        let total: i64 = used.iter().sum();
                        let Some(mine) = used.get_mut(i) else {
                            return NotSampled;
                        };
                        if *mine + n <= *alloc && total + n <= *max_total {
                            *mine += n;
                            return Sampled;
                        }
                        return NotSampled;
                    }
                }
                NotSampled
            }
        }
    }
}

fn inverted(hit: bool, invert: bool) -> Decision {
    match (invert, hit) {
        (false, true) => Decision::Sampled,
        (false, false) => Decision::NotSampled,
        (true, true) => Decision::InvertNotSampled,
        (true, false) => Decision::InvertSampled,
    }
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// Whether any span's or resource's attribute `key` satisfies `f`.
fn any_attr(t: &TraceView<'_>, key: &str, f: impl Fn(&Value) -> bool) -> bool {
    t.spans.iter().any(|s| {
        find(&s.span.attributes, key).is_some_and(&f)
            || s.resource
                .and_then(|r| find(&r.attributes, key))
                .is_some_and(&f)
    })
}

pub fn compile_list(cfgs: &[PolicyConfig], path: &str) -> Result<Vec<Policy>, Problem> {
    cfgs.iter()
        .enumerate()
        .map(|(i, c)| Policy::compile(c, &format!("{path}[{i}]")))
        .collect()
}

/// The final decision over all top-level policies, as upstream makes it: a drop wins; an
/// inverted non-match vetoes; then any sample samples; an inverted match samples unless a
/// policy said no.
pub fn decide(
    policies: &mut [Policy],
    t: &TraceView<'_>,
    first_match: bool,
) -> (bool, Vec<(usize, Decision)>) {
    decide_timed(policies, t, first_match, &mut |_, _| {})
}

/// [`decide`], reporting how long each policy took (`timing(policy index, duration)`).
pub fn decide_timed(
    policies: &mut [Policy],
    t: &TraceView<'_>,
    first_match: bool,
    timing: &mut dyn FnMut(usize, std::time::Duration),
) -> (bool, Vec<(usize, Decision)>) {
    let mut seen = Vec::with_capacity(policies.len());
    for (i, p) in policies.iter_mut().enumerate() {
        let started = Instant::now();
        let d = p.evaluate(t);
        timing(i, started.elapsed());
        seen.push((i, d));
        if first_match && d == Decision::Sampled {
            break;
        }
    }
    let has = |x: Decision| seen.iter().any(|(_, d)| *d == x);
    let sampled = if has(Decision::Dropped) || has(Decision::InvertNotSampled) {
        false
    } else if has(Decision::Sampled) {
        true
    } else {
        has(Decision::InvertSampled) && !has(Decision::NotSampled)
    };
    (sampled, seen)
}

thread_local! {
    /// Set when an OTTL condition policy failed under `error_mode: propagate` (upstream's
    /// policy returns an error): a `not` around it must not turn that into a sample.
    static POLICY_FAILED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{span::Event, Status};

    fn attr(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    /// A trace: spans of (duration ms offset, status code, attributes).
    fn spans(specs: &[(u64, u64, i32, Vec<KeyValue>)]) -> Vec<Span> {
        specs
            .iter()
            .map(|(start, end, code, attrs)| Span {
                trace_id: vec![1; 16],
                name: "op".into(),
                start_time_unix_nano: start * 1_000_000,
                end_time_unix_nano: end * 1_000_000,
                status: Some(Status {
                    code: *code,
                    message: String::new(),
                }),
                attributes: attrs.clone(),
                trace_state: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into(),
                flags: 1,
                events: vec![Event {
                    name: "exception".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect()
    }

    fn view<'a>(s: &'a [Span], resource: Option<&'a Resource>) -> TraceView<'a> {
        TraceView {
            trace_id: &[7; 16],
            spans: s
                .iter()
                .map(|span| SpanRef {
                    resource,
                    scope: None,
                    span,
                })
                .collect(),
            bytes: 1000,
        }
    }

    fn policy(yaml: &str) -> Policy {
        let cfg: PolicyConfig = serde_yaml::from_str(yaml).expect("policy yaml");
        Policy::compile(&cfg, "policies[0]").expect("compiles")
    }

    #[test]
    fn every_policy_type_on_matching_and_non_matching_traces() {
        use Decision::*;
        let plain = spans(&[(
            0,
            10,
            0,
            vec![attr("http.status_code", Value::IntValue(200))],
        )]);
        let rich = spans(&[
            (
                0,
                5,
                1,
                vec![attr("http.status_code", Value::IntValue(503))],
            ),
            (
                2,
                1500,
                2,
                vec![
                    attr("customer", Value::StringValue("acme-prod".into())),
                    attr("debug", Value::BoolValue(true)),
                ],
            ),
        ]);
        let res = Resource {
            attributes: vec![attr("service.name", Value::StringValue("checkout".into()))],
            ..Default::default()
        };
        // (policy yaml, decision on `plain`, decision on `rich`)
        let table: Vec<(&str, Decision, Decision)> = vec![
            ("{name: a, type: always_sample}", Sampled, Sampled),
            ("{name: l, type: latency, latency: {threshold_ms: 1000}}", NotSampled, Sampled),
            ("{name: l, type: latency, latency: {threshold_ms: 1, upper_threshold_ms: 100}}", Sampled, NotSampled),
            ("{name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}}", NotSampled, Sampled),
            ("{name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500}}", NotSampled, Sampled),
            ("{name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, invert_match: true}}", InvertSampled, InvertNotSampled),
            ("{name: p, type: probabilistic, probabilistic: {sampling_percentage: 100}}", Sampled, Sampled),
            ("{name: p, type: probabilistic, probabilistic: {sampling_percentage: 0}}", NotSampled, NotSampled),
            ("{name: s, type: status_code, status_code: {status_codes: [ERROR]}}", NotSampled, Sampled),
            ("{name: s, type: status_code, status_code: {status_codes: [UNSET]}}", Sampled, NotSampled),
            ("{name: s, type: string_attribute, string_attribute: {key: customer, values: [acme-prod]}}", NotSampled, Sampled),
            ("{name: s, type: string_attribute, string_attribute: {key: customer, values: ['acme-.*'], enabled_regex_matching: true}}", NotSampled, Sampled),
            ("{name: s, type: string_attribute, string_attribute: {key: customer, values: [acme-prod], invert_match: true}}", InvertSampled, InvertNotSampled),
            ("{name: s, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}", Sampled, Sampled),
            ("{name: b, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}", NotSampled, Sampled),
            ("{name: c, type: span_count, span_count: {min_spans: 2}}", NotSampled, Sampled),
            ("{name: c, type: span_count, span_count: {min_spans: 1, max_spans: 1}}", Sampled, NotSampled),
            ("{name: t, type: trace_state, trace_state: {key: rojo, values: [00f067aa0ba902b7]}}", Sampled, Sampled),
            ("{name: t, type: trace_state, trace_state: {key: rojo, values: [other]}}", NotSampled, NotSampled),
            ("{name: f, type: trace_flags}", Sampled, Sampled),
            ("{name: o, type: ottl_condition, ottl_condition: {span: ['attributes[\"customer\"] == \"acme-prod\"']}}", NotSampled, Sampled),
            ("{name: o, type: ottl_condition, ottl_condition: {spanevent: ['name == \"exception\"']}}", Sampled, Sampled),
            ("{name: o, type: ottl_condition, ottl_condition: {span: ['resource.attributes[\"service.name\"] == \"cart\"']}}", NotSampled, NotSampled),
            // SHA256 of a missing attribute fails: false under ignore (the next span may still
            // match); under propagate the first failure ends it, not sampled (upstream).
            ("{name: o, type: ottl_condition, ottl_condition: {error_mode: ignore, span: ['SHA256(attributes[\"customer\"]) != \"x\"']}}", NotSampled, Sampled),
            ("{name: o, type: ottl_condition, ottl_condition: {error_mode: propagate, span: ['SHA256(attributes[\"customer\"]) != \"x\"']}}", NotSampled, NotSampled),
            ("{name: x, type: not, not: {not_sub_policy: {name: o, type: ottl_condition, ottl_condition: {error_mode: propagate, span: ['SHA256(attributes[\"customer\"]) != \"x\"']}}}}", NotSampled, NotSampled),
            ("{name: x, type: and, and: {and_sub_policy: [{name: e, type: status_code, status_code: {status_codes: [ERROR]}}, {name: l, type: latency, latency: {threshold_ms: 1000}}]}}", NotSampled, Sampled),
            ("{name: x, type: and, and: {and_sub_policy: [{name: e, type: status_code, status_code: {status_codes: [ERROR]}}, {name: l, type: latency, latency: {threshold_ms: 9000}}]}}", NotSampled, NotSampled),
            ("{name: x, type: not, not: {not_sub_policy: {name: e, type: status_code, status_code: {status_codes: [ERROR]}}}}", Sampled, NotSampled),
            ("{name: d, type: drop, drop: {drop_sub_policy: [{name: b, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}]}}", NotSampled, Dropped),
        ];
        for (yaml, want_plain, want_rich) in table {
            let mut p = policy(yaml);
            assert_eq!(
                p.evaluate(&view(&plain, Some(&res))),
                want_plain,
                "plain: {yaml}"
            );
            let mut p = policy(yaml);
            assert_eq!(
                p.evaluate(&view(&rich, Some(&res))),
                want_rich,
                "rich: {yaml}"
            );
        }
    }

    #[test]
    fn decision_rule_drop_and_invert_interplay() {
        use Decision::*;
        let rule = |ds: &[Decision]| {
            let has = |x: Decision| ds.contains(&x);
            if has(Dropped) || has(InvertNotSampled) {
                false
            } else if has(Sampled) {
                true
            } else {
                has(InvertSampled) && !has(NotSampled)
            }
        };
        // Check `decide` against the rule via real policies producing each decision.
        let always = "{name: a, type: always_sample}";
        let never = "{name: n, type: probabilistic, probabilistic: {sampling_percentage: 0}}";
        let inv_sampled = "{name: i, type: string_attribute, string_attribute: {key: nope, values: [x], invert_match: true}}";
        let inv_not = "{name: j, type: string_attribute, string_attribute: {key: k, values: [v], invert_match: true}}";
        let drop =
            "{name: d, type: drop, drop: {drop_sub_policy: [{name: a, type: always_sample}]}}";
        let s = spans(&[(0, 1, 0, vec![attr("k", Value::StringValue("v".into()))])]);
        let cases: Vec<(Vec<&str>, bool)> = vec![
            (vec![always], true),
            (vec![never], false),
            (vec![always, never], true),
            (vec![always, drop], false),
            (vec![always, inv_not], false),
            (vec![inv_sampled], true),
            (vec![inv_sampled, never], false),
            (vec![inv_sampled, always], true),
        ];
        for (yamls, want) in cases {
            let mut ps: Vec<Policy> = yamls.iter().map(|y| policy(y)).collect();
            let (got, votes) = decide(&mut ps, &view(&s, None), false);
            let ds: Vec<Decision> = votes.iter().map(|(_, d)| *d).collect();
            assert_eq!(got, want, "{yamls:?} -> {ds:?}");
            assert_eq!(rule(&ds), want);
        }
        // sample_on_first_match stops at the first sampling policy (a later drop is not seen).
        let mut ps: Vec<Policy> = [always, drop].iter().map(|y| policy(y)).collect();
        let (got, votes) = decide(&mut ps, &view(&s, None), true);
        assert!(got);
        assert_eq!(votes.len(), 1);
    }

    #[test]
    fn rate_limits_hold_across_clones_and_composite_allocates() {
        let s = spans(&[(0, 1, 0, vec![]), (0, 1, 0, vec![])]);
        let p = policy("{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 5}}");
        let (mut a, mut b) = (p.clone(), p);
        // 2 spans per trace, 5 per second shared: two traces pass, the third does not.
        let mut passed = 0;
        for i in 0..3 {
            let d = if i % 2 == 0 {
                a.evaluate(&view(&s, None))
            } else {
                b.evaluate(&view(&s, None))
            };
            passed += usize::from(d == Decision::Sampled);
        }
        assert!((2..=3).contains(&passed), "{passed}");

        let mut c = policy(
            "{name: c, type: composite, composite: {max_total_spans_per_second: 10, policy_order: [e, all], composite_sub_policy: [{name: e, type: status_code, status_code: {status_codes: [ERROR]}}, {name: all, type: always_sample}], rate_allocation: [{policy: e, percent: 60}, {policy: all, percent: 40}]}}",
        );
        // Plain traces (no error) go to `all`: 40% of 10 = 4 spans/s = 2 traces.
        let got: usize = (0..5)
            .map(|_| usize::from(c.evaluate(&view(&s, None)) == Decision::Sampled))
            .sum();
        assert!(got <= 2, "{got}");

        let mut bl = policy("{name: b, type: bytes_limiting, bytes_limiting: {bytes_per_second: 1000, burst_capacity: 2500}}");
        let got: usize = (0..5)
            .map(|_| usize::from(bl.evaluate(&view(&s, None)) == Decision::Sampled))
            .sum();
        assert_eq!(got, 2, "a 2500-byte burst admits two 1000-byte traces");
    }

    #[test]
    fn probabilistic_matches_the_collector_hash() {
        // FNV-1a 64 of "default-hash-seed" followed by the id, as the Collector computes it.
        let h = hash_trace_id("default-hash-seed", &[0u8; 16]);
        let mut expect: u64 = 0xcbf2_9ce4_8422_2325;
        for b in b"default-hash-seed".iter().chain(&[0u8; 16]) {
            expect ^= u64::from(*b);
            expect = expect.wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!(h, expect);
        // Roughly the configured share of random ids is kept.
        let mut p =
            policy("{name: p, type: probabilistic, probabilistic: {sampling_percentage: 25}}");
        let s = spans(&[(0, 1, 0, vec![])]);
        let mut kept = 0;
        for i in 0u32..4000 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id[8..12].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
            let mut v = view(&s, None);
            v.trace_id = &id;
            kept += usize::from(p.evaluate(&v) == Decision::Sampled);
        }
        assert!((800..1200).contains(&kept), "{kept}");
    }

    #[test]
    fn config_errors_name_policy_and_key() {
        let bad = |yaml: &str| {
            let cfg: PolicyConfig = serde_yaml::from_str(yaml).expect("yaml");
            Policy::compile(&cfg, "policies[3]").unwrap_err()
        };
        assert_eq!(
            bad("{name: x, type: latency}"),
            (
                "policies[3]".into(),
                "policy of type latency needs a `latency` section".into()
            )
        );
        assert_eq!(
            bad("{name: x, type: status_code, status_code: {status_codes: [FAIL]}}").0,
            "policies[3].status_code.status_codes[0]"
        );
        assert_eq!(
            bad("{name: x, type: probabilistic, probabilistic: {sampling_percentage: 120}}").1,
            "policy \"x\": sampling_percentage must be between 0 and 100, got 120"
        );
        assert_eq!(
            bad("{name: x, type: string_attribute, string_attribute: {key: k, values: ['(('], enabled_regex_matching: true}}").0,
            "policies[3].string_attribute.values[0]"
        );
        assert_eq!(
            bad("{name: x, type: composite, composite: {max_total_spans_per_second: 10, policy_order: [nope]}}").0,
            "policies[3].composite.policy_order[0]"
        );
        assert_eq!(
            bad("{name: x, type: and, and: {and_sub_policy: [{name: y, type: rate_limiting, rate_limiting: {spans_per_second: 0}}]}}").0,
            "policies[3].and.and_sub_policy[0].rate_limiting.spans_per_second"
        );
    }
}
