//! Evaluation of a parsed condition against borrowed OTLP data.
//!
//! Values are borrowed views (`Val`), so the common case allocates nothing. The comparison
//! rules are upstream's (pkg/ottl/compare.go): nil equals only nil; int and float compare
//! numerically; strings and bytes compare lexically; bools order false < true; maps and lists
//! support only `==`/`!=`; any other pairing is "not comparable", which makes `!=` true and
//! every other operator false.

use std::cmp::Ordering;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span};

use super::lexer::CmpOp;
use super::parser::{Converter, Expr, Field, Key, Lit, Operand, Path};

/// What a condition is evaluated against; absent items read as nil.
#[derive(Clone, Copy, Default)]
pub(crate) struct Ctx<'a> {
    pub resource: Option<&'a Resource>,
    pub scope: Option<&'a InstrumentationScope>,
    pub span: Option<&'a Span>,
    pub event: Option<&'a span::Event>,
    pub log: Option<&'a LogRecord>,
    /// Request headers (lower-case names), for `request["..."]`.
    pub request: Option<&'a [(String, String)]>,
    pub metric: Option<&'a Metric>,
    pub point: Option<Point<'a>>,
}

/// A data point of any kind, as the datapoint context sees it.
#[derive(Clone, Copy, Debug)]
pub enum Point<'a> {
    Number(&'a NumberDataPoint),
    Histogram(&'a HistogramDataPoint),
    ExpHistogram(&'a ExponentialHistogramDataPoint),
    Summary(&'a SummaryDataPoint),
}

impl<'a> Point<'a> {
    pub fn attributes(&self) -> &'a [KeyValue] {
        match self {
            Point::Number(p) => &p.attributes,
            Point::Histogram(p) => &p.attributes,
            Point::ExpHistogram(p) => &p.attributes,
            Point::Summary(p) => &p.attributes,
        }
    }
    fn times(&self) -> (u64, u64, u32) {
        match self {
            Point::Number(p) => (p.start_time_unix_nano, p.time_unix_nano, p.flags),
            Point::Histogram(p) => (p.start_time_unix_nano, p.time_unix_nano, p.flags),
            Point::ExpHistogram(p) => (p.start_time_unix_nano, p.time_unix_nano, p.flags),
            Point::Summary(p) => (p.start_time_unix_nano, p.time_unix_nano, p.flags),
        }
    }
}

/// The metric's type as upstream numbers it (`METRIC_DATA_TYPE_*`).
pub(crate) fn metric_type(m: &Metric) -> i64 {
    match &m.data {
        None => 0,
        Some(metric::Data::Gauge(_)) => 1,
        Some(metric::Data::Sum(_)) => 2,
        Some(metric::Data::Histogram(_)) => 3,
        Some(metric::Data::ExponentialHistogram(_)) => 4,
        Some(metric::Data::Summary(_)) => 5,
    }
}

/// How many points a metric has (without collecting them).
pub(crate) fn point_count(m: &Metric) -> usize {
    match &m.data {
        None => 0,
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(x)) => x.data_points.len(),
        Some(metric::Data::Histogram(x)) => x.data_points.len(),
        Some(metric::Data::ExponentialHistogram(x)) => x.data_points.len(),
        Some(metric::Data::Summary(x)) => x.data_points.len(),
    }
}

/// The `i`-th point of a metric (without collecting them).
pub(crate) fn point_at(m: &Metric, i: usize) -> Option<Point<'_>> {
    Some(match &m.data {
        None => return None,
        Some(metric::Data::Gauge(g)) => Point::Number(g.data_points.get(i)?),
        Some(metric::Data::Sum(x)) => Point::Number(x.data_points.get(i)?),
        Some(metric::Data::Histogram(x)) => Point::Histogram(x.data_points.get(i)?),
        Some(metric::Data::ExponentialHistogram(x)) => Point::ExpHistogram(x.data_points.get(i)?),
        Some(metric::Data::Summary(x)) => Point::Summary(x.data_points.get(i)?),
    })
}

