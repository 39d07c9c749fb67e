//! Configuration: the loader (files, env, merge), the model and validation.
pub mod loader;
pub mod units;
