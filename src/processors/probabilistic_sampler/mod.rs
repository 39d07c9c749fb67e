//! The `probabilistic_sampler` processor (traces and logs), with the Collector's keys and
//! decisions (processor/probabilisticsamplerprocessor and pkg/sampling):
//!
//! - `hash_seed` mode (the default): FNV-1a of the seed and the trace id (or, for logs, a
//!   record attribute), kept when `hash & 0x3FFF < percentage × 163.84`; a kept span carries
//!   `ot=rv:…;th:…` in its `tracestate` so consistent samplers downstream agree;
//! - `proportional` and `equalizing` modes (OTEP 235): randomness from `ot=rv:` or the trace
//!   id's last 56 bits, kept when the threshold is at most the randomness; an arriving `th`
//!   is multiplied (proportional) or raised to the configured one (equalizing), and the
//!   result written back as `ot=th:`;
//! - an item whose randomness is missing or whose arriving threshold is inconsistent follows
//!   `fail_closed` (dropped by default); `sampling.priority` (spans) or the `sampling_priority`
//!   attribute (logs) overrides the decision.
//!
//! Decisions are counted in
//! `otelcol_processor_probabilistic_sampler_count_{traces,logs}_sampled_total{policy,sampled}`.
pub mod sampling;
#[cfg(test)]
mod tests;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::Deserialize;

use crate::config::loader::Body;
use crate::pdata::{Batch, Payload, Signal};
use crate::pipeline::registry::{BuildEnv, Decode, Factory, Handles, ProcessorSettings, Stability};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Registry};
use sampling::{TraceState, ALWAYS, MIN_PROBABILITY, NEVER};

pub static FACTORY: Factory = Factory {
    type_name: "probabilistic_sampler",
    aliases: &[],
    stability: &[
        (Handles::Signal(Signal::Traces), Stability::Beta),
        (Handles::Signal(Signal::Logs), Stability::Alpha),
    ],
    description: "keeps a percentage of traces and logs, consistently with the Collector (hash seed, OTEP 235 thresholds)",
    decode: Decode::Processor(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<ProbabilisticSamplerConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ProcessorSettings for ProbabilisticSamplerConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        Box::new(ProbabilisticSampler::new(id, self, env.registry))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbabilisticSamplerConfig {
    pub sampling_percentage: f32,
    pub hash_seed: u32,
    pub mode: Option<String>,
    pub fail_closed: bool,
    pub sampling_precision: i32,
    pub attribute_source: String,
    pub from_attribute: String,
    pub sampling_priority: String,
}

impl Default for ProbabilisticSamplerConfig {
    fn default() -> Self {
        ProbabilisticSamplerConfig {
            sampling_percentage: 0.0,
            hash_seed: 0,
            mode: None,
            fail_closed: true,
            sampling_precision: 4,
            attribute_source: "traceID".into(),
            from_attribute: String::new(),
            sampling_priority: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    HashSeed,
    Proportional,
    Equalizing,
}

/// Go's `%f` of a float32, as upstream's messages print it.
fn go_f(v: f32) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v:.6}")
    }
}

impl ProbabilisticSamplerConfig {
    /// Upstream's checks, in its order, with its messages.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let pct = self.sampling_percentage;
        let ratio = f64::from(pct) / 100.0;
        if !pct.is_finite() {
            errs.push((
                "sampling_percentage".into(),
                format!("sampling rate is invalid: {}%", go_f(pct)),
            ));
        } else if ratio < 0.0 {
            errs.push((
                "sampling_percentage".into(),
                format!("sampling rate is negative: {}%", go_f(pct)),
            ));
        } else if ratio > 0.0 && ratio < MIN_PROBABILITY {
            errs.push((
                "sampling_percentage".into(),
                format!("sampling rate is too small: {pct}%"),
            ));
        }
        if self.attribute_source != "traceID" && self.attribute_source != "record" {
            errs.push((
                "attribute_source".into(),
                format!(
                    "invalid attribute source: {}. Expected: traceID or record",
                    self.attribute_source
                ),
            ));
        }
        if self.sampling_precision == 0 {
            errs.push((
                "sampling_precision".into(),
                "invalid sampling precision: 0".into(),
            ));
        } else if self.sampling_precision > 14 {
            errs.push((
                "sampling_precision".into(),
                format!(
                    "sampling precision is too great, should be <= 14: {}",
                    self.sampling_precision
                ),
            ));
        }
        if let Err(e) = self.mode() {
            errs.push(("mode".into(), e));
        }
        errs
    }

    fn mode(&self) -> Result<Mode, String> {
        match self.mode.as_deref() {
            None | Some("") | Some("hash_seed") => Ok(Mode::HashSeed),
            Some("proportional") => Ok(Mode::Proportional),
            Some("equalizing") => Ok(Mode::Equalizing),
            Some(m) => Err(format!("unsupported sampler mode {m:?}")),
        }
    }
}

