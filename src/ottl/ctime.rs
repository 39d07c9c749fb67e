//! The `Time(target, format, [location], [locale])` converter's format: ctime-like
//! directives (`%Y-%m-%dT%H:%M:%S%z`), parsed as upstream does (opentelemetry-collector-contrib
//! `internal/coreinternal/timeutils`, which maps each directive to a Go layout element and
//! parses flexibly): numbers with or without leading zeros and with leading spaces, `%z` as
//! `Z`, `±hhmm`, `±hh:mm` or `±hh`, a fraction after the seconds even when the format has
//! none, a space matching a run of spaces, English month and day names in any case.
//!
//! A format is checked once, at config time (upstream's rules: no digits, `%L`/`%f`/`%s`
//! after `.` or `,`, known directives only), and compiled to [`Format`]; parsing a value never
//! panics and gives `None` for anything that does not fit.

/// One element of a compiled format.
#[derive(Debug, Clone, PartialEq)]
enum El {
    Lit(Box<str>),
    /// `%Y`: four digits.
    Year4,
    /// `%y`: two digits, 69–99 → 19xx, else 20xx.
    Year2,
    /// The year of `%D` / `%x`: four digits, else two.
    YearAny,
    Month(Pad),
    MonthShort,
    MonthLong,
    Day(Pad),
    WeekdayShort,
    WeekdayLong,
    Hour24,
    Hour12(Pad),
    /// `%p` (`AM`/`PM`) and `%P` (`am`/`pm`).
    AmPm {
        upper: bool,
    },
    Minute,
    Second,
    /// `.%L`, `.%f`, `.%s` (the separator is part of it): optional, any number of digits
    /// when read; written with up to `digits` digits, trailing zeros (and an all-zero
    /// fraction's separator) left out, as Go's `.999`.
    Fraction {
        sep: char,
        digits: u8,
    },
    /// `%Z`: a zone abbreviation.
    ZoneName,
    /// `%z`: `Z`, `±hhmm`, `±hh:mm` or `±hh`.
    ZoneFlexible,
    /// `%w` `±hhmmss`, `%i` `±hh`, `%j` `±hh:mm`, `%k` `±hh:mm:ss`.
    Zone {
        colons: bool,
        minutes: bool,
        seconds: bool,
    },
}

/// How a number is written (`%m` `01`, `%o` ` 1`, `%q` `1`); read alike.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pad {
    Zero,
    Space,
    None,
}

/// A checked, compiled format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Format {
    els: Vec<El>,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

