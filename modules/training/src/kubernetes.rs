//! The Kubernetes executor: each attempt of a command step is a batch/v1
//! Job (see [`crate::jobs`] for its shape), created through the kube crate,
//! owned by its run's ConfigMap. Its pod's output (stdout and stderr, which
//! Kubernetes merges) is followed into the step's stdout log, the same file
//! the local executor writes. The Job's name is fixed by run, step and
//! attempt, so a create that finds it (409) attaches to it instead: after a
//! restart the role re-attaches to Jobs still running, and no attempt ever
//! runs twice. Cancel deletes the Job and its pod (foreground propagation);
//! the end of a run deletes its owner, and with it every Job and pod.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::Client;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::executor::{AttemptHandle, Executor, Exit, StepLaunch};
use crate::jobs::{self, JobOptions};
use crate::store::StepRow;

/// Runs attempts as Jobs in one namespace.
pub struct KubernetesExecutor {
    client: Client,
    namespace: String,
    options: JobOptions,
    poll: Duration,
    /// Run id -> its owner ConfigMap's uid.
    owners: Mutex<HashMap<String, String>>,
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

impl KubernetesExecutor {
    /// Connects with the in-cluster service account (or `$KUBECONFIG`).
    pub async fn connect(options: JobOptions, poll: Duration) -> Result<Self, String> {
        let client = Client::try_default()
            .await
            .map_err(|e| format!("no Kubernetes API server: {e}"))?;
        Ok(Self::new(client, options, poll))
    }

    /// Over an existing client; the namespace is the options' or the client's.
    pub fn new(client: Client, mut options: JobOptions, poll: Duration) -> Self {
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        options.namespace = Some(namespace.clone());
        KubernetesExecutor {
            client,
            namespace,
            options,
            poll,
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The run's owner ConfigMap (created on first use): its name and uid.
    async fn owner(&self, run: &str, workflow: &str) -> Result<(String, String), String> {
        let name = jobs::owner_name(run);
        if let Some(uid) = self.owners.lock().unwrap().get(run) {
            return Ok((name, uid.clone()));
        }
        let manifest: ConfigMap =
            serde_json::from_value(jobs::owner_manifest(run, workflow, &self.options))
                .map_err(|e| e.to_string())?;
        let api = self.config_maps();
        let created = match api.create(&PostParams::default(), &manifest).await {
            Ok(created) => created,
            Err(e) if is_status(&e, 409) => api
                .get(&name)
                .await
                .map_err(|e| format!("cannot read the run's owner {name}: {e}"))?,
            Err(e) => return Err(format!("cannot create the run's owner {name}: {e}")),
        };
        let uid = created
            .metadata
            .uid
            .ok_or_else(|| format!("the run's owner {name} has no uid"))?;
        self.owners
            .lock()
            .unwrap()
            .insert(run.to_string(), uid.clone());
        Ok((name, uid))
    }

    fn handle(&self, name: String, launch: &StepLaunch, reattached: bool) -> Box<JobAttempt> {
        Box::new(JobAttempt {
            jobs: self.jobs(),
            pods: self.pods(),
            name,
            poll: self.poll,
            stdout: launch.stdout.clone(),
            reattached,
            follower: None,
        })
    }
}

#[async_trait]
impl Executor for KubernetesExecutor {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn is_local(&self) -> bool {
        false
    }

    fn reattaches(&self) -> bool {
        true
    }

    async fn start(&self, launch: &StepLaunch) -> Result<Box<dyn AttemptHandle>, String> {
        let (owner, uid) = self.owner(&launch.run_id, &launch.workflow).await?;
        let name = jobs::job_name(&launch.run_id, &launch.step, launch.attempt);
        let job: Job = serde_json::from_value(jobs::job_manifest(
            launch,
            &self.options,
            Some((&owner, &uid)),
        ))
        .map_err(|e| e.to_string())?;
        match self.jobs().create(&PostParams::default(), &job).await {
            Ok(_) => {
                tracing::info!(run = %launch.run_id, step = %launch.step, job = %name, "job created");
                Ok(self.handle(name, launch, false))
            }
            Err(e) if is_status(&e, 409) => {
                tracing::info!(run = %launch.run_id, step = %launch.step, job = %name, "job exists: attaching to it");
                Ok(self.handle(name, launch, true))
            }
            Err(e) => Err(format!("cannot create job {name}: {e}")),
        }
    }

    async fn reattach(
        &self,
        launch: &StepLaunch,
    ) -> Result<Option<Box<dyn AttemptHandle>>, String> {
        let name = jobs::job_name(&launch.run_id, &launch.step, launch.attempt);
        match self.jobs().get_opt(&name).await {
            Ok(Some(_)) => {
                tracing::info!(run = %launch.run_id, step = %launch.step, job = %name, "re-attached to job");
                Ok(Some(
                    self.handle(name, launch, true) as Box<dyn AttemptHandle>
                ))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("cannot read job {name}: {e}")),
        }
    }

    async fn reap(&self, step: &StepRow) -> bool {
        let name = jobs::job_name(&step.run_id, &step.name, step.attempt);
        match self.jobs().delete(&name, &DeleteParams::foreground()).await {
            Ok(_) => true,
            Err(e) => is_status(&e, 404),
        }
    }

    async fn run_ended(&self, run_id: &str) {
        self.owners.lock().unwrap().remove(run_id);
        let name = jobs::owner_name(run_id);
        match self
            .config_maps()
            .delete(&name, &DeleteParams::background())
            .await
        {
            Ok(_) => tracing::info!(run = %run_id, owner = %name, "deleted the run's jobs"),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                tracing::warn!(run = %run_id, owner = %name, error = %e, "could not delete the run's jobs")
            }
        }
    }
}

/// One attempt's Job.
struct JobAttempt {
    jobs: Api<Job>,
    pods: Api<Pod>,
    name: String,
    poll: Duration,
    stdout: PathBuf,
    reattached: bool,
    follower: Option<JoinHandle<()>>,
}

/// The Job's state: running, or ended as `Exit`.
fn job_ended(job: &Job) -> Option<(bool, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => Some((true, String::new())),
            "Failed" | "FailureTarget" => Some((
                false,
                format!(
                    "{}{}",
                    c.reason.clone().unwrap_or_default(),
                    c.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
            )),
            _ => None,
        })
}

impl JobAttempt {
    fn selector(&self) -> ListParams {
        ListParams::default().labels(&format!("job-name={}", self.name))
    }

