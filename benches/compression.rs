//! Compression codecs on a 512-span OTLP request (~75 KB of protobuf): deflate and inflate
//! for gzip, zstd and snappy (gRPC's framing format), as the exporters compress and the
//! receivers inflate.
//!
//! Run: `cargo bench --bench compression`
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn request() -> Vec<u8> {
    let spans = (0..512u64)
        .map(|i| Span {
            trace_id: (u128::from(i) * 0x9e37_79b9_7f4a_7c15)
                .to_be_bytes()
                .to_vec(),
            span_id: (i * 0x2545_f491 + 1).to_be_bytes().to_vec(),
            name: "GET /api/cart".into(),
            start_time_unix_nano: 1_700_000_000_000_000_000 + i * 1_000,
            end_time_unix_nano: 1_700_000_000_050_000_000 + i * 1_000,
            attributes: vec![kv("http.method", "GET"), kv("http.route", "/api/cart")],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let raw = request();
    let gz = weir::compression::gzip(&raw);
    let zs = weir::compression::zstd(&raw);
    let mut g = c.benchmark_group("codec_512_spans");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("gzip_deflate", |b| {
        b.iter(|| weir::compression::gzip(&raw).len())
    });
    g.bench_function("gzip_inflate", |b| {
        b.iter(|| weir::compression::gunzip_capped(&gz, 1 << 24).map(|v| v.len()))
    });
    g.bench_function("zstd_deflate", |b| {
        b.iter(|| weir::compression::zstd(&raw).len())
    });
    g.bench_function("zstd_inflate", |b| {
        b.iter(|| weir::compression::unzstd_capped(&zs, 1 << 24).map(|v| v.len()))
    });
    let sn = weir::compression::snappy_framed(&raw);
    g.bench_function("snappy_framed_deflate", |b| {
        b.iter(|| weir::compression::snappy_framed(&raw).len())
    });
    g.bench_function("snappy_framed_inflate", |b| {
        b.iter(|| weir::compression::unsnappy_framed_capped(&sn, 1 << 24).map(|v| v.len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
