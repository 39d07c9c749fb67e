//! The receiver's check of an encoded OTLP request: exactly as strict as the prost decoder that
//! later stages use, so an OK to a client is a promise weir can keep. It walks the whole
//! message tree in place (no allocation, no copy) and counts the items on the way.
//!
//! What the decoder rejects, this rejects, with an error that names the field:
//! - malformed varints (more than 10 bytes, or a 10th byte that overflows 64 bits), keys above
//!   `u32::MAX`, field number 0, wire types 6 and 7, lengths past the end of their message;
//! - a known field sent with another wire type (`start_time_unix_nano` as a varint); repeated
//!   numbers may come packed or unpacked, as the decoder allows;
//! - a `string` field that is not UTF-8 (`bytes` fields may hold anything);
//! - nesting deeper than the decoder's limit of [`MAX_DEPTH`] messages (AnyValue inside
//!   kvlist inside AnyValue ...), unknown fields and groups included, counted as prost does.
//!
//! Unknown fields are skipped, as the decoder skips them. The items counted follow the
//! decoder's oneof rule: of a metric's data fields the last kind wins, and points of a kind
//! that a later field replaces are not counted.
//!
//! `fuzz`-style agreement with prost is tested in `tests` below; it must never diverge.
use super::wire::WireError;
use super::Signal;

/// The decoder's nesting limit: prost's `RECURSION_LIMIT`. A message nested deeper than this
/// (the request itself is depth 0) is refused.
pub const MAX_DEPTH: u32 = 100;

/// The messages of the OTLP export requests, once: the enum, the list of all of them, and the
/// two walkers compiled for each.
macro_rules! messages {
    ($($m:ident),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Msg {
            $($m),*
        }

        /// Every message, in declaration order (so `ALL[m as usize] == m`).
        const ALL: &[Msg] = &[$(Msg::$m),*];

        /// The detailed walker of each message.
        static WALK: [Walker; ALL.len()] = [$(walk::<{ Msg::$m as usize }>),*];

        /// The fast walker of each message.
        static FAST: [FastWalker; ALL.len()] = [$(fast::<{ Msg::$m as usize }>),*];

        /// The fast walk's operation for each one-byte key of each message.
        static TABLES: [[u8; 128]; ALL.len()] = [$(table(Msg::$m)),*];

        /// Whether each message is an item (span, log record, data point).
        static ITEM: [bool; ALL.len()] = [$(Msg::$m.is_item()),*];
    };
}

messages!(
    TraceRequest,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    Status,
    MetricsRequest,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    Buckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    LogsRequest,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    Resource,
    Scope,
    EntityRef,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
);

/// Whether `data` is UTF-8: most strings in telemetry are short and ASCII, checked here in
/// line; the rest go to the standard validator.
#[inline(always)]
fn is_utf8(data: &[u8]) -> bool {
    let n = data.len();
    // OR of every byte (some more than once): its high bit is set when one byte is not ASCII.
    // Words that overlap at the end instead of a byte-by-byte tail: short strings cost two
    // loads.
    let high = if n >= 8 {
        let mut h = 0u64;
        let mut i = 0;
        while i + 8 < n {
            h |= word8(data, i);
            i += 8;
        }
        h | word8(data, n - 8)
    } else if n >= 4 {
        u64::from(word4(data, 0) | word4(data, n - 4))
    } else {
        let mut h = 0u64;
        for &b in data {
            h |= u64::from(b);
        }
        h
    };
    high & 0x8080_8080_8080_8080 == 0 || std::str::from_utf8(data).is_ok()
}

#[inline(always)]
fn word8(d: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[at..at + 8]);
    u64::from_le_bytes(b)
}

#[inline(always)]
fn word4(d: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&d[at..at + 4]);
    u32::from_le_bytes(b)
}

/// What a field holds, as the decoder reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    Bytes,
    Str,
    Message(Msg),
    /// A repeated varint: packed (LEN) or one varint per field.
    RepeatedVarint,
    /// A repeated 8-byte number: packed (LEN) or one per field.
    RepeatedFixed64,
    Unknown,
}

