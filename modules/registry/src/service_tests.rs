//! One suite over the [`RegistryService`] trait, run against the local
//! implementation and through gRPC (server adapter + remote client), on
//! SQLite with a local directory and on PostgreSQL with a real S3 server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mlserve_proto::registry::{
    pb, registry_grpc_server, RegistryCalls, RegistryClient, RegistryService, UploadItem,
    UploadStream,
};
use mlserve_proto::rpc::{GrpcOptions, DEFAULT_MAX_MESSAGE_BYTES};
use mlserve_proto::ErrorCode;
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::testing::{ctx, local_registry, onnx_bytes, postgres_s3_registry, S3Server};
use crate::LocalRegistry;

#[path = "service_refusal_tests.rs"]
mod refusals;

async fn over_grpc(local: Arc<LocalRegistry>) -> RegistryClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(registry_grpc_server(local, DEFAULT_MAX_MESSAGE_BYTES))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let options = GrpcOptions {
        connect_timeout: Duration::from_secs(5),
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        ..GrpcOptions::default()
    };
    let client = RegistryClient::connect_lazy(&format!("http://{addr}"), &options).unwrap();
    assert!(client.is_remote());
    client
}

/// Files as an upload stream, cut into 1000-byte chunks.
pub(super) fn files(list: &[(&str, &[u8], &str)]) -> UploadStream {
    let mut items = Vec::new();
    for (path, bytes, sha) in list {
        items.push(Ok(UploadItem::File(pb::FileHeader {
            path: path.to_string(),
            sha256: sha.to_string(),
        })));
        for chunk in bytes.chunks(1000) {
            items.push(Ok(UploadItem::Chunk(Bytes::copy_from_slice(chunk))));
        }
    }
    Box::pin(tokio_stream::iter(items))
}

