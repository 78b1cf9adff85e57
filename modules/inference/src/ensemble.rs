//! Runs an ensemble request: each step goes through its composing model's own
//! scheduler (so it batches with that model's other traffic) as soon as the
//! tensors it takes are produced; independent steps run at the same time.
//! Tensors pass between steps as the bytes the scheduler returned, never
//! re-encoded. The caller's priority, queue timeout and deadline apply to
//! every step. A step's error comes back with its own code, naming the step's
//! model. Composing models are looked up by name on every request, so a
//! composing model that is reloaded serves the ensemble's next request, and
//! an ensemble is ready only while every composing model is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use mlserve_proto::pb;

use crate::ensemble_plan::{EnsemblePlan, PlannedStep, ENSEMBLE_PLATFORM};
use crate::error::{InferenceError, Result};
use crate::manager::{ModelLookup, ServedVersion};
use crate::model_config::ModelSpec;
use crate::tensor::{InputTensor, OutputTensor, RequestInputs};
use crate::validate::check_shape;

/// How deep ensembles may nest (an ensemble step that is an ensemble); past
/// this, composing models are taken to refer to each other in a cycle.
const MAX_NESTING: usize = 8;

/// A loaded ensemble version.
pub struct Ensemble {
    spec: Arc<ModelSpec>,
    plan: EnsemblePlan,
    models: ModelLookup,
}

/// What one request's scheduling asks of every step.
#[derive(Debug, Clone, Copy)]
pub struct StepScheduling {
    /// Priority level (0: each model's default).
    pub priority: u32,
    /// Queue timeout the request asked for.
    pub timeout: Option<Duration>,
    /// The caller's deadline.
    pub deadline: Option<Instant>,
}

impl Ensemble {
    /// An ensemble of `spec` running `plan` over the models `models` finds.
    pub fn new(spec: Arc<ModelSpec>, plan: EnsemblePlan, models: ModelLookup) -> Self {
        Ensemble { spec, plan, models }
    }

    /// The checked plan.
    pub fn plan(&self) -> &EnsemblePlan {
        &self.plan
    }

    /// Ok while every composing model serves the version a step names;
    /// `depth` counts the ensembles this check is nested in.
    pub fn check_ready(&self, depth: usize) -> Result<()> {
        if depth > MAX_NESTING {
            return Err(InferenceError::ModelUnavailable(format!(
                "ensemble '{}' nests ensembles more than {MAX_NESTING} deep (do they refer to each other?)",
                self.spec.name
            )));
        }
        for step in &self.plan.steps {
            self.composing(step, depth)?;
        }
        Ok(())
    }

    fn composing(&self, step: &PlannedStep, depth: usize) -> Result<Arc<ServedVersion>> {
        self.models
            .get_nested(&step.model_name, &step.model_version, depth + 1)
            .map_err(|e| self.in_step(step, e))
    }

