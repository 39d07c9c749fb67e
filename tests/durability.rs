//! The persistent queue (`file_storage` + `sending_queue.storage`), through the real binary:
//! - kill -9 mid-stream at random moments (five times with a slow backend, once with it down,
//!   and once with `fsync: true`), restart on the same config: every span whose request was
//!   answered OK reaches the backend (at least once; duplicates counted and bounded);
//! - a segment flipped and cut short between runs: the intact records are delivered, the
//!   damaged bytes counted and logged;
//! - a stop whose deadline passes keeps what was not delivered on disk for the next start;
//! - a full persistent queue refuses with a retryable error;
//! - a second weir pointed at the same directory refuses to start, saying why;
//! - a storage that does not exist or is not enabled is a config error.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sink::{Mode, Sink};
use common::{free_port, scratch_dir, wait_until_async, weir_bin, Weir};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// One request of `n` spans, each named `<tag>-<i>` (the name is the span's identity here).
fn request(tag: &str, n: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: {
                            let mut id = vec![0u8; 16];
                            id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                            id[8..].copy_from_slice(&(tag.len() as u64).to_be_bytes());
                            id
                        },
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: format!("{tag}-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn config(grpc: u16, sink: u16, dir: &str, extra_queue: &str, shutdown: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
processors:
  batch: {{timeout: 50ms, send_batch_size: 200}}
extensions:
  file_storage/queue:
    directory: {dir}
    create_directory: true
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink}
    tls: {{insecure: true}}
    compression: none
    timeout: 2s
    retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms, max_elapsed_time: 0}}
    sending_queue: {{storage: file_storage/queue, num_consumers: 2{extra_queue}}}
service:
  extensions: [file_storage/queue]
  shutdown_timeout: {shutdown}
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
"#
    )
}

/// Names the sink received, with how many times each.
fn received(sink: &Sink) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in sink.state.span_names.lock().unwrap().iter() {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

type Acked = Arc<Mutex<BTreeSet<String>>>;

/// A small seeded generator for the kill moments (the seed is printed, so a run reproduces).
struct Moments(u64);
impl Moments {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Streams requests of 20 spans from 4 clients (recording every span whose request was
/// answered OK) until `target` more spans are acknowledged; with `down`, the backend then goes
/// down (every request refused as unavailable) until 2,000 more are; then kill -9.
async fn stream_then_kill(
    weir: Weir,
    grpc: u16,
    round: usize,
    target: usize,
    acked: &Acked,
    down: Option<&Sink>,
) {
    let start = acked.lock().unwrap().len();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let acked = acked.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let Ok(mut client) =
                TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await
            else {
                return;
            };
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = request(&format!("k{round}c{c}r{i}"), 20);
                i += 1;
                if client.export(req.clone()).await.is_ok() {
                    let mut a = acked.lock().unwrap();
                    for s in &req.resource_spans[0].scope_spans[0].spans {
                        a.insert(s.name.clone());
                    }
                }
            }
        }));
    }
    wait_until_async(
        "spans acknowledged before the kill",
        Duration::from_secs(30),
        || acked.lock().unwrap().len() >= start + target,
    )
    .await;
    if let Some(sink) = down {
        sink.state.set_mode(Mode::Fail(tonic::Code::Unavailable));
        let at = acked.lock().unwrap().len();
        wait_until_async(
            "spans acknowledged while the backend is down",
            Duration::from_secs(30),
            || acked.lock().unwrap().len() >= at + 2000,
        )
        .await;
    }
    weir.signal("KILL");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    drop(weir);
}

