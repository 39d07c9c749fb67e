//! `otlphttp` exporter settings (OTLP over HTTP), with the Collector's keys and defaults.
use serde::Deserialize;
use std::time::Duration;

use crate::config::units::DurationValue;
use crate::exporters::helper::config::{QueueConfig, RetryConfig};
use crate::exporters::{Compression, Headers, TlsClientConfig};
use crate::pdata::Signal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Proto,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpHttpExporterConfig {
    /// Base URL; `/v1/traces`, `/v1/metrics`, `/v1/logs` are appended.
    pub endpoint: String,
    /// Full URLs that override `endpoint` per signal.
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    /// Where profiles would go: weir has no profiles signal, so nothing is ever sent there
    /// (accepted so Collector configs load; weir warns when it is set).
    pub profiles_endpoint: Option<String>,
    pub tls: TlsClientConfig,
    /// `{authenticator: <extension id>}`: a client authenticator's headers on every request.
    pub auth: Option<crate::extensions::auth::AuthRef>,
    pub headers: Headers,
    /// An `http://host:port` proxy the requests go through (absolute-form requests).
    pub proxy_url: Option<String>,
    /// A header carrying each request's tenant (set by the `tenant` processor), e.g.
    /// `X-Scope-OrgID`; none when not configured. Requests never mix tenants.
    pub tenant_header: Option<String>,
    /// `gzip` (default) or `none`.
    pub compression: Compression,
    /// `{level}`: gzip 1 to 9, zstd 1 to 22; 0 (unset) is the fastest, as upstream.
    pub compression_params: crate::exporters::CompressionParams,
    /// `proto` (default) or `json`.
    pub encoding: Encoding,
    /// Per-request deadline (default 30s).
    pub timeout: DurationValue,
    pub sending_queue: QueueConfig,
    pub retry_on_failure: RetryConfig,
}

impl Default for OtlpHttpExporterConfig {
    fn default() -> Self {
        OtlpHttpExporterConfig {
            endpoint: String::new(),
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            profiles_endpoint: None,
            tls: TlsClientConfig::default(),
            auth: None,
            headers: Headers::new(),
            proxy_url: None,
            tenant_header: None,
            compression: Compression::Gzip,
            compression_params: crate::exporters::CompressionParams::default(),
            encoding: Encoding::Proto,
            timeout: Duration::from_secs(30).into(),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

impl OtlpHttpExporterConfig {
    /// The URL a signal is posted to, if one is configured.
    pub fn url(&self, signal: Signal) -> Option<String> {
        let explicit = match signal {
            Signal::Traces => &self.traces_endpoint,
            Signal::Metrics => &self.metrics_endpoint,
            Signal::Logs => &self.logs_endpoint,
        };
        if let Some(u) = explicit {
            return Some(u.clone());
        }
        if self.endpoint.is_empty() {
            return None;
        }
        Some(format!(
            "{}{}",
            self.endpoint.trim_end_matches('/'),
            signal.http_path()
        ))
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        errs.extend(self.compression_params.validate(self.compression));
        errs.extend(crate::exporters::check_proxy_url(self.proxy_url.as_deref()));
        errs.extend(self.tls.validate());
        if self.endpoint.is_empty()
            && self.traces_endpoint.is_none()
            && self.metrics_endpoint.is_none()
            && self.logs_endpoint.is_none()
        {
            errs.push((
                "endpoint".into(),
                "is required (base URL such as http://tempo:4318)".into(),
            ));
        }
        for (key, url) in [
            ("endpoint", Some(&self.endpoint).filter(|e| !e.is_empty())),
            ("traces_endpoint", self.traces_endpoint.as_ref()),
            ("metrics_endpoint", self.metrics_endpoint.as_ref()),
            ("logs_endpoint", self.logs_endpoint.as_ref()),
        ] {
            let Some(url) = url else { continue };
            match url.parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.authority().is_some() => {}
                _ => errs.push((
                    key.into(),
                    format!("invalid URL {url:?}: expected http(s)://host:port[/path]"),
                )),
            }
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
