//! The `servicegraph` connector: traces in, the service graph out. A client span (CLIENT or
//! PRODUCER) and the server span (SERVER or CONSUMER) whose parent it is make one edge
//! between two services; each edge counts in `traces_service_graph_request_total` (and
//! `..._failed_total` when either side failed) and records both sides' durations in
//! `traces_service_graph_request_server` and `..._client` (seconds), by `client`, `server`,
//! `connection_type`, `failed` and the configured dimensions — the Collector's connector, so
//! Grafana's service map works on its metrics.
//!
//! Half an edge waits in a bounded store (`store.max_items`, `store.ttl`); when its other
//! side never comes it becomes a virtual node (`user` for a root server span, the client's
//! peer attribute or `unknown` for an uninstrumented server) or is dropped. Edges pair only
//! within one tenant: a service graph never joins two tenants' spans. It must never hold more
//! than `store.max_items` half edges.
pub mod config;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans};
use tokio::sync::watch;

use super::spanmetrics::expo::ExpoHistogram;
use crate::config::loader::Body;
use crate::pdata::{attr as find, now_unix_nanos as now_nanos};
use crate::pdata::{Batch, Payload, Signal};
use crate::pipeline::registry::{
    BoxFuture, Connector, ConnectorSettings, Decode, Factory, Handles, Stability, Targets,
};
use crate::telemetry::metrics::{Counter, Registry};
use config::ServiceGraphConfig;

