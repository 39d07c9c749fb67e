//! Fuzzing on the stable toolchain: structure-aware generators (`gen.rs`) and protobuf-aware
//! byte mutation, with a little feedback (an input whose outcome is new joins the pool that is
//! mutated further), for every decoder that meets outside input:
//!
//! | target | input | oracle |
//! | --- | --- | --- |
//! | `wire` | an OTLP protobuf request | the receiver's check and the prost decoder agree (verdict and item count), and so does the item counter; weir's encoder writes prost's bytes |
//! | `json` | an OTLP/JSON request | no panic; what it accepts decodes as protobuf with the count it gave |
//! | `compression` | a gzip/zstd/zlib/snappy/lz4 body and a cap | no panic, never more than the cap, and what it inflates round-trips |
//! | `config` | a YAML config (the repository's configs, mutated) | no panic; every error has a message |
//! | `ottl` | an OTTL condition or statement | no panic or stack overflow; what parses evaluates (conditions) or runs on generated data and still encodes as a valid request (statements) |
//! | `wal` | a persistent-queue segment | no panic; every record the scan accepts reads back, with the items and bytes it said |
//! | `loki` | a logs request | every push request decodes as Loki's, its labels parse as Loki parses them, records are neither lost nor invented, the size cap holds |
//! | `remote_write` | a metrics request | every WriteRequest decodes, its labels follow the remote-write spec (valid names, sorted, unique, a metric name), the size cap holds |
//!
//! Each target first replays its corpus (`tests/fuzz/corpus/<target>/`, kept in the repository:
//! inputs that once failed and inputs worth starting from), then runs `WEIR_FUZZ_ITERS`
//! generated inputs (default 600; CI runs the default) from `WEIR_FUZZ_SEED` (default fixed, so
//! CI is repeatable). A panic, a broken oracle or an input that runs past `WEIR_FUZZ_TIMEOUT_MS`
//! (default 20000) is written to `target/tmp/fuzz-failures/<target>/`; copy it into the corpus
//! to keep it as a regression test. `WEIR_FUZZ_SAVE=1` also saves inputs with new outcomes into
//! the corpus. `tests/fuzz/run.sh` runs long passes with random seeds.
mod gen;
#[allow(dead_code)]
#[path = "../common/loki.rs"]
mod loki_fake;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gen::Rng;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;
use weir::pdata::{Payload, Signal};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target)
}

fn read_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            std::fs::read(e.path()).ok().map(|b| (name, b))
        })
        .collect();
    out.sort();
    out
}

/// FNV-1a: a stable name for an input.
fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// An outcome with its numbers taken out, so "offset 17" and "offset 18" are one outcome.
fn shape(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .take(120)
        .collect();
    out
}

fn save(dir: &Path, input: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{:016x}", hash(input)));
    let _ = std::fs::write(&path, input);
    path
}

/// What an input led to: `Ok(outcome)` when every oracle held, `Err(why)` when one did not.
type Check = dyn Fn(&[u8]) -> Result<String, String> + Sync;

/// Builds an input from the random source and the pool of inputs seen so far.
type Make<'a> = dyn Fn(&mut Rng, &[Vec<u8>]) -> Vec<u8> + 'a;

/// Runs one target: its corpus, then generated inputs. `make` builds an input from the random
/// source and the pool of inputs seen so far.
fn fuzz(target: &str, make: &Make<'_>, check: &Check) {
    let iters = env_u64("WEIR_FUZZ_ITERS", 600);
    let seed = env_u64("WEIR_FUZZ_SEED", 0x5eed_f00d) ^ hash(target.as_bytes());
    let timeout = Duration::from_millis(env_u64("WEIR_FUZZ_TIMEOUT_MS", 20_000));
    let save_new = std::env::var("WEIR_FUZZ_SAVE").is_ok_and(|v| v == "1");
    let failures_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-failures")
        .join(target);

    // The watchdog: an input that runs past the timeout is written out and the run aborted
    // (a hang cannot be unwound).
    let current: Arc<Mutex<Vec<u8>>> = Arc::default();
    let started = Instant::now();
    let since = Arc::new(AtomicU64::new(u64::MAX));
    // Dropping `done` (the run is over) wakes the watchdog at once.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let (current, since) = (current.clone(), since.clone());
        let dir = failures_dir.clone();
        let target = target.to_string();
        std::thread::spawn(move || {
            // Checks the running input's age each time the wait for the end of the run
            // times out.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(Duration::from_millis(50))
            {
                let at = since.load(Ordering::Relaxed);
                if at != u64::MAX
                    && started.elapsed().as_millis() as u64 > at + timeout.as_millis() as u64
                {
                    let input = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let path = save(&dir, &input);
                    eprintln!(
                        "fuzz {target}: an input ran past {timeout:?}; written to {}",
                        path.display()
                    );
                    std::process::abort();
                }
            }
        })
    };
    let run_one = |input: &[u8]| -> Result<String, String> {
        *current.lock().unwrap_or_else(|e| e.into_inner()) = input.to_vec();
        since.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let r = catch_unwind(AssertUnwindSafe(|| check(input)));
        since.store(u64::MAX, Ordering::Relaxed);
        match r {
            Ok(r) => r,
            Err(p) => Err(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )),
        }
    };

    let mut failures: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let corpus = read_corpus(target);
    for (name, input) in &corpus {
        match run_one(input) {
            Ok(outcome) => {
                seen.insert(shape(&outcome));
            }
            Err(why) => failures.push(format!("corpus file {name}: {why}")),
        }
        pool.push(input.clone());
    }
    let mut rng = Rng::new(seed);
    for _ in 0..iters {
        let input = make(&mut rng, &pool);
        match run_one(&input) {
            Ok(outcome) => {
                if seen.insert(shape(&outcome)) {
                    if save_new {
                        save(&corpus_dir(target), &input);
                    }
                    if pool.len() < 512 {
                        pool.push(input);
                    } else {
                        let i = rng.below(pool.len());
                        pool[i] = input;
                    }
                }
            }
            Err(why) => {
                let path = save(&failures_dir, &input);
                failures.push(format!("{why} (input written to {})", path.display()));
                if failures.len() >= 5 {
                    break;
                }
            }
        }
    }
    drop(done);
    let _ = watchdog.join();
    eprintln!(
        "fuzz {target}: {} corpus inputs, {iters} generated (seed {:#x}), {} outcomes, {} failures",
        corpus.len(),
        env_u64("WEIR_FUZZ_SEED", 0x5eed_f00d),
        seen.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "fuzz {target}: {} failures (copy an input into tests/fuzz/corpus/{target}/ to keep it as a regression test):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An input from the pool, mutated, or a fresh one from `fresh`.
fn evolve(rng: &mut Rng, pool: &[Vec<u8>], fresh: &dyn Fn(&mut Rng) -> Vec<u8>) -> Vec<u8> {
    if pool.is_empty() || rng.chance(30) {
        let mut b = fresh(rng);
        if rng.chance(50) {
            gen::mutate(rng, &mut b, &[]);
        }
        return b;
    }
    let mut b = rng.pick_ref(pool).clone();
    let other = rng.pick_ref(pool).clone();
    gen::mutate(rng, &mut b, &other);
    b
}

fn signal_of(b: u8) -> Signal {
    Signal::ALL[b as usize % 3]
}

/// A request of `signal` from the generators, encoded.
fn request(rng: &mut Rng, signal: Signal) -> Vec<u8> {
    match signal {
        Signal::Traces => gen::traces(rng).encode_to_vec(),
        Signal::Metrics => gen::metrics(rng).encode_to_vec(),
        Signal::Logs => gen::logs(rng).encode_to_vec(),
    }
}

/// Prefixes a body with the byte that selects its signal (or variant).
fn tagged(tag: u8, body: Vec<u8>) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(tag);
    v.extend(body);
    v
}

