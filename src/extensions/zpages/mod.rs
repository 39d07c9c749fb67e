//! The `zpages` extension: live pages about the running weir on an HTTP endpoint, at the
//! Collector's paths: `/debug/servicez` (version, start time, links), `/debug/pipelinez`
//! (every pipeline and its receivers, processors and exporters), `/debug/extensionz` (the
//! extensions running), `/debug/featurez` (feature gates: weir has none), `/debug/tracez`
//! (weir records no spans of its own, and says so) and, with `expvar.enabled`,
//! `/debug/expvarz` (weir's self-metrics as JSON, in place of Go's expvar).
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

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
    type_name: "zpages",
    aliases: &[],
    stability: &[(Handles::Extension, Stability::Beta)],
    description: "live pages: service, pipelines, extensions, feature gates (/debug/*z)",
    decode: Decode::Extension(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExtensionSettings>> {
    let c = b.decode_checked::<ZPagesConfig>(|c| c.validate())?;
    Some(Box::new(c))
}

impl ExtensionSettings for ZPagesConfig {
    fn endpoint(&self) -> Option<&str> {
        Some(&self.endpoint)
    }
    fn server(&self, env: &ServerEnv<'_>) -> Option<ExtensionServer> {
        // The pages show the config in force: a reload that changes it restarts the server
        // with the new picture.
        let snapshot = Snapshot {
            pipelines: env.pipelines.to_vec(),
            extensions: env
                .extensions
                .iter()
                .map(|id| {
                    let ty = id.split('/').next().unwrap_or(id).to_string();
                    (id.clone(), ty)
                })
                .collect(),
        };
        let spec = format!("{self:?} {snapshot:?}");
        let svc = ZPagesService {
            cfg: Arc::new(self.clone()),
            snapshot: Arc::new(snapshot),
            registry: env.registry.clone(),
            started: env.started,
        };
        Some(ExtensionServer {
            spec,
            endpoint: self.endpoint.clone(),
            serve: Box::new(move |l, stop| {
                crate::net::serve(
                    l,
                    svc,
                    crate::net::Protocol::Auto,
                    stop,
                    std::time::Duration::from_secs(1),
                )
            }),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZPagesConfig {
    /// `host:port` (default `localhost:55679`, as upstream).
    pub endpoint: String,
    pub expvar: Expvar,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expvar {
    /// Serve `/debug/expvarz` (default off, as upstream).
    pub enabled: bool,
}

impl Default for ZPagesConfig {
    fn default() -> Self {
        ZPagesConfig {
            endpoint: "localhost:55679".into(),
            expvar: Expvar::default(),
        }
    }
}

impl ZPagesConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        match crate::net::check_endpoint(&self.endpoint) {
            Ok(()) => Vec::new(),
            Err(e) => vec![("endpoint".into(), e)],
        }
    }
}

/// One pipeline as the pages show it: id, receivers, processors, exporters.
pub use crate::pipeline::registry::PipelineRow;

/// What the pages show: taken from the config in force when the server (re)starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub pipelines: Vec<PipelineRow>,
    /// (extension id, its type)
    pub extensions: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct ZPagesService {
    pub cfg: Arc<ZPagesConfig>,
    pub snapshot: Arc<Snapshot>,
    pub registry: Arc<crate::telemetry::metrics::Registry>,
    pub started: std::time::SystemTime,
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head><body>\n\
         <h1>{t}</h1>\n<p><a href=\"/debug/servicez\">servicez</a> · <a href=\"/debug/pipelinez\">pipelinez</a> · \
         <a href=\"/debug/extensionz\">extensionz</a> · <a href=\"/debug/featurez\">featurez</a> · \
         <a href=\"/debug/tracez\">tracez</a></p>\n{body}</body></html>\n",
        t = esc(title)
    )
}

fn list(items: &[String]) -> String {
    items.iter().map(|i| esc(i)).collect::<Vec<_>>().join(", ")
}

impl ZPagesService {
    fn render(&self, path: &str) -> Option<(&'static str, String)> {
        let html = "text/html; charset=utf-8";
        match path {
            "/debug/servicez" => {
                let since = self
                    .started
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let up = self.started.elapsed().map_or(0, |d| d.as_secs());
                let body = format!(
                    "<table>\n<tr><th>Command</th><td>weir</td></tr>\n\
                     <tr><th>Version</th><td>{}</td></tr>\n\
                     <tr><th>Start time (Unix seconds)</th><td>{since}</td></tr>\n\
                     <tr><th>Uptime</th><td>{up} s</td></tr>\n</table>\n",
                    env!("CARGO_PKG_VERSION")
                );
                Some((html, page("Service", &body)))
            }
            "/debug/pipelinez" => {
                let mut body = String::from(
                    "<table>\n<tr><th>Pipeline</th><th>Receivers</th><th>Processors</th><th>Exporters</th></tr>\n",
                );
                for (id, r, p, e) in &self.snapshot.pipelines {
                    let _ = writeln!(
                        body,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(id),
                        list(r),
                        list(p),
                        list(e)
                    );
                }
                body.push_str("</table>\n");
                Some((html, page("Pipelines", &body)))
            }
            "/debug/extensionz" => {
                let mut body = String::from("<table>\n<tr><th>Extension</th><th>Type</th></tr>\n");
                for (id, ty) in &self.snapshot.extensions {
                    let _ = writeln!(body, "<tr><td>{}</td><td>{}</td></tr>", esc(id), esc(ty));
                }
                body.push_str("</table>\n");
                Some((html, page("Extensions", &body)))
            }
            "/debug/featurez" => Some((
                html,
                page(
                    "Feature gates",
                    "<table>\n<tr><th>ID</th><th>Enabled</th><th>Stage</th><th>Description</th></tr>\n</table>\n\
                     <p>weir has no feature gates.</p>\n",
                ),
            )),
            "/debug/tracez" => Some((
                html,
                page(
                    "Traces",
                    "<p>weir records no spans of its own: there are no sampled spans to show.</p>\n",
                ),
            )),
            "/debug/expvarz" if self.cfg.expvar.enabled => {
                // Every self-metric sample, `name{labels}` → value.
                let mut vars = serde_json::Map::new();
                for line in self.registry.render().lines() {
                    if line.starts_with('#') {
                        continue;
                    }
                    if let Some((name, value)) = line.rsplit_once(' ') {
                        if let Ok(v) = value.parse::<f64>() {
                            vars.insert(name.to_string(), serde_json::json!(v));
                        }
                    }
                }
                Some((
                    "application/json",
                    serde_json::Value::Object(vars).to_string() + "\n",
                ))
            }
            _ => None,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ZPagesService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let (status, ct, body) = match self.render(req.uri().path()) {
            Some((ct, body)) => (StatusCode::OK, ct, body),
            None => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "404 page not found\n".to_string(),
            ),
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        std::future::ready(Ok(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(expvar: bool) -> ZPagesService {
        ZPagesService {
            cfg: Arc::new(ZPagesConfig {
                expvar: Expvar { enabled: expvar },
                ..Default::default()
            }),
            snapshot: Arc::new(Snapshot {
                pipelines: vec![(
                    "traces/<b>".into(),
                    vec!["otlp".into()],
                    vec!["batch".into(), "tenant".into()],
                    vec!["otlp/tempo".into()],
                )],
                extensions: vec![("zpages".into(), "zpages".into())],
            }),
            registry: crate::telemetry::metrics::Registry::new(),
            started: std::time::SystemTime::now(),
        }
    }

    #[test]
    fn pages_show_the_running_config_escaped() {
        let s = service(false);
        let (_, p) = s.render("/debug/pipelinez").expect("pipelinez");
        assert!(
            p.contains(
                "<td>traces/&lt;b&gt;</td><td>otlp</td><td>batch, tenant</td><td>otlp/tempo</td>"
            ),
            "{p}"
        );
        let (_, e) = s.render("/debug/extensionz").expect("extensionz");
        assert!(e.contains("<td>zpages</td><td>zpages</td>"), "{e}");
        let (_, v) = s.render("/debug/servicez").expect("servicez");
        assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
        assert!(s.render("/debug/featurez").is_some());
        assert!(s.render("/debug/tracez").is_some());
        assert!(
            s.render("/debug/expvarz").is_none(),
            "expvar off by default"
        );
        assert!(s.render("/").is_none());
        assert!(service(true).render("/debug/expvarz").is_some());
    }

    #[test]
    fn config_defaults_and_errors() {
        let c: ZPagesConfig = serde_yaml::from_str("{}").expect("empty");
        assert_eq!(c.endpoint, "localhost:55679");
        assert!(!c.expvar.enabled);
        let bad: ZPagesConfig = serde_yaml::from_str("endpoint: 'nope'").expect("yaml");
        assert_eq!(bad.validate().len(), 1);
        assert!(serde_yaml::from_str::<ZPagesConfig>("endpoint: x:1\nfoo: 1").is_err());
    }
}
