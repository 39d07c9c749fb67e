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
    /// TLS to the backend, on by default with the system's roots (as upstream);
    /// `tls.insecure: true` or an `http://` endpoint means plaintext.
    pub tls: TlsClientConfig,
    /// `{authenticator: <extension id>}`: a client authenticator's headers on every request.
    pub auth: Option<crate::extensions::auth::AuthRef>,
    /// Sent as gRPC metadata with every request (e.g. `X-Scope-OrgID`, auth tokens).
    pub headers: Headers,
    /// A header carrying each request's tenant (set by the `tenant` processor), e.g.
    /// `X-Scope-OrgID`; none when not configured. Requests never mix tenants.
    pub tenant_header: Option<String>,
    /// `gzip` (default) or `none`.
    pub compression: Compression,
    /// `{level}`: gzip 1 to 9, zstd 1 to 22; 0 (unset) is the fastest, as upstream.
    pub compression_params: crate::exporters::CompressionParams,
    /// Per-request deadline (default 5s).
    pub timeout: DurationValue,
    pub sending_queue: QueueConfig,
    pub retry_on_failure: RetryConfig,
    /// HTTP/2 pings to the backend: after `time` without traffic, closing the connection
    /// when one is not answered within `timeout`; `permit_without_stream` pings even with no
    /// request in flight.
    pub keepalive: Option<ClientKeepalive>,
    /// `pick_first` (what weir does: one connection to the first address that answers) or
    /// `round_robin`, accepted with a warning: weir does not spread requests over addresses.
    pub balancer_name: Option<String>,
    /// grpc-go's transport buffer sizes: accepted with a warning, no effect here.
    pub read_buffer_size: Option<u64>,
    pub write_buffer_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientKeepalive {
    pub time: DurationValue,
    pub timeout: DurationValue,
    pub permit_without_stream: bool,
}

impl Default for ClientKeepalive {
    fn default() -> Self {
        ClientKeepalive {
            time: Duration::ZERO.into(),
            timeout: Duration::from_secs(20).into(),
            permit_without_stream: false,
        }
    }
}

impl Default for OtlpExporterConfig {
    fn default() -> Self {
        OtlpExporterConfig {
            endpoint: String::new(),
            tls: TlsClientConfig::default(),
            auth: None,
            headers: Headers::new(),
            tenant_header: None,
            compression: Compression::Gzip,
            compression_params: crate::exporters::CompressionParams::default(),
            timeout: Duration::from_secs(5).into(),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            keepalive: None,
            balancer_name: None,
            read_buffer_size: None,
            write_buffer_size: None,
        }
    }
}

impl OtlpExporterConfig {
    /// The URI tonic connects to: always `http://host:port`, TLS being weir's own connector's
    /// business (see [`uses_tls`](Self::uses_tls)).
    pub fn uri(&self) -> String {
        let rest = self
            .endpoint
            .strip_prefix("http://")
            .or_else(|| self.endpoint.strip_prefix("https://"))
            .unwrap_or(&self.endpoint);
        format!("http://{rest}")
    }

    /// TLS unless `tls.insecure: true` or an `http://` endpoint; an `https://` endpoint is
    /// always TLS.
    pub fn uses_tls(&self) -> bool {
        if self.endpoint.starts_with("https://") {
            return true;
        }
        !(self.endpoint.starts_with("http://") || self.tls.insecure)
    }

    /// Keys accepted without effect, to warn about at start.
    pub fn without_effect(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.balancer_name.as_deref() == Some("round_robin") {
            v.push("balancer_name: round_robin (weir keeps one connection, as pick_first)");
        }
        if self.read_buffer_size.is_some() {
            v.push("read_buffer_size");
        }
        if self.write_buffer_size.is_some() {
            v.push("write_buffer_size");
        }
        v
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        errs.extend(self.compression_params.validate(self.compression));
        if let Some(b) = &self.balancer_name {
            if b != "pick_first" && b != "round_robin" {
                errs.push((
                    "balancer_name".into(),
                    format!("unknown balancer {b:?}; expected pick_first or round_robin"),
                ));
            }
        }
        if self.endpoint.is_empty() {
            errs.push((
                "endpoint".into(),
                "is required (host:port of the OTLP/gRPC backend)".into(),
            ));
        } else if self.uri().parse::<http::Uri>().is_err() {
            errs.push((
                "endpoint".into(),
                format!("invalid endpoint {:?}", self.endpoint),
            ));
        }
        if self.uses_tls() {
            errs.extend(self.tls.validate());
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

#[cfg(test)]
mod tests {
    #[test]
    fn compression_params_are_checked_against_the_compression() {
        let errs = |yaml: &str| {
            let c: super::OtlpExporterConfig = serde_yaml::from_str(yaml).unwrap();
            c.validate()
                .into_iter()
                .filter(|(k, _)| k.starts_with("compression_params"))
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
        };
        let base = "endpoint: 127.0.0.1:4317\n";
        assert!(errs(&format!("{base}compression_params: {{level: 9}}")).is_empty());
        assert!(errs(&format!(
            "{base}compression: zstd\ncompression_params: {{level: 19}}"
        ))
        .is_empty());
        assert_eq!(
            errs(&format!("{base}compression_params: {{level: 12}}")),
            ["unsupported parameters {Level:12} for compression type \"gzip\""]
        );
        assert_eq!(
            errs(&format!(
                "{base}compression: none\ncompression_params: {{level: 3}}"
            )),
            ["unsupported parameters {Level:3} for compression type \"none\""]
        );
        assert!(errs(&format!("{base}compression: none")).is_empty());
    }

    use super::*;

    #[test]
    fn the_collectors_grpc_client_keys() {
        let c: OtlpExporterConfig = serde_yaml::from_str(
            "endpoint: tempo:4317\ntls: {insecure: true}\nkeepalive: {time: 10s, timeout: 5s, permit_without_stream: true}\nbalancer_name: round_robin\nread_buffer_size: 524288\nwrite_buffer_size: 524288",
        )
        .expect("yaml");
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(
            c.keepalive
                .as_ref()
                .map(|k| (k.time.0, k.timeout.0, k.permit_without_stream)),
            Some((Duration::from_secs(10), Duration::from_secs(5), true))
        );
        assert_eq!(c.without_effect().len(), 3);
        let bad: OtlpExporterConfig = serde_yaml::from_str(
            "endpoint: tempo:4317\ntls: {insecure: true}\nbalancer_name: random",
        )
        .expect("yaml");
        assert_eq!(
            bad.validate(),
            vec![(
                "balancer_name".to_string(),
                "unknown balancer \"random\"; expected pick_first or round_robin".to_string()
            )]
        );
    }
}
