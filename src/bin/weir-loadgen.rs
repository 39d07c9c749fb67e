//! `weir-loadgen`: an OTLP load generator and counting sink, for measuring weir end to end.
//!
//! ```text
//! weir-loadgen send --endpoint 127.0.0.1:4317 [--protocol grpc|http] [--signal traces|metrics|logs]
//!                   [--batch 512] [--conns 4] [--duration 10s] [--rate 0] [--gzip | --zstd]
//!                   [--json] [--shape small|large] [--header K=V]... [--tls-ca FILE]
//! weir-loadgen sink --listen 127.0.0.1:5317 [--idle 2s] [--duration 0] [--delay 0]
//!                   [--tls-cert FILE --tls-key FILE]
//! ```
//!
//! `send` pre-encodes one request and patches fresh trace and span ids into a copy for every
//! request (so the generator is never the bottleneck), then reports one JSON line: items/s,
//! requests failed by status, p50/p99 latency, bytes per item. Compressed and JSON bodies are
//! prepared before the run (32 variants a connection, cycled), so the generator's core spends
//! its time sending, not compressing. `sink` accepts OTLP over gRPC
//! and HTTP, Prometheus remote write and Loki pushes on one port, counts items with a wire
//! walk (no decoding), and prints one JSON line when it stops (SIGTERM/SIGINT, `--idle` after
//! the last request, or `--duration`). `--delay` makes it a slow backend: each request is
//! answered (and counted) that long after it arrived.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tonic::codec::CompressionEncoding;
use weir::config::units::parse_duration;
use weir::grpc::BytesCodec;
use weir::pdata::{wire, Signal};

const USAGE: &str = "\
weir-loadgen: OTLP load generator and counting sink

  weir-loadgen send --endpoint HOST:PORT [--protocol grpc|http] [--signal traces|metrics|logs]
                    [--batch 512] [--conns 4] [--duration 10s] [--rate 0] [--gzip | --zstd]
                    [--json (with --protocol http)] [--shape small|large] [--header K=V]...
  weir-loadgen sink --listen HOST:PORT [--idle 2s] [--duration 0] [--delay 0]
                    [--tls-cert FILE --tls-key FILE]
  (send over TLS: --tls-ca FILE, gRPC only)";

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The request template and where its ids sit.
struct Template {
    bytes: Vec<u8>,
    /// (offset, len) of every trace_id (16) and span_id (8) field payload.
    ids: Vec<(usize, usize)>,
    items: usize,
}

