//! weir: a gateway collector for OpenTelemetry data.
//!
//! Data flows `receiver → pipeline inbox → processors → exporter queue → exporter`, every
//! channel bounded, every drop counted. See DESIGN.md beside the repository.
pub mod app;
pub mod compression;
pub mod config;
pub mod connectors;
pub mod exporters;
pub mod extensions;
pub mod grpc;
pub mod net;
pub mod ottl;
pub mod pdata;
pub mod pipeline;
pub mod processors;
pub mod receivers;
pub mod telemetry;
pub mod tls;