use Kind::*;
use Msg::*;

impl Msg {
    fn name(self) -> &'static str {
        match self {
            TraceRequest => "ExportTraceServiceRequest",
            ResourceSpans => "ResourceSpans",
            ScopeSpans => "ScopeSpans",
            Span => "Span",
            Event => "Span.Event",
            Link => "Span.Link",
            Status => "Status",
            MetricsRequest => "ExportMetricsServiceRequest",
            ResourceMetrics => "ResourceMetrics",
            ScopeMetrics => "ScopeMetrics",
            Metric => "Metric",
            Gauge => "Gauge",
            Sum => "Sum",
            Histogram => "Histogram",
            ExpHistogram => "ExponentialHistogram",
            Summary => "Summary",
            NumberPoint => "NumberDataPoint",
            HistogramPoint => "HistogramDataPoint",
            ExpHistogramPoint => "ExponentialHistogramDataPoint",
            Buckets => "ExponentialHistogramDataPoint.Buckets",
            SummaryPoint => "SummaryDataPoint",
            Quantile => "SummaryDataPoint.ValueAtQuantile",
            Exemplar => "Exemplar",
            LogsRequest => "ExportLogsServiceRequest",
            ResourceLogs => "ResourceLogs",
            ScopeLogs => "ScopeLogs",
            LogRecord => "LogRecord",
            Resource => "Resource",
            Scope => "InstrumentationScope",
            EntityRef => "EntityRef",
            KeyValue => "KeyValue",
            AnyValue => "AnyValue",
            ArrayValue => "ArrayValue",
            KeyValueList => "KeyValueList",
        }
    }

    /// Field `n` of this message: its kind and name (from opentelemetry-proto's messages).
    #[inline(always)]
    const fn field(self, n: u64) -> (Kind, &'static str) {
        match (self, n) {
            (TraceRequest, 1) => (Message(ResourceSpans), "resource_spans"),
            (ResourceSpans, 1) | (ResourceMetrics, 1) | (ResourceLogs, 1) => {
                (Message(Resource), "resource")
            }
            (ResourceSpans, 2) => (Message(ScopeSpans), "scope_spans"),
            (ResourceSpans | ScopeSpans | ResourceMetrics | ScopeMetrics, 3)
            | (ResourceLogs | ScopeLogs, 3) => (Str, "schema_url"),
            (ScopeSpans | ScopeMetrics | ScopeLogs, 1) => (Message(Scope), "scope"),
            (ScopeSpans, 2) => (Message(Span), "spans"),
            (Span, 1) | (Link, 1) => (Bytes, "trace_id"),
            (Span, 2) | (Link, 2) => (Bytes, "span_id"),
            (Span, 3) | (Link, 3) => (Str, "trace_state"),
            (Span, 4) => (Bytes, "parent_span_id"),
            (Span, 16) | (Link, 6) => (Fixed32, "flags"),
            (Span, 5) | (Event, 2) => (Str, "name"),
            (Span, 6) => (Varint, "kind"),
            (Span, 7) => (Fixed64, "start_time_unix_nano"),
            (Span, 8) => (Fixed64, "end_time_unix_nano"),
            (Span, 9) | (Event, 3) | (Link, 4) => (Message(KeyValue), "attributes"),
            (Span, 10) | (Event, 4) | (Link, 5) => (Varint, "dropped_attributes_count"),
            (Span, 11) => (Message(Event), "events"),
            (Span, 12) => (Varint, "dropped_events_count"),
            (Span, 13) => (Message(Link), "links"),
            (Span, 14) => (Varint, "dropped_links_count"),
            (Span, 15) => (Message(Status), "status"),
            (Event, 1) => (Fixed64, "time_unix_nano"),
            (Status, 2) => (Str, "message"),
            (Status, 3) => (Varint, "code"),

            (MetricsRequest, 1) => (Message(ResourceMetrics), "resource_metrics"),
            (ResourceMetrics, 2) => (Message(ScopeMetrics), "scope_metrics"),
            (ScopeMetrics, 2) => (Message(Metric), "metrics"),
            (Metric, 1) => (Str, "name"),
            (Metric, 2) => (Str, "description"),
            (Metric, 3) => (Str, "unit"),
            (Metric, 12) => (Message(KeyValue), "metadata"),
            (Metric, 5) => (Message(Gauge), "gauge"),
            (Metric, 7) => (Message(Sum), "sum"),
            (Metric, 9) => (Message(Histogram), "histogram"),
            (Metric, 10) => (Message(ExpHistogram), "exponential_histogram"),
            (Metric, 11) => (Message(Summary), "summary"),
            (Gauge | Sum, 1) => (Message(NumberPoint), "data_points"),
            (Histogram, 1) => (Message(HistogramPoint), "data_points"),
            (ExpHistogram, 1) => (Message(ExpHistogramPoint), "data_points"),
            (Summary, 1) => (Message(SummaryPoint), "data_points"),
            (Sum | Histogram | ExpHistogram, 2) => (Varint, "aggregation_temporality"),
            (Sum, 3) => (Varint, "is_monotonic"),
            (NumberPoint | SummaryPoint, 7) | (HistogramPoint, 9) | (ExpHistogramPoint, 1) => {
                (Message(KeyValue), "attributes")
            }
            (NumberPoint | HistogramPoint | ExpHistogramPoint | SummaryPoint, 2) => {
                (Fixed64, "start_time_unix_nano")
            }
            (NumberPoint | HistogramPoint | ExpHistogramPoint | SummaryPoint, 3) => {
                (Fixed64, "time_unix_nano")
            }
            (NumberPoint, 4) | (Exemplar, 3) => (Fixed64, "as_double"),
            (NumberPoint, 6) | (Exemplar, 6) => (Fixed64, "as_int"),
            (NumberPoint, 5) | (HistogramPoint, 8) | (ExpHistogramPoint, 11) => {
                (Message(Exemplar), "exemplars")
            }
            (NumberPoint | SummaryPoint, 8) | (HistogramPoint | ExpHistogramPoint, 10) => {
                (Varint, "flags")
            }
            (HistogramPoint | ExpHistogramPoint | SummaryPoint, 4) => (Fixed64, "count"),
            (HistogramPoint | ExpHistogramPoint | SummaryPoint, 5) => (Fixed64, "sum"),
            (HistogramPoint, 6) => (RepeatedFixed64, "bucket_counts"),
            (HistogramPoint, 7) => (RepeatedFixed64, "explicit_bounds"),
            (HistogramPoint, 11) | (ExpHistogramPoint, 12) => (Fixed64, "min"),
            (HistogramPoint, 12) | (ExpHistogramPoint, 13) => (Fixed64, "max"),
            (ExpHistogramPoint, 6) => (Varint, "scale"),
            (ExpHistogramPoint, 7) => (Fixed64, "zero_count"),
            (ExpHistogramPoint, 8) => (Message(Buckets), "positive"),
            (ExpHistogramPoint, 9) => (Message(Buckets), "negative"),
            (ExpHistogramPoint, 14) => (Fixed64, "zero_threshold"),
            (Buckets, 1) => (Varint, "offset"),
            (Buckets, 2) => (RepeatedVarint, "bucket_counts"),
            (SummaryPoint, 6) => (Message(Quantile), "quantile_values"),
            (Quantile, 1) => (Fixed64, "quantile"),
            (Quantile, 2) => (Fixed64, "value"),
            (Exemplar, 7) => (Message(KeyValue), "filtered_attributes"),
            (Exemplar, 2) => (Fixed64, "time_unix_nano"),
            (Exemplar, 4) => (Bytes, "span_id"),
            (Exemplar, 5) => (Bytes, "trace_id"),

            (LogsRequest, 1) => (Message(ResourceLogs), "resource_logs"),
            (ResourceLogs, 2) => (Message(ScopeLogs), "scope_logs"),
            (ScopeLogs, 2) => (Message(LogRecord), "log_records"),
            (LogRecord, 1) => (Fixed64, "time_unix_nano"),
            (LogRecord, 11) => (Fixed64, "observed_time_unix_nano"),
            (LogRecord, 2) => (Varint, "severity_number"),
            (LogRecord, 3) => (Str, "severity_text"),
            (LogRecord, 5) => (Message(AnyValue), "body"),
            (LogRecord, 6) => (Message(KeyValue), "attributes"),
            (LogRecord, 7) => (Varint, "dropped_attributes_count"),
            (LogRecord, 8) => (Fixed32, "flags"),
            (LogRecord, 9) => (Bytes, "trace_id"),
            (LogRecord, 10) => (Bytes, "span_id"),
            (LogRecord, 12) => (Str, "event_name"),

            (Resource, 1) | (Scope, 3) => (Message(KeyValue), "attributes"),
            (Resource, 2) | (Scope, 4) => (Varint, "dropped_attributes_count"),
            (Resource, 3) => (Message(EntityRef), "entity_refs"),
            (Scope, 1) => (Str, "name"),
            (Scope, 2) => (Str, "version"),
            (EntityRef, 1) => (Str, "schema_url"),
            (EntityRef, 2) => (Str, "type"),
            (EntityRef, 3) => (Str, "id_keys"),
            (EntityRef, 4) => (Str, "description_keys"),
            (KeyValue, 1) => (Str, "key"),
            (KeyValue, 2) => (Message(AnyValue), "value"),
            (KeyValue, 3) => (Varint, "key_strindex"),
            (AnyValue, 1) => (Str, "string_value"),
            (AnyValue, 2) => (Varint, "bool_value"),
            (AnyValue, 3) => (Varint, "int_value"),
            (AnyValue, 4) => (Fixed64, "double_value"),
            (AnyValue, 5) => (Message(ArrayValue), "array_value"),
            (AnyValue, 6) => (Message(KeyValueList), "kvlist_value"),
            (AnyValue, 7) => (Bytes, "bytes_value"),
            (AnyValue, 8) => (Varint, "string_value_strindex"),
            (ArrayValue, 1) => (Message(AnyValue), "values"),
            (KeyValueList, 1) => (Message(KeyValue), "values"),
            _ => (Unknown, ""),
        }
    }

    /// Whether one of these is an item (span, log record, data point).
    const fn is_item(self) -> bool {
        matches!(
            self,
            Span | LogRecord | NumberPoint | HistogramPoint | ExpHistogramPoint | SummaryPoint
        )
    }
}

