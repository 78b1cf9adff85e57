//! Encodes one inference request, once, in each wire form: HTTP JSON, HTTP
//! with the binary tensor extension, and the gRPC `ModelInferRequest`. The
//! load loops then send the same encoded request over and over.

use anyhow::Result;
use bytes::{BufMut, Bytes, BytesMut};
use mlserve_proto::pb;
use serde_json::{json, Map, Value};

use crate::tensor::{json_data, InputTensor};

/// Name of the header that gives the JSON part's length in a binary body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// An HTTP request body and, for the binary extension, the length of its
/// JSON header (the value of `Inference-Header-Content-Length`).
#[derive(Debug, Clone)]
pub struct HttpBody {
    /// The whole body.
    pub body: Bytes,
    /// JSON header length; `None` for a pure JSON body.
    pub header_len: Option<usize>,
}

/// The binary tensor extension: a JSON header naming each input with its
/// `binary_data_size`, asking for binary outputs, followed by the inputs'
/// raw bytes in input order. `outputs` names the outputs to return (empty:
/// all of them).
pub fn http_binary(inputs: &[InputTensor], outputs: &[String]) -> Result<HttpBody> {
    let described: Vec<Value> = inputs
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "datatype": t.datatype.as_str(),
                "shape": t.shape,
                "parameters": {"binary_data_size": t.raw.len()},
            })
        })
        .collect();
    let mut header = json!({
        "inputs": described,
        "parameters": {"binary_data_output": true},
    });
    if !outputs.is_empty() {
        header["outputs"] = outputs
            .iter()
            .map(|name| json!({"name": name, "parameters": {"binary_data": true}}))
            .collect();
    }
    let header = serde_json::to_vec(&header)?;
    let data_len: usize = inputs.iter().map(|t| t.raw.len()).sum();
    let mut body = BytesMut::with_capacity(header.len() + data_len);
    body.put_slice(&header);
    for tensor in inputs {
        body.put_slice(&tensor.raw);
    }
    Ok(HttpBody {
        body: body.freeze(),
        header_len: Some(header.len()),
    })
}

/// The plain JSON form: every input's elements in a `data` array; outputs
/// come back as JSON too. `outputs` names the outputs to return (empty: all).
pub fn http_json(inputs: &[InputTensor], outputs: &[String]) -> Result<HttpBody> {
    let mut described = Vec::with_capacity(inputs.len());
    for t in inputs {
        let mut input = Map::new();
        input.insert("name".into(), Value::from(t.name.clone()));
        input.insert("datatype".into(), Value::from(t.datatype.as_str()));
        input.insert("shape".into(), json!(t.shape));
        input.insert("data".into(), Value::Array(json_data(t)?));
        described.push(Value::Object(input));
    }
    let mut body = json!({ "inputs": described });
    if !outputs.is_empty() {
        body["outputs"] = outputs.iter().map(|name| json!({"name": name})).collect();
    }
    let body = serde_json::to_vec(&body)?;
    Ok(HttpBody {
        body: Bytes::from(body),
        header_len: None,
    })
}

/// The gRPC request: tensors described in `inputs`, their data in
/// `raw_input_contents` (shared `Bytes`, so cloning the request is cheap);
/// `outputs` names the outputs to return (empty: all).
pub fn grpc_request(
    model: &str,
    version: &str,
    inputs: &[InputTensor],
    outputs: &[String],
) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.to_string(),
        inputs: inputs
            .iter()
            .map(|t| pb::model_infer_request::InferInputTensor {
                name: t.name.clone(),
                datatype: t.datatype.as_str().to_string(),
                shape: t.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|t| t.raw.clone()).collect(),
        outputs: outputs
            .iter()
            .map(|name| pb::model_infer_request::InferRequestedOutputTensor {
                name: name.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{random_inputs, InputSpec};
    use mlserve_proto::DataType;

    fn two_inputs() -> Vec<InputTensor> {
        let specs = [
            InputSpec {
                name: "a".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 50],
            },
            InputSpec {
                name: "b".into(),
                datatype: DataType::Int64,
                shape: vec![-1, 3],
            },
        ];
        random_inputs(&specs, 4, 1).unwrap()
    }

    #[test]
    fn binary_body_is_header_then_data_in_input_order() {
        let inputs = two_inputs();
        let encoded = http_binary(&inputs, &[]).unwrap();
        let header_len = encoded.header_len.unwrap();
        assert_eq!(encoded.body.len(), header_len + 4 * 50 * 4 + 4 * 3 * 8);
        let header: Value = serde_json::from_slice(&encoded.body[..header_len]).unwrap();
        assert_eq!(header["parameters"]["binary_data_output"], true);
        assert_eq!(header["inputs"][0]["name"], "a");
        assert_eq!(header["inputs"][0]["shape"], json!([4, 50]));
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 800);
        assert_eq!(header["inputs"][1]["datatype"], "INT64");
        assert_eq!(header["inputs"][1]["parameters"]["binary_data_size"], 96);
        assert!(header["inputs"][0].get("data").is_none());
        assert!(header.get("outputs").is_none());
        assert_eq!(
            &encoded.body[header_len..header_len + 800],
            &inputs[0].raw[..]
        );
        assert_eq!(&encoded.body[header_len + 800..], &inputs[1].raw[..]);
    }

    #[test]
    fn json_body_carries_every_element() {
        let inputs = two_inputs();
        let encoded = http_json(&inputs, &[]).unwrap();
        assert!(encoded.header_len.is_none());
        let body: Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(body["inputs"][0]["data"].as_array().unwrap().len(), 200);
        assert_eq!(body["inputs"][1]["data"].as_array().unwrap().len(), 12);
        let first = f32::from_le_bytes(inputs[0].raw[..4].try_into().unwrap());
        assert_eq!(body["inputs"][0]["data"][0].as_f64().unwrap() as f32, first);
    }

    #[test]
    fn requested_outputs_are_named() {
        let inputs = two_inputs();
        let outputs = ["pooler_output".to_string()];
        let encoded = http_binary(&inputs, &outputs).unwrap();
        let header: Value =
            serde_json::from_slice(&encoded.body[..encoded.header_len.unwrap()]).unwrap();
        assert_eq!(header["outputs"][0]["name"], "pooler_output");
        assert_eq!(header["outputs"][0]["parameters"]["binary_data"], true);
        let body: Value =
            serde_json::from_slice(&http_json(&inputs, &outputs).unwrap().body).unwrap();
        assert_eq!(body["outputs"], json!([{"name": "pooler_output"}]));
    }

    #[test]
    fn grpc_request_shares_the_raw_data() {
        let inputs = two_inputs();
        let request = grpc_request("m", "", &inputs, &["y".to_string()]);
        assert_eq!(request.outputs[0].name, "y");
        assert_eq!(request.inputs.len(), 2);
        assert_eq!(request.inputs[1].shape, vec![4, 3]);
        assert_eq!(request.raw_input_contents[0], inputs[0].raw);
        assert_eq!(
            request.raw_input_contents[0].as_ptr(),
            inputs[0].raw.as_ptr()
        );
    }
}
