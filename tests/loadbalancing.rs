//! Two tiers on loopback, as `deploy/` describes them: one weir with the `loadbalancing`
//! exporter (static resolver, routing by trace id) in front of two weirs that tail-sample,
//! each into a sink of its own; and, side by side, one weir that tail-samples everything
//! alone. Traces whose spans arrive interleaved over many requests and connections arrive
//! whole at exactly one second-tier weir, and the two tiers keep exactly the traces the single
//! weir keeps.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::sink::Sink;
use common::{free_port, http_get, metric, wait_until_async, Weir};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

const TRACES: usize = 2000;
const SPANS_PER_TRACE: usize = 4;

fn sampler(grpc: u16, tel: u16, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
processors:
  tail_sampling:
    decision_wait: 1s
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
      - {{name: some, type: probabilistic, probabilistic: {{sampling_percentage: 30}}}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [tail_sampling], exporters: [otlp]}}
"#,
        sink = sink.grpc_port
    )
}

/// Traces a sampler has decided on (`must`: e.g. only the kept ones).
fn decided_with(tel: u16, must: &[&str]) -> f64 {
    http_get(tel, "/metrics")
        .map(|(_, t)| {
            metric(
                &t,
                "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
                must,
            )
        })
        .unwrap_or(0.0)
}

fn decided(tel: u16) -> f64 {
    decided_with(tel, &[])
}

fn kept(tel: u16) -> usize {
    decided_with(tel, &["sampled=\"true\""]) as usize
}

