//! The `otlp` exporter: OTLP over gRPC, how weir feeds Tempo, Jaeger and other collectors.
//! Sends the encoded request it was given (the received bytes on the fast path).
pub mod config;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
    trace::v1::ExportTraceServiceResponse,
};
use prost::Message;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::config::loader::Body;
use crate::exporters::helper::{BoxFuture, ExportError, Sender, Sent};
use crate::exporters::Compression;
use crate::pdata::{Batch, Signal};
use crate::pipeline::registry::{
    all_signals, AuthSlot, Decode, ExporterParts, ExporterSettings, Factory, Stability,
};
use config::OtlpExporterConfig;

pub static FACTORY: Factory = Factory {
    type_name: "otlp",
    aliases: &["otlp_grpc"],
    stability: &all_signals(Stability::Stable),
    description: "OTLP over gRPC (Tempo, Jaeger, collectors)",
    decode: Decode::Exporter(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExporterSettings>> {
    let c = b.decode_checked::<OtlpExporterConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ExporterSettings for OtlpExporterConfig {
    fn build(
        &self,
        id: &str,
        registry: &Arc<crate::telemetry::metrics::Registry>,
    ) -> Result<ExporterParts, String> {
        let _ = (id, registry);
        Ok(ExporterParts {
            sender: OtlpGrpcSender::new(self)?,
            queue: self.sending_queue.clone(),
            retry: self.retry_on_failure.clone(),
            timeout: self.timeout.0,
        })
    }
    fn sending_queue(&self) -> Option<&crate::exporters::helper::config::QueueConfig> {
        Some(&self.sending_queue)
    }
    fn auth_slot(&mut self) -> Option<AuthSlot<'_>> {
        self.auth.as_mut().map(|auth| AuthSlot {
            key: "auth".into(),
            auth,
        })
    }
}

pub struct OtlpGrpcSender {
    channel: Channel,
    /// `headers:`, sent as gRPC metadata.
    headers: http::HeaderMap,
    tenant_key: Option<HeaderName>,
    compression: Compression,
    params: crate::exporters::CompressionParams,
    /// The `auth` authenticator's headers, added to every request.
    auth: Option<Arc<crate::extensions::auth::ClientAuth>>,
}

impl OtlpGrpcSender {
    /// Builds the client; connects lazily, so a backend that is down at start is retried
    /// like any other failure.
    pub fn new(cfg: &OtlpExporterConfig) -> Result<Arc<Self>, String> {
        let endpoint = Endpoint::from_shared(cfg.uri())
            .map_err(|e| format!("invalid endpoint {:?}: {e}", cfg.endpoint))?
            .connect_timeout(Duration::from_secs(5))
            .http2_adaptive_window(true);
        let tls = if cfg.uses_tls() {
            for w in cfg.tls.common.warnings() {
                tracing::warn!("otlp exporter: {w}");
            }
            Some(crate::tls::ClientTls::new(&cfg.tls, &[b"h2"])?)
        } else {
            None
        };
        let endpoint = match &cfg.keepalive {
            Some(k) if !k.time.0.is_zero() => endpoint
                .http2_keep_alive_interval(k.time.0)
                .keep_alive_timeout(k.timeout.0)
                .keep_alive_while_idle(k.permit_without_stream),
            _ => endpoint,
        };
        for k in cfg.without_effect() {
            tracing::warn!("otlp exporter: {k} has no effect in weir");
        }
        let headers = crate::exporters::header_map(&cfg.headers)?;
        let tenant_key = crate::exporters::tenant_header_name(cfg.tenant_header.as_deref())?;
        Ok(Arc::new(OtlpGrpcSender {
            channel: endpoint.connect_with_connector_lazy(GrpcConnector::new(tls)),
            headers,
            tenant_key,
            auth: crate::extensions::auth::ClientAuth::for_ref(&cfg.auth)?,
            compression: cfg.compression,
            params: cfg.compression_params,
        }))
    }
}

/// Connects the gRPC channel: TCP, then TLS (ALPN `h2`) when configured.
#[derive(Clone)]
pub struct GrpcConnector {
    http: hyper_util::client::legacy::connect::HttpConnector,
    tls: Option<Arc<crate::tls::ClientTls>>,
}

impl GrpcConnector {
    /// No Nagle; TLS with `tls` when given. Give tonic an `http://` URI either way.
    pub fn new(tls: Option<Arc<crate::tls::ClientTls>>) -> GrpcConnector {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        GrpcConnector { http, tls }
    }
}

/// The connection a [`GrpcConnector`] makes.
pub type Io = hyper_util::rt::TokioIo<crate::tls::Stream>;

impl tower_service::Service<http::Uri> for GrpcConnector {
    type Response = Io;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<Io, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let host = dst.host().unwrap_or_default().to_string();
        let fut = self.http.call(dst);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = fut.await?.into_inner();
            let stream = match tls {
                Some(tls) => {
                    crate::tls::Stream::Tls(Box::new(tls.connect(&host, tcp).await?.into()))
                }
                None => crate::tls::Stream::Plain(tcp),
            };
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// Sorts a gRPC failure into retryable or permanent, as the OTLP spec lists the codes.
/// (Transport failures never become a status: see [`transport_error`].)
pub fn classify(status: &tonic::Status) -> ExportError {
    let message = format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    );
    let delay = crate::grpc::retry_delay(status);
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ExportError::Retryable {
            message,
            retry_after: delay,
        },
        // Only retried when the server says when (RetryInfo), per the OTLP spec.
        Code::ResourceExhausted if delay.is_some() => ExportError::Retryable {
            message,
            retry_after: delay,
        },
        _ => ExportError::Permanent { message },
    }
}

/// Reads `partial_success` from an encoded Export*ServiceResponse.
pub fn partial_success(signal: Signal, body: &[u8]) -> Sent {
    let (rejected, message) = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
    }
    .unwrap_or((0, String::new()));
    Sent {
        rejected: rejected.max(0) as usize,
        message: (!message.is_empty()).then_some(message),
    }
}

