//! The `pprof` extension: CPU profiles of the running weir over HTTP, in the pprof format
//! (`/debug/pprof/profile?seconds=N`, gzip-compressed protobuf, what `go tool pprof`, Pyroscope
//! and speedscope read), sampled by the `pprof` crate (SIGPROF, 99 Hz). `save_to_file` profiles
//! from start to shutdown and writes the file then. Go's other profiles (heap, goroutine,
//! block, mutex, ...) have no counterpart in weir: their paths answer 404 saying so, and
//! `block_profile_fraction` / `mutex_profile_fraction` are accepted with a warning.
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::config::loader::Body;
use crate::pipeline::registry::{
    Decode, ExtensionServer, ExtensionSettings, Factory, Handles, ServerEnv, Stability,
};

pub static FACTORY: Factory = Factory {
    type_name: "pprof",
    aliases: &[],
    stability: &[(Handles::Extension, Stability::Beta)],
    description: "CPU profiles over HTTP in pprof format (/debug/pprof/profile)",
    decode: Decode::Extension(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExtensionSettings>> {
    let c = b.decode_checked::<PprofConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ExtensionSettings for PprofConfig {
    fn endpoint(&self) -> Option<&str> {
        Some(&self.endpoint)
    }
    fn start_warnings(&self) -> Vec<String> {
        self.without_effect()
            .into_iter()
            .map(|k| format!("{k} has no effect in weir"))
            .collect()
    }
    fn server(&self, _env: &ServerEnv<'_>) -> Option<ExtensionServer> {
        let save_path = self.save_to_file.clone();
        Some(ExtensionServer {
            spec: format!("{self:?}"),
            endpoint: self.endpoint.clone(),
            serve: Box::new(move |l, stop| {
                // save_to_file profiles from before the first request (then an on-demand
                // profile is refused, saying why) until the server stops (shutdown, or a
                // reload that changes it), and writes the file then.
                let save = (!save_path.is_empty()).then(|| save_to_file(save_path, stop.clone()));
                let serve = crate::net::serve(
                    l,
                    PprofService,
                    crate::net::Protocol::Auto,
                    stop,
                    Duration::from_secs(1),
                );
                match save {
                    None => serve,
                    Some(save) => {
                        let save = tokio::spawn(save);
                        tokio::spawn(async move {
                            let _ = serve.await;
                            let _ = save.await;
                        })
                    }
                }
            }),
        })
    }
}

/// Samples per second.
const FREQUENCY: i32 = 99;
/// The longest profile one request may ask for.
const MAX_SECONDS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PprofConfig {
    /// `host:port` (default `localhost:1777`, as upstream).
    pub endpoint: String,
    /// Go's block profile rate: no counterpart in weir (warned at start when set).
    pub block_profile_fraction: i64,
    /// Go's mutex profile fraction: no counterpart in weir (warned at start when set).
    pub mutex_profile_fraction: i64,
    /// Profile the CPU from start to shutdown and write it here (pprof format).
    pub save_to_file: String,
}

impl Default for PprofConfig {
    fn default() -> Self {
        PprofConfig {
            endpoint: "localhost:1777".into(),
            block_profile_fraction: 0,
            mutex_profile_fraction: 0,
            save_to_file: String::new(),
        }
    }
}

impl PprofConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Err(e) = crate::net::check_endpoint(&self.endpoint) {
            errs.push(("endpoint".into(), e));
        }
        if self.block_profile_fraction < 0 {
            errs.push(("block_profile_fraction".into(), "must be >= 0".into()));
        }
        if self.mutex_profile_fraction < 0 {
            errs.push(("mutex_profile_fraction".into(), "must be >= 0".into()));
        }
        errs
    }

    /// Keys accepted that do nothing in weir, for the start-up warning.
    pub fn without_effect(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.block_profile_fraction != 0 {
            v.push("block_profile_fraction (Go's block profile; weir has none)");
        }
        if self.mutex_profile_fraction != 0 {
            v.push("mutex_profile_fraction (Go's mutex profile; weir has none)");
        }
        v
    }
}

/// The pprof wire format (profile.proto of github.com/google/pprof), the fields weir writes.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

/// Interns strings into a pprof string table (index 0 is "").
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// A pprof profile of what `guard` sampled: one location per frame, one function per
/// symbol name, samples counted and weighted by the sampling period.
fn to_profile(report: &pprof::Report, start: std::time::SystemTime) -> proto::Profile {
    let mut strings = Strings::new();
    let period = 1_000_000_000 / i64::from(FREQUENCY);
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut out = proto::Profile {
        sample_type: vec![
            proto::ValueType {
                r#type: strings.id("samples"),
                unit: strings.id("count"),
            },
            proto::ValueType {
                r#type: strings.id("cpu"),
                unit: strings.id("nanoseconds"),
            },
        ],
        period_type: Some(proto::ValueType {
            r#type: strings.id("cpu"),
            unit: strings.id("nanoseconds"),
        }),
        period,
        time_nanos: start
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: report.timing.duration.as_nanos() as i64,
        ..Default::default()
    };
    for (frames, count) in &report.data {
        let mut location_ids = Vec::new();
        for frame in &frames.frames {
            let mut lines = Vec::new();
            for sym in frame {
                let name = sym.name();
                let file = sym
                    .filename
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let next = functions.len() as u64 + 1;
                let fid = *functions
                    .entry((name.clone(), file.clone()))
                    .or_insert(next);
                if fid == next {
                    let n = strings.id(&name);
                    out.function.push(proto::Function {
                        id: fid,
                        name: n,
                        system_name: n,
                        filename: strings.id(&file),
                    });
                }
                lines.push(proto::Line {
                    function_id: fid,
                    line: i64::from(sym.lineno.unwrap_or(0)),
                });
            }
            let id = out.location.len() as u64 + 1;
            out.location.push(proto::Location {
                id,
                address: 0,
                line: lines,
            });
            location_ids.push(id);
        }
        let n = *count as i64;
        out.sample.push(proto::Sample {
            location_id: location_ids,
            value: vec![n, n * period],
        });
    }
    out.string_table = strings.table;
    out
}

/// The encoded, gzip-compressed profile (as Go's pprof handler serves it).
fn encode(profile: &proto::Profile) -> Vec<u8> {
    crate::compression::gzip(&prost::Message::encode_to_vec(profile))
}

/// Samples the CPU for `seconds` and returns the encoded profile.
async fn profile_for(seconds: u64) -> Result<Vec<u8>, String> {
    let start = std::time::SystemTime::now();
    // One profile at a time per process (the sampler is process-wide): a second request,
    // or one while save_to_file profiles, is told so.
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| format!("cannot start the profiler: {e}"))?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    // Symbolising walks debug info: off the runtime's workers.
    crate::compression::on_pool(move || {
        let report = guard
            .report()
            .build()
            .map_err(|e| format!("cannot build the profile: {e}"))?;
        Ok(encode(&to_profile(&report, start)))
    })
    .await
}

