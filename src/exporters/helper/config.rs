//! Settings every exporter shares, with the Collector's keys and defaults
//! (exporterhelper: `sending_queue`, `retry_on_failure`, `timeout`).
use serde::Deserialize;

use crate::config::units::DurationValue;
use std::time::Duration;

/// `sending_queue`: a bounded in-memory queue of requests and the workers that drain it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Queue requests before sending (default true). When false, a single worker sends each
    /// batch in turn and the pipeline waits for it.
    pub enabled: bool,
    /// Concurrent senders (default 10).
    pub num_consumers: usize,
    /// What the queue holds, in `sizer` units (default 1000).
    pub queue_size: usize,
    /// What a full queue does. `true` (weir's default): the pipeline waits, its inbox fills and
    /// receivers refuse new data with a retryable error, so nothing accepted is lost.
    /// `false`: the batch is dropped for this exporter and counted in
    /// `otelcol_exporter_enqueue_failed_*`, so a dead backend never holds up the others.
    pub block_on_overflow: bool,
    /// What `queue_size` counts: `requests` (batches, the default), `items` (spans, data
    /// points, log records) or `bytes` (of the encoded OTLP request), as upstream.
    pub sizer: Sizer,
    /// Exporter-side batching (the Collector's replacement for the batch processor): requests
    /// are merged before they are queued.
    pub batch: Option<QueueBatchConfig>,
    /// A `file_storage` extension id: the queue is persistent. Every pipeline that reaches this
    /// exporter keeps a write-ahead log there, written before the client is answered, and
    /// replayed after a crash. `queue_size` (in `sizer` units) bounds what the log holds.
    pub storage: Option<String>,
}

/// `sending_queue.batch`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueBatchConfig {
    /// Send a batch this long after its first item, full or not (default 200ms).
    pub flush_timeout: DurationValue,
    /// Items that trigger a send (default 8192).
    pub min_size: usize,
    /// Larger batches are split (default 0 = no limit).
    pub max_size: usize,
    /// What min_size and max_size count: `items`, or `bytes` of encoded OTLP (unset: the
    /// queue's sizer; `requests` cannot size a batch and means items).
    pub sizer: Option<Sizer>,
}

impl Default for QueueBatchConfig {
    fn default() -> Self {
        QueueBatchConfig {
            flush_timeout: Duration::from_millis(200).into(),
            min_size: 8192,
            max_size: 0,
            sizer: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    #[default]
    Requests,
    Items,
    Bytes,
}

impl Sizer {
    /// The size of `batch` in this unit.
    pub fn size(self, batch: &crate::pdata::Batch) -> usize {
        match self {
            Sizer::Requests => 1,
            Sizer::Items => batch.items,
            Sizer::Bytes => batch.encoded_len(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sizer::Requests => "requests",
            Sizer::Items => "items",
            Sizer::Bytes => "bytes",
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            block_on_overflow: true,
            sizer: Sizer::Requests,
            batch: None,
            storage: None,
        }
    }
}

/// `retry_on_failure`: exponential backoff with jitter for retryable failures.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    /// First wait (default 5s).
    pub initial_interval: DurationValue,
    /// Jitter: each wait is drawn from [w·(1−f), w·(1+f)] (default 0.5).
    pub randomization_factor: f64,
    /// Growth per attempt (default 1.5).
    pub multiplier: f64,
    /// Cap on one wait (default 30s).
    pub max_interval: DurationValue,
    /// Give up after this long (default 300s; 0 = never).
    pub max_elapsed_time: DurationValue,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5).into(),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30).into(),
            max_elapsed_time: Duration::from_secs(300).into(),
        }
    }
}

impl RetryConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err((
                "randomization_factor",
                format!("must be between 0 and 1, got {}", self.randomization_factor),
            ));
        }
        if self.multiplier < 1.0 {
            return Err((
                "multiplier",
                format!("must be at least 1, got {}", self.multiplier),
            ));
        }
        if self.enabled && self.initial_interval.0.is_zero() {
            return Err(("initial_interval", "must be greater than 0".into()));
        }
        Ok(())
    }
}

impl QueueConfig {
    /// Whether `batch` counts bytes (its own sizer, else the queue's).
    pub fn batch_in_bytes(&self) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|b| b.sizer.unwrap_or(self.sizer) == Sizer::Bytes)
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.enabled && self.num_consumers == 0 {
            return Err(("num_consumers", "must be at least 1".into()));
        }
        if self.enabled && self.queue_size == 0 {
            return Err(("queue_size", "must be at least 1".into()));
        }
        if let Some(b) = &self.batch {
            // Upstream: the batch inherits the queue's sizer when it names none (requests
            // cannot size a batch: items then).
            if b.max_size > 0 && b.max_size < b.min_size {
                return Err((
                    "batch.min_size",
                    "`min_size` must be less than or equal to `max_size`".into(),
                ));
            }
        }
        Ok(())
    }
}
