//! Recursive-descent parser from tokens to a resolved expression tree.
//!
//! Grammar (upstream pkg/ottl/grammar.go, `booleanExpression`/`term`/`booleanValue`):
//!
//! ```text
//! expr   := term ("or" term)*
//! term   := bvalue ("and" bvalue)*
//! bvalue := "not"? ( operand CMP operand | "true" | "false" | Converter(...) | "(" expr ")" )
//! ```
//!
//! Paths, enum symbols and converters are resolved here, against the context, so evaluation
//! never looks at a name.

use super::lexer::{err, tokenize, CmpOp, Tok, Token};
use super::{ContextKind, ParseError};

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Const(bool),
    Cmp(Operand, CmpOp, Operand),
    Call(Box<Converter>),
}

#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Lit(Lit),
    Path(Path),
    Call(Box<Converter>),
    /// A converter that makes a value (`Len(x)`, `SHA256(x)`, ...).
    Value(Box<Arg>),
    /// `a + b`, `a - b`, `a * b`, `a / b`.
    Math(Box<(Operand, u8, Operand)>),
    /// `Now()`.
    Now,
}

/// The converters that make a value rather than a test.
pub(crate) const VALUE_CONVERTERS: &[&str] = &[
    "SHA256",
    "Concat",
    "ConvertCase",
    "Int",
    "Double",
    "String",
    "Len",
    "Substring",
    "Split",
    "ExtractPatterns",
    "ParseJSON",
    "Trim",
    "Hex",
    "Time",
    "ToLowerCase",
    "ToUpperCase",
    "ToSnakeCase",
    "ToCamelCase",
    "Unix",
    "UnixSeconds",
    "UnixMilli",
    "UnixMicro",
    "UnixNano",
    "Nanoseconds",
    "Microseconds",
    "Milliseconds",
    "Seconds",
    "Minutes",
    "Hours",
    "FormatTime",
    "TruncateTime",
    "ParseKeyValue",
    "Format",
    "SHA512",
    "FNV",
    "Murmur3Hash",
    "Murmur3Hash128",
    "UUID",
];

#[derive(Debug, Clone)]
pub(crate) enum Lit {
    Nil,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(Box<str>),
    Bytes(Box<[u8]>),
    /// `Duration("1s")`, in nanoseconds.
    Duration(i64),
}

// The variants are named after the OTTL converters they implement.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone)]
pub(crate) enum Converter {
    IsMatch(Operand, regex::Regex),
    IsString(Operand),
    IsInt(Operand),
    IsBool(Operand),
    IsDouble(Operand),
    IsMap(Operand),
    IsList(Operand),
    /// `IsRootSpan()`: the span has no parent (span context).
    IsRootSpan,
    /// The filter processor's: whether the first data point with the key has it (metric
    /// context).
    HasAttrKeyOnDatapoint(Box<str>),
    /// The filter processor's: whether the first data point with the key has it with this
    /// string value (metric context).
    HasAttrOnDatapoint(Box<str>, Box<str>),
}

#[derive(Debug, Clone)]
pub(crate) enum Key {
    Str(Box<str>),
    Int(i64),
}

/// A path resolved to the field it reads; `keys` index into maps and lists.
#[derive(Debug, Clone)]
pub(crate) struct Path {
    pub field: Field,
    pub keys: Box<[Key]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    ResourceAttrs,
    /// `request["header"]`: the client's request headers / gRPC metadata (routing).
    RequestHeaders,
    ResourceDroppedAttrs,
    ScopeName,
    ScopeVersion,
    ScopeAttrs,
    ScopeDroppedAttrs,
    SpanName,
    SpanKind,
    SpanStatusCode,
    SpanStatusMessage,
    SpanTraceId,
    SpanSpanId,
    SpanParentSpanId,
    SpanTraceState,
    SpanStart,
    SpanEnd,
    SpanAttrs,
    SpanDroppedAttrs,
    SpanDroppedEvents,
    SpanDroppedLinks,
    SpanFlags,
    EventName,
    EventTime,
    EventAttrs,
    EventDroppedAttrs,
    LogBody,
    LogSeverityNumber,
    LogSeverityText,
    LogTime,
    LogObservedTime,
    LogTraceId,
    LogSpanId,
    LogFlags,
    LogAttrs,
    LogDroppedAttrs,
    LogEventName,
    /// Ids as bytes (`trace_id`, compared with `TraceID(0x...)`).
    SpanTraceIdBytes,
    SpanSpanIdBytes,
    SpanParentIdBytes,
    LogTraceIdBytes,
    LogSpanIdBytes,
    /// Times as time values (`start_time`, `end_time`, `time`, `observed_time`).
    SpanStartTime,
    SpanEndTime,
    EventTimeValue,
    LogTimeValue,
    LogObservedTimeValue,
    PointStartTime,
    PointTimeValue,
    MetricName,
    MetricDescription,
    MetricUnit,
    MetricType,
    MetricTemporality,
    MetricMonotonic,
    PointAttrs,
    PointStart,
    PointTime,
    PointValueDouble,
    PointValueInt,
    PointFlags,
    PointCount,
    PointSum,
    PointScale,
    PointZeroCount,
}

impl Field {
    fn indexable(self) -> bool {
        matches!(
            self,
            Field::ResourceAttrs
                | Field::RequestHeaders
                | Field::ScopeAttrs
                | Field::SpanAttrs
                | Field::EventAttrs
                | Field::LogAttrs
                | Field::LogBody
                | Field::PointAttrs
        )
    }
}

pub(crate) fn parse(src: &str, ctx: ContextKind) -> Result<Expr, ParseError> {
    parse_whole(src, ctx, "condition", Parser::expr)
}

/// Runs `what` over all of `src`: an empty source or anything left after it is an error.
fn parse_whole<'s, T>(
    src: &'s str,
    ctx: ContextKind,
    kind: &str,
    what: impl FnOnce(&mut Parser<'s>) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let toks = tokenize(src)?;
    if toks.is_empty() {
        return Err(err(src, 0, format!("empty {kind}")));
    }
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        ctx,
        depth: 0,
    };
    let out = what(&mut p)?;
    if let Some(t) = p.peek() {
        return Err(p.error_at(
            t.start,
            format!(
                "unexpected {} after the end of the {kind}",
                describe(src, t)
            ),
        ));
    }
    Ok(out)
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token>,
    pos: usize,
    ctx: ContextKind,
    /// Parentheses and converter calls open now: bounded, so a hostile condition cannot
    /// exhaust the stack of this recursive parser.
    depth: usize,
}

/// How deep parentheses and converter calls may nest.
pub(crate) const MAX_NESTING: usize = 64;

fn describe(src: &str, t: &Token) -> String {
    format!("{:?}", src.get(t.start..t.end).unwrap_or(""))
}

impl<'s> Parser<'s> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn peek_tok(&self) -> Option<&Tok> {
        self.peek().map(|t| &t.tok)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn error_at(&self, byte: usize, msg: impl Into<String>) -> ParseError {
        err(self.src, byte, msg)
    }

    fn end(&self) -> usize {
        self.src.len()
    }

    /// Error at the current token (or the end of input) saying what was expected.
    fn expected(&self, what: &str) -> ParseError {
        match self.peek() {
            Some(t) => self.error_at(
                t.start,
                format!("expected {what}, got {}", describe(self.src, t)),
            ),
            None => self.error_at(self.end(), format!("expected {what}, got end of condition")),
        }
    }

