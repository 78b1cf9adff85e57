//! One attempt of one step instance on the local executor: wait for a slot
//! (and a GPU), fetch inputs, run the command in its own process group (or
//! the built-in), collect outputs, upload artifacts and logs, and settle the
//! instance's state under its retry policy.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::builtin::{self, Builtin, BuiltinOutput};
use crate::engine::{values_for, Engine, Stop};
use crate::error::Result;
use crate::executor::{Exit, StepLaunch};
use crate::outputs;
use crate::spec::StepSpec;
use crate::state::StepState;
use crate::store::{now_us, ArtifactRow, RunRow, StepRow, Store};
use crate::template::{self, Reference};

/// An attempt about to run.
pub struct Attempt {
    /// The engine (store, limits, clients).
    pub engine: Arc<Engine>,
    /// The run, as the driver last read it.
    pub run: RunRow,
    /// The instance.
    pub step: StepRow,
    /// Its definition.
    pub template: StepSpec,
    /// `{{workflow.status}}` for the exit handler.
    pub exit_status: String,
    /// The attempt was running when the role stopped and its executor keeps
    /// it: re-attach instead of starting it.
    pub reattach: bool,
}

/// How the attempt ended before its state is settled.
enum Outcome {
    Succeeded(BuiltinOutput),
    Failed(Option<i32>, String),
    Stopped(Stop),
}

/// The instance's directory name under the run: `step` or `step/<i>`.
pub fn instance_dir(step: &StepRow) -> String {
    if step.item.is_some() {
        format!("{}/{}", step.template, step.idx)
    } else {
        step.template.clone()
    }
}

/// Settles a failed attempt: retrying after the backoff while the policy
/// allows, else failed.
pub async fn settle_failure(
    store: &Store,
    step: &mut StepRow,
    template: &StepSpec,
    exit_code: Option<i32>,
    message: String,
) -> Result<()> {
    let retry = template
        .retry
        .as_ref()
        .filter(|r| (step.attempt as u64) <= u64::from(r.limit) && r.retries_exit(exit_code));
    step.exit_code = exit_code.map(i64::from);
    step.pgid = None;
    step.proc_start = None;
    step.finished_ts = Some(now_us());
    match retry {
        Some(policy) => {
            let delay = policy.delay(step.attempt.max(1) as u32);
            step.state = StepState::Retrying;
            step.next_attempt_ts = Some(now_us() + delay.as_micros() as i64);
            step.message = format!(
                "attempt {} failed ({message}); retry {} of {} in {}",
                step.attempt,
                step.attempt,
                policy.limit,
                humantime::format_duration(delay)
            );
        }
        None => {
            step.state = StepState::Failed;
            step.next_attempt_ts = None;
            step.message = if step.attempt > 1 {
                format!("attempt {} failed: {message}", step.attempt)
            } else {
                message
            };
        }
    }
    tracing::info!(run = %step.run_id, step = %step.name, state = %step.state, message = %step.message, "step attempt failed");
    store.put_step(step).await
}

impl Attempt {
    /// Runs the attempt to its end and records it.
    pub async fn run(mut self, mut stop: watch::Receiver<Option<Stop>>) {
        if let Err(err) = self.run_inner(&mut stop).await {
            tracing::error!(run = %self.run.id, step = %self.step.name, error = %err, "step attempt could not be recorded");
        }
    }