/// The compiled sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    mode: Mode,
    seed: u32,
    /// The configured threshold.
    threshold: u64,
    /// Proportional mode's ratio.
    ratio: f64,
    precision: i32,
    fail_closed: bool,
    from_record: bool,
    from_attribute: String,
    priority_attribute: String,
}

/// One decision: keep it or not, and under which policy (the counters' `policy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub sampled: bool,
    pub policy: &'static str,
}

/// Why the usual decision could not be made: `fail_closed` decides.
const MISSING: &str = "missing randomness";

impl Sampler {
    pub fn new(cfg: &ProbabilisticSamplerConfig) -> Sampler {
        let mode = cfg.mode().unwrap_or(Mode::HashSeed);
        let pct = cfg.sampling_percentage.clamp(0.0, 100.0);
        let ratio = (f64::from(pct) / 100.0).max(0.0);
        let threshold = match mode {
            Mode::HashSeed => sampling::hash_seed_threshold(pct).unwrap_or(NEVER),
            _ if ratio == 0.0 => NEVER,
            _ => sampling::probability_to_threshold(
                ratio.max(MIN_PROBABILITY),
                cfg.sampling_precision,
            )
            .unwrap_or(NEVER),
        };
        Sampler {
            mode,
            seed: cfg.hash_seed,
            threshold,
            ratio,
            precision: cfg.sampling_precision,
            fail_closed: cfg.fail_closed,
            from_record: cfg.attribute_source == "record",
            from_attribute: cfg.from_attribute.clone(),
            priority_attribute: cfg.sampling_priority.clone(),
        }
    }