/// Checks an encoded `Export*ServiceRequest` of `signal` the way the decoder would and returns
/// the number of items (spans, data points, log records) the decoder would find.
pub fn check_request(signal: Signal, buf: &[u8]) -> Result<usize, WireError> {
    let root = match signal {
        Signal::Traces => TraceRequest,
        Signal::Metrics => MetricsRequest,
        Signal::Logs => LogsRequest,
    };
    if let Some(n) = FAST[root as usize](buf, MAX_DEPTH) {
        return Ok(n as usize);
    }
    // Refused: walk again, slowly, to say what and where. The two walks implement the same
    // rules (both are tested against the decoder); should they ever differ, the detailed one
    // decides.
    WALK[root as usize](buf, 0, MAX_DEPTH)
        .map(|n| n as usize)
        .map_err(|e| *e)
}

/// The fast walk: the same rules as [`walk`], answering only "valid, with this many items" or
/// "not valid" (`None`), so the common case carries no error bookkeeping.
type FastWalker = fn(&[u8], u32) -> Option<u64>;

// What the fast walk does with a field, decided once per (message, key) by [`op_for`] and
// looked up in [`TABLES`] for one-byte keys (fields 1 to 15, nearly all of them).
/// Refused: field 0, wire types 6 and 7, or a known field with another wire type.
const OP_BAD: u8 = 0;
/// An unknown field: skipped as the decoder skips it (groups and depth included).
const OP_SKIP: u8 = 1;
const OP_VARINT: u8 = 2;
const OP_FIXED64: u8 = 3;
const OP_FIXED32: u8 = 4;
const OP_BYTES: u8 = 5;
const OP_STR: u8 = 6;
const OP_PACKED_VARINT: u8 = 7;
const OP_PACKED_FIXED64: u8 = 8;
/// A message field: `OP_MESSAGE + Msg as u8`.
const OP_MESSAGE: u8 = 16;

