//! `otlp` receiver settings, with the Collector's keys and defaults.
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::units::DurationValue;

/// `null` (as in `grpc:` with nothing under it) means "on, with defaults".
fn null_as_default<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    #[serde(default)]
    pub protocols: Protocols,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC; on when the key is present.
    #[serde(default, deserialize_with = "null_as_default")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP; on when the key is present.
    #[serde(default, deserialize_with = "null_as_default")]
    pub http: Option<HttpConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `host:port` to listen on (default `localhost:4317`).
    pub endpoint: String,
    /// Only `tcp`.
    pub transport: Transport,
    /// Largest request accepted, before and after decompression, in MiB (default 4).
    pub max_recv_msg_size_mib: u64,
    /// Concurrent streams per HTTP/2 connection (default 0 = weir's default of 1024).
    pub max_concurrent_streams: u32,
    /// Carry request metadata into the batch context (for `batch.metadata_keys`, tenant
    /// headers). Default false.
    pub include_metadata: bool,
    /// gRPC keepalive, the Collector's keys.
    pub keepalive: Option<GrpcKeepalive>,
    /// grpc-go's transport buffer sizes: weir's HTTP/2 stack sizes its buffers itself, so
    /// these are accepted with a warning and have no effect.
    pub read_buffer_size: Option<u64>,
    pub write_buffer_size: Option<u64>,
    /// TLS (and mTLS with `client_ca_file`); plaintext when absent.
    pub tls: Option<crate::tls::TlsServerSetting>,
    /// `{authenticator: <extension id>}`: requests must pass it (401 / UNAUTHENTICATED).
    pub auth: Option<crate::extensions::auth::AuthRef>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcKeepalive {
    pub server_parameters: Option<ServerParameters>,
    pub enforcement_policy: Option<EnforcementPolicy>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerParameters {
    /// A connection without traffic for this long is closed.
    pub max_connection_idle: Option<DurationValue>,
    /// A connection is asked to go away (GOAWAY) after this long, so clients spread over
    /// replicas; it is closed `max_connection_age_grace` later.
    pub max_connection_age: Option<DurationValue>,
    pub max_connection_age_grace: Option<DurationValue>,
    /// Pings after this long without traffic (default 2h when `timeout` is set)...
    pub time: Option<DurationValue>,
    /// ...and the connection is closed when one is not answered within this (default 20s).
    pub timeout: Option<DurationValue>,
}

/// How often clients may ping: grpc-go enforces it; weir's HTTP/2 stack has no such check,
/// so it is accepted with a warning and has no effect.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforcementPolicy {
    pub min_time: Option<DurationValue>,
    pub permit_without_stream: Option<bool>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: "localhost:4317".into(),
            transport: Transport::Tcp,
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: 0,
            include_metadata: false,
            keepalive: None,
            read_buffer_size: None,
            write_buffer_size: None,
            tls: None,
            auth: None,
        }
    }
}

impl GrpcConfig {
    /// Connection limits for the gRPC server.
    pub fn timeouts(&self) -> crate::net::ConnTimeouts {
        let sp = self
            .keepalive
            .as_ref()
            .and_then(|k| k.server_parameters.as_ref());
        let d = |v: &Option<DurationValue>| v.as_ref().map(|d| d.0).filter(|d| !d.is_zero());
        let ping = sp.and_then(|p| {
            let (time, timeout) = (d(&p.time), d(&p.timeout));
            (time.is_some() || timeout.is_some()).then(|| {
                (
                    time.unwrap_or(Duration::from_secs(7200)),
                    timeout.unwrap_or(Duration::from_secs(20)),
                )
            })
        });
        crate::net::ConnTimeouts {
            idle: sp.and_then(|p| d(&p.max_connection_idle)),
            max_age: sp.and_then(|p| {
                d(&p.max_connection_age).map(|age| (age, d(&p.max_connection_age_grace)))
            }),
            ping,
            max_concurrent_streams: (self.max_concurrent_streams > 0)
                .then_some(self.max_concurrent_streams),
            ..Default::default()
        }
    }