/// A request body of a few ready chunks (the gRPC frame header, then the message), sent
/// without copying them together, one DATA frame each.
pub struct Chunks(pub std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

/// The largest response weir reads from a backend (an Export*ServiceResponse is tiny).
const MAX_RESPONSE: usize = 4 << 20;

/// A transport failure (connect, TLS, reset): retryable, the cause named.
fn transport_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ExportError {
    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
    let mut message = format!("rpc error: code = Unavailable desc = {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    ExportError::Retryable {
        message,
        retry_after: None,
    }
}

/// The gRPC status in `headers` (trailers, or the headers of a trailers-only answer). A
/// `grpc-status-details-bin` that is not base64 is dropped first (tonic would panic on it).
fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Status> {
    use base64::Engine;
    headers.get(tonic::Status::GRPC_STATUS)?;
    const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    match headers.get(tonic::Status::GRPC_STATUS_DETAILS) {
        Some(d) if B64.decode(d.as_bytes()).is_err() => {
            let mut h = headers.clone();
            h.remove(tonic::Status::GRPC_STATUS_DETAILS);
            tonic::Status::from_header_map(&h)
        }
        _ => tonic::Status::from_header_map(headers),
    }
}

/// The gRPC code for an HTTP status that came without one (the gRPC spec's mapping).
fn code_for_http(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The message of a unary gRPC response body: one length-prefixed frame, inflated if its
/// flag says so (with the answer's `grpc-encoding`), capped.
fn response_message(data: &[u8], encoding: Option<&HeaderValue>) -> Result<Bytes, String> {
    if data.is_empty() {
        return Ok(Bytes::new());
    }
    if data.len() < 5 {
        return Err("truncated gRPC frame".into());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let msg = data
        .get(5..5 + len)
        .ok_or_else(|| "truncated gRPC message".to_string())?;
    if data[0] == 0 {
        return Ok(Bytes::copy_from_slice(msg));
    }
    let inflated = match encoding.and_then(|e| e.to_str().ok()) {
        Some("gzip") => crate::compression::gunzip_capped(msg, MAX_RESPONSE),
        Some("zstd") => crate::compression::unzstd_capped(msg, MAX_RESPONSE),
        Some("snappy") => crate::compression::unsnappy_framed_capped(msg, MAX_RESPONSE),
        other => return Err(format!("compressed response with grpc-encoding {other:?}")),
    };
    inflated.map(Bytes::from).map_err(|e| e.to_string())
}

impl Sender for OtlpGrpcSender {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            // The request as one gRPC frame, compressed here (weir's level, not tonic's fixed
            // level 6), its header and body sent as they are: no copy into a frame buffer.
            let payload = batch.to_bytes();
            let (flag, body, encoding) = match self.compression {
                Compression::None => (0u8, payload, ""),
                c => {
                    let name = match c {
                        Compression::Gzip => "gzip",
                        Compression::Zstd => "zstd",
                        _ => "snappy",
                    };
                    (
                        1u8,
                        self.params.compress_batch(c, true, batch, &payload).await,
                        name,
                    )
                }
            };
            let len = u32::try_from(body.len())
                .map_err(|_| ExportError::permanent("request over 4 GiB"))?;
            let mut prefix = [flag, 0, 0, 0, 0];
            prefix[1..].copy_from_slice(&len.to_be_bytes());
            let frame = Chunks(
                [Bytes::copy_from_slice(&prefix), body]
                    .into_iter()
                    .collect(),
            );
            let mut req = http::Request::builder()
                .method(http::Method::POST)
                .uri(batch.signal.grpc_path())
                .body(tonic::body::Body::new(frame))
                .map_err(|e| ExportError::permanent(format!("cannot build request: {e}")))?;
            let h = req.headers_mut();
            h.extend(self.headers.clone());
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert(http::header::TE, HeaderValue::from_static("trailers"));
            h.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static(concat!("weir/", env!("CARGO_PKG_VERSION"), " grpc")),
            );
            h.insert(
                "grpc-accept-encoding",
                HeaderValue::from_static("gzip,zstd,snappy"),
            );
            if !encoding.is_empty() {
                h.insert("grpc-encoding", HeaderValue::from_static(encoding));
            }
            if let (Some(k), Some(t)) = (&self.tenant_key, &batch.context.tenant) {
                h.insert(k.clone(), crate::exporters::tenant_value(t)?);
            }
            if let Some(a) = &self.auth {
                a.apply(&batch.context, h);
            }
            let mut channel = self.channel.clone();
            std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut channel, cx))
                .await
                .map_err(transport_error)?;
            let resp = tower_service::Service::call(&mut channel, req)
                .await
                .map_err(transport_error)?;
            let (parts, body) = resp.into_parts();
            // A trailers-only answer carries its status in the headers.
            if let Some(status) = grpc_status(&parts.headers) {
                if status.code() != Code::Ok {
                    return Err(classify(&status));
                }
            }
            if parts.status != http::StatusCode::OK {
                let status = tonic::Status::new(
                    code_for_http(parts.status),
                    format!("HTTP {} from a gRPC backend", parts.status),
                );
                return Err(classify(&status));
            }
            let collected = http_body_util::Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(transport_error)?;
            let trailers = collected.trailers().cloned();
            let data = collected.to_bytes();
            let status = trailers
                .as_ref()
                .and_then(grpc_status)
                .or_else(|| grpc_status(&parts.headers));
            match status {
                Some(s) if s.code() == Code::Ok => {}
                Some(s) => return Err(classify(&s)),
                // The stream ended without a status: the answer was cut; retried.
                None => {
                    return Err(ExportError::retryable(
                        "rpc error: code = Unavailable desc = response ended without grpc-status"
                            .to_string(),
                    ))
                }
            }
            let msg = response_message(&data, parts.headers.get("grpc-encoding"))
                .map_err(|e| ExportError::permanent(format!("unreadable response: {e}")))?;
            Ok(partial_success(batch.signal, &msg))
        })
    }
}

