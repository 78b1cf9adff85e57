//! A fake [`InferenceService`] for the protocol tests (REST router and gRPC
//! adapters): it echoes its inputs.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::inference::{infer_each, InferenceService, LoadParameters, ModelIndex};
use crate::rpc::ServiceStream;
use crate::{pb, CallContext, ServiceError, ServiceResult};

/// Knows model `echo` (ready; one FP32 input `IN` [-1, 3]; batching) and
/// model `sleepy` (not ready). Inference echoes every input as an output of
/// the same name, honouring the requested outputs.
#[derive(Clone, Default)]
pub(crate) struct Echo {
    pub(crate) not_ready: bool,
    pub(crate) loads: Arc<Mutex<Vec<(String, LoadParameters)>>>,
    pub(crate) requests: Arc<Mutex<Vec<pb::ModelInferRequest>>>,
    /// The context of every call, in order.
    pub(crate) contexts: Arc<Mutex<Vec<CallContext>>>,
}

fn known(name: &str) -> ServiceResult<()> {
    match name {
        "echo" | "sleepy" => Ok(()),
        _ => Err(ServiceError::not_found(format!("unknown model '{name}'"))),
    }
}

impl Echo {
    fn seen(&self, ctx: &CallContext) {
        self.contexts.lock().unwrap().push(ctx.clone());
    }
}

#[async_trait]
impl InferenceService for Echo {
    async fn server_live(
        &self,
        ctx: CallContext,
        _: pb::ServerLiveRequest,
    ) -> ServiceResult<pb::ServerLiveResponse> {
        self.seen(&ctx);
        Ok(pb::ServerLiveResponse { live: true })
    }
    async fn server_ready(
        &self,
        ctx: CallContext,
        _: pb::ServerReadyRequest,
    ) -> ServiceResult<pb::ServerReadyResponse> {
        self.seen(&ctx);
        Ok(pb::ServerReadyResponse {
            ready: !self.not_ready,
        })
    }
    async fn model_ready(
        &self,
        ctx: CallContext,
        request: pb::ModelReadyRequest,
    ) -> ServiceResult<pb::ModelReadyResponse> {
        self.seen(&ctx);
        Ok(pb::ModelReadyResponse {
            ready: request.name == "echo",
        })
    }
    async fn server_metadata(
        &self,
        ctx: CallContext,
        _: pb::ServerMetadataRequest,
    ) -> ServiceResult<pb::ServerMetadataResponse> {
        self.seen(&ctx);
        Ok(pb::ServerMetadataResponse {
            name: "mlserve".into(),
            version: "0.1.0".into(),
            extensions: vec!["binary_tensor_data".into()],
        })
    }
    async fn model_metadata(
        &self,
        ctx: CallContext,
        request: pb::ModelMetadataRequest,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        self.seen(&ctx);
        known(&request.name)?;
        let t = |n: &str| pb::model_metadata_response::TensorMetadata {
            name: n.into(),
            datatype: "FP32".into(),
            shape: vec![-1, 3],
        };
        Ok(pb::ModelMetadataResponse {
            name: request.name,
            versions: vec!["1".into()],
            platform: "onnxruntime_onnx".into(),
            inputs: vec![t("IN")],
            outputs: vec![t("IN")],
        })
    }
    async fn model_infer(
        &self,
        ctx: CallContext,
        request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        self.seen(&ctx);
        known(&request.model_name)?;
        self.requests.lock().unwrap().push(request.clone());
        let wanted =
            |n: &str| request.outputs.is_empty() || request.outputs.iter().any(|o| o.name == n);
        let mut response = pb::ModelInferResponse {
            model_name: request.model_name.clone(),
            model_version: "1".into(),
            id: request.id.clone(),
            ..Default::default()
        };
        for (input, raw) in request.inputs.iter().zip(&request.raw_input_contents) {
            if wanted(&input.name) {
                response
                    .outputs
                    .push(pb::model_infer_response::InferOutputTensor {
                        name: input.name.clone(),
                        datatype: input.datatype.clone(),
                        shape: input.shape.clone(),
                        ..Default::default()
                    });
                response.raw_output_contents.push(raw.clone());
            }
        }
        ctx.note_reply(crate::context::MODEL_VERSION_HEADER, "1");
        Ok(response)
    }
    async fn model_stream_infer(
        &self,
        ctx: CallContext,
        request: ServiceStream<pb::ModelInferRequest>,
    ) -> ServiceResult<ServiceStream<pb::ModelStreamInferResponse>> {
        Ok(infer_each(Arc::new(self.clone()), ctx, request))
    }
    async fn model_config(
        &self,
        ctx: CallContext,
        request: pb::ModelConfigRequest,
    ) -> ServiceResult<pb::ModelConfigResponse> {
        self.seen(&ctx);
        known(&request.name)?;
        Ok(pb::ModelConfigResponse {
            config: Some(pb::ModelConfig {
                name: request.name,
                max_batch_size: Some(4),
                ..Default::default()
            }),
        })
    }
    async fn model_statistics(
        &self,
        ctx: CallContext,
        request: pb::ModelStatisticsRequest,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        self.seen(&ctx);
        if !request.name.is_empty() {
            known(&request.name)?;
        }
        let stat = pb::ModelStatistics {
            name: "echo".into(),
            version: "1".into(),
            inference_count: 3,
            ..Default::default()
        };
        Ok(pb::ModelStatisticsResponse {
            model_stats: vec![stat],
        })
    }
    async fn repository_index(
        &self,
        ctx: CallContext,
        request: pb::RepositoryIndexRequest,
    ) -> ServiceResult<pb::RepositoryIndexResponse> {
        self.seen(&ctx);
        let mut models = vec![ModelIndex {
            name: "echo".into(),
            version: "1".into(),
            state: "READY".into(),
            reason: String::new(),
        }];
        if !request.ready {
            models.push(ModelIndex {
                name: "sleepy".into(),
                state: "UNAVAILABLE".into(),
                ..Default::default()
            });
        }
        Ok(pb::RepositoryIndexResponse { models })
    }
    async fn repository_model_load(
        &self,
        ctx: CallContext,
        request: pb::RepositoryModelLoadRequest,
    ) -> ServiceResult<pb::RepositoryModelLoadResponse> {
        self.seen(&ctx);
        known(&request.model_name)?;
        self.loads
            .lock()
            .unwrap()
            .push((request.model_name, request.parameters));
        Ok(pb::RepositoryModelLoadResponse {})
    }
    async fn repository_model_unload(
        &self,
        ctx: CallContext,
        request: pb::RepositoryModelUnloadRequest,
    ) -> ServiceResult<pb::RepositoryModelUnloadResponse> {
        self.seen(&ctx);
        known(&request.model_name)?;
        Ok(pb::RepositoryModelUnloadResponse {})
    }
}