/// The fast walk's operation for field `number` of `msg` sent with wire type `wt`.
const fn op_for(msg: Msg, number: u64, wt: u8) -> u8 {
    if number == 0 || wt > 5 {
        return OP_BAD;
    }
    match (msg.field(number).0, wt) {
        (Unknown, _) => OP_SKIP,
        (Varint | RepeatedVarint, 0) => OP_VARINT,
        (Fixed64 | RepeatedFixed64, 1) => OP_FIXED64,
        (Fixed32, 5) => OP_FIXED32,
        (Bytes, 2) => OP_BYTES,
        (Str, 2) => OP_STR,
        (RepeatedVarint, 2) => OP_PACKED_VARINT,
        (RepeatedFixed64, 2) => OP_PACKED_FIXED64,
        (Message(m), 2) => OP_MESSAGE + m as u8,
        _ => OP_BAD,
    }
}

/// The operations of `msg`'s one-byte keys.
const fn table(msg: Msg) -> [u8; 128] {
    let mut t = [OP_BAD; 128];
    let mut k = 0;
    while k < 128 {
        t[k] = op_for(msg, (k >> 3) as u64, (k & 7) as u8);
        k += 1;
    }
    t
}

/// Whether message `m`'s fast walk is compiled into its parent `parent`'s: the attributes of
/// the common messages and their values, walked in line instead of called.
const fn in_line(parent: Msg, m: u8) -> bool {
    match parent {
        KeyValue => m == AnyValue as u8,
        Span | Resource | Scope | LogRecord | NumberPoint | Event | Link => {
            m == KeyValue as u8 || m == Status as u8
        }
        _ => false,
    }
}

