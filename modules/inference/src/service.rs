//! The local [`InferenceService`]: the model manager behind the protocol.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use mlserve_common::config::ModelControlMode;
use mlserve_proto::inference::{infer_each, InferenceService, LoadParameters, ModelIndex};
use mlserve_proto::pb;
use mlserve_proto::pb::model_repository_parameter::ParameterChoice;
use mlserve_proto::rpc::ServiceStream;
use mlserve_proto::{CallContext, ServiceError, ServiceResult};

use crate::error::InferenceError;
use crate::manager::{failed_to_load, ModelManager, ServedVersion};
use crate::model_config::{ModelConfigFile, ModelSpec, VersionPolicy};
use crate::shared_memory::SharedMemoryRegions;
use crate::validate::validate;

/// Protocol extensions mlserve implements.
pub const EXTENSIONS: [&str; 6] = [
    "binary_tensor_data",
    "statistics",
    "model_repository",
    "model_configuration",
    "schedule_policy",
    "system_shared_memory",
];

/// The inference role's service implementation; clones share everything.
#[derive(Clone)]
pub struct LocalInference {
    manager: Arc<ModelManager>,
    ready: Arc<AtomicBool>,
    /// Models that must serve a version before the server reports ready
    /// (Triton's `--strict-readiness`); empty: ready once started.
    required: Arc<Vec<String>>,
    /// The name server metadata answers with.
    server_name: Arc<str>,
    /// Registered system shared-memory regions.
    shared_memory: Arc<SharedMemoryRegions>,
}

impl LocalInference {
    /// Wraps a manager; not ready until [`LocalInference::set_ready`].
    pub fn new(manager: Arc<ModelManager>) -> Self {
        LocalInference {
            manager,
            ready: Arc::new(AtomicBool::new(false)),
            required: Arc::new(Vec::new()),
            server_name: "mlserve".into(),
            shared_memory: Arc::new(SharedMemoryRegions::default()),
        }
    }

    /// Server metadata answers with `name` (for example "triton").
    pub fn with_server_name(mut self, name: &str) -> Self {
        self.server_name = name.into();
        self
    }

    /// Server readiness also waits until each of `models` serves a version.
    pub fn with_required_models(mut self, models: Vec<String>) -> Self {
        self.required = Arc::new(models);
        self
    }

