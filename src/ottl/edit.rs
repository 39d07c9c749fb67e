//! Running OTTL statements (the transform processor's editors) on decoded OTLP data.
//!
//! A statement runs in two steps: first its `where` condition and its value argument are
//! evaluated against the item as it is (borrowed), then the edit is applied (mutably). The
//! semantics are upstream's (pkg/ottl/ottlfuncs): `set` with a nil value does nothing; a value
//! of the wrong type for a field leaves it alone; editors on a value that is not a string
//! (`replace_pattern` on an int) do nothing.
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span, Status};
use sha2::{Digest, Sha256};

use super::eval::{self, Ctx, Val};
use super::parser::{Arg, Case, Editor, Field, Key, Path, Statement, ValueFn};

/// What the first step decided: not to run, or to run (with `set`'s value).
pub(crate) enum Plan {
    Skip,
    Run(Option<AnyValue>),
}

pub(crate) fn plan(st: &Statement, c: &Ctx<'_>) -> Plan {
    if let Some(cond) = &st.cond {
        // A `where` clause that fails skips the edit (upstream returns the condition's error
        // before the function runs); the failure stays noted for the error_mode.
        if !eval::eval(cond, c) || FAILED.with(|f| f.get()) {
            return Plan::Skip;
        }
    }
    match &st.editor {
        Editor::Set(_, arg) | Editor::MergeMaps(_, arg, _) | Editor::Append(_, arg) => {
            Plan::Run(value(arg, c))
        }
        _ => Plan::Run(None),
    }
}

/// The mutable parts of one item a statement may change.
pub(crate) struct Item<'a> {
    pub resource: &'a mut Option<Resource>,
    pub scope: Option<&'a mut Option<InstrumentationScope>>,
    pub span: Option<&'a mut Span>,
    pub event: Option<&'a mut span::Event>,
    pub log: Option<&'a mut LogRecord>,
    pub metric: Option<&'a mut Metric>,
    pub point_attrs: Option<&'a mut Vec<KeyValue>>,
}

fn to_any(v: Val<'_>) -> Option<AnyValue> {
    use any_value::Value as V;
    let value = match v {
        Val::Nil | Val::Headers(_) => return None,
        // Times and durations are written as nanoseconds.
        Val::Time(n) | Val::Duration(n) => V::IntValue(n),
        Val::Bool(b) => V::BoolValue(b),
        Val::Int(i) => V::IntValue(i),
        Val::Double(d) => V::DoubleValue(d),
        Val::Str(s) => V::StringValue(s.to_string()),
        Val::Hex(h) => V::StringValue(h.as_str().to_string()),
        Val::Bytes(b) => V::BytesValue(b.to_vec()),
        Val::Map(m) => V::KvlistValue(KeyValueList { values: m.to_vec() }),
        Val::List(l) => V::ArrayValue(ArrayValue { values: l.to_vec() }),
    };
    Some(AnyValue { value: Some(value) })
}

fn as_str(v: &AnyValue) -> Option<&str> {
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn string(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

/// A value's text for `Concat`: strings as they are, numbers and bools as Go prints them.
fn text_of(v: &AnyValue) -> String {
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        _ => String::new(),
    }
}

/// `snake`: strcase's `ToSnake`, which upstream uses: a `_` where the case changes between
/// letters and digits, before the last capital of an acronym followed by a lower-case letter
/// (`HTTPServer` → `http_server`), and for spaces, `-` and `.`.
fn to_snake(s: &str) -> String {
    let s = s.trim().as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len() + 2);
    for (i, &b) in s.iter().enumerate() {
        let cap = b.is_ascii_uppercase();
        let low = b.is_ascii_lowercase();
        let num = b.is_ascii_digit();
        let v = b.to_ascii_lowercase();
        if let Some(&next) = s.get(i + 1) {
            let (n_cap, n_low, n_num) = (
                next.is_ascii_uppercase(),
                next.is_ascii_lowercase(),
                next.is_ascii_digit(),
            );
            if (cap && (n_low || n_num)) || (low && (n_cap || n_num)) || (num && (n_cap || n_low)) {
                if cap && n_low && i > 0 && s[i - 1].is_ascii_uppercase() {
                    out.push(b'_');
                }
                out.push(v);
                if low || num || n_num {
                    out.push(b'_');
                }
                continue;
            }
        }
        out.push(if matches!(b, b' ' | b'_' | b'-' | b'.') {
            b'_'
        } else {
            v
        });
    }
    // Only ASCII bytes were changed or added: still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// `camel`: strcase's `ToCamel`: words (split at `_`, spaces, `-`, `.` and after digits)
/// capitalised, the rest of an acronym lowered, other characters dropped.
fn to_camel(s: &str) -> String {
    let s = s.trim();
    let mut out = String::with_capacity(s.len());
    let mut cap_next = true;
    let mut prev_cap = false;
    for c in s.chars() {
        let cap = c.is_ascii_uppercase();
        let low = c.is_ascii_lowercase();
        let v = if cap_next {
            c.to_ascii_uppercase()
        } else if prev_cap && cap {
            c.to_ascii_lowercase()
        } else {
            c
        };
        prev_cap = cap;
        if cap || low {
            out.push(v);
            cap_next = false;
        } else if c.is_ascii_digit() {
            out.push(c);
            cap_next = true;
        } else {
            cap_next = matches!(c, '_' | ' ' | '-' | '.');
        }
    }
    out
}

/// Upstream's `SplitString`: `input` split on `delim` outside `"` or `'` quotes, the quotes
/// left out, a backslash keeping the next character from ending a quote; empty parts (a
/// leading, trailing or doubled delimiter) dropped. `None` for an empty input or a quote never
/// closed.
fn split_quoted(input: &str, delim: &str) -> Option<Vec<String>> {
    if input.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut rest = input;
    while let Some(c) = rest.chars().next() {
        if quote.is_none() && rest.starts_with(delim) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            rest = &rest[delim.len()..];
            continue;
        }
        rest = &rest[c.len_utf8()..];
        if !escaped {
            if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
                continue;
            }
            if quote == Some(c) {
                quote = None;
                continue;
            }
            escaped = c == '\\';
        } else {
            escaped = false;
        }
        cur.push(c);
    }
    if quote.is_some() {
        return None;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Some(out)
}

