//! The `servicegraph` connector's settings: the Collector's keys and defaults.
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::DurationValue;

/// Upstream's default latency buckets, in seconds.
pub const DEFAULT_BUCKETS_S: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceGraphConfig {
    /// Bucket bounds of the latency histograms (durations, increasing).
    pub latency_histogram_buckets: Vec<DurationValue>,
    /// Not 0: exponential histograms of at most this many buckets instead.
    pub exponential_histogram_max_size: i32,
    /// Span or resource attributes added as `client_<name>` and `server_<name>`.
    pub dimensions: Vec<String>,
    pub store: StoreConfig,
    /// How often series not updated for 15 minutes are forgotten.
    pub cache_loop: DurationValue,
    /// How often edges whose other side never came are expired.
    pub store_expiration_loop: DurationValue,
    /// Client span attributes naming an uninstrumented server (a virtual node); an empty
    /// list turns virtual nodes off.
    pub virtual_node_peer_attributes: Option<Vec<String>>,
    /// A `virtual_node` label saying which side is virtual.
    pub virtual_node_extra_label: bool,
    /// How often the metrics go out (0: after every batch of spans).
    pub metrics_flush_interval: Option<DurationValue>,
    /// Attributes naming the database a client span calls (a `database` edge).
    pub database_name_attributes: Option<Vec<String>>,
    /// Deprecated upstream (v0.124): one database attribute, as `database_name_attributes`.
    pub database_name_attribute: Option<String>,
    /// Data point timestamps this far in the past.
    pub metrics_timestamp_offset: DurationValue,
    /// Deprecated upstream and without effect there too (a warning at start).
    pub metrics_exporter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// How long an edge waits for its other side.
    pub ttl: DurationValue,
    /// Edges waiting at once; a span that would need one more is dropped (counted).
    pub max_items: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            ttl: Duration::from_secs(2).into(),
            max_items: 1000,
        }
    }
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        ServiceGraphConfig {
            latency_histogram_buckets: Vec::new(),
            exponential_histogram_max_size: 0,
            dimensions: Vec::new(),
            store: StoreConfig::default(),
            cache_loop: Duration::from_secs(60).into(),
            store_expiration_loop: Duration::from_secs(2).into(),
            virtual_node_peer_attributes: None,
            virtual_node_extra_label: false,
            metrics_flush_interval: None,
            database_name_attributes: None,
            database_name_attribute: None,
            metrics_timestamp_offset: DurationValue::default(),
            metrics_exporter: None,
        }
    }
}

impl ServiceGraphConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.exponential_histogram_max_size < 0 {
            errs.push((
                "exponential_histogram_max_size".into(),
                "`exponential_histogram_max_size` can not be negative".into(),
            ));
        }
        if self.exponential_histogram_max_size > 0 && !self.latency_histogram_buckets.is_empty() {
            errs.push((
                "latency_histogram_buckets".into(),
                "use either `latency_histogram_buckets` or `exponential_histogram_max_size`".into(),
            ));
        }
        if self
            .latency_histogram_buckets
            .windows(2)
            .any(|w| w[0] >= w[1])
        {
            errs.push((
                "latency_histogram_buckets".into(),
                "must be in increasing order".into(),
            ));
        }
        if self.store.max_items == 0 {
            errs.push(("store.max_items".into(), "must be positive".into()));
        }
        if self.store.ttl.0.is_zero() {
            errs.push(("store.ttl".into(), "must be positive".into()));
        }
        errs
    }

    pub fn bounds(&self) -> Vec<f64> {
        if self.latency_histogram_buckets.is_empty() {
            DEFAULT_BUCKETS_S.to_vec()
        } else {
            self.latency_histogram_buckets
                .iter()
                .map(|d| d.0.as_secs_f64())
                .collect()
        }
    }

    pub fn peer_attributes(&self) -> Vec<String> {
        self.virtual_node_peer_attributes
            .clone()
            .unwrap_or_else(|| {
                ["peer.service", "db.name", "db.system"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
    }

    pub fn database_attributes(&self) -> Vec<String> {
        match (
            &self.database_name_attributes,
            &self.database_name_attribute,
        ) {
            (Some(v), _) => v.clone(),
            (None, Some(one)) => vec![one.clone()],
            (None, None) => vec!["db.name".into()],
        }
    }

    pub fn flush_interval(&self) -> Duration {
        self.metrics_flush_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(60))
    }

    /// Interval 0 or less: reset to upstream's default, as upstream does.
    pub fn loop_or(d: DurationValue, default: Duration) -> Duration {
        if d.0.is_zero() {
            default
        } else {
            d.0
        }
    }

    pub fn without_effect(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.metrics_exporter.is_some() {
            v.push("metrics_exporter has no effect (deprecated upstream, where it does nothing either): connect the connector to a metrics pipeline".to_string());
        }
        v
    }
}
