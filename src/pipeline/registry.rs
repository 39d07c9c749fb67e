//! The component registry. Each component's folder declares one [`Factory`]: its type name
//! and aliases, the signals it handles with their stability, a description, and how to decode
//! and validate its YAML body into settings. The settings know how to build the running
//! component. [`FACTORIES`] lists every factory, one line each; the config model,
//! `weir components`, validation, graph building and reload read it, and nothing outside a
//! component's folder names its settings type.
//!
//! To add a component: copy the folder of one like it (a processor, an exporter...), give it a
//! `FACTORY`, implement the settings trait of its kind, and add one line to [`FACTORIES`].
use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::inbox::{Gate, ReceiverOutput};
use super::Processor;
use crate::config::loader::Body;
use crate::exporters::helper::config::{QueueConfig, RetryConfig};
use crate::exporters::helper::Sender;
use crate::extensions::auth::{AuthConfig, AuthRef};
use crate::extensions::file_storage::{wal::Wal, StorageError};
use crate::pdata::{Batch, Signal};
use crate::telemetry::metrics::Registry;

/// Every component weir has: one line each.
pub static FACTORIES: &[&Factory] = &[
    &crate::receivers::otlp::FACTORY,
    &crate::processors::memory_limiter::FACTORY,
    &crate::processors::batch::FACTORY,
    &crate::processors::attributes::FACTORY,
    &crate::processors::attributes::RESOURCE_FACTORY,
    &crate::processors::filter::FACTORY,
    &crate::processors::probabilistic_sampler::FACTORY,
    &crate::processors::transform::FACTORY,
    &crate::processors::tail_sampling::FACTORY,
    &crate::processors::tenant::FACTORY,
    &crate::processors::cardinality_limiter::FACTORY,
    &crate::processors::deltatocumulative::FACTORY,
    &crate::exporters::otlp::FACTORY,
    &crate::exporters::otlphttp::FACTORY,
    &crate::exporters::loki::FACTORY,
    &crate::exporters::prometheusremotewrite::FACTORY,
    &crate::exporters::debug::FACTORY,
    &crate::exporters::prometheus::FACTORY,
    &crate::exporters::loadbalancing::FACTORY,
    &crate::connectors::routing::FACTORY,
    &crate::connectors::spanmetrics::FACTORY,
    &crate::connectors::servicegraph::FACTORY,
    &crate::connectors::sum::FACTORY,
    &crate::extensions::health_check::FACTORY,
    &crate::extensions::pprof::FACTORY,
    &crate::extensions::zpages::FACTORY,
    &crate::extensions::file_storage::FACTORY,
    &crate::extensions::auth::BEARER_FACTORY,
    &crate::extensions::auth::BASIC_FACTORY,
    &crate::extensions::auth::HEADERS_SETTER_FACTORY,
];

/// The kinds of component, as the config's sections name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Receiver,
    Processor,
    Exporter,
    Connector,
    Extension,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
            Kind::Connector => "connector",
            Kind::Extension => "extension",
        }
    }

    /// The config section of this kind (`receivers`, ...).
    pub fn section(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
            Kind::Connector => "connectors",
            Kind::Extension => "extensions",
        }
    }
}

/// Stability levels, as the Collector names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stability {
    Development,
    Alpha,
    Beta,
    Stable,
    Deprecated,
}

impl Stability {
    pub fn as_str(self) -> &'static str {
        match self {
            Stability::Development => "development",
            Stability::Alpha => "alpha",
            Stability::Beta => "beta",
            Stability::Stable => "stable",
            Stability::Deprecated => "deprecated",
        }
    }
}

/// What a stability level applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handles {
    /// A receiver, processor or exporter of this signal.
    Signal(Signal),
    /// A connector fed one signal that emits another (`traces_to_metrics`).
    Pair(Signal, Signal),
    /// An extension (no signal).
    Extension,
}

