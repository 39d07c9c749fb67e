//! Splitting an encoded ExportTraceServiceRequest into per-span chunks without decoding, and
//! joining chunks back into a request.
//!
//! A chunk is one span's bytes (a slice of the received buffer) plus a shared [`Group`]: the
//! header of the ResourceSpans and ScopeSpans it came in (every field but the nested list) and
//! the batch context. Joining writes one ResourceSpans per run of chunks with the same
//! resource header and one ScopeSpans per run with the same scope header.
use std::sync::Arc;

use bytes::Bytes;

use crate::pdata::wire::{self, WireError};
use crate::pdata::Context;

/// Where a span came from: its resource, its scope, its batch context.
#[derive(Debug)]
pub struct Group {
    /// The batch context, without its memory charge: the buffer has a budget of its own
    /// (`max_buffered_bytes`), and what it holds is copied out of the request.
    pub context: Arc<Context>,
    /// The memory budget the request was charged to, to charge what the sampler sends on.
    pub budget: Option<Arc<crate::pipeline::budget::Budget>>,
    /// ResourceSpans without `scope_spans` (field 2): `resource` and `schema_url`.
    pub resource: Bytes,
    /// ScopeSpans without `spans` (field 2): `scope` and `schema_url`.
    pub scope: Bytes,
}

/// One span, still encoded.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub trace_id: [u8; 16],
    pub group: Arc<Group>,
    /// The span's bytes, copied out of the request so a buffered span does not keep the whole
    /// request alive.
    pub span: Bytes,
    /// No parent span id: the trace's root.
    pub root: bool,
    /// What holding this chunk costs in memory: the span, the chunk itself, and for the first
    /// chunk of a group the group's headers.
    pub cost: usize,
}

/// Memory a buffered chunk costs beyond its span bytes: the chunk in its trace's list and the
/// span's own allocation (measured with the allocator's size classes in mind).
pub const CHUNK_OVERHEAD: usize = 96;
/// Memory a group costs beyond its header bytes (the Arc, two buffers, the context).
pub const GROUP_OVERHEAD: usize = 256;

/// Field numbers (opentelemetry/proto/trace/v1/trace.proto and the collector service).
const REQ_RESOURCE_SPANS: u64 = 1;
const RS_SCOPE_SPANS: u64 = 2;
const SS_SPANS: u64 = 2;
const SPAN_TRACE_ID: u64 = 1;
const SPAN_PARENT_SPAN_ID: u64 = 4;

