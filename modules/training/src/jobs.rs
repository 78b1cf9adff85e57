//! The Kubernetes objects of a run: one batch/v1 Job per attempt of a
//! command step, owned by one ConfigMap per run (deleting it deletes every
//! Job and pod of the run). The Kubernetes executor creates exactly these
//! objects, and `mlserve jobs export --kubernetes` prints them, so what is
//! validated without a cluster is what a cluster gets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::executor::StepLaunch;
use crate::spec::{Scalar, WorkflowSpec};
use crate::template::{self, Reference, Values};

/// Label: the run's id (sanitized; the exact id is in an annotation).
pub const RUN_LABEL: &str = "training.mlserve.dev/run";
/// Label: the step instance (sanitized).
pub const STEP_LABEL: &str = "training.mlserve.dev/step";
/// Label: the attempt's number.
pub const ATTEMPT_LABEL: &str = "training.mlserve.dev/attempt";
/// The container's name in every step pod.
pub const CONTAINER: &str = "step";

/// How the Jobs are shaped, from `[training.kubernetes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOptions {
    /// The namespace the objects go to; unset: the client's default.
    pub namespace: Option<String>,
    /// The image of a step that names none.
    pub image: String,
    /// The pods' service account; unset: the namespace's default.
    pub service_account: Option<String>,
    /// A PersistentVolumeClaim mounted at `work_dir` in every step pod (and
    /// in the training role's pod), so inputs fetched before the step and
    /// outputs collected after it are shared; unset: no volume.
    pub work_claim: Option<String>,
    /// The training role's step directory root (the claim's mount path).
    pub work_dir: PathBuf,
    /// How long a finished Job is kept if its run's owner was not deleted.
    pub ttl_after_finished: Duration,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            namespace: None,
            image: crate::argo::DEFAULT_IMAGE.to_string(),
            service_account: None,
            work_claim: None,
            work_dir: PathBuf::from("/var/lib/mlserve/training"),
            ttl_after_finished: Duration::from_secs(3600),
        }
    }
}

impl JobOptions {
    /// From `[training.kubernetes]`; `work_dir` is the role's step directory root.
    pub fn from_config(settings: &mlserve_common::config::TrainingConfig, work_dir: &Path) -> Self {
        let k = &settings.kubernetes;
        JobOptions {
            namespace: k.namespace.clone(),
            image: k.image.clone(),
            service_account: k.service_account.clone(),
            work_claim: k.work_claim.clone(),
            work_dir: work_dir.to_path_buf(),
            ttl_after_finished: k.ttl_after_finished,
        }
    }
}

/// A DNS-1123 label (lowercase letters, digits, `-`; at most 63) made of
/// `text`; when that changed it, a short hash of `text` keeps it unique.
pub fn dns_label(text: &str, max: usize) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    while clean.contains("--") {
        clean = clean.replace("--", "-");
    }
    let clean = clean.trim_matches('-').to_string();
    if clean == text && clean.len() <= max {
        return clean;
    }
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..4]);
    let keep = max.saturating_sub(hash.len() + 1);
    let head = clean[..clean.len().min(keep)].trim_end_matches('-');
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// The Job of attempt `attempt` of step instance `step` of run `run`: the
/// same name every time, so a second create is refused (409) and no attempt
/// runs twice.
pub fn job_name(run: &str, step: &str, attempt: i64) -> String {
    let name = format!("{run}-{step}-{attempt}");
    let label = dns_label(&name, 63);
    if label == name {
        label
    } else {
        // Keep the attempt readable at the end.
        let head = dns_label(&format!("{run}-{step}"), 63 - 1 - attempt.to_string().len());
        format!("{head}-{attempt}")
    }
}

/// The per-run owner object's name.
pub fn owner_name(run: &str) -> String {
    dns_label(&format!("mlserve-run-{run}"), 253)
}

/// The labels of an attempt's Job and pod.
pub fn labels(launch: &StepLaunch) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".into(), "mlserve".into()),
        ("app.kubernetes.io/component".into(), "training-step".into()),
        (RUN_LABEL.into(), dns_label(&launch.run_id, 63)),
        (STEP_LABEL.into(), dns_label(&launch.step, 63)),
        (ATTEMPT_LABEL.into(), launch.attempt.to_string()),
    ])
}

/// The per-run owner: a ConfigMap naming the run.
pub fn owner_manifest(run: &str, workflow: &str, options: &JobOptions) -> Value {
    let mut metadata = json!({
        "name": owner_name(run),
        "labels": {
            "app.kubernetes.io/managed-by": "mlserve",
            "app.kubernetes.io/component": "training-run",
            RUN_LABEL: dns_label(run, 63),
        },
    });
    if let Some(namespace) = &options.namespace {
        metadata["namespace"] = json!(namespace);
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {"run": run, "workflow": workflow},
    })
}

