//! The `filter` processor through the real binary, fed by the OpenTelemetry Rust SDK: health
//! check spans, debug logs, an internal metric and the health route's data points are dropped;
//! everything else arrives at an independent sink, and the drops are counted under the
//! Collector's metric names.
mod common;

use std::time::Duration;

use common::sink::Sink;
use common::{free_port, http_get, metric, wait_until_async, Weir};
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;

fn config(grpc: u16, tel: u16, sink: &Sink) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
processors:
  batch: {{timeout: 50ms}}
  filter/noise:
    error_mode: ignore
    traces:
      span:
        - 'attributes["http.route"] == "/health"'
        - 'IsMatch(name, "^readiness")'
    metrics:
      metric:
        - 'name == "internal.debug_counter"'
      datapoint:
        - 'attributes["route"] == "/health"'
    logs:
      log_record:
        - 'severity_number < SEVERITY_NUMBER_INFO'
  filter/flat:
    trace_conditions:
      - 'resource.attributes["deployment.environment"] == "dev"'
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink}
    tls: {{insecure: true}}
service:
  telemetry:
    metrics: {{address: "127.0.0.1:{tel}"}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [filter/noise, filter/flat, batch]
      exporters: [otlp]
    metrics:
      receivers: [otlp]
      processors: [filter/noise, batch]
      exporters: [otlp]
    logs:
      receivers: [otlp]
      processors: [filter/noise, batch]
      exporters: [otlp]
"#,
        sink = sink.grpc_port
    )
}

fn resource(env: &str) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name("checkout")
        .with_attribute(KeyValue::new("deployment.environment", env.to_string()))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_debug_logs_and_internal_metrics_are_dropped() {
    let sink = Sink::start().await;
    let (grpc, tel) = (free_port(), free_port());
    let weir = Weir::start(&config(grpc, tel, &sink), grpc);
    let endpoint = format!("http://127.0.0.1:{grpc}");

    // Traces: 100 requests, 40 health checks, 10 readiness probes; 20 spans from a dev
    // deployment (all dropped by the second filter).
    let tracer_for = |env: &str| {
        let exp = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&endpoint)
            .build()
            .expect("span exporter");
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exp)
            .with_resource(resource(env))
            .build()
    };
    let prod = tracer_for("prod");
    let dev = tracer_for("dev");
    let t = prod.tracer("filter-e2e");
    for i in 0..100 {
        let mut s = t.start(format!("GET /orders/{i}"));
        s.set_attribute(KeyValue::new("http.route", "/orders/{id}"));
        s.end();
    }
    for _ in 0..40 {
        let mut s = t.start("GET /health");
        s.set_attribute(KeyValue::new("http.route", "/health"));
        s.end();
    }
    for i in 0..10 {
        t.in_span(format!("readiness probe {i}"), |_| {});
    }
    let td = dev.tracer("filter-e2e");
    for i in 0..20 {
        td.in_span(format!("dev span {i}"), |_| {});
    }
    prod.force_flush().expect("flush");
    dev.force_flush().expect("flush");

    // Metrics: a counter on 3 routes (one of them /health) and an internal counter.
    let mexp = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .build()
        .expect("metric exporter");
    let mp = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(mexp)
        .with_resource(resource("prod"))
        .build();
    let meter = mp.meter("filter-e2e");
    let requests = meter.u64_counter("http.requests").build();
    for route in ["/orders", "/cart", "/health"] {
        requests.add(1, &[KeyValue::new("route", route)]);
    }
    let internal = meter.u64_counter("internal.debug_counter").build();
    internal.add(5, &[KeyValue::new("k", "v")]);
    internal.add(5, &[KeyValue::new("k", "w")]);
    mp.force_flush().expect("flush metrics");

    // Logs: 30 DEBUG, 20 INFO, 10 WARN.
    let lexp = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .build()
        .expect("log exporter");
    let lp = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_batch_exporter(lexp)
        .with_resource(resource("prod"))
        .build();
    let logger = lp.logger("filter-e2e");
    for (n, sev, text) in [
        (30, Severity::Debug, "DEBUG"),
        (20, Severity::Info, "INFO"),
        (10, Severity::Warn, "WARN"),
    ] {
        for i in 0..n {
            let mut rec = logger.create_log_record();
            rec.set_body(format!("{text} line {i}").into());
            rec.set_severity_number(sev);
            rec.set_severity_text(text);
            logger.emit(rec);
        }
    }
    lp.force_flush().expect("flush logs");

    wait_until_async(
        "what the filters keep reaches the sink, and the drops are counted",
        Duration::from_secs(20),
        || {
            sink.state.spans() >= 100
                && sink.state.points() >= 2
                && sink.state.logs() >= 30
                && http_get(tel, "/metrics").is_some_and(|(_, t)| {
                    metric(&t, "otelcol_processor_filter_spans_filtered_total", &[]) >= 70.0
                        && metric(&t, "otelcol_processor_filter_logs_filtered_total", &[]) >= 30.0
                        && metric(
                            &t,
                            "otelcol_processor_filter_datapoints_filtered_total",
                            &[],
                        ) >= 3.0
                })
        },
    )
    .await;
    assert_eq!(sink.state.spans(), 100, "the order spans only");
    let names = sink.state.span_names.lock().unwrap().clone();
    assert!(
        names.iter().all(|n| n.starts_with("GET /orders/")),
        "{names:?}"
    );
    assert_eq!(sink.state.logs(), 30, "INFO and WARN only");
    let bodies = sink.state.log_bodies.lock().unwrap().clone();
    assert!(bodies.iter().all(|b| !b.starts_with("DEBUG")), "{bodies:?}");
    assert_eq!(sink.state.points(), 2, "/orders and /cart");

    let (_, text) = http_get(tel, "/metrics").expect("metrics");
    let count = |name: &str, id: &str| metric(&text, name, &[&format!("filter=\"{id}\"")]);
    assert_eq!(
        count(
            "otelcol_processor_filter_spans_filtered_total",
            "filter/noise"
        ),
        50.0
    );
    assert_eq!(
        count(
            "otelcol_processor_filter_spans_filtered_total",
            "filter/flat"
        ),
        20.0
    );
    assert_eq!(
        count(
            "otelcol_processor_filter_logs_filtered_total",
            "filter/noise"
        ),
        30.0
    );
    // Two points of the internal counter (dropped with their metric) and the /health point.
    assert_eq!(
        count(
            "otelcol_processor_filter_datapoints_filtered_total",
            "filter/noise"
        ),
        3.0
    );
    assert!(weir.stop().success());
}

#[test]
fn filter_config_errors_name_the_condition_and_column() {
    let dir = common::scratch_dir();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        r#"receivers:
  otlp:
    protocols: {grpc: {endpoint: "127.0.0.1:0"}}
processors:
  filter:
    traces:
      span: ['name == "a"', 'attributes["x"] === 1']
    log_conditions: ['severity_number < 9']
exporters:
  debug:
service:
  pipelines:
    traces: {receivers: [otlp], processors: [filter], exporters: [debug]}
"#,
    )
    .unwrap();
    let (ok, out) = common::validate(&[path]);
    assert!(!ok);
    assert!(
        out.contains(r#"processors.filter.traces.span[1]: invalid OTTL condition "attributes[\"x\"] === 1": column 19: expected a value, got "=""#),
        "{out}"
    );
    assert!(
        out.contains(r#"processors.filter.log_conditions[0]: unable to infer a valid context (log, scope, resource) from condition "severity_number < 9""#),
        "{out}"
    );
}
