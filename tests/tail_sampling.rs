//! Tail sampling through the real binary: the OpenTelemetry SDK sends whole traces over gRPC;
//! weir keeps error traces, slow traces and "vip" traces, whole, and drops the rest. Also: the
//! upstream Collector samples load (valid ones) or fail naming policy and key (invalid ones).
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::sink::Sink;
use common::{free_port, http_get, metric, validate, wait_until_async, Weir};
use opentelemetry::trace::{
    Span as _, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;

fn config(grpc: u16, tel: u16, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  tail_sampling:
    decision_wait: 1s
    decision_cache: {{sampled_cache_size: 1000, non_sampled_cache_size: 1000}}
    policies:
      - name: errors
        type: status_code
        status_code: {{status_codes: [ERROR]}}
      - name: slow
        type: latency
        latency: {{threshold_ms: 1000}}
      - name: vip
        type: string_attribute
        string_attribute: {{key: customer.tier, values: [vip]}}
      - name: some
        type: probabilistic
        probabilistic: {{hash_salt: weir-test, sampling_percentage: 30}}
  batch:
    timeout: 50ms
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
      processors: [tail_sampling, batch]
      exporters: [otlp]
"#,
        port = sink.grpc_port,
    )
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Shape {
    Error,
    Slow,
    Vip,
    Plain,
}

/// One trace of 5 spans (a root and 4 children) named `{tag}-{i}-{n}`; returns the root's
/// span context.
fn send_trace(
    tracer: &opentelemetry_sdk::trace::SdkTracer,
    tag: &str,
    i: usize,
    shape: Shape,
) -> opentelemetry::trace::SpanContext {
    let t0 = SystemTime::now();
    let dur = if shape == Shape::Slow {
        Duration::from_millis(2500)
    } else {
        Duration::from_millis(3)
    };
    let mut attrs = vec![KeyValue::new("i", i as i64)];
    if shape == Shape::Vip {
        attrs.push(KeyValue::new("customer.tier", "vip"));
    }
    let root = tracer
        .span_builder(format!("{tag}-{i}-0"))
        .with_start_time(t0)
        .with_attributes(attrs)
        .start(tracer);
    let cx = Context::current_with_span(root);
    for n in 1..5 {
        let mut child = tracer
            .span_builder(format!("{tag}-{i}-{n}"))
            .with_start_time(t0 + Duration::from_millis(n))
            .start_with_context(tracer, &cx);
        if shape == Shape::Error && n == 3 {
            child.set_status(Status::error("boom"));
        }
        child.end_with_timestamp(t0 + Duration::from_millis(n + 1));
    }
    cx.span().end_with_timestamp(t0 + dur);
    cx.span().span_context().clone()
}

/// The Collector's probabilistic decision, computed independently: FNV-1a 64 over salt then
/// trace id, kept when at or under percent of u64::MAX.
fn probabilistic_keeps(salt: &str, id: [u8; 16], percent: f64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.as_bytes().iter().chain(id.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h <= (percent / 100.0 * u64::MAX as f64) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_error_slow_and_vip_traces_whole_and_drops_the_rest() {
    let sink = Sink::start().await;
    let (grpc, tel) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, tel, &sink), grpc);

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .build()
        .expect("span exporter");
    let tp = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = tp.tracer("tail-e2e");
    let plan = [
        ("err", Shape::Error, 10),
        ("slow", Shape::Slow, 5),
        ("vip", Shape::Vip, 10),
        ("plain", Shape::Plain, 20),
    ];
    let mut roots = BTreeMap::new();
    for (tag, shape, n) in plan {
        for i in 0..n {
            roots.insert(format!("{tag}-{i}"), send_trace(&tracer, tag, i, shape));
        }
    }
    tp.force_flush().expect("flush spans");
    // Plain traces kept by the 30% probabilistic policy, computed as the Collector would.
    let lucky: Vec<String> = roots
        .iter()
        .filter(|(k, sc)| {
            k.starts_with("plain")
                && probabilistic_keeps("weir-test", sc.trace_id().to_bytes(), 30.0)
        })
        .map(|(k, _)| k.clone())
        .collect();
    let kept = 25 + lucky.len();

    // Every kept trace, 5 spans each.
    wait_until_async(
        "the sampled spans at the sink",
        Duration::from_secs(20),
        || sink.state.spans() >= kept * 5,
    )
    .await;
    // Let any stray span arrive before counting exactly.
    wait_until_async("all 45 traces decided", Duration::from_secs(20), || {
        http_get(tel, "/metrics").is_some_and(|(_, body)| {
            metric(
                &body,
                "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
                &["sampled=\"false\""],
            ) >= (20 - lucky.len()) as f64
        })
    })
    .await;
    assert_eq!(sink.state.spans(), kept * 5);
    let names = sink.state.span_names.lock().unwrap().clone();
    let mut per_trace: BTreeMap<String, usize> = BTreeMap::new();
    for n in &names {
        let trace = n
            .rsplit_once('-')
            .map(|(t, _)| t.to_owned())
            .unwrap_or_default();
        *per_trace.entry(trace).or_default() += 1;
    }
    assert_eq!(per_trace.len(), kept, "{per_trace:?}");
    assert!(
        per_trace.values().all(|&c| c == 5),
        "every kept trace is whole: {per_trace:?}"
    );
    let plain_kept: Vec<String> = per_trace
        .keys()
        .filter(|k| k.starts_with("plain"))
        .cloned()
        .collect();
    assert_eq!(
        plain_kept, lucky,
        "exactly the traces the Collector's hash keeps"
    );
    for (tag, count) in [("err-", 10), ("slow-", 5), ("vip-", 10)] {
        assert_eq!(
            per_trace.keys().filter(|k| k.starts_with(tag)).count(),
            count,
            "{tag}"
        );
    }

    let (_, body) = http_get(tel, "/metrics").expect("metrics");
    let m = |name: &str, labels: &[&str]| metric(&body, name, labels);
    assert_eq!(
        m(
            "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
            &["sampled=\"true\""]
        ),
        kept as f64
    );
    assert!(
        m(
            "otelcol_processor_tail_sampling_sampling_decision_latency_count",
            &["policy=\"errors\""]
        ) >= 45.0
    );
    assert_eq!(
        m(
            "otelcol_processor_tail_sampling_count_traces_sampled_total",
            &["policy=\"errors\"", "sampled=\"true\""]
        ),
        10.0
    );
    assert_eq!(
        m(
            "otelcol_processor_tail_sampling_count_traces_sampled_total",
            &["policy=\"slow\"", "sampled=\"true\""]
        ),
        5.0
    );
    assert_eq!(m("otelcol_receiver_accepted_spans_total", &[]), 225.0);
    assert_eq!(
        m(
            "otelcol_processor_tail_sampling_sampling_traces_on_memory",
            &[]
        ),
        0.0
    );

    // Late spans: a child of a kept trace follows it at once; one of a dropped trace is dropped.
    let dropped_root = roots
        .iter()
        .find(|(k, _)| k.starts_with("plain") && !lucky.contains(k))
        .map(|(_, sc)| sc.clone())
        .expect("a dropped plain trace");
    for (name, parent) in [
        ("late-kept", roots["err-0"].clone()),
        ("late-dropped", dropped_root),
    ] {
        let cx = Context::new().with_remote_span_context(parent);
        tracer
            .span_builder(name)
            .start_with_context(&tracer, &cx)
            .end();
    }
    tp.force_flush().expect("flush late spans");
    wait_until_async(
        "the late span of a kept trace",
        Duration::from_secs(10),
        || sink.state.spans() > kept * 5,
    )
    .await;
    wait_until_async("both late spans counted", Duration::from_secs(10), || {
        http_get(tel, "/metrics").is_some_and(|(_, b)| {
            metric(
                &b,
                "otelcol_processor_tail_sampling_early_releases_from_cache_decision_total",
                &[],
            ) >= 2.0
        })
    })
    .await;
    assert_eq!(sink.state.spans(), kept * 5 + 1);
    assert!(sink
        .state
        .span_names
        .lock()
        .unwrap()
        .iter()
        .any(|n| n == "late-kept"));
    let _ = tp.shutdown();
    weir.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_decides_buffered_traces_before_exit() {
    let sink = Sink::start().await;
    let (grpc, tel) = (free_port(), free_port());
    // A decision_wait far longer than the test: only the shutdown flush can release these.
    let yaml = config(grpc, tel, &sink)
        .replace("decision_wait: 1s", "decision_wait: 1h")
        .replace("sampling_percentage: 30", "sampling_percentage: 0");
    let mut weir = Weir::start(&yaml, grpc);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .build()
        .expect("span exporter");
    let tp = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = tp.tracer("tail-shutdown");
    for i in 0..4 {
        send_trace(&tracer, "err", i, Shape::Error);
        send_trace(&tracer, "plain", i, Shape::Plain);
    }
    tp.force_flush().expect("flush spans");
    wait_until_async("40 spans accepted", Duration::from_secs(10), || {
        http_get(tel, "/metrics")
            .is_some_and(|(_, b)| metric(&b, "otelcol_receiver_accepted_spans_total", &[]) >= 40.0)
    })
    .await;
    assert_eq!(
        sink.state.spans(),
        0,
        "nothing is decided before decision_wait"
    );
    weir.signal("TERM");
    let status = weir.stop_after_signal();
    assert!(status.success(), "{status:?}\n{}", weir.log());
    assert_eq!(
        sink.state.spans(),
        20,
        "the 4 error traces, whole\n{}",
        weir.log()
    );
    let _ = tp.shutdown();
}

fn conformance(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/otelcol")
        .join(name);
    std::fs::read_to_string(p).expect("conformance file")
}

/// Wraps a `tail_sampling:` processor body from upstream in a whole config.
fn wrap(name: &str, dir: &Path) -> PathBuf {
    let body: String = conformance(name)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    let text = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4317\nprocessors:\n{body}exporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [debug]\n"
    );
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn upstream_conformance_samples() {
    let dir = std::env::temp_dir().join(format!("weir-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for ok in [
        "tail_sampling_config.yaml",
        "tail_sampling_config_errormode.yaml",
    ] {
        let (valid, out) = validate(&[wrap(ok, &dir)]);
        assert!(valid, "{ok} must be accepted:\n{out}");
    }
    let (valid, out) = validate(&[wrap(
        "numeric_attribute_without_minvalue_or_maxvalue.yaml",
        &dir,
    )]);
    assert!(!valid);
    assert!(
        out.contains("processors.tail_sampling.policies[0].numeric_attribute: policy \"test-policy-3\": numeric_attribute needs min_value or max_value (or both)"),
        "{out}"
    );
    let (valid, out) = validate(&[wrap(
        "numeric_attribute_with_minvalue_greather_than_maxvalue.yaml",
        &dir,
    )]);
    assert!(!valid);
    assert!(
        out.contains("processors.tail_sampling.policies[0].numeric_attribute.min_value: policy \"test-policy-3\": min_value (500) must not be greater than max_value (100)"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ottl_errors_name_the_expression_and_column() {
    let dir = std::env::temp_dir().join(format!("weir-ottl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let p = dir.join("ottl.yaml");
    std::fs::write(
        &p,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4317\nprocessors:\n  tail_sampling:\n    policies:\n      - name: broken\n        type: ottl_condition\n        ottl_condition:\n          span:\n            - attributes[\"a\"] === 1\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [tail_sampling]\n      exporters: [debug]\n",
    )
    .expect("write");
    let (valid, out) = validate(std::slice::from_ref(&p));
    assert!(!valid);
    let file = p.display().to_string();
    assert!(
        out.contains(&format!("{file}:12: processors.tail_sampling.policies[0].ottl_condition.span: policy \"broken\":")),
        "{out}"
    );
    assert!(out.contains("column"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unique_trace_ids_stays_within_budget_and_loses_nothing() {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let sink = Sink::start().await;
    let (grpc, tel) = (free_port(), free_port());
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  tail_sampling:
    decision_wait: 1h
    num_traces: 2000
    max_buffered_bytes: 1MiB
    num_shards: 2
    policies: [{{name: all, type: always_sample}}]
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
    );
    let mut weir = Weir::start(&yaml, grpc);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("connect");
    // 100,000 traces of one span each, every trace id new.
    let (requests, per) = (200u64, 500u64);
    for r in 0..requests {
        let spans = (0..per)
            .map(|i| {
                let t = r * per + i + 1;
                Span {
                    trace_id: (u128::from(t) * 0x9E37_79B9_7F4A_7C15)
                        .to_be_bytes()
                        .to_vec(),
                    span_id: t.to_be_bytes().to_vec(),
                    name: "flood".into(),
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    ..Default::default()
                }
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        // Retry refusals (backpressure), as an OTLP client does: a refusal comes only after
        // weir waited for room, so retrying at once does not spin.
        let mut attempts = 0;
        while let Err(status) = client.export(req.clone()).await {
            attempts += 1;
            assert!(attempts < 100, "export kept failing: {status}");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
        }
    }
    let total = (requests * per) as f64;
    let scrape = || {
        http_get(tel, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    wait_until_async(
        "every span accepted and buffered or decided",
        Duration::from_secs(30),
        || {
            let b = scrape();
            let held = metric(
                &b,
                "otelcol_processor_tail_sampling_sampling_traces_on_memory",
                &[],
            );
            let early = metric(
                &b,
                "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total",
                &[],
            );
            metric(&b, "otelcol_receiver_accepted_spans_total", &[]) == total
                && held + early == total
        },
    )
    .await;
    let b = scrape();
    let held = metric(
        &b,
        "otelcol_processor_tail_sampling_sampling_traces_on_memory",
        &[],
    );
    let bytes = metric(&b, "weir_tail_sampling_buffered_bytes", &[]);
    let rss = metric(&b, "otelcol_process_memory_rss", &[]);
    println!(
        "flood: held {held} traces, {bytes} bytes; RSS {:.1} MiB",
        rss / 1048576.0
    );
    assert!(held <= 2000.0, "num_traces bounds the buffer: {held}");
    assert!(
        bytes <= 1048576.0 + 4096.0,
        "max_buffered_bytes bounds the buffer: {bytes}"
    );
    assert!(rss < 200.0 * 1048576.0, "RSS {rss}");
    // Traces decided early were sampled (always_sample) and forwarded; shutdown decides the rest.
    weir.signal("TERM");
    let status = weir.stop_after_signal();
    assert!(status.success(), "{status:?}");
    wait_until_async("every span at the sink", Duration::from_secs(20), || {
        sink.state.spans() as f64 >= total
    })
    .await;
    assert_eq!(sink.state.spans() as f64, total, "nothing lost");
}