impl Format {
    /// Checks and compiles `format`; the error is upstream's message.
    pub(crate) fn compile(format: &str) -> Result<Format, String> {
        if format.chars().any(|c| c.is_ascii_digit()) {
            return Err("format string should not contain decimals".into());
        }
        let mut els: Vec<El> = Vec::new();
        let mut lit = String::new();
        let mut unsupported = Vec::new();
        let mut chars = format.chars().peekable();
        // The format's character before the `%` being read (for upstream's message).
        let mut prev: Option<char> = None;
        let flush = |lit: &mut String, els: &mut Vec<El>| {
            if !lit.is_empty() {
                els.push(El::Lit(std::mem::take(lit).into()));
            }
        };
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                prev = Some(c);
                continue;
            }
            let before = prev;
            let Some(d) = chars.next() else {
                // A lone `%` at the end is literal text, as upstream's `%.` finds nothing.
                lit.push('%');
                break;
            };
            prev = Some(d);
            use El::*;
            let expand: &[El] = match d {
                'n' => {
                    lit.push('\n');
                    continue;
                }
                't' => {
                    lit.push('\t');
                    continue;
                }
                '%' => {
                    lit.push('%');
                    continue;
                }
                'L' | 'f' | 's' => {
                    if !matches!(before, Some('.' | ','))
                        || !(lit.ends_with('.') || lit.ends_with(','))
                    {
                        let before = before.map(String::from).unwrap_or_default();
                        return Err(format!(
                            "invalid fractional seconds directive: '{before}%{d}'. must be preceded with '.' or ','"
                        ));
                    }
                    let sep = lit.pop().unwrap_or('.');
                    let digits = match d {
                        'L' => 3,
                        'f' => 6,
                        _ => 9,
                    };
                    flush(&mut lit, &mut els);
                    els.push(Fraction { sep, digits });
                    continue;
                }
                'Y' => &[Year4],
                'y' => &[Year2],
                'm' => &[Month(Pad::Zero)],
                'o' => &[Month(Pad::Space)],
                'q' => &[Month(Pad::None)],
                'b' | 'h' => &[MonthShort],
                'B' => &[MonthLong],
                'd' => &[Day(Pad::Zero)],
                'e' => &[Day(Pad::Space)],
                'g' => &[Day(Pad::None)],
                'a' => &[WeekdayShort],
                'A' => &[WeekdayLong],
                'H' => &[Hour24],
                'I' => &[Hour12(Pad::Zero)],
                'l' => &[Hour12(Pad::None)],
                'p' => &[AmPm { upper: true }],
                'P' => &[AmPm { upper: false }],
                'M' => &[Minute],
                'S' => &[Second],
                'Z' => &[ZoneName],
                'z' => &[ZoneFlexible],
                'w' => &[Zone {
                    colons: false,
                    minutes: true,
                    seconds: true,
                }],
                'i' => &[Zone {
                    colons: false,
                    minutes: false,
                    seconds: false,
                }],
                'j' => &[Zone {
                    colons: true,
                    minutes: true,
                    seconds: false,
                }],
                'k' => &[Zone {
                    colons: true,
                    minutes: true,
                    seconds: true,
                }],
                'D' | 'x' => {
                    flush(&mut lit, &mut els);
                    els.extend([
                        Month(Pad::Zero),
                        Lit("/".into()),
                        Day(Pad::Zero),
                        Lit("/".into()),
                        YearAny,
                    ]);
                    continue;
                }
                'F' => {
                    flush(&mut lit, &mut els);
                    els.extend([
                        Year4,
                        Lit("-".into()),
                        Month(Pad::Zero),
                        Lit("-".into()),
                        Day(Pad::Zero),
                    ]);
                    continue;
                }
                'T' | 'X' => {
                    flush(&mut lit, &mut els);
                    els.extend([Hour24, Lit(":".into()), Minute, Lit(":".into()), Second]);
                    continue;
                }
                'r' => {
                    flush(&mut lit, &mut els);
                    els.extend([
                        Hour12(Pad::Zero),
                        Lit(":".into()),
                        Minute,
                        Lit(":".into()),
                        Second,
                        Lit(" ".into()),
                        AmPm { upper: false },
                    ]);
                    continue;
                }
                'R' => {
                    flush(&mut lit, &mut els);
                    els.extend([Hour24, Lit(":".into()), Minute]);
                    continue;
                }
                'c' => {
                    flush(&mut lit, &mut els);
                    els.extend([
                        WeekdayShort,
                        Lit(" ".into()),
                        MonthShort,
                        Lit(" ".into()),
                        Day(Pad::Zero),
                        Lit(" ".into()),
                        Hour24,
                        Lit(":".into()),
                        Minute,
                        Lit(":".into()),
                        Second,
                        Lit(" ".into()),
                        Year4,
                    ]);
                    continue;
                }
                other => {
                    unsupported.push(format!(
                        "unsupported ctimefmt.toNative() directive: %{other}"
                    ));
                    continue;
                }
            };
            flush(&mut lit, &mut els);
            els.extend_from_slice(expand);
        }
        if !unsupported.is_empty() {
            return Err(format!(
                "invalid strptime format: [{}]",
                unsupported.join(" ")
            ));
        }
        flush(&mut lit, &mut els);
        Ok(Format { els })
    }

    /// `value` as Unix nanoseconds; zone-less values are UTC. `None` when it does not fit
    /// the format or the time is outside what nanoseconds since 1970 hold in an i64.
    pub(crate) fn parse(&self, value: &str) -> Option<i64> {
        let mut s = value;
        let mut year: Option<i64> = None;
        let (mut month, mut day) = (1i64, 1i64);
        let (mut hour, mut min, mut sec, mut nanos) = (0i64, 0i64, 0i64, 0i64);
        let mut pm: Option<bool> = None;
        let mut offset = 0i64;
        for (i, el) in self.els.iter().enumerate() {
            match el {
                El::Lit(l) => s = skip_literal(s, l)?,
                El::Year4 => {
                    let (v, rest) = digits(s, 4, 4)?;
                    year = Some(v);
                    s = rest;
                }
                El::Year2 => {
                    let (v, rest) = digits(s, 2, 2)?;
                    year = Some(if v >= 69 { 1900 + v } else { 2000 + v });
                    s = rest;
                }
                El::YearAny => {
                    let (v, rest) = match digits(s, 4, 4) {
                        Some(x) => x,
                        None => {
                            let (v, rest) = digits(s, 2, 2)?;
                            (if v >= 69 { 1900 + v } else { 2000 + v }, rest)
                        }
                    };
                    year = Some(v);
                    s = rest;
                }
                El::Month(_) => {
                    let (v, rest) = digits(s, 1, 2)?;
                    (1..=12).contains(&v).then_some(())?;
                    month = v;
                    s = rest;
                }
                El::MonthShort | El::MonthLong => {
                    let long = *el == El::MonthLong;
                    let (i, rest) = name(s, &MONTHS, long)?;
                    month = i as i64 + 1;
                    s = rest;
                }
                El::WeekdayShort | El::WeekdayLong => {
                    let (_, rest) = name(s, &DAYS, *el == El::WeekdayLong)?;
                    s = rest;
                }
                El::Day(_) => {
                    let (v, rest) = digits(s, 1, 2)?;
                    day = v;
                    s = rest;
                }
                El::Hour24 => {
                    let (v, rest) = digits(s, 1, 2)?;
                    (v < 24).then_some(())?;
                    hour = v;
                    s = rest;
                }
                El::Hour12(_) => {
                    let (v, rest) = digits(s, 1, 2)?;
                    (v <= 12).then_some(())?;
                    hour = v;
                    s = rest;
                }
                El::AmPm { upper } => {
                    let (am, pm_) = if *upper { ("AM", "PM") } else { ("am", "pm") };
                    if let Some(rest) = s.strip_prefix(am) {
                        pm = Some(false);
                        s = rest;
                    } else {
                        s = s.strip_prefix(pm_)?;
                        pm = Some(true);
                    }
                }
                El::Minute => {
                    let (v, rest) = digits(s, 1, 2)?;
                    (v < 60).then_some(())?;
                    min = v;
                    s = rest;
                }
                El::Second => {
                    let (v, rest) = digits(s, 1, 2)?;
                    (v < 60).then_some(())?;
                    sec = v;
                    s = rest;
                    // A fraction the format does not name is read anyway (Go's time.Parse).
                    if !matches!(self.els.get(i + 1), Some(El::Fraction { .. })) {
                        if let Some((n, rest)) = fraction(s) {
                            nanos = n;
                            s = rest;
                        }
                    }
                }
                El::Fraction { .. } => {
                    if let Some((n, rest)) = fraction(s) {
                        nanos = n;
                        s = rest;
                    }
                }
                El::ZoneName => {
                    let (off, rest) = zone_name(s)?;
                    if off.is_some() || offset == 0 {
                        offset = off.unwrap_or(offset);
                    }
                    s = rest;
                }
                El::ZoneFlexible => {
                    if let Some(rest) = s.strip_prefix('Z') {
                        offset = 0;
                        s = rest;
                    } else {
                        let (off, rest) = zone_offset(s, None, true, false)?;
                        offset = off;
                        s = rest;
                    }
                }
                El::Zone {
                    colons,
                    minutes,
                    seconds,
                } => {
                    let (off, rest) = zone_offset(s, Some(*colons), *minutes, *seconds)?;
                    offset = off;
                    s = rest;
                }
            }
        }
        if !s.is_empty() {
            return None;
        }
        match pm {
            Some(true) if hour < 12 => hour += 12,
            Some(false) if hour == 12 => hour = 0,
            _ => {}
        }
        // Go's default year (0) is before what Unix nanoseconds in an i64 reach.
        let year = year?;
        (day >= 1 && day <= days_in_month(year, month)).then_some(())?;
        let days = days_from_civil(year, month, day);
        let secs = days
            .checked_mul(86_400)?
            .checked_add(hour * 3600 + min * 60 + sec - offset)?;
        secs.checked_mul(1_000_000_000)?.checked_add(nanos)
    }
}