fn template(signal: Signal, shape: &str, batch: usize) -> Template {
    let t = now_nanos();
    let resource = Some(Resource {
        attributes: vec![kv("service.name", "loadgen"), kv("host.name", "bench-1")],
        ..Default::default()
    });
    let bytes = match signal {
        Signal::Traces => {
            let spans = (0..batch)
                .map(|i| {
                    let mut attrs = vec![kv("http.method", "GET"), kv("http.route", "/api/cart")];
                    if shape == "large" {
                        attrs = vec![
                            kv("http.request.method", "GET"),
                            kv("http.route", "/api/v1/customers/{customer_id}/orders"),
                            kv(
                                "url.full",
                                "https://shop.example.com/api/v1/customers/4711/orders?page=2",
                            ),
                            kv("url.scheme", "https"),
                            kv("server.address", "shop.example.com"),
                            kv("network.protocol.version", "1.1"),
                            kv(
                                "user_agent.original",
                                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                            ),
                            kv("client.address", "203.0.113.195"),
                            kv("http.response.status_code", "200"),
                            kv("service.version", "2024.11.3-7f9c2a1"),
                        ];
                    }
                    Span {
                        trace_id: vec![0xee; 16],
                        span_id: vec![0xdd; 8],
                        parent_span_id: if i % 8 == 0 { vec![] } else { vec![0xcc; 8] },
                        name: "GET /api/cart".into(),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: t,
                        end_time_unix_nano: t + 1_500_000,
                        attributes: attrs,
                        status: Some(Status {
                            code: 1,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                })
                .collect();
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource,
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "weir-loadgen".into(),
                            ..Default::default()
                        }),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
        Signal::Metrics => {
            let points = (0..batch)
                .map(|i| NumberDataPoint {
                    attributes: vec![
                        kv("http.method", if i % 2 == 0 { "GET" } else { "POST" }),
                        kv("http.route", &format!("/api/v1/items/{}", i % 50)),
                        kv("instance", &format!("i-{}", i / 50)),
                    ],
                    start_time_unix_nano: t - 60_000_000_000,
                    time_unix_nano: t,
                    value: Some(number_data_point::Value::AsInt(i as i64)),
                    ..Default::default()
                })
                .collect();
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource,
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![Metric {
                            name: "http.server.requests".into(),
                            unit: "{request}".into(),
                            data: Some(metric::Data::Sum(Sum {
                                data_points: points,
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
        Signal::Logs => {
            let records = (0..batch)
                .map(|i| LogRecord {
                    time_unix_nano: t + i as u64,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!(
                            "GET /api/v1/items/{i} 200 12ms user-agent=curl/8.0"
                        ))),
                    }),
                    attributes: vec![
                        kv("http.method", "GET"),
                        kv("http.route", "/api/v1/items/{id}"),
                    ],
                    ..Default::default()
                })
                .collect();
            ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource,
                    scope_logs: vec![ScopeLogs {
                        log_records: records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
    };
    let mut ids = Vec::new();
    if signal == Signal::Traces {
        let base = bytes.as_ptr() as usize;
        let _ = wire::for_each_field(&bytes, |f, _, rs, _| {
            if f != 1 {
                return Ok(());
            }
            wire::for_each_field(rs, |g, _, ss, _| {
                if g != 2 {
                    return Ok(());
                }
                wire::for_each_field(ss, |h, _, sp, _| {
                    if h != 2 {
                        return Ok(());
                    }
                    wire::for_each_field(sp, |k, _, d, _| {
                        if k == 1 || k == 2 {
                            ids.push((d.as_ptr() as usize - base, d.len()));
                        }
                        Ok(())
                    })
                })
            })
        });
    }
    Template {
        bytes,
        ids,
        items: batch,
    }
}

/// A copy of the template with fresh ids: (connection, request number, span index) spread
/// over the id bytes, so every request's traces are new.
fn fresh(t: &Template, conn: u64, n: u64) -> Bytes {
    let mut b = t.bytes.clone();
    for (i, (off, len)) in t.ids.iter().enumerate() {
        let v = (conn << 56) ^ (n << 20) ^ (i as u64 / 2) ^ 0x9E37_79B9_7F4A_7C15;
        let bytes = v.to_be_bytes();
        for j in 0..*len {
            b[off + j] = bytes[j % 8] ^ (j as u8);
        }
    }
    Bytes::from(b)
}

/// How request bodies are encoded on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Coding {
    None,
    Gzip,
    Zstd,
}

/// Distinct request bodies built before the run when each would cost the generator more than
/// weir (compression, JSON): the run cycles through them, so the generator's core measures
/// weir and not the generator.
const VARIANTS: u64 = 32;

/// The bodies one connection sends: `None` means a fresh copy of the template per request
/// (protobuf, uncompressed), else the prepared variants.
fn prepared(
    tpl: &Template,
    signal: Signal,
    conn: u64,
    coding: Coding,
    json: bool,
) -> Option<Vec<Bytes>> {
    if coding == Coding::None && !json {
        return None;
    }
    let bodies = (0..VARIANTS)
        .map(|n| {
            let pb = fresh(tpl, conn, n);
            let raw = if json {
                to_json(signal, &pb)
            } else {
                pb.to_vec()
            };
            Bytes::from(match coding {
                Coding::None => raw,
                Coding::Gzip => weir::compression::gzip(&raw),
                Coding::Zstd => weir::compression::zstd(&raw),
            })
        })
        .collect();
    Some(bodies)
}

/// OTLP/JSON of an encoded request (the encoding the OTLP/HTTP JSON clients send).
fn to_json(signal: Signal, pb: &[u8]) -> Vec<u8> {
    let r = match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(pb).map(|r| serde_json::to_vec(&r)),
        Signal::Metrics => ExportMetricsServiceRequest::decode(pb).map(|r| serde_json::to_vec(&r)),
        Signal::Logs => ExportLogsServiceRequest::decode(pb).map(|r| serde_json::to_vec(&r)),
    };
    match r {
        Ok(Ok(v)) => v,
        _ => Vec::new(),
    }
}

struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, a)| *a == name)
            .filter_map(|(i, _)| self.0.get(i + 1).map(String::as_str))
            .collect()
    }
    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
    fn num(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.get(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name}: not a number: {v:?}")),
            None => Ok(default),
        }
    }
    fn dur(&self, name: &str, default: Duration) -> Result<Duration, String> {
        match self.get(name) {
            Some(v) => parse_duration(v).map_err(|e| format!("{name}: {e}")),
            None => Ok(default),
        }
    }
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = argv.first().cloned() else {
        eprintln!("{USAGE}");
        return std::process::ExitCode::from(2);
    };
    let args = Args(argv[1..].to_vec());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir-loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let res = match mode.as_str() {
        "send" => rt.block_on(send(args)),
        "sink" => rt.block_on(sink(args)),
        _ => Err(format!("unknown mode {mode:?}\n\n{USAGE}")),
    };
    match res {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir-loadgen: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[derive(Default)]
struct Totals {
    items: u64,
    requests: u64,
    failed: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
}

async fn send(args: Args) -> Result<String, String> {
    let endpoint = args
        .get("--endpoint")
        .ok_or("--endpoint is required")?
        .to_owned();
    let protocol = args.get("--protocol").unwrap_or("grpc").to_owned();
    let signal = Signal::parse(args.get("--signal").unwrap_or("traces"))
        .ok_or("--signal: traces, metrics or logs")?;
    let batch = args.num("--batch", 512)? as usize;
    let conns = args.num("--conns", 4)?.max(1);
    let duration = args.dur("--duration", Duration::from_secs(10))?;
    let rate = args.num("--rate", 0)?;
    let gzip = args.flag("--gzip");
    let zstd = args.flag("--zstd");
    let json = args.flag("--json");
    let coding = match (gzip, zstd) {
        (true, true) => return Err("--gzip and --zstd exclude each other".into()),
        (true, false) => Coding::Gzip,
        (false, true) => Coding::Zstd,
        (false, false) => Coding::None,
    };
    if json && protocol != "http" {
        return Err("--json needs --protocol http".into());
    }
    let shape = args.get("--shape").unwrap_or("small").to_owned();
    // gRPC over TLS, trusting this CA.
    let tls = match args.get("--tls-ca") {
        Some(ca) => {
            let mut s = weir::tls::TlsClientSetting::default();
            s.common.ca_file = ca.to_owned();
            Some(weir::tls::ClientTls::new(&s, &[b"h2"])?)
        }
        None => None,
    };
    let headers: Vec<(String, String)> = args
        .all("--header")
        .into_iter()
        .filter_map(|h| h.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let tpl = Arc::new(template(signal, &shape, batch));
    let totals = Arc::new(Mutex::new(Totals::default()));
    let start = Instant::now();
    let deadline = start + duration;
    // Requests per second per connection when a rate is set.
    let interval =
        (rate > 0).then(|| Duration::from_secs_f64(batch as f64 * conns as f64 / rate as f64));
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (tpl, totals, endpoint, protocol, headers, tls) = (
            tpl.clone(),
            totals.clone(),
            endpoint.clone(),
            protocol.clone(),
            headers.clone(),
            tls.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Totals::default();
            let bodies = Bodies {
                tpl: &tpl,
                conn: c,
                prepared: prepared(&tpl, signal, c, coding, json),
                coding,
                json,
            };
            let res = if protocol == "http" {
                send_http(
                    &endpoint, signal, &bodies, &headers, deadline, interval, &mut local,
                )
                .await
            } else {
                send_grpc(
                    &endpoint, tls, signal, &bodies, &headers, deadline, interval, &mut local,
                )
                .await
            };
            if let Err(e) = res {
                *local.failed.entry(format!("connect: {e}")).or_default() += 1;
            }
            let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
            t.items += local.items;
            t.requests += local.requests;
            for (k, v) in local.failed {
                *t.failed.entry(k).or_default() += v;
            }
            t.latencies_us.extend(local.latencies_us);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut t = std::mem::take(&mut *totals.lock().unwrap_or_else(|e| e.into_inner()));
    t.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if t.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((t.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(t.latencies_us[i]) / 1000.0
    };
    Ok(serde_json::json!({
        "mode": "send",
        "signal": signal.as_str(),
        "protocol": protocol,
        "shape": shape,
        "gzip": gzip,
        "zstd": zstd,
        "json": json,
        "batch": batch,
        "conns": conns,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "sent_items": t.items,
        "requests": t.requests,
        "items_per_sec": (t.items as f64 / secs).round(),
        "failed": t.failed,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "bytes_per_item": (tpl.bytes.len() as f64 / tpl.items.max(1) as f64).round(),
    })
    .to_string())
}

/// What one connection sends.
struct Bodies<'a> {
    tpl: &'a Template,
    conn: u64,
    prepared: Option<Vec<Bytes>>,
    coding: Coding,
    json: bool,
}

impl Bodies<'_> {
    /// The `n`th request's body, encoded and compressed as the connection sends it.
    fn get(&self, n: u64) -> Bytes {
        match &self.prepared {
            Some(v) => v[(n % v.len() as u64) as usize].clone(),
            None => fresh(self.tpl, self.conn, n),
        }
    }
}

/// The gRPC status of a response: the trailers', else the headers' (trailers-only).
fn grpc_code(headers: &http::HeaderMap, trailers: Option<&http::HeaderMap>) -> Option<String> {
    let status = trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))?;
    let code = status.to_str().ok()?.parse::<i32>().ok()?;
    Some(format!("{:?}", tonic::Code::from_i32(code)))
}

#[allow(clippy::too_many_arguments)]
async fn send_grpc(
    endpoint: &str,
    tls: Option<Arc<weir::tls::ClientTls>>,
    signal: Signal,
    bodies: &Bodies<'_>,
    headers: &[(String, String)],
    deadline: Instant,
    interval: Option<Duration>,
    t: &mut Totals,
) -> Result<(), String> {
    let uri = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true);
    let channel = match tls {
        Some(tls) => endpoint
            .connect_with_connector(weir::exporters::otlp::GrpcConnector::new(Some(tls)))
            .await
            .map_err(|e| e.to_string())?,
        None => endpoint.connect().await.map_err(|e| e.to_string())?,
    };
    let (flag, encoding) = match bodies.coding {
        Coding::None => (0u8, None),
        Coding::Gzip => (1, Some("gzip")),
        Coding::Zstd => (1, Some("zstd")),
    };
    let mut n = 0u64;
    let mut next = Instant::now();
    while Instant::now() < deadline {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next.into()).await;
            next += iv;
        }
        let body = bodies.get(n);
        n += 1;
        // One gRPC frame: the compressed flag, the length, the (prepared) message.
        let mut frame = Vec::with_capacity(body.len() + 5);
        frame.push(flag);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        let mut b = Request::post(signal.grpc_path())
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(e) = encoding {
            b = b.header("grpc-encoding", e);
        }
        for (k, v) in headers {
            b = b.header(k.to_ascii_lowercase().as_str(), v.as_str());
        }
        let Ok(req) = b.body(tonic::body::Body::new(Full::new(Bytes::from(frame)))) else {
            continue;
        };
        let mut ch = channel.clone();
        if std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut ch, cx))
            .await
            .is_err()
        {
            *t.failed.entry("not ready".into()).or_default() += 1;
            continue;
        }
        let sent = Instant::now();
        let resp = match tower_service::Service::call(&mut ch, req).await {
            Ok(r) => r,
            Err(e) => {
                *t.failed.entry(format!("transport: {e}")).or_default() += 1;
                continue;
            }
        };
        let (parts, body) = resp.into_parts();
        let collected = match body.collect().await {
            Ok(c) => c,
            Err(e) => {
                *t.failed.entry(format!("transport: {e}")).or_default() += 1;
                continue;
            }
        };
        match grpc_code(&parts.headers, collected.trailers()).as_deref() {
            Some("Ok") => {
                t.items += bodies.tpl.items as u64;
                t.requests += 1;
                t.latencies_us
                    .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Some(code) => *t.failed.entry(code.to_owned()).or_default() += 1,
            None => *t.failed.entry("no grpc-status".into()).or_default() += 1,
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn send_http(
    endpoint: &str,
    signal: Signal,
    bodies: &Bodies<'_>,
    headers: &[(String, String)],
    deadline: Instant,
    interval: Option<Duration>,
    t: &mut Totals,
) -> Result<(), String> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let base = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    let url: http::Uri = format!("{}{}", base.trim_end_matches('/'), signal.http_path())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let content_type = if bodies.json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    let mut n = 0u64;
    let mut next = Instant::now();
    while Instant::now() < deadline {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next.into()).await;
            next += iv;
        }
        let body = bodies.get(n);
        n += 1;
        let mut b = Request::post(url.clone()).header("content-type", content_type);
        match bodies.coding {
            Coding::Gzip => b = b.header("content-encoding", "gzip"),
            Coding::Zstd => b = b.header("content-encoding", "zstd"),
            Coding::None => {}
        }
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let Ok(req) = b.body(Full::new(body)) else {
            continue;
        };
        let sent = Instant::now();
        match client.request(req).await {
            Ok(resp) if resp.status().is_success() => {
                let _ = resp.into_body().collect().await;
                t.items += bodies.tpl.items as u64;
                t.requests += 1;
                t.latencies_us
                    .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok(resp) => {
                let st = resp.status().as_u16().to_string();
                let _ = resp.into_body().collect().await;
                *t.failed.entry(st).or_default() += 1;
            }
            Err(e) => *t.failed.entry(format!("io: {e}")).or_default() += 1,
        }
    }
    Ok(())
}

