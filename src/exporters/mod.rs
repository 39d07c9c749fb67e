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

/// Checks an exporter's `http://host:port/path` endpoint; `example` shows a good one.
pub fn check_http_endpoint(key: &str, url: &str, example: &str) -> Option<(String, String)> {
    if url.is_empty() {
        return Some((key.into(), format!("is required (e.g. {example})")));
    }
    match url.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => None,
        Ok(u) if u.scheme_str() == Some("https") => Some((
            key.into(),
            "https is not supported yet: use an http:// URL".into(),
        )),
        _ => Some((
            key.into(),
            format!("invalid URL {url:?}: expected {}", example_shape(example)),
        )),
    }
}

/// `http://prometheus:9090/api/v1/write` -> `http://host:port/api/v1/write`.
fn example_shape(example: &str) -> String {
    match example
        .strip_prefix("http://")
        .and_then(|r| r.split_once('/'))
    {
        Some((_, path)) => format!("http://host:port/{path}"),
        None => "http://host:port/path".into(),
    }
}

/// A tenant as a header value.
pub fn tenant_value(tenant: &str) -> Result<http::HeaderValue, helper::ExportError> {
    http::HeaderValue::from_str(tenant).map_err(|_| {
        helper::ExportError::permanent(format!("tenant {tenant:?} cannot be sent in a header"))
    })
}

/// What an HTTP backend's refusal means: 5xx and 429 are retryable (honouring
/// `Retry-After`), anything else permanent. Returns the error and the body's text (at most
/// 1 KiB of it, for logs and reasons).
pub async fn http_failure(
    what: &str,
    url: &http::Uri,
    resp: http::Response<hyper::body::Incoming>,
) -> (helper::ExportError, String) {
    use http_body_util::BodyExt;
    let status = resp.status();
    let wait = otlphttp::retry_after(resp.headers());
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)])
        .trim()
        .to_string();
    let message = format!("{what} to {url} answered {status}: {text}");
    let err = if status.is_server_error() || status.as_u16() == 429 {
        helper::ExportError::Retryable {
            message,
            retry_after: wait,
        }
    } else {
        helper::ExportError::permanent(message)
    };
    (err, text)
}

/// The HTTP client every HTTP exporter uses: keep-alive pool, no Nagle, 5 s connect timeout.
pub fn http_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build(connector)
}

/// `headers:` as a header map (names and values were checked at validation).
pub fn header_map(headers: &Headers) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("invalid header name {k:?}"))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| format!("invalid value for header {k:?}"))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// `tenant_header:` as a header name.
pub fn tenant_header_name(h: Option<&str>) -> Result<Option<http::HeaderName>, String> {
    h.filter(|h| !h.is_empty())
        .map(|h| {
            http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("invalid tenant_header {h:?}"))
        })
        .transpose()
}
