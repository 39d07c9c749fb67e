//! The `file_storage` extension: a directory where exporters that name it in
//! `sending_queue.storage` keep what they have not delivered yet, so it survives a crash.
//!
//! weir keeps that data in a write-ahead log per pipeline ([`wal`]): a receiver writes each
//! request to the log of every durable pipeline it feeds *before* it answers the client, so an
//! OK means the data is on disk. A record is released when everything made from it has been
//! delivered or given up on; after a crash (or a stop whose deadline passed), whatever was not
//! released is replayed into its pipeline at the next start.
//!
//! One weir process owns a directory at a time: a second one that points at it waits
//! `timeout` for the lock (`weir.lock`) and then refuses to start.
pub mod wal;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::loader::Body;
use crate::pipeline::registry::{Decode, ExtensionSettings, Factory, Handles, Stability};

pub static FACTORY: Factory = Factory {
    type_name: "file_storage",
    aliases: &[],
    stability: &[(Handles::Extension, Stability::Beta)],
    description: "a directory for persistent sending queues (write-ahead log before the client's OK, replayed after a crash)",
    decode: Decode::Extension(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExtensionSettings>> {
    let c = b.decode_checked::<FileStorageConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ExtensionSettings for FileStorageConfig {
    fn start_warnings(&self) -> Vec<String> {
        if self.compaction != CompactionConfig::default() {
            vec!["compaction has no effect in weir: its write-ahead log deletes each segment once every record in it is delivered".into()]
        } else {
            Vec::new()
        }
    }
    fn is_storage(&self) -> bool {
        true
    }
    fn open_log(
        &self,
        id: &str,
        pipeline: &str,
        queue: &crate::exporters::helper::config::QueueConfig,
        registry: &Arc<crate::telemetry::metrics::Registry>,
    ) -> Option<Result<Arc<wal::Wal>, StorageError>> {
        let opts = wal::Options {
            fsync: self.fsync,
            recreate: self.recreate,
            sizer: queue.sizer,
            capacity: queue.queue_size.max(1),
        };
        Some(Storage::open(id, self).and_then(|s| s.log(pipeline, opts, registry)))
    }
}

use crate::config::units::{ByteSize, DurationValue};

/// The Collector's default directory on Linux.
pub const DEFAULT_DIRECTORY: &str = "/var/lib/otelcol/file_storage";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileStorageConfig {
    /// Where the data lives (default `/var/lib/otelcol/file_storage`). Must exist unless
    /// `create_directory` is set.
    pub directory: String,
    /// How long to wait for the directory's lock when another process holds it (default 1s;
    /// 0 waits for ever).
    pub timeout: DurationValue,
    /// `fdatasync` after every write, before the client is answered (default false: the data
    /// is in the kernel's page cache, which survives a crash of weir but not of the machine).
    pub fsync: bool,
    /// Create `directory` (and its parents) when missing (default false).
    pub create_directory: bool,
    /// The permissions `create_directory` uses, in octal (default `0750`).
    pub directory_permissions: String,
    /// A damaged log segment is kept as `<segment>.<unix time>.backup` once its valid records
    /// are replayed, instead of being deleted (upstream: a corrupt database is renamed aside).
    pub recreate: bool,
    /// bbolt's compaction, upstream: weir's log reclaims space by deleting each segment once
    /// every record in it is released, so these settings are validated as upstream does and
    /// otherwise have no effect (weir warns).
    pub compaction: CompactionConfig,
    /// weir's own: what the logs in this directory may hold on disk together (default 1GiB).
    /// A request that does not fit is refused with a retryable error.
    pub max_size: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    pub on_start: bool,
    pub on_rebound: bool,
    pub directory: String,
    pub max_transaction_size: i64,
    pub rebound_needed_threshold_mib: i64,
    pub rebound_trigger_threshold_mib: i64,
    pub check_interval: DurationValue,
    pub cleanup_on_start: bool,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            on_start: false,
            on_rebound: false,
            directory: DEFAULT_DIRECTORY.into(),
            max_transaction_size: 65536,
            rebound_needed_threshold_mib: 100,
            rebound_trigger_threshold_mib: 10,
            check_interval: Duration::from_secs(5).into(),
            cleanup_on_start: false,
        }
    }
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        FileStorageConfig {
            directory: DEFAULT_DIRECTORY.into(),
            timeout: Duration::from_secs(1).into(),
            fsync: false,
            create_directory: false,
            directory_permissions: "0750".into(),
            recreate: false,
            compaction: CompactionConfig::default(),
            max_size: ByteSize(1 << 30),
        }
    }
}

