//! An OTLP sink built on the generated OTLP gRPC services (opentelemetry-proto) and a plain
//! hyper HTTP server: an independent backend that counts spans, data points and log records,
//! records the headers of each request, and can be told to fail or stall.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_service::Service;

/// How the sink answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Accept,
    /// gRPC: this code; HTTP: the mapped status.
    Fail(tonic::Code),
    /// Hold every request until the mode changes.
    Stall,
    /// A slow backend: answer each request this long after it arrives.
    Delay(std::time::Duration),
}

/// One request the sink accepted.
#[derive(Clone, Debug)]
pub struct Received {
    pub signal: &'static str,
    pub items: usize,
    pub headers: BTreeMap<String, String>,
    pub transport: &'static str,
}

pub struct State {
    /// Every request seen, answered or not.
    pub attempts: AtomicUsize,
    pub spans: AtomicUsize,
    pub points: AtomicUsize,
    pub logs: AtomicUsize,
    pub requests: Mutex<Vec<Received>>,
    pub span_names: Mutex<Vec<String>>,
    pub span_attrs: Mutex<Vec<BTreeMap<String, String>>>,
    /// The name of every metric received.
    pub metric_names: Mutex<Vec<String>>,
    /// Every sum data point: (metric name, its attributes as `k=v,...` sorted, value).
    pub sum_points: Mutex<Vec<(String, String, f64)>>,
    /// (trace id, tracestate) of every span.
    pub span_trace_states: Mutex<Vec<(Vec<u8>, String)>>,
    pub resource_attrs: Mutex<Vec<BTreeMap<String, String>>>,
    /// The body of every log record, as text.
    pub log_bodies: Mutex<Vec<String>>,
    mode: watch::Sender<Mode>,
}

pub struct Sink {
    pub grpc_port: u16,
    pub http_port: u16,
    pub state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn any_to_string(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_to_string(&kv.value)))
        .collect()
}

impl State {
    pub fn set_mode(&self, m: Mode) {
        self.mode.send_replace(m);
    }
    pub fn spans(&self) -> usize {
        self.spans.load(Ordering::SeqCst)
    }
    pub fn points(&self) -> usize {
        self.points.load(Ordering::SeqCst)
    }
    pub fn logs(&self) -> usize {
        self.logs.load(Ordering::SeqCst)
    }
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Items received per value of request header `name` (lower case; "" when absent).
    pub fn items_per_header(&self, name: &str) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.requests() {
            let v = r.headers.get(name).cloned().unwrap_or_default();
            *m.entry(v).or_insert(0) += r.items;
        }
        m
    }

    /// Waits while stalled; returns the failure to answer with, if any.
    async fn gate(&self) -> Option<tonic::Code> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let mut rx = self.mode.subscribe();
        loop {
            let m = rx.borrow_and_update().clone();
            match m {
                Mode::Accept => return None,
                Mode::Fail(c) => return Some(c),
                Mode::Stall => {
                    if rx.changed().await.is_err() {
                        return Some(tonic::Code::Unavailable);
                    }
                }
                Mode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    return None;
                }
            }
        }
    }

    fn record_traces(
        &self,
        r: &ExportTraceServiceRequest,
        headers: BTreeMap<String, String>,
        transport: &'static str,
    ) {
        let mut n = 0;
        for rs in &r.resource_spans {
            if let Some(res) = &rs.resource {
                self.resource_attrs
                    .lock()
                    .unwrap()
                    .push(attrs(&res.attributes));
            }
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    n += 1;
                    self.span_names.lock().unwrap().push(s.name.clone());
                    self.span_attrs.lock().unwrap().push(attrs(&s.attributes));
                    self.span_trace_states
                        .lock()
                        .unwrap()
                        .push((s.trace_id.clone(), s.trace_state.clone()));
                }
            }
        }
        self.spans.fetch_add(n, Ordering::SeqCst);
        self.requests.lock().unwrap().push(Received {
            signal: "traces",
            items: n,
            headers,
            transport,
        });
    }

    fn record_metrics(
        &self,
        r: &ExportMetricsServiceRequest,
        headers: BTreeMap<String, String>,
        transport: &'static str,
    ) {
        let n: usize = r
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| match &m.data {
                Some(Data::Gauge(g)) => g.data_points.len(),
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Histogram(h)) => h.data_points.len(),
                Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                Some(Data::Summary(s)) => s.data_points.len(),
                None => 0,
            })
            .sum();
        self.points.fetch_add(n, Ordering::SeqCst);
        self.metric_names.lock().unwrap().extend(
            r.resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(|m| m.name.clone()),
        );
        for m in r
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
        {
            if let Some(Data::Sum(sum)) = &m.data {
                for p in &sum.data_points {
                    let a: Vec<String> = attrs(&p.attributes)
                        .into_iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let v = match p.value {
                        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i)) => i as f64,
                        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(d)) => d,
                        None => 0.0,
                    };
                    self.sum_points
                        .lock()
                        .unwrap()
                        .push((m.name.clone(), a.join(","), v));
                }
            }
        }
        self.requests.lock().unwrap().push(Received {
            signal: "metrics",
            items: n,
            headers,
            transport,
        });
    }

    fn record_logs(
        &self,
        r: &ExportLogsServiceRequest,
        headers: BTreeMap<String, String>,
        transport: &'static str,
    ) {
        let n: usize = r
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum();
        self.logs.fetch_add(n, Ordering::SeqCst);
        {
            let mut bodies = self.log_bodies.lock().unwrap();
            for lr in r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .flat_map(|sl| &sl.log_records)
            {
                bodies.push(any_to_string(&lr.body));
            }
        }
        self.requests.lock().unwrap().push(Received {
            signal: "logs",
            items: n,
            headers,
            transport,
        });
    }
}

