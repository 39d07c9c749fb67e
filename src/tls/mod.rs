//! TLS with the Collector's `configtls` keys, on rustls (the *ring* provider, no OpenSSL):
//! [`TlsServerSetting`] for receivers (TLS and mTLS), [`TlsClientSetting`] for exporters.
//!
//! Certificates and keys are read when a component is validated (so a bad file is a config
//! error with its path) and again when it is built (SIGHUP or `/-/reload` re-reads them).
//! `reload_interval` re-reads them periodically while running; connections already open keep
//! the certificate they started with.
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::units::DurationValue;

/// The keys both sides share (`configtls.Config`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsCommon {
    /// CA certificates (PEM file): on a client, the roots a server's certificate must chain to
    /// (instead of the system's); on a server, unused (as upstream).
    pub ca_file: String,
    /// The same as PEM text.
    pub ca_pem: String,
    /// Add the system's roots to `ca_file`/`ca_pem`.
    pub include_system_ca_certs_pool: bool,
    /// This side's certificate chain (PEM): a server's certificate, or a client's for mTLS.
    pub cert_file: String,
    pub cert_pem: String,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    pub key_pem: String,
    /// `"1.2"` (default) or `"1.3"`. `"1.0"`/`"1.1"` are accepted with a warning and mean 1.2:
    /// rustls offers no older version.
    pub min_version: String,
    /// `"1.3"` (default) or `"1.2"`.
    pub max_version: String,
    /// TLS 1.2 cipher suites by their Go names; TLS 1.3 suites are always on (as in Go).
    pub cipher_suites: Vec<String>,
    /// Key exchange groups by their Go names: `X25519`, `P256`, `P384`.
    pub curve_preferences: Vec<String>,
    /// Re-read the certificate files this often (0: only at start and reload).
    pub reload_interval: DurationValue,
    /// Go's `tpm_config`: not supported (refused when enabled).
    pub tpm_config: Option<serde_yaml::Value>,
    /// A digest of the files' contents when the config was read: a reload rebuilds the
    /// component when its certificate files changed, even if its settings did not.
    pub files_stamp: u64,
}

/// The YAML of a `tls` block: the common keys and `$extra`, decoded strictly, then split.
macro_rules! raw_tls {
    ($raw:ident { $($extra:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields, default)]
        struct $raw {
            ca_file: String,
            ca_pem: String,
            include_system_ca_certs_pool: bool,
            cert_file: String,
            cert_pem: String,
            key_file: String,
            key_pem: String,
            min_version: String,
            max_version: String,
            cipher_suites: Vec<String>,
            curve_preferences: Vec<String>,
            reload_interval: DurationValue,
            tpm_config: Option<serde_yaml::Value>,
            $($extra: $ty),*
        }

        impl $raw {
            fn common(&mut self) -> TlsCommon {
                TlsCommon {
                    ca_file: std::mem::take(&mut self.ca_file),
                    ca_pem: std::mem::take(&mut self.ca_pem),
                    include_system_ca_certs_pool: self.include_system_ca_certs_pool,
                    cert_file: std::mem::take(&mut self.cert_file),
                    cert_pem: std::mem::take(&mut self.cert_pem),
                    key_file: std::mem::take(&mut self.key_file),
                    key_pem: std::mem::take(&mut self.key_pem),
                    min_version: std::mem::take(&mut self.min_version),
                    max_version: std::mem::take(&mut self.max_version),
                    cipher_suites: std::mem::take(&mut self.cipher_suites),
                    curve_preferences: std::mem::take(&mut self.curve_preferences),
                    reload_interval: self.reload_interval.clone(),
                    tpm_config: self.tpm_config.take(),
                    files_stamp: 0,
                }
            }
        }
    };
}

raw_tls!(RawServer {
    client_ca_file: String,
    client_ca_file_reload: bool,
});

raw_tls!(RawClient {
    insecure: bool,
    insecure_skip_verify: bool,
    server_name_override: String,
});

