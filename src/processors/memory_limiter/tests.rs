use std::time::{Duration, Instant};

use super::config::{Limits, MemoryLimiterConfig};
use super::*;

fn cfg(yaml: &str) -> MemoryLimiterConfig {
    serde_yaml::from_str(yaml).expect("yaml")
}

#[test]
fn the_collectors_validation_in_its_words() {
    for (yaml, key, msg) in [
        ("limit_mib: 100", "check_interval", "'check_interval' must be greater than zero"),
        ("check_interval: 1s", "limit_mib", "'limit_mib' or 'limit_percentage' must be greater than zero"),
        ("check_interval: 1s\nlimit_mib: 100\nspike_limit_mib: 100", "spike_limit_mib", "'spike_limit_mib' must be smaller than 'limit_mib'"),
        ("check_interval: 1s\nlimit_percentage: 101", "limit_percentage", "'limit_percentage' and 'spike_limit_percentage' must be greater than zero and less than or equal to hundred"),
        ("check_interval: 1s\nlimit_percentage: 50\nspike_limit_percentage: 60", "spike_limit_percentage", "'spike_limit_percentage' must be smaller than 'limit_percentage'"),
        ("check_interval: 1s\nlimit_mib: 100\nmin_gc_interval_when_soft_limited: 1s\nmin_gc_interval_when_hard_limited: 2s", "min_gc_interval_when_soft_limited", "'min_gc_interval_when_soft_limited' should be larger than 'min_gc_interval_when_hard_limited'"),
    ] {
        assert_eq!(
            cfg(yaml).validate(),
            vec![(key.to_string(), msg.to_string())],
            "{yaml}"
        );
    }
    assert!(
        cfg("check_interval: 1s\nlimit_mib: 4000\nspike_limit_mib: 800")
            .validate()
            .is_empty()
    );
    assert!(serde_yaml::from_str::<MemoryLimiterConfig>("check_interval: 1s\nlimit: 3").is_err());
}

#[test]
fn soft_limit_is_hard_minus_spike_and_spike_defaults_to_a_fifth() {
    let mib = 1u64 << 20;
    assert_eq!(
        cfg("check_interval: 1s\nlimit_mib: 1000\nspike_limit_mib: 200").limits(0),
        Limits {
            hard: 1000 * mib,
            soft: 800 * mib
        }
    );
    assert_eq!(
        cfg("check_interval: 1s\nlimit_mib: 1000").limits(0),
        Limits {
            hard: 1000 * mib,
            soft: 800 * mib
        }
    );
    // Percentages of what is available; limit_mib wins over them.
    assert_eq!(
        cfg("check_interval: 1s\nlimit_percentage: 80\nspike_limit_percentage: 20")
            .limits(1000 * mib),
        Limits {
            hard: 800 * mib,
            soft: 600 * mib
        }
    );
    assert!(total_memory() > 0);
}

#[test]
fn refuses_while_over_the_soft_limit_and_not_otherwise() {
    let reg = Registry::new();
    // This test process uses more than 1 MiB: the gate must start refusing.
    let low = MemoryGate::new(
        "memory_limiter",
        &cfg("check_interval: 10ms\nlimit_mib: 1"),
        &reg,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !low.refusing() {
        assert!(Instant::now() < deadline, "never refused");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ctx = Context::default();
    assert_eq!(
        low.check(&ctx, Signal::Logs, 7, 100),
        Err(Refused::MemoryLimited(REFUSED.into()))
    );
    assert_eq!(
        reg.value(
            "otelcol_processor_refused_log_records_total",
            &[("processor", "memory_limiter")]
        ),
        Some(7.0)
    );
    let high = MemoryGate::new(
        "roomy",
        &cfg("check_interval: 10ms\nlimit_mib: 1000000"),
        &reg,
    );
    assert!(high.state.rss.load(Ordering::Relaxed) == 0 || !high.refusing());
    assert_eq!(high.check(&ctx, Signal::Logs, 7, 100), Ok(()));
    // What reaches the stage was accepted: it passes.
    let mut stage = MemoryLimiter::new("memory_limiter", &reg);
    let mut out = Vec::new();
    stage.process(
        Batch::encoded(
            Signal::Logs,
            bytes::Bytes::new(),
            3,
            Arc::new(Context::default()),
        ),
        &mut out,
    );
    assert_eq!(out.len(), 1);
}