pub(super) fn header(name: &str) -> pb::CreateVersionRequest {
    pb::CreateVersionRequest {
        name: name.into(),
        created_by: "ci".into(),
        metrics: [("accuracy".to_string(), 0.93)].into_iter().collect(),
        lineage: Some(pb::Lineage {
            training_run: "run-7".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) async fn download(
    client: &RegistryClient,
    name: &str,
    version: u64,
    path: &str,
) -> Vec<u8> {
    let (file, mut stream) = client
        .download_file(ctx(), name, version, path)
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out.len() as u64, file.size);
    assert_eq!(hex::encode(Sha256::digest(&out)), file.sha256);
    out
}

fn alias_request(alias: &str) -> pb::GetAliasRequest {
    pb::GetAliasRequest {
        name: "resnet".into(),
        alias: alias.into(),
    }
}

async fn suite(client: &RegistryClient) {
    let model = pb::CreateModelRequest {
        name: "resnet".into(),
        description: "vision".into(),
        tags: [("team".to_string(), "cv".to_string())]
            .into_iter()
            .collect(),
    };
    client.create_model(ctx(), model.clone()).await.unwrap();
    assert_eq!(
        client.create_model(ctx(), model).await.unwrap_err().code,
        ErrorCode::Conflict
    );
    let bad_name = pb::CreateModelRequest {
        name: "../etc".into(),
        ..Default::default()
    };
    let err = client.create_model(ctx(), bad_name).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(
        err.message.contains("invalid model name"),
        "{}",
        err.message
    );

    // A version with external data, its sha256 given and verified.
    let onnx = onnx_bytes(Some("weights.bin"));
    let weights = vec![7u8; 5000];
    let sha = hex::encode(Sha256::digest(&weights));
    let v1 = client
        .upload(
            ctx(),
            header("resnet"),
            files(&[
                ("model.onnx", &onnx, ""),
                ("weights.bin", &weights, &sha),
                ("labels.txt", b"cat\ndog\n", ""),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.status(), pb::VersionStatus::Ready);
    assert_eq!(v1.files.len(), 3);
    assert_eq!(v1.created_by, "ci");
    assert_eq!(v1.lineage.clone().unwrap().training_run, "run-7");
    assert_eq!(download(client, "resnet", 1, "weights.bin").await, weights);
    assert_eq!(download(client, "resnet", 1, "model.onnx").await, onnx);

    refusals::refused_uploads_leave_nothing(client).await;
    let plain = onnx_bytes(None);

    let v2 = client
        .upload(
            ctx(),
            header("resnet"),
            files(&[("model.onnx", &plain, "")]),
        )
        .await
        .unwrap();
    assert_eq!(
        v2.version, 2,
        "the refused uploads before it spent no number"
    );
    assert_eq!(
        client
            .get_version(
                ctx(),
                pb::GetVersionRequest {
                    name: "resnet".into(),
                    version: 3,
                },
            )
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    assert_eq!(
        client
            .get_model(
                ctx(),
                pb::GetModelRequest {
                    name: "resnet".into(),
                },
            )
            .await
            .unwrap()
            .latest_version,
        v2.version
    );
    let page = client
        .list_versions(
            ctx(),
            pb::ListVersionsRequest {
                name: "resnet".into(),
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.versions[0].version, v2.version);
    let next = client
        .list_versions(
            ctx(),
            pb::ListVersionsRequest {
                name: "resnet".into(),
                limit: 1,
                page_token: page.next_page_token,
            },
        )
        .await
        .unwrap();
    assert_eq!(next.versions[0].version, 1);
    assert!(next.next_page_token.is_empty());
    let updated = client
        .update_version(
            ctx(),
            pb::UpdateVersionRequest {
                name: "resnet".into(),
                version: 1,
                description: Some("baseline".into()),
                set_tags: [("approved".to_string(), "yes".to_string())]
                    .into_iter()
                    .collect(),
                remove_tags: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.description, "baseline");
    assert_eq!(
        download(client, "resnet", 1, "labels.txt").await,
        b"cat\ndog\n"
    );
    let err = client
        .download_file(ctx(), "resnet", 1, "nope.txt")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::NotFound);

    // Aliases and their history.
    let set = |alias: &str, version: u64, actor: &str| pb::SetAliasRequest {
        name: "resnet".into(),
        alias: alias.into(),
        version,
        actor: actor.into(),
    };
    let err = client
        .set_alias(ctx(), set("production", 99, "ann"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(
        err.message.contains("no such ready version"),
        "{}",
        err.message
    );
    client
        .set_alias(ctx(), set("production", 1, "ann"))
        .await
        .unwrap();
    let moved = client
        .set_alias(ctx(), set("production", v2.version, "bob"))
        .await
        .unwrap();
    assert_eq!((moved.from_version, moved.to_version), (1, v2.version));
    assert_eq!(
        client
            .resolve(ctx(), "resnet", "production")
            .await
            .unwrap()
            .version,
        v2.version
    );
    assert_eq!(
        client
            .get_alias(ctx(), alias_request("production"))
            .await
            .unwrap()
            .updated_by,
        "bob"
    );
    client
        .set_alias(ctx(), set("staging", 1, ""))
        .await
        .unwrap();
    assert_eq!(
        client
            .list_aliases(
                ctx(),
                pb::ListAliasesRequest {
                    name: "resnet".into(),
                },
            )
            .await
            .unwrap()
            .aliases
            .len(),
        2
    );
    let deleted = client
        .delete_alias(
            ctx(),
            pb::DeleteAliasRequest {
                name: "resnet".into(),
                alias: "staging".into(),
                actor: "cy".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!((deleted.from_version, deleted.to_version), (1, 0));
    assert_eq!(
        client
            .get_alias(ctx(), alias_request("staging"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    let history = client
        .alias_history(
            ctx(),
            pb::AliasHistoryRequest {
                name: "resnet".into(),
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(history.moves.len(), 2);
    let rest = client
        .alias_history(
            ctx(),
            pb::AliasHistoryRequest {
                name: "resnet".into(),
                page_token: history.next_page_token,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.moves.len(), 2);
    assert_eq!(rest.moves[0].actor, "anonymous");
    assert_eq!(rest.moves[1].actor, "cy");

    // Search, update, delete.
    client
        .create_model(
            ctx(),
            pb::CreateModelRequest {
                name: "bert".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let found = client
        .list_models(
            ctx(),
            pb::ListModelsRequest {
                query: "VISION".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(found.models.len(), 1);
    assert_eq!(found.models[0].aliases["production"], v2.version);
    let first = client
        .list_models(
            ctx(),
            pb::ListModelsRequest {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.models[0].name, "bert");
    assert_eq!(first.next_page_token, "bert");
    let model = client
        .update_model(
            ctx(),
            pb::UpdateModelRequest {
                name: "bert".into(),
                description: Some("text".into()),
                set_tags: [("lang".to_string(), "en".to_string())]
                    .into_iter()
                    .collect(),
                remove_tags: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(model.tags["lang"], "en");
    client
        .delete_model(
            ctx(),
            pb::DeleteModelRequest {
                name: "resnet".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .get_model(
                ctx(),
                pb::GetModelRequest {
                    name: "resnet".into(),
                },
            )
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    assert_eq!(
        client
            .download_file(ctx(), "resnet", 1, "model.onnx")
            .await
            .err()
            .unwrap()
            .code,
        ErrorCode::NotFound
    );
}

async fn no_objects_left(artifacts: &crate::artifacts::Artifacts) {
    let left = artifacts.list("models/").await.unwrap();
    assert!(left.is_empty(), "objects left behind: {left:?}");
}

#[tokio::test]
async fn local_and_grpc_on_sqlite_and_local_files() {
    let (local, artifacts, dir) = local_registry().await;
    suite(&RegistryClient::from_arc(local.clone())).await;
    no_objects_left(&artifacts).await;
    let (local, artifacts, dir2) = local_registry().await;
    suite(&over_grpc(local).await).await;
    no_objects_left(&artifacts).await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}

#[tokio::test]
async fn local_and_grpc_on_postgres_and_s3() {
    let s3 = S3Server::start();
    let (local, artifacts) = postgres_s3_registry(&s3, "local").await;
    suite(&RegistryClient::from_arc(local)).await;
    no_objects_left(&artifacts).await;
    let (local, artifacts) = postgres_s3_registry(&s3, "grpc").await;
    suite(&over_grpc(local).await).await;
    no_objects_left(&artifacts).await;
}
