//! Listening sockets and the accept loop every server in weir uses (receivers, telemetry,
//! health). Stopping a server closes its listener at once and lets open connections finish
//! the requests they carry.
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::extensions::auth::Identity;
use crate::tls::Stream;
use tokio::task::JoinHandle;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Parses `host:port` (`0.0.0.0:4317`, `localhost:4318`, `[::1]:4317`, `:4317`) for
/// validation, without touching the network.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("endpoint {endpoint:?} must be host:port"))?;
    port.parse::<u16>()
        .map_err(|_| format!("endpoint {endpoint:?} has an invalid port {port:?}"))?;
    if host.contains('/') {
        return Err(format!(
            "endpoint {endpoint:?} must be host:port, without a scheme or path"
        ));
    }
    Ok(())
}

/// Host and port of an endpoint, for conflict checks (`localhost` and `""` normalised).
pub fn endpoint_parts(endpoint: &str) -> Option<(String, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = match host.trim_start_matches('[').trim_end_matches(']') {
        "" | "0.0.0.0" | "::" => "*".to_string(),
        "localhost" => "127.0.0.1".to_string(),
        h => h.to_string(),
    };
    Some((host, port))
}

/// Binds a listener on `endpoint`.
pub async fn bind(endpoint: &str) -> std::io::Result<TcpListener> {
    let endpoint = if endpoint.starts_with(':') {
        format!("0.0.0.0{endpoint}")
    } else {
        endpoint.to_string()
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&endpoint).await?.collect();
    let mut last = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "endpoint resolved to no address",
        )
    }))
}

/// Splits a listener into the one a server accepts on and a duplicate of the same socket that
/// can outlive that server (a reload hands it to the next server: the port never closes).
pub fn share_listener(l: TcpListener) -> std::io::Result<(TcpListener, std::net::TcpListener)> {
    let std_l = l.into_std()?;
    let keep = std_l.try_clone()?;
    std_l.set_nonblocking(true)?;
    Ok((TcpListener::from_std(std_l)?, keep))
}

/// A server-side listener from a kept duplicate (see [`share_listener`]).
pub fn reuse_listener(
    kept: &std::net::TcpListener,
) -> std::io::Result<(TcpListener, std::net::TcpListener)> {
    let l = kept.try_clone()?;
    l.set_nonblocking(true)?;
    let keep = kept.try_clone()?;
    Ok((TcpListener::from_std(l)?, keep))
}

/// Which HTTP versions a server speaks.
#[derive(Clone, Copy)]
pub enum Protocol {
    Http2Only,
    Auto,
}

/// Limits on how long a connection may dawdle (the Collector's confighttp timeouts). `None`
/// means no limit.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    /// HTTP/1 request headers must arrive within this.
    pub read_header: Option<Duration>,
    /// A connection that moves no byte either way for this long is closed.
    pub idle: Option<Duration>,
    /// A response the client does not read for this long closes the connection.
    pub write: Option<Duration>,
    /// Connections served at once; past it, new ones wait in the listen backlog until one
    /// closes (so a flood of clients cannot take every file descriptor).
    pub max_connections: Option<usize>,
    /// Keep HTTP/1 connections open between requests (false: one request per connection).
    pub keep_alive: bool,
    /// HTTP/2 streams per connection (default 1024).
    pub max_concurrent_streams: Option<u32>,
    /// HTTP/2 pings: sent after this long without traffic, the connection closed when one is
    /// not answered within the second duration (gRPC keepalive `time` and `timeout`).
    pub ping: Option<(Duration, Duration)>,
    /// Connections are asked to go away (HTTP/2 GOAWAY, HTTP/1 close after the current
    /// request) after this long, and closed after the second duration more (gRPC
    /// `max_connection_age` and `max_connection_age_grace`).
    pub max_age: Option<(Duration, Option<Duration>)>,
    /// A TLS handshake must finish within this (default [`TLS_HANDSHAKE_TIMEOUT`]).
    pub handshake: Option<Duration>,
}

impl Default for ConnTimeouts {
    fn default() -> Self {
        ConnTimeouts {
            read_header: None,
            idle: None,
            write: None,
            max_connections: None,
            keep_alive: true,
            max_concurrent_streams: None,
            ping: None,
            max_age: None,
            handshake: None,
        }
    }
}

/// The cap on concurrent connections of an OTLP/HTTP receiver.
pub const MAX_HTTP_CONNECTIONS: usize = 4096;

/// When a connection last moved a byte, and since when a write has been waiting on the
/// client, in milliseconds since the connection opened (0: not waiting).
#[derive(Default)]
struct Activity {
    last: AtomicU64,
    write_blocked_since: AtomicU64,
}