/// A value as Go's `%v` writes what upstream's getter gives (string, int64, float64, bool,
/// []byte, map, slice).
fn go_v(v: &Option<AnyValue>) -> String {
    use any_value::Value as V;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => "<nil>".into(),
        Some(V::StringValue(s)) => s.clone(),
        Some(V::IntValue(i)) => i.to_string(),
        // A profiles dictionary index: no value outside profiles.
        Some(V::StringValueStrindex(i)) => i.to_string(),
        Some(V::DoubleValue(d)) => go_float(*d),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::BytesValue(b)) => format!(
            "[{}]",
            b.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Some(V::ArrayValue(a)) => format!(
            "[{}]",
            a.values
                .iter()
                .map(|x| go_v(&Some(x.clone())))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Some(V::KvlistValue(m)) => {
            let mut kv: Vec<(String, String)> = m
                .values
                .iter()
                .map(|e| (e.key.clone(), go_v(&e.value)))
                .collect();
            kv.sort();
            format!(
                "map[{}]",
                kv.iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

/// A float as Go's `%v` (`strconv.FormatFloat(f, 'g', -1, 64)`): the shortest form, with an
/// exponent (`1e+06`) when the decimal exponent is below -4 or from 6.
fn go_float(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let a = d.abs();
    // The decimal exponent of the shortest digits.
    let exp = format!("{a:e}")
        .split_once('e')
        .and_then(|(_, e)| e.parse::<i32>().ok())
        .unwrap_or(0);
    if a != 0.0 && !(-4..6).contains(&exp) {
        let s = format!("{d:e}");
        // Rust: 1e21, 1.5e-7; Go: 1e+21, 1.5e-07.
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', e),
        };
        return format!("{m}e{sign}{digits:0>2}");
    }
    format!("{d}")
}

/// The Go type name `%!verb(type=value)` shows for a wrong-type argument.
fn go_type(v: &Option<AnyValue>) -> &'static str {
    use any_value::Value as V;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => "<nil>",
        Some(V::StringValue(_)) => "string",
        Some(V::IntValue(_)) => "int64",
        Some(V::StringValueStrindex(_)) => "int32",
        Some(V::DoubleValue(_)) => "float64",
        Some(V::BoolValue(_)) => "bool",
        Some(V::BytesValue(_)) => "[]uint8",
        Some(V::ArrayValue(_)) => "[]interface {}",
        Some(V::KvlistValue(_)) => "map[string]interface {}",
    }
}

/// Go's `fmt.Sprintf` for the verbs upstream's `Format` is used with: `%v %s %d %f %F %e %g %x
/// %X %q %t %%`, with flags (`-`, `0`, `+`, space), width and precision; a wrong type, a
/// missing or an extra argument written as Go writes them (`%!d(string=a)`, `%!s(MISSING)`,
/// `%!(EXTRA int64=1)`).
fn sprintf(format: &str, args: &[Option<AnyValue>]) -> String {
    use any_value::Value as V;
    let mut out = String::new();
    let mut next = 0usize;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut zero, mut plus, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '0' => zero = true,
                '+' => plus = true,
                ' ' => space = true,
                _ => break,
            }
            chars.next();
        }
        let mut width: Option<usize> = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some(
                width
                    .unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(d as usize)
                    .min(4096),
            );
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            prec = Some(0);
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                prec = Some(
                    prec.unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(d as usize)
                        .min(4096),
                );
                chars.next();
            }
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let val = arg.as_ref().and_then(|v| v.value.as_ref());
        let sign = |n: bool| {
            if n {
                "-"
            } else if plus {
                "+"
            } else if space {
                " "
            } else {
                ""
            }
        };
        let body: Option<String> = match (verb, val) {
            ('v', _) => Some(match val {
                Some(V::DoubleValue(d)) if prec.is_some() => format!("{d:.*}", prec.unwrap_or(6)),
                Some(V::IntValue(i)) if plus && *i >= 0 => format!("+{i}"),
                _ => go_v(arg),
            }),
            ('s', Some(V::StringValue(s))) => Some(match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            }),
            ('s', Some(V::BytesValue(b))) => Some(String::from_utf8_lossy(b).into_owned()),
            ('s', Some(V::ArrayValue(_) | V::KvlistValue(_))) => Some(go_v(arg)),
            ('d', Some(V::IntValue(i))) => Some(format!("{}{}", sign(*i < 0), i.unsigned_abs())),
            ('f' | 'F', Some(V::DoubleValue(d))) => Some(format!(
                "{}{:.*}",
                sign(d.is_sign_negative() && *d != 0.0),
                prec.unwrap_or(6),
                d.abs()
            )),
            ('e', Some(V::DoubleValue(d))) => {
                let s = format!("{:.*e}", prec.unwrap_or(6), d.abs());
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let (es, ed) = match e.strip_prefix('-') {
                    Some(x) => ('-', x),
                    None => ('+', e),
                };
                Some(format!("{}{m}e{es}{ed:0>2}", sign(*d < 0.0)))
            }
            ('g', Some(V::DoubleValue(d))) => Some(go_float(*d)),
            ('x' | 'X', Some(V::IntValue(i))) => {
                let h = if verb == 'x' {
                    format!("{:x}", i.unsigned_abs())
                } else {
                    format!("{:X}", i.unsigned_abs())
                };
                Some(format!("{}{h}", sign(*i < 0)))
            }
            ('x' | 'X', Some(V::StringValue(s))) => Some(hex(s.as_bytes(), verb == 'X')),
            ('x' | 'X', Some(V::BytesValue(b))) => Some(hex(b, verb == 'X')),
            ('q', Some(V::StringValue(s))) => Some(format!("{s:?}")),
            ('t', Some(V::BoolValue(b))) => Some(b.to_string()),
            _ => None,
        };
        let Some(body) = body else {
            if val.is_none() {
                out.push_str(&format!("%!{verb}(<nil>)"));
            } else {
                out.push_str(&format!("%!{verb}({}={})", go_type(arg), go_v(arg)));
            }
            continue;
        };
        let pad = width.unwrap_or(0).saturating_sub(body.chars().count());
        if minus {
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if zero && matches!(verb, 'd' | 'f' | 'F' | 'e' | 'x' | 'X') {
            // Zeros go after the sign.
            let (s, digits) = match body.chars().next() {
                Some(c @ ('-' | '+' | ' ')) => (c.to_string(), &body[1..]),
                _ => (String::new(), &body[..]),
            };
            out.push_str(&s);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&body);
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", go_type(a), go_v(a)))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn hex(b: &[u8], upper: bool) -> String {
    b.iter()
        .map(|x| {
            if upper {
                format!("{x:02X}")
            } else {
                format!("{x:02x}")
            }
        })
        .collect()
}

