//! The Kubernetes executor against a fake API server on 127.0.0.1 (an axum
//! router answering the few endpoints it calls: configmaps, jobs, pods and
//! a pod's log). No real API server runs here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::*;

#[derive(Default)]
struct Fake {
    config_maps: BTreeMap<String, String>,
    jobs: BTreeMap<String, Value>,
    /// Job name -> how its pod ends (exit code); unset: `every_job`.
    outcome: BTreeMap<String, i32>,
    /// How a job without an outcome of its own ends; unset: still running.
    every_job: Option<i32>,
    job_creates: Vec<Value>,
    deleted_jobs: Vec<(String, Value)>,
    deleted_config_maps: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

impl Fake {
    fn ends(&self, job: &str) -> Option<i32> {
        self.outcome.get(job).copied().or(self.every_job)
    }
}

fn status(code: u16, reason: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": reason, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

async fn create_config_map(State(fake): State<Shared>, Json(mut cm): Json<Value>) -> Response {
    let mut fake = fake.lock().unwrap();
    let name = cm["metadata"]["name"].as_str().unwrap().to_string();
    if fake.config_maps.contains_key(&name) {
        return status(409, "AlreadyExists");
    }
    let uid = format!("uid-{name}");
    cm["metadata"]["uid"] = json!(uid);
    fake.config_maps.insert(name, uid);
    (StatusCode::CREATED, Json(cm)).into_response()
}

async fn config_map(
    State(fake): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
) -> Response {
    match fake.lock().unwrap().config_maps.get(&name) {
        Some(uid) => Json(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": name, "uid": uid}}))
        .into_response(),
        None => status(404, "NotFound"),
    }
}

async fn delete_config_map(
    State(fake): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
) -> Response {
    let mut fake = fake.lock().unwrap();
    fake.deleted_config_maps.push(name.clone());
    match fake.config_maps.remove(&name) {
        Some(_) => status(200, "Success"),
        None => status(404, "NotFound"),
    }
}

async fn create_job(State(fake): State<Shared>, Json(job): Json<Value>) -> Response {
    let mut fake = fake.lock().unwrap();
    fake.job_creates.push(job.clone());
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    if fake.jobs.contains_key(&name) {
        return status(409, "AlreadyExists");
    }
    fake.jobs.insert(name, job.clone());
    (StatusCode::CREATED, Json(job)).into_response()
}

fn with_status(mut job: Value, outcome: Option<i32>) -> Value {
    let condition = match outcome {
        Some(0) => json!([{"type": "Complete", "status": "True"}]),
        Some(_) => json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                           "message": "Job has reached the specified backoff limit"}]),
        None => json!([]),
    };
    job["status"] = json!({"conditions": condition});
    job
}

async fn job(State(fake): State<Shared>, Path((_ns, name)): Path<(String, String)>) -> Response {
    let fake = fake.lock().unwrap();
    match fake.jobs.get(&name) {
        Some(job) => Json(with_status(job.clone(), fake.ends(&name))).into_response(),
        None => status(404, "NotFound"),
    }
}

async fn delete_job(
    State(fake): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut fake = fake.lock().unwrap();
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    fake.deleted_jobs.push((name.clone(), options));
    match fake.jobs.remove(&name) {
        Some(job) => Json(job).into_response(),
        None => status(404, "NotFound"),
    }
}

async fn pods(
    State(fake): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
) -> Response {
    let fake = fake.lock().unwrap();
    let job = query
        .get("labelSelector")
        .and_then(|s| s.strip_prefix("job-name="))
        .unwrap_or_default()
        .to_string();
    let items = match fake.jobs.get(&job) {
        Some(_) => {
            let outcome = fake.ends(&job);
            let (phase, state) = match outcome {
                Some(code) => (
                    if code == 0 { "Succeeded" } else { "Failed" },
                    json!({"terminated": {"exitCode": code}}),
                ),
                None => ("Running", json!({"running": {}})),
            };
            vec![json!({"metadata": {"name": format!("{job}-pod")},
                        "status": {"phase": phase, "containerStatuses": [{
                            "name": "step", "image": "i", "imageID": "", "ready": false,
                            "restartCount": 0, "state": state}]}})]
        }
        None => Vec::new(),
    };
    Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}))
        .into_response()
}

