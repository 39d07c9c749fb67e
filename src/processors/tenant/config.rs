//! `tenant` processor settings.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One place a tenant can come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SourceConfig {
    /// `auth`: the client's bearer token, mapped through `tokens` / `tokens_file`.
    Named(String),
    /// `header: X-Scope-OrgID`: a request header (the receiver needs `include_metadata`).
    Header { header: String },
    /// `attribute: {key, map}`: a resource attribute, mapped (exact or regex → tenant; no map:
    /// the value itself).
    Attribute { attribute: AttributeSource },
    /// `static: shared`.
    Static {
        #[serde(rename = "static")]
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeSource {
    pub key: String,
    pub map: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    #[default]
    Default,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Tried in order; the first that yields a tenant wins.
    pub sources: Vec<SourceConfig>,
    pub missing: Missing,
    pub default_tenant: String,
    /// The resource attribute the tenant is written to (default `tenant.id`).
    pub attribute: String,
    /// When false, a tenant header that disagrees with the authenticated client's tenant
    /// is refused (the data is dropped and counted): one tenant cannot write as another.
    pub trust_client_header: bool,
    /// Bearer token -> tenant, inline.
    pub tokens: BTreeMap<String, String>,
    /// Bearer token -> tenant, from a file of `token tenant` lines (`#` comments). Re-read
    /// on reload.
    pub tokens_file: Option<PathBuf>,
    /// Authenticated identity -> tenant, for the `auth` source: the user name a `basicauth`
    /// authenticator accepted, or the token a `bearertokenauth` one accepted.
    pub identities: BTreeMap<String, String>,
    /// Per-tenant rates, enforced by the receivers before they accept (429 /
    /// RESOURCE_EXHAUSTED with Retry-After to the tenant over its budget, and no one else).
    pub rate_limits: Option<RateLimits>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub default: Limits,
    /// Tenant -> its own limits (replacing the default ones).
    pub overrides: BTreeMap<String, Limits>,
}

/// Per second; absent = no limit.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub spans_per_second: Option<u64>,
    pub data_points_per_second: Option<u64>,
    pub log_records_per_second: Option<u64>,
    pub bytes_per_second: Option<u64>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            sources: vec![SourceConfig::Header {
                header: "X-Scope-OrgID".into(),
            }],
            missing: Missing::Default,
            default_tenant: "anonymous".into(),
            attribute: "tenant.id".into(),
            trust_client_header: true,
            tokens: BTreeMap::new(),
            tokens_file: None,
            identities: BTreeMap::new(),
            rate_limits: None,
        }
    }
}