fn trace_id(t: usize) -> Vec<u8> {
    let x = (t as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    x.to_be_bytes().to_vec()
}

/// Request `k` of `n`: span `k` of every trace in `traces` (so each trace's spans arrive in
/// `SPANS_PER_TRACE` different requests).
fn request(traces: std::ops::Range<usize>, k: usize) -> ExportTraceServiceRequest {
    let spans = traces
        .map(|t| Span {
            trace_id: trace_id(t),
            span_id: ((t * SPANS_PER_TRACE + k) as u64 + 1)
                .to_be_bytes()
                .to_vec(),
            name: format!("op-{k}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_001_000_000,
            status: Some(Status {
                code: if t % 50 == 0 && k == 2 { 2 } else { 0 },
                message: String::new(),
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("shop".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// trace id -> spans received, per sink.
fn traces_at(sink: &Sink) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for (t, _) in sink.state.span_trace_states.lock().unwrap().iter() {
        *m.entry(t.clone()).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trace_arrives_whole_at_one_sampler_and_the_decisions_match_one_weir() {
    let (sink_a, sink_b, sink_one) = (
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    );
    let (a, b, one, front, tel) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let (tel_a, tel_b, tel_one) = (free_port(), free_port(), free_port());
    let tier2a = Weir::start(&sampler(a, tel_a, &sink_a), a);
    let tier2b = Weir::start(&sampler(b, tel_b, &sink_b), b);
    let single = Weir::start(&sampler(one, tel_one, &sink_one), one);
    let tier1 = Weir::start(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{front}"}}
exporters:
  loadbalancing:
    routing_key: traceID
    protocol:
      otlp:
        tls: {{insecure: true}}
        timeout: 5s
    resolver:
      static:
        hostnames: [127.0.0.1:{a}, 127.0.0.1:{b}]
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [loadbalancing]}}
"#
        ),
        front,
    );

    // Four connections to each entry point; each request holds one span of 250 traces.
    let mut jobs = Vec::new();
    for (conn, port) in (0..4).flat_map(|c| [(c, front), (c, one)]) {
        jobs.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .expect("connect");
            for k in 0..SPANS_PER_TRACE {
                for chunk in (0..TRACES).step_by(250).skip(conn).step_by(4) {
                    client
                        .export(request(chunk..(chunk + 250).min(TRACES), k))
                        .await
                        .expect("export");
                }
            }
        }));
    }
    for j in jobs {
        j.await.expect("sender");
    }

    // Every trace decided (1 s after its first span), by the single weir and by the two.
    wait_until_async(
        "the single weir's decisions",
        Duration::from_secs(30),
        || decided(tel_one) >= TRACES as f64,
    )
    .await;
    wait_until_async(
        "the two samplers' decisions",
        Duration::from_secs(30),
        || decided(tel_a) + decided(tel_b) >= TRACES as f64,
    )
    .await;
    assert_eq!(
        decided(tel_a) + decided(tel_b),
        TRACES as f64,
        "each trace decided once"
    );
    // Everything kept delivered.
    let (k_one, k_two) = (kept(tel_one), kept(tel_a) + kept(tel_b));
    wait_until_async("the kept traces delivered", Duration::from_secs(30), || {
        traces_at(&sink_one).len() >= k_one
            && traces_at(&sink_a).len() + traces_at(&sink_b).len() >= k_two
    })
    .await;
    let kept_by_one: BTreeSet<Vec<u8>> = traces_at(&sink_one).into_keys().collect();
    assert!(
        kept_by_one.len() > TRACES / 5 && kept_by_one.len() < TRACES / 2,
        "30 % and the errors: {} of {TRACES}",
        kept_by_one.len()
    );
    let total = kept_by_one.len() * SPANS_PER_TRACE;
    assert_eq!(
        sink_one.state.spans(),
        total,
        "kept traces whole at the single weir"
    );
    let (at_a, at_b) = (traces_at(&sink_a), traces_at(&sink_b));
    assert!(
        !at_a.is_empty() && !at_b.is_empty(),
        "both samplers get traces"
    );
    for (t, n) in at_a.iter().chain(&at_b) {
        assert_eq!(*n, SPANS_PER_TRACE, "trace {t:02x?} arrived whole");
    }
    let both: BTreeSet<&Vec<u8>> = at_a.keys().filter(|t| at_b.contains_key(*t)).collect();
    assert!(
        both.is_empty(),
        "{} traces split across samplers",
        both.len()
    );
    let kept_by_two: BTreeSet<Vec<u8>> = at_a.keys().chain(at_b.keys()).cloned().collect();
    assert_eq!(kept_by_two, kept_by_one, "the same decisions as one weir");
    eprintln!(
        "kept {} of {TRACES} traces: {} at tier-2 a, {} at tier-2 b, the same set as one weir",
        kept_by_one.len(),
        at_a.len(),
        at_b.len()
    );
    assert_eq!(sink_a.state.spans() + sink_b.state.spans(), total);

    let text = http_get(tel, "/metrics")
        .map(|(_, t)| t)
        .unwrap_or_default();
    assert_eq!(metric(&text, "otelcol_loadbalancer_num_backends", &[]), 2.0);
    assert_eq!(
        metric(
            &text,
            "otelcol_exporter_sent_spans_total",
            &["exporter=\"loadbalancing\""]
        ),
        (TRACES * SPANS_PER_TRACE) as f64
    );
    for w in [tier1, tier2a, tier2b, single] {
        assert!(w.stop().success());
    }
}

fn passthrough(ip: &str, port: u16, tel: u16, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "{ip}:{port}"}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink}
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
        sink = sink.grpc_port
    )
}

/// Tier-2 weirs on 127.0.0.2, .3, ... all on `port`, each forwarding to its sink.
async fn start_tier2s(sinks: &[Sink], port: u16) -> Vec<Weir> {
    let mut tier2 = Vec::new();
    for (i, sink) in sinks.iter().enumerate() {
        let ip = format!("127.0.0.{}", i + 2);
        let tel = free_port();
        tier2.push(Weir::start(&passthrough(&ip, port, tel, sink), tel));
        let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().expect("addr");
        wait_until_async("the tier-2 receiver", Duration::from_secs(10), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        })
        .await;
    }
    tier2
}

