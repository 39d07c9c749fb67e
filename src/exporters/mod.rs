//! Exporters: where data leaves weir. Each supplies a [`helper::Sender`]; queueing, retry,
//! backoff, timeouts and the self-metrics live once in [`helper`].
pub mod debug;
pub mod helper;
pub mod loadbalancing;
pub mod loki;
pub mod otlp;
pub mod otlphttp;
pub mod prometheus;
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
    /// snappy: over gRPC in snappy's framing format (as grpc-go's compressor), over HTTP as
    /// one block (as weir's and the Collector's HTTP receivers read `snappy`).
    Snappy,
    #[serde(alias = "")]
    None,
}

/// `compression_params` (the Collector's configcompression): the compression level.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionParams {
    /// gzip: 1 (fastest) to 9, or -1 (zlib's default, 6); zstd: 1 to 22. 0 (unset) is the
    /// fastest level.
    pub level: i32,
}

impl CompressionParams {
    /// Upstream's check of a level against the compression type.
    pub fn validate(&self, c: Compression) -> Option<(String, String)> {
        let ok = match c {
            Compression::Gzip => (-1..=9).contains(&self.level),
            Compression::Zstd => (0..=22).contains(&self.level),
            Compression::Snappy | Compression::None => self.level == 0,
        };
        (!ok).then(|| {
            let name = match c {
                Compression::Gzip => "gzip",
                Compression::Zstd => "zstd",
                Compression::Snappy => "snappy",
                Compression::None => "none",
            };
            (
                "compression_params.level".into(),
                format!(
                    "unsupported parameters {{Level:{}}} for compression type {name:?}",
                    self.level
                ),
            )
        })
    }

    /// Compresses `body` with `c` at this level; `grpc` picks snappy's framing format.
    pub fn compress(&self, c: Compression, grpc: bool, body: &[u8]) -> Vec<u8> {
        match c {
            Compression::Gzip => crate::compression::gzip_level(body, self.level),
            Compression::Zstd => crate::compression::zstd_level(body, self.level),
            Compression::Snappy if grpc => crate::compression::snappy_framed(body),
            Compression::Snappy => snap::raw::Encoder::new()
                .compress_vec(body)
                .unwrap_or_default(),
            Compression::None => body.to_vec(),
        }
    }

    /// A batch's encoded bytes compressed with `c`: once per batch and form when it fans out
    /// to several exporters (the batch carries the forms made so far), and on the
    /// compression threads when the body is large enough to hold up a runtime worker.
    pub async fn compress_batch(
        &self,
        c: Compression,
        grpc: bool,
        batch: &crate::pdata::Batch,
        payload: &bytes::Bytes,
    ) -> bytes::Bytes {
        let params = *self;
        let make = || {
            let payload = payload.clone();
            async move {
                let len = payload.len();
                bytes::Bytes::from(
                    crate::compression::offload(len, move || params.compress(c, grpc, &payload))
                        .await,
                )
            }
        };
        // Only the batch's own encoded bytes are shared (not, say, a JSON body made for one
        // exporter), so the forms stay one per codec.
        let own = matches!(&batch.payload, crate::pdata::Payload::Encoded(b)
            if b.as_ptr() == payload.as_ptr() && b.len() == payload.len());
        match &batch.compressed {
            Some(forms) if own => {
                let key = (c as u32) << 24 | u32::from(grpc) << 23 | (self.level as u32 & 0xff);
                forms.cell(key, payload).get_or_init(make).await.clone()
            }
            _ => make().await,
        }
    }
}

/// `tls` of every exporter: the Collector's `configtls.ClientConfig`.
pub type TlsClientConfig = crate::tls::TlsClientSetting;

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
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {
            None
        }
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

/// The HTTP client every HTTP exporter uses.
pub type HttpClient =
    hyper_util::client::legacy::Client<Connector, http_body_util::Full<bytes::Bytes>>;

