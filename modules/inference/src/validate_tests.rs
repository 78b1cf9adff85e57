//! Per-request checks that keep one client's bad data out of the batches
//! other clients' requests join.

use mlserve_common::datatype::push_bytes_element;
use mlserve_proto::pb::model_infer_request::InferInputTensor;

use super::*;
use crate::model_config::{resolve, ModelConfigFile, OnnxSignature};

/// A batching model with one BYTES input `text` [-1, 1] and one output.
fn text_model() -> ModelSpec {
    let onnx = OnnxSignature {
        inputs: vec![("text".into(), DataType::Bytes, vec![-1, 1])],
        outputs: vec![("upper".into(), DataType::Bytes, vec![-1, 1])],
    };
    resolve("text", &ModelConfigFile::default(), &onnx, 16).unwrap()
}

fn text_request(elements: &[&[u8]]) -> pb::ModelInferRequest {
    let mut raw = Vec::new();
    for element in elements {
        push_bytes_element(&mut raw, element);
    }
    pb::ModelInferRequest {
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![elements.len() as i64, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(raw)],
        ..Default::default()
    }
}

fn refusal(spec: &ModelSpec, mut request: pb::ModelInferRequest) -> String {
    match validate(spec, &mut request) {
        Err(InferenceError::InvalidInput(message)) => message,
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn bytes_elements_may_hold_any_bytes_but_must_fit_the_shape() {
    let spec = text_model();
    assert!(validate(&spec, &mut text_request(&[b"fine", "ünïcode".as_bytes()])).is_ok());
    assert!(validate(&spec, &mut text_request(&[b"ok", b"a\0b"])).is_ok());
    assert!(validate(&spec, &mut text_request(&[b"caf\xe9"])).is_ok());
    let mut short = text_request(&[b"ok"]);
    short.raw_input_contents[0].truncate(3);
    let message = refusal(&spec, short);
    assert!(message.contains("'text'"), "{message}");
}

#[test]
fn contents_and_raw_contents_together_are_refused() {
    let spec = text_model();
    let mut request = text_request(&[b"x"]);
    request.inputs[0].contents = Some(pb::InferTensorContents {
        bytes_contents: vec![b"y".to_vec()],
        ..Default::default()
    });
    let message = refusal(&spec, request);
    assert!(
        message.contains("contents field must not be specified when using raw_input_contents"),
        "{message}"
    );
}
