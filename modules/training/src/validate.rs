//! Checks a workflow before anything is stored or run: names, the DAG, every
//! template reference, artifact paths, built-ins and that commands exist.
//! Each problem is a [`SpecError`] naming it; nothing is half-stored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use crate::builtin::Builtin;
use crate::spec::{Scalar, StepSpec, WorkflowSpec};
use crate::template::{self, Reference};

/// What is wrong with a workflow or a submission.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// The file does not parse.
    #[error("{0}")]
    Syntax(String),
    /// A workflow or step name is empty or has characters outside `[A-Za-z0-9_-]`.
    #[error("invalid name '{0}': use letters, digits, '-' and '_' (at most 63)")]
    Name(String),
    /// Two steps share a name.
    #[error("duplicate step name '{0}'")]
    DuplicateStep(String),
    /// A step depends on a step that does not exist.
    #[error("step '{step}' depends on '{missing}', which is not a step of this workflow")]
    MissingDependency {
        /// The step.
        step: String,
        /// The unknown dependency.
        missing: String,
    },
    /// The dependencies form a cycle.
    #[error("the steps form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A template or a submission names a parameter the workflow does not declare.
    #[error("{place}: unknown parameter '{name}' (declared: {declared})")]
    UnknownParameter {
        /// Where it was named.
        place: String,
        /// The parameter.
        name: String,
        /// The declared parameters.
        declared: String,
    },
    /// A template that names nothing the step can read.
    #[error("{place}: {detail}")]
    Reference {
        /// Where (step and field).
        place: String,
        /// Why.
        detail: String,
    },
    /// An artifact or parameter path that is absolute or climbs out of the step's directory.
    #[error("step '{step}': path '{path}' escapes the step's directory")]
    PathEscapes {
        /// The step.
        step: String,
        /// The path.
        path: String,
    },
    /// A command that is not on PATH or not an executable file.
    #[error("step '{step}': command '{command}' does not exist or is not executable")]
    CommandNotFound {
        /// The step.
        step: String,
        /// argv[0].
        command: String,
    },
    /// A step with neither `command` nor `uses`, both, or bad built-in arguments.
    #[error("step '{step}': {detail}")]
    Step {
        /// The step.
        step: String,
        /// Why.
        detail: String,
    },
}

/// Every check that needs no parameter values beyond the defaults.
pub fn check(spec: &WorkflowSpec) -> Result<(), SpecError> {
    check_name(&spec.name)?;
    let names = step_names(spec)?;
    for step in &spec.steps {
        for dep in &step.dependencies {
            if !names.contains(dep.as_str()) {
                return Err(SpecError::MissingDependency {
                    step: step.name.clone(),
                    missing: dep.clone(),
                });
            }
        }
    }
    if let Some(cycle) = find_cycle(spec) {
        return Err(SpecError::Cycle(cycle));
    }
    let ancestors = ancestors(spec);
    let all: BTreeSet<&str> = names.iter().copied().collect();
    for step in &spec.steps {
        check_step(spec, step, &ancestors[step.name.as_str()], false)?;
    }
    if let Some(exit) = &spec.on_exit {
        check_step(spec, exit, &all, true)?;
    }
    for (i, schedule) in spec.schedules.iter().enumerate() {
        check_parameters(spec, &schedule.parameters, &format!("schedules[{i}]"))?;
        crate::cron::Schedule::parse(&schedule.cron, &schedule.timezone).map_err(|detail| {
            SpecError::Reference {
                place: format!("schedules[{i}]"),
                detail,
            }
        })?;
    }
    for (i, trigger) in spec.triggers.iter().enumerate() {
        check_parameters(spec, &trigger.parameters, &format!("triggers[{i}]"))?;
        if !matches!(trigger.event.as_str(), "data_arrived" | "drift_detected") {
            return Err(SpecError::Reference {
                place: format!("triggers[{i}]"),
                detail: format!(
                    "unknown event '{}' (data_arrived or drift_detected)",
                    trigger.event
                ),
            });
        }
    }
    check_commands(spec, &resolve_parameters(spec, &BTreeMap::new())?)
}

