//! The data that moves through the graph: `Batch { signal, payload, context }`.
//!
//! A payload stays in the encoded form it arrived in (OTLP protobuf bytes) until a stage needs
//! to look inside; it is then decoded once to the `opentelemetry-proto` prost types. Exporters
//! that speak OTLP ask for the encoded form and get the received bytes back untouched when no
//! stage decoded them: the gateway fast path. This module must never copy a payload it does
//! not have to.
pub mod ack;
pub mod check;
pub mod encode;
pub mod wire;

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The item noun used by the Collector's self-metrics (`accepted_spans`, ...).
    pub fn item_noun(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "traces" => Some(Signal::Traces),
            "metrics" => Some(Signal::Metrics),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }

    /// The OTLP/HTTP path of this signal.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    /// The OTLP/gRPC method path of this signal.
    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a batch came from. Travels beside the data, never inside it, until a processor
/// writes part of it into the data on purpose.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The receiver id (`otlp`, `otlp/internal`).
    pub receiver: Arc<str>,
    /// `grpc` or `http`.
    pub transport: &'static str,
    /// Client metadata (request headers / gRPC metadata), lower-case names, when the receiver
    /// was configured with `include_metadata`.
    pub metadata: Option<Arc<Vec<(String, String)>>>,
    /// The tenant, once a stage has decided it.
    pub tenant: Option<Arc<str>>,
    /// Who the client authenticated as (an `auth` authenticator or an mTLS certificate).
    pub auth: Option<Arc<crate::extensions::auth::Identity>>,
    /// The bytes this data holds against the memory budget: given back when the last batch
    /// made from it is delivered or dropped.
    pub charge: Option<Arc<crate::pipeline::budget::Charge>>,
    /// The write-ahead-log records this data came from (durable pipelines): released when the
    /// last batch made from them is delivered or dropped.
    pub ack: Option<Arc<ack::Ack>>,
}

impl Context {
    /// The first value of client metadata `key` (case-insensitive).
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref().and_then(|m| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        })
    }
}

/// An OTLP request, encoded or decoded.
#[derive(Debug, Clone)]
pub enum Payload {
    Encoded(Bytes),
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

/// The unit that moves through pipelines.
#[derive(Debug, Clone)]
pub struct Batch {
    pub signal: Signal,
    /// Spans, data points or log records in the payload.
    pub items: usize,
    pub payload: Payload,
    pub context: Arc<Context>,
    /// What the decoded form holds against the memory budget beyond the context's charge
    /// (a decoded request takes several times its encoded size). Shared by the batches split
    /// from it.
    pub held: Option<Arc<crate::pipeline::budget::Charge>>,
    /// Compressed forms of the encoded bytes, shared by the exporters a batch fans out to, so
    /// exporters that compress the same bytes the same way compress once.
    pub compressed: Option<Arc<CompressedForms>>,
}

/// The compressed forms of one batch's encoded bytes (see [`Batch::compressed`]). Each form
/// remembers the bytes it was made from (kept alive, compared by address and length), so a
/// payload changed after the cache was attached is never answered from it.
#[derive(Debug, Default)]
pub struct CompressedForms {
    #[allow(clippy::type_complexity)]
    forms: std::sync::Mutex<Vec<(u32, Bytes, Arc<tokio::sync::OnceCell<Bytes>>)>>,
}

impl CompressedForms {
    /// The cell of form `key` of `source`: the first exporter to ask fills it, the others
    /// wait for it, so a form is made once.
    pub fn cell(&self, key: u32, source: &Bytes) -> Arc<tokio::sync::OnceCell<Bytes>> {
        let mut forms = self.forms.lock().unwrap_or_else(|e| e.into_inner());
        let same = |s: &Bytes| s.as_ptr() == source.as_ptr() && s.len() == source.len();
        if let Some((_, _, c)) = forms.iter().find(|(k, s, _)| *k == key && same(s)) {
            return c.clone();
        }
        let c = Arc::new(tokio::sync::OnceCell::new());
        forms.push((key, source.clone(), c.clone()));
        c
    }
}

/// A decoded request holds about this many times its encoded size more (prost's structs, one
/// allocation per string, id and list): what decoding charges to the memory budget.
pub const DECODED_EXTRA_FACTOR: usize = 3;

#[derive(Debug, thiserror::Error)]
#[error("cannot decode {signal} payload ({lost} items lost, {kept} kept): {source}")]
pub struct DecodeError {
    pub signal: Signal,
    #[source]
    pub source: prost::DecodeError,
    /// Items in the resources that did not decode.
    pub lost: usize,
    /// Items in the resources that did, which the batch still holds.
    pub kept: usize,
}

impl Batch {
    /// A traces batch of `req`, encoded or decoded, with a default context (tests of stages
    /// that take either form).
    #[cfg(test)]
    pub(crate) fn traces_for_test(req: ExportTraceServiceRequest, encoded: bool) -> Batch {
        let items = count_spans(&req);
        let payload = if encoded {
            Payload::Encoded(req.encode_to_vec().into())
        } else {
            Payload::Traces(req)
        };
        Batch {
            payload,
            ..Batch::encoded(Signal::Traces, Bytes::new(), items, Arc::default())
        }
    }