/// A varint at `*pos`, advancing it; `None` when it is truncated or overflows.
#[inline(always)]
fn fast_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let b = *buf.get(*pos)?;
    if b < 0x80 {
        *pos += 1;
        return Some(u64::from(b));
    }
    fast_varint_slow(buf, pos)
}

#[inline(never)]
fn fast_varint_slow(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return (i < 9 || b < 2).then_some(v);
        }
    }
    None
}

/// Message `ALL[M]` in `buf` with depth budget `left`: its items, or `None` if invalid.
fn fast<const M: usize>(buf: &[u8], left: u32) -> Option<u64> {
    fast_body::<M>(buf, left)
}

/// Message `m`'s fast walk from inside message `ALL[P]`: in line where [`in_line`] says so.
#[inline(always)]
fn fast_child<const P: usize>(m: u8, data: &[u8], left: u32) -> Option<u64> {
    if in_line(ALL[P], m) {
        if m == AnyValue as u8 {
            return fast_body::<{ AnyValue as usize }>(data, left);
        }
        if m == KeyValue as u8 {
            return fast_body::<{ KeyValue as usize }>(data, left);
        }
        if m == Status as u8 {
            return fast_body::<{ Status as usize }>(data, left);
        }
    }
    FAST[m as usize](data, left)
}

