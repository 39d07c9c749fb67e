//! The filter processor on encoded traces and logs: conditions are evaluated on each span or
//! log record decoded only in the fields they read ([`Footprint`]), resources and scopes
//! decoded whole (one per many items). When nothing matches, the request goes on as the bytes
//! received, untouched; otherwise the kept items are copied, as they came, into a new request.
//!
//! Only OTTL conditions on resources, scopes and items take this path; span event conditions
//! (which edit the spans they keep) and the legacy `include`/`exclude` form take the decoded
//! one, as do bytes that do not walk cleanly.
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::ottl::{ConditionSet, Footprint};
use crate::pdata::wire::{self, PartError};

const LEN: u8 = 2;
/// `Resource*.scope_*`, `Scope*.spans`/`log_records`.
const INNER: u64 = 2;

/// What of an item `conditions` read; `None` when they need a decoded request.
pub(super) fn reach(conditions: &ConditionSet) -> Option<Footprint> {
    let mut f = Footprint::default();
    conditions
        .conditions()
        .iter()
        .for_each(|c| f.add_condition(c));
    (!f.opaque).then_some(f)
}

/// One signal's conditions, level by level.
pub(super) struct Levels<'a, M> {
    pub resource: &'a ConditionSet,
    pub scope: &'a ConditionSet,
    pub item: &'a ConditionSet,
    pub reach: Footprint,
    /// The item's attributes field: `Span.attributes` 9, `LogRecord.attributes` 6.
    pub attrs_field: u64,
    pub eval: fn(&ConditionSet, Option<&Resource>, Option<&InstrumentationScope>, &M) -> bool,
}

/// What filtering an encoded request came to.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    /// Nothing matched: the request goes on as it is.
    Unchanged,
    /// The kept items as a new request (empty when nothing is left), and how many items went.
    Filtered(Vec<u8>, usize),
}

/// Filters an encoded Export{Trace,Logs}ServiceRequest; `M` is its item.
pub(super) fn filter<M: prost::Message + Default>(
    buf: &[u8],
    levels: &Levels<'_, M>,
    scratch: &mut Vec<u8>,
) -> Result<Outcome, PartError> {
    // Pass 1: a keep flag for each resource, scope and item walked, in walk order.
    let mut keep: Vec<bool> = Vec::new();
    let mut dropped = 0usize;
    let mut changed = false;
    for f in wire::fields(buf) {
        let (n, wt, rs, _) = f?;
        if n != 1 || wt != LEN {
            continue;
        }
        let res = wire::decode_resource(rs, scratch)?;
        if levels.resource.eval_resource(res.as_ref()) {
            keep.push(false);
            changed = true;
            dropped += wire::count_resource_items(crate::pdata::Signal::Traces, rs)?;
            continue;
        }
        let at = keep.len();
        keep.push(false);
        let mut any_scope = false;
        for f in wire::fields(rs) {
            let (n, wt, ss, _) = f?;
            if n != INNER || wt != LEN {
                continue;
            }
            let scope = wire::decode_scope(ss, scratch)?;
            let items =
                || wire::fields(ss).filter(|f| matches!(f, Ok((INNER, LEN, _, _)) | Err(_)));
            if levels.scope.eval_scope(res.as_ref(), scope.as_ref()) {
                keep.push(false);
                changed = true;
                for f in items() {
                    f?;
                    dropped += 1;
                }
                continue;
            }
            let s_at = keep.len();
            keep.push(true);
            if levels.item.is_empty() {
                // No item conditions: the scope stays as it is.
                any_scope = true;
                continue;
            }
            let mut any_item = false;
            for f in items() {
                let (_, _, body, _) = f?;
                let item: M = wire::decode_part(
                    body,
                    |n, data| levels.reach.wants(levels.attrs_field, n, data),
                    scratch,
                )?;
                let gone = (levels.eval)(levels.item, res.as_ref(), scope.as_ref(), &item);
                keep.push(!gone);
                any_item |= !gone;
                if gone {
                    dropped += 1;
                    changed = true;
                }
            }
            if !any_item {
                // A scope left without items goes, as in the decoded form (pass 2 skips
                // it whole, so its items' flags go too).
                keep.truncate(s_at);
                keep.push(false);
                changed = true;
            }
            any_scope |= any_item;
        }
        if !any_scope {
            // A resource left without scopes goes, as in the decoded form (pass 2 skips it
            // whole, so its scopes' and items' flags go too).
            keep.truncate(at);
            keep.push(false);
            changed = true;
        } else {
            keep[at] = true;
        }
    }
    if !changed {
        return Ok(Outcome::Unchanged);
    }
    // Pass 2: the kept parts, copied as they came.
    let mut flags = keep.into_iter();
    let mut next = || flags.next().unwrap_or(false);
    let mut out = Vec::with_capacity(buf.len());
    let mut resources = 0usize;
    let mut rs_body = Vec::new();
    let mut ss_body = Vec::new();
    for f in wire::fields(buf) {
        let (n, wt, rs, whole) = f?;
        if n != 1 || wt != LEN {
            out.extend_from_slice(whole);
            continue;
        }
        if !next() {
            continue;
        }
        rs_body.clear();
        for f in wire::fields(rs) {
            let (n, wt, ss, whole) = f?;
            if n != INNER || wt != LEN {
                rs_body.extend_from_slice(whole);
                continue;
            }
            if !next() {
                continue;
            }
            if levels.item.is_empty() {
                rs_body.extend_from_slice(whole);
                continue;
            }
            ss_body.clear();
            for f in wire::fields(ss) {
                let (n, wt, _, whole) = f?;
                if (n, wt) != (INNER, LEN) || next() {
                    ss_body.extend_from_slice(whole);
                }
            }
            wire::put_len_header(&mut rs_body, INNER, ss_body.len());
            rs_body.extend_from_slice(&ss_body);
        }
        wire::put_len_header(&mut out, 1, rs_body.len());
        out.extend_from_slice(&rs_body);
        resources += 1;
    }
    if resources == 0 {
        // Nothing left (other top-level fields do not make a request worth forwarding).
        out.clear();
    }
    Ok(Outcome::Filtered(out, dropped))
}
