//! Exporters: where data leaves weir. Each supplies a [`helper::Sender`]; queueing, retry,
//! backoff, timeouts and the self-metrics live once in [`helper`].
pub mod debug;
pub mod helper;
pub mod loki;
pub mod otlp;
pub mod otlphttp;
pub mod prometheusremotewrite;

use serde::Deserialize;
use std::collections::BTreeMap;

/// `compression` of the OTLP exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    /// zstd (level 1): what the Collector also accepts; much cheaper than gzip.
    Zstd,
    #[serde(alias = "")]
    None,
}

/// `tls` of the OTLP exporters. Only plaintext (`insecure: true`, or an `http://` endpoint)
/// is supported so far; anything else is refused at validation rather than ignored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    pub insecure: bool,
}

/// Header map as written in YAML.
pub type Headers = BTreeMap<String, String>;

/// Checks header names and values can go on the wire.
pub fn check_headers(headers: &Headers) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    for (k, v) in headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            errs.push((format!("headers.{k}"), format!("invalid header name {k:?}")));
        } else if http::HeaderValue::from_str(v).is_err() {
            errs.push((format!("headers.{k}"), "invalid header value".to_string()));
        }
    }
    errs
}
