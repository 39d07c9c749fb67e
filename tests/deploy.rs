//! What `deploy/` ships, checked as far as this machine can: every Kubernetes manifest of
//! both layouts against the Kubernetes schemas (`kubernetes-validate --strict`, from PyPI;
//! `.ci/run` installs it), every weir config inside them with `weir validate`, the two tiers
//! wired to each other; the compose stack's services, mounts and configs (weir's with
//! `weir validate`, Prometheus's with `promtool check config`); the Dockerfile statically.
//! Nothing here can pull or build images.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn docs(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("a YAML document"))
        .filter(|d| !d.is_null())
        .collect()
}

/// A kustomization's resources, in order: only `resources` lists are rendered here, so any
/// other key (patches, generators) fails the test rather than being skipped.
fn render(dir: &str) -> Vec<(PathBuf, serde_yaml::Value)> {
    let k = docs(&repo(&format!("{dir}/kustomization.yaml")));
    let k = &k[0];
    for key in k.as_mapping().expect("kustomization").keys() {
        let key = key.as_str().unwrap_or("");
        assert!(
            ["apiVersion", "kind", "resources"].contains(&key),
            "{dir}/kustomization.yaml: {key} is not rendered by this test"
        );
    }
    let mut out = Vec::new();
    for r in k["resources"].as_sequence().expect("resources") {
        let p = repo(&format!("{dir}/{}", r.as_str().expect("a file")));
        for d in docs(&p) {
            out.push((p.clone(), d));
        }
    }
    out
}

fn kind(d: &serde_yaml::Value) -> &str {
    d["kind"].as_str().unwrap_or("")
}

fn name(d: &serde_yaml::Value) -> &str {
    d["metadata"]["name"].as_str().unwrap_or("")
}

