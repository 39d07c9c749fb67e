//! The `loadbalancing` exporter: the first tier of a two-tier gateway. It sends each trace
//! (or service, resource or metric) to one backend of a set it resolves, by consistent hash,
//! so the second tier's tail sampling sees every span of a trace and its cardinality limiter
//! every point of a series. The Collector's exporter and its keys: `routing_key`,
//! `protocol.otlp` (the `otlp` exporter's settings for every backend; its endpoint is the
//! backend's), `resolver.static.hostnames` and `resolver.dns`.
//!
//! A batch is split by key: one request never carries another key's data to the wrong
//! backend. Every backend is an `otlp` exporter of its own with the queue and retry of
//! `protocol.otlp`; the load balancer's own queue hands parts to them (waiting for room).
//! When the backends change (DNS answers, a reload), new ones start before keys move to
//! them; a removed backend delivers what it queued before it stops. It must never send a
//! key's data to two backends under one membership.
pub mod dns;
pub mod k8s;
pub mod ring;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use serde::Deserialize;
use tokio::sync::watch;

use crate::config::loader::{Body, Value};
use crate::config::units::DurationValue;
use crate::exporters::helper::config::{QueueConfig, RetryConfig};
use crate::exporters::helper::{
    self, BoxFuture, ExportError, ExporterHandle, ExporterTask, Sender, Sent,
};
use crate::exporters::otlp::config::OtlpExporterConfig;
use crate::pdata::{Batch, Payload};
use crate::pipeline::registry::{
    all_signals, AuthSlot, Decode, ExporterParts, ExporterSettings, Factory, Stability,
};
use crate::telemetry::metrics::{Counter, Registry};
use ring::Ring;

