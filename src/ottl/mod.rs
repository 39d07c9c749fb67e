//! A small engine for OTTL boolean conditions, the expression language of the OpenTelemetry
//! Collector (`pkg/ottl` in opentelemetry-collector-contrib), as used by the tail sampling
//! processor's `ottl_condition` policy and, later, the filter processor and routing connector.
//!
//! A condition is parsed once, at config time, against a context ([`ContextKind`]): paths,
//! enum symbols and converters are resolved and regexes compiled then, so every mistake is a
//! [`ParseError`] naming the column. Evaluation borrows the OTLP data as it is and walks the
//! resolved tree.
//!
//! What it must never do: panic or fail on data (a type mismatch, a missing attribute or a
//! context item the caller did not pass reads as nil and compares by upstream's rules, so
//! `error_mode` is the caller's business), allocate per span in the common case (only
//! `IsMatch` on a non-string value formats one), or look a name up at evaluation time.
//!
//! Supported subset: literals (strings, ints, floats, `true`/`false`, `nil`, `0x..` bytes,
//! the context's enum symbols), paths of the span, span event, log, resource, scope, metric
//! and data point contexts (see `parser::resolve`), `== != < <= > >=`, `not`/`and`/`or` with
//! upstream precedence and parentheses, and the converters `IsMatch`, `IsString`, `IsInt`,
//! `IsBool`, `IsDouble`, `IsMap`, `IsList` (and, in the metric context, the filter
//! processor's `HasAttrKeyOnDatapoint`, `HasAttrOnDatapoint`), the value converters of
//! statements as operands (`Len(name) > 3`), math (`+ - * /`) on numbers, times
//! (`start_time`, `Now()`) and durations (`Duration("1s")`). Statements (the transform
//! processor's editors) are parsed by [`Statement`]. Other functions are parse errors.
//! Parentheses and calls nest at most 64 deep.

mod ctime;
mod edit;
mod eval;
mod hash;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;

use std::fmt;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span};

use opentelemetry_proto::tonic::metrics::v1::Metric;

use edit::{Item, Plan};

use eval::Ctx;
pub use eval::Point;
pub(crate) use eval::{point_at, point_count, points as points_of};
pub(crate) use parser::severity_number;

/// The OTTL context a condition is written for; it decides which paths and enums exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextKind {
    /// `ottlspan`: the span's fields, `resource.*`, `instrumentation_scope.*`.
    Span,
    /// `ottlspanevent`: the event's fields, `span.*`, `resource.*`, `instrumentation_scope.*`.
    SpanEvent,
    /// `ottllog`: the log record's fields, `resource.*`, `instrumentation_scope.*`.
    Log,
    /// `ottlresource`: `attributes`, `dropped_attributes_count`.
    Resource,
    /// `ottlscope`: `name`, `version`, `attributes`, `dropped_attributes_count`, `resource.*`.
    Scope,
    /// `ottlmetric`: the metric's `name`, `description`, `unit`, `type`,
    /// `aggregation_temporality`, `is_monotonic`, `resource.*`, `instrumentation_scope.*`.
    Metric,
    /// `ottldatapoint`: the point's fields, `metric.*`, `resource.*`, `instrumentation_scope.*`.
    DataPoint,
}

impl ContextKind {
    /// The upstream context name, as used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ContextKind::Span => "span",
            ContextKind::SpanEvent => "spanevent",
            ContextKind::Log => "log",
            ContextKind::Resource => "resource",
            ContextKind::Scope => "scope",
            ContextKind::Metric => "metric",
            ContextKind::DataPoint => "datapoint",
        }
    }
}

/// Why a condition did not parse: the 1-based column (in characters) and what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub column: usize,
    pub message: String,
    pub expression: String,
    /// A statement (transform) rather than a condition.
    pub statement: bool,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid OTTL {} {:?}: column {}: {}",
            if self.statement {
                "statement"
            } else {
                "condition"
            },
            self.expression,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// One parsed condition.
#[derive(Debug, Clone)]
pub struct Condition {
    expr: parser::Expr,
    source: String,
    context: ContextKind,
    /// Its `error_mode` (0 ignore, 1 silent, 2 propagate): where a failure is counted.
    mode: u8,
}

