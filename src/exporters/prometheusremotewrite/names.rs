//! Metric and label names, per the OpenTelemetry "Prometheus and OpenMetrics compatibility"
//! spec as the Collector's translator applies it: names split into tokens at characters
//! Prometheus does not allow, unit suffixes (`_seconds`, `_bytes`, `_per_second` ...),
//! `_total` on counters, `_ratio` on gauges of unit `1`, a `_` before a leading digit.

/// Kinds that change the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Other,
}

fn unit_word(u: &str) -> &str {
    match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit_word(u: &str) -> &str {
    match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// Non-name characters become `_`, runs of `_` collapse, a leading `_` goes.
fn clean_unit(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if is_name_char(c) { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out.trim_start_matches('_').to_owned()
}

/// (main unit suffix, per unit suffix) of an OTel unit; annotations (`{requests}`) give none.
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let per = parts.next().unwrap_or("").trim();
    let main_s = if !main.is_empty() && !main.contains(['{', '}']) {
        unit_word(main).to_owned()
    } else {
        String::new()
    };
    let per_s = if !per.is_empty() && !per.contains(['{', '}']) {
        format!("per_{}", per_unit_word(per))
    } else {
        String::new()
    };
    (main_s, per_s)
}

/// The Prometheus name of an OTLP metric.
pub fn metric_name(
    name: &str,
    unit: &str,
    kind: Kind,
    namespace: &str,
    add_suffixes: bool,
) -> String {
    if !add_suffixes {
        let mut out: String = name
            .split(|c: char| !(is_name_char(c) || c == '_'))
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        if !namespace.is_empty() {
            out = format!("{namespace}_{out}");
        }
        // A namespace can start with a digit too (`namespace: 9x`).
        if out.starts_with(|c: char| c.is_ascii_digit()) {
            out.insert(0, '_');
        }
        return out;
    }
    let mut tokens: Vec<String> = name
        .split(|c: char| !is_name_char(c))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let (main, per) = unit_suffixes(unit);
    let mut main = clean_unit(&main);
    let mut per = clean_unit(&per);
    if tokens.contains(&main) {
        main.clear();
    }
    if per == "per_" {
        per.clear();
    } else {
        per = per.trim_end_matches('_').to_owned();
        if tokens.contains(&per) {
            per.clear();
        }
    }
    if !per.is_empty() {
        main = main.trim_end_matches('_').to_owned();
    }
    if !main.is_empty() {
        tokens.push(main);
    }
    if !per.is_empty() {
        tokens.push(per);
    }
    if kind == Kind::Counter {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if unit == "1" && kind == Kind::Gauge {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    if !namespace.is_empty() {
        tokens.insert(0, namespace.to_owned());
    }
    let mut out = tokens.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A Prometheus label name for an attribute key: invalid characters become `_`; a leading
/// digit gets `key_`, a single leading `_` gets `key`.
pub fn label_name(key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

pub fn is_valid_label_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        let n = |name, unit, kind| metric_name(name, unit, kind, "", true);
        assert_eq!(
            n("http.server.duration", "s", Kind::Other),
            "http_server_duration_seconds"
        );
        assert_eq!(
            n("http.server.request.size", "By", Kind::Other),
            "http_server_request_size_bytes"
        );
        assert_eq!(n("requests", "1", Kind::Counter), "requests_total");
        assert_eq!(
            n("requests.total", "{requests}", Kind::Counter),
            "requests_total"
        );
        assert_eq!(
            n("cpu.utilization", "1", Kind::Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            n("throughput", "By/s", Kind::Gauge),
            "throughput_bytes_per_second"
        );
        assert_eq!(n("latency_seconds", "s", Kind::Other), "latency_seconds");
        assert_eq!(n("queue.length", "{items}", Kind::Gauge), "queue_length");
        assert_eq!(n("temp", "Cel", Kind::Gauge), "temp_celsius");
        assert_eq!(
            n("2xx.responses", "", Kind::Counter),
            "_2xx_responses_total"
        );
        assert_eq!(
            n("a__b..c", "ms", Kind::Counter),
            "a_b_c_milliseconds_total"
        );
        assert_eq!(
            n("weird unit", "foo bar", Kind::Gauge),
            "weird_unit_foo_bar"
        );
        assert_eq!(
            metric_name("requests", "1", Kind::Counter, "app", true),
            "app_requests_total"
        );
        assert_eq!(
            metric_name("http.requests", "1", Kind::Counter, "", false),
            "http_requests"
        );
    }

    #[test]
    fn labels_are_sanitised() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("1st"), "key_1st");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__reserved"), "__reserved");
        assert_eq!(label_name("k8s.pod-name"), "k8s_pod_name");
        assert!(is_valid_label_name("env"));
        assert!(!is_valid_label_name("1env"));
        assert!(!is_valid_label_name("a-b"));
    }
}