/// A receiver's `tls` (`configtls.ServerConfig`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(from = "RawServer")]
pub struct TlsServerSetting {
    pub common: TlsCommon,
    /// CA certificates (PEM file) that client certificates must chain to: when set, every
    /// client must present a valid certificate (mTLS).
    pub client_ca_file: String,
    /// Re-read `client_ca_file` when it changes.
    pub client_ca_file_reload: bool,
}

impl From<RawServer> for TlsServerSetting {
    fn from(mut r: RawServer) -> Self {
        let mut common = r.common();
        common.files_stamp = common.stamp(&[r.client_ca_file.as_str()]);
        TlsServerSetting {
            common,
            client_ca_file: r.client_ca_file,
            client_ca_file_reload: r.client_ca_file_reload,
        }
    }
}

/// An exporter's `tls` (`configtls.ClientConfig`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(from = "RawClient")]
pub struct TlsClientSetting {
    pub common: TlsCommon,
    /// Plaintext (gRPC exporters; HTTP exporters follow the URL's scheme).
    pub insecure: bool,
    /// Skip verifying the server's certificate (encrypted, not authenticated).
    pub insecure_skip_verify: bool,
    /// The name the server's certificate must carry (and the SNI sent), instead of the
    /// endpoint's host.
    pub server_name_override: String,
}

impl From<RawClient> for TlsClientSetting {
    fn from(mut r: RawClient) -> Self {
        let mut common = r.common();
        common.files_stamp = common.stamp(&[]);
        TlsClientSetting {
            common,
            insecure: r.insecure,
            insecure_skip_verify: r.insecure_skip_verify,
            server_name_override: r.server_name_override,
        }
    }
}

/// Reads `path`, naming it in the error.
fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))
}

/// Certificates from a PEM file or PEM text (`what` names the key for errors).
fn certs(file: &str, pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let (bytes, from) = if !file.is_empty() {
        (
            read(file).map_err(|e| format!("{what}_file: {e}"))?,
            format!("{what}_file {file:?}"),
        )
    } else {
        (pem.as_bytes().to_vec(), format!("{what}_pem"))
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{from}: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{from}: no CERTIFICATE in it"));
    }
    Ok(certs)
}

/// A private key from a PEM file or PEM text.
fn key(file: &str, pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    let (bytes, from) = if !file.is_empty() {
        (
            read(file).map_err(|e| format!("key_file: {e}"))?,
            format!("key_file {file:?}"),
        )
    } else {
        (pem.as_bytes().to_vec(), "key_pem".to_string())
    };
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{from}: no PRIVATE KEY in it")
        }
        e => format!("{from}: invalid PEM: {e}"),
    })
}

const TLS12: &rustls::SupportedProtocolVersion = &rustls::version::TLS12;
const TLS13: &rustls::SupportedProtocolVersion = &rustls::version::TLS13;

/// Go's TLS 1.2 suite names (and their older aliases) that rustls offers.
fn tls12_suite(name: &str) -> Option<SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite::*;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

const TLS13_SUITE_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

impl TlsCommon {
    /// A digest of the contents of the files these settings (and `extra`) name.
    fn stamp(&self, extra: &[&str]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.files_fingerprint(extra).hash(&mut h);
        h.finish()
    }

    fn version(v: &str, key: &str, default: u8) -> Result<u8, String> {
        match v {
            "" => Ok(default),
            "1.0" | "1.1" if key == "min_version" => Ok(2),
            "1.2" => Ok(2),
            "1.3" => Ok(3),
            "1.0" | "1.1" => Err(format!(
                "{key}: {v:?} is not offered: weir's TLS (rustls) speaks TLS 1.2 and 1.3"
            )),
            _ => Err(format!(
                "{key}: unknown TLS version {v:?}; expected \"1.2\" or \"1.3\""
            )),
        }
    }

