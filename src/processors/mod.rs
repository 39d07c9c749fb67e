//! Processors: stages that look inside the data (or hold it, like `batch`).
pub mod attributes;
pub mod batch;
pub mod cardinality_limiter;
pub mod filter;
pub mod memory_limiter;
pub mod probabilistic_sampler;
pub mod tail_sampling;
pub mod tenant;
pub mod transform;

use std::sync::Arc;

use crate::pdata::{Batch, Context, Payload};
use crate::pipeline::Processor;
use crate::telemetry::metrics::{Counter, Registry};
use attributes::config::{AttributesConfig, ResourceConfig};
use attributes::{AttributesProcessor, ResourceProcessor};

/// A stage that edits decoded data in place with `apply`.
struct Editing<F> {
    id: Arc<str>,
    apply: F,
    dropped: Counter,
}

/// `from_context` lookups: `metadata.<key>` reads client metadata, as upstream does.
fn context_lookup(ctx: &Context) -> impl Fn(&str) -> Option<String> + '_ {
    move |key: &str| {
        let k = key.strip_prefix("metadata.").unwrap_or(key);
        ctx.metadata_value(k).map(str::to_owned)
    }
}

impl<F> Processor for Editing<F>
where
    F: FnMut(&mut Payload, &dyn Fn(&str) -> Option<String>) + Send,
{
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if let Err(e) = batch.decode() {
            self.dropped.add(e.lost as u64);
            tracing::error!(processor = %self.id, "dropping {} items: {e}", e.lost);
            if batch.items == 0 {
                return;
            }
        }
        let ctx = batch.context.clone();
        let lookup = context_lookup(&ctx);
        (self.apply)(&mut batch.payload, &lookup);
        out.push(batch);
    }
}

fn dropped_counter(id: &str, registry: &Registry) -> Counter {
    registry.counter(
        "weir_processor_dropped_items_total",
        "Items a processor could not handle and dropped.",
        &[("processor", id)],
    )
}

/// The `attributes` processor as a pipeline stage.
pub fn attributes_stage(
    id: &str,
    cfg: &AttributesConfig,
    registry: &Registry,
) -> Box<dyn Processor> {
    // The config was validated before the graph is built; a failure here cannot happen, but
    // if it did the stage passes data through unchanged rather than taking weir down.
    let p = AttributesProcessor::new(cfg).ok();
    Box::new(Editing {
        id: Arc::from(id),
        dropped: dropped_counter(id, registry),
        apply: move |payload: &mut Payload, ctx: &dyn Fn(&str) -> Option<String>| {
            let Some(p) = &p else { return };
            match payload {
                Payload::Traces(r) => p.apply_traces(r, ctx),
                Payload::Metrics(r) => p.apply_metrics(r, ctx),
                Payload::Logs(r) => p.apply_logs(r, ctx),
                Payload::Encoded(_) => {}
            }
        },
    })
}

/// The `resource` processor as a pipeline stage.
pub fn resource_stage(id: &str, cfg: &ResourceConfig, registry: &Registry) -> Box<dyn Processor> {
    let p = ResourceProcessor::new(cfg).ok();
    Box::new(Editing {
        id: Arc::from(id),
        dropped: dropped_counter(id, registry),
        apply: move |payload: &mut Payload, ctx: &dyn Fn(&str) -> Option<String>| {
            let Some(p) = &p else { return };
            match payload {
                Payload::Traces(r) => p.apply_traces(r, ctx),
                Payload::Metrics(r) => p.apply_metrics(r, ctx),
                Payload::Logs(r) => p.apply_logs(r, ctx),
                Payload::Encoded(_) => {}
            }
        },
    })
}
