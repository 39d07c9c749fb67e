//! Authenticator extensions end to end: `bearertokenauth` on a gRPC receiver, `basicauth`
//! (bcrypt and plain htpasswd users) on an HTTP receiver, the same extensions as clients on a
//! second weir's exporters, tenants taken from the authenticated identity, `headers_setter`
//! forwarding a client header, and the refusals (401 / UNAUTHENTICATED, counted, nothing
//! accepted).
mod common;

use std::time::Duration;

use common::sink::Sink;
use common::{free_port, http_get, metric, traces_json, wait_until, wait_until_async, Weir};

/// POSTs OTLP/JSON with curl: the HTTP status (0 when there is none).
fn post(url: &str, body: &str, extra: &[&str]) -> u16 {
    common::curl_json(url, body, extra).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_and_basic_auth_admit_only_their_clients_and_name_the_tenant() {
    let sink = Sink::start().await;
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let a = Weir::start(
        &format!(
            r#"
extensions:
  bearertokenauth/server: {{tokens: [tokA, tokB]}}
  basicauth/server:
    htpasswd:
      inline: |
        alice:{hash}
        bob:plain-bob
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", auth: {{authenticator: bearertokenauth/server}}}}
      http: {{endpoint: "127.0.0.1:{http}", auth: {{authenticator: basicauth/server}}}}
processors:
  tenant:
    sources: [auth]
    identities: {{alice: team-a, bob: team-b, tokA: team-a, tokB: team-b}}
    missing: reject
exporters:
  otlp: {{endpoint: "127.0.0.1:{sg}", tls: {{insecure: true}}, tenant_header: X-Scope-OrgID}}
service:
  extensions: [bearertokenauth/server, basicauth/server]
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [tenant], exporters: [otlp]}}
"#,
            sg = sink.grpc_port
        ),
        tel,
    );
    let url = format!("http://127.0.0.1:{http}/v1/traces");
    // Basic auth over HTTP: bcrypt and plain users accepted, everything else 401.
    assert_eq!(
        post(&url, &traces_json(3, "alice"), &["-u", "alice:s3cret"]),
        200
    );
    assert_eq!(
        post(&url, &traces_json(2, "bob"), &["-u", "bob:plain-bob"]),
        200
    );
    for bad in [
        vec!["-u", "alice:wrong"],
        vec!["-u", "mallory:s3cret"],
        vec![],
        vec!["-H", "Authorization: Basic %%%"],
        vec!["-H", "Authorization: Bearer tokA"],
    ] {
        assert_eq!(post(&url, &traces_json(1, "bad"), &bad), 401, "{bad:?}");
    }

    // The same extensions as clients: weir B sends over gRPC with a bearer token and over
    // HTTP with basic credentials.
    let b_http = free_port();
    let b = Weir::start(
        &format!(
            r#"
extensions:
  bearertokenauth/client: {{token: tokB}}
  basicauth/client: {{client_auth: {{username: alice, password: s3cret}}}}
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{b_http}"}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{grpc}", tls: {{insecure: true}}, auth: {{authenticator: bearertokenauth/client}}}}
  otlphttp: {{endpoint: "http://127.0.0.1:{http}", auth: {{authenticator: basicauth/client}}}}
service:
  extensions: [bearertokenauth/client, basicauth/client]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp, otlphttp]}}
"#
        ),
        b_http,
    );
    let b_url = format!("http://127.0.0.1:{b_http}/v1/traces");
    assert_eq!(post(&b_url, &traces_json(4, "via-b"), &[]), 200);

    // weir C presents a token A does not know: refused, nothing accepted.
    let c_http = free_port();
    let c = Weir::start(
        &format!(
            r#"
extensions:
  bearertokenauth: {{token: tokX}}
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{c_http}"}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{grpc}", tls: {{insecure: true}}, auth: {{authenticator: bearertokenauth}}}}
service:
  extensions: [bearertokenauth]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#
        ),
        c_http,
    );
    assert_eq!(
        post(
            &format!("http://127.0.0.1:{c_http}/v1/traces"),
            &traces_json(5, "c"),
            &[]
        ),
        200
    );
    wait_until("C is refused", Duration::from_secs(10), || {
        c.log().contains("Unauthenticated") && c.log().contains("invalid token")
    });

    wait_until_async("3 + 2 + 4 + 4 spans", Duration::from_secs(15), || {
        sink.state.spans() >= 13
    })
    .await;
    let auth_failures = http_get(tel, "/metrics")
        .map(|(_, t)| metric(&t, "weir_receiver_auth_failures_total", &[]))
        .unwrap_or_default();
    assert!(
        auth_failures >= 6.0,
        "5 HTTP and at least 1 gRPC refusal counted: {auth_failures}"
    );
    assert_eq!(sink.state.spans(), 13, "nothing refused was accepted");
    let tenants = sink.state.items_per_header("x-scope-orgid");
    assert_eq!(tenants.get("team-a"), Some(&7), "{tenants:?}");
    assert_eq!(tenants.get("team-b"), Some(&6), "{tenants:?}");
    c.stop();
    b.stop();
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_setter_forwards_a_client_header() {
    let sink = Sink::start().await;
    let http = free_port();
    let weir = Weir::start(
        &format!(
            r#"
extensions:
  headers_setter:
    headers:
      - {{key: X-Scope-OrgID, from_context: X-Tenant, default_value: nobody}}
      - {{key: X-Static, value: fixed}}
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}", include_metadata: true}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{}", tls: {{insecure: true}}, auth: {{authenticator: headers_setter}}}}
service:
  extensions: [headers_setter]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
            sink.grpc_port
        ),
        http,
    );
    let url = format!("http://127.0.0.1:{http}/v1/traces");
    assert_eq!(
        post(&url, &traces_json(2, "acme"), &["-H", "X-Tenant: acme"]),
        200
    );
    assert_eq!(post(&url, &traces_json(1, "none"), &[]), 200);
    wait_until_async("3 spans", Duration::from_secs(10), || {
        sink.state.spans() >= 3
    })
    .await;
    let tenants = sink.state.items_per_header("x-scope-orgid");
    assert_eq!(tenants.get("acme"), Some(&2), "{tenants:?}");
    assert_eq!(tenants.get("nobody"), Some(&1), "{tenants:?}");
    assert!(sink
        .state
        .requests()
        .iter()
        .all(|r| r.headers.get("x-static").map(String::as_str) == Some("fixed")));
    weir.stop();
}