    fn text(&self, start: usize, end: usize) -> &'s str {
        self.src.get(start..end).unwrap_or("")
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.term()?];
        while self.peek_tok() == Some(&Tok::Or) {
            self.pos += 1;
            terms.push(self.term()?);
        }
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or(Expr::Const(false))
        } else {
            Expr::Or(terms)
        })
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut vals = vec![self.bvalue()?];
        while self.peek_tok() == Some(&Tok::And) {
            self.pos += 1;
            vals.push(self.bvalue()?);
        }
        Ok(if vals.len() == 1 {
            vals.pop().unwrap_or(Expr::Const(false))
        } else {
            Expr::And(vals)
        })
    }

    fn bvalue(&mut self) -> Result<Expr, ParseError> {
        if self.peek_tok() == Some(&Tok::Not) {
            self.pos += 1;
            if self.peek_tok() == Some(&Tok::Not) {
                return Err(self.expected("a condition after \"not\""));
            }
            return Ok(Expr::Not(Box::new(self.bvalue_inner()?)));
        }
        self.bvalue_inner()
    }

    /// Enters one level of nesting at the token at `at`, or refuses past [`MAX_NESTING`].
    fn nest(&mut self, at: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error_at(
                at,
                format!("the condition nests parentheses and calls more than {MAX_NESTING} deep"),
            ));
        }
        Ok(())
    }

    /// `term (("+"|"-") term)*`: an operand, or math on operands.
    fn math(&mut self) -> Result<Operand, ParseError> {
        let mut left = self.math_term()?;
        while let Some(op) = self.math_op(b"+-") {
            self.pos += 1;
            let right = self.math_term()?;
            left = Operand::Math(Box::new((left, op, right)));
        }
        Ok(left)
    }

    fn math_term(&mut self) -> Result<Operand, ParseError> {
        let mut left = self.math_factor()?;
        while let Some(op) = self.math_op(b"*/") {
            self.pos += 1;
            let right = self.math_factor()?;
            left = Operand::Math(Box::new((left, op, right)));
        }
        Ok(left)
    }

    fn math_factor(&mut self) -> Result<Operand, ParseError> {
        if self.peek_tok() == Some(&Tok::LParen) {
            let at = self.peek().map_or(0, |t| t.start);
            self.nest(at)?;
            self.pos += 1;
            let inner = self.math()?;
            if self.peek_tok() != Some(&Tok::RParen) {
                return Err(self.expected("\")\""));
            }
            self.pos += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        self.operand()
    }

    /// The next token's math operator, if it is one of `ops`.
    fn math_op(&self, ops: &[u8]) -> Option<u8> {
        let t = self.peek()?;
        if t.tok != Tok::Math {
            return None;
        }
        let c = *self.src.as_bytes().get(t.start)?;
        ops.contains(&c).then_some(c)
    }

    fn bvalue_inner(&mut self) -> Result<Expr, ParseError> {
        if self.peek_tok() == Some(&Tok::LParen) {
            // A parenthesised condition, or a parenthesised math operand of a comparison
            // (`(end_time - start_time) < Duration("1s")`): try the first, else the second.
            // The first reading is kept, not parsed again, so nested parentheses cost
            // quadratic time, not exponential.
            let (pos, depth) = (self.pos, self.depth);
            let first = self.paren_condition();
            let after = (self.pos, self.depth);
            if first.is_ok() && !matches!(self.peek_tok(), Some(Tok::Cmp(_)) | Some(Tok::Math)) {
                return first;
            }
            self.pos = pos;
            self.depth = depth;
            let left = self.math()?;
            return match self.peek_tok() {
                Some(Tok::Cmp(op)) => {
                    let op = *op;
                    self.pos += 1;
                    let right = self.math()?;
                    Ok(Expr::Cmp(left, op, right))
                }
                _ => {
                    // Neither reading works: report the condition's own error.
                    (self.pos, self.depth) = after;
                    first
                }
            };
        }
        self.bvalue_rest()
    }

    fn paren_condition(&mut self) -> Result<Expr, ParseError> {
        {
            let at = self.peek().map_or(0, |t| t.start);
            self.nest(at)?;
            self.pos += 1;
            let e = self.expr()?;
            self.depth -= 1;
            if self.peek_tok() != Some(&Tok::RParen) {
                return Err(self.expected("\")\""));
            }
            self.pos += 1;
            Ok(e)
        }
    }

    fn bvalue_rest(&mut self) -> Result<Expr, ParseError> {
        let start = match self.peek() {
            Some(t) => t.start,
            None => return Err(self.expected("a condition")),
        };
        let left = self.math()?;
        let left_end = self.toks.get(self.pos - 1).map_or(self.end(), |t| t.end);
        if let Some(Tok::Cmp(op)) = self.peek_tok() {
            let op = *op;
            self.pos += 1;
            let right = self.math()?;
            return Ok(Expr::Cmp(left, op, right));
        }
        match left {
            Operand::Lit(Lit::Bool(b)) => Ok(Expr::Const(b)),
            Operand::Call(c) => Ok(Expr::Call(c)),
            Operand::Path(_) => {
                let text = self.text(start, left_end);
                Err(self.after_operand_error(&format!("path {text:?}")))
            }
            Operand::Lit(_) | Operand::Value(_) | Operand::Math(_) | Operand::Now => {
                let text = self.text(start, left_end);
                Err(self.after_operand_error(&format!("value {text:?}")))
            }
        }
    }

    fn after_operand_error(&self, what: &str) -> ParseError {
        match self.peek() {
            Some(t) => self.error_at(
                t.start,
                format!("expected a comparison operator after {what}"),
            ),
            None => self.error_at(
                self.end(),
                format!("expected a comparison operator after {what}"),
            ),
        }
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let Some(t) = self.next() else {
            return Err(self.expected("a value"));
        };
        let op = match t.tok {
            Tok::Str(s) => Operand::Lit(Lit::Str(s.into())),
            Tok::Int(i) => Operand::Lit(Lit::Int(i)),
            Tok::Float(f) => Operand::Lit(Lit::Double(f)),
            Tok::Bytes(b) => Operand::Lit(Lit::Bytes(b.into())),
            Tok::True => Operand::Lit(Lit::Bool(true)),
            Tok::False => Operand::Lit(Lit::Bool(false)),
            Tok::Nil => Operand::Lit(Lit::Nil),
            Tok::Func | Tok::Enum if VALUE_CONVERTERS.contains(&self.text(t.start, t.end)) => {
                self.pos -= 1;
                Operand::Value(Box::new(self.arg()?))
            }
            Tok::Enum => {
                let name = self.text(t.start, t.end);
                match enum_value(self.ctx, name) {
                    Some(v) => Operand::Lit(Lit::Int(v)),
                    None => {
                        return Err(self.error_at(
                            t.start,
                            format!(
                                "unknown enum symbol {name:?} in the {} context",
                                self.ctx.name()
                            ),
                        ))
                    }
                }
            }
            Tok::Func if self.text(t.start, t.end) == "Duration" => {
                let args = self.call_args(&t, "Duration")?;
                match args.as_slice() {
                    [(Arg::Op(Operand::Lit(Lit::Str(d))), at)] => {
                        let nanos = crate::config::units::parse_duration(d)
                            .ok()
                            .and_then(|d| i64::try_from(d.as_nanos()).ok())
                            .ok_or_else(|| self.error_at(*at, format!("invalid duration {d:?}")))?;
                        Operand::Lit(Lit::Duration(nanos))
                    }
                    _ => {
                        return Err(self.error_at(
                            t.start,
                            "Duration takes one string literal in weir (Duration(\"1s\"))",
                        ))
                    }
                }
            }
            Tok::Func if matches!(self.text(t.start, t.end), "TraceID" | "SpanID") => {
                let name = self.text(t.start, t.end);
                let want = if name == "TraceID" { 16 } else { 8 };
                let args = self.call_args(&t, name)?;
                match args.as_slice() {
                    [(Arg::Op(Operand::Lit(Lit::Bytes(b))), _)] if b.len() == want => {
                        Operand::Lit(Lit::Bytes(b.clone()))
                    }
                    _ => {
                        return Err(self.error_at(
                            t.start,
                            format!(
                                "{name} takes {want} bytes, e.g. {name}(0x{})",
                                "00".repeat(want)
                            ),
                        ))
                    }
                }
            }
            Tok::Func if self.text(t.start, t.end) == "Now" => {
                let args = self.call_args(&t, "Now")?;
                if !args.is_empty() {
                    return Err(self.error_at(t.start, "Now takes no arguments"));
                }
                Operand::Now
            }
            Tok::Func => Operand::Call(Box::new(self.converter(&t)?)),
            Tok::Lower => {
                if self.peek_tok() == Some(&Tok::LParen) {
                    let name = self.text(t.start, t.end);
                    return Err(self.error_at(
                        t.start,
                        format!(
                            "converter names must start with an uppercase letter but got {name:?}"
                        ),
                    ));
                }
                Operand::Path(self.path(&t)?)
            }
            Tok::Math => {
                return Err(self.error_at(
                    t.start,
                    format!("expected a value, got {}", describe(self.src, &t)),
                ))
            }
            Tok::LBracket | Tok::LBrace => {
                return Err(self.error_at(
                    t.start,
                    "list and map literals are not supported in conditions",
                ))
            }
            _ => {
                self.pos -= 1;
                return Err(self.expected("a value"));
            }
        };
        if self.peek_tok() == Some(&Tok::LBracket) && !matches!(op, Operand::Path(_)) {
            let b = self.peek().map_or(self.end(), |t| t.start);
            return Err(self.error_at(b, "only paths may be indexed here"));
        }
        Ok(op)
    }

    fn keys(&mut self) -> Result<Vec<Key>, ParseError> {
        let mut keys = Vec::new();
        while self.peek_tok() == Some(&Tok::LBracket) {
            self.pos += 1;
            let key = match self.peek_tok() {
                Some(Tok::Str(s)) => Key::Str(s.as_str().into()),
                Some(Tok::Int(i)) => Key::Int(*i),
                _ => return Err(self.expected("a string or integer key")),
            };
            self.pos += 1;
            if self.peek_tok() != Some(&Tok::RBracket) {
                return Err(self.expected("\"]\""));
            }
            self.pos += 1;
            keys.push(key);
        }
        Ok(keys)
    }

    /// `first` is the already consumed first segment.
    fn path(&mut self, first: &Token) -> Result<Path, ParseError> {
        let mut segs: Vec<&'s str> = vec![self.text(first.start, first.end)];
        let mut keys = self.keys()?;
        while keys.is_empty() && self.peek_tok() == Some(&Tok::Dot) {
            self.pos += 1;
            match self.peek() {
                Some(t) if t.tok == Tok::Lower => {
                    let seg = self.text(t.start, t.end);
                    segs.push(seg);
                    self.pos += 1;
                }
                _ => return Err(self.expected("a path segment after \".\"")),
            }
            keys = self.keys()?;
        }
        let end = self.toks.get(self.pos - 1).map_or(self.end(), |t| t.end);
        if self.peek_tok() == Some(&Tok::Dot) {
            let b = self.peek().map_or(self.end(), |t| t.start);
            return Err(self.error_at(b, "only the last segment of a path may be indexed"));
        }
        let text = self.text(first.start, end);
        let Some(field) = resolve(self.ctx, &segs) else {
            return Err(self.error_at(
                first.start,
                format!("unknown path {text:?} in the {} context", self.ctx.name()),
            ));
        };
        if !keys.is_empty() && !field.indexable() {
            return Err(self.error_at(first.start, format!("path {text:?} cannot be indexed")));
        }
        Ok(Path {
            field,
            keys: keys.into(),
        })
    }

    fn converter(&mut self, name_tok: &Token) -> Result<Converter, ParseError> {
        let name = self.text(name_tok.start, name_tok.end);
        let arity = match name {
            "IsMatch" => 2,
            "IsString" | "IsInt" | "IsBool" | "IsDouble" | "IsMap" | "IsList" => 1,
            "HasAttrKeyOnDatapoint" | "HasAttrOnDatapoint" if self.ctx != ContextKind::Metric => {
                return Err(self.error_at(
                    name_tok.start,
                    format!("{name} is only available in the metric context"),
                ))
            }
            "HasAttrKeyOnDatapoint" => 1,
            "HasAttrOnDatapoint" => 2,
            "IsRootSpan" if self.ctx != ContextKind::Span => {
                return Err(self.error_at(
                    name_tok.start,
                    "IsRootSpan is only available in the span context",
                ))
            }
            "IsRootSpan" => 0,
            _ => {
                return Err(self.error_at(name_tok.start, format!("unsupported function {name:?}")))
            }
        };
        if self.peek_tok() != Some(&Tok::LParen) {
            return Err(self.expected(&format!("\"(\" after {name:?}")));
        }
        self.nest(name_tok.start)?;
        self.pos += 1;
        let mut args: Vec<(Operand, usize)> = Vec::new();
        if self.peek_tok() != Some(&Tok::RParen) {
            loop {
                let at = self.peek().map_or(self.end(), |t| t.start);
                if let (Some(Tok::Lower), Some(Tok::Assign)) =
                    (self.peek_tok(), self.toks.get(self.pos + 1).map(|t| &t.tok))
                {
                    return Err(self.error_at(at, "named arguments are not supported"));
                }
                args.push((self.operand()?, at));
                match self.peek_tok() {
                    Some(Tok::Comma) => self.pos += 1,
                    Some(Tok::RParen) => break,
                    _ => return Err(self.expected("\",\" or \")\"")),
                }
            }
        }
        self.pos += 1; // the ")"
        self.depth -= 1;
        if args.len() != arity {
            return Err(self.error_at(
                name_tok.start,
                format!(
                    "{name} expects {arity} argument{}, got {}",
                    if arity == 1 { "" } else { "s" },
                    args.len()
                ),
            ));
        }
        if name == "IsRootSpan" {
            return Ok(Converter::IsRootSpan);
        }
        if name.starts_with("HasAttr") {
            let mut lits = Vec::new();
            for (a, at) in args {
                match a {
                    Operand::Lit(Lit::Str(s)) => lits.push(s),
                    _ => {
                        return Err(
                            self.error_at(at, format!("the arguments of {name} must be strings"))
                        )
                    }
                }
            }
            let mut lits = lits.into_iter();
            let key = lits.next().unwrap_or_default();
            return Ok(match lits.next() {
                Some(value) => Converter::HasAttrOnDatapoint(key, value),
                None => Converter::HasAttrKeyOnDatapoint(key),
            });
        }
        let mut args = args.into_iter();
        let (target, _) = match args.next() {
            Some(a) => a,
            None => return Err(self.error_at(name_tok.start, "missing argument")),
        };
        Ok(match name {
            "IsMatch" => {
                let re = match args.next() {
                    Some((Operand::Lit(Lit::Str(p)), at)) => {
                        regex::Regex::new(&p).map_err(|e| {
                            let detail = e.to_string();
                            let last = detail.lines().last().unwrap_or("").trim();
                            let last = last.trim_start_matches("error: ").to_string();
                            self.error_at(at, format!("invalid regex {p:?} in IsMatch: {last}"))
                        })?
                    }
                    Some((_, at)) => {
                        return Err(
                            self.error_at(at, "the pattern of IsMatch must be a string literal")
                        )
                    }
                    None => return Err(self.error_at(name_tok.start, "missing argument")),
                };
                Converter::IsMatch(target, re)
            }
            "IsString" => Converter::IsString(target),
            "IsInt" => Converter::IsInt(target),
            "IsBool" => Converter::IsBool(target),
            "IsDouble" => Converter::IsDouble(target),
            "IsMap" => Converter::IsMap(target),
            _ => Converter::IsList(target),
        })
    }
}

