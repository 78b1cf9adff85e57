//! Triton's `config.pbtxt` (`pbtxt.rs`): the text format (first byte even)
//! or its JSON form (odd) read into mlserve's model config, which is then
//! resolved against a fixed ONNX signature (FP32 `[-1, 4]` in, FP32
//! `[-1, 2]` out) as a model load does. Checked: no panic; a refusal maps
//! to an error code; a resolved model keeps every input and output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlserve_common::DataType;
use mlserve_inference::model_config::{resolve, OnnxSignature};
use mlserve_inference::pbtxt;

fuzz_target!(|data: &[u8]| {
    let Some((pick, text)) = mlserve_fuzz::selector_and_text(data) else {
        return;
    };
    let parsed = if pick & 1 == 0 {
        pbtxt::parse(text)
    } else {
        pbtxt::parse_json(text)
    };
    let config = match parsed {
        Ok(config) => config,
        Err(err) => {
            let _ = err.code();
            return;
        }
    };
    let onnx = OnnxSignature {
        inputs: vec![("INPUT0".into(), DataType::Fp32, vec![-1, 4])],
        outputs: vec![("OUTPUT0".into(), DataType::Fp32, vec![-1, 2])],
    };
    if let Ok(spec) = resolve("m", &config, &onnx, 16) {
        assert_eq!(spec.inputs.len(), 1);
        assert_eq!(spec.outputs.len(), 1);
        let _ = spec.version_policy.select(&[1, 2, 3]);
    }
});
