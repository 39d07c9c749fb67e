//! The `health_check` extension: an HTTP endpoint that answers 200 while weir is ready to
//! take data and 503 while it starts or shuts down, for load balancers and Kubernetes probes.
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// `host:port` (default `0.0.0.0:13133`).
    pub endpoint: String,
    /// Path answered (default `/`).
    pub path: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "0.0.0.0:13133".into(),
            path: "/".into(),
        }
    }
}

impl HealthCheckConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Err(e) = crate::net::check_endpoint(&self.endpoint) {
            errs.push(("endpoint".into(), e));
        }
        if !self.path.starts_with('/') {
            errs.push((
                "path".into(),
                format!("must start with '/', got {:?}", self.path),
            ));
        }
        errs
    }
}

#[derive(Clone)]
pub struct HealthService {
    pub path: Arc<str>,
    pub ready: Arc<AtomicBool>,
}

impl hyper::service::Service<Request<Incoming>> for HealthService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let (status, body): (StatusCode, &'static [u8]) = if req.uri().path() != &*self.path {
            (StatusCode::NOT_FOUND, b"404 page not found\n")
        } else if self.ready.load(Ordering::Relaxed) {
            (StatusCode::OK, b"{\"status\":\"Server available\"}\n")
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                b"{\"status\":\"Server not available\"}\n",
            )
        };
        let mut r = Response::new(Full::new(Bytes::from_static(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        std::future::ready(Ok(r))
    }
}