fn convert_case(s: &str, case: Case) -> String {
    match case {
        Case::Lower => s.to_lowercase(),
        Case::Upper => s.to_uppercase(),
        Case::Snake => to_snake(s),
        Case::Camel => to_camel(s),
    }
}

pub(crate) fn value(arg: &Arg, c: &Ctx<'_>) -> Option<AnyValue> {
    match arg {
        Arg::Op(super::parser::Operand::Value(a)) => value(a, c),
        Arg::Op(o) => to_any(eval::operand(o, c)),
        Arg::List(items) => Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: items
                    .iter()
                    .map(|i| value(i, c).unwrap_or_default())
                    .collect(),
            })),
        }),
        Arg::Sha256(a) => {
            let Some(s) = value(a, c).and_then(|v| as_str(&v).map(str::to_string)) else {
                return failed();
            };
            let digest = Sha256::digest(s.as_bytes());
            Some(string(digest.iter().map(|b| format!("{b:02x}")).collect()))
        }
        Arg::Concat(items, delim) => Some(string(
            items
                .iter()
                .map(|i| value(i, c).map(|v| text_of(&v)).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(delim),
        )),
        Arg::ConvertCase(a, case) => {
            let Some(v) = value(a, c) else {
                return failed();
            };
            match as_str(&v) {
                Some(s) => Some(string(convert_case(s, *case))),
                None => failed(),
            }
        }
        Arg::Call(f, args) => {
            let v = call_value(f, args, c);
            // Upstream's converters return an error where these have no value (a target that
            // is not a string, a time that does not parse, ...); Int, Double and String return
            // nil instead.
            let nil_is_nil = matches!(
                f,
                ValueFn::Int | ValueFn::Double | ValueFn::String | ValueFn::Format(_)
            );
            if v.is_none() && !nil_is_nil {
                return failed();
            }
            v
        }
    }
}