fn kubernetes_validate(files: &[PathBuf]) {
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(files)
        .output()
        .expect("kubernetes-validate is required (pip install kubernetes-validate; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn validate_config(text: &str, what: &str) -> serde_yaml::Value {
    let dir = common::scratch_dir();
    let f = dir.join("config.yaml");
    std::fs::write(&f, text).expect("write");
    let (ok, out) = common::validate(std::slice::from_ref(&f));
    assert!(ok, "{what}: the weir config must be valid:\n{out}");
    let _ = std::fs::remove_dir_all(dir);
    serde_yaml::from_str(text).expect("config YAML")
}

/// Mebibytes in a Kubernetes quantity like `2Gi` or `512Mi`.
fn mib(q: &str) -> u64 {
    if let Some(g) = q.strip_suffix("Gi") {
        g.parse::<u64>().expect("Gi") * 1024
    } else if let Some(m) = q.strip_suffix("Mi") {
        m.parse().expect("Mi")
    } else {
        panic!("unexpected quantity {q}")
    }
}

/// Checks a workload: its config's memory_limiter fits the container's limit, the probes hit
/// the health_check port, and `--watch-config` is on.
fn check_workload(w: &serde_yaml::Value, cfg: &serde_yaml::Value, config_map: &str) {
    let pod = &w["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let limit = mib(c["resources"]["limits"]["memory"]
        .as_str()
        .expect("a memory limit"));
    let ml = cfg["processors"]["memory_limiter"]["limit_mib"]
        .as_u64()
        .expect("a memory_limiter");
    assert!(
        ml < limit && ml * 100 >= limit * 70,
        "{}: memory_limiter limit_mib {ml} should sit just under the container's {limit} MiB",
        name(w)
    );
    let health = cfg["extensions"]["health_check"]["endpoint"]
        .as_str()
        .and_then(|e| e.rsplit(':').next())
        .and_then(|p| p.parse::<u64>().ok())
        .expect("health_check endpoint");
    let port_of = |n: &str| {
        c["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str() == Some(n))
            .and_then(|p| p["containerPort"].as_u64())
    };
    for probe in ["readinessProbe", "livenessProbe"] {
        let port = c[probe]["httpGet"]["port"]
            .as_str()
            .expect("a named probe port");
        assert_eq!(
            port_of(port),
            Some(health),
            "{}: {probe} on health_check",
            name(w)
        );
    }
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--watch-config"), "{}: {args:?}", name(w));
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"].as_str(),
        Some(config_map),
        "{}: runs the config checked",
        name(w)
    );
}

#[test]
fn both_kubernetes_layouts_validate_and_carry_valid_configs() {
    for dir in ["deploy/kubernetes", "deploy/kubernetes/two-tier"] {
        let files: Vec<PathBuf> = render(dir)
            .into_iter()
            .map(|(p, _)| p)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        kubernetes_validate(&files);
        for (_, d) in render(dir) {
            if kind(&d) == "ConfigMap" {
                validate_config(
                    d["data"]["config.yaml"].as_str().expect("config.yaml"),
                    name(&d),
                );
            }
        }
    }
}

#[test]
fn the_two_tiers_are_wired_to_each_other() {
    let all = render("deploy/kubernetes/two-tier");
    let find = |k: &str, n: &str| {
        all.iter()
            .map(|(_, d)| d)
            .find(|d| kind(d) == k && name(d) == n)
            .unwrap_or_else(|| panic!("{k} {n}"))
            .clone()
    };
    let cfg = |n: &str| {
        let cm = find("ConfigMap", n);
        validate_config(cm["data"]["config.yaml"].as_str().expect("config"), n)
    };
    let (t1, t2) = (cfg("weir-tier1"), cfg("weir-tier2"));
    // Tier 1 resolves the headless Service of tier 2, on the port tier 2 listens on.
    let headless = find("Service", "weir-tier2");
    assert_eq!(
        headless["spec"]["clusterIP"].as_str(),
        Some("None"),
        "headless"
    );
    let t2_port = t2["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .and_then(|e| e.rsplit(':').next())
        .and_then(|p| p.parse::<u64>().ok())
        .expect("tier-2 gRPC port");
    let mut lbs = 0;
    for (id, e) in t1["exporters"].as_mapping().expect("exporters") {
        if !id.as_str().unwrap_or("").starts_with("loadbalancing") {
            continue;
        }
        lbs += 1;
        let k8s = &e["resolver"]["k8s"];
        assert_eq!(k8s["service"].as_str(), Some("weir-tier2"));
        assert_eq!(k8s["ports"][0].as_u64(), Some(t2_port));
    }
    assert_eq!(lbs, 2, "traces by trace id, metrics by service");
    assert_eq!(
        headless["spec"]["ports"][0]["port"].as_u64(),
        Some(t2_port),
        "the Service's port"
    );
    // Tier 2 is the StatefulSet behind that Service; both tiers' pods match their selectors.
    let sts = find("StatefulSet", "weir-tier2");
    assert_eq!(sts["spec"]["serviceName"].as_str(), Some("weir-tier2"));
    let dep = find("Deployment", "weir-tier1");
    for (w, svc, pdb) in [
        (
            &dep,
            find("Service", "weir"),
            find("PodDisruptionBudget", "weir-tier1"),
        ),
        (
            &sts,
            headless.clone(),
            find("PodDisruptionBudget", "weir-tier2"),
        ),
    ] {
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        for sel in [
            &svc["spec"]["selector"],
            &pdb["spec"]["selector"]["matchLabels"],
            &w["spec"]["selector"]["matchLabels"],
        ] {
            for (k, v) in sel.as_mapping().expect("selector") {
                assert_eq!(&labels[k], v, "{}: selector {k:?}", name(w));
            }
        }
    }
    check_workload(&dep, &t1, "weir-tier1");
    check_workload(&sts, &t2, "weir-tier2");
    // The k8s resolver's account may list EndpointSlices.
    let sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("tier 1 runs under its own service account");
    find("ServiceAccount", sa);
    let binding = all
        .iter()
        .map(|(_, d)| d)
        .find(|d| kind(d) == "RoleBinding" && d["subjects"][0]["name"].as_str() == Some(sa))
        .expect("a RoleBinding for the account");
    let role = find(
        "Role",
        binding["roleRef"]["name"].as_str().expect("roleRef"),
    );
    let rule = &role["rules"][0];
    assert_eq!(rule["apiGroups"][0].as_str(), Some("discovery.k8s.io"));
    assert_eq!(rule["resources"][0].as_str(), Some("endpointslices"));
    assert!(serde_yaml::to_string(&rule["verbs"])
        .expect("verbs")
        .contains("list"));
    let hpa = find("HorizontalPodAutoscaler", "weir-tier1");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["kind"].as_str(),
        Some("Deployment")
    );
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("weir-tier1")
    );
    // Tier 2 samples and limits: it has what tier 1 routed for.
    assert!(t2["processors"]["tail_sampling"].is_mapping());
    assert!(t2["processors"]["cardinality_limiter"].is_mapping());
}

