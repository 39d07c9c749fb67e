//! The `batch` processor: groups batches into larger ones by size and time, keeping
//! partitions by client metadata (`metadata_keys`) and tenant apart.
//!
//! Encoded OTLP requests merge by concatenation (protobuf repeated fields append), so a
//! pass-through pipeline batches without decoding. Only a split (`send_batch_max_size`)
//! decodes. It must never mix two tenants or two metadata values in one batch.
pub mod config;
pub mod split;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::Instant;

use crate::config::loader::Body;
use crate::pdata::{Batch, Context, Payload};
use crate::pipeline::registry::{
    all_signals, BuildEnv, Carry, Decode, Factory, ProcessorSettings, Stability,
};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Registry};
use config::BatchConfig;

pub static FACTORY: Factory = Factory {
    type_name: "batch",
    aliases: &[],
    stability: &all_signals(Stability::Beta),
    description: "groups data into batches by size and time",
    decode: Decode::Processor(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ProcessorSettings>> {
    let c = b.decode_checked::<BatchConfig>(|c| match c.validate() {
        Ok(()) => Vec::new(),
        Err((k, m)) => vec![(k.to_string(), m)],
    })?;
    Some(Box::new(c))
}

impl ProcessorSettings for BatchConfig {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor> {
        Box::new(BatchProcessor::new(id, self.clone(), env.registry))
    }
    fn carry(&self) -> Carry {
        Carry::StateWhenOutputsStay
    }
}

type Key = (Option<Arc<str>>, Vec<Option<String>>);

struct Partition {
    parts: Vec<Batch>,
    items: usize,
    deadline: Option<Instant>,
    context: Arc<Context>,
}

pub struct BatchProcessor {
    cfg: BatchConfig,
    parts: HashMap<Key, Partition>,
    dropped: Counter,
    id: Arc<str>,
}

impl BatchProcessor {
    /// The batching of an exporter's `sending_queue.batch`: by items, or by bytes when
    /// `in_bytes`.
    pub fn for_queue(
        id: &str,
        flush_timeout: std::time::Duration,
        min_size: usize,
        max_size: usize,
        in_bytes: bool,
        registry: &Registry,
    ) -> Self {
        let cfg = BatchConfig {
            timeout: flush_timeout.into(),
            send_batch_size: min_size,
            send_batch_max_size: max_size,
            sizer_bytes: in_bytes,
            ..Default::default()
        };
        BatchProcessor::new(id, cfg, registry)
    }

    pub fn new(id: &str, cfg: BatchConfig, registry: &Registry) -> Self {
        BatchProcessor {
            dropped: registry.counter(
                "weir_processor_dropped_items_total",
                "Items a processor could not handle and dropped.",
                &[("processor", id)],
            ),
            id: Arc::from(id),
            cfg,
            parts: HashMap::new(),
        }
    }

    fn key(&self, ctx: &Context) -> Key {
        let values = self
            .cfg
            .metadata_keys
            .iter()
            .map(|k| ctx.metadata_value(k).map(str::to_owned))
            .collect();
        (ctx.tenant.clone(), values)
    }

    /// The context an outgoing batch carries: only what partitions it.
    fn context_for(&self, ctx: &Context) -> Arc<Context> {
        let metadata = if self.cfg.metadata_keys.is_empty() {
            None
        } else {
            Some(Arc::new(
                self.cfg
                    .metadata_keys
                    .iter()
                    .filter_map(|k| {
                        ctx.metadata_value(k)
                            .map(|v| (k.to_ascii_lowercase(), v.to_owned()))
                    })
                    .collect(),
            ))
        };
        Arc::new(Context {
            receiver: ctx.receiver.clone(),
            transport: ctx.transport,
            metadata,
            tenant: ctx.tenant.clone(),
            auth: None,
            charge: None,
            ack: None,
        })
    }

    /// A batch's size as `send_batch_size` counts it: items, or encoded bytes.
    fn size(&self, b: &Batch) -> usize {
        if self.cfg.sizer_bytes {
            b.encoded_len()
        } else {
            b.items
        }
    }

    /// Splits `front` (decoded) until every piece is within `max` bytes, or one item.
    fn split_to_bytes(&self, front: Batch, max: usize, out: &mut Vec<Batch>) {
        let mut stack = vec![front];
        while let Some(mut b) = stack.pop() {
            if b.items <= 1 || b.encoded_len() <= max {
                out.push(b);
                continue;
            }
            let n = b.items / 2;
            let half = split::split_off_front(&mut b, n);
            stack.push(b);
            stack.push(half);
        }
    }

    fn emit(&self, p: &mut Partition, out: &mut Vec<Batch>) {
        if p.items == 0 && p.parts.is_empty() {
            return;
        }
        let max = self.cfg.send_batch_max_size;
        let held = held(&p.parts);
        // The merged batch holds its parts' write-ahead-log records.
        let ack =
            crate::pdata::ack::Ack::merge(p.parts.iter().filter_map(|b| b.context.ack.as_ref()));
        let merged = merge(std::mem::take(&mut p.parts), p.context.clone());
        let Some(mut merged) = merged else { return };
        // The merged batch holds what its parts held against the memory budget.
        if held.is_some() || ack.is_some() {
            merged.context = Arc::new(Context {
                charge: held.map(|(budget, bytes)| Arc::new(budget.force(bytes))),
                ack,
                ..(*merged.context).clone()
            });
        }
        p.items = 0;
        if max == 0 || self.size(&merged) <= max {
            out.push(merged);
            return;
        }
        if let Err(e) = merged.decode() {
            // Only the resources that do not decode are lost, never their neighbours.
            self.dropped.add(e.lost as u64);
            tracing::error!(processor = %self.id, "dropping {} items: {e}", e.lost);
            if merged.items == 0 {
                return;
            }
        }
        // Everything but the tail goes out in max-sized pieces; the tail waits for more.
        if self.cfg.sizer_bytes {
            while merged.items > 0 && merged.encoded_len() > max {
                // About `max` bytes of items at the batch's mean item size, then halved
                // until within `max` (an item bigger than `max` goes alone).
                let n = (max as u128 * merged.items as u128 / merged.encoded_len().max(1) as u128)
                    .clamp(1, merged.items as u128) as usize;
                if n >= merged.items {
                    break;
                }
                let front = split::split_off_front(&mut merged, n);
                self.split_to_bytes(front, max, out);
            }
            if merged.encoded_len() > max {
                self.split_to_bytes(merged, max, out);
                return;
            }
        } else {
            while merged.items > max {
                out.push(split::split_off_front(&mut merged, max));
            }
        }
        let size = self.size(&merged);
        if size >= self.cfg.send_batch_size || size == max {
            out.push(merged);
        } else {
            p.items = size;
            p.parts.push(merged);
        }
    }
}

/// The memory budget `parts` are charged to and the bytes of their charges, the decoded
/// forms' included (each counted once: parts split from one request share its charges).
fn held(parts: &[Batch]) -> Option<(Arc<crate::pipeline::budget::Budget>, usize)> {
    let mut charges: Vec<&Arc<crate::pipeline::budget::Charge>> = parts
        .iter()
        .flat_map(|b| b.context.charge.iter().chain(b.held.iter()))
        .collect();
    let budget = Arc::clone(charges.first()?.budget());
    charges.sort_by_key(|c| Arc::as_ptr(c));
    charges.dedup_by(|a, b| Arc::ptr_eq(a, b));
    Some((budget, charges.iter().map(|c| c.bytes()).sum()))
}

/// Joins batches into one, concatenating encoded payloads and appending decoded ones.
fn merge(mut parts: Vec<Batch>, context: Arc<Context>) -> Option<Batch> {
    if parts.len() <= 1 {
        return parts.pop().map(|mut b| {
            b.context = context;
            b
        });
    }
    let signal = parts[0].signal;
    let items = parts.iter().map(|b| b.items).sum();
    let all_decoded = parts
        .iter()
        .all(|b| !matches!(b.payload, Payload::Encoded(_)));
    let payload = if all_decoded {
        let mut iter = parts.into_iter();
        let mut first = iter.next()?.payload;
        for b in iter {
            match (&mut first, b.payload) {
                (Payload::Traces(a), Payload::Traces(b)) => {
                    a.resource_spans.extend(b.resource_spans)
                }
                (Payload::Metrics(a), Payload::Metrics(b)) => {
                    a.resource_metrics.extend(b.resource_metrics)
                }
                (Payload::Logs(a), Payload::Logs(b)) => a.resource_logs.extend(b.resource_logs),
                _ => {}
            }
        }
        first
    } else {
        let len = parts.iter().map(Batch::encoded_len).sum();
        let mut buf = BytesMut::with_capacity(len);
        for b in &parts {
            buf.extend_from_slice(&b.to_bytes());
        }
        Payload::Encoded(buf.freeze())
    };
    Some(Batch {
        signal,
        items,
        payload,
        context,
        held: None,
        compressed: None,
    })
}

impl Processor for BatchProcessor {
    fn reconfigure(
        &mut self,
        cfg: &dyn ProcessorSettings,
        _registry: &Arc<crate::telemetry::metrics::Registry>,
    ) -> bool {
        match cfg.as_any().downcast_ref::<BatchConfig>() {
            Some(c) => {
                // Partitions held keep their deadlines; new sizes apply from the next batch.
                self.cfg = c.clone();
                true
            }
            None => false,
        }
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let key = self.key(&batch.context);
        if !self.parts.contains_key(&key) {
            if self.parts.len() >= self.cfg.metadata_cardinality_limit.max(1) {
                self.dropped.add(batch.items as u64);
                tracing::error!(
                    processor = %self.id,
                    "dropping {} items: too many distinct metadata values (metadata_cardinality_limit {})",
                    batch.items,
                    self.cfg.metadata_cardinality_limit
                );
                return;
            }
            let context = self.context_for(&batch.context);
            self.parts.insert(
                key.clone(),
                Partition {
                    parts: Vec::new(),
                    items: 0,
                    deadline: None,
                    context,
                },
            );
        }
        let Some(mut p) = self.parts.remove(&key) else {
            return;
        };
        p.items += self.size(&batch);
        p.parts.push(batch);
        if p.deadline.is_none() {
            p.deadline = Some(Instant::now() + self.cfg.timeout.0);
        }
        if p.items >= self.cfg.send_batch_size {
            self.emit(&mut p, out);
            p.deadline = if p.items > 0 {
                Some(Instant::now() + self.cfg.timeout.0)
            } else {
                None
            };
        }
        if !p.parts.is_empty() {
            self.parts.insert(key, p);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.parts.values().filter_map(|p| p.deadline).min()
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        let due: Vec<Key> = self
            .parts
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(mut p) = self.parts.remove(&k) {
                self.emit(&mut p, out);
                // A timed-out remainder goes out too.
                if !p.parts.is_empty() {
                    if let Some(b) = merge(std::mem::take(&mut p.parts), p.context.clone()) {
                        out.push(b);
                    }
                }
            }
        }
    }

    fn flush(&mut self, out: &mut Vec<Batch>) {
        let now = Instant::now();
        for p in self.parts.values_mut() {
            p.deadline = Some(now);
        }
        self.tick(now, out);
    }
}

#[cfg(test)]
mod tests;
