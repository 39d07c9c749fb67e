//! Extensions: components outside pipelines.
pub mod auth;
pub mod health_check;