/// The Job of one attempt; `owner` is the run's ConfigMap (name, uid) when
/// it exists (the export leaves it out: its uid is the cluster's).
pub fn job_manifest(
    launch: &StepLaunch,
    options: &JobOptions,
    owner: Option<(&str, &str)>,
) -> Value {
    let labels = labels(launch);
    let (command, args) = match launch.argv.split_first() {
        Some((program, args)) => (vec![program.clone()], args.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    let env: Vec<Value> = launch
        .env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let mut container = json!({
        "name": CONTAINER,
        "image": launch.image.clone().unwrap_or_else(|| options.image.clone()),
        "command": command,
        "args": args,
        "env": env,
        "workingDir": launch.cwd.display().to_string(),
    });
    let resources = crate::argo::resources_of(&launch.resources);
    if resources.as_object().is_some_and(|r| !r.is_empty()) {
        container["resources"] = resources;
    }
    let mut pod = json!({
        "restartPolicy": "Never",
        "containers": [],
    });
    if let Some(account) = &options.service_account {
        pod["serviceAccountName"] = json!(account);
    }
    if let Some(claim) = &options.work_claim {
        container["volumeMounts"] = json!([{
            "name": "work",
            "mountPath": options.work_dir.display().to_string(),
        }]);
        pod["volumes"] = json!([{"name": "work", "persistentVolumeClaim": {"claimName": claim}}]);
    }
    pod["containers"] = json!([container]);
    let mut spec = json!({
        // The engine owns retries: one pod per attempt.
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": options.ttl_after_finished.as_secs(),
        "template": {"metadata": {"labels": labels}, "spec": pod},
    });
    if let Some(timeout) = launch.timeout {
        spec["activeDeadlineSeconds"] = json!(timeout.as_secs().max(1));
    }
    let mut metadata = Map::new();
    metadata.insert(
        "name".into(),
        json!(job_name(&launch.run_id, &launch.step, launch.attempt)),
    );
    if let Some(namespace) = &options.namespace {
        metadata.insert("namespace".into(), json!(namespace));
    }
    metadata.insert("labels".into(), json!(labels));
    metadata.insert(
        "annotations".into(),
        json!({
            "training.mlserve.dev/run-id": launch.run_id,
            "training.mlserve.dev/step-name": launch.step,
            "training.mlserve.dev/workflow": launch.workflow,
        }),
    );
    if let Some((name, uid)) = owner {
        metadata.insert(
            "ownerReferences".into(),
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid}]),
        );
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": Value::Object(metadata),
        "spec": spec,
    })
}

/// Renders what is known before a run (parameters, names, the step's
/// directory); a reference to another step's outputs stays as written.
fn render_known(text: &str, values: &Values) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let placeholder = &rest[start..start + len + 2];
        out.push_str(&rest[..start]);
        match template::render(placeholder, values) {
            Ok(value) => out.push_str(&value),
            Err(_) => out.push_str(placeholder),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// The objects of a run of `spec` with `parameters` (already resolved): the
/// owner ConfigMap, then one Job per command step (first attempts; fan-out
/// steps once per item). Built-in steps run in the training role and have
/// no Job. `role_dir` is the training role's working directory (relative
/// working directories are relative to it).
pub fn export(
    spec: &WorkflowSpec,
    parameters: &BTreeMap<String, String>,
    run_id: &str,
    options: &JobOptions,
    role_dir: &Path,
) -> Vec<Value> {
    let mut values = Values::new();
    for (k, v) in parameters {
        values.insert(Reference::Parameter(k.clone()), v.clone());
    }
    values.insert(Reference::WorkflowName, spec.name.clone());
    values.insert(Reference::RunId, run_id.to_string());
    let mut objects = vec![owner_manifest(run_id, &spec.name, options)];
    for step in spec.steps.iter().chain(spec.on_exit.iter()) {
        if step.uses.is_some() || step.command.is_empty() {
            continue;
        }
        let instances: Vec<(String, Option<String>)> = match &step.with_items {
            Some(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let text = match item {
                        Scalar::Text(t) => render_known(t, &values),
                        other => other.as_text(),
                    };
                    (format!("{}({i})", step.name), Some(text))
                })
                .collect(),
            None => vec![(step.name.clone(), None)],
        };
        for (i, (instance, item)) in instances.into_iter().enumerate() {
            let dir_name = if item.is_some() {
                format!("{}/{i}", step.name)
            } else {
                step.name.clone()
            };
            let base = options.work_dir.join("runs").join(run_id).join(dir_name);
            let work = base.join("work");
            let mut values = values.clone();
            values.insert(Reference::StepDir, work.display().to_string());
            if let Some(item) = item {
                values.insert(Reference::Item, item);
            }
            let mut env: BTreeMap<String, String> = step
                .env
                .iter()
                .map(|(k, v)| (k.clone(), render_known(v, &values)))
                .collect();
            env.insert("MLSERVE_RUN_ID".into(), run_id.to_string());
            env.insert("MLSERVE_STEP".into(), instance.clone());
            env.insert("MLSERVE_ATTEMPT".into(), "1".into());
            env.insert("MLSERVE_STEP_DIR".into(), work.display().to_string());
            let cwd = match &step.working_dir {
                Some(dir) => role_dir.join(render_known(dir, &values)),
                None => work.clone(),
            };
            let launch = StepLaunch {
                run_id: run_id.to_string(),
                workflow: spec.name.clone(),
                step: instance,
                attempt: 1,
                argv: step
                    .command
                    .iter()
                    .map(|a| render_known(a, &values))
                    .collect(),
                env,
                cwd,
                stdout: base.join("logs").join("stdout.log"),
                stderr: base.join("logs").join("stderr.log"),
                image: step.image.clone(),
                resources: step.resources.clone(),
                timeout: step.timeout,
            };
            objects.push(job_manifest(&launch, options, None));
        }
    }
    objects
}

