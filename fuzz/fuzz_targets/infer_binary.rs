//! The binary tensor extension: an infer body split by
//! `Inference-Header-Content-Length` into a JSON header and binary data
//! (per-input `binary_data_size`), or, with length 0, one raw input.
//! Input: the header's value, a newline, then the body. The raw case
//! decodes against one of three single-input models (FP32 `[-1, -1]`,
//! INT8 `[2, -1, 3]`, BYTES `[-1]`), picked by the body's length mod 3.
//! Checked: no panic (a 400 is fine); a decoded request re-encodes, and every
//! fixed-size input holds exactly the bytes its shape needs.
#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mlserve_proto::http::decode_infer_body;
use mlserve_proto::pb;
use pb::model_metadata_response::TensorMetadata;

fn single_input(datatype: &str, shape: &[i64]) -> pb::ModelMetadataResponse {
    pb::ModelMetadataResponse {
        name: "m".into(),
        inputs: vec![TensorMetadata {
            name: "INPUT0".into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        }],
        ..Default::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(value) = HeaderValue::from_bytes(&data[..newline]) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("inference-header-content-length", value);
    let body = Bytes::copy_from_slice(&data[newline + 1..]);
    let metadata = match body.len() % 3 {
        0 => single_input("FP32", &[-1, -1]),
        1 => single_input("INT8", &[2, -1, 3]),
        _ => single_input("BYTES", &[-1]),
    };
    if let Ok(request) = decode_infer_body(&headers, body, &metadata) {
        mlserve_fuzz::assert_request_consistent(&request, false);
    }
});