async fn log(Path((_ns, pod)): Path<(String, String)>) -> Response {
    format!("hello from {pod}\n").into_response()
}

async fn fake_server() -> (KubernetesExecutor, Shared) {
    let fake: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/api/v1/namespaces/{ns}/configmaps",
            axum::routing::post(create_config_map),
        )
        .route(
            "/api/v1/namespaces/{ns}/configmaps/{name}",
            get(config_map).delete(delete_config_map),
        )
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs",
            axum::routing::post(create_job),
        )
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
            get(job).delete(delete_job),
        )
        .route("/api/v1/namespaces/{ns}/pods", get(pods))
        .route("/api/v1/namespaces/{ns}/pods/{pod}/log", get(log))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    config.default_namespace = "ml".into();
    let client = Client::try_from(config).unwrap();
    let executor = KubernetesExecutor::new(
        client,
        JobOptions {
            work_claim: Some("training-work".into()),
            ..JobOptions::default()
        },
        Duration::from_millis(20),
    );
    (executor, fake)
}

fn launch(dir: &std::path::Path, attempt: i64) -> StepLaunch {
    StepLaunch {
        run_id: "churn-0000beef".into(),
        workflow: "churn".into(),
        step: "train".into(),
        attempt,
        argv: vec![
            "python".into(),
            "train.py".into(),
            "--out".into(),
            "m.onnx".into(),
        ],
        env: BTreeMap::from([("MLSERVE_STEP".into(), "train".into())]),
        cwd: "/var/lib/mlserve/training/runs/churn-0000beef/train/work".into(),
        stdout: dir.join("stdout.log"),
        stderr: dir.join("stderr.log"),
        image: Some("trainer:1".into()),
        resources: crate::spec::Resources {
            cpu: Some("1".into()),
            memory: Some("2Gi".into()),
            gpu: 1,
        },
        timeout: Some(Duration::from_secs(300)),
    }
}

#[tokio::test]
async fn a_step_becomes_a_job_owned_by_its_run_and_its_log_is_kept() {
    let (executor, fake) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut handle = executor.start(&launch(dir.path(), 1)).await.unwrap();
    handle.follow_logs();
    {
        let fake = fake.lock().unwrap();
        let job = &fake.job_creates[0];
        assert_eq!(job["metadata"]["name"], "churn-0000beef-train-1");
        assert_eq!(job["metadata"]["namespace"], "ml");
        assert_eq!(
            job["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "ConfigMap",
                    "name": "mlserve-run-churn-0000beef", "uid": "uid-mlserve-run-churn-0000beef"}])
        );
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels[jobs::RUN_LABEL], "churn-0000beef");
        assert_eq!(labels[jobs::STEP_LABEL], "train");
        assert_eq!(labels[jobs::ATTEMPT_LABEL], "1");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 300);
        assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 3600);
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "training-work"
        );
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "trainer:1");
        assert_eq!(c["command"], json!(["python"]));
        assert_eq!(c["args"], json!(["train.py", "--out", "m.onnx"]));
        assert_eq!(
            c["env"],
            json!([{"name": "MLSERVE_STEP", "value": "train"}])
        );
        assert_eq!(
            c["workingDir"],
            "/var/lib/mlserve/training/runs/churn-0000beef/train/work"
        );
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "1", "memory": "2Gi"})
        );
    }
    fake.lock()
        .unwrap()
        .outcome
        .insert("churn-0000beef-train-1".into(), 0);
    assert_eq!(handle.wait().await.unwrap(), Exit::Code(0));
    handle.finish(Duration::from_secs(1)).await;
    let log = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    assert_eq!(log, "hello from churn-0000beef-train-1-pod\n");
    // A second attempt reuses the run's owner.
    executor.start(&launch(dir.path(), 2)).await.unwrap();
    assert_eq!(fake.lock().unwrap().config_maps.len(), 1);
    // The run's end deletes its owner, and with it (in a cluster) its Jobs.
    executor.run_ended("churn-0000beef").await;
    assert_eq!(
        fake.lock().unwrap().deleted_config_maps,
        vec!["mlserve-run-churn-0000beef".to_string()]
    );
}

