//! The `otlp` receiver: OTLP over gRPC (`protocols.grpc`) and HTTP (`protocols.http`) for
//! traces, metrics and logs.
//!
//! It decodes only as much as it must to validate and count, tags each batch with its
//! context and hands it to every pipeline it feeds before answering. It must never answer
//! success for data no pipeline took, and never allocate more than the configured limits
//! for one request.
pub mod config;
pub mod grpc;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::loader::Body;
use crate::net::{self, Protocol};
use crate::pdata::Signal;
use crate::pipeline::inbox::{ReceiverCounters, ReceiverOutput};
use crate::pipeline::registry::{
    all_signals, AuthSlot, BoxFuture, Decode, Factory, ReceiverSettings, RunningReceiver, Stability,
};
use config::OtlpReceiverConfig;

/// What both transports of one receiver share.
pub struct Shared {
    pub out: ReceiverOutput,
    pub include_metadata: bool,
    pub grpc_counters: ReceiverCounters,
    pub http_counters: ReceiverCounters,
    /// The `auth` authenticator every request must pass, if any.
    pub auth: Option<crate::extensions::auth::ServerAuth>,
    /// Requests it refused.
    pub auth_failures: crate::telemetry::metrics::Counter,
}

impl Shared {
    /// Runs the authenticator on a request's headers: who the client is, or why it is
    /// refused (counted).
    pub fn authenticate(
        &self,
        headers: &::http::HeaderMap,
    ) -> Result<Option<Arc<crate::extensions::auth::Identity>>, String> {
        let Some(a) = &self.auth else {
            return Ok(None);
        };
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        a.check(&get)
            .map(|id| Some(Arc::new(id)))
            .inspect_err(|_| self.auth_failures.inc())
    }
}

/// A protocol's `auth` as its authenticator, and the counter of its refusals.
fn server_auth(
    registry: &crate::telemetry::metrics::Registry,
    id: &str,
    transport: &'static str,
    auth: &Option<crate::extensions::auth::AuthRef>,
) -> Result<
    (
        Option<crate::extensions::auth::ServerAuth>,
        crate::telemetry::metrics::Counter,
    ),
    String,
> {
    let failures = registry.counter(
        "weir_receiver_auth_failures_total",
        "Requests refused by the receiver's authenticator (401 / UNAUTHENTICATED).",
        &[("receiver", id), ("transport", transport)],
    );
    let auth = match auth.as_ref().and_then(|a| a.resolved.as_ref()) {
        Some(cfg) => Some(crate::extensions::auth::ServerAuth::build(cfg)?),
        None => None,
    };
    Ok((auth, failures))
}