/// How a factory decodes its YAML body: one function per kind. Each is pure (no sockets, no
/// files written) and reports every problem through the [`Body`].
pub enum Decode {
    Receiver(fn(&mut Body<'_>) -> Option<Box<dyn ReceiverSettings>>),
    Processor(fn(&mut Body<'_>) -> Option<Box<dyn ProcessorSettings>>),
    Exporter(fn(&mut Body<'_>) -> Option<Box<dyn ExporterSettings>>),
    Connector(fn(&mut Body<'_>) -> Option<Box<dyn ConnectorSettings>>),
    Extension(fn(&mut Body<'_>) -> Option<Box<dyn ExtensionSettings>>),
}

/// One component type.
pub struct Factory {
    pub type_name: &'static str,
    /// Other names the Collector knows the type by (`otlp_grpc` for `otlp`).
    pub aliases: &'static [&'static str],
    pub stability: &'static [(Handles, Stability)],
    pub description: &'static str,
    pub decode: Decode,
}

/// Stability `s` for each of traces, metrics and logs.
pub const fn all_signals(s: Stability) -> [(Handles, Stability); 3] {
    [
        (Handles::Signal(Signal::Traces), s),
        (Handles::Signal(Signal::Metrics), s),
        (Handles::Signal(Signal::Logs), s),
    ]
}

impl Factory {
    pub fn kind(&self) -> Kind {
        match self.decode {
            Decode::Receiver(_) => Kind::Receiver,
            Decode::Processor(_) => Kind::Processor,
            Decode::Exporter(_) => Kind::Exporter,
            Decode::Connector(_) => Kind::Connector,
            Decode::Extension(_) => Kind::Extension,
        }
    }

    /// Whether this receiver, processor or exporter handles `signal`.
    pub fn handles(&self, signal: Signal) -> bool {
        self.stability
            .iter()
            .any(|(h, _)| *h == Handles::Signal(signal))
    }

    /// `traces:beta,metrics:beta`, `traces_to_metrics:alpha`, `extension:beta`.
    pub fn stability_text(&self) -> String {
        self.stability
            .iter()
            .map(|(h, s)| {
                let what = match h {
                    Handles::Signal(sig) => sig.as_str().to_string(),
                    Handles::Pair(a, b) => format!("{}_to_{}", a.as_str(), b.as_str()),
                    Handles::Extension => "extension".to_string(),
                };
                format!("{what}:{}", s.as_str())
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The factory of `kind` named `type_name` (or one of its aliases).
pub fn lookup(kind: Kind, type_name: &str) -> Option<&'static Factory> {
    FACTORIES
        .iter()
        .copied()
        .find(|f| f.kind() == kind && (f.type_name == type_name || f.aliases.contains(&type_name)))
}

/// The type names of one kind, for "weir has: ..." messages.
pub fn type_names(kind: Kind) -> Vec<&'static str> {
    FACTORIES
        .iter()
        .filter(|f| f.kind() == kind)
        .map(|f| f.type_name)
        .collect()
}

/// What every component's settings are: printable, comparable across types (a reload keeps a
/// component whose settings are equal), shareable between threads.
pub trait Settings: std::fmt::Debug + Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    /// Equal to `other` (false when `other` is another type).
    fn same_as(&self, other: &dyn Any) -> bool;
}

impl<T: std::fmt::Debug + PartialEq + Send + Sync + 'static> Settings for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn same_as(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>().is_some_and(|o| o == self)
    }
}

/// A configured component: its type and its decoded settings.
pub struct Component<S: ?Sized> {
    pub type_name: &'static str,
    pub settings: Arc<S>,
}

impl<S: ?Sized> Clone for Component<S> {
    fn clone(&self) -> Self {
        Component {
            type_name: self.type_name,
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S: ?Sized + Settings> PartialEq for Component<S> {
    fn eq(&self, other: &Self) -> bool {
        self.type_name == other.type_name && self.settings.same_as(other.settings.as_any())
    }
}

impl<S: ?Sized + Settings> std::fmt::Debug for Component<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.type_name, &*self.settings)
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An `auth:` reference in a component's settings, for the config to resolve.
pub struct AuthSlot<'a> {
    /// The key path under the component (`protocols.grpc.auth`).
    pub key: String,
    pub auth: &'a mut AuthRef,
}

/// A receiver that started: where it listens and what runs it.
pub struct RunningReceiver {
    pub addrs: Vec<(&'static str, SocketAddr)>,
    pub tasks: Vec<JoinHandle<()>>,
    /// The sockets it listens on, kept so a reload that changes it reuses them.
    pub listeners: Vec<(&'static str, String, std::net::TcpListener)>,
}

pub trait ReceiverSettings: Settings {
    /// The endpoints it listens on, as (key under the component, endpoint).
    fn endpoints(&self) -> Vec<(String, String)>;
    /// Its `auth:` references (receivers check clients).
    fn auth_slots(&mut self) -> Vec<AuthSlot<'_>> {
        Vec::new()
    }
    /// Binds (reusing `reuse`'s sockets for unchanged endpoints) and starts serving into
    /// `out` until `stop`.
    fn start<'a>(
        &'a self,
        out: ReceiverOutput,
        stop: watch::Receiver<bool>,
        grace: Duration,
        reuse: &'a [(&'static str, String, std::net::TcpListener)],
    ) -> BoxFuture<'a, Result<RunningReceiver, Box<dyn std::error::Error + Send + Sync>>>;
}

/// How a reload treats a processor stage that stays (same id, same type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// Rebuilt from its new settings.
    Rebuild,
    /// Its state is handed to the new pipeline.
    State,
    /// Its state is handed over only when the pipeline's exporters stay (what it holds goes
    /// where it was accepted for).
    StateWhenOutputsStay,
}

/// What a stage's build may use.
pub struct BuildEnv<'a> {
    pub registry: &'a Arc<Registry>,
    /// The pipeline's wake-up, for stages that release data on their own threads.
    pub wake: &'a Arc<Notify>,
}

pub trait ProcessorSettings: Settings {
    fn build(&self, id: &str, env: &BuildEnv<'_>) -> Box<dyn Processor>;
    fn carry(&self) -> Carry {
        Carry::Rebuild
    }
    /// A check receivers make before accepting for a pipeline with this stage.
    fn gate(&self, _id: &str, _registry: &Arc<Registry>) -> Option<Arc<dyn Gate>> {
        None
    }
    /// Bytes it buffers on its own budget (tail sampling), taken from the memory budget.
    fn buffered_bytes(&self) -> usize {
        0
    }
    /// The memory budget this stage sets, given the machine's memory (memory_limiter).
    fn memory_budget(&self, _total_memory: u64) -> Option<u64> {
        None
    }
}

/// How an exporter runs: the sender, and the queue, retry and timeout around it.
pub struct ExporterParts {
    pub sender: Arc<dyn Sender>,
    pub queue: QueueConfig,
    pub retry: RetryConfig,
    pub timeout: Duration,
}

pub trait ExporterSettings: Settings {
    fn build(&self, id: &str, registry: &Arc<Registry>) -> Result<ExporterParts, String>;
    /// The endpoints it listens on (an exporter that serves, like `prometheus`), as (key
    /// under the component, endpoint).
    fn endpoints(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Its `sending_queue`, when it has one a user configures.
    fn sending_queue(&self) -> Option<&QueueConfig> {
        None
    }
    /// Its `auth:` reference (exporters authenticate to their backend).
    fn auth_slot(&mut self) -> Option<AuthSlot<'_>> {
        None
    }
}

impl dyn ExporterSettings {
    /// The `file_storage` extension its sending queue persists to.
    pub fn storage(&self) -> Option<&str> {
        self.sending_queue()
            .filter(|q| q.enabled)
            .and_then(|q| q.storage.as_deref())
    }
}

/// Where a connector hands data: target pipeline id -> its inbox.
pub type Targets = BTreeMap<String, mpsc::Sender<Batch>>;

/// A running connector: an exporter of some pipelines, a receiver of others.
pub trait Connector: Send + Sync {
    /// Takes a batch from a pipeline that exports to it (waits for room downstream).
    fn push(&self, batch: Batch) -> BoxFuture<'_, ()>;
    /// The pipelines it feeds now (set at start and on every reload). A connector with work
    /// of its own (a flush task) stops it when its last reference is dropped.
    fn set_targets(&self, targets: Targets);
}

pub trait ConnectorSettings: Settings {
    fn build(&self, id: &str, registry: &Arc<Registry>) -> Arc<dyn Connector>;
    /// Warnings logged when weir starts with this connector (keys with no effect).
    fn start_warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Pipelines its settings name, as (key under the component, pipeline id).
    fn named_pipelines(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A pipeline as extensions show it: (id, receivers, processors, exporters).
pub type PipelineRow = (String, Vec<String>, Vec<String>, Vec<String>);

/// What an extension's server may show or use.
pub struct ServerEnv<'a> {
    pub registry: &'a Arc<Registry>,
    /// Set once the pipelines are running.
    pub ready: &'a Arc<std::sync::atomic::AtomicBool>,
    pub started: std::time::SystemTime,
    /// The pipelines in force.
    pub pipelines: &'a [PipelineRow],
    /// The extensions enabled in `service.extensions`.
    pub extensions: &'a [String],
}

/// A server an extension runs on its endpoint.
pub struct ExtensionServer {
    /// What it is started from; a reload restarts the server when this changes.
    pub spec: String,
    pub endpoint: String,
    /// Serves on the bound listener until the watch turns true.
    pub serve:
        Box<dyn FnOnce(tokio::net::TcpListener, watch::Receiver<bool>) -> JoinHandle<()> + Send>,
}

pub trait ExtensionSettings: Settings {
    /// The endpoint its server listens on, when it has one.
    fn endpoint(&self) -> Option<&str> {
        None
    }
    /// Its server, when it has one.
    fn server(&self, _env: &ServerEnv<'_>) -> Option<ExtensionServer> {
        None
    }
    /// Warnings logged when weir starts with this extension enabled (keys with no effect).
    fn start_warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// The authenticator it is, when it is one.
    fn authenticator(&self) -> Option<&AuthConfig> {
        None
    }
    /// Whether it is a storage extension (`file_storage`).
    fn is_storage(&self) -> bool {
        false
    }
    /// Opens pipeline `pipeline`'s write-ahead log in this storage (`file_storage`): `id` is
    /// this extension's id, `queue` the sending queue persisted there.
    fn open_log(
        &self,
        _id: &str,
        _pipeline: &str,
        _queue: &QueueConfig,
        _registry: &Arc<Registry>,
    ) -> Option<Result<Arc<Wal>, StorageError>> {
        None
    }
}
