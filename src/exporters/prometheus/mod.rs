//! The `prometheus` exporter: serves the metrics it is given on `endpoint` at `/metrics` for
//! Prometheus to scrape, in the text format or (with `enable_open_metrics`, when the scraper
//! asks) OpenMetrics with exemplars. Names, labels, `target_info` and suffixes follow the same
//! translation as `prometheusremotewrite` (the OpenTelemetry compatibility spec). Delta sums
//! and histograms are accumulated into cumulative ones, as upstream does.
//!
//! Each series keeps its latest sample until `metric_expiration` passes without an update;
//! a reload that keeps the endpoint hands the port to the new settings without closing it.
//! It must never serve a series past its expiration nor hold more than what the last updates
//! wrote.
pub mod config;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric, AggregationTemporality};
use tokio::sync::watch;

use crate::config::loader::Body;
use crate::exporters::helper::{BoxFuture, ExportError, Sender, Sent};
use crate::exporters::prometheusremotewrite::proto::{
    Exemplar, Label, TYPE_COUNTER, TYPE_GAUGE, TYPE_HISTOGRAM, TYPE_SUMMARY,
};
use crate::exporters::prometheusremotewrite::translate::{translate, Settings};
use crate::pdata::{Batch, Signal};
use crate::pipeline::registry::{
    AuthSlot, Decode, ExporterParts, ExporterSettings, Factory, Handles, Stability,
};
use crate::telemetry::metrics::{Counter, Registry};
use config::PrometheusExporterConfig;

pub static FACTORY: Factory = Factory {
    type_name: "prometheus",
    aliases: &[],
    stability: &[(Handles::Signal(Signal::Metrics), Stability::Beta)],
    description: "serves metrics on an endpoint for Prometheus to scrape (text or OpenMetrics with exemplars)",
    decode: Decode::Exporter(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExporterSettings>> {
    let c = b.decode_checked::<PrometheusExporterConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ExporterSettings for PrometheusExporterConfig {
    fn build(&self, id: &str, registry: &Arc<Registry>) -> Result<ExporterParts, String> {
        Ok(ExporterParts {
            sender: PromSender::start(id, self, registry)?,
            // A send is a store update: it does not fail but for data it cannot read.
            queue: Default::default(),
            retry: Default::default(),
            timeout: std::time::Duration::from_secs(5),
        })
    }
    fn endpoints(&self) -> Vec<(String, String)> {
        vec![("endpoint".into(), self.endpoint.clone())]
    }
    fn auth_slot(&mut self) -> Option<AuthSlot<'_>> {
        None
    }
}

/// One served series: its latest sample.
struct Entry {
    name: String,
    /// Without `__name__`, sorted.
    labels: Vec<Label>,
    value: f64,
    timestamp: i64,
    exemplar: Option<Exemplar>,
    updated: Instant,
}

/// A metric family as the translation declared it: (type, help).
type Families = HashMap<String, (i32, String)>;

pub struct Store {
    cfg: PrometheusExporterConfig,
    settings: Settings,
    series: Mutex<HashMap<String, Entry>>,
    families: Mutex<Families>,
    last_sweep: Mutex<Instant>,
    /// Delta points added up into cumulative ones (the deltatocumulative processor's).
    accumulated: Mutex<crate::processors::deltatocumulative::Accumulator>,
    dropped: Counter,
}

/// The server on one endpoint and the store it currently serves (a reload swaps the store).
struct Server {
    current: RwLock<Arc<Store>>,
    stop: watch::Sender<bool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Live servers by endpoint and TLS settings, so a reload that keeps them keeps the port.
static SERVERS: Mutex<Vec<(String, Weak<Server>)>> = Mutex::new(Vec::new());

pub struct PromSender {
    /// Keeps the server up while this exporter runs.
    _server: Arc<Server>,
    store: Arc<Store>,
}

impl PromSender {
    pub fn start(
        id: &str,
        cfg: &PrometheusExporterConfig,
        registry: &Registry,
    ) -> Result<Arc<dyn Sender>, String> {
        let store = Arc::new(Store::new(id, cfg, registry));
        let key = format!("{} {:?}", cfg.endpoint, cfg.tls);
        let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
        servers.retain(|(_, w)| w.strong_count() > 0);
        if let Some(server) = servers
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            *server.current.write().unwrap_or_else(|e| e.into_inner()) = store.clone();
            return Ok(Arc::new(PromSender {
                _server: server,
                store,
            }));
        }
        let server = Self::serve(id, cfg, store.clone(), registry)?;
        servers.push((key, Arc::downgrade(&server)));
        Ok(Arc::new(PromSender {
            _server: server,
            store,
        }))
    }

    fn serve(
        id: &str,
        cfg: &PrometheusExporterConfig,
        store: Arc<Store>,
        registry: &Registry,
    ) -> Result<Arc<Server>, String> {
        let endpoint = if cfg.endpoint.starts_with(':') {
            format!("0.0.0.0{}", cfg.endpoint)
        } else {
            cfg.endpoint.clone()
        };
        let std_listener = std::net::TcpListener::bind(endpoint.as_str())
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.endpoint))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.endpoint))?;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.endpoint))?;
        let tls = match &cfg.tls {
            Some(t) => Some(crate::tls::ServerTls::new(
                t,
                &[b"http/1.1"],
                registry.counter(
                    "weir_tls_handshake_failures_total",
                    "TLS handshakes that failed.",
                    &[("server", id)],
                ),
            )?),
            None => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let server = Arc::new(Server {
            current: RwLock::new(store),
            stop,
        });
        crate::net::serve_with(
            listener,
            ScrapeService {
                server: Arc::downgrade(&server),
            },
            crate::net::Protocol::Auto,
            crate::net::ConnTimeouts::default(),
            tls,
            stop_rx,
            std::time::Duration::from_secs(1),
        );
        Ok(server)
    }
}