/// A started receiver: its bound addresses, server tasks, and a duplicate of each listening
/// socket (transport, endpoint, socket) that a reload can hand to the next server.
pub struct Running {
    pub addrs: Vec<(&'static str, SocketAddr)>,
    pub tasks: Vec<JoinHandle<()>>,
    pub listeners: Vec<(&'static str, String, std::net::TcpListener)>,
}

/// A listener for `transport` on `endpoint`: the kept socket of a previous server of this
/// receiver when the endpoint is the same (so the port never closes), else a new bind.
async fn listen(
    transport: &'static str,
    endpoint: &str,
    reuse: &[(&'static str, String, std::net::TcpListener)],
) -> std::io::Result<(tokio::net::TcpListener, std::net::TcpListener)> {
    if let Some((_, _, kept)) = reuse
        .iter()
        .find(|(t, e, _)| *t == transport && e == endpoint)
    {
        return net::reuse_listener(kept);
    }
    net::share_listener(net::bind(endpoint).await?)
}

#[derive(Debug, thiserror::Error)]
#[error("receiver {id}: cannot listen on {endpoint}: {source}")]
pub struct BindError {
    pub id: String,
    pub endpoint: String,
    #[source]
    pub source: std::io::Error,
}

pub static FACTORY: Factory = Factory {
    type_name: "otlp",
    aliases: &[],
    stability: &all_signals(Stability::Stable),
    description: "OTLP over gRPC and HTTP (protobuf, JSON, gzip, zstd)",
    decode: Decode::Receiver(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ReceiverSettings>> {
    // `otlp:` with no body has no protocols, which validate reports.
    let c = b.decode_checked::<OtlpReceiverConfig>(|c| {
        c.normalize();
        c.validate()
    })?;
    Some(Box::new(c))
}

impl ReceiverSettings for OtlpReceiverConfig {
    fn endpoints(&self) -> Vec<(String, String)> {
        OtlpReceiverConfig::endpoints(self)
            .into_iter()
            .map(|(k, e)| (k.to_string(), e.to_string()))
            .collect()
    }

    fn auth_slots(&mut self) -> Vec<AuthSlot<'_>> {
        let mut v = Vec::new();
        if let Some(a) = self.protocols.grpc.as_mut().and_then(|g| g.auth.as_mut()) {
            v.push(AuthSlot {
                key: "protocols.grpc.auth".into(),
                auth: a,
            });
        }
        if let Some(a) = self.protocols.http.as_mut().and_then(|h| h.auth.as_mut()) {
            v.push(AuthSlot {
                key: "protocols.http.auth".into(),
                auth: a,
            });
        }
        v
    }

    fn start<'a>(
        &'a self,
        out: ReceiverOutput,
        stop: watch::Receiver<bool>,
        grace: Duration,
        reuse: &'a [(&'static str, String, std::net::TcpListener)],
    ) -> BoxFuture<'a, Result<RunningReceiver, Box<dyn std::error::Error + Send + Sync>>> {
        Box::pin(async move {
            let r = start(self, out, stop, grace, reuse).await?;
            Ok(RunningReceiver {
                addrs: r.addrs,
                tasks: r.tasks,
                listeners: r.listeners,
            })
        })
    }
}

/// Binds the configured endpoints and starts serving.
pub async fn start(
    cfg: &OtlpReceiverConfig,
    out: ReceiverOutput,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
    reuse: &[(&'static str, String, std::net::TcpListener)],
) -> Result<Running, BindError> {
    let id = out.id.to_string();
    let bind_err = |endpoint: &str, source| BindError {
        id: id.clone(),
        endpoint: endpoint.to_string(),
        source,
    };
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    let mut listeners = Vec::new();
    let registry = out.registry.clone();
    // TLS settings read again here (the files may have changed since validation).
    let server_tls = |t: &Option<crate::tls::TlsServerSetting>,
                      transport: &'static str,
                      endpoint: &str,
                      alpn: &[&[u8]]| {
        let Some(t) = t else { return Ok(None) };
        for w in t.common.warnings() {
            tracing::warn!(receiver = %id, "protocols.{transport}.{w}");
        }
        let failures = registry.counter(
            "weir_receiver_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out (plaintext clients, bad or missing client certificates).",
            &[("receiver", id.as_str()), ("transport", transport)],
        );
        crate::tls::ServerTls::new(t, alpn, failures)
            .map(Some)
            .map_err(|e| bind_err(endpoint, std::io::Error::other(format!("tls: {e}"))))
    };
    if let Some(g) = &cfg.protocols.grpc {
        let (listener, kept) = listen("grpc", &g.endpoint, reuse)
            .await
            .map_err(|e| bind_err(&g.endpoint, e))?;
        listeners.push(("grpc", g.endpoint.clone(), kept));
        addrs.push((
            "grpc",
            listener
                .local_addr()
                .map_err(|e| bind_err(&g.endpoint, e))?,
        ));
        let (auth, auth_failures) = server_auth(&registry, &id, "grpc", &g.auth)
            .map_err(|e| bind_err(&g.endpoint, std::io::Error::other(format!("auth: {e}"))))?;
        let shared = Arc::new(Shared {
            out: out.clone(),
            include_metadata: g.include_metadata,
            grpc_counters: ReceiverCounters::new(&registry, &id, "grpc"),
            http_counters: ReceiverCounters::new(&registry, &id, "http"),
            auth,
            auth_failures,
        });
        let svc = grpc::GrpcService {
            shared,
            max_message_size: (g.max_recv_msg_size_mib as usize) << 20,
        };
        for k in g.without_effect() {
            tracing::warn!(receiver = %id, "protocols.grpc.{k} has no effect in weir (its HTTP/2 stack has no such setting)");
        }
        tasks.push(net::serve_with(
            listener,
            svc,
            Protocol::Http2Only,
            g.timeouts(),
            server_tls(&g.tls, "grpc", &g.endpoint, &[b"h2"])?,
            shutdown.clone(),
            grace,
        ));
    }
    if let Some(h) = &cfg.protocols.http {
        for w in h.deprecations() {
            tracing::warn!(receiver = %id, "{w}");
        }
        for a in h.undecodable() {
            tracing::warn!(receiver = %id, "compression_algorithms lists {a:?}, which weir cannot decode: such requests get 400");
        }
        let (listener, kept) = listen("http", &h.endpoint, reuse)
            .await
            .map_err(|e| bind_err(&h.endpoint, e))?;
        listeners.push(("http", h.endpoint.clone(), kept));
        addrs.push((
            "http",
            listener
                .local_addr()
                .map_err(|e| bind_err(&h.endpoint, e))?,
        ));
        let (auth, auth_failures) = server_auth(&registry, &id, "http", &h.auth)
            .map_err(|e| bind_err(&h.endpoint, std::io::Error::other(format!("auth: {e}"))))?;
        let shared = Arc::new(Shared {
            out: out.clone(),
            include_metadata: h.include_metadata,
            grpc_counters: ReceiverCounters::new(&registry, &id, "grpc"),
            http_counters: ReceiverCounters::new(&registry, &id, "http"),
            auth,
            auth_failures,
        });
        let svc = http::HttpService {
            shared,
            max_body: h.max_request_body_size as usize,
            read_timeout: (!h.read_timeout.0.is_zero()).then_some(h.read_timeout.0),
            codings: Arc::from(h.compression_algorithms.clone()),
            paths: Arc::from(vec![
                (h.traces_url_path.clone(), Signal::Traces),
                (h.metrics_url_path.clone(), Signal::Metrics),
                (h.logs_url_path.clone(), Signal::Logs),
            ]),
            cors: h.cors.clone().map(Arc::new),
        };
        tasks.push(net::serve_with(
            listener,
            svc,
            Protocol::Auto,
            h.timeouts(),
            server_tls(&h.tls, "http", &h.endpoint, &[b"h2", b"http/1.1"])?,
            shutdown,
            grace,
        ));
    }
    Ok(Running {
        addrs,
        tasks,
        listeners,
    })
}