/// Every point of a metric, in order.
pub(crate) fn points(m: &Metric) -> Vec<Point<'_>> {
    match &m.data {
        None => Vec::new(),
        Some(metric::Data::Gauge(g)) => g.data_points.iter().map(Point::Number).collect(),
        Some(metric::Data::Sum(x)) => x.data_points.iter().map(Point::Number).collect(),
        Some(metric::Data::Histogram(x)) => x.data_points.iter().map(Point::Histogram).collect(),
        Some(metric::Data::ExponentialHistogram(x)) => {
            x.data_points.iter().map(Point::ExpHistogram).collect()
        }
        Some(metric::Data::Summary(x)) => x.data_points.iter().map(Point::Summary).collect(),
    }
}

fn metric_field(f: Field, m: &Metric) -> Option<Val<'_>> {
    Some(match f {
        Field::MetricName => Val::Str(&m.name),
        Field::MetricDescription => Val::Str(&m.description),
        Field::MetricUnit => Val::Str(&m.unit),
        Field::MetricType => Val::Int(metric_type(m)),
        Field::MetricTemporality => match &m.data {
            Some(metric::Data::Sum(x)) => Val::Int(i64::from(x.aggregation_temporality)),
            Some(metric::Data::Histogram(x)) => Val::Int(i64::from(x.aggregation_temporality)),
            Some(metric::Data::ExponentialHistogram(x)) => {
                Val::Int(i64::from(x.aggregation_temporality))
            }
            _ => Val::Nil,
        },
        Field::MetricMonotonic => match &m.data {
            Some(metric::Data::Sum(x)) => Val::Bool(x.is_monotonic),
            _ => Val::Nil,
        },
        _ => return None,
    })
}

/// A point's field; fields another kind of point has read as nil (as upstream).
fn point_field(f: Field, p: Point<'_>) -> Option<Val<'_>> {
    let (start, time, flags) = p.times();
    Some(match (f, p) {
        (Field::PointAttrs, _) => Val::Map(p.attributes()),
        (Field::PointStart, _) => ts(start),
        (Field::PointTime, _) => ts(time),
        (Field::PointStartTime, _) => Val::Time(start as i64),
        (Field::PointTimeValue, _) => Val::Time(time as i64),
        (Field::PointFlags, _) => Val::Int(i64::from(flags)),
        // pdata's DoubleValue()/IntValue(): the other kind of number reads as zero.
        (Field::PointValueDouble, Point::Number(n)) => Val::Double(match n.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            _ => 0.0,
        }),
        (Field::PointValueInt, Point::Number(n)) => Val::Int(match n.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            _ => 0,
        }),
        (Field::PointCount, Point::Histogram(h)) => Val::Int(h.count as i64),
        (Field::PointCount, Point::ExpHistogram(h)) => Val::Int(h.count as i64),
        (Field::PointCount, Point::Summary(h)) => Val::Int(h.count as i64),
        (Field::PointSum, Point::Histogram(h)) => Val::Double(h.sum.unwrap_or(0.0)),
        (Field::PointSum, Point::ExpHistogram(h)) => Val::Double(h.sum.unwrap_or(0.0)),
        (Field::PointSum, Point::Summary(h)) => Val::Double(h.sum),
        (Field::PointScale, Point::ExpHistogram(h)) => Val::Int(i64::from(h.scale)),
        (Field::PointZeroCount, Point::ExpHistogram(h)) => Val::Int(h.zero_count as i64),
        (
            Field::PointValueDouble
            | Field::PointValueInt
            | Field::PointCount
            | Field::PointSum
            | Field::PointScale
            | Field::PointZeroCount,
            _,
        ) => Val::Nil,
        _ => return None,
    })
}

/// A lowercase hex id held inline, so `trace_id.string` needs no allocation.
#[derive(Clone, Copy)]
pub(crate) struct HexId {
    buf: [u8; 32],
    len: u8,
}