/// Resolves path segments against a context. Upstream also accepts the context's own name as
/// a prefix (`span.name` in the span context) and `scope` for `instrumentation_scope`.
fn resolve(ctx: ContextKind, segs: &[&str]) -> Option<Field> {
    use ContextKind as C;
    let own_prefix = ctx.name();
    let segs = match segs {
        [p, rest @ ..] if *p == own_prefix && !rest.is_empty() => rest,
        ["instrumentation_scope", rest @ ..] if ctx == C::Scope && !rest.is_empty() => rest,
        _ => segs,
    };
    if ctx == C::Resource {
        if segs == ["request"] {
            return Some(Field::RequestHeaders);
        }
        return resource_field(segs);
    }
    match segs {
        ["resource", rest @ ..] => resource_field(rest),
        ["instrumentation_scope" | "scope", rest @ ..] if ctx != C::Scope => scope_field(rest),
        ["span", rest @ ..] if ctx == C::SpanEvent => span_field(rest),
        ["metric", rest @ ..] if ctx == C::DataPoint => metric_field(rest),
        _ => match ctx {
            C::Span => span_field(segs),
            C::SpanEvent => event_field(segs),
            C::Log => log_field(segs),
            C::Scope => scope_field(segs),
            C::Metric => metric_field(segs),
            C::DataPoint => point_field(segs),
            C::Resource => None,
        },
    }
}

