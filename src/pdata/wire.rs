//! A zero-copy walk over encoded OTLP requests: counts spans, data points and log records
//! and checks the structure down to the item level, without decoding or allocating.
//!
//! This is what lets a receiver validate and count a request and forward the bytes it got.
//! It must never allocate in proportion to the input and never panic on hostile bytes.
use super::Signal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated varint at byte {0}")]
    Varint(usize),
    #[error("field at byte {offset} claims {len} bytes but only {left} remain")]
    Length {
        offset: usize,
        len: u64,
        left: usize,
    },
    #[error("invalid wire type {wire_type} for field {field} at byte {offset}")]
    WireType {
        field: u64,
        wire_type: u8,
        offset: usize,
    },
    #[error("invalid field number 0 at byte {0}")]
    FieldZero(usize),
    #[error("invalid field key {key} at byte {offset}")]
    Key { key: u64, offset: usize },
    #[error("{field} sent with wire type {wire_type} at byte {offset}")]
    FieldType {
        field: String,
        wire_type: u8,
        offset: usize,
    },
    #[error("{field} is not valid UTF-8 (string at byte {offset})")]
    Utf8 { field: String, offset: usize },
    #[error(
        "messages nested deeper than {} levels at byte {offset}",
        super::check::MAX_DEPTH
    )]
    Depth { offset: usize },
    #[error("unexpected end-group tag at byte {offset}")]
    EndGroup { offset: usize },
}

const LEN: u8 = 2;

/// One field of a protobuf message.
struct Field<'a> {
    number: u64,
    wire_type: u8,
    /// For LEN fields, the payload; empty otherwise.
    data: &'a [u8],
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the whole request, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(WireError::Varint(self.base + self.pos));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError::Varint(self.base + self.pos))
    }

    fn skip(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let left = self.buf.len() - self.pos;
        if n > left as u64 {
            return Err(WireError::Length {
                offset: self.base + self.pos,
                len: n,
                left,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// Skips the rest of group `number` (its start tag read), nested groups included, up to
    /// the decoder's depth limit.
    fn skip_group(&mut self, number: u64, depth: u32) -> Result<(), WireError> {
        if depth > super::check::MAX_DEPTH {
            return Err(WireError::Depth {
                offset: self.base + self.pos,
            });
        }
        loop {
            let at = self.base + self.pos;
            let key = self.varint()?;
            let (n, wire_type) = (key >> 3, (key & 7) as u8);
            if n == 0 {
                return Err(WireError::FieldZero(at));
            }
            match wire_type {
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.skip(8)?;
                }
                LEN => {
                    let len = self.varint()?;
                    self.skip(len)?;
                }
                3 => self.skip_group(n, depth + 1)?,
                4 if n == number => return Ok(()),
                4 => return Err(WireError::EndGroup { offset: at }),
                5 => {
                    self.skip(4)?;
                }
                _ => {
                    return Err(WireError::WireType {
                        field: n,
                        wire_type,
                        offset: at,
                    })
                }
            }
        }
    }

    fn next(&mut self) -> Option<Result<(Field<'a>, usize), WireError>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        Some(self.field())
    }

    fn field(&mut self) -> Result<(Field<'a>, usize), WireError> {
        let at = self.base + self.pos;
        let key = self.varint()?;
        let number = key >> 3;
        let wire_type = (key & 7) as u8;
        if number == 0 {
            return Err(WireError::FieldZero(at));
        }
        let mut data: &[u8] = &[];
        let mut data_at = 0;
        match wire_type {
            0 => {
                self.varint()?;
            }
            1 => {
                self.skip(8)?;
            }
            LEN => {
                let n = self.varint()?;
                data_at = self.base + self.pos;
                data = self.skip(n)?;
            }
            5 => {
                self.skip(4)?;
            }
            // A group (in an unknown field: OTLP has none), skipped as the decoder skips it,
            // so every walk accepts what the receiver's check accepted.
            3 => self.skip_group(number, 1)?,
            _ => {
                return Err(WireError::WireType {
                    field: number,
                    wire_type,
                    offset: at,
                })
            }
        }
        Ok((
            Field {
                number,
                wire_type,
                data,
            },
            data_at,
        ))
    }
}

/// Visits every LEN field numbered `number` of the message in `buf`, checking the structure
/// of the message's other fields on the way.
fn each<'a>(
    buf: &'a [u8],
    base: usize,
    number: u64,
    mut f: impl FnMut(&'a [u8], usize) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut r = Reader::new(buf, base);
    while let Some(field) = r.next() {
        let (field, at) = field?;
        if field.number == number {
            if field.wire_type != LEN {
                return Err(WireError::WireType {
                    field: number,
                    wire_type: field.wire_type,
                    offset: at,
                });
            }
            f(field.data, at)?;
        }
    }
    Ok(())
}

/// Calls `f(number, wire_type, data, whole)` for every field of the message in `buf`:
/// `data` is a LEN field's payload (empty for other wire types), `whole` the field with its
/// key. Both borrow from `buf`, so callers can `Bytes::slice_ref` them without copying.
pub fn for_each_field<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u64, u8, &'a [u8], &'a [u8]) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut r = Reader::new(buf, 0);
    loop {
        let start = r.pos;
        let Some(field) = r.next() else { break };
        let (field, _) = field?;
        f(
            field.number,
            field.wire_type,
            field.data,
            &buf[start..r.pos],
        )?;
    }
    Ok(())
}

