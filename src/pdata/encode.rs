//! Encoding decoded requests with each item's length computed once. prost computes a nested
//! message's length again at every level that writes it (request, resource, scope, item), so
//! a span's length was computed four times per encode; here the items' lengths are computed
//! once, the levels above summed from them. The bytes are prost's, field for field.
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;

use super::wire::{put_varint, varint_len};

/// A length-delimited field of `len` bytes: key (one byte for fields 1–15), length, payload.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_header(out: &mut Vec<u8>, key: u8, len: usize) {
    out.push(key);
    put_varint(out, len as u64);
}

macro_rules! encoder {
    ($name:ident, $req:ty, $resources:ident, $scopes:ident, $items:ident) => {
        /// The request encoded as prost encodes it, each item's length computed once.
        pub fn $name(r: &$req) -> Vec<u8> {
            let mut item_lens: Vec<usize> = Vec::new();
            let mut scope_lens: Vec<usize> = Vec::new();
            let mut res_lens: Vec<(usize, usize)> = Vec::new();
            let mut total = 0usize;
            for rs in &r.$resources {
                let mut rs_len = 0;
                let res_len = rs.resource.as_ref().map_or(0, |x| x.encoded_len());
                if rs.resource.is_some() {
                    rs_len += field_len(res_len);
                }
                for ss in &rs.$scopes {
                    let mut ss_len = 0;
                    if let Some(sc) = &ss.scope {
                        ss_len += field_len(sc.encoded_len());
                    }
                    for it in &ss.$items {
                        let l = it.encoded_len();
                        item_lens.push(l);
                        ss_len += field_len(l);
                    }
                    if !ss.schema_url.is_empty() {
                        ss_len += field_len(ss.schema_url.len());
                    }
                    scope_lens.push(ss_len);
                    rs_len += field_len(ss_len);
                }
                if !rs.schema_url.is_empty() {
                    rs_len += field_len(rs.schema_url.len());
                }
                res_lens.push((rs_len, res_len));
                total += field_len(rs_len);
            }
            let mut out = Vec::with_capacity(total);
            let (mut i_item, mut i_scope) = (0, 0);
            for (rs, (rs_len, res_len)) in r.$resources.iter().zip(&res_lens) {
                put_header(&mut out, 0x0a, *rs_len);
                if let Some(res) = &rs.resource {
                    put_header(&mut out, 0x0a, *res_len);
                    res.encode_raw(&mut out);
                }
                for ss in &rs.$scopes {
                    put_header(&mut out, 0x12, scope_lens[i_scope]);
                    i_scope += 1;
                    if let Some(sc) = &ss.scope {
                        put_header(&mut out, 0x0a, sc.encoded_len());
                        sc.encode_raw(&mut out);
                    }
                    for it in &ss.$items {
                        put_header(&mut out, 0x12, item_lens[i_item]);
                        i_item += 1;
                        it.encode_raw(&mut out);
                    }
                    if !ss.schema_url.is_empty() {
                        put_header(&mut out, 0x1a, ss.schema_url.len());
                        out.extend_from_slice(ss.schema_url.as_bytes());
                    }
                }
                if !rs.schema_url.is_empty() {
                    put_header(&mut out, 0x1a, rs.schema_url.len());
                    out.extend_from_slice(rs.schema_url.as_bytes());
                }
            }
            out
        }
    };
}

encoder!(
    encode_traces,
    ExportTraceServiceRequest,
    resource_spans,
    scope_spans,
    spans
);
encoder!(
    encode_metrics,
    ExportMetricsServiceRequest,
    resource_metrics,
    scope_metrics,
    metrics
);
encoder!(
    encode_logs,
    ExportLogsServiceRequest,
    resource_logs,
    scope_logs,
    log_records
);

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_bytes_are_prosts_field_for_field() {
        let big = "x".repeat(300);
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", "a")],
                        ..Default::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "lib".into(),
                                ..Default::default()
                            }),
                            spans: (0..200)
                                .map(|i| Span {
                                    name: format!("span {i} {big}"),
                                    trace_id: vec![i as u8; 16],
                                    attributes: vec![kv("k", &big)],
                                    ..Default::default()
                                })
                                .collect(),
                            schema_url: "https://s".into(),
                        },
                        ScopeSpans::default(),
                    ],
                    schema_url: "https://r".into(),
                },
                // An empty resource, a resource without a Resource.
                ResourceSpans::default(),
                ResourceSpans {
                    resource: Some(Resource::default()),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(encode_traces(&req), req.encode_to_vec());
        assert_eq!(
            encode_traces(&ExportTraceServiceRequest::default()),
            Vec::<u8>::new()
        );
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(big.clone())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(encode_logs(&logs), logs.encode_to_vec());
    }
}
