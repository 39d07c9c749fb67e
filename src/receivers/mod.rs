//! Receivers: where data enters weir.
pub mod otlp;
