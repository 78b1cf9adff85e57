//! The training role: configuration section `[training]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// The training role (workflows, runs, the local executor).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// gRPC endpoint of the training role, for the CLI and for roles of
    /// other processes; unset: this process (or `127.0.0.1:<server.grpc_port>`).
    pub endpoint: Option<String>,
    /// SQL database of workflows and runs; unset: the embedded SQLite file
    /// in `server.data_dir`.
    pub database_url: Option<String>,
    /// Where step directories and logs go; unset: `<server.data_dir>/training`.
    pub work_dir: Option<PathBuf>,
    /// This node's name; it drives (and after a restart resumes) the runs
    /// submitted to it. Unset: the host name.
    pub node: Option<String>,
    /// Steps running at once on this node; 0 means one per core.
    pub max_parallel_steps: usize,
    /// GPUs on this node; a local step asking for a GPU takes one for its
    /// duration (`CUDA_VISIBLE_DEVICES` names it).
    pub gpus: usize,
    /// Between SIGTERM and SIGKILL when a step is stopped (timeout, cancel).
    #[serde(with = "duration")]
    pub kill_grace: Duration,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            endpoint: None,
            database_url: None,
            work_dir: None,
            node: None,
            max_parallel_steps: 0,
            gpus: 0,
            kill_grace: Duration::from_secs(2),
        }
    }
}

impl TrainingConfig {
    /// The step directory root.
    pub fn work_dir(&self, data_dir: &Path) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("training"))
    }
}
