//! Layered configuration: defaults < config file < `MLSERVE_` environment <
//! command-line flags. Unknown keys are an error at every layer.
//!
//! Every key is documented in `config/mlserve.toml`.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod deployment;
pub mod duration;
mod events;
mod features;
mod followed;
mod gateway;
mod monitoring;
mod registry;
mod removed;
mod training;

pub use deployment::Deployment;
pub use events::{EventsBackend, EventsConfig};
pub use features::{FeaturesConfig, OnlineStoreKind};
pub use followed::{FollowedModel, ModelSource, PlacementOverride};
pub use gateway::{
    AuthMode, CanaryConfig, CorsConfig, FailureMode, GatewayConfig, JwtConfig, PipelineConfig,
    Postprocess, RateLimitBackend, RateLimitConfig, RequestLogConfig,
};
pub use monitoring::{check_steps, DriftConfig, MonitoringConfig, RolloutsConfig, StepConfig};
#[cfg(feature = "testing")]
pub use registry::RegistryFault;
pub use registry::{ArtifactBackend, RegistryConfig};
pub use training::{TrainingConfig, TrainingExecutor, TrainingKubernetes};

/// The file read when no `--config` is given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "config/mlserve.toml";

/// The configuration sections; environment variables outside them (such as
/// `MLSERVE_BIN` used by test harnesses) are not configuration and are ignored.
const SECTIONS: [&str; 9] = [
    "server",
    "inference",
    "registry",
    "features",
    "gateway",
    "training",
    "monitoring",
    "events",
    "log",
];

/// All of mlserve's configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners, threads, limits and shutdown.
    pub server: ServerConfig,
    /// The inference role.
    pub inference: InferenceConfig,
    /// The registry role.
    pub registry: RegistryConfig,
    /// The features role.
    pub features: FeaturesConfig,
    /// The gateway role.
    pub gateway: GatewayConfig,
    /// The training role.
    pub training: TrainingConfig,
    /// The monitoring role.
    pub monitoring: MonitoringConfig,
    /// The event bus shared by the roles.
    pub events: EventsConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Listeners, threads, limits and shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Roles to run; empty means every role compiled into the binary.
    pub roles: Vec<String>,
    /// Address the gateway's listeners and the metrics listener bind.
    pub host: String,
    /// Address the node's own HTTP and gRPC listeners bind: they serve
    /// every role's APIs (v2, registry, features, training, monitoring)
    /// without user authentication. Unset: `host` when `internal_token`
    /// locks them, else loopback (127.0.0.1), so no open door faces the
    /// network. See [`ServerConfig::node_bind_host`].
    pub node_host: Option<String>,
    /// Open Inference Protocol over HTTP (Triton: 8000). 0 picks a free port.
    pub http_port: u16,
    /// Open Inference Protocol over gRPC (Triton: 8001). 0 picks a free port.
    pub grpc_port: u16,
    /// Prometheus metrics (Triton: 8002). 0 picks a free port.
    pub metrics_port: u16,
    /// Tokio worker threads; unset means half the cores (at least one) in a
    /// process that serves models, every core in one that does not.
    pub worker_threads: Option<NonZeroUsize>,
    /// Threads that serve HTTP/1.1 connections, each a single-threaded
    /// runtime of its own (0: connections run on the tokio workers); unset
    /// means half the cores, at least two, in a process that serves models
    /// on two cores or more, and none otherwise.
    pub http_io_threads: Option<usize>,
    /// Time to finish in-flight requests after SIGTERM before exiting anyway.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Largest accepted request body in bytes, on the node's listeners and
    /// the gateway's alike (also after decompression, and the gRPC message
    /// limit).
    pub http_max_body_bytes: usize,
    /// Longest time an HTTP connection may take to send a request's headers,
    /// counted from when the server waits for them (a new connection, or a
    /// kept-alive one after its last answer): a client that connects and
    /// sends nothing, trickles its headers, or sits idle is cut off after it.
    /// On the node's HTTP and metrics listeners and the gateway's HTTP one.
    #[serde(with = "duration")]
    pub http_header_read_timeout: Duration,
    /// Most HTTP connections open at once per listener; one more is closed
    /// as soon as it is accepted.
    pub http_max_connections: usize,
    /// Bytes of request bodies the whole process holds at once, every HTTP
    /// listener together: a body counts from its first byte (a declared
    /// length at once) until its request is answered, for at most
    /// `http_max_body_bytes`, its inflated copy included. A request the
    /// budget cannot hold now is refused with 503, never queued.
    pub http_body_budget_bytes: u64,
    /// The pace a request body must keep: after `http_header_read_timeout`,
    /// each second more needs this many more bytes received (a trickled or
    /// stalled body is cut off with 400).
    pub http_body_min_bytes_per_sec: u64,
    /// Most gRPC connections open at once per gRPC listener; one more is
    /// closed as soon as it is accepted. A new connection has
    /// `http_header_read_timeout` to send its first bytes.
    pub grpc_max_connections: usize,
    /// Directory of the embedded defaults: the SQLite database, local
    /// artifacts, the artifact cache.
    pub data_dir: PathBuf,
    /// local | cluster. In a cluster every role refuses to start on a store
    /// only its own pod would see (SQLite, a local artifact directory, the
    /// in-memory online store, in-process events, local rate limits).
    pub deployment: Deployment,
    /// The shared secret of the split deployment's internal calls: when
    /// set, the node's own HTTP and gRPC ports answer only callers that send
    /// it (the other roles do), apart from the health checks. At least 16
    /// characters; give it through the environment
    /// (`MLSERVE_SERVER__INTERNAL_TOKEN`), never in a ConfigMap.
    pub internal_token: Option<String>,
}