/// A socket that records its activity for the idle and write watchdog.
struct Tracked<S> {
    inner: S,
    act: Arc<Activity>,
    opened: std::time::Instant,
}

impl<S> Tracked<S> {
    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.now();
            self.act.last.store(now, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(r.is_pending());
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(r.is_pending());
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Tracked<S> {
    fn written(&self, pending: bool) {
        let now = self.now();
        if pending {
            let _ = self.act.write_blocked_since.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            self.act.write_blocked_since.store(0, Ordering::Relaxed);
            self.act.last.store(now, Ordering::Relaxed);
        }
    }
}

/// Resolves when the connection has been idle, or stuck writing, for too long.
async fn watchdog(act: Arc<Activity>, opened: std::time::Instant, t: ConnTimeouts) {
    let shortest = [t.idle, t.write].into_iter().flatten().min();
    let Some(shortest) = shortest else {
        return std::future::pending().await;
    };
    let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let now = opened.elapsed().as_millis() as u64 + 1;
        if let Some(w) = t.write {
            let since = act.write_blocked_since.load(Ordering::Relaxed);
            if since != 0 && now.saturating_sub(since) >= w.as_millis() as u64 {
                return;
            }
        }
        if let Some(i) = t.idle {
            let last = act.last.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= i.as_millis() as u64 {
                return;
            }
        }
    }
}

/// Serves `svc` on `listener` until `shutdown` turns true; then stops accepting and gives
/// open connections `grace` to finish.
pub fn serve<S, B>(
    listener: TcpListener,
    svc: S,
    protocol: Protocol,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> JoinHandle<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with(
        listener,
        svc,
        protocol,
        ConnTimeouts::default(),
        None,
        shutdown,
        grace,
    )
}

/// How long a client may take to finish its TLS handshake, unless the server says otherwise.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once per server; past it, new connections wait in the
/// listen backlog (so slow handshakes cannot pile up).
pub const MAX_TLS_HANDSHAKES: usize = 256;

/// The TLS handshake of a new connection, bounded by [`TLS_HANDSHAKE_TIMEOUT`]; a failure is
/// logged at debug and counted.
async fn handshake(
    tls: &crate::tls::ServerTls,
    stream: tokio::net::TcpStream,
    limit: Duration,
) -> Option<(Stream, Option<Arc<Identity>>)> {
    let peer = stream.peer_addr().ok();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            // A verified client certificate (mTLS) names the client.
            let id = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::tls::peer_common_name(c))
                .map(|cn| {
                    Arc::new(Identity {
                        method: "mtls",
                        subject: Arc::from(cn.as_str()),
                    })
                });
            Some((Stream::Tls(Box::new(s.into())), id))
        }
        Ok(Err(e)) => {
            tls.failures.inc();
            tracing::debug!(?peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tls.failures.inc();
            tracing::debug!(?peer, "TLS handshake not finished within {limit:?}");
            None
        }
    }
}