#[inline(always)]
fn fast_body<const M: usize>(buf: &[u8], left: u32) -> Option<u64> {
    let len = buf.len();
    let mut pos = 0usize;
    let mut items = 0u64;
    let mut data_kind = 0u64;
    while pos < len {
        let b = buf[pos];
        let (op, key) = if b < 0x80 {
            pos += 1;
            (TABLES[M][b as usize], u64::from(b))
        } else {
            let k = fast_varint_slow(buf, &mut pos)?;
            if k > u64::from(u32::MAX) {
                return None;
            }
            (op_for(ALL[M], k >> 3, (k & 7) as u8), k)
        };
        // One dispatch per field: each length-delimited kind reads its own length.
        macro_rules! field_bytes {
            () => {{
                let n = fast_varint(buf, &mut pos)?;
                if n > (len - pos) as u64 {
                    return None;
                }
                let data = &buf[pos..pos + n as usize];
                pos += n as usize;
                data
            }};
        }
        match op {
            OP_VARINT => {
                fast_varint(buf, &mut pos)?;
            }
            OP_FIXED64 => {
                pos += 8;
                if pos > len {
                    return None;
                }
            }
            OP_FIXED32 => {
                pos += 4;
                if pos > len {
                    return None;
                }
            }
            OP_BYTES => {
                field_bytes!();
            }
            OP_STR => {
                if !is_utf8(field_bytes!()) {
                    return None;
                }
            }
            OP_BAD => return None,
            OP_SKIP => {
                let mut c = Cursor { buf, pos, base: 0 };
                c.skip(key >> 3, (key & 7) as u8, left, 0).ok()?;
                pos = c.pos;
            }
            OP_PACKED_VARINT => {
                let data = field_bytes!();
                let mut p = 0;
                while p < data.len() {
                    fast_varint(data, &mut p)?;
                }
            }
            OP_PACKED_FIXED64 => {
                if field_bytes!().len() % 8 != 0 {
                    return None;
                }
            }
            _ => {
                let data = field_bytes!();
                if left == 0 {
                    return None;
                }
                let m = op - OP_MESSAGE;
                let n = fast_child::<M>(m, data, left - 1)?;
                if M == Metric as usize && !ITEM[m as usize] {
                    let number = key >> 3;
                    if matches!(number, 5 | 7 | 9 | 10 | 11) && number != data_kind {
                        data_kind = number;
                        items = 0;
                    }
                }
                items += if ITEM[m as usize] { 1 } else { n };
            }
        }
    }
    Some(items)
}

/// Results inside the walk: the error boxed, so the hot path moves small values.
type R<T> = Result<T, Box<WireError>>;

