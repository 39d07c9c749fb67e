//! `prometheusremotewrite` exporter settings, with the Collector's keys and defaults.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::DurationValue;
use crate::exporters::helper::config::{QueueConfig, RetryConfig};
use crate::exporters::{Headers, TlsClientConfig};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrwExporterConfig {
    /// The remote-write URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub endpoint: String,
    pub headers: Headers,
    /// An `http://host:port` proxy the requests go through (absolute-form requests).
    pub proxy_url: Option<String>,
    /// A header carrying each request's tenant (set by the `tenant` processor), e.g.
    /// `X-Scope-OrgID`; none when not configured. Requests never mix tenants.
    pub tenant_header: Option<String>,
    /// Per-request deadline (default 5s, as upstream).
    pub timeout: DurationValue,
    pub tls: TlsClientConfig,
    /// `{authenticator: <extension id>}`: a client authenticator's headers on every request.
    pub auth: Option<crate::extensions::auth::AuthRef>,
    /// Prefix for every metric name (`<namespace>_<name>`).
    pub namespace: String,
    /// Labels added to every series (a series' own label of the same name wins).
    pub external_labels: BTreeMap<String, String>,
    pub resource_to_telemetry_conversion: Toggle,
    /// A `target_info` series per resource with its attributes (default on).
    pub target_info: TargetInfo,
    /// Unit and `_total` suffixes on names (default true).
    pub add_metric_suffixes: bool,
    /// Send metric metadata (type, help, unit) with each request (default false).
    pub send_metadata: bool,
    /// Requests are split to stay under this many (uncompressed) bytes (default 3000000).
    pub max_batch_size_bytes: usize,
    pub remote_write_queue: RemoteWriteQueue,
    pub retry_on_failure: RetryConfig,
    /// Accepted for compatibility; weir's metrics pass through unchanged.
    pub wal: Option<crate::config::loader::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Toggle {
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetInfo {
    pub enabled: bool,
}

impl Default for TargetInfo {
    fn default() -> Self {
        TargetInfo { enabled: true }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteQueue {
    pub enabled: bool,
    /// Requests the queue holds (default 10000).
    pub queue_size: usize,
    /// Accepted for compatibility (default 5). weir sends one request at a time, in order:
    /// Prometheus rejects samples older than the newest it has for a series, so concurrent
    /// senders could reorder and lose data.
    pub num_consumers: usize,
}

impl Default for RemoteWriteQueue {
    fn default() -> Self {
        RemoteWriteQueue {
            enabled: true,
            queue_size: 10000,
            num_consumers: 5,
        }
    }
}

impl Default for PrwExporterConfig {
    fn default() -> Self {
        PrwExporterConfig {
            endpoint: String::new(),
            headers: Headers::new(),
            proxy_url: None,
            tenant_header: None,
            timeout: Duration::from_secs(5).into(),
            tls: TlsClientConfig::default(),
            auth: None,
            namespace: String::new(),
            external_labels: BTreeMap::new(),
            resource_to_telemetry_conversion: Toggle::default(),
            target_info: TargetInfo::default(),
            add_metric_suffixes: true,
            send_metadata: false,
            max_batch_size_bytes: 3_000_000,
            remote_write_queue: RemoteWriteQueue::default(),
            retry_on_failure: RetryConfig::default(),
            wal: None,
        }
    }
}

impl PrwExporterConfig {
    /// The sending queue: `remote_write_queue`, with one sender so requests go in order
    /// (Prometheus rejects a sample older than the newest of its series, so concurrent senders
    /// could reorder and lose data); `num_consumers` is accepted for compatibility.
    pub fn queue(&self) -> QueueConfig {
        QueueConfig {
            enabled: self.remote_write_queue.enabled,
            num_consumers: 1,
            queue_size: self.remote_write_queue.queue_size,
            ..Default::default()
        }
    }

    /// Applies upstream's value rules before validation: the namespace becomes part of a
    /// metric name, so characters a name cannot hold turn into `_` (`my-app` → `my_app`).
    pub fn normalize(&mut self) {
        self.namespace = self
            .namespace
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("_");
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        errs.extend(crate::exporters::check_proxy_url(self.proxy_url.as_deref()));
        errs.extend(self.tls.validate());
        errs.extend(crate::exporters::check_http_endpoint(
            "endpoint",
            &self.endpoint,
            "http://prometheus:9090/api/v1/write",
        ));
        if self.timeout.0.is_zero() {
            errs.push(("timeout".into(), "must be greater than 0".into()));
        }
        if self.max_batch_size_bytes == 0 {
            errs.push((
                "max_batch_size_bytes".into(),
                "must be greater than 0".into(),
            ));
        }
        if self.remote_write_queue.enabled {
            if self.remote_write_queue.queue_size == 0 {
                errs.push((
                    "remote_write_queue.queue_size".into(),
                    "must be greater than 0".into(),
                ));
            }
            if self.remote_write_queue.num_consumers == 0 {
                errs.push((
                    "remote_write_queue.num_consumers".into(),
                    "must be greater than 0".into(),
                ));
            }
        }
        for k in self.external_labels.keys() {
            if !super::names::is_valid_label_name(k) {
                errs.push((
                    format!("external_labels.{k}"),
                    format!("{k:?} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                ));
            }
        }
        errs.extend(crate::exporters::check_headers(&self.headers));
        if let Some(h) = &self.tenant_header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                errs.push(("tenant_header".into(), format!("invalid header name {h:?}")));
            }
        }
        if let Err((k, m)) = self.retry_on_failure.validate() {
            errs.push((format!("retry_on_failure.{k}"), m));
        }
        errs
    }
}