    /// The exit code of the Job's step container, where a pod ran it.
    async fn exit_code(&self) -> Option<i32> {
        let pods = self.pods.list(&self.selector()).await.ok()?;
        pods.items.iter().find_map(|pod| {
            pod.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find(|c| c.name == jobs::CONTAINER)?
                .state
                .as_ref()?
                .terminated
                .as_ref()
                .map(|t| t.exit_code)
        })
    }

    async fn stop_following(&mut self, limit: Duration) {
        if let Some(mut follower) = self.follower.take() {
            if tokio::time::timeout(limit, &mut follower).await.is_err() {
                follower.abort();
            }
        }
    }
}

/// Copies the output of the Job's pod into `stdout` (the whole log after a
/// re-attach: the file is started over).
async fn follow(pods: Api<Pod>, job: String, stdout: PathBuf, restart: bool, poll: Duration) {
    use futures_util::AsyncReadExt;
    let selector = ListParams::default().labels(&format!("job-name={job}"));
    let pod = loop {
        if let Ok(list) = pods.list(&selector).await {
            let started = list.items.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|phase| phase != "Pending")
            });
            if let Some(name) = started.and_then(|p| p.metadata.name) {
                break name;
            }
        }
        tokio::time::sleep(poll).await;
    };
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true);
    if restart {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    let Ok(mut file) = options.open(&stdout).await else {
        return;
    };
    if restart {
        let _ = file
            .write_all(format!("=== job {job}, pod {pod}: its whole log ===\n").as_bytes())
            .await;
    }
    let params = LogParams {
        container: Some(jobs::CONTAINER.to_string()),
        follow: true,
        ..LogParams::default()
    };
    let stream = match pods.log_stream(&pod, &params).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(job = %job, pod = %pod, error = %e, "cannot follow the step's log");
            return;
        }
    };
    let mut stream = std::pin::pin!(stream);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if file.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(job = %job, pod = %pod, error = %e, "the step's log stream broke");
                break;
            }
        }
    }
    let _ = file.flush().await;
}

#[async_trait]
impl AttemptHandle for JobAttempt {
    fn record(&self) -> (Option<i64>, Option<i64>) {
        (None, None)
    }

    fn follow_logs(&mut self) {
        if self.follower.is_none() {
            self.follower = Some(tokio::spawn(follow(
                self.pods.clone(),
                self.name.clone(),
                self.stdout.clone(),
                self.reattached,
                self.poll,
            )));
        }
    }

    async fn wait(&mut self) -> Result<Exit, String> {
        loop {
            match self.jobs.get_opt(&self.name).await {
                Ok(Some(job)) => {
                    if let Some((succeeded, reason)) = job_ended(&job) {
                        let code = self.exit_code().await;
                        // The log stream ends with the container; a moment
                        // more lets the last lines land.
                        self.stop_following(Duration::from_secs(5)).await;
                        return Ok(match (succeeded, code) {
                            (true, _) => Exit::Code(0),
                            (false, Some(code)) if code != 0 => Exit::Code(code),
                            (false, _) => {
                                Exit::Failed(format!("job {} failed: {reason}", self.name))
                            }
                        });
                    }
                }
                Ok(None) => return Err(format!("job {} was deleted", self.name)),
                Err(e) => {
                    tracing::warn!(job = %self.name, error = %e, "cannot read the step's job; trying again")
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn cancel(&mut self, grace: Duration) {
        let params = DeleteParams {
            grace_period_seconds: Some(grace.as_secs().max(1) as u32),
            ..DeleteParams::foreground()
        };
        match self.jobs.delete(&self.name, &params).await {
            Ok(_) => tracing::info!(job = %self.name, "deleted the step's job"),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                tracing::warn!(job = %self.name, error = %e, "could not delete the step's job")
            }
        }
        self.stop_following(Duration::from_secs(1)).await;
    }

    async fn finish(&mut self, _grace: Duration) {
        self.stop_following(Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests;