fn decoded_items(signal: Signal, buf: &[u8]) -> Result<usize, prost::DecodeError> {
    use weir::pdata::{count_logs, count_points, count_spans};
    match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(buf).map(|r| count_spans(&r)),
        Signal::Metrics => ExportMetricsServiceRequest::decode(buf).map(|r| count_points(&r)),
        Signal::Logs => ExportLogsServiceRequest::decode(buf).map(|r| count_logs(&r)),
    }
}

// ---------------------------------------------------------------------------------------------
// wire: the receiver's check against the decoder.

fn check_wire(input: &[u8]) -> Result<String, String> {
    let Some((&tag, buf)) = input.split_first() else {
        return Ok("empty".into());
    };
    let signal = signal_of(tag);
    let ours = weir::pdata::check::check_request(signal, buf);
    let theirs = decoded_items(signal, buf);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) if a == b => {
            // weir's encoder of decoded requests writes prost's bytes.
            use weir::pdata::encode;
            let same = match signal {
                Signal::Traces => ExportTraceServiceRequest::decode(buf)
                    .map(|r| encode::encode_traces(&r) == r.encode_to_vec()),
                Signal::Metrics => ExportMetricsServiceRequest::decode(buf)
                    .map(|r| encode::encode_metrics(&r) == r.encode_to_vec()),
                Signal::Logs => ExportLogsServiceRequest::decode(buf)
                    .map(|r| encode::encode_logs(&r) == r.encode_to_vec()),
            };
            if same != Ok(true) {
                return Err(format!("{signal}: weir's encoder and prost's differ"));
            }
            let counted = weir::pdata::wire::count_items(signal, buf);
            if counted.as_ref().ok() != Some(a) {
                return Err(format!(
                    "{signal}: the check counts {a} items, the item counter {counted:?}"
                ));
            }
            Ok(format!("{signal} ok"))
        }
        (Ok(a), Ok(b)) => Err(format!(
            "{signal}: the check counts {a} items, the decoder {b}"
        )),
        (Err(e), Err(_)) => Ok(format!("{signal} refused: {e}")),
        _ => Err(format!(
            "{signal}: the check says {ours:?}, the decoder {theirs:?}"
        )),
    }
}

#[test]
fn wire() {
    fuzz(
        "wire",
        &|rng, pool| {
            evolve(rng, pool, &|rng| {
                let tag = rng.below(3) as u8;
                tagged(tag, request(rng, signal_of(tag)))
            })
        },
        &check_wire,
    );
}

// ---------------------------------------------------------------------------------------------
// json: OTLP/JSON bodies.

/// JSON fragments that have broken decoders: deep nesting, huge and odd numbers, escapes.
const JSON_BITS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "1e999",
    "-0",
    "18446744073709551616",
    "-9223372036854775809",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\"traceId\":\"zz\"",
    "\"spanId\":1",
    "\"kind\":\"SPAN_KIND_SERVER\"",
    "\"kind\":99",
    "\"intValue\":\"12x\"",
    "\"timeUnixNano\":\"-1\"",
    "\"asDouble\":\"NaN\"",
    "\"asDouble\":\"Infinity\"",
    "\"bytesValue\":\"!!\"",
];

fn json_body(rng: &mut Rng, signal: Signal) -> Vec<u8> {
    let mut text = match signal {
        Signal::Traces => serde_json::to_vec(&gen::traces(rng)),
        Signal::Metrics => serde_json::to_vec(&gen::metrics(rng)),
        Signal::Logs => serde_json::to_vec(&gen::logs(rng)),
    }
    .unwrap_or_default();
    if rng.chance(5) {
        // A value nested far past the decoder's limit, in JSON.
        let n = 90 + rng.below(200);
        let open = "{\"kvlistValue\":{\"values\":[{\"key\":\"k\",\"value\":".repeat(n);
        let close = "}]}}".repeat(n);
        text = format!(
            "{{\"resourceSpans\":[{{\"resource\":{{\"attributes\":[{{\"key\":\"d\",\"value\":{open}{{\"stringValue\":\"x\"}}{close}}}]}}}}]}}"
        )
        .into_bytes();
    }
    text
}

fn check_json(input: &[u8]) -> Result<String, String> {
    let Some((&tag, body)) = input.split_first() else {
        return Ok("empty".into());
    };
    let signal = signal_of(tag);
    match weir::receivers::otlp::http::decode_json(signal, body) {
        Ok((Payload::Encoded(bytes), n)) => match decoded_items(signal, &bytes) {
            Ok(m) if m == n => Ok(format!("{signal} ok")),
            other => Err(format!(
                "{signal}: accepted with {n} items, but its protobuf decodes to {other:?}"
            )),
        },
        Ok(_) => Err("decode_json handed on a decoded payload".into()),
        Err(e) => Ok(format!(
            "{signal} refused: {}",
            e.split(" at line").next().unwrap_or("")
        )),
    }
}