    /// Runs one request (inputs in the ensemble's input order); returns every
    /// ensemble output, in the ensemble's output order.
    pub async fn run(
        &self,
        inputs: RequestInputs,
        scheduling: StepScheduling,
    ) -> Result<Vec<OutputTensor>> {
        let served = self
            .plan
            .steps
            .iter()
            .map(|step| self.composing(step, 0))
            .collect::<Result<Vec<_>>>()?;
        let mut tensors: HashMap<String, OutputTensor> = self
            .spec
            .inputs
            .iter()
            .zip(inputs.tensors)
            .map(|(spec, given)| {
                let tensor = OutputTensor {
                    name: spec.name.clone(),
                    datatype: spec.datatype,
                    shape: given.shape,
                    data: given.data,
                };
                (spec.name.clone(), tensor)
            })
            .collect();
        let steps = &self.plan.steps;
        let mut started = vec![false; steps.len()];
        let mut running = FuturesUnordered::new();
        loop {
            for &index in &self.plan.order {
                let step = &steps[index];
                let ready = step.inputs.iter().all(|(_, t)| tensors.contains_key(t));
                if started[index] || !ready {
                    continue;
                }
                started[index] = true;
                if scheduling.deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(InferenceError::Timeout);
                }
                let composing = served[index].clone();
                let request = step_request(step, &composing.spec, &tensors)
                    .map_err(|e| self.in_step(step, e))?;
                let ticket = composing
                    .scheduler
                    .enqueue(
                        request,
                        scheduling.priority,
                        scheduling.timeout,
                        scheduling.deadline,
                    )
                    .map_err(|e| self.in_step(step, e))?;
                running.push(async move {
                    let began = Instant::now();
                    let reply = ticket.wait().await;
                    match &reply {
                        Ok(_) => composing.stats.record_success(began.elapsed()),
                        Err(e) => composing.stats.record_failure(e.reason(), began.elapsed()),
                    }
                    (index, reply)
                });
            }
            let Some((index, reply)) = running.next().await else {
                break;
            };
            let step = &steps[index];
            for output in reply.map_err(|e| self.in_step(step, e))? {
                if let Some(tensor) = step.tensor_of_output(&output.name) {
                    let tensor = tensor.to_string();
                    tensors.insert(
                        tensor.clone(),
                        OutputTensor {
                            name: tensor,
                            ..output
                        },
                    );
                }
            }
        }
        self.spec
            .outputs
            .iter()
            .map(|output| {
                tensors.remove(&output.name).ok_or_else(|| {
                    InferenceError::Internal(format!(
                        "ensemble '{}' produced no tensor '{}'",
                        self.spec.name, output.name
                    ))
                })
            })
            .collect()
    }

    /// `err` from `step`, with the same code, its message naming the
    /// ensemble and the step's model.
    fn in_step(&self, step: &PlannedStep, err: InferenceError) -> InferenceError {
        let message = format!(
            "in ensemble '{}', step model '{}': {err}",
            self.spec.name, step.model_name
        );
        match err {
            InferenceError::InvalidInput(_) => InferenceError::InvalidInput(message),
            InferenceError::ModelNotFound(_) => InferenceError::ModelNotFound(message),
            InferenceError::NotAllowed(_) => InferenceError::NotAllowed(message),
            InferenceError::InvalidModel(_) => InferenceError::InvalidModel(message),
            InferenceError::Backend(_) => InferenceError::Backend(message),
            InferenceError::Internal(_) => InferenceError::Internal(message),
            // The same code (unavailable), with the model named.
            InferenceError::ModelUnavailable(_)
            | InferenceError::QueueFull { .. }
            | InferenceError::Timeout
            | InferenceError::ShuttingDown => InferenceError::ModelUnavailable(message),
            // Kept whole: its Retry-After reaches the caller.
            refused @ InferenceError::DeadlineUnmet { .. } => refused,
        }
    }

    /// The `ensemble_scheduling` section the config view shows.
    pub fn scheduling(&self) -> pb::ModelEnsembling {
        let step = self
            .plan
            .steps
            .iter()
            .map(|s| pb::model_ensembling::Step {
                model_name: s.model_name.clone(),
                model_version: s.model_version.parse().unwrap_or(-1),
                input_map: s
                    .inputs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                output_map: s
                    .outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ..Default::default()
            })
            .collect();
        pb::ModelEnsembling {
            step,
            ..Default::default()
        }
    }
}

/// The composing model's request for `step`: the tensors it maps, in the
/// model's input order, checked against the model as it is served now.
fn step_request(
    step: &PlannedStep,
    spec: &ModelSpec,
    tensors: &HashMap<String, OutputTensor>,
) -> Result<RequestInputs> {
    let mut rows = 1;
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for (index, expected) in spec.inputs.iter().enumerate() {
        let tensor = step
            .inputs
            .iter()
            .find(|(input, _)| *input == expected.name)
            .and_then(|(_, tensor)| tensors.get(tensor))
            .ok_or_else(|| {
                InferenceError::InvalidInput(format!(
                    "the ensemble maps nothing onto input '{}'",
                    expected.name
                ))
            })?;
        if tensor.datatype != expected.datatype {
            return Err(InferenceError::InvalidInput(format!(
                "input '{}' is {} but the model expects {}",
                expected.name, tensor.datatype, expected.datatype
            )));
        }
        let tensor_rows = check_shape(spec, index, &tensor.shape)?;
        if index > 0 && tensor_rows != rows {
            return Err(InferenceError::InvalidInput(format!(
                "input '{}' has batch size {tensor_rows} but another input has {rows}",
                expected.name
            )));
        }
        rows = tensor_rows;
        inputs.push(InputTensor {
            shape: tensor.shape.clone(),
            data: tensor.data.clone(),
        });
    }
    Ok(RequestInputs {
        rows,
        tensors: inputs,
    })
}

/// Completes the config view of `served` when it is an ensemble: Triton's
/// platform name and its `ensemble_scheduling`, no instances or files.
pub fn config_view(served: &ServedVersion, mut config: pb::ModelConfig) -> pb::ModelConfig {
    if let Some(ensemble) = served.scheduler.ensemble() {
        config.platform = ENSEMBLE_PLATFORM.into();
        config.backend = String::new();
        config.instance_group = Vec::new();
        config.default_model_filename = String::new();
        config.optimization = None;
        config.scheduling_choice = Some(pb::model_config::SchedulingChoice::EnsembleScheduling(
            ensemble.scheduling(),
        ));
    }
    config
}

/// The platform metadata reports for `served`.
pub fn platform(served: &ServedVersion) -> &'static str {
    if served.scheduler.ensemble().is_some() {
        ENSEMBLE_PLATFORM
    } else {
        "onnxruntime_onnx"
    }
}