#[test]
fn auth_references_are_checked_at_validation() {
    let dir = common::scratch_dir();
    let f = dir.join("auth.yaml");
    std::fs::write(
        &f,
        r#"
extensions:
  headers_setter: {headers: [{key: X-A, value: b}]}
  basicauth/client: {client_auth: {username: u, password: p}}
  bearertokenauth/off: {token: t}
  bearertokenauth/both: {token: t, tokens: [u]}
  basicauth/md5: {htpasswd: {inline: "dave:$apr1$x$y"}}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:4317", auth: {authenticator: headers_setter}}
      http: {endpoint: "127.0.0.1:4318", auth: {authenticator: basicauth/client}}
exporters:
  otlp: {endpoint: "127.0.0.1:4317", tls: {insecure: true}, auth: {authenticator: nope}}
  otlphttp: {endpoint: "http://127.0.0.1:4318", auth: {authenticator: bearertokenauth/off}}
service:
  extensions: [headers_setter, basicauth/client]
  pipelines:
    traces: {receivers: [otlp], exporters: [otlp, otlphttp]}
"#,
    )
    .expect("write");
    let (ok, text) = common::validate(&[f]);
    assert!(!ok);
    for want in [
        "extensions.bearertokenauth/both.tokens: either a single token or multiple tokens can be provided, not both",
        "extensions.basicauth/md5.htpasswd: user \"dave\": MD5 (apr1) hashes are not supported",
        "receivers.otlp.protocols.grpc.auth.authenticator: extension \"headers_setter\": headers_setter sets an exporter's headers",
        "receivers.otlp.protocols.http.auth.authenticator: extension \"basicauth/client\": this basicauth has no htpasswd",
        "exporters.otlp.auth.authenticator: references extension \"nope\", which is not configured",
        "exporters.otlphttp.auth.authenticator: extension \"bearertokenauth/off\" is not enabled: add it to service.extensions",
    ] {
        assert!(text.contains(want), "expected {want:?} in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each authenticator over the other transport too: basicauth on gRPC, bearertokenauth on
/// HTTP (servers and weir clients), and curl with a bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_authenticator_works_over_both_transports() {
    let sink = Sink::start().await;
    let (grpc, http) = (free_port(), free_port());
    let x = Weir::start(
        &format!(
            r#"
extensions:
  basicauth: {{htpasswd: {{inline: "carol:pw-carol"}}}}
  bearertokenauth: {{token: tok-http}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", auth: {{authenticator: basicauth}}}}
      http: {{endpoint: "127.0.0.1:{http}", auth: {{authenticator: bearertokenauth}}}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{}", tls: {{insecure: true}}}}
service:
  extensions: [basicauth, bearertokenauth]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
            sink.grpc_port
        ),
        http,
    );
    let url = format!("http://127.0.0.1:{http}/v1/traces");
    assert_eq!(
        post(
            &url,
            &traces_json(2, "b"),
            &["-H", "Authorization: Bearer tok-http"]
        ),
        200
    );
    assert_eq!(
        post(
            &url,
            &traces_json(1, "b"),
            &["-H", "Authorization: Bearer nope"]
        ),
        401
    );
    assert_eq!(
        post(&url, &traces_json(1, "b"), &["-u", "carol:pw-carol"]),
        401
    );

    let y_http = free_port();
    let y = Weir::start(
        &format!(
            r#"
extensions:
  basicauth/c: {{client_auth: {{username: carol, password: pw-carol}}}}
  bearertokenauth/c: {{token: tok-http}}
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{y_http}"}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{grpc}", tls: {{insecure: true}}, auth: {{authenticator: basicauth/c}}}}
  otlphttp: {{endpoint: "http://127.0.0.1:{http}", auth: {{authenticator: bearertokenauth/c}}}}
service:
  extensions: [basicauth/c, bearertokenauth/c]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp, otlphttp]}}
"#
        ),
        y_http,
    );
    assert_eq!(
        post(
            &format!("http://127.0.0.1:{y_http}/v1/traces"),
            &traces_json(3, "y"),
            &[]
        ),
        200
    );
    wait_until_async("2 + 3 + 3 spans", Duration::from_secs(15), || {
        sink.state.spans() >= 8
    })
    .await;
    assert_eq!(sink.state.spans(), 8);
    y.stop();
    x.stop();
}
