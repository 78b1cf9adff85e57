//! Triton's ensemble models as configured and checked at load: the
//! `ensemble_scheduling` section of a model config (a list of steps, each a
//! composing model whose inputs and outputs are mapped onto the ensemble's
//! tensors), the [`ModelSpec`] of the ensemble itself (from its config alone:
//! an ensemble has no model file), and the validated [`EnsemblePlan`].
//!
//! The plan check refuses what Triton refuses: a step whose model is not
//! served, a step input that no ensemble input and no step output produces,
//! an ensemble output that nothing produces, a tensor produced twice, steps
//! that depend on each other in a cycle, and types or shapes that disagree
//! between a tensor's producer and its consumers. A tensor nobody consumes is
//! allowed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::model_config::{
    resolve, ModelConfigFile, ModelSpec, OnnxSignature, TensorConfig, TensorSpec,
};
use mlserve_common::DataType;

/// The platform name of an ensemble in a config and in metadata.
pub const ENSEMBLE_PLATFORM: &str = "ensemble";

/// Triton's `ensemble_scheduling`: the steps of the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnsembleConfig {
    /// The steps, in any order: a step runs once its inputs are produced.
    pub step: Vec<EnsembleStepConfig>,
}

/// One step: a composing model and how its tensors map onto the ensemble's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleStepConfig {
    /// The composing model.
    pub model_name: String,
    /// Its version; -1 (the default) is the version a request naming none gets.
    #[serde(default = "latest_version")]
    pub model_version: i64,
    /// Composing model input name -> ensemble tensor name.
    #[serde(default)]
    pub input_map: BTreeMap<String, String>,
    /// Composing model output name -> ensemble tensor name.
    #[serde(default)]
    pub output_map: BTreeMap<String, String>,
}

fn latest_version() -> i64 {
    -1
}

impl EnsembleStepConfig {
    /// The version label a lookup takes: "" for the default version.
    pub fn version_label(&self) -> String {
        if self.model_version < 0 {
            String::new()
        } else {
            self.model_version.to_string()
        }
    }
}

/// One validated step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// The composing model.
    pub model_name: String,
    /// Its version label ("" for the default version).
    pub model_version: String,
    /// (composing input, ensemble tensor), in the composing model's input order.
    pub inputs: Vec<(String, String)>,
    /// (composing output, ensemble tensor), only the mapped outputs.
    pub outputs: Vec<(String, String)>,
}

impl PlannedStep {
    /// The ensemble tensor a composing output feeds, if it is mapped.
    pub fn tensor_of_output(&self, output: &str) -> Option<&str> {
        self.outputs
            .iter()
            .find(|(o, _)| o == output)
            .map(|(_, t)| t.as_str())
    }
}

/// A checked ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsemblePlan {
    /// The steps, in the config's order.
    pub steps: Vec<PlannedStep>,
    /// Indices into `steps`, each step after the steps it depends on.
    pub order: Vec<usize>,
}

/// Whether a config describes an ensemble.
pub fn is_ensemble(file: &ModelConfigFile) -> bool {
    file.ensemble_scheduling.is_some() || file.platform.as_deref() == Some(ENSEMBLE_PLATFORM)
}

