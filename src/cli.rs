//! Command-line flags. Each flag overrides the config key it names.

use std::path::PathBuf;

use clap::Parser;
use figment::Figment;

/// mlserve: serves ONNX models over the Open Inference Protocol
/// (Triton-compatible HTTP and gRPC). With no flags it runs every role
/// compiled into the binary on embedded defaults.
#[derive(Debug, Parser)]
#[command(name = "mlserve", version)]
pub struct Cli {
    /// A client subcommand; without one, mlserve serves.
    #[command(subcommand)]
    pub command: Option<crate::commands::Command>,
    /// Configuration file (default: config/mlserve.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Roles to run, comma-separated or repeated (server.roles).
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Address the gateway's and the metrics listeners bind (server.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Address the node's own HTTP and gRPC listeners bind
    /// (server.node_host; default loopback unless server.internal_token is set).
    #[arg(long)]
    pub node_host: Option<String>,
    /// HTTP port, 0 for any free port (server.http_port).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// gRPC port, 0 for any free port (server.grpc_port).
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// Metrics port, 0 for any free port (server.metrics_port).
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// Tokio worker threads; unset: half the cores when serving models, else all (server.worker_threads).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Threads serving HTTP/1.1 connections, 0 for the tokio workers; unset: half the cores, at least 2, when serving models (server.http_io_threads).
    #[arg(long)]
    pub http_io_threads: Option<usize>,
    /// Time to drain in-flight requests after SIGTERM, e.g. 30s (server.shutdown_grace).
    #[arg(long)]
    pub shutdown_grace: Option<String>,
    /// Largest request body in bytes (server.http_max_body_bytes).
    #[arg(long)]
    pub http_max_body_bytes: Option<usize>,
    /// Directory of the embedded defaults: SQLite database, local artifacts,
    /// artifact cache (server.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Model repository directory (inference.model_repository).
    #[arg(long)]
    pub model_repository: Option<PathBuf>,
    /// none | poll | explicit (inference.model_control_mode).
    #[arg(long)]
    pub model_control_mode: Option<String>,
    /// Time between repository scans in poll mode, e.g. 5s (inference.repository_poll_interval).
    #[arg(long)]
    pub repository_poll_interval: Option<String>,
    /// Model to load at start in explicit mode, repeatable; "*" for all (inference.load_models).
    #[arg(long = "load-model")]
    pub load_models: Vec<String>,
    /// Path of libonnxruntime.so (inference.onnxruntime_library).
    #[arg(long)]
    pub onnxruntime_library: Option<PathBuf>,
    /// Cores for ONNX Runtime across all instances; unset: every core (inference.cpu_threads).
    #[arg(long)]
    pub cpu_threads: Option<usize>,
    /// gRPC endpoint of the registry the inference role follows, when the
    /// registry role is not in this process (registry.endpoint).
    #[arg(long)]
    pub registry_endpoint: Option<String>,
    /// Time between checks of followed aliases, e.g. 30s; 0s for events
    /// only (inference.registry_poll_interval).
    #[arg(long)]
    pub registry_poll_interval: Option<String>,
    /// memory | redis: the event bus (events.backend).
    #[arg(long)]
    pub events_backend: Option<String>,
    /// Gateway HTTP port, 0 for any free port (gateway.http_port).
    #[arg(long)]
    pub gateway_http_port: Option<u16>,
    /// Gateway gRPC port, 0 for any free port (gateway.grpc_port).
    #[arg(long)]
    pub gateway_grpc_port: Option<u16>,
    /// Inference gRPC endpoints the gateway routes to, comma-separated or
    /// repeated; `dns:///name:port` resolves to every address (gateway.inference_endpoints).
    #[arg(long = "inference-endpoints", value_delimiter = ',')]
    pub inference_endpoints: Vec<String>,
    /// Metrics endpoints (`host:port`) the monitoring role reads, comma-separated
    /// or repeated; `dns:///name:port` stands for every address of the name
    /// (monitoring.scrape_targets).
    #[arg(long = "scrape-target", value_delimiter = ',')]
    pub scrape_targets: Vec<String>,
    /// gRPC endpoint of a features role in another process (features.endpoint).
    #[arg(long)]
    pub features_endpoint: Option<String>,
    /// off | on: credentials required at the gateway (gateway.auth).
    #[arg(long)]
    pub auth: Option<String>,
    /// Log filter such as info or debug (log.level).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Removed flags: each sets its removed key, whose error names the
    /// replacement (see mlserve_common's config::removed).
    #[command(flatten)]
    pub removed: RemovedFlags,
}

/// Flags that were replaced by duration flags. Hidden; giving one fails
/// start-up with an error that names what to use instead.
#[derive(Debug, clap::Args)]
pub struct RemovedFlags {
    /// Replaced by --shutdown-grace.
    #[arg(long, hide = true)]
    shutdown_grace_secs: Option<String>,
    /// Replaced by --repository-poll-interval.
    #[arg(long, hide = true)]
    repository_poll_secs: Option<String>,
    /// Replaced by --registry-poll-interval.
    #[arg(long, hide = true)]
    registry_poll_secs: Option<String>,
}

impl Cli {
    /// The flags that were given, as configuration overrides.
    pub fn overrides(&self) -> Figment {
        let mut f = Figment::new();
        macro_rules! set {
            ($key:literal, $value:expr) => {
                if let Some(value) = &$value {
                    f = f.merge(($key, value));
                }
            };
        }
        if !self.roles.is_empty() {
            f = f.merge(("server.roles", &self.roles));
        }
        set!("server.host", self.host);
        set!("server.node_host", self.node_host);
        set!("server.http_port", self.http_port);
        set!("server.grpc_port", self.grpc_port);
        set!("server.metrics_port", self.metrics_port);
        set!("server.worker_threads", self.worker_threads);
        set!("server.http_io_threads", self.http_io_threads);
        set!("server.shutdown_grace", self.shutdown_grace);
        set!("server.http_max_body_bytes", self.http_max_body_bytes);
        set!("server.data_dir", self.data_dir);
        set!("inference.model_repository", self.model_repository);
        set!("inference.model_control_mode", self.model_control_mode);
        set!(
            "inference.repository_poll_interval",
            self.repository_poll_interval
        );
        set!("inference.onnxruntime_library", self.onnxruntime_library);
        set!("inference.cpu_threads", self.cpu_threads);
        set!("registry.endpoint", self.registry_endpoint);
        set!(
            "inference.registry_poll_interval",
            self.registry_poll_interval
        );
        set!("events.backend", self.events_backend);
        set!("log.level", self.log_level);
        set!("gateway.http_port", self.gateway_http_port);
        set!("gateway.grpc_port", self.gateway_grpc_port);
        set!("features.endpoint", self.features_endpoint);
        set!("gateway.auth", self.auth);
        if !self.inference_endpoints.is_empty() {
            f = f.merge(("gateway.inference_endpoints", &self.inference_endpoints));
        }
        if !self.scrape_targets.is_empty() {
            f = f.merge(("monitoring.scrape_targets", &self.scrape_targets));
        }
        set!(
            "server.shutdown_grace_secs",
            self.removed.shutdown_grace_secs
        );
        set!(
            "inference.repository_poll_secs",
            self.removed.repository_poll_secs
        );
        set!(
            "inference.registry_poll_secs",
            self.removed.registry_poll_secs
        );
        if !self.load_models.is_empty() {
            f = f.merge(("inference.load_models", &self.load_models));
        }
        f
    }
}