thread_local! {
    /// Whether the statement being run met an error upstream's would return (its error_mode
    /// decides what happens then). Cleared and read by [`take_failed`].
    static FAILED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the statement being run as failed; its value is nil.
fn failed<T>() -> Option<T> {
    FAILED.with(|f| f.set(true));
    None
}

/// Whether the statement run since the last call failed (and clears it).
pub(crate) fn take_failed() -> bool {
    FAILED.with(|f| f.replace(false))
}

fn any(v: any_value::Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

/// A JSON value as an OTLP value (numbers: int when integral, as upstream's ParseJSON).
fn from_json(j: &serde_json::Value) -> AnyValue {
    use any_value::Value as V;
    match j {
        serde_json::Value::Null => AnyValue::default(),
        serde_json::Value::Bool(b) => any(V::BoolValue(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => any(V::IntValue(i)),
            None => any(V::DoubleValue(n.as_f64().unwrap_or(0.0))),
        },
        serde_json::Value::String(s) => any(V::StringValue(s.clone())),
        serde_json::Value::Array(a) => any(V::ArrayValue(ArrayValue {
            values: a.iter().map(from_json).collect(),
        })),
        serde_json::Value::Object(m) => any(V::KvlistValue(KeyValueList {
            values: m
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(from_json(v)),
                    ..Default::default()
                })
                .collect(),
        })),
    }
}

fn call_value(f: &ValueFn, args: &[Arg], c: &Ctx<'_>) -> Option<AnyValue> {
    use any_value::Value as V;
    let first = args.first().and_then(|a| value(a, c));
    let int_arg = |i: usize| match args.get(i).and_then(|a| value(a, c))?.value? {
        V::IntValue(n) => Some(n),
        _ => None,
    };
    match f {
        ValueFn::Int => Some(any(V::IntValue(match first?.value? {
            V::IntValue(i) => i,
            V::DoubleValue(d) => d as i64,
            V::BoolValue(b) => i64::from(b),
            V::StringValue(s) => s.trim().parse::<i64>().ok()?,
            _ => return None,
        }))),
        ValueFn::Double => Some(any(V::DoubleValue(match first?.value? {
            V::IntValue(i) => i as f64,
            V::DoubleValue(d) => d,
            V::BoolValue(b) => f64::from(u8::from(b)),
            V::StringValue(s) => s.trim().parse::<f64>().ok()?,
            _ => return None,
        }))),
        ValueFn::String => {
            let v = first?;
            Some(string(match v.value.as_ref()? {
                V::StringValue(s) => s.clone(),
                V::KvlistValue(_) | V::ArrayValue(_) => {
                    crate::exporters::loki::json_value(&v).to_string()
                }
                _ => text_of(&v),
            }))
        }
        ValueFn::Len => Some(any(V::IntValue(match first?.value? {
            V::StringValue(s) => s.len() as i64,
            V::BytesValue(b) => b.len() as i64,
            V::ArrayValue(a) => a.values.len() as i64,
            V::KvlistValue(m) => m.values.len() as i64,
            _ => return None,
        }))),
        ValueFn::Substring => {
            let v = first?;
            let s = as_str(&v)?;
            let (start, len) = (
                usize::try_from(int_arg(1)?).ok()?,
                usize::try_from(int_arg(2)?).ok()?,
            );
            let end = start.checked_add(len)?;
            // Upstream slices bytes; a cut inside a character keeps the string UTF-8 with
            // U+FFFD where the broken character was.
            let bytes = s.as_bytes().get(start..end)?;
            Some(string(String::from_utf8_lossy(bytes).into_owned()))
        }
        ValueFn::Split => {
            let v = first?;
            let s = as_str(&v)?;
            let d = args.get(1).and_then(|a| value(a, c))?;
            let d = as_str(&d)?;
            Some(any(V::ArrayValue(ArrayValue {
                values: s.split(d).map(|x| string(x.to_string())).collect(),
            })))
        }
        ValueFn::ExtractPatterns(re) => {
            let v = first?;
            // No match: an empty map, as upstream.
            let Some(caps) = re.captures(as_str(&v)?) else {
                return Some(any(V::KvlistValue(KeyValueList::default())));
            };
            Some(any(V::KvlistValue(KeyValueList {
                values: re
                    .capture_names()
                    .flatten()
                    .filter_map(|n| {
                        caps.name(n).map(|m| KeyValue {
                            key: n.to_string(),
                            value: Some(string(m.as_str().to_string())),
                            ..Default::default()
                        })
                    })
                    .collect(),
            })))
        }
        ValueFn::Trim => {
            let v = first?;
            let cut = match args.get(1).and_then(|a| value(a, c)) {
                Some(x) => as_str(&x)?.to_string(),
                None => " ".to_string(),
            };
            Some(string(
                as_str(&v)?.trim_matches(|ch| cut.contains(ch)).to_string(),
            ))
        }
        ValueFn::Time(format) => {
            let v = first?;
            Some(any(V::IntValue(format.parse(as_str(&v)?)?)))
        }
        ValueFn::ParseKeyValue(kv, pair) => {
            let v = first?;
            let src = as_str(&v)?;
            let mut out: Vec<KeyValue> = Vec::new();
            // Key -> its entry: the last value of a repeated key wins in linear time.
            let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
            for p in split_quoted(src, pair)? {
                // A pair without the delimiter fails the whole parse, as upstream.
                let (k, v) = p.split_once(&**kv)?;
                let (k, v) = (k.trim(), v.trim());
                match at.get(k) {
                    Some(&i) => out[i].value = Some(string(v.to_string())),
                    None => {
                        at.insert(k.to_string(), out.len());
                        out.push(KeyValue {
                            key: k.to_string(),
                            value: Some(string(v.to_string())),
                            ..Default::default()
                        });
                    }
                }
            }
            Some(any(V::KvlistValue(KeyValueList { values: out })))
        }
        ValueFn::Uuid => {
            let mut b = [0u8; 16];
            getrandom::fill(&mut b).ok()?;
            b[6] = (b[6] & 0x0f) | 0x40; // version 4
            b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
            let h = hex(&b, false);
            Some(string(format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )))
        }
        ValueFn::Sha512 => {
            let v = first?;
            let digest = sha2::Sha512::digest(as_str(&v)?.as_bytes());
            Some(string(hex(&digest, false)))
        }
        ValueFn::Fnv => {
            let v = first?;
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in as_str(&v)?.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            // Go's int64(h.Sum64()).
            Some(any(V::IntValue(h as i64)))
        }
        ValueFn::Murmur3 => {
            let v = first?;
            let h = super::hash::murmur3_32(as_str(&v)?.as_bytes());
            Some(string(hex(&h.to_le_bytes(), false)))
        }
        ValueFn::Murmur3x128 => {
            let v = first?;
            let (h1, h2) = super::hash::murmur3_x64_128(as_str(&v)?.as_bytes());
            let mut b = h1.to_le_bytes().to_vec();
            b.extend_from_slice(&h2.to_le_bytes());
            Some(string(hex(&b, false)))
        }
        ValueFn::Format(format) => {
            let values: Vec<Option<AnyValue>> = args.iter().map(|a| value(a, c)).collect();
            Some(string(sprintf(format, &values)))
        }
        ValueFn::FormatTime(format) => match first?.value? {
            V::IntValue(t) => Some(string(format.format(t))),
            _ => None,
        },
        ValueFn::Unix => {
            let secs = int_arg(0)?;
            let nanos = if args.len() > 1 { int_arg(1)? } else { 0 };
            Some(any(V::IntValue(
                secs.checked_mul(1_000_000_000)?.checked_add(nanos)?,
            )))
        }
        ValueFn::UnixIn(unit) => Some(any(V::IntValue(int_arg(0)?.div_euclid(*unit)))),
        ValueFn::DurationIn(unit, float) => {
            let d = int_arg(0)?;
            Some(any(if *float {
                V::DoubleValue((d / unit) as f64 + (d % unit) as f64 / *unit as f64)
            } else {
                V::IntValue(d / unit)
            }))
        }
        ValueFn::TruncateTime => {
            let (t, d) = (int_arg(0)?, int_arg(1)?);
            if d <= 0 {
                return Some(any(V::IntValue(t)));
            }
            // Multiples of `d` since Go's zero time (January 1, year 1, UTC), as upstream.
            const ZERO_TO_UNIX: i128 = 62_135_596_800 * 1_000_000_000;
            let abs = i128::from(t) + ZERO_TO_UNIX;
            let cut = abs - abs.rem_euclid(i128::from(d)) - ZERO_TO_UNIX;
            Some(any(V::IntValue(i64::try_from(cut).ok()?)))
        }
        ValueFn::Hex => {
            // Nil is no bytes (upstream's byte-slice getter), not an error.
            let Some(v) = first else {
                return Some(string(String::new()));
            };
            let bytes: Vec<u8> = match v.value? {
                V::StringValue(s) => s.into_bytes(),
                V::BytesValue(b) => b,
                V::IntValue(i) => i.to_be_bytes().to_vec(),
                V::DoubleValue(d) => d.to_bits().to_be_bytes().to_vec(),
                V::BoolValue(b) => vec![u8::from(b)],
                _ => return None,
            };
            Some(string(bytes.iter().map(|b| format!("{b:02x}")).collect()))
        }
        ValueFn::ParseJson => {
            let v = first?;
            let j: serde_json::Value = serde_json::from_str(as_str(&v)?).ok()?;
            match j {
                serde_json::Value::Object(_) | serde_json::Value::Array(_) => Some(from_json(&j)),
                _ => None,
            }
        }
    }
}

