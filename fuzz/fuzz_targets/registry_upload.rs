//! The registry's version upload (`registry/src/http/upload.rs`): the axum
//! `Multipart` extractor (multer) over the request, then the handler's reader
//! (`read_parts`: the `metadata` JSON part, then `file` parts streamed as
//! `UploadItem`s), through `mlserve_registry::http::decode_upload`. Input:
//! a selector byte, then the body. The selector's low 3 bits pick the
//! `Content-Type` (boundary `XyZ` plain, quoted, after another parameter or
//! in capitals; `multipart/mixed`, JSON, none, or the body's first line up to
//! a newline); its high 5 bits the size of the pieces the body arrives in
//! (0: whole). Checked: no panic; the metadata is answered (never the
//! handler's "reader ended early"); no item follows a refused metadata;
//! every `Chunk` follows a `File` (or a `Chunk`); a `File` carries the
//! metadata's sha256 for its path; the chunks never hold more bytes than the
//! body; every error is a 400, the last item unless an unexpected part's
//! (whose `File` follows).
#![no_main]

use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mlserve_fuzz::{pieces, Selector};
use mlserve_proto::registry::UploadItem;
use mlserve_proto::{ErrorCode, ServiceError};
use mlserve_registry::http::decode_upload;

/// Where the request's `Content-Type` comes from.
#[derive(Clone, Copy)]
enum ContentType {
    Fixed(&'static str),
    Missing,
    /// The body's first line, up to a newline.
    FirstLine,
}

const CONTENT_TYPES: [ContentType; 8] = [
    ContentType::Fixed("multipart/form-data; boundary=XyZ"),
    ContentType::Fixed("multipart/form-data; boundary=\"XyZ\""),
    ContentType::Fixed("multipart/form-data; charset=utf-8; boundary=XyZ"),
    ContentType::Fixed("MULTIPART/FORM-DATA; BOUNDARY=XyZ"),
    ContentType::Fixed("multipart/mixed; boundary=XyZ"),
    ContentType::Fixed("application/json"),
    ContentType::Missing,
    ContentType::FirstLine,
];

/// A refused upload is a 400, or a 413 past the metadata or framing limits
/// (`upload_bounds`: megabytes, beyond what libFuzzer's inputs reach).
fn assert_bad_request(err: &ServiceError) {
    assert!(
        matches!(err.code, ErrorCode::BadRequest | ErrorCode::PayloadTooLarge),
        "{err}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((mut pick, mut body)) = Selector::split(data) else {
        return;
    };
    let content_type = match *pick.choose(&CONTENT_TYPES) {
        ContentType::Fixed(value) => Some(value),
        ContentType::Missing => None,
        ContentType::FirstLine => {
            let Some(newline) = body.iter().position(|&b| b == b'\n') else {
                return;
            };
            let Ok(line) = std::str::from_utf8(&body[..newline]) else {
                return;
            };
            body = &body[newline + 1..];
            Some(line)
        }
    };
    let step = usize::from(pick.bits(5));
    let body = Bytes::copy_from_slice(body);
    let mut request = http::Request::builder().method("POST").uri("/");
    if let Some(content_type) = content_type {
        if http::HeaderValue::from_str(content_type).is_err() {
            return;
        }
        request = request.header(http::header::CONTENT_TYPE, content_type);
    }
    let stream =
        futures_util::stream::iter(pieces(&body, step).into_iter().map(Ok::<_, Infallible>));
    let request = request.body(Body::from_stream(stream)).expect("a request");

    let (metadata, items) = mlserve_fuzz::block_on(decode_upload(request));
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(err) => {
            assert_bad_request(&err);
            assert!(
                items.is_empty(),
                "items after a refused metadata: {items:?}"
            );
            return;
        }
    };
    let mut in_file = false;
    let mut chunk_bytes = 0usize;
    for (i, item) in items.iter().enumerate() {
        match item {
            Ok(UploadItem::File(header)) => {
                in_file = true;
                let expected = metadata.sha256.get(&header.path).map_or("", String::as_str);
                assert_eq!(header.sha256, expected, "sha256 of '{}'", header.path);
            }
            Ok(UploadItem::Chunk(chunk)) => {
                assert!(in_file, "item {i}: a chunk before any file: {items:?}");
                chunk_bytes += chunk.len();
            }
            Err(err) => {
                assert_bad_request(err);
                in_file = false;
                if i + 1 < items.len() {
                    assert!(
                        err.message.starts_with("unexpected part")
                            && matches!(items[i + 1], Ok(UploadItem::File(_))),
                        "item {i}: an error not last: {items:?}"
                    );
                }
            }
        }
    }
    assert!(
        chunk_bytes <= body.len(),
        "{chunk_bytes} chunk bytes from a {}-byte body",
        body.len()
    );
});
