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
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};

use super::Shared;
use crate::grpc::BytesCodec;
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
            if !this.shared.out.budget.has_room() {
                // The request body is read and dropped first (nothing is kept), up to the
                // message size limit: a response that overtakes the body makes the HTTP/2
                // stream end with a reset that clients report as UNKNOWN, not retryable.
                drain(req.into_body(), this.max_message_size.saturating_add(5)).await;
                return Ok(refusal(Refused::OverBudget).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(BytesCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(this.max_message_size);
            let svc = ExportSvc {
                shared: this.shared.clone(),
                signal,
            };
            let mut resp = grpc.unary(svc, req).await;
            // tonic reports a compressed frame over the limit as OUT_OF_RANGE; gRPC servers
            // (and the OTLP spec's clients) use RESOURCE_EXHAUSTED for "message too large".
            let headers = resp.headers_mut();
            if headers.get("grpc-status").and_then(|v| v.to_str().ok())
                == Some(&(Code::OutOfRange as i32).to_string())
            {
                headers.insert(
                    "grpc-status",
                    http::HeaderValue::from(Code::ResourceExhausted as i32),
                );
            }
            Ok(resp)
        })
    }
}

struct ExportSvc {
    shared: Arc<Shared>,
    signal: Signal,
}

impl tonic::server::UnaryService<Bytes> for ExportSvc {
    type Response = Bytes;
    type Future = BoxFut<Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let shared = self.shared.clone();
        let signal = self.signal;
        Box::pin(async move {
            let metadata = if shared.include_metadata {
                Some(Arc::new(
                    request
                        .metadata()
                        .iter()
                        .filter_map(|kv| match kv {
                            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                                Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                            }
                            tonic::metadata::KeyAndValueRef::Binary(..) => None,
                        })
                        .collect::<Vec<_>>(),
                ))
            } else {
                None
            };
            let auth = request
                .extensions()
                .get::<Arc<crate::extensions::auth::Identity>>()
                .cloned();
            let body = request.into_inner();
            let items = check::check_request(signal, &body).map_err(|e| {
                Status::invalid_argument(format!("malformed OTLP {signal} request: {e}"))
            })?;
            if items == 0 {
                // Nothing to forward; an empty request is valid OTLP.
                return Ok(tonic::Response::new(Bytes::new()));
            }
            let Some(charge) = shared.out.budget.try_charge(body.len()) else {
                shared.grpc_counters.refused(signal, items);
                return Err(refusal(Refused::OverBudget));
            };
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
                    // An empty Export*ServiceResponse encodes as zero bytes.
                    Ok(tonic::Response::new(Bytes::new()))
                }
                Err(r) => {
                    shared.grpc_counters.refused(signal, items);
                    Err(refusal(r))
                }
            }
        })
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
async fn drain(mut body: Incoming, limit: usize) {
    use http_body_util::BodyExt;
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        if let Some(d) = frame.data_ref() {
            seen += d.len();
            if seen > limit {
                return;
            }
        }
    }
}