#[derive(Default)]
struct SinkCounts {
    traces: AtomicU64,
    metrics: AtomicU64,
    logs: AtomicU64,
    /// Remote-write samples and Loki entries.
    remote_write_samples: AtomicU64,
    loki_entries: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl SinkCounts {
    fn add(&self, what: &str, n: u64, bytes: usize) {
        let c = match what {
            "traces" => &self.traces,
            "metrics" => &self.metrics,
            "logs" => &self.logs,
            "remote_write" => &self.remote_write_samples,
            _ => &self.loki_entries,
        };
        c.fetch_add(n, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
}

/// Counts entries of repeated field `item` inside repeated field `outer` of a message.
fn count_nested(buf: &[u8], outer: u64, item: u64) -> u64 {
    let mut n = 0;
    let _ = wire::for_each_field(buf, |f, _, d, _| {
        if f == outer {
            let _ = wire::for_each_field(d, |g, _, _, _| {
                if g == item {
                    n += 1;
                }
                Ok(())
            });
        }
        Ok(())
    });
    n
}

#[derive(Clone)]
struct SinkService(Arc<SinkCounts>, Duration);

struct CountSvc {
    counts: Arc<SinkCounts>,
    signal: Signal,
    delay: Duration,
}

impl tonic::server::UnaryService<Bytes> for CountSvc {
    type Response = Bytes;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, tonic::Status>> + Send>>;
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let body = req.into_inner();
        let n = wire::count_items(self.signal, &body).unwrap_or(0) as u64;
        let (counts, signal, delay) = (self.counts.clone(), self.signal, self.delay);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            counts.add(signal.as_str(), n, body.len());
            Ok(tonic::Response::new(Bytes::new()))
        })
    }
}