    /// A batch of encoded OTLP bytes whose items were already counted.
    pub fn encoded(signal: Signal, bytes: Bytes, items: usize, context: Arc<Context>) -> Batch {
        Batch {
            signal,
            items,
            payload: Payload::Encoded(bytes),
            context,
            held: None,
            compressed: None,
        }
    }

    /// The metrics request this batch holds: borrowed when decoded, decoded from its bytes
    /// otherwise (for exporters that read metrics without keeping them).
    pub fn metrics_request(
        &self,
    ) -> Result<std::borrow::Cow<'_, ExportMetricsServiceRequest>, prost::DecodeError> {
        match &self.payload {
            Payload::Metrics(r) => Ok(std::borrow::Cow::Borrowed(r)),
            _ => ExportMetricsServiceRequest::decode(self.to_bytes()).map(std::borrow::Cow::Owned),
        }
    }

    /// The encoded OTLP request: the received bytes when nothing decoded them.
    pub fn to_bytes(&self) -> Bytes {
        match &self.payload {
            Payload::Encoded(b) => b.clone(),
            Payload::Traces(r) => Bytes::from(encode::encode_traces(r)),
            Payload::Metrics(r) => Bytes::from(encode::encode_metrics(r)),
            Payload::Logs(r) => Bytes::from(encode::encode_logs(r)),
        }
    }

    /// Size of the encoded request in bytes.
    pub fn encoded_len(&self) -> usize {
        match &self.payload {
            Payload::Encoded(b) => b.len(),
            Payload::Traces(r) => r.encoded_len(),
            Payload::Metrics(r) => r.encoded_len(),
            Payload::Logs(r) => r.encoded_len(),
        }
    }

    /// Decodes the payload in place (once) so a stage can look inside.
    ///
    /// A payload that does not decode (receivers refuse such requests, so this is a second
    /// line of defence) is decoded resource by resource: the batch keeps every resource that
    /// decodes, and the error says how many items were lost with the rest. A merged batch
    /// thereby never loses a neighbour's data to one bad part.
    pub fn decode(&mut self) -> Result<(), DecodeError> {
        let Payload::Encoded(b) = &self.payload else {
            return Ok(());
        };
        // The decoded form is charged to the memory budget the data came in under.
        if let Some(c) = &self.context.charge {
            self.held = Some(Arc::new(
                c.budget()
                    .force(b.len().saturating_mul(DECODED_EXTRA_FACTOR)),
            ));
        }
        let signal = self.signal;
        let whole = match signal {
            Signal::Traces => ExportTraceServiceRequest::decode(b.clone()).map(Payload::Traces),
            Signal::Metrics => ExportMetricsServiceRequest::decode(b.clone()).map(Payload::Metrics),
            Signal::Logs => ExportLogsServiceRequest::decode(b.clone()).map(Payload::Logs),
        };
        let source = match whole {
            Ok(p) => {
                self.payload = p;
                return Ok(());
            }
            Err(e) => e,
        };
        let mut traces = ExportTraceServiceRequest::default();
        let mut metrics = ExportMetricsServiceRequest::default();
        let mut logs = ExportLogsServiceRequest::default();
        // Each top-level field 1 is one resource's data: decode them one at a time. A walk
        // that breaks off part-way keeps what it found before.
        let _ = wire::for_each_field(b, |number, wire_type, _, field| {
            if number != 1 || wire_type != 2 {
                return Ok(());
            }
            match signal {
                Signal::Traces => {
                    if let Ok(r) = ExportTraceServiceRequest::decode(field) {
                        traces.resource_spans.extend(r.resource_spans);
                    }
                }
                Signal::Metrics => {
                    if let Ok(r) = ExportMetricsServiceRequest::decode(field) {
                        metrics.resource_metrics.extend(r.resource_metrics);
                    }
                }
                Signal::Logs => {
                    if let Ok(r) = ExportLogsServiceRequest::decode(field) {
                        logs.resource_logs.extend(r.resource_logs);
                    }
                }
            }
            Ok(())
        });
        self.payload = match signal {
            Signal::Traces => Payload::Traces(traces),
            Signal::Metrics => Payload::Metrics(metrics),
            Signal::Logs => Payload::Logs(logs),
        };
        let before = self.items;
        self.recount();
        Err(DecodeError {
            signal,
            source,
            lost: before.saturating_sub(self.items),
            kept: self.items,
        })
    }

    /// Recounts `items` after a stage changed the decoded data.
    pub fn recount(&mut self) {
        self.items = match &self.payload {
            Payload::Encoded(b) => wire::count_items(self.signal, b).unwrap_or(self.items),
            Payload::Traces(r) => count_spans(r),
            Payload::Metrics(r) => count_points(r),
            Payload::Logs(r) => count_logs(r),
        };
    }
}

pub fn count_spans(r: &ExportTraceServiceRequest) -> usize {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

pub fn count_logs(r: &ExportLogsServiceRequest) -> usize {
    r.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum()
}

pub fn count_points(r: &ExportMetricsServiceRequest) -> usize {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum()
}

/// The value of attribute `key` in `attrs`, when set.
pub fn attr<'a>(
    attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// Now, in Unix nanoseconds (0 before 1970).
pub fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
