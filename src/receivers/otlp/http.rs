//! OTLP/HTTP: `POST /v1/traces|metrics|logs` with protobuf or JSON bodies, optionally gzip or
//! zstd.
//! Bodies are capped before they are read and again while they are decompressed, so an
//! oversized or hostile request costs at most the configured limit.
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;

use super::config::CorsConfig;
use super::Shared;
use crate::compression::DecompressError;
use crate::grpc::RpcStatus;
use crate::pdata::{check, Batch, Context, Payload, Signal};
use crate::pipeline::inbox::Refused;

#[derive(Clone)]
pub struct HttpService {
    pub shared: Arc<Shared>,
    pub max_body: usize,
    /// `read_timeout`: the whole body must arrive within this (None: no limit).
    pub read_timeout: Option<std::time::Duration>,
    /// `compression_algorithms`: the Content-Encodings accepted (`""` = none).
    pub codings: Arc<[String]>,
    pub paths: Arc<[(String, Signal)]>,
    pub cors: Option<Arc<CorsConfig>>,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Resp = Response<Full<Bytes>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Proto,
    Json,
}

const PROTO: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn text(status: StatusCode, msg: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An error answer: a `google.rpc.Status` in the request's encoding, as the OTLP spec says.
fn status(status: StatusCode, code: tonic::Code, msg: &str, enc: Encoding) -> Resp {
    let (body, ct) = match enc {
        Encoding::Proto => (
            RpcStatus {
                code: code as i32,
                message: msg.to_string(),
                details: vec![],
            }
            .encode_to_vec(),
            PROTO,
        ),
        Encoding::Json => (
            serde_json::json!({"code": code as i32, "message": msg})
                .to_string()
                .into_bytes(),
            JSON,
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// The most an oversized request body is read (and dropped) before answering 413.
const LINGER_MAX_BYTES: u64 = 64 << 20;
/// The longest that takes.
const LINGER_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads up to `limit` bytes of `body`, discarding each frame as it comes.
async fn drain_body(mut body: Incoming, limit: u64) {
    let drain = async {
        let mut seen = 0u64;
        while seen < limit {
            match body.frame().await {
                Some(Ok(f)) => seen += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_MAX_TIME, drain).await;
}

fn origin_allowed(cors: &CorsConfig, origin: &str) -> bool {
    cors.allowed_origins.iter().any(|pat| glob(pat, origin))
}

/// `*` matches any run of characters.
fn glob(pat: &str, s: &str) -> bool {
    match pat.split_once('*') {
        None => pat == s,
        Some((pre, rest)) => {
            if !s.starts_with(pre) {
                return false;
            }
            let s = &s[pre.len()..];
            if rest.is_empty() {
                return true;
            }
            (0..=s.len()).any(|i| s.is_char_boundary(i) && glob(rest, &s[i..]))
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for HttpService {
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFut<Result<Resp, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let allowed = match (&this.cors, &origin) {
                (Some(c), Some(o)) if origin_allowed(c, o) => Some(o.clone()),
                _ => None,
            };
            let mut resp = if req.method() == Method::OPTIONS && this.cors.is_some() {
                preflight(this.cors.as_deref(), allowed.is_some())
            } else {
                this.handle(req).await
            };
            if let Some(o) = allowed {
                if let Ok(v) = HeaderValue::from_str(&o) {
                    resp.headers_mut()
                        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                    resp.headers_mut()
                        .insert(header::VARY, HeaderValue::from_static("Origin"));
                }
            }
            Ok(resp)
        })
    }
}

fn preflight(cors: Option<&CorsConfig>, allowed: bool) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    if let (Some(c), true) = (cors, allowed) {
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        let mut headers = vec!["Content-Type".to_string(), "Content-Encoding".to_string()];
        headers.extend(c.allowed_headers.iter().cloned());
        if let Ok(v) = HeaderValue::from_str(&headers.join(", ")) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if c.max_age > 0 {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(c.max_age));
        }
    }
    r
}

impl HttpService {
    async fn handle(&self, req: Request<Incoming>) -> Resp {
        let path = req.uri().path();
        let Some(signal) = self.paths.iter().find(|(p, _)| p == path).map(|(_, s)| *s) else {
            return text(StatusCode::NOT_FOUND, "404 page not found");
        };
        if self.shared.out.consumers.current().get(signal).is_empty() {
            return text(StatusCode::NOT_FOUND, "404 page not found");
        }
        if req.method() != Method::POST {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 method not allowed, supported: [POST]",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }

        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let enc = match ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
            PROTO => Encoding::Proto,
            JSON => Encoding::Json,
            _ => {
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &format!(
                        "415 unsupported media type {ct:?}, supported: [application/json, application/x-protobuf]"
                    ),
                )
            }
        };
        let auth = match self.shared.authenticate(req.headers()) {
            // No authenticator: the mTLS client certificate, if any, says who the client is.
            Ok(id) => id.or_else(|| {
                req.extensions()
                    .get::<Arc<crate::extensions::auth::Identity>>()
                    .cloned()
            }),
            Err(e) => {
                // Read what the client is still sending (bounded), so it reads the 401.
                drain_body(req.into_body(), LINGER_MAX_BYTES).await;
                let (code, grpc_code, msg, _) = refusal(Refused::Unauthenticated(e));
                return status(code, grpc_code, &msg, enc);
            }
        };
        // The body's encoding: one the config accepts and weir decodes.
        let coding = req
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
            .unwrap_or_default();
        let coding = match coding.as_str() {
            "identity" => String::new(),
            "x-gzip" => "gzip".to_string(),
            _ => coding,
        };
        let decodable = matches!(
            coding.as_str(),
            "" | "gzip" | "zstd" | "zlib" | "deflate" | "snappy" | "lz4"
        );
        if !decodable || !self.codings.contains(&coding) {
            let supported: Vec<&str> = self
                .codings
                .iter()
                .map(String::as_str)
                .filter(|c| !c.is_empty())
                .collect();
            return status(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                &format!(
                    "unsupported Content-Encoding {coding:?}, supported: {}",
                    supported.join(", ")
                ),
                enc,
            );
        }
        let too_large = |what: &str| {
            status(
                StatusCode::PAYLOAD_TOO_LARGE,
                tonic::Code::ResourceExhausted,
                &format!(
                    "{what} exceeds the limit of {} bytes (max_request_body_size)",
                    self.max_body
                ),
                enc,
            )
        };
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > self.max_body as u64 {
                // Read and discard what the client is still sending (bounded in bytes and
                // time, nothing kept), so it gets to read the 413 instead of a broken pipe.
                drain_body(req.into_body(), len.min(LINGER_MAX_BYTES)).await;
                return too_large("request body");
            }
        }
        let metadata = if self.shared.include_metadata {
            Some(Arc::new(
                req.headers()
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                    })
                    .collect::<Vec<_>>(),
            ))
        } else {
            None
        };
        // The body is reserved against the memory budget as it arrives (all of it at once
        // when its length is announced), so bodies being read are bounded too.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let refuse = |r: Refused| {
            let (code, grpc_code, msg, retry) = refusal(r);
            let mut resp = status(code, grpc_code, &msg, enc);
            if let Some(secs) = retry {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            resp
        };
        let Some(mut charge) = self.shared.out.budget.try_charge(declared) else {
            return refuse(Refused::OverBudget);
        };
        let deadline = self.read_timeout.map(|t| tokio::time::Instant::now() + t);
        let mut incoming = req.into_body();
        let mut frames: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        loop {
            let next = incoming.frame();
            let frame = match deadline {
                Some(d) => match tokio::time::timeout_at(d, next).await {
                    Ok(f) => f,
                    Err(_) => {
                        return status(
                            StatusCode::REQUEST_TIMEOUT,
                            tonic::Code::DeadlineExceeded,
                            &format!(
                                "request body not received within read_timeout ({:?})",
                                self.read_timeout.unwrap_or_default()
                            ),
                            enc,
                        )
                    }
                },
                None => next.await,
            };
            let data = match frame {
                None => break,
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        tonic::Code::InvalidArgument,
                        &format!("failed to read request body: {e}"),
                        enc,
                    )
                }
            };
            total += data.len();
            if total > self.max_body {
                return too_large("request body");
            }
            if total > charge.bytes() && !charge.try_grow(total - charge.bytes()) {
                return refuse(Refused::OverBudget);
            }
            frames.push(data);
        }
        let body = if frames.len() == 1 {
            frames.pop().unwrap_or_default()
        } else {
            let mut b = bytes::BytesMut::with_capacity(total);
            for f in &frames {
                b.extend_from_slice(f);
            }
            b.freeze()
        };
        drop(frames);
        let body = if !coding.is_empty() {
            let coding: &'static str = match coding.as_str() {
                "gzip" => "gzip",
                "zstd" => "zstd",
                "snappy" => "snappy",
                "lz4" => "lz4",
                // zlib and deflate: zlib-wrapped, as the Collector reads both.
                _ => "zlib",
            };
            let out = crate::compression::inflate(coding, body, self.max_body).await;
            match out {
                Ok(b) => Bytes::from(b),
                Err(DecompressError::TooLarge { .. }) => return too_large("decompressed body"),
                Err(e) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        tonic::Code::InvalidArgument,
                        &e.to_string(),
                        enc,
                    )
                }
            }
        } else {
            body
        };
        // The body as it will be held (decompressed), not as it was sent.
        charge.resize(body.len());
        let decoded = match enc {
            Encoding::Proto => check::check_request(signal, &body)
                .map(|n| (Payload::Encoded(body), n))
                .map_err(|e| e.to_string()),
            Encoding::Json => decode_json(signal, &body),
        };
        let (payload, items) = match decoded {
            Ok(d) => d,
            Err(e) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    &format!("malformed OTLP {signal} request: {e}"),
                    enc,
                )
            }
        };
        if items > 0 {
            let batch = Batch {
                signal,
                items,
                payload,
                context: Arc::new(Context {
                    receiver: self.shared.out.id.clone(),
                    transport: "http",
                    metadata,
                    tenant: None,
                    auth,
                    charge: Some(Arc::new(charge)),
                    ack: None,
                }),
                held: None,
                compressed: None,
            };
            if let Err(r) = self
                .shared
                .out
                .consumers
                .current()
                .get(signal)
                .admit(batch)
                .await
            {
                self.shared.http_counters.refused(signal, items);
                return refuse(r);
            }
            self.shared.http_counters.accepted(signal, items);
        }
        // An empty Export*ServiceResponse: no bytes in protobuf, `{}` in JSON.
        let (body, ct) = match enc {
            Encoding::Proto => (Bytes::new(), PROTO),
            Encoding::Json => (Bytes::from_static(b"{}"), JSON),
        };
        let mut r = Response::new(Full::new(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        r
    }
}

