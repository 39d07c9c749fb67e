//! `weir validate`: every shipped YAML is accepted; mistakes are reported all at once, each with
//! file, line and YAML path, exactly as a user sees them.
mod common;

use std::path::{Path, PathBuf};

use common::validate;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo(dir))
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    v.sort();
    v
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-validate-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

#[test]
fn every_config_file_is_valid() {
    let files = yaml_files("config");
    assert!(files.len() >= 2, "config/ should hold example configs");
    for f in files {
        let (ok, out) = validate(std::slice::from_ref(&f));
        assert!(ok, "{} should be valid:\n{out}", f.display());
        assert!(out.contains("config is valid"), "{out}");
    }
}

#[test]
fn every_pipeline_piece_is_valid_on_top_of_the_default_config() {
    let files = yaml_files("pipelines");
    assert!(!files.is_empty());
    // The certificates pipelines/secure-gateway.yaml reads from $WEIR_TLS_DIR.
    let tls = tempdir("tls");
    let agents = common::certs::Pki::new(&tls, "agents");
    let backends = common::certs::Pki::new(&tls, "backends");
    agents.server("server", &["localhost"]);
    assert!(backends.ca().ends_with("backends-ca.pem") && agents.ca().ends_with("agents-ca.pem"));
    for f in files {
        let out = std::process::Command::new(common::weir_bin())
            .arg("validate")
            .arg("--config")
            .arg(repo("config/default.yaml"))
            .arg("--config")
            .arg(&f)
            .env("WEIR_TLS_DIR", &tls)
            .output()
            .expect("run weir validate");
        let ok = out.status.success();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            ok,
            "{} should be valid over the default:\n{out}",
            f.display()
        );
    }
}