#[test]
fn json() {
    fuzz(
        "json",
        &|rng, pool| {
            let mut b = evolve(rng, pool, &|rng| {
                let tag = rng.below(3) as u8;
                tagged(tag, json_body(rng, signal_of(tag)))
            });
            if rng.chance(40) && !b.is_empty() {
                let at = 1 + rng.below(b.len());
                let bit = rng.pick(JSON_BITS).as_bytes().to_vec();
                b.splice(at..at, bit);
            }
            b
        },
        &check_json,
    );
}

// ---------------------------------------------------------------------------------------------
// compression: every body weir inflates.

const ALGOS: [&str; 5] = ["gzip", "zstd", "zlib", "snappy", "lz4"];

fn compress(algo: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match algo {
        "gzip" => weir::compression::gzip(data),
        "zstd" => weir::compression::zstd(data),
        "zlib" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        "snappy" => snap::raw::Encoder::new()
            .compress_vec(data)
            .unwrap_or_default(),
        _ => {
            let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
            let _ = w.write_all(data);
            w.finish().unwrap_or_default()
        }
    }
}

fn inflate(algo: &str, data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    use weir::compression::*;
    match algo {
        "gzip" => gunzip_capped(data, limit),
        "zstd" => unzstd_capped(data, limit),
        "zlib" => unzlib_capped(data, limit),
        "snappy" => unsnappy_capped(data, limit),
        _ => unlz4_capped(data, limit),
    }
    .map_err(|e| e.to_string())
}

fn check_compression(input: &[u8]) -> Result<String, String> {
    let [a, l, body @ ..] = input else {
        return Ok("short".into());
    };
    let algo = ALGOS[*a as usize % ALGOS.len()];
    let limit = 1usize << (*l as usize % 24);
    match inflate(algo, body, limit) {
        Ok(out) if out.len() > limit => Err(format!(
            "{algo}: inflated {} bytes past the cap of {limit}",
            out.len()
        )),
        Ok(out) => {
            let again = inflate(algo, &compress(algo, &out), limit)
                .map_err(|e| format!("{algo}: its own output does not inflate again: {e}"))?;
            if again != out {
                return Err(format!("{algo}: a round trip changed {} bytes", out.len()));
            }
            Ok(format!("{algo} ok"))
        }
        Err(e) => Ok(format!("{algo} refused: {e}")),
    }
}

#[test]
fn compression() {
    fuzz(
        "compression",
        &|rng, pool| {
            evolve(rng, pool, &|rng| {
                let a = rng.below(ALGOS.len());
                let data = match rng.below(4) {
                    0 => rng.some_bytes(4096),
                    // A bomb: megabytes of zeros in a few kilobytes.
                    1 => vec![0u8; 1 << (10 + rng.below(14))],
                    2 => {
                        let signal = signal_of(rng.below(3) as u8);
                        request(rng, signal)
                    }
                    _ => b"abc".repeat(rng.below(10_000)),
                };
                let mut v = vec![a as u8, rng.below(24) as u8];
                v.extend(compress(ALGOS[a], &data));
                v
            })
        },
        &check_compression,
    );
}

// ---------------------------------------------------------------------------------------------
// config: the loader and the model, from the repository's own configs, mutated.

fn repo_configs() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut dirs = vec![
        root.join("config"),
        root.join("pipelines"),
        root.join("deploy"),
    ];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
    }
    out.sort();
    out
}

/// YAML and config values that have broken loaders: anchors, merge keys, odd scalars,
/// environment references, tags, deep flow collections.
const YAML_BITS: &[&str] = &[
    "~",
    "''",
    "\"\"",
    "-1",
    "0",
    "99999999999999999999999",
    "1e400",
    ".nan",
    "0x1F",
    "0o777",
    "-5s",
    "1h30x",
    "0s",
    "2562047h",
    "1GiB",
    "-1MiB",
    "18446744073709551615B",
    "${env:WEIR_FUZZ}",
    "${env:UNSET_FUZZ_VAR:-fallback}",
    "${",
    "$${env:X}",
    "${env:A",
    "${file:/dev/null}",
    "&a x",
    "*a",
    "<<: *a",
    "!!binary aGk=",
    "!weird",
    "[",
    "{",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "? complex",
    "|\n  block",
    ">-",
    "\"\\xff\"",
    "\t",
    "- ",
    ": ",
    "#",
    "otlp",
    "batch",
    "tail_sampling",
    "file_storage",
    "loki",
    "debug",
    "traces",
    "metrics",
    "logs",
    "127.0.0.1:0",
    "localhost:-1",
    "http://[::1",
    "ottl_condition",
    "attributes[\"x\"] == 1",
    "((((",
    "IsMatch(name, \"(\")",
];

fn mutate_yaml(rng: &mut Rng, text: &[u8], other: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(text);
    let mut lines: Vec<String> = s.lines().map(str::to_owned).collect();
    let others: Vec<String> = String::from_utf8_lossy(other)
        .lines()
        .map(str::to_owned)
        .collect();
    for _ in 0..=rng.below(3) {
        let n = lines.len();
        let i = rng.below(n.max(1));
        match rng.below(8) {
            0 if n > 0 => {
                lines.remove(i);
            }
            1 if n > 0 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 if !others.is_empty() => {
                let l = rng.pick_ref(&others).clone();
                lines.insert(i.min(n), l);
            }
            3 if n > 0 => {
                // Replace a value after its colon.
                if let Some(c) = lines[i].find(": ") {
                    let head = lines[i][..c + 2].to_owned();
                    lines[i] = head + rng.pick(YAML_BITS);
                }
            }
            4 if n > 0 => {
                // Shift indentation.
                if rng.chance(50) {
                    lines[i].insert_str(0, "  ");
                } else if lines[i].starts_with(' ') {
                    lines[i].remove(0);
                }
            }
            5 if n > 0 => {
                let at = lines[i].char_indices().map(|(k, _)| k).collect::<Vec<_>>();
                let k = at.get(rng.below(at.len().max(1))).copied().unwrap_or(0);
                lines[i].insert_str(k, rng.pick(YAML_BITS));
            }
            6 if n > 1 => {
                let j = rng.below(n);
                lines.swap(i, j);
            }
            _ => {
                let mut b = lines.join("\n").into_bytes();
                gen::mutate(rng, &mut b, &[]);
                lines = String::from_utf8_lossy(&b)
                    .lines()
                    .map(str::to_owned)
                    .collect();
            }
        }
    }
    lines.join("\n").into_bytes()
}

