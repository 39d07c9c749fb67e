//! `otlp` exporter settings (OTLP over gRPC), with the Collector's keys and defaults.
use serde::Deserialize;
use std::time::Duration;

use crate::config::units::DurationValue;
use crate::exporters::helper::config::{QueueConfig, RetryConfig};
use crate::exporters::{Compression, Headers, TlsClientConfig};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpExporterConfig {
    /// `host:port` or `http://host:port` of the OTLP/gRPC backend (Tempo, Jaeger, another
    /// collector). Required.
    pub endpoint: String,
    /// Plaintext only for now: `tls.insecure: true` or an `http://` endpoint.
    pub tls: TlsClientConfig,
    /// Sent as gRPC metadata with every request (e.g. `X-Scope-OrgID`, auth tokens).
    pub headers: Headers,
    /// A header carrying each request's tenant (set by the `tenant` processor), e.g.
    /// `X-Scope-OrgID`; none when not configured. Requests never mix tenants.
    pub tenant_header: Option<String>,
    /// `gzip` (default) or `none`.
    pub compression: Compression,
    /// Per-request deadline (default 5s).
    pub timeout: DurationValue,
    pub sending_queue: QueueConfig,
    pub retry_on_failure: RetryConfig,
}

impl Default for OtlpExporterConfig {
    fn default() -> Self {
        OtlpExporterConfig {
            endpoint: String::new(),
            tls: TlsClientConfig::default(),
            headers: Headers::new(),
            tenant_header: None,
            compression: Compression::Gzip,
            timeout: Duration::from_secs(5).into(),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

impl OtlpExporterConfig {
    /// The URI tonic connects to.
    pub fn uri(&self) -> String {
        if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else {
            format!("http://{}", self.endpoint)
        }
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.endpoint.is_empty() {
            errs.push((
                "endpoint".into(),
                "is required (host:port of the OTLP/gRPC backend)".into(),
            ));
        } else if self.endpoint.starts_with("https://")
            || (!self.endpoint.starts_with("http://") && !self.tls.insecure)
        {
            errs.push((
                "tls.insecure".into(),
                "TLS is not supported yet: set tls.insecure: true (or use an http:// endpoint) for plaintext".into(),
            ));
        } else if self.uri().parse::<http::Uri>().is_err() {
            errs.push((
                "endpoint".into(),
                format!("invalid endpoint {:?}", self.endpoint),
            ));
        }
        if self.timeout.0.is_zero() {
            errs.push(("timeout".into(), "must be greater than 0".into()));
        }
        errs.extend(crate::exporters::check_headers(&self.headers));
        if let Some(h) = &self.tenant_header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                errs.push(("tenant_header".into(), format!("invalid header name {h:?}")));
            }
        }
        if let Err((k, m)) = self.sending_queue.validate() {
            errs.push((format!("sending_queue.{k}"), m));
        }
        if let Err((k, m)) = self.retry_on_failure.validate() {
            errs.push((format!("retry_on_failure.{k}"), m));
        }
        errs
    }
}