    /// The threshold for an item with arriving threshold `arriving` and randomness `rnd`, in a
    /// consistent mode; `Err` when the arriving threshold says it should not have been
    /// sampled.
    fn consistent(&self, arriving: Option<u64>, rnd: u64) -> Result<u64, &'static str> {
        let Some(th) = arriving else {
            return Ok(self.threshold);
        };
        if th > rnd {
            return Err("inconsistent arriving threshold: item should not have been sampled");
        }
        Ok(match self.mode {
            Mode::Equalizing => th.max(self.threshold),
            _ => {
                let p = sampling::threshold_probability(th) * self.ratio;
                sampling::probability_to_threshold(p, self.precision).unwrap_or(NEVER)
            }
        })
    }

    /// Decides one span and, when it is kept, records the decision in its `tracestate`.
    pub fn span(&self, span: &mut Span) -> Decision {
        let parsed = TraceState::parse(&span.trace_state);
        let mut policy = "trace_id_w3c";
        let mut carrier: Option<TraceState> = None;
        let mut rnd = 0u64;
        let outcome: Result<u64, &'static str> = match self.mode {
            Mode::HashSeed => {
                policy = "trace_id_hash";
                if span.trace_id.iter().all(|b| *b == 0) {
                    policy = "missing_randomness";
                    Err(MISSING)
                } else {
                    rnd = sampling::hash_randomness(sampling::fnv_hash(self.seed, &span.trace_id));
                    match parsed {
                        Ok(ts) if ts.rv.is_some() => Err(
                            "item has sampling randomness, equalizing or proportional mode recommended",
                        ),
                        Ok(ts) if ts.th.is_some() => Err(
                            "item has sampling threshold, equalizing or proportional mode recommended",
                        ),
                        Ok(mut ts) => {
                            ts.rv = Some((rnd, sampling::encode_randomness(rnd)));
                            carrier = Some(ts);
                            Ok(self.threshold)
                        }
                        Err(_) => Err("invalid tracestate"),
                    }
                }
            }
            _ => match parsed {
                Err(_) => Err("invalid tracestate"),
                Ok(mut ts) => {
                    let r = match ts.rv {
                        Some((r, _)) => {
                            policy = "sampling_randomness";
                            Some(r)
                        }
                        None => sampling::trace_id_randomness(&span.trace_id),
                    };
                    match r {
                        None => {
                            policy = "missing_randomness";
                            Err(MISSING)
                        }
                        Some(r) => {
                            rnd = r;
                            let out = self.consistent(ts.th, r);
                            if out.is_err() {
                                ts.th = None;
                            }
                            carrier = Some(ts);
                            out
                        }
                    }
                }
            },
        };
        let mut threshold = match outcome {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!("traces sampler: {e}");
                if self.fail_closed {
                    NEVER
                } else {
                    ALWAYS
                }
            }
        };
        // sampling.priority: 0 drops, more keeps.
        if let Some(p) = priority(&span.attributes, "sampling.priority") {
            if p == 0.0 {
                threshold = NEVER;
                policy = "sampling_priority";
            } else if p > 0.0 {
                threshold = ALWAYS;
                policy = "sampling_priority";
            }
        }
        let sampled = threshold <= rnd;
        if sampled {
            if let Some(mut ts) = carrier {
                if ts.th.is_none_or(|old| threshold >= old) {
                    ts.th = Some(threshold);
                }
                span.trace_state = ts.serialize();
            }
        }
        Decision { sampled, policy }
    }

    /// Decides one log record and, when it is kept, records the decision in its
    /// `sampling.randomness` / `sampling.threshold` attributes.
    pub fn log(&self, rec: &mut LogRecord) -> Decision {
        let has_tid = !rec.trace_id.is_empty() && rec.trace_id.iter().any(|b| *b != 0);
        let arriving_rv = string_attr(&rec.attributes, "sampling.randomness");
        let arriving_th = string_attr(&rec.attributes, "sampling.threshold");
        let mut policy = "trace_id_w3c";
        let mut rnd = 0u64;
        let mut write_rv = None;
        let outcome: Result<u64, &'static str> = match self.mode {
            Mode::HashSeed => {
                let data: Option<(Vec<u8>, &'static str)> = if !self.from_record && has_tid {
                    Some((rec.trace_id.clone(), "trace_id_hash"))
                } else if !self.from_attribute.is_empty() {
                    attr_bytes(&rec.attributes, &self.from_attribute).map(|b| (b, "from_attribute"))
                } else {
                    None
                };
                match data {
                    None => {
                        policy = "missing_randomness";
                        Err(MISSING)
                    }
                    Some((bytes, p)) => {
                        policy = p;
                        rnd = sampling::hash_randomness(sampling::fnv_hash(self.seed, &bytes));
                        if arriving_rv.is_some() {
                            Err("item has sampling randomness, equalizing or proportional mode recommended")
                        } else if arriving_th.is_some() {
                            Err("item has sampling threshold, equalizing or proportional mode recommended")
                        } else {
                            write_rv = Some(rnd);
                            Ok(self.threshold)
                        }
                    }
                }
            }
            _ => {
                let r = match arriving_rv.as_deref().map(sampling::parse_randomness) {
                    Some(Ok(r)) => {
                        policy = "sampling_randomness";
                        Ok(r)
                    }
                    Some(Err(e)) => Err(e),
                    None if has_tid => sampling::trace_id_randomness(&rec.trace_id).ok_or(MISSING),
                    None => {
                        policy = "missing_randomness";
                        Err(MISSING)
                    }
                };
                match r {
                    Err(e) => Err(e),
                    Ok(r) => {
                        rnd = r;
                        match arriving_th.as_deref().map(sampling::parse_threshold) {
                            Some(Err(e)) => Err(e),
                            Some(Ok(th)) => self.consistent(Some(th), r),
                            None => self.consistent(None, r),
                        }
                    }
                }
            }
        };
        let mut threshold = match outcome {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!("logs sampler: {e}");
                if self.fail_closed {
                    NEVER
                } else {
                    ALWAYS
                }
            }
        };
        if !self.priority_attribute.is_empty() {
            if let Some(v) = number_attr(&rec.attributes, &self.priority_attribute) {
                let p = v / 100.0;
                if p != 0.0 && (MIN_PROBABILITY..=1.0).contains(&p) {
                    if let Some(t) = sampling::probability_to_threshold(p, self.precision) {
                        threshold = t;
                        policy = "sampling_priority";
                    }
                }
            }
        }
        let sampled = threshold <= rnd;
        if sampled && threshold < NEVER {
            if let Some(r) = write_rv {
                set_attr(
                    &mut rec.attributes,
                    "sampling.randomness",
                    sampling::encode_randomness(r),
                );
            }
            set_attr(
                &mut rec.attributes,
                "sampling.threshold",
                sampling::encode_threshold(threshold),
            );
        }
        Decision { sampled, policy }
    }
}

fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match get(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn number_attr(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match get(attrs, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i as f64),
        Some(any_value::Value::DoubleValue(d)) => Some(*d),
        _ => None,
    }
}