fn check_config(input: &[u8]) -> Result<String, String> {
    use weir::config::loader::{load_sources, SourceFile};
    let text = String::from_utf8_lossy(input).into_owned();
    let sources = [SourceFile {
        name: "fuzz.yaml".into(),
        text,
    }];
    let env = |k: &str| match k {
        "WEIR_FUZZ" => Some("{a: [1, 2}".to_string()),
        "WEIR_FUZZ_LONG" => Some("y".repeat(100_000)),
        _ => None,
    };
    let errors = match load_sources(&sources, &env) {
        Ok(loaded) => match weir::config::model::Config::from_loaded(&loaded) {
            Ok(_) => return Ok("valid".into()),
            Err(e) => e,
        },
        Err(e) => e,
    };
    let text = errors.to_string();
    if text.trim().is_empty() {
        return Err("refused with an empty error".into());
    }
    Ok(format!("refused: {}", text.lines().next().unwrap_or("")))
}

#[test]
fn config() {
    let seeds = repo_configs();
    fuzz(
        "config",
        &|rng, pool| {
            let base = if pool.is_empty() || rng.chance(40) {
                rng.pick_ref(&seeds).clone()
            } else {
                rng.pick_ref(pool).clone()
            };
            let other = rng.pick_ref(&seeds).clone();
            mutate_yaml(rng, &base, &other)
        },
        &check_config,
    );
}

// ---------------------------------------------------------------------------------------------
// ottl: conditions.

const OTTL_SEEDS: &[&str] = &[
    r#"set(attributes["user.email"], SHA256(attributes["user.email"])) where attributes["user.email"] != nil"#,
    r#"replace_pattern(attributes["http.url"], "\?.*", "?redacted")"#,
    r#"replace_all_patterns(attributes, "value", "[0-9]+", "N")"#,
    r#"truncate_all(attributes, 3)"#,
    r#"limit(attributes, 1, ["a"])"#,
    r#"keep_keys(resource.attributes, ["service.name"])"#,
    r#"set(name, Concat([name, ConvertCase(name, "snake")], "-"))"#,
    r#"set(body, attributes["x"]) where severity_number > 4"#,
    r#"metric.type == METRIC_DATA_TYPE_SUMMARY and value_int == 4"#,
    r#"HasAttrOnDatapoint("bad.metric", "true")"#,
    r#"datapoint.count > 5 or scale < -4 or aggregation_temporality == AGGREGATION_TEMPORALITY_DELTA"#,
    r#"attributes["http.route"] == "/health""#,
    r#"name == "GET /ping" and kind == SPAN_KIND_SERVER"#,
    r#"status.code == STATUS_CODE_ERROR or attributes["error"] == true"#,
    r#"resource.attributes["service.name"] != nil"#,
    r#"IsMatch(name, "^health.*$")"#,
    r#"not (end_time_unix_nano - start_time_unix_nano > 5000000)"#,
    r#"severity_number >= SEVERITY_NUMBER_WARN"#,
    r#"body == "x" and IsString(body)"#,
    r#"attributes["list"][0] == 1.5"#,
    r#"trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f10)"#,
    r#"span.name == "s" and name == "event""#,
    r#"instrumentation_scope.name == "lib""#,
    r#"request["x-tenant"] == "a""#,
    r#"attributes["a"] < -3 or attributes["b"] >= 2.5e3"#,
    r#"set(time, Time(attributes["ts"], "%Y-%m-%dT%H:%M:%S.%L%z"))"#,
    r#"set(attributes["when"], FormatTime(start_time, "%a %b %e %H:%M:%S %Y")) where IsRootSpan()"#,
    r#"merge_maps(attributes, ParseKeyValue(body, "=", " "), "upsert")"#,
    r#"set(attributes["f"], Format("%05d|%-8s|%.3f|%x|%q|%v", [attributes["n"], name, 1.5, name, name, attributes]))"#,
    r#"set(attributes["s"], ToSnakeCase(Format("%s%d", [name, UnixMilli(end_time)])))"#,
    r#"set(end_time, TruncateTime(Unix(1700000000, 5), Duration("1h"))) where Seconds(end_time - start_time) > 1.5"#,
    r#"set(attributes["d"], end_time_unix_nano - start_time_unix_nano)"#,
];

const OTTL_BITS: &[&str] = &[
    "%",
    "%Y",
    "%z",
    ".%L",
    "%*d",
    "%!",
    "(",
    ")",
    "[",
    "]",
    "\"",
    "\\",
    "==",
    "!=",
    "<",
    ">=",
    " and ",
    " or ",
    "not ",
    "nil",
    "true",
    "0x",
    "0xzz",
    "-",
    "+",
    "*",
    "/",
    "1e309",
    "9223372036854775808",
    "attributes",
    "resource.",
    "IsMatch(",
    "IsString(",
    "Concat(",
    ",",
    ".",
    "[\"",
    "\"]",
    "SPAN_KIND_",
    "é",
    "\u{0}",
];