/// The fields of the message in `buf` as `(number, wire_type, data, whole)`, as
/// [`for_each_field`] gives them; an error ends the walk.
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields {
        r: Reader::new(buf, 0),
        failed: false,
    }
}

pub struct Fields<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, u8, &'a [u8], &'a [u8]), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let start = self.r.pos;
        match self.r.next()? {
            Ok((f, _)) => Some(Ok((
                f.number,
                f.wire_type,
                f.data,
                &self.r.buf[start..self.r.pos],
            ))),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Why decoding part of a message failed.
#[derive(Debug)]
pub struct PartError;

impl From<WireError> for PartError {
    fn from(_: WireError) -> PartError {
        PartError
    }
}

impl From<prost::DecodeError> for PartError {
    fn from(_: prost::DecodeError) -> PartError {
        PartError
    }
}

/// The whole fields of `body` that `wanted` picks, concatenated into `out`: a message holding
/// only them, which prost merges as it would in the whole message. Whether any was found.
pub fn pick(
    body: &[u8],
    wanted: impl Fn(u64, &[u8]) -> bool,
    out: &mut Vec<u8>,
) -> Result<bool, WireError> {
    out.clear();
    let mut any = false;
    for f in fields(body) {
        let (n, _, data, whole) = f?;
        if wanted(n, data) {
            out.extend_from_slice(whole);
            any = true;
        }
    }
    Ok(any)
}

/// The `resource` (field 1) of an encoded `ResourceSpans`/`ResourceMetrics`/`ResourceLogs`,
/// decoded alone; `scratch` is reused.
pub fn decode_resource(
    body: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<Option<opentelemetry_proto::tonic::resource::v1::Resource>, PartError> {
    use prost::Message;
    if !pick(body, |n, _| n == 1, scratch)? {
        return Ok(None);
    }
    Ok(opentelemetry_proto::tonic::trace::v1::ResourceSpans::decode(&scratch[..])?.resource)
}

/// The `scope` (field 1) of an encoded `ScopeSpans`/`ScopeMetrics`/`ScopeLogs`, decoded alone.
pub fn decode_scope(
    body: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<Option<opentelemetry_proto::tonic::common::v1::InstrumentationScope>, PartError> {
    use prost::Message;
    if !pick(body, |n, _| n == 1, scratch)? {
        return Ok(None);
    }
    Ok(opentelemetry_proto::tonic::trace::v1::ScopeSpans::decode(&scratch[..])?.scope)
}

/// The fields of `body` (a span, a log record, ...) that `wanted(number, payload)` picks,
/// decoded into an otherwise empty `M`.
pub fn decode_part<M: prost::Message + Default>(
    body: &[u8],
    wanted: impl Fn(u64, &[u8]) -> bool,
    scratch: &mut Vec<u8>,
) -> Result<M, PartError> {
    pick(body, wanted, scratch)?;
    Ok(M::decode(&scratch[..])?)
}

/// Appends a protobuf varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes a varint of `v` takes.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends the key and length of LEN field `number` holding `len` bytes.
pub fn put_len_header(out: &mut Vec<u8>, number: u64, len: usize) {
    put_varint(out, number << 3 | u64::from(LEN));
    put_varint(out, len as u64);
}

/// Size of LEN field `number` holding `len` bytes, key and length included.
pub fn len_field_size(number: u64, len: usize) -> usize {
    varint_len(number << 3 | u64::from(LEN)) + varint_len(len as u64) + len
}

/// Counts the items of an encoded Export*ServiceRequest of `signal`.
pub fn count_items(signal: Signal, buf: &[u8]) -> Result<usize, WireError> {
    let mut n = 0usize;
    // Request.resource_x = 1 → Resource_x.scope_x = 2 → Scope_x.items = 2.
    each(buf, 0, 1, |resource, at| {
        n += resource_items(signal, resource, at)?;
        Ok(())
    })?;
    Ok(n)
}

/// Counts the items of one encoded `ResourceSpans`/`ResourceMetrics`/`ResourceLogs` (the
/// message, without its key and length).
pub fn count_resource_items(signal: Signal, resource: &[u8]) -> Result<usize, WireError> {
    resource_items(signal, resource, 0)
}

fn resource_items(signal: Signal, resource: &[u8], base: usize) -> Result<usize, WireError> {
    let mut n = 0usize;
    each(resource, base, 2, |scope, at| match signal {
        Signal::Traces | Signal::Logs => each(scope, at, 2, |_, _| {
            n += 1;
            Ok(())
        }),
        Signal::Metrics => each(scope, at, 2, |metric, at| {
            n += count_metric_points(metric, at)?;
            Ok(())
        }),
    })?;
    Ok(n)
}

/// Data points of one encoded `Metric`: its data oneof (gauge 5, sum 7, histogram 9,
/// exponential_histogram 10, summary 11) holds `data_points = 1`.
fn count_metric_points(metric: &[u8], base: usize) -> Result<usize, WireError> {
    let mut n = 0;
    let mut r = Reader::new(metric, base);
    while let Some(field) = r.next() {
        let (field, at) = field?;
        if matches!(field.number, 5 | 7 | 9 | 10 | 11) {
            if field.wire_type != LEN {
                return Err(WireError::WireType {
                    field: field.number,
                    wire_type: field.wire_type,
                    offset: at,
                });
            }
            each(field.data, at, 1, |_, _| {
                n += 1;
                Ok(())
            })?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdata::{count_logs, count_points, count_spans};
    use opentelemetry_proto::tonic::{
        collector::{
            logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
            trace::v1::ExportTraceServiceRequest,
        },
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        metrics::v1::{
            metric::Data, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
            ResourceMetrics, ScopeMetrics, Sum,
        },
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };
    use prost::Message;

    fn traces(shape: &[&[usize]]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: shape
                .iter()
                .map(|scopes| ResourceSpans {
                    scope_spans: scopes
                        .iter()
                        .map(|&n| ScopeSpans {
                            spans: (0..n)
                                .map(|i| Span {
                                    name: format!("s{i}"),
                                    trace_id: vec![1; 16],
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn counts_spans_across_resources_and_scopes() {
        for shape in [&[][..], &[&[0usize][..]], &[&[3, 4], &[5]], &[&[512]]] {
            let req = traces(shape);
            let bytes = req.encode_to_vec();
            assert_eq!(count_items(Signal::Traces, &bytes), Ok(count_spans(&req)));
        }
    }

    #[test]
    fn counts_log_records() {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![
                    ScopeLogs {
                        log_records: vec![LogRecord::default(); 7],
                        ..Default::default()
                    },
                    ScopeLogs {
                        log_records: vec![LogRecord::default(); 2],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(count_items(Signal::Logs, &bytes), Ok(9));
        assert_eq!(count_logs(&req), 9);
    }

    #[test]
    fn counts_metric_data_points_of_every_kind() {
        let metrics = vec![
            Metric {
                name: "g".into(),
                data: Some(Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint::default(); 3],
                })),
                ..Default::default()
            },
            Metric {
                name: "s".into(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![NumberDataPoint::default(); 2],
                    aggregation_temporality: 2,
                    is_monotonic: true,
                })),
                ..Default::default()
            },
            Metric {
                name: "h".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint::default(); 4],
                    aggregation_temporality: 2,
                })),
                ..Default::default()
            },
            Metric {
                name: "empty".into(),
                ..Default::default()
            },
        ];
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(count_items(Signal::Metrics, &bytes), Ok(9));
        assert_eq!(count_points(&req), 9);
    }

    #[test]
    fn rejects_truncated_and_hostile_input() {
        let bytes = traces(&[&[3]]).encode_to_vec();
        for cut in 1..bytes.len() {
            // Every strict prefix that ends inside a length-delimited field is an error;
            // none may panic.
            let _ = count_items(Signal::Traces, &bytes[..cut]);
        }
        assert!(count_items(Signal::Traces, &bytes[..bytes.len() - 1]).is_err());
        // A length that claims 4 GiB.
        assert!(matches!(
            count_items(Signal::Traces, &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(WireError::Length { .. })
        ));
        // Field number zero, bad wire type, endless varint.
        assert_eq!(
            count_items(Signal::Logs, &[0x00]),
            Err(WireError::FieldZero(0))
        );
        // A group that never ends; a known field sent as a group.
        assert!(count_items(Signal::Logs, &[0x0b]).is_err());
        assert!(matches!(
            count_items(Signal::Logs, &[0x0b, 0x0c]),
            Err(WireError::WireType { field: 1, .. })
        ));
        assert!(matches!(
            count_items(
                Signal::Logs,
                &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
            ),
            Err(WireError::Varint(_))
        ));
        // resource_spans as a varint instead of a message.
        assert!(matches!(
            count_items(Signal::Traces, &[0x08, 0x01]),
            Err(WireError::WireType { field: 1, .. })
        ));
    }

    /// Groups in unknown fields are skipped as the decoder (and the receiver's check) skip
    /// them, so stages that walk accepted requests (tail sampling's split) never refuse one.
    /// The fuzz target `wire` found this walk refusing them.
    #[test]
    fn groups_in_unknown_fields_are_skipped_as_the_decoder_skips_them() {
        use crate::pdata::check::check_request;
        let span = Span {
            name: "s".into(),
            ..Default::default()
        }
        .encode_to_vec();
        // Field 99 as a group holding a varint, a nested group and a fixed32.
        let mut group = vec![0x9b, 0x06]; // 99 << 3 | 3
        group.extend_from_slice(&[0x08, 0x01]); // field 1 varint
        group.extend_from_slice(&[0x13, 0x15, 1, 2, 3, 4, 0x14]); // group 2 { fixed32 } end 2
        group.extend_from_slice(&[0x9c, 0x06]); // end group 99
        let with_group = [span.as_slice(), &group].concat();
        // The request by hand: prost would drop the unknown field on re-encoding.
        let scope = [vec![0x12, with_group.len() as u8], with_group.clone()].concat();
        let resource = [vec![0x12, scope.len() as u8], scope].concat();
        let bytes = [vec![0x0a, resource.len() as u8], resource].concat();
        assert_eq!(check_request(Signal::Traces, &bytes), Ok(1));
        assert_eq!(count_items(Signal::Traces, &bytes), Ok(1));
        let mut fields = 0;
        for_each_field(&with_group, |_, _, _, _| {
            fields += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(fields, 2, "the name and the group");
        // An end tag for another group, or none at all, is refused as the decoder refuses it.
        let mut wrong_end = with_group.clone();
        let n = wrong_end.len();
        wrong_end[n - 2] = 0xa4; // end group 100
        assert!(for_each_field(&wrong_end, |_, _, _, _| Ok(())).is_err());
        assert!(for_each_field(&with_group[..n - 2], |_, _, _, _| Ok(())).is_err());
    }

    #[test]
    fn varint_helpers_agree_with_prost() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(v));
        }
    }

    #[test]
    fn concatenated_requests_count_as_their_sum() {
        let a = traces(&[&[3]]).encode_to_vec();
        let b = traces(&[&[2, 2]]).encode_to_vec();
        let joined = [a, b].concat();
        assert_eq!(count_items(Signal::Traces, &joined), Ok(7));
        let decoded = ExportTraceServiceRequest::decode(&joined[..]).unwrap();
        assert_eq!(count_spans(&decoded), 7);
    }
}
