//! Consistent probability sampling as the Collector implements it (`pkg/sampling`, OTEP 235):
//! 56-bit randomness and thresholds, their `ot=rv:`/`th:` encodings in the W3C `tracestate`,
//! and the legacy FNV hash of the `hash_seed` mode.

/// 2^56: the number of distinct randomness values; also the "never sample" threshold.
pub const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
pub const NEVER: u64 = MAX_ADJUSTED_COUNT;
pub const ALWAYS: u64 = 0;
const NUM_HEX_DIGITS: i32 = 14;
const HEX_BITS: i32 = 4;
/// The smallest probability a threshold can express.
pub const MIN_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_COUNT as f64;

/// Go's `math.Frexp` exponent: `x = frac × 2^exp` with `frac` in [0.5, 1).
fn frexp_exp(x: f64) -> i32 {
    if x == 0.0 || !x.is_finite() {
        return 0;
    }
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i32;
    if e == 0 {
        // Subnormal: normalise first.
        return frexp_exp(x * (1u64 << 54) as f64) - 54;
    }
    e - 1022
}

/// `ProbabilityToThresholdWithPrecision`: the threshold for probability `p`, rounded to
/// `precision` hex digits (raised automatically when `p` or `1-p` is small, up to 14).
pub fn probability_to_threshold(p: f64, precision: i32) -> Option<u64> {
    let mut precision = if precision == 0 {
        NUM_HEX_DIGITS
    } else {
        precision
    };
    if !(MIN_PROBABILITY..=1.0).contains(&p) {
        return None;
    }
    if p == 1.0 {
        return Some(ALWAYS);
    }
    // Go's integer division truncates toward zero, as Rust's does.
    let e_f = frexp_exp(p);
    let e_r = frexp_exp(1.0 - p);
    precision = NUM_HEX_DIGITS.min((precision + e_f / -HEX_BITS).max(precision + e_r / -HEX_BITS));
    let scaled = (p * MAX_ADJUSTED_COUNT as f64).round() as u64;
    let mut threshold = MAX_ADJUSTED_COUNT - scaled;
    let shift = HEX_BITS * (NUM_HEX_DIGITS - precision);
    if shift > 0 && shift < 64 {
        let half = 1u64 << (shift - 1);
        threshold += half;
        threshold >>= shift;
        threshold <<= shift;
    }
    Some(threshold)
}

/// The probability a threshold samples with.
pub fn threshold_probability(t: u64) -> f64 {
    (MAX_ADJUSTED_COUNT - t.min(MAX_ADJUSTED_COUNT)) as f64 / MAX_ADJUSTED_COUNT as f64
}

/// A threshold as `th:` writes it: 14 hex digits, trailing zeros removed; "0" for always.
pub fn encode_threshold(t: u64) -> String {
    if t == ALWAYS {
        return "0".into();
    }
    if t >= NEVER {
        return String::new();
    }
    let s = format!("{t:014x}");
    s.trim_end_matches('0').to_string()
}

/// `th:` as written: 1 to 14 hex digits, zeros implied on the right.
pub fn parse_threshold(s: &str) -> Result<u64, &'static str> {
    if s.len() > NUM_HEX_DIGITS as usize {
        return Err("t-value exceeds 14 hex digits");
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid syntax");
    }
    let v = u64::from_str_radix(s, 16).map_err(|_| "invalid syntax")?;
    Ok(v << (4 * (NUM_HEX_DIGITS as usize - s.len())))
}

/// `rv:` as written: exactly 14 hex digits.
pub fn parse_randomness(s: &str) -> Result<u64, &'static str> {
    if s.len() != NUM_HEX_DIGITS as usize || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("r-value must have 14 hex digits");
    }
    u64::from_str_radix(s, 16).map_err(|_| "invalid syntax")
}

pub fn encode_randomness(r: u64) -> String {
    format!("{:014x}", r & (MAX_ADJUSTED_COUNT - 1))
}

/// The trace id's randomness: its last 7 bytes.
pub fn trace_id_randomness(tid: &[u8]) -> Option<u64> {
    if tid.len() != 16 || tid.iter().all(|b| *b == 0) {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&tid[8..16]);
    Some(u64::from_be_bytes(b) & (MAX_ADJUSTED_COUNT - 1))
}

