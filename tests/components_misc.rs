//! Smaller upstream keys doing what they do upstream: the `debug` exporter writes through
//! weir's logger by default (`use_internal_logger: true`) or the text alone to stdout;
//! `health_check` answers with configured bodies and warns that `check_collector_pipeline`
//! has no effect.
mod common;

use std::time::Duration;

use common::{free_port, http_get, wait_until, Weir};

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
                weir.stdout
                    .lock()
                    .map(|s| s.contains(line))
                    .unwrap_or(false)
            }
        });
        let stdout = weir.stdout.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(stdout.contains(line), !internal, "stdout: {stdout}");
        assert!(weir.stop().success());
    }
}

#[test]
fn health_check_answers_with_the_configured_bodies() {
    let (http, health) = (free_port(), free_port());
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  debug: {{}}
extensions:
  health_check:
    endpoint: "127.0.0.1:{health}"
    path: /health/status
    response_body: {{healthy: I'm OK, unhealthy: I'm not well}}
    check_collector_pipeline: {{enabled: true, interval: 5m, exporter_failure_threshold: 5}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
    );
    let weir = Weir::start(&yaml, health);
    wait_until("ready", Duration::from_secs(10), || {
        http_get(health, "/health/status").is_some_and(|r| r.0 == 200)
    });
    assert_eq!(
        http_get(health, "/health/status"),
        Some((200, "I'm OK".to_string()))
    );
    assert_eq!(http_get(health, "/").map(|r| r.0), Some(404));
    // The log comes through a pipe: wait for the warning rather than read it at once.
    wait_until("the warning in the log", Duration::from_secs(10), || {
        weir.log()
            .contains("check_collector_pipeline has no effect in weir")
    });
    assert!(weir.stop().success());
}

