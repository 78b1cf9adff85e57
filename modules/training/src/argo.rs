//! A workflow as an Argo Workflow (`argoproj.io/v1alpha1`), for teams that
//! run Argo: one DAG template whose tasks are the steps, and one container
//! template per step.
//!
//! - Templates translate: `{{steps.s.outputs...}}` becomes `{{tasks.s.outputs...}}`
//!   where Argo reads it (task `when`, `arguments`), and inside a step's
//!   template each output another step produced arrives as an input
//!   parameter; `{{item}}` arrives as the input parameter `item`;
//!   `{{step.dir}}` is `/work`, the container's working directory (an
//!   `emptyDir`), where inputs are placed and outputs read from.
//! - Retries become `retryStrategy` (`OnFailure` or an exit-code
//!   expression), timeouts `activeDeadlineSeconds`, `on_exit` the
//!   workflow's `onExit` template, `with_items` `withItems`.
//! - Built-ins run the mlserve image's `mlserve jobs builtin` with the same
//!   arguments, reaching the registry and the feature store at the
//!   endpoints given as workflow parameters.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::spec::{Scalar, StepSpec, WorkflowSpec};
use crate::template::{self, Reference};

/// Where a container's step directory is mounted (its working directory).
pub const WORK: &str = "/work";

/// The image of steps that name none, and of built-ins.
pub const DEFAULT_IMAGE: &str = "mlserve:latest";

fn quantity_seconds(d: std::time::Duration) -> Value {
    json!(d.as_secs().max(1))
}