fn check_ottl(input: &[u8]) -> Result<String, String> {
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use opentelemetry_proto::tonic::trace::v1::{span, Span};
    use weir::ottl::{Condition, ContextKind};
    let Some((&tag, text)) = input.split_first() else {
        return Ok("empty".into());
    };
    let kinds = [
        ContextKind::Span,
        ContextKind::SpanEvent,
        ContextKind::Log,
        ContextKind::Resource,
        ContextKind::Scope,
        ContextKind::Metric,
        ContextKind::DataPoint,
    ];
    let kind = kinds[tag as usize % kinds.len()];
    let text = String::from_utf8_lossy(text);
    // Statements (transform): parse, and run on generated data, must never panic.
    if let Ok(st) = weir::ottl::Statement::parse(&text, kind) {
        let mut rng = Rng::new(hash(input) ^ 1);
        let mut t = gen::traces(&mut rng);
        let mut m = gen::metrics(&mut rng);
        let mut l = gen::logs(&mut rng);
        for rs in &mut t.resource_spans {
            let res = &mut rs.resource;
            st.run_resource(res);
            for ss in &mut rs.scope_spans {
                let scope = &mut ss.scope;
                st.run_scope(res, scope);
                for sp in &mut ss.spans {
                    if kind == ContextKind::SpanEvent {
                        for i in 0..sp.events.len() {
                            st.run_span_event(res, scope, sp, i);
                        }
                    } else {
                        st.run_span(res, scope, sp);
                    }
                }
            }
        }
        for rm in &mut m.resource_metrics {
            for sm in &mut rm.scope_metrics {
                for metric in &mut sm.metrics {
                    if kind == ContextKind::DataPoint {
                        st.run_datapoint(&mut rm.resource, &mut sm.scope, metric, 0);
                    } else {
                        st.run_metric(&mut rm.resource, &mut sm.scope, metric);
                    }
                }
            }
        }
        for rl in &mut l.resource_logs {
            for sl in &mut rl.scope_logs {
                for r in &mut sl.log_records {
                    st.run_log(&mut rl.resource, &mut sl.scope, r);
                }
            }
        }
        // On the wire (encoded requests), the transform must give what it gives decoded.
        if matches!(
            kind,
            ContextKind::Span | ContextKind::SpanEvent | ContextKind::Log
        ) && !text.contains("Now")
        {
            same_on_the_wire(kind, &text, hash(input))?;
        }
        // What the edits leave must still encode as a valid request.
        let bytes = weir::pdata::encode::encode_traces(&t);
        if weir::pdata::check::check_request(Signal::Traces, &bytes).is_err()
            && ExportTraceServiceRequest::decode(bytes.as_slice()).is_ok()
        {
            return Err("an edit left traces the check refuses".into());
        }
        return Ok(format!("{} statement ran", kind.name()));
    }
    match Condition::parse(&text, kind) {
        Ok(c) => {
            let mut rng = Rng::new(hash(input));
            let req = gen::traces(&mut rng);
            let span = req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .next()
                .cloned()
                .unwrap_or_else(|| Span {
                    attributes: gen::attrs(&mut rng, 3),
                    ..Default::default()
                });
            let event = span::Event {
                attributes: gen::attrs(&mut rng, 2),
                ..Default::default()
            };
            let log = LogRecord {
                body: Some(gen::any(&mut rng, 3)),
                attributes: gen::attrs(&mut rng, 2),
                ..Default::default()
            };
            let resource = opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: gen::attrs(&mut rng, 2),
                ..Default::default()
            };
            let metrics = gen::metrics(&mut rng);
            let metric = metrics
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .next()
                .cloned()
                .unwrap_or_default();
            let v = match kind {
                ContextKind::Span => c.eval_span(Some(&resource), None, &span),
                ContextKind::SpanEvent => c.eval_span_event(Some(&resource), None, &span, &event),
                ContextKind::Log => c.eval_log(Some(&resource), None, &log),
                ContextKind::Resource => c.eval_resource(Some(&resource)),
                ContextKind::Scope => c.eval_scope(Some(&resource), None),
                ContextKind::Metric => c.eval_metric(Some(&resource), None, &metric),
                ContextKind::DataPoint => {
                    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
                    use weir::ottl::Point;
                    let mut any = false;
                    match &metric.data {
                        Some(Data::Gauge(g)) => {
                            for p in &g.data_points {
                                any |= c.eval_datapoint(None, None, &metric, Point::Number(p));
                            }
                        }
                        Some(Data::Histogram(h)) => {
                            for p in &h.data_points {
                                any |= c.eval_datapoint(None, None, &metric, Point::Histogram(p));
                            }
                        }
                        Some(Data::ExponentialHistogram(h)) => {
                            for p in &h.data_points {
                                any |=
                                    c.eval_datapoint(None, None, &metric, Point::ExpHistogram(p));
                            }
                        }
                        Some(Data::Summary(h)) => {
                            for p in &h.data_points {
                                any |= c.eval_datapoint(None, None, &metric, Point::Summary(p));
                            }
                        }
                        _ => {}
                    }
                    any
                }
            };
            Ok(format!("{} parsed, {v}", kind.name()))
        }
        Err(e) => {
            if e.message.is_empty() || e.column == 0 {
                return Err(format!("a parse error without a message or column: {e:?}"));
            }
            Ok(format!("{} refused: {}", kind.name(), e.message))
        }
    }
}

/// Span and log attributes sorted by key (stable), then encoded: the wire path may write the
/// keys it edited where the first of them stood.
fn canonical(signal: Signal, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let key =
        |a: &opentelemetry_proto::tonic::common::v1::KeyValue,
         b: &opentelemetry_proto::tonic::common::v1::KeyValue| a.key.cmp(&b.key);
    match signal {
        Signal::Traces => {
            let mut r = ExportTraceServiceRequest::decode(bytes).map_err(|e| e.to_string())?;
            for rs in &mut r.resource_spans {
                for ss in &mut rs.scope_spans {
                    for sp in &mut ss.spans {
                        sp.attributes.sort_by(key);
                    }
                }
            }
            Ok(r.encode_to_vec())
        }
        _ => {
            let mut r = ExportLogsServiceRequest::decode(bytes).map_err(|e| e.to_string())?;
            for rl in &mut r.resource_logs {
                for sl in &mut rl.scope_logs {
                    for rec in &mut sl.log_records {
                        rec.attributes.sort_by(key);
                    }
                }
            }
            Ok(r.encode_to_vec())
        }
    }
}

