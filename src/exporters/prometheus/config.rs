//! The `prometheus` exporter's settings: the Collector's keys and defaults.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::DurationValue;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusExporterConfig {
    /// Where `/metrics` is served (required, e.g. `0.0.0.0:8889`).
    pub endpoint: String,
    /// Serve over TLS.
    pub tls: Option<crate::tls::TlsServerSetting>,
    /// Prefix of every metric name (`<namespace>_<name>`).
    pub namespace: String,
    /// Labels on every series.
    pub const_labels: BTreeMap<String, String>,
    /// Each sample with the time of its data point (else Prometheus stamps the scrape).
    pub send_timestamps: bool,
    /// A series not updated for this long is no longer served.
    pub metric_expiration: DurationValue,
    /// Resource attributes as labels on every series.
    pub resource_to_telemetry_conversion: Toggle,
    /// Answer scrapers that ask for OpenMetrics in OpenMetrics, with exemplars.
    pub enable_open_metrics: bool,
    /// Unit and `_total` suffixes on names.
    pub add_metric_suffixes: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Toggle {
    pub enabled: bool,
}

impl Default for PrometheusExporterConfig {
    fn default() -> Self {
        PrometheusExporterConfig {
            endpoint: String::new(),
            tls: None,
            namespace: String::new(),
            const_labels: BTreeMap::new(),
            send_timestamps: false,
            metric_expiration: Duration::from_secs(300).into(),
            resource_to_telemetry_conversion: Toggle::default(),
            enable_open_metrics: false,
            add_metric_suffixes: true,
        }
    }
}

impl PrometheusExporterConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.endpoint.is_empty() {
            errs.push((
                "endpoint".into(),
                "is required: where to serve /metrics, e.g. 0.0.0.0:8889".into(),
            ));
        } else if let Err(e) = crate::net::check_endpoint(&self.endpoint) {
            errs.push(("endpoint".into(), e));
        }
        if let Some(t) = &self.tls {
            errs.extend(t.validate());
        }
        for k in self.const_labels.keys() {
            if !crate::exporters::prometheusremotewrite::names::is_valid_label_name(k) {
                errs.push((
                    format!("const_labels.{k}"),
                    format!("{k:?} is not a valid Prometheus label name"),
                ));
            }
        }
        if self.metric_expiration.0.is_zero() {
            errs.push((
                "metric_expiration".into(),
                "must be positive (a series not updated for this long is dropped)".into(),
            ));
        }
        errs
    }
}
