//! Hot reload through the real binary with real signals, while clients send:
//! - 20 SIGHUPs alternating two configs (an exporter added and removed, a processor's settings
//!   changed, a pipeline added): every span and log record the client saw accepted reaches the
//!   sink both configs name; nothing is lost, duplicates are counted;
//! - a reload keeps the listening socket: a client connecting in a tight loop never sees a
//!   refused connection;
//! - traces buffered in tail sampling across a reload are decided (by the new policies) and
//!   delivered afterwards;
//! - a broken config changes nothing, is reported in the log and the metrics, and a later good
//!   config applies; `POST /-/reload` and `--watch-config` do the same as SIGHUP.
mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::sink::Sink;
use common::{free_port, http_get, metric, wait_until_async, Weir};
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsServiceRequest,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};

fn spans(names: &[String], trace: u8, error: bool) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Span {
                        trace_id: vec![trace; 16],
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: n.clone(),
                        status: error.then(|| Status {
                            code: status::StatusCode::Error as i32,
                            message: String::new(),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs(n: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("line {i}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn scrape(tel: u16) -> String {
    http_get(tel, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// Waits until `weir_config_reloads_total` reaches `n`.
async fn reloaded(tel: u16, n: usize) {
    wait_until_async(&format!("reload #{n}"), Duration::from_secs(20), || {
        metric(&scrape(tel), "weir_config_reloads_total", &[]) >= n as f64
    })
    .await;
}

fn config_a(grpc: u16, tel: u16, a: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  batch:
    timeout: 50ms
exporters:
  otlp/a:
    endpoint: 127.0.0.1:{pa}
    tls: {{insecure: true}}
service:
  shutdown_timeout: 10s
  telemetry:
    metrics:
      address: 127.0.0.1:{tel}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/a]
    logs:
      receivers: [otlp]
      exporters: [otlp/a]
"#,
        pa = a.grpc_port
    )
}

/// Config B: exporter otlp/b added to traces, batch settings changed, a pipeline added.
fn config_b(grpc: u16, tel: u16, a: &Sink, b: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  batch:
    timeout: 120ms
    send_batch_size: 300
exporters:
  otlp/a:
    endpoint: 127.0.0.1:{pa}
    tls: {{insecure: true}}
  otlp/b:
    endpoint: 127.0.0.1:{pb}
    tls: {{insecure: true}}
service:
  shutdown_timeout: 10s
  telemetry:
    metrics:
      address: 127.0.0.1:{tel}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/a, otlp/b]
    logs:
      receivers: [otlp]
      exporters: [otlp/a]
    logs/extra:
      receivers: [otlp]
      exporters: [otlp/b]
"#,
        pa = a.grpc_port,
        pb = b.grpc_port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sighups_while_sending_lose_nothing() {
    let a = Sink::start().await;
    let b = Sink::start().await;
    let (grpc, tel) = (free_port(), free_port());
    let weir = Weir::start(&config_a(grpc, tel, &a), grpc);

    // A client sends traces (10 uniquely named spans a request) and logs without pause,
    // retrying refusals as an OTLP exporter does, and remembers what was accepted.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted_spans = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let accepted_logs = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (stop, accepted_spans, accepted_logs, refused) = (
            stop.clone(),
            accepted_spans.clone(),
            accepted_logs.clone(),
            refused.clone(),
        );
        tokio::spawn(async move {
            let mut traces = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
                .await
                .expect("connect");
            let mut logc = LogsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
                .await
                .expect("connect");
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let names: Vec<String> = (0..10).map(|i| format!("s{n}-{i}")).collect();
                match traces
                    .export(spans(&names, (n % 250) as u8 + 1, false))
                    .await
                {
                    Ok(_) => accepted_spans.lock().unwrap().extend(names),
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                match logc.export(logs(5)).await {
                    Ok(_) => {
                        accepted_logs.fetch_add(5, Ordering::Relaxed);
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                tokio::task::yield_now().await;
            }
        })
    };

    // Traffic flows between reloads: each waits for 200 more accepted spans.
    let flowing = |accepted_spans: &Arc<std::sync::Mutex<Vec<String>>>| {
        let from = accepted_spans.lock().unwrap().len();
        let acc = accepted_spans.clone();
        move || acc.lock().unwrap().len() >= from + 200
    };
    for i in 1..=20 {
        wait_until_async(
            "traffic between reloads",
            Duration::from_secs(20),
            flowing(&accepted_spans),
        )
        .await;
        let yaml = if i % 2 == 1 {
            config_b(grpc, tel, &a, &b)
        } else {
            config_a(grpc, tel, &a)
        };
        weir.rewrite_config(&yaml);
        weir.signal("HUP");
        reloaded(tel, i).await;
    }
    wait_until_async(
        "traffic after the last reload",
        Duration::from_secs(20),
        flowing(&accepted_spans),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    sender.await.expect("sender");

    let accepted = accepted_spans.lock().unwrap().clone();
    let want_logs = accepted_logs.load(Ordering::Relaxed);
    assert!(
        accepted.len() > 1000,
        "the client kept sending: {}",
        accepted.len()
    );
    wait_until_async(
        "every accepted span and log at sink A",
        Duration::from_secs(20),
        || a.state.spans() >= accepted.len() && a.state.logs() >= want_logs,
    )
    .await;
    // Sink A is named by both configs: it has every accepted span, each exactly once.
    let got = a.state.span_names.lock().unwrap().clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in &got {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|n| !counts.contains_key(n.as_str()))
        .collect();
    let dups = counts.values().filter(|c| **c > 1).count();
    assert!(
        lost.is_empty(),
        "{} accepted spans lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(dups, 0, "duplicated spans at sink A");
    assert_eq!(got.len(), accepted.len());
    assert_eq!(a.state.logs(), want_logs, "every accepted log record at A");
    // Sink B only ever gets spans that were accepted (while config B was in force).
    let at_b = b.state.span_names.lock().unwrap().clone();
    assert!(!at_b.is_empty(), "config B sent spans to B");
    let accepted_set: std::collections::HashSet<&String> = accepted.iter().collect();
    assert!(at_b.iter().all(|n| accepted_set.contains(n)));
    assert!(b.state.logs() > 0, "the added pipeline logs/extra ran");

    let m = scrape(tel);
    assert_eq!(metric(&m, "weir_config_reloads_total", &[]), 20.0);
    assert_eq!(metric(&m, "weir_config_last_reload_successful", &[]), 1.0);
    assert_eq!(metric(&m, "weir_config_reload_failures_total", &[]), 0.0);
    let log = weir.log();
    assert!(log.contains("config reloaded: added: exporters.otlp/b, pipelines.logs/extra; changed: pipelines.traces"), "{log}");
    assert!(
        log.contains("removed: exporters.otlp/b, pipelines.logs/extra"),
        "{log}"
    );
    assert!(
        log.contains("kept: ") && log.contains("receivers.otlp"),
        "{log}"
    );
    println!(
        "reload test: {} spans and {want_logs} log records accepted, all at sink A; {} spans at B; {} refusals retried",
        accepted.len(),
        at_b.len(),
        refused.load(Ordering::Relaxed)
    );
    weir.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_closes_the_port() {
    let a = Sink::start().await;
    let b = Sink::start().await;
    let (grpc, tel) = (free_port(), free_port());
    let weir = Weir::start(&config_a(grpc, tel, &a), grpc);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let prober = {
        let (stop, ok, refused, errors) =
            (stop.clone(), ok.clone(), refused.clone(), errors.clone());
        std::thread::spawn(move || {
            let addr = ([127, 0, 0, 1], grpc).into();
            while !stop.load(Ordering::Relaxed) {
                // Connect and complete an HTTP/2 handshake (the client preface and SETTINGS,
                // then the server's first frame): each probe waits for weir's answer, so the
                // loop is paced by the server, not by a timer.
                let probe = || -> std::io::Result<()> {
                    use std::io::{Read, Write};
                    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(
                        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
                    )?;
                    let mut frame = [0u8; 9];
                    s.read_exact(&mut frame)?;
                    Ok(())
                };
                match probe() {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.lock().unwrap().push(format!("{e} ({:?})", e.kind()));
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    // Ten reloads that change other components (and one that changes the receiver's own
    // settings but not its endpoint): the socket stays.
    for i in 1..=10 {
        let mut yaml = if i % 2 == 1 {
            config_b(grpc, tel, &a, &b)
        } else {
            config_a(grpc, tel, &a)
        };
        if i == 5 {
            yaml = yaml.replace(
                &format!("endpoint: 127.0.0.1:{grpc}"),
                &format!("endpoint: 127.0.0.1:{grpc}\n        max_recv_msg_size_mib: 8"),
            );
        }
        weir.rewrite_config(&yaml);
        weir.signal("HUP");
        reloaded(tel, i).await;
        // Probes keep succeeding between reloads.
        let from = ok.load(Ordering::Relaxed);
        let probes = ok.clone();
        wait_until_async(
            "probes between reloads",
            Duration::from_secs(20),
            move || probes.load(Ordering::Relaxed) >= from + 20,
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    prober.join().expect("prober");
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "{}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "a connection failed during a reload: {:?}\n{}",
        errors.lock().unwrap(),
        weir.log()
    );
    // The reload that changed the receiver's settings (same endpoint) restarted its server
    // on the same socket.
    assert!(
        weir.log().contains("receivers.otlp; removed"),
        "{}",
        weir.log()
    );
    weir.stop();
}

fn tail_config(grpc: u16, tel: u16, sink: &Sink, policy: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  tail_sampling:
    decision_wait: 2s
    policies: [{policy}]
exporters:
  otlp:
    endpoint: 127.0.0.1:{port}
    tls: {{insecure: true}}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{tel}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [otlp]
"#,
        port = sink.grpc_port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_buffered_in_tail_sampling_survive_a_reload() {
    let sink = Sink::start().await;
    let (grpc, tel) = (free_port(), free_port());
    let errors_only = "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}";
    let weir = Weir::start(&tail_config(grpc, tel, &sink, errors_only), grpc);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");
    let names = |t: u8| (0..4).map(|i| format!("t{t}-{i}")).collect::<Vec<_>>();
    client
        .export(spans(&names(1), 1, true))
        .await
        .expect("error trace");
    client
        .export(spans(&names(2), 2, false))
        .await
        .expect("plain trace");
    // Reload while both traces wait: the new policies keep everything, including the plain
    // trace the old policy would have dropped.
    weir.rewrite_config(&tail_config(
        grpc,
        tel,
        &sink,
        "{name: all, type: always_sample}",
    ));
    weir.signal("HUP");
    reloaded(tel, 1).await;
    assert_eq!(
        sink.state.spans(),
        0,
        "nothing decided before decision_wait"
    );
    wait_until_async(
        "both buffered traces delivered",
        Duration::from_secs(15),
        || sink.state.spans() >= 8,
    )
    .await;
    assert_eq!(
        sink.state.spans(),
        8,
        "{:?}\n{}\n{}",
        sink.state.span_names.lock().unwrap(),
        scrape(tel)
            .lines()
            .filter(|l| l.contains("tail_sampling"))
            .collect::<Vec<_>>()
            .join("\n"),
        weir.log()
    );
    let mut got = sink.state.span_names.lock().unwrap().clone();
    got.sort();
    let mut want: Vec<String> = names(1).into_iter().chain(names(2)).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(
        weir.log().contains("changed: pipelines.traces"),
        "{}",
        weir.log()
    );
    weir.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_changes_nothing_and_a_later_good_one_applies() {
    let a = Sink::start().await;
    let b = Sink::start().await;
    let (grpc, tel) = (free_port(), free_port());
    let weir = Weir::start(&config_a(grpc, tel, &a), grpc);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");

    // Broken: an unknown key and an undeclared exporter.
    let broken = config_b(grpc, tel, &a, &b)
        .replace("timeout: 120ms", "timeout: 120ms\n    sned_batch_size: 1")
        .replace("exporters: [otlp/a, otlp/b]", "exporters: [otlp/a, otlp/c]");
    weir.rewrite_config(&broken);
    weir.signal("HUP");
    reloaded(tel, 1).await;
    let m = scrape(tel);
    assert_eq!(metric(&m, "weir_config_last_reload_successful", &[]), 0.0);
    assert_eq!(metric(&m, "weir_config_reload_failures_total", &[]), 1.0);
    wait_until_async("the refusal in the log", Duration::from_secs(5), || {
        weir.log().contains("error(s)")
    })
    .await;
    let log = weir.log();
    assert!(
        log.contains("reload refused: the new config is invalid"),
        "{log}"
    );
    assert!(
        log.contains("processors.batch.sned_batch_size: unknown field `sned_batch_size`"),
        "{log}"
    );
    assert!(log.contains("references exporter \"otlp/c\""), "{log}");
    assert!(
        log.contains(":10: processors.batch.sned_batch_size"),
        "errors name the line: {log}"
    );
    // The old config still runs.
    client
        .export(spans(&["still-a".to_string()], 9, false))
        .await
        .expect("accepted");
    wait_until_async("the span at A", Duration::from_secs(10), || {
        a.state.spans() >= 1
    })
    .await;
    assert_eq!(b.state.spans(), 0);

    // POST /-/reload with the broken file answers 400 with the errors.
    let resp = post(tel, "/-/reload");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("unknown field `sned_batch_size`"), "{resp}");

    // A good config applies (over HTTP this time).
    weir.rewrite_config(&config_b(grpc, tel, &a, &b));
    let resp = post(tel, "/-/reload");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("config reloaded: added: exporters.otlp/b"),
        "{resp}"
    );
    assert_eq!(
        metric(&scrape(tel), "weir_config_last_reload_successful", &[]),
        1.0
    );
    client
        .export(spans(&["to-both".to_string()], 10, false))
        .await
        .expect("accepted");
    wait_until_async("the span at B", Duration::from_secs(10), || {
        b.state.spans() >= 1
    })
    .await;
    let m = scrape(tel);
    assert_eq!(metric(&m, "weir_config_reloads_total", &[]), 3.0);
    assert!(m.contains("weir_config_info{hash=\""), "{m}");
    weir.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes() {
    let a = Sink::start().await;
    let b = Sink::start().await;
    let (grpc, tel) = (free_port(), free_port());
    let weir = Weir::start_with(&config_a(grpc, tel, &a), grpc, &["--watch-config"]);
    weir.rewrite_config(&config_b(grpc, tel, &a, &b));
    reloaded(tel, 1).await;
    wait_until_async("the watch log line", Duration::from_secs(5), || {
        weir.log()
            .contains("config files changed: reloading (--watch-config)")
    })
    .await;
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");
    client
        .export(spans(&["watched".to_string()], 3, false))
        .await
        .expect("accepted");
    wait_until_async("the span at B", Duration::from_secs(10), || {
        b.state.spans() >= 1
    })
    .await;
    weir.stop();
}

/// A bare `POST path` to the telemetry endpoint; the raw response.
fn post(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}