#[cold]
#[inline(never)]
fn bad<T>(e: WireError) -> R<T> {
    Err(Box::new(e))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn varint(&mut self) -> R<u64> {
        // One-byte fast path: most keys and small values.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> R<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return bad(WireError::Varint(self.base + self.pos));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The 10th byte may only carry the 64th bit.
                if i == 9 && b >= 2 {
                    return bad(WireError::Varint(self.base + self.pos - 1));
                }
                return Ok(v);
            }
        }
        bad(WireError::Varint(self.base + self.pos))
    }

    #[inline(always)]
    fn take(&mut self, n: u64) -> R<&'a [u8]> {
        let left = self.buf.len() - self.pos;
        if n > left as u64 {
            return bad(WireError::Length {
                offset: self.base + self.pos,
                len: n,
                left,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// A field key: (number, wire type), checked as the decoder checks keys.
    #[inline(always)]
    fn key(&mut self) -> R<(u64, u8)> {
        let at = self.base + self.pos;
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return bad(WireError::Key { key, offset: at });
        }
        let number = key >> 3;
        if number == 0 {
            return bad(WireError::FieldZero(at));
        }
        let wt = (key & 7) as u8;
        if wt > 5 {
            return bad(WireError::WireType {
                field: number,
                wire_type: wt,
                offset: at,
            });
        }
        Ok((number, wt))
    }

    /// Skips the value of an unknown field of wire type `wt` (the key already read), with the
    /// decoder's depth accounting for groups: `left` is the depth budget of the message the
    /// field belongs to.
    fn skip(&mut self, number: u64, wt: u8, left: u32, at: usize) -> R<()> {
        if left == 0 {
            return bad(WireError::Depth { offset: at });
        }
        match wt {
            0 => {
                self.varint()?;
            }
            1 => {
                self.take(8)?;
            }
            2 => {
                let n = self.varint()?;
                self.take(n)?;
            }
            3 => loop {
                let inner_at = self.base + self.pos;
                let (n, w) = self.key()?;
                if w == 4 {
                    if n != number {
                        return bad(WireError::EndGroup { offset: inner_at });
                    }
                    break;
                }
                self.skip(n, w, left - 1, inner_at)?;
            },
            4 => return bad(WireError::EndGroup { offset: at }),
            _ => self.take(4).map(|_| ())?,
        }
        Ok(())
    }
}

fn wrong_type(msg: Msg, name: &str, number: u64, wt: u8, at: usize) -> WireError {
    WireError::FieldType {
        field: format!("{}.{name} ({number})", msg.name()),
        wire_type: wt,
        offset: at,
    }
}

type Walker = fn(&[u8], usize, u32) -> R<u64>;

/// Walks message `ALL[M]` in `buf` (at `base` in the request); `left` is the depth budget of
/// its fields (the decoder's recursion counter). Returns the items inside. Monomorphised per
/// message, so each field number leads straight to its kind's code.
fn walk<const M: usize>(buf: &[u8], base: usize, left: u32) -> R<u64> {
    let msg = ALL[M];
    let mut c = Cursor { buf, pos: 0, base };
    let mut items = 0u64;
    // A metric's data oneof: the kind of the last data field and the points under it.
    let mut data_kind = 0u64;
    while c.pos < buf.len() {
        let at = base + c.pos;
        let (number, wt) = c.key()?;
        let kind = msg.field(number).0;
        let name = || msg.field(number).1;
        match kind {
            Unknown => c.skip(number, wt, left, at)?,
            Varint => {
                if wt != 0 {
                    return bad(wrong_type(msg, name(), number, wt, at));
                }
                c.varint()?;
            }
            Fixed64 => {
                if wt != 1 {
                    return bad(wrong_type(msg, name(), number, wt, at));
                }
                c.take(8)?;
            }
            Fixed32 => {
                if wt != 5 {
                    return bad(wrong_type(msg, name(), number, wt, at));
                }
                c.take(4)?;
            }
            Bytes | Str | Message(_) | RepeatedVarint | RepeatedFixed64 if wt == 2 => {
                let n = c.varint()?;
                let data_at = base + c.pos;
                let data = c.take(n)?;
                match kind {
                    Str if !is_utf8(data) => {
                        return bad(WireError::Utf8 {
                            field: format!("{}.{} ({number})", msg.name(), name()),
                            offset: data_at,
                        });
                    }
                    Message(m) => {
                        if left == 0 {
                            return bad(WireError::Depth { offset: at });
                        }
                        let n = WALK[m as usize](data, data_at, left - 1)?;
                        if m.is_item() {
                            items += 1;
                        } else if msg == Metric && matches!(number, 5 | 7 | 9 | 10 | 11) {
                            // Another kind of data replaces the points of the earlier one;
                            // the same kind merges.
                            if number != data_kind {
                                data_kind = number;
                                items = 0;
                            }
                            items += n;
                        } else {
                            items += n;
                        }
                    }
                    RepeatedVarint => {
                        let mut p = Cursor {
                            buf: data,
                            pos: 0,
                            base: data_at,
                        };
                        while p.pos < data.len() {
                            p.varint()?;
                        }
                    }
                    RepeatedFixed64 if data.len() % 8 != 0 => {
                        return bad(WireError::Length {
                            offset: data_at,
                            len: data.len().next_multiple_of(8) as u64,
                            left: data.len(),
                        });
                    }
                    _ => {}
                }
            }
            RepeatedVarint if wt == 0 => {
                c.varint()?;
            }
            RepeatedFixed64 if wt == 1 => {
                c.take(8)?;
            }
            _ => return bad(wrong_type(msg, name(), number, wt, at)),
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests;
