//! `probabilistic_sampler` through the real binary: 2,000 traces from the OpenTelemetry Rust
//! SDK; the spans kept are exactly those the Collector's hash_seed rule keeps (computed here
//! independently: FNV-1a of the seed and the trace id), each carrying `ot=rv:…;th:c`; a
//! proportional sampler after it keeps half of those and writes `th:e`; the decisions are
//! counted under the Collector's metric names.
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::sink::Sink;
use common::{free_port, http_get, metric, wait_until_async, Weir};
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;

fn config(grpc: u16, tel: u16, a: &Sink, b: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
processors:
  probabilistic_sampler/hash:
    sampling_percentage: 25
    hash_seed: 22
  probabilistic_sampler/half:
    sampling_percentage: 50
    mode: proportional
exporters:
  otlp/a:
    endpoint: 127.0.0.1:{a}
    tls: {{insecure: true}}
  otlp/b:
    endpoint: 127.0.0.1:{b}
    tls: {{insecure: true}}
service:
  telemetry:
    metrics: {{address: "127.0.0.1:{tel}"}}
  pipelines:
    traces/hash:
      receivers: [otlp]
      processors: [probabilistic_sampler/hash]
      exporters: [otlp/a]
    traces/both:
      receivers: [otlp]
      processors: [probabilistic_sampler/hash, probabilistic_sampler/half]
      exporters: [otlp/b]
"#,
        a = a.grpc_port,
        b = b.grpc_port
    )
}

/// The Collector's legacy rule, written again here: FNV-1a 32 of the seed's 4 little-endian
/// bytes then the trace id; kept when the low 14 bits are below percentage × 163.84.
fn legacy_keeps(seed: u32, tid: &[u8], pct: f32) -> bool {
    let mut h: u32 = 2_166_136_261;
    for b in seed.to_le_bytes().iter().chain(tid) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(16_777_619);
    }
    (h & 0x3fff) < (pct * 163.84f32) as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_seed_keeps_what_the_collector_keeps_and_proportional_halves_it() {
    let (a, b) = (Sink::start().await, Sink::start().await);
    let (grpc, tel) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, tel, &a, &b), grpc);
    let exp = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .build()
        .expect("span exporter");
    let tp = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exp)
        .build();
    let t = tp.tracer("sampling-e2e");
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for i in 0..2000 {
        t.in_span(format!("op {i}"), |cx| {
            use opentelemetry::trace::TraceContextExt;
            sent.push(cx.span().span_context().trace_id().to_bytes().to_vec());
        });
    }
    tp.force_flush().expect("flush");
    let expected: BTreeSet<Vec<u8>> = sent
        .iter()
        .filter(|tid| legacy_keeps(22, tid, 25.0))
        .cloned()
        .collect();
    assert!(
        (350..650).contains(&expected.len()),
        "about a quarter: {}",
        expected.len()
    );
    wait_until_async(
        "the sampled spans at both sinks, the decisions counted",
        Duration::from_secs(20),
        || {
            a.state.spans() >= expected.len()
                && http_get(tel, "/metrics").is_some_and(|(_, t)| {
                    let m = |l: &[&str]| {
                        metric(
                            &t,
                            "otelcol_processor_probabilistic_sampler_count_traces_sampled_total",
                            l,
                        )
                    };
                    // The proportional sampler has decided every span the hash kept, and
                    // the second sink has what it kept.
                    m(&["policy=\"sampling_randomness\""]) == expected.len() as f64
                        && m(&["policy=\"sampling_randomness\"", "sampled=\"true\""])
                            == b.state.spans() as f64
                })
        },
    )
    .await;
    let got_a = a.state.span_trace_states.lock().unwrap().clone();
    let kept: BTreeSet<Vec<u8>> = got_a.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(kept, expected, "exactly the Collector's decisions");
    assert_eq!(got_a.len(), expected.len());
    for (_, ts) in &got_a {
        assert!(
            ts.starts_with("ot=rv:") && ts.ends_with(";th:c") && ts.len() == 25,
            "{ts}"
        );
    }
    // The proportional sampler downstream: randomness from rv, th 0.25 × 0.5 = 0.125 → e.
    let got_b = b.state.span_trace_states.lock().unwrap().clone();
    assert!(
        !got_b.is_empty() && got_b.len() < got_a.len(),
        "{} of {}",
        got_b.len(),
        got_a.len()
    );
    for (tid, ts) in &got_b {
        assert!(expected.contains(tid));
        assert!(ts.ends_with(";th:e"), "{ts}");
        let rv = u64::from_str_radix(&ts[6..20], 16).unwrap();
        assert!(
            rv >= 0xe0000000000000,
            "kept only when rv passes th:e: {ts}"
        );
    }
    let (_, text) = http_get(tel, "/metrics").unwrap();
    let count = |id_policy: &[&str]| {
        metric(
            &text,
            "otelcol_processor_probabilistic_sampler_count_traces_sampled_total",
            id_policy,
        )
    };
    assert_eq!(
        count(&["policy=\"trace_id_hash\"", "sampled=\"true\""]),
        2.0 * expected.len() as f64,
        "both pipelines' hash samplers"
    );
    assert_eq!(
        count(&["policy=\"sampling_randomness\"", "sampled=\"true\""]),
        got_b.len() as f64
    );
    assert!(weir.stop().success());
}

#[test]
fn sampler_config_errors_as_upstream() {
    let dir = common::scratch_dir();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "receivers:\n  otlp:\n    protocols: {grpc: {endpoint: \"127.0.0.1:0\"}}\nprocessors:\n  probabilistic_sampler:\n    sampling_percentage: -1\n    mode: fast\nexporters:\n  debug:\nservice:\n  pipelines:\n    metrics: {receivers: [otlp], processors: [probabilistic_sampler], exporters: [debug]}\n",
    )
    .unwrap();
    let (ok, out) = common::validate(&[path]);
    assert!(!ok);
    for want in [
        "processors.probabilistic_sampler.sampling_percentage: sampling rate is negative: -1.000000%",
        "processors.probabilistic_sampler.mode: unsupported sampler mode \"fast\"",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
}
