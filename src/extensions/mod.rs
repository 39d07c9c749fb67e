//! Extensions: components outside pipelines.
pub mod health_check;