#[test]
fn service_telemetry_resource_and_prometheus_reader_options() {
    let (http, tel) = (free_port(), free_port());
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  debug: {{}}
service:
  telemetry:
    resource: {{service.name: gw-1, deployment.environment: prod, service.version: null}}
    logs: {{level: WARN}}
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: {tel}
                without_scope_info: true
                without_type_suffix: true
                without_units: true
                with_resource_constant_labels: {{included: [deployment.environment]}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
    );
    let weir = Weir::start(&yaml, tel);
    post_span(http);
    let mut text = String::new();
    wait_until("the accepted span counted", Duration::from_secs(10), || {
        text = http_get(tel, "/metrics").map(|r| r.1).unwrap_or_default();
        text.lines().any(|l| {
            l.starts_with("otelcol_receiver_accepted_spans{")
                && l.contains("transport=\"http\"")
                && l.ends_with(" 1")
        })
    });
    let target = text
        .lines()
        .find(|l| l.starts_with("target_info{"))
        .unwrap_or_else(|| panic!("no target_info in:\n{text}"));
    assert!(
        target.starts_with("target_info{deployment_environment=\"prod\",service_instance_id=\"")
            && target.ends_with("\",service_name=\"gw-1\"} 1"),
        "{target}"
    );
    assert!(!target.contains("service_version"), "{target}");
    // Counters without _total, every series with the constant label.
    let accepted = text
        .lines()
        .find(|l| {
            l.starts_with("otelcol_receiver_accepted_spans{") && l.contains("transport=\"http\"")
        })
        .expect("accepted spans");
    assert!(
        accepted.contains("deployment_environment=\"prod\"") && accepted.ends_with(" 1"),
        "{accepted}"
    );
    assert!(!text.contains("_total"), "no _total suffix:\n{text}");
    assert!(weir.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_exporters_go_through_proxy_url() {
    // The backend's name does not resolve: the spans can only arrive through the proxy,
    // here the sink itself, which serves the absolute-form request it is sent.
    let sink = common::sink::Sink::start().await;
    let http = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  otlphttp:
    endpoint: http://backend.invalid:4318
    proxy_url: http://127.0.0.1:{proxy}
    compression: none
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlphttp]}}
"#,
        proxy = sink.http_port
    );
    let weir = Weir::start(&yaml, http);
    tokio::task::spawn_blocking(move || post_span(http))
        .await
        .expect("post");
    common::wait_until_async(
        "the span through the proxy",
        Duration::from_secs(10),
        || sink.state.spans() == 1,
    )
    .await;
    assert!(weir.stop().success());

    // Without proxy_url, the environment's HTTP_PROXY, as the Collector (Go) reads it; a host
    // NO_PROXY lists goes direct (and, not resolving, never arrives).
    let direct = yaml.replace(
        &format!("    proxy_url: http://127.0.0.1:{}\n", sink.http_port),
        "",
    );
    assert!(!direct.contains("proxy_url"));
    let proxy_env = format!("127.0.0.1:{}", sink.http_port);
    let weir = Weir::start_with_env(
        &direct,
        http,
        &[],
        &[
            ("HTTP_PROXY", proxy_env.as_str()),
            ("NO_PROXY", "example.com,.svc"),
        ],
    );
    tokio::task::spawn_blocking(move || post_span(http))
        .await
        .expect("post");
    common::wait_until_async(
        "the span through HTTP_PROXY",
        Duration::from_secs(10),
        || sink.state.spans() == 2,
    )
    .await;
    assert!(weir.stop().success());

    // A proxy weir cannot use is refused at validation.
    let dir = common::scratch_dir();
    let f = dir.join("proxy.yaml");
    std::fs::write(
        &f,
        yaml.replace(
            &format!("http://127.0.0.1:{}", sink.http_port),
            "https://proxy:3128",
        ),
    )
    .expect("write");
    let (ok, out) = common::validate(std::slice::from_ref(&f));
    assert!(!ok);
    assert!(
        out.contains("exporters.otlphttp.proxy_url: \"https://proxy:3128\": weir supports http:// proxies (http://host:port)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_reader_pushes_weirs_own_metrics_over_otlp() {
    let sink = common::sink::Sink::start().await;
    for (protocol, endpoint) in [
        (
            "http/protobuf",
            format!("http://127.0.0.1:{}", sink.http_port),
        ),
        ("grpc", format!("http://127.0.0.1:{}", sink.grpc_port)),
    ] {
        let http = free_port();
        let yaml = format!(
            r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  debug: {{}}
service:
  telemetry:
    resource: {{service.name: gw-push}}
    metrics:
      readers:
        - periodic:
            interval: 200
            exporter:
              otlp: {{protocol: {protocol}, endpoint: "{endpoint}"}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
        );
        let before = sink.state.points();
        let weir = Weir::start(&yaml, http);
        common::wait_until_async("weir's own metrics pushed", Duration::from_secs(10), || {
            sink.state.points() > before
        })
        .await;
        assert!(weir.stop().success());
        let pushed = sink.state.requests();
        let last = pushed
            .iter()
            .rev()
            .find(|r| r.signal == "metrics")
            .expect("a metrics push");
        assert!(last.items > 0, "{protocol}: {last:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_processors_export_weirs_own_logs_over_otlp() {
    let sink = common::sink::Sink::start().await;
    let http = free_port();
    // An exporter no pipeline uses: weir warns about it at start, and the warning is exported.
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  debug: {{}}
  debug/unused: {{}}
service:
  telemetry:
    logs:
      level: info
      processors:
        - batch:
            schedule_delay: 100
            exporter:
              otlp: {{protocol: http/protobuf, endpoint: "http://127.0.0.1:{sink}"}}
    metrics: {{level: none}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#,
        sink = sink.http_port
    );
    let weir = Weir::start(&yaml, http);
    common::wait_until_async("weir's own logs exported", Duration::from_secs(10), || {
        sink.state.logs() > 0
    })
    .await;
    assert!(weir.stop().success());
    assert!(
        weir_log_has(&weir_log_text(&sink), "debug/unused"),
        "the start-up warning among the exported records"
    );
}

/// The bodies of the log records the sink received.
fn weir_log_text(sink: &common::sink::Sink) -> Vec<String> {
    sink.state
        .log_bodies
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default()
}

fn weir_log_has(bodies: &[String], needle: &str) -> bool {
    bodies.iter().any(|b| b.contains(needle))
}

/// `zpages`: the Collector's pages answer with the running config, and show the new one
/// after a reload; `expvar` serves weir's self-metrics as JSON; other paths are 404.
#[test]
fn zpages_show_the_running_pipelines_and_follow_reloads() {
    let (http, z) = (free_port(), free_port());
    let yaml = |extra_pipeline: &str| {
        format!(
            r#"
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http}"}}}}}}
processors:
  batch: {{}}
exporters:
  debug: {{verbosity: basic}}
extensions:
  zpages: {{endpoint: "127.0.0.1:{z}", expvar: {{enabled: true}}}}
service:
  extensions: [zpages]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [debug]}}
{extra_pipeline}
"#
        )
    };
    // Receivers start after extensions: ready once the receiver listens.
    let weir = Weir::start(&yaml(""), http);
    let get = |path: &str| http_get(z, path).expect("zpages answers");
    let (code, page) = get("/debug/pipelinez");
    assert_eq!(code, 200);
    assert!(
        page.contains("<td>traces</td><td>otlp</td><td>batch</td><td>debug</td>"),
        "{page}"
    );
    let (code, page) = get("/debug/extensionz");
    assert_eq!(code, 200);
    assert!(page.contains("<td>zpages</td><td>zpages</td>"), "{page}");
    let (code, page) = get("/debug/servicez");
    assert_eq!(code, 200);
    assert!(page.contains(env!("CARGO_PKG_VERSION")), "{page}");
    assert_eq!(get("/debug/featurez").0, 200);
    assert_eq!(get("/debug/tracez").0, 200);
    post_span(http);
    let (code, vars) = get("/debug/expvarz");
    assert_eq!(code, 200);
    let vars: serde_json::Value = serde_json::from_str(&vars).expect("expvarz is JSON");
    assert!(
        vars.as_object().is_some_and(|m| m
            .keys()
            .any(|k| k.starts_with("otelcol_receiver_accepted_spans"))),
        "{vars}"
    );
    assert_eq!(get("/nope").0, 404);

    // A reload that adds a pipeline shows on the page.
    weir.rewrite_config(&yaml(
        "    logs: {receivers: [otlp], processors: [batch], exporters: [debug]}",
    ));
    weir.signal("HUP");
    wait_until("pipelinez shows logs", Duration::from_secs(10), || {
        http_get(z, "/debug/pipelinez").is_some_and(|(_, p)| {
            p.contains("<td>logs</td><td>otlp</td><td>batch</td><td>debug</td>")
        })
    });
    assert!(weir.stop().success());
}

/// A GET whose body may be binary: (status, body bytes).
fn http_get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, buf[split + 4..].to_vec())
}