fn md_headers(md: &tonic::metadata::MetadataMap) -> BTreeMap<String, String> {
    md.clone()
        .into_headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

#[derive(Clone)]
struct Grpc(Arc<State>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(c) = self.0.gate().await {
            return Err(tonic::Status::new(c, "sink told to fail"));
        }
        let h = md_headers(req.metadata());
        self.0.record_traces(req.get_ref(), h, "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        if let Some(c) = self.0.gate().await {
            return Err(tonic::Status::new(c, "sink told to fail"));
        }
        let h = md_headers(req.metadata());
        self.0.record_metrics(req.get_ref(), h, "grpc");
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if let Some(c) = self.0.gate().await {
            return Err(tonic::Status::new(c, "sink told to fail"));
        }
        let h = md_headers(req.metadata());
        self.0.record_logs(req.get_ref(), h, "grpc");
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn http_status(c: tonic::Code) -> StatusCode {
    match c {
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn http_handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let path = req.uri().path().to_string();
    let gz = headers.get("content-encoding").map(String::as_str) == Some("gzip");
    let json = headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("application/json"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(code) = state.gate().await {
        let mut r = Response::new(Full::new(Bytes::from_static(b"sink told to fail")));
        *r.status_mut() = http_status(code);
        return Ok(r);
    }
    let body = if gz {
        use std::io::Read;
        let mut out = Vec::new();
        let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out);
        Bytes::from(out)
    } else {
        body
    };
    let bad = |m: String| {
        let mut r = Response::new(Full::new(Bytes::from(m)));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        Ok(r)
    };
    match path.as_str() {
        "/v1/traces" => {
            let r: Result<ExportTraceServiceRequest, String> = if json {
                serde_json::from_slice(&body).map_err(|e| e.to_string())
            } else {
                ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
            };
            match r {
                Ok(r) => state.record_traces(&r, headers, "http"),
                Err(e) => return bad(e),
            }
        }
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(r) => state.record_metrics(&r, headers, "http"),
            Err(e) => return bad(e.to_string()),
        },
        "/v1/logs" => match ExportLogsServiceRequest::decode(body) {
            Ok(r) => state.record_logs(&r, headers, "http"),
            Err(e) => return bad(e.to_string()),
        },
        _ => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return Ok(r);
        }
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(r)
}

impl Sink {
    /// Starts gRPC and HTTP listeners on free loopback ports.
    pub async fn start() -> Sink {
        let (mode, _) = watch::channel(Mode::Accept);
        let state = Arc::new(State {
            attempts: AtomicUsize::new(0),
            spans: AtomicUsize::new(0),
            points: AtomicUsize::new(0),
            logs: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            span_names: Mutex::new(Vec::new()),
            span_attrs: Mutex::new(Vec::new()),
            span_trace_states: Mutex::new(Vec::new()),
            metric_names: Mutex::new(Vec::new()),
            sum_points: Mutex::new(Vec::new()),
            resource_attrs: Mutex::new(Vec::new()),
            log_bodies: Mutex::new(Vec::new()),
            mode,
        });
        let grpc_l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink grpc");
        let http_l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink http");
        let grpc_port = grpc_l.local_addr().unwrap().port();
        let http_port = http_l.local_addr().unwrap().port();
        let g = Grpc(state.clone());
        let traces = TraceServiceServer::new(g.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let metrics = MetricsServiceServer::new(g.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let logs =
            LogsServiceServer::new(g).accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let grpc_task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = grpc_l.accept().await else {
                    continue;
                };
                let (t, m, l) = (traces.clone(), metrics.clone(), logs.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let p = req.uri().path().to_string();
                    if p.contains("trace.v1") {
                        t.clone().call(req)
                    } else if p.contains("metrics.v1") {
                        m.clone().call(req)
                    } else {
                        l.clone().call(req)
                    }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let st = state.clone();
        let http_task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = http_l.accept().await else {
                    continue;
                };
                let st = st.clone();
                let svc = hyper::service::service_fn(move |req| http_handle(st.clone(), req));
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Sink {
            grpc_port,
            http_port,
            state,
            tasks: vec![grpc_task, http_task],
        }
    }
}