#[tokio::test]
async fn a_failed_job_is_a_failed_attempt_with_its_exit_code() {
    let (executor, fake) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    fake.lock()
        .unwrap()
        .outcome
        .insert("churn-0000beef-train-1".into(), 3);
    let mut handle = executor.start(&launch(dir.path(), 1)).await.unwrap();
    assert_eq!(handle.wait().await.unwrap(), Exit::Code(3));
}

#[tokio::test]
async fn an_existing_job_is_attached_to_not_started_twice() {
    let (executor, fake) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    executor.start(&launch(dir.path(), 1)).await.unwrap();
    // The same attempt again (a restart between create and record): 409,
    // and the handle follows the Job that exists.
    let mut again = executor.start(&launch(dir.path(), 1)).await.unwrap();
    assert_eq!(fake.lock().unwrap().job_creates.len(), 2);
    assert_eq!(fake.lock().unwrap().jobs.len(), 1);
    fake.lock()
        .unwrap()
        .outcome
        .insert("churn-0000beef-train-1".into(), 0);
    assert_eq!(again.wait().await.unwrap(), Exit::Code(0));
    // After a restart: the Job recorded as running is found by its name...
    assert!(executor
        .reattach(&launch(dir.path(), 1))
        .await
        .unwrap()
        .is_some());
    // ...and one that is gone is reported so (the engine counts it lost).
    assert!(executor
        .reattach(&launch(dir.path(), 7))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn cancel_deletes_the_job_and_its_pods() {
    let (executor, fake) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut handle = executor.start(&launch(dir.path(), 1)).await.unwrap();
    handle.follow_logs();
    let waited = tokio::time::timeout(Duration::from_millis(200), handle.wait()).await;
    assert!(waited.is_err(), "a running job must not end by itself");
    handle.cancel(Duration::from_secs(2)).await;
    let fake = fake.lock().unwrap();
    let (name, options) = &fake.deleted_jobs[0];
    assert_eq!(name, "churn-0000beef-train-1");
    assert_eq!(options["propagationPolicy"], "Foreground");
    assert_eq!(options["gracePeriodSeconds"], 2);
    assert!(fake.jobs.is_empty());
}

#[tokio::test]
async fn a_lost_attempt_after_a_restart_has_its_job_deleted() {
    let (executor, fake) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    executor.start(&launch(dir.path(), 1)).await.unwrap();
    let row = StepRow {
        run_id: "churn-0000beef".into(),
        name: "train".into(),
        attempt: 1,
        ..StepRow::default()
    };
    assert!(executor.reap(&row).await);
    assert!(fake.lock().unwrap().jobs.is_empty());
    // Nothing left to delete is fine too.
    assert!(executor.reap(&row).await);
}

mod engine {
    //! The engine on the Kubernetes executor (the fake API server again).

    use std::sync::Arc;

    use super::*;
    use crate::engine::Engine;
    use crate::state::{RunState, StepState};
    use crate::store::{now_us, RunRow};

    async fn engine(dir: &std::path::Path) -> (Arc<Engine>, Shared) {
        let (executor, fake) = fake_server().await;
        let engine = crate::engine::test_engine(dir, Arc::new(executor)).await;
        let spec = crate::spec::parse_toml(
            r#"
            name = "fit"
            [[steps]]
            name = "a"
            image = "trainer:1"
            command = ["not-installed-here", "--fast"]
            "#,
        )
        .unwrap();
        engine.apply(&spec).await.unwrap();
        (engine, fake)
    }

    async fn ended(engine: &Engine, run: &str) -> RunRow {
        for _ in 0..500 {
            let row = engine.store().run(run).await.unwrap();
            if row.state.is_terminal() {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let steps = engine.store().steps(run).await.unwrap();
        panic!("run {run} did not end: {steps:?}");
    }

    #[tokio::test]
    async fn a_failed_job_fails_its_step_with_the_exit_code_and_keeps_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, fake) = engine(dir.path()).await;
        fake.lock().unwrap().every_job = Some(3);
        // The command exists only in the image: no local check refuses it.
        let run = engine
            .submit("fit", &Default::default(), "test")
            .await
            .unwrap();
        let run = ended(&engine, &run.id).await;
        assert_eq!(run.state, RunState::Failed, "{}", run.message);
        let step = &engine.store().steps(&run.id).await.unwrap()[0];
        assert_eq!(step.state, StepState::Failed);
        assert_eq!(step.exit_code, Some(3));
        assert_eq!(step.message, "exit code 3");
        let log = std::fs::read_to_string(
            dir.path()
                .join(format!("work/runs/{}/a/logs/stdout.log", run.id)),
        )
        .unwrap();
        assert!(
            log.contains(&format!("hello from {}-a-1-pod", run.id)),
            "{log}"
        );
        let fake = fake.lock().unwrap();
        assert_eq!(fake.job_creates.len(), 1);
        // The run's end deleted its owner (and so, in a cluster, its Jobs).
        assert_eq!(
            fake.deleted_config_maps,
            vec![format!("mlserve-run-{}", run.id)]
        );
    }

    #[tokio::test]
    async fn after_a_restart_a_running_job_is_re_attached_not_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, fake) = engine(dir.path()).await;
        // What a role that stopped mid-step leaves: the run, its step
        // recorded as running attempt 1, and that attempt's Job.
        let run = RunRow {
            id: "fit-0000beef".into(),
            workflow: "fit".into(),
            workflow_version: 1,
            state: RunState::Running,
            parameters: Default::default(),
            trigger: "test".into(),
            owner: "test".into(),
            message: String::new(),
            cancel_requested: false,
            created_ts: now_us(),
            started_ts: Some(now_us()),
            finished_ts: None,
        };
        engine.store().create_run(&run).await.unwrap();
        let step = StepRow {
            run_id: run.id.clone(),
            name: "a".into(),
            template: "a".into(),
            state: StepState::Running,
            attempt: 1,
            started_ts: Some(now_us()),
            ..StepRow::default()
        };
        engine.store().put_step(&step).await.unwrap();
        fake.lock().unwrap().jobs.insert(
            "fit-0000beef-a-1".into(),
            json!({"apiVersion": "batch/v1", "kind": "Job",
                   "metadata": {"name": "fit-0000beef-a-1"}}),
        );
        assert_eq!(engine.recover().await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            engine.store().steps(&run.id).await.unwrap()[0].state,
            StepState::Running
        );
        fake.lock().unwrap().every_job = Some(0);
        let run = ended(&engine, &run.id).await;
        assert_eq!(run.state, RunState::Succeeded, "{}", run.message);
        let step = &engine.store().steps(&run.id).await.unwrap()[0];
        assert_eq!(step.attempt, 1, "the attempt was not counted again");
        assert!(fake.lock().unwrap().job_creates.is_empty(), "no second Job");
        let log =
            std::fs::read_to_string(dir.path().join("work/runs/fit-0000beef/a/logs/stdout.log"))
                .unwrap();
        assert!(log.contains("hello from fit-0000beef-a-1-pod"), "{log}");
    }
}
