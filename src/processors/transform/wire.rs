//! The transform processor on encoded traces and logs: each span or log record is decoded
//! only in the fields its statements read or change (its [`Footprint`]), the statements run
//! on that partial item, and the item is written back as the fields it came with plus the
//! edited ones. Resources and scopes are decoded whole (one per many items). Nothing else is
//! decoded or allocated per item, so a statement redacting one attribute costs about one
//! attribute list's decode and encode per span, not the span's.
//!
//! Running all groups item by item (rather than each group over the whole request, as the
//! decoded path does) gives the same result only when no group can see another item's
//! edits: [`WirePlan::new`] accepts groups ordered resource, scope, then span/log, where no
//! group changes a level above its own; anything else (and any request whose bytes do not
//! walk cleanly) takes the decoded path.
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::ottl::{ContextKind, Footprint};
use crate::pdata::wire;

use super::Group;

const LEN: u8 = 2;
/// `Resource*.resource`, `Scope*.scope` are field 1; `Resource*.scope_*` and
/// `Scope*.spans`/`log_records` field 2.
const OUTER: u64 = 1;
const INNER: u64 = 2;

/// Whether a signal's groups can run on the wire, and what they need decoded.
#[derive(Debug, Clone)]
pub(super) struct WirePlan {
    reach: Footprint,
    /// The item's attributes field: `Span.attributes` 9, `LogRecord.attributes` 6.
    attrs_field: u64,
    /// A resource group may change the resource: written back from its decoded form.
    encode_resource: bool,
    encode_scope: bool,
}

fn level(c: ContextKind) -> u8 {
    match c {
        ContextKind::Resource => 0,
        ContextKind::Scope => 1,
        _ => 2,
    }
}

impl WirePlan {
    pub(super) fn new(groups: &[Group], attrs_field: u64) -> Option<WirePlan> {
        let mut plan = WirePlan {
            reach: Footprint::default(),
            attrs_field,
            encode_resource: false,
            encode_scope: false,
        };
        let mut last = 0;
        for g in groups {
            let l = level(g.ctx);
            if l < last {
                return None;
            }
            last = l;
            let mut f = Footprint::default();
            g.statements.iter().for_each(|s| f.add_statement(s));
            g.conditions
                .conditions()
                .iter()
                .for_each(|c| f.add_condition(c));
            if f.opaque || (l > 0 && f.writes_resource) || (l > 1 && f.writes_scope) {
                return None;
            }
            if g.ctx == ContextKind::SpanEvent {
                f.item_fields |= 1 << 11;
            }
            plan.reach.merge(&f);
            plan.encode_resource |= l == 0;
            plan.encode_scope |= l == 1;
        }
        Some(plan)
    }

    fn wants(&self, number: u64, data: &[u8]) -> bool {
        self.reach.wants(self.attrs_field, number, data)
    }
}

/// Buffers reused from request to request.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    picked: Vec<u8>,
    resource_body: Vec<u8>,
    scope_body: Vec<u8>,
}

/// Why the wire path gave up on a request: the caller decodes it instead.
#[derive(Debug)]
pub(super) struct GiveUp;

impl From<wire::WireError> for GiveUp {
    fn from(_: wire::WireError) -> GiveUp {
        GiveUp
    }
}

impl From<wire::PartError> for GiveUp {
    fn from(_: wire::PartError) -> GiveUp {
        GiveUp
    }
}

impl From<prost::DecodeError> for GiveUp {
    fn from(_: prost::DecodeError) -> GiveUp {
        GiveUp
    }
}

/// The request's resource and scope statements.
pub(super) trait Outer {
    fn resource(&self, resource: &mut Option<Resource>);
    fn scope(&self, resource: &mut Option<Resource>, scope: &mut Option<InstrumentationScope>);
}

/// The request's statements, level by level; `M` is its item.
pub(super) trait Run<M>: Outer {
    fn item(
        &self,
        resource: &mut Option<Resource>,
        scope: &mut Option<InstrumentationScope>,
        item: &mut M,
    );
}

/// Rewrites an encoded Export{Trace,Logs}ServiceRequest with `run`'s statements; `M` is its
/// item (`Span`, `LogRecord`).
pub(super) fn rewrite<M: Message + Default>(
    buf: &[u8],
    plan: &WirePlan,
    run: &impl Run<M>,
    s: &mut Scratch,
) -> Result<Vec<u8>, GiveUp> {
    let mut out = Vec::with_capacity(buf.len() + buf.len() / 16 + 64);
    let mut body = std::mem::take(&mut s.resource_body);
    let result = (|| {
        for f in wire::fields(buf) {
            let (n, wt, data, whole) = f?;
            if n == OUTER && wt == LEN {
                body.clear();
                resource_entry(data, plan, run, s, &mut body)?;
                wire::put_len_header(&mut out, OUTER, body.len());
                out.extend_from_slice(&body);
            } else {
                out.extend_from_slice(whole);
            }
        }
        Ok(())
    })();
    s.resource_body = body;
    result.map(|()| out)
}