fn map_mut<'m>(field: Field, it: &'m mut Item<'_>) -> Option<&'m mut Vec<KeyValue>> {
    Some(match field {
        Field::ResourceAttrs => &mut it.resource.get_or_insert_with(Resource::default).attributes,
        Field::ScopeAttrs => {
            &mut it
                .scope
                .as_deref_mut()?
                .get_or_insert_with(InstrumentationScope::default)
                .attributes
        }
        Field::SpanAttrs => &mut it.span.as_deref_mut()?.attributes,
        Field::EventAttrs => &mut it.event.as_deref_mut()?.attributes,
        Field::LogAttrs => &mut it.log.as_deref_mut()?.attributes,
        Field::PointAttrs => it.point_attrs.as_deref_mut()?,
        _ => return None,
    })
}

fn key_of(p: &Path) -> Option<&str> {
    match p.keys.first() {
        Some(Key::Str(k)) => Some(k),
        _ => None,
    }
}

/// The string field a path names, for the string editors; `None` if it is not a string.
fn string_mut<'m>(p: &Path, it: &'m mut Item<'_>) -> Option<&'m mut String> {
    if let Some(k) = key_of(p) {
        let map = map_mut(p.field, it)?;
        let kv = map.iter_mut().find(|kv| kv.key == k)?;
        return match kv.value.as_mut()?.value.as_mut()? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        };
    }
    Some(match p.field {
        Field::SpanName => &mut it.span.as_deref_mut()?.name,
        Field::SpanStatusMessage => {
            &mut it
                .span
                .as_deref_mut()?
                .status
                .get_or_insert_with(Status::default)
                .message
        }
        Field::EventName => &mut it.event.as_deref_mut()?.name,
        Field::LogSeverityText => &mut it.log.as_deref_mut()?.severity_text,
        Field::LogBody => match it.log.as_deref_mut()?.body.as_mut()?.value.as_mut()? {
            any_value::Value::StringValue(s) => s,
            _ => return None,
        },
        Field::MetricName => &mut it.metric.as_deref_mut()?.name,
        Field::MetricDescription => &mut it.metric.as_deref_mut()?.description,
        Field::MetricUnit => &mut it.metric.as_deref_mut()?.unit,
        Field::ScopeName => {
            &mut it
                .scope
                .as_deref_mut()?
                .get_or_insert_with(InstrumentationScope::default)
                .name
        }
        Field::ScopeVersion => {
            &mut it
                .scope
                .as_deref_mut()?
                .get_or_insert_with(InstrumentationScope::default)
                .version
        }
        _ => return None,
    })
}

