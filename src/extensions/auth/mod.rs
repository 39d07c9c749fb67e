//! Authenticator extensions, referenced the Collector's way (`auth: {authenticator: <id>}` on
//! a receiver protocol or an exporter):
//! - `bearertokenauth`: server checks `<header>: <scheme> <token>` against `token`, `tokens` or
//!   the token in `filename` (re-read when it changes); client sends it;
//! - `basicauth`: server checks `Authorization: Basic ...` against `htpasswd` (`file` and/or
//!   `inline`; bcrypt, `{SHA}` or plain entries); client sends `client_auth`;
//! - `headers_setter` (client): headers from the request's context (`from_context`, the
//!   client's metadata) or a fixed `value`, with `insert | update | upsert | delete`.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::pipeline::registry::{Decode, ExtensionSettings, Factory, Handles, Stability};

pub static BEARER_FACTORY: Factory = Factory {
    type_name: "bearertokenauth",
    aliases: &[],
    stability: &[(Handles::Extension, Stability::Beta)],
    description: "bearer token authentication: receivers check it, exporters send it",
    decode: Decode::Extension(|b| {
        let c = b.decode_checked::<BearerTokenConfig>(|c| c.validate())?;
        Some(Box::new(AuthConfig::Bearer(c)))
    }),
};

pub static BASIC_FACTORY: Factory = Factory {
    type_name: "basicauth",
    aliases: &[],
    stability: &[(Handles::Extension, Stability::Beta)],
    description:
        "HTTP Basic authentication: receivers check htpasswd users, exporters send client_auth",
    decode: Decode::Extension(|b| {
        let c = b.decode_checked::<BasicAuthConfig>(|c| c.validate())?;
        Some(Box::new(AuthConfig::Basic(c)))
    }),
};

pub static HEADERS_SETTER_FACTORY: Factory = Factory {
    type_name: "headers_setter",
    aliases: &[],
    stability: &[(Handles::Extension, Stability::Alpha)],
    description: "exporter headers from the request's client metadata (e.g. forward X-Scope-OrgID)",
    decode: Decode::Extension(|b| {
        let c = b.decode_checked::<HeadersSetterConfig>(|c| c.validate())?;
        Some(Box::new(AuthConfig::HeadersSetter(c)))
    }),
};

impl ExtensionSettings for AuthConfig {
    fn authenticator(&self) -> Option<&AuthConfig> {
        Some(self)
    }
}

use crate::pdata::Context;

#[cfg(test)]
mod tests;

/// `bearertokenauth`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BearerTokenConfig {
    /// Prefix of the header value (default `Bearer`; empty: the token alone).
    pub scheme: String,
    /// Header carrying it (default `Authorization`).
    pub header: String,
    pub token: String,
    /// Several valid tokens (server); a client sends the first.
    pub tokens: Vec<String>,
    /// A file holding the token (whitespace around it ignored); re-read when it changes.
    pub filename: String,
}

impl Default for BearerTokenConfig {
    fn default() -> Self {
        BearerTokenConfig {
            scheme: "Bearer".into(),
            header: "Authorization".into(),
            token: String::new(),
            tokens: Vec::new(),
            filename: String::new(),
        }
    }
}

/// `basicauth`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuthConfig {
    /// Server side: the users.
    pub htpasswd: Option<Htpasswd>,
    /// Client side: the credentials sent.
    pub client_auth: Option<ClientCredentials>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Htpasswd {
    pub file: String,
    pub inline: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientCredentials {
    pub username: String,
    pub password: String,
}

/// `headers_setter`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersSetterConfig {
    pub headers: Vec<HeaderSetting>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderSetting {
    pub key: String,
    pub value: Option<String>,
    /// A key of the client's metadata (the receiver needs `include_metadata: true`, and a
    /// `batch` processor in between needs it in `metadata_keys`).
    pub from_context: Option<String>,
    /// Used when `from_context` finds nothing.
    pub default_value: Option<String>,
    pub action: HeaderAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderAction {
    Insert,
    Update,
    #[default]
    Upsert,
    Delete,
}

impl BearerTokenConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if !self.token.is_empty() && !self.tokens.is_empty() {
            errs.push((
                "tokens".into(),
                "either a single token or multiple tokens can be provided, not both".into(),
            ));
        }
        if self.token.is_empty() && self.tokens.is_empty() && self.filename.is_empty() {
            errs.push(("token".into(), "set token, tokens or filename".into()));
        }
        if !self.filename.is_empty() {
            if let Err(e) = std::fs::read_to_string(&self.filename) {
                errs.push((
                    "filename".into(),
                    format!("cannot read {:?}: {e}", self.filename),
                ));
            }
        }
        if http::HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            errs.push((
                "header".into(),
                format!("invalid header name {:?}", self.header),
            ));
        }
        errs
    }
}

