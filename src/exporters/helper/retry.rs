//! Exponential backoff with jitter, as the Collector's exporterhelper computes it.
use std::time::Duration;

use super::config::RetryConfig;

/// The waits between attempts of one request.
pub struct Backoff {
    next: Duration,
    cfg: RetryConfig,
    rng: u64,
}

impl Backoff {
    pub fn new(cfg: &RetryConfig) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Backoff {
            next: cfg.initial_interval.0,
            cfg: cfg.clone(),
            rng: seed | 1,
        }
    }

    fn random_unit(&mut self) -> f64 {
        // xorshift64*: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let v = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next wait, with jitter; grows the base for the attempt after.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next.as_secs_f64();
        let f = self.cfg.randomization_factor;
        let jittered = base * (1.0 - f + 2.0 * f * self.random_unit());
        let max = self.cfg.max_interval.0.as_secs_f64();
        let grown = (base * self.cfg.multiplier).min(max.max(base));
        self.next = Duration::from_secs_f64(grown);
        Duration::from_secs_f64(jittered.min(max.max(0.0)).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps_with_jitter_in_range() {
        let cfg = RetryConfig {
            initial_interval: Duration::from_millis(100).into(),
            max_interval: Duration::from_millis(400).into(),
            ..RetryConfig::default()
        };
        let mut b = Backoff::new(&cfg);
        let waits: Vec<_> = (0..8).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(150));
        for w in &waits {
            assert!(*w <= Duration::from_millis(400), "{w:?}");
        }
        // Late waits sit around the cap.
        assert!(waits[7] >= Duration::from_millis(200));
    }
}
