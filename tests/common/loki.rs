//! A faithful Loki push endpoint for tests, built from Loki's published wire format
//! (tests/proto/loki_push.proto, declared independently here): it checks what the real server
//! checks — method and path, content type, snappy (protobuf) or gzip (JSON) bodies, the label
//! set syntax, at least one label, entry order within a stream, the tenant header when
//! multi-tenancy is on — and records what it accepted per tenant. It answers 429/400/500 on
//! demand.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::task::JoinHandle;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Ts>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPair>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Ts {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// One accepted entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub tenant: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ts: i128,
    pub line: String,
    pub metadata: BTreeMap<String, String>,
}

/// One accepted request.
#[derive(Clone, Debug)]
pub struct Push {
    pub tenant: Option<String>,
    pub content_type: String,
    pub entries: usize,
}

#[derive(Default)]
pub struct LokiState {
    pub entries: Mutex<Vec<Entry>>,
    pub pushes: Mutex<Vec<Push>>,
    pub attempts: Mutex<usize>,
    /// Answer this (status, message) to the next `count` requests.
    pub fail: Mutex<Option<(u16, String, usize)>>,
    /// Multi-tenant mode: a request without the tenant header is refused (401).
    pub require_tenant: bool,
}

pub struct FakeLoki {
    pub port: u16,
    pub state: Arc<LokiState>,
    task: JoinHandle<()>,
}

impl Drop for FakeLoki {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLoki {
    pub async fn start(require_tenant: bool) -> FakeLoki {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(LokiState {
            require_tenant,
            ..Default::default()
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        FakeLoki { port, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/loki/api/v1/push", self.port)
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.state.entries.lock().unwrap().clone()
    }

    pub fn pushes(&self) -> Vec<Push> {
        self.state.pushes.lock().unwrap().clone()
    }

    pub fn fail_next(&self, status: u16, message: &str, count: usize) {
        *self.state.fail.lock().unwrap() = Some((status, message.to_owned(), count));
    }
}

fn answer(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg.to_owned())));
    *r.status_mut() = status;
    r
}

/// Parses `{a="b", c="d"}` as Loki does; errors like Loki's.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let t = s.trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .ok_or_else(|| format!("error parsing labels {s:?}: expected {{...}}"))?;
    let mut out = BTreeMap::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("error parsing labels {s:?}"))?;
        let name = rest[..eq].trim();
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "error parsing labels {s:?}: invalid label name {name:?}"
            ));
        }
        let after = rest[eq + 1..].trim_start();
        let body = after
            .strip_prefix('"')
            .ok_or_else(|| format!("error parsing labels {s:?}"))?;
        let mut val = String::new();
        let mut end = None;
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => val.push('\n'),
                    Some((_, x)) => val.push(x),
                    None => return Err(format!("error parsing labels {s:?}")),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => val.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("error parsing labels {s:?}: unterminated value"))?;
        out.insert(name.to_owned(), val);
        rest = body[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    if out.is_empty() {
        return Err("error at least one label pair is required per stream".into());
    }
    Ok(out)
}

/// A stream as received: its labels text and (timestamp ns, line, structured metadata).
type RawStream = (String, Vec<(i128, String, BTreeMap<String, String>)>);

async fn handle(st: &LokiState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    *st.attempts.lock().unwrap() += 1;
    if req.method() != http::Method::POST || req.uri().path() != "/loki/api/v1/push" {
        return answer(StatusCode::NOT_FOUND, "404 page not found");
    }
    let tenant = req
        .headers()
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if st.require_tenant && tenant.is_none() {
        return answer(StatusCode::UNAUTHORIZED, "no org id");
    }
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let gz = req
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        == Some("gzip");
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST, "cannot read body");
    };
    if let Some((status, msg, n)) = st.fail.lock().unwrap().as_mut() {
        if *n > 0 {
            *n -= 1;
            return answer(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                msg,
            );
        }
    }
    // (labels text, [(ts ns, line, metadata)])
    let streams: Vec<RawStream> = if ct.starts_with("application/x-protobuf") {
        let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
            Ok(r) => r,
            Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("snappy: {e}")),
        };
        let pr = match PushRequest::decode(raw.as_slice()) {
            Ok(p) => p,
            Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("proto: {e}")),
        };
        pr.streams
            .into_iter()
            .map(|s| {
                let entries = s
                    .entries
                    .into_iter()
                    .map(|e| {
                        let ts = e
                            .timestamp
                            .map(|t| t.seconds as i128 * 1_000_000_000 + t.nanos as i128)
                            .unwrap_or(0);
                        let md = e
                            .structured_metadata
                            .into_iter()
                            .map(|p| (p.name, p.value))
                            .collect();
                        (ts, e.line, md)
                    })
                    .collect();
                (s.labels, entries)
            })
            .collect()
    } else if ct.starts_with("application/json") {
        let raw = if gz {
            use std::io::Read;
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .is_err()
            {
                return answer(StatusCode::BAD_REQUEST, "gzip");
            }
            out
        } else {
            body.to_vec()
        };
        let v: serde_json::Value = match serde_json::from_slice(&raw) {
            Ok(v) => v,
            Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("json: {e}")),
        };
        let mut out = Vec::new();
        for s in v["streams"].as_array().cloned().unwrap_or_default() {
            let labels: Vec<String> = s["stream"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                serde_json::to_string(v.as_str().unwrap_or("")).unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let entries = s["values"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|e| {
                    let ts: i128 = e[0].as_str().and_then(|x| x.parse().ok()).unwrap_or(-1);
                    let md = e[2]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    (ts, e[1].as_str().unwrap_or("").to_owned(), md)
                })
                .collect();
            out.push((format!("{{{}}}", labels.join(", ")), entries));
        }
        out
    } else {
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("unsupported content type {ct:?}"),
        );
    };
    let mut accepted = Vec::new();
    for (labels, entries) in streams {
        let parsed = match parse_labels(&labels) {
            Ok(p) => p,
            Err(e) => return answer(StatusCode::BAD_REQUEST, &e),
        };
        let mut last = i128::MIN;
        for (ts, line, md) in entries {
            if ts < last {
                return answer(
                    StatusCode::BAD_REQUEST,
                    &format!("entry out of order for stream {labels}"),
                );
            }
            last = ts;
            accepted.push(Entry {
                tenant: tenant.clone(),
                labels: parsed.clone(),
                ts,
                line,
                metadata: md,
            });
        }
    }
    st.pushes.lock().unwrap().push(Push {
        tenant,
        content_type: ct,
        entries: accepted.len(),
    });
    st.entries.lock().unwrap().extend(accepted);
    answer(StatusCode::NO_CONTENT, "")
}
