//! `POST /v1/registry/models/{name}/versions`: a multipart upload turned
//! into the service's upload stream by a reader task. When the service
//! refuses the upload early (too large, bad file), the reader drains what the
//! client still sends (up to a cap) so the client reads the error instead of
//! a reset connection.
//!
//! [`decode_upload`] runs the same reader over a request without a service
//! (the `registry_upload` fuzz target).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use mlserve_proto::registry::{pb, RegistryCalls, RegistryClient, UploadItem};
use mlserve_proto::{CallContext, ServiceError, ServiceResult};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::upload_bounds::{bounded_body, read_metadata, Framing};
use super::{json_response, param, path_params, views, ApiResult, Params};

/// Most bytes drained from a refused upload before the connection is dropped.
const DRAIN_CAP_BYTES: u64 = 256 * 1024 * 1024;

type Metadata = ServiceResult<views::UploadMetadata>;

fn multipart_error(err: axum::extract::multipart::MultipartError) -> ServiceError {
    ServiceError::bad_request(format!("invalid multipart upload: {}", err.body_text()))
}

/// The upload's multipart reader over `request`'s body, bounded
/// (`upload_bounds`), or the 400 refusing a body that is not
/// `multipart/form-data` with a boundary.
async fn upload_multipart(request: Request) -> ServiceResult<(Multipart, Arc<Framing>)> {
    let framing = Arc::new(Framing::default());
    let (parts, body) = request.into_parts();
    let request = Request::from_parts(parts, bounded_body(body, framing.clone()));
    let multipart = Multipart::from_request(request, &()).await.map_err(|e| {
        ServiceError::bad_request(format!(
            "a version upload is multipart/form-data: {}",
            e.body_text()
        ))
    })?;
    Ok((multipart, framing))
}

/// The metadata the reader answered; a reader that ended without answering
/// is an internal error.
fn metadata_answer(answer: Result<Metadata, oneshot::error::RecvError>) -> Metadata {
    answer.unwrap_or_else(|_| Err(ServiceError::internal("upload reader ended early")))
}

/// Decodes a version upload as [`create_version`] does, without a service:
/// the multipart extractor over `request` (its `Content-Type` and body), then
/// the handler's reader. Returns the metadata answer (a refused body's 400,
/// the reader's answer, or the handler's internal error when it gave none)
/// and every item the reader sent after it, read to the end.
pub async fn decode_upload(request: Request) -> (Metadata, Vec<ServiceResult<UploadItem>>) {
    let (multipart, framing) = match upload_multipart(request).await {
        Ok(bounded) => bounded,
        Err(err) => return (Err(err), Vec::new()),
    };
    let (metadata_tx, metadata_rx) = oneshot::channel();
    let (tx, mut rx) = mpsc::channel(4);
    let collect = async {
        let metadata = metadata_answer(metadata_rx.await);
        let mut items = Vec::new();
        while let Some(item) = rx.recv().await {
            items.push(item);
        }
        (metadata, items)
    };
    let ((), decoded) =
        futures_util::future::join(read_parts(multipart, framing, metadata_tx, tx), collect).await;
    decoded
}

