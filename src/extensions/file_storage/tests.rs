use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::wal::{self, Options, Wal, WalError};
use super::*;
use crate::exporters::helper::config::Sizer;
use crate::pdata::{Batch, Context, Signal};
use crate::telemetry::metrics::Registry;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "weir-fs-{}-{name}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Polls `cond` until it holds or `limit` passes (the writer thread works asynchronously).
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() && std::time::Instant::now() < deadline {
        std::thread::park_timeout(Duration::from_millis(5));
    }
}

fn cfg(dir: &Path) -> FileStorageConfig {
    FileStorageConfig {
        directory: dir.display().to_string(),
        ..Default::default()
    }
}

fn opts() -> Options {
    Options {
        fsync: false,
        recreate: false,
        sizer: Sizer::Requests,
        capacity: 1000,
    }
}

fn batch(tag: &str) -> Batch {
    let ctx = Context {
        receiver: Arc::from("otlp"),
        transport: "grpc",
        metadata: Some(Arc::new(vec![("x-scope-orgid".into(), tag.into())])),
        tenant: None,
        auth: Some(Arc::new(crate::extensions::auth::Identity {
            method: "bearertokenauth",
            subject: Arc::from("tok"),
        })),
        charge: None,
        ack: None,
    };
    Batch::encoded(
        Signal::Traces,
        Bytes::from(format!("payload-{tag}")),
        3,
        Arc::new(ctx),
    )
}

