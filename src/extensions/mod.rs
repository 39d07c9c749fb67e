//! Extensions: components outside pipelines.
pub mod auth;
pub mod file_storage;
pub mod health_check;
pub mod pprof;
pub mod zpages;
