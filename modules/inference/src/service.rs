//! The local [`InferenceService`]: the model manager behind the protocol.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use mlserve_common::config::ModelControlMode;
use mlserve_proto::inference::{InferenceService, LoadParameters, ModelIndex};
use mlserve_proto::pb;
use mlserve_proto::pb::model_repository_parameter::ParameterChoice;
use mlserve_proto::{ServiceError, ServiceResult};

use crate::error::InferenceError;
use crate::manager::{ModelManager, ServedVersion};
use crate::model_config::{ModelConfigFile, ModelSpec, VersionPolicy};
use crate::validate::validate;

/// Protocol extensions mlserve implements.
pub const EXTENSIONS: [&str; 5] = [
    "binary_tensor_data",
    "statistics",
    "model_repository",
    "model_configuration",
    "schedule_policy",
];

/// The inference role's service implementation.
pub struct LocalInference {
    manager: Arc<ModelManager>,
    ready: AtomicBool,
}

impl LocalInference {
    /// Wraps a manager; not ready until [`LocalInference::set_ready`].
    pub fn new(manager: Arc<ModelManager>) -> Self {
        LocalInference {
            manager,
            ready: AtomicBool::new(false),
        }
    }

    /// Marks the server ready (after the initial loads) or not (at shutdown).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The model manager.
    pub fn manager(&self) -> &Arc<ModelManager> {
        &self.manager
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Arc<ModelManager>) -> Result<T, InferenceError> + Send + 'static,
    ) -> ServiceResult<T> {
        let manager = self.manager.clone();
        tokio::task::spawn_blocking(move || work(manager))
            .await
            .map_err(|e| ServiceError::internal(format!("model load task failed: {e}")))?
            .map_err(ServiceError::from)
    }

    fn require_explicit(&self, action: &str) -> Result<(), InferenceError> {
        match self.manager.mode() {
            ModelControlMode::Explicit => Ok(()),
            mode => Err(InferenceError::NotAllowed(format!(
                "explicit model {action} is not allowed in model control mode '{}'; start with --model-control-mode explicit",
                format!("{mode:?}").to_lowercase()
            ))),
        }
    }
}

fn tensor_metadata(
    spec: &ModelSpec,
    tensors: &[crate::model_config::TensorSpec],
) -> Vec<pb::model_metadata_response::TensorMetadata> {
    tensors
        .iter()
        .map(|t| pb::model_metadata_response::TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.as_str().to_string(),
            shape: if spec.max_batch_size > 0 {
                std::iter::once(-1).chain(t.dims.iter().copied()).collect()
            } else {
                t.dims.clone()
            },
        })
        .collect()
}

fn model_config(served: &ServedVersion) -> pb::ModelConfig {
    let spec = &served.spec;
    let batching = &spec.batching;
    let policy_choice = match &spec.version_policy {
        VersionPolicy::Latest { num_versions } => {
            pb::model_version_policy::PolicyChoice::Latest(pb::model_version_policy::Latest {
                num_versions: *num_versions,
            })
        }
        VersionPolicy::All {} => {
            pb::model_version_policy::PolicyChoice::All(pb::model_version_policy::All {})
        }
        VersionPolicy::Specific { versions } => {
            pb::model_version_policy::PolicyChoice::Specific(pb::model_version_policy::Specific {
                versions: versions.clone(),
            })
        }
    };
    pb::ModelConfig {
        name: spec.name.clone(),
        platform: "onnxruntime_onnx".into(),
        backend: "onnxruntime".into(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(policy_choice),
        }),
        max_batch_size: spec.max_batch_size as i32,
        input: spec
            .inputs
            .iter()
            .map(|t| pb::ModelInput {
                name: t.name.clone(),
                data_type: t.datatype.to_config() as i32,
                dims: t.dims.clone(),
                optional: false,
            })
            .collect(),
        output: spec
            .outputs
            .iter()
            .map(|t| pb::ModelOutput {
                name: t.name.clone(),
                data_type: t.datatype.to_config() as i32,
                dims: t.dims.clone(),
                label_filename: String::new(),
            })
            .collect(),
        instance_group: spec
            .instance_groups
            .iter()
            .enumerate()
            .map(|(i, (kind, count, gpus))| pb::ModelInstanceGroup {
                name: format!("{}_{i}", spec.name),
                count: *count as i32,
                gpus: gpus.clone(),
                kind: match kind {
                    crate::model_config::InstanceKind::Cpu => {
                        pb::model_instance_group::Kind::Cpu as i32
                    }
                    crate::model_config::InstanceKind::Gpu => {
                        pb::model_instance_group::Kind::Gpu as i32
                    }
                },
            })
            .collect(),
        default_model_filename: spec.model_filename.clone(),
        dynamic_batching: spec.dynamic_batching.then(|| pb::ModelDynamicBatching {
            preferred_batch_size: batching
                .preferred_batch_sizes
                .iter()
                .map(|&n| n as i32)
                .collect(),
            max_queue_delay_microseconds: batching.max_queue_delay.as_micros() as u64,
            preserve_ordering: false,
            priority_levels: batching.priority_levels as u64,
            default_priority_level: batching.default_priority_level as u64,
            default_queue_policy: Some(pb::ModelQueuePolicy {
                timeout_action: pb::model_queue_policy::TimeoutAction::Reject as i32,
                default_timeout_microseconds: batching
                    .default_timeout
                    .map_or(0, |d| d.as_micros() as u64),
                allow_timeout_override: batching.allow_timeout_override,
                max_queue_size: batching.max_queue_size as u32,
            }),
        }),
        optimization: Some(pb::ModelOptimizationPolicy {
            graph: Some(pb::model_optimization_policy::Graph {
                level: match spec.graph_optimization_level.as_str() {
                    "disable" => -1,
                    "basic" => 1,
                    "extended" => 2,
                    _ => 0,
                },
            }),
        }),
        parameters: Default::default(),
    }
}