/// The parameters of a submission: the defaults, overridden by `given`;
/// naming an undeclared parameter is an error.
pub fn resolve_parameters(
    spec: &WorkflowSpec,
    given: &BTreeMap<String, Scalar>,
) -> Result<BTreeMap<String, String>, SpecError> {
    check_parameters(spec, given, "submission")?;
    let mut values: BTreeMap<String, String> = spec
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.as_text()))
        .collect();
    for (k, v) in given {
        values.insert(k.clone(), v.as_text());
    }
    Ok(values)
}

fn check_parameters(
    spec: &WorkflowSpec,
    given: &BTreeMap<String, Scalar>,
    place: &str,
) -> Result<(), SpecError> {
    for name in given.keys() {
        if !spec.parameters.contains_key(name) {
            return Err(unknown_parameter(spec, place, name));
        }
    }
    Ok(())
}

fn unknown_parameter(spec: &WorkflowSpec, place: &str, name: &str) -> SpecError {
    let declared: Vec<&str> = spec.parameters.keys().map(String::as_str).collect();
    SpecError::UnknownParameter {
        place: place.to_string(),
        name: name.to_string(),
        declared: if declared.is_empty() {
            "none".into()
        } else {
            declared.join(", ")
        },
    }
}

fn check_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Name(name.to_string()))
    }
}

fn step_names(spec: &WorkflowSpec) -> Result<BTreeSet<&str>, SpecError> {
    let mut names = BTreeSet::new();
    for step in spec.steps.iter().chain(spec.on_exit.iter()) {
        check_name(&step.name)?;
        if !names.insert(step.name.as_str()) {
            return Err(SpecError::DuplicateStep(step.name.clone()));
        }
    }
    if spec.steps.is_empty() {
        return Err(SpecError::Step {
            step: spec.name.clone(),
            detail: "a workflow needs at least one step".into(),
        });
    }
    Ok(names)
}

/// A cycle among the dependencies, as the path that closes it, if any.
fn find_cycle(spec: &WorkflowSpec) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, &Vec<String>> = spec
        .steps
        .iter()
        .map(|s| (s.name.as_str(), &s.dependencies))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
    let mut path: Vec<&str> = Vec::new();
    fn visit<'a>(
        node: &'a str,
        deps: &BTreeMap<&'a str, &'a Vec<String>>,
        mark: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        mark.insert(node, 1);
        path.push(node);
        for dep in deps.get(node).map(|d| d.iter()).into_iter().flatten() {
            if let Some(cycle) = visit(dep, deps, mark, path) {
                return Some(cycle);
            }
        }
        path.pop();
        mark.insert(node, 2);
        None
    }
    for step in &spec.steps {
        if let Some(cycle) = visit(&step.name, &deps, &mut mark, &mut path) {
            return Some(cycle);
        }
    }
    None
}

/// For each step, every step it transitively depends on.
pub fn ancestors(spec: &WorkflowSpec) -> BTreeMap<&str, BTreeSet<&str>> {
    let by_name: BTreeMap<&str, &StepSpec> =
        spec.steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out = BTreeMap::new();
    for step in &spec.steps {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = step.dependencies.iter().map(String::as_str).collect();
        while let Some(name) = stack.pop() {
            if seen.insert(name) {
                if let Some(s) = by_name.get(name) {
                    stack.extend(s.dependencies.iter().map(String::as_str));
                }
            }
        }
        out.insert(step.name.as_str(), seen);
    }
    out
}

