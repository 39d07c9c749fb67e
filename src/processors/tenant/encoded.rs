//! The tenant processor on encoded requests: the tenant attribute is written into each
//! resource's bytes and the request split by tenant, without decoding spans, points or
//! records. Each `Resource*` (the request's field 1) is copied once with a rewritten
//! `resource`; everything below it goes over as it came.
use crate::pdata::wire::{self, WireError};
use crate::pdata::Signal;

/// `ResourceSpans`/`ResourceMetrics`/`ResourceLogs`.resource, `Resource`.attributes,
/// `KeyValue`.key/value and `AnyValue`.string_value all are field 1 (value is 2).
const RESOURCE: u64 = 1;
const ATTRIBUTES: u64 = 1;
const KV_KEY: u64 = 1;
const KV_VALUE: u64 = 2;
const STRING_VALUE: u64 = 1;

/// One `Resource*` message of a request.
pub(crate) struct ResourceEntry<'a> {
    /// The message, without its key and length.
    pub(crate) body: &'a [u8],
}

impl<'a> ResourceEntry<'a> {
    /// The string value of resource attribute `key` (the first attribute with that key, as
    /// the decoded form finds it); `None` when absent or not a string.
    pub(crate) fn attribute(&self, key: &str) -> Option<&'a str> {
        let mut found = None;
        let _ = wire::for_each_field(self.body, |n, wt, resource, _| {
            if n != RESOURCE || wt != 2 || found.is_some() {
                return Ok(());
            }
            wire::for_each_field(resource, |n, wt, kv, _| {
                if n == ATTRIBUTES && wt == 2 && found.is_none() {
                    if let Some((k, v)) = key_value(kv) {
                        if k == key.as_bytes() {
                            found = Some(v.and_then(string_value));
                        }
                    }
                }
                Ok(())
            })
        });
        found.flatten()
    }

    /// Items (spans, data points, log records) in this resource's data.
    pub(crate) fn items(&self, signal: Signal) -> Result<usize, WireError> {
        wire::count_resource_items(signal, self.body)
    }

    /// Appends this resource's data as a request's field 1 to `out`, with attribute `key`
    /// set to `value`: every attribute with that key the client sent is removed (a second
    /// copy must not carry a tenant the client chose), then one is appended.
    pub(crate) fn write_tagged(&self, key: &str, value: &str, out: &mut Vec<u8>) {
        // The resource's fields: every occurrence of field 1 merges into one message, as a
        // decoder merges them; its attributes without `key`, then the tenant's.
        let mut resource = Vec::with_capacity(64);
        let mut rest_len = 0usize;
        let _ = wire::for_each_field(self.body, |n, wt, data, whole| {
            if n == RESOURCE && wt == 2 {
                let _ = wire::for_each_field(data, |n, wt, kv, whole| {
                    let drop = n == ATTRIBUTES
                        && wt == 2
                        && key_value(kv).is_some_and(|(k, _)| k == key.as_bytes());
                    if !drop {
                        resource.extend_from_slice(whole);
                    }
                    Ok(())
                });
            } else {
                rest_len += whole.len();
            }
            Ok(())
        });
        let value_len = wire::len_field_size(STRING_VALUE, value.len());
        let kv_len =
            wire::len_field_size(KV_KEY, key.len()) + wire::len_field_size(KV_VALUE, value_len);
        wire::put_len_header(&mut resource, ATTRIBUTES, kv_len);
        wire::put_len_header(&mut resource, KV_KEY, key.len());
        resource.extend_from_slice(key.as_bytes());
        wire::put_len_header(&mut resource, KV_VALUE, value_len);
        wire::put_len_header(&mut resource, STRING_VALUE, value.len());
        resource.extend_from_slice(value.as_bytes());

        let entry_len = wire::len_field_size(RESOURCE, resource.len()) + rest_len;
        out.reserve(wire::len_field_size(1, entry_len));
        wire::put_len_header(out, 1, entry_len);
        wire::put_len_header(out, RESOURCE, resource.len());
        out.extend_from_slice(&resource);
        let _ = wire::for_each_field(self.body, |n, wt, _, whole| {
            if !(n == RESOURCE && wt == 2) {
                out.extend_from_slice(whole);
            }
            Ok(())
        });
    }
}

/// The `Resource*` entries of an encoded request, in order. Fails on bytes that do not walk
/// (the caller then takes the decoding path, which keeps what can be kept); fields other
/// than 1 at the top level are unknown to OTLP and are dropped, as decoding drops them.
pub(crate) fn resources(buf: &[u8]) -> Result<Vec<ResourceEntry<'_>>, WireError> {
    let mut out = Vec::new();
    let mut bad = None;
    wire::for_each_field(buf, |n, wt, data, _| {
        if n == 1 {
            if wt != 2 {
                bad = Some(wt);
                return Ok(());
            }
            // Each entry must walk too, or a later step would meet an error it cannot report.
            wire::for_each_field(data, |_, _, _, _| Ok(()))?;
            out.push(ResourceEntry { body: data });
        }
        Ok(())
    })?;
    if let Some(wire_type) = bad {
        return Err(WireError::WireType {
            field: 1,
            wire_type,
            offset: 0,
        });
    }
    Ok(out)
}

/// A `KeyValue`'s key (the last occurrence, as a decoder keeps it) and value bytes.
fn key_value(kv: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let mut key: Option<&[u8]> = None;
    let mut value: Option<&[u8]> = None;
    wire::for_each_field(kv, |n, wt, data, _| {
        match (n, wt) {
            (KV_KEY, 2) => key = Some(data),
            (KV_VALUE, 2) => value = Some(data),
            _ => {}
        }
        Ok(())
    })
    .ok()?;
    Some((key.unwrap_or(&[]), value))
}

/// An `AnyValue`'s string, when its oneof (the last member set wins) is `string_value`.
fn string_value(v: &[u8]) -> Option<&str> {
    let mut last: Option<(u64, &[u8])> = None;
    wire::for_each_field(v, |n, _, data, _| {
        // string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7, string_value_strindex 8
        if (1..=8).contains(&n) {
            last = Some((n, data));
        }
        Ok(())
    })
    .ok()?;
    match last {
        Some((STRING_VALUE, s)) => std::str::from_utf8(s).ok(),
        _ => None,
    }
}