/// Starts profiling now (before the server takes requests, so an on-demand profile cannot
/// slip in first) and returns the task that, when `stop` fires, writes the profile to `path`.
pub fn save_to_file(
    path: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send {
    let start = std::time::SystemTime::now();
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build();
    async move {
        let guard = match guard {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("pprof: cannot start the profiler for save_to_file: {e}");
                return;
            }
        };
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        let written = crate::compression::on_pool(move || -> Result<(), String> {
            let report = guard.report().build().map_err(|e| e.to_string())?;
            std::fs::write(&path, encode(&to_profile(&report, start)))
                .map_err(|e| format!("{path}: {e}"))
        })
        .await;
        match written {
            Ok(()) => tracing::info!("pprof: CPU profile written (save_to_file)"),
            Err(e) => tracing::error!("pprof: cannot write the CPU profile: {e}"),
        }
    }
}

#[derive(Clone)]
pub struct PprofService;

fn reply(status: StatusCode, ct: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// `seconds=N` of a query string (default 30, as Go's handler).
fn seconds(query: Option<&str>) -> Result<u64, String> {
    let Some(q) = query else { return Ok(30) };
    for pair in q.split('&') {
        if let Some(v) = pair.strip_prefix("seconds=") {
            let n: u64 = v
                .parse()
                .map_err(|_| format!("invalid seconds {v:?}: a whole number is expected"))?;
            if n == 0 || n > MAX_SECONDS {
                return Err(format!("seconds must be 1 to {MAX_SECONDS}, got {n}"));
            }
            return Ok(n);
        }
    }
    Ok(30)
}

impl hyper::service::Service<Request<Incoming>> for PprofService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        Box::pin(async move {
            let text = "text/plain; charset=utf-8";
            Ok(match path.as_str() {
                "/debug/pprof/" | "/debug/pprof" => reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    Bytes::from_static(
                        b"<!DOCTYPE html>\n<html><head><title>/debug/pprof/</title></head><body>\n\
                          <p>weir profiles:</p>\n<ul>\n\
                          <li><a href=\"profile?seconds=30\">profile</a>: CPU profile (pprof format, gzip), <code>?seconds=N</code> (default 30)</li>\n\
                          <li><a href=\"cmdline\">cmdline</a>: the command line</li>\n\
                          </ul>\n<p>Go's heap, goroutine, block, mutex, allocs, threadcreate and trace profiles have no counterpart in weir.</p>\n</body></html>\n",
                    ),
                ),
                "/debug/pprof/profile" => match seconds(query.as_deref()) {
                    Err(e) => reply(StatusCode::BAD_REQUEST, text, Bytes::from(e + "\n")),
                    Ok(n) => match profile_for(n).await {
                        Ok(body) => {
                            let mut r =
                                reply(StatusCode::OK, "application/octet-stream", Bytes::from(body));
                            r.headers_mut().insert(
                                header::CONTENT_DISPOSITION,
                                HeaderValue::from_static("attachment; filename=\"profile\""),
                            );
                            r
                        }
                        Err(e) => reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            text,
                            Bytes::from(e + "\n"),
                        ),
                    },
                },
                "/debug/pprof/cmdline" => reply(
                    StatusCode::OK,
                    text,
                    Bytes::from(std::env::args().collect::<Vec<_>>().join("\x00")),
                ),
                p if p.starts_with("/debug/pprof/") => reply(
                    StatusCode::NOT_FOUND,
                    text,
                    Bytes::from(format!(
                        "{} is one of Go's profiles; weir has CPU profiles only (/debug/pprof/profile)\n",
                        &p["/debug/pprof/".len()..]
                    )),
                ),
                _ => reply(
                    StatusCode::NOT_FOUND,
                    text,
                    Bytes::from_static(b"404 page not found\n"),
                ),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_errors_and_keys_without_effect() {
        let c: PprofConfig = serde_yaml::from_str("{}").expect("empty");
        assert_eq!(c.endpoint, "localhost:1777");
        assert!(c.validate().is_empty());
        assert!(c.without_effect().is_empty());
        let c: PprofConfig =
            serde_yaml::from_str("block_profile_fraction: 3\nmutex_profile_fraction: -1")
                .expect("yaml");
        assert_eq!(c.validate().len(), 1);
        assert_eq!(c.without_effect().len(), 2);
        assert!(serde_yaml::from_str::<PprofConfig>("nope: 1").is_err());
    }

    #[test]
    fn seconds_parameter() {
        assert_eq!(seconds(None), Ok(30));
        assert_eq!(seconds(Some("debug=1&seconds=2")), Ok(2));
        assert!(seconds(Some("seconds=0")).is_err());
        assert!(seconds(Some("seconds=abc")).is_err());
        assert!(seconds(Some("seconds=100000")).is_err());
    }

    #[test]
    fn string_table_starts_empty_and_interns() {
        let mut s = Strings::new();
        assert_eq!(s.id(""), 0);
        assert_eq!(s.id("a"), 1);
        assert_eq!(s.id("a"), 1);
        assert_eq!(s.table, vec!["".to_string(), "a".to_string()]);
    }
}