impl HexId {
    /// Upstream encodes the fixed-size pdata id, so an absent id reads as all zeros.
    fn new(id: &[u8], width: usize) -> Option<HexId> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [b'0'; 32];
        let n = if id.is_empty() { width } else { id.len() };
        if n > 16 {
            return None;
        }
        for (i, b) in id.iter().enumerate() {
            buf[2 * i] = DIGITS[usize::from(b >> 4)];
            buf[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
        }
        Some(HexId {
            buf,
            len: (2 * n) as u8,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Val<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'a str),
    Hex(HexId),
    Bytes(&'a [u8]),
    Map(&'a [KeyValue]),
    List(&'a [AnyValue]),
    Headers(&'a [(String, String)]),
    /// A point in time, in Unix nanoseconds (`start_time`, `Now()`).
    Time(i64),
    /// A span of time, in nanoseconds (`Duration("1s")`, `end_time - start_time`).
    Duration(i64),
}

impl<'a> Val<'a> {
    fn from_any(v: Option<&'a AnyValue>) -> Val<'a> {
        match v.and_then(|v| v.value.as_ref()) {
            None => Val::Nil,
            Some(any_value::Value::StringValue(s)) => Val::Str(s),
            Some(any_value::Value::BoolValue(b)) => Val::Bool(*b),
            Some(any_value::Value::IntValue(i)) => Val::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => Val::Double(*d),
            Some(any_value::Value::BytesValue(b)) => Val::Bytes(b),
            Some(any_value::Value::ArrayValue(a)) => Val::List(&a.values),
            Some(any_value::Value::KvlistValue(kv)) => Val::Map(&kv.values),
            // A string-table reference only exists in profiles; without the table it is nil.
            Some(any_value::Value::StringValueStrindex(_)) => Val::Nil,
        }
    }
}

fn get<'a>(map: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    map.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// Walks `keys` into a map; a missing key, a wrong container type or an out-of-range index
/// reads as nil (upstream errors on some of these; we never error at runtime).
fn index<'a>(mut v: Val<'a>, keys: &[Key]) -> Val<'a> {
    for k in keys {
        v = match (v, k) {
            (Val::Map(m), Key::Str(s)) => Val::from_any(get(m, s)),
            (Val::Headers(h), Key::Str(s)) => h
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(s))
                .map_or(Val::Nil, |(_, v)| Val::Str(v)),
            (Val::List(l), Key::Int(i)) => {
                Val::from_any(usize::try_from(*i).ok().and_then(|i| l.get(i)))
            }
            _ => Val::Nil,
        };
    }
    v
}

fn ts(v: u64) -> Val<'static> {
    // pdata hands timestamps to OTTL as int64 of the same bits.
    Val::Int(v as i64)
}

fn path<'a>(p: &Path, c: &Ctx<'a>) -> Val<'a> {
    let base = field(p.field, c);
    if p.keys.is_empty() {
        base
    } else {
        index(base, &p.keys)
    }
}

fn field<'a>(f: Field, c: &Ctx<'a>) -> Val<'a> {
    fn hex(id: &[u8], width: usize) -> Val<'static> {
        HexId::new(id, width).map_or(Val::Nil, Val::Hex)
    }
    match f {
        Field::ResourceAttrs => c
            .resource
            .map_or(Val::Map(&[]), |r| Val::Map(&r.attributes)),
        Field::RequestHeaders => Val::Headers(c.request.unwrap_or(&[])),
        Field::ResourceDroppedAttrs => Val::Int(
            c.resource
                .map_or(0, |r| i64::from(r.dropped_attributes_count)),
        ),
        Field::ScopeName => Val::Str(c.scope.map_or("", |s| s.name.as_str())),
        Field::ScopeVersion => Val::Str(c.scope.map_or("", |s| s.version.as_str())),
        Field::ScopeAttrs => c.scope.map_or(Val::Map(&[]), |s| Val::Map(&s.attributes)),
        Field::ScopeDroppedAttrs => {
            Val::Int(c.scope.map_or(0, |s| i64::from(s.dropped_attributes_count)))
        }
        _ => {
            if let Some(p) = c.point {
                if let Some(v) = point_field(f, p) {
                    return v;
                }
            }
            if let Some(m) = c.metric {
                if let Some(v) = metric_field(f, m) {
                    return v;
                }
            }
            if let Some(s) = c.span {
                if let Some(v) = span_field(f, s) {
                    return v;
                }
            }
            if let Some(e) = c.event {
                match f {
                    Field::EventName => return Val::Str(&e.name),
                    Field::EventTime => return ts(e.time_unix_nano),
                    Field::EventTimeValue => return Val::Time(e.time_unix_nano as i64),
                    Field::EventAttrs => return Val::Map(&e.attributes),
                    Field::EventDroppedAttrs => {
                        return Val::Int(i64::from(e.dropped_attributes_count))
                    }
                    _ => {}
                }
            }
            if let Some(l) = c.log {
                return match f {
                    Field::LogBody => Val::from_any(l.body.as_ref()),
                    Field::LogSeverityNumber => Val::Int(i64::from(l.severity_number)),
                    Field::LogSeverityText => Val::Str(&l.severity_text),
                    Field::LogTime => ts(l.time_unix_nano),
                    Field::LogObservedTime => ts(l.observed_time_unix_nano),
                    Field::LogTimeValue => Val::Time(l.time_unix_nano as i64),
                    Field::LogTraceIdBytes => Val::Bytes(&l.trace_id),
                    Field::LogSpanIdBytes => Val::Bytes(&l.span_id),
                    Field::LogObservedTimeValue => Val::Time(l.observed_time_unix_nano as i64),
                    Field::LogTraceId => hex(&l.trace_id, 16),
                    Field::LogSpanId => hex(&l.span_id, 8),
                    Field::LogFlags => Val::Int(i64::from(l.flags)),
                    Field::LogAttrs => Val::Map(&l.attributes),
                    Field::LogDroppedAttrs => Val::Int(i64::from(l.dropped_attributes_count)),
                    Field::LogEventName => Val::Str(&l.event_name),
                    _ => Val::Nil,
                };
            }
            Val::Nil
        }
    }
}

