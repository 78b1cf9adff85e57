//! Drives runs: instantiates steps as their dependencies end, evaluates
//! `when`, fans out, launches attempts within the concurrency limits, applies
//! retry policies and timeouts, runs the exit handler and ends the run.
//!
//! Every transition is written to SQL first; the driver of a run re-reads the
//! run's steps after each event, so a restarted role resumes from the table
//! ([`Engine::recover`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlserve_common::events::{publish_bounded, Event, EventBus};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::attempt::{self, Attempt};
use crate::builtin::BuiltinEnv;
use crate::error::{Result, TrainingError};
use crate::executor::{Executor, LocalExecutor};
use crate::spec::{Scalar, StepSpec, WorkflowSpec};
use crate::state::{RunState, StepState};
use crate::store::{now_us, RunRow, StepRow, Store};
use crate::template::{self, Reference, Values};
use crate::validate;

/// How the engine runs steps.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name: it drives the runs it owns, and only those.
    pub node: String,
    /// Where step directories go (`<dir>/runs/<run>/<step>/`).
    pub work_dir: PathBuf,
    /// Steps running at once on this node.
    pub max_parallel: usize,
    /// GPUs on this node; a GPU step takes one for its duration.
    pub gpus: usize,
    /// Between SIGTERM and SIGKILL when a step is stopped.
    pub kill_grace: Duration,
}

/// Why running steps are being stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// A user cancelled the run.
    Cancel,
    /// The run's time limit passed.
    RunTimeout(Duration),
}

/// The training engine of one node.
pub struct Engine {
    pub(crate) store: Store,
    pub(crate) env: BuiltinEnv,
    pub(crate) settings: Settings,
    pub(crate) events: Option<Arc<dyn EventBus>>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) gpus: Arc<GpuPool>,
    pub(crate) executor: Arc<dyn Executor>,
    drivers: Mutex<HashMap<String, watch::Sender<Option<Stop>>>>,
}

/// The GPUs of the node, each held by at most one step.
pub struct GpuPool {
    permits: Semaphore,
    free: Mutex<Vec<usize>>,
}

impl GpuPool {
    fn new(count: usize) -> GpuPool {
        GpuPool {
            permits: Semaphore::new(count),
            free: Mutex::new((0..count).rev().collect()),
        }
    }

    /// Waits for a free GPU and returns its index; give it back with [`GpuPool::release`].
    pub async fn acquire(&self) -> usize {
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
        self.free.lock().unwrap().pop().unwrap_or(0)
    }

    /// Returns GPU `index` to the pool.
    pub fn release(&self, index: usize) {
        self.free.lock().unwrap().push(index);
        self.permits.add_permits(1);
    }
}

/// The values a step's templates read, from the run and the instances that
/// ended before it.
pub fn values_for(
    run: &RunRow,
    steps: &[StepRow],
    artifacts: &[crate::store::ArtifactRow],
) -> Values {
    let mut values = Values::new();
    for (k, v) in &run.parameters {
        values.insert(Reference::Parameter(k.clone()), v.clone());
    }
    values.insert(Reference::WorkflowName, run.workflow.clone());
    values.insert(Reference::RunId, run.id.clone());
    let mut by_template: BTreeMap<&str, Vec<&StepRow>> = BTreeMap::new();
    for step in steps {
        by_template.entry(&step.template).or_default().push(step);
    }
    for (template, mut instances) in by_template {
        instances.sort_by_key(|s| s.idx);
        let fanned = instances.len() > 1 || instances.iter().any(|s| s.item.is_some());
        let mut names: Vec<&String> = instances.iter().flat_map(|s| s.outputs.keys()).collect();
        names.dedup();
        for name in names {
            let reference = Reference::OutputParameter {
                step: template.to_string(),
                name: name.clone(),
            };
            let value = if fanned {
                let all: Vec<&str> = instances
                    .iter()
                    .map(|s| s.outputs.get(name).map(String::as_str).unwrap_or(""))
                    .collect();
                serde_json::to_string(&all).unwrap_or_default()
            } else {
                instances[0].outputs.get(name).cloned().unwrap_or_default()
            };
            values.insert(reference, value);
        }
    }
    for artifact in artifacts {
        let template = steps
            .iter()
            .find(|s| s.name == artifact.step)
            .map(|s| s.template.clone())
            .unwrap_or_else(|| artifact.step.clone());
        values.insert(
            Reference::OutputArtifact {
                step: template,
                name: artifact.name.clone(),
            },
            artifact.object_key.clone(),
        );
    }
    values
}