    async fn run_inner(&mut self, stop: &mut watch::Receiver<Option<Stop>>) -> Result<()> {
        let slots = self.engine.slots.clone();
        let permit = tokio::select! {
            permit = slots.acquire_owned() => permit.ok(),
            reason = wait_stop(stop) => return self.settle_stopped(reason).await,
        };
        let gpu = if self.template.resources.gpu > 0
            && self.template.image.is_none()
            && self.engine.executor.is_local()
        {
            let pool = self.engine.gpus.clone();
            tokio::select! {
                index = pool.acquire() => Some(index),
                reason = wait_stop(stop) => return self.settle_stopped(reason).await,
            }
        } else {
            None
        };
        let outcome = self.attempt(stop, gpu).await;
        if let Some(index) = gpu {
            self.engine.gpus.release(index);
        }
        drop(permit);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => Outcome::Failed(None, err.to_string()),
        };
        self.upload_logs().await;
        match outcome {
            Outcome::Succeeded(output) => match self.collect(output).await {
                Ok(()) => {
                    self.step.state = StepState::Succeeded;
                    self.step.exit_code = Some(0);
                    self.step.finished_ts = Some(now_us());
                    self.step.pgid = None;
                    self.step.proc_start = None;
                    self.step.next_attempt_ts = None;
                    self.step.message = String::new();
                    self.engine.store.put_step(&self.step).await
                }
                Err(message) => {
                    settle_failure(
                        &self.engine.store,
                        &mut self.step,
                        &self.template,
                        None,
                        message,
                    )
                    .await
                }
            },
            Outcome::Failed(code, message) => {
                settle_failure(
                    &self.engine.store,
                    &mut self.step,
                    &self.template,
                    code,
                    message,
                )
                .await
            }
            Outcome::Stopped(reason) => self.settle_stopped(reason).await,
        }
    }

    async fn settle_stopped(&mut self, reason: Stop) -> Result<()> {
        self.step.state = StepState::Cancelled;
        self.step.message = match reason {
            Stop::Cancel => "cancelled".into(),
            Stop::RunTimeout(limit) => format!(
                "stopped: the run timed out after {}",
                humantime::format_duration(limit)
            ),
        };
        self.step.finished_ts = Some(now_us());
        self.step.pgid = None;
        self.step.proc_start = None;
        self.step.next_attempt_ts = None;
        self.engine.store.put_step(&self.step).await
    }

    fn base_dir(&self) -> PathBuf {
        self.engine
            .settings
            .work_dir
            .join("runs")
            .join(&self.run.id)
            .join(instance_dir(&self.step))
    }

    /// The step's own directory (its working directory by default).
    pub fn work_dir(&self) -> PathBuf {
        self.base_dir().join("work")
    }

    fn log_path(&self, stream: &str) -> PathBuf {
        self.base_dir().join("logs").join(format!("{stream}.log"))
    }

    async fn attempt(
        &mut self,
        stop: &mut watch::Receiver<Option<Stop>>,
        gpu: Option<usize>,
    ) -> Result<Outcome> {
        let work = self.work_dir();
        tokio::fs::create_dir_all(&work).await.map_err(io)?;
        tokio::fs::create_dir_all(self.base_dir().join("logs"))
            .await
            .map_err(io)?;
        if self.reattach {
            self.header(&format!(
                "=== attempt {} of step {}: re-attached after a restart ===",
                self.step.attempt, self.step.name
            ));
        } else {
            self.step.attempt += 1;
            self.step.state = StepState::Running;
            self.step.started_ts = Some(now_us());
            self.step.finished_ts = None;
            self.step.exit_code = None;
            self.step.next_attempt_ts = None;
            self.step.message = String::new();
            self.engine.store.put_step(&self.step).await?;
            self.header(&format!(
                "=== attempt {} of step {} ===",
                self.step.attempt, self.step.name
            ));
        }

        let steps = self.engine.store.steps(&self.run.id).await?;
        let artifacts = self.engine.store.artifacts(&self.run.id).await?;
        let mut values = values_for(&self.run, &steps, &artifacts);
        if let Some(item) = &self.step.item {
            values.insert(Reference::Item, item.clone());
        }
        values.insert(Reference::StepDir, work.display().to_string());
        values.insert(Reference::WorkflowStatus, self.exit_status.clone());

        let inputs = if self.reattach {
            &[][..]
        } else {
            &self.template.inputs.artifacts[..]
        };
        for input in inputs {
            let key = match template::render(&input.from, &values) {
                Ok(key) => key,
                Err(e) => {
                    return Ok(Outcome::Failed(
                        None,
                        format!("input '{}': {e}", input.name),
                    ))
                }
            };
            if let Err(e) =
                outputs::download(&self.engine.env.artifacts, &key, &work.join(&input.path)).await
            {
                return Ok(Outcome::Failed(
                    None,
                    format!("input '{}': {e}", input.name),
                ));
            }
        }
        let timeout = self.template.timeout;
        if let Some(uses) = &self.template.uses {
            let builtin = Builtin::parse(uses).map_err(crate::error::TrainingError::Internal)?;
            let with = match self
                .template
                .with
                .iter()
                .map(|(k, v)| Ok((k.clone(), template::render_json(v, &values)?)))
                .collect::<std::result::Result<BTreeMap<_, _>, template::UnknownReference>>()
            {
                Ok(with) => with,
                Err(e) => return Ok(Outcome::Failed(None, e.to_string())),
            };
            return Ok(self.run_builtin(builtin, with, &work, timeout, stop).await);
        }

        let render = |text: &str| template::render(text, &values).map_err(|e| e.to_string());
        let argv = match self
            .template
            .command
            .iter()
            .map(|a| render(a))
            .collect::<std::result::Result<Vec<_>, _>>()
        {
            Ok(argv) => argv,
            Err(e) => return Ok(Outcome::Failed(None, e)),
        };
        let mut env = BTreeMap::new();
        for (k, v) in &self.template.env {
            match render(v) {
                Ok(v) => env.insert(k.clone(), v),
                Err(e) => return Ok(Outcome::Failed(None, e)),
            };
        }
        env.insert("MLSERVE_RUN_ID".into(), self.run.id.clone());
        env.insert("MLSERVE_STEP".into(), self.step.name.clone());
        env.insert("MLSERVE_ATTEMPT".into(), self.step.attempt.to_string());
        env.insert("MLSERVE_STEP_DIR".into(), work.display().to_string());
        if let Some(index) = gpu {
            env.insert("CUDA_VISIBLE_DEVICES".into(), index.to_string());
        }
        // A relative working directory is relative to the role's own.
        let cwd = match &self.template.working_dir {
            Some(dir) => match render(dir) {
                Ok(dir) => std::env::current_dir().map_err(io)?.join(dir),
                Err(e) => return Ok(Outcome::Failed(None, e)),
            },
            None => work.clone(),
        };
        // A re-attached attempt has the time its first start left it.
        let timeout = match (self.reattach, timeout, self.step.started_ts) {
            (true, Some(limit), Some(started)) => Some(
                limit.saturating_sub(Duration::from_micros((now_us() - started).max(0) as u64)),
            ),
            (_, limit, _) => limit,
        };
        let launch = StepLaunch {
            run_id: self.run.id.clone(),
            workflow: self.run.workflow.clone(),
            step: self.step.name.clone(),
            attempt: self.step.attempt,
            argv,
            env,
            cwd,
            stdout: self.log_path("stdout"),
            stderr: self.log_path("stderr"),
            image: self.template.image.clone(),
            resources: self.template.resources.clone(),
            timeout,
        };
        let executor = self.engine.executor.clone();
        let started = if self.reattach {
            match executor.reattach(&launch).await {
                Ok(Some(handle)) => Ok(handle),
                Ok(None) => Err(format!(
                    "lost: the training role stopped during the attempt and its {} attempt is gone",
                    executor.name()
                )),
                Err(e) => Err(e),
            }
        } else {
            executor.start(&launch).await
        };
        let mut handle = match started {
            Ok(handle) => handle,
            Err(e) => return Ok(Outcome::Failed(None, e)),
        };
        let (pgid, proc_start) = handle.record();
        if !self.reattach || pgid.is_some() {
            self.step.pgid = pgid;
            self.step.proc_start = proc_start;
            self.engine.store.put_step(&self.step).await?;
        }
        handle.follow_logs();
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let grace = self.engine.settings.kill_grace;
        let ended = tokio::select! {
            exit = handle.wait() => Ok(exit),
            _ = sleep => Err(None),
            reason = wait_stop(stop) => Err(Some(reason)),
        };
        let outcome = match ended {
            Ok(Ok(Exit::Code(0))) => Outcome::Succeeded(BuiltinOutput::default()),
            Ok(Ok(Exit::Code(code))) => Outcome::Failed(Some(code), format!("exit code {code}")),
            Ok(Ok(Exit::Signal(signal))) => {
                Outcome::Failed(None, format!("killed by signal {signal}"))
            }
            Ok(Ok(Exit::Failed(reason))) => Outcome::Failed(None, reason),
            Ok(Err(e)) => Outcome::Failed(None, e),
            Err(reason) => {
                handle.cancel(grace).await;
                match reason {
                    Some(reason) => Outcome::Stopped(reason),
                    None => Outcome::Failed(
                        None,
                        format!(
                            "timed out after {}; {}",
                            humantime::format_duration(self.template.timeout.unwrap_or_default()),
                            if executor.is_local() {
                                "its process group was killed"
                            } else {
                                "its job was deleted"
                            }
                        ),
                    ),
                }
            }
        };
        // Whatever the attempt did, nothing of it outlives it.
        handle.finish(grace).await;
        Ok(outcome)
    }

    async fn run_builtin(
        &self,
        builtin: Builtin,
        with: BTreeMap<String, serde_json::Value>,
        work: &Path,
        timeout: Option<std::time::Duration>,
        stop: &mut watch::Receiver<Option<Stop>>,
    ) -> Outcome {
        let mut log = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path("stdout"))
        {
            Ok(log) => log,
            Err(e) => return Outcome::Failed(None, format!("cannot open the log: {e}")),
        };
        let ctx = mlserve_proto::CallContext::new();
        let work_call = builtin::run(
            builtin,
            &self.engine.env,
            ctx,
            &self.run.id,
            &with,
            work,
            &mut log,
        );
        let limited = async {
            match timeout {
                Some(t) => tokio::time::timeout(t, work_call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("timed out after {}", humantime::format_duration(t)))
                    }),
                None => work_call.await,
            }
        };
        tokio::select! {
            result = limited => match result {
                Ok(output) => Outcome::Succeeded(output),
                Err(message) => Outcome::Failed(None, message),
            },
            reason = wait_stop(stop) => Outcome::Stopped(reason),
        }
    }

    /// Reads output parameters and metrics, uploads output artifacts.
    async fn collect(&mut self, builtin: BuiltinOutput) -> std::result::Result<(), String> {
        let work = self.work_dir();
        let mut parameters = builtin.parameters;
        for output in &self.template.outputs.parameters {
            let value = outputs::read_parameter(&work.join(&output.path))
                .await
                .map_err(|e| format!("output parameter '{}': {e}", output.name))?;
            parameters.insert(output.name.clone(), value);
        }
        if let Some(path) = &self.template.outputs.metrics {
            for (name, value) in outputs::read_metrics(&work.join(path)).await? {
                self.engine
                    .store
                    .put_metric(&self.run.id, &self.step.name, &name, value)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut files = builtin.artifacts;
        files.extend(
            self.template
                .outputs
                .artifacts
                .iter()
                .map(|a| (a.name.clone(), a.path.clone())),
        );
        for (name, path) in files {
            let key = outputs::key(&self.run.id, &instance_dir(&self.step), &path);
            let (sha256, size) =
                outputs::upload(&self.engine.env.artifacts, &work.join(&path), &key)
                    .await
                    .map_err(|e| format!("output artifact '{name}': {e}"))?;
            let row = ArtifactRow {
                step: self.step.name.clone(),
                name,
                object_key: key,
                sha256,
                size,
            };
            self.engine
                .store
                .put_artifact(&self.run.id, &row)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.step.outputs = parameters;
        Ok(())
    }

    /// Keeps the logs in the object store (best effort: a failure is logged).
    async fn upload_logs(&self) {
        for stream in ["stdout", "stderr"] {
            let path = self.log_path(stream);
            if tokio::fs::metadata(&path).await.is_err() {
                continue;
            }
            let key = outputs::key(
                &self.run.id,
                &instance_dir(&self.step),
                &format!("logs/{stream}.log"),
            );
            match outputs::upload(&self.engine.env.artifacts, &path, &key).await {
                Ok((sha256, size)) => {
                    let row = ArtifactRow {
                        step: self.step.name.clone(),
                        name: format!("logs/{stream}"),
                        object_key: key,
                        sha256,
                        size,
                    };
                    if let Err(e) = self.engine.store.put_artifact(&self.run.id, &row).await {
                        tracing::warn!(error = %e, "could not record the step's log");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not keep the step's log"),
            }
        }
    }

    fn header(&self, line: &str) {
        let path = self.log_path("stdout");
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

async fn wait_stop(stop: &mut watch::Receiver<Option<Stop>>) -> Stop {
    let reason = match stop.wait_for(Option::is_some).await {
        Ok(reason) => Some(reason.clone().unwrap_or(Stop::Cancel)),
        Err(_) => None,
    };
    match reason {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

fn io(e: std::io::Error) -> crate::error::TrainingError {
    crate::error::TrainingError::Internal(e.to_string())
}