/// Waits until every acknowledged span has reached the sink; returns the duplicates.
async fn all_delivered(sink: &Sink, acked: &Acked, what: &str) -> usize {
    let acked = acked.lock().unwrap().clone();
    wait_until_async(what, Duration::from_secs(90), || {
        let got = received(sink);
        acked.iter().all(|n| got.contains_key(n))
    })
    .await;
    received(sink).values().map(|n| n - 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    // A slow backend: every request answered 50 ms late, so acknowledged data queues up.
    let sink = Sink::start().await;
    sink.state.set_mode(Mode::Delay(Duration::from_millis(50)));
    let dir = scratch_dir().join("queue");
    let grpc = free_port();
    let cfg = config(grpc, sink.grpc_port, &dir.display().to_string(), "", "5s");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut moments = Moments(seed);
    let acked: Acked = Arc::default();
    let mut weir = Weir::start(&cfg, grpc);
    // Five kills at random moments with the backend slow, a sixth with it down. Each restart
    // must deliver everything acknowledged so far (the previous runs' replays included) while
    // it takes new data.
    let mut report = Vec::new();
    for round in 0..6 {
        let target = 200 + moments.below(6000) as usize;
        let down = (round == 5).then_some(&sink);
        stream_then_kill(weir, grpc, round, target, &acked, down).await;
        let delivered = received(&sink).len();
        let held = acked.lock().unwrap().len();
        sink.state.set_mode(Mode::Delay(Duration::from_millis(50)));
        weir = Weir::start(&cfg, grpc);
        let dups = all_delivered(
            &sink,
            &acked,
            &format!("every acknowledged span delivered after kill {}", round + 1),
        )
        .await;
        report.push(format!(
            "kill {} (after {target} more acked{}): {held} acked, {delivered} delivered at the kill, all delivered after the restart, {dups} duplicates so far",
            round + 1,
            if down.is_some() { ", backend down" } else { "" }
        ));
    }
    let log = weir.log();
    assert!(
        log.contains("replaying them"),
        "a restart says what it replays; log:\n{log}"
    );
    assert!(weir.stop().success());
    let got = received(&sink);
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    println!("seed {seed:#x}\n{}", report.join("\n"));
    // At least once: spans delivered just before a kill whose release had not reached the
    // disk come again; never more than what was in flight (the queue and the batch) per kill.
    assert!(
        duplicates <= 6 * 4000,
        "{duplicates} duplicates of {} spans (seed {seed:#x})",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_fsync_loses_nothing_acknowledged() {
    let sink = Sink::start().await;
    sink.state.set_mode(Mode::Delay(Duration::from_millis(50)));
    let dir = scratch_dir().join("queue");
    let grpc = free_port();
    let cfg = config(grpc, sink.grpc_port, &dir.display().to_string(), "", "5s").replace(
        "create_directory: true",
        "create_directory: true\n    fsync: true",
    );
    let acked: Acked = Arc::default();
    let weir = Weir::start(&cfg, grpc);
    stream_then_kill(weir, grpc, 0, 3000, &acked, None).await;
    let weir = Weir::start(&cfg, grpc);
    let dups = all_delivered(&sink, &acked, "every acknowledged span delivered").await;
    println!(
        "fsync: {} acknowledged, all delivered after the restart, {dups} duplicates",
        acked.lock().unwrap().len()
    );
    assert!(dups <= 4000, "{dups} duplicates");
    assert!(weir.stop().success());
}

/// The records of a segment file: (offset, total length) of each, read from its framing
/// (`WEIRWAL1`, then `[len u32][crc32 u32][body]` per record).
fn records(seg: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 8;
    while pos + 8 <= seg.len() {
        let len = u32::from_le_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        out.push((pos, 8 + len));
        pos += 8 + len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_delivers_its_valid_records_and_counts_the_rest() {
    let sink = Sink::start().await;
    sink.state.set_mode(Mode::Stall);
    let dir = scratch_dir().join("queue");
    let grpc = free_port();
    let tel = free_port();
    let cfg = config(grpc, sink.grpc_port, &dir.display().to_string(), "", "1s").replace(
        "telemetry: {metrics: {level: none}}",
        &format!("telemetry: {{metrics: {{address: \"127.0.0.1:{tel}\"}}}}"),
    );
    // Ten requests kept on disk by a stop that cannot deliver them.
    let weir = Weir::start(&cfg, grpc);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    for r in 0..10 {
        client.export(request(&format!("r{r}"), 10)).await.unwrap();
    }
    assert!(weir.stop().success());
    // Between runs: flip bytes inside the 4th record and cut the last one short (a torn write).
    let seg = std::fs::read_dir(dir.join("weir_pipeline_traces"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 8))
        .expect("a segment with records");
    let mut bytes = std::fs::read(&seg).unwrap();
    let recs = records(&bytes);
    assert_eq!(recs.len(), 10, "one record per request");
    let (at, len) = recs[3];
    for b in &mut bytes[at + len - 40..at + len - 30] {
        *b ^= 0x5a;
    }
    let (last, last_len) = recs[9];
    bytes.truncate(last + last_len / 2);
    std::fs::write(&seg, &bytes).unwrap();

    // The next start delivers the eight intact requests, counts the damaged bytes, says so.
    sink.state.set_mode(Mode::Accept);
    let weir = Weir::start(&cfg, grpc);
    wait_until_async(
        "the intact spans delivered",
        Duration::from_secs(30),
        || received(&sink).len() == 80,
    )
    .await;
    let got = received(&sink);
    for r in [3, 9] {
        assert!(
            !got.keys().any(|n| n.starts_with(&format!("r{r}-"))),
            "request r{r} was damaged and cannot be delivered"
        );
    }
    let (_, metrics) = common::http_get(tel, "/metrics").expect("self-metrics");
    let bad = common::metric(
        &metrics,
        "weir_wal_corrupted_bytes_total",
        &["pipeline=\"traces\""],
    );
    assert!(
        bad >= (len + last_len / 2) as f64,
        "damaged bytes counted: {bad}"
    );
    let log = weir.log();
    assert!(
        log.contains("damaged or cut short") && !log.contains("panicked"),
        "{log}"
    );
    // Still taking data.
    client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    client.export(request("after", 10)).await.unwrap();
    wait_until_async("new data delivered", Duration::from_secs(30), || {
        received(&sink).len() == 90
    })
    .await;
    assert!(weir.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_cannot_deliver_keeps_the_data_for_the_next_start() {
    let sink = Sink::start().await;
    sink.state.set_mode(Mode::Stall);
    let dir = scratch_dir().join("queue");
    let grpc = free_port();
    let cfg = config(grpc, sink.grpc_port, &dir.display().to_string(), "", "1s");
    let weir = Weir::start(&cfg, grpc);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    for r in 0..10 {
        client.export(request(&format!("r{r}"), 10)).await.unwrap();
    }
    let status = weir.stop();
    assert!(status.success(), "{status}");
    assert_eq!(sink.state.spans(), 0, "the backend took nothing");

    sink.state.set_mode(Mode::Accept);
    let weir = Weir::start(&cfg, grpc);
    wait_until_async("the kept spans delivered", Duration::from_secs(30), || {
        received(&sink).len() == 100
    })
    .await;
    weir.stop();
    // Delivered and released: a third start has nothing to replay.
    let before = sink.state.spans();
    let weir = Weir::start(&cfg, grpc);
    let status = weir.stop();
    assert!(status.success());
    assert_eq!(sink.state.spans(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_persistent_queue_refuses_with_a_retryable_error() {
    let sink = Sink::start().await;
    sink.state.set_mode(Mode::Stall);
    let dir = scratch_dir().join("queue");
    let grpc = free_port();
    let cfg = config(
        grpc,
        sink.grpc_port,
        &dir.display().to_string(),
        ", queue_size: 3",
        "1s",
    );
    let weir = Weir::start(&cfg, grpc);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let mut refused = None;
    for r in 0..10 {
        if let Err(s) = client.export(request(&format!("r{r}"), 1)).await {
            refused = Some((r, s));
            break;
        }
    }
    let (at, status) = refused.expect("a full queue refuses");
    assert_eq!(at, 3, "three requests fit");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "the persistent queue of pipeline traces is full; retry later"
    );
    sink.state.set_mode(Mode::Accept);
    wait_until_async(
        "the queued spans delivered",
        Duration::from_secs(20),
        || sink.state.spans() == 3,
    )
    .await;
    // Room again once delivered (released when the backend's answer reaches weir).
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = client.export(request("after", 1)).await {
        assert!(Instant::now() < deadline, "no room after delivery: {e:?}");
        tokio::task::yield_now().await;
    }
    weir.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_weir_on_the_same_directory_refuses_to_start() {
    let sink = Sink::start().await;
    let dir = scratch_dir().join("queue");
    let grpc = free_port();
    let first = Weir::start(
        &config(grpc, sink.grpc_port, &dir.display().to_string(), "", "1s"),
        grpc,
    );
    let other = scratch_dir().join("second.yaml");
    std::fs::write(
        &other,
        config(
            free_port(),
            sink.grpc_port,
            &dir.display().to_string(),
            "",
            "1s",
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(weir_bin())
        .arg("--config")
        .arg(&other)
        .stdin(Stdio::null())
        .output()
        .expect("run weir");
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(15));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("file_storage/queue: directory")
            && err.contains("is in use by another weir process"),
        "{err}"
    );
    first.stop();
}

#[test]
fn storage_references_are_checked_at_load() {
    let dir = scratch_dir();
    let base = |storage: &str, service_ext: &str| {
        format!(
            r#"
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:4317"}}}}}}
extensions:
  file_storage:
    directory: {}
  health_check: {{}}
exporters:
  otlp:
    endpoint: 127.0.0.1:4318
    sending_queue: {{storage: {storage}}}
service:
  extensions: [{service_ext}]
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
"#,
            dir.display()
        )
    };
    for (storage, ext, want) in [
        ("file_storage", "file_storage", None),
        (
            "file_storage/missing",
            "file_storage",
            Some("exporters.otlp.sending_queue.storage: no storage client extension found: \"file_storage/missing\" is not configured under extensions"),
        ),
        (
            "file_storage",
            "health_check",
            Some("no storage client extension found: \"file_storage\" is not enabled; add it to service.extensions"),
        ),
        (
            "health_check",
            "health_check",
            Some("requested extension is not a storage extension: \"health_check\""),
        ),
    ] {
        let f = dir.join("c.yaml");
        std::fs::write(&f, base(storage, ext)).unwrap();
        let (ok, out) = common::validate(&[f]);
        match want {
            None => assert!(ok, "{out}"),
            Some(w) => {
                assert!(!ok);
                assert!(out.contains(w), "want {w:?} in:\n{out}");
            }
        }
    }
}

/// A tmpfs mounted for one test (the tests run as root, as CI does), unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = scratch_dir().join("disk");
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill a disk and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_backpressure_and_recovers_when_delivered() {
    let disk = SmallDisk::mount("1m");
    let sink = Sink::start().await;
    sink.state.set_mode(Mode::Stall);
    let grpc = free_port();
    let cfg = config(
        grpc,
        sink.grpc_port,
        &disk.0.join("q").display().to_string(),
        "",
        "1s",
    );
    let weir = Weir::start(&cfg, grpc);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    // ~40 KB requests until the disk is full.
    let mut accepted = 0usize;
    let mut refusal = None;
    for r in 0..200 {
        match client.export(request(&format!("r{r}"), 500)).await {
            Ok(_) => accepted += 1,
            Err(s) => {
                refusal = Some(s);
                break;
            }
        }
    }
    let s = refusal.expect("a full disk refuses");
    assert!(accepted > 0);
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    assert!(
        s.message().starts_with(
            "the persistent queue of pipeline traces cannot write: No space left on device"
        ) && s.message().ends_with("retry later"),
        "{}",
        s.message()
    );
    // Still serving; once the backend takes the data, the space comes back.
    sink.state.set_mode(Mode::Accept);
    wait_until_async(
        "the accepted spans delivered",
        Duration::from_secs(30),
        || sink.state.spans() == accepted * 500,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.export(request("after", 500)).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline && e.code() == tonic::Code::Unavailable => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("the disk never recovered: {e:?}"),
        }
    }
    assert!(weir.stop().success());
    drop(disk);
}