/// Sends `traces` (ids from `first`), each trace's spans in different requests.
async fn send_traces(port: u16, first: usize, traces: usize) {
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    for k in 0..SPANS_PER_TRACE {
        for chunk in (first..first + traces).step_by(100) {
            client
                .export(request(chunk..(chunk + 100).min(first + traces), k))
                .await
                .expect("export");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_resolver_follows_the_answers_and_nothing_is_lost() {
    use std::net::Ipv4Addr;
    let name = "samplers.weir.test";
    let dns = common::dns::FakeDns::start(
        name,
        vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
    )
    .await;
    let sinks = [
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    ];
    let port = free_port();
    let tier2 = start_tier2s(&sinks, port).await;
    let (front, tel) = (free_port(), free_port());
    let dns_addr = dns.addr.to_string();
    let tier1 = Weir::start_with_env(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{front}"}}
exporters:
  loadbalancing:
    protocol:
      otlp: {{tls: {{insecure: true}}}}
    resolver:
      dns: {{hostname: {name}, port: {port}, interval: 200ms, timeout: 1s}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [loadbalancing]}}
"#
        ),
        front,
        &[],
        &[("WEIR_DNS_SERVER", dns_addr.as_str())],
    );
    let backends = || {
        http_get(tel, "/metrics")
            .map(|(_, t)| metric(&t, "otelcol_loadbalancer_num_backends", &[]))
            .unwrap_or(0.0)
    };
    wait_until_async("two backends resolved", Duration::from_secs(10), || {
        backends() == 2.0
    })
    .await;

    // 1. Two backends: every trace whole at one of them.
    send_traces(front, 0, 1000).await;
    // 2. A third appears in the answers.
    dns.set(vec![
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 4),
    ]);
    wait_until_async("three backends", Duration::from_secs(10), || {
        backends() == 3.0
    })
    .await;
    send_traces(front, 1000, 1000).await;
    // 3. One leaves while traces are being sent.
    let sending = tokio::spawn(send_traces(front, 2000, 1000));
    dns.set(vec![
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 4),
    ]);
    wait_until_async("two backends again", Duration::from_secs(10), || {
        backends() == 2.0
    })
    .await;
    sending.await.expect("sender");

    let sent = 3000 * SPANS_PER_TRACE;
    wait_until_async("every span delivered", Duration::from_secs(30), || {
        sinks.iter().map(|s| s.state.spans()).sum::<usize>() >= sent
    })
    .await;
    assert_eq!(
        sinks.iter().map(|s| s.state.spans()).sum::<usize>(),
        sent,
        "nothing lost, nothing twice"
    );
    let at: Vec<BTreeMap<Vec<u8>, usize>> = sinks.iter().map(traces_at).collect();
    let owners = |t: usize| -> Vec<usize> {
        let id = trace_id(t);
        (0..3).filter(|i| at[*i].contains_key(&id)).collect()
    };
    for t in 0..2000 {
        let o = owners(t);
        assert_eq!(o.len(), 1, "trace {t} whole at one backend: {o:?}");
        assert_eq!(at[o[0]][&trace_id(t)], SPANS_PER_TRACE);
        if t < 1000 {
            assert_ne!(o[0], 2, "127.0.0.4 was not a backend yet");
        }
    }
    let third: usize = (1000..2000).filter(|t| owners(*t) == [2]).count();
    assert!(
        (200..=500).contains(&third),
        "the new backend took {third} of 1000 traces"
    );
    let split = (2000..3000).filter(|t| owners(*t).len() > 1).count();
    eprintln!(
        "new backend took {third} of 1000 traces; while one left, {split} of 1000 traces were split across backends (moved mid-trace)"
    );
    assert!(weir_stop_all(tier1, tier2));
}

