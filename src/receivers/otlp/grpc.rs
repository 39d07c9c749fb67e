//! OTLP/gRPC: the three Export services, served straight off hyper with a codec that keeps
//! request bodies as bytes. A request is checked (exactly as strictly as the decoder) and
//! counted, reserved against the memory budget, then handed to every pipeline; the client
//! hears back only once all of them took it.
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tonic::{Code, Status};

use super::Shared;
use crate::pdata::{check, Batch, Context, Signal};
use crate::pipeline::inbox::Refused;

#[derive(Clone)]
pub struct GrpcService {
    pub shared: Arc<Shared>,
    pub max_message_size: usize,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn unimplemented(message: &str) -> Response<tonic::body::Body> {
    Status::unimplemented(message).into_http()
}

impl hyper::service::Service<Request<Incoming>> for GrpcService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<Self::Response, Infallible>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // Authentication first: a client that fails it learns nothing else.
            match this.shared.authenticate(req.headers()) {
                Ok(Some(id)) => {
                    req.extensions_mut().insert(id);
                }
                Ok(None) => {}
                Err(e) => return Ok(Status::unauthenticated(e).into_http()),
            }
            let path = req.uri().path();
            let Some(signal) = Signal::ALL.into_iter().find(|s| s.grpc_path() == path) else {
                return Ok(unimplemented(&format!("unknown method {path}")));
            };
            if this.shared.out.consumers.current().get(signal).is_empty() {
                return Ok(unimplemented(&format!(
                    "receiver {} is not in any {signal} pipeline",
                    this.shared.out.id
                )));
            }
            // A spent memory budget refuses before the body is read (its size is known only
            // once it is); the reservation proper follows the check.
            let read_for = read_deadline(req.headers());
            if !this.shared.out.budget.has_room() {
                // The request body is read and dropped first (nothing is kept), up to the
                // message size limit: a response that overtakes the body makes the HTTP/2
                // stream end with a reset that clients report as UNKNOWN, not retryable.
                drain(
                    req.into_body(),
                    this.max_message_size.saturating_add(5),
                    tokio::time::Instant::now() + read_for,
                )
                .await;
                return Ok(refusal(Refused::OverBudget).into_http());
            }
            let encoding = match Encoding::of(req.headers()) {
                Ok(e) => e,
                Err(status) => {
                    drain(
                        req.into_body(),
                        this.max_message_size.saturating_add(5),
                        tokio::time::Instant::now() + read_for,
                    )
                    .await;
                    return Ok(status.into_http());
                }
            };
            let (parts, body) = req.into_parts();
            let deadline = tokio::time::Instant::now() + read_deadline(&parts.headers);
            let budget = this.shared.out.budget.clone();
            let (message, charge) =
                match read_unary(body, encoding, this.max_message_size, &budget, deadline).await {
                    Ok(m) => m,
                    Err(status) => return Ok(status.into_http()),
                };
            let auth = parts
                .extensions
                .get::<Arc<crate::extensions::auth::Identity>>()
                .cloned();
            match export(&this.shared, signal, &parts.headers, auth, message, charge).await {
                Ok(()) => Ok(unary_ok()),
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The `grpc-encoding` of a request, as weir inflates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
    /// Snappy's framing format, as gRPC's snappy compressors write it.
    Snappy,
}

/// What `grpc-accept-encoding` announces.
const ACCEPTED: &str = "gzip,zstd,snappy,identity";

impl Encoding {
    fn of(headers: &http::HeaderMap) -> Result<Encoding, Status> {
        let Some(v) = headers.get("grpc-encoding") else {
            return Ok(Encoding::Identity);
        };
        match v.as_bytes() {
            b"identity" => Ok(Encoding::Identity),
            b"gzip" => Ok(Encoding::Gzip),
            b"zstd" => Ok(Encoding::Zstd),
            b"snappy" => Ok(Encoding::Snappy),
            other => {
                let mut status = Status::unimplemented(format!(
                    "Content is compressed with `{}` which isn't supported",
                    String::from_utf8_lossy(other)
                ));
                status.metadata_mut().insert(
                    "grpc-accept-encoding",
                    tonic::metadata::MetadataValue::from_static(ACCEPTED),
                );
                Err(status)
            }
        }
    }
}

/// Reads the one message of a unary request: the body up to the size limit, the 5-byte
/// frame header, and the message inflated as its `grpc-encoding` says into a buffer sized
/// from what the format declares, never past `limit`.
/// How long a request's message may take to arrive: the client's `grpc-timeout` when it sets
/// one, never more than [`MAX_READ`].
fn read_deadline(headers: &http::HeaderMap) -> std::time::Duration {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(MAX_READ, |d| d.min(MAX_READ))
}

/// The longest a unary request's body may take to arrive. A client that stalls mid-body
/// would otherwise hold its bytes (and its share of the memory budget) until its connection
/// is aged out.
pub const MAX_READ: std::time::Duration = std::time::Duration::from_secs(60);

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Reads the message as [`read_unary_bytes`] does, charging the memory budget for the bytes
/// as they arrive (a full budget refuses mid-body, retryably) and giving up at `deadline`.
/// The charge returned covers the message; the caller resizes it to what it keeps.
async fn read_unary(
    body: Incoming,
    encoding: Encoding,
    limit: usize,
    budget: &Arc<crate::pipeline::budget::Budget>,
    deadline: tokio::time::Instant,
) -> Result<(Bytes, crate::pipeline::budget::Charge), Status> {
    let mut charge = budget.force(0);
    let message = read_unary_bytes(body, encoding, limit, &mut charge, deadline).await?;
    Ok((message, charge))
}

async fn read_unary_bytes(
    body: Incoming,
    encoding: Encoding,
    limit: usize,
    charge: &mut crate::pipeline::budget::Charge,
    deadline: tokio::time::Instant,
) -> Result<Bytes, Status> {
    use http_body_util::BodyExt;
    let too_large = |len: usize| {
        Status::resource_exhausted(format!(
            "Error, decoded message length too large: found {len} bytes, the limit is: {limit} bytes"
        ))
    };
    let mut body = body;
    // Most requests arrive as one DATA frame holding the whole gRPC frame: kept as it
    // came, no copy. Otherwise the frames are gathered.
    let mut first: Option<Bytes> = None;
    let mut gathered: Vec<u8> = Vec::new();
    let mut declared: Option<usize> = None;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "the request message did not arrive in time (grpc-timeout, at most 60s); its bytes were let go",
                ))
            }
        };
        let frame = frame.map_err(|e| Status::internal(format!("cannot read the request: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if data.is_empty() {
            continue;
        }
        // The bytes held while the rest arrives count against the memory budget.
        if !charge.try_grow(data.len()) {
            drain(body, limit.saturating_add(5), deadline).await;
            return Err(refusal(Refused::OverBudget));
        }
        let have = match (&first, gathered.is_empty()) {
            (None, true) => {
                first = Some(data);
                first.as_ref().map_or(0, Bytes::len)
            }
            (Some(f), true) => {
                gathered.reserve(declared.map_or(f.len() + data.len(), |d| d + 5));
                gathered.extend_from_slice(f);
                gathered.extend_from_slice(&data);
                first = None;
                gathered.len()
            }
            _ => {
                gathered.extend_from_slice(&data);
                gathered.len()
            }
        };
        if declared.is_none() && have >= 5 {
            let head: &[u8] = first.as_deref().unwrap_or(&gathered);
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > limit {
                // Read (and drop) the rest first: an answer that overtakes the body ends the
                // stream with a reset that clients report as UNKNOWN.
                drain(body, limit.saturating_add(5), deadline).await;
                return Err(too_large(len));
            }
            declared = Some(len);
        }
        if have > limit.saturating_add(5) {
            drain(body, limit.saturating_add(5), deadline).await;
            return Err(too_large(have - 5));
        }
    }
    let whole: Bytes = match first {
        Some(f) => f,
        None => Bytes::from(gathered),
    };
    if whole.is_empty() {
        return Err(Status::internal("Missing request message."));
    }
    let Some(len) = declared else {
        return Err(Status::internal(
            "protocol error: the request ended inside a gRPC frame header",
        ));
    };
    if whole.len() < 5 + len {
        return Err(Status::internal(format!(
            "protocol error: the request ended {} bytes into a message of {len}",
            whole.len() - 5
        )));
    }
    let message = whole.slice(5..5 + len);
    match (whole[0], encoding) {
        (0, _) => Ok(message),
        (1, Encoding::Identity) => Err(Status::internal(
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
        )),
        (1, e) => {
            let coding = match e {
                Encoding::Gzip => "gzip",
                Encoding::Zstd => "zstd",
                Encoding::Snappy | Encoding::Identity => "snappy-framed",
            };
            let inflated = crate::compression::inflate(coding, message, limit).await;
            match inflated {
                Ok(v) => Ok(Bytes::from(v)),
                Err(crate::compression::DecompressError::TooLarge { .. }) => Err(Status::resource_exhausted(format!(
                    "Error decompressing: size limit, of {limit} bytes, exceeded while decompressing message"
                ))),
                Err(err) => Err(Status::internal(format!(
                    "Error decompressing: {err}, while sending request"
                ))),
            }
        }
        (f, _) => Err(Status::internal(format!(
            "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1), while sending request"
        ))),
    }
}