impl BasicAuthConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.htpasswd.is_none() && self.client_auth.is_none() {
            errs.push((
                "htpasswd".into(),
                "set htpasswd (server) or client_auth (client)".into(),
            ));
        }
        if let Some(h) = &self.htpasswd {
            if let Err(e) = Users::load(h) {
                errs.push(("htpasswd".into(), e));
            }
        }
        errs
    }
}

impl HeadersSetterConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (i, h) in self.headers.iter().enumerate() {
            let at = format!("headers[{i}]");
            if http::HeaderName::from_bytes(h.key.as_bytes()).is_err() {
                errs.push((
                    format!("{at}.key"),
                    format!("invalid header name {:?}", h.key),
                ));
            }
            if h.action != HeaderAction::Delete && h.value.is_some() == h.from_context.is_some() {
                errs.push((
                    at.clone(),
                    "set exactly one of value and from_context".into(),
                ));
            }
            if let Some(v) = h.value.iter().chain(&h.default_value).next() {
                if http::HeaderValue::from_str(v).is_err() {
                    errs.push((at, "invalid header value".into()));
                }
            }
        }
        errs
    }
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `bearertokenauth`, `basicauth` or `mtls`.
    pub method: &'static str,
    /// The token (bearer), the user name (basic), the certificate's common name (mTLS).
    pub subject: Arc<str>,
}

/// Compares without an early exit, so timing does not tell how much of a secret matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Valid tokens, with the file re-read when it changed (looked at most once a second).
pub struct Tokens {
    fixed: Vec<String>,
    file: String,
    from_file: Mutex<(Instant, Option<SystemTime>, Vec<String>)>,
}

impl Tokens {
    fn new(cfg: &BearerTokenConfig) -> Tokens {
        let mut fixed: Vec<String> = cfg.tokens.clone();
        if !cfg.token.is_empty() {
            fixed.push(cfg.token.clone());
        }
        let t = Tokens {
            fixed,
            file: cfg.filename.clone(),
            from_file: Mutex::new((Instant::now(), None, Vec::new())),
        };
        t.refresh(true);
        t
    }

    fn refresh(&self, force: bool) {
        if self.file.is_empty() {
            return;
        }
        let mut g = self.from_file.lock().unwrap_or_else(|e| e.into_inner());
        if !force && g.0.elapsed() < Duration::from_secs(1) {
            return;
        }
        g.0 = Instant::now();
        let modified = std::fs::metadata(&self.file)
            .and_then(|m| m.modified())
            .ok();
        if !force && modified == g.1 {
            return;
        }
        match std::fs::read_to_string(&self.file) {
            Ok(s) => {
                g.1 = modified;
                g.2 = s
                    .split_whitespace()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .take(1)
                    .collect();
            }
            Err(e) => tracing::warn!("bearertokenauth: cannot re-read {:?}: {e}", self.file),
        }
    }

    fn valid(&self, token: &str) -> bool {
        self.refresh(false);
        let file = self.from_file.lock().unwrap_or_else(|e| e.into_inner());
        self.fixed
            .iter()
            .chain(file.2.iter())
            .any(|t| same(t.as_bytes(), token.as_bytes()))
    }

    fn first(&self) -> Option<String> {
        self.refresh(false);
        let file = self.from_file.lock().unwrap_or_else(|e| e.into_inner());
        file.2.first().or(self.fixed.first()).cloned()
    }
}

/// htpasswd users: name → hash.
pub struct Users(HashMap<String, String>);