impl hyper::service::Service<Request<Incoming>> for SinkService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let counts = self.0.clone();
        let delay = self.1;
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let is_grpc = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("application/grpc"));
            if is_grpc {
                let Some(signal) = Signal::ALL.into_iter().find(|s| s.grpc_path() == path) else {
                    return Ok(tonic::Status::unimplemented("unknown method").into_http());
                };
                let mut grpc = tonic::server::Grpc::new(BytesCodec)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(64 << 20);
                return Ok(grpc
                    .unary(
                        CountSvc {
                            counts,
                            signal,
                            delay,
                        },
                        req,
                    )
                    .await);
            }
            let coding = req
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let gz = coding.as_deref() == Some("gzip");
            let req_zstd = coding.as_deref() == Some("zstd");
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let zs = req_zstd;
            let raw: Vec<u8> = if gz {
                weir::compression::gunzip_capped(&body, 256 << 20).unwrap_or_default()
            } else if zs {
                weir::compression::unzstd_capped(&body, 256 << 20).unwrap_or_default()
            } else {
                body.to_vec()
            };
            let ok = |b: Bytes| {
                let mut r = Response::new(tonic::body::Body::new(Full::new(b)));
                *r.status_mut() = StatusCode::OK;
                r
            };
            if let Some(signal) = Signal::ALL.into_iter().find(|s| s.http_path() == path) {
                let n = wire::count_items(signal, &raw).unwrap_or(0) as u64;
                counts.add(signal.as_str(), n, body.len());
                return Ok(ok(Bytes::new()));
            }
            if path == "/api/v1/write" || path == "/loki/api/v1/push" {
                let dec = snap::raw::Decoder::new()
                    .decompress_vec(&body)
                    .unwrap_or_default();
                if path == "/api/v1/write" {
                    // WriteRequest.timeseries (1) -> samples (2) + histograms (4)
                    let n = count_nested(&dec, 1, 2) + count_nested(&dec, 1, 4);
                    counts.add("remote_write", n, body.len());
                } else {
                    // PushRequest.streams (1) -> entries (2)
                    counts.add("loki", count_nested(&dec, 1, 2), body.len());
                }
                let mut r = ok(Bytes::new());
                *r.status_mut() = StatusCode::NO_CONTENT;
                return Ok(r);
            }
            let mut r = ok(Bytes::from_static(b"not found"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            Ok(r)
        })
    }
}