/// Reads the parts; sends the metadata once, then files and chunks.
async fn read_parts(
    mut multipart: Multipart,
    framing: Arc<Framing>,
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
                let err = framing.error_or(multipart_error(err));
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
                let metadata = match read_metadata(&mut field, &framing, multipart_error).await {
                    Ok(bytes) => {
                        serde_json::from_slice::<views::UploadMetadata>(&bytes).map_err(|e| {
                            ServiceError::bad_request(format!("invalid metadata part: {e}"))
                        })
                    }
                    Err(err) => Err(err),
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
            let chunk = field.chunk().await;
            if let Ok(Some(chunk)) = &chunk {
                framing.consumed(chunk.len());
            }
            match chunk {
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
                        let _ = tx.send(Err(framing.error_or(multipart_error(err)))).await;
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
    request: Request,
) -> ApiResult {
    let p = path_params(params)?;
    let (multipart, framing) = upload_multipart(request).await?;
    let (metadata_tx, metadata_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(4);
    let reader = tokio::spawn(read_parts(multipart, framing, metadata_tx, tx));
    let metadata = metadata_answer(metadata_rx.await)?;
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header::CONTENT_TYPE;
    use mlserve_proto::ErrorCode;

    use super::*;

    const CONTENT_TYPE_XYZ: &str = "multipart/form-data; boundary=XyZ";

    fn request(content_type: Option<&str>, body: &'static [u8]) -> Request {
        let mut request = axum::http::Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).unwrap()
    }

    /// The items with adjacent chunks joined and empty ones left out (multer
    /// may split a part's bytes, and answers an empty part with one empty
    /// chunk).
    fn joined(items: Vec<ServiceResult<UploadItem>>) -> Vec<ServiceResult<UploadItem>> {
        let mut out: Vec<ServiceResult<UploadItem>> = Vec::new();
        for item in items {
            if matches!(&item, Ok(UploadItem::Chunk(chunk)) if chunk.is_empty()) {
                continue;
            }
            if let (Some(Ok(UploadItem::Chunk(last))), Ok(UploadItem::Chunk(next))) =
                (out.last_mut(), &item)
            {
                *last = [last.as_ref(), next.as_ref()].concat().into();
                continue;
            }
            out.push(item);
        }
        out
    }

    #[tokio::test]
    async fn an_upload_decodes_to_its_metadata_then_files_and_chunks() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n\
            {\"description\":\"d\",\"sha256\":{\"m.onnx\":\"ab\"}}\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.onnx\"\r\n\r\n\
            hello\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.txt\"\r\n\r\n\
            \r\n--XyZ--\r\n";
        let (metadata, items) = decode_upload(request(Some(CONTENT_TYPE_XYZ), body)).await;
        assert_eq!(metadata.unwrap().description, "d");
        let file = |path: &str, sha256: &str| {
            Ok(UploadItem::File(pb::FileHeader {
                path: path.into(),
                sha256: sha256.into(),
            }))
        };
        assert_eq!(
            joined(items),
            vec![
                file("m.onnx", "ab"),
                Ok(UploadItem::Chunk("hello".into())),
                file("b.txt", ""),
            ]
        );
    }

    #[tokio::test]
    async fn an_upload_that_is_not_multipart_is_a_400_before_any_item() {
        for content_type in [None, Some("application/json"), Some("multipart/form-data")] {
            let (metadata, items) = decode_upload(request(content_type, b"{}")).await;
            assert_eq!(metadata.unwrap_err().code, ErrorCode::BadRequest);
            assert!(items.is_empty());
        }
    }

    #[tokio::test]
    async fn a_truncated_upload_answers_metadata_then_ends_with_a_400() {
        let body =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nhel";
        let (metadata, items) = decode_upload(request(Some(CONTENT_TYPE_XYZ), body)).await;
        let metadata = metadata.unwrap();
        assert!(metadata.sha256.is_empty() && metadata.description.is_empty());
        let items = joined(items);
        assert!(matches!(&items[0], Ok(UploadItem::File(h)) if h.path == "a"));
        let last = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(last.code, ErrorCode::BadRequest, "{last}");
    }

    #[tokio::test]
    async fn a_wrong_part_name_is_a_400_item() {
        let body =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"; filename=\"a\"\r\n\r\n\
            x\r\n--XyZ--\r\n";
        let (metadata, items) = decode_upload(request(Some(CONTENT_TYPE_XYZ), body)).await;
        assert!(metadata.is_ok());
        let first = items[0].as_ref().unwrap_err();
        assert_eq!(first.code, ErrorCode::BadRequest);
        assert!(first.message.contains("unexpected part 'model'"), "{first}");
    }

    fn streamed(content_type: &str, chunks: Vec<Vec<u8>>) -> Request {
        let stream =
            futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
        axum::http::Request::builder()
            .method("POST")
            .uri("/")
            .header(CONTENT_TYPE, content_type)
            .body(Body::from_stream(stream))
            .unwrap()
    }

    #[tokio::test]
    async fn part_headers_that_never_end_are_a_413_at_the_framing_limit() {
        let mut chunks =
            vec![b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Pad: ".to_vec()];
        // 8 MiB of one header line, in 64 KiB pieces: multer would hold all
        // of it looking for the headers' end.
        chunks.extend((0..128).map(|_| vec![b'a'; 64 * 1024]));
        let (metadata, items) = decode_upload(streamed(CONTENT_TYPE_XYZ, chunks)).await;
        let err = metadata.unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{err}");
        assert!(err.message.contains("part headers"), "{err}");
        assert!(items.is_empty());
    }

    #[tokio::test]
    async fn a_metadata_part_over_its_limit_is_a_413() {
        let mut chunks =
            vec![b"--XyZ\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n".to_vec()];
        // 1.25 MiB (axum's default body limit, 2 MB, applies here: the route
        // lifts it).
        chunks.extend((0..20).map(|_| vec![b' '; 64 * 1024]));
        chunks.push(b"{}\r\n--XyZ--\r\n".to_vec());
        let (metadata, _) = decode_upload(streamed(CONTENT_TYPE_XYZ, chunks)).await;
        let err = metadata.unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{err}");
        assert!(err.message.contains("metadata part"), "{err}");
    }

    #[tokio::test]
    async fn large_frames_and_files_pass_the_framing_limit() {
        // A 1.5 MiB file part arriving in one frame, then 256 KiB in 1 KiB
        // pieces: only boundaries and headers count against the 1 MiB limit
        // (and the body stays under axum's 2 MB default, which the route
        // lifts).
        let head =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n";
        let mut first = head.to_vec();
        first.extend(vec![7u8; 1536 * 1024]);
        let mut chunks = vec![first];
        chunks.extend((0..256).map(|_| vec![8u8; 1024]));
        chunks.push(b"\r\n--XyZ--\r\n".to_vec());
        let (metadata, items) = decode_upload(streamed(CONTENT_TYPE_XYZ, chunks)).await;
        assert!(metadata.is_ok());
        let bytes: usize = items
            .iter()
            .map(|item| match item {
                Ok(UploadItem::Chunk(chunk)) => chunk.len(),
                Ok(UploadItem::File(_)) => 0,
                Err(err) => panic!("{err}"),
            })
            .sum();
        assert_eq!(bytes, (1536 + 256) * 1024);
    }
}