/// Every templated string of a step, with where it sits.
pub fn templated_fields(step: &StepSpec) -> Vec<(String, &str)> {
    let mut fields: Vec<(String, &str)> = Vec::new();
    for (i, arg) in step.command.iter().enumerate() {
        fields.push((format!("command[{i}]"), arg));
    }
    for (k, v) in &step.env {
        fields.push((format!("env.{k}"), v));
    }
    for (k, v) in &step.with {
        for s in template::json_strings(v) {
            fields.push((format!("with.{k}"), s));
        }
    }
    if let Some(dir) = &step.working_dir {
        fields.push(("working_dir".into(), dir));
    }
    if let Some(when) = &step.when {
        fields.push(("when".into(), when));
    }
    for input in &step.inputs.artifacts {
        fields.push((format!("inputs.artifacts.{}.from", input.name), &input.from));
    }
    if let Some(items) = &step.with_items {
        for item in items {
            if let Scalar::Text(text) = item {
                fields.push(("with_items".into(), text));
            }
        }
    }
    fields
}

fn check_step(
    spec: &WorkflowSpec,
    step: &StepSpec,
    upstream: &BTreeSet<&str>,
    exit_handler: bool,
) -> Result<(), SpecError> {
    let problem = |detail: String| SpecError::Step {
        step: step.name.clone(),
        detail,
    };
    match (&step.uses, step.command.is_empty()) {
        (Some(_), false) => {
            return Err(problem("give either 'command' or 'uses', not both".into()))
        }
        (None, true) => return Err(problem("needs a 'command' or 'uses'".into())),
        (Some(name), true) => {
            let builtin = Builtin::parse(name).map_err(problem)?;
            builtin.check_arguments(&step.with).map_err(problem)?;
        }
        (None, false) => {
            if !step.with.is_empty() {
                return Err(problem("'with' is for built-ins ('uses')".into()));
            }
        }
    }
    if let Some(retry) = &step.retry {
        if retry.limit > 100 {
            return Err(problem(format!("retry.limit {} is over 100", retry.limit)));
        }
    }
    if exit_handler && !step.dependencies.is_empty() {
        return Err(problem(
            "the exit handler runs last and has no dependencies".into(),
        ));
    }
    let by_name: BTreeMap<&str, &StepSpec> =
        spec.steps.iter().map(|s| (s.name.as_str(), s)).collect();
    for (field, text) in templated_fields(step) {
        let place = format!("step '{}' {field}", step.name);
        let refs = template::references(text).map_err(|e| SpecError::Reference {
            place: place.clone(),
            detail: e.to_string(),
        })?;
        for reference in refs {
            check_reference(
                spec,
                step,
                &by_name,
                upstream,
                exit_handler,
                &place,
                &reference,
            )?;
        }
    }
    for input in &step.inputs.artifacts {
        let refs = template::references(&input.from).unwrap_or_default();
        if !matches!(refs.as_slice(), [Reference::OutputArtifact { .. }]) {
            return Err(SpecError::Reference {
                place: format!("step '{}' inputs.artifacts.{}", step.name, input.name),
                detail: "'from' must be one {{steps.<step>.outputs.artifacts.<name>}}".into(),
            });
        }
    }
    let paths = step
        .inputs
        .artifacts
        .iter()
        .map(|a| &a.path)
        .chain(step.outputs.parameters.iter().map(|p| &p.path))
        .chain(step.outputs.artifacts.iter().map(|a| &a.path))
        .chain(step.outputs.metrics.iter());
    for path in paths {
        check_relative(&step.name, path)?;
    }
    Ok(())
}

