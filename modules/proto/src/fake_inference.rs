//! A fake [`InferenceService`] for the protocol tests (REST router and gRPC
//! adapters): it echoes its inputs.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::inference::{InferenceService, LoadParameters, ModelIndex};
use crate::pb;
use crate::{ServiceError, ServiceResult};

/// Knows model `echo` (ready; one FP32 input `IN` [-1, 3]; batching) and
/// model `sleepy` (not ready). Inference echoes every input as an output of
/// the same name, honouring the requested outputs.
#[derive(Default)]
pub(crate) struct Echo {
    pub(crate) not_ready: bool,
    pub(crate) loads: Mutex<Vec<(String, LoadParameters)>>,
    pub(crate) requests: Mutex<Vec<pb::ModelInferRequest>>,
}

fn known(name: &str) -> ServiceResult<()> {
    match name {
        "echo" | "sleepy" => Ok(()),
        _ => Err(ServiceError::not_found(format!("unknown model '{name}'"))),
    }
}

#[async_trait]
impl InferenceService for Echo {
    async fn server_live(&self) -> ServiceResult<bool> {
        Ok(true)
    }
    async fn server_ready(&self) -> ServiceResult<bool> {
        Ok(!self.not_ready)
    }
    async fn server_metadata(&self) -> ServiceResult<pb::ServerMetadataResponse> {
        Ok(pb::ServerMetadataResponse {
            name: "mlserve".into(),
            version: "0.1.0".into(),
            extensions: vec!["binary_tensor_data".into()],
        })
    }
    async fn model_ready(&self, name: &str, _version: &str) -> ServiceResult<bool> {
        known(name)?;
        Ok(name == "echo")
    }
    async fn model_metadata(
        &self,
        name: &str,
        _version: &str,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        known(name)?;
        let t = |n: &str| pb::model_metadata_response::TensorMetadata {
            name: n.into(),
            datatype: "FP32".into(),
            shape: vec![-1, 3],
        };
        Ok(pb::ModelMetadataResponse {
            name: name.into(),
            versions: vec!["1".into()],
            platform: "onnxruntime_onnx".into(),
            inputs: vec![t("IN")],
            outputs: vec![t("IN")],
        })
    }
    async fn model_config(&self, name: &str, _version: &str) -> ServiceResult<pb::ModelConfig> {
        known(name)?;
        Ok(pb::ModelConfig {
            name: name.into(),
            max_batch_size: 4,
            ..Default::default()
        })
    }
    async fn model_statistics(
        &self,
        name: &str,
        _version: &str,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        if !name.is_empty() {
            known(name)?;
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
    async fn model_infer(
        &self,
        request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
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
        Ok(response)
    }
    async fn repository_index(&self, ready_only: bool) -> ServiceResult<Vec<ModelIndex>> {
        let mut models = vec![ModelIndex {
            name: "echo".into(),
            version: "1".into(),
            state: "READY".into(),
            reason: String::new(),
        }];
        if !ready_only {
            models.push(ModelIndex {
                name: "sleepy".into(),
                state: "UNAVAILABLE".into(),
                ..Default::default()
            });
        }
        Ok(models)
    }
    async fn load_model(&self, name: &str, parameters: LoadParameters) -> ServiceResult<()> {
        known(name)?;
        self.loads.lock().unwrap().push((name.into(), parameters));
        Ok(())
    }
    async fn unload_model(&self, name: &str) -> ServiceResult<()> {
        known(name)
    }
}