fn weir_stop_all(tier1: Weir, tier2: Vec<Weir>) -> bool {
    let mut ok = tier1.stop().success();
    for w in tier2 {
        ok &= w.stop().success();
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_k8s_resolver_follows_the_ready_endpoints_of_the_service() {
    use std::net::Ipv4Addr;
    let dir = common::scratch_dir();
    let api = common::k8s::FakeK8s::start(&dir, "observability", "weir-tier2").await;
    // Three pods, one not ready yet.
    api.set(vec![
        (Ipv4Addr::new(127, 0, 0, 2), true),
        (Ipv4Addr::new(127, 0, 0, 3), true),
        (Ipv4Addr::new(127, 0, 0, 4), false),
    ]);
    let sinks = [
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    ];
    let port = free_port();
    let tier2 = start_tier2s(&sinks, port).await;
    let (front, tel) = (free_port(), free_port());
    let api_port = api.port.to_string();
    let sa = api.sa_dir.to_string_lossy().to_string();
    let tier1 = Weir::start_with_env(
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{front}"}}
exporters:
  loadbalancing:
    protocol:
      otlp: {{tls: {{insecure: true}}}}
    resolver:
      k8s: {{service: weir-tier2, ports: [{port}], timeout: 2s}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [loadbalancing]}}
"#
        ),
        front,
        &[],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", api_port.as_str()),
            ("WEIR_K8S_SERVICEACCOUNT_DIR", sa.as_str()),
        ],
    );
    let backends = || {
        http_get(tel, "/metrics")
            .map(|(_, t)| metric(&t, "otelcol_loadbalancer_num_backends", &[]))
            .unwrap_or(0.0)
    };
    wait_until_async("the two ready pods", Duration::from_secs(10), || {
        backends() == 2.0
    })
    .await;
    send_traces(front, 0, 500).await;
    // The third pod becomes ready.
    api.set(vec![
        (Ipv4Addr::new(127, 0, 0, 2), true),
        (Ipv4Addr::new(127, 0, 0, 3), true),
        (Ipv4Addr::new(127, 0, 0, 4), true),
    ]);
    wait_until_async("three backends", Duration::from_secs(10), || {
        backends() == 3.0
    })
    .await;
    send_traces(front, 500, 500).await;
    let sent = 1000 * SPANS_PER_TRACE;
    wait_until_async("every span delivered", Duration::from_secs(30), || {
        sinks.iter().map(|s| s.state.spans()).sum::<usize>() >= sent
    })
    .await;
    assert_eq!(sinks.iter().map(|s| s.state.spans()).sum::<usize>(), sent);
    let at: Vec<BTreeMap<Vec<u8>, usize>> = sinks.iter().map(traces_at).collect();
    for t in 0..1000 {
        let owners: Vec<usize> = (0..3)
            .filter(|i| at[*i].contains_key(&trace_id(t)))
            .collect();
        assert_eq!(owners.len(), 1, "trace {t} whole at one backend");
        if t < 500 {
            assert_ne!(owners[0], 2, "the not-ready pod got no traces");
        }
    }
    assert!(
        at[2].len() > 50,
        "the pod that became ready takes its share: {}",
        at[2].len()
    );
    assert_eq!(
        api.refused.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the token was sent"
    );
    assert!(weir_stop_all(tier1, tier2));

    // Without the service account's token the API refuses, and weir says so (and keeps going).
    std::fs::write(api.sa_dir.join("token"), "wrong\n").expect("token");
    let (front2, tel2) = (free_port(), free_port());
    let lonely = Weir::start_with_env(
        &format!(
            "receivers: {{otlp: {{protocols: {{grpc: {{endpoint: '127.0.0.1:{front2}'}}}}}}}}\nexporters:\n  loadbalancing:\n    protocol: {{otlp: {{tls: {{insecure: true}}}}}}\n    resolver: {{k8s: {{service: weir-tier2.observability}}}}\nservice:\n  telemetry: {{metrics: {{address: '127.0.0.1:{tel2}'}}}}\n  pipelines: {{traces: {{receivers: [otlp], exporters: [loadbalancing]}}}}\n"
        ),
        front2,
        &[],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", api_port.as_str()),
            ("WEIR_K8S_SERVICEACCOUNT_DIR", sa.as_str()),
        ],
    );
    wait_until_async("the refusal logged", Duration::from_secs(10), || {
        lonely.log().contains("401 Unauthorized")
    })
    .await;
    assert!(api.refused.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(lonely.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}

fn tier1_static(front: u16, tel: u16, backends: &[u16], max_elapsed: &str) -> String {
    let hosts: Vec<String> = backends.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{front}"}}
exporters:
  loadbalancing:
    protocol:
      otlp:
        tls: {{insecure: true}}
        timeout: 500ms
        retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: {max_elapsed}}}
    resolver:
      static: {{hostnames: [{}]}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{tel}"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [loadbalancing]}}
"#,
        hosts.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_fails_over_and_a_removed_one_hands_its_queue_on() {
    use common::sink::Mode;
    // 1. Backend b fails every request (UNAVAILABLE): after its retries (1 s), its traces go
    // to the next backend on the ring, a, counted.
    let (a, b) = (Sink::start().await, Sink::start().await);
    b.state.set_mode(Mode::Fail(tonic::Code::Unavailable));
    let (front, tel) = (free_port(), free_port());
    let weir = Weir::start(
        &tier1_static(front, tel, &[a.grpc_port, b.grpc_port], "1s"),
        front,
    );
    send_traces(front, 0, 500).await;
    let sent = 500 * SPANS_PER_TRACE;
    wait_until_async("every span at a", Duration::from_secs(30), || {
        a.state.spans() >= sent
    })
    .await;
    assert_eq!(a.state.spans(), sent, "nothing lost, nothing twice");
    assert_eq!(b.state.spans(), 0);
    let text = http_get(tel, "/metrics")
        .map(|(_, t)| t)
        .unwrap_or_default();
    let failed_over = metric(&text, "weir_loadbalancer_failover_items_total", &[]);
    assert!(failed_over > 0.0, "{text}");
    assert!(
        metric(
            &text,
            "otelcol_loadbalancer_backend_outcome_total",
            &["success=\"false\""]
        ) > 0.0
    );
    assert!(
        metric(
            &text,
            "otelcol_loadbalancer_backend_outcome_total",
            &["success=\"true\""]
        ) > 0.0
    );
    eprintln!("failed over: {failed_over} spans of {sent}");
    assert!(weir.stop().success());

    // 2. Backend d fails with long retries; a reload removes it: what its queue holds goes to
    // the new owner, c, instead of waiting for d.
    let (c, d) = (Sink::start().await, Sink::start().await);
    d.state.set_mode(Mode::Fail(tonic::Code::Unavailable));
    let (front, tel) = (free_port(), free_port());
    let weir = Weir::start(
        &tier1_static(front, tel, &[c.grpc_port, d.grpc_port], "10m"),
        front,
    );
    send_traces(front, 0, 500).await;
    wait_until_async(
        "c's share delivered, d's stuck",
        Duration::from_secs(10),
        || c.state.spans() > 0 && c.state.spans() < sent,
    )
    .await;
    weir.rewrite_config(&tier1_static(front, tel, &[c.grpc_port], "10m"));
    weir.signal("HUP");
    wait_until_async("d's queue handed to c", Duration::from_secs(30), || {
        c.state.spans() >= sent
    })
    .await;
    assert_eq!(c.state.spans(), sent, "nothing lost, nothing twice");
    assert_eq!(d.state.spans(), 0);
    assert!(weir.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changed_by_reload_while_sending_loses_nothing() {
    // The backends are sinks; tier 1's static list changes by SIGHUP: {a, b} -> {a, b, c}
    // -> {a, c}, each while traces are being sent.
    let sinks = [
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    ];
    let ports: Vec<u16> = sinks.iter().map(|s| s.grpc_port).collect();
    let (front, tel) = (free_port(), free_port());
    let weir = Weir::start(&tier1_static(front, tel, &ports[..2], "10m"), front);
    let backends = || {
        http_get(tel, "/metrics")
            .map(|(_, t)| metric(&t, "otelcol_loadbalancer_num_backends", &[]))
            .unwrap_or(0.0)
    };
    send_traces(front, 0, 1000).await;
    let sending = tokio::spawn(send_traces(front, 1000, 1000));
    weir.rewrite_config(&tier1_static(front, tel, &ports, "10m"));
    weir.signal("HUP");
    wait_until_async("three backends", Duration::from_secs(10), || {
        backends() == 3.0
    })
    .await;
    sending.await.expect("sender");
    send_traces(front, 2000, 1000).await;
    let sending = tokio::spawn(send_traces(front, 3000, 1000));
    weir.rewrite_config(&tier1_static(front, tel, &[ports[0], ports[2]], "10m"));
    weir.signal("HUP");
    wait_until_async("two backends again", Duration::from_secs(10), || {
        backends() == 2.0
    })
    .await;
    sending.await.expect("sender");
    send_traces(front, 4000, 1000).await;

    let sent = 5000 * SPANS_PER_TRACE;
    wait_until_async("every span delivered", Duration::from_secs(30), || {
        sinks.iter().map(|s| s.state.spans()).sum::<usize>() >= sent
    })
    .await;
    assert_eq!(
        sinks.iter().map(|s| s.state.spans()).sum::<usize>(),
        sent,
        "nothing lost, nothing twice"
    );
    let at: Vec<BTreeMap<Vec<u8>, usize>> = sinks.iter().map(traces_at).collect();
    let owners = |t: usize| -> Vec<usize> {
        (0..3)
            .filter(|i| at[*i].contains_key(&trace_id(t)))
            .collect()
    };
    // Between the changes every trace is whole at one backend.
    for t in (0..1000).chain(2000..3000).chain(4000..5000) {
        assert_eq!(owners(t).len(), 1, "trace {t}");
    }
    let to_c = (2000..3000).filter(|t| owners(*t) == [2]).count();
    let moved_in = (1000..2000).filter(|t| owners(*t).len() > 1).count();
    let moved_out = (3000..4000).filter(|t| owners(*t).len() > 1).count();
    eprintln!(
        "reload: the added backend took {to_c} of 1000 traces; traces split while it was added: {moved_in} of 1000, while b was removed: {moved_out} of 1000"
    );
    assert!((150..=550).contains(&to_c), "{to_c}");
    assert!(weir.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tier_1_with_a_persistent_queue_delivers_everything_after_a_restart() {
    use common::sink::Mode;
    // Backend b is down (UNAVAILABLE, retried without end); a is up. Tier 1 persists with
    // upstream's key for the backends' queues; kill -9 while b's share waits; b comes back;
    // the restarted tier 1 delivers every trace, each whole at its one backend.
    let (a, b) = (Sink::start().await, Sink::start().await);
    b.state.set_mode(Mode::Fail(tonic::Code::Unavailable));
    let (front, tel) = (free_port(), free_port());
    let dir = common::scratch_dir().join("lb-queue");
    let cfg = tier1_static(front, tel, &[a.grpc_port, b.grpc_port], "0s")
        .replace(
            "        timeout: 500ms\n",
            "        timeout: 500ms\n        sending_queue: {storage: file_storage/lb}\n",
        )
        .replace(
            "service:\n",
            &format!(
                "extensions:\n  file_storage/lb: {{directory: {}, create_directory: true}}\nservice:\n  extensions: [file_storage/lb]\n",
                dir.display()
            ),
        );
    let weir = Weir::start(&cfg, front);
    send_traces(front, 0, 500).await;
    let sent = 500 * SPANS_PER_TRACE;
    wait_until_async("a's share delivered", Duration::from_secs(20), || {
        a.state.spans() > 0
    })
    .await;
    weir.signal("KILL");
    drop(weir);
    assert_eq!(b.state.spans(), 0, "b was down");
    let before = a.state.spans();
    b.state.set_mode(Mode::Accept);
    let weir = Weir::start(&cfg, front);
    wait_until_async(
        "every acknowledged trace delivered after the restart",
        Duration::from_secs(60),
        || {
            let (at_a, at_b) = (traces_at(&a), traces_at(&b));
            (0..500).all(|t| {
                let id = trace_id(t);
                at_a.get(&id)
                    .or(at_b.get(&id))
                    .is_some_and(|n| *n >= SPANS_PER_TRACE)
            })
        },
    )
    .await;
    let (at_a, at_b) = (traces_at(&a), traces_at(&b));
    assert!(
        at_a.keys().all(|t| !at_b.contains_key(t)),
        "a trace at both backends"
    );
    eprintln!(
        "{sent} spans sent: a had {before} at the kill, then a {} and b {} (replayed records come again: at least once)",
        a.state.spans(),
        b.state.spans()
    );
    assert!(b.state.spans() > 0);
    assert!(weir.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}
