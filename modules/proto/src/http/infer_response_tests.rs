//! Tests of response encoding (JSON, binary outputs, overrides, classification).

use super::*;
use crate::datatype::{push_bytes_element, split_bytes_elements};
use crate::pb::infer_parameter::ParameterChoice;
use crate::ErrorCode;
use serde_json::json;

use super::super::infer_request::OutputPlan;

fn tensor(name: &str, dtype: &str, shape: &[i64]) -> InferOutputTensor {
    InferOutputTensor {
        name: name.into(),
        datatype: dtype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A response with an FP32 output `F`, an INT64 output `I` and a BYTES output `S`.
fn response() -> pb::ModelInferResponse {
    let mut strings = Vec::new();
    push_bytes_element(&mut strings, b"ab");
    push_bytes_element(&mut strings, b"");
    pb::ModelInferResponse {
        model_name: "m".into(),
        model_version: "1".into(),
        id: String::new(),
        parameters: Default::default(),
        outputs: vec![
            tensor("F", "FP32", &[1, 2]),
            tensor("I", "INT64", &[2]),
            tensor("S", "BYTES", &[2]),
        ],
        raw_output_contents: vec![
            Bytes::from(f32s(&[0.5, -1.25])),
            Bytes::from(
                [3i64, -4]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<_>>(),
            ),
            Bytes::from(strings),
        ],
    }
}

fn plan(binary_default: bool, outputs: &[(&str, OutputPlan)]) -> ResponsePlan {
    ResponsePlan {
        binary_default,
        outputs: outputs.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
        batched: true,
    }
}

fn binary(b: bool) -> OutputPlan {
    OutputPlan {
        binary: Some(b),
        classification: None,
    }
}

#[test]
fn all_json_response() {
    let enc = encode(response(), &plan(false, &[])).unwrap();
    assert_eq!(enc.header_len, None);
    let doc: Value = serde_json::from_slice(&enc.body).unwrap();
    assert_eq!(
        doc,
        json!({
            "model_name": "m", "model_version": "1",
            "outputs": [
                {"name": "F", "datatype": "FP32", "shape": [1, 2], "data": [0.5, -1.25]},
                {"name": "I", "datatype": "INT64", "shape": [2], "data": [3, -4]},
                {"name": "S", "datatype": "BYTES", "shape": [2], "data": ["ab", ""]}
            ]
        })
    );
}

#[test]
fn all_binary_response_appends_data_in_output_order() {
    let r = response();
    let raws: Vec<u8> = r
        .raw_output_contents
        .iter()
        .flat_map(|b| b.to_vec())
        .collect();
    let enc = encode(r, &plan(true, &[])).unwrap();
    let n = enc
        .header_len
        .expect("binary outputs need the header length");
    let doc: Value = serde_json::from_slice(&enc.body[..n]).unwrap();
    assert_eq!(&enc.body[n..], &raws[..]);
    let sizes: Vec<_> = doc["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["parameters"]["binary_data_size"].clone())
        .collect();
    assert_eq!(sizes, [json!(8), json!(16), json!(10)]);
    assert!(doc["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o.get("data").is_none()));
}

#[test]
fn per_output_binary_overrides_the_default() {
    // Global binary, but F as JSON.
    let enc = encode(response(), &plan(true, &[("F", binary(false))])).unwrap();
    let n = enc.header_len.unwrap();
    let doc: Value = serde_json::from_slice(&enc.body[..n]).unwrap();
    assert_eq!(doc["outputs"][0]["data"], json!([0.5, -1.25]));
    assert!(doc["outputs"][0].get("parameters").is_none());
    assert_eq!(doc["outputs"][1]["parameters"]["binary_data_size"], 16);
    assert_eq!(enc.body.len() - n, 16 + 10);
    // Global JSON, but I binary.
    let enc = encode(response(), &plan(false, &[("I", binary(true))])).unwrap();
    let n = enc.header_len.unwrap();
    let doc: Value = serde_json::from_slice(&enc.body[..n]).unwrap();
    assert_eq!(
        doc["outputs"][1]["parameters"],
        json!({"binary_data_size": 16})
    );
    assert_eq!(doc["outputs"][2]["data"], json!(["ab", ""]));
    assert_eq!(
        &enc.body[n..],
        &[3i64, -4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn id_and_parameters_are_written_when_present() {
    let mut r = response();
    r.id = "req-7".into();
    r.parameters.insert(
        "sequence_end".into(),
        pb::InferParameter {
            parameter_choice: Some(ParameterChoice::BoolParam(true)),
        },
    );
    r.outputs[0].parameters.insert(
        "note".into(),
        pb::InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam("n".into())),
        },
    );
    let enc = encode(r, &plan(true, &[])).unwrap();
    let doc: Value = serde_json::from_slice(&enc.body[..enc.header_len.unwrap()]).unwrap();
    assert_eq!(doc["id"], "req-7");
    assert_eq!(doc["parameters"], json!({"sequence_end": true}));
    assert_eq!(
        doc["outputs"][0]["parameters"],
        json!({"note": "n", "binary_data_size": 8})
    );
}

#[test]
fn typed_contents_are_accepted_when_raw_is_absent() {
    let mut r = response();
    r.raw_output_contents.clear();
    r.outputs.truncate(1);
    r.outputs[0].contents = Some(pb::InferTensorContents {
        fp32_contents: vec![2.0, 3.0],
        ..Default::default()
    });
    let enc = encode(r, &plan(false, &[])).unwrap();
    let doc: Value = serde_json::from_slice(&enc.body).unwrap();
    assert_eq!(doc["outputs"][0]["data"], json!([2.0, 3.0]));
}

#[test]
fn engine_mistakes_are_internal_errors() {
    let mut r = response();
    r.raw_output_contents.pop();
    assert_eq!(
        encode(r, &plan(false, &[])).unwrap_err().code,
        ErrorCode::Internal
    );
    let mut r = response();
    r.raw_output_contents[0] = Bytes::from_static(&[0; 3]);
    assert_eq!(
        encode(r, &plan(false, &[])).unwrap_err().code,
        ErrorCode::Internal
    );
}

#[test]
fn classification_replaces_the_output() {
    let mut r = response();
    r.outputs[0].shape = vec![2, 2];
    r.raw_output_contents[0] = Bytes::from(f32s(&[0.1, 0.9, 0.8, 0.2]));
    let class = OutputPlan {
        binary: None,
        classification: Some(1),
    };
    let enc = encode(r.clone(), &plan(false, &[("F", class)])).unwrap();
    let doc: Value = serde_json::from_slice(&enc.body).unwrap();
    assert_eq!(
        doc["outputs"][0],
        json!({"name": "F", "datatype": "BYTES", "shape": [2, 1], "data": ["0.900000:1", "0.800000:0"]})
    );
    // In binary form it is raw BYTES.
    let class = OutputPlan {
        binary: Some(true),
        classification: Some(2),
    };
    let enc = encode(r, &plan(false, &[("F", class)])).unwrap();
    let n = enc.header_len.unwrap();
    let elements = split_bytes_elements(&enc.body[n..]).unwrap();
    assert_eq!(
        elements,
        [
            &b"0.900000:1"[..],
            b"0.100000:0",
            b"0.800000:0",
            b"0.200000:1"
        ]
    );
}