impl Format {
    /// Unix nanoseconds `t` written in this format, in UTC (`FormatTime`).
    pub(crate) fn format(&self, t: i64) -> String {
        use std::fmt::Write;
        let secs = t.div_euclid(1_000_000_000);
        let nanos = t.rem_euclid(1_000_000_000);
        let days = secs.div_euclid(86_400);
        let in_day = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hour, min, sec) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        let weekday = (days + 4).rem_euclid(7) as usize;
        let mut out = String::new();
        let num = |out: &mut String, v: i64, pad: Pad| {
            let _ = match pad {
                Pad::Zero => write!(out, "{v:02}"),
                Pad::Space => write!(out, "{v:>2}"),
                Pad::None => write!(out, "{v}"),
            };
        };
        for el in &self.els {
            match el {
                El::Lit(l) => out.push_str(l),
                El::Year4 | El::YearAny => {
                    let _ = write!(out, "{y:04}");
                }
                El::Year2 => {
                    let _ = write!(out, "{:02}", y.rem_euclid(100));
                }
                El::Month(p) => num(&mut out, m, *p),
                El::MonthShort => out.push_str(&MONTHS[(m - 1) as usize][..3]),
                El::MonthLong => out.push_str(MONTHS[(m - 1) as usize]),
                El::Day(p) => num(&mut out, d, *p),
                El::WeekdayShort => out.push_str(&DAYS[weekday][..3]),
                El::WeekdayLong => out.push_str(DAYS[weekday]),
                El::Hour24 => num(&mut out, hour, Pad::Zero),
                El::Hour12(p) => num(&mut out, h12, *p),
                El::AmPm { upper } => out.push_str(match (hour >= 12, upper) {
                    (true, true) => "PM",
                    (false, true) => "AM",
                    (true, false) => "pm",
                    (false, false) => "am",
                }),
                El::Minute => num(&mut out, min, Pad::Zero),
                El::Second => num(&mut out, sec, Pad::Zero),
                El::Fraction { sep, digits } => {
                    let frac = format!("{nanos:09}");
                    let kept = frac[..usize::from(*digits)].trim_end_matches('0');
                    if !kept.is_empty() {
                        out.push(*sep);
                        out.push_str(kept);
                    }
                }
                El::ZoneName => out.push_str("UTC"),
                El::ZoneFlexible => out.push('Z'),
                El::Zone {
                    colons,
                    minutes,
                    seconds,
                } => {
                    out.push_str("+00");
                    for part in [*minutes, *seconds] {
                        if part {
                            if *colons {
                                out.push(':');
                            }
                            out.push_str("00");
                        }
                    }
                }
            }
        }
        out
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Skips leading spaces (upstream ignores them before a number).
fn trim_spaces(s: &str) -> &str {
    s.trim_start_matches(|c: char| c.is_ascii_whitespace())
}

/// `min..=max` digits after optional leading spaces.
fn digits(s: &str, min: usize, max: usize) -> Option<(i64, &str)> {
    let s = trim_spaces(s);
    let n = s
        .bytes()
        .take(max)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if n < min {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

/// A literal of the format: a space matches a run of spaces (as Go's `time.Parse`), anything
/// else itself.
fn skip_literal<'a>(mut s: &'a str, lit: &str) -> Option<&'a str> {
    let mut l = lit;
    while let Some(c) = l.chars().next() {
        if c == ' ' {
            if !s.is_empty() && !s.starts_with(' ') {
                return None;
            }
            l = l.trim_start_matches(' ');
            s = s.trim_start_matches(' ');
            continue;
        }
        s = s.strip_prefix(c)?;
        l = &l[c.len_utf8()..];
    }
    Some(s)
}

/// An English name of `names` (whole, or its first three letters), in any case.
fn name<'a>(s: &'a str, names: &[&str], long: bool) -> Option<(usize, &'a str)> {
    names.iter().enumerate().find_map(|(i, n)| {
        let n = if long { *n } else { &n[..3] };
        let head = s.get(..n.len())?;
        head.eq_ignore_ascii_case(n).then(|| (i, &s[n.len()..]))
    })
}