/// The transform and filter processors on an encoded request (their wire paths) against the
/// same configuration on the decoded request: the same items, the same values.
fn same_on_the_wire(kind: weir::ottl::ContextKind, text: &str, seed: u64) -> Result<(), String> {
    use weir::pipeline::Processor;
    use weir::processors::filter::{config::FilterConfig, Filter, FilterProcessor};
    use weir::processors::transform::{
        StatementEntry, StatementGroup, Transform, TransformConfig, TransformProcessor,
    };
    let logs = kind == weir::ottl::ContextKind::Log;
    let signal = if logs { Signal::Logs } else { Signal::Traces };
    let mut rng = Rng::new(seed ^ 2);
    let (bytes, items) = if logs {
        let r = gen::logs(&mut rng);
        let n = r
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        (r.encode_to_vec(), n)
    } else {
        let r = gen::traces(&mut rng);
        let n = r
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        (r.encode_to_vec(), n)
    };
    // Generated data can nest deeper than a decoder takes (the receiver refuses that); the
    // comparison is for requests a decoder reads.
    if canonical(signal, &bytes).is_err() {
        return Ok(());
    }
    let run = |p: &mut dyn Processor| -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let batch =
            weir::pdata::Batch::encoded(signal, bytes.clone().into(), items, Default::default());
        p.process(batch, &mut out);
        out.into_iter().next().map(|b| match b.payload {
            Payload::Encoded(e) => e.to_vec(),
            Payload::Traces(r) => r.encode_to_vec(),
            Payload::Logs(r) => r.encode_to_vec(),
            Payload::Metrics(r) => r.encode_to_vec(),
        })
    };
    let registry = weir::telemetry::metrics::Registry::new();
    // transform
    let group = StatementEntry::Group(StatementGroup {
        context: Some(kind.name().to_string()),
        conditions: Vec::new(),
        statements: vec![text.to_string()],
        // Failures skip the statement (as the decoded run below, which ignores them).
        error_mode: Some("ignore".into()),
    });
    let cfg = if logs {
        TransformConfig {
            log_statements: vec![group],
            ..Default::default()
        }
    } else {
        TransformConfig {
            trace_statements: vec![group],
            ..Default::default()
        }
    };
    if let Ok(t) = Transform::new(&cfg) {
        let wire = run(&mut TransformProcessor::new("t", &cfg, &registry)).unwrap_or_default();
        let decoded = if logs {
            let mut r =
                ExportLogsServiceRequest::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            t.logs(&mut r);
            r.encode_to_vec()
        } else {
            let mut r =
                ExportTraceServiceRequest::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            t.traces(&mut r);
            r.encode_to_vec()
        };
        if canonical(signal, &wire)? != canonical(signal, &decoded)? {
            return Err(format!(
                "transform {text:?}: the wire path differs from the decoded one"
            ));
        }
    }
    // filter, with the statement's where clause as its condition
    if kind == weir::ottl::ContextKind::SpanEvent {
        return Ok(());
    }
    let Some((_, cond)) = text.split_once(" where ") else {
        return Ok(());
    };
    let mut inner = serde_yaml::Mapping::new();
    inner.insert(
        (if logs { "log_record" } else { "span" }).into(),
        serde_yaml::Value::Sequence(vec![cond.into()]),
    );
    let mut top = serde_yaml::Mapping::new();
    top.insert(
        (if logs { "logs" } else { "traces" }).into(),
        serde_yaml::Value::Mapping(inner),
    );
    // A failing condition is false (as the decoded run below counts it), not a dropped request.
    top.insert("error_mode".into(), "ignore".into());
    let Ok(fcfg) = serde_yaml::from_value::<FilterConfig>(serde_yaml::Value::Mapping(top)) else {
        return Ok(());
    };
    if let Ok(f) = Filter::new(&fcfg) {
        let wire = run(&mut FilterProcessor::new("f", &fcfg, &registry));
        let decoded = if logs {
            let mut r =
                ExportLogsServiceRequest::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            let changed = f.logs(&mut r);
            (!changed || !r.resource_logs.is_empty()).then(|| r.encode_to_vec())
        } else {
            let mut r =
                ExportTraceServiceRequest::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            let changed = f.traces(&mut r);
            (!changed || !r.resource_spans.is_empty()).then(|| r.encode_to_vec())
        };
        let same = match (&wire, &decoded) {
            (Some(w), Some(d)) => canonical(signal, w)? == canonical(signal, d)?,
            (None, None) => true,
            _ => false,
        };
        if !same {
            return Err(format!(
                "filter {cond:?}: the wire path differs from the decoded one"
            ));
        }
    }
    Ok(())
}

#[test]
fn ottl() {
    fuzz(
        "ottl",
        &|rng, pool| {
            let mut text = if pool.is_empty() || rng.chance(30) {
                rng.pick(OTTL_SEEDS).to_string()
            } else {
                String::from_utf8_lossy(rng.pick_ref(pool).get(1..).unwrap_or_default())
                    .into_owned()
            };
            for _ in 0..=rng.below(3) {
                let cuts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
                let at = cuts.get(rng.below(cuts.len().max(1))).copied().unwrap_or(0);
                match rng.below(6) {
                    0 => text.insert_str(at, rng.pick(OTTL_BITS)),
                    1 => {
                        let end = cuts
                            .get(rng.below(cuts.len().max(1)))
                            .copied()
                            .unwrap_or(0)
                            .max(at);
                        text.replace_range(at..end, "");
                    }
                    2 => {
                        let n = rng.below(300);
                        text = format!("{}{text}{}", "(".repeat(n), ")".repeat(n));
                    }
                    3 => {
                        let n = rng.below(300);
                        text = format!("{}name{}", "IsString(".repeat(n), ")".repeat(n));
                    }
                    4 => {
                        text = format!(
                            "{text} {} {}",
                            rng.pick(&["and", "or"]),
                            rng.pick(OTTL_SEEDS)
                        )
                    }
                    _ => {
                        let mut b = text.into_bytes();
                        gen::mutate(rng, &mut b, &[]);
                        text = String::from_utf8_lossy(&b).into_owned();
                    }
                }
            }
            tagged(rng.below(7) as u8, text.into_bytes())
        },
        &check_ottl,
    );
}

// ---------------------------------------------------------------------------------------------
// wal: persistent-queue segments.