fn span_field(f: Field, s: &Span) -> Option<Val<'_>> {
    fn hex(id: &[u8], width: usize) -> Val<'static> {
        HexId::new(id, width).map_or(Val::Nil, Val::Hex)
    }
    Some(match f {
        Field::SpanName => Val::Str(&s.name),
        Field::SpanKind => Val::Int(i64::from(s.kind)),
        Field::SpanStatusCode => Val::Int(s.status.as_ref().map_or(0, |st| i64::from(st.code))),
        Field::SpanStatusMessage => Val::Str(s.status.as_ref().map_or("", |st| &st.message)),
        Field::SpanTraceId => hex(&s.trace_id, 16),
        Field::SpanSpanId => hex(&s.span_id, 8),
        Field::SpanParentSpanId => hex(&s.parent_span_id, 8),
        Field::SpanTraceState => Val::Str(&s.trace_state),
        Field::SpanStart => ts(s.start_time_unix_nano),
        Field::SpanEnd => ts(s.end_time_unix_nano),
        Field::SpanTraceIdBytes => Val::Bytes(&s.trace_id),
        Field::SpanSpanIdBytes => Val::Bytes(&s.span_id),
        Field::SpanParentIdBytes => Val::Bytes(&s.parent_span_id),
        Field::SpanStartTime => Val::Time(s.start_time_unix_nano as i64),
        Field::SpanEndTime => Val::Time(s.end_time_unix_nano as i64),
        Field::SpanAttrs => Val::Map(&s.attributes),
        Field::SpanDroppedAttrs => Val::Int(i64::from(s.dropped_attributes_count)),
        Field::SpanDroppedEvents => Val::Int(i64::from(s.dropped_events_count)),
        Field::SpanDroppedLinks => Val::Int(i64::from(s.dropped_links_count)),
        Field::SpanFlags => Val::Int(i64::from(s.flags)),
        _ => return None,
    })
}

fn lit(l: &Lit) -> Val<'_> {
    match l {
        Lit::Nil => Val::Nil,
        Lit::Bool(b) => Val::Bool(*b),
        Lit::Int(i) => Val::Int(*i),
        Lit::Double(d) => Val::Double(*d),
        Lit::Str(s) => Val::Str(s),
        Lit::Bytes(b) => Val::Bytes(b),
        Lit::Duration(d) => Val::Duration(*d),
    }
}

pub(crate) fn operand<'a>(o: &'a Operand, c: &Ctx<'a>) -> Val<'a> {
    match o {
        Operand::Lit(l) => lit(l),
        Operand::Path(p) => path(p, c),
        Operand::Call(f) => Val::Bool(call(f, c)),
        // Owned values are read through `with_val`.
        Operand::Value(_) => Val::Nil,
        Operand::Math(m) => {
            let (l, op, r) = &**m;
            with_val(l, c, |a| with_val(r, c, |b| arith(a, *op, b)))
        }
        Operand::Now => Val::Time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
        ),
    }
}

