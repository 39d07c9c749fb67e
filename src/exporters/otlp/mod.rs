//! The `otlp` exporter: OTLP over gRPC, how weir feeds Tempo, Jaeger and other collectors.
//! Sends the encoded request it was given (the received bytes on the fast path).
pub mod config;

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
    trace::v1::ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::exporters::helper::{BoxFuture, ExportError, Sender, Sent};
use crate::exporters::Compression;
use crate::grpc::BytesCodec;
use crate::pdata::{Batch, Signal};
use config::OtlpExporterConfig;

pub struct OtlpGrpcSender {
    channel: Channel,
    metadata: MetadataMap,
    tenant_key: Option<MetadataKey<tonic::metadata::Ascii>>,
    compression: Option<CompressionEncoding>,
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
        let mut metadata = MetadataMap::new();
        for (k, v) in &cfg.headers {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("invalid header name {k:?}"))?;
            let val = MetadataValue::try_from(v.as_str())
                .map_err(|_| format!("invalid value for header {k:?}"))?;
            metadata.insert(key, val);
        }
        let tenant_key = match &cfg.tenant_header {
            Some(h) => Some(
                MetadataKey::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("invalid tenant_header {h:?}"))?,
            ),
            None => None,
        };
        Ok(Arc::new(OtlpGrpcSender {
            channel: endpoint.connect_with_connector_lazy(GrpcConnector::new(tls)),
            metadata,
            tenant_key,
            auth: cfg
                .auth
                .as_ref()
                .and_then(|a| a.resolved.as_ref())
                .map(crate::extensions::auth::ClientAuth::build)
                .transpose()?,
            compression: match cfg.compression {
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
                Compression::None => None,
            },
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
pub fn classify(status: &tonic::Status) -> ExportError {
    // A status made here from a transport failure (connect, TLS handshake, reset), not one
    // the server sent: the connection failed, which gRPC calls UNAVAILABLE; retried, and
    // the cause named.
    if let Some(mut cause) = std::error::Error::source(status) {
        let mut message = format!("rpc error: code = Unavailable desc = {}", status.message());
        loop {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            match cause.source() {
                Some(next) => cause = next,
                None => break,
            }
        }
        return ExportError::Retryable {
            message,
            retry_after: None,
        };
    }
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

impl Sender for OtlpGrpcSender {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd);
            if let Some(c) = self.compression {
                grpc = grpc.send_compressed(c);
            }
            grpc.ready()
                .await
                .map_err(|e| ExportError::retryable(format!("connection not ready: {e}")))?;
            let mut req = tonic::Request::new(batch.to_bytes());
            *req.metadata_mut() = self.metadata.clone();
            if let (Some(k), Some(t)) = (&self.tenant_key, &batch.context.tenant) {
                let v = MetadataValue::try_from(&**t).map_err(|_| {
                    ExportError::permanent(format!("tenant {t:?} cannot be sent in a header"))
                })?;
                req.metadata_mut().insert(k.clone(), v);
            }
            if let Some(a) = &self.auth {
                let mut headers = std::mem::take(req.metadata_mut()).into_headers();
                a.apply(&batch.context, &mut headers);
                *req.metadata_mut() = MetadataMap::from_headers(headers);
            }
            let path = PathAndQuery::from_static(batch.signal.grpc_path());
            match grpc.unary(req, path, BytesCodec).await {
                Ok(resp) => Ok(partial_success(batch.signal, resp.get_ref())),
                Err(status) => Err(classify(&status)),
            }
        })
    }
}