/// [`serve`], closing connections that outstay `timeouts`.
pub fn serve_with<S, B>(
    listener: TcpListener,
    svc: S,
    protocol: Protocol,
    timeouts: ConnTimeouts,
    tls: Option<Arc<crate::tls::ServerTls>>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> JoinHandle<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if let Protocol::Http2Only = protocol {
            builder = builder.http2_only();
        }
        builder
            .http2()
            .max_concurrent_streams(timeouts.max_concurrent_streams.unwrap_or(1024))
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20);
        if let Some((interval, timeout)) = timeouts.ping {
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(interval)
                .keep_alive_timeout(timeout);
        }
        if let Some(t) = timeouts.read_header {
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(t);
        }
        if !timeouts.keep_alive {
            builder.http1().keep_alive(false);
        }
        let builder = Arc::new(builder);
        let slots = timeouts
            .max_connections
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        // Every connection task holds a clone; when all are gone, all connections are.
        let (alive, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_TLS_HANDSHAKES));
        if let Some(poll) = tls.as_ref().and_then(|t| t.poll_interval()) {
            // Certificate files re-read while serving; ends with the server.
            let (tls, mut stop) = (tls.clone(), shutdown.clone());
            tokio::spawn(async move {
                let Some(tls) = tls else { return };
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(poll) => {
                            let t = tls.clone();
                            let _ = tokio::task::spawn_blocking(move || t.refresh()).await;
                        }
                        _ = until_true(&mut stop) => return,
                    }
                }
            });
        }
        loop {
            let slot = match &slots {
                Some(s) => tokio::select! {
                    p = Arc::clone(s).acquire_owned() => p.ok(),
                    _ = until_true(&mut shutdown) => break,
                },
                None => None,
            };
            let handshake_slot = match &tls {
                Some(_) => tokio::select! {
                    p = Arc::clone(&handshakes).acquire_owned() => p.ok(),
                    _ = until_true(&mut shutdown) => break,
                },
                None => None,
            };
            tokio::select! {
                conn = listener.accept() => {
                    let stream = match conn {
                        Ok((s, _)) => s,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let (alive, stop) = (alive.clone(), shutdown.clone());
                    let (builder, svc, tls) = (builder.clone(), svc.clone(), tls.clone());
                    tokio::spawn(async move {
                        let _slot = slot;
                        let _alive = alive;
                        let (stream, peer) = match &tls {
                            Some(tls) => {
                                let limit = timeouts.handshake.unwrap_or(TLS_HANDSHAKE_TIMEOUT);
                                let conn = handshake(tls, stream, limit).await;
                                drop(handshake_slot);
                                match conn {
                                    Some(c) => c,
                                    None => return,
                                }
                            }
                            None => (Stream::Plain(stream), None),
                        };
                        let svc = WithPeer { inner: svc, peer };
                        let opened = std::time::Instant::now();
                        let act = Arc::new(Activity::default());
                        act.last.store(0, Ordering::Relaxed);
                        let io = Tracked { inner: stream, act: act.clone(), opened };
                        let conn = builder
                            .serve_connection(TokioIo::new(io), svc)
                            .into_owned();
                        run_connection(conn, stop, act, opened, timeouts).await;
                    });
                }
                _ = until_true(&mut shutdown) => break,
            }
        }
        drop(listener);
        drop(alive);
        // Connections were told to finish (GOAWAY / close after the current request); wait
        // for them, at most `grace`. Dropping what is left closes it.
        let _ = tokio::time::timeout(grace, all_closed.recv()).await;
    })
}

/// Serves one connection until it ends: on shutdown or at `max_age` it is asked to finish
/// gracefully (its requests in flight complete); the watchdog, or the age grace running out,
/// closes it at once.
async fn run_connection<C>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    act: Arc<Activity>,
    opened: std::time::Instant,
    t: ConnTimeouts,
) where
    C: std::future::Future + GracefulConn,
{
    let mut conn = std::pin::pin!(conn);
    let dog = watchdog(act.clone(), opened, t);
    tokio::pin!(dog);
    let age = async {
        match t.max_age {
            Some((age, _)) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(age);
    let mut finishing = false;
    let mut hard_stop: Option<tokio::time::Instant> = None;
    // Stopping while the client has not sent a byte yet (a connection accepted just before a
    // reload): its first request is still served, if it comes within this.
    let mut first_request_until: Option<tokio::time::Instant> = None;
    loop {
        let until_hard = async {
            match hard_stop {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let first_request = async {
            match first_request_until {
                Some(until) => {
                    while act.last.load(Ordering::Relaxed) == 0
                        && tokio::time::Instant::now() < until
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = &mut dog => return,
            _ = until_hard => return,
            _ = first_request => {
                first_request_until = None;
                conn.as_mut().begin_graceful_shutdown();
            }
            _ = until_true(&mut stop), if !finishing => {
                finishing = true;
                if act.last.load(Ordering::Relaxed) == 0 {
                    first_request_until =
                        Some(tokio::time::Instant::now() + FIRST_REQUEST_GRACE);
                } else {
                    conn.as_mut().begin_graceful_shutdown();
                }
            }
            _ = &mut age, if !finishing => {
                finishing = true;
                conn.as_mut().begin_graceful_shutdown();
                if let Some((_, Some(grace))) = t.max_age {
                    hard_stop = Some(tokio::time::Instant::now() + grace);
                }
            }
        }
    }
}

/// A connection's service: every request carries the client's certificate identity (mTLS)
/// in its extensions, as an `Arc<Identity>`.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: Option<Arc<Identity>>,
}

impl<S> hyper::service::Service<Request<Incoming>> for WithPeer<S>
where
    S: hyper::service::Service<Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(p) = &self.peer {
            req.extensions_mut().insert(p.clone());
        }
        self.inner.call(req)
    }
}

/// How long a connection that has sent nothing yet when its server stops may still send its
/// first request (which is then served).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// A connection that can be asked to finish what it is doing and close.
pub trait GracefulConn {
    fn begin_graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulConn for auto::Connection<'static, I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: auto::HttpServerConnExec<S::Future, B>,
{
    fn begin_graceful_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Resolves once `rx` holds `true` (or its sender is gone).
pub async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await.map(|_| ());
}
