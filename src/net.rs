//! Listening sockets and the accept loop every server in weir uses (receivers, telemetry,
//! health). Stopping a server closes its listener at once and lets open connections finish
//! the requests they carry.
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
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

/// Serves `svc` on `listener` until `shutdown` turns true; then stops accepting and gives
/// open connections `grace` to finish.
pub fn serve<S, B>(
    listener: TcpListener,
    svc: S,
    protocol: Protocol,
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
            .max_concurrent_streams(1024)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20);
        let graceful = GracefulShutdown::new();
        loop {
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
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), svc.clone())
                        .into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                _ = until_true(&mut shutdown) => break,
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    })
}

/// Resolves once `rx` holds `true` (or its sender is gone).
pub async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await.map(|_| ());
}