async fn sink(args: Args) -> Result<String, String> {
    let listen = args.get("--listen").ok_or("--listen is required")?;
    let idle = args.dur("--idle", Duration::from_secs(0))?;
    let duration = args.dur("--duration", Duration::from_secs(0))?;
    let delay = args.dur("--delay", Duration::from_secs(0))?;
    let listener = weir::net::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let counts = Arc::new(SinkCounts::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // TLS with this certificate and key.
    let tls = match (args.get("--tls-cert"), args.get("--tls-key")) {
        (Some(cert), Some(key)) => {
            let mut s = weir::tls::TlsServerSetting::default();
            s.common.cert_file = cert.to_owned();
            s.common.key_file = key.to_owned();
            let registry = weir::telemetry::metrics::Registry::new();
            let failures = registry.counter("tls_failures", "TLS handshakes that failed.", &[]);
            Some(weir::tls::ServerTls::new(
                &s,
                &[b"h2", b"http/1.1"],
                failures,
            )?)
        }
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let server = weir::net::serve_with(
        listener,
        SinkService(counts.clone(), delay),
        weir::net::Protocol::Auto,
        weir::net::ConnTimeouts::default(),
        tls,
        stop_rx,
        Duration::from_secs(1),
    );
    eprintln!("weir-loadgen sink listening on {listen}");
    let start = Instant::now();
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let mut check = tokio::time::interval(Duration::from_millis(100));
    loop {
        #[cfg(unix)]
        let stop_signal = term.recv();
        #[cfg(not(unix))]
        let stop_signal = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = stop_signal => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = check.tick() => {
                if !duration.is_zero() && start.elapsed() >= duration {
                    break;
                }
                if !idle.is_zero() {
                    let last = *counts.last.lock().unwrap_or_else(|e| e.into_inner());
                    if last.is_some_and(|l| l.elapsed() >= idle) {
                        break;
                    }
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    let c = &counts;
    Ok(serde_json::json!({
        "mode": "sink",
        "traces": c.traces.load(Ordering::Relaxed),
        "metrics": c.metrics.load(Ordering::Relaxed),
        "logs": c.logs.load(Ordering::Relaxed),
        "remote_write_samples": c.remote_write_samples.load(Ordering::Relaxed),
        "loki_entries": c.loki_entries.load(Ordering::Relaxed),
        "requests": c.requests.load(Ordering::Relaxed),
        "bytes": c.bytes.load(Ordering::Relaxed),
    })
    .to_string())
}