fn context(rng: &mut Rng) -> weir::pdata::Context {
    use weir::extensions::auth::Identity;
    weir::pdata::Context {
        receiver: Arc::from(gen::word(rng)),
        transport: rng.pick(&["grpc", "http"]),
        metadata: rng.chance(50).then(|| {
            Arc::new(
                (0..rng.below(4))
                    .map(|_| (gen::word(rng), gen::word(rng)))
                    .collect(),
            )
        }),
        tenant: rng.chance(50).then(|| Arc::from(gen::word(rng))),
        auth: rng.chance(30).then(|| {
            Arc::new(Identity {
                method: "bearertokenauth",
                subject: Arc::from(gen::word(rng)),
            })
        }),
        ..Default::default()
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn segment(rng: &mut Rng) -> Vec<u8> {
    use weir::extensions::file_storage::wal;
    let mut seg = wal::SEGMENT_MAGIC.to_vec();
    let mut seq = rng.u64() % 1000;
    for _ in 0..rng.count(4) {
        if rng.chance(20) {
            // A release record, as the writer frames them.
            let n = rng.below(5);
            let mut body = vec![2u8];
            body.extend_from_slice(&0u64.to_le_bytes());
            body.extend_from_slice(&(n as u32).to_le_bytes());
            for _ in 0..n {
                body.extend_from_slice(&rng.u64().to_le_bytes());
            }
            seg.extend(frame(&body));
            continue;
        }
        let signal = signal_of(rng.below(3) as u8);
        let payload = request(rng, signal);
        let items = decoded_items(signal, &payload).unwrap_or(0);
        let batch = weir::pdata::Batch::encoded(
            signal,
            bytes::Bytes::from(payload),
            items,
            Arc::new(context(rng)),
        );
        seg.extend(wal::encode_record(seq, &batch));
        seq += 1;
    }
    seg
}

/// Mutates a record's body and frames it again with a good checksum, so the damage reaches
/// the record reader behind the checksum.
fn mutate_behind_crc(rng: &mut Rng, seg: &mut Vec<u8>) {
    let mut pos = 8usize;
    let mut records = Vec::new();
    while pos + 8 <= seg.len() {
        let len = u32::from_le_bytes([seg[pos], seg[pos + 1], seg[pos + 2], seg[pos + 3]]) as usize;
        let end = pos + 8 + len;
        if end > seg.len() {
            break;
        }
        records.push((pos, end));
        pos = end;
    }
    if records.is_empty() {
        return;
    }
    let (a, b) = rng.pick(&records);
    let mut body = seg[a + 8..b].to_vec();
    match rng.below(3) {
        // The context length, the items, the signal.
        0 if body.len() >= 18 => body[14 + rng.below(4)] = rng.next() as u8,
        1 if body.len() >= 18 => body[9 + rng.below(5)] = rng.next() as u8,
        _ => gen::mutate(rng, &mut body, &[]),
    }
    seg.splice(a..b, frame(&body));
}

fn check_wal(input: &[u8]) -> Result<String, String> {
    use weir::extensions::file_storage::wal;
    let s = wal::scan_bytes(input);
    if s.bad_bytes > s.len || s.len != input.len() as u64 {
        return Err(format!(
            "{} bad bytes of {} (the segment has {})",
            s.bad_bytes,
            s.len,
            input.len()
        ));
    }
    let mut unreadable = 0;
    for (seq, offset, items, bytes) in &s.data {
        match wal::record_in(input, *offset) {
            Ok(r) => {
                if r.items != *items || r.payload.len() != *bytes {
                    return Err(format!(
                        "record {seq} at {offset}: the scan says {items} items and {bytes} bytes, reading it gives {} and {}",
                        r.items,
                        r.payload.len()
                    ));
                }
            }
            // A context that does not read is counted and skipped at replay.
            Err("unreadable context") => unreadable += 1,
            Err(e) => {
                return Err(format!(
                    "record {seq} at {offset}: the scan accepted it, reading it: {e}"
                ))
            }
        }
    }
    Ok(format!(
        "{} data, {} released, damaged {}, unreadable {}",
        s.data.len().min(3),
        s.released.len().min(3),
        s.bad_bytes > 0,
        unreadable > 0
    ))
}

#[test]
fn wal() {
    fuzz(
        "wal",
        &|rng, pool| {
            let mut seg = if pool.is_empty() || rng.chance(30) {
                segment(rng)
            } else {
                rng.pick_ref(pool).clone()
            };
            match rng.below(4) {
                0 => {}
                1 => mutate_behind_crc(rng, &mut seg),
                // Torn: the tail of the last write is missing.
                2 => {
                    let n = rng.below(seg.len() + 1);
                    seg.truncate(n);
                }
                _ => {
                    let other = rng.pick_ref(pool).clone();
                    gen::mutate(rng, &mut seg, &other);
                }
            }
            seg
        },
        &check_wal,
    );
}

// ---------------------------------------------------------------------------------------------
// loki: the push encoder against Loki's wire format and label parser.

const LOKI_CONFIGS: &[&str] = &[
    "endpoint: http://127.0.0.1:1/loki/api/v1/push",
    "endpoint: http://127.0.0.1:1/loki/api/v1/push\ndefault_labels_enabled: {exporter: false, job: false, instance: false, level: false}",
    "endpoint: http://127.0.0.1:1/loki/api/v1/push\nlabels:\n  attributes: {level: severity, \"http.method\": \"\", \"9starts_with_digit\": \"\"}\n  resource: {service.name: service_name, \"a-b.c/d:e\": \"\"}\nstructured_metadata: true",
    "endpoint: http://127.0.0.1:1/loki/api/v1/push\nline_format: logfmt",
    "endpoint: http://127.0.0.1:1/loki/api/v1/push\nline_format: json\nmax_labels: 3\ndefault_labels_enabled: {exporter: false, job: false, instance: false}\nlabels: {attributes: {a: \"\", tenant: \"\"}}",
];

fn check_loki(input: &[u8]) -> Result<String, String> {
    use weir::exporters::loki::{self, config::LokiExporterConfig};
    let Some((&tag, buf)) = input.split_first() else {
        return Ok("empty".into());
    };
    let Ok(req) = ExportLogsServiceRequest::decode(buf) else {
        return Ok("not a logs request".into());
    };
    let yaml = LOKI_CONFIGS[tag as usize % LOKI_CONFIGS.len()];
    // As the config loader makes it: normalized (a label mapped to "" takes the attribute's
    // name), then validated.
    let mut cfg: LokiExporterConfig =
        serde_yaml::from_str(yaml).map_err(|e| format!("config {yaml:?}: {e}"))?;
    cfg.normalize();
    let invalid = cfg.validate();
    if !invalid.is_empty() {
        return Err(format!("config {yaml:?}: {invalid:?}"));
    }
    let max = [1usize, 200, 4096, 5 << 20][(tag as usize / 8) % 4];
    let tenant = (tag & 0x80 != 0).then_some("team-a");
    let records = weir::pdata::count_logs(&req);
    let mut entries = 0;
    for t in loki::Encoder::new(&cfg).group(&req, tenant) {
        let n = t.records;
        let parts = loki::split(t.streams, max);
        let mut got = 0;
        for p in &parts {
            let raw = p.encode_to_vec();
            let in_part: usize = p.streams.iter().map(|s| s.entries.len()).sum();
            if raw.len() > max && in_part > 1 {
                return Err(format!(
                    "a push request of {} bytes holds {in_part} entries past max {max}",
                    raw.len()
                ));
            }
            let body = snap::raw::Encoder::new()
                .compress_vec(&raw)
                .map_err(|e| e.to_string())?;
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&body)
                .map_err(|e| e.to_string())?;
            let pr = loki_fake::PushRequest::decode(raw.as_slice())
                .map_err(|e| format!("Loki cannot decode the push request: {e}"))?;
            for s in &pr.streams {
                loki_fake::parse_labels(&s.labels)
                    .map_err(|e| format!("Loki refuses the labels: {e}"))?;
                got += s.entries.len();
            }
            let json: serde_json::Value = serde_json::from_slice(&loki::to_json(p))
                .map_err(|e| format!("the JSON push body does not parse: {e}"))?;
            let json_entries: usize = json["streams"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s["values"].as_array().map_or(0, Vec::len))
                        .sum()
                })
                .unwrap_or(0);
            if json_entries != in_part {
                return Err(format!(
                    "the JSON body holds {json_entries} entries, the protobuf {in_part}"
                ));
            }
        }
        if got != n {
            return Err(format!(
                "tenant {:?}: {n} records grouped, {got} entries pushed",
                t.tenant
            ));
        }
        entries += got;
    }
    if entries != records {
        return Err(format!("{records} records in, {entries} entries out"));
    }
    Ok(format!("ok, {} records", records.min(3)))
}