impl Sender for PromSender {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            if batch.signal != Signal::Metrics {
                return Err(ExportError::permanent(format!(
                    "prometheus exports metrics, not {}",
                    batch.signal
                )));
            }
            let req = batch
                .metrics_request()
                .map_err(|e| ExportError::permanent(format!("cannot decode metrics: {e}")))?;
            self.store.update_for(&req, batch.context.tenant.as_deref());
            Ok(Sent::default())
        })
    }
}

impl Store {
    fn new(id: &str, cfg: &PrometheusExporterConfig, registry: &Registry) -> Store {
        let mut external: Vec<Label> = cfg
            .const_labels
            .iter()
            .map(|(k, v)| Label {
                name: k.clone(),
                value: v.clone(),
            })
            .collect();
        external.sort();
        Store {
            settings: Settings {
                namespace: cfg.namespace.clone(),
                external_labels: external,
                resource_to_telemetry: cfg.resource_to_telemetry_conversion.enabled,
                target_info: true,
                add_suffixes: cfg.add_metric_suffixes,
                send_metadata: true,
            },
            cfg: cfg.clone(),
            series: Mutex::new(HashMap::new()),
            families: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
            accumulated: Mutex::new(crate::processors::deltatocumulative::Accumulator::new(
                cfg.metric_expiration.0,
                u64::MAX,
            )),
            dropped: registry.counter(
                "weir_prometheus_dropped_points_total",
                "Data points the prometheus exporter could not represent (exponential histograms) and dropped.",
                &[("exporter", id)],
            ),
        }
    }

    /// Delta sums and histograms added up into cumulative points (a copy of the request
    /// when there are any).
    fn cumulative(
        &self,
        req: &ExportMetricsServiceRequest,
        tenant: Option<&str>,
    ) -> Option<ExportMetricsServiceRequest> {
        let delta = AggregationTemporality::Delta as i32;
        let any = req
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .any(|m| match &m.data {
                Some(metric::Data::Sum(s)) => s.aggregation_temporality == delta,
                Some(metric::Data::Histogram(h)) => h.aggregation_temporality == delta,
                _ => false,
            });
        if !any {
            return None;
        }
        let mut req = req.clone();
        self.accumulated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(&mut req, tenant, Instant::now());
        Some(req)
    }

    pub fn update(&self, req: &ExportMetricsServiceRequest) {
        self.update_for(req, None)
    }