/// The shard a trace id belongs to (FNV-1a, so hostile ids cannot all pick one shard any more
/// easily than random ones).
pub fn shard_of(trace_id: &[u8; 16], shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in trace_id {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

/// A trace id as a fixed key: ids of the wrong length (invalid per OTLP) are padded or cut,
/// so they still group deterministically.
fn trace_key(id: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 16];
    let n = id.len().min(16);
    k[..n].copy_from_slice(&id[..n]);
    k
}

/// Splits `buf` into chunks, appending each to `out[shard_of(trace id)]`.
pub fn split(
    buf: &Bytes,
    context: &Arc<Context>,
    shards: usize,
    out: &mut [Vec<Chunk>],
) -> Result<usize, WireError> {
    let mut n = 0usize;
    let budget = context.charge.as_ref().map(|c| Arc::clone(c.budget()));
    let context = if context.charge.is_some() {
        Arc::new(Context {
            charge: None,
            ..(**context).clone()
        })
    } else {
        Arc::clone(context)
    };
    let context = &context;
    wire::for_each_field(buf, |num, _, rs, whole_rs| {
        if num != REQ_RESOURCE_SPANS || whole_rs.is_empty() {
            return Ok(());
        }
        let mut resource_hdr = Vec::new();
        wire::for_each_field(rs, |f, _, _, whole| {
            if f != RS_SCOPE_SPANS {
                resource_hdr.extend_from_slice(whole);
            }
            Ok(())
        })?;
        let resource = Bytes::from(resource_hdr);
        wire::for_each_field(rs, |f, _, ss, _| {
            if f != RS_SCOPE_SPANS {
                return Ok(());
            }
            let mut scope_hdr = Vec::new();
            wire::for_each_field(ss, |g, _, _, whole| {
                if g != SS_SPANS {
                    scope_hdr.extend_from_slice(whole);
                }
                Ok(())
            })?;
            let group = Arc::new(Group {
                context: Arc::clone(context),
                budget: budget.clone(),
                resource: resource.clone(),
                scope: Bytes::from(scope_hdr),
            });
            let mut group_cost = GROUP_OVERHEAD + group.resource.len() + group.scope.len();
            wire::for_each_field(ss, |g, _, span, _| {
                if g != SS_SPANS {
                    return Ok(());
                }
                let mut trace_id: &[u8] = &[];
                let mut root = true;
                wire::for_each_field(span, |h, _, data, _| {
                    match h {
                        SPAN_TRACE_ID => trace_id = data,
                        SPAN_PARENT_SPAN_ID => root = data.is_empty(),
                        _ => {}
                    }
                    Ok(())
                })?;
                let trace_id = trace_key(trace_id);
                let shard = shard_of(&trace_id, shards);
                if let Some(v) = out.get_mut(shard) {
                    v.push(Chunk {
                        trace_id,
                        group: Arc::clone(&group),
                        span: Bytes::copy_from_slice(span),
                        root,
                        cost: span.len() + CHUNK_OVERHEAD + std::mem::take(&mut group_cost),
                    });
                    n += 1;
                }
                Ok(())
            })
        })
    })?;
    Ok(n)
}

/// Joins chunks into an encoded ExportTraceServiceRequest (chunks keep their order; runs
/// sharing a resource or scope header are nested under one).
pub fn join(chunks: &[Chunk]) -> Bytes {
    // Runs of equal resource header, then within them runs of equal group.
    let same_resource = |a: &Chunk, b: &Chunk| {
        Arc::ptr_eq(&a.group, &b.group) || a.group.resource == b.group.resource
    };
    let same_scope =
        |a: &Chunk, b: &Chunk| Arc::ptr_eq(&a.group, &b.group) || a.group.scope == b.group.scope;
    let mut total = 0usize;
    let mut plan: Vec<(usize, usize, usize)> = Vec::new(); // (start, end, resource_spans_len)
    let mut i = 0;
    while i < chunks.len() {
        let mut j = i + 1;
        while j < chunks.len() && same_resource(&chunks[i], &chunks[j]) {
            j += 1;
        }
        let rs_len = resource_spans_len(&chunks[i..j], &same_scope);
        total += wire::len_field_size(REQ_RESOURCE_SPANS, rs_len);
        plan.push((i, j, rs_len));
        i = j;
    }
    let mut out = Vec::with_capacity(total);
    for (start, end, rs_len) in plan {
        let run = &chunks[start..end];
        wire::put_len_header(&mut out, REQ_RESOURCE_SPANS, rs_len);
        out.extend_from_slice(&run[0].group.resource);
        let mut a = 0;
        while a < run.len() {
            let mut b = a + 1;
            while b < run.len() && same_scope(&run[a], &run[b]) {
                b += 1;
            }
            let ss_len = scope_spans_len(&run[a..b]);
            wire::put_len_header(&mut out, RS_SCOPE_SPANS, ss_len);
            out.extend_from_slice(&run[a].group.scope);
            for c in &run[a..b] {
                wire::put_len_header(&mut out, SS_SPANS, c.span.len());
                out.extend_from_slice(&c.span);
            }
            a = b;
        }
    }
    Bytes::from(out)
}

fn scope_spans_len(run: &[Chunk]) -> usize {
    run[0].group.scope.len()
        + run
            .iter()
            .map(|c| wire::len_field_size(SS_SPANS, c.span.len()))
            .sum::<usize>()
}

fn resource_spans_len(run: &[Chunk], same_scope: &impl Fn(&Chunk, &Chunk) -> bool) -> usize {
    let mut len = run[0].group.resource.len();
    let mut a = 0;
    while a < run.len() {
        let mut b = a + 1;
        while b < run.len() && same_scope(&run[a], &run[b]) {
            b += 1;
        }
        len += wire::len_field_size(RS_SCOPE_SPANS, scope_spans_len(&run[a..b]));
        a = b;
    }
    len
}
