//! A faithful fake of the Kubernetes API for the `k8s` resolver, on a loopback port over TLS:
//! `GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=
//! kubernetes.io%2Fservice-name%3D{svc}` answers an `EndpointSliceList` (the Service's ready
//! and not-ready endpoints, as the test sets them) to a request with the service account's
//! bearer token, `401` with a `Status` without it, and `404` for anything else — as the real
//! API server does. Also writes the service-account directory (token, ca.crt, namespace) a pod
//! would have. Stopped on drop.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct FakeK8s {
    pub port: u16,
    /// The service-account directory (`WEIR_K8S_SERVICEACCOUNT_DIR`).
    pub sa_dir: PathBuf,
    ready: Arc<Mutex<Vec<(Ipv4Addr, bool)>>>,
    pub requests: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

const TOKEN: &str = "weir-sa-token-7f3a";

impl FakeK8s {
    pub async fn start(dir: &Path, namespace: &str, service: &str) -> FakeK8s {
        let pki = super::certs::Pki::new(dir, "k8s");
        let (cert, key) = pki.server("apiserver", &["127.0.0.1"]);
        let sa_dir = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa_dir).expect("sa dir");
        std::fs::write(sa_dir.join("token"), format!("{TOKEN}\n")).expect("token");
        std::fs::write(sa_dir.join("namespace"), namespace).expect("namespace");
        std::fs::copy(pki.ca(), sa_dir.join("ca.crt")).expect("ca.crt");
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pki_types::CertificateDer::pem_file_iter(&cert)
                .expect("cert")
                .map(|c| c.expect("cert"))
                .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ready: Arc<Mutex<Vec<(Ipv4Addr, bool)>>> = Arc::new(Mutex::new(Vec::new()));
        let (requests, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let path = format!(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{service}"
        );
        let (r, n, x, service) = (
            ready.clone(),
            requests.clone(),
            refused.clone(),
            service.to_string(),
        );
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, r, n, x, path, service) = (
                    acceptor.clone(),
                    r.clone(),
                    n.clone(),
                    x.clone(),
                    path.clone(),
                    service.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    loop {
                        // One request: headers only (GETs have no body).
                        let mut buf = Vec::new();
                        let mut byte = [0u8; 1];
                        while !buf.ends_with(b"\r\n\r\n") {
                            match tls.read(&mut byte).await {
                                Ok(1) => buf.push(byte[0]),
                                _ => return,
                            }
                        }
                        n.fetch_add(1, Ordering::SeqCst);
                        let head = String::from_utf8_lossy(&buf).to_string();
                        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let authorized = head.lines().any(|l| {
                            l.eq_ignore_ascii_case(&format!("authorization: Bearer {TOKEN}"))
                        });
                        let (status, body) = if !authorized {
                            x.fetch_add(1, Ordering::SeqCst);
                            ("401 Unauthorized", r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#.to_string())
                        } else if target != path {
                            ("404 Not Found", r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_string())
                        } else {
                            let eps: Vec<String> = r
                                .lock()
                                .unwrap()
                                .iter()
                                .enumerate()
                                .map(|(i, (ip, ok))| {
                                    format!(r#"{{"addresses":["{ip}"],"hostname":"{service}-{i}","conditions":{{"ready":{ok},"serving":{ok},"terminating":false}},"targetRef":{{"kind":"Pod","name":"{service}-{i}"}}}}"#)
                                })
                                .collect();
                            (
                                "200 OK",
                                format!(
                                    r#"{{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{{"resourceVersion":"1"}},"items":[{{"metadata":{{"name":"{service}-abc12","labels":{{"kubernetes.io/service-name":"{service}"}}}},"addressType":"IPv4","endpoints":[{}],"ports":[{{"name":"otlp-grpc","port":4317,"protocol":"TCP"}}]}}]}}"#,
                                    eps.join(",")
                                ),
                            )
                        };
                        let resp = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if tls.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeK8s {
            port,
            sa_dir,
            ready,
            requests,
            refused,
            task,
        }
    }

    /// The Service's endpoints: (address, ready).
    pub fn set(&self, endpoints: Vec<(Ipv4Addr, bool)>) {
        *self.ready.lock().unwrap() = endpoints;
    }
}

impl Drop for FakeK8s {
    fn drop(&mut self) {
        self.task.abort();
    }
}
