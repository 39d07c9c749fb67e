//! OTLP decode and encode of a 512-span request, and the receiver's zero-copy wire walk
//! (what the gateway fast path pays per request instead of a full decode).
//!
//! Run: `cargo bench --bench otlp_codec`
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use std::sync::Arc;

use weir::pdata::{check, wire, Batch, Context, Signal};
use weir::pipeline::Processor;
use weir::processors::batch::{config::BatchConfig, BatchProcessor};
use weir::telemetry::metrics::Registry;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// 512 spans with the shape of real HTTP server spans (~150 bytes each, two attributes).
fn request(n: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
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
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: (i as u128 * 7919 + 1).to_be_bytes().to_vec(),
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        parent_span_id: (i as u64).to_be_bytes().to_vec(),
                        name: "GET /api/cart".into(),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        end_time_unix_nano: 1_700_000_000_050_000_000 + i as u64,
                        attributes: vec![kv("http.method", "GET"), kv("http.route", "/api/cart")],
                        status: Some(Status {
                            code: 1,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn bench(c: &mut Criterion) {
    let req = request(512);
    let bytes = Bytes::from(req.encode_to_vec());
    let mut g = c.benchmark_group("otlp_512_spans");
    g.throughput(Throughput::Elements(512));
    g.bench_function("decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(bytes.clone()).map(|r| r.resource_spans.len()))
    });
    g.bench_function("encode", |b| b.iter(|| req.encode_to_vec().len()));
    g.bench_function("receiver_check", |b| {
        b.iter(|| check::check_request(Signal::Traces, &bytes))
    });
    g.bench_function("wire_count", |b| {
        b.iter(|| wire::count_items(Signal::Traces, &bytes))
    });
    // The batch processor merging 16 encoded 512-span requests into one 8192-span batch
    // (concatenation, no decode): per 512 spans.
    let cfg: BatchConfig = serde_yaml::from_str("send_batch_size: 8192").expect("config");
    let mut batcher = BatchProcessor::new("batch", cfg, &Registry::new());
    let ctx = Arc::new(Context::default());
    g.bench_function("batch_merge", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            batcher.process(
                Batch::encoded(Signal::Traces, bytes.clone(), 512, ctx.clone()),
                &mut out,
            );
            let n = out.len();
            out.clear();
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
