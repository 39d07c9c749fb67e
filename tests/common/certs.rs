//! Certificates for TLS tests, made in the test: a CA and the certificates it signs, written
//! as PEM files into a directory the test owns.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority writing its files under `dir`.
pub struct Pki {
    pub dir: PathBuf,
    name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// What a certificate is for, and when it is valid.
#[derive(Clone, Copy, PartialEq)]
pub enum Validity {
    Now,
    Expired,
    NotYetValid,
}

impl Pki {
    /// A new CA named `name`; its certificate is `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("ca cert");
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).expect("write ca");
        Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca,
        }
    }

    /// The CA certificate's path.
    pub fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for `sans` (`127.0.0.1`, `localhost`), valid now.
    pub fn server(&self, file: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        self.issue(file, "server", sans, false, Validity::Now)
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(file, cn, &[], true, Validity::Now)
    }

    /// A certificate written to `<dir>/<file>.pem` and its key to `<dir>/<file>-key.pem`.
    pub fn issue(
        &self,
        file: &str,
        cn: &str,
        sans: &[&str],
        client: bool,
        validity: Validity,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<String>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        match validity {
            Validity::Now => {}
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            Validity::NotYetValid => {
                params.not_before = rcgen::date_time_ymd(2090, 1, 1);
                params.not_after = rcgen::date_time_ymd(2091, 1, 1);
            }
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let cert_path = self.dir.join(format!("{file}.pem"));
        let key_path = self.dir.join(format!("{file}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}