impl ServerConfig {
    /// The address the node's HTTP and gRPC listeners bind: `node_host`
    /// when set, else `host` when the internal token locks them, else
    /// loopback.
    pub fn node_bind_host(&self) -> &str {
        match (&self.node_host, &self.internal_token) {
            (Some(host), _) => host,
            (None, Some(_)) => &self.host,
            (None, None) => "127.0.0.1",
        }
    }

    /// Whether the node's listeners would answer other machines without the
    /// internal token: bound beyond loopback with no token set.
    pub fn node_ports_open(&self) -> bool {
        self.internal_token.is_none() && !is_loopback(self.node_bind_host())
    }
}

/// Whether `host` only accepts connections from this machine.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            roles: Vec::new(),
            host: "0.0.0.0".into(),
            node_host: None,
            http_port: 8000,
            grpc_port: 8001,
            metrics_port: 8002,
            worker_threads: None,
            http_io_threads: None,
            shutdown_grace: Duration::from_secs(30),
            http_max_body_bytes: 64 * 1024 * 1024,
            http_header_read_timeout: Duration::from_secs(30),
            http_max_connections: 10_000,
            http_body_budget_bytes: 1 << 30,
            http_body_min_bytes_per_sec: 4096,
            grpc_max_connections: 10_000,
            data_dir: PathBuf::from("data"),
            deployment: Deployment::Local,
            internal_token: None,
        }
    }
}

/// How the model repository is followed (Triton's `--model-control-mode`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelControlMode {
    /// Load every model at start; the repository API cannot load or unload.
    #[default]
    None,
    /// Load every model at start, then rescan the repository periodically and
    /// load, reload or unload what changed.
    Poll,
    /// Load only `load_models` at start; the repository API loads and unloads.
    Explicit,
}

/// The inference role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// Directory holding `<model>/<version>/model.onnx` and `<model>/config.toml`.
    pub model_repository: PathBuf,
    /// none | poll | explicit.
    pub model_control_mode: ModelControlMode,
    /// Time between repository scans in poll mode.
    #[serde(with = "duration")]
    pub repository_poll_interval: Duration,
    /// Models loaded at start in explicit mode ("*" means all).
    pub load_models: Vec<String>,
    /// Path of libonnxruntime.so; when unset, ORT_DYLIB_PATH, then the
    /// locations `scripts/setup.sh` installs to.
    pub onnxruntime_library: Option<PathBuf>,
    /// Cores ONNX Runtime may use across all model instances; unset means
    /// every core.
    pub cpu_threads: Option<NonZeroUsize>,
    /// Queue bound for models whose config sets no `max_queue_size`.
    pub default_max_queue_size: usize,
    /// Latency objective of models whose config sets no
    /// `latency_objective_ms`: a request predicted to miss it is refused at
    /// once (503 with Retry-After). Zero: none.
    #[serde(with = "duration")]
    pub default_latency_objective: Duration,
    /// Models served from the registry, following an alias or pinned to a version.
    pub models: Vec<FollowedModel>,
    /// Time between checks of the followed aliases, the fallback when an
    /// event is missed; zero turns polling off (events only).
    #[serde(with = "duration")]
    pub registry_poll_interval: Duration,
    /// Directory of downloaded artifacts, one file per sha256; unset means
    /// `<server.data_dir>/cache`.
    pub artifact_cache_dir: Option<PathBuf>,
    /// Server readiness (`/v2/health/ready`) also waits until every model of
    /// `models` serves a version, as Triton's `--strict-readiness`: a pod
    /// takes traffic only once it can answer for each of them.
    pub strict_readiness: bool,
    /// cpu | gpu: every instance group of the models in `models` runs there,
    /// whatever the version's config says, so one registered version serves
    /// on CPU pods and GPU pods alike. Unset: each config decides.
    pub instance_kind: Option<PlacementOverride>,
    /// The `name` server metadata answers with; `triton` for client code
    /// that checks for Triton's.
    pub server_name: String,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            model_repository: PathBuf::from("models"),
            model_control_mode: ModelControlMode::None,
            repository_poll_interval: Duration::from_secs(5),
            load_models: Vec::new(),
            onnxruntime_library: None,
            cpu_threads: None,
            default_max_queue_size: 1024,
            default_latency_objective: Duration::ZERO,
            models: Vec::new(),
            registry_poll_interval: Duration::from_secs(30),
            artifact_cache_dir: None,
            strict_readiness: false,
            instance_kind: None,
            server_name: "mlserve".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `mlserve=debug,info` (RUST_LOG wins when set).
    pub level: String,
    /// text | json.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Loads the configuration. `file` is `--config` (an error if missing);
    /// without it [`DEFAULT_CONFIG_FILE`] is read when present. `overrides`
    /// are the command-line flags, as `(dotted.key, value)` pairs, applied
    /// last. A removed key is an error naming its replacement.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Config, String> {
        let figment = Self::figment(file)?.merge(overrides);
        removed::check(&figment).map_err(|e| format!("invalid configuration: {e}"))?;
        figment
            .extract()
            .map_err(|e| format!("invalid configuration: {e}"))
    }

    /// The layered sources without command-line overrides.
    pub fn figment(file: Option<&Path>) -> Result<Figment, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.is_file() => {
                return Err(format!("config file '{}' does not exist", path.display()));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE)),
        }
        let env = Env::prefixed("MLSERVE_")
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                SECTIONS.iter().any(|s| key.starts_with(&format!("{s}__")))
            })
            .split("__");
        Ok(figment.merge(env))
    }
}

#[cfg(test)]
// figment::Jail's closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests;
