//! A real Prometheus (the Debian package, `apt-get install prometheus`) on a loopback port
//! with the remote-write receiver and native histograms on; stopped and its data removed on
//! drop.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http_get, scratch_dir, wait_until};

/// What a test adds to Prometheus' config.
enum Extra<'a> {
    Rules(&'a str),
    Scrape(&'a str),
}

pub struct Prometheus {
    pub port: u16,
    child: Child,
    dir: PathBuf,
    /// Served over TLS: the CA that signed its certificate (queries go through curl).
    tls_ca: Option<PathBuf>,
}

impl Prometheus {
    pub fn start() -> Prometheus {
        Prometheus::start_on(free_port())
    }

    /// Starts on a given port (a test that first runs weir against a backend that is down).
    pub fn start_on(port: u16) -> Prometheus {
        Prometheus::start_with(port, None, None)
    }

    /// Evaluates `rules` (a rules file's text) every second.
    #[allow(dead_code)]
    pub fn start_with_rules(rules: &str) -> Prometheus {
        Prometheus::start_with(free_port(), None, Some(Extra::Rules(rules)))
    }

    /// Scrapes `target` (`127.0.0.1:port`) every second, as job `weir`.
    #[allow(dead_code)]
    pub fn start_scraping(target: &str) -> Prometheus {
        Prometheus::start_with(free_port(), None, Some(Extra::Scrape(target)))
    }

    /// Serves over TLS (its `--web.config.file` with `tls_server_config`) with `cert` and
    /// `key`, signed by `ca`.
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Prometheus {
        Prometheus::start_with(free_port(), Some((cert, key, ca)), None)
    }

    fn start_with(
        port: u16,
        tls: Option<(&std::path::Path, &std::path::Path, &std::path::Path)>,
        extra: Option<Extra<'_>>,
    ) -> Prometheus {
        let bin = std::env::var("WEIR_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let dir = scratch_dir();
        let cfg = dir.join("prometheus.yml");
        let mut text = String::from("global:\n  scrape_interval: 1h\n");
        match extra {
            Some(Extra::Rules(rules)) => {
                let file = dir.join("rules.yml");
                std::fs::write(&file, rules).expect("write rules.yml");
                text.push_str(&format!(
                    "  evaluation_interval: 1s\nrule_files: [{}]\n",
                    file.display()
                ));
            }
            Some(Extra::Scrape(target)) => text.push_str(&format!(
                "scrape_configs:\n  - job_name: weir\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{target}\"]\n"
            )),
            None => {}
        }
        std::fs::write(&cfg, text).expect("write prometheus.yml");
        let mut cmd = Command::new(&bin);
        if let Some((cert, key, _)) = tls {
            let web = dir.join("web.yml");
            std::fs::write(
                &web,
                format!(
                    "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                    cert.display(),
                    key.display()
                ),
            )
            .expect("write web.yml");
            cmd.arg(format!("--web.config.file={}", web.display()));
        }
        let child = cmd
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--enable-feature=native-histograms,exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin:?} ({e}): install it with `apt-get install -y prometheus` (.ci/run does)")
            });
        let p = Prometheus {
            port,
            child,
            dir,
            tls_ca: tls.map(|(_, _, ca)| ca.to_path_buf()),
        };
        wait_until("prometheus ready", Duration::from_secs(30), || {
            match &p.tls_ca {
                None => http_get(port, "/-/ready").is_some_and(|(s, _)| s == 200),
                Some(_) => p.get("/-/ready").is_some(),
            }
        });
        p
    }

    pub fn write_url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// GET `path`: the body of a 200 answer.
    fn get(&self, path: &str) -> Option<String> {
        let Some(ca) = &self.tls_ca else {
            return get_http10(self.port, path);
        };
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "10", "--cacert"])
            .arg(ca)
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs an instant query; returns the result vector as (labels, value) pairs.
    pub fn query(&self, q: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        let Some(body) = self.get(&path) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| {
                        let labels = r["metric"].as_object()?.clone();
                        // A native histogram sample comes as `histogram: [ts, {count, sum, ...}]`:
                        // its count stands for the value.
                        let value = match r["value"][1].as_str() {
                            Some(v) => v.parse().ok()?,
                            None => r["histogram"][1]["count"].as_str()?.parse().ok()?,
                        };
                        Some((labels, value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The exemplars of the series `q` selects over the last hour: (series labels, exemplar
    /// labels, value).
    #[allow(dead_code)]
    pub fn exemplars(&self, q: &str) -> Vec<(serde_json::Value, serde_json::Value, f64)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            urlencode(q),
            now - 3600,
            now + 60
        );
        let Some(body) = self.get(&path) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut out = Vec::new();
        for series in v["data"].as_array().into_iter().flatten() {
            for e in series["exemplars"].as_array().into_iter().flatten() {
                let value = e["value"]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0.0);
                out.push((series["seriesLabels"].clone(), e["labels"].clone(), value));
            }
        }
        out
    }

    /// Waits until `q` returns at least one series, then returns the results.
    pub fn wait_for(&self, q: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let mut out = Vec::new();
        wait_until(
            &format!("prometheus to answer {q}"),
            Duration::from_secs(30),
            || {
                out = self.query(q);
                !out.is_empty()
            },
        );
        out
    }
}

/// GET over HTTP/1.0, so a large answer comes whole rather than chunked.
fn get_http10(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| {
            head.split_whitespace()
                .nth(1)
                .filter(|c| *c == "200")
                .map(|_| body.to_owned())
        })
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