/// Rewrites mlserve's template references for a container template:
/// another step's outputs and `{{item}}` become input parameters,
/// `{{step.dir}}` the work directory. Returns the text and the inputs used.
fn in_template(text: &str, inputs: &mut BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let inner = after[..end].trim();
        let replaced = match template::references(&format!("{{{{{inner}}}}}"))
            .ok()
            .and_then(|r| r.into_iter().next())
        {
            Some(Reference::StepDir) => WORK.to_string(),
            Some(Reference::Item) => {
                inputs.insert("item".into(), "{{item}}".into());
                "{{inputs.parameters.item}}".into()
            }
            Some(Reference::OutputParameter { step, name }) => {
                let input = format!("{step}-{name}");
                inputs.insert(
                    input.clone(),
                    format!("{{{{tasks.{step}.outputs.parameters.{name}}}}}"),
                );
                format!("{{{{inputs.parameters.{input}}}}}")
            }
            _ => format!("{{{{{inner}}}}}"),
        };
        out.push_str(&replaced);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Rewrites references for a DAG task (`when`, arguments): steps are tasks.
fn in_task(text: &str) -> String {
    text.replace("{{steps.", "{{tasks.")
        .replace("{{ steps.", "{{ tasks.")
}

fn retry_strategy(step: &StepSpec) -> Option<Value> {
    let retry = step.retry.as_ref()?;
    let mut strategy = Map::new();
    strategy.insert("limit".into(), json!(retry.limit.to_string()));
    if retry.exit_codes.is_empty() {
        strategy.insert("retryPolicy".into(), json!("Always"));
    } else {
        let codes: Vec<String> = retry.exit_codes.iter().map(|c| c.to_string()).collect();
        strategy.insert(
            "expression".into(),
            json!(format!(
                "asInt(lastRetry.exitCode) in [{}]",
                codes.join(", ")
            )),
        );
    }
    let mut backoff = Map::new();
    backoff.insert(
        "duration".into(),
        json!(format!("{}s", retry.backoff.as_secs_f64())),
    );
    backoff.insert("factor".into(), json!(retry.factor.round().max(1.0) as i64));
    if let Some(max) = retry.max_backoff {
        backoff.insert("maxDuration".into(), json!(format!("{}s", max.as_secs())));
    }
    strategy.insert("backoff".into(), Value::Object(backoff));
    Some(Value::Object(strategy))
}

fn resources(step: &StepSpec) -> Value {
    resources_of(&step.resources)
}

/// A container's `resources` (requests; memory and GPUs also as limits),
/// shared with the Kubernetes executor's Jobs.
pub(crate) fn resources_of(resources: &crate::spec::Resources) -> Value {
    let mut requests = Map::new();
    let mut limits = Map::new();
    if let Some(cpu) = &resources.cpu {
        requests.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = &resources.memory {
        requests.insert("memory".into(), json!(memory));
        limits.insert("memory".into(), json!(memory));
    }
    if resources.gpu > 0 {
        limits.insert("nvidia.com/gpu".into(), json!(resources.gpu.to_string()));
    }
    let mut out = Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(out)
}

/// The container template of one step, and the input parameters it takes
/// (name to the value its task passes).
fn container_template(step: &StepSpec) -> (Value, BTreeMap<String, String>) {
    let mut inputs: BTreeMap<String, String> = BTreeMap::new();
    let (image, command) = match &step.uses {
        Some(builtin) => {
            let with = serde_json::to_string(&step.with).unwrap_or_default();
            (
                "{{workflow.parameters.mlserve-image}}".to_string(),
                vec![
                    "mlserve".to_string(),
                    "jobs".into(),
                    "builtin".into(),
                    builtin.clone(),
                    "--with".into(),
                    in_template(&in_task_artifacts(&with), &mut inputs),
                    "--dir".into(),
                    WORK.into(),
                    "--registry".into(),
                    "{{workflow.parameters.registry-endpoint}}".into(),
                    "--features".into(),
                    "{{workflow.parameters.features-endpoint}}".into(),
                    "--run".into(),
                    "{{workflow.uid}}".into(),
                ],
            )
        }
        None => (
            step.image
                .clone()
                .unwrap_or_else(|| DEFAULT_IMAGE.to_string()),
            step.command
                .iter()
                .map(|a| in_template(a, &mut inputs))
                .collect(),
        ),
    };
    let env: Vec<Value> = step
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": in_template(v, &mut inputs)}))
        .collect();
    let mut container = Map::new();
    container.insert("image".into(), json!(image));
    container.insert("command".into(), json!(command));
    container.insert(
        "workingDir".into(),
        json!(step
            .working_dir
            .as_deref()
            .map(|d| in_template(d, &mut inputs))
            .unwrap_or_else(|| WORK.to_string())),
    );
    if !env.is_empty() {
        container.insert("env".into(), json!(env));
    }
    container.insert("resources".into(), resources(step));
    container.insert(
        "volumeMounts".into(),
        json!([{"name": "work", "mountPath": WORK}]),
    );

    let mut template = Map::new();
    template.insert("name".into(), json!(step.name));
    let mut input = Map::new();
    if !inputs.is_empty() {
        input.insert(
            "parameters".into(),
            json!(inputs
                .keys()
                .map(|k| json!({"name": k}))
                .collect::<Vec<_>>()),
        );
    }
    if !step.inputs.artifacts.is_empty() {
        input.insert(
            "artifacts".into(),
            json!(step
                .inputs
                .artifacts
                .iter()
                .map(|a| json!({"name": a.name, "path": format!("{WORK}/{}", a.path)}))
                .collect::<Vec<_>>()),
        );
    }
    if !input.is_empty() {
        template.insert("inputs".into(), Value::Object(input));
    }
    let mut outputs = Map::new();
    let mut parameters: Vec<Value> = step
        .outputs
        .parameters
        .iter()
        .map(|p| json!({"name": p.name, "valueFrom": {"path": format!("{WORK}/{}", p.path)}}))
        .collect();
    let mut artifacts: Vec<Value> = step
        .outputs
        .artifacts
        .iter()
        .map(|a| json!({"name": a.name, "path": format!("{WORK}/{}", a.path)}))
        .collect();
    if let Some(builtin) = step
        .uses
        .as_deref()
        .and_then(|u| crate::builtin::Builtin::parse(u).ok())
    {
        for name in builtin.output_parameters() {
            parameters.push(
                json!({"name": name, "valueFrom": {"path": format!("{WORK}/outputs/{name}")}}),
            );
        }
        for name in builtin.output_artifacts() {
            artifacts.push(json!({"name": name, "path": format!("{WORK}/outputs/{name}")}));
        }
    }
    if let Some(metrics) = &step.outputs.metrics {
        artifacts.push(json!({"name": "metrics", "path": format!("{WORK}/{metrics}")}));
    }
    if !parameters.is_empty() {
        outputs.insert("parameters".into(), json!(parameters));
    }
    if !artifacts.is_empty() {
        outputs.insert("artifacts".into(), json!(artifacts));
    }
    if !outputs.is_empty() {
        template.insert("outputs".into(), Value::Object(outputs));
    }
    if let Some(retry) = retry_strategy(step) {
        template.insert("retryStrategy".into(), retry);
    }
    if let Some(timeout) = step.timeout {
        template.insert("activeDeadlineSeconds".into(), quantity_seconds(timeout));
    }
    template.insert("container".into(), Value::Object(container));
    template.insert("volumes".into(), json!([{"name": "work", "emptyDir": {}}]));
    (Value::Object(template), inputs)
}

/// Built-in arguments name artifacts by reference; inside the container
/// they are the files Argo placed under `/work/inputs/`.
fn in_task_artifacts(text: &str) -> String {
    let mut out = text.to_string();
    for reference in template::references(text).unwrap_or_default() {
        if let Reference::OutputArtifact { step, name } = reference {
            out = out.replace(
                &format!("{{{{steps.{step}.outputs.artifacts.{name}}}}}"),
                &format!("{WORK}/inputs/{step}-{name}"),
            );
        }
    }
    out
}

/// The DAG task of one step, passing its template's `inputs`.
fn task(step: &StepSpec, inputs: &BTreeMap<String, String>) -> Value {
    let mut task = Map::new();
    task.insert("name".into(), json!(step.name));
    task.insert("template".into(), json!(step.name));
    if !step.dependencies.is_empty() {
        task.insert("dependencies".into(), json!(step.dependencies));
    }
    if let Some(when) = &step.when {
        task.insert("when".into(), json!(in_task(when)));
    }
    if let Some(items) = &step.with_items {
        task.insert(
            "withItems".into(),
            json!(items.iter().map(Scalar::as_text).collect::<Vec<_>>()),
        );
    }
    let mut arguments = Map::new();
    if !inputs.is_empty() {
        arguments.insert(
            "parameters".into(),
            json!(inputs
                .iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect::<Vec<_>>()),
        );
    }
    let mut artifacts: Vec<Value> = step
        .inputs
        .artifacts
        .iter()
        .map(|a| json!({"name": a.name, "from": in_task(&a.from)}))
        .collect();
    for (from, name) in builtin_artifact_refs(step) {
        artifacts.push(json!({
            "name": format!("{from}-{name}"),
            "from": format!("{{{{tasks.{from}.outputs.artifacts.{name}}}}}"),
        }));
    }
    if !artifacts.is_empty() {
        arguments.insert("artifacts".into(), json!(artifacts));
    }
    if !arguments.is_empty() {
        task.insert("arguments".into(), Value::Object(arguments));
    }
    Value::Object(task)
}

/// The (step, artifact) pairs a built-in's arguments read.
fn builtin_artifact_refs(step: &StepSpec) -> Vec<(String, String)> {
    if step.uses.is_none() {
        return Vec::new();
    }
    step.with
        .values()
        .flat_map(template::json_strings)
        .flat_map(|text| template::references(text).unwrap_or_default())
        .filter_map(|r| match r {
            Reference::OutputArtifact { step, name } => Some((step, name)),
            _ => None,
        })
        .collect()
}

/// Built-in templates read those artifacts as `/work/inputs/<step>-<name>`: declare them.
fn builtin_artifact_inputs(step: &StepSpec, template: &mut Value) {
    let refs = builtin_artifact_refs(step);
    if refs.is_empty() {
        return;
    }
    let Some(object) = template.as_object_mut() else {
        return;
    };
    let inputs = object.entry("inputs").or_insert_with(|| json!({}));
    let Some(inputs) = inputs.as_object_mut() else {
        return;
    };
    let list = inputs.entry("artifacts").or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        for (from, name) in refs {
            let name = format!("{from}-{name}");
            list.push(json!({"name": name, "path": format!("{WORK}/inputs/{name}")}));
        }
    }
}

/// The whole Argo Workflow object.
pub fn export(spec: &WorkflowSpec) -> Value {
    let mut parameters: Vec<Value> = spec
        .parameters
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v.as_text()}))
        .collect();
    if spec
        .steps
        .iter()
        .chain(spec.on_exit.iter())
        .any(|s| s.uses.is_some())
    {
        parameters.push(json!({"name": "mlserve-image", "value": DEFAULT_IMAGE}));
        parameters
            .push(json!({"name": "registry-endpoint", "value": "http://mlserve-registry:8001"}));
        parameters
            .push(json!({"name": "features-endpoint", "value": "http://mlserve-features:8001"}));
    }
    let mut tasks = Vec::new();
    let mut step_templates = Vec::new();
    for step in spec.steps.iter().chain(spec.on_exit.iter()) {
        let (mut template, inputs) = container_template(step);
        builtin_artifact_inputs(step, &mut template);
        step_templates.push(template);
        if spec.steps.iter().any(|s| s.name == step.name) {
            tasks.push(task(step, &inputs));
        }
    }
    let mut templates = vec![json!({"name": "main", "dag": {"tasks": tasks}})];
    templates.extend(step_templates);
    let mut workflow_spec = Map::new();
    workflow_spec.insert("entrypoint".into(), json!("main"));
    if !parameters.is_empty() {
        workflow_spec.insert("arguments".into(), json!({"parameters": parameters}));
    }
    if let Some(exit) = &spec.on_exit {
        workflow_spec.insert("onExit".into(), json!(exit.name));
    }
    if let Some(timeout) = spec.timeout {
        workflow_spec.insert("activeDeadlineSeconds".into(), quantity_seconds(timeout));
    }
    workflow_spec.insert("templates".into(), json!(templates));
    let mut metadata = Map::new();
    metadata.insert(
        "generateName".into(),
        json!(format!("{}-", spec.name.to_lowercase().replace('_', "-"))),
    );
    metadata.insert(
        "labels".into(),
        json!({"app.kubernetes.io/managed-by": "mlserve", "mlserve.io/workflow": spec.name}),
    );
    if !spec.description.is_empty() {
        metadata.insert(
            "annotations".into(),
            json!({"mlserve.io/description": spec.description}),
        );
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": workflow_spec,
    })
}

