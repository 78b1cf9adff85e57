//! The executor seam: where a command step's attempt runs. The engine
//! decides what to run and when (retries, timeouts, conditions); an
//! [`Executor`] only starts an attempt, follows its logs into the step's log
//! files, waits for it, stops it, and after a restart of the role either
//! re-attaches to it or ends what is left of it. Two implementations:
//! [`LocalExecutor`] (child processes, each the leader of its own process
//! group) and [`crate::kubernetes::KubernetesExecutor`] (a batch/v1 Job per
//! attempt). Built-in steps run in the role itself whatever the executor.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::process::{self, Launch};
use crate::spec::Resources;
use crate::store::StepRow;

/// One attempt of a command step, rendered: everything an executor needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepLaunch {
    /// The run's id.
    pub run_id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The step instance's name (`train`, `square(2)`).
    pub step: String,
    /// The attempt's number, from 1.
    pub attempt: i64,
    /// argv, templates rendered.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Where stdout goes (appended).
    pub stdout: PathBuf,
    /// Where stderr goes (appended).
    pub stderr: PathBuf,
    /// Container image (Kubernetes); unset: the executor's default.
    pub image: Option<String>,
    /// CPU, memory and GPU requests.
    pub resources: Resources,
    /// The attempt's time limit (the engine enforces it too).
    pub timeout: Option<Duration>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal (from outside the executor).
    Signal(i32),
    /// Ended without an exit code, for this reason (a Job past its deadline,
    /// a pod that never started).
    Failed(String),
}

/// Where command steps run.
#[async_trait]
pub trait Executor: Send + Sync {
    /// `local` or `kubernetes`.
    fn name(&self) -> &'static str;

    /// Whether steps run on this node's processes, so its GPU pool and the
    /// local command checks apply.
    fn is_local(&self) -> bool;

    /// Whether an attempt recorded as running survives a restart of the
    /// role, so the engine re-attaches to it instead of counting it lost.
    fn reattaches(&self) -> bool;

    /// Starts an attempt. An attempt of the same run, step and number that
    /// already exists is re-attached to, never started twice.
    async fn start(&self, launch: &StepLaunch) -> Result<Box<dyn AttemptHandle>, String>;

    /// After a restart: the attempt recorded as running, if it still exists.
    async fn reattach(&self, launch: &StepLaunch)
        -> Result<Option<Box<dyn AttemptHandle>>, String>;

    /// After a restart: ends what is left of an attempt that will not be
    /// re-attached; true when nothing of it runs any more.
    async fn reap(&self, step: &StepRow) -> bool;

    /// A run ended: releases what the executor keeps for it.
    async fn run_ended(&self, _run_id: &str) {}
}

/// A started (or re-attached) attempt.
#[async_trait]
pub trait AttemptHandle: Send {
    /// The process group and its start time to record, where there is one.
    fn record(&self) -> (Option<i64>, Option<i64>);

    /// Starts copying the attempt's output into its log files (nothing to
    /// do where the output goes there directly).
    fn follow_logs(&mut self);

    /// Waits for the attempt to end; cancel-safe.
    async fn wait(&mut self) -> Result<Exit, String>;

    /// Stops the attempt (timeout, cancel): `grace` between the polite and
    /// the forced stop.
    async fn cancel(&mut self, grace: Duration);

    /// After the attempt ended: nothing of it outlives it, and its logs are
    /// complete.
    async fn finish(&mut self, grace: Duration);
}

/// Child processes of the training role.
#[derive(Debug, Default)]
pub struct LocalExecutor;

struct LocalAttempt {
    started: process::Started,
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn is_local(&self) -> bool {
        true
    }

    fn reattaches(&self) -> bool {
        false
    }

    async fn start(&self, launch: &StepLaunch) -> Result<Box<dyn AttemptHandle>, String> {
        // A program named by a relative path is relative to the working directory.
        let mut argv = launch.argv.clone();
        let program = argv.first().cloned().unwrap_or_default();
        match crate::validate::find_program(&program, launch.cwd.to_str()) {
            Some(found) if program.contains('/') => argv[0] = found.display().to_string(),
            Some(_) => {}
            None => {
                return Err(format!(
                    "command '{program}' does not exist or is not executable"
                ))
            }
        }
        let started = process::spawn(&Launch {
            argv,
            env: launch.env.clone(),
            cwd: launch.cwd.clone(),
            stdout: launch.stdout.clone(),
            stderr: launch.stderr.clone(),
        })
        .map_err(|e| format!("cannot start: {e}"))?;
        Ok(Box::new(LocalAttempt { started }))
    }

    async fn reattach(
        &self,
        _launch: &StepLaunch,
    ) -> Result<Option<Box<dyn AttemptHandle>>, String> {
        Ok(None)
    }

    async fn reap(&self, step: &StepRow) -> bool {
        match step.pgid {
            Some(pgid) => process::reap_orphans(pgid as i32, step.proc_start).await,
            None => true,
        }
    }
}

#[async_trait]
impl AttemptHandle for LocalAttempt {
    fn record(&self) -> (Option<i64>, Option<i64>) {
        (Some(i64::from(self.started.pgid)), self.started.start)
    }

    fn follow_logs(&mut self) {}

    async fn wait(&mut self) -> Result<Exit, String> {
        match process::wait(&mut self.started.child).await {
            Ok(process::Exit::Code(code)) => Ok(Exit::Code(code)),
            Ok(process::Exit::Signal(signal)) => Ok(Exit::Signal(signal)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn cancel(&mut self, grace: Duration) {
        process::kill_group(self.started.pgid, grace).await;
        let _ = self.started.child.wait().await;
    }

    async fn finish(&mut self, grace: Duration) {
        if !process::members(self.started.pgid).is_empty() {
            process::kill_group(self.started.pgid, grace).await;
        }
    }
}