/// The answer to a unary call that succeeded: an empty message (an empty
/// Export*ServiceResponse encodes as zero bytes) and `grpc-status: 0`.
fn unary_ok() -> Response<tonic::body::Body> {
    let mut r = Response::new(tonic::body::Body::new(UnaryOk {
        data: Some(Bytes::from_static(&[0, 0, 0, 0, 0])),
        trailers: true,
    }));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        "grpc-accept-encoding",
        http::HeaderValue::from_static(ACCEPTED),
    );
    r
}

/// One DATA frame, then the trailers.
struct UnaryOk {
    data: Option<Bytes>,
    trailers: bool,
}

impl http_body::Body for UnaryOk {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        if std::mem::take(&mut self.trailers) {
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::trailers(t))));
        }
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.trailers
    }
}

/// Checks, counts, charges and hands one request's message to the pipelines.
async fn export(
    shared: &Arc<Shared>,
    signal: Signal,
    headers: &http::HeaderMap,
    auth: Option<Arc<crate::extensions::auth::Identity>>,
    body: Bytes,
    mut charge: crate::pipeline::budget::Charge,
) -> Result<(), Status> {
    let metadata = shared.include_metadata.then(|| {
        Arc::new(
            headers
                .iter()
                .filter(|(k, _)| !k.as_str().ends_with("-bin"))
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect::<Vec<_>>(),
        )
    });
    let items = check::check_request(signal, &body)
        .map_err(|e| Status::invalid_argument(format!("malformed OTLP {signal} request: {e}")))?;
    if items == 0 {
        // Nothing to forward; an empty request is valid OTLP.
        return Ok(());
    }
    // Charged while it arrived; now what is kept (inflated, the message alone). Inflating
    // asks the budget like arriving bytes do: many small bombs cannot pass it.
    if body.len() > charge.bytes() {
        if !charge.try_grow(body.len() - charge.bytes()) {
            shared.grpc_counters.refused(signal, items);
            return Err(refusal(Refused::OverBudget));
        }
    } else {
        charge.resize(body.len());
    }
    let ctx = Arc::new(Context {
        receiver: shared.out.id.clone(),
        transport: "grpc",
        metadata,
        tenant: None,
        auth,
        charge: Some(Arc::new(charge)),
        ack: None,
    });
    let batch = Batch::encoded(signal, body, items, ctx);
    match shared
        .out
        .consumers
        .current()
        .get(signal)
        .admit(batch)
        .await
    {
        Ok(()) => {
            shared.grpc_counters.accepted(signal, items);
            Ok(())
        }
        Err(r) => {
            shared.grpc_counters.refused(signal, items);
            Err(refusal(r))
        }
    }
}