    /// Keys accepted with a weaker meaning than upstream's, to warn about.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if matches!(self.min_version.as_str(), "1.0" | "1.1") {
            w.push(format!(
                "tls.min_version {:?}: weir's TLS starts at 1.2; older clients are refused",
                self.min_version
            ));
        }
        w
    }

    /// The protocol versions and crypto provider these settings allow.
    fn provider(
        &self,
    ) -> Result<
        (
            Vec<&'static rustls::SupportedProtocolVersion>,
            CryptoProvider,
        ),
        String,
    > {
        let min = Self::version(&self.min_version, "min_version", 2)?;
        let max = Self::version(&self.max_version, "max_version", 3)?;
        if min > max {
            return Err(format!(
                "min_version {:?} is above max_version {:?}",
                self.min_version, self.max_version
            ));
        }
        let versions: Vec<_> = [(2, TLS12), (3, TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let mut suites: Vec<SupportedCipherSuite> = provider
                .cipher_suites
                .iter()
                .filter(|s| s.version() == TLS13)
                .copied()
                .collect();
            for name in &self.cipher_suites {
                if TLS13_SUITE_NAMES.contains(&name.as_str()) {
                    continue;
                }
                match tls12_suite(name) {
                    Some(s) => suites.push(s),
                    None => {
                        return Err(format!(
                            "cipher_suites: {name:?} is not offered by weir's TLS (rustls); \
                             it offers TLS_ECDHE_{{ECDSA,RSA}}_WITH_{{AES_128_GCM_SHA256,\
                             AES_256_GCM_SHA384,CHACHA20_POLY1305_SHA256}}"
                        ))
                    }
                }
            }
            provider.cipher_suites = suites;
        }
        if !self.curve_preferences.is_empty() {
            use rustls::crypto::ring::kx_group;
            let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
            for c in &self.curve_preferences {
                groups.push(match c.as_str() {
                    "X25519" => kx_group::X25519,
                    "P256" | "P-256" => kx_group::SECP256R1,
                    "P384" | "P-384" => kx_group::SECP384R1,
                    _ => {
                        return Err(format!(
                            "curve_preferences: {c:?} is not offered by weir's TLS; \
                             expected X25519, P256 or P384"
                        ))
                    }
                });
            }
            provider.kx_groups = groups;
        }
        if let Some(t) = &self.tpm_config {
            if t.get("enabled").and_then(|v| v.as_bool()) == Some(true) {
                return Err("tpm_config: keys in a TPM are not supported by weir".into());
            }
        }
        Ok((versions, provider))
    }

    /// The CA roots: `ca_file`/`ca_pem`, plus the system's when asked (or when neither is
    /// set).
    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        let own = !self.ca_file.is_empty() || !self.ca_pem.is_empty();
        if own {
            for c in certs(&self.ca_file, &self.ca_pem, "ca")? {
                roots
                    .add(c)
                    .map_err(|e| format!("ca_file: unusable CA certificate: {e}"))?;
            }
        }
        if !own || self.include_system_ca_certs_pool {
            for c in system_roots() {
                // Some system certificates do not parse for webpki; skip them as Go does.
                let _ = roots.add(c);
            }
        }
        Ok(roots)
    }

    /// This side's certificate and key, when set (both or neither).
    fn identity(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
        let has_cert = !self.cert_file.is_empty() || !self.cert_pem.is_empty();
        let has_key = !self.key_file.is_empty() || !self.key_pem.is_empty();
        match (has_cert, has_key) {
            (false, false) => Ok(None),
            (true, false) => Err("cert_file is set but key_file is not".into()),
            (false, true) => Err("key_file is set but cert_file is not".into()),
            (true, true) => Ok(Some((
                certs(&self.cert_file, &self.cert_pem, "cert")?,
                key(&self.key_file, &self.key_pem)?,
            ))),
        }
    }

    /// The contents of every file these settings read, to notice a change.
    fn files_fingerprint(&self, extra: &[&str]) -> Vec<u8> {
        let mut all = Vec::new();
        for f in [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .map(|s| s.as_str())
            .chain(extra.iter().copied())
        {
            if !f.is_empty() {
                all.extend(std::fs::read(f).unwrap_or_default());
                all.push(0);
            }
        }
        all
    }
}

