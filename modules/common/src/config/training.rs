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
    /// Where command steps run: child processes of this node, or a
    /// batch/v1 Job per attempt. Built-in steps run in the role either way.
    pub executor: TrainingExecutor,
    /// The `kubernetes` executor's settings.
    pub kubernetes: TrainingKubernetes,
}

/// Where the training role runs command steps.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrainingExecutor {
    /// Child processes, each step in its own process group and directory.
    #[default]
    Local,
    /// A batch/v1 Job per attempt, created through the Kubernetes API.
    Kubernetes,
}

/// The Kubernetes executor: `[training.kubernetes]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingKubernetes {
    /// Namespace of the Jobs; unset: the service account's own (or the
    /// kubeconfig context's).
    pub namespace: Option<String>,
    /// Image of a step that names none.
    pub image: String,
    /// Service account of the step pods; unset: the namespace's default.
    pub service_account: Option<String>,
    /// PersistentVolumeClaim (ReadWriteMany) mounted at `work_dir` in the
    /// step pods, the same one the training role mounts there: inputs are
    /// fetched into it before a step and outputs read from it after.
    pub work_claim: Option<String>,
    /// How long a finished Job stays when its run's owner was not deleted
    /// (`ttlSecondsAfterFinished`).
    #[serde(with = "duration")]
    pub ttl_after_finished: Duration,
    /// Between two reads of a running Job's status.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
}

impl Default for TrainingKubernetes {
    fn default() -> Self {
        TrainingKubernetes {
            namespace: None,
            image: "mlserve:latest".into(),
            service_account: None,
            work_claim: None,
            ttl_after_finished: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(2),
        }
    }
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
            executor: TrainingExecutor::Local,
            kubernetes: TrainingKubernetes::default(),
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