    /// As [`Store::update`], for `tenant`'s data (its delta streams add up on their own).
    pub fn update_for(&self, req: &ExportMetricsServiceRequest, tenant: Option<&str>) {
        let owned = self.cumulative(req, tenant);
        let req = owned.as_ref().unwrap_or(req);
        let t = translate(req, &self.settings);
        let now = Instant::now();
        {
            let mut fam = self.families.lock().unwrap_or_else(|e| e.into_inner());
            for m in t.metadata {
                fam.insert(m.metric_family_name, (m.r#type, m.help));
            }
        }
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        // Expired series go at scrapes, and here too (at most every 10 s), so a page nobody
        // scrapes does not grow without end.
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= std::time::Duration::from_secs(10) {
                let expiration = self.cfg.metric_expiration.0;
                series.retain(|_, e| e.updated.elapsed() < expiration);
                *last = Instant::now();
            }
        }
        for ts in t.series {
            if !ts.histograms.is_empty() {
                // Native (exponential) histograms have no text form.
                self.dropped.add(ts.histograms.len() as u64);
                continue;
            }
            let Some(sample) = ts.samples.iter().max_by_key(|s| s.timestamp) else {
                continue;
            };
            let mut name = String::new();
            let mut labels = Vec::with_capacity(ts.labels.len());
            for l in ts.labels {
                if l.name == "__name__" {
                    name = l.value;
                } else {
                    labels.push(l);
                }
            }
            let mut key = name.clone();
            for l in &labels {
                let _ = write!(key, "\u{0}{}\u{1}{}", l.name, l.value);
            }
            let exemplar = ts.exemplars.last().cloned();
            match series.get_mut(&key) {
                Some(e) if e.timestamp > sample.timestamp => {}
                Some(e) => {
                    e.value = sample.value;
                    e.timestamp = sample.timestamp;
                    if exemplar.is_some() {
                        e.exemplar = exemplar;
                    }
                    e.updated = now;
                }
                None => {
                    series.insert(
                        key,
                        Entry {
                            name,
                            labels,
                            value: sample.value,
                            timestamp: sample.timestamp,
                            exemplar,
                            updated: now,
                        },
                    );
                }
            }
        }
    }

    /// The exposition: text format 0.0.4, or OpenMetrics 1.0 with exemplars.
    pub fn render(&self, open_metrics: bool) -> String {
        let expiration = self.cfg.metric_expiration.0;
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.retain(|_, e| e.updated.elapsed() < expiration);
        let families = self
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Group by family, in name order.
        let mut by_family: std::collections::BTreeMap<String, Vec<&Entry>> = Default::default();
        for e in series.values() {
            by_family
                .entry(family_of(&e.name, &families))
                .or_default()
                .push(e);
        }
        let mut out = String::new();
        for (family, mut entries) in by_family {
            entries.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
            let (typ, help) = families.get(&family).cloned().unwrap_or((0, String::new()));
            let type_name = match typ {
                TYPE_COUNTER => "counter",
                TYPE_GAUGE => "gauge",
                TYPE_HISTOGRAM => "histogram",
                TYPE_SUMMARY => "summary",
                _ => {
                    if open_metrics {
                        "unknown"
                    } else {
                        "untyped"
                    }
                }
            };
            // OpenMetrics names a counter's family without `_total`.
            let shown = match (open_metrics, typ) {
                (true, TYPE_COUNTER) => family.strip_suffix("_total").unwrap_or(&family),
                _ => family.as_str(),
            };
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {shown} {}", escape_help(&help));
            }
            let _ = writeln!(out, "# TYPE {shown} {type_name}");
            for e in entries {
                out.push_str(&e.name);
                if !e.labels.is_empty() {
                    out.push('{');
                    for (i, l) in e.labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{}=\"{}\"", l.name, escape_value(&l.value));
                    }
                    out.push('}');
                }
                let _ = write!(out, " {}", number(e.value));
                if self.cfg.send_timestamps {
                    if open_metrics {
                        let _ = write!(out, " {}", e.timestamp as f64 / 1000.0);
                    } else {
                        let _ = write!(out, " {}", e.timestamp);
                    }
                }
                if open_metrics && (e.name.ends_with("_bucket") || e.name.ends_with("_total")) {
                    if let Some(x) = &e.exemplar {
                        out.push_str(" # {");
                        for (i, l) in x.labels.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            let _ = write!(out, "{}=\"{}\"", l.name, escape_value(&l.value));
                        }
                        let _ = write!(out, "}} {}", number(x.value));
                        if x.timestamp > 0 {
                            let _ = write!(out, " {}", x.timestamp as f64 / 1000.0);
                        }
                    }
                }
                out.push('\n');
            }
        }
        if open_metrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// The family a series belongs to: its own name, or the histogram or summary it is a part of.
fn family_of(name: &str, families: &Families) -> String {
    if families.contains_key(name) {
        return name.to_string();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families
                .get(base)
                .is_some_and(|(t, _)| *t == TYPE_HISTOGRAM || *t == TYPE_SUMMARY)
            {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Answers scrapes from the store the server currently serves.
#[derive(Clone)]
struct ScrapeService {
    server: Weak<Server>,
}

impl hyper::service::Service<Request<Incoming>> for ScrapeService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let store = self
            .server
            .upgrade()
            .map(|s| s.current.read().unwrap_or_else(|e| e.into_inner()).clone());
        let (status, body, ct) = match store {
            Some(store) if req.uri().path() == "/metrics" => {
                let open = store.cfg.enable_open_metrics
                    && req
                        .headers()
                        .get_all(header::ACCEPT)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .any(|v| v.contains("application/openmetrics-text"));
                let ct = if open {
                    "application/openmetrics-text; version=1.0.0; charset=utf-8"
                } else {
                    "text/plain; version=0.0.4; charset=utf-8"
                };
                (StatusCode::OK, Bytes::from(store.render(open)), ct)
            }
            _ => (
                StatusCode::NOT_FOUND,
                Bytes::from_static(b"404 page not found\n"),
                "text/plain; charset=utf-8",
            ),
        };
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        std::future::ready(Ok(r))
    }
}