fn metric_field(segs: &[&str]) -> Option<Field> {
    Some(match segs {
        ["name"] => Field::MetricName,
        ["description"] => Field::MetricDescription,
        ["unit"] => Field::MetricUnit,
        ["type"] => Field::MetricType,
        ["aggregation_temporality"] => Field::MetricTemporality,
        ["is_monotonic"] => Field::MetricMonotonic,
        _ => return None,
    })
}

fn point_field(segs: &[&str]) -> Option<Field> {
    Some(match segs {
        ["attributes"] => Field::PointAttrs,
        ["start_time_unix_nano"] => Field::PointStart,
        ["time_unix_nano"] => Field::PointTime,
        ["start_time"] => Field::PointStartTime,
        ["time"] => Field::PointTimeValue,
        ["value_double"] => Field::PointValueDouble,
        ["value_int"] => Field::PointValueInt,
        ["flags"] => Field::PointFlags,
        ["count"] => Field::PointCount,
        ["sum"] => Field::PointSum,
        ["scale"] => Field::PointScale,
        ["zero_count"] => Field::PointZeroCount,
        _ => return None,
    })
}

fn resource_field(segs: &[&str]) -> Option<Field> {
    Some(match segs {
        ["attributes"] => Field::ResourceAttrs,
        ["dropped_attributes_count"] => Field::ResourceDroppedAttrs,
        _ => return None,
    })
}

fn scope_field(segs: &[&str]) -> Option<Field> {
    Some(match segs {
        ["name"] => Field::ScopeName,
        ["version"] => Field::ScopeVersion,
        ["attributes"] => Field::ScopeAttrs,
        ["dropped_attributes_count"] => Field::ScopeDroppedAttrs,
        _ => return None,
    })
}

fn span_field(segs: &[&str]) -> Option<Field> {
    Some(match segs {
        ["name"] => Field::SpanName,
        ["kind"] => Field::SpanKind,
        ["status", "code"] => Field::SpanStatusCode,
        ["status", "message"] => Field::SpanStatusMessage,
        ["trace_id", "string"] => Field::SpanTraceId,
        ["span_id", "string"] => Field::SpanSpanId,
        ["parent_span_id", "string"] => Field::SpanParentSpanId,
        ["trace_id"] => Field::SpanTraceIdBytes,
        ["span_id"] => Field::SpanSpanIdBytes,
        ["parent_span_id"] => Field::SpanParentIdBytes,
        ["trace_state"] => Field::SpanTraceState,
        ["start_time_unix_nano"] => Field::SpanStart,
        ["end_time_unix_nano"] => Field::SpanEnd,
        ["start_time"] => Field::SpanStartTime,
        ["end_time"] => Field::SpanEndTime,
        ["attributes"] => Field::SpanAttrs,
        ["dropped_attributes_count"] => Field::SpanDroppedAttrs,
        ["dropped_events_count"] => Field::SpanDroppedEvents,
        ["dropped_links_count"] => Field::SpanDroppedLinks,
        ["flags"] => Field::SpanFlags,
        _ => return None,
    })
}

fn event_field(segs: &[&str]) -> Option<Field> {
    Some(match segs {
        ["name"] => Field::EventName,
        ["time_unix_nano"] => Field::EventTime,
        ["time"] => Field::EventTimeValue,
        ["attributes"] => Field::EventAttrs,
        ["dropped_attributes_count"] => Field::EventDroppedAttrs,
        _ => return None,
    })
}

fn log_field(segs: &[&str]) -> Option<Field> {
    Some(match segs {
        ["body"] => Field::LogBody,
        ["severity_number"] => Field::LogSeverityNumber,
        ["severity_text"] => Field::LogSeverityText,
        ["time_unix_nano"] => Field::LogTime,
        ["observed_time_unix_nano"] => Field::LogObservedTime,
        ["time"] => Field::LogTimeValue,
        ["observed_time"] => Field::LogObservedTimeValue,
        ["trace_id", "string"] => Field::LogTraceId,
        ["span_id", "string"] => Field::LogSpanId,
        ["trace_id"] => Field::LogTraceIdBytes,
        ["span_id"] => Field::LogSpanIdBytes,
        ["flags"] => Field::LogFlags,
        ["attributes"] => Field::LogAttrs,
        ["dropped_attributes_count"] => Field::LogDroppedAttrs,
        ["event_name"] => Field::LogEventName,
        _ => return None,
    })
}

/// Enum symbols are per context upstream: span kinds and status codes in the span contexts,
/// severity numbers in the log context, none in the resource context.
fn enum_value(ctx: ContextKind, name: &str) -> Option<i64> {
    match ctx {
        ContextKind::Span | ContextKind::SpanEvent => Some(match name {
            "SPAN_KIND_UNSPECIFIED" => 0,
            "SPAN_KIND_INTERNAL" => 1,
            "SPAN_KIND_SERVER" => 2,
            "SPAN_KIND_CLIENT" => 3,
            "SPAN_KIND_PRODUCER" => 4,
            "SPAN_KIND_CONSUMER" => 5,
            "STATUS_CODE_UNSET" => 0,
            "STATUS_CODE_OK" => 1,
            "STATUS_CODE_ERROR" => 2,
            _ => return None,
        }),
        ContextKind::Log => severity_number(name),
        ContextKind::Metric | ContextKind::DataPoint => match name {
            "METRIC_DATA_TYPE_NONE" => Some(0),
            "METRIC_DATA_TYPE_GAUGE" => Some(1),
            "METRIC_DATA_TYPE_SUM" => Some(2),
            "METRIC_DATA_TYPE_HISTOGRAM" => Some(3),
            "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM" => Some(4),
            "METRIC_DATA_TYPE_SUMMARY" => Some(5),
            "AGGREGATION_TEMPORALITY_UNSPECIFIED" => Some(0),
            "AGGREGATION_TEMPORALITY_DELTA" => Some(1),
            "AGGREGATION_TEMPORALITY_CUMULATIVE" => Some(2),
            "FLAG_NONE" if ctx == ContextKind::DataPoint => Some(0),
            "FLAG_NO_RECORDED_VALUE" if ctx == ContextKind::DataPoint => Some(1),
            _ => None,
        },
        ContextKind::Resource | ContextKind::Scope => None,
    }
}

/// OTLP `SeverityNumber`: UNSPECIFIED = 0, then four steps each of TRACE (1), DEBUG (5),
/// INFO (9), WARN (13), ERROR (17), FATAL (21); `X` is the first step, `X2`..`X4` follow.
pub(crate) fn severity_number(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
    if rest == "UNSPECIFIED" {
        return Some(0);
    }
    const BASES: [(&str, i64); 6] = [
        ("TRACE", 1),
        ("DEBUG", 5),
        ("INFO", 9),
        ("WARN", 13),
        ("ERROR", 17),
        ("FATAL", 21),
    ];
    for (level, base) in BASES {
        if let Some(step) = rest.strip_prefix(level) {
            return match step {
                "" => Some(base),
                "2" => Some(base + 1),
                "3" => Some(base + 2),
                "4" => Some(base + 3),
                _ => None,
            };
        }
    }
    None
}

/// A value argument of an editor: an operand, a list, or a converter that makes a value.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Op(Operand),
    List(Vec<Arg>),
    Sha256(Box<Arg>),
    Concat(Vec<Arg>, Box<str>),
    ConvertCase(Box<Arg>, Case),
    /// The other value converters.
    Call(ValueFn, Vec<Arg>),
}

