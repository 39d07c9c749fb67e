//! Upstream's own cases (pkg/sampling tests, the processor's tracesprocessor_test.go and
//! logsprocessor_test.go): thresholds, encodings, decisions and the tracestate written back.
use super::sampling::*;
use super::*;

fn hex16(s: &str) -> Vec<u8> {
    (0..16)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn thresholds_from_probabilities_as_pkg_sampling() {
    let th = |p: f64, prec: i32| encode_threshold(probability_to_threshold(p, prec).unwrap());
    assert_eq!(th(1.0 / 3.0, 3), "aab");
    assert_eq!(th(2.0 / 3.0, 3), "555");
    assert_eq!(th(1.0 / 3.0, 14), "aaaaaaaaaaaaac");
    assert_eq!(th(MIN_PROBABILITY, 3), "ffffffffffffff");
    assert_eq!(
        th(1.0 - f64::from(0x456789a) / f64::from(1u32 << 28), 4),
        "4568"
    );
    assert_eq!(th(0.10, 4), "e666");
    // Precision is raised for probabilities near 1 (and near 0).
    assert_eq!(th(0.99, 4), "028f6");
    assert_eq!(th(1.0, 4), "0");
    assert!(probability_to_threshold(0.0, 4).is_none());
    assert!(probability_to_threshold(1.5, 4).is_none());
    // Encodings round-trip; malformed ones are refused.
    assert_eq!(parse_threshold("8"), Ok(0x80000000000000));
    assert_eq!(parse_threshold("fffffffffffff8"), Ok(0xfffffffffffff8));
    assert!(parse_threshold("123456789012345").is_err());
    assert!(parse_threshold("xyz").is_err());
    assert_eq!(parse_randomness("FD70A3D70A3D71"), Ok(0xfd70a3d70a3d71));
    assert!(parse_randomness("fd70").is_err());
}

#[test]
fn hash_seed_thresholds_and_hashes_as_upstream() {
    let th = |pct: f32| encode_threshold(hash_seed_threshold(pct).unwrap());
    assert_eq!(th(100.0), "0");
    assert_eq!(th(75.0), "4");
    assert_eq!(th(50.0), "8");
    assert_eq!(th(25.0), "c");
    assert_eq!(th(10.0), "e668");
    assert_eq!(th(100.0 / 3.0), "aaac");
    assert!(hash_seed_threshold(0.0).is_none());
    assert_eq!(fnv_hash(0, &[]) & 0x3fff, 0x3515);
    assert_eq!(fnv_hash(0, &[0; 16]) & 0x3fff, 0x2455);
    // The randomness built from a hash keeps the legacy rule: kept iff bucket < pct × 163.84.
    for hash in [0u32, 0x3fff, 0x2a3105a3, 0x6f568bbd, u32::MAX] {
        for pct in [1.0f32, 10.0, 25.0, 50.0, 99.0] {
            let legacy = (hash & 0x3fff) < (pct * 163.84f32) as u32;
            let t = hash_seed_threshold(pct).unwrap();
            assert_eq!(t <= hash_randomness(hash), legacy, "{hash:#x} at {pct}");
        }
    }
}

fn sampler(mode: &str, pct: f32, precision: i32) -> Sampler {
    Sampler::new(&ProbabilisticSamplerConfig {
        mode: Some(mode.into()),
        sampling_percentage: pct,
        sampling_precision: precision,
        fail_closed: false,
        ..Default::default()
    })
}

fn span(tid: &str, ts: &str) -> Span {
    Span {
        trace_id: hex16(tid),
        trace_state: ts.into(),
        ..Default::default()
    }
}

/// (trace id, arriving tracestate, percentage, precision, equalizing result, proportional
/// result); `None` = dropped.
type Case<'a> = (&'a str, &'a str, f32, i32, Option<&'a str>, Option<&'a str>);

const DEFAULT_TID: &str = "fefefefefefefefefe80000000000000";

#[test]
fn consistent_modes_as_tracesprocessor_test() {
    // (tid, incoming tracestate, pct, precision, equalizing result, proportional result);
    // None = dropped.
    let cases: &[Case] = &[
        (DEFAULT_TID, "", 50.0, 4, Some("ot=th:8"), Some("ot=th:8")),
        (DEFAULT_TID, "", 49.0, 4, None, None),
        (
            "ddddddddddddddddddc0000000000000",
            "",
            25.0,
            4,
            Some("ot=th:c"),
            Some("ot=th:c"),
        ),
        ("ddddddddddddddddddb0000000000000", "", 25.0, 4, None, None),
        (
            DEFAULT_TID,
            "ot=rv:FD70A3D70A3D71",
            1.0,
            0,
            Some("ot=rv:FD70A3D70A3D71;th:fd70a3d70a3d71"),
            Some("ot=rv:FD70A3D70A3D71;th:fd70a3d70a3d71"),
        ),
        (
            DEFAULT_TID,
            "ot=rv:FD70A3D70A3D71",
            1.0,
            4,
            Some("ot=rv:FD70A3D70A3D71;th:fd70a"),
            Some("ot=rv:FD70A3D70A3D71;th:fd70a"),
        ),
        (DEFAULT_TID, "ot=rv:FD70A3D70A3D71", 1.0, 3, None, None),
        (
            DEFAULT_TID,
            "ot=rv:90000000000000;th:80000000000000",
            50.0,
            4,
            Some("ot=rv:90000000000000;th:8"),
            None,
        ),
        (
            DEFAULT_TID,
            "ot=rv:c0000000000000;th:8",
            50.0,
            4,
            Some("ot=rv:c0000000000000;th:8"),
            Some("ot=rv:c0000000000000;th:c"),
        ),
        (
            "a0a0a0a0a0a0a0a0a0d0000000000000",
            "ot=th:8",
            40.0,
            6,
            Some("ot=th:99999a"),
            Some("ot=th:cccccd"),
        ),
        // An arriving threshold the randomness does not pass: cleared, fail_closed decides
        // (false here: kept, with th:0).
        (
            DEFAULT_TID,
            "ot=rv:40000000000000;th:8",
            100.0,
            4,
            Some("ot=rv:40000000000000;th:0"),
            Some("ot=rv:40000000000000;th:0"),
        ),
        (
            "ffffffffffffffffffffffffffffffff",
            "ot=th:8",
            25.0,
            4,
            Some("ot=th:c"),
            Some("ot=th:e"),
        ),
        (
            "ffffffffffffffffffffffffffffffff",
            "ot=th:fffffffffffff8",
            0.0625,
            4,
            Some("ot=th:fffffffffffff8"),
            None,
        ),
    ];
    for (tid, ts, pct, prec, eq, prop) in cases {
        for (mode, want) in [("equalizing", eq), ("proportional", prop)] {
            let mut s = span(tid, ts);
            let d = sampler(mode, *pct, *prec).span(&mut s);
            assert_eq!(
                d.sampled.then_some(s.trace_state.as_str()),
                *want,
                "{mode} {tid} {ts:?} {pct}% prec {prec}"
            );
        }
    }
}

#[test]
fn other_vendors_and_ot_keys_are_kept_in_order() {
    let mut s = span(DEFAULT_TID, "vendor=x, ot=ab:1;th:8, other=y");
    let d = sampler("equalizing", 50.0, 4).span(&mut s);
    assert!(d.sampled);
    assert_eq!(s.trace_state, "ot=th:8;ab:1,vendor=x,other=y");
    // A malformed tracestate is not touched; fail_closed decides.
    for ts in ["ot=th:zz", "a=1,a=2", "BAD=1", "ot=rv:123"] {
        let mut s = span(DEFAULT_TID, ts);
        let mut closed = sampler("proportional", 100.0, 4);
        closed.fail_closed = true;
        assert!(!closed.span(&mut s).sampled, "{ts}");
        let mut s = span(DEFAULT_TID, ts);
        assert!(
            sampler("proportional", 100.0, 4).span(&mut s).sampled,
            "{ts}"
        );
        assert_eq!(s.trace_state, ts);
    }
}

#[test]
fn hash_seed_mode_writes_rv_and_th_and_respects_priority() {
    let cfg = |pct: f32, seed: u32| ProbabilisticSamplerConfig {
        sampling_percentage: pct,
        hash_seed: seed,
        ..Default::default()
    };
    assert_eq!(fnv_hash(4312, &hex16(DEFAULT_TID)), 0x2a3105a3);
    let mut s = span(DEFAULT_TID, "");
    let d = Sampler::new(&cfg(10.0, 4312)).span(&mut s);
    assert_eq!(
        d,
        Decision {
            sampled: true,
            policy: "trace_id_hash"
        }
    );
    assert_eq!(s.trace_state, "ot=rv:e970a8ee3105a3;th:e668");
    let mut s = span(DEFAULT_TID, "");
    assert!(Sampler::new(&cfg(25.0, 22)).span(&mut s).sampled);
    let mut s = span(DEFAULT_TID, "");
    assert!(!Sampler::new(&cfg(10.0, 22)).span(&mut s).sampled);
    // An arriving rv or th is for the consistent modes: fail_closed (default true) drops it.
    let mut s = span(DEFAULT_TID, "ot=th:8");
    assert!(!Sampler::new(&cfg(100.0, 1)).span(&mut s).sampled);
    // sampling.priority: 0 drops, more keeps; others defer.
    let prio = |v: any_value::Value| {
        let mut s = span(DEFAULT_TID, "");
        s.attributes.push(KeyValue {
            key: "sampling.priority".into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        });
        s
    };
    let keep_none = Sampler::new(&cfg(0.0, 1));
    let keep_all = Sampler::new(&cfg(100.0, 1));
    let mut s = prio(any_value::Value::IntValue(1));
    assert_eq!(
        keep_none.span(&mut s),
        Decision {
            sampled: true,
            policy: "sampling_priority"
        }
    );
    let mut s = prio(any_value::Value::StringValue("0".into()));
    assert!(!keep_all.span(&mut s).sampled);
    let mut s = prio(any_value::Value::DoubleValue(-1.0));
    assert!(keep_all.span(&mut s).sampled);
    // No trace id: missing randomness, fail_closed.
    let mut s = Span::default();
    assert_eq!(
        keep_all.span(&mut s),
        Decision {
            sampled: false,
            policy: "missing_randomness"
        }
    );
}

fn attr(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn attr_of<'a>(r: &'a LogRecord, k: &str) -> Option<&'a str> {
    r.attributes.iter().find(|kv| kv.key == k).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[test]
fn logs_as_logsprocessor_test() {
    // Proportional 50 % of an arriving threshold c.
    let mut r = LogRecord {
        trace_id: hex16("fefefefefefefefefef0000000000000"),
        attributes: vec![attr("sampling.threshold", "c")],
        ..Default::default()
    };
    assert!(sampler("proportional", 50.0, 4).log(&mut r).sampled);
    assert_eq!(attr_of(&r, "sampling.threshold"), Some("e"));
    // sampling_priority replaces the threshold: 10.125 % at precision 6.
    let s = Sampler::new(&ProbabilisticSamplerConfig {
        mode: Some("proportional".into()),
        sampling_percentage: 0.0,
        sampling_precision: 6,
        sampling_priority: "prio".into(),
        ..Default::default()
    });
    let mut r = LogRecord {
        attributes: vec![
            attr("sampling.randomness", "e6147c00000000"),
            KeyValue {
                key: "prio".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::DoubleValue(10.125)),
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        s.log(&mut r),
        Decision {
            sampled: true,
            policy: "sampling_priority"
        }
    );
    assert_eq!(attr_of(&r, "sampling.threshold"), Some("e6147b"));
    // hash_seed from a record attribute when there is no trace id; written back.
    let s = Sampler::new(&ProbabilisticSamplerConfig {
        sampling_percentage: 100.0,
        attribute_source: "record".into(),
        from_attribute: "user.id".into(),
        ..Default::default()
    });
    let mut r = LogRecord {
        attributes: vec![attr("user.id", "u-1")],
        ..Default::default()
    };
    let d = s.log(&mut r);
    assert_eq!(
        d,
        Decision {
            sampled: true,
            policy: "from_attribute"
        }
    );
    let rv = fnv_hash(0, b"u-1");
    assert_eq!(
        attr_of(&r, "sampling.randomness"),
        Some(encode_randomness(hash_randomness(rv)).as_str())
    );
    assert_eq!(attr_of(&r, "sampling.threshold"), Some("0"));
    // Neither: missing randomness, dropped (fail_closed).
    let mut r = LogRecord::default();
    assert!(!s.log(&mut r).sampled);
}

#[test]
fn config_errors_are_upstreams() {
    let errs = |yaml: &str| {
        let c: ProbabilisticSamplerConfig = serde_yaml::from_str(yaml).unwrap();
        c.validate().into_iter().map(|(_, m)| m).collect::<Vec<_>>()
    };
    assert_eq!(
        errs("sampling_percentage: -1"),
        ["sampling rate is negative: -1.000000%"]
    );
    assert_eq!(
        errs("sampling_percentage: .inf"),
        ["sampling rate is invalid: +Inf%"]
    );
    assert_eq!(
        errs("sampling_precision: 0\nattribute_source: span"),
        [
            "invalid attribute source: span. Expected: traceID or record",
            "invalid sampling precision: 0"
        ]
    );
    assert_eq!(
        errs("sampling_precision: 15\nmode: dunno"),
        [
            "sampling precision is too great, should be <= 14: 15",
            "unsupported sampler mode \"dunno\""
        ]
    );
    assert!(errs("sampling_percentage: 15.3\nmode: equalizing\nhash_seed: 22").is_empty());
    // Defaults: fail_closed true, precision 4, hash_seed mode.
    let c = ProbabilisticSamplerConfig::default();
    assert!(c.fail_closed);
    assert_eq!(c.sampling_precision, 4);
    assert_eq!(c.mode(), Ok(Mode::HashSeed));
}