/// The objects as a YAML stream.
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| format!("---\n{}", serde_norway::to_string(o).unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_and_stable() {
        assert_eq!(
            job_name("churn-0a1b2c3d", "train", 2),
            "churn-0a1b2c3d-train-2"
        );
        let fanned = job_name("churn-0a1b2c3d", "square(1)", 1);
        assert!(fanned.starts_with("churn-0a1b2c3d-square-1-") && fanned.ends_with("-1"));
        assert_eq!(fanned, job_name("churn-0a1b2c3d", "square(1)", 1));
        assert_ne!(fanned, job_name("churn-0a1b2c3d", "square-1", 1));
        let long = job_name(&"w".repeat(80), "step_name", 12);
        assert!(long.len() <= 63 && long.ends_with("-12"), "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn a_job_carries_the_step() {
        let launch = StepLaunch {
            run_id: "churn-1".into(),
            workflow: "churn".into(),
            step: "train".into(),
            attempt: 3,
            argv: vec!["python".into(), "train.py".into(), "--fast".into()],
            env: BTreeMap::from([("A".into(), "b".into())]),
            cwd: "/w".into(),
            image: Some("trainer:1".into()),
            resources: crate::spec::Resources {
                cpu: Some("2".into()),
                memory: Some("1Gi".into()),
                gpu: 1,
            },
            timeout: Some(Duration::from_secs(600)),
            ..StepLaunch::default()
        };
        let options = JobOptions {
            work_claim: Some("work".into()),
            service_account: Some("steps".into()),
            ..JobOptions::default()
        };
        let job = job_manifest(&launch, &options, Some(("mlserve-run-churn-1", "u-1")));
        assert_eq!(job["metadata"]["name"], "churn-1-train-3");
        assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "steps");
        let c = &pod["containers"][0];
        assert_eq!(c["command"], json!(["python"]));
        assert_eq!(c["args"], json!(["train.py", "--fast"]));
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
        assert_eq!(
            c["volumeMounts"][0]["mountPath"],
            "/var/lib/mlserve/training"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"][ATTEMPT_LABEL],
            "3"
        );
    }

    #[test]
    fn the_export_renders_what_is_known_and_keeps_the_rest() {
        let spec = crate::spec::parse_file(
            "w.toml",
            r#"
name = "w"
parameters = { py = "python3" }
[[steps]]
name = "a"
command = ["{{workflow.parameters.py}}", "{{step.dir}}/x", "{{steps.b.outputs.parameters.p}}"]
[[steps]]
name = "b"
uses = "registry.alias"
with = { model = "m", alias = "canary", version = "1" }
"#,
        )
        .unwrap();
        let params = BTreeMap::from([("py".to_string(), "python3".to_string())]);
        let objects = export(
            &spec,
            &params,
            "w-export",
            &JobOptions::default(),
            Path::new("/app"),
        );
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0]["kind"], "ConfigMap");
        let c = &objects[1]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"], json!(["python3"]));
        assert_eq!(
            c["args"],
            json!([
                "/var/lib/mlserve/training/runs/w-export/a/work/x",
                "{{steps.b.outputs.parameters.p}}"
            ])
        );
    }
}
