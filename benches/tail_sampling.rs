//! Tail sampling: spans/s through insert + decide (three policies: status_code, latency,
//! probabilistic 10%), one worker shard, and the memory held per buffered span above its
//! encoded size (measured with a counting allocator).
//!
//! Run: `cargo bench --bench tail_sampling`
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokio::sync::Notify;
use weir::pdata::{Batch, Context, Signal};
use weir::pipeline::Processor;
use weir::processors::tail_sampling::config::TailSamplingConfig;
use weir::processors::tail_sampling::TailSampling;
use weir::telemetry::metrics::Registry;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const POLICIES: &str = "
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
  - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 10}}
";

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// 512 small spans (~150 bytes, two attributes) in 64 traces of 8; `seed` makes the ids new.
fn request(seed: u64) -> Bytes {
    let spans = (0..512u64)
        .map(|i| {
            let trace = seed * 64 + i / 8;
            Span {
                trace_id: (u128::from(trace) * 0x9E37_79B9_7F4A_7C15 + 1)
                    .to_be_bytes()
                    .to_vec(),
                span_id: (i + 1).to_be_bytes().to_vec(),
                parent_span_id: if i % 8 == 0 {
                    vec![]
                } else {
                    (i - i % 8 + 1).to_be_bytes().to_vec()
                },
                name: "GET /api/cart".into(),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: 1_700_000_000_000_000_000 + i,
                end_time_unix_nano: 1_700_000_000_050_000_000 + i,
                attributes: vec![kv("http.method", "GET"), kv("http.route", "/api/cart")],
                status: Some(Status {
                    code: if trace.is_multiple_of(50) { 2 } else { 1 },
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let r = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout"), kv("host.name", "node-7")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.0.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Bytes::from(r.encode_to_vec())
}

fn stage(extra: &str, registry: &Registry) -> TailSampling {
    let cfg: TailSamplingConfig =
        serde_yaml::from_str(&format!("num_shards: 1\n{extra}\n{POLICIES}")).expect("config");
    TailSampling::new("tail_sampling", &cfg, registry, Arc::new(Notify::new()))
}

fn batch(bytes: Bytes) -> Batch {
    Batch::encoded(Signal::Traces, bytes, 512, Arc::new(Context::default()))
}

/// Bytes held per buffered span above the request bytes that carry it.
fn memory_per_span() {
    let registry = Registry::new();
    let mut ts = stage("decision_wait: 1h\nnum_traces: 1000000", &registry);
    let requests: Vec<Bytes> = (0..400).map(request).collect();
    let encoded: usize = requests.iter().map(Bytes::len).sum();
    let spans = requests.len() * 512;
    let before = LIVE.load(Ordering::Relaxed);
    let mut out = Vec::new();
    for r in requests {
        ts.process(batch(r), &mut out);
    }
    // A barrier: every worker has taken in all it was sent.
    ts.sync();
    assert_eq!(
        registry.value(
            "otelcol_processor_tail_sampling_sampling_traces_on_memory",
            &[("processor", "tail_sampling")],
        ),
        Some((spans / 8) as f64)
    );
    // The request bytes were allocated before `before`: what grew since is the overhead
    // (the buffered spans are zero-copy slices of those requests).
    let held = LIVE.load(Ordering::Relaxed) - before;
    let over = held as f64 / spans as f64;
    println!(
        "tail_sampling memory: {spans} spans buffered ({} bytes encoded, {:.0} per span) add {held} bytes of bookkeeping: {over:.0} bytes per span above the encoded size",
        encoded,
        encoded as f64 / spans as f64
    );
    let mut rest = Vec::new();
    ts.flush(&mut rest);
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("tail_sampling");
    g.throughput(Throughput::Elements(512));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("insert_decide_512_spans_3_policies", |b| {
        b.iter_custom(|iters| {
            let registry = Registry::new();
            // Decide as soon as possible: every trace is inserted, evaluated and released
            // within the measured time.
            let mut ts = stage("decision_wait: 1ms\nnum_traces: 100000", &registry);
            let reqs: Vec<Bytes> = (0..iters).map(request).collect();
            let mut out = Vec::new();
            let start = Instant::now();
            for r in reqs {
                ts.process(batch(r), &mut out);
                out.clear();
            }
            ts.flush(&mut out);
            start.elapsed()
        })
    });
    g.finish();
}

fn main() {
    memory_per_span();
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    c.final_summary();
}
