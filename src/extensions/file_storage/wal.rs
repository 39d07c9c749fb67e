//! A pipeline's write-ahead log: segment files of checksummed records, written by one thread
//! that batches the appends of concurrent requests into one write (and one `fdatasync` with
//! `fsync: true`) before any of them is answered.
//!
//! Layout: `<storage>/weir_pipeline_<id>/<20-digit segment number>.seg`, each starting with
//! [`SEGMENT_MAGIC`], then records `[len u32][crc32 u32][body]` (little-endian), the body being
//! `[kind u8][seq u64]` and, for data, `[signal u8][items u32][context len u32][context][OTLP
//! request]`; for releases, `[count u32][seq u64]…`. A record is released when the last batch
//! made from it is gone (see [`crate::pdata::ack`]); a segment whose records are all released
//! is deleted (the active one once it is full).
//!
//! At open, every segment is read: a record whose checksum fails, or that is cut short, ends
//! the valid part; the reader then looks for the next record that checks out, so one damaged
//! record costs only itself. What could not be read is counted
//! (`weir_wal_corrupted_bytes_total`) and logged. Data records not released are replayed.
//! This module must never panic on what it reads back: the disk is input too.
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use super::Storage;
use crate::exporters::helper::config::Sizer;
use crate::pdata::ack::{Ack, AckSink};
use crate::pdata::{Batch, Context, Signal};
use crate::telemetry::metrics::{Counter, Registry};

pub const SEGMENT_MAGIC: &[u8; 8] = b"WEIRWAL1";
/// A segment is closed and a new one started once it holds this much.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// The largest record the reader believes (the receivers' own limits are far lower).
const MAX_RECORD: u32 = 1 << 30;
const KIND_DATA: u8 = 1;
const KIND_RELEASE: u8 = 2;
/// Appends and releases the writer takes in one go.
const GROUP: usize = 1024;

/// How full a log may get, in the unit of the exporters' `sending_queue.sizer`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub fsync: bool,
    pub recreate: bool,
    pub sizer: Sizer,
    pub capacity: usize,
}

/// Why an append failed; the client is told to retry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WalError {
    #[error("the persistent queue of pipeline {0} is full; retry later")]
    Full(String),
    #[error("the persistent queue of pipeline {pipeline} cannot write: {message}; retry later")]
    Io { pipeline: String, message: String },
    #[error("the persistent queue of pipeline {0} is closed")]
    Closed(String),
}

enum Cmd {
    Append {
        head: Vec<u8>,
        payload: Bytes,
        items: usize,
        reply: oneshot::Sender<std::io::Result<u64>>,
    },
    Release(u64),
    Stop(std::sync::mpsc::Sender<()>),
}

/// What the counters and the release path share.
struct Inner {
    pipeline: String,
    tx: Sender<Cmd>,
    storage: Arc<Storage>,
    fsync: AtomicBool,
    sizer: Mutex<(Sizer, usize)>,
    requests: AtomicUsize,
    items: AtomicUsize,
    bytes: AtomicUsize,
    closed: AtomicBool,
}

impl Inner {
    fn units(&self, items: usize, bytes: usize) -> (usize, usize, usize) {
        let (sizer, cap) = *self.sizer.lock().unwrap_or_else(|e| e.into_inner());
        let now = match sizer {
            Sizer::Requests => self.requests.load(Ordering::Relaxed),
            Sizer::Items => self.items.load(Ordering::Relaxed),
            Sizer::Bytes => self.bytes.load(Ordering::Relaxed),
        };
        let add = match sizer {
            Sizer::Requests => 1,
            Sizer::Items => items,
            Sizer::Bytes => bytes,
        };
        (now, add, cap)
    }