    /// Started, and every required model serving.
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && self
                .required
                .iter()
                .all(|name| self.manager.get(name, "").is_ok())
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
        max_batch_size: Some(spec.max_batch_size as i32),
        input: spec
            .inputs
            .iter()
            .map(|t| pb::ModelInput {
                name: t.name.clone(),
                data_type: t.datatype.to_config() as i32,
                dims: t.dims.clone(),
                ..Default::default()
            })
            .collect(),
        output: spec
            .outputs
            .iter()
            .map(|t| pb::ModelOutput {
                name: t.name.clone(),
                data_type: t.datatype.to_config() as i32,
                dims: t.dims.clone(),
                ..Default::default()
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
                ..Default::default()
            })
            .collect(),
        default_model_filename: spec.model_filename.clone(),
        scheduling_choice: spec.dynamic_batching.then(|| {
            pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
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
                ..Default::default()
            })
        }),
        optimization: Some(pb::ModelOptimizationPolicy {
            graph: Some(pb::model_optimization_policy::Graph {
                level: spec.graph_optimization_level.triton_level(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[async_trait]
impl InferenceService for LocalInference {
    async fn server_live(
        &self,
        _: CallContext,
        _: pb::ServerLiveRequest,
    ) -> ServiceResult<pb::ServerLiveResponse> {
        Ok(pb::ServerLiveResponse { live: true })
    }

    async fn server_ready(
        &self,
        _: CallContext,
        _: pb::ServerReadyRequest,
    ) -> ServiceResult<pb::ServerReadyResponse> {
        Ok(pb::ServerReadyResponse {
            ready: self.is_ready(),
        })
    }

    async fn server_metadata(
        &self,
        _: CallContext,
        _: pb::ServerMetadataRequest,
    ) -> ServiceResult<pb::ServerMetadataResponse> {
        Ok(pb::ServerMetadataResponse {
            name: self.server_name.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Not ready (rather than an error) for a model it does not know, as Triton.
    async fn model_ready(
        &self,
        _: CallContext,
        request: pb::ModelReadyRequest,
    ) -> ServiceResult<pb::ModelReadyResponse> {
        let ready = match self.manager.get(&request.name, &request.version) {
            Ok(_) => self.ready.load(Ordering::SeqCst),
            Err(InferenceError::ModelUnavailable(_) | InferenceError::ModelNotFound(_)) => false,
            Err(err) => return Err(err.into()),
        };
        Ok(pb::ModelReadyResponse { ready })
    }

    async fn model_metadata(
        &self,
        _: CallContext,
        request: pb::ModelMetadataRequest,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        let served = self.manager.get(&request.name, &request.version)?;
        let versions = self
            .manager
            .versions(&request.name)?
            .iter()
            .map(|v| v.label.clone())
            .collect();
        let spec = &served.spec;
        Ok(pb::ModelMetadataResponse {
            name: spec.name.clone(),
            versions,
            platform: crate::ensemble::platform(&served).into(),
            inputs: tensor_metadata(spec, &spec.inputs),
            outputs: tensor_metadata(spec, &spec.outputs),
        })
    }

    async fn model_config(
        &self,
        _: CallContext,
        request: pb::ModelConfigRequest,
    ) -> ServiceResult<pb::ModelConfigResponse> {
        let served = self.manager.get(&request.name, &request.version)?;
        Ok(pb::ModelConfigResponse {
            config: Some(crate::ensemble::config_view(&served, model_config(&served))),
        })
    }

    async fn model_statistics(
        &self,
        _: CallContext,
        request: pb::ModelStatisticsRequest,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        let (name, version) = (&request.name, &request.version);
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

    /// Runs the request through the model's scheduler. The caller's deadline
    /// is the queue timeout (with the request's own `timeout`, the earlier
    /// wins): a request still queued at its deadline never runs.
    async fn model_infer(
        &self,
        ctx: CallContext,
        mut request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        let started = Instant::now();
        let served = self
            .manager
            .get(&request.model_name, &request.model_version)?;
        self.shared_memory.resolve_inputs(&mut request)?;
        let output_places = self.shared_memory.output_places(&mut request)?;
        let outcome = async {
            let validated = validate(&served.spec, &mut request)?;
            if ctx.expired() {
                return Err(InferenceError::Timeout);
            }
            let priority = ctx.caller.as_ref().map_or(validated.priority, |caller| {
                caller.request_priority(validated.priority)
            });
            let ticket = served.scheduler.enqueue(
                validated.inputs,
                priority,
                validated.timeout,
                ctx.deadline,
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
        self.shared_memory
            .write_outputs(&output_places, &mut response)?;
        served.stats.record_success(started.elapsed());
        tracing::debug!(model = %response.model_name, version = %response.model_version, "inference answered");
        Ok(response)
    }

    async fn model_stream_infer(
        &self,
        ctx: CallContext,
        requests: ServiceStream<pb::ModelInferRequest>,
    ) -> ServiceResult<ServiceStream<pb::ModelStreamInferResponse>> {
        Ok(infer_each(Arc::new(self.clone()), ctx, requests))
    }

    async fn repository_index(
        &self,
        _: CallContext,
        request: pb::RepositoryIndexRequest,
    ) -> ServiceResult<pb::RepositoryIndexResponse> {
        let rows = self.blocking(|m| m.index()).await?;
        let models = rows
            .into_iter()
            .filter(|r| !request.ready || r.state == "READY")
            .map(|r| ModelIndex {
                name: r.name,
                version: r.version,
                state: r.state.to_string(),
                reason: r.reason,
            })
            .collect();
        Ok(pb::RepositoryIndexResponse { models })
    }

    async fn repository_model_load(
        &self,
        _: CallContext,
        request: pb::RepositoryModelLoadRequest,
    ) -> ServiceResult<pb::RepositoryModelLoadResponse> {
        self.require_explicit("load")?;
        let parameters: &LoadParameters = &request.parameters;
        let config = match parameters
            .get("config")
            .and_then(|p| p.parameter_choice.as_ref())
        {
            Some(ParameterChoice::StringParam(json)) => Some(
                ModelConfigFile::from_json(json)
                    .map_err(|e| failed_to_load(&request.model_name, e))?,
            ),
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
        let name = request.model_name;
        self.blocking(move |m| m.load(&name, config)).await?;
        Ok(pb::RepositoryModelLoadResponse {})
    }

    async fn repository_model_unload(
        &self,
        _: CallContext,
        request: pb::RepositoryModelUnloadRequest,
    ) -> ServiceResult<pb::RepositoryModelUnloadResponse> {
        self.require_explicit("unload")?;
        self.manager.unload(&request.model_name)?;
        Ok(pb::RepositoryModelUnloadResponse {})
    }

    async fn system_shared_memory_status(
        &self,
        _: CallContext,
        request: pb::SystemSharedMemoryStatusRequest,
    ) -> ServiceResult<pb::SystemSharedMemoryStatusResponse> {
        let regions = self.shared_memory.status(&request.name)?;
        Ok(pb::SystemSharedMemoryStatusResponse {
            regions: regions
                .iter()
                .map(|r| (r.name.clone(), r.status()))
                .collect(),
        })
    }

    async fn system_shared_memory_register(
        &self,
        _: CallContext,
        request: pb::SystemSharedMemoryRegisterRequest,
    ) -> ServiceResult<pb::SystemSharedMemoryRegisterResponse> {
        let regions = self.shared_memory.clone();
        tokio::task::spawn_blocking(move || {
            regions.register(
                &request.name,
                &request.key,
                request.offset,
                request.byte_size,
            )
        })
        .await
        .map_err(|e| {
            ServiceError::internal(format!("shared memory register task failed: {e}"))
        })??;
        Ok(pb::SystemSharedMemoryRegisterResponse {})
    }

    async fn system_shared_memory_unregister(
        &self,
        _: CallContext,
        request: pb::SystemSharedMemoryUnregisterRequest,
    ) -> ServiceResult<pb::SystemSharedMemoryUnregisterResponse> {
        self.shared_memory.unregister(&request.name);
        Ok(pb::SystemSharedMemoryUnregisterResponse {})
    }
}