fn check_reference(
    spec: &WorkflowSpec,
    step: &StepSpec,
    by_name: &BTreeMap<&str, &StepSpec>,
    upstream: &BTreeSet<&str>,
    exit_handler: bool,
    place: &str,
    reference: &Reference,
) -> Result<(), SpecError> {
    let fail = |detail: String| {
        Err(SpecError::Reference {
            place: place.to_string(),
            detail,
        })
    };
    match reference {
        Reference::Parameter(name) if !spec.parameters.contains_key(name) => {
            Err(unknown_parameter(spec, place, name))
        }
        Reference::Item if step.with_items.is_none() => {
            fail("{{item}} is only defined in a step with 'with_items'".into())
        }
        Reference::WorkflowStatus if !exit_handler => {
            fail("{{workflow.status}} is only defined in the exit handler".into())
        }
        Reference::OutputParameter { step: from, name }
        | Reference::OutputArtifact { step: from, name } => {
            let Some(producer) = by_name.get(from.as_str()) else {
                return fail(format!("no step named '{from}'"));
            };
            if !upstream.contains(from.as_str()) {
                return fail(format!(
                    "reads the outputs of '{from}' but does not depend on it"
                ));
            }
            let declared = match reference {
                Reference::OutputParameter { .. } => outputs_parameters(producer),
                _ => outputs_artifacts(producer),
            };
            if declared.iter().any(|d| d == name) {
                Ok(())
            } else {
                fail(format!(
                    "step '{from}' declares no output {} '{name}' (it has: {})",
                    if matches!(reference, Reference::OutputParameter { .. }) {
                        "parameter"
                    } else {
                        "artifact"
                    },
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                ))
            }
        }
        _ => Ok(()),
    }
}

/// The output parameters a step offers (a built-in's included).
pub fn outputs_parameters(step: &StepSpec) -> Vec<String> {
    let mut names: Vec<String> = step
        .outputs
        .parameters
        .iter()
        .map(|p| p.name.clone())
        .collect();
    if let Some(builtin) = step.uses.as_deref().and_then(|u| Builtin::parse(u).ok()) {
        names.extend(builtin.output_parameters().iter().map(|s| s.to_string()));
    }
    names
}

/// The output artifacts a step offers (a built-in's included).
pub fn outputs_artifacts(step: &StepSpec) -> Vec<String> {
    let mut names: Vec<String> = step
        .outputs
        .artifacts
        .iter()
        .map(|a| a.name.clone())
        .collect();
    if let Some(builtin) = step.uses.as_deref().and_then(|u| Builtin::parse(u).ok()) {
        names.extend(builtin.output_artifacts().iter().map(|s| s.to_string()));
    }
    names
}

/// Refuses a path that is absolute, empty or climbs out with `..`.
pub fn check_relative(step: &str, path: &str) -> Result<(), SpecError> {
    let escapes = path.is_empty()
        || Path::new(path)
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        Err(SpecError::PathEscapes {
            step: step.to_string(),
            path: path.to_string(),
        })
    } else {
        Ok(())
    }
}

/// Checks that each command step's program exists, with the given parameter
/// values; a program named by a step's output, or run in an image, is checked
/// when it runs.
pub fn check_commands(
    spec: &WorkflowSpec,
    parameters: &BTreeMap<String, String>,
) -> Result<(), SpecError> {
    let mut values = template::Values::new();
    for (k, v) in parameters {
        values.insert(Reference::Parameter(k.clone()), v.clone());
    }
    values.insert(Reference::WorkflowName, spec.name.clone());
    for step in spec.steps.iter().chain(spec.on_exit.iter()) {
        let Some(program) = step.command.first() else {
            continue;
        };
        if step.image.is_some() {
            continue;
        }
        let Ok(program) = template::render(program, &values) else {
            continue;
        };
        let dir = step
            .working_dir
            .as_deref()
            .and_then(|d| template::render(d, &values).ok());
        if find_program(&program, dir.as_deref()).is_none() {
            return Err(SpecError::CommandNotFound {
                step: step.name.clone(),
                command: program,
            });
        }
    }
    Ok(())
}

/// The executable `program` names: a path (relative to `dir` when given)
/// if it has a `/`, else the first match on PATH.
pub fn find_program(program: &str, dir: Option<&str>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = match dir {
            Some(dir) if !program.starts_with('/') => Path::new(dir).join(program),
            _ => Path::new(program).to_path_buf(),
        };
        return executable(&path).then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}