    fn release_counts(&self, items: usize, bytes: usize) {
        self.requests.fetch_sub(1, Ordering::Relaxed);
        self.items.fetch_sub(items, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl AckSink for Inner {
    fn done(&self, seq: u64, items: usize, bytes: usize) {
        self.release_counts(items, bytes);
        let _ = self.tx.send(Cmd::Release(seq));
    }
}

/// One record waiting to be replayed.
#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    path: PathBuf,
    offset: u64,
    items: usize,
    bytes: usize,
}

pub struct Wal {
    inner: Arc<Inner>,
    replay: Mutex<Vec<Pending>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    replayed: Counter,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wal({})", self.inner.pipeline)
    }
}

/// A closed segment's bookkeeping in the writer.
struct Seg {
    path: PathBuf,
    len: u64,
    /// The seqs of its data records (a range for segments this run wrote; a set for those a
    /// previous run left, whose seqs may interleave with nothing but need not be dense).
    seqs: Seqs,
    /// Data records not released yet.
    outstanding: usize,
    damaged: bool,
}

enum Seqs {
    Range(u64, u64),
    Set(HashSet<u64>),
}

impl Seqs {
    fn contains(&self, seq: u64) -> bool {
        match self {
            Seqs::Range(a, b) => (*a..*b).contains(&seq),
            Seqs::Set(s) => s.contains(&seq),
        }
    }
}

impl FromIterator<u64> for Seqs {
    fn from_iter<I: IntoIterator<Item = u64>>(i: I) -> Self {
        Seqs::Set(i.into_iter().collect())
    }
}

/// What reading one segment found.
#[derive(Debug, Default)]
pub struct Scan {
    /// (seq, offset of the record, items, payload bytes) of each data record.
    pub data: Vec<(u64, u64, usize, usize)>,
    pub released: Vec<u64>,
    /// Bytes that did not read as records.
    pub bad_bytes: u64,
    pub len: u64,
}

/// Reads a segment's records, skipping what does not check out.
pub fn scan(path: &Path) -> std::io::Result<Scan> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    Ok(scan_bytes(&buf))
}

/// [`scan`] of a segment already in memory (the fuzz target reads segments this way).
pub fn scan_bytes(buf: &[u8]) -> Scan {
    let mut s = Scan {
        len: buf.len() as u64,
        ..Scan::default()
    };
    if buf.len() < SEGMENT_MAGIC.len() || &buf[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        s.bad_bytes = buf.len() as u64;
        return s;
    }
    let mut pos = SEGMENT_MAGIC.len();
    while pos < buf.len() {
        match record_at(buf, pos) {
            Some((body, next)) => {
                let seq = u64_at(body, 1);
                match body[0] {
                    KIND_DATA => {
                        let items = u32_at(body, 10) as usize;
                        let ctx_len = u32_at(body, 14) as usize;
                        let payload = body.len().saturating_sub(18 + ctx_len);
                        s.data.push((seq, pos as u64, items, payload));
                    }
                    _ => {
                        let n = u32_at(body, 9) as usize;
                        for i in 0..n {
                            s.released.push(u64_at(body, 13 + 8 * i));
                        }
                    }
                }
                pos = next;
            }
            None => {
                // Damaged or cut short: count a byte and look for the next record that
                // checks out.
                s.bad_bytes += 1;
                pos += 1;
            }
        }
    }
    s
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The body of a well-formed record at `pos` and where the next one starts.
fn record_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let head = buf.get(pos..pos + 8)?;
    let len = u32_at(head, 0);
    if !(9..=MAX_RECORD).contains(&len) {
        return None;
    }
    let end = pos.checked_add(8 + len as usize)?;
    let body = buf.get(pos + 8..end)?;
    if crc32fast::hash(body) != u32_at(head, 4) {
        return None;
    }
    let well_formed = match body[0] {
        KIND_DATA => {
            body.len() >= 18 && {
                let ctx_len = u32_at(body, 14) as usize;
                body.len() >= 18 + ctx_len && Signal::ALL.get(body[9] as usize).is_some()
            }
        }
        KIND_RELEASE => {
            body.len() >= 13 && {
                let n = u32_at(body, 9) as usize;
                n.checked_mul(8).and_then(|b| b.checked_add(13)) == Some(body.len())
            }
        }
        _ => false,
    };
    well_formed.then_some((body, end))
}