#[test]
fn the_compose_stack_is_complete_and_its_configs_valid() {
    let compose = &docs(&repo("deploy/compose/compose.yaml"))[0];
    let services = compose["services"].as_mapping().expect("services");
    for s in ["weir", "prometheus", "loki", "tempo", "grafana"] {
        assert!(services.contains_key(s), "service {s}");
    }
    // Every file or directory mounted exists (relative to the compose file).
    for (svc, s) in services {
        for v in s["volumes"].as_sequence().into_iter().flatten() {
            let src = v
                .as_str()
                .and_then(|v| v.split(':').next())
                .expect("a bind mount");
            assert!(
                repo("deploy/compose").join(src).exists(),
                "{svc:?} mounts {src}, which does not exist"
            );
        }
    }
    let weir = &services["weir"];
    assert_eq!(
        weir["build"]["dockerfile"].as_str(),
        Some("deploy/Dockerfile")
    );
    let cfg = validate_config(
        &std::fs::read_to_string(repo("deploy/compose/weir.yaml")).expect("weir.yaml"),
        "deploy/compose/weir.yaml",
    );
    // weir's exporters point at the compose services.
    let text = serde_yaml::to_string(&cfg["exporters"]).expect("yaml");
    for host in ["tempo:4317", "prometheus:9090", "loki:3100"] {
        assert!(text.contains(host), "an exporter to {host}: {text}");
    }
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(repo("deploy/compose/prometheus.yml"))
        .output()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Grafana gets the provisioning and dashboards of deploy/grafana, and its datasources
    // point at the compose services.
    let grafana = serde_yaml::to_string(&services["grafana"]["volumes"]).expect("yaml");
    for p in [
        "../grafana/provisioning/datasources",
        "../grafana/provisioning/dashboards",
        "../grafana/dashboards",
    ] {
        assert!(grafana.contains(p), "{p}");
    }
    let ds = std::fs::read_to_string(repo(
        "deploy/grafana/provisioning/datasources/datasources.yaml",
    ))
    .expect("datasources");
    for url in [
        "http://prometheus:9090",
        "http://tempo:3200",
        "http://loki:3100",
    ] {
        assert!(ds.contains(url), "{url}");
    }
    let tempo = &docs(&repo("deploy/compose/tempo.yaml"))[0];
    assert_eq!(
        tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
        Some("0.0.0.0:4317"),
        "Tempo takes OTLP where weir sends it"
    );
}

#[test]
fn the_dockerfile_builds_locked_with_the_right_toolchain_and_runs_as_non_root() {
    let text = std::fs::read_to_string(repo("deploy/Dockerfile")).expect("Dockerfile");
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).expect("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("rust-version");
    let from: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    let image = from[0].split_whitespace().next().unwrap_or("");
    let tag = image
        .strip_prefix("rust:")
        .expect("the build stage is the rust image");
    let version: Vec<u32> = tag
        .split('-')
        .next()
        .unwrap_or("")
        .split('.')
        .filter_map(|x| x.parse().ok())
        .collect();
    let wanted: Vec<u32> = rust_version
        .split('.')
        .filter_map(|x| x.parse().ok())
        .collect();
    assert!(
        version >= wanted,
        "rust:{tag} is older than rust-version {rust_version}"
    );
    assert!(text.contains("cargo build --release --locked --bin weir"));
    // Every COPY from the build context exists.
    for l in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = l.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo(src).exists(), "COPY {src}: not in the repository");
        }
    }
    // Non-root, numerically (Kubernetes' runAsNonRoot can check a number).
    let user = text
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap_or("")
        .parse()
        .expect("a numeric user");
    assert_ne!(uid, 0);
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/weir\"]"));
    let exposed: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE")
        .split_whitespace()
        .collect();
    for p in ["4317", "4318", "8888", "13133"] {
        assert!(exposed.contains(&p), "EXPOSE {p}");
    }
    // The config baked in is valid.
    let (ok, out) = common::validate(&[repo("config/gateway.yaml")]);
    assert!(ok, "{out}");
}
