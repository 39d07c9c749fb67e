//! Processors: stages that look inside the data (or hold it, like `batch`).
pub mod attributes;
pub mod batch;
pub mod cardinality_limiter;
pub mod deltatocumulative;
pub mod filter;
pub mod memory_limiter;
pub mod probabilistic_sampler;
pub mod tail_sampling;
pub mod tenant;
pub mod transform;