fn set(p: &Path, v: AnyValue, it: &mut Item<'_>) {
    if let Some(k) = key_of(p) {
        let Some(map) = map_mut(p.field, it) else {
            return;
        };
        match map.iter_mut().find(|kv| kv.key == k) {
            Some(kv) => kv.value = Some(v),
            None => map.push(KeyValue {
                key: k.to_string(),
                value: Some(v),
                ..Default::default()
            }),
        }
        return;
    }
    match p.field {
        Field::LogBody => {
            if let Some(l) = it.log.as_deref_mut() {
                l.body = Some(v);
            }
        }
        Field::LogSeverityNumber => {
            if let (Some(l), Some(any_value::Value::IntValue(n))) =
                (it.log.as_deref_mut(), v.value.as_ref())
            {
                l.severity_number = i32::try_from(*n).unwrap_or(l.severity_number);
            }
        }
        Field::LogTime
        | Field::LogTimeValue
        | Field::LogObservedTime
        | Field::LogObservedTimeValue
        | Field::SpanStart
        | Field::SpanEnd
        | Field::SpanStartTime
        | Field::SpanEndTime
        | Field::EventTime
        | Field::EventTimeValue => {
            // Unix nanoseconds (times are written as such); a value of another type, or
            // before 1970, leaves the field alone.
            let Some(any_value::Value::IntValue(n)) = v.value else {
                return;
            };
            let Ok(n) = u64::try_from(n) else { return };
            let field = match p.field {
                Field::LogTime | Field::LogTimeValue => {
                    it.log.as_deref_mut().map(|l| &mut l.time_unix_nano)
                }
                Field::LogObservedTime | Field::LogObservedTimeValue => it
                    .log
                    .as_deref_mut()
                    .map(|l| &mut l.observed_time_unix_nano),
                Field::SpanStart | Field::SpanStartTime => {
                    it.span.as_deref_mut().map(|s| &mut s.start_time_unix_nano)
                }
                Field::SpanEnd | Field::SpanEndTime => {
                    it.span.as_deref_mut().map(|s| &mut s.end_time_unix_nano)
                }
                _ => it.event.as_deref_mut().map(|e| &mut e.time_unix_nano),
            };
            if let Some(f) = field {
                *f = n;
            }
        }
        _ => {
            // The string fields: a value of another type leaves them alone (upstream).
            if let Some(s) = as_str(&v) {
                let s = s.to_string();
                if let Some(f) = string_mut(p, it) {
                    *f = s;
                }
            }
        }
    }
}

