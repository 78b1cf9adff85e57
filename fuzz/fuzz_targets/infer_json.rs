//! The v2 JSON inference request (`POST /v2/models/{m}/infer` without
//! `Inference-Header-Content-Length`): the body is parsed as the handler
//! parses it (`infer_request.rs`, the data converted by `json_input.rs`).
//! Checked: no panic (a 400 is fine); a decoded request re-encodes as
//! protobuf; every input's raw data has exactly the bytes (or BYTES
//! elements) its shape and datatype need.
#![no_main]

use bytes::Bytes;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use mlserve_proto::http::decode_infer_body;
use mlserve_proto::pb;

fuzz_target!(|data: &[u8]| {
    let metadata = pb::ModelMetadataResponse::default();
    let body = Bytes::copy_from_slice(data);
    if let Ok(request) = decode_infer_body(&HeaderMap::new(), body, &metadata) {
        mlserve_fuzz::assert_request_consistent(&request, true);
    }
});