impl Users {
    fn load(h: &Htpasswd) -> Result<Users, String> {
        let mut text = String::new();
        if !h.file.is_empty() {
            text = std::fs::read_to_string(&h.file)
                .map_err(|e| format!("file: cannot read {:?}: {e}", h.file))?;
            text.push('\n');
        }
        text.push_str(&h.inline);
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {}: expected user:password", n + 1));
            };
            if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
                return Err(format!(
                    "user {user:?}: MD5 (apr1) hashes are not supported; use bcrypt (htpasswd -B)"
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Users(users))
    }

    fn check(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.0.get(user) else {
            return false;
        };
        if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
            bcrypt::verify(password, hash).unwrap_or(false)
        } else if let Some(b64) = hash.strip_prefix("{SHA}") {
            use sha1::Digest;
            let digest = sha1::Sha1::digest(password.as_bytes());
            same(base64_encode(&digest).as_bytes(), b64.as_bytes())
        } else {
            same(hash.as_bytes(), password.as_bytes())
        }
    }
}

/// The server half of an authenticator: checks a request's headers.
pub enum ServerAuth {
    Bearer {
        header: String,
        scheme: String,
        tokens: Tokens,
    },
    Basic(Users),
}

/// The extensions `auth` may name, by their config.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthConfig {
    Bearer(BearerTokenConfig),
    Basic(BasicAuthConfig),
    HeadersSetter(HeadersSetterConfig),
}

impl AuthConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            AuthConfig::Bearer(_) => "bearertokenauth",
            AuthConfig::Basic(_) => "basicauth",
            AuthConfig::HeadersSetter(_) => "headers_setter",
        }
    }

    /// Why this authenticator cannot serve a receiver (`server`) or an exporter, if it
    /// cannot.
    pub fn unfit_for(&self, server: bool) -> Option<&'static str> {
        match (self, server) {
            (AuthConfig::HeadersSetter(_), true) => Some(
                "headers_setter sets an exporter's headers; a receiver needs bearertokenauth or basicauth",
            ),
            (AuthConfig::Basic(b), true) if b.htpasswd.is_none() => {
                Some("this basicauth has no htpasswd to check clients against")
            }
            (AuthConfig::Basic(b), false) if b.client_auth.is_none() => {
                Some("this basicauth has no client_auth to send")
            }
            _ => None,
        }
    }
}

/// `auth:` on a receiver protocol or an exporter.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthRef {
    pub authenticator: String,
    /// The extension's settings, filled in when the config is checked (so a change of the
    /// extension rebuilds the components that use it on reload).
    #[serde(skip)]
    pub resolved: Option<AuthConfig>,
}

impl ServerAuth {
    /// The server authenticator of `cfg`, or why it cannot be one.
    pub fn build(cfg: &AuthConfig) -> Result<ServerAuth, String> {
        match cfg {
            AuthConfig::Bearer(b) => Ok(ServerAuth::Bearer {
                header: b.header.clone(),
                scheme: b.scheme.clone(),
                tokens: Tokens::new(b),
            }),
            AuthConfig::Basic(b) => match &b.htpasswd {
                Some(h) => Users::load(h).map(ServerAuth::Basic),
                None => Err("basicauth without htpasswd cannot check clients".into()),
            },
            AuthConfig::HeadersSetter(_) => {
                Err("headers_setter is a client authenticator (for exporters)".into())
            }
        }
    }