/// `.123` or `,123`: nanoseconds from the first nine digits.
fn fraction(s: &str) -> Option<(i64, &str)> {
    let rest = s.strip_prefix(['.', ','])?;
    let n = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let mut nanos = 0i64;
    for (i, b) in rest
        .bytes()
        .take(9)
        .take_while(|b| b.is_ascii_digit())
        .enumerate()
    {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some((nanos, &rest[n..]))
}

/// `±hh[[:]mm[[:]ss]]` as seconds east of UTC. `colons`: `Some(true)` requires them,
/// `Some(false)` forbids them, `None` allows either; `minutes`/`seconds`: required parts
/// (with `colons == None`, minutes are optional).
fn zone_offset(s: &str, colons: Option<bool>, minutes: bool, seconds: bool) -> Option<(i64, &str)> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two = |s: &str| -> Option<(i64, usize)> {
        let b = s.as_bytes();
        (b.len() >= 2 && b[0].is_ascii_digit() && b[1].is_ascii_digit())
            .then(|| (i64::from(b[0] - b'0') * 10 + i64::from(b[1] - b'0'), 2))
    };
    let mut rest = &s[1..];
    let (h, n) = two(rest)?;
    rest = &rest[n..];
    let mut total = h * 3600;
    let mut part = |rest: &mut &str, required: bool, unit: i64| -> Option<bool> {
        let (sep, body) = match rest.strip_prefix(':') {
            Some(b) => (true, b),
            None => (false, *rest),
        };
        let ok_sep = match colons {
            Some(c) => c == sep,
            None => true,
        };
        match two(body) {
            Some((v, n)) if ok_sep => {
                total += v * unit;
                *rest = &body[n..];
                Some(true)
            }
            _ if required => None,
            _ => Some(false),
        }
    };
    if minutes || colons.is_none() {
        part(&mut rest, minutes && colons.is_some(), 60)?;
    }
    if seconds {
        part(&mut rest, true, 1)?;
    }
    Some((sign * total, rest))
}