/// One `Resource*` message: its resource decoded, its resource statements run, its scopes
/// rewritten.
fn resource_entry<M: Message + Default>(
    rs: &[u8],
    plan: &WirePlan,
    run: &impl Run<M>,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<(), GiveUp> {
    let mut resource = wire::decode_resource(rs, &mut s.picked)?;
    run.resource(&mut resource);
    let mut written = false;
    let mut scope_body = std::mem::take(&mut s.scope_body);
    let result = (|| {
        for f in wire::fields(rs) {
            let (n, wt, data, whole) = f?;
            if n == OUTER && plan.encode_resource {
                if !written {
                    written = true;
                    put_message(out, OUTER, resource.as_ref());
                }
            } else if n == INNER && wt == LEN {
                scope_body.clear();
                scope_entry(data, plan, run, &mut resource, s, &mut scope_body)?;
                wire::put_len_header(out, INNER, scope_body.len());
                out.extend_from_slice(&scope_body);
            } else {
                out.extend_from_slice(whole);
            }
        }
        if plan.encode_resource && !written {
            put_message(out, OUTER, resource.as_ref());
        }
        Ok(())
    })();
    s.scope_body = scope_body;
    result
}

/// Appends message `m` as LEN field `number` (nothing for `None`).
fn put_message<T: Message>(out: &mut Vec<u8>, number: u64, m: Option<&T>) {
    if let Some(m) = m {
        wire::put_len_header(out, number, m.encoded_len());
        // A Vec grows as needed: encoding into it cannot fail.
        let _ = m.encode(out);
    }
}

/// One `Scope*` message: its scope decoded, its scope statements run, its items rewritten.
fn scope_entry<M: Message + Default>(
    ss: &[u8],
    plan: &WirePlan,
    run: &impl Run<M>,
    resource: &mut Option<Resource>,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<(), GiveUp> {
    let mut scope = wire::decode_scope(ss, &mut s.picked)?;
    run.scope(resource, &mut scope);
    let mut written = false;
    for f in wire::fields(ss) {
        let (n, wt, data, whole) = f?;
        if n == OUTER && plan.encode_scope {
            if !written {
                written = true;
                put_message(out, OUTER, scope.as_ref());
            }
        } else if n == INNER && wt == LEN {
            item(data, plan, run, resource, &mut scope, &mut s.picked, out)?;
        } else {
            out.extend_from_slice(whole);
        }
    }
    if plan.encode_scope && !written {
        put_message(out, OUTER, scope.as_ref());
    }
    Ok(())
}

/// One span or log record: the fields the statements need decoded, the statements run, the
/// item written as its other fields unchanged plus the edited ones where the first of them
/// stood.
fn item<M: Message + Default>(
    body: &[u8],
    plan: &WirePlan,
    run: &impl Run<M>,
    resource: &mut Option<Resource>,
    scope: &mut Option<InstrumentationScope>,
    picked: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), GiveUp> {
    picked.clear();
    let mut rest = 0usize;
    // The item's fields, walked once (a span has 16 kinds; more only when repeated).
    let mut seen: [(bool, &[u8]); 48] = [(false, &[]); 48];
    let mut count = 0usize;
    for f in wire::fields(body) {
        let (n, _, data, whole) = f?;
        let wanted = plan.wants(n, data);
        if wanted {
            picked.extend_from_slice(whole);
        } else {
            rest += whole.len();
        }
        if let Some(slot) = seen.get_mut(count) {
            *slot = (wanted, whole);
        }
        count += 1;
    }
    let mut m = M::decode(&picked[..])?;
    run.item(resource, scope, &mut m);
    let edited = m.encoded_len();
    wire::put_len_header(out, INNER, rest + edited);
    let mut written = false;
    let mut emit = |wanted: bool, whole: &[u8], out: &mut Vec<u8>| {
        if !wanted {
            out.extend_from_slice(whole);
        } else if !written {
            written = true;
            let _ = m.encode(out);
        }
    };
    if count <= seen.len() {
        for &(wanted, whole) in &seen[..count] {
            emit(wanted, whole, out);
        }
    } else {
        for f in wire::fields(body) {
            let (n, _, data, whole) = f?;
            emit(plan.wants(n, data), whole, out);
        }
    }
    if !written {
        let _ = m.encode(out);
    }
    Ok(())
}
