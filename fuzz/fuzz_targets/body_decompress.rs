//! gzip and deflate request bodies (`body.rs`): the bounded decompression
//! every v2 handler applies, bombs included. The first byte picks the
//! `Content-Encoding` (gzip, x-gzip, deflate: zlib or bare, identity, none,
//! an unknown coding) and the limit (1 KiB to 128 KiB); the rest is the body.
//! Checked: no panic; an accepted body never inflates past the limit; an
//! uncoded body comes back unchanged; a refusal is a 400 or a 413.
#![no_main]

use bytes::Bytes;
use http::header::CONTENT_ENCODING;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mlserve_proto::http::decode_body;
use mlserve_proto::ErrorCode;

const CODINGS: [Option<&str>; 6] = [
    Some("gzip"),
    Some("x-gzip"),
    Some("deflate"),
    Some("identity"),
    None,
    Some("br"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let coding = CODINGS[usize::from(pick & 7) % CODINGS.len()];
    let limit = 1024usize << (pick >> 5 & 7).min(10);
    let mut headers = HeaderMap::new();
    if let Some(coding) = coding {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    match decode_body(&headers, Bytes::copy_from_slice(body), limit) {
        Ok(out) => {
            if matches!(coding, None | Some("identity")) {
                assert_eq!(&out[..], body);
            } else {
                assert!(
                    out.len() <= limit,
                    "{} bytes past the limit {limit}",
                    out.len()
                );
            }
        }
        Err(err) => assert!(
            matches!(err.code, ErrorCode::BadRequest | ErrorCode::PayloadTooLarge),
            "{err:?}"
        ),
    }
});
