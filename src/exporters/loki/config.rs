//! `loki` exporter settings.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::DurationValue;
use crate::exporters::helper::config::{QueueConfig, RetryConfig};
use crate::exporters::{Compression, Headers, TlsClientConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LokiEncoding {
    /// PushRequest protobuf, snappy-compressed (what Promtail and the old exporter send).
    #[default]
    Protobuf,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    #[default]
    Json,
    Logfmt,
    Raw,
}

impl LineFormat {
    pub fn parse(s: &str) -> Option<LineFormat> {
        match s {
            "json" => Some(LineFormat::Json),
            "logfmt" => Some(LineFormat::Logfmt),
            "raw" => Some(LineFormat::Raw),
            _ => None,
        }
    }
}

/// Upstream's default labels.
pub const DEFAULT_LABELS: [&str; 4] = ["exporter", "job", "instance", "level"];

/// Attribute key -> Loki label name.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    pub resource: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LokiExporterConfig {
    /// The push URL, e.g. `http://loki:3100/loki/api/v1/push`.
    pub endpoint: String,
    pub encoding: LokiEncoding,
    /// The header carrying each request's tenant (default `X-Scope-OrgID`; `""` = none).
    /// Sent only when the data has a tenant.
    pub tenant_header: String,
    pub labels: LabelsConfig,
    pub line_format: LineFormat,
    /// Attributes that are not labels go to structured metadata (Loki 2.9+) instead of the
    /// line (default false).
    pub structured_metadata: bool,
    /// Labels per stream at most (Loki's default limit is 15).
    pub max_labels: usize,
    /// Requests are split to stay under this many (uncompressed) bytes (default 1MiB).
    pub max_batch_size_bytes: usize,
    pub headers: Headers,
    /// Upstream's default labels, each on unless set false: `exporter` ("OTLP"), `job`
    /// (`service.namespace/service.name`), `instance` (`service.instance.id`), `level` (from
    /// the severity).
    pub default_labels_enabled: BTreeMap<String, bool>,
    /// An `http://host:port` proxy the requests go through (absolute-form requests).
    pub proxy_url: Option<String>,
    /// `gzip` for JSON bodies (protobuf is always snappy); default `none`.
    pub compression: Compression,
    pub timeout: DurationValue,
    pub tls: TlsClientConfig,
    /// `{authenticator: <extension id>}`: a client authenticator's headers on every request.
    pub auth: Option<crate::extensions::auth::AuthRef>,
    pub sending_queue: QueueConfig,
    pub retry_on_failure: RetryConfig,
}

impl Default for LokiExporterConfig {
    fn default() -> Self {
        LokiExporterConfig {
            endpoint: String::new(),
            encoding: LokiEncoding::Protobuf,
            tenant_header: "X-Scope-OrgID".into(),
            labels: LabelsConfig::default(),
            line_format: LineFormat::Json,
            structured_metadata: false,
            max_labels: 15,
            max_batch_size_bytes: 1 << 20,
            headers: Headers::new(),
            default_labels_enabled: BTreeMap::new(),
            proxy_url: None,
            compression: Compression::None,
            timeout: Duration::from_secs(30).into(),
            tls: TlsClientConfig::default(),
            auth: None,
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

impl LokiExporterConfig {
    /// Whether default label `name` is on (upstream: unless set false).
    pub fn default_label(&self, name: &str) -> bool {
        self.default_labels_enabled
            .get(name)
            .copied()
            .unwrap_or(true)
    }

    /// Applies upstream's value rules before validation: a label mapped to `""` takes the
    /// attribute's own name, made a valid label name (`http.status` → `http_status`).
    pub fn normalize(&mut self) {
        for map in [&mut self.labels.resource, &mut self.labels.attributes] {
            for (key, label) in map.iter_mut() {
                if label.is_empty() {
                    *label = crate::exporters::prometheusremotewrite::names::label_name(key);
                }
            }
        }
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        errs.extend(crate::exporters::check_proxy_url(self.proxy_url.as_deref()));
        errs.extend(self.tls.validate());
        errs.extend(crate::exporters::check_http_endpoint(
            "endpoint",
            &self.endpoint,
            "http://loki:3100/loki/api/v1/push",
        ));
        if !self.tenant_header.is_empty()
            && http::HeaderName::from_bytes(self.tenant_header.as_bytes()).is_err()
        {
            errs.push((
                "tenant_header".into(),
                format!("invalid header name {:?}", self.tenant_header),
            ));
        }
        for (section, map) in [
            ("resource", &self.labels.resource),
            ("attributes", &self.labels.attributes),
        ] {
            for (key, label) in map {
                if !crate::exporters::prometheusremotewrite::names::is_valid_label_name(label) {
                    errs.push((
                        format!("labels.{section}.{key}"),
                        format!(
                            "{label:?} is not a valid Loki label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                        ),
                    ));
                }
            }
        }
        for k in self.default_labels_enabled.keys() {
            if !DEFAULT_LABELS.contains(&k.as_str()) {
                errs.push((
                    format!("default_labels_enabled.{k}"),
                    format!(
                        "unknown default label {k:?}; expected exporter, job, instance or level"
                    ),
                ));
            }
        }
        // The default labels that are on may be added too.
        let defaults = DEFAULT_LABELS
            .iter()
            .filter(|l| self.default_label(l))
            .count();
        let configured = self.labels.resource.len() + self.labels.attributes.len() + defaults;
        if self.max_labels == 0 {
            errs.push(("max_labels".into(), "must be greater than 0".into()));
        } else if configured > self.max_labels {
            errs.push((
                "labels".into(),
                format!(
                    "maps {} attributes to labels (plus {defaults} default labels), more than max_labels ({}): Loki rejects streams with too many labels",
                    configured - defaults,
                    self.max_labels
                ),
            ));
        }
        if self.max_batch_size_bytes == 0 {
            errs.push((
                "max_batch_size_bytes".into(),
                "must be greater than 0".into(),
            ));
        }
        if self.timeout.0.is_zero() {
            errs.push(("timeout".into(), "must be greater than 0".into()));
        }
        if matches!(self.compression, Compression::Zstd | Compression::Snappy) {
            errs.push((
                "compression".into(),
                "Loki takes gzip (for encoding: json) or none; protobuf is always snappy".into(),
            ));
        } else if self.encoding == LokiEncoding::Protobuf && self.compression == Compression::Gzip {
            errs.push((
                "compression".into(),
                "protobuf requests are always snappy-compressed; gzip applies to encoding: json"
                    .into(),
            ));
        }
        errs.extend(crate::exporters::check_headers(&self.headers));
        if let Err((k, m)) = self.sending_queue.validate() {
            errs.push((format!("sending_queue.{k}"), m));
        }
        if let Err((k, m)) = self.retry_on_failure.validate() {
            errs.push((format!("retry_on_failure.{k}"), m));
        }
        errs
    }
}

#[cfg(test)]
mod normalize_tests {
    use super::*;

    #[test]
    fn an_empty_label_takes_the_attributes_name() {
        let mut c: LokiExporterConfig = serde_yaml::from_str(
            "endpoint: http://loki:3100/loki/api/v1/push\nlabels: {attributes: {http.status: ''}, resource: {service.name: svc}}",
        )
        .expect("yaml");
        c.normalize();
        assert_eq!(c.labels.attributes["http.status"], "http_status");
        assert_eq!(c.labels.resource["service.name"], "svc");
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }
}