/// OTLP/JSON → decoded request and its item count.
/// The answer to a refusal: HTTP status, the matching gRPC code, message, Retry-After seconds.
fn refusal(r: Refused) -> (StatusCode, tonic::Code, String, Option<u64>) {
    match r {
        Refused::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "weir is over capacity (pipeline full); retry later".to_string(),
            Some(1),
        ),
        Refused::OverBudget => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "weir is over its memory budget; retry later".to_string(),
            Some(1),
        ),
        Refused::MemoryLimited(m) | Refused::Storage(m) => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            m,
            Some(1),
        ),
        Refused::Closed => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "weir is shutting down; retry later".to_string(),
            Some(1),
        ),
        Refused::Unauthenticated(m) => (
            StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            m,
            None,
        ),
        Refused::PermissionDenied(m) => (
            StatusCode::UNAUTHORIZED,
            tonic::Code::PermissionDenied,
            m,
            None,
        ),
        Refused::RateLimited {
            message,
            retry_after,
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
            message,
            Some(retry_after.as_secs().max(1)),
        ),
    }
}

/// Decodes an OTLP/JSON body and hands it on as protobuf: checked like a protobuf body (the
/// JSON decoder has no nesting limit as low as the protobuf decoder's), and from here on it
/// takes the same fast path.
pub fn decode_json(signal: Signal, body: &[u8]) -> Result<(Payload, usize), String> {
    let e = |e: serde_json::Error| e.to_string();
    let bytes = match signal {
        Signal::Traces => serde_json::from_slice::<ExportTraceServiceRequest>(body)
            .map_err(e)?
            .encode_to_vec(),
        Signal::Metrics => serde_json::from_slice::<ExportMetricsServiceRequest>(body)
            .map_err(e)?
            .encode_to_vec(),
        Signal::Logs => serde_json::from_slice::<ExportLogsServiceRequest>(body)
            .map_err(e)?
            .encode_to_vec(),
    };
    let n = check::check_request(signal, &bytes).map_err(|e| e.to_string())?;
    Ok((Payload::Encoded(Bytes::from(bytes)), n))
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn origin_globs() {
        assert!(glob("https://*.example.com", "https://app.example.com"));
        assert!(!glob("https://*.example.com", "https://example.org"));
        assert!(glob("*", "anything"));
        assert!(glob("http://localhost:3000", "http://localhost:3000"));
    }
}
