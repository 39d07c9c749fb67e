//! `batch` processor settings (the Collector's keys and defaults).
use serde::Deserialize;
use std::time::Duration;

use crate::config::units::DurationValue;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Send a batch this long after its first item arrived, full or not (default 200ms;
    /// 0 sends every batch as soon as it reaches `send_batch_size`... or at once).
    pub timeout: DurationValue,
    /// Items (spans, data points, log records) that trigger a send (default 8192).
    pub send_batch_size: usize,
    /// Upper bound on a sent batch; larger ones are split (default 0 = no bound).
    pub send_batch_max_size: usize,
    /// Client metadata keys whose values partition batches (needs the receiver's
    /// `include_metadata`). Batches never mix values of these keys.
    pub metadata_keys: Vec<String>,
    /// Distinct value combinations of `metadata_keys` kept at once (default 1000).
    pub metadata_cardinality_limit: usize,
    /// Count `send_batch_size`/`send_batch_max_size` in bytes of encoded OTLP instead of
    /// items: the exporters' `sending_queue.batch` with `sizer: bytes` (not a key of the
    /// `batch` processor, which upstream sizes by items).
    #[serde(skip)]
    pub sizer_bytes: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            timeout: Duration::from_millis(200).into(),
            send_batch_size: 8192,
            send_batch_max_size: 0,
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: 1000,
            sizer_bytes: false,
        }
    }
}

impl BatchConfig {
    /// Checks the settings; returns the offending key and the message.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            return Err((
                "send_batch_max_size",
                format!(
                    "must be greater than or equal to send_batch_size ({} < {})",
                    self.send_batch_max_size, self.send_batch_size
                ),
            ));
        }
        Ok(())
    }
}