#[async_trait]
impl InferenceService for LocalInference {
    async fn server_live(&self) -> ServiceResult<bool> {
        Ok(true)
    }

    async fn server_ready(&self) -> ServiceResult<bool> {
        Ok(self.ready.load(Ordering::SeqCst))
    }

    async fn server_metadata(&self) -> ServiceResult<pb::ServerMetadataResponse> {
        Ok(pb::ServerMetadataResponse {
            name: "mlserve".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        })
    }

    async fn model_ready(&self, name: &str, version: &str) -> ServiceResult<bool> {
        match self.manager.get(name, version) {
            Ok(_) => Ok(self.ready.load(Ordering::SeqCst)),
            Err(InferenceError::ModelUnavailable(_)) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    async fn model_metadata(
        &self,
        name: &str,
        version: &str,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        let served = self.manager.get(name, version)?;
        let versions = self
            .manager
            .versions(name)?
            .iter()
            .map(|v| v.label.clone())
            .collect();
        let spec = &served.spec;
        Ok(pb::ModelMetadataResponse {
            name: spec.name.clone(),
            versions,
            platform: "onnxruntime_onnx".into(),
            inputs: tensor_metadata(spec, &spec.inputs),
            outputs: tensor_metadata(spec, &spec.outputs),
        })
    }

    async fn model_config(&self, name: &str, version: &str) -> ServiceResult<pb::ModelConfig> {
        let served = self.manager.get(name, version)?;
        Ok(model_config(&served))
    }

    async fn model_statistics(
        &self,
        name: &str,
        version: &str,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        let stats = if name.is_empty() {
            let loaded = self.manager.loaded_models();
            self.manager
                .stats()
                .all()
                .into_iter()
                .filter(|s| loaded.contains(&s.model))
                .map(|s| s.to_pb())
                .collect()
        } else if version.is_empty() {
            self.manager
                .versions(name)?
                .iter()
                .map(|v| v.stats.to_pb())
                .collect()
        } else {
            vec![self.manager.get(name, version)?.stats.to_pb()]
        };
        Ok(pb::ModelStatisticsResponse { model_stats: stats })
    }

    async fn model_infer(
        &self,
        mut request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        let started = Instant::now();
        let served = self
            .manager
            .get(&request.model_name, &request.model_version)?;
        let outcome = async {
            let validated = validate(&served.spec, &mut request)?;
            let ticket = served.scheduler.enqueue(
                validated.inputs,
                validated.priority,
                validated.timeout,
            )?;
            let outputs = ticket.wait().await?;
            Ok::<_, InferenceError>((outputs, validated.outputs))
        }
        .await;
        let (mut outputs, selected) = match outcome {
            Ok(done) => done,
            Err(err) => {
                served.stats.record_failure(err.reason(), started.elapsed());
                return Err(err.into());
            }
        };
        if let Some(selected) = selected {
            let mut all: Vec<Option<_>> = outputs.into_iter().map(Some).collect();
            outputs = selected
                .into_iter()
                .filter_map(|i| all.get_mut(i).and_then(Option::take))
                .collect();
        }
        let mut response = pb::ModelInferResponse {
            model_name: served.spec.name.clone(),
            model_version: served.label.clone(),
            id: request.id,
            parameters: Default::default(),
            outputs: Vec::with_capacity(outputs.len()),
            raw_output_contents: Vec::with_capacity(outputs.len()),
        };
        for output in outputs {
            response
                .outputs
                .push(pb::model_infer_response::InferOutputTensor {
                    name: output.name,
                    datatype: output.datatype.as_str().to_string(),
                    shape: output.shape,
                    parameters: Default::default(),
                    contents: None,
                });
            response.raw_output_contents.push(output.data);
        }
        served.stats.record_success(started.elapsed());
        Ok(response)
    }

    async fn repository_index(&self, ready_only: bool) -> ServiceResult<Vec<ModelIndex>> {
        let rows = self.blocking(|m| m.index()).await?;
        Ok(rows
            .into_iter()
            .filter(|r| !ready_only || r.state == "READY")
            .map(|r| ModelIndex {
                name: r.name,
                version: r.version,
                state: r.state.to_string(),
                reason: r.reason,
            })
            .collect())
    }

    async fn load_model(&self, name: &str, parameters: LoadParameters) -> ServiceResult<()> {
        self.require_explicit("load")?;
        let config = match parameters
            .get("config")
            .and_then(|p| p.parameter_choice.as_ref())
        {
            Some(ParameterChoice::StringParam(json)) => Some(ModelConfigFile::from_json(json)?),
            Some(_) => {
                return Err(ServiceError::bad_request(
                    "the 'config' load parameter must be a JSON string",
                ))
            }
            None => None,
        };
        if parameters.keys().any(|k| k.starts_with("file:")) {
            return Err(ServiceError::bad_request(
                "loading model files through the load request is not supported",
            ));
        }
        let name = name.to_string();
        self.blocking(move |m| m.load(&name, config)).await
    }

    async fn unload_model(&self, name: &str) -> ServiceResult<()> {
        self.require_explicit("unload")?;
        Ok(self.manager.unload(name)?)
    }
}
