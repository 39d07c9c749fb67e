use super::*;
use crate::pdata::{count_spans, Signal};
use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;
use std::time::Duration;

fn req(spans: usize, tag: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        name: format!("{tag}{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn encoded(spans: usize, ctx: Context) -> Batch {
    Batch::encoded(
        Signal::Traces,
        Bytes::from(req(spans, "s").encode_to_vec()),
        spans,
        Arc::new(ctx),
    )
}

fn proc(cfg: BatchConfig) -> BatchProcessor {
    BatchProcessor::new("batch", cfg, &Registry::default())
}

fn total(out: &[Batch]) -> usize {
    out.iter()
        .map(|b| {
            let mut b = b.clone();
            b.decode().unwrap();
            match &b.payload {
                Payload::Traces(r) => count_spans(r),
                _ => 0,
            }
        })
        .sum()
}

#[test]
fn sends_when_size_reached_by_concatenating_bytes() {
    let mut p = proc(BatchConfig {
        send_batch_size: 10,
        ..BatchConfig::default()
    });
    let mut out = Vec::new();
    p.process(encoded(4, Context::default()), &mut out);
    p.process(encoded(4, Context::default()), &mut out);
    assert!(out.is_empty());
    assert!(p.deadline().is_some());
    p.process(encoded(4, Context::default()), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items, 12);
    assert!(matches!(out[0].payload, Payload::Encoded(_)));
    assert_eq!(total(&out), 12);
    assert!(p.deadline().is_none());
}

#[test]
fn splits_at_send_batch_max_size_and_keeps_every_span() {
    let mut p = proc(BatchConfig {
        send_batch_size: 10,
        send_batch_max_size: 10,
        ..BatchConfig::default()
    });
    let mut out = Vec::new();
    p.process(encoded(25, Context::default()), &mut out);
    assert_eq!(
        out.iter().map(|b| b.items).collect::<Vec<_>>(),
        vec![10, 10]
    );
    p.flush(&mut out);
    assert_eq!(
        out.iter().map(|b| b.items).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    assert_eq!(total(&out), 25);
}

#[test]
fn timeout_sends_partial_batches() {
    let mut p = proc(BatchConfig {
        send_batch_size: 100,
        timeout: Duration::from_millis(10).into(),
        ..BatchConfig::default()
    });
    let mut out = Vec::new();
    p.process(encoded(3, Context::default()), &mut out);
    let d = p.deadline().unwrap();
    p.tick(d - Duration::from_millis(5), &mut out);
    assert!(out.is_empty());
    p.tick(d, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items, 3);
    assert!(p.deadline().is_none());
}

#[test]
fn metadata_keys_and_tenants_never_mix() {
    let mut p = proc(BatchConfig {
        send_batch_size: 4,
        metadata_keys: vec!["X-Tenant".into()],
        ..BatchConfig::default()
    });
    let ctx = |t: &str| Context {
        metadata: Some(Arc::new(vec![
            ("x-tenant".into(), t.into()),
            ("other".into(), "z".into()),
        ])),
        ..Context::default()
    };
    let mut out = Vec::new();
    p.process(encoded(2, ctx("a")), &mut out);
    p.process(encoded(2, ctx("b")), &mut out);
    p.process(encoded(2, ctx("a")), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].context.metadata_value("x-tenant"), Some("a"));
    // Only the partitioning key travels on.
    assert_eq!(out[0].context.metadata_value("other"), None);
    let tenant = |t: &str| Context {
        tenant: Some(Arc::from(t)),
        auth: None,
        ..ctx("b")
    };
    p.process(encoded(2, tenant("t1")), &mut out);
    p.process(encoded(2, tenant("t2")), &mut out);
    assert_eq!(out.len(), 1);
    p.flush(&mut out);
    let mut seen: Vec<_> = out[1..]
        .iter()
        .map(|b| (b.context.tenant.as_deref().map(str::to_owned), b.items))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![(None, 2), (Some("t1".into()), 2), (Some("t2".into()), 2)]
    );
}

#[test]
fn rejects_max_below_size() {
    let cfg = BatchConfig {
        send_batch_size: 100,
        send_batch_max_size: 10,
        ..BatchConfig::default()
    };
    assert_eq!(
        cfg.validate(),
        Err((
            "send_batch_max_size",
            "must be greater than or equal to send_batch_size (10 < 100)".to_string()
        ))
    );
}

/// `sizer: bytes` (the exporters' `sending_queue.batch`): a batch goes out once it holds
/// `send_batch_size` bytes, and none goes out over `send_batch_max_size` bytes (a single item
/// larger than that goes alone); every span arrives once.
#[test]
fn sizes_in_bytes_when_asked() {
    let one = encoded(1, Context::default()).encoded_len();
    let ten = encoded(10, Context::default()).encoded_len();
    let mut p = proc(BatchConfig {
        send_batch_size: 3 * ten,
        send_batch_max_size: 4 * ten,
        sizer_bytes: true,
        ..BatchConfig::default()
    });
    let mut out = Vec::new();
    p.process(encoded(10, Context::default()), &mut out);
    p.process(encoded(10, Context::default()), &mut out);
    assert!(out.is_empty(), "two requests are under 3 × {ten} bytes");
    p.process(encoded(10, Context::default()), &mut out);
    assert_eq!(out.len(), 1, "three reach it");
    assert_eq!(out[0].items, 30);
    // One request of 200 spans: split into pieces within 4 × `ten` bytes.
    out.clear();
    p.process(encoded(200, Context::default()), &mut out);
    p.flush(&mut out);
    assert!(out.len() >= 5, "{}", out.len());
    for b in &out {
        assert!(
            b.encoded_len() <= 4 * ten,
            "{} > {}",
            b.encoded_len(),
            4 * ten
        );
    }
    assert_eq!(total(&out), 200);
    assert_eq!(out.iter().map(|b| b.items).sum::<usize>(), 200);
    // A max smaller than one span: each span alone.
    let mut p = proc(BatchConfig {
        send_batch_size: 1,
        send_batch_max_size: one / 2,
        sizer_bytes: true,
        ..BatchConfig::default()
    });
    let mut out = Vec::new();
    p.process(encoded(5, Context::default()), &mut out);
    p.flush(&mut out);
    assert_eq!(out.len(), 5);
    assert!(out.iter().all(|b| b.items == 1));
}
