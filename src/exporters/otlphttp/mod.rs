//! The `otlphttp` exporter: OTLP over HTTP (protobuf or JSON), for backends that take
//! OTLP/HTTP (Tempo, Jaeger, vendors). Retries 429/502/503/504 honouring `Retry-After`;
//! any other failure status is permanent and logged with the backend's message.
pub mod config;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;

use crate::config::loader::Body;
use crate::exporters::helper::{BoxFuture, ExportError, Sender, Sent};
use crate::exporters::Compression;
use crate::grpc::RpcStatus;
use crate::pdata::{Batch, Payload, Signal};
use crate::pipeline::registry::{
    all_signals, AuthSlot, Decode, ExporterParts, ExporterSettings, Factory, Stability,
};
use config::{Encoding, OtlpHttpExporterConfig};

pub static FACTORY: Factory = Factory {
    type_name: "otlphttp",
    aliases: &["otlp_http"],
    stability: &all_signals(Stability::Stable),
    description: "OTLP over HTTP, protobuf or JSON",
    decode: Decode::Exporter(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExporterSettings>> {
    let c = b.decode_checked::<OtlpHttpExporterConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ExporterSettings for OtlpHttpExporterConfig {
    fn build(
        &self,
        id: &str,
        registry: &Arc<crate::telemetry::metrics::Registry>,
    ) -> Result<ExporterParts, String> {
        let _ = (id, registry);
        Ok(ExporterParts {
            sender: OtlpHttpSender::new(self)?,
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

pub struct OtlpHttpSender {
    client: crate::exporters::HttpClient,
    urls: [Option<http::Uri>; 3],
    headers: HeaderMap,
    tenant_header: Option<HeaderName>,
    /// The `auth` authenticator's headers, added to every request.
    auth: Option<std::sync::Arc<crate::extensions::auth::ClientAuth>>,
    compression: Compression,
    params: crate::exporters::CompressionParams,
    encoding: Encoding,
}

fn idx(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

/// Seconds in a `Retry-After` header (the delta-seconds form).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl OtlpHttpSender {
    pub fn new(cfg: &OtlpHttpExporterConfig) -> Result<Arc<Self>, String> {
        let client = crate::exporters::http_client(cfg.proxy_url.as_deref(), &cfg.tls)?;
        if let Some(p) = &cfg.profiles_endpoint {
            tracing::warn!(
                "otlphttp: profiles_endpoint {p:?} has no effect: weir has no profiles signal"
            );
        }
        let mut urls: [Option<http::Uri>; 3] = [None, None, None];
        for s in Signal::ALL {
            if let Some(u) = cfg.url(s) {
                urls[idx(s)] = Some(u.parse().map_err(|e| format!("invalid URL {u:?}: {e}"))?);
            }
        }
        let headers = crate::exporters::header_map(&cfg.headers)?;
        let tenant_header = crate::exporters::tenant_header_name(cfg.tenant_header.as_deref())?;
        Ok(Arc::new(OtlpHttpSender {
            client,
            urls,
            headers,
            tenant_header,
            auth: crate::extensions::auth::ClientAuth::for_ref(&cfg.auth)?,
            compression: cfg.compression,
            params: cfg.compression_params,
            encoding: cfg.encoding,
        }))
    }

    fn body(&self, batch: &Batch) -> Result<Bytes, ExportError> {
        match self.encoding {
            Encoding::Proto => Ok(batch.to_bytes()),
            Encoding::Json => {
                let mut b = batch.clone();
                b.decode()
                    .map_err(|e| ExportError::permanent(e.to_string()))?;
                let json = match &b.payload {
                    Payload::Traces(r) => serde_json::to_vec(r),
                    Payload::Metrics(r) => serde_json::to_vec(r),
                    Payload::Logs(r) => serde_json::to_vec(r),
                    Payload::Encoded(_) => Ok(Vec::new()),
                }
                .map_err(|e| ExportError::permanent(format!("cannot encode JSON: {e}")))?;
                Ok(Bytes::from(json))
            }
        }
    }
}

/// The message of an OTLP/HTTP error body (a google.rpc.Status, or text).
fn error_message(body: &[u8], content_type: &str) -> String {
    if content_type.starts_with("application/x-protobuf") {
        if let Ok(st) = RpcStatus::decode(body) {
            return st.message;
        }
    }
    if content_type.starts_with("application/json") {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
                return m.to_string();
            }
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
    text.trim().to_string()
}

fn json_partial_success(signal: Signal, body: &[u8]) -> Sent {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let ps = &v["partialSuccess"];
    let key = match signal {
        Signal::Traces => "rejectedSpans",
        Signal::Metrics => "rejectedDataPoints",
        Signal::Logs => "rejectedLogRecords",
    };
    let rejected = match &ps[key] {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    };
    Sent {
        rejected: rejected as usize,
        message: ps["errorMessage"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    }
}

impl Sender for OtlpHttpSender {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            let Some(url) = &self.urls[idx(batch.signal)] else {
                return Err(ExportError::permanent(format!(
                    "no endpoint configured for {}",
                    batch.signal
                )));
            };
            let mut body = self.body(batch)?;
            if self.compression != Compression::None {
                body = self
                    .params
                    .compress_batch(self.compression, false, batch, &body)
                    .await;
            }
            let ct = match self.encoding {
                Encoding::Proto => "application/x-protobuf",
                Encoding::Json => "application/json",
            };
            let mut req = Request::builder()
                .method(Method::POST)
                .uri(url.clone())
                .header(header::CONTENT_TYPE, ct)
                .header(
                    header::USER_AGENT,
                    concat!("weir/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(body))
                .map_err(|e| ExportError::permanent(format!("cannot build request: {e}")))?;
            match self.compression {
                Compression::Gzip => {
                    req.headers_mut()
                        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                Compression::Zstd => {
                    req.headers_mut()
                        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
                }
                Compression::Snappy => {
                    req.headers_mut()
                        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
                }
                Compression::None => {}
            }
            for (k, v) in &self.headers {
                req.headers_mut().insert(k.clone(), v.clone());
            }
            if let (Some(h), Some(t)) = (&self.tenant_header, &batch.context.tenant) {
                req.headers_mut()
                    .insert(h.clone(), crate::exporters::tenant_value(t)?);
            }
            if let Some(a) = &self.auth {
                a.apply(&batch.context, req.headers_mut());
            }
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ExportError::retryable(format!("request to {url} failed: {e}")))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let rct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = Limited::new(resp.into_body(), 1 << 20)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                return Ok(if rct.starts_with("application/json") {
                    json_partial_success(batch.signal, &body)
                } else {
                    crate::exporters::otlp::partial_success(batch.signal, &body)
                });
            }
            let message = format!(
                "HTTP {} from {url}: {}",
                status.as_u16(),
                error_message(&body, &rct)
            );
            match status {
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => Err(ExportError::Retryable {
                    message,
                    retry_after: retry_after(&headers),
                }),
                _ => Err(ExportError::Permanent { message }),
            }
        })
    }
}

/// A sender of `signal` to `url` with only these settings (weir's own telemetry pushes
/// through it).
pub fn plain_sender(
    signal: Signal,
    url: String,
    headers: Vec<(String, String)>,
    compression: Compression,
    json: bool,
    timeout: Duration,
) -> Result<Arc<dyn Sender>, String> {
    let (metrics_endpoint, logs_endpoint) = match signal {
        Signal::Logs => (None, Some(url)),
        _ => (Some(url), None),
    };
    let cfg = OtlpHttpExporterConfig {
        metrics_endpoint,
        logs_endpoint,
        headers: headers.into_iter().collect(),
        compression,
        encoding: if json {
            Encoding::Json
        } else {
            Encoding::Proto
        },
        timeout: timeout.into(),
        ..Default::default()
    };
    Ok(OtlpHttpSender::new(&cfg)? as Arc<dyn Sender>)
}