/// The HTTP client every HTTP exporter uses: keep-alive pool, no Nagle, 5 s connect timeout;
/// TLS with `tls` for `https://` URLs; through `proxy_url` when one is set (an `http://`
/// proxy: plain requests in absolute form, `https://` ones through a CONNECT tunnel).
pub fn http_client(proxy_url: Option<&str>, tls: &TlsClientConfig) -> Result<HttpClient, String> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    for w in tls.common.warnings() {
        tracing::warn!("{w}");
    }
    let tls = crate::tls::ClientTls::new(tls, &[b"http/1.1"])?;
    let proxy = match proxy_url.filter(|p| !p.is_empty()) {
        Some(p) => Proxy::Fixed(
            p.parse::<http::Uri>()
                .map_err(|e| format!("invalid proxy_url {p:?}: {e}"))?,
        ),
        None => Proxy::Env(std::sync::Arc::new(EnvProxy::from_env(|k| {
            std::env::var(k).ok()
        }))),
    };
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build(Connector { http, proxy, tls }),
    )
}

/// Checks `proxy_url`: an `http://host:port` proxy.
pub fn check_proxy_url(proxy_url: Option<&str>) -> Option<(String, String)> {
    let p = proxy_url.filter(|p| !p.is_empty())?;
    match p.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => None,
        Ok(_) => Some((
            "proxy_url".into(),
            format!("{p:?}: weir supports http:// proxies (http://host:port)"),
        )),
        Err(e) => Some(("proxy_url".into(), format!("invalid URL {p:?}: {e}"))),
    }
}

/// Where an HTTP exporter's requests go through.
#[derive(Clone)]
enum Proxy {
    /// `proxy_url`.
    Fixed(http::Uri),
    /// No `proxy_url`: the environment's, as Go's `ProxyFromEnvironment` reads it.
    Env(std::sync::Arc<EnvProxy>),
}

impl Proxy {
    fn for_dst(&self, dst: &http::Uri) -> Option<http::Uri> {
        match self {
            Proxy::Fixed(p) => Some(p.clone()),
            Proxy::Env(e) => e.for_dst(dst),
        }
    }
}

/// `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (upper case first, then lower case), read once.
#[derive(Debug, Default, PartialEq)]
pub struct EnvProxy {
    http: Option<http::Uri>,
    https: Option<http::Uri>,
    no_proxy: Vec<String>,
}

impl EnvProxy {
    /// From the variables `get` returns. A proxy weir cannot use (not `http://`) is skipped
    /// with a warning.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> EnvProxy {
        let any = |names: [&str; 2]| {
            names
                .into_iter()
                .find_map(|n| get(n).filter(|v| !v.is_empty()))
        };
        let proxy = |names: [&str; 2]| {
            let v = any(names)?;
            // Go reads a proxy without a scheme as http://.
            let v = if v.contains("://") {
                v
            } else {
                format!("http://{v}")
            };
            match v.parse::<http::Uri>() {
                Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => Some(u),
                _ => {
                    tracing::warn!(
                        "{}={v:?} is not an http:// proxy weir can use; requests go direct",
                        names[0]
                    );
                    None
                }
            }
        };
        EnvProxy {
            http: proxy(["HTTP_PROXY", "http_proxy"]),
            https: proxy(["HTTPS_PROXY", "https_proxy"]),
            no_proxy: any(["NO_PROXY", "no_proxy"])
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The proxy for `dst`, if any: never for localhost or a loopback address (as Go), nor
    /// for a host `NO_PROXY` lists (`*`, a name and its subdomains, `.suffix`, `host:port`,
    /// an IP address).
    pub fn for_dst(&self, dst: &http::Uri) -> Option<http::Uri> {
        let proxy = if dst.scheme_str() == Some("https") {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }?;
        let host = dst
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
        {
            return None;
        }
        let port = dst
            .port_u16()
            .unwrap_or(if dst.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        for entry in &self.no_proxy {
            if entry == "*" {
                return None;
            }
            let (name, entry_port) = match entry.rsplit_once(':') {
                Some((n, p)) if !n.contains(':') || n.ends_with(']') => (
                    n.trim_start_matches('[').trim_end_matches(']'),
                    p.parse::<u16>().ok(),
                ),
                _ => (entry.as_str(), None),
            };
            if entry_port.is_some_and(|p| p != port) {
                continue;
            }
            let name = name.trim_start_matches('*');
            let bare = name.trim_start_matches('.');
            if host == bare || host.ends_with(&format!(".{bare}")) {
                return None;
            }
        }
        Some(proxy.clone())
    }
}

/// Connects HTTP exporters to their backend, or to their proxy.
#[derive(Clone)]
pub struct Connector {
    http: hyper_util::client::legacy::connect::HttpConnector,
    proxy: Proxy,
    tls: std::sync::Arc<crate::tls::ClientTls>,
}

type ConnectFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<ProxiedConn, Box<dyn std::error::Error + Send + Sync>>,
            > + Send,
    >,
>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = ProxiedConn;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = ConnectFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let https = dst.scheme_str() == Some("https");
        let proxy = self.proxy.for_dst(&dst);
        let proxied = proxy.is_some();
        let fut = self.http.call(proxy.unwrap_or_else(|| dst.clone()));
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = fut.await?.into_inner();
            if !https {
                return Ok(ProxiedConn {
                    io: hyper_util::rt::TokioIo::new(crate::tls::Stream::Plain(tcp)),
                    proxied,
                });
            }
            let host = dst.host().unwrap_or_default().to_string();
            let mut tcp = tcp;
            if proxied {
                connect_tunnel(&mut tcp, &host, dst.port_u16().unwrap_or(443)).await?;
            }
            let tls = tls.connect(&host, tcp).await?;
            Ok(ProxiedConn {
                io: hyper_util::rt::TokioIo::new(crate::tls::Stream::Tls(Box::new(tls.into()))),
                // Through a tunnel, requests go in origin form as to the server itself.
                proxied: false,
            })
        })
    }
}