/// The export as YAML text.
pub fn export_yaml(spec: &WorkflowSpec) -> String {
    serde_norway::to_string(&export(spec)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> (WorkflowSpec, std::path::PathBuf) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/churn");
        let text = std::fs::read_to_string(dir.join("workflow.toml")).unwrap();
        (
            crate::spec::parse_toml(&text).unwrap(),
            dir.join("argo-workflow.yaml"),
        )
    }

    /// The example's export is the committed golden file (regenerate it with
    /// `MLSERVE_BLESS=1 cargo test -p mlserve-training argo`).
    #[test]
    fn the_example_exports_as_its_golden_file() {
        let (spec, golden) = example();
        let text = export_yaml(&spec);
        if std::env::var_os("MLSERVE_BLESS").is_some() {
            std::fs::write(&golden, &text).unwrap();
        }
        assert_eq!(text, std::fs::read_to_string(&golden).unwrap());
    }

    #[test]
    fn outputs_travel_as_task_arguments_and_input_parameters() {
        let (spec, _) = example();
        let workflow = export(&spec);
        let templates = workflow["spec"]["templates"].as_array().unwrap();
        let tasks = templates[0]["dag"]["tasks"].as_array().unwrap();
        let register = tasks.iter().find(|t| t["name"] == "register").unwrap();
        assert_eq!(
            register["when"],
            "{{tasks.evaluate.outputs.parameters.auc}} >= {{workflow.parameters.min_auc}}"
        );
        let canary = tasks.iter().find(|t| t["name"] == "canary").unwrap();
        assert_eq!(
            canary["arguments"]["parameters"][0],
            json!({"name": "register-version", "value": "{{tasks.register.outputs.parameters.version}}"})
        );
        let train = templates.iter().find(|t| t["name"] == "train").unwrap();
        assert_eq!(
            train["container"]["command"][3],
            "/work/training_set.parquet"
        );
        assert_eq!(train["retryStrategy"]["limit"], "1");
        assert_eq!(train["activeDeadlineSeconds"], 600);
    }
}
