use super::*;

#[path = "../../tests/common/certs.rs"]
mod certs;
use certs::{Pki, Validity};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("weir-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn server_setting(cert: &Path, key: &Path) -> TlsServerSetting {
    let mut s = TlsServerSetting::default();
    s.common.cert_file = cert.display().to_string();
    s.common.key_file = key.display().to_string();
    s
}

use std::path::Path;

#[test]
fn builds_from_files_and_pem_text() {
    let d = tmp("build");
    let pki = Pki::new(&d, "a");
    let (cert, key) = pki.server("srv", &["localhost", "127.0.0.1"]);
    assert!(server_setting(&cert, &key).validate().is_empty());
    let mut s = TlsServerSetting::default();
    s.common.cert_pem = std::fs::read_to_string(&cert).expect("cert");
    s.common.key_pem = std::fs::read_to_string(&key).expect("key");
    assert!(s.validate().is_empty(), "{:?}", s.validate());

    let mut c = TlsClientSetting::default();
    c.common.ca_file = pki.ca().display().to_string();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_files_are_config_errors_naming_them() {
    let d = tmp("bad");
    let pki = Pki::new(&d, "a");
    let (cert, key) = pki.server("srv", &["localhost"]);
    let (_, other_key) = pki.server("other", &["localhost"]);

    let missing = server_setting(&d.join("nope.pem"), &key).validate();
    assert!(
        missing[0].1.contains("cannot read") && missing[0].1.contains("nope.pem"),
        "{missing:?}"
    );

    let mismatched = server_setting(&cert, &other_key).validate();
    assert!(
        mismatched[0].1.contains("does not match the certificate"),
        "{mismatched:?}"
    );

    std::fs::write(d.join("garbage.pem"), "hello").expect("write");
    let garbage = server_setting(&d.join("garbage.pem"), &key).validate();
    assert!(garbage[0].1.contains("no CERTIFICATE"), "{garbage:?}");

    let mut no_key = server_setting(&cert, &key);
    no_key.common.key_file.clear();
    assert!(no_key.validate()[0].1.contains("key_file is not"));

    let none = TlsServerSetting::default().validate();
    assert!(none[0].1.contains("needs cert_file"), "{none:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn versions_suites_and_curves() {
    let mut c = TlsClientSetting::default();
    c.common.min_version = "1.3".into();
    c.common.max_version = "1.2".into();
    assert!(c.validate()[0].1.contains("above max_version"));
    c.common.max_version = "1.1".into();
    assert!(c.validate()[0].1.contains("speaks TLS 1.2 and 1.3"));
    c.common.min_version = "1.0".into();
    c.common.max_version = String::new();
    assert!(c.validate().is_empty());
    assert!(c.common.warnings()[0].contains("starts at 1.2"));
    c.common.min_version = "2.0".into();
    assert!(c.validate()[0].1.contains("unknown TLS version"));
    c.common.min_version = String::new();

    c.common.cipher_suites = vec![
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
        "TLS_AES_128_GCM_SHA256".into(),
    ];
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    c.common.cipher_suites = vec!["TLS_RSA_WITH_AES_128_CBC_SHA".into()];
    assert!(c.validate()[0].1.contains("not offered"));
    c.common.cipher_suites.clear();

    c.common.curve_preferences = vec!["X25519".into(), "P256".into()];
    assert!(c.validate().is_empty());
    c.common.curve_preferences = vec!["P521".into()];
    assert!(c.validate()[0].1.contains("P521"));
}

/// A full handshake in memory: server certificate checked against the CA, mTLS client
/// certificate required, and refused when missing or from another CA.
#[tokio::test]
async fn handshakes_and_refusals() {
    let d = tmp("hs");
    let pki = Pki::new(&d, "a");
    let other = Pki::new(&d, "b");
    let (cert, key) = pki.server("srv", &["localhost"]);
    let (ccert, ckey) = pki.client("cli", "agent-1");
    let (bcert, bkey) = other.client("cli-b", "intruder");
    let (ecert, ekey) = pki.issue(
        "expired",
        "server",
        &["localhost"],
        false,
        Validity::Expired,
    );

    let mut srv = server_setting(&cert, &key);
    srv.client_ca_file = pki.ca().display().to_string();
    let server = srv.build(&[b"h2"]).expect("server");

    let client = |cert: Option<(&Path, &Path)>, ca: &Path| {
        let mut c = TlsClientSetting::default();
        c.common.ca_file = ca.display().to_string();
        if let Some((cert, key)) = cert {
            c.common.cert_file = cert.display().to_string();
            c.common.key_file = key.display().to_string();
        }
        ClientTls::new(&c, &[b"h2"]).expect("client")
    };

    async fn pair(
        server: Arc<ServerConfig>,
        client: Arc<ClientTls>,
        host: &str,
    ) -> (Result<(), String>, Result<(), String>) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let s = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut t = acceptor.accept(b).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 2];
            t.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        });
        let c = async {
            use tokio::io::AsyncWriteExt;
            let mut t = client.connect(host, a).await.map_err(|e| e.to_string())?;
            t.write_all(b"hi").await.map_err(|e| e.to_string())?;
            t.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(t)
        }
        .await;
        // The client's end stays open until the server has read (it may still be writing
        // session tickets).
        let s = s.await.unwrap_or_else(|e| Err(e.to_string()));
        (c.map(|_| ()), s)
    }

    let ok = pair(
        server.clone(),
        client(Some((&ccert, &ckey)), &pki.ca()),
        "localhost",
    )
    .await;
    assert!(ok.0.is_ok() && ok.1.is_ok(), "{ok:?}");

    let (_, s) = pair(server.clone(), client(None, &pki.ca()), "localhost").await;
    assert!(
        s.unwrap_err().contains("certificate"),
        "no client certificate must fail"
    );

    let (_, s) = pair(
        server.clone(),
        client(Some((&bcert, &bkey)), &pki.ca()),
        "localhost",
    )
    .await;
    assert!(s.is_err(), "another CA's client certificate must fail");

    let (c, _) = pair(
        server.clone(),
        client(Some((&ccert, &ckey)), &other.ca()),
        "localhost",
    )
    .await;
    let e = c.unwrap_err();
    assert!(
        e.to_lowercase().contains("unknownissuer") || e.contains("unknown issuer"),
        "wrong CA: {e}"
    );

    let (c, _) = pair(
        server.clone(),
        client(Some((&ccert, &ckey)), &pki.ca()),
        "elsewhere.example",
    )
    .await;
    let e = c.unwrap_err();
    assert!(e.contains("not valid for name"), "wrong name: {e}");

    let expired = server_setting(&ecert, &ekey)
        .build(&[b"h2"])
        .expect("server");
    let (c, _) = pair(expired, client(None, &pki.ca()), "localhost").await;
    let e = c.unwrap_err();
    assert!(e.to_lowercase().contains("expired"), "expired: {e}");

    let skip = TlsClientSetting {
        insecure_skip_verify: true,
        ..Default::default()
    };
    let skip = ClientTls::new(&skip, &[b"h2"]).expect("client");
    let plain = server_setting(&cert, &key).build(&[b"h2"]).expect("server");
    let ok = pair(plain, skip, "elsewhere.example").await;
    assert!(ok.0.is_ok() && ok.1.is_ok(), "insecure_skip_verify: {ok:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn server_reloads_changed_files_and_keeps_old_on_error() {
    let d = tmp("reload");
    let pki = Pki::new(&d, "a");
    let (cert, key) = pki.server("srv", &["localhost"]);
    let mut s = server_setting(&cert, &key);
    s.common.reload_interval = Duration::from_secs(1).into();
    let registry = crate::telemetry::metrics::Registry::new();
    let failures = registry.counter("t", "t", &[]);
    let tls = ServerTls::new(&s, &[b"h2"], failures).expect("tls");
    assert_eq!(tls.poll_interval(), Some(Duration::from_secs(1)));
    let first = tls.current();
    tls.refresh();
    assert!(
        Arc::ptr_eq(&first, &tls.current()),
        "unchanged files: same config"
    );
    pki.server("srv", &["localhost"]);
    tls.refresh();
    assert!(
        !Arc::ptr_eq(&first, &tls.current()),
        "new files: new config"
    );
    let second = tls.current();
    std::fs::write(&cert, "broken").expect("write");
    tls.refresh();
    assert!(
        Arc::ptr_eq(&second, &tls.current()),
        "broken files: old config kept"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_common_name_of_a_client_certificate() {
    let d = tmp("cn");
    let pki = Pki::new(&d, "a");
    let (cert, _) = pki.client("cli", "agent-42");
    let der = CertificateDer::pem_file_iter(&cert)
        .expect("pem")
        .next()
        .expect("one")
        .expect("cert");
    assert_eq!(peer_common_name(&der).as_deref(), Some("agent-42"));
    assert_eq!(peer_common_name(b"\x30\x03\x02\x01"), None);
    assert_eq!(peer_common_name(&[]), None);
    let _ = std::fs::remove_dir_all(&d);
}
