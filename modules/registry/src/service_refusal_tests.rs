//! The uploads the registry refuses: each names the problem and leaves no
//! version behind (part of the service suite, local and over gRPC).

use bytes::Bytes;
use mlserve_proto::registry::{
    pb, RegistryCalls, RegistryClient, RegistryService, UploadItem, UploadStream,
};
use mlserve_proto::{ErrorCode, ServiceError};

use super::{files, header};
use crate::testing::{ctx, onnx_bytes};

/// A file of an upload: path, bytes, expected sha256 ("" = none).
type FileSpec<'a> = (&'a str, &'a [u8], &'a str);

async fn refused(
    client: &RegistryClient,
    name: &str,
    list: &[(&str, &[u8], &str)],
) -> ServiceError {
    client
        .upload(ctx(), header(name), files(list))
        .await
        .expect_err("upload accepted")
}

/// Every refusal, on a client whose `resnet` has exactly version 1.
pub(super) async fn refused_uploads_leave_nothing(client: &RegistryClient) {
    // Refusals: each names the problem and leaves no version behind.
    let plain = onnx_bytes(None);
    let zeros = "0".repeat(64);
    let escaping = onnx_bytes(Some("../../etc/passwd"));
    let dangling = onnx_bytes(Some("missing.bin"));
    let big = vec![1u8; 1024 * 1024 + 1];
    let cases: Vec<(Vec<FileSpec>, ErrorCode, &str)> = vec![
        (
            vec![("model.onnx", &plain, &zeros)],
            ErrorCode::BadRequest,
            "checksum mismatch",
        ),
        (
            vec![("model.onnx", b"garbage bytes", "")],
            ErrorCode::BadRequest,
            "not a valid ONNX model",
        ),
        (
            vec![("model.onnx", &plain, ""), ("../x.bin", b"x", "")],
            ErrorCode::BadRequest,
            "path traversal",
        ),
        (
            vec![("model.onnx", &escaping, "")],
            ErrorCode::BadRequest,
            "escapes the version",
        ),
        (
            vec![("model.onnx", &dangling, "")],
            ErrorCode::BadRequest,
            "not part of the upload",
        ),
        (
            vec![("model.onnx", &plain, ""), ("model.pkl", b"x", "")],
            ErrorCode::BadRequest,
            "pickle",
        ),
        (
            vec![
                ("model.onnx", &plain, ""),
                ("data.bin", b"\x80\x04\x95....", ""),
            ],
            ErrorCode::BadRequest,
            "pickle",
        ),
        (
            vec![
                ("model.onnx", &plain, ""),
                ("tool", b"\x7fELF\x02\x01\x01", ""),
            ],
            ErrorCode::BadRequest,
            "ELF",
        ),
        (
            vec![("model.onnx", &plain, ""), ("run", b"#!/bin/sh\n", "")],
            ErrorCode::BadRequest,
            "shebang",
        ),
        (
            vec![("model.onnx", &plain, ""), ("w.tar.gz", b"\x1f\x8b", "")],
            ErrorCode::BadRequest,
            "archives",
        ),
        (
            vec![("labels.txt", b"a", "")],
            ErrorCode::BadRequest,
            "must contain 'model.onnx'",
        ),
        (
            vec![("model.onnx", &plain, ""), ("model.onnx", &plain, "")],
            ErrorCode::BadRequest,
            "appears twice",
        ),
        (
            vec![("model.onnx", &plain, ""), ("big.bin", &big, "")],
            ErrorCode::PayloadTooLarge,
            "exceeds the limit",
        ),
    ];
    for (list, code, text) in cases {
        let err = refused(client, "resnet", &list).await;
        assert_eq!(err.code, code, "{text}: {}", err.message);
        assert!(
            err.message.contains(text),
            "expected '{text}' in '{}'",
            err.message
        );
    }
    let err = client
        .upload(ctx(), header("nope"), files(&[("model.onnx", &plain, "")]))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    // A failing client stream aborts the upload instead of ending it short.
    let broken: UploadStream = Box::pin(tokio_stream::iter(vec![
        Ok(UploadItem::File(pb::FileHeader {
            path: "model.onnx".into(),
            sha256: String::new(),
        })),
        Ok(UploadItem::Chunk(Bytes::from(plain.clone()))),
        Err(ServiceError::unavailable("client disk failed")),
    ]));
    let err = client
        .upload(ctx(), header("resnet"), broken)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{}", err.message);
    let listed = client
        .list_versions(
            ctx(),
            pb::ListVersionsRequest {
                name: "resnet".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        listed
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [1]
    );
}
