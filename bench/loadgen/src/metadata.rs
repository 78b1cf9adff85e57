//! Learns a model's inputs from its metadata (`GET /v2/models/{m}` or the
//! gRPC `ModelMetadata` call).

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use mlserve_proto::pb;
use mlserve_proto::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use mlserve_proto::DataType;
use serde_json::Value;
use tonic::transport::Channel;

use crate::http::{get, HttpEndpoint};
use crate::tensor::InputSpec;

/// The model's inputs over HTTP.
pub async fn http_inputs(endpoint: &Arc<HttpEndpoint>, model: &str) -> Result<Vec<InputSpec>> {
    let body = get(endpoint, &format!("/v2/models/{model}")).await?;
    let metadata: Value = serde_json::from_slice(&body).context("model metadata is not JSON")?;
    parse_json_inputs(&metadata)
}

/// Parses the `inputs` of a JSON model metadata document.
pub fn parse_json_inputs(metadata: &Value) -> Result<Vec<InputSpec>> {
    let inputs = metadata["inputs"]
        .as_array()
        .context("model metadata has no 'inputs' array")?;
    inputs
        .iter()
        .map(|input| {
            let name = input["name"].as_str().context("an input has no name")?;
            let datatype = input["datatype"]
                .as_str()
                .and_then(DataType::parse)
                .with_context(|| format!("input '{name}' has no known datatype"))?;
            let shape = input["shape"]
                .as_array()
                .with_context(|| format!("input '{name}' has no shape"))?
                .iter()
                .map(|d| {
                    d.as_i64()
                        .ok_or_else(|| anyhow!("input '{name}' has a bad dimension {d}"))
                })
                .collect::<Result<Vec<i64>>>()?;
            Ok(InputSpec {
                name: name.to_string(),
                datatype,
                shape,
            })
        })
        .collect()
}

/// The model's inputs over gRPC.
pub async fn grpc_inputs(
    mut client: GrpcInferenceServiceClient<Channel>,
    model: &str,
) -> Result<Vec<InputSpec>> {
    let response = client
        .model_metadata(pb::ModelMetadataRequest {
            name: model.to_string(),
            version: String::new(),
        })
        .await
        .map_err(|s| anyhow!("ModelMetadata({model}): {:?}: {}", s.code(), s.message()))?
        .into_inner();
    response
        .inputs
        .into_iter()
        .map(|input| {
            let Some(datatype) = DataType::parse(&input.datatype) else {
                bail!(
                    "input '{}' has unknown datatype '{}'",
                    input.name,
                    input.datatype
                );
            };
            Ok(InputSpec {
                name: input.name,
                datatype,
                shape: input.shape,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_triton_metadata() {
        let doc = json!({
            "name": "tabular", "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 50]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}]
        });
        let inputs = parse_json_inputs(&doc).unwrap();
        assert_eq!(
            inputs,
            vec![InputSpec {
                name: "input".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 50]
            }]
        );
    }

    #[test]
    fn refuses_unknown_datatypes() {
        let doc = json!({"inputs": [{"name": "x", "datatype": "FP8", "shape": [1]}]});
        assert!(parse_json_inputs(&doc).is_err());
    }
}