fn signal_code(s: Signal) -> u8 {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// What of a batch's context is kept with it: where it came from and who sent it, so the
/// stages after a replay (tenant, routing) see what they would have seen.
fn encode_context(c: &Context, out: &mut Vec<u8>) {
    put_str(out, &c.receiver);
    put_str(out, c.transport);
    match &c.metadata {
        Some(m) => {
            out.extend_from_slice(&(m.len() as u32).to_le_bytes());
            for (k, v) in m.iter() {
                put_str(out, k);
                put_str(out, v);
            }
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    match &c.tenant {
        Some(t) => {
            out.push(1);
            put_str(out, t);
        }
        None => out.push(0),
    }
    match &c.auth {
        Some(a) => {
            out.push(1);
            put_str(out, a.method);
            put_str(out, &a.subject);
        }
        None => out.push(0),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32_at(b, 0))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

fn known(s: &str, names: &[&'static str]) -> &'static str {
    names.iter().find(|n| **n == s).copied().unwrap_or("replay")
}

fn decode_context(b: &[u8]) -> Option<Context> {
    let mut r = Reader(b);
    let receiver: Arc<str> = Arc::from(r.str()?);
    let transport = known(r.str()?, &["grpc", "http"]);
    let n = r.u32()?;
    let metadata = if n == u32::MAX {
        None
    } else {
        let mut m = Vec::new();
        for _ in 0..n {
            m.push((r.str()?.to_string(), r.str()?.to_string()));
        }
        Some(Arc::new(m))
    };
    let tenant = match r.u8()? {
        0 => None,
        _ => Some(Arc::from(r.str()?)),
    };
    let auth = match r.u8()? {
        0 => None,
        _ => Some(Arc::new(crate::extensions::auth::Identity {
            method: known(r.str()?, &["bearertokenauth", "basicauth", "mtls"]),
            subject: Arc::from(r.str()?),
        })),
    };
    Some(Context {
        receiver,
        transport,
        metadata,
        tenant,
        auth,
        charge: None,
        ack: None,
    })
}

/// A replayed record, read back.
pub struct Replayed {
    pub signal: Signal,
    pub items: usize,
    pub context: Context,
    pub payload: Bytes,
}

/// Reads the data record at `offset` of `path` again (checksum included).
fn read_record(path: &Path, offset: u64) -> std::io::Result<Replayed> {
    let bad = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: record at {offset}: {what}", path.display()),
        )
    };
    let f = File::open(path)?;
    let mut head = [0u8; 8];
    f.read_exact_at(&mut head, offset)?;
    let len = u32_at(&head, 0);
    if !(18..=MAX_RECORD).contains(&len) {
        return Err(bad("bad length"));
    }
    let mut body = vec![0u8; len as usize];
    f.read_exact_at(&mut body, offset + 8)?;
    parse_record(&head, body).map_err(bad)
}

/// The data record at `offset` of a segment in memory, read as [`read_record`] reads it from
/// the file (the fuzz target's entry).
pub fn record_in(segment: &[u8], offset: u64) -> Result<Replayed, &'static str> {
    let at = usize::try_from(offset).map_err(|_| "bad offset")?;
    let head: [u8; 8] = segment
        .get(at..at.saturating_add(8))
        .and_then(|h| h.try_into().ok())
        .ok_or("cut short")?;
    let len = u32_at(&head, 0);
    if !(18..=MAX_RECORD).contains(&len) {
        return Err("bad length");
    }
    let body = segment
        .get(at + 8..(at + 8).saturating_add(len as usize))
        .ok_or("cut short")?;
    parse_record(&head, body.to_vec())
}

/// A data record's body, checked against its head's checksum.
fn parse_record(head: &[u8; 8], body: Vec<u8>) -> Result<Replayed, &'static str> {
    if crc32fast::hash(&body) != u32_at(head, 4) || body[0] != KIND_DATA {
        return Err("checksum mismatch");
    }
    let signal = *Signal::ALL.get(body[9] as usize).ok_or("unknown signal")?;
    let items = u32_at(&body, 10) as usize;
    let ctx_len = u32_at(&body, 14) as usize;
    let ctx_end = 18usize
        .checked_add(ctx_len)
        .filter(|e| *e <= body.len())
        .ok_or("context longer than the record")?;
    let context = decode_context(&body[18..ctx_end]).ok_or("unreadable context")?;
    let payload = Bytes::from(body).slice(ctx_end..);
    Ok(Replayed {
        signal,
        items,
        context,
        payload,
    })
}

/// The head of a batch's data record (kind, seq 0, signal, items, context).
fn data_head(batch: &Batch) -> Vec<u8> {
    let mut head = Vec::with_capacity(64);
    head.push(KIND_DATA);
    head.extend_from_slice(&[0u8; 8]); // seq, set by the writer
    head.push(signal_code(batch.signal));
    head.extend_from_slice(&(batch.items as u32).to_le_bytes());
    head.extend_from_slice(&[0u8; 4]);
    encode_context(&batch.context, &mut head);
    let ctx_len = (head.len() - 18) as u32;
    head[14..18].copy_from_slice(&ctx_len.to_le_bytes());
    head
}

/// Frames a record: length, CRC-32 of head and payload, head, payload.
fn frame(head: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    let len = (head.len() + payload.len()) as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(payload);
}

/// A batch's data record as the writer frames it, with `seq` (the fuzz target builds valid
/// segments with it).
pub fn encode_record(seq: u64, batch: &Batch) -> Vec<u8> {
    let mut head = data_head(batch);
    head[1..9].copy_from_slice(&seq.to_le_bytes());
    let mut out = Vec::new();
    frame(&head, &batch.to_bytes(), &mut out);
    out
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn new_segment(dir: &Path, id: u64) -> std::io::Result<File> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(segment_path(dir, id))?;
    f.write_all(SEGMENT_MAGIC)?;
    Ok(f)
}

impl Wal {
    /// Opens the log in `dir` (created if missing): reads what a previous run left, deletes
    /// segments whose records were all released, and keeps the rest for [`Wal::replay`].
    pub fn open(
        storage: Arc<Storage>,
        pipeline: &str,
        dir: &Path,
        opts: Options,
        registry: &Registry,
    ) -> std::io::Result<Arc<Wal>> {
        std::fs::create_dir_all(dir)?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        ids.sort_unstable();
        let labels = [("pipeline", pipeline)];
        let corrupted = registry.counter(
            "weir_wal_corrupted_bytes_total",
            "Bytes of the write-ahead log that did not read back as valid records at start.",
            &labels,
        );
        let mut scans = Vec::new();
        let mut released = HashSet::new();
        let mut next_seq = 1u64;
        for id in &ids {
            let path = segment_path(dir, *id);
            let s = scan(&path)?;
            if s.bad_bytes > 0 {
                corrupted.add(s.bad_bytes);
                tracing::error!(
                    pipeline,
                    "write-ahead log segment {} has {} bytes that are damaged or cut short; the records around them are recovered, those bytes are lost",
                    path.display(),
                    s.bad_bytes
                );
            }
            released.extend(s.released.iter().copied());
            if let Some(m) = s.data.iter().map(|d| d.0).max() {
                next_seq = next_seq.max(m + 1);
            }
            if let Some(m) = s.released.iter().max() {
                next_seq = next_seq.max(m + 1);
            }
            scans.push((*id, path, s));
        }
        // Segments are deleted oldest first only: a newer segment may hold the release
        // records of an older one's data, which must outlive that data.
        let mut segs = BTreeMap::new();
        let mut pending = Vec::new();
        let mut on_disk = 0u64;
        let mut prefix = true;
        for (id, path, s) in scans {
            let open: Vec<_> = s.data.iter().filter(|d| !released.contains(&d.0)).collect();
            if open.is_empty() && prefix {
                retire(&path, s.bad_bytes > 0 && opts.recreate);
                continue;
            }
            prefix = false;
            on_disk += s.len;
            for d in &open {
                pending.push(Pending {
                    seq: d.0,
                    path: path.clone(),
                    offset: d.1,
                    items: d.2,
                    bytes: d.3,
                });
            }
            segs.insert(
                id,
                Seg {
                    path,
                    len: s.len,
                    seqs: s.data.iter().map(|d| d.0).collect(),
                    outstanding: open.len(),
                    damaged: s.bad_bytes > 0,
                },
            );
        }
        pending.sort_by_key(|p| p.seq);
        let active_id = ids.last().map_or(1, |l| l + 1);
        let active = new_segment(dir, active_id)?;
        on_disk += SEGMENT_MAGIC.len() as u64;
        storage.used.fetch_add(on_disk, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            pipeline: pipeline.to_string(),
            tx,
            storage: Arc::clone(&storage),
            fsync: AtomicBool::new(opts.fsync),
            sizer: Mutex::new((opts.sizer, opts.capacity)),
            requests: AtomicUsize::new(pending.len()),
            items: AtomicUsize::new(pending.iter().map(|p| p.items).sum()),
            bytes: AtomicUsize::new(pending.iter().map(|p| p.bytes).sum()),
            closed: AtomicBool::new(false),
        });
        {
            let i = Arc::clone(&inner);
            registry.gauge_fn(
                "weir_wal_records",
                "Requests the write-ahead log holds that are not delivered yet.",
                &labels,
                move || i.requests.load(Ordering::Relaxed) as f64,
            );
            let s = Arc::clone(&storage);
            registry.gauge_fn(
                "weir_wal_disk_bytes",
                "Bytes the storage directory's write-ahead logs take on disk.",
                &[("extension", &storage.id)],
                move || s.used.load(Ordering::Relaxed) as f64,
            );
        }
        let writer = Writer {
            dir: dir.to_path_buf(),
            inner: Arc::clone(&inner),
            active,
            active_id,
            active_first: next_seq,
            active_len: SEGMENT_MAGIC.len() as u64,
            active_outstanding: 0,
            segs,
            next_seq,
            recreate: opts.recreate,
            failed: registry.counter(
                "weir_wal_write_failures_total",
                "Writes to the write-ahead log that failed (the requests were refused, retryable).",
                &labels,
            ),
        };
        let handle = std::thread::Builder::new()
            .name(format!("wal-{pipeline}"))
            .spawn(move || writer.run(rx))?;
        if !pending.is_empty() {
            tracing::warn!(
                pipeline,
                "write-ahead log holds {} requests ({} items) a previous run did not deliver; replaying them",
                pending.len(),
                pending.iter().map(|p| p.items).sum::<usize>()
            );
        }
        Ok(Arc::new(Wal {
            inner,
            replay: Mutex::new(pending),
            writer: Mutex::new(Some(handle)),
            replayed: registry.counter(
                "weir_wal_replayed_items_total",
                "Items read back from the write-ahead log at start and sent through their pipeline again.",
                &labels,
            ),
        }))
    }

    pub fn pipeline(&self) -> &str {
        &self.inner.pipeline
    }

    pub fn set_options(&self, o: &Options) {
        self.inner.fsync.store(o.fsync, Ordering::Relaxed);
        *self.inner.sizer.lock().unwrap_or_else(|e| e.into_inner()) = (o.sizer, o.capacity);
    }

    /// Writes `batch` to the log; returns once it is written (and synced with `fsync`), with
    /// the ack that releases it.
    pub async fn append(&self, batch: &Batch) -> Result<Arc<Ack>, WalError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(WalError::Closed(inner.pipeline.clone()));
        }
        let payload = batch.to_bytes();
        let head = data_head(batch);
        let record = (8 + head.len() + payload.len()) as u64;
        if record > u64::from(MAX_RECORD) {
            return Err(WalError::Io {
                pipeline: inner.pipeline.clone(),
                message: "request too large for the log".into(),
            });
        }
        // Room: the exporters' queue size (in their sizer) and the directory's max_size.
        let (now, add, cap) = inner.units(batch.items, payload.len());
        let used = inner.storage.used.load(Ordering::Relaxed);
        if (now > 0 && now + add > cap) || used + record > inner.storage.max_size {
            return Err(WalError::Full(inner.pipeline.clone()));
        }
        inner.requests.fetch_add(1, Ordering::Relaxed);
        inner.items.fetch_add(batch.items, Ordering::Relaxed);
        inner.bytes.fetch_add(payload.len(), Ordering::Relaxed);
        let (reply, wait) = oneshot::channel();
        let cmd = Cmd::Append {
            head,
            payload: payload.clone(),
            items: batch.items,
            reply,
        };
        if inner.tx.send(cmd).is_err() {
            inner.release_counts(batch.items, payload.len());
            return Err(WalError::Closed(inner.pipeline.clone()));
        }
        match wait.await {
            Ok(Ok(seq)) => Ok(Ack::leaf(
                seq,
                batch.items,
                payload.len(),
                Arc::clone(inner) as Arc<dyn AckSink>,
            )),
            Ok(Err(e)) => {
                inner.release_counts(batch.items, payload.len());
                Err(WalError::Io {
                    pipeline: inner.pipeline.clone(),
                    message: e.to_string(),
                })
            }
            Err(_) => {
                inner.release_counts(batch.items, payload.len());
                Err(WalError::Closed(inner.pipeline.clone()))
            }
        }
    }

    /// The records a previous run left, each read back as a batch with its ack (taken once;
    /// later calls return nothing). A record that no longer reads back is counted and skipped.
    pub fn take_replay(self: &Arc<Self>) -> ReplayIter {
        let pending = std::mem::take(&mut *self.replay.lock().unwrap_or_else(|e| e.into_inner()));
        ReplayIter {
            wal: Arc::clone(self),
            pending: pending.into_iter(),
        }
    }

    /// Stops the writer after it has written what it was given (releases included).
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        if self.inner.tx.send(Cmd::Stop(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
        }
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// The replay of a log, one record at a time (each read from disk when asked for).
pub struct ReplayIter {
    wal: Arc<Wal>,
    pending: std::vec::IntoIter<Pending>,
}

impl ReplayIter {
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.len() == 0
    }

    /// The next record as a batch (blocking file I/O: call it off the runtime's workers).
    pub fn next_batch(&mut self) -> Option<Batch> {
        for p in self.pending.by_ref() {
            let inner = &self.wal.inner;
            let ack = Ack::leaf(
                p.seq,
                p.items,
                p.bytes,
                Arc::clone(inner) as Arc<dyn AckSink>,
            );
            match read_record(&p.path, p.offset) {
                Ok(r) => {
                    self.wal.replayed.add(r.items as u64);
                    let mut context = r.context;
                    context.ack = Some(ack);
                    return Some(Batch::encoded(
                        r.signal,
                        r.payload,
                        r.items,
                        Arc::new(context),
                    ));
                }
                Err(e) => {
                    // Dropping the ack releases the record: it cannot be replayed.
                    tracing::error!(pipeline = %inner.pipeline, "cannot replay a record of the write-ahead log ({} items lost): {e}", p.items);
                }
            }
        }
        None
    }
}