fn refusal(r: Refused) -> Status {
    match r {
        Refused::Busy => crate::grpc::status_with_retry(
            Code::Unavailable,
            "weir is over capacity (pipeline full); retry later",
            std::time::Duration::from_secs(1),
        ),
        Refused::OverBudget => crate::grpc::status_with_retry(
            Code::Unavailable,
            "weir is over its memory budget; retry later",
            std::time::Duration::from_secs(1),
        ),
        Refused::MemoryLimited(m) | Refused::Storage(m) => {
            crate::grpc::status_with_retry(Code::Unavailable, &m, std::time::Duration::from_secs(1))
        }
        Refused::Closed => Status::unavailable("weir is shutting down; retry later"),
        Refused::Unauthenticated(m) => Status::unauthenticated(m),
        Refused::PermissionDenied(m) => Status::permission_denied(m),
        Refused::RateLimited {
            message,
            retry_after,
        } => crate::grpc::status_with_retry(Code::ResourceExhausted, &message, retry_after),
    }
}

/// Reads a request body to its end and drops it, stopping after `limit` bytes.
/// Reads and drops the rest of a body, up to `limit` bytes and until `deadline` (a client
/// that stalls is not waited for longer than its read deadline).
async fn drain(mut body: Incoming, limit: usize, deadline: tokio::time::Instant) {
    use http_body_util::BodyExt;
    let mut seen = 0usize;
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, body.frame()).await {
        let Ok(frame) = frame else { return };
        if let Some(d) = frame.data_ref() {
            seen += d.len();
            if seen > limit {
                return;
            }
        }
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_timeout_is_read_as_the_spec_writes_it_and_capped() {
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["S", "123456789S", "5x", "", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        let mut h = http::HeaderMap::new();
        assert_eq!(read_deadline(&h), MAX_READ, "no grpc-timeout: 60 s");
        h.insert("grpc-timeout", http::HeaderValue::from_static("2S"));
        assert_eq!(read_deadline(&h), Duration::from_secs(2));
        h.insert("grpc-timeout", http::HeaderValue::from_static("1H"));
        assert_eq!(read_deadline(&h), MAX_READ, "capped");
        h.insert("grpc-timeout", http::HeaderValue::from_static("bogus"));
        assert_eq!(read_deadline(&h), MAX_READ);
    }
}