/// `sampling.priority` on a span: a number, or a string that parses as one.
fn priority(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match get(attrs, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i as f64),
        Some(any_value::Value::DoubleValue(d)) if !d.is_nan() => Some(*d),
        Some(any_value::Value::StringValue(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// A record attribute's bytes for hashing: raw bytes, or its string form; empty is missing.
fn attr_bytes(attrs: &[KeyValue], key: &str) -> Option<Vec<u8>> {
    let b = match get(attrs, key)? {
        any_value::Value::BytesValue(b) => b.clone(),
        any_value::Value::StringValue(s) => s.as_bytes().to_vec(),
        any_value::Value::IntValue(i) => i.to_string().into_bytes(),
        any_value::Value::DoubleValue(d) => d.to_string().into_bytes(),
        any_value::Value::BoolValue(b) => b.to_string().into_bytes(),
        other => format!("{other:?}").into_bytes(),
    };
    (!b.is_empty()).then_some(b)
}

fn set_attr(attrs: &mut Vec<KeyValue>, key: &str, value: String) {
    let v = Some(AnyValue {
        value: Some(any_value::Value::StringValue(value)),
    });
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = v,
        None => attrs.push(KeyValue {
            key: key.into(),
            value: v,
            ..Default::default()
        }),
    }
}

/// The processor as a pipeline stage.
pub struct ProbabilisticSampler {
    id: String,
    sampler: Sampler,
    registry: std::sync::Arc<Registry>,
    counters: std::collections::HashMap<(Signal, &'static str, bool), Counter>,
    dropped: Counter,
}

impl ProbabilisticSampler {
    pub fn new(
        id: &str,
        cfg: &ProbabilisticSamplerConfig,
        registry: &std::sync::Arc<Registry>,
    ) -> ProbabilisticSampler {
        ProbabilisticSampler {
            id: id.into(),
            sampler: Sampler::new(cfg),
            registry: std::sync::Arc::clone(registry),
            counters: Default::default(),
            dropped: registry.counter(
                "weir_processor_dropped_items_total",
                "Items a processor could not handle and dropped.",
                &[("processor", id)],
            ),
        }
    }

    fn count(&mut self, signal: Signal, d: Decision, n: u64) {
        let reg = &self.registry;
        let from_attribute = self.sampler.from_attribute.as_str();
        let c = self
            .counters
            .entry((signal, d.policy, d.sampled))
            .or_insert_with(|| {
                let (name, help) = match signal {
                    Signal::Logs => (
                        "otelcol_processor_probabilistic_sampler_count_logs_sampled_total",
                        "Count of logs that were sampled or not",
                    ),
                    _ => (
                        "otelcol_processor_probabilistic_sampler_count_traces_sampled_total",
                        "Count of traces that were sampled or not",
                    ),
                };
                // The records' attribute policy is named after the attribute, as upstream.
                let policy = if d.policy == "from_attribute" {
                    from_attribute
                } else {
                    d.policy
                };
                reg.counter(
                    name,
                    help,
                    &[
                        ("policy", policy),
                        ("sampled", if d.sampled { "true" } else { "false" }),
                    ],
                )
            });
        c.add(n);
    }

    fn traces(&mut self, req: &mut ExportTraceServiceRequest) {
        let mut tally: Vec<(Decision, u64)> = Vec::new();
        let sampler = &self.sampler;
        req.resource_spans.retain_mut(|rs| {
            rs.scope_spans.retain_mut(|ss| {
                ss.spans.retain_mut(|s| {
                    let d = sampler.span(s);
                    bump(&mut tally, d);
                    d.sampled
                });
                !ss.spans.is_empty()
            });
            !rs.scope_spans.is_empty()
        });
        for (d, n) in tally {
            self.count(Signal::Traces, d, n);
        }
    }

    fn logs(&mut self, req: &mut ExportLogsServiceRequest) {
        let mut tally: Vec<(Decision, u64)> = Vec::new();
        let sampler = &self.sampler;
        req.resource_logs.retain_mut(|rl| {
            rl.scope_logs.retain_mut(|sl| {
                sl.log_records.retain_mut(|r| {
                    let d = sampler.log(r);
                    bump(&mut tally, d);
                    d.sampled
                });
                !sl.log_records.is_empty()
            });
            !rl.scope_logs.is_empty()
        });
        for (d, n) in tally {
            self.count(Signal::Logs, d, n);
        }
    }
}

fn bump(tally: &mut Vec<(Decision, u64)>, d: Decision) {
    match tally.iter_mut().find(|(x, _)| *x == d) {
        Some((_, n)) => *n += 1,
        None => tally.push((d, 1)),
    }
}

impl Processor for ProbabilisticSampler {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if batch.signal == Signal::Metrics {
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
            Payload::Traces(r) => self.traces(r),
            Payload::Logs(r) => self.logs(r),
            _ => {}
        }
        batch.recount();
        if batch.items > 0 {
            out.push(batch);
        }
    }
}