/// Opens the log of pipeline `traces` in `dir`, as a fresh process would (the storage's
/// process-wide registration is bypassed by closing what the last run opened).
fn open(dir: &Path) -> (Arc<Storage>, Arc<Wal>) {
    let s = Storage::open("file_storage", &cfg(dir)).unwrap();
    let w = s.log("traces", opts(), &Registry::default()).unwrap();
    (s, w)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn replay_all(w: &Arc<Wal>) -> Vec<Batch> {
    let mut it = w.take_replay();
    let mut out = Vec::new();
    while let Some(b) = it.next_batch() {
        out.push(b);
    }
    out
}

#[test]
fn what_is_not_released_is_replayed_with_its_context() {
    let dir = scratch("replay");
    let rt = rt();
    {
        let (_s, w) = open(&dir);
        let a = rt.block_on(w.append(&batch("a"))).unwrap();
        let b = rt.block_on(w.append(&batch("b"))).unwrap();
        let _c = rt.block_on(w.append(&batch("c"))).unwrap();
        drop(b); // delivered
        a.abandon(); // stopping: kept
        drop(a);
        w.close(); // c is still held: kept too
    }
    let (_s, w) = open(&dir);
    let got = replay_all(&w);
    let tags: Vec<String> = got
        .iter()
        .map(|b| {
            b.context
                .metadata_value("x-scope-orgid")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(tags, vec!["a", "c"], "b was released; a and c were not");
    let b = &got[0];
    assert_eq!(b.items, 3);
    assert_eq!(b.to_bytes(), Bytes::from("payload-a"));
    assert_eq!(b.context.auth.as_ref().unwrap().subject.as_ref(), "tok");
    assert_eq!(b.context.auth.as_ref().unwrap().method, "bearertokenauth");
    assert_eq!(b.context.transport, "grpc");
    drop(got); // delivered this time
    w.close();
    drop(w);
    drop(_s);
    let (_s, w) = open(&dir);
    assert!(replay_all(&w).is_empty(), "nothing left after delivery");
    w.close();
}

/// Writes one record per tag (never released) and returns the segment holding them, its
/// bytes, and where `payload-b` starts in them.
fn written_segment(dir: &Path, tags: &[&str]) -> (PathBuf, Vec<u8>, usize) {
    let rt = rt();
    {
        let (_s, w) = open(dir);
        for t in tags {
            std::mem::forget(rt.block_on(w.append(&batch(t))).unwrap());
        }
        w.close();
    }
    let seg = std::fs::read_dir(dir.join("weir_pipeline_traces"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(9).position(|w| w == b"payload-b").unwrap();
    (seg, bytes, at)
}

#[test]
fn a_damaged_record_costs_only_itself() {
    let dir = scratch("damage");
    // Flip a byte inside the second record's payload.
    let (seg, mut bytes, at) = written_segment(&dir, &["a", "b", "c"]);
    bytes[at + 8] ^= 0xff;
    // And cut the file short inside the last record, as a crash mid-write would.
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&seg, &bytes).unwrap();
    let scan = wal::scan(&seg).unwrap();
    assert_eq!(
        scan.data.len(),
        1,
        "only a survives: b is damaged, c cut short"
    );
    assert!(scan.bad_bytes > 0);
    let (_s, w) = open(&dir);
    let got = replay_all(&w);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to_bytes(), Bytes::from("payload-a"));
    w.close();
}

#[test]
fn records_after_a_damaged_one_are_recovered() {
    let dir = scratch("resync");
    let (seg, mut bytes, at) = written_segment(&dir, &["a", "b", "c", "d"]);
    bytes[at] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let (_s, w) = open(&dir);
    let got: Vec<Bytes> = replay_all(&w).iter().map(Batch::to_bytes).collect();
    assert_eq!(
        got,
        vec![
            Bytes::from("payload-a"),
            Bytes::from("payload-c"),
            Bytes::from("payload-d")
        ]
    );
    w.close();
}

#[test]
fn garbage_in_a_segment_never_panics() {
    let dir = scratch("garbage");
    let log = dir.join("weir_pipeline_traces");
    std::fs::create_dir_all(&log).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, len) in [0usize, 5, 8, 100, 5000].iter().enumerate() {
        let mut bytes = if i % 2 == 0 {
            SEGMENT_MAGIC_FOR_TESTS.to_vec()
        } else {
            Vec::new()
        };
        for _ in 0..*len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        std::fs::write(log.join(format!("{:020}.seg", i + 1)), &bytes).unwrap();
    }
    let (_s, w) = open(&dir);
    assert!(replay_all(&w).is_empty());
    w.close();
}

const SEGMENT_MAGIC_FOR_TESTS: &[u8; 8] = wal::SEGMENT_MAGIC;

#[test]
fn a_full_queue_refuses_and_makes_room_when_released() {
    let dir = scratch("full");
    let rt = rt();
    let s = Storage::open("file_storage", &cfg(&dir)).unwrap();
    let w = s
        .log(
            "traces",
            Options {
                capacity: 2,
                ..opts()
            },
            &Registry::default(),
        )
        .unwrap();
    let a = rt.block_on(w.append(&batch("a"))).unwrap();
    let _b = rt.block_on(w.append(&batch("b"))).unwrap();
    let e = rt.block_on(w.append(&batch("c"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the persistent queue of pipeline traces is full; retry later"
    );
    assert!(matches!(e, WalError::Full(_)));
    drop(a);
    rt.block_on(w.append(&batch("c"))).unwrap();
    w.close();
}

#[test]
fn segments_are_deleted_once_released() {
    let dir = scratch("segments");
    let rt = rt();
    let (s, w) = open(&dir);
    let big = Batch::encoded(
        Signal::Logs,
        Bytes::from(vec![b'x'; 3 << 20]),
        1,
        batch("x").context,
    );
    let held = rt.block_on(w.append(&big)).unwrap();
    for _ in 0..6 {
        drop(rt.block_on(w.append(&big)).unwrap());
    }
    let count = || {
        std::fs::read_dir(dir.join("weir_pipeline_traces"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
            })
            .count()
    };
    // The first segment holds `held`: it and every later segment stay.
    wait_for(Duration::from_secs(5), || count() >= 3);
    assert!(count() >= 3, "segments: {}", count());
    drop(held);
    wait_for(Duration::from_secs(5), || count() == 1);
    assert_eq!(count(), 1, "only the active segment is left");
    assert!(s.used.load(std::sync::atomic::Ordering::Relaxed) < (4 << 20));
    w.close();
}

#[test]
fn a_second_process_cannot_take_a_locked_directory() {
    let dir = scratch("lock");
    // Another open file description on the same lock file stands in for another process.
    let other = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("weir.lock"))
        .unwrap();
    other.try_lock().unwrap();
    let c = FileStorageConfig {
        timeout: Duration::from_millis(120).into(),
        ..cfg(&dir)
    };
    let started = std::time::Instant::now();
    let e = Storage::open("file_storage/q", &c).err().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    let msg = e.to_string();
    assert!(
        msg.contains("is in use by another weir process") && msg.contains("weir.lock"),
        "{msg}"
    );
    drop(other);
    assert!(Storage::open("file_storage/q", &c).is_ok());
}

#[test]
fn config_is_checked_as_upstream_does() {
    let missing = FileStorageConfig {
        directory: "/nonexistent/weir-dir".into(),
        ..Default::default()
    };
    let errs = missing.validate();
    assert_eq!(errs[0].0, "directory");
    assert!(errs[0].1.starts_with("directory must exist:"), "{errs:?}");
    assert!(errs[0].1.contains("create_directory"));
    let created = FileStorageConfig {
        create_directory: true,
        directory_permissions: "0999".into(),
        ..missing.clone()
    };
    assert_eq!(
        created.validate(),
        vec![(
            "directory_permissions".to_string(),
            "directory_permissions value must be a valid octal representation".to_string()
        )]
    );
    let bits = FileStorageConfig {
        directory_permissions: "01777".into(),
        ..created.clone()
    };
    assert_eq!(
        bits.validate()[0].1,
        "directory_permissions contain invalid bits for file access"
    );
    let mut c = FileStorageConfig {
        create_directory: true,
        ..missing
    };
    c.compaction.max_transaction_size = -1;
    c.compaction.on_rebound = true;
    c.compaction.check_interval = Duration::ZERO.into();
    let keys: Vec<String> = c.validate().into_iter().map(|e| e.0).collect();
    assert_eq!(
        keys,
        vec![
            "compaction.max_transaction_size",
            "compaction.check_interval"
        ]
    );
    assert_eq!(escape("traces/a b"), "traces~002Fa~0020b");
}

#[test]
fn create_directory_makes_it_with_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let base = scratch("create");
    let dir = base.join("a/b");
    let c = FileStorageConfig {
        create_directory: true,
        directory_permissions: "0700".into(),
        ..cfg(&dir)
    };
    assert!(c.validate().is_empty());
    let _s = Storage::open("file_storage", &c).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o700, 0, "mode {mode:o}");
}
