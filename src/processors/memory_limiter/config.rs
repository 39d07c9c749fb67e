//! `memory_limiter` settings: the Collector's keys, defaults and validation messages.
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::DurationValue;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    /// How often memory use is measured (required, > 0; the Collector recommends 1s).
    pub check_interval: DurationValue,
    /// Hard limit in MiB of resident memory. Wins over `limit_percentage`.
    pub limit_mib: u32,
    /// Headroom below the hard limit: above `limit - spike` (the soft limit) new data is
    /// refused. Default 20% of the limit.
    pub spike_limit_mib: u32,
    /// Hard limit as a percentage of the memory available (the cgroup's limit, else the
    /// machine's).
    pub limit_percentage: u32,
    pub spike_limit_percentage: u32,
    /// Least time between two returns of freed memory to the OS while over the soft limit
    /// (default 10s; Go's forced GC upstream, mimalloc's collect here).
    pub min_gc_interval_when_soft_limited: DurationValue,
    /// The same over the hard limit (default 0: every check).
    pub min_gc_interval_when_hard_limited: DurationValue,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: Duration::ZERO.into(),
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
            min_gc_interval_when_soft_limited: Duration::from_secs(10).into(),
            min_gc_interval_when_hard_limited: Duration::ZERO.into(),
        }
    }
}

/// The limits in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub hard: u64,
    pub soft: u64,
}

impl MemoryLimiterConfig {
    /// Checks the settings the way the Collector does, in its order and words.
    pub fn validate(&self) -> Vec<(String, String)> {
        let err = |k: &str, m: &str| vec![(k.to_string(), m.to_string())];
        if self.check_interval.0.is_zero() {
            return err(
                "check_interval",
                "'check_interval' must be greater than zero",
            );
        }
        if self.min_gc_interval_when_soft_limited.0 < self.min_gc_interval_when_hard_limited.0 {
            return err(
                "min_gc_interval_when_soft_limited",
                "'min_gc_interval_when_soft_limited' should be larger than 'min_gc_interval_when_hard_limited'",
            );
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            return err(
                "limit_mib",
                "'limit_mib' or 'limit_percentage' must be greater than zero",
            );
        }
        if self.limit_percentage > 100 || self.spike_limit_percentage > 100 {
            return err(
                "limit_percentage",
                "'limit_percentage' and 'spike_limit_percentage' must be greater than zero and less than or equal to hundred",
            );
        }
        if self.limit_mib > 0 && self.limit_mib <= self.spike_limit_mib {
            return err(
                "spike_limit_mib",
                "'spike_limit_mib' must be smaller than 'limit_mib'",
            );
        }
        if self.limit_percentage > 0 && self.limit_percentage <= self.spike_limit_percentage {
            return err(
                "spike_limit_percentage",
                "'spike_limit_percentage' must be smaller than 'limit_percentage'",
            );
        }
        Vec::new()
    }

    /// Hard and soft limits, given the memory available (for the percentages).
    pub fn limits(&self, total: u64) -> Limits {
        let (hard, spike) = if self.limit_mib > 0 {
            (
                u64::from(self.limit_mib) << 20,
                u64::from(self.spike_limit_mib) << 20,
            )
        } else {
            (
                total / 100 * u64::from(self.limit_percentage),
                total / 100 * u64::from(self.spike_limit_percentage),
            )
        };
        let spike = if spike == 0 { hard / 5 } else { spike };
        Limits {
            hard,
            soft: hard.saturating_sub(spike),
        }
    }
}