    /// Keys accepted without effect, to warn about at start.
    pub fn without_effect(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.read_buffer_size.is_some() {
            v.push("read_buffer_size");
        }
        if self.write_buffer_size.is_some() {
            v.push("write_buffer_size");
        }
        if self
            .keepalive
            .as_ref()
            .is_some_and(|k| k.enforcement_policy.is_some())
        {
            v.push("keepalive.enforcement_policy");
        }
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on (default `localhost:4318`).
    pub endpoint: String,
    /// Largest request body accepted, before and after decompression, in bytes
    /// (default 20971520 = 20 MiB).
    pub max_request_body_size: u64,
    pub include_metadata: bool,
    /// Browser clients: origins allowed to send (exact, or with `*` wildcards).
    pub cors: Option<CorsConfig>,
    /// Paths of the three signals (defaults `/v1/traces`, `/v1/metrics`, `/v1/logs`).
    pub traces_url_path: String,
    pub metrics_url_path: String,
    pub logs_url_path: String,
    /// The whole request body must arrive within this after the headers (0 = no limit;
    /// default 30s). A body that stalls gets 408 and the connection is closed.
    pub read_timeout: DurationValue,
    /// HTTP/1 request headers must arrive within this (0 = no limit; default 10s).
    pub read_header_timeout: DurationValue,
    /// A response the client does not read within this closes the connection (0 = no limit;
    /// default 30s).
    pub write_timeout: DurationValue,
    /// Deprecated upstream for `keepalive.idle_timeout`: a connection that moves no byte for
    /// this long is closed (0 = no limit).
    pub idle_timeout: Option<DurationValue>,
    /// Deprecated upstream for `keepalive.enabled`.
    pub keep_alives_enabled: Option<bool>,
    /// Keep-alive: `enabled` (default true; false closes a connection after each request) and
    /// `idle_timeout` (default 60s).
    pub keepalive: Option<KeepaliveConfig>,
    /// Content-Encodings accepted (`""` = none). Upstream's default list; weir decodes all of
    /// them but `lz4`.
    pub compression_algorithms: Vec<String>,
    /// TLS (and mTLS with `client_ca_file`); plaintext when absent.
    pub tls: Option<crate::tls::TlsServerSetting>,
    /// `{authenticator: <extension id>}`: requests must pass it (401 / UNAUTHENTICATED).
    pub auth: Option<crate::extensions::auth::AuthRef>,
}

/// The Collector's default `compression_algorithms`.
pub const DEFAULT_COMPRESSION_ALGORITHMS: [&str; 7] =
    ["", "gzip", "zstd", "zlib", "snappy", "deflate", "lz4"];

/// Encodings weir can decode.
const DECODABLE: [&str; 7] = ["", "gzip", "zstd", "zlib", "snappy", "deflate", "lz4"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    pub enabled: bool,
    pub idle_timeout: DurationValue,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            enabled: true,
            idle_timeout: Duration::from_secs(60).into(),
        }
    }
}

impl HttpConfig {
    /// Whether connections are kept open between requests, and how long an idle one is kept.
    fn keepalive(&self) -> (bool, Duration) {
        match &self.keepalive {
            Some(k) => (k.enabled, k.idle_timeout.0),
            None => (
                self.keep_alives_enabled.unwrap_or(true),
                self.idle_timeout
                    .as_ref()
                    .map_or(Duration::from_secs(60), |d| d.0),
            ),
        }
    }

    /// Configured encodings weir cannot decode (requests using them get 400).
    pub fn undecodable(&self) -> Vec<&str> {
        self.compression_algorithms
            .iter()
            .map(String::as_str)
            .filter(|a| !DECODABLE.contains(a))
            .collect()
    }

    /// Upstream's warnings for deprecated keys in use.
    pub fn deprecations(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.idle_timeout.as_ref().is_some_and(|d| !d.0.is_zero()) {
            v.push("'idle_timeout' is deprecated; use 'keepalive::idle_timeout' instead");
        }
        if self.keep_alives_enabled == Some(false) {
            v.push("'keep_alives_enabled' is deprecated; set 'keepalive::enabled' to false to disable keep-alives");
        }
        v
    }

