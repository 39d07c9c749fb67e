//! Logs → Loki encoding (group by tenant and stream, json lines, protobuf, snappy) in
//! records/s.
//!
//! Run: `cargo bench --bench loki`
use std::time::Duration;

use criterion::{Criterion, Throughput};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use weir::exporters::loki::config::LokiExporterConfig;
use weir::exporters::loki::{split, Encoder};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// 1000 records of a typical HTTP access log (~200 bytes), 4 resources.
fn request() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: (0..4)
            .map(|r| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", &format!("svc-{r}")),
                        kv("deployment.environment", "prod"),
                        kv("host.name", "node-7"),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: (0..250u64)
                        .map(|i| LogRecord {
                            time_unix_nano: 1_700_000_000_000_000_000 + i * 1000,
                            severity_text: if i % 10 == 0 { "ERROR" } else { "INFO" }.into(),
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(format!(
                                    "GET /api/v1/items/{i} 200 {}ms user-agent=curl/8.0",
                                    i % 97
                                ))),
                            }),
                            attributes: vec![
                                kv("http.method", "GET"),
                                kv("http.route", "/api/v1/items/{id}"),
                                kv("request.id", &format!("req-{i}")),
                            ],
                            trace_id: vec![7; 16],
                            span_id: vec![9; 8],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let req = request();
    let cfg: LokiExporterConfig = serde_yaml::from_str(
        "endpoint: http://127.0.0.1:3100/loki/api/v1/push\nlabels: {resource: {service.name: service_name, deployment.environment: env}, attributes: {http.method: method}}",
    )
    .expect("config");
    let enc = Encoder::new(&cfg);
    let mut g = c.benchmark_group("loki_1000_records");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("group_encode_snappy", |b| {
        b.iter(|| {
            let mut total = 0usize;
            for t in enc.group(&req, Some("team-a")) {
                for p in split(t.streams, 1 << 20) {
                    let raw = p.encode_to_vec();
                    total += snap::raw::Encoder::new()
                        .compress_vec(&raw)
                        .map(|v| v.len())
                        .unwrap_or(0);
                }
            }
            total
        })
    });
    g.finish();
    c.final_summary();
}
