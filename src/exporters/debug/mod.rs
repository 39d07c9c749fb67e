//! The `debug` exporter: writes what it receives to stdout, for trying pipelines out.
//! `basic` prints one line per batch, `normal` one line per item, `detailed` everything
//! as OTLP/JSON. Never use it as a real destination: it decodes every batch.
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Deserialize;

use crate::config::loader::Body;
use crate::exporters::helper::{BoxFuture, ExportError, Sender, Sent};
use crate::pdata::{Batch, Payload};
use crate::pipeline::registry::{
    all_signals, Decode, ExporterParts, ExporterSettings, Factory, Stability,
};

pub static FACTORY: Factory = Factory {
    type_name: "debug",
    aliases: &[],
    stability: &all_signals(Stability::Development),
    description: "prints data to stdout",
    decode: Decode::Exporter(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExporterSettings>> {
    let c = b.decode_checked::<DebugConfig>(|_| Vec::new())?;
    Some(Box::new(c))
}

impl ExporterSettings for DebugConfig {
    fn build(
        &self,
        id: &str,
        registry: &Arc<crate::telemetry::metrics::Registry>,
    ) -> Result<ExporterParts, String> {
        let _ = (id, registry);
        Ok(ExporterParts {
            sender: DebugSender::new(id, self),
            queue: Default::default(),
            retry: Default::default(),
            timeout: std::time::Duration::from_secs(5),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Normal,
    Detailed,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// `basic` (default), `normal` or `detailed`.
    pub verbosity: Verbosity,
    /// Batches printed in full each second before sampling starts (default 2).
    pub sampling_initial: u64,
    /// After that, print every Nth batch in the same second (default 1 = all).
    pub sampling_thereafter: u64,
    /// Write through weir's own logger (stderr, with its level and encoding), as upstream
    /// does by default; `false` writes the text alone to stdout.
    pub use_internal_logger: bool,
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            verbosity: Verbosity::Basic,
            sampling_initial: 2,
            sampling_thereafter: 1,
            use_internal_logger: true,
        }
    }
}

pub struct DebugSender {
    cfg: DebugConfig,
    id: Arc<str>,
    /// (second, count in that second) packed: second << 32 | count.
    window: AtomicU64,
}

impl DebugSender {
    pub fn new(id: &str, cfg: &DebugConfig) -> Arc<Self> {
        Arc::new(DebugSender {
            cfg: cfg.clone(),
            id: Arc::from(id),
            window: AtomicU64::new(0),
        })
    }

    fn sampled(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            & 0xffff_ffff;
        let prev = self.window.load(Ordering::Relaxed);
        let n = if prev >> 32 == now {
            (prev & 0xffff_ffff) + 1
        } else {
            1
        };
        self.window.store(now << 32 | n, Ordering::Relaxed);
        n <= self.cfg.sampling_initial
            || (n - self.cfg.sampling_initial).is_multiple_of(self.cfg.sampling_thereafter.max(1))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The text the exporter prints for a batch.
pub fn render(batch: &Batch, verbosity: Verbosity) -> Result<String, String> {
    let mut b = batch.clone();
    b.decode().map_err(|e| e.to_string())?;
    let mut out = format!(
        "{}: {} {} (receiver {}, {})\n",
        batch.signal,
        batch.items,
        batch.signal.item_noun(),
        batch.context.receiver,
        batch.context.transport
    );
    match verbosity {
        Verbosity::Basic => {}
        Verbosity::Detailed => {
            let json = match &b.payload {
                Payload::Traces(r) => serde_json::to_string_pretty(r),
                Payload::Metrics(r) => serde_json::to_string_pretty(r),
                Payload::Logs(r) => serde_json::to_string_pretty(r),
                Payload::Encoded(_) => Ok(String::new()),
            }
            .map_err(|e| e.to_string())?;
            out.push_str(&json);
            out.push('\n');
        }
        Verbosity::Normal => match &b.payload {
            Payload::Traces(r) => {
                for s in r
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .flat_map(|ss| &ss.spans)
                {
                    out.push_str(&format!(
                        "{} {} {} {}ns\n",
                        s.name,
                        hex(&s.trace_id),
                        hex(&s.span_id),
                        s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano)
                    ));
                }
            }
            Payload::Logs(r) => {
                for l in r
                    .resource_logs
                    .iter()
                    .flat_map(|rl| &rl.scope_logs)
                    .flat_map(|sl| &sl.log_records)
                {
                    let body = l
                        .body
                        .as_ref()
                        .map(|b| format!("{:?}", b.value))
                        .unwrap_or_default();
                    out.push_str(&format!("{} {}\n", l.severity_text, body));
                }
            }
            Payload::Metrics(r) => {
                for m in r
                    .resource_metrics
                    .iter()
                    .flat_map(|rm| &rm.scope_metrics)
                    .flat_map(|sm| &sm.metrics)
                {
                    out.push_str(&format!("{} {}\n", m.name, m.unit));
                }
            }
            Payload::Encoded(_) => {}
        },
    }
    Ok(out)
}

impl Sender for DebugSender {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            if !self.sampled() {
                return Ok(Sent::default());
            }
            let text = render(batch, self.cfg.verbosity)
                .map_err(|e| ExportError::permanent(format!("{}: {e}", self.id)))?;
            if self.cfg.use_internal_logger {
                tracing::info!(exporter = %self.id, "{}", text.trim_end());
            } else {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            Ok(Sent::default())
        })
    }
}