thread_local! {
    /// Conditions that failed (upstream's errors: a converter given a value it cannot take)
    /// since [`take_condition_failures`] last ran, by error_mode: ignore, silent, propagate.
    static CONDITION_FAILURES: std::cell::Cell<[u32; 3]> = const { std::cell::Cell::new([0; 3]) };
}

/// The conditions that failed on this thread since the last call, by error_mode (ignore,
/// silent, propagate); the counts start again from zero.
pub fn take_condition_failures() -> [u32; 3] {
    CONDITION_FAILURES.with(|f| f.replace([0; 3]))
}

impl Condition {
    pub fn parse(expr: &str, ctx: ContextKind) -> Result<Condition, ParseError> {
        Ok(Condition {
            expr: parser::parse(expr, ctx)?,
            source: expr.to_string(),
            context: ctx,
            mode: 0,
        })
    }

    /// The text the condition was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn context(&self) -> ContextKind {
        self.context
    }

    pub fn eval_span(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &Span,
    ) -> bool {
        self.eval(&Ctx {
            resource,
            scope,
            span: Some(span),
            ..Ctx::default()
        })
    }

    pub fn eval_span_event(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &Span,
        event: &span::Event,
    ) -> bool {
        self.eval(&Ctx {
            resource,
            scope,
            span: Some(span),
            event: Some(event),
            ..Ctx::default()
        })
    }

    pub fn eval_log(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        log: &LogRecord,
    ) -> bool {
        self.eval(&Ctx {
            resource,
            scope,
            log: Some(log),
            ..Ctx::default()
        })
    }

    pub fn eval_resource(&self, resource: Option<&Resource>) -> bool {
        self.eval(&Ctx {
            resource,
            ..Ctx::default()
        })
    }

    /// A resource-context condition that may also read `request["header"]`.
    pub fn eval_resource_request(
        &self,
        resource: Option<&Resource>,
        headers: Option<&[(String, String)]>,
    ) -> bool {
        self.eval(&Ctx {
            resource,
            request: headers,
            ..Ctx::default()
        })
    }

    pub fn eval_scope(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
    ) -> bool {
        self.eval(&Ctx {
            resource,
            scope,
            ..Ctx::default()
        })
    }

    pub fn eval_metric(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        metric: &Metric,
    ) -> bool {
        self.eval(&Ctx {
            resource,
            scope,
            metric: Some(metric),
            ..Ctx::default()
        })
    }

    pub fn eval_datapoint(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        metric: &Metric,
        point: Point<'_>,
    ) -> bool {
        self.eval(&Ctx {
            resource,
            scope,
            metric: Some(metric),
            point: Some(point),
            ..Ctx::default()
        })
    }

    /// The `error_mode` its failures count under: `ignore`, `silent` or `propagate`
    /// (anything else: ignore).
    pub fn set_error_mode(&mut self, mode: &str) {
        self.mode = match mode.to_ascii_lowercase().as_str() {
            "silent" => 1,
            "propagate" => 2,
            _ => 0,
        };
    }

    /// A condition that fails where upstream's returns an error is false (upstream's
    /// `ignore`), and counted by its error_mode ([`take_condition_failures`]).
    fn eval(&self, ctx: &Ctx<'_>) -> bool {
        edit::take_failed();
        let v = eval::eval(&self.expr, ctx);
        if edit::take_failed() {
            CONDITION_FAILURES.with(|f| {
                let mut n = f.get();
                n[usize::from(self.mode.min(2))] += 1;
                f.set(n);
            });
            return false;
        }
        v
    }
}

/// Upstream's context inference (`trace_conditions` and the like): the most specific context
/// whose name prefixes a path of the condition (`span.name` → span, `spanevent.name` →
/// spanevent even beside `resource.attributes`), among `allowed` (most specific first).
/// `None` when no path names one of them.
pub fn infer_context(expr: &str, allowed: &[ContextKind]) -> Option<ContextKind> {
    let toks = lexer::tokenize(expr).ok()?;
    let mut found: Vec<&str> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let starts_path = t.tok == lexer::Tok::Lower
            && (i == 0 || toks[i - 1].tok != lexer::Tok::Dot)
            && toks.get(i + 1).is_some_and(|n| n.tok == lexer::Tok::Dot);
        if starts_path {
            found.push(expr.get(t.start..t.end).unwrap_or(""));
        }
    }
    allowed.iter().copied().find(|c| {
        found
            .iter()
            .any(|p| *p == c.name() || (*c == ContextKind::Scope && *p == "instrumentation_scope"))
    })
}