    pub fn timeouts(&self) -> crate::net::ConnTimeouts {
        let some = |d: &DurationValue| (!d.0.is_zero()).then_some(d.0);
        let (keep_alive, idle) = (self.keepalive().0, self.keepalive().1);
        crate::net::ConnTimeouts {
            read_header: some(&self.read_header_timeout),
            idle: (!idle.is_zero()).then_some(idle),
            write: some(&self.write_timeout),
            max_connections: Some(crate::net::MAX_HTTP_CONNECTIONS),
            // As Go's HTTP server: the shortest of the read and write timeouts bounds the
            // TLS handshake.
            handshake: [
                &self.read_header_timeout,
                &self.read_timeout,
                &self.write_timeout,
            ]
            .into_iter()
            .filter_map(some)
            .min(),
            keep_alive,
            ..Default::default()
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "localhost:4318".into(),
            max_request_body_size: 20 * 1024 * 1024,
            include_metadata: false,
            cors: None,
            traces_url_path: "/v1/traces".into(),
            metrics_url_path: "/v1/metrics".into(),
            logs_url_path: "/v1/logs".into(),
            read_timeout: Duration::from_secs(30).into(),
            read_header_timeout: Duration::from_secs(10).into(),
            write_timeout: Duration::from_secs(30).into(),
            idle_timeout: None,
            keep_alives_enabled: None,
            keepalive: None,
            compression_algorithms: DEFAULT_COMPRESSION_ALGORITHMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            tls: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
    pub allowed_headers: Vec<String>,
    /// Seconds a browser may cache a preflight answer.
    pub max_age: u32,
}

/// A signal's URL path as the Collector reads it: the path part of what was written, with a
/// leading `/` added when missing (`traces` serves `/traces`).
fn url_path(p: &str) -> String {
    let p = p.split(['?', '#']).next().unwrap_or("");
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

impl OtlpReceiverConfig {
    /// Applies upstream's value rules before validation.
    pub fn normalize(&mut self) {
        if let Some(h) = &mut self.protocols.http {
            for p in [
                &mut h.traces_url_path,
                &mut h.metrics_url_path,
                &mut h.logs_url_path,
            ] {
                *p = url_path(p);
            }
        }
    }

    /// Checks settings; returns (key path inside the body, message) per problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            errs.push((
                "protocols".to_string(),
                "must specify at least one protocol (grpc or http) when using the OTLP receiver"
                    .to_string(),
            ));
        }
        if let Some(g) = &self.protocols.grpc {
            if let Err(e) = crate::net::check_endpoint(&g.endpoint) {
                errs.push(("protocols.grpc.endpoint".into(), e));
            }
            if let Some(t) = &g.tls {
                for (k, e) in t.validate() {
                    errs.push((format!("protocols.grpc.{k}"), e));
                }
            }
            if g.max_recv_msg_size_mib == 0 || g.max_recv_msg_size_mib > 4096 {
                errs.push((
                    "protocols.grpc.max_recv_msg_size_mib".into(),
                    format!(
                        "must be between 1 and 4096, got {}",
                        g.max_recv_msg_size_mib
                    ),
                ));
            }
        }
        if let Some(h) = &self.protocols.http {
            if let Err(e) = crate::net::check_endpoint(&h.endpoint) {
                errs.push(("protocols.http.endpoint".into(), e));
            }
            if let Some(t) = &h.tls {
                for (k, e) in t.validate() {
                    errs.push((format!("protocols.http.{k}"), e));
                }
            }
            if h.keepalive.is_some() && !h.deprecations().is_empty() {
                errs.push((
                    "protocols.http.keepalive".into(),
                    "cannot use deprecated keepalive fields (idle_timeout, keep_alives_enabled) alongside the 'keepalive' section; migrate to the 'keepalive' section".into(),
                ));
            }
            for (i, a) in h.compression_algorithms.iter().enumerate() {
                if !DEFAULT_COMPRESSION_ALGORITHMS.contains(&a.as_str()) {
                    errs.push((
                        format!("protocols.http.compression_algorithms[{i}]"),
                        format!("unsupported compression algorithm {a:?}; expected one of \"\", gzip, zstd, zlib, snappy, deflate, lz4"),
                    ));
                }
            }
            if h.max_request_body_size == 0 {
                errs.push((
                    "protocols.http.max_request_body_size".into(),
                    "must be greater than 0".into(),
                ));
            }
            for (k, p) in [
                ("traces_url_path", &h.traces_url_path),
                ("metrics_url_path", &h.metrics_url_path),
                ("logs_url_path", &h.logs_url_path),
            ] {
                if !p.starts_with('/') {
                    errs.push((
                        format!("protocols.http.{k}"),
                        format!("must start with '/', got {p:?}"),
                    ));
                }
            }
        }
        errs
    }

    /// The endpoints this receiver listens on.
    pub fn endpoints(&self) -> Vec<(&'static str, &str)> {
        let mut v = Vec::new();
        if let Some(g) = &self.protocols.grpc {
            v.push(("protocols.grpc.endpoint", g.endpoint.as_str()));
        }
        if let Some(h) = &self.protocols.http {
            v.push(("protocols.http.endpoint", h.endpoint.as_str()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_as_the_collector_reads_them() {
        let mut c: OtlpReceiverConfig = serde_yaml::from_str(
            "protocols: {http: {traces_url_path: traces, metrics_url_path: /m?x=1, logs_url_path: ''}}",
        )
        .expect("yaml");
        c.normalize();
        let h = c.protocols.http.as_ref().expect("http");
        assert_eq!(
            (
                h.traces_url_path.as_str(),
                h.metrics_url_path.as_str(),
                h.logs_url_path.as_str()
            ),
            ("/traces", "/m", "/")
        );
        assert!(c.validate().is_empty());
    }

    #[test]
    fn compression_algorithms_as_upstream_lists_them() {
        let h: HttpConfig = serde_yaml::from_str("{}").expect("yaml");
        assert_eq!(h.compression_algorithms, DEFAULT_COMPRESSION_ALGORITHMS);
        assert!(
            h.undecodable().is_empty(),
            "weir decodes all of upstream's defaults"
        );
        let c: OtlpReceiverConfig =
            serde_yaml::from_str("protocols: {http: {compression_algorithms: ['', gzip, brotli]}}")
                .expect("yaml");
        assert_eq!(
            c.validate(),
            vec![(
                "protocols.http.compression_algorithms[2]".to_string(),
                "unsupported compression algorithm \"brotli\"; expected one of \"\", gzip, zstd, zlib, snappy, deflate, lz4".to_string()
            )]
        );
    }

    #[test]
    fn keepalive_section_or_deprecated_keys_not_both() {
        let c: OtlpReceiverConfig = serde_yaml::from_str(
            "protocols: {http: {idle_timeout: 5s, keepalive: {idle_timeout: 10s}}}",
        )
        .expect("yaml");
        assert_eq!(
            c.validate(),
            vec![(
                "protocols.http.keepalive".to_string(),
                "cannot use deprecated keepalive fields (idle_timeout, keep_alives_enabled) alongside the 'keepalive' section; migrate to the 'keepalive' section".to_string()
            )]
        );
        let http = |yaml: &str| -> HttpConfig { serde_yaml::from_str(yaml).expect("yaml") };
        let t = http("keepalive: {enabled: false, idle_timeout: 10s}").timeouts();
        assert_eq!(
            (t.keep_alive, t.idle),
            (false, Some(Duration::from_secs(10)))
        );
        let old = http("idle_timeout: 5s\nkeep_alives_enabled: false");
        assert_eq!(old.deprecations().len(), 2);
        let t = old.timeouts();
        assert_eq!(
            (t.keep_alive, t.idle),
            (false, Some(Duration::from_secs(5)))
        );
        let t = http("{}").timeouts();
        assert_eq!(
            (t.keep_alive, t.idle),
            (true, Some(Duration::from_secs(60)))
        );
    }
}