/// The system's trusted roots (the platform store, read once).
fn system_roots() -> Vec<CertificateDer<'static>> {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let r = rustls_native_certs::load_native_certs();
        for e in &r.errors {
            tracing::debug!("system CA certificates: {e}");
        }
        r.certs
    });
    roots.clone()
}

fn name_errors(e: rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not match the certificate's public key".into()
        }
        e => e.to_string(),
    }
}

impl TlsServerSetting {
    /// Builds the server's TLS configuration (reading every file), offering `alpn`.
    pub fn build(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
        let (versions, provider) = self.common.provider()?;
        let provider = Arc::new(provider);
        let Some((chain, key)) = self.common.identity()? else {
            return Err(
                "a TLS server needs cert_file (or cert_pem) and key_file (or key_pem)".into(),
            );
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| e.to_string())?;
        let builder = if self.client_ca_file.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            for c in certs(&self.client_ca_file, "", "client_ca")? {
                roots
                    .add(c)
                    .map_err(|e| format!("client_ca_file: unusable CA certificate: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut cfg = builder.with_single_cert(chain, key).map_err(name_errors)?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// Checks the settings as [`build`](Self::build) would, every problem at once.
    pub fn validate(&self) -> Vec<(String, String)> {
        match self.build(&[]) {
            Ok(_) => Vec::new(),
            Err(e) => vec![("tls".into(), e)],
        }
    }

    /// How often to look at the files again: `reload_interval`, or every 5 s when only
    /// `client_ca_file_reload` asks for it.
    fn poll(&self) -> Option<Duration> {
        let r = self.common.reload_interval.0;
        if !r.is_zero() {
            Some(r)
        } else if self.client_ca_file_reload && !self.client_ca_file.is_empty() {
            Some(Duration::from_secs(5))
        } else {
            None
        }
    }
}

/// A server's TLS configuration, swapped when its files change; each new connection
/// handshakes with the current one.
pub struct ServerTls {
    setting: TlsServerSetting,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    fingerprint: RwLock<Vec<u8>>,
    /// Handshakes that failed (a plaintext client, a wrong or missing client certificate, a
    /// timeout).
    pub failures: crate::telemetry::metrics::Counter,
}

impl ServerTls {
    pub fn new(
        setting: &TlsServerSetting,
        alpn: &[&[u8]],
        failures: crate::telemetry::metrics::Counter,
    ) -> Result<Arc<Self>, String> {
        let cfg = setting.build(alpn)?;
        Ok(Arc::new(ServerTls {
            setting: setting.clone(),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            current: RwLock::new(cfg),
            fingerprint: RwLock::new(
                setting
                    .common
                    .files_fingerprint(&[setting.client_ca_file.as_str()]),
            ),
            failures,
        }))
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the files if they changed; a failure keeps the old configuration (logged).
    pub fn refresh(&self) {
        let fp = self
            .setting
            .common
            .files_fingerprint(&[self.setting.client_ca_file.as_str()]);
        if self.fingerprint.read().map(|f| *f == fp).unwrap_or(false) {
            return;
        }
        let alpn: Vec<&[u8]> = self.alpn.iter().map(|p| p.as_slice()).collect();
        match self.setting.build(&alpn) {
            Ok(cfg) => {
                if let Ok(mut c) = self.current.write() {
                    *c = cfg;
                }
                if let Ok(mut f) = self.fingerprint.write() {
                    *f = fp;
                }
                tracing::info!("TLS certificates reloaded");
            }
            Err(e) => tracing::warn!("TLS certificates not reloaded, keeping the old ones: {e}"),
        }
    }

    /// How often [`refresh`](Self::refresh) should run, if at all.
    pub fn poll_interval(&self) -> Option<Duration> {
        self.setting.poll()
    }
}

/// One DER element at the start of `d`: (tag, contents, rest).
fn der(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, d) = d.split_first()?;
    let (&first, mut d) = d.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || d.len() < n {
            return None;
        }
        let len = d[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        d = &d[n..];
        len
    };
    (d.len() >= len).then(|| (tag, &d[..len], &d[len..]))
}

/// The subject's common name (OID 2.5.4.3) of a DER certificate: who an mTLS client is.
pub fn peer_common_name(cert: &[u8]) -> Option<String> {
    let (_, certificate, _) = der(cert)?;
    let (_, mut tbs, _) = der(certificate)?;
    // version [0] is optional; then serial, signature algorithm, issuer, validity, subject.
    if tbs.first() == Some(&0xa0) {
        tbs = der(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = der(tbs)?.2;
    }
    let (_, mut subject, _) = der(tbs)?;
    while !subject.is_empty() {
        let (_, set, rest) = der(subject)?;
        subject = rest;
        let mut set = set;
        while !set.is_empty() {
            let (_, atv, rest) = der(set)?;
            set = rest;
            let (tag, oid, value) = der(atv)?;
            let _ = tag;
            if oid == [0x55, 0x04, 0x03] {
                let (_, v, _) = der(value)?;
                return String::from_utf8(v.to_vec()).ok();
            }
        }
    }
    None
}

/// Accepts any server certificate (`insecure_skip_verify`): signatures are still checked so
/// the handshake is well-formed, the chain and name are not.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl TlsClientSetting {
    /// Builds the client's TLS configuration (reading every file), offering `alpn`.
    pub fn build(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
        let (versions, provider) = self.common.provider()?;
        let provider = Arc::new(provider);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| e.to_string())?;
        let builder = if self.insecure_skip_verify {
            // The CA settings are still read, so a broken file is still an error.
            self.common.roots()?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
        } else {
            builder.with_root_certificates(self.common.roots()?)
        };
        let mut cfg = match self.common.identity()? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(name_errors)?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// Checks the settings as [`build`](Self::build) would.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if !self.server_name_override.is_empty()
            && ServerName::try_from(self.server_name_override.clone()).is_err()
        {
            errs.push((
                "tls.server_name_override".into(),
                format!("{:?} is not a host name", self.server_name_override),
            ));
        }
        if let Err(e) = self.build(&[]) {
            errs.push(("tls".into(), e));
        }
        errs
    }
}

/// A client's TLS configuration, re-read every `reload_interval` when set.
pub struct ClientTls {
    setting: TlsClientSetting,
    alpn: Vec<Vec<u8>>,
    current: RwLock<(Arc<ClientConfig>, std::time::Instant)>,
}

impl ClientTls {
    pub fn new(setting: &TlsClientSetting, alpn: &[&[u8]]) -> Result<Arc<Self>, String> {
        Ok(Arc::new(ClientTls {
            setting: setting.clone(),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            current: RwLock::new((setting.build(alpn)?, std::time::Instant::now())),
        }))
    }

    /// The configuration for a new connection (re-read first when `reload_interval` passed).
    pub fn current(&self) -> Arc<ClientConfig> {
        let every = self.setting.common.reload_interval.0;
        let (cfg, at) = match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if every.is_zero() || at.elapsed() < every {
            return cfg;
        }
        let alpn: Vec<&[u8]> = self.alpn.iter().map(|p| p.as_slice()).collect();
        let fresh = match self.setting.build(&alpn) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("TLS client certificates not reloaded, keeping the old ones: {e}");
                cfg
            }
        };
        if let Ok(mut c) = self.current.write() {
            *c = (fresh.clone(), std::time::Instant::now());
        }
        fresh
    }

    /// The name to verify (and send as SNI) for `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        let name = if self.setting.server_name_override.is_empty() {
            host.trim_start_matches('[').trim_end_matches(']')
        } else {
            self.setting.server_name_override.as_str()
        };
        ServerName::try_from(name.to_string()).map_err(|e| format!("server name {name:?}: {e}"))
    }

    /// Handshakes over `io` with the server `host`.
    pub async fn connect<IO>(
        &self,
        host: &str,
        io: IO,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = self
            .server_name(host)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        tokio_rustls::TlsConnector::from(self.current())
            .connect(name, io)
            .await
    }
}

/// A connection, plaintext or TLS (either side).
pub enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::TlsStream<tokio::net::TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