/// Several conditions ORed, as upstream lists them (`span: [..]` in `ottl_condition`, the
/// filter processor's lists). An empty set matches nothing.
#[derive(Debug, Clone, Default)]
pub struct ConditionSet {
    conditions: Vec<Condition>,
}

impl ConditionSet {
    /// Parses every condition; the first error is returned.
    pub fn parse_all(exprs: &[String], ctx: ContextKind) -> Result<Self, ParseError> {
        let conditions = exprs
            .iter()
            .map(|e| Condition::parse(e, ctx))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ConditionSet { conditions })
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    pub fn len(&self) -> usize {
        self.conditions.len()
    }

    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    pub fn eval_span(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &Span,
    ) -> bool {
        self.conditions
            .iter()
            .any(|c| c.eval_span(resource, scope, span))
    }

    pub fn eval_span_event(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &Span,
        event: &span::Event,
    ) -> bool {
        self.conditions
            .iter()
            .any(|c| c.eval_span_event(resource, scope, span, event))
    }

    pub fn eval_log(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        log: &LogRecord,
    ) -> bool {
        self.conditions
            .iter()
            .any(|c| c.eval_log(resource, scope, log))
    }

    pub fn eval_resource(&self, resource: Option<&Resource>) -> bool {
        self.conditions.iter().any(|c| c.eval_resource(resource))
    }

    pub fn eval_scope(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
    ) -> bool {
        self.conditions
            .iter()
            .any(|c| c.eval_scope(resource, scope))
    }

    pub fn eval_metric(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        metric: &Metric,
    ) -> bool {
        self.conditions
            .iter()
            .any(|c| c.eval_metric(resource, scope, metric))
    }

    pub fn eval_datapoint(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        metric: &Metric,
        point: Point<'_>,
    ) -> bool {
        self.conditions
            .iter()
            .any(|c| c.eval_datapoint(resource, scope, metric, point))
    }

    /// Adds conditions parsed elsewhere (a filter group's conditions of one context).
    pub fn push(&mut self, c: Condition) {
        self.conditions.push(c);
    }
}

/// One parsed statement (`editor(args) where condition`) of the transform processor.
#[derive(Debug, Clone)]
pub struct Statement {
    st: parser::Statement,
    source: String,
    context: ContextKind,
}