/// Cuts `s` to at most `n` bytes on a character boundary (upstream cuts bytes; a string must
/// stay UTF-8 to be encoded again).
fn truncate(s: &mut String, n: usize) {
    if s.len() > n {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

pub(crate) fn apply(st: &Statement, value: Option<AnyValue>, it: &mut Item<'_>) {
    match &st.editor {
        Editor::Set(p, _) => {
            if let Some(v) = value {
                set(p, v, it);
            }
        }
        Editor::DeleteKey(f, k) => {
            if let Some(m) = map_mut(*f, it) {
                m.retain(|kv| kv.key != **k);
            }
        }
        Editor::DeleteMatchingKeys(f, re) => {
            if let Some(m) = map_mut(*f, it) {
                m.retain(|kv| !re.is_match(&kv.key));
            }
        }
        Editor::KeepKeys(f, keys) => {
            if let Some(m) = map_mut(*f, it) {
                m.retain(|kv| keys.iter().any(|k| **k == kv.key));
            }
        }
        Editor::KeepMatchingKeys(f, re) => {
            if let Some(m) = map_mut(*f, it) {
                m.retain(|kv| re.is_match(&kv.key));
            }
        }
        Editor::ReplacePattern(p, re, with) => {
            if let Some(s) = string_mut(p, it) {
                if re.is_match(s) {
                    *s = re.replace_all(s, &**with).into_owned();
                }
            }
        }
        Editor::ReplaceMatch(p, glob, with) => {
            if let Some(s) = string_mut(p, it) {
                if glob.is_match(s) {
                    *s = with.to_string();
                }
            }
        }
        Editor::ReplaceAllPatterns(f, keys, re, with) => {
            if let Some(m) = map_mut(*f, it) {
                for kv in m.iter_mut() {
                    if *keys {
                        if re.is_match(&kv.key) {
                            kv.key = re.replace_all(&kv.key, &**with).into_owned();
                        }
                    } else if let Some(any_value::Value::StringValue(s)) =
                        kv.value.as_mut().and_then(|v| v.value.as_mut())
                    {
                        if re.is_match(s) {
                            *s = re.replace_all(s, &**with).into_owned();
                        }
                    }
                }
            }
        }
        Editor::ReplaceAllMatches(f, glob, with) => {
            if let Some(m) = map_mut(*f, it) {
                for kv in m.iter_mut() {
                    if let Some(any_value::Value::StringValue(s)) =
                        kv.value.as_mut().and_then(|v| v.value.as_mut())
                    {
                        if glob.is_match(s) {
                            *s = with.to_string();
                        }
                    }
                }
            }
        }
        Editor::TruncateAll(f, n) => {
            if let Some(m) = map_mut(*f, it) {
                for kv in m.iter_mut() {
                    if let Some(any_value::Value::StringValue(s)) =
                        kv.value.as_mut().and_then(|v| v.value.as_mut())
                    {
                        truncate(s, *n);
                    }
                }
            }
        }
        Editor::MergeMaps(f, _, strategy) => {
            let Some(any_value::Value::KvlistValue(src)) = value.and_then(|v| v.value) else {
                // The source is not a map: an error upstream.
                failed::<()>();
                return;
            };
            if let Some(m) = map_mut(*f, it) {
                for kv in src.values {
                    match (m.iter_mut().find(|x| x.key == kv.key), &**strategy) {
                        (Some(x), "update" | "upsert") => x.value = kv.value,
                        (None, "insert" | "upsert") => m.push(kv),
                        _ => {}
                    }
                }
            }
        }
        Editor::Append(p, _) => {
            let Some(v) = value else { return };
            let Some(k) = key_of(p) else { return };
            let Some(m) = map_mut(p.field, it) else {
                return;
            };
            match m.iter_mut().find(|kv| kv.key == k) {
                None => m.push(KeyValue {
                    key: k.to_string(),
                    value: Some(any(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![v],
                    }))),
                    ..Default::default()
                }),
                Some(kv) => {
                    let old = kv.value.take().unwrap_or_default();
                    let values = match old.value {
                        Some(any_value::Value::ArrayValue(mut a)) => {
                            a.values.push(v);
                            a.values
                        }
                        None => vec![v],
                        Some(other) => vec![any(other), v],
                    };
                    kv.value = Some(any(any_value::Value::ArrayValue(ArrayValue { values })));
                }
            }
        }
        Editor::Flatten(f, prefix, depth) => {
            if let Some(m) = map_mut(*f, it) {
                let mut out = Vec::with_capacity(m.len());
                for kv in std::mem::take(m) {
                    let key = if prefix.is_empty() {
                        kv.key
                    } else {
                        format!("{prefix}.{}", kv.key)
                    };
                    flatten_into(&mut out, key, kv.value.unwrap_or_default(), *depth);
                }
                *m = out;
            }
        }
        Editor::Limit(f, n, priority) => {
            if let Some(m) = map_mut(*f, it) {
                if m.len() > *n {
                    // Priority keys first (in the list's order), then the rest in order.
                    let mut keep: Vec<bool> = vec![false; m.len()];
                    let mut left = *n;
                    for k in priority {
                        if left == 0 {
                            break;
                        }
                        if let Some(i) = m.iter().position(|kv| kv.key == **k) {
                            if !keep[i] {
                                keep[i] = true;
                                left -= 1;
                            }
                        }
                    }
                    for flag in keep.iter_mut() {
                        if left == 0 {
                            break;
                        }
                        if !*flag {
                            *flag = true;
                            left -= 1;
                        }
                    }
                    let mut it2 = keep.into_iter();
                    m.retain(|_| it2.next().unwrap_or(false));
                }
            }
        }
    }
}

