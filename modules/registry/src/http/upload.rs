//! `POST /v1/registry/models/{name}/versions`: a multipart upload turned
//! into the service's upload stream by a reader task. When the service
//! refuses the upload early (too large, bad file), the reader drains what the
//! client still sends (up to a cap) so the client reads the error instead of
//! a reset connection.

use std::collections::HashMap;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use mlserve_proto::registry::{pb, RegistryCalls, RegistryClient, UploadItem};
use mlserve_proto::{CallContext, ServiceError, ServiceResult};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::{json_response, param, path_params, views, ApiResult, Params};

/// Most bytes drained from a refused upload before the connection is dropped.
const DRAIN_CAP_BYTES: u64 = 256 * 1024 * 1024;

type Metadata = ServiceResult<views::UploadMetadata>;

fn multipart_error(err: axum::extract::multipart::MultipartError) -> ServiceError {
    ServiceError::bad_request(format!("invalid multipart upload: {}", err.body_text()))
}

/// Reads the parts; sends the metadata once, then files and chunks.
async fn read_parts(
    mut multipart: Multipart,
    metadata_tx: oneshot::Sender<Metadata>,
    tx: mpsc::Sender<ServiceResult<UploadItem>>,
) {
    let mut metadata_tx = Some(metadata_tx);
    let mut sha256: HashMap<String, String> = HashMap::new();
    let mut open = true;
    let mut drained = 0u64;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => {
                let err = multipart_error(err);
                match metadata_tx.take() {
                    Some(m) => drop(m.send(Err(err))),
                    None => drop(tx.send(Err(err)).await),
                }
                return;
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        if let Some(m) = metadata_tx.take() {
            if name == "metadata" {
                let metadata = match field.bytes().await {
                    Ok(bytes) => {
                        serde_json::from_slice::<views::UploadMetadata>(&bytes).map_err(|e| {
                            ServiceError::bad_request(format!("invalid metadata part: {e}"))
                        })
                    }
                    Err(err) => Err(multipart_error(err)),
                };
                if let Ok(metadata) = &metadata {
                    sha256 = metadata.sha256.clone();
                }
                let failed = metadata.is_err();
                let _ = m.send(metadata);
                if failed {
                    return;
                }
                continue;
            }
            let _ = m.send(Ok(views::UploadMetadata::default()));
        }
        if name != "file" && open {
            let err = ServiceError::bad_request(format!(
                "unexpected part '{name}': send 'metadata' first, then 'file' parts"
            ));
            open = tx.send(Err(err)).await.is_ok();
        }
        if open {
            let path = field.file_name().unwrap_or_default().to_string();
            let header = pb::FileHeader {
                sha256: sha256.get(&path).cloned().unwrap_or_default(),
                path,
            };
            open = tx.send(Ok(UploadItem::File(header))).await.is_ok();
        }
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) if open => {
                    open = tx.send(Ok(UploadItem::Chunk(chunk))).await.is_ok();
                }
                Ok(Some(chunk)) => {
                    drained += chunk.len() as u64;
                    if drained > DRAIN_CAP_BYTES {
                        return;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    if open {
                        let _ = tx.send(Err(multipart_error(err))).await;
                    }
                    return;
                }
            }
        }
    }
    if let Some(m) = metadata_tx.take() {
        let _ = m.send(Ok(views::UploadMetadata::default()));
    }
}

pub(super) async fn create_version(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    let p = path_params(params)?;
    let multipart = multipart.map_err(|e| {
        ServiceError::bad_request(format!(
            "a version upload is multipart/form-data: {}",
            e.body_text()
        ))
    })?;
    let (metadata_tx, metadata_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(4);
    let reader = tokio::spawn(read_parts(multipart, metadata_tx, tx));
    let metadata = metadata_rx
        .await
        .map_err(|_| ServiceError::internal("upload reader ended early"))??;
    let request = pb::CreateVersionRequest {
        name: param(&p, "name"),
        description: metadata.description,
        lineage: Some(pb::Lineage {
            training_run: metadata.lineage.training_run,
            dataset_snapshot: metadata.lineage.dataset_snapshot,
            code_version: metadata.lineage.code_version,
        }),
        metrics: metadata.metrics,
        tags: metadata.tags,
        created_by: String::new(),
    };
    let result = service
        .upload(ctx, request, Box::pin(ReceiverStream::new(rx)))
        .await;
    if result.is_err() {
        // Let the reader drain the rest of the body first.
        let _ = reader.await;
    }
    Ok(json_response(StatusCode::CREATED, views::version(&result?)))
}