/// A zone abbreviation as Go's `time.Parse` reads one: `UTC`, `GMT` with an optional signed
/// hour, three upper-case letters, or four or five ending in `T` (`AEST`); `ChST`, `MeST`,
/// `WITA`. Its offset is known only for UTC/GMT (`Some`); others read as UTC (`None`), as Go
/// does for an abbreviation its location does not know.
fn zone_name(s: &str) -> Option<(Option<i64>, &str)> {
    for special in ["ChST", "MeST"] {
        if let Some(rest) = s.strip_prefix(special) {
            return Some((None, rest));
        }
    }
    if let Some(rest) = s.strip_prefix("UTC") {
        return Some((Some(0), rest));
    }
    if let Some(rest) = s.strip_prefix("GMT") {
        let b = rest.as_bytes();
        if matches!(b.first(), Some(b'+' | b'-')) {
            let n = rest[1..].bytes().take_while(|b| b.is_ascii_digit()).count();
            if (1..=2).contains(&n) {
                let h: i64 = rest[1..1 + n].parse().ok()?;
                let sign = if b[0] == b'-' { -1 } else { 1 };
                return Some((Some(sign * h * 3600), &rest[1 + n..]));
            }
        }
        return Some((Some(0), rest));
    }
    let upper = s.bytes().take_while(u8::is_ascii_uppercase).count();
    let ok = match upper {
        3 => true,
        4 => s[..4].ends_with('T') || &s[..4] == "WITA",
        5 => s[..5].ends_with('T'),
        _ => false,
    };
    ok.then(|| (None, &s[upper..]))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The locations weir knows without a time zone database: UTC under its names. Others are
/// refused at config time (the error says so) rather than read as UTC.
pub(crate) fn check_location(loc: &str) -> Result<(), String> {
    match loc {
        "" | "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT" | "Zulu" | "Etc/Zulu" => Ok(()),
        other => Err(format!(
            "location {other:?} is not supported: weir has no time zone database; use \"UTC\" (the default) and a %z offset in the format"
        )),
    }
}

/// The locales weir knows: English names (the default).
pub(crate) fn check_locale(locale: &str) -> Result<(), String> {
    let l = locale.to_ascii_lowercase();
    if l.is_empty() || l == "en" || l.starts_with("en-") || l.starts_with("en_") {
        Ok(())
    } else {
        Err(format!(
            "locale {locale:?} is not supported: weir reads English month and day names only"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(fmt: &str, v: &str) -> Option<i64> {
        Format::compile(fmt).unwrap().parse(v)
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn upstreams_examples() {
        // Time("2012-11-01T22:08:41+0000 EST", "%Y-%m-%dT%H:%M:%S%z %Z")
        assert_eq!(
            at("%Y-%m-%dT%H:%M:%S%z %Z", "2012-11-01T22:08:41+0000 EST"),
            Some(1_351_807_721 * S)
        );
        // Time("1986-10-01T00:17:33 MST", "%Y-%m-%dT%H:%M:%S %Z"): an abbreviation UTC does
        // not know reads as offset 0, as Go does.
        assert_eq!(
            at("%Y-%m-%dT%H:%M:%S %Z", "1986-10-01T00:17:33 MST"),
            Some(528_509_853 * S)
        );
        // Time("Sat Jan 2 15:04:05 2021", "%a %b %e %H:%M:%S %Y") style.
        assert_eq!(
            at("%a %b %e %H:%M:%S %Y", "Sat Jan  2 15:04:05 2021"),
            Some(1_609_599_845 * S)
        );
        assert_eq!(at("%c", "Sat Jan 2 15:04:05 2021"), Some(1_609_599_845 * S));
    }

    #[test]
    fn zones_fractions_and_flexible_numbers() {
        let base = at("%F %T", "2023-05-06 07:08:09").unwrap();
        assert_eq!(base, 1_683_356_889 * S);
        assert_eq!(
            at("%F %T%z", "2023-05-06 07:08:09+0200"),
            Some(base - 7200 * S)
        );
        assert_eq!(
            at("%F %T%z", "2023-05-06 07:08:09-05:30"),
            Some(base + 19_800 * S)
        );
        assert_eq!(
            at("%F %T%z", "2023-05-06 07:08:09+02"),
            Some(base - 7200 * S)
        );
        assert_eq!(at("%F %T%z", "2023-05-06 07:08:09Z"), Some(base));
        assert_eq!(
            at("%F %T%j", "2023-05-06 07:08:09+02:00"),
            Some(base - 7200 * S)
        );
        assert_eq!(at("%F %T%j", "2023-05-06 07:08:09+0200"), None);
        assert_eq!(
            at("%F %T%k", "2023-05-06 07:08:09-00:00:30"),
            Some(base + 30 * S)
        );
        assert_eq!(
            at("%F %T%w", "2023-05-06 07:08:09+010000"),
            Some(base - 3600 * S)
        );
        assert_eq!(
            at("%F %T%i", "2023-05-06 07:08:09-01"),
            Some(base + 3600 * S)
        );
        assert_eq!(
            at("%F %T %Z", "2023-05-06 07:08:09 GMT+2"),
            Some(base - 7200 * S)
        );
        // Fractions: named, unnamed, absent.
        assert_eq!(
            at("%F %H:%M:%S.%L", "2023-05-06 07:08:09.123"),
            Some(base + 123_000_000)
        );
        assert_eq!(
            at("%F %H:%M:%S,%f", "2023-05-06 07:08:09,000456"),
            Some(base + 456_000)
        );
        assert_eq!(at("%F %H:%M:%S.%s", "2023-05-06 07:08:09"), Some(base));
        assert_eq!(
            at("%F %T", "2023-05-06 07:08:09.5"),
            Some(base + 500_000_000)
        );
        // Numbers without zeros or with leading spaces; names in any case.
        assert_eq!(at("%Y-%m-%d %H:%M:%S", "2023-5-6 7:8:9"), Some(base));
        assert_eq!(at("%d %B %Y %T", " 6 may 2023 07:08:09"), Some(base));
        assert_eq!(at("%D %r", "05/06/2023 07:08:09 am"), Some(base));
        assert_eq!(
            at("%D %r", "05/06/23 07:08:09 pm"),
            Some(base + 12 * 3600 * S)
        );
        assert_eq!(
            at("%m/%d/%y %I:%M %p", "05/06/23 12:08 AM"),
            Some(base - 7 * 3600 * S - 9 * S)
        );
    }

    #[test]
    fn format_time_writes_as_go_does() {
        let t = at("%F %T", "2023-05-06 07:08:09").unwrap();
        let f = |fmt: &str, t: i64| Format::compile(fmt).unwrap().format(t);
        assert_eq!(f("%Y-%m-%dT%H:%M:%S%z", t), "2023-05-06T07:08:09Z");
        assert_eq!(
            f("%a %A %b %B %e %g %o %q %y", t),
            "Sat Saturday May May  6 6  5 5 23"
        );
        assert_eq!(
            f("%I:%M %p / %l %P / %r", t),
            "07:08 AM / 7 am / 07:08:09 am"
        );
        assert_eq!(f("%c", t), "Sat May 06 07:08:09 2023");
        assert_eq!(
            f("%D %F %R %Z %j %k %i %w %%", t),
            "05/06/2023 2023-05-06 07:08 UTC +00:00 +00:00:00 +00 +000000 %"
        );
        // Fractions: trailing zeros and an all-zero fraction left out (Go's ".999").
        assert_eq!(f("%T.%L", t), "07:08:09");
        assert_eq!(f("%T.%L", t + 120_000_000), "07:08:09.12");
        assert_eq!(f("%T,%f", t + 123_456_789), "07:08:09,123456");
        assert_eq!(f("%T.%s", t + 5), "07:08:09.000000005");
        // Before 1970, and a round trip through Time.
        assert_eq!(f("%F %T", -1_000_000_000), "1969-12-31 23:59:59");
        for v in [0, t, 1_704_164_645_250_000_000, -86_400_000_000_000 * 365] {
            assert_eq!(at("%F %T.%s", &f("%F %T.%s", v)), Some(v));
        }
    }

    #[test]
    fn what_does_not_fit_is_none() {
        for (fmt, v) in [
            ("%F", "2023-02-30"),
            ("%F", "2023-13-01"),
            ("%F", "23-05-06"),
            ("%F %T", "2023-05-06 24:00:00"),
            ("%F %T", "2023-05-06 07:60:00"),
            ("%F", "2023-05-06 trailing"),
            ("%F", ""),
            ("%H:%M", "07:08"),
            ("%b %Y", "Foo 2023"),
            ("%Y", "99999"),
            ("%F %T%z", "2023-05-06 07:08:09 +0200"),
            ("%F", "2023-05-0\u{0666}"),
        ] {
            assert_eq!(at(fmt, v), None, "{fmt} {v:?}");
        }
        // Beyond 2262 is beyond i64 nanoseconds.
        assert_eq!(at("%Y", "2263"), None);
        assert_eq!(at("%Y", "1677"), None);
    }

    #[test]
    fn formats_are_checked_as_upstream() {
        assert_eq!(
            Format::compile("%Y-%m-%d 2006").unwrap_err(),
            "format string should not contain decimals"
        );
        assert_eq!(
            Format::compile("%H:%M:%S%L").unwrap_err(),
            "invalid fractional seconds directive: 'S%L'. must be preceded with '.' or ','"
        );
        assert_eq!(
            Format::compile("%Y %Q %E").unwrap_err(),
            "invalid strptime format: [unsupported ctimefmt.toNative() directive: %Q unsupported ctimefmt.toNative() directive: %E]"
        );
        assert!(check_location("America/New_York")
            .unwrap_err()
            .contains("no time zone database"));
        assert!(check_location("UTC").is_ok());
        assert!(check_locale("it").is_err());
        assert!(check_locale("en-GB").is_ok());
    }
}
