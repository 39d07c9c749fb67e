//! The load generator and its counting sink (`weir-loadgen`), as processes.
use std::process::{Command, Stdio};
use std::time::Duration;

use super::wait_until;

pub fn loadgen() -> &'static str {
    env!("CARGO_BIN_EXE_weir-loadgen")
}

/// The sink process; killed on drop if the test did not collect it.
pub struct SinkProc(Option<std::process::Child>);

impl Drop for SinkProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn start_sink(port: u16) -> SinkProc {
    start_sink_with(port, &[])
}

/// [`start_sink`] with more arguments (`--delay 1s`: a slow backend; `--idle 5s` replaces the
/// default of 1s: the first occurrence of an option wins).
pub fn start_sink_with(port: u16, extra: &[&str]) -> SinkProc {
    let child = Command::new(loadgen())
        .arg("sink")
        .args(extra)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--idle", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sink");
    wait_until("the sink to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    SinkProc(Some(child))
}

pub fn json(out: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(out);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {text}"))
}

pub fn finish(mut sink: SinkProc) -> serde_json::Value {
    // The sink stops on its own one idle second after the last request.
    let child = sink.0.take().expect("sink running");
    let out = child.wait_with_output().expect("sink output");
    json(&out.stdout)
}

pub fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(loadgen())
        .args(args)
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out.stdout)
}
