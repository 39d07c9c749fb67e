//! The alerting and recording rules in deploy/prometheus: `promtool check rules` on every
//! rules file, `promtool test rules` on every unit-test file (Debian's prometheus package
//! ships promtool; .ci/run installs it), and every weir metric a rule names is one weir
//! exports.
use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read deploy/prometheus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn promtool(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("promtool runs (apt-get install prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let rules = files(&dir(), ".rules.yaml");
    assert!(rules.len() >= 2, "weir and services rules: {rules:?}");
    for r in &rules {
        let (ok, text) = promtool(&["check", "rules", &r.to_string_lossy()], &dir());
        assert!(ok && text.contains("SUCCESS"), "{}: {text}", r.display());
    }
    let tests = files(&dir().join("tests"), ".test.yaml");
    assert_eq!(
        tests.len(),
        rules.len(),
        "one unit-test file per rules file"
    );
    for t in &tests {
        let (ok, text) = promtool(
            &["test", "rules", &t.to_string_lossy()],
            &dir().join("tests"),
        );
        assert!(ok && text.contains("SUCCESS"), "{}: {text}", t.display());
    }
}

/// A unit test that fails must fail the run: the tests are not vacuous.
#[test]
fn a_wrong_expectation_fails_promtool() {
    let scratch = std::env::temp_dir().join(format!("weir-rules-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let text = std::fs::read_to_string(dir().join("tests/weir.test.yaml")).expect("test file");
    let wrong = text
        .replace(
            "../weir.rules.yaml",
            &dir().join("weir.rules.yaml").to_string_lossy(),
        )
        .replace("10 items/s refused", "11 items/s refused");
    assert_ne!(wrong, text);
    let f = scratch.join("wrong.test.yaml");
    std::fs::write(&f, wrong).expect("write");
    let (ok, out) = promtool(&["test", "rules", &f.to_string_lossy()], &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(!ok && out.contains("FAILED"), "{out}");
}

/// Every `otelcol_*` / `weir_*` metric the weir rules use is one weir's source registers (a
/// renamed metric would leave an alert that can never fire).
#[test]
fn weir_rules_name_metrics_weir_exports() {
    let text = std::fs::read_to_string(dir().join("weir.rules.yaml")).expect("rules");
    // The rules, not the comments about them.
    let rules: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut source = String::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                source.push_str(&std::fs::read_to_string(&p).expect("source"));
            }
        }
    }
    let mut names: Vec<String> = Vec::new();
    let bytes = rules.as_bytes();
    for (i, _) in rules.match_indices(['o', 'w']) {
        let rest = &rules[i..];
        let starts = rest.starts_with("otelcol_") || rest.starts_with("weir_");
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if !(starts && boundary) {
            continue;
        }
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '(' | '|' | ')'))
            .collect();
        // Expand `otelcol_x_(spans|metric_points|log_records)_total`; otherwise drop the
        // parentheses that close around the name.
        match (word.find('('), word.find(')')) {
            (Some(a), Some(b)) if a < b => {
                for alt in word[a + 1..b].split('|') {
                    names.push(format!("{}{alt}{}", &word[..a], &word[b + 1..]));
                }
            }
            _ => names.push(word.trim_end_matches(')').to_string()),
        }
    }
    names.sort();
    names.dedup();
    assert!(names.len() >= 15, "{names:?}");
    for n in &names {
        assert!(
            source.contains(&format!("\"{n}\"")),
            "weir.rules.yaml uses {n}, which weir does not export"
        );
    }
}
