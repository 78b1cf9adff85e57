//! Layered configuration: defaults < config file < `MLSERVE_` environment <
//! command-line flags. Unknown keys are an error at every layer.
//!
//! Every key is documented in `config/mlserve.toml`.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod events;
mod features;
mod followed;
mod gateway;
mod registry;

pub use events::{EventsBackend, EventsConfig};
pub use features::{FeaturesConfig, OnlineStoreKind};
pub use followed::{FollowedModel, ModelSource};
pub use gateway::{
    AuthMode, CanaryConfig, FailureMode, GatewayConfig, JwtConfig, PipelineConfig,
    RateLimitBackend, RateLimitConfig,
};
pub use registry::{ArtifactBackend, RegistryConfig, RegistryFault};

/// The file read when no `--config` is given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "config/mlserve.toml";

/// The configuration sections; environment variables outside them (such as
/// `MLSERVE_BIN` used by test harnesses) are not configuration and are ignored.
const SECTIONS: [&str; 7] = [
    "server",
    "inference",
    "registry",
    "features",
    "gateway",
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
    /// Address the listeners bind.
    pub host: String,
    /// Open Inference Protocol over HTTP (Triton: 8000). 0 picks a free port.
    pub http_port: u16,
    /// Open Inference Protocol over gRPC (Triton: 8001). 0 picks a free port.
    pub grpc_port: u16,
    /// Prometheus metrics (Triton: 8002). 0 picks a free port.
    pub metrics_port: u16,
    /// Tokio worker threads; 0 means half the cores (at least one), leaving the
    /// rest to ONNX Runtime.
    pub worker_threads: usize,
    /// Seconds to finish in-flight requests after SIGTERM before exiting anyway.
    pub shutdown_grace_secs: f64,
    /// Largest accepted request body in bytes (also after decompression, and
    /// the gRPC message limit).
    pub http_max_body_bytes: usize,
    /// Directory of the embedded defaults: the SQLite database, local
    /// artifacts, the artifact cache.
    pub data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            roles: Vec::new(),
            host: "0.0.0.0".into(),
            http_port: 8000,
            grpc_port: 8001,
            metrics_port: 8002,
            worker_threads: 0,
            shutdown_grace_secs: 30.0,
            http_max_body_bytes: 64 * 1024 * 1024,
            data_dir: PathBuf::from("data"),
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
    /// Seconds between repository scans in poll mode.
    pub repository_poll_secs: f64,
    /// Models loaded at start in explicit mode ("*" means all).
    pub load_models: Vec<String>,
    /// Path of libonnxruntime.so; when unset, ORT_DYLIB_PATH, then the
    /// locations `scripts/setup.sh` installs to.
    pub onnxruntime_library: Option<PathBuf>,
    /// Cores ONNX Runtime may use across all model instances; 0 means the
    /// cores left after the tokio workers (at least one).
    pub cpu_threads: usize,
    /// Queue bound for models whose config sets no `max_queue_size`.
    pub default_max_queue_size: usize,
    /// Models served from the registry, following an alias or pinned to a version.
    pub models: Vec<FollowedModel>,
    /// Seconds between checks of the followed aliases, the fallback when an
    /// event is missed; 0 turns polling off (events only).
    pub registry_poll_secs: f64,
    /// Directory of downloaded artifacts, one file per sha256; empty means
    /// `<server.data_dir>/cache`.
    pub artifact_cache_dir: PathBuf,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            model_repository: PathBuf::from("models"),
            model_control_mode: ModelControlMode::None,
            repository_poll_secs: 5.0,
            load_models: Vec::new(),
            onnxruntime_library: None,
            cpu_threads: 0,
            default_max_queue_size: 1024,
            models: Vec::new(),
            registry_poll_secs: 30.0,
            artifact_cache_dir: PathBuf::new(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `mlserve=debug,info` (RUST_LOG wins when set).
    pub level: String,
    /// text | json.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Config {
    /// Loads the configuration. `file` is `--config` (an error if missing);
    /// without it [`DEFAULT_CONFIG_FILE`] is read when present. `overrides`
    /// are the command-line flags, as `(dotted.key, value)` pairs, applied last.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Config, String> {
        Self::figment(file)?
            .merge(overrides)
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
mod tests {
    use super::*;

    #[test]
    fn precedence_is_defaults_then_file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            let defaults = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(defaults.server.http_port, 8000);
            assert_eq!(defaults.server.grpc_port, 8001);

            jail.create_dir("config")?;
            jail.create_file(
                "config/mlserve.toml",
                "[server]\nhttp_port = 9000\ngrpc_port = 9001\nmetrics_port = 9002\n",
            )?;
            let from_file = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(
                (from_file.server.http_port, from_file.server.grpc_port),
                (9000, 9001)
            );

            jail.set_env("MLSERVE_SERVER__GRPC_PORT", "7001");
            jail.set_env("MLSERVE_SERVER__METRICS_PORT", "7002");
            jail.set_env("MLSERVE_BIN", "/not/a/config/key");
            let from_env = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(
                from_env.server.http_port, 9000,
                "file value kept where env is silent"
            );
            assert_eq!(from_env.server.grpc_port, 7001, "env beats file");

            let flags = Figment::new().merge(("server.metrics_port", 6002));
            let from_flags = Config::load(None, flags).map_err(|e| e.to_string())?;
            assert_eq!(from_flags.server.metrics_port, 6002, "flags beat env");
            assert_eq!(from_flags.server.grpc_port, 7001);
            Ok(())
        });
    }

    #[test]
    fn env_reaches_nested_inference_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MLSERVE_INFERENCE__MODEL_REPOSITORY", "/srv/models");
            jail.set_env("MLSERVE_INFERENCE__MODEL_CONTROL_MODE", "poll");
            let config = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(
                config.inference.model_repository,
                PathBuf::from("/srv/models")
            );
            assert_eq!(config.inference.model_control_mode, ModelControlMode::Poll);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors_in_file_and_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file("config/mlserve.toml", "[server]\nhttp_prot = 1\n")?;
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(err.contains("http_prot"), "{err}");
            jail.create_file("config/mlserve.toml", "")?;
            jail.set_env("MLSERVE_INFERENCE__MODEL_REPO", "x");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(err.contains("model_repo"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let err =
            Config::load(Some(Path::new("/nonexistent/mlserve.toml")), Figment::new()).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }
}