impl Statement {
    pub fn parse(src: &str, ctx: ContextKind) -> Result<Statement, ParseError> {
        Ok(Statement {
            st: parser::parse_statement(src, ctx).map_err(|e| ParseError {
                statement: true,
                ..e
            })?,
            source: src.to_string(),
            context: ctx,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn context(&self) -> ContextKind {
        self.context
    }

    fn item<'a>(resource: &'a mut Option<Resource>) -> Item<'a> {
        Item {
            resource,
            scope: None,
            span: None,
            event: None,
            log: None,
            metric: None,
            point_attrs: None,
        }
    }

    pub fn run_resource(&self, resource: &mut Option<Resource>) -> bool {
        edit::take_failed();
        let plan = edit::plan(
            &self.st,
            &Ctx {
                resource: resource.as_ref(),
                ..Ctx::default()
            },
        );
        if let Plan::Run(v) = plan {
            edit::apply(&self.st, v, &mut Self::item(resource));
        }
        edit::take_failed()
    }

    pub fn run_scope(
        &self,
        resource: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
    ) -> bool {
        edit::take_failed();
        let plan = edit::plan(
            &self.st,
            &Ctx {
                resource: resource.as_ref(),
                scope: scope.as_ref(),
                ..Ctx::default()
            },
        );
        if let Plan::Run(v) = plan {
            let mut it = Self::item(resource);
            it.scope = Some(scope);
            edit::apply(&self.st, v, &mut it);
        }
        edit::take_failed()
    }

    pub fn run_span(
        &self,
        resource: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        span: &mut Span,
    ) -> bool {
        edit::take_failed();
        let plan = edit::plan(
            &self.st,
            &Ctx {
                resource: resource.as_ref(),
                scope: scope.as_ref(),
                span: Some(span),
                ..Ctx::default()
            },
        );
        if let Plan::Run(v) = plan {
            let mut it = Self::item(resource);
            it.scope = Some(scope);
            it.span = Some(span);
            edit::apply(&self.st, v, &mut it);
        }
        edit::take_failed()
    }

    /// The `index`-th event of `span`.
    pub fn run_span_event(
        &self,
        resource: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        span: &mut Span,
        index: usize,
    ) -> bool {
        edit::take_failed();
        let Some(event) = span.events.get(index) else {
            return false;
        };
        let plan = edit::plan(
            &self.st,
            &Ctx {
                resource: resource.as_ref(),
                scope: scope.as_ref(),
                span: Some(span),
                event: Some(event),
                ..Ctx::default()
            },
        );
        if let Plan::Run(v) = plan {
            let mut it = Self::item(resource);
            it.scope = Some(scope);
            it.event = span.events.get_mut(index);
            edit::apply(&self.st, v, &mut it);
        }
        edit::take_failed()
    }

    pub fn run_log(
        &self,
        resource: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        log: &mut LogRecord,
    ) -> bool {
        edit::take_failed();
        let plan = edit::plan(
            &self.st,
            &Ctx {
                resource: resource.as_ref(),
                scope: scope.as_ref(),
                log: Some(log),
                ..Ctx::default()
            },
        );
        if let Plan::Run(v) = plan {
            let mut it = Self::item(resource);
            it.scope = Some(scope);
            it.log = Some(log);
            edit::apply(&self.st, v, &mut it);
        }
        edit::take_failed()
    }

    pub fn run_metric(
        &self,
        resource: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        metric: &mut Metric,
    ) -> bool {
        edit::take_failed();
        let plan = edit::plan(
            &self.st,
            &Ctx {
                resource: resource.as_ref(),
                scope: scope.as_ref(),
                metric: Some(metric),
                ..Ctx::default()
            },
        );
        if let Plan::Run(v) = plan {
            let mut it = Self::item(resource);
            it.scope = Some(scope);
            it.metric = Some(metric);
            edit::apply(&self.st, v, &mut it);
        }
        edit::take_failed()
    }

    /// The `index`-th data point of `metric`.
    pub fn run_datapoint(
        &self,
        resource: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        metric: &mut Metric,
        index: usize,
    ) -> bool {
        edit::take_failed();
        let plan = {
            let Some(point) = point_at(metric, index) else {
                return false;
            };
            edit::plan(
                &self.st,
                &Ctx {
                    resource: resource.as_ref(),
                    scope: scope.as_ref(),
                    metric: Some(metric),
                    point: Some(point),
                    ..Ctx::default()
                },
            )
        };
        if let Plan::Run(v) = plan {
            let mut it = Self::item(resource);
            it.scope = Some(scope);
            it.point_attrs = edit::point_attrs_mut(metric, index);
            edit::apply(&self.st, v, &mut it);
        }
        edit::take_failed()
    }
}

/// Where statements and conditions reach, for the paths that work on encoded data without
/// decoding whole items (the transform and filter processors' wire paths): which protobuf
/// fields of the context's item (a span, a log record) they read or change, which keys of its
/// attributes, and whether they change the resource or the scope. Built with
/// [`Footprint::add_statement`] / [`Footprint::add_condition`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Field numbers of `Span` / `LogRecord` as bits (`1 << number`); the attributes' field
    /// (9 / 6) only when the whole map is reached.
    pub item_fields: u64,
    /// Attribute keys reached one by one (`attributes["k"]`, `delete_key(attributes, "k")`),
    /// when the whole map is not.
    pub attr_keys: Vec<Box<str>>,
    pub writes_resource: bool,
    pub writes_scope: bool,
    /// Something only a decoded request gives (metrics, data points).
    pub opaque: bool,
}