#[derive(Debug, Clone)]
pub(crate) enum ValueFn {
    Int,
    Double,
    String,
    Len,
    Substring,
    Split,
    ExtractPatterns(regex::Regex),
    ParseJson,
    Trim,
    Hex,
    /// `Time(target, format, [location], [locale])`: the format compiled.
    Time(Box<super::ctime::Format>),
    /// `FormatTime(time, format)`.
    FormatTime(Box<super::ctime::Format>),
    /// `Unix(seconds, [nanoseconds])`: a time.
    Unix,
    /// `UnixSeconds`, `UnixMilli`, `UnixMicro`, `UnixNano`: a time as an int of this many
    /// nanoseconds.
    UnixIn(i64),
    /// `Nanoseconds`, `Microseconds`, `Milliseconds` (ints), `Seconds`, `Minutes`, `Hours`
    /// (floats) of a duration: nanoseconds per unit, and whether the result is a float.
    DurationIn(i64, bool),
    /// `TruncateTime(time, duration)`.
    TruncateTime,
    /// `ParseKeyValue(target, [delimiter], [pair_delimiter])`.
    ParseKeyValue(Box<str>, Box<str>),
    /// `Format(format, [values])`: Go's `fmt.Sprintf`; the arguments are the list's items.
    Format(Box<str>),
    /// `SHA512(value)`: lower-case hex.
    Sha512,
    /// `FNV(value)`: FNV-1a, 64 bits, as an int.
    Fnv,
    /// `Murmur3Hash(value)` (32 bits) and `Murmur3Hash128(value)`: little-endian hex.
    Murmur3,
    Murmur3x128,
    /// `UUID()`: a random (version 4) UUID.
    Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Case {
    Lower,
    Upper,
    Snake,
    Camel,
}

/// An editor with its resolved arguments.
#[derive(Debug, Clone)]
pub(crate) enum Editor {
    Set(Path, Arg),
    DeleteKey(Field, Box<str>),
    DeleteMatchingKeys(Field, regex::Regex),
    KeepKeys(Field, Vec<Box<str>>),
    KeepMatchingKeys(Field, regex::Regex),
    ReplacePattern(Path, regex::Regex, Box<str>),
    /// `true`: keys, `false`: values.
    ReplaceAllPatterns(Field, bool, regex::Regex, Box<str>),
    ReplaceMatch(Path, regex::Regex, Box<str>),
    ReplaceAllMatches(Field, regex::Regex, Box<str>),
    TruncateAll(Field, usize),
    Limit(Field, usize, Vec<Box<str>>),
    /// `insert`, `update` or `upsert` the source map's keys.
    MergeMaps(Field, Arg, Box<str>),
    Append(Path, Arg),
    /// Nested maps (and lists) into dotted keys, under an optional prefix, to a depth.
    Flatten(Field, Box<str>, Option<usize>),
}

/// `editor(args) [where condition]`.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub editor: Editor,
    pub cond: Option<Expr>,
}

/// The fields a statement can change, per context (what weir's transform supports).
fn settable(ctx: ContextKind, f: Field) -> bool {
    use ContextKind as C;
    use Field as F;
    match f {
        F::ResourceAttrs => true,
        F::ScopeName | F::ScopeVersion | F::ScopeAttrs => ctx != C::Resource,
        F::SpanName | F::SpanAttrs | F::SpanStatusMessage => ctx == C::Span,
        F::EventName | F::EventAttrs => ctx == C::SpanEvent,
        F::LogBody | F::LogAttrs | F::LogSeverityText | F::LogSeverityNumber => ctx == C::Log,
        // Times, as nanoseconds or time values (`Time(...)`, `Now()`).
        F::LogTime | F::LogTimeValue | F::LogObservedTime | F::LogObservedTimeValue => {
            ctx == C::Log
        }
        F::SpanStart | F::SpanEnd | F::SpanStartTime | F::SpanEndTime => ctx == C::Span,
        F::EventTime | F::EventTimeValue => ctx == C::SpanEvent,
        F::MetricName | F::MetricDescription | F::MetricUnit => ctx == C::Metric,
        F::PointAttrs => ctx == C::DataPoint,
        _ => false,
    }
}

fn is_map(f: Field) -> bool {
    matches!(
        f,
        Field::ResourceAttrs
            | Field::ScopeAttrs
            | Field::SpanAttrs
            | Field::EventAttrs
            | Field::LogAttrs
            | Field::PointAttrs
    )
}

/// A glob of `replace_match` (`*` any run, `?` one character) as an anchored regex.
fn glob_regex(g: &str) -> Result<regex::Regex, regex::Error> {
    let mut re = String::from("^");
    for c in g.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re)
}

pub(crate) fn parse_statement(src: &str, ctx: ContextKind) -> Result<Statement, ParseError> {
    parse_whole(src, ctx, "statement", Parser::statement)
}

impl<'s> Parser<'s> {
    fn statement(&mut self) -> Result<Statement, ParseError> {
        let name_tok = match self.next() {
            Some(t) if t.tok == Tok::Lower => t,
            Some(t) => {
                return Err(self.error_at(
                    t.start,
                    format!(
                        "a statement starts with an editor (set, delete_key, ...), got {}",
                        describe(self.src, &t)
                    ),
                ))
            }
            None => return Err(self.expected("an editor")),
        };
        let name = self.text(name_tok.start, name_tok.end);
        let args = self.call_args(&name_tok, name)?;
        let editor = self.editor(name, name_tok.start, args)?;
        let cond = match self.peek() {
            Some(t) if t.tok == Tok::Lower && self.text(t.start, t.end) == "where" => {
                self.pos += 1;
                Some(self.expr()?)
            }
            _ => None,
        };
        Ok(Statement { editor, cond })
    }

