//! Shared test harness: run the real `weir` binary on a YAML config, pick free loopback
//! ports, wait on conditions with deadlines, and an independent OTLP sink to count what
//! arrives.
#![allow(dead_code)]
pub mod certs;
pub mod dns;
pub mod k8s;
pub mod loadgen;
pub mod loki;
pub mod prometheus;
pub mod sink;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now, and one this test process has not handed
/// out before: the kernel may offer a port again once its listener closed, and two
/// components of one config on the same port is a config error.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Async flavour of [`wait_until`].
pub async fn wait_until_async(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory for one test.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

pub fn weir_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weir")
}

/// A running weir process; killed on drop if the test did not stop it.
pub struct Weir {
    child: Option<Child>,
    pub log: Arc<Mutex<String>>,
    pub stdout: Arc<Mutex<String>>,
    pub config: PathBuf,
}

impl Weir {
    /// Starts weir on `yaml` and waits until `ready_port` accepts connections.
    pub fn start(yaml: &str, ready_port: u16) -> Weir {
        Weir::start_with(yaml, ready_port, &[])
    }

    /// [`Weir::start`] with extra command-line arguments (e.g. `--watch-config`).
    pub fn start_with(yaml: &str, ready_port: u16, args: &[&str]) -> Weir {
        Weir::start_with_env(yaml, ready_port, args, &[])
    }

    /// [`Weir::start_with`] with extra environment variables.
    pub fn start_with_env(
        yaml: &str,
        ready_port: u16,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Weir {
        let dir = scratch_dir();
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut child = Command::new(weir_bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir");
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        for (pipe, buf) in [
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                log.clone(),
            ),
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                stdout.clone(),
            ),
        ] {
            if let Some(p) = pipe {
                std::thread::spawn(move || {
                    for line in BufReader::new(p).lines().map_while(Result::ok) {
                        if std::env::var_os("WEIR_TEST_ECHO").is_some() {
                            eprintln!("[weir] {line}");
                        }
                        let mut b = buf.lock().unwrap();
                        b.push_str(&line);
                        b.push('\n');
                    }
                });
            }
        }
        let mut w = Weir {
            child: Some(child),
            log,
            stdout,
            config,
        };
        let addr: SocketAddr = ([127, 0, 0, 1], ready_port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Some(status) = w.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("weir exited early ({status}); log:\n{}", w.log());
            }
            if Instant::now() > deadline {
                panic!("weir did not listen on {addr} in time; log:\n{}", w.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Replaces the config file weir was started with (for a reload).
    pub fn rewrite_config(&self, yaml: &str) {
        // Write then rename, so a watcher never reads half a file.
        let tmp = self.config.with_extension("yaml.new");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config).expect("replace config");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        self.stop_after_signal()
    }

    /// Waits (bounded) for the exit status after a signal was sent.
    pub fn stop_after_signal(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().expect("wait weir") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "weir did not stop within 30s after SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `weir validate --config ...` and returns (success, stdout + stderr).
pub fn validate(files: &[PathBuf]) -> (bool, String) {
    let mut cmd = Command::new(weir_bin());
    cmd.arg("validate");
    for f in files {
        cmd.arg("--config").arg(f);
    }
    let out = cmd.output().expect("run weir validate");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// GETs `http://127.0.0.1:port/path` with a raw HTTP/1.1 request; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of a metric line `name{labels} value` in Prometheus text, summed over series
/// whose label text contains every `must` fragment.
pub fn metric(text: &str, name: &str, must: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| must.iter().all(|m| l.contains(m)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An OTLP/JSON traces request with `n` spans named `<tag>-<i>`.
pub fn traces_json(n: usize, tag: &str) -> String {
    let spans: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "traceId": format!("{:032x}", i + 1),
                "spanId": format!("{:016x}", i + 1),
                "name": format!("{tag}-{i}"),
                "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000000001000000"
            })
        })
        .collect();
    serde_json::json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "weir-test"}}]},
        "scopeSpans": [{"spans": spans}]}]})
    .to_string()
}

/// POSTs an OTLP/JSON body with curl: its exit code and the HTTP status (0 when there is
/// none). `extra`: more curl arguments (`-u`, `-H`, `--cacert`, ...).
pub fn curl_json(url: &str, body: &str, extra: &[&str]) -> (i32, u16) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (out.status.code().unwrap_or(-1), code)
}

/// Fails loudly (not skips) without the OpenTelemetry Python SDK (`.ci/run` installs it).
pub fn require_python_sdk() {
    let check = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
        ])
        .status();
    assert!(
        matches!(check, Ok(s) if s.success()),
        "python3 with opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http is required (.ci/run installs them)"
    );
}
