//! The telemetry HTTP endpoint: `GET /metrics`, and `POST /-/reload` (the same reload as
//! SIGHUP; answers 200 with what changed, or 400 with every config error).
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};

use super::metrics::Registry;

/// A reload request and where its outcome goes.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

#[derive(Clone)]
pub struct TelemetryService {
    pub registry: Arc<Registry>,
    /// The resource and exposition options of `service.telemetry`.
    pub exposition: Arc<super::Exposition>,
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl hyper::service::Service<Request<Incoming>> for TelemetryService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let resp = match (req.method(), req.uri().path()) {
                (&Method::GET, "/metrics") => {
                    let mut r = Response::new(Full::new(Bytes::from(
                        this.registry.render_with(&this.exposition),
                    )));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                }
                (&Method::POST, "/-/reload") => match &this.reload {
                    None => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "reload is not available\n".into(),
                    ),
                    Some(tx) => {
                        let (done, outcome) = oneshot::channel();
                        if tx.send(done).await.is_err() {
                            text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
                        } else {
                            match outcome.await {
                                Ok(Ok(msg)) => text(StatusCode::OK, format!("{msg}\n")),
                                Ok(Err(msg)) => text(StatusCode::BAD_REQUEST, format!("{msg}\n")),
                                Err(_) => {
                                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
                                }
                            }
                        }
                    }
                },
                (_, "/-/reload") | (_, "/metrics") => text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed\n".into(),
                ),
                _ => text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
            };
            Ok(resp)
        })
    }
}