/// The `index`-th data point's attributes of a metric, mutably.
pub(crate) fn point_attrs_mut(m: &mut Metric, index: usize) -> Option<&mut Vec<KeyValue>> {
    Some(match m.data.as_mut()? {
        metric::Data::Gauge(g) => &mut g.data_points.get_mut(index)?.attributes,
        metric::Data::Sum(s) => &mut s.data_points.get_mut(index)?.attributes,
        metric::Data::Histogram(h) => &mut h.data_points.get_mut(index)?.attributes,
        metric::Data::ExponentialHistogram(h) => &mut h.data_points.get_mut(index)?.attributes,
        metric::Data::Summary(s) => &mut s.data_points.get_mut(index)?.attributes,
    })
}

/// Upstream's flatten: nested maps become `parent.child` keys and lists `parent.0`,
/// `parent.1`, down to `depth` levels (unlimited when absent).
fn flatten_into(out: &mut Vec<KeyValue>, key: String, v: AnyValue, depth: Option<usize>) {
    if depth == Some(0) {
        out.push(KeyValue {
            key,
            value: Some(v),
            ..Default::default()
        });
        return;
    }
    let next = depth.map(|d| d - 1);
    match v.value {
        Some(any_value::Value::KvlistValue(m)) => {
            for kv in m.values {
                flatten_into(
                    out,
                    format!("{key}.{}", kv.key),
                    kv.value.unwrap_or_default(),
                    next,
                );
            }
        }
        Some(any_value::Value::ArrayValue(a)) => {
            for (i, x) in a.values.into_iter().enumerate() {
                flatten_into(out, format!("{key}.{i}"), x, next);
            }
        }
        value => out.push(KeyValue {
            key,
            value: Some(AnyValue { value }),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod case_tests {
    use super::{any_value::Value as V, sprintf, to_camel, to_snake, AnyValue};

    /// Go's fmt.Sprintf on the values upstream's getters give.
    #[test]
    fn sprintf_as_go() {
        let v = |x: V| Some(AnyValue { value: Some(x) });
        let s = |x: &str| v(V::StringValue(x.into()));
        let i = |x: i64| v(V::IntValue(x));
        let f = |x: f64| v(V::DoubleValue(x));
        for (fmt, args, want) in [
            ("%02d", vec![i(1)], "01"),
            ("%s %s", vec![s("a"), s("b")], "a b"),
            ("%s-%d", vec![s("x"), i(5)], "x-5"),
            ("%d", vec![s("x")], "%!d(string=x)"),
            ("%s", vec![], "%!s(MISSING)"),
            ("%s", vec![s("a"), s("b")], "a%!(EXTRA string=b)"),
            (
                "%v|%v|%v",
                vec![f(1.5), f(1e21), f(0.00001)],
                "1.5|1e+21|1e-05",
            ),
            ("%.2f|%f", vec![f(1.23456), f(-2.0)], "1.23|-2.000000"),
            ("%5s|%-5s|", vec![s("a"), s("b")], "    a|b    |"),
            ("%x|%X", vec![s("hi"), i(255)], "6869|FF"),
            ("%q", vec![s("a\"b")], "\"a\\\"b\""),
            ("%v|%s", vec![None, None], "<nil>|%!s(<nil>)"),
            ("%t|%v", vec![v(V::BoolValue(true)), i(-3)], "true|-3"),
            ("%+d|%05d|% d", vec![i(5), i(-42), i(7)], "+5|-0042| 7"),
            ("100%% of %s", vec![s("it")], "100% of it"),
            ("%.1s", vec![s("abc")], "a"),
            ("%e", vec![f(1234.5678)], "1.234568e+03"),
        ] {
            assert_eq!(sprintf(fmt, &args), want, "{fmt}");
        }
    }

    /// strcase's own cases (upstream's ConvertCase and To*Case use it).
    #[test]
    fn snake_and_camel_as_strcase() {
        for (i, o) in [
            ("AnyKind of_string", "any_kind_of_string"),
            ("numbers2And55with000", "numbers_2_and_55_with_000"),
            ("JSONData", "json_data"),
            ("userID", "user_id"),
            ("AAAbbb", "aa_abbb"),
            ("1A2", "1_a_2"),
            ("A1B", "a_1_b"),
            ("A1 A2 A3", "a_1_a_2_a_3"),
            ("AB1AB2AB3", "ab_1_ab_2_ab_3"),
            (" some string", "some_string"),
            ("http.server-duration", "http_server_duration"),
        ] {
            assert_eq!(to_snake(i), o, "{i}");
        }
        for (i, o) in [
            ("test_case", "TestCase"),
            ("test.case", "TestCase"),
            (" test  case ", "TestCase"),
            ("", ""),
            ("AnyKind of_string", "AnyKindOfString"),
            ("odd-fix", "OddFix"),
            ("numbers2And55with000", "Numbers2And55With000"),
            ("ID", "Id"),
        ] {
            assert_eq!(to_camel(i), o, "{i}");
        }
    }
}