impl Footprint {
    fn reach(&mut self, (f, key): parser::Reach<'_>) {
        use parser::Field as F;
        if let (F::SpanAttrs | F::LogAttrs, Some(k)) = (f, key) {
            if !self.attr_keys.iter().any(|x| &**x == k) {
                self.attr_keys.push(k.into());
            }
            return;
        }
        let n: u32 = match f {
            F::ResourceAttrs
            | F::RequestHeaders
            | F::ResourceDroppedAttrs
            | F::ScopeName
            | F::ScopeVersion
            | F::ScopeAttrs
            | F::ScopeDroppedAttrs => return,
            F::SpanTraceId | F::SpanTraceIdBytes => 1,
            F::SpanSpanId | F::SpanSpanIdBytes => 2,
            F::SpanTraceState => 3,
            F::SpanParentSpanId | F::SpanParentIdBytes => 4,
            F::SpanName => 5,
            F::SpanKind => 6,
            F::SpanStart | F::SpanStartTime => 7,
            F::SpanEnd | F::SpanEndTime => 8,
            F::SpanAttrs => 9,
            F::SpanDroppedAttrs => 10,
            F::EventName
            | F::EventTime
            | F::EventAttrs
            | F::EventDroppedAttrs
            | F::EventTimeValue => 11,
            F::SpanDroppedEvents => 12,
            F::SpanDroppedLinks => 14,
            F::SpanStatusCode | F::SpanStatusMessage => 15,
            F::SpanFlags => 16,
            F::LogTime | F::LogTimeValue => 1,
            F::LogSeverityNumber => 2,
            F::LogSeverityText => 3,
            F::LogBody => 5,
            F::LogAttrs => 6,
            F::LogDroppedAttrs => 7,
            F::LogFlags => 8,
            F::LogTraceId | F::LogTraceIdBytes => 9,
            F::LogSpanId | F::LogSpanIdBytes => 10,
            F::LogObservedTime | F::LogObservedTimeValue => 11,
            F::LogEventName => 12,
            _ => {
                self.opaque = true;
                return;
            }
        };
        self.item_fields |= 1 << n;
    }

    pub fn add_statement(&mut self, s: &Statement) {
        use parser::Field as F;
        s.st.visit(&mut |r| self.reach(r));
        match s.st.target().0 {
            F::ResourceAttrs | F::ResourceDroppedAttrs => self.writes_resource = true,
            F::ScopeName | F::ScopeVersion | F::ScopeAttrs | F::ScopeDroppedAttrs => {
                self.writes_scope = true
            }
            _ => {}
        }
    }

    pub fn add_condition(&mut self, c: &Condition) {
        parser::visit_expr(&c.expr, &mut |r| self.reach(r));
    }

    /// Everything `other` reaches too.
    pub fn merge(&mut self, other: &Footprint) {
        self.item_fields |= other.item_fields;
        for k in &other.attr_keys {
            if !self.attr_keys.contains(k) {
                self.attr_keys.push(k.clone());
            }
        }
        self.writes_resource |= other.writes_resource;
        self.writes_scope |= other.writes_scope;
        self.opaque |= other.opaque;
    }

    /// Whether field `number` (payload `data`) of an item is one to decode, the item's
    /// attributes being its field `attrs_field`.
    pub fn wants(&self, attrs_field: u64, number: u64, data: &[u8]) -> bool {
        if number == attrs_field {
            return self.wants_attribute(attrs_field, data);
        }
        number < 64 && self.item_fields & (1 << number) != 0
    }

    /// Whether attribute `KeyValue` `kv` (encoded, field `attrs_field` of the item) is one
    /// the statements reach: all of them when the whole map is reached.
    pub fn wants_attribute(&self, attrs_field: u64, kv: &[u8]) -> bool {
        if self.item_fields & (1 << attrs_field) != 0 {
            return true;
        }
        if self.attr_keys.is_empty() {
            return false;
        }
        // KeyValue.key is field 1; a decoder keeps the last of several, and an absent one
        // is the empty key.
        let key = crate::pdata::wire::fields(kv)
            .filter_map(|f| match f {
                Ok((1, 2, k, _)) => Some(k),
                _ => None,
            })
            .last()
            .unwrap_or_default();
        self.attr_keys.iter().any(|x| x.as_bytes() == key)
    }
}
