//! Connectors: components that are an exporter of one pipeline and a receiver of others.
pub mod routing;
pub mod servicegraph;
pub mod spanmetrics;
pub mod sum;
