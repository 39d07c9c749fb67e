//! Configuration: the loader (files, env, merge), the model and validation.
//!
//! Two phases, as DESIGN.md says: [`load`] parses and validates without side effects (what
//! `weir validate` and a reload run); building the graph binds and spawns.
pub mod loader;
pub mod model;
pub mod units;

use std::path::PathBuf;

use loader::{ConfigErrors, SourceFile};
use model::Config;

/// The config weir runs when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.yaml");
pub const DEFAULT_CONFIG_NAME: &str = "config/default.yaml (embedded)";

/// Loads, merges and validates the given files (the embedded default when there are none).
pub fn load(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let loaded = if paths.is_empty() {
        loader::load_sources(
            &[SourceFile {
                name: DEFAULT_CONFIG_NAME.into(),
                text: DEFAULT_CONFIG.into(),
            }],
            &|k| std::env::var(k).ok(),
        )?
    } else {
        loader::load_files(paths)?
    };
    Config::from_loaded(&loaded)
}