    /// The parenthesised arguments of a call to `name` (its name token consumed), each with
    /// its byte offset; one level of nesting while inside.
    fn call_args(&mut self, t: &Token, name: &str) -> Result<Vec<(Arg, usize)>, ParseError> {
        if self.peek_tok() != Some(&Tok::LParen) {
            return Err(self.expected(&format!("\"(\" after {name:?}")));
        }
        self.nest(t.start)?;
        self.pos += 1;
        let mut args = Vec::new();
        if self.peek_tok() != Some(&Tok::RParen) {
            loop {
                let at = self.peek().map_or(self.end(), |t| t.start);
                args.push((self.arg()?, at));
                match self.peek_tok() {
                    Some(Tok::Comma) => self.pos += 1,
                    Some(Tok::RParen) => break,
                    _ => return Err(self.expected("\",\" or \")\"")),
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(args)
    }

    /// `Time(target, format, [location], [locale])`: the format, location and locale are
    /// string literals, checked here.
    fn time_args(&self, t: &Token, args: Vec<(Arg, usize)>) -> Result<Arg, ParseError> {
        if !(2..=4).contains(&args.len()) {
            return Err(self.error_at(
                t.start,
                format!(
                    "Time expects 2 to 4 arguments (target, format, [location], [locale]), got {}",
                    args.len()
                ),
            ));
        }
        let mut it = args.into_iter();
        let target = it.next().map(|(a, _)| a).unwrap_or(Arg::List(Vec::new()));
        let mut literal = |what: &str| -> Result<Option<(Box<str>, usize)>, ParseError> {
            match it.next() {
                None => Ok(None),
                Some((Arg::Op(Operand::Lit(Lit::Str(s))), at)) => Ok(Some((s, at))),
                Some((_, at)) => {
                    Err(self.error_at(at, format!("the {what} of Time must be a string")))
                }
            }
        };
        let (format, at) = literal("format")?.unwrap_or_default();
        if format.is_empty() {
            return Err(self.error_at(at, "format cannot be nil"));
        }
        let compiled = super::ctime::Format::compile(&format).map_err(|e| self.error_at(at, e))?;
        if let Some((loc, at)) = literal("location")? {
            super::ctime::check_location(&loc).map_err(|e| self.error_at(at, e))?;
        }
        if let Some((locale, at)) = literal("locale")? {
            super::ctime::check_locale(&locale).map_err(|e| self.error_at(at, e))?;
        }
        Ok(Arg::Call(ValueFn::Time(Box::new(compiled)), vec![target]))
    }

    /// `ParseKeyValue(target, [delimiter], [pair_delimiter])`: the delimiters are string
    /// literals (`=` and a space by default), checked as upstream checks them.
    fn parse_key_value_args(&self, t: &Token, args: Vec<(Arg, usize)>) -> Result<Arg, ParseError> {
        if !(1..=3).contains(&args.len()) {
            return Err(self.error_at(
                t.start,
                format!("ParseKeyValue expects 1 to 3 arguments (target, [delimiter], [pair_delimiter]), got {}", args.len()),
            ));
        }
        let mut it = args.into_iter();
        let target = it.next().map(|(a, _)| a).unwrap_or(Arg::List(Vec::new()));
        let mut delims = Vec::new();
        for (what, default) in [("delimiter", "="), ("pair delimiter", " ")] {
            delims.push(match it.next() {
                None => Box::<str>::from(default),
                Some((Arg::Op(Operand::Lit(Lit::Str(s))), at)) => {
                    if s.is_empty() {
                        return Err(
                            self.error_at(at, format!("{what} cannot be set to an empty string"))
                        );
                    }
                    s
                }
                Some((_, at)) => {
                    return Err(
                        self.error_at(at, format!("the {what} of ParseKeyValue must be a string"))
                    )
                }
            });
        }
        let pair = delims.pop().unwrap_or_else(|| " ".into());
        let kv = delims.pop().unwrap_or_else(|| "=".into());
        if pair == kv {
            return Err(self.error_at(
                t.start,
                format!("pair delimiter {pair:?} cannot be equal to delimiter {kv:?}"),
            ));
        }
        Ok(Arg::Call(ValueFn::ParseKeyValue(kv, pair), vec![target]))
    }

    fn arg(&mut self) -> Result<Arg, ParseError> {
        match self.peek() {
            Some(t) if t.tok == Tok::LBracket => {
                let at = t.start;
                self.nest(at)?;
                self.pos += 1;
                let mut items = Vec::new();
                if self.peek_tok() != Some(&Tok::RBracket) {
                    loop {
                        items.push(self.arg()?);
                        match self.peek_tok() {
                            Some(Tok::Comma) => self.pos += 1,
                            Some(Tok::RBracket) => break,
                            _ => return Err(self.expected("\",\" or \"]\"")),
                        }
                    }
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(Arg::List(items))
            }
            Some(t)
                if (t.tok == Tok::Func || t.tok == Tok::Enum)
                    && matches!(
                        self.text(t.start, t.end),
                        "SHA256" | "Concat" | "ConvertCase"
                    ) =>
            {
                let t = t.clone();
                let name = self.text(t.start, t.end);
                self.pos += 1;
                let args = self.call_args(&t, name)?;
                let arity = if name == "SHA256" { 1 } else { 2 };
                if args.len() != arity {
                    return Err(self.error_at(
                        t.start,
                        format!(
                            "{name} expects {arity} argument{}, got {}",
                            if arity == 1 { "" } else { "s" },
                            args.len()
                        ),
                    ));
                }
                let mut it = args.into_iter();
                let (first, _) = it.next().unwrap_or((Arg::List(Vec::new()), t.start));
                Ok(match name {
                    "SHA256" => Arg::Sha256(Box::new(first)),
                    "Concat" => {
                        let Arg::List(items) = first else {
                            return Err(self.error_at(t.start, "Concat takes a list of values"));
                        };
                        match it.next() {
                            Some((Arg::Op(Operand::Lit(Lit::Str(d))), _)) => Arg::Concat(items, d),
                            Some((_, at)) => {
                                return Err(
                                    self.error_at(at, "the delimiter of Concat must be a string")
                                )
                            }
                            None => return Err(self.error_at(t.start, "missing argument")),
                        }
                    }
                    _ => {
                        let case = match it.next() {
                            Some((Arg::Op(Operand::Lit(Lit::Str(c))), at)) => match &*c {
                                "lower" => Case::Lower,
                                "upper" => Case::Upper,
                                "snake" => Case::Snake,
                                "camel" => Case::Camel,
                                other => {
                                    return Err(self.error_at(
                                        at,
                                        format!("invalid case: {other}, allowed cases are: lower, upper, snake, camel"),
                                    ))
                                }
                            },
                            Some((_, at)) => {
                                return Err(self.error_at(at, "the case of ConvertCase must be a string"))
                            }
                            None => return Err(self.error_at(t.start, "missing argument")),
                        };
                        Arg::ConvertCase(Box::new(first), case)
                    }
                })
            }
            Some(t)
                if t.tok == Tok::Func
                    && matches!(
                        self.text(t.start, t.end),
                        "ToLowerCase" | "ToUpperCase" | "ToSnakeCase" | "ToCamelCase"
                    ) =>
            {
                let t = t.clone();
                let name = self.text(t.start, t.end);
                self.pos += 1;
                let args = self.call_args(&t, name)?;
                if args.len() != 1 {
                    return Err(self.error_at(
                        t.start,
                        format!("{name} expects 1 argument, got {}", args.len()),
                    ));
                }
                let case = match name {
                    "ToLowerCase" => Case::Lower,
                    "ToUpperCase" => Case::Upper,
                    "ToSnakeCase" => Case::Snake,
                    _ => Case::Camel,
                };
                let (target, _) = args
                    .into_iter()
                    .next()
                    .unwrap_or((Arg::List(Vec::new()), 0));
                Ok(Arg::ConvertCase(Box::new(target), case))
            }
            Some(t)
                if t.tok == Tok::Func
                    && matches!(
                        self.text(t.start, t.end),
                        "FormatTime"
                            | "Unix"
                            | "UnixSeconds"
                            | "UnixMilli"
                            | "UnixMicro"
                            | "UnixNano"
                            | "Nanoseconds"
                            | "Microseconds"
                            | "Milliseconds"
                            | "Seconds"
                            | "Minutes"
                            | "Hours"
                            | "TruncateTime"
                    ) =>
            {
                let t = t.clone();
                let name = self.text(t.start, t.end);
                self.pos += 1;
                let mut args = self.call_args(&t, name)?;
                let (min, max) = match name {
                    "Unix" => (1, 2),
                    "FormatTime" | "TruncateTime" => (2, 2),
                    _ => (1, 1),
                };
                if !(min..=max).contains(&args.len()) {
                    let want = if min == max {
                        format!("{min} argument{}", if min == 1 { "" } else { "s" })
                    } else {
                        format!("{min} or {max} arguments")
                    };
                    return Err(self.error_at(
                        t.start,
                        format!("{name} expects {want}, got {}", args.len()),
                    ));
                }
                const NS: i64 = 1_000_000_000;
                let f = match name {
                    "FormatTime" => {
                        let (format, at) = match args.pop() {
                            Some((Arg::Op(Operand::Lit(Lit::Str(f))), at)) => (f, at),
                            Some((_, at)) => {
                                return Err(
                                    self.error_at(at, "the format of FormatTime must be a string")
                                )
                            }
                            None => return Err(self.error_at(t.start, "missing argument")),
                        };
                        if format.is_empty() {
                            return Err(self.error_at(at, "format cannot be nil"));
                        }
                        let f = super::ctime::Format::compile(&format)
                            .map_err(|e| self.error_at(at, e))?;
                        ValueFn::FormatTime(Box::new(f))
                    }
                    "Unix" => ValueFn::Unix,
                    "UnixSeconds" => ValueFn::UnixIn(NS),
                    "UnixMilli" => ValueFn::UnixIn(1_000_000),
                    "UnixMicro" => ValueFn::UnixIn(1_000),
                    "UnixNano" => ValueFn::UnixIn(1),
                    "Nanoseconds" => ValueFn::DurationIn(1, false),
                    "Microseconds" => ValueFn::DurationIn(1_000, false),
                    "Milliseconds" => ValueFn::DurationIn(1_000_000, false),
                    "Seconds" => ValueFn::DurationIn(NS, true),
                    "Minutes" => ValueFn::DurationIn(60 * NS, true),
                    "Hours" => ValueFn::DurationIn(3600 * NS, true),
                    _ => ValueFn::TruncateTime,
                };
                Ok(Arg::Call(f, args.into_iter().map(|(a, _)| a).collect()))
            }
            Some(t)
                if (t.tok == Tok::Func || t.tok == Tok::Enum)
                    && matches!(
                        self.text(t.start, t.end),
                        "Int"
                            | "Double"
                            | "String"
                            | "Len"
                            | "Substring"
                            | "Split"
                            | "ExtractPatterns"
                            | "ParseJSON"
                            | "Trim"
                            | "Hex"
                            | "Time"
                            | "ParseKeyValue"
                            | "Format"
                            | "SHA512"
                            | "FNV"
                            | "Murmur3Hash"
                            | "Murmur3Hash128"
                            | "UUID"
                    ) =>
            {
                let t = t.clone();
                let name = self.text(t.start, t.end);
                self.pos += 1;
                let mut args = self.call_args(&t, name)?;
                if name == "Time" {
                    return self.time_args(&t, args);
                }
                if name == "ParseKeyValue" {
                    return self.parse_key_value_args(&t, args);
                }
                if name == "Format" {
                    if args.len() != 2 {
                        return Err(self.error_at(
                            t.start,
                            format!(
                                "Format expects 2 arguments (format, [values]), got {}",
                                args.len()
                            ),
                        ));
                    }
                    let mut it = args.into_iter();
                    let format = match it.next() {
                        Some((Arg::Op(Operand::Lit(Lit::Str(f))), _)) => f,
                        Some((_, at)) => {
                            return Err(self.error_at(at, "the format of Format must be a string"))
                        }
                        None => return Err(self.error_at(t.start, "missing argument")),
                    };
                    return match it.next() {
                        Some((Arg::List(items), _)) => {
                            Ok(Arg::Call(ValueFn::Format(format), items))
                        }
                        Some((_, at)) => {
                            Err(self.error_at(at, "the values of Format must be a list ([a, b])"))
                        }
                        None => Err(self.error_at(t.start, "missing argument")),
                    };
                }
                let arity = match name {
                    "UUID" => 0,
                    "Substring" => 3,
                    "Split" | "ExtractPatterns" => 2,
                    // Trim's cutset is optional (default " ").
                    "Trim" if args.len() == 2 => 2,
                    _ => 1,
                };
                if args.len() != arity {
                    return Err(self.error_at(
                        t.start,
                        format!(
                            "{name} expects {arity} argument{}, got {}",
                            if arity == 1 { "" } else { "s" },
                            args.len()
                        ),
                    ));
                }
                let f = match name {
                    "Int" => ValueFn::Int,
                    "Double" => ValueFn::Double,
                    "String" => ValueFn::String,
                    "Len" => ValueFn::Len,
                    "Substring" => ValueFn::Substring,
                    "Split" => ValueFn::Split,
                    "ParseJSON" => ValueFn::ParseJson,
                    "Trim" => ValueFn::Trim,
                    "Hex" => ValueFn::Hex,
                    "SHA512" => ValueFn::Sha512,
                    "FNV" => ValueFn::Fnv,
                    "Murmur3Hash" => ValueFn::Murmur3,
                    "Murmur3Hash128" => ValueFn::Murmur3x128,
                    "UUID" => ValueFn::Uuid,
                    _ => {
                        let (pat, at) = match args.pop() {
                            Some((Arg::Op(Operand::Lit(Lit::Str(p))), at)) => (p, at),
                            Some((_, at)) => {
                                return Err(self.error_at(
                                    at,
                                    "the pattern of ExtractPatterns must be a string",
                                ))
                            }
                            None => return Err(self.error_at(t.start, "missing argument")),
                        };
                        let re = regex::Regex::new(&pat).map_err(|e| {
                            self.error_at(at, format!("the pattern supplied to ExtractPatterns is not a valid regexp pattern: {e}"))
                        })?;
                        if re.capture_names().flatten().next().is_none() {
                            return Err(self.error_at(
                                at,
                                "at least 1 named capture group must be supplied in the given regex",
                            ));
                        }
                        ValueFn::ExtractPatterns(re)
                    }
                };
                Ok(Arg::Call(f, args.into_iter().map(|(a, _)| a).collect()))
            }
            // An operand, or math on operands (`end_time_unix_nano - start_time_unix_nano`).
            _ => Ok(Arg::Op(self.math()?)),
        }
    }

    fn editor(&self, name: &str, at: usize, args: Vec<(Arg, usize)>) -> Result<Editor, ParseError> {
        let arity = match name {
            "flatten" => args.len().clamp(1, 3),
            "set" | "delete_key" | "delete_matching_keys" | "keep_keys" | "keep_matching_keys"
            | "truncate_all" => 2,
            "append" => 2,
            "replace_pattern" | "replace_match" | "replace_all_matches" | "limit" | "merge_maps" => 3,
            "replace_all_patterns" => 4,
            _ => {
                return Err(self.error_at(
                    at,
                    format!("unsupported editor {name:?} (weir has set, delete_key, delete_matching_keys, keep_keys, keep_matching_keys, replace_pattern, replace_all_patterns, replace_match, replace_all_matches, truncate_all, limit, merge_maps, append, flatten)"),
                ))
            }
        };
        if args.len() != arity {
            return Err(self.error_at(
                at,
                format!("{name} expects {arity} arguments, got {}", args.len()),
            ));
        }
        let mut it = args.into_iter();
        let (target, t_at) = it.next().unwrap_or((Arg::List(Vec::new()), at));
        let path = match target {
            Arg::Op(Operand::Path(p)) => p,
            _ => {
                return Err(
                    self.error_at(t_at, format!("the first argument of {name} must be a path"))
                )
            }
        };
        if !settable(self.ctx, path.field) {
            return Err(self.error_at(
                t_at,
                format!(
                    "{name} cannot change this path in the {} context (weir sets attributes, names, bodies, severities, status messages, metric names, descriptions and units)",
                    self.ctx.name()
                ),
            ));
        }
        let map = |p: &Path| -> Result<Field, ParseError> {
            if is_map(p.field) && p.keys.is_empty() {
                Ok(p.field)
            } else {
                Err(self.error_at(
                    t_at,
                    format!("the first argument of {name} must be a map (attributes)"),
                ))
            }
        };
        let string = |a: Option<(Arg, usize)>, what: &str| -> Result<Box<str>, ParseError> {
            match a {
                Some((Arg::Op(Operand::Lit(Lit::Str(s))), _)) => Ok(s),
                Some((_, at2)) => {
                    Err(self.error_at(at2, format!("the {what} of {name} must be a string")))
                }
                None => Err(self.error_at(at, "missing argument")),
            }
        };
        let regex = |a: Option<(Arg, usize)>| -> Result<regex::Regex, ParseError> {
            match a {
                Some((Arg::Op(Operand::Lit(Lit::Str(s))), at2)) => {
                    regex::Regex::new(&s).map_err(|e| {
                        let detail = e.to_string();
                        let last = detail
                            .lines()
                            .last()
                            .unwrap_or("")
                            .trim()
                            .trim_start_matches("error: ")
                            .to_string();
                        self.error_at(at2, format!("invalid regex {s:?} in {name}: {last}"))
                    })
                }
                Some((_, at2)) => {
                    Err(self.error_at(at2, format!("the pattern of {name} must be a string")))
                }
                None => Err(self.error_at(at, "missing argument")),
            }
        };
        let glob = |a: Option<(Arg, usize)>| -> Result<regex::Regex, ParseError> {
            match a {
                Some((Arg::Op(Operand::Lit(Lit::Str(s))), at2)) => glob_regex(&s)
                    .map_err(|e| self.error_at(at2, format!("invalid pattern {s:?}: {e}"))),
                Some((_, at2)) => {
                    Err(self.error_at(at2, format!("the pattern of {name} must be a string")))
                }
                None => Err(self.error_at(at, "missing argument")),
            }
        };
        let count = |a: Option<(Arg, usize)>| -> Result<usize, ParseError> {
            match a {
                Some((Arg::Op(Operand::Lit(Lit::Int(n))), at2)) => {
                    usize::try_from(n).map_err(|_| {
                        self.error_at(
                            at2,
                            format!("invalid limit for {name}: {n}, must be at least 0"),
                        )
                    })
                }
                Some((_, at2)) => {
                    Err(self.error_at(at2, format!("the limit of {name} must be an integer")))
                }
                None => Err(self.error_at(at, "missing argument")),
            }
        };
        let strings = |a: Option<(Arg, usize)>| -> Result<Vec<Box<str>>, ParseError> {
            match a {
                Some((Arg::List(items), at2)) => items
                    .into_iter()
                    .map(|i| match i {
                        Arg::Op(Operand::Lit(Lit::Str(s))) => Ok(s),
                        _ => Err(self.error_at(at2, format!("the keys of {name} must be strings"))),
                    })
                    .collect(),
                Some((_, at2)) => {
                    Err(self.error_at(at2, format!("the keys of {name} must be a list of strings")))
                }
                None => Err(self.error_at(at, "missing argument")),
            }
        };
        Ok(match name {
            "set" => {
                if is_map(path.field) && path.keys.len() != 1 {
                    return Err(self.error_at(
                        t_at,
                        "set on attributes takes one key (attributes[\"k\"]); setting a whole map is not supported by weir",
                    ));
                }
                let (value, _) = it.next().unwrap_or((Arg::List(Vec::new()), at));
                Editor::Set(path, value)
            }
            "delete_key" => Editor::DeleteKey(map(&path)?, string(it.next(), "key")?),
            "delete_matching_keys" => Editor::DeleteMatchingKeys(map(&path)?, regex(it.next())?),
            "keep_keys" => Editor::KeepKeys(map(&path)?, strings(it.next())?),
            "keep_matching_keys" => Editor::KeepMatchingKeys(map(&path)?, regex(it.next())?),
            "replace_pattern" => {
                let re = regex(it.next())?;
                Editor::ReplacePattern(path, re, string(it.next(), "replacement")?)
            }
            "replace_match" => {
                let g = glob(it.next())?;
                Editor::ReplaceMatch(path, g, string(it.next(), "replacement")?)
            }
            "replace_all_matches" => {
                let f = map(&path)?;
                let g = glob(it.next())?;
                Editor::ReplaceAllMatches(f, g, string(it.next(), "replacement")?)
            }
            "replace_all_patterns" => {
                let f = map(&path)?;
                let keys = match &*string(it.next(), "mode")? {
                    "key" => true,
                    "value" => false,
                    other => {
                        return Err(self.error_at(
                            at,
                            format!("invalid mode {other}, must be either 'key' or 'value'"),
                        ))
                    }
                };
                let re = regex(it.next())?;
                Editor::ReplaceAllPatterns(f, keys, re, string(it.next(), "replacement")?)
            }
            "truncate_all" => Editor::TruncateAll(map(&path)?, count(it.next())?),
            "flatten" => {
                let f = map(&path)?;
                let prefix = match it.next() {
                    None => Box::from(""),
                    a => string(a, "prefix")?,
                };
                let depth = match it.next() {
                    None => None,
                    a => Some(count(a)?),
                };
                Editor::Flatten(f, prefix, depth)
            }
            "merge_maps" => {
                let f = map(&path)?;
                let (source, _) = it.next().unwrap_or((Arg::List(Vec::new()), at));
                let strategy = string(it.next(), "strategy")?;
                if !matches!(&*strategy, "insert" | "update" | "upsert") {
                    return Err(self.error_at(
                        at,
                        format!("invalid value for strategy, {strategy:?}, must be 'insert', 'update' or 'upsert'"),
                    ));
                }
                Editor::MergeMaps(f, source, strategy)
            }
            "append" => {
                if is_map(path.field) && path.keys.len() != 1 {
                    return Err(self.error_at(t_at, "append takes a slice: attributes[\"k\"]"));
                }
                let (value, _) = it.next().unwrap_or((Arg::List(Vec::new()), at));
                Editor::Append(path, value)
            }
            _ => {
                let f = map(&path)?;
                let n = count(it.next())?;
                Editor::Limit(f, n, strings(it.next())?)
            }
        })
    }
}

/// What a path reaches: its field and, for a map read at a string key (`attributes["k"]`),
/// that key (`None`: the whole field).
pub(crate) type Reach<'a> = (Field, Option<&'a str>);

fn reach(p: &Path) -> Reach<'_> {
    match p.keys.first() {
        Some(Key::Str(k)) => (p.field, Some(k)),
        _ => (p.field, None),
    }
}

/// Calls `f` with everything `e` reads.
pub(crate) fn visit_expr<'a>(e: &'a Expr, f: &mut dyn FnMut(Reach<'a>)) {
    match e {
        Expr::Or(v) | Expr::And(v) => v.iter().for_each(|e| visit_expr(e, f)),
        Expr::Not(e) => visit_expr(e, f),
        Expr::Const(_) => {}
        Expr::Cmp(a, _, b) => {
            visit_operand(a, f);
            visit_operand(b, f);
        }
        Expr::Call(c) => visit_converter(c, f),
    }
}

fn visit_operand<'a>(o: &'a Operand, f: &mut dyn FnMut(Reach<'a>)) {
    match o {
        Operand::Lit(_) | Operand::Now => {}
        Operand::Path(p) => f(reach(p)),
        Operand::Call(c) => visit_converter(c, f),
        Operand::Value(a) => visit_arg(a, f),
        Operand::Math(m) => {
            visit_operand(&m.0, f);
            visit_operand(&m.2, f);
        }
    }
}

fn visit_converter<'a>(c: &'a Converter, f: &mut dyn FnMut(Reach<'a>)) {
    match c {
        Converter::IsMatch(o, _)
        | Converter::IsString(o)
        | Converter::IsInt(o)
        | Converter::IsBool(o)
        | Converter::IsDouble(o)
        | Converter::IsMap(o)
        | Converter::IsList(o) => visit_operand(o, f),
        Converter::HasAttrKeyOnDatapoint(_) | Converter::HasAttrOnDatapoint(..) => {
            f((Field::PointAttrs, None))
        }
        Converter::IsRootSpan => f((Field::SpanParentIdBytes, None)),
    }
}

fn visit_arg<'a>(a: &'a Arg, f: &mut dyn FnMut(Reach<'a>)) {
    match a {
        Arg::Op(o) => visit_operand(o, f),
        Arg::List(v) | Arg::Concat(v, _) | Arg::Call(_, v) => {
            v.iter().for_each(|a| visit_arg(a, f))
        }
        Arg::Sha256(a) | Arg::ConvertCase(a, _) => visit_arg(a, f),
    }
}

impl Statement {
    /// What the statement changes: a field, or one key of a map.
    pub(crate) fn target(&self) -> Reach<'_> {
        match &self.editor {
            Editor::Set(p, _)
            | Editor::ReplacePattern(p, _, _)
            | Editor::ReplaceMatch(p, _, _)
            | Editor::Append(p, _) => reach(p),
            Editor::DeleteKey(f, k) => (*f, Some(k)),
            Editor::DeleteMatchingKeys(f, _)
            | Editor::KeepKeys(f, _)
            | Editor::KeepMatchingKeys(f, _)
            | Editor::ReplaceAllPatterns(f, _, _, _)
            | Editor::ReplaceAllMatches(f, _, _)
            | Editor::TruncateAll(f, _)
            | Editor::Limit(f, _, _)
            | Editor::MergeMaps(f, _, _)
            | Editor::Flatten(f, _, _) => (*f, None),
        }
    }

    /// Calls `f` with everything the statement reads or changes.
    pub(crate) fn visit<'a>(&'a self, f: &mut dyn FnMut(Reach<'a>)) {
        f(self.target());
        match &self.editor {
            Editor::Set(_, a) | Editor::MergeMaps(_, a, _) | Editor::Append(_, a) => {
                visit_arg(a, f)
            }
            _ => {}
        }
        if let Some(c) = &self.cond {
            visit_expr(c, f);
        }
    }
}