/// Decodes a pprof body (gzip, profile.proto) and returns it with its string table's view of
/// the sample types.
fn parse_profile(body: &[u8]) -> (weir::extensions::pprof::proto::Profile, Vec<String>) {
    use prost::Message;
    let raw = weir::compression::gunzip_capped(body, 64 << 20).expect("gzip");
    let p = weir::extensions::pprof::proto::Profile::decode(&raw[..]).expect("profile.proto");
    assert_eq!(p.string_table.first().map(String::as_str), Some(""));
    let types = p
        .sample_type
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                p.string_table[t.r#type as usize], p.string_table[t.unit as usize]
            )
        })
        .collect();
    (p, types)
}

/// `pprof`: a CPU profile over HTTP that parses as pprof, taken while weir works; Go-only
/// profiles and bad parameters get clear answers; `save_to_file` writes a profile at shutdown.
#[test]
fn pprof_serves_cpu_profiles_and_saves_one_at_shutdown() {
    let (http, pp) = (free_port(), free_port());
    let saved = common::scratch_dir().join("weir.pprof");
    let yaml = format!(
        r#"
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http}"}}}}}}
exporters:
  debug: {{verbosity: basic}}
extensions:
  pprof: {{endpoint: "127.0.0.1:{pp}", block_profile_fraction: 3}}
service:
  extensions: [pprof]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
    );
    // Receivers start after extensions: ready once the receiver listens.
    let weir = Weir::start(&yaml, http);
    wait_until(
        "the block_profile_fraction warning",
        Duration::from_secs(10),
        || {
            weir.log().contains(
                "block_profile_fraction (Go's block profile; weir has none) has no effect",
            )
        },
    );
    // Work for the sampler while the profile is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                post_span(http);
            }
        })
    };
    let (code, body) = http_get_bytes(pp, "/debug/pprof/profile?seconds=2");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = load.join();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (p, types) = parse_profile(&body);
    assert_eq!(types, ["samples/count", "cpu/nanoseconds"]);
    assert_eq!(p.period, 1_000_000_000 / 99);
    assert!(!p.sample.is_empty(), "samples taken under load");
    assert!(p.duration_nanos >= 1_900_000_000, "{}", p.duration_nanos);
    // Every sample's locations and functions resolve.
    for s in &p.sample {
        assert_eq!(s.value.len(), 2);
        for id in &s.location_id {
            let loc = &p.location[(*id - 1) as usize];
            for l in &loc.line {
                assert!(p.function.iter().any(|f| f.id == l.function_id));
            }
        }
    }
    let (code, body) = http_get_bytes(pp, "/debug/pprof/profile?seconds=0");
    assert_eq!(code, 400);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "seconds must be 1 to 300, got 0\n"
    );
    let (code, body) = http_get_bytes(pp, "/debug/pprof/heap");
    assert_eq!(code, 404);
    assert!(String::from_utf8_lossy(&body).contains("heap is one of Go's profiles"));
    assert_eq!(http_get_bytes(pp, "/debug/pprof/").0, 200);
    assert!(weir.stop().success());

    // save_to_file: profiled from start to shutdown.
    let pp2 = free_port();
    let yaml = format!(
        r#"
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http}"}}}}}}
exporters:
  debug: {{verbosity: basic}}
extensions:
  pprof: {{endpoint: "127.0.0.1:{pp2}", save_to_file: "{}"}}
service:
  extensions: [pprof]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#,
        saved.display()
    );
    let weir = Weir::start(&yaml, http);
    for _ in 0..50 {
        post_span(http);
    }
    // While it profiles for the file, an on-demand profile is refused, saying why.
    let (code, body) = http_get_bytes(pp2, "/debug/pprof/profile?seconds=1");
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(weir.stop().success());
    let body = std::fs::read(&saved).expect("save_to_file wrote the profile");
    let (_, types) = parse_profile(&body);
    assert_eq!(types, ["samples/count", "cpu/nanoseconds"]);
}