/// Removes a segment whose records are all released, or keeps a damaged one aside.
fn retire(path: &Path, keep_aside: bool) {
    if keep_aside {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut to = path.as_os_str().to_owned();
        to.push(format!(".{stamp}.backup"));
        if std::fs::rename(path, &to).is_ok() {
            return;
        }
    }
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(
            "cannot remove write-ahead log segment {}: {e}",
            path.display()
        );
    }
}

/// An append waiting for its write: where to answer, its seq, items and payload bytes.
type Reply = (oneshot::Sender<std::io::Result<u64>>, u64, usize, usize);

struct Writer {
    dir: PathBuf,
    inner: Arc<Inner>,
    active: File,
    active_id: u64,
    /// The first seq written to the active segment.
    active_first: u64,
    active_len: u64,
    active_outstanding: usize,
    /// Closed segments not deleted yet, by number (oldest first).
    segs: BTreeMap<u64, Seg>,
    next_seq: u64,
    recreate: bool,
    failed: Counter,
}

impl Writer {
    fn run(mut self, rx: Receiver<Cmd>) {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut replies: Vec<Reply> = Vec::new();
        let mut releases: Vec<u64> = Vec::new();
        let mut stop = None;
        while stop.is_none() {
            let Ok(first) = rx.recv() else { break };
            let mut cmds = vec![first];
            while cmds.len() < GROUP {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            for cmd in cmds {
                match cmd {
                    Cmd::Append {
                        mut head,
                        payload,
                        items,
                        reply,
                    } => {
                        if self.active_len + buf.len() as u64 >= SEGMENT_BYTES {
                            self.write(&mut buf, &mut replies);
                            self.rotate();
                        }
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        head[1..9].copy_from_slice(&seq.to_le_bytes());
                        frame(&head, &payload, &mut buf);
                        replies.push((reply, seq, items, payload.len()));
                    }
                    Cmd::Release(seq) => releases.push(seq),
                    Cmd::Stop(done) => stop = Some(done),
                }
            }
            if !releases.is_empty() {
                for chunk in releases.chunks(4096) {
                    let mut body = Vec::with_capacity(13 + 8 * chunk.len());
                    body.push(KIND_RELEASE);
                    body.extend_from_slice(&0u64.to_le_bytes());
                    body.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
                    for s in chunk {
                        body.extend_from_slice(&s.to_le_bytes());
                    }
                    frame(&body, &[], &mut buf);
                }
            }
            self.write(&mut buf, &mut replies);
            // Released after their release records are written, so a deleted segment never
            // leaves a record that a restart would replay.
            for seq in releases.drain(..) {
                self.release(seq);
            }
            self.reclaim();
        }
        if !buf.is_empty() {
            self.write(&mut buf, &mut replies);
        }
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    /// Writes `buf` to the active segment and answers the appends in it.
    fn write(&mut self, buf: &mut Vec<u8>, replies: &mut Vec<Reply>) {
        if buf.is_empty() {
            return;
        }
        let mut result = self.active.write_all(buf);
        if result.is_ok() && !replies.is_empty() && self.inner.fsync.load(Ordering::Relaxed) {
            result = self.active.sync_data();
        }
        match result {
            Ok(()) => {
                self.active_len += buf.len() as u64;
                self.inner
                    .storage
                    .used
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                for (reply, seq, items, bytes) in replies.drain(..) {
                    self.active_outstanding += 1;
                    if reply.send(Ok(seq)).is_err() {
                        // Nobody waits for it (the client went away, so it was not
                        // acknowledged): release it like any other.
                        self.inner.done(seq, items, bytes);
                    }
                }
            }
            Err(e) => {
                // A full disk or an I/O error: cut what was half written, refuse the
                // requests (retryable), and carry on in a fresh segment if the cut fails.
                self.failed.add(replies.len() as u64);
                tracing::error!(pipeline = %self.inner.pipeline, "write-ahead log write failed, {} requests refused: {e}", replies.len());
                let cut = self.active.set_len(self.active_len).and_then(|_| {
                    use std::io::Seek;
                    self.active
                        .seek(std::io::SeekFrom::Start(self.active_len))
                        .map(|_| ())
                });
                for (reply, ..) in replies.drain(..) {
                    let _ = reply.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                }
                if cut.is_err() {
                    self.rotate();
                }
            }
        }
        buf.clear();
    }

    fn release(&mut self, seq: u64) {
        if seq >= self.active_first {
            self.active_outstanding = self.active_outstanding.saturating_sub(1);
            return;
        }
        if let Some(seg) = self.segs.values_mut().find(|s| s.seqs.contains(seq)) {
            seg.outstanding = seg.outstanding.saturating_sub(1);
        }
        self.trim();
    }

    /// Deletes the oldest segments while all their records are released (oldest first: a
    /// newer segment may hold the release records of an older one's data).
    fn trim(&mut self) {
        while let Some(entry) = self.segs.first_entry() {
            if entry.get().outstanding > 0 {
                break;
            }
            let seg = entry.remove();
            self.inner
                .storage
                .used
                .fetch_sub(seg.len, Ordering::Relaxed);
            retire(&seg.path, seg.damaged && self.recreate);
        }
    }

    /// Gives back the space of released records: when nothing older is kept and every record
    /// of the active segment is released, the segment is cut back to its header (so a log that
    /// keeps up stays small, and a full disk recovers once its data is delivered); a full
    /// segment with records still out is closed and a new one started.
    fn reclaim(&mut self) {
        let header = SEGMENT_MAGIC.len() as u64;
        if self.active_outstanding == 0 && self.segs.is_empty() && self.active_len > header {
            use std::io::Seek;
            let cut = self
                .active
                .set_len(header)
                .and_then(|_| self.active.seek(std::io::SeekFrom::Start(header)));
            if cut.is_ok() {
                self.inner
                    .storage
                    .used
                    .fetch_sub(self.active_len - header, Ordering::Relaxed);
                self.active_len = header;
                self.active_first = self.next_seq;
                return;
            }
        }
        if self.active_len >= SEGMENT_BYTES {
            self.rotate();
        }
    }

    /// Closes the active segment and starts the next.
    fn rotate(&mut self) {
        let id = self.active_id + 1;
        let file = match new_segment(&self.dir, id) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(pipeline = %self.inner.pipeline, "cannot start a new write-ahead log segment: {e}");
                return;
            }
        };
        if self.inner.fsync.load(Ordering::Relaxed) {
            let _ = File::open(&self.dir).and_then(|d| d.sync_all());
        }
        self.segs.insert(
            self.active_id,
            Seg {
                path: segment_path(&self.dir, self.active_id),
                len: self.active_len,
                seqs: Seqs::Range(self.active_first, self.next_seq),
                outstanding: self.active_outstanding,
                damaged: false,
            },
        );
        self.trim();
        self.inner
            .storage
            .used
            .fetch_add(SEGMENT_MAGIC.len() as u64, Ordering::Relaxed);
        self.active = file;
        self.active_id = id;
        self.active_first = self.next_seq;
        self.active_len = SEGMENT_MAGIC.len() as u64;
        self.active_outstanding = 0;
    }
}