/// The spec of ensemble `name` from its config alone: every input and output
/// must be declared with its type and dims. The declared tensors stand in for
/// a model file's signature, so the spec is resolved as a model's is.
pub fn ensemble_spec(
    name: &str,
    file: &ModelConfigFile,
    default_queue: usize,
) -> Result<ModelSpec, String> {
    if let Some(platform) = file.platform.as_deref().filter(|p| *p != ENSEMBLE_PLATFORM) {
        return Err(format!(
            "platform '{platform}' cannot have ensemble_scheduling (use 'ensemble')"
        ));
    }
    if file
        .ensemble_scheduling
        .as_ref()
        .is_none_or(|e| e.step.is_empty())
    {
        return Err("an ensemble needs at least one ensemble_scheduling step".into());
    }
    if file.input.is_empty() || file.output.is_empty() {
        return Err("an ensemble must declare its inputs and outputs".into());
    }
    let max_batch_size = file.max_batch_size.unwrap_or(0);
    let declared = |tensors: &[TensorConfig], kind: &str| {
        tensors
            .iter()
            .map(|t| {
                let datatype = DataType::parse(&t.data_type).ok_or_else(|| {
                    format!(
                        "{kind} '{}' has unknown data_type '{}'",
                        t.name, t.data_type
                    )
                })?;
                let batch = (max_batch_size > 0).then_some(-1);
                let shape = batch.into_iter().chain(t.dims.iter().copied()).collect();
                Ok((t.name.clone(), datatype, shape))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let signature = OnnxSignature {
        inputs: declared(&file.input, "input")?,
        outputs: declared(&file.output, "output")?,
    };
    let as_model = ModelConfigFile {
        platform: None,
        max_batch_size: Some(max_batch_size),
        dynamic_batching: None,
        instance_group: Vec::new(),
        ensemble_scheduling: None,
        ..file.clone()
    };
    let mut spec =
        resolve(name, &as_model, &signature, default_queue).map_err(|e| e.to_string())?;
    spec.instance_groups.clear();
    spec.model_filename.clear();
    Ok(spec)
}

/// A tensor's type and full shape (batch dimension included, -1 where free),
/// and who gives or takes it, for messages.
struct Typed {
    datatype: DataType,
    shape: Vec<i64>,
    place: String,
}

fn full_shape(spec: &ModelSpec, dims: &[i64]) -> Vec<i64> {
    let batch = (spec.max_batch_size > 0).then_some(-1);
    batch.into_iter().chain(dims.iter().copied()).collect()
}

fn typed(spec: &ModelSpec, tensor: &TensorSpec, place: String) -> Typed {
    Typed {
        datatype: tensor.datatype,
        shape: full_shape(spec, &tensor.dims),
        place,
    }
}

/// Whether two shapes can describe the same tensor (-1 matches any size).
fn shapes_agree(a: &[i64], b: &[i64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| *x < 0 || *y < 0 || x == y)
}

fn check_agrees(tensor: &str, producer: &Typed, consumer: &Typed) -> Result<(), String> {
    if producer.datatype != consumer.datatype {
        return Err(format!(
            "tensor '{tensor}' is {} from {} but {} expects {}",
            producer.datatype, producer.place, consumer.place, consumer.datatype
        ));
    }
    if !shapes_agree(&producer.shape, &consumer.shape) {
        return Err(format!(
            "tensor '{tensor}' has shape {:?} from {} but {} expects {:?}",
            producer.shape, producer.place, consumer.place, consumer.shape
        ));
    }
    Ok(())
}

/// Checks `config` for the ensemble `ensemble`; `composing` gives the spec of
/// a step's model (name, version label) or why it is not served.
pub fn plan(
    ensemble: &ModelSpec,
    config: &EnsembleConfig,
    composing: impl Fn(&str, &str) -> Result<Arc<ModelSpec>, String>,
) -> Result<EnsemblePlan, String> {
    let mut producers: HashMap<&str, Typed> = HashMap::new();
    for input in &ensemble.inputs {
        let place = format!("ensemble input '{}'", input.name);
        producers.insert(&input.name, typed(ensemble, input, place));
    }
    let mut specs = Vec::with_capacity(config.step.len());
    for (index, step) in config.step.iter().enumerate() {
        let model = &step.model_name;
        let place = format!("step {index} (model '{model}')");
        if *model == ensemble.name {
            return Err(format!("{place} names the ensemble itself"));
        }
        let spec = composing(model, &step.version_label()).map_err(|e| format!("{place}: {e}"))?;
        if ensemble.max_batch_size > spec.max_batch_size {
            return Err(format!(
                "{place} has max_batch_size {}, below the ensemble's {}",
                spec.max_batch_size, ensemble.max_batch_size
            ));
        }
        let names =
            |tensors: &[TensorSpec]| tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        for key in step.input_map.keys() {
            if !spec.inputs.iter().any(|t| &t.name == key) {
                let have = names(&spec.inputs);
                return Err(format!(
                    "{place} maps input '{key}', which the model does not have (it has {have:?})"
                ));
            }
        }
        if let Some(unmapped) = spec
            .inputs
            .iter()
            .find(|t| !step.input_map.contains_key(&t.name))
        {
            return Err(format!(
                "{place} does not map the model's input '{}'",
                unmapped.name
            ));
        }
        for (output, tensor) in &step.output_map {
            let Some(declared) = spec.outputs.iter().find(|t| &t.name == output) else {
                let have = names(&spec.outputs);
                return Err(format!("{place} maps output '{output}', which the model does not have (it has {have:?})"));
            };
            let produced = typed(&spec, declared, format!("{place} output '{output}'"));
            if let Some(first) = producers.get(tensor.as_str()) {
                return Err(format!(
                    "tensor '{tensor}' is produced twice: by {} and by {}",
                    first.place, produced.place
                ));
            }
            producers.insert(tensor, produced);
        }
        specs.push(spec);
    }
    for (index, (step, spec)) in config.step.iter().zip(&specs).enumerate() {
        for input in &spec.inputs {
            let tensor = &step.input_map[&input.name];
            let place = format!(
                "step {index} (model '{}') input '{}'",
                step.model_name, input.name
            );
            let Some(producer) = producers.get(tensor.as_str()) else {
                return Err(format!(
                    "tensor '{tensor}', taken by {place}, is produced by no ensemble input and no step output"
                ));
            };
            check_agrees(tensor, producer, &typed(spec, input, place))?;
        }
    }
    for output in &ensemble.outputs {
        let place = format!("ensemble output '{}'", output.name);
        let Some(producer) = producers.get(output.name.as_str()) else {
            return Err(format!("{place} is produced by no step"));
        };
        check_agrees(&output.name, producer, &typed(ensemble, output, place))?;
    }
    let order = dependency_order(ensemble, config)?;
    let steps = config
        .step
        .iter()
        .zip(&specs)
        .map(|(step, spec)| PlannedStep {
            model_name: step.model_name.clone(),
            model_version: step.version_label(),
            inputs: spec
                .inputs
                .iter()
                .map(|t| (t.name.clone(), step.input_map[&t.name].clone()))
                .collect(),
            outputs: step
                .output_map
                .iter()
                .map(|(o, t)| (o.clone(), t.clone()))
                .collect(),
        })
        .collect();
    Ok(EnsemblePlan { steps, order })
}

/// The step indices with every step after those producing its inputs, or
/// the steps caught in a cycle. Every input is known to be produced.
fn dependency_order(ensemble: &ModelSpec, config: &EnsembleConfig) -> Result<Vec<usize>, String> {
    let mut available: Vec<&str> = ensemble.inputs.iter().map(|t| t.name.as_str()).collect();
    let mut order = Vec::with_capacity(config.step.len());
    let mut waiting: Vec<usize> = (0..config.step.len()).collect();
    while !waiting.is_empty() {
        let (ready, blocked): (Vec<usize>, Vec<usize>) = waiting.iter().partition(|&&i| {
            config.step[i]
                .input_map
                .values()
                .all(|t| available.contains(&t.as_str()))
        });
        if ready.is_empty() {
            let models: Vec<&str> = blocked
                .iter()
                .map(|&i| config.step[i].model_name.as_str())
                .collect();
            return Err(format!(
                "the steps of models {models:?} depend on each other in a cycle"
            ));
        }
        for &i in &ready {
            available.extend(config.step[i].output_map.values().map(String::as_str));
        }
        order.extend(ready);
        waiting = blocked;
    }
    Ok(order)
}

#[cfg(test)]
#[path = "ensemble_plan_tests.rs"]
mod tests;