#[test]
fn loki() {
    fuzz(
        "loki",
        &|rng, pool| {
            if pool.is_empty() || rng.chance(60) {
                return tagged(rng.next() as u8, gen::logs(rng).encode_to_vec());
            }
            let mut b = rng.pick_ref(pool).clone();
            if b.is_empty() {
                b.push(0);
            }
            b[0] = rng.next() as u8;
            if rng.chance(30) {
                gen::mutate(rng, &mut b, &[]);
            }
            b
        },
        &check_loki,
    );
}

// ---------------------------------------------------------------------------------------------
// remote_write: the translation against the remote-write spec.

fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn check_remote_write(input: &[u8]) -> Result<String, String> {
    use weir::exporters::prometheusremotewrite::{proto, split, translate};
    let Some((&tag, buf)) = input.split_first() else {
        return Ok("empty".into());
    };
    let Ok(req) = ExportMetricsServiceRequest::decode(buf) else {
        return Ok("not a metrics request".into());
    };
    // Namespaces as the config loader leaves them (normalized: `my-ns` becomes `my_ns`).
    let settings = translate::Settings {
        namespace: ["", "ns", "my_ns", "9x"][tag as usize % 4].to_string(),
        external_labels: if tag & 4 != 0 {
            vec![proto::Label {
                name: "cluster".into(),
                value: "c1".into(),
            }]
        } else {
            Vec::new()
        },
        resource_to_telemetry: tag & 8 != 0,
        target_info: tag & 16 != 0,
        add_suffixes: tag & 32 != 0,
        send_metadata: tag & 64 != 0,
    };
    let max = if tag & 128 != 0 { 300 } else { 3 << 20 };
    let t = translate::translate(&req, &settings);
    let mut series = 0;
    for body in split(t.series, t.metadata, max) {
        let w = proto::WriteRequest::decode(body.as_slice())
            .map_err(|e| format!("a WriteRequest that does not decode: {e}"))?;
        if body.len() > max && w.timeseries.len() > 1 {
            return Err(format!(
                "a WriteRequest of {} bytes with {} series past max {max}",
                body.len(),
                w.timeseries.len()
            ));
        }
        for ts in &w.timeseries {
            series += 1;
            let name = ts
                .labels
                .iter()
                .find(|l| l.name == "__name__")
                .ok_or_else(|| format!("a series without __name__: {:?}", ts.labels))?;
            if !valid_metric_name(&name.value) {
                return Err(format!("invalid metric name {:?}", name.value));
            }
            for l in &ts.labels {
                if !valid_label_name(&l.name) {
                    return Err(format!("invalid label name {:?}", l.name));
                }
            }
            for w in ts.labels.windows(2) {
                if w[0].name >= w[1].name {
                    return Err(format!(
                        "labels not sorted or repeated: {:?} then {:?}",
                        w[0].name, w[1].name
                    ));
                }
            }
            if ts.samples.is_empty() && ts.histograms.is_empty() {
                return Err(format!("a series with no samples: {:?}", ts.labels));
            }
            for h in &ts.histograms {
                if !(-4..=8).contains(&h.schema) {
                    return Err(format!("a native histogram with schema {}", h.schema));
                }
            }
        }
    }
    Ok(format!("ok, {} series", series.min(3)))
}

#[test]
fn remote_write() {
    fuzz(
        "remote_write",
        &|rng, pool| {
            if pool.is_empty() || rng.chance(60) {
                return tagged(rng.next() as u8, gen::metrics(rng).encode_to_vec());
            }
            let mut b = rng.pick_ref(pool).clone();
            if b.is_empty() {
                b.push(0);
            }
            b[0] = rng.next() as u8;
            if rng.chance(30) {
                gen::mutate(rng, &mut b, &[]);
            }
            b
        },
        &check_remote_write,
    );
}
