//! The telemetry HTTP endpoint: `GET /metrics`.
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::metrics::Registry;

#[derive(Clone)]
pub struct TelemetryService {
    pub registry: Arc<Registry>,
}

impl hyper::service::Service<Request<Incoming>> for TelemetryService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let resp = match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                let mut r = Response::new(Full::new(Bytes::from(self.registry.render())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            _ => {
                let mut r = Response::new(Full::new(Bytes::from_static(b"404 page not found\n")));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        };
        std::future::ready(Ok(resp))
    }
}