/// Upstream's check that a configured directory is usable.
fn check_dir(key: &str, dir: &str, errs: &mut Vec<(String, String)>) {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => errs.push((key.into(), format!("{dir} is not a directory"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => errs.push((
            key.into(),
            format!(
                "directory must exist: {e}. You can enable the create_directory option to automatically create it"
            ),
        )),
        Err(e) => errs.push((
            key.into(),
            format!("problem accessing configured directory: {dir}, err: {e}"),
        )),
    }
}

impl FileStorageConfig {
    /// Upstream's rules, in its order.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.directory.is_empty() {
            errs.push(("directory".into(), "must not be empty".into()));
        } else if !self.create_directory {
            check_dir("directory", &self.directory, &mut errs);
            if self.compaction.on_start || self.compaction.on_rebound {
                check_dir(
                    "compaction.directory",
                    &self.compaction.directory,
                    &mut errs,
                );
            }
        }
        if self.compaction.max_transaction_size < 0 {
            errs.push((
                "compaction.max_transaction_size".into(),
                "max transaction size for compaction cannot be less than 0".into(),
            ));
        }
        if self.compaction.on_rebound && self.compaction.check_interval.0.is_zero() {
            errs.push((
                "compaction.check_interval".into(),
                "compaction check interval must be positive when rebound compaction is set".into(),
            ));
        }
        if self.create_directory {
            if let Err(e) = self.permissions() {
                errs.push(("directory_permissions".into(), e));
            }
        }
        if self.max_size.0 == 0 {
            errs.push(("max_size".into(), "must be greater than 0".into()));
        }
        errs
    }

    /// `directory_permissions` as mode bits.
    pub fn permissions(&self) -> Result<u32, String> {
        let mode = u32::from_str_radix(self.directory_permissions.trim_start_matches("0o"), 8)
            .map_err(|_| "directory_permissions value must be a valid octal representation")?;
        if mode & !0o777 != 0 {
            return Err("directory_permissions contain invalid bits for file access".into());
        }
        Ok(mode)
    }
}

/// Why a storage directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("file_storage {id}: cannot create directory {dir}: {source}")]
    Create {
        id: String,
        dir: String,
        source: std::io::Error,
    },
    #[error("file_storage {id}: cannot open {path}: {source}")]
    Io {
        id: String,
        path: String,
        source: std::io::Error,
    },
    #[error("file_storage {id}: directory {dir} is in use by another weir process (its lock {lock} was not released within timeout {timeout:?}); point each weir at its own directory")]
    Locked {
        id: String,
        dir: String,
        lock: String,
        timeout: Duration,
    },
}

/// An open storage directory, locked for this process.
pub struct Storage {
    pub id: String,
    pub dir: PathBuf,
    pub max_size: u64,
    /// Bytes the logs in this directory hold on disk.
    pub used: std::sync::atomic::AtomicU64,
    /// Held for the lock.
    _lock: File,
    logs: Mutex<HashMap<String, Weak<wal::Wal>>>,
}

/// Open storages by directory: a reload reuses the directory (and its lock) it already holds.
static OPEN: Mutex<Vec<(PathBuf, Weak<Storage>)>> = Mutex::new(Vec::new());

impl Storage {
    /// Opens (or finds already open) the directory of `cfg`, taking its lock.
    pub fn open(id: &str, cfg: &FileStorageConfig) -> Result<Arc<Storage>, StorageError> {
        let dir = PathBuf::from(&cfg.directory);
        if cfg.create_directory && !dir.is_dir() {
            create_dir(&dir, cfg.permissions().unwrap_or(0o750)).map_err(|source| {
                StorageError::Create {
                    id: id.into(),
                    dir: cfg.directory.clone(),
                    source,
                }
            })?;
        }
        let key = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(s) = open
            .iter()
            .find(|(p, _)| *p == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(s);
        }
        let lock_path = dir.join("weir.lock");
        let io = |source| StorageError::Io {
            id: id.into(),
            path: lock_path.display().to_string(),
            source,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        let timeout = cfg.timeout.0;
        let started = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !timeout.is_zero() && started.elapsed() >= timeout {
                        return Err(StorageError::Locked {
                            id: id.into(),
                            dir: cfg.directory.clone(),
                            lock: lock_path.display().to_string(),
                            timeout,
                        });
                    }
                    // Upstream (bbolt) polls a held lock every 50 ms too.
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let s = Arc::new(Storage {
            id: id.into(),
            dir: key.clone(),
            max_size: cfg.max_size.0,
            used: std::sync::atomic::AtomicU64::new(0),
            _lock: lock,
            logs: Mutex::new(HashMap::new()),
        });
        open.push((key, Arc::downgrade(&s)));
        Ok(s)
    }

    /// The log of pipeline `pipeline` in this directory, opened (and its unreleased records
    /// read for replay) the first time; the same log on later calls while it is open.
    pub fn log(
        self: &Arc<Storage>,
        pipeline: &str,
        opts: wal::Options,
        registry: &crate::telemetry::metrics::Registry,
    ) -> Result<Arc<wal::Wal>, StorageError> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = logs.get(pipeline).and_then(Weak::upgrade) {
            w.set_options(&opts);
            return Ok(w);
        }
        let dir = self.dir.join(format!("weir_pipeline_{}", escape(pipeline)));
        let w =
            wal::Wal::open(Arc::clone(self), pipeline, &dir, opts, registry).map_err(|source| {
                StorageError::Io {
                    id: self.id.clone(),
                    path: dir.display().to_string(),
                    source,
                }
            })?;
        logs.insert(pipeline.to_string(), Arc::downgrade(&w));
        Ok(w)
    }
}

fn create_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
}

static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// weir is stopping: data that cannot be delivered any more stays in its log for the next
/// start (before this, during a reload, it is given up on like any other).
pub fn set_stopping() {
    STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn is_stopping() -> bool {
    STOPPING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Every log open in this process: closed (their writers flushed and stopped) when weir
/// stops.
pub fn open_logs() -> Vec<Arc<wal::Wal>> {
    let open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    open.iter()
        .filter_map(|(_, w)| w.upgrade())
        .flat_map(|s| {
            let logs = s.logs.lock().unwrap_or_else(|e| e.into_inner());
            logs.values().filter_map(Weak::upgrade).collect::<Vec<_>>()
        })
        .collect()
}

/// A component id as a file name: characters other than letters, digits, `.`, `_` and `-`
/// become `~XXXX` (their code point in hex), as upstream names its files.
pub fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else {
            out.push_str(&format!("~{:04X}", c as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests;