/// Evaluates a rendered `when` condition.
pub fn evaluate_when(rendered: &str) -> std::result::Result<bool, String> {
    evalexpr::eval_boolean(rendered).map_err(|e| format!("when '{rendered}': {e}"))
}

impl Engine {
    /// An engine over `store`, reaching the other services through `env`,
    /// running command steps as local processes.
    pub fn new(
        store: Store,
        env: BuiltinEnv,
        settings: Settings,
        events: Option<Arc<dyn EventBus>>,
    ) -> Arc<Engine> {
        Engine::with_executor(store, env, settings, events, Arc::new(LocalExecutor))
    }

    /// An engine whose command steps run on `executor`.
    pub fn with_executor(
        store: Store,
        env: BuiltinEnv,
        settings: Settings,
        events: Option<Arc<dyn EventBus>>,
        executor: Arc<dyn Executor>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            executor,
            slots: Arc::new(Semaphore::new(settings.max_parallel.max(1))),
            gpus: Arc::new(GpuPool::new(settings.gpus)),
            store,
            env,
            settings,
            events,
            drivers: Mutex::new(HashMap::new()),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where command steps run.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    /// Validates and stores a workflow; returns its version and whether it is new.
    pub async fn apply(&self, spec: &WorkflowSpec) -> Result<(i64, bool)> {
        validate::check(spec)?;
        self.check_resources(spec)?;
        self.store.put_workflow(spec).await
    }

    fn check_resources(&self, spec: &WorkflowSpec) -> Result<()> {
        for step in spec.steps.iter().chain(spec.on_exit.iter()) {
            if step.resources.gpu as usize > self.settings.gpus.max(1)
                && step.image.is_none()
                && self.executor.is_local()
            {
                return Err(validate::SpecError::Step {
                    step: step.name.clone(),
                    detail: format!(
                        "asks for {} GPUs; a local step gets one (this node has {})",
                        step.resources.gpu, self.settings.gpus
                    ),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Submits a run of the workflow's latest version and starts driving it.
    pub async fn submit(
        self: &Arc<Self>,
        workflow: &str,
        parameters: &BTreeMap<String, Scalar>,
        trigger: &str,
    ) -> Result<RunRow> {
        let stored = self
            .store
            .workflow(workflow, None)
            .await?
            .ok_or_else(|| TrainingError::NotFound(format!("no workflow '{workflow}'")))?;
        let resolved = validate::resolve_parameters(&stored.spec, parameters)?;
        if self.executor.is_local() {
            validate::check_commands(&stored.spec, &resolved)?;
        }
        let run = RunRow {
            id: format!("{workflow}-{:08x}", fastrand::u32(..)),
            workflow: workflow.to_string(),
            workflow_version: stored.version,
            state: RunState::Pending,
            parameters: resolved,
            trigger: trigger.to_string(),
            owner: self.settings.node.clone(),
            message: String::new(),
            cancel_requested: false,
            created_ts: now_us(),
            started_ts: None,
            finished_ts: None,
        };
        self.store.create_run(&run).await?;
        tracing::info!(run = %run.id, workflow, trigger, "run submitted");
        self.spawn_driver(run.id.clone());
        Ok(run)
    }

    /// Asks a run to stop; its running steps are killed.
    pub async fn cancel(&self, run_id: &str) -> Result<RunRow> {
        let run = self.store.run(run_id).await?;
        if run.state.is_terminal() {
            return Err(TrainingError::Conflict(format!(
                "run '{run_id}' has already ended ({})",
                run.state
            )));
        }
        self.store.request_cancel(run_id).await?;
        if let Some(stop) = self.drivers.lock().unwrap().get(run_id) {
            stop.send_replace(Some(Stop::Cancel));
        }
        self.store.run(run_id).await
    }

    /// Runs a failed or cancelled run again from where it failed: succeeded
    /// steps keep their outputs, the others run anew (Argo's retry).
    pub async fn retry(self: &Arc<Self>, run_id: &str) -> Result<RunRow> {
        let mut run = self.store.run(run_id).await?;
        if !matches!(run.state, RunState::Failed | RunState::Cancelled) {
            return Err(TrainingError::Conflict(format!(
                "run '{run_id}' is {}; only a failed or cancelled run can be retried",
                run.state
            )));
        }
        self.store.reset_unfinished_steps(run_id).await?;
        run.state = RunState::Pending;
        run.message = format!("retried at {}", now_us());
        run.finished_ts = None;
        self.store.reopen_run(&run, &self.settings.node).await?;
        self.spawn_driver(run_id.to_string());
        self.store.run(run_id).await
    }

    /// After a restart: for every unfinished run this node owns, ends what is
    /// left of the attempts that were running (killing their process groups),
    /// counts each as a lost attempt under its retry policy, and resumes. An
    /// executor that keeps attempts across restarts (Kubernetes Jobs) keeps
    /// its command steps running: the driver re-attaches to them.
    pub async fn recover(self: &Arc<Self>) -> Result<usize> {
        let runs = self.store.active_runs(&self.settings.node).await?;
        for run in &runs {
            let spec = self.spec_of(run).await?;
            for mut step in self.store.steps(&run.id).await? {
                if step.state != StepState::Running {
                    continue;
                }
                let template = find_step(&spec, &step.template)
                    .cloned()
                    .unwrap_or_default();
                if self.executor.reattaches() && template.uses.is_none() {
                    tracing::info!(run = %run.id, step = %step.name, executor = self.executor.name(), "re-attaching to a running step");
                    continue;
                }
                if !self.executor.reap(&step).await {
                    tracing::error!(run = %run.id, step = %step.name, pgid = ?step.pgid, "an orphaned step survives being killed");
                }
                attempt::settle_failure(
                    &self.store,
                    &mut step,
                    &template,
                    None,
                    "lost: the training role stopped during the attempt".into(),
                )
                .await?;
            }
            tracing::info!(run = %run.id, "resuming run after restart");
            self.spawn_driver(run.id.clone());
        }
        Ok(runs.len())
    }

    pub(crate) async fn spec_of(&self, run: &RunRow) -> Result<WorkflowSpec> {
        Ok(self
            .store
            .workflow(&run.workflow, Some(run.workflow_version))
            .await?
            .ok_or_else(|| {
                TrainingError::Internal(format!("run '{}' lost its workflow version", run.id))
            })?
            .spec)
    }

    fn spawn_driver(self: &Arc<Self>, run_id: String) {
        let (tx, rx) = watch::channel(None);
        self.drivers.lock().unwrap().insert(run_id.clone(), tx);
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(err) = engine.drive(&run_id, rx).await {
                tracing::error!(run = %run_id, error = %err, "run driver failed");
                if let Ok(mut run) = engine.store.run(&run_id).await {
                    run.state = RunState::Failed;
                    run.message = format!("internal error: {err}");
                    run.finished_ts = Some(now_us());
                    let _ = engine.store.update_run(&run).await;
                }
            }
            engine.drivers.lock().unwrap().remove(&run_id);
        });
    }

    async fn drive(
        self: &Arc<Self>,
        run_id: &str,
        mut stop: watch::Receiver<Option<Stop>>,
    ) -> Result<()> {
        let spec = Arc::new(self.spec_of(&self.store.run(run_id).await?).await?);
        let (done_tx, mut done_rx) = mpsc::channel::<String>(64);
        let mut running: HashMap<String, watch::Sender<Option<Stop>>> = HashMap::new();
        let mut stopping: Option<Stop> = None;
        loop {
            let mut run = self.store.run(run_id).await?;
            if run.cancel_requested && stopping.is_none() {
                stopping = Some(Stop::Cancel);
            }
            let deadline = spec.timeout.map(|t| run.created_ts + t.as_micros() as i64);
            if let (Some(deadline), None) = (deadline, &stopping) {
                if now_us() >= deadline {
                    stopping = Some(Stop::RunTimeout(spec.timeout.unwrap_or_default()));
                }
            }
            if let Some(reason) = &stopping {
                for tx in running.values() {
                    tx.send_replace(Some(reason.clone()));
                }
            }
            let mut steps = self.store.steps(run_id).await?;
            if stopping.is_some() {
                if running.is_empty() {
                    for mut step in steps.into_iter().filter(|s| !s.state.is_terminal()) {
                        step.state = StepState::Cancelled;
                        step.finished_ts = Some(now_us());
                        step.next_attempt_ts = None;
                        self.store.put_step(&step).await?;
                    }
                    let (state, message) = match stopping {
                        Some(Stop::RunTimeout(limit)) => (
                            RunState::Failed,
                            format!(
                                "the run timed out after {}",
                                humantime::format_duration(limit)
                            ),
                        ),
                        _ => (RunState::Cancelled, "cancelled".to_string()),
                    };
                    return self.finish(&mut run, state, message).await;
                }
            } else {
                if self.instantiate(&spec, &run, &steps).await? {
                    steps = self.store.steps(run_id).await?;
                }
                if run.state == RunState::Pending && !steps.is_empty() {
                    run.state = RunState::Running;
                    run.started_ts = Some(now_us());
                    self.store.update_run(&run).await?;
                }
                let now = now_us();
                for step in &steps {
                    // A step recorded as running that no attempt of this
                    // driver holds was running when the role stopped, on an
                    // executor that keeps it: re-attach.
                    let reattach = step.state == StepState::Running && self.executor.reattaches();
                    let ready = step.state == StepState::Pending
                        || reattach
                        || (step.state == StepState::Retrying
                            && step.next_attempt_ts.is_none_or(|t| t <= now));
                    if ready && !running.contains_key(&step.name) {
                        let template =
                            find_step(&spec, &step.template).cloned().ok_or_else(|| {
                                TrainingError::Internal(format!(
                                    "no step '{}' in the workflow",
                                    step.template
                                ))
                            })?;
                        let (tx, rx) = watch::channel(None);
                        running.insert(step.name.clone(), tx);
                        let attempt = Attempt {
                            engine: self.clone(),
                            run: run.clone(),
                            step: step.clone(),
                            template,
                            exit_status: exit_status(&steps, &spec),
                            reattach,
                        };
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            let name = attempt.step.name.clone();
                            attempt.run(rx).await;
                            let _ = done.send(name).await;
                        });
                    }
                }
                if running.is_empty() && self.all_done(&spec, &steps) {
                    let failed = steps
                        .iter()
                        .filter(|s| s.state == StepState::Failed)
                        .map(|s| s.name.clone())
                        .collect::<Vec<_>>();
                    let state = if failed.is_empty() {
                        RunState::Succeeded
                    } else {
                        RunState::Failed
                    };
                    let message = if failed.is_empty() {
                        String::new()
                    } else {
                        format!("failed steps: {}", failed.join(", "))
                    };
                    return self.finish(&mut run, state, message).await;
                }
            }
            // Wait for a step to end, a stop, the next retry or the deadline.
            // Rows read this turn suffice: a step that changes state since
            // sends a message, which starts the next turn.
            let next_retry = steps
                .iter()
                .filter(|s| s.state == StepState::Retrying && !running.contains_key(&s.name))
                .filter_map(|s| s.next_attempt_ts)
                .min();
            let wake = [next_retry, deadline.filter(|_| stopping.is_none())]
                .into_iter()
                .flatten()
                .min()
                .map(|t| Duration::from_micros((t - now_us()).max(0) as u64))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                Some(name) = done_rx.recv() => { running.remove(&name); }
                changed = stop.changed() => {
                    if changed.is_ok() {
                        if let Some(reason) = stop.borrow().clone() { stopping.get_or_insert(reason); }
                    }
                }
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// Creates the instances of every step whose dependencies have all
    /// ended, and of the exit handler once everything else has.
    async fn instantiate(
        &self,
        spec: &WorkflowSpec,
        run: &RunRow,
        steps: &[StepRow],
    ) -> Result<bool> {
        let mut created = false;
        let waiting = spec
            .steps
            .iter()
            .any(|t| !steps.iter().any(|s| s.template == t.name));
        let artifacts = if waiting {
            self.store.artifacts(&run.id).await?
        } else {
            Vec::new()
        };
        let values = values_for(run, steps, &artifacts);
        for template in &spec.steps {
            if steps.iter().any(|s| s.template == template.name) {
                continue;
            }
            let mut blocked_by = None;
            let mut waiting = false;
            for dep in &template.dependencies {
                let instances: Vec<&StepRow> =
                    steps.iter().filter(|s| &s.template == dep).collect();
                if instances.is_empty() || instances.iter().any(|s| !s.state.is_terminal()) {
                    waiting = true;
                } else if let Some(bad) = instances.iter().find(|s| !s.state.lets_dependents_run())
                {
                    blocked_by = Some(format!("dependency '{}' {}", bad.name, bad.state));
                }
            }
            if waiting {
                continue;
            }
            created = true;
            if let Some(reason) = blocked_by {
                self.put_ended(
                    run,
                    template,
                    StepState::Skipped,
                    format!("not run: {reason}"),
                )
                .await?;
                continue;
            }
            if let Some(skipped) = reads_skipped_outputs(template, steps) {
                self.put_ended(
                    run,
                    template,
                    StepState::Skipped,
                    format!("not run: it reads the outputs of '{skipped}', which was skipped"),
                )
                .await?;
                continue;
            }
            if let Some(when) = &template.when {
                let rendered = template::render(when, &values);
                match rendered
                    .map_err(|e| e.to_string())
                    .and_then(|r| evaluate_when(&r))
                {
                    Ok(true) => {}
                    Ok(false) => {
                        self.put_ended(
                            run,
                            template,
                            StepState::Skipped,
                            format!("when '{when}' was false"),
                        )
                        .await?;
                        continue;
                    }
                    Err(detail) => {
                        self.put_ended(run, template, StepState::Failed, detail)
                            .await?;
                        continue;
                    }
                }
            }
            match &template.with_items {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let text = match item {
                            Scalar::Text(t) => {
                                template::render(t, &values).unwrap_or_else(|_| t.clone())
                            }
                            other => other.as_text(),
                        };
                        let mut row =
                            new_instance(run, template, format!("{}({i})", template.name));
                        row.idx = i as i64;
                        row.item = Some(text);
                        self.store.put_step(&row).await?;
                    }
                    if items.is_empty() {
                        self.put_ended(
                            run,
                            template,
                            StepState::Skipped,
                            "with_items is empty".into(),
                        )
                        .await?;
                    }
                }
                None => {
                    let row = new_instance(run, template, template.name.clone());
                    self.store.put_step(&row).await?;
                }
            }
        }
        if let Some(exit) = &spec.on_exit {
            let main_done = spec
                .steps
                .iter()
                .all(|t| steps.iter().any(|s| s.template == t.name))
                && steps
                    .iter()
                    .filter(|s| s.template != exit.name)
                    .all(|s| s.state.is_terminal());
            if main_done && !steps.iter().any(|s| s.template == exit.name) {
                self.store
                    .put_step(&new_instance(run, exit, exit.name.clone()))
                    .await?;
                created = true;
            }
        }
        Ok(created)
    }

    async fn put_ended(
        &self,
        run: &RunRow,
        template: &StepSpec,
        state: StepState,
        message: String,
    ) -> Result<()> {
        let mut row = new_instance(run, template, template.name.clone());
        row.state = state;
        row.message = message;
        row.finished_ts = Some(now_us());
        self.store.put_step(&row).await
    }

    fn all_done(&self, spec: &WorkflowSpec, steps: &[StepRow]) -> bool {
        spec.steps
            .iter()
            .chain(spec.on_exit.iter())
            .all(|t| steps.iter().any(|s| s.template == t.name))
            && steps.iter().all(|s| s.state.is_terminal())
    }

    async fn finish(&self, run: &mut RunRow, state: RunState, message: String) -> Result<()> {
        run.state = state;
        run.message = message;
        run.finished_ts = Some(now_us());
        self.store.update_run(run).await?;
        tracing::info!(run = %run.id, state = %state, message = %run.message, "run ended");
        self.executor.run_ended(&run.id).await;
        if let Some(bus) = &self.events {
            let event = Event::TrainingRunFinished {
                workflow: run.workflow.clone(),
                run: run.id.clone(),
                state: state.as_str().to_string(),
                at: now_us(),
            };
            if let Err(err) = publish_bounded(bus.as_ref(), &event).await {
                tracing::warn!(run = %run.id, error = %err, "could not publish the run's end");
            }
        }
        Ok(())
    }
}

/// `{{workflow.status}}` for the exit handler: Succeeded or Failed, as Argo writes it.
fn exit_status(steps: &[StepRow], spec: &WorkflowSpec) -> String {
    let exit = spec.on_exit.as_ref().map(|e| e.name.as_str());
    let failed = steps
        .iter()
        .filter(|s| Some(s.template.as_str()) != exit)
        .any(|s| matches!(s.state, StepState::Failed | StepState::Cancelled));
    if failed { "Failed" } else { "Succeeded" }.to_string()
}

/// The first step whose outputs `template` reads and whose instances were
/// all skipped (its outputs are unset, so `template` cannot run either).
fn reads_skipped_outputs(template: &StepSpec, steps: &[StepRow]) -> Option<String> {
    validate::templated_fields(template)
        .into_iter()
        .filter_map(|(_, text)| template::references(text).ok())
        .flatten()
        .filter_map(|r| r.step().map(str::to_string))
        .find(|producer| {
            let instances: Vec<&StepRow> =
                steps.iter().filter(|s| &s.template == producer).collect();
            !instances.is_empty() && instances.iter().all(|s| s.state == StepState::Skipped)
        })
}

pub(crate) fn find_step<'a>(spec: &'a WorkflowSpec, name: &str) -> Option<&'a StepSpec> {
    spec.steps
        .iter()
        .chain(spec.on_exit.iter())
        .find(|s| s.name == name)
}

fn new_instance(run: &RunRow, template: &StepSpec, name: String) -> StepRow {
    StepRow {
        run_id: run.id.clone(),
        name,
        template: template.name.clone(),
        state: StepState::Pending,
        ..StepRow::default()
    }
}

/// An engine for unit tests: SQLite and artifacts under `dir`, node `test`.
#[cfg(test)]
pub(crate) async fn test_engine(dir: &std::path::Path, executor: Arc<dyn Executor>) -> Arc<Engine> {
    let db = mlserve_common::db::testing::sqlite(dir).await;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap();
    Engine::with_executor(
        Store::new(db),
        BuiltinEnv {
            registry: None,
            features: None,
            artifacts: mlserve_registry::artifacts::Artifacts::new(Arc::new(store), ""),
        },
        Settings {
            node: "test".into(),
            work_dir: dir.join("work"),
            max_parallel: 2,
            gpus: 0,
            kill_grace: Duration::from_millis(100),
        },
        None,
        executor,
    )
}