    /// Checks the request whose header `name` has the value `get(name)`.
    pub fn check(&self, get: &dyn Fn(&str) -> Option<String>) -> Result<Identity, String> {
        match self {
            ServerAuth::Bearer {
                header,
                scheme,
                tokens,
            } => {
                let v = get(header).ok_or_else(|| format!("missing {header} header"))?;
                let token = if scheme.is_empty() {
                    v.as_str()
                } else {
                    v.strip_prefix(scheme.as_str())
                        .and_then(|r| r.strip_prefix(' '))
                        .ok_or_else(|| format!("{header} is not a {scheme} token"))?
                };
                if tokens.valid(token) {
                    Ok(Identity {
                        method: "bearertokenauth",
                        subject: Arc::from(token),
                    })
                } else {
                    Err("invalid token".into())
                }
            }
            ServerAuth::Basic(users) => {
                let v = get("authorization")
                    .ok_or_else(|| "missing Authorization header".to_string())?;
                let b64 = v
                    .strip_prefix("Basic ")
                    .ok_or_else(|| "Authorization is not Basic".to_string())?;
                let raw = base64_decode(b64.trim())
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| "malformed Basic credentials".to_string())?;
                let (user, pass) = raw
                    .split_once(':')
                    .ok_or_else(|| "malformed Basic credentials".to_string())?;
                if users.check(user, pass) {
                    Ok(Identity {
                        method: "basicauth",
                        subject: Arc::from(user),
                    })
                } else {
                    Err("invalid username or password".into())
                }
            }
        }
    }
}

/// The client half: headers an exporter adds to each request.
pub enum ClientAuth {
    Bearer {
        header: http::HeaderName,
        scheme: String,
        tokens: Tokens,
    },
    Basic(http::HeaderValue),
    Setter(Vec<(http::HeaderName, HeaderSetting)>),
}

impl ClientAuth {
    /// An exporter's `auth:` (resolved at validation) as its authenticator, if any.
    pub fn for_ref(r: &Option<AuthRef>) -> Result<Option<Arc<ClientAuth>>, String> {
        r.as_ref()
            .and_then(|a| a.resolved.as_ref())
            .map(ClientAuth::build)
            .transpose()
    }

    pub fn build(cfg: &AuthConfig) -> Result<Arc<ClientAuth>, String> {
        let auth = match cfg {
            AuthConfig::Bearer(b) => ClientAuth::Bearer {
                header: http::HeaderName::from_bytes(b.header.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("invalid header name {:?}", b.header))?,
                scheme: b.scheme.clone(),
                tokens: Tokens::new(b),
            },
            AuthConfig::Basic(b) => {
                let c = b
                    .client_auth
                    .as_ref()
                    .ok_or("basicauth without client_auth cannot authenticate an exporter")?;
                let v = format!(
                    "Basic {}",
                    base64_encode(format!("{}:{}", c.username, c.password).as_bytes())
                );
                ClientAuth::Basic(
                    http::HeaderValue::from_str(&v).map_err(|_| "invalid credentials")?,
                )
            }
            AuthConfig::HeadersSetter(h) => ClientAuth::Setter(
                h.headers
                    .iter()
                    .map(|s| {
                        http::HeaderName::from_bytes(s.key.to_ascii_lowercase().as_bytes())
                            .map(|n| (n, s.clone()))
                            .map_err(|_| format!("invalid header name {:?}", s.key))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Arc::new(auth))
    }

    /// Applies this authenticator's headers for a request carrying `ctx`'s data.
    pub fn apply(&self, ctx: &Context, headers: &mut http::HeaderMap) {
        match self {
            ClientAuth::Bearer {
                header,
                scheme,
                tokens,
            } => {
                let Some(t) = tokens.first() else { return };
                let v = if scheme.is_empty() {
                    t
                } else {
                    format!("{scheme} {t}")
                };
                if let Ok(v) = http::HeaderValue::from_str(&v) {
                    headers.insert(header.clone(), v);
                }
            }
            ClientAuth::Basic(v) => {
                headers.insert(http::header::AUTHORIZATION, v.clone());
            }
            ClientAuth::Setter(list) => {
                for (name, s) in list {
                    let value = match (&s.value, &s.from_context) {
                        (Some(v), _) => Some(v.as_str()),
                        (None, Some(k)) => ctx.metadata_value(k).or(s.default_value.as_deref()),
                        (None, None) => None,
                    };
                    let present = headers.contains_key(name);
                    match s.action {
                        HeaderAction::Delete => {
                            headers.remove(name);
                        }
                        HeaderAction::Insert if present => {}
                        HeaderAction::Update if !present => {}
                        _ => {
                            if let Some(v) = value.and_then(|v| http::HeaderValue::from_str(v).ok())
                            {
                                headers.insert(name.clone(), v);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Standard base64, padding optional; `None` when malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}
