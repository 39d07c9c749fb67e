//! The `debug` exporter writes through weir's logger by default (`use_internal_logger: true`,
//! as upstream), or the text alone to stdout.
mod common;

use std::time::Duration;

use common::{free_port, wait_until, Weir};

fn post_span(port: u16) {
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"hello","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    use std::io::{Read, Write};
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

fn config(http: u16, internal: bool) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  debug: {{use_internal_logger: {internal}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
    )
}

#[test]
fn debug_output_goes_through_the_logger_or_to_stdout() {
    for internal in [true, false] {
        let http = free_port();
        let weir = Weir::start(&config(http, internal), http);
        post_span(http);
        let line = "traces: 1 spans (receiver otlp, http)";
        wait_until("the debug exporter's line", Duration::from_secs(10), || {
            if internal {
                weir.log().contains(line)
            } else {
                weir.stdout.lock().map(|s| s.contains(line)).unwrap_or(false)
            }
        });
        let stdout = weir.stdout.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(stdout.contains(line), !internal, "stdout: {stdout}");
        assert!(weir.stop().success());
    }
}
