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

use crate::config::loader::Body;
use crate::pipeline::registry::{
    Decode, ExtensionServer, ExtensionSettings, Factory, Handles, ServerEnv, Stability,
};

pub static FACTORY: Factory = Factory {
    type_name: "health_check",
    aliases: &[],
    stability: &[(Handles::Extension, Stability::Beta)],
    description: "HTTP health endpoint (200 when ready)",
    decode: Decode::Extension(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExtensionSettings>> {
    let c = b.decode_checked::<HealthCheckConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ExtensionSettings for HealthCheckConfig {
    fn endpoint(&self) -> Option<&str> {
        Some(&self.endpoint)
    }
    fn start_warnings(&self) -> Vec<String> {
        if self.check_collector_pipeline.enabled {
            vec!["check_collector_pipeline has no effect in weir (upstream deprecated it as not working as expected); the endpoint reports readiness".into()]
        } else {
            Vec::new()
        }
    }
    fn server(&self, env: &ServerEnv<'_>) -> Option<ExtensionServer> {
        let cfg = Arc::new(self.clone());
        let ready = env.ready.clone();
        Some(ExtensionServer {
            spec: format!("{self:?}"),
            endpoint: self.endpoint.clone(),
            serve: Box::new(move |l, stop| {
                crate::net::serve(
                    l,
                    HealthService { cfg, ready },
                    crate::net::Protocol::Auto,
                    stop,
                    std::time::Duration::from_secs(1),
                )
            }),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// `host:port` (default `0.0.0.0:13133`).
    pub endpoint: String,
    /// Path answered (default `/`).
    pub path: String,
    /// Bodies to answer with instead of the default JSON status.
    pub response_body: Option<ResponseBody>,
    /// Upstream's pipeline check, deprecated there ("not working as expected"); accepted so
    /// configs load, and weir warns that it has no effect when `enabled`.
    pub check_collector_pipeline: CheckCollectorPipeline,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseBody {
    pub healthy: String,
    pub unhealthy: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckCollectorPipeline {
    pub enabled: bool,
    pub interval: crate::config::units::DurationValue,
    pub exporter_failure_threshold: u32,
}

impl Default for CheckCollectorPipeline {
    fn default() -> Self {
        CheckCollectorPipeline {
            enabled: false,
            interval: std::time::Duration::from_secs(300).into(),
            exporter_failure_threshold: 5,
        }
    }
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "0.0.0.0:13133".into(),
            path: "/".into(),
            response_body: None,
            check_collector_pipeline: CheckCollectorPipeline::default(),
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
    pub cfg: Arc<HealthCheckConfig>,
    pub ready: Arc<AtomicBool>,
}

impl hyper::service::Service<Request<Incoming>> for HealthService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let ready = self.ready.load(Ordering::Relaxed);
        let custom = self.cfg.response_body.as_ref();
        let (status, body, ct): (StatusCode, Bytes, &'static str) =
            if req.uri().path() != self.cfg.path {
                (
                    StatusCode::NOT_FOUND,
                    Bytes::from_static(b"404 page not found\n"),
                    "text/plain; charset=utf-8",
                )
            } else {
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                match (custom, ready) {
                    (Some(b), true) => (status, Bytes::from(b.healthy.clone()), "text/plain"),
                    (Some(b), false) => (status, Bytes::from(b.unhealthy.clone()), "text/plain"),
                    (None, true) => (
                        status,
                        Bytes::from_static(b"{\"status\":\"Server available\"}\n"),
                        "application/json",
                    ),
                    (None, false) => (
                        status,
                        Bytes::from_static(b"{\"status\":\"Server not available\"}\n"),
                        "application/json",
                    ),
                }
            };
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        std::future::ready(Ok(r))
    }
}