#[test]
fn every_mistake_is_reported_with_file_line_and_path() {
    let dir = tempdir("bad");
    let f = write(
        &dir,
        "bad.yaml",
        "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
        bogus: 1
  otlp/2:
    protocols:
      http:
        endpoint: 127.0.0.1:4317
processors:
  batch:
    timeout: 5
  frobnicate:
exporters:
  otlp:
    endpoint: backend:4317
    tls: {insecure: true}
  debug:
    verbosity: loud
service:
  pipelines:
    traces:
      receivers: [otlp/2, otlp/3]
      processors: [batch]
      exporters: [otlp]
    metrics:
      receivers: [otlp/2]
      exporters: []
",
    );
    let (ok, out) = validate(std::slice::from_ref(&f));
    assert!(!ok, "a bad config must fail validation");
    let name = f.display().to_string();
    let expected = [
        format!("{name}:6: receivers.otlp.protocols.grpc.bogus: unknown field `bogus`, expected one of `endpoint`, `transport`, `max_recv_msg_size_mib`, `max_concurrent_streams`, `include_metadata`"),
        format!("{name}:13: processors.batch.timeout: a duration needs a unit: write 5s or 5ms, not 5"),
        format!("{name}:14: processors.frobnicate: unknown processor type \"frobnicate\""),
        format!("{name}:20: exporters.debug.verbosity: unknown variant `loud`, expected one of `basic`, `normal`, `detailed`"),
        format!("{name}:29: service.pipelines.metrics.exporters: must list at least one exporter"),
        format!("{name}:24: service.pipelines.traces.receivers[1]: references receiver \"otlp/3\", which is not configured under receivers"),
    ];
    for line in &expected {
        assert!(
            out.lines().any(|l| l.starts_with(line.as_str())),
            "missing error line:\n  {line}\nin output:\n{out}"
        );
    }
    assert!(
        out.contains(&format!("{} error(s)", expected.len())),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_listeners_on_one_port_are_rejected() {
    let dir = tempdir("ports");
    let f = write(
        &dir,
        "ports.yaml",
        "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
  otlp/2:
    protocols:
      http:
        endpoint: 0.0.0.0:4317
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp, otlp/2]
      exporters: [debug]
",
    );
    let (ok, out) = validate(std::slice::from_ref(&f));
    assert!(!ok);
    let name = f.display().to_string();
    assert!(
        out.contains(&format!("{name}:9: receivers.otlp/2.protocols.http.endpoint: endpoint \"0.0.0.0:4317\" uses the same port as receivers.otlp.protocols.grpc.endpoint")),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn duplicate_keys_and_broken_yaml_name_the_line() {
    let dir = tempdir("dup");
    let f = write(
        &dir,
        "dup.yaml",
        "exporters:\n  debug:\nexporters:\n  debug:\n",
    );
    let (ok, out) = validate(std::slice::from_ref(&f));
    assert!(!ok);
    let name = f.display().to_string();
    assert!(out.contains(&format!("{name}:")), "{out}");
    assert!(
        out.contains("duplicate entry with key \"exporters\""),
        "{out}"
    );

    let g = write(&dir, "broken.yaml", "service:\n  pipelines: [\n");
    let (ok, out) = validate(std::slice::from_ref(&g));
    assert!(!ok);
    assert!(out.contains(&format!("{}:", g.display())), "{out}");
    assert!(out.contains("invalid YAML"), "{out}");

    let (ok, out) = validate(&[dir.join("missing.yaml")]);
    assert!(!ok);
    assert!(out.contains("cannot read the config file"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn later_files_win_and_env_references_expand() {
    let dir = tempdir("merge");
    let base = write(
        &dir,
        "base.yaml",
        "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${env:WEIR_TEST_PORT:-4317}
exporters:
  debug:
    verbosity: basic
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
",
    );
    // The second file adds a pipeline and overrides one key; the first keeps the rest.
    let over = write(
        &dir,
        "over.yaml",
        "\
exporters:
  debug:
    verbosity: loud
service:
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [debug]
",
    );
    let (ok, out) = validate(&[base.clone(), over.clone()]);
    assert!(!ok, "the override's bad value must be reported");
    assert!(
        out.contains(&format!(
            "{}:3: exporters.debug.verbosity: unknown variant `loud`",
            over.display()
        )),
        "the error names the file that set the value:\n{out}"
    );

    let fixed = write(&dir, "fixed.yaml", "exporters:\n  debug:\n    verbosity: detailed\nservice:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [debug]\n");
    let (ok, out) = validate(&[base.clone(), fixed]);
    assert!(ok, "{out}");
    assert!(out.contains("2 pipeline(s): logs, traces"), "{out}");

    let bad_ref = write(
        &dir,
        "ref.yaml",
        "exporters:\n  debug:\n    verbosity: ${file:/etc/passwd}\n",
    );
    let (ok, out) = validate(&[base, bad_ref.clone()]);
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "{}:3: exporters.debug.verbosity: unsupported reference scheme \"file\"",
            bad_ref.display()
        )),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn components_and_version() {
    let out = std::process::Command::new(common::weir_bin())
        .arg("components")
        .output()
        .expect("run weir components");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (kind, ty) in [
        ("receiver", "otlp"),
        ("processor", "tail_sampling"),
        ("processor", "cardinality_limiter"),
        ("processor", "tenant"),
        ("exporter", "prometheusremotewrite"),
        ("exporter", "loki"),
        ("connector", "routing"),
        ("extension", "health_check"),
    ] {
        assert!(
            text.lines().any(|l| {
                let mut f = l.split_whitespace();
                f.next() == Some(kind) && f.next() == Some(ty)
            }),
            "{kind} {ty} missing:\n{text}"
        );
    }
    // Stability per signal, as the Collector's `components` shows it.
    for (ty, stability) in [
        ("otlp", "traces:stable,metrics:stable,logs:stable"),
        ("tail_sampling", "traces:beta"),
        ("routing", "traces_to_traces:alpha"),
        ("health_check", "extension:beta"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(ty) && l.contains(stability)),
            "{ty} {stability} missing:\n{text}"
        );
    }
    // Aliases are listed with their type.
    assert!(
        text.lines()
            .any(|l| l.starts_with("exporter") && l.contains("(also: otlp_grpc)")),
        "{text}"
    );
    let v = std::process::Command::new(common::weir_bin())
        .arg("--version")
        .output()
        .expect("run weir --version");
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("weir {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_kubernetes_manifest_carries_a_valid_config_and_runs_it() {
    use serde::Deserialize;
    let text = std::fs::read_to_string(repo("deploy/kubernetes/gateway.yaml")).expect("manifest");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("a YAML document"))
        .collect();
    let kind = |d: &serde_yaml::Value| d["kind"].as_str().unwrap_or("").to_owned();
    let cm = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap")
        .expect("a ConfigMap");
    let cfg = cm["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml in the ConfigMap");
    let dir = tempdir("k8s");
    let f = write(&dir, "config.yaml", cfg);
    let (ok, out) = validate(std::slice::from_ref(&f));
    assert!(ok, "the ConfigMap's config must be valid:\n{out}");
    let dep = docs
        .iter()
        .find(|d| kind(d) == "Deployment")
        .expect("a Deployment");
    let args: Vec<String> = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        args,
        ["--config", "/etc/weir/config.yaml", "--watch-config"]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn collector_spellings_weir_accepts_as_upstream_does() {
    // The current Collector names (otlp_grpc, otlp_http), a URL path without its slash, a log
    // level in capitals, a Loki label mapped to "" (the attribute's own name) and a remote-write
    // namespace with a dash: each is valid upstream, so each is valid here.
    let dir = tempdir("spellings");
    let f = write(
        &dir,
        "collector.yaml",
        r#"
receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:4318", traces_url_path: traces}
exporters:
  otlp_grpc/tempo: {endpoint: "tempo:4317", tls: {insecure: true}}
  otlp_http: {endpoint: "http://jaeger:4318"}
  loki: {endpoint: "http://loki:3100/loki/api/v1/push", labels: {attributes: {http.status: ""}}}
  prometheusremotewrite: {endpoint: "http://mimir:9009/api/v1/push", namespace: my-app}
service:
  telemetry: {logs: {level: DEBUG}}
  pipelines:
    traces: {receivers: [otlp], exporters: [otlp_grpc/tempo, otlp_http]}
    logs: {receivers: [otlp], exporters: [loki]}
    metrics: {receivers: [otlp], exporters: [prometheusremotewrite]}
"#,
    );
    let (ok, out) = validate(std::slice::from_ref(&f));
    assert!(ok, "{out}");
    // And the weir spelling of a wrong level still says what is expected.
    let g = write(
        &dir,
        "level.yaml",
        "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:4317'}}}}\nexporters: {debug: {}}\nservice:\n  telemetry: {logs: {level: loud}}\n  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}\n",
    );
    let (ok, out) = validate(std::slice::from_ref(&g));
    assert!(!ok);
    assert!(
        out.contains("unknown log level \"loud\"; expected debug, info, warn or error (any case)"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_unknown_key_of_a_component_is_reported() {
    let dir = tempdir("unknown-keys");
    let f = write(
        &dir,
        "keys.yaml",
        "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
        keepalivee: {}
      htp: {}
exporters:
  otlp:
    endpoint: backend:4317
    tls: {insecure: true}
    sending_queue: {queue_sise: 10, num_consumers: many}
    retry: {}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [otlp]}
",
    );
    let (ok, out) = validate(std::slice::from_ref(&f));
    assert!(!ok);
    let name = f.display().to_string();
    for (line, path, what) in [
        (
            6,
            "receivers.otlp.protocols.grpc.keepalivee",
            "unknown field `keepalivee`",
        ),
        (7, "receivers.otlp.protocols.htp", "unknown field `htp`"),
        (
            12,
            "exporters.otlp.sending_queue.queue_sise",
            "unknown field `queue_sise`",
        ),
        (
            12,
            "exporters.otlp.sending_queue.num_consumers",
            "invalid type",
        ),
        (13, "exporters.otlp.retry", "unknown field `retry`"),
    ] {
        let want = format!("{name}:{line}: {path}: {what}");
        assert!(
            out.lines().any(|l| l.starts_with(&want)),
            "missing:\n  {want}\nin:\n{out}"
        );
    }
    assert!(out.contains("5 error(s)"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Published OpenTelemetry Collector configs (tests/conformance/published, sources in its
/// SOURCES.md), cut only of components weir lacks: which load unchanged, and why the others
/// do not. A config that starts loading, or fails for another reason, fails this test: update
/// the table and the README's figure with it.
#[test]
fn published_collector_configs() {
    let expected: &[(&str, Option<&str>)] = &[
        ("01-otelcol-core-default.yaml", None),
        // An empty memory_limiter: upstream's Validate refuses check_interval 0 too.
        (
            "02-otelcol-k8s-default.yaml",
            Some("processors.memory_limiter.check_interval: 'check_interval' must be greater than zero"),
        ),
        ("03-otelcol-gateway-default.yaml", None),
        // Validated with the environment the demo sets (see below).
        ("04-otel-demo-collector.yaml", None),
        // ballast_size_mib: removed upstream as well.
        (
            "05-collector-k8s-example-gateway.yaml",
            Some("processors.memory_limiter.ballast_size_mib: unknown field"),
        ),
        ("06-contrib-demo-collector.yaml", None),
        // A template placeholder where a URL goes.
        (
            "07-contrib-gateway-template.yaml",
            Some("exporters.otlphttp.traces_endpoint: invalid URL \"ENDPOINT_URL\""),
        ),
        ("08-helm-deployment-otlp-traces.yaml", None),
        ("09-helm-statefulset-only.yaml", None),
        ("10-tempo-otel-collector.yaml", None),
        ("11-tempo-multitenant.yaml", None),
        ("12-jaeger-monitor-spanmetrics-processor.yaml", None),
        ("13-mimir-otelcol-remote-write.yaml", None),
        ("14-mimir-otelcol-otlp-push.yaml", None),
        ("15-otel-lgtm-loki-prw.yaml", None),
        // basicauth client and an https:// endpoint.
        ("16-otel-lgtm-grafana-cloud.yaml", None),
        ("17-intro-to-mltp.yaml", None),
        ("18-openshift-routing-connector.yaml", None),
        ("19-openshift-tail-sampling.yaml", None),
        // Its CA file is a path inside the OpenShift pod (weir now knows `sending_queue.storage`;
        // the file_storage and bearertokenauth extensions it names were cut).
        (
            "20-openshift-loki-exporter.yaml",
            Some("exporters.loki.tls: ca_file: cannot read \"/var/run/secrets/kubernetes.io/serviceaccount/service-ca.crt\""),
        ),
        // Its CA file is a path inside the OpenShift pod: upstream fails to start alike.
        (
            "21-openshift-prometheusremotewrite.yaml",
            Some("exporters.prometheusremotewrite.tls: ca_file: cannot read \"/certs/ca.crt\""),
        ),
        // Its endpoint comes from an environment variable that is not set here.
        (
            "22-otel-lgtm-export-http.yaml",
            Some("exporters.otlphttp/external.endpoint: is required"),
        ),
    ];
    let dir = repo("tests/conformance/published");
    let files = yaml_files("tests/conformance/published");
    assert_eq!(files.len(), expected.len(), "{files:?}");
    let mut loaded = 0;
    for (name, want) in expected {
        let f = dir.join(name);
        // A clean environment, so `${env:...}` references are unset everywhere alike.
        let mut cmd = std::process::Command::new(common::weir_bin());
        cmd.arg("validate").arg("--config").arg(&f).env_clear();
        if name.starts_with("04-") {
            // The OpenTelemetry demo's collector runs with these set.
            cmd.envs([
                ("OTEL_COLLECTOR_HOST", "otel-collector"),
                ("OTEL_COLLECTOR_PORT_GRPC", "4317"),
                ("OTEL_COLLECTOR_PORT_HTTP", "4318"),
                ("POSTGRES_HOST", "postgresql"),
            ]);
        }
        let out = cmd.output().expect("run weir validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match want {
            None => {
                assert!(out.status.success(), "{name} should load:\n{text}");
                loaded += 1;
            }
            Some(err) => {
                assert!(!out.status.success(), "{name} now loads: update the table");
                assert!(text.contains(err), "{name}: expected {err:?} in:\n{text}");
            }
        }
    }
    assert_eq!(loaded, 16);
}

#[test]
fn the_readme_table_lists_every_component_weir_has() {
    let out = std::process::Command::new(common::weir_bin())
        .arg("components")
        .output()
        .expect("run weir components");
    let readme = std::fs::read_to_string(repo("README.md")).expect("README.md");
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `")).collect();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(kind), Some(ty)) = (f.next(), f.next()) else {
            continue;
        };
        let cell = format!("`{ty}`");
        assert!(
            rows.iter().any(|r| {
                let cols: Vec<&str> = r.split('|').map(str::trim).collect();
                cols.len() > 3
                    && cols[1].contains(&cell)
                    && cols[2] == kind
                    && cols[4].contains("](#")
            }),
            "the README's component table has no {kind} {ty} row linking to its section"
        );
    }
}