/// Opens a CONNECT tunnel to `host:port` through the proxy at the other end of `tcp`.
async fn connect_tunnel(
    tcp: &mut tokio::net::TcpStream,
    host: &str,
    port: u16,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    // The proxy's answer: a status line and headers, at most 8 KiB, read byte by byte so
    // nothing of the tunnel is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err(std::io::Error::other(
                "proxy answered CONNECT with over 8 KiB of headers",
            ));
        }
        let b = tcp.read_u8().await?;
        head.push(b);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    let ok = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c == "200");
    if !ok {
        return Err(std::io::Error::other(format!(
            "proxy refused CONNECT {target}: {status_line}"
        )));
    }
    Ok(())
}

/// A connection that tells the client whether it goes through a proxy (so requests are sent
/// in absolute form).
pub struct ProxiedConn {
    io: hyper_util::rt::TokioIo<crate::tls::Stream>,
    proxied: bool,
}

impl hyper_util::client::legacy::connect::Connection for ProxiedConn {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new().proxy(self.proxied)
    }
}

impl hyper::rt::Read for ProxiedConn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ProxiedConn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
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

#[cfg(test)]
mod proxy_tests {
    use super::EnvProxy;

    fn env(pairs: &[(&str, &str)]) -> EnvProxy {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EnvProxy::from_env(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    fn via(e: &EnvProxy, url: &str) -> Option<String> {
        e.for_dst(&url.parse().expect("uri")).map(|u| u.to_string())
    }

    #[test]
    fn the_environment_proxies_as_go_reads_them() {
        let e = env(&[
            ("HTTP_PROXY", "proxy:3128"),
            ("https_proxy", "http://secure-proxy:3129"),
            (
                "NO_PROXY",
                "internal.example, .svc, *.cluster.local, 10.0.0.7, mimir:9009",
            ),
        ]);
        assert_eq!(
            via(&e, "http://tempo.example.com:4318/v1/traces").as_deref(),
            Some("http://proxy:3128/")
        );
        assert_eq!(
            via(&e, "https://otlp.grafana.net/otlp").as_deref(),
            Some("http://secure-proxy:3129/")
        );
        for direct in [
            "http://localhost:4318/",
            "http://127.0.0.1:4318/",
            "http://[::1]:4318/",
            "http://internal.example/",
            "http://api.internal.example/",
            "http://loki.monitoring.svc:3100/",
            "http://a.b.cluster.local/",
            "http://10.0.0.7:9009/",
            "http://mimir:9009/",
        ] {
            assert_eq!(via(&e, direct), None, "{direct}");
        }
        assert!(
            via(&e, "http://mimir:9090/").is_some(),
            "NO_PROXY's port must match"
        );
        assert!(via(&e, "http://notinternal.example/").is_some());
        assert_eq!(
            via(
                &env(&[("HTTP_PROXY", "p:1"), ("NO_PROXY", "*")]),
                "http://x/"
            ),
            None
        );
        // Only http:// proxies: anything else goes direct (with a warning).
        assert_eq!(
            via(&env(&[("HTTP_PROXY", "socks5://p:1")]), "http://x/"),
            None
        );
        assert_eq!(env(&[]), EnvProxy::default());
    }
}

#[cfg(test)]
mod compress_once_tests {
    use super::*;
    use crate::pdata::{Batch, Context, Payload, Signal};
    use bytes::Bytes;
    use std::sync::Arc;

    fn batch(shared: bool) -> Batch {
        let mut b = Batch::encoded(
            Signal::Traces,
            Bytes::from(vec![7u8; 300_000]),
            1,
            Arc::new(Context::default()),
        );
        if shared {
            b.compressed = Some(Default::default());
        }
        b
    }

    /// Exporters that compress a fanned-out batch alike share one compressed form (the
    /// same bytes, not equal ones); another codec or level is another form; a batch that
    /// goes to one exporter, or a body that is not the batch's own bytes, is not cached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fanned_out_batch_is_compressed_once_per_form() {
        let p = CompressionParams::default();
        let b = batch(true);
        let Payload::Encoded(own) = &b.payload else {
            panic!("encoded")
        };
        // Two exporters at once (300 KB: on the compression threads).
        let (x, y) = tokio::join!(
            p.compress_batch(Compression::Gzip, true, &b, own),
            p.compress_batch(Compression::Gzip, true, &b, own)
        );
        assert_eq!(x.as_ptr(), y.as_ptr(), "one gzip form shared");
        // A clone (what each exporter holds) shares it too.
        let c = b.clone();
        let z = p.compress_batch(Compression::Gzip, true, &c, own).await;
        assert_eq!(z.as_ptr(), x.as_ptr());
        assert_eq!(
            crate::compression::gunzip_capped(&z, 1 << 20).as_deref(),
            Ok(&own[..])
        );
        let level9 = CompressionParams { level: 9 };
        let g9 = level9
            .compress_batch(Compression::Gzip, true, &b, own)
            .await;
        assert_ne!(g9.as_ptr(), x.as_ptr(), "another level, another form");
        let sg = p.compress_batch(Compression::Snappy, true, &b, own).await;
        let sh = p.compress_batch(Compression::Snappy, false, &b, own).await;
        assert_ne!(sg, sh, "gRPC snappy is framed, HTTP snappy one block");
        assert_eq!(
            crate::compression::unsnappy_framed_capped(&sg, 1 << 20).as_deref(),
            Ok(&own[..])
        );
        assert_eq!(
            crate::compression::unsnappy_capped(&sh, 1 << 20).as_deref(),
            Ok(&own[..])
        );
        // Not the batch's own bytes (say, JSON made for one exporter): made each time.
        let other = Bytes::from(vec![7u8; 300_000]);
        let o1 = p.compress_batch(Compression::Gzip, true, &b, &other).await;
        let o2 = p.compress_batch(Compression::Gzip, true, &b, &other).await;
        assert_ne!(o1.as_ptr(), o2.as_ptr());
        // One exporter: nothing cached.
        let single = batch(false);
        let Payload::Encoded(own1) = &single.payload else {
            panic!("encoded")
        };
        let s1 = p
            .compress_batch(Compression::Gzip, true, &single, own1)
            .await;
        let s2 = p
            .compress_batch(Compression::Gzip, true, &single, own1)
            .await;
        assert_ne!(s1.as_ptr(), s2.as_ptr());
    }
}