pub static FACTORY: Factory = Factory {
    type_name: "servicegraph",
    aliases: &["service_graph"],
    stability: &[(
        Handles::Pair(Signal::Traces, Signal::Metrics),
        Stability::Alpha,
    )],
    description:
        "the service graph from client/server span pairs: requests, failures and latency per edge",
    decode: Decode::Connector(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ConnectorSettings>> {
    let c = b.decode_checked::<ServiceGraphConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ConnectorSettings for ServiceGraphConfig {
    fn build(&self, id: &str, registry: &Arc<Registry>) -> Arc<dyn Connector> {
        ServiceGraph::start(id, self.clone(), registry)
    }
    fn start_warnings(&self) -> Vec<String> {
        self.without_effect()
    }
}

const SCOPE: &str = "traces_service_graph";
/// Series not updated for this long are forgotten (upstream's fixed 15 minutes).
const SERIES_IDLE: Duration = Duration::from_secs(15 * 60);

/// Half or whole of an edge.
#[derive(Debug, Clone)]
struct Edge {
    client: String,
    server: String,
    connection_type: &'static str,
    failed: bool,
    client_latency: f64,
    server_latency: f64,
    dims: Vec<(String, String)>,
    /// The client span's peer attributes, for a virtual server.
    peer: Option<String>,
    /// A server span with no parent: its client is the user.
    root_server: bool,
    expires: Instant,
}

impl Edge {
    fn new(expires: Instant) -> Edge {
        Edge {
            client: String::new(),
            server: String::new(),
            connection_type: "",
            failed: false,
            client_latency: 0.0,
            server_latency: 0.0,
            dims: Vec::new(),
            peer: None,
            root_server: false,
            expires,
        }
    }
}

type EdgeKey = (Option<Arc<str>>, Vec<u8>, Vec<u8>);

enum Buckets {
    Explicit(Vec<u64>),
    Exponential(ExpoHistogram),
}

struct Hist {
    count: u64,
    sum: f64,
    buckets: Buckets,
}

struct Series {
    attrs: Vec<KeyValue>,
    total: u64,
    failed: u64,
    server: Hist,
    client: Hist,
    updated: Instant,
}

#[derive(Default)]
struct State {
    edges: HashMap<EdgeKey, Edge>,
    order: VecDeque<(EdgeKey, Instant)>,
    /// (tenant, series key) -> series.
    series: HashMap<(Option<Arc<str>>, String), Series>,
    last_sweep: Option<Instant>,
}

struct Shared {
    id: Arc<str>,
    cfg: ServiceGraphConfig,
    bounds: Vec<f64>,
    peers: Vec<String>,
    databases: Vec<String>,
    started: u64,
    state: Mutex<State>,
    targets: Mutex<Targets>,
    dropped_spans: Counter,
    total_edges: Counter,
    expired_edges: Counter,
}

/// The running connector; dropping the last reference flushes once more and ends its task.
pub struct ServiceGraph {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Drop for ServiceGraph {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

impl ServiceGraph {
    pub fn start(id: &str, cfg: ServiceGraphConfig, registry: &Registry) -> Arc<ServiceGraph> {
        let shared = Arc::new(Shared::new(id, cfg, registry));
        let (stop, mut stop_rx) = watch::channel(false);
        let task = shared.clone();
        let flush = task.cfg.flush_interval();
        let expire =
            ServiceGraphConfig::loop_or(task.cfg.store_expiration_loop, Duration::from_secs(2));
        tokio::spawn(async move {
            // Interval 0: flushed after every batch, by push.
            let mut flush_tick = tokio::time::interval(flush.max(Duration::from_millis(1)));
            flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            flush_tick.tick().await;
            let mut expire_tick = tokio::time::interval(expire);
            expire_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            expire_tick.tick().await;
            loop {
                tokio::select! {
                    _ = flush_tick.tick(), if !flush.is_zero() => task.flush_and_send().await,
                    _ = expire_tick.tick() => task.expire(Instant::now()),
                    r = stop_rx.changed() => {
                        if r.is_err() || *stop_rx.borrow() {
                            break;
                        }
                    }
                }
            }
            task.flush_and_send().await;
            task.targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        });
        Arc::new(ServiceGraph { shared, stop })
    }
}

impl Connector for ServiceGraph {
    fn push(&self, mut batch: Batch) -> BoxFuture<'_, ()> {
        if let Err(e) = batch.decode() {
            self.shared.dropped_spans.add(e.lost as u64);
            tracing::error!(connector = %self.shared.id, "dropping {} spans: {e}", e.lost);
        }
        if let Payload::Traces(req) = &batch.payload {
            self.shared.consume(
                batch.context.tenant.clone(),
                &req.resource_spans,
                Instant::now(),
            );
        }
        if self.shared.cfg.flush_interval().is_zero() {
            return Box::pin(async move { self.shared.flush_and_send().await });
        }
        Box::pin(std::future::ready(()))
    }

    fn set_targets(&self, targets: Targets) {
        *self
            .shared
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = targets;
    }
}

impl Shared {
    fn new(id: &str, cfg: ServiceGraphConfig, registry: &Registry) -> Shared {
        let labels = [("connector", id)];
        Shared {
            id: Arc::from(id),
            bounds: cfg.bounds(),
            peers: cfg.peer_attributes(),
            databases: cfg.database_attributes(),
            cfg,
            started: now_nanos(),
            state: Mutex::new(State::default()),
            targets: Mutex::new(Targets::new()),
            dropped_spans: registry.counter(
                "otelcol_connector_servicegraph_dropped_spans_total",
                "Number of spans dropped when trying to add edges",
                &labels,
            ),
            total_edges: registry.counter(
                "otelcol_connector_servicegraph_total_edges_total",
                "Total number of unique edges",
                &labels,
            ),
            expired_edges: registry.counter(
                "otelcol_connector_servicegraph_expired_edges_total",
                "Number of edges that expired before finding its matching span",
                &labels,
            ),
        }
    }

    /// A dimension's value: the resource's attribute wins over the span's, as upstream.
    fn dims(&self, side: &str, rattrs: &[KeyValue], sattrs: &[KeyValue]) -> Vec<(String, String)> {
        self.cfg
            .dimensions
            .iter()
            .filter_map(|d| {
                find(rattrs, d)
                    .or_else(|| find(sattrs, d))
                    .map(|v| (format!("{side}_{d}"), text(v)))
            })
            .collect()
    }

    fn consume(&self, tenant: Option<Arc<str>>, resource_spans: &[ResourceSpans], now: Instant) {
        let ttl = self.cfg.store.ttl.0;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for rs in resource_spans {
            let empty = Vec::new();
            let rattrs: &[KeyValue] = rs.resource.as_ref().map_or(&empty, |r| &r.attributes);
            let Some(service) = find(rattrs, "service.name").map(text) else {
                continue;
            };
            for ss in &rs.scope_spans {
                for sp in &ss.spans {
                    let latency = if sp.end_time_unix_nano > sp.start_time_unix_nano {
                        (sp.end_time_unix_nano - sp.start_time_unix_nano) as f64 / 1e9
                    } else {
                        0.0
                    };
                    let failed = sp
                        .status
                        .as_ref()
                        .is_some_and(|s| s.code == StatusCode::Error as i32);
                    let kind = SpanKind::try_from(sp.kind).unwrap_or(SpanKind::Unspecified);
                    match kind {
                        SpanKind::Client | SpanKind::Producer => {
                            let db = self.databases.iter().find_map(|a| {
                                find(rattrs, a)
                                    .or_else(|| find(&sp.attributes, a))
                                    .map(text)
                            });
                            if let Some(db) = db {
                                // A database call: complete at once, never stored.
                                let edge = Edge {
                                    client: service.clone(),
                                    server: db,
                                    connection_type: "database",
                                    failed,
                                    client_latency: latency,
                                    server_latency: latency,
                                    dims: self.dims("client", rattrs, &sp.attributes),
                                    ..Edge::new(now)
                                };
                                self.record(&mut st, &tenant, &edge, now);
                                continue;
                            }
                            let key = (tenant.clone(), sp.trace_id.clone(), sp.span_id.clone());
                            let Some(e) = self.upsert(&mut st, key, now + ttl) else {
                                continue;
                            };
                            e.client = service.clone();
                            e.client_latency = latency;
                            e.failed |= failed;
                            if kind == SpanKind::Producer {
                                e.connection_type = "messaging_system";
                            }
                            e.dims.extend(self.dims("client", rattrs, &sp.attributes));
                            e.peer = self
                                .peers
                                .iter()
                                .find_map(|p| find(&sp.attributes, p).map(text));
                        }
                        SpanKind::Server | SpanKind::Consumer => {
                            let key = (
                                tenant.clone(),
                                sp.trace_id.clone(),
                                sp.parent_span_id.clone(),
                            );
                            let Some(e) = self.upsert(&mut st, key, now + ttl) else {
                                continue;
                            };
                            e.server = service.clone();
                            e.server_latency = latency;
                            e.failed |= failed;
                            e.root_server = sp.parent_span_id.is_empty();
                            if kind == SpanKind::Consumer {
                                e.connection_type = "messaging_system";
                            }
                            e.dims.extend(self.dims("server", rattrs, &sp.attributes));
                        }
                        _ => continue,
                    }
                    // Complete edges leave the store.
                    let key = match kind {
                        SpanKind::Client | SpanKind::Producer => {
                            (tenant.clone(), sp.trace_id.clone(), sp.span_id.clone())
                        }
                        _ => (
                            tenant.clone(),
                            sp.trace_id.clone(),
                            sp.parent_span_id.clone(),
                        ),
                    };
                    let complete = st
                        .edges
                        .get(&key)
                        .is_some_and(|e| !e.client.is_empty() && !e.server.is_empty());
                    if complete {
                        if let Some(e) = st.edges.remove(&key) {
                            self.record(&mut st, &tenant, &e, now);
                        }
                    }
                }
            }
        }
    }

    /// The edge under `key`, made when new (false when the store is full: the span is dropped).
    fn upsert<'s>(
        &self,
        st: &'s mut State,
        key: EdgeKey,
        expires: Instant,
    ) -> Option<&'s mut Edge> {
        if !st.edges.contains_key(&key) {
            if st.edges.len() >= self.cfg.store.max_items {
                self.dropped_spans.inc();
                return None;
            }
            // Completed edges leave `order` only when their time comes: compact it when it
            // runs past the store's bound, so it follows max_items, not the edge rate.
            if st.order.len() >= self.cfg.store.max_items.saturating_mul(2).max(64) {
                let State { order, edges, .. } = &mut *st;
                order.retain(|(k, _)| edges.contains_key(k));
            }
            st.order.push_back((key.clone(), expires));
            st.edges.insert(key.clone(), Edge::new(expires));
        }
        st.edges.get_mut(&key)
    }

    /// Edges whose other side never came: virtual nodes when that is on, else dropped.
    fn expire(&self, now: Instant) {
        let virtual_nodes = !self.peers.is_empty();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((key, at)) = st.order.front().cloned() {
            if at > now {
                break;
            }
            st.order.pop_front();
            let Some(mut e) = st.edges.remove(&key) else {
                continue; // completed earlier
            };
            if e.expires > now {
                // Replaced under the same key later; wait for its own time.
                let at = e.expires;
                st.edges.insert(key.clone(), e);
                st.order.push_back((key, at));
                continue;
            }
            self.expired_edges.inc();
            if !virtual_nodes {
                continue;
            }
            if e.client.is_empty() && e.root_server {
                e.client = "user".into();
                e.connection_type = "virtual_node";
                self.record_virtual(&mut st, &key.0, &e, "client", now);
            } else if e.server.is_empty() && !e.client.is_empty() {
                e.server = e.peer.clone().unwrap_or_else(|| "unknown".into());
                e.connection_type = "virtual_node";
                self.record_virtual(&mut st, &key.0, &e, "server", now);
            }
        }
    }

    fn record_virtual(
        &self,
        st: &mut State,
        tenant: &Option<Arc<str>>,
        e: &Edge,
        side: &str,
        now: Instant,
    ) {
        let mut e = e.clone();
        if self.cfg.virtual_node_extra_label {
            e.dims.push(("virtual_node".into(), side.into()));
        }
        self.record(st, tenant, &e, now);
    }

    fn new_hist(&self) -> Hist {
        Hist {
            count: 0,
            sum: 0.0,
            buckets: if self.cfg.exponential_histogram_max_size > 0 {
                Buckets::Exponential(ExpoHistogram::new(
                    self.cfg.exponential_histogram_max_size as usize,
                ))
            } else {
                Buckets::Explicit(vec![0; self.bounds.len() + 1])
            },
        }
    }

    fn observe(&self, h: &mut Hist, v: f64) {
        h.count += 1;
        h.sum += v;
        match &mut h.buckets {
            Buckets::Explicit(c) => {
                let i = self.bounds.partition_point(|b| *b < v);
                if let Some(x) = c.get_mut(i) {
                    *x += 1;
                }
            }
            Buckets::Exponential(x) => x.record(v),
        }
    }

    fn record(&self, st: &mut State, tenant: &Option<Arc<str>>, e: &Edge, now: Instant) {
        self.total_edges.inc();
        let mut key = String::new();
        let _ = write!(
            key,
            "{}\u{0}{}\u{0}{}\u{0}{}",
            e.client, e.server, e.connection_type, e.failed
        );
        let mut dims = e.dims.clone();
        dims.sort();
        for (k, v) in &dims {
            let _ = write!(key, "\u{0}{k}\u{1}{v}");
        }
        let skey = (tenant.clone(), key);
        if !st.series.contains_key(&skey) {
            let mut attrs = vec![
                kv("client", any_value::Value::StringValue(e.client.clone())),
                kv("server", any_value::Value::StringValue(e.server.clone())),
                kv(
                    "connection_type",
                    any_value::Value::StringValue(e.connection_type.into()),
                ),
                kv("failed", any_value::Value::BoolValue(e.failed)),
            ];
            attrs.extend(
                dims.iter()
                    .map(|(k, v)| kv(k, any_value::Value::StringValue(v.clone()))),
            );
            st.series.insert(
                skey.clone(),
                Series {
                    attrs,
                    total: 0,
                    failed: 0,
                    server: self.new_hist(),
                    client: self.new_hist(),
                    updated: now,
                },
            );
        }
        let Some(s) = st.series.get_mut(&skey) else {
            return;
        };
        s.total += 1;
        if e.failed {
            s.failed += 1;
        }
        s.updated = now;
        self.observe(&mut s.server, e.server_latency);
        self.observe(&mut s.client, e.client_latency);
    }

    /// All series, cumulative, one request per tenant.
    fn flush(&self) -> super::TenantRequests {
        let now = now_nanos().saturating_sub(self.cfg.metrics_timestamp_offset.0.as_nanos() as u64);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let sweep = ServiceGraphConfig::loop_or(self.cfg.cache_loop, Duration::from_secs(60));
        if st.last_sweep.is_none_or(|t| t.elapsed() >= sweep) {
            st.series.retain(|_, s| s.updated.elapsed() < SERIES_IDLE);
            st.last_sweep = Some(Instant::now());
        }
        let mut tenants: Vec<Option<Arc<str>>> = st.series.keys().map(|(t, _)| t.clone()).collect();
        tenants.sort();
        tenants.dedup();
        let cumulative = 2;
        let mut out = Vec::new();
        for tenant in tenants {
            let mut total = Vec::new();
            let mut failed = Vec::new();
            let mut server = Vec::new();
            let mut client = Vec::new();
            for ((t, _), s) in st.series.iter() {
                if *t != tenant {
                    continue;
                }
                let point = |v: u64| NumberDataPoint {
                    attributes: s.attrs.clone(),
                    start_time_unix_nano: self.started,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(v as i64)),
                    ..Default::default()
                };
                total.push(point(s.total));
                if s.failed > 0 {
                    failed.push(point(s.failed));
                }
                server.push(self.hist_point(&s.attrs, &s.server, now));
                client.push(self.hist_point(&s.attrs, &s.client, now));
            }
            let points = total.len() + failed.len() + server.len() + client.len();
            let sum = |name: &str, data_points: Vec<NumberDataPoint>| Metric {
                name: name.into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                })),
                ..Default::default()
            };
            let hist = |name: &str, pts: Vec<HistPoint>| Metric {
                name: name.into(),
                unit: "s".into(),
                data: Some(self.hist_data(pts, cumulative)),
                ..Default::default()
            };
            let mut metrics = vec![sum("traces_service_graph_request_total", total)];
            if !failed.is_empty() {
                metrics.push(sum("traces_service_graph_request_failed_total", failed));
            }
            metrics.push(hist("traces_service_graph_request_server", server));
            metrics.push(hist("traces_service_graph_request_client", client));
            out.push((
                tenant,
                ExportMetricsServiceRequest {
                    resource_metrics: vec![ResourceMetrics {
                        resource: Some(Resource::default()),
                        scope_metrics: vec![ScopeMetrics {
                            scope: Some(InstrumentationScope {
                                name: SCOPE.into(),
                                ..Default::default()
                            }),
                            metrics,
                            schema_url: String::new(),
                        }],
                        schema_url: String::new(),
                    }],
                },
                points,
            ));
        }
        out
    }

    fn hist_point(&self, attrs: &[KeyValue], h: &Hist, now: u64) -> HistPoint {
        match &h.buckets {
            Buckets::Explicit(c) => HistPoint::Explicit(HistogramDataPoint {
                attributes: attrs.to_vec(),
                start_time_unix_nano: self.started,
                time_unix_nano: now,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts: c.clone(),
                explicit_bounds: self.bounds.clone(),
                ..Default::default()
            }),
            Buckets::Exponential(x) => HistPoint::Exponential(x.point(
                attrs.to_vec(),
                self.started,
                now,
                h.sum,
                Vec::new(),
            )),
        }
    }

    fn hist_data(&self, pts: Vec<HistPoint>, temporality: i32) -> metric::Data {
        if self.cfg.exponential_histogram_max_size > 0 {
            metric::Data::ExponentialHistogram(
                opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                    data_points: pts
                        .into_iter()
                        .filter_map(|p| match p {
                            HistPoint::Exponential(x) => Some(x),
                            HistPoint::Explicit(_) => None,
                        })
                        .collect(),
                    aggregation_temporality: temporality,
                },
            )
        } else {
            metric::Data::Histogram(Histogram {
                data_points: pts
                    .into_iter()
                    .filter_map(|p| match p {
                        HistPoint::Explicit(x) => Some(x),
                        HistPoint::Exponential(_) => None,
                    })
                    .collect(),
                aggregation_temporality: temporality,
            })
        }
    }

    async fn flush_and_send(&self) {
        super::emit_metrics(&self.id, &self.targets, self.flush()).await;
    }
}

enum HistPoint {
    Explicit(HistogramDataPoint),
    Exponential(opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint),
}
