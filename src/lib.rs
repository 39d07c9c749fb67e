//! weir: a gateway collector for OpenTelemetry data.
pub mod config;
