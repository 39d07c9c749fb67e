//! TEMPORARY STUB (replaced by the config-loader branch).
pub use serde_yaml::{Mapping, Value};
pub struct SourceFile {
    pub name: String,
    pub text: String,
}
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);
impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}
impl std::error::Error for ConfigErrors {}
pub struct Loaded {
    pub root: Value,
}
impl Loaded {
    pub fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            line: None,
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn decode<T: serde::de::DeserializeOwned>(
        &self,
        base_path: &str,
        value: &Value,
    ) -> Result<T, ConfigError> {
        serde_yaml::from_value(value.clone()).map_err(|e| self.error(base_path, e.to_string()))
    }
}
pub fn load_files(paths: &[std::path::PathBuf]) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(&paths[0]).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: None,
            line: None,
            path: String::new(),
            message: e.to_string(),
        }])
    })?;
    load_sources(
        &[SourceFile {
            name: String::new(),
            text,
        }],
        &|_| None,
    )
}
pub fn load_sources(
    sources: &[SourceFile],
    _env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let root = serde_yaml::from_str(&sources[0].text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: None,
            line: None,
            path: String::new(),
            message: e.to_string(),
        }])
    })?;
    Ok(Loaded { root })
}