pub static FACTORY: Factory = Factory {
    type_name: "loadbalancing",
    aliases: &["load_balancing"],
    stability: &all_signals(Stability::Alpha),
    description: "sends each trace (service, resource, metric) to one backend by consistent hash: the first tier of a two-tier gateway",
    decode: Decode::Exporter(decode),
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadBalancingConfig {
    /// `traceID` (default), `service`, `resource`, `metric`, `streamID`, `attributes`.
    pub routing_key: String,
    /// With `routing_key: attributes`: the attributes whose values route a span or record
    /// (the span's, else its resource's; none found: its trace id).
    pub routing_attributes: Vec<String>,
    pub protocol: ProtocolConfig,
    pub resolver: ResolverConfig,
    /// The load balancer's own timeout for handing a part to a backend's queue.
    pub timeout: DurationValue,
    pub sending_queue: QueueConfig,
    pub retry_on_failure: RetryConfig,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// Settings of every backend's `otlp` exporter; `endpoint` is set per backend.
    pub otlp: OtlpExporterConfig,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverConfig {
    #[serde(rename = "static")]
    pub static_: Option<StaticResolver>,
    pub dns: Option<DnsResolver>,
    pub k8s: Option<K8sResolver>,
    /// Not in weir: refused with a message.
    pub aws_cloud_map: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sResolver {
    /// `name` or `name.namespace` of the Service whose ready endpoints are the backends.
    pub service: String,
    /// Each endpoint address with each of these ports is a backend.
    pub ports: Vec<u16>,
    /// For each request to the Kubernetes API.
    pub timeout: DurationValue,
    /// Backends by the endpoints' hostnames (a StatefulSet's pods) instead of addresses.
    pub return_hostnames: bool,
}

impl Default for K8sResolver {
    fn default() -> Self {
        K8sResolver {
            service: String::new(),
            ports: vec![4317],
            timeout: Duration::from_secs(1).into(),
            return_hostnames: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticResolver {
    /// `host[:port]` (port 4317 when left out).
    pub hostnames: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsResolver {
    pub hostname: String,
    /// A number or a string of one (upstream reads it as a string; YAML writes a number).
    #[serde(deserialize_with = "port_text")]
    pub port: String,
    pub interval: DurationValue,
    pub timeout: DurationValue,
}

fn port_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        N(u64),
        S(String),
    }
    Ok(match Port::deserialize(d)? {
        Port::N(n) => n.to_string(),
        Port::S(s) => s,
    })
}

impl Default for DnsResolver {
    fn default() -> Self {
        DnsResolver {
            hostname: String::new(),
            port: "4317".into(),
            interval: Duration::from_secs(5).into(),
            timeout: Duration::from_secs(1).into(),
        }
    }
}

impl Default for LoadBalancingConfig {
    fn default() -> Self {
        LoadBalancingConfig {
            routing_key: "traceID".into(),
            routing_attributes: Vec::new(),
            protocol: ProtocolConfig::default(),
            resolver: ResolverConfig::default(),
            timeout: Duration::from_secs(5).into(),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

/// What a batch is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    TraceId,
    Service,
    Resource,
    Metric,
    StreamId,
    Attributes,
}

impl LoadBalancingConfig {
    fn key(&self) -> Key {
        match self.routing_key.as_str() {
            "service" => Key::Service,
            "resource" => Key::Resource,
            "metric" => Key::Metric,
            "streamID" => Key::StreamId,
            "attributes" => Key::Attributes,
            _ => Key::TraceId,
        }
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        match self.routing_key.as_str() {
            "traceID" | "service" | "resource" | "metric" | "streamID" => {}
            "attributes" if self.routing_attributes.is_empty() => errs.push((
                "routing_attributes".into(),
                "routing_key attributes needs routing_attributes: the attributes to route by".into(),
            )),
            "attributes" => {}
            other => errs.push((
                "routing_key".into(),
                format!("unsupported routing_key: {other:?}; expected traceID, service, resource, metric, streamID or attributes"),
            )),
        }
        if !self.routing_attributes.is_empty() && self.routing_key != "attributes" {
            errs.push((
                "routing_attributes".into(),
                format!(
                    "routing_attributes is used with routing_key: attributes, not {:?}",
                    self.routing_key
                ),
            ));
        }
        let r = &self.resolver;
        if let Some(k) = &r.k8s {
            if k.service.is_empty() {
                errs.push((
                    "resolver.k8s.service".into(),
                    "no service specified to resolve the backends".into(),
                ));
            }
            if k.ports.is_empty() || k.ports.contains(&0) {
                errs.push((
                    "resolver.k8s.ports".into(),
                    "at least one port, none of them 0".into(),
                ));
            }
        }
        if r.aws_cloud_map.is_some() {
            errs.push((
                "resolver.aws_cloud_map".into(),
                "the aws_cloud_map resolver is not available in weir".into(),
            ));
        }
        match (&r.static_, &r.dns) {
            (None, None) if r.k8s.is_none() && r.aws_cloud_map.is_none() => errs.push((
                "resolver".into(),
                "no resolvers specified for the exporter: set static.hostnames or dns.hostname"
                    .into(),
            )),
            (Some(_), Some(_)) => errs.push((
                "resolver".into(),
                "only one resolver should be specified: static or dns".into(),
            )),
            _ => {}
        }
        if let Some(s) = &r.static_ {
            if s.hostnames.is_empty() {
                errs.push((
                    "resolver.static.hostnames".into(),
                    "no endpoints specified for the static resolver".into(),
                ));
            }
            for (i, h) in s.hostnames.iter().enumerate() {
                if let Err(e) = crate::net::check_endpoint(&with_port(h, "4317")) {
                    errs.push((format!("resolver.static.hostnames[{i}]"), e));
                }
            }
        }
        if let Some(d) = &r.dns {
            if d.hostname.is_empty() {
                errs.push((
                    "resolver.dns.hostname".into(),
                    "no hostname specified to resolve the backends".into(),
                ));
            }
            if d.port.parse::<u16>().is_err() {
                errs.push((
                    "resolver.dns.port".into(),
                    format!("invalid port {:?}", d.port),
                ));
            }
            if d.interval.0.is_zero() {
                errs.push(("resolver.dns.interval".into(), "must be positive".into()));
            }
        }
        let mut proto = self.protocol.otlp.clone();
        if proto.endpoint.is_empty() {
            // Checked with a placeholder: the endpoint is each backend's.
            proto.endpoint = "127.0.0.1:4317".into();
        }
        for (k, m) in proto.validate() {
            errs.push((format!("protocol.otlp.{k}"), m));
        }
        if let Err((k, m)) = self.sending_queue.validate() {
            errs.push((format!("sending_queue.{k}"), m));
        }
        if let Some(st) = &self.protocol.otlp.sending_queue.storage {
            if self
                .sending_queue
                .storage
                .as_ref()
                .is_some_and(|own| own != st)
            {
                errs.push((
                    "protocol.otlp.sending_queue.storage".into(),
                    format!("{st:?} differs from sending_queue.storage {:?}: a load balancer persists to one storage", self.sending_queue.storage.as_deref().unwrap_or_default()),
                ));
            }
            if !self.sending_queue.enabled {
                errs.push((
                    "protocol.otlp.sending_queue.storage".into(),
                    "needs the load balancer's own sending_queue enabled: weir persists what the load balancer takes, until every backend it goes to has it".into(),
                ));
            }
        }
        errs
    }

    fn static_endpoints(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .resolver
            .static_
            .iter()
            .flat_map(|s| &s.hostnames)
            .map(|h| with_port(h, "4317"))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `host` with `:port` added when it has none.
fn with_port(host: &str, port: &str) -> String {
    let has_port = match host.rsplit_once(':') {
        Some((h, p)) => {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        host.to_string()
    } else if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExporterSettings>> {
    let mut c = b.decode_checked::<LoadBalancingConfig>(|c| c.validate())?;
    // The backends' persistent queues (upstream's `protocol.otlp.sending_queue.storage`) are
    // the pipeline's write-ahead log: a request stays on disk until every part the load
    // balancer made of it is delivered (each part carries the request's release), so either
    // key makes the load balancer durable.
    if c.sending_queue.storage.is_none() {
        c.sending_queue.storage = c.protocol.otlp.sending_queue.storage.clone();
    }
    Some(Box::new(c))
}

impl ExporterSettings for LoadBalancingConfig {
    fn build(&self, id: &str, registry: &Arc<Registry>) -> Result<ExporterParts, String> {
        Ok(ExporterParts {
            sender: LoadBalancer::start(id, self, registry)?,
            queue: self.sending_queue.clone(),
            retry: self.retry_on_failure.clone(),
            timeout: self.timeout.0,
        })
    }
    fn sending_queue(&self) -> Option<&QueueConfig> {
        Some(&self.sending_queue)
    }
    fn auth_slot(&mut self) -> Option<AuthSlot<'_>> {
        self.protocol.otlp.auth.as_mut().map(|auth| AuthSlot {
            key: "protocol.otlp.auth".into(),
            auth,
        })
    }
}

/// One backend: an `otlp` exporter of its own.
struct Backend {
    handle: ExporterHandle,
    /// Set when the backend leaves the membership: what it still holds is re-routed.
    removed: Arc<std::sync::atomic::AtomicBool>,
}

/// The load balancer in force for each exporter id: a replaced one (a reload) hands what its
/// backends still hold to its successor.
static LIVE: std::sync::Mutex<Vec<(String, std::sync::Weak<LoadBalancer>)>> =
    std::sync::Mutex::new(Vec::new());

fn live(id: &str) -> Option<Arc<LoadBalancer>> {
    LIVE.lock()
        .ok()?
        .iter()
        .find(|(i, _)| i == id)
        .and_then(|(_, w)| w.upgrade())
}

/// A backend's sender: its `otlp` exporter, with the load balancer's policies around it.
/// Once the backend is removed, what its queue still holds goes to the keys' new owners;
/// when its retries run out, the batch fails over to the next backend on the ring.
struct BackendSender {
    endpoint: String,
    inner: Arc<dyn Sender>,
    removed: Arc<std::sync::atomic::AtomicBool>,
    lb: std::sync::Weak<LoadBalancer>,
    ok: Counter,
    failed: Counter,
    latency: crate::telemetry::metrics::Histogram,
}

/// How long a failing-over batch waits for room at the other backends before it is dropped.
const RESCUE_WAIT: Duration = Duration::from_secs(5);

/// `otelcol_loadbalancer_backend_latency` buckets, in milliseconds.
const LATENCY_MS: &[f64] = &[
    5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

impl Sender for BackendSender {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            if self.removed.load(std::sync::atomic::Ordering::Acquire) {
                // To the keys' owners now: this load balancer's, or its successor's.
                let own = self.lb.upgrade();
                let target = own.as_ref().and_then(|l| live(&l.id)).or(own);
                if let Some(lb) = target {
                    lb.rerouted.add(batch.items as u64);
                    return lb.route(batch, None).await;
                }
            }
            let started = std::time::Instant::now();
            let r = self.inner.send(batch).await;
            self.latency
                .observe(started.elapsed().as_secs_f64() * 1000.0);
            match &r {
                Ok(_) => self.ok.inc(),
                Err(_) => self.failed.inc(),
            }
            r
        })
    }

    fn rescue<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(lb) = self.lb.upgrade() else {
                return false;
            };
            let others = lb
                .members
                .read()
                .map(|m| m.ring.endpoints.iter().any(|e| *e != self.endpoint))
                .unwrap_or(false);
            if !others {
                return false;
            }
            tracing::warn!(exporter = %lb.id, "backend {} kept failing: {} {} fail over to the next backend", self.endpoint, batch.items, batch.signal.item_noun());
            // Bounded: two failing backends must not wait on each other's full queues.
            match tokio::time::timeout(RESCUE_WAIT, lb.route(batch, Some(&self.endpoint))).await {
                Ok(Ok(_)) => {
                    lb.failovers.add(batch.items as u64);
                    true
                }
                _ => false,
            }
        })
    }
}

/// The backends in force and the ring over them.
struct Members {
    ring: Ring,
    backends: Vec<Arc<Backend>>,
}

pub struct LoadBalancer {
    id: Arc<str>,
    cfg: LoadBalancingConfig,
    key: Key,
    registry: Arc<Registry>,
    members: RwLock<Arc<Members>>,
    /// Tasks of every backend started (removed ones included, until they drain), with
    /// their backend's removed flag.
    tasks: std::sync::Mutex<Vec<(Arc<std::sync::atomic::AtomicBool>, ExporterTask)>>,
    stop: watch::Sender<bool>,
    resolutions: Counter,
    failovers: Counter,
    rerouted: Counter,
    rr: std::sync::atomic::AtomicUsize,
    me: std::sync::OnceLock<std::sync::Weak<LoadBalancer>>,
}

impl LoadBalancer {
    pub fn start(
        id: &str,
        cfg: &LoadBalancingConfig,
        registry: &Arc<Registry>,
    ) -> Result<Arc<dyn Sender>, String> {
        let (stop, stop_rx) = watch::channel(false);
        let lb = Arc::new(LoadBalancer {
            id: Arc::from(id),
            cfg: cfg.clone(),
            key: cfg.key(),
            registry: registry.clone(),
            members: RwLock::new(Arc::new(Members {
                ring: Ring::default(),
                backends: Vec::new(),
            })),
            tasks: std::sync::Mutex::new(Vec::new()),
            stop,
            resolutions: registry.counter(
                "otelcol_loadbalancer_num_resolutions_total",
                "Number of times the resolver has triggered new resolutions.",
                &[
                    ("exporter", id),
                    (
                        "resolver",
                        if cfg.resolver.dns.is_some() {
                            "dns"
                        } else {
                            "static"
                        },
                    ),
                ],
            ),
            failovers: registry.counter(
                "weir_loadbalancer_failover_items_total",
                "Items whose backend kept failing past its retries, sent to the next backend on the ring instead.",
                &[("exporter", id)],
            ),
            rerouted: registry.counter(
                "weir_loadbalancer_rerouted_items_total",
                "Items queued for a backend that left, sent to the keys' new owners.",
                &[("exporter", id)],
            ),
            rr: std::sync::atomic::AtomicUsize::new(0),
            me: std::sync::OnceLock::new(),
        });
        let _ = lb.me.set(Arc::downgrade(&lb));
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|(i, w)| i != id && w.strong_count() > 0);
            l.push((id.to_string(), Arc::downgrade(&lb)));
        }
        {
            let l = Arc::downgrade(&lb);
            registry.gauge_fn(
                "otelcol_loadbalancer_num_backends",
                "Current number of backends in use.",
                &[("exporter", id)],
                move || {
                    l.upgrade()
                        .and_then(|l| l.members.read().ok().map(|m| m.backends.len() as f64))
                        .unwrap_or(0.0)
                },
            );
        }
        if cfg.resolver.dns.is_some() {
            tokio::spawn(Self::resolve_dns(Arc::downgrade(&lb), stop_rx));
        } else if let Some(k) = &cfg.resolver.k8s {
            let api = k8s::K8sApi::in_cluster(&k.service)?;
            tokio::spawn(Self::resolve_k8s(Arc::downgrade(&lb), api, stop_rx));
        } else {
            lb.set_endpoints(cfg.static_endpoints())?;
            lb.resolutions.inc();
        }
        Ok(lb)
    }

    /// Puts `endpoints` (sorted) in force: new backends start first, then the ring switches;
    /// backends no longer listed keep delivering what they queued.
    fn set_endpoints(&self, endpoints: Vec<String>) -> Result<(), String> {
        let current = self
            .members
            .read()
            .map_err(|_| "poisoned".to_string())?
            .clone();
        if current.ring.endpoints == endpoints {
            return Ok(());
        }
        let mut backends = Vec::with_capacity(endpoints.len());
        for e in &endpoints {
            if let Some(i) = current.ring.endpoints.iter().position(|x| x == e) {
                backends.push(current.backends[i].clone());
                continue;
            }
            let mut cfg = self.cfg.protocol.otlp.clone();
            cfg.endpoint = e.clone();
            let removed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let outcome = |success: &str| {
                self.registry.counter(
                    "otelcol_loadbalancer_backend_outcome_total",
                    "Number of successes and failures for each endpoint.",
                    &[
                        ("exporter", &self.id),
                        ("endpoint", e),
                        ("success", success),
                    ],
                )
            };
            let sender = Arc::new(BackendSender {
                endpoint: e.clone(),
                inner: crate::exporters::otlp::OtlpGrpcSender::new(&cfg)? as Arc<dyn Sender>,
                removed: removed.clone(),
                lb: self.me.get().cloned().unwrap_or_default(),
                ok: outcome("true"),
                failed: outcome("false"),
                latency: self.registry.histogram(
                    "otelcol_loadbalancer_backend_latency",
                    "Response latency in ms for the backends.",
                    &[("exporter", &self.id), ("endpoint", e)],
                    LATENCY_MS,
                ),
            }) as Arc<dyn Sender>;
            let (handle, task) = helper::start(
                &format!("{}/{e}", self.id),
                sender,
                &cfg.sending_queue,
                &cfg.retry_on_failure,
                cfg.timeout.0,
                &self.registry,
            );
            if let Ok(mut t) = self.tasks.lock() {
                // Backends that left and delivered everything are done with.
                t.retain(|(_, task)| !task.is_finished());
                t.push((removed.clone(), task));
            }
            backends.push(Arc::new(Backend { handle, removed }));
        }
        for (i, e) in current.ring.endpoints.iter().enumerate() {
            if !endpoints.contains(e) {
                current.backends[i]
                    .removed
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        tracing::info!(exporter = %self.id, "backends: {}", if endpoints.is_empty() { "none".to_string() } else { endpoints.join(", ") });
        let members = Arc::new(Members {
            ring: Ring::new(endpoints),
            backends,
        });
        if let Ok(mut m) = self.members.write() {
            *m = members;
        }
        Ok(())
    }

    async fn resolve_dns(lb: std::sync::Weak<LoadBalancer>, mut stop: watch::Receiver<bool>) {
        loop {
            let Some(this) = lb.upgrade() else { return };
            let Some(d) = this.cfg.resolver.dns.clone() else {
                return;
            };
            let port: u16 = d.port.parse().unwrap_or(4317);
            match dns::resolve(&d.hostname, d.timeout.0.max(Duration::from_millis(100))).await {
                Ok(ips) => {
                    let mut eps: Vec<String> = ips
                        .into_iter()
                        .map(|ip| std::net::SocketAddr::new(ip, port).to_string())
                        .collect();
                    eps.sort();
                    this.resolutions.inc();
                    if let Err(e) = this.set_endpoints(eps) {
                        tracing::error!(exporter = %this.id, "cannot start backends: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!(exporter = %this.id, "dns resolver: {e}; keeping the backends in use")
                }
            }
            let interval = d.interval.0;
            drop(this);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn resolve_k8s(
        lb: std::sync::Weak<LoadBalancer>,
        api: k8s::K8sApi,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let Some(this) = lb.upgrade() else { return };
            let Some(k) = this.cfg.resolver.k8s.clone() else {
                return;
            };
            match api
                .ready_addresses(
                    k.return_hostnames,
                    k.timeout.0.max(Duration::from_millis(100)),
                )
                .await
            {
                Ok(addrs) => {
                    let mut eps: Vec<String> = addrs
                        .iter()
                        .flat_map(|a| k.ports.iter().map(move |p| with_port(a, &p.to_string())))
                        .collect();
                    eps.sort();
                    this.resolutions.inc();
                    if let Err(e) = this.set_endpoints(eps) {
                        tracing::error!(exporter = %this.id, "cannot start backends: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!(exporter = %this.id, "k8s resolver: {e}; keeping the backends in use")
                }
            }
            drop(this);
            tokio::select! {
                _ = tokio::time::sleep(k8s::POLL) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Splits a batch into one payload per backend index.
    fn split(&self, payload: Payload, ring: &Ring) -> Vec<(usize, Payload)> {
        let n = ring.endpoints.len();
        let mut out: Vec<Option<Payload>> = (0..n).map(|_| None).collect();
        let rr = || self.rr.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n.max(1);
        let service = |attrs: &[KeyValue]| -> Vec<u8> {
            attrs
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.as_bytes().to_vec()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        let resource_key = |attrs: &[KeyValue]| -> Vec<u8> {
            let mut v: Vec<String> = attrs
                .iter()
                .map(|kv| format!("{}={:?}", kv.key, kv.value))
                .collect();
            v.sort();
            v.join(",").into_bytes()
        };
        match payload {
            Payload::Traces(req) => {
                for rs in req.resource_spans {
                    let rattrs = rs
                        .resource
                        .as_ref()
                        .map(|r| r.attributes.as_slice())
                        .unwrap_or(&[]);
                    if !matches!(self.key, Key::TraceId | Key::Attributes) {
                        let key = if self.key == Key::Service {
                            service(rattrs)
                        } else {
                            resource_key(rattrs)
                        };
                        let i = ring.index_for(&key).unwrap_or(0);
                        push_traces(&mut out[i], rs);
                        continue;
                    }
                    // By trace: each span to its trace's backend, under copies of its
                    // resource and scope.
                    let mut parts: BTreeMap<usize, ResourceSpans> = BTreeMap::new();
                    for ss in rs.scope_spans {
                        let mut scoped: BTreeMap<usize, ScopeSpans> = BTreeMap::new();
                        for sp in ss.spans {
                            let i = match self.key {
                                Key::Attributes => ring
                                    .index_for(&self.attributes_key(
                                        &sp.attributes,
                                        rattrs,
                                        &sp.trace_id,
                                    ))
                                    .unwrap_or(0),
                                _ => ring.index_for(&sp.trace_id).unwrap_or(0),
                            };
                            scoped
                                .entry(i)
                                .or_insert_with(|| ScopeSpans {
                                    scope: ss.scope.clone(),
                                    spans: Vec::new(),
                                    schema_url: ss.schema_url.clone(),
                                })
                                .spans
                                .push(sp);
                        }
                        for (i, s) in scoped {
                            parts
                                .entry(i)
                                .or_insert_with(|| ResourceSpans {
                                    resource: rs.resource.clone(),
                                    scope_spans: Vec::new(),
                                    schema_url: rs.schema_url.clone(),
                                })
                                .scope_spans
                                .push(s);
                        }
                    }
                    for (i, p) in parts {
                        push_traces(&mut out[i], p);
                    }
                }
            }
            Payload::Logs(req) => {
                for rl in req.resource_logs {
                    let rattrs = rl
                        .resource
                        .as_ref()
                        .map(|r| r.attributes.as_slice())
                        .unwrap_or(&[]);
                    if !matches!(self.key, Key::TraceId | Key::Attributes) {
                        let key = if self.key == Key::Service {
                            service(rattrs)
                        } else {
                            resource_key(rattrs)
                        };
                        let i = ring.index_for(&key).unwrap_or(0);
                        push_logs(&mut out[i], rl);
                        continue;
                    }
                    let mut parts: BTreeMap<usize, ResourceLogs> = BTreeMap::new();
                    for sl in rl.scope_logs {
                        let mut scoped: BTreeMap<usize, ScopeLogs> = BTreeMap::new();
                        for lr in sl.log_records {
                            // Records without a trace id spread round-robin, as upstream.
                            let i = if self.key == Key::Attributes {
                                ring.index_for(&self.attributes_key(
                                    &lr.attributes,
                                    rattrs,
                                    &lr.trace_id,
                                ))
                                .unwrap_or(0)
                            } else if lr.trace_id.is_empty() {
                                rr()
                            } else {
                                ring.index_for(&lr.trace_id).unwrap_or(0)
                            };
                            scoped
                                .entry(i)
                                .or_insert_with(|| ScopeLogs {
                                    scope: sl.scope.clone(),
                                    log_records: Vec::new(),
                                    schema_url: sl.schema_url.clone(),
                                })
                                .log_records
                                .push(lr);
                        }
                        for (i, s) in scoped {
                            parts
                                .entry(i)
                                .or_insert_with(|| ResourceLogs {
                                    resource: rl.resource.clone(),
                                    scope_logs: Vec::new(),
                                    schema_url: rl.schema_url.clone(),
                                })
                                .scope_logs
                                .push(s);
                        }
                    }
                    for (i, p) in parts {
                        push_logs(&mut out[i], p);
                    }
                }
            }
            Payload::Metrics(req) => {
                for rm in req.resource_metrics {
                    let rattrs = rm
                        .resource
                        .as_ref()
                        .map(|r| r.attributes.as_slice())
                        .unwrap_or(&[]);
                    match self.key {
                        Key::Metric | Key::StreamId => {
                            let mut parts: BTreeMap<usize, ResourceMetrics> = BTreeMap::new();
                            for sm in rm.scope_metrics {
                                let mut scoped: BTreeMap<usize, ScopeMetrics> = BTreeMap::new();
                                let scope_name = sm
                                    .scope
                                    .as_ref()
                                    .map(|s| s.name.clone())
                                    .unwrap_or_default();
                                for m in sm.metrics {
                                    let pieces: Vec<(
                                        usize,
                                        opentelemetry_proto::tonic::metrics::v1::Metric,
                                    )> = if self.key == Key::StreamId {
                                        // Each data point's stream: resource, scope, metric
                                        // and the point's attributes.
                                        let base = format!(
                                            "{}\u{1}{scope_name}\u{1}{}\u{1}",
                                            String::from_utf8_lossy(&resource_key(rattrs)),
                                            m.name
                                        );
                                        split_metric(m, |attrs| {
                                            let mut k = base.clone().into_bytes();
                                            k.extend(resource_key(attrs));
                                            ring.index_for(&k).unwrap_or(0)
                                        })
                                    } else {
                                        vec![(ring.index_for(m.name.as_bytes()).unwrap_or(0), m)]
                                    };
                                    for (i, m) in pieces {
                                        scoped
                                            .entry(i)
                                            .or_insert_with(|| ScopeMetrics {
                                                scope: sm.scope.clone(),
                                                metrics: Vec::new(),
                                                schema_url: sm.schema_url.clone(),
                                            })
                                            .metrics
                                            .push(m);
                                    }
                                }
                                for (i, s) in scoped {
                                    parts
                                        .entry(i)
                                        .or_insert_with(|| ResourceMetrics {
                                            resource: rm.resource.clone(),
                                            scope_metrics: Vec::new(),
                                            schema_url: rm.schema_url.clone(),
                                        })
                                        .scope_metrics
                                        .push(s);
                                }
                            }
                            for (i, p) in parts {
                                push_metrics(&mut out[i], p);
                            }
                        }
                        Key::Resource => {
                            let i = ring.index_for(&resource_key(rattrs)).unwrap_or(0);
                            push_metrics(&mut out[i], rm);
                        }
                        // traceID means nothing for metrics: by service, as upstream defaults.
                        Key::Service | Key::TraceId | Key::Attributes => {
                            let i = ring.index_for(&service(rattrs)).unwrap_or(0);
                            push_metrics(&mut out[i], rm);
                        }
                    }
                }
            }
            Payload::Encoded(_) => {}
        }
        out.into_iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (i, p)))
            .collect()
    }
}

/// Splits an encoded traces request by trace id without decoding the spans: each span's bytes
/// are copied, as they came, under copies of its resource's and scope's other fields. Returns
/// per backend index the request and its span count.
/// Per backend index: its encoded request and span count, if it gets any.
type WireParts = Vec<Option<(Vec<u8>, usize)>>;

fn split_traces_on_the_wire(
    body: &[u8],
    ring: &Ring,
) -> Result<WireParts, crate::pdata::wire::WireError> {
    use crate::pdata::wire::{for_each_field, put_len_header};
    const LEN: u8 = 2;
    let n = ring.endpoints.len();
    let mut out: WireParts = (0..n).map(|_| None).collect();
    for_each_field(body, |number, wt, rs, _| {
        if number != 1 || wt != LEN {
            return Ok(()); // not resource_spans
        }
        let mut head: Vec<u8> = Vec::new();
        let mut scopes: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut counts = vec![0usize; n];
        for_each_field(rs, |number, wt, ss, whole| {
            if number != 2 || wt != LEN {
                head.extend_from_slice(whole);
                return Ok(());
            }
            let mut scope_head: Vec<u8> = Vec::new();
            let mut spans: Vec<Vec<u8>> = vec![Vec::new(); n];
            for_each_field(ss, |number, wt, span, whole| {
                if number != 2 || wt != LEN {
                    scope_head.extend_from_slice(whole);
                    return Ok(());
                }
                let mut trace: &[u8] = &[];
                for_each_field(span, |number, wt, data, _| {
                    if number == 1 && wt == LEN {
                        trace = data;
                    }
                    Ok(())
                })?;
                let i = ring.index_for(trace).unwrap_or(0);
                spans[i].extend_from_slice(whole);
                counts[i] += 1;
                Ok(())
            })?;
            for (i, s) in spans.iter().enumerate() {
                if s.is_empty() {
                    continue;
                }
                put_len_header(&mut scopes[i], 2, scope_head.len() + s.len());
                scopes[i].extend_from_slice(&scope_head);
                scopes[i].extend_from_slice(s);
            }
            Ok(())
        })?;
        for (i, sc) in scopes.iter().enumerate() {
            if sc.is_empty() {
                continue;
            }
            let slot = out[i].get_or_insert_with(|| (Vec::new(), 0));
            put_len_header(&mut slot.0, 1, head.len() + sc.len());
            slot.0.extend_from_slice(&head);
            slot.0.extend_from_slice(sc);
            slot.1 += counts[i];
        }
        Ok(())
    })?;
    Ok(out)
}

impl LoadBalancer {
    /// The routing key of a span or record under `routing_key: attributes`: the values of
    /// `routing_attributes` (its own, else its resource's); none found: its trace id.
    fn attributes_key(&self, own: &[KeyValue], resource: &[KeyValue], trace_id: &[u8]) -> Vec<u8> {
        let mut k = Vec::new();
        let mut found = false;
        for name in &self.cfg.routing_attributes {
            let v = own
                .iter()
                .chain(resource)
                .find(|kv| kv.key == *name)
                .and_then(|kv| kv.value.as_ref());
            if let Some(v) = v {
                found = true;
                k.extend_from_slice(format!("{v:?}").as_bytes());
            }
            k.push(0);
        }
        if found {
            k
        } else {
            trace_id.to_vec()
        }
    }
}

/// A metric's data points grouped by backend (`idx` of each point's attributes), each group a
/// copy of the metric holding only its points.
fn split_metric(
    m: opentelemetry_proto::tonic::metrics::v1::Metric,
    mut idx: impl FnMut(&[KeyValue]) -> usize,
) -> Vec<(usize, opentelemetry_proto::tonic::metrics::v1::Metric)> {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let mut out: BTreeMap<usize, opentelemetry_proto::tonic::metrics::v1::Metric> = BTreeMap::new();
    let shell = opentelemetry_proto::tonic::metrics::v1::Metric {
        data: None,
        ..m.clone()
    };
    macro_rules! by_point {
        ($d:expr, $variant:ident) => {{
            let mut d = $d;
            let points = std::mem::take(&mut d.data_points);
            for p in points {
                let i = idx(&p.attributes);
                let e = out.entry(i).or_insert_with(|| {
                    let mut empty = d.clone();
                    empty.data_points.clear();
                    opentelemetry_proto::tonic::metrics::v1::Metric {
                        data: Some(Data::$variant(empty)),
                        ..shell.clone()
                    }
                });
                if let Some(Data::$variant(x)) = &mut e.data {
                    x.data_points.push(p);
                }
            }
        }};
    }
    match m.data {
        Some(Data::Gauge(d)) => by_point!(d, Gauge),
        Some(Data::Sum(d)) => by_point!(d, Sum),
        Some(Data::Histogram(d)) => by_point!(d, Histogram),
        Some(Data::ExponentialHistogram(d)) => by_point!(d, ExponentialHistogram),
        Some(Data::Summary(d)) => by_point!(d, Summary),
        None => {
            out.insert(idx(&[]), shell);
        }
    }
    out.into_iter().collect()
}

fn push_traces(slot: &mut Option<Payload>, rs: ResourceSpans) {
    match slot {
        Some(Payload::Traces(r)) => r.resource_spans.push(rs),
        _ => {
            *slot = Some(Payload::Traces(ExportTraceServiceRequest {
                resource_spans: vec![rs],
            }))
        }
    }
}

fn push_logs(slot: &mut Option<Payload>, rl: ResourceLogs) {
    match slot {
        Some(Payload::Logs(r)) => r.resource_logs.push(rl),
        _ => {
            *slot = Some(Payload::Logs(ExportLogsServiceRequest {
                resource_logs: vec![rl],
            }))
        }
    }
}

fn push_metrics(slot: &mut Option<Payload>, rm: ResourceMetrics) {
    match slot {
        Some(Payload::Metrics(r)) => r.resource_metrics.push(rm),
        _ => {
            *slot = Some(Payload::Metrics(ExportMetricsServiceRequest {
                resource_metrics: vec![rm],
            }))
        }
    }
}

impl LoadBalancer {
    /// Splits `batch` by key over the backends in force (without `exclude`, failing over)
    /// and hands each part to its backend's queue.
    async fn route(&self, batch: &Batch, exclude: Option<&str>) -> Result<Sent, ExportError> {
        let members = self
            .members
            .read()
            .map_err(|_| ExportError::retryable("load balancer state poisoned"))?
            .clone();
        let (ring, backends): (Ring, Vec<Arc<Backend>>) = match exclude {
            None => (members.ring.clone(), members.backends.clone()),
            Some(x) => {
                let keep: Vec<usize> = (0..members.ring.endpoints.len())
                    .filter(|i| members.ring.endpoints[*i] != x)
                    .collect();
                (
                    Ring::new(
                        keep.iter()
                            .map(|i| members.ring.endpoints[*i].clone())
                            .collect(),
                    ),
                    keep.iter().map(|i| members.backends[*i].clone()).collect(),
                )
            }
        };
        if ring.is_empty() {
            return Err(ExportError::retryable("no backends resolved yet; retrying"));
        }
        // Traces by trace id, still encoded: split on the wire (no decode).
        if let (Payload::Encoded(body), Key::TraceId, crate::pdata::Signal::Traces) =
            (&batch.payload, self.key, batch.signal)
        {
            if let Ok(parts) = split_traces_on_the_wire(body, &ring) {
                let parts: Vec<(usize, Batch)> = parts
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        let (bytes, items) = p?;
                        let mut part = Batch::encoded(
                            batch.signal,
                            bytes::Bytes::from(bytes),
                            items,
                            batch.context.clone(),
                        );
                        part.held = batch.held.clone();
                        Some((i, part))
                    })
                    .collect();
                return Self::hand_over(&backends, parts).await;
            }
            // A body the walk refuses is decoded below (and refused there if it must be).
        }
        let mut b = batch.clone();
        if let Err(e) = b.decode() {
            return Err(ExportError::permanent(format!(
                "cannot decode the batch: {e}"
            )));
        }
        let held = b.held.clone();
        let parts: Vec<(usize, Batch)> = self
            .split(b.payload, &ring)
            .into_iter()
            .map(|(i, payload)| {
                let mut part = Batch {
                    signal: batch.signal,
                    items: 0,
                    payload,
                    context: batch.context.clone(),
                    held: held.clone(),
                    compressed: None,
                };
                part.recount();
                (i, part)
            })
            .collect();
        Self::hand_over(&backends, parts).await
    }

    /// Queues every part to its backend, all or nothing: room is reserved in every target
    /// queue first (waiting for it: backpressure), then the parts are queued at once. Given
    /// up half-way (the exporter's timeout), nothing was queued, so its retry sends nothing
    /// twice.
    async fn hand_over(
        backends: &[Arc<Backend>],
        parts: Vec<(usize, Batch)>,
    ) -> Result<Sent, ExportError> {
        let mut reserved = Vec::with_capacity(parts.len());
        for (i, part) in &parts {
            // None: the backend's queue refused it for good (counted and logged there).
            reserved.push(backends[*i].handle.reserve(part).await);
        }
        for ((i, part), r) in parts.into_iter().zip(reserved) {
            if let Some(r) = r {
                backends[i].handle.commit(r, part);
            }
        }
        Ok(Sent::default())
    }
}

impl Sender for LoadBalancer {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(self.route(batch, None))
    }

    fn close(&self, deadline: tokio::time::Instant) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            // Replaced by a reload: what the backends still hold goes to the successor's
            // backends (the keys' owners now), not to backends that may be gone.
            let successor = live(&self.id).filter(|l| !std::ptr::eq(Arc::as_ptr(l), self));
            if successor.is_some() {
                if let Ok(m) = self.members.read() {
                    for b in &m.backends {
                        b.removed.store(true, std::sync::atomic::Ordering::Release);
                    }
                }
            }
            // Backends that already left deliver first (what they re-route goes to the
            // backends still in force), then the rest let go of their queues and deliver.
            let tasks: Vec<(Arc<std::sync::atomic::AtomicBool>, ExporterTask)> = self
                .tasks
                .lock()
                .map(|mut t| std::mem::take(&mut *t))
                .unwrap_or_default();
            let (gone, staying): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|(removed, _)| {
                successor.is_none() && removed.load(std::sync::atomic::Ordering::Acquire)
            });
            for (_, t) in gone {
                t.drain(deadline).await;
            }
            if let Ok(mut m) = self.members.write() {
                *m = Arc::new(Members {
                    ring: Ring::default(),
                    backends: Vec::new(),
                });
            }
            for (_, t) in staying {
                t.drain(deadline).await;
            }
        })
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    fn request() -> ExportTraceServiceRequest {
        let res = |svc: &str| Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(svc.into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let spans = |base: u8| -> Vec<Span> {
            (0..40u8)
                .map(|i| Span {
                    trace_id: vec![base.wrapping_add(i / 4); 16],
                    span_id: vec![i; 8],
                    name: format!("s{i}"),
                    ..Default::default()
                })
                .collect()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(res("a")),
                    scope_spans: vec![ScopeSpans {
                        spans: spans(0),
                        schema_url: "s1".into(),
                        ..Default::default()
                    }],
                    schema_url: "r1".into(),
                },
                ResourceSpans {
                    resource: Some(res("b")),
                    scope_spans: vec![ScopeSpans {
                        spans: spans(100),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                },
            ],
        }
    }

    fn lb(key: &str, attrs: &[&str]) -> LoadBalancer {
        let cfg = LoadBalancingConfig {
            routing_key: key.into(),
            routing_attributes: attrs.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        LoadBalancer {
            id: Arc::from("lb"),
            key: cfg.key(),
            cfg,
            registry: Registry::new(),
            members: RwLock::new(Arc::new(Members {
                ring: Ring::default(),
                backends: Vec::new(),
            })),
            tasks: std::sync::Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
            resolutions: Registry::new().counter("x", "x", &[]),
            failovers: Registry::new().counter("x", "x", &[]),
            rerouted: Registry::new().counter("x", "x", &[]),
            rr: std::sync::atomic::AtomicUsize::new(0),
            me: std::sync::OnceLock::new(),
        }
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn stream_id_sends_each_series_to_one_backend() {
        use opentelemetry_proto::tonic::metrics::v1::{metric, Gauge, Metric, NumberDataPoint};
        let ring = Ring::new((1..=3).map(|i| format!("10.0.0.{i}:4317")).collect());
        let points = |n: usize| -> Vec<NumberDataPoint> {
            (0..n)
                .map(|i| NumberDataPoint {
                    attributes: vec![kv("series", &format!("s{i}"))],
                    ..Default::default()
                })
                .collect()
        };
        let req = |n| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "cpu".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: points(n),
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let lb = lb("streamID", &[]);
        let owner = |req: ExportMetricsServiceRequest| -> BTreeMap<String, usize> {
            let mut m = BTreeMap::new();
            for (i, p) in lb.split(Payload::Metrics(req), &ring) {
                let Payload::Metrics(r) = p else { panic!() };
                let metric = &r.resource_metrics[0].scope_metrics[0].metrics[0];
                assert_eq!((metric.name.as_str(), metric.unit.as_str()), ("cpu", "1"));
                let Some(metric::Data::Gauge(g)) = &metric.data else {
                    panic!()
                };
                for p in &g.data_points {
                    let s = format!("{:?}", p.attributes[0].value);
                    assert!(m.insert(s, i).is_none(), "a series in one part only");
                }
            }
            m
        };
        let all = owner(req(300));
        assert_eq!(all.len(), 300, "no point lost");
        assert_eq!(
            all.values()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            3,
            "spread over the backends"
        );
        // The same series goes to the same backend in another request.
        let again = owner(req(50));
        for (s, i) in again {
            assert_eq!(all[&s], i, "{s}");
        }
    }

    #[test]
    fn attributes_route_by_their_values_else_by_trace_id() {
        let ring = Ring::new((1..=4).map(|i| format!("10.0.0.{i}:4317")).collect());
        let lb = lb("attributes", &["tenant.id"]);
        let span = |t: u8, tenant: Option<&str>| Span {
            trace_id: vec![t; 16],
            attributes: tenant.map(|x| vec![kv("tenant.id", x)]).unwrap_or_default(),
            ..Default::default()
        };
        let spans: Vec<Span> = (0..60u8)
            .map(|t| {
                span(
                    t,
                    if t % 3 == 0 {
                        None
                    } else {
                        Some(["a", "b"][(t % 2) as usize])
                    },
                )
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut tenant_owner: BTreeMap<String, usize> = BTreeMap::new();
        let mut n = 0;
        for (i, p) in lb.split(Payload::Traces(req), &ring) {
            let Payload::Traces(r) = p else { panic!() };
            for s in &r.resource_spans[0].scope_spans[0].spans {
                n += 1;
                match s.attributes.first() {
                    Some(a) => {
                        let t = format!("{:?}", a.value);
                        assert_eq!(
                            *tenant_owner.entry(t).or_insert(i),
                            i,
                            "one tenant, one backend"
                        );
                    }
                    None => assert_eq!(ring.index_for(&s.trace_id), Some(i), "by trace id"),
                }
            }
        }
        assert_eq!(n, 60);
        assert_eq!(tenant_owner.len(), 2);
        // Keys that need routing_attributes, and the reverse, are config errors.
        let bad = LoadBalancingConfig {
            routing_key: "attributes".into(),
            resolver: ResolverConfig {
                static_: Some(StaticResolver {
                    hostnames: vec!["a".into()],
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(format!("{:?}", bad.validate()).contains("needs routing_attributes"));
    }

    #[test]
    fn the_backends_storage_is_the_load_balancers_and_checked() {
        let base = |yaml: &str| -> LoadBalancingConfig {
            serde_yaml::from_str(&format!("resolver: {{static: {{hostnames: [a]}}}}\n{yaml}"))
                .unwrap()
        };
        let both = base(
            "protocol: {otlp: {sending_queue: {storage: file_storage/a}}}\nsending_queue: {storage: file_storage/b}",
        );
        assert!(format!("{:?}", both.validate()).contains("differs from sending_queue.storage"));
        let off = base(
            "protocol: {otlp: {sending_queue: {storage: file_storage/a}}}\nsending_queue: {enabled: false}",
        );
        assert!(format!("{:?}", off.validate())
            .contains("needs the load balancer's own sending_queue enabled"));
        let ok = base("protocol: {otlp: {sending_queue: {storage: file_storage/a}}}");
        assert!(ok.validate().is_empty(), "{:?}", ok.validate());
    }

    #[test]
    fn the_wire_split_and_the_decoded_split_agree() {
        let ring = Ring::new((1..=3).map(|i| format!("10.0.0.{i}:4317")).collect());
        let req = request();
        let wire = split_traces_on_the_wire(&req.encode_to_vec(), &ring).expect("walks");
        let lb = LoadBalancer {
            id: Arc::from("lb"),
            cfg: LoadBalancingConfig::default(),
            key: Key::TraceId,
            registry: Registry::new(),
            members: RwLock::new(Arc::new(Members {
                ring: Ring::default(),
                backends: Vec::new(),
            })),
            tasks: std::sync::Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
            resolutions: Registry::new().counter("x", "x", &[]),
            failovers: Registry::new().counter("x", "x", &[]),
            rerouted: Registry::new().counter("x", "x", &[]),
            rr: std::sync::atomic::AtomicUsize::new(0),
            me: std::sync::OnceLock::new(),
        };
        let decoded = lb.split(Payload::Traces(req.clone()), &ring);
        let mut total = 0;
        for (i, p) in decoded {
            let Payload::Traces(want) = p else { panic!() };
            let (bytes, items) = wire[i].clone().expect("the same backends");
            let got = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(got, want, "backend {i}");
            assert_eq!(items, crate::pdata::count_spans(&want));
            total += items;
            // Every trace's spans are together.
            for rs in &got.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        assert_eq!(ring.index_for(&s.trace_id), Some(i));
                    }
                }
            }
        }
        assert_eq!(total, 80);
        assert!(wire.iter().filter(|w| w.is_some()).count() >= 2, "spread");
    }
}
