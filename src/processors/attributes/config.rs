//! Settings of the `attributes` and `resource` processors, with the Collector's keys.
use serde::Deserialize;

use crate::config::loader::Value;

/// `attributes`: actions on span, log record and data point attributes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributesConfig {
    pub actions: Vec<ActionConfig>,
    /// Only items matching this are changed.
    pub include: Option<Box<MatchConfig>>,
    /// Items matching this are left alone.
    pub exclude: Option<Box<MatchConfig>>,
}

/// `resource`: the same actions on resource attributes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceConfig {
    pub attributes: Vec<ActionConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Insert,
    Update,
    Upsert,
    Delete,
    Hash,
    Extract,
    Convert,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Insert => "insert",
            ActionKind::Update => "update",
            ActionKind::Upsert => "upsert",
            ActionKind::Delete => "delete",
            ActionKind::Hash => "hash",
            ActionKind::Extract => "extract",
            ActionKind::Convert => "convert",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    #[serde(default)]
    pub key: String,
    /// For `delete` and `hash`: a regex on keys; for `extract`: the regex (with named groups)
    /// applied to the value of `key`.
    #[serde(default)]
    pub pattern: Option<String>,
    pub action: ActionKind,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// `metadata.<key>` reads client metadata (needs the receiver's `include_metadata`).
    #[serde(default)]
    pub from_context: Option<String>,
    /// For `convert`: `int`, `double` or `string`.
    #[serde(default)]
    pub converted_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    #[default]
    Strict,
    Regexp,
}

/// The Collector's MatchProperties: every field given must match (and); within a list any
/// entry may match (or), except `attributes` and `resources`, which must all match.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    pub match_type: MatchType,
    /// Resource `service.name` values.
    pub services: Vec<String>,
    pub span_names: Vec<String>,
    /// `SPAN_KIND_SERVER`, ... (or `server`, ...).
    pub span_kinds: Vec<String>,
    pub log_bodies: Vec<String>,
    pub log_severity_texts: Vec<String>,
    pub metric_names: Vec<String>,
    pub attributes: Vec<KeyValueMatch>,
    pub resources: Vec<KeyValueMatch>,
    pub libraries: Vec<LibraryMatch>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyValueMatch {
    pub key: String,
    /// Absent: the key only has to exist.
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibraryMatch {
    pub name: String,
    pub version: Option<String>,
}
