//! gRPC `ModelInfer`: the bytes are a `ModelInferRequest` protobuf, decoded
//! with prost as tonic decodes it, then checked and converted as the
//! inference role does (`validate.rs`: raw contents or typed contents
//! against the model's inputs) for one of two models, picked by the first
//! byte: a batching one (FP32 `[-1, 4]`, INT64 `[-1, -1]`, BYTES `[-1, 1]`)
//! and a non-batching one (FP16 `[2, 2]`, BOOL `[-1]`, UINT8 `[3]`).
//! Checked: no panic (an error is fine); a decoded request re-encodes; a
//! validated input holds exactly its shape's bytes or BYTES elements, and,
//! batched, splits by rows (`tensor.rs`) back into the same bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mlserve_common::datatype::{element_count, split_bytes_elements};
use mlserve_common::DataType;
use mlserve_inference::model_config::{resolve, ModelConfigFile, ModelSpec, OnnxSignature};
use mlserve_inference::tensor::split_rows;
use mlserve_inference::validate::validate;
use mlserve_proto::pb;
use prost::Message;

fn spec(inputs: &[(&str, DataType, &[i64])]) -> ModelSpec {
    let onnx = OnnxSignature {
        inputs: inputs
            .iter()
            .map(|(n, t, s)| (n.to_string(), *t, s.to_vec()))
            .collect(),
        outputs: vec![("OUTPUT0".into(), DataType::Fp32, inputs[0].2.to_vec())],
    };
    resolve("m", &ModelConfigFile::default(), &onnx, 16).expect("the fuzz models resolve")
}

fn specs() -> &'static [ModelSpec; 2] {
    static SPECS: OnceLock<[ModelSpec; 2]> = OnceLock::new();
    SPECS.get_or_init(|| {
        [
            spec(&[
                ("INPUT0", DataType::Fp32, &[-1, 4]),
                ("INPUT1", DataType::Int64, &[-1, -1]),
                ("TEXT", DataType::Bytes, &[-1, 1]),
            ]),
            spec(&[
                ("HALF", DataType::Fp16, &[2, 2]),
                ("FLAGS", DataType::Bool, &[-1]),
                ("PIXELS", DataType::Uint8, &[3]),
            ]),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, wire)) = data.split_first() else {
        return;
    };
    let Ok(mut request) = pb::ModelInferRequest::decode(wire) else {
        return;
    };
    mlserve_fuzz::assert_reencodes(&request);
    let spec = &specs()[usize::from(pick & 1)];
    let Ok(validated) = validate(spec, &mut request) else {
        return;
    };
    let rows = validated.inputs.rows;
    for (tensor, input) in validated.inputs.tensors.iter().zip(&spec.inputs) {
        let count = element_count(&tensor.shape).expect("a validated shape has a count");
        match input.datatype.element_size() {
            Some(size) => assert_eq!(Some(tensor.data.len()), count.checked_mul(size)),
            None => assert_eq!(
                split_bytes_elements(&tensor.data).map(|e| e.len()),
                Ok(count)
            ),
        }
        if spec.max_batch_size == 0 {
            continue;
        }
        let split = if rows >= 2 {
            vec![1, rows - 1]
        } else {
            vec![rows]
        };
        let parts = split_rows(
            &input.name,
            input.datatype,
            &tensor.shape,
            &tensor.data,
            &split,
        )
        .expect("a validated input splits by rows");
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        assert_eq!(joined, tensor.data, "input '{}' split by rows", input.name);
    }
});