/// Upstream's math (pkg/ottl/math.go): ints stay ints, a float makes floats; time minus time
/// is a duration, time plus or minus a duration a time, durations add and subtract. Anything
/// else (a string, division by zero, an overflow) is nil, which compares with nothing.
fn arith(a: Val<'_>, op: u8, b: Val<'_>) -> Val<'static> {
    use Val as V;
    let int = |x: i64, y: i64| -> Option<i64> {
        match op {
            b'+' => x.checked_add(y),
            b'-' => x.checked_sub(y),
            b'*' => x.checked_mul(y),
            _ => x.checked_div(y),
        }
    };
    let float = |x: f64, y: f64| match op {
        b'+' => x + y,
        b'-' => x - y,
        b'*' => x * y,
        _ => x / y,
    };
    match (a, b) {
        (V::Int(x), V::Int(y)) => int(x, y).map_or(V::Nil, V::Int),
        (V::Int(x), V::Double(y)) => V::Double(float(x as f64, y)),
        (V::Double(x), V::Int(y)) => V::Double(float(x, y as f64)),
        (V::Double(x), V::Double(y)) => V::Double(float(x, y)),
        (V::Time(x), V::Time(y)) if op == b'-' => x.checked_sub(y).map_or(V::Nil, V::Duration),
        (V::Time(x), V::Duration(y)) if matches!(op, b'+' | b'-') => {
            int(x, y).map_or(V::Nil, V::Time)
        }
        (V::Duration(x), V::Duration(y)) if matches!(op, b'+' | b'-') => {
            int(x, y).map_or(V::Nil, V::Duration)
        }
        _ => V::Nil,
    }
}

/// Calls `f` with the operand's value, made first when a converter makes it.
fn with_val<R>(o: &Operand, c: &Ctx<'_>, f: impl FnOnce(Val<'_>) -> R) -> R {
    match o {
        Operand::Value(a) => {
            let v = super::edit::value(a, c);
            f(Val::from_any(v.as_ref()))
        }
        _ => f(operand(o, c)),
    }
}

pub(crate) fn eval(e: &Expr, c: &Ctx<'_>) -> bool {
    match e {
        Expr::Or(v) => v.iter().any(|e| eval(e, c)),
        Expr::And(v) => v.iter().all(|e| eval(e, c)),
        Expr::Not(e) => !eval(e, c),
        Expr::Const(b) => *b,
        Expr::Cmp(l, op, r) => with_val(l, c, |a| with_val(r, c, |b| compare(&a, *op, &b))),
        Expr::Call(f) => call(f, c),
    }
}

fn call(f: &Converter, c: &Ctx<'_>) -> bool {
    match f {
        Converter::IsMatch(t, re) => with_val(t, c, |v| match v {
            Val::Str(s) => re.is_match(s),
            Val::Hex(h) => re.is_match(h.as_str()),
            // Upstream converts scalars with strconv; rare, so a small allocation is fine.
            Val::Int(i) => re.is_match(&i.to_string()),
            Val::Double(d) => re.is_match(&d.to_string()),
            Val::Bool(b) => re.is_match(if b { "true" } else { "false" }),
            // Upstream base64-encodes bytes and JSON-encodes maps and lists; not done here.
            Val::Nil
            | Val::Bytes(_)
            | Val::Map(_)
            | Val::List(_)
            | Val::Headers(_)
            | Val::Time(_)
            | Val::Duration(_) => false,
        }),
        Converter::IsString(t) => with_val(t, c, |v| matches!(v, Val::Str(_) | Val::Hex(_))),
        Converter::IsInt(t) => with_val(t, c, |v| matches!(v, Val::Int(_))),
        Converter::IsBool(t) => with_val(t, c, |v| matches!(v, Val::Bool(_))),
        Converter::IsDouble(t) => with_val(t, c, |v| matches!(v, Val::Double(_))),
        Converter::IsMap(t) => with_val(t, c, |v| matches!(v, Val::Map(_) | Val::Headers(_))),
        Converter::IsList(t) => with_val(t, c, |v| matches!(v, Val::List(_))),
        // A parent id that is empty (or all zero bytes, which reads as empty upstream).
        Converter::IsRootSpan => c
            .span
            .is_some_and(|s| s.parent_span_id.iter().all(|b| *b == 0)),
        Converter::HasAttrKeyOnDatapoint(key) => first_with(c, key).is_some(),
        Converter::HasAttrOnDatapoint(key, value) => first_with(c, key).is_some_and(|v| {
            // A value that is not a string compares as "" (pdata's Str()).
            match v.value.as_ref() {
                Some(any_value::Value::StringValue(s)) => s.as_str() == &**value,
                _ => value.is_empty(),
            }
        }),
    }
}

