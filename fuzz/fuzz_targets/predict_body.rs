//! The gateway's predict body (`predict.rs`): `multipart/form-data`
//! (parsed by multer: `image` parts, `text` and `row` fields) or JSON
//! (`rows`/`instances`, base64 `images`, `texts`). Input: the
//! `Content-Type` value, a newline, then the body. Checked: no panic (a
//! 400 is fine); what is decoded is what the features role gets: every
//! row is a JSON object.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mlserve_gateway::predict::transform_request;

fuzz_target!(|data: &[u8]| {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(content_type) = std::str::from_utf8(&data[..newline]) else {
        return;
    };
    let body = Bytes::copy_from_slice(&data[newline + 1..]);
    let Ok(request) = mlserve_fuzz::block_on(transform_request(content_type, body)) else {
        return;
    };
    if !content_type.starts_with("multipart/form-data") {
        for row in &request.rows_json {
            let row: serde_json::Value = serde_json::from_str(row).expect("a row re-parses");
            assert!(row.is_object(), "{row}");
        }
    }
});