/// FNV-1a 32 of the seed (4 little-endian bytes) then `data`: the `hash_seed` mode's hash.
pub fn fnv_hash(seed: u32, data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in seed.to_le_bytes().iter().chain(data) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The `hash_seed` mode: the threshold for a percentage (`None`: never samples) and the 56-bit
/// randomness of a hash, built so that `threshold <= randomness` is exactly the legacy rule
/// `hash & 0x3FFF < percentage × 163.84`.
pub fn hash_seed_threshold(percentage: f32) -> Option<u64> {
    let scaled = (percentage * 163.84f32) as u32;
    if scaled == 0 {
        return None;
    }
    Some(u64::from(16384u32.saturating_sub(scaled)) << 42)
}

pub fn hash_randomness(hash: u32) -> u64 {
    let h = u64::from(hash & 0x3fff);
    let u18 = u64::from(hash >> 14);
    ((0x3fff - h) << 42) | (((u18 ^ (u18 << 10)) & 0x0fff_ffff) << 14) | h
}

/// A parsed W3C `tracestate` with its OpenTelemetry (`ot`) member taken apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceState {
    pub rv: Option<(u64, String)>,
    pub th: Option<u64>,
    /// Other `ot` keys, in order.
    pub ot_extra: Vec<(String, String)>,
    /// Other vendors' members, in order.
    pub others: Vec<(String, String)>,
}

fn w3c_key_ok(k: &str) -> bool {
    let simple = |s: &str, max: usize, first_digit: bool| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || (first_digit && b[0].is_ascii_digit()))
            && b[1..].iter().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/')
            })
    };
    match k.split_once('@') {
        Some((tenant, system)) => simple(tenant, 241, true) && simple(system, 14, false),
        None => simple(k, 256, false),
    }
}

fn w3c_value_ok(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
        && b[b.len() - 1] != b' '
}

impl TraceState {
    /// Parses `s` as upstream does; an error leaves the span as it is.
    pub fn parse(s: &str) -> Result<TraceState, String> {
        let mut ts = TraceState::default();
        if s.trim().is_empty() {
            return Ok(ts);
        }
        let mut seen = std::collections::HashSet::new();
        let mut n = 0;
        for member in s.split(',') {
            let member = member.trim_matches(|c| c == ' ' || c == '\t');
            if member.is_empty() {
                continue;
            }
            n += 1;
            if n > 32 {
                return Err("too many list-members in tracestate".into());
            }
            let (k, v) = member
                .split_once('=')
                .ok_or_else(|| format!("invalid tracestate member {member:?}"))?;
            if !w3c_key_ok(k) || !w3c_value_ok(v) {
                return Err(format!("invalid tracestate member {member:?}"));
            }
            if !seen.insert(k.to_string()) {
                return Err(format!("duplicate tracestate key {k:?}"));
            }
            if k == "ot" {
                ts.parse_ot(v)?;
            } else {
                ts.others.push((k.to_string(), v.to_string()));
            }
        }
        Ok(ts)
    }

    fn parse_ot(&mut self, v: &str) -> Result<(), String> {
        for part in v.split(';') {
            let (k, val) = part
                .split_once(':')
                .ok_or_else(|| format!("invalid ot tracestate {v:?}"))?;
            let key_ok = k.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
                && k.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            let val_ok = !val.is_empty()
                && val
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'+'));
            if !key_ok || !val_ok {
                return Err(format!("invalid ot tracestate {v:?}"));
            }
            match k {
                "rv" => self.rv = Some((parse_randomness(val)?, val.to_string())),
                "th" => self.th = Some(parse_threshold(val)?),
                _ => self.ot_extra.push((k.to_string(), val.to_string())),
            }
        }
        Ok(())
    }

    /// Serialises as upstream: `ot` first (rv, th, then its other keys), then the others.
    pub fn serialize(&self) -> String {
        let mut ot: Vec<String> = Vec::new();
        if let Some((_, s)) = &self.rv {
            ot.push(format!("rv:{s}"));
        }
        if let Some(t) = self.th {
            ot.push(format!("th:{}", encode_threshold(t)));
        }
        for (k, v) in &self.ot_extra {
            ot.push(format!("{k}:{v}"));
        }
        let mut members: Vec<String> = Vec::new();
        if !ot.is_empty() {
            members.push(format!("ot={}", ot.join(";")));
        }
        for (k, v) in &self.others {
            members.push(format!("{k}={v}"));
        }
        members.join(",")
    }
}
