//! TLS and mTLS end to end, with certificates made in the test: curl and the OpenTelemetry
//! Python SDK over TLS to weir's OTLP/HTTP receiver, weir → weir over mTLS (gRPC), weir → a
//! real Prometheus serving remote write over TLS, refusals (plaintext, wrong CA, missing or
//! foreign client certificate, a handshake that never finishes) that leave weir serving
//! everyone else, and certificate rotation (reload_interval, SIGHUP) with nothing lost.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::Pki;
use common::sink::Sink;
use common::{
    free_port, http_get, metric, scratch_dir, traces_json, wait_until, wait_until_async, Weir,
};

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn handshake_failures(tel: u16) -> f64 {
    let text = http_get(tel, "/metrics")
        .map(|(_, t)| t)
        .unwrap_or_default();
    metric(&text, "weir_receiver_tls_handshake_failures_total", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mtls_receivers_serve_real_clients_and_refuse_the_rest() {
    let dir = scratch_dir();
    let pki = Pki::new(&dir, "main");
    let other = Pki::new(&dir, "other");
    let (scert, skey) = pki.server("server", &["127.0.0.1", "localhost"]);
    let (ccert, ckey) = pki.client("agent", "agent-1");
    let (ocert, okey) = other.client("intruder", "intruder");
    let sink = Sink::start().await;
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let a = Weir::start(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "127.0.0.1:{grpc}"
        tls: {{cert_file: "{sc}", key_file: "{sk}", client_ca_file: "{ca}"}}
      http:
        endpoint: "127.0.0.1:{http}"
        tls: {{cert_file: "{sc}", key_file: "{sk}", min_version: "1.2"}}
processors:
  # The mTLS client certificate's common name is the client's identity.
  tenant: {{sources: [auth], identities: {{agent-1: team-mtls}}, default_tenant: anonymous}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{sg}", tls: {{insecure: true}}, compression: none, tenant_header: X-Scope-OrgID}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [tenant], exporters: [otlp]}}
"#,
            sc = p(&scert),
            sk = p(&skey),
            ca = p(&pki.ca()),
            sg = sink.grpc_port
        ),
        tel,
    );
    let url = format!("https://127.0.0.1:{http}/v1/traces");
    let ca = p(&pki.ca());

    // curl with the CA: accepted.
    assert_eq!(
        common::curl_json(&url, &traces_json(3, "curl"), &["--cacert", &ca]),
        (0, 200)
    );
    // Plaintext to the TLS port: no HTTP answer, the handshake fails.
    let plain = common::curl_json(
        &format!("http://127.0.0.1:{http}/v1/traces"),
        &traces_json(1, "x"),
        &[],
    );
    assert_ne!(plain.1, 200, "plaintext must not be served: {plain:?}");
    // A CA that did not sign weir's certificate: curl refuses it (60: peer certificate).
    let wrong = common::curl_json(&url, &traces_json(1, "x"), &["--cacert", &p(&other.ca())]);
    assert_eq!(wrong, (60, 0));
    wait_until(
        "two failed handshakes counted",
        Duration::from_secs(10),
        || handshake_failures(tel) >= 2.0,
    );

    // The OpenTelemetry Python SDK over TLS.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/send_tls.py");
    let (u, c) = (url.clone(), ca.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &u, "25", &c])
            // requests prefers these to the exporter's certificate_file.
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .output()
            .expect("run python client")
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "SUCCESS",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // weir → weir over mTLS: B forwards to A's gRPC port with a client certificate.
    let b_http = free_port();
    let b = Weir::start(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{b_http}"}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{grpc}"
    tls: {{ca_file: "{ca}", cert_file: "{cc}", key_file: "{ck}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
            cc = p(&ccert),
            ck = p(&ckey),
        ),
        b_http,
    );
    let b_url = format!("http://127.0.0.1:{b_http}/v1/traces");
    assert_eq!(
        common::curl_json(&b_url, &traces_json(4, "mtls"), &[]),
        (0, 200)
    );
    wait_until_async("3 + 25 + 4 spans", Duration::from_secs(15), || {
        sink.state.spans() >= 32
    })
    .await;

    // C presents a certificate from another CA, D none: A refuses both handshakes; their
    // data never reaches the sink.
    let before = handshake_failures(tel);
    let mut refused = Vec::new();
    for (name, cert) in [("foreign", Some((&ocert, &okey))), ("none", None)] {
        let port = free_port();
        let client_cert = cert
            .map(|(c, k)| format!(", cert_file: \"{}\", key_file: \"{}\"", p(c), p(k)))
            .unwrap_or_default();
        let w = Weir::start(
            &format!(
                r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{port}"}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{grpc}"
    tls: {{ca_file: "{ca}"{client_cert}}}
    retry_on_failure: {{enabled: false}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#
            ),
            port,
        );
        let url = format!("http://127.0.0.1:{port}/v1/traces");
        assert_eq!(
            common::curl_json(&url, &traces_json(5, name), &[]),
            (0, 200)
        );
        refused.push(w);
    }
    wait_until(
        "both refused handshakes counted",
        Duration::from_secs(15),
        || handshake_failures(tel) >= before + 2.0,
    );
    for w in refused {
        // TLS 1.3: the client learns of the refusal when the server closes the connection.
        wait_until(
            "the refused sender gives up",
            Duration::from_secs(10),
            || {
                w.log()
                    .contains("dropping 5 spans: rpc error: code = Unavailable")
            },
        );
        w.stop();
    }

    // Weir still serves everyone else.
    assert_eq!(
        common::curl_json(&url, &traces_json(2, "after"), &["--cacert", &ca]),
        (0, 200)
    );
    wait_until_async("34 spans", Duration::from_secs(15), || {
        sink.state.spans() >= 34
    })
    .await;
    assert_eq!(
        sink.state.spans(),
        34,
        "exactly what was accepted, nothing refused"
    );
    b.stop();
    a.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_finishes_is_cut_off() {
    let dir = scratch_dir();
    let pki = Pki::new(&dir, "main");
    let (scert, skey) = pki.server("server", &["127.0.0.1"]);
    let (http, tel) = (free_port(), free_port());
    let sink = Sink::start().await;
    let weir = Weir::start(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: "127.0.0.1:{http}"
        read_header_timeout: 1s
        tls: {{cert_file: "{}", key_file: "{}"}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{}", tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
            p(&scert),
            p(&skey),
            sink.grpc_port
        ),
        tel,
    );
    let before = handshake_failures(tel);
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(8)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        // Says nothing: weir must hang up (EOF or reset), not wait forever.
        matches!(s.read(&mut buf), Ok(0) | Err(_)) && started.elapsed() < Duration::from_secs(8)
    })
    .await
    .unwrap();
    assert!(closed, "a silent client must be disconnected");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "cut off after {took:?}, before its timeout"
    );
    wait_until("the timeout counted", Duration::from_secs(5), || {
        handshake_failures(tel) > before
    });
    weir.stop();

    // The other way round: weir's otlp exporter speaks TLS by default, here to a plaintext
    // sink. The handshake fails, the export is retried as UNAVAILABLE, nothing arrives.
    let http = free_port();
    let weir = Weir::start(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{}", tls: {{ca_file: "{}"}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
            sink.grpc_port,
            p(&pki.ca())
        ),
        http,
    );
    let url = format!("http://127.0.0.1:{http}/v1/traces");
    assert_eq!(
        common::curl_json(&url, &traces_json(2, "plain-sink"), &[]),
        (0, 200)
    );
    wait_until(
        "the TLS failure logged and retried",
        Duration::from_secs(15),
        || {
            let log = weir.log();
            log.contains("code = Unavailable") && log.contains("retry")
        },
    );
    assert_eq!(sink.state.spans(), 0);
    weir.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_receives_remote_write_over_tls() {
    let dir = scratch_dir();
    let pki = Pki::new(&dir, "prom");
    let (scert, skey) = pki.server("prometheus", &["127.0.0.1"]);
    let prom = common::prometheus::Prometheus::start_tls(&scert, &skey, &pki.ca());
    let http = free_port();
    let weir = Weir::start(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  prometheusremotewrite:
    endpoint: "{}"
    tls: {{ca_file: "{}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [otlp], exporters: [prometheusremotewrite]}}
"#,
            prom.write_url(),
            p(&pki.ca())
        ),
        http,
    );
    assert!(prom.write_url().starts_with("https://"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let body = serde_json::json!({"resourceMetrics": [{"resource": {}, "scopeMetrics": [{
        "metrics": [{"name": "tls_probe", "gauge": {"dataPoints": [
            {"asDouble": 42.0, "timeUnixNano": now.to_string()}]}}]}]}]})
    .to_string();
    let url = format!("http://127.0.0.1:{http}/v1/metrics");
    assert_eq!(common::curl_json(&url, &body, &[]), (0, 200));
    let got = prom.wait_for("tls_probe");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 42.0);
    weir.stop();
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}

/// POSTs `body` over HTTPS/1.1 with a rustls client trusting `ca`; returns the status and
/// the server certificate's DER.
async fn https_post(port: u16, ca: &Path, body: &str) -> Result<(u16, Vec<u8>), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::pem::PemObject::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let req = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    Ok((status, cert))
}

/// Sends until the server presents a certificate other than `old`; every request must be
/// accepted. Returns the requests sent.
async fn send_until_new_certificate(port: u16, ca: &Path, old: &[u8], tag: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    loop {
        let (status, cert) = https_post(port, ca, &traces_json(1, tag))
            .await
            .expect("https");
        assert_eq!(status, 200);
        sent += 1;
        if cert != old {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        // Pace the polling (the deadline above bounds it).
        let _ =
            tokio::time::timeout(Duration::from_millis(100), std::future::pending::<()>()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart_and_nothing_is_lost() {
    let dir = scratch_dir();
    let pki = Pki::new(&dir, "rot");
    let (scert, skey) = pki.server("server", &["127.0.0.1"]);
    let ca: PathBuf = pki.ca();
    let sink = Sink::start().await;
    let mut total = 0;
    for (i, reload) in ["reload_interval: 1s", "reload_interval: 0s"]
        .iter()
        .enumerate()
    {
        pki.server("server", &["127.0.0.1"]);
        let http = free_port();
        let weir = Weir::start(
            &format!(
                r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: "127.0.0.1:{http}"
        tls: {{cert_file: "{}", key_file: "{}", {reload}}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{}", tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
                p(&scert),
                p(&skey),
                sink.grpc_port
            ),
            http,
        );
        let (status, first) = https_post(http, &ca, &traces_json(1, "before"))
            .await
            .expect("https");
        assert_eq!(status, 200);
        total += 1;
        // New certificate and key in place of the old files.
        pki.server("server", &["127.0.0.1"]);
        if i == 1 {
            // No interval: SIGHUP re-reads them (the port stays open).
            weir.signal("HUP");
        }
        total += send_until_new_certificate(http, &ca, &first, "rotating").await;
        for _ in 0..5 {
            let (status, cert) = https_post(http, &ca, &traces_json(1, "after"))
                .await
                .expect("https");
            assert_eq!(status, 200);
            assert_ne!(cert, first);
            total += 1;
        }
        weir.stop();
    }
    wait_until_async("every span sent", Duration::from_secs(15), || {
        sink.state.spans() >= total
    })
    .await;
    assert_eq!(sink.state.spans(), total);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The OpenTelemetry SDKs over mTLS: the Rust SDK (opentelemetry-otlp, tonic with rustls) to
/// the gRPC port and the Python SDK to the HTTP port, each with a client certificate whose
/// common name becomes the tenant; the Python SDK without a certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_and_python_sdks_send_over_mtls() {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};

    let dir = scratch_dir();
    let pki = Pki::new(&dir, "main");
    let (scert, skey) = pki.server("server", &["127.0.0.1"]);
    let (rcert, rkey) = pki.client("rust-sdk", "rust-sdk");
    let (pcert, pkey) = pki.client("python-sdk", "python-sdk");
    let sink = Sink::start().await;
    let (grpc, http) = (free_port(), free_port());
    let tls = format!(
        "{{cert_file: \"{}\", key_file: \"{}\", client_ca_file: \"{}\"}}",
        p(&scert),
        p(&skey),
        p(&pki.ca())
    );
    let weir = Weir::start(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", tls: {tls}}}
      http: {{endpoint: "127.0.0.1:{http}", tls: {tls}}}
processors:
  tenant: {{sources: [auth], identities: {{rust-sdk: team-rust, python-sdk: team-python}}, missing: reject}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{}", tls: {{insecure: true}}, tenant_header: X-Scope-OrgID}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [tenant], exporters: [otlp]}}
"#,
            sink.grpc_port
        ),
        grpc,
    );

    let read = |f: &Path| std::fs::read(f).expect("read pem");
    let client_tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&pki.ca())))
        .identity(tonic::transport::Identity::from_pem(
            read(&rcert),
            read(&rkey),
        ))
        .domain_name("127.0.0.1");
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("https://127.0.0.1:{grpc}"))
        .with_tls_config(client_tls)
        .build()
        .expect("exporter");
    let tp = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = tp.tracer("weir-mtls-test");
    for i in 0..10 {
        tracer.in_span(format!("rust-{i}"), |_| {});
    }
    tp.force_flush().expect("flush over mTLS");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/send_tls.py");
    let url = format!("https://127.0.0.1:{http}/v1/traces");
    let python = move |args: Vec<String>| {
        let out = Command::new("python3")
            .arg(script)
            .args(args)
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .output()
            .expect("run python client");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (u, ca, c, k) = (url.clone(), p(&pki.ca()), p(&pcert), p(&pkey));
    let with_cert = tokio::task::spawn_blocking(move || python(vec![u, "6".into(), ca, c, k]))
        .await
        .unwrap();
    assert_eq!(with_cert, "SUCCESS");
    let (u, ca) = (url.clone(), p(&pki.ca()));
    let without = tokio::task::spawn_blocking(move || python(vec![u, "3".into(), ca]))
        .await
        .unwrap();
    assert_eq!(without, "FAILURE", "no client certificate, no entry");

    wait_until_async("10 + 6 spans", Duration::from_secs(15), || {
        sink.state.spans() >= 16
    })
    .await;
    assert_eq!(sink.state.spans(), 16);
    let tenants = sink.state.items_per_header("x-scope-orgid");
    assert_eq!(tenants.get("team-rust"), Some(&10), "{tenants:?}");
    assert_eq!(tenants.get("team-python"), Some(&6), "{tenants:?}");
    let _ = tp.shutdown();
    weir.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
