//! Pipelines: the component traits, the graph built from a validated config, and the tasks
//! that move batches from receivers through processors to exporters.
//!
//! Every channel here is bounded. A receiver hands a batch to every pipeline it feeds before
//! it answers its client; when an inbox stays full the client is refused with a retryable
//! error rather than anything being dropped.
pub mod budget;
pub mod graph;
pub mod inbox;
pub mod registry;

use std::sync::Arc;

use tokio::time::Instant;

use crate::pdata::Batch;
use crate::telemetry::metrics::Registry;

/// A processor stage. Runs on its pipeline's task, one batch at a time, in order.
pub trait Processor: Send {
    /// Takes one batch and pushes whatever is ready downstream into `out`.
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>);
    /// When this stage next wants [`Processor::tick`] called.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// Called at or after [`Processor::deadline`], and whenever a stage signals the
    /// pipeline's wake-up `Notify` (handed to stages that release data on their own, like
    /// tail sampling's worker threads). A stage with nothing due does nothing.
    fn tick(&mut self, _now: Instant, _out: &mut Vec<Batch>) {}
    /// Called once at shutdown: push out everything held.
    fn flush(&mut self, _out: &mut Vec<Batch>) {}
    /// A config reload changed this stage's settings (same id, same type): apply them and
    /// keep what it holds. Stages that hold nothing return false and are rebuilt instead.
    fn reconfigure(
        &mut self,
        _cfg: &dyn registry::ProcessorSettings,
        _registry: &Arc<Registry>,
    ) -> bool {
        false
    }
}