/// A sender to `endpoint` with only these settings (weir's own telemetry pushes through it).
pub fn plain_sender(
    endpoint: &str,
    headers: Vec<(String, String)>,
    compression: Compression,
    timeout: Duration,
) -> Result<Arc<dyn Sender>, String> {
    let cfg = OtlpExporterConfig {
        endpoint: endpoint.to_string(),
        headers: headers.into_iter().collect(),
        compression,
        timeout: timeout.into(),
        ..Default::default()
    };
    Ok(OtlpGrpcSender::new(&cfg)? as Arc<dyn Sender>)
}

#[cfg(test)]
mod send_tests {
    use super::*;

    #[test]
    fn a_malformed_status_detail_does_not_panic() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("14"));
        h.insert("grpc-status-details-bin", HeaderValue::from_static("AB%%"));
        let s = grpc_status(&h).expect("status");
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.details().is_empty());
        h.insert("grpc-status-details-bin", HeaderValue::from_static("AB"));
        assert_eq!(grpc_status(&h).map(|s| s.code()), Some(Code::Unavailable));
    }

    #[test]
    fn response_frames() {
        assert_eq!(response_message(&[], None).as_deref(), Ok(&b""[..]));
        assert_eq!(
            response_message(&[0, 0, 0, 0, 2, 8, 1], None).as_deref(),
            Ok(&[8u8, 1][..])
        );
        assert!(response_message(&[0, 0, 0, 0, 9, 8], None).is_err());
        assert!(response_message(&[0, 0], None).is_err());
        let gz = crate::compression::gzip(&[8, 1]);
        let mut framed = vec![1, 0, 0, 0, gz.len() as u8];
        framed.extend_from_slice(&gz);
        assert_eq!(
            response_message(&framed, Some(&HeaderValue::from_static("gzip"))).as_deref(),
            Ok(&[8u8, 1][..])
        );
        assert!(response_message(&framed, None).is_err());
        assert_eq!(
            code_for_http(http::StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(
            code_for_http(http::StatusCode::UNAUTHORIZED),
            Code::Unauthenticated
        );
    }
}