/// The value of `key` on the first data point of the metric that has it.
fn first_with<'a>(c: &Ctx<'a>, key: &str) -> Option<&'a AnyValue> {
    let m = c.metric?;
    points(m).into_iter().find_map(|p| {
        p.attributes()
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_ref().unwrap_or(&NIL))
    })
}

static NIL: AnyValue = AnyValue { value: None };

fn by_ord(o: Option<Ordering>, op: CmpOp) -> bool {
    let Some(o) = o else {
        // Unordered (NaN): only `!=` holds, as with IEEE comparisons in Go.
        return op == CmpOp::Ne;
    };
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

fn str_of<'v>(v: &'v Val<'_>) -> Option<&'v str> {
    match v {
        Val::Str(s) => Some(s),
        Val::Hex(h) => Some(h.as_str()),
        _ => None,
    }
}

pub(crate) fn compare(a: &Val<'_>, op: CmpOp, b: &Val<'_>) -> bool {
    use Val as V;
    if let (Some(x), Some(y)) = (str_of(a), str_of(b)) {
        return by_ord(Some(x.cmp(y)), op);
    }
    match (a, b) {
        (V::Nil, V::Nil) => matches!(op, CmpOp::Eq | CmpOp::Le | CmpOp::Ge),
        (V::Bool(x), V::Bool(y)) => by_ord(Some(x.cmp(y)), op),
        (V::Int(x), V::Int(y)) => by_ord(Some(x.cmp(y)), op),
        (V::Int(x), V::Double(y)) => by_ord((*x as f64).partial_cmp(y), op),
        (V::Double(x), V::Int(y)) => by_ord(x.partial_cmp(&(*y as f64)), op),
        (V::Double(x), V::Double(y)) => by_ord(x.partial_cmp(y), op),
        (V::Bytes(x), V::Bytes(y)) => by_ord(Some(x.cmp(y)), op),
        (V::Time(x), V::Time(y)) | (V::Duration(x), V::Duration(y)) => by_ord(Some(x.cmp(y)), op),
        (V::Map(x), V::Map(y)) => eq_only(map_eq(x, y), op),
        (V::List(x), V::List(y)) => eq_only(list_eq(x, y), op),
        _ => op == CmpOp::Ne,
    }
}

fn eq_only(equal: bool, op: CmpOp) -> bool {
    match op {
        CmpOp::Eq => equal,
        CmpOp::Ne => !equal,
        _ => false,
    }
}

/// pdata's `Map.Equal`: same length and every key of one found, equal, in the other.
fn map_eq(x: &[KeyValue], y: &[KeyValue]) -> bool {
    x.len() == y.len()
        && x.iter().all(|kv| {
            y.iter()
                .find(|o| o.key == kv.key)
                .is_some_and(|o| any_eq(kv.value.as_ref(), o.value.as_ref()))
        })
}

fn list_eq(x: &[AnyValue], y: &[AnyValue]) -> bool {
    x.len() == y.len() && x.iter().zip(y).all(|(a, b)| any_eq(Some(a), Some(b)))
}

/// Structural equality of two values of the same type (pdata `Value.Equal`: an int never
/// equals a double here).
fn any_eq(a: Option<&AnyValue>, b: Option<&AnyValue>) -> bool {
    match (Val::from_any(a), Val::from_any(b)) {
        (Val::Nil, Val::Nil) => true,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Double(x), Val::Double(y)) => x == y,
        (Val::Bytes(x), Val::Bytes(y)) => x == y,
        (Val::Map(x), Val::Map(y)) => map_eq(x, y),
        (Val::List(x), Val::List(y)) => list_eq(x, y),
        _ => false,
    }
}
