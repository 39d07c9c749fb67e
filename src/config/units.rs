//! Config value types with units: durations (`5s`, `200ms`, `1h30m`, Go's syntax, as the
//! Collector reads them) and byte sizes (`64MiB`, `512KB`, or a plain number of bytes).
use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the Go way: a sequence of decimal numbers each with a unit
/// (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), e.g. `300ms`, `1.5h`, `2h45m`. `0` needs no unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct DurationValue(pub Duration);

impl From<Duration> for DurationValue {
    fn from(d: Duration) -> Self {
        DurationValue(d)
    }
}

/// Parses a Go-style duration. Negative durations are rejected: no weir setting means one.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; write e.g. 5s or 200ms".into());
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let mut rest = t.strip_prefix('+').unwrap_or(t);
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number at {rest:?}"
            ));
        }
        let num: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: bad number {:?}", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit; write e.g. {num}s or {num}ms"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ))
            }
        };
        total_ns += num * scale;
    }
    if !total_ns.is_finite() || total_ns > u64::MAX as f64 {
        return Err(format!("invalid duration {s:?}: too large"));
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

/// Formats like Go's `time.Duration.String()`: `1h30m0s`, `1.5s`, `200ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}us", trim_frac(ns as f64 / 1e3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", trim_frac(ns as f64 / 1e6));
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = (secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_frac(s)));
    out
}

fn trim_frac(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

impl fmt::Display for DurationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl Serialize for DurationValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 5s, 200ms or 1h30m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DurationValue, E> {
                parse_duration(s).map(DurationValue).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<DurationValue, E> {
                if n == 0 {
                    Ok(DurationValue(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "a duration needs a unit: write {n}s or {n}ms, not {n}"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<DurationValue, E> {
                if n < 0 {
                    return Err(E::custom(format!(
                        "invalid duration {n}: must not be negative"
                    )));
                }
                self.visit_u64(n as u64)
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<DurationValue, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write {n}s or {n}ms, not {n}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number of bytes: a plain integer or a number with a unit (`KB`, `MB`, `GB` are powers of
/// 1000; `KiB`, `MiB`, `GiB` powers of 1024; `B` is bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct ByteSize(pub u64);

pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let n: f64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: write e.g. 512KiB, 64MiB or a number of bytes")
    })?;
    let mul: f64 = match unit {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    let v = n * mul;
    if !v.is_finite() || v > u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: too large"));
    }
    Ok(v.round() as u64)
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1024 * 1024;
        match self.0 {
            n if n >= MIB && n % MIB == 0 => write!(f, "{}MiB", n / MIB),
            n if n >= 1024 && n % 1024 == 0 => write!(f, "{}KiB", n / 1024),
            n => write!(f, "{n}B"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like 64MiB or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_byte_size(s).map(ByteSize).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {n}: must not be negative")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("200ms"), Ok(ms(200)));
        assert_eq!(parse_duration("5s"), Ok(ms(5000)));
        assert_eq!(parse_duration("1.5h"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("2h45m"), Ok(ms(9_900_000)));
        assert_eq!(parse_duration("1m30.5s"), Ok(ms(90_500)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        assert_eq!(
            parse_duration("5").unwrap_err(),
            "invalid duration \"5\": missing unit; write e.g. 5s or 5ms"
        );
        assert_eq!(
            parse_duration("5d").unwrap_err(),
            "invalid duration \"5d\": unknown unit \"d\" (use ns, us, ms, s, m or h)"
        );
        assert_eq!(
            parse_duration("-1s").unwrap_err(),
            "invalid duration \"-1s\": must not be negative"
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1..2s").is_err());
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn durations_print_like_go() {
        let f = |s: &str| format_duration(parse_duration(s).unwrap());
        assert_eq!(f("0"), "0s");
        assert_eq!(f("200ms"), "200ms");
        assert_eq!(f("1.5s"), "1.5s");
        assert_eq!(f("90m"), "1h30m0s");
        assert_eq!(f("61s"), "1m1s");
        assert_eq!(f("250us"), "250us");
    }

    #[test]
    fn durations_deserialize_from_yaml() {
        let d: DurationValue = serde_yaml::from_str("\"30s\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(30));
        let d: DurationValue = serde_yaml::from_str("0").unwrap();
        assert_eq!(d.0, Duration::ZERO);
        let e = serde_yaml::from_str::<DurationValue>("5").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("a duration needs a unit: write 5s or 5ms, not 5"),
            "{e}"
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_byte_size("1KB"), Ok(1000));
        assert_eq!(parse_byte_size("512"), Ok(512));
        assert_eq!(parse_byte_size("1.5 GiB"), Ok(1_610_612_736));
        assert!(parse_byte_size("12 parsecs").is_err());
        assert!(parse_byte_size("").is_err());
        let b: ByteSize = serde_yaml::from_str("\"2MiB\"").unwrap();
        assert_eq!(b, ByteSize(2 << 20));
        assert_eq!(b.to_string(), "2MiB");
    }
}
