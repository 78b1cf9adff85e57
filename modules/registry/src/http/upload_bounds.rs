//! Memory bounds of a multipart version upload. File data streams through
//! to the object store in bounded chunks, but two things were held whole:
//! - the bytes multer buffers while it looks for the end of a part's headers
//!   (it has no limit of its own), and
//! - the `metadata` part, read into memory to parse its JSON.
//!
//! [`bounded_body`] counts the bytes fed to multer against the field data
//! it has handed out: multer holding more than [`FRAMING_LIMIT_BYTES`] of
//! boundaries and headers when it asks for more is refused. [`read_metadata`]
//! reads the metadata part up to [`METADATA_LIMIT_BYTES`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};

use axum::body::{Body, Bytes};
use axum::extract::multipart::Field;
use futures_util::StreamExt;
use mlserve_proto::{ErrorCode, ServiceError, ServiceResult};

/// Most bytes of boundaries and part headers multer may hold at once.
pub(crate) const FRAMING_LIMIT_BYTES: u64 = 1024 * 1024;

/// Largest `metadata` part (JSON: description, lineage, metrics, tags and a
/// sha256 per file).
pub(crate) const METADATA_LIMIT_BYTES: usize = 1024 * 1024;

/// What the body fed to multer and what came out as field data.
#[derive(Default)]
pub(crate) struct Framing {
    fed: AtomicU64,
    last: AtomicU64,
    data: AtomicU64,
    over: AtomicBool,
}

impl Framing {
    /// Counts `bytes` of field data handed out (files and metadata).
    pub(crate) fn consumed(&self, bytes: usize) {
        self.data.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The error for a multipart failure: a 413 when the framing went over
    /// its limit, else `otherwise`.
    pub(crate) fn error_or(&self, otherwise: ServiceError) -> ServiceError {
        if self.over.load(Ordering::Relaxed) {
            ServiceError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "invalid multipart upload: part headers and boundaries over \
                     {FRAMING_LIMIT_BYTES} bytes"
                ),
            )
        } else {
            otherwise
        }
    }
}

/// `body`, failing once multer holds more than [`FRAMING_LIMIT_BYTES`] of
/// what it was fed beyond the field data it handed out, not counting the
/// last chunk it got (so a client's large frames never trip it).
///
/// multer reads its stream until the stream is pending, buffering all of
/// it; this stream is pending (and wakes itself) after every chunk, so
/// multer takes one chunk at a time and hands file data out in between,
/// which keeps its buffer to about a frame however fast the client sends.
pub(crate) fn bounded_body(body: Body, framing: Arc<Framing>) -> Body {
    let mut inner = body.into_data_stream();
    let mut just_yielded = false;
    let stream = futures_util::stream::poll_fn(move |cx| {
        if std::mem::take(&mut just_yielded) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let chunk: Bytes = match ready!(inner.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => return Poll::Ready(Some(Err(err))),
            None => return Poll::Ready(None),
        };
        // multer asks for more before it hands out what it has, so the
        // chunk fed last may still be all in its buffer: count what came
        // before it.
        let fed = framing.fed.load(Ordering::Relaxed);
        let before_last = fed - framing.last.load(Ordering::Relaxed);
        let held = before_last.saturating_sub(framing.data.load(Ordering::Relaxed));
        if held > FRAMING_LIMIT_BYTES {
            framing.over.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(
                "multipart framing over its limit",
            ))));
        }
        framing
            .fed
            .store(fed + chunk.len() as u64, Ordering::Relaxed);
        framing.last.store(chunk.len() as u64, Ordering::Relaxed);
        just_yielded = true;
        Poll::Ready(Some(Ok(chunk)))
    });
    Body::from_stream(stream)
}

/// Reads the `metadata` part whole, up to [`METADATA_LIMIT_BYTES`] (413
/// past it); multipart errors become `multipart_error`'s.
pub(crate) async fn read_metadata(
    field: &mut Field<'_>,
    framing: &Framing,
    multipart_error: impl Fn(axum::extract::multipart::MultipartError) -> ServiceError,
) -> ServiceResult<Vec<u8>> {
    let mut bytes = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                framing.consumed(chunk.len());
                if bytes.len() + chunk.len() > METADATA_LIMIT_BYTES {
                    return Err(ServiceError::new(
                        ErrorCode::PayloadTooLarge,
                        format!("the metadata part is over {METADATA_LIMIT_BYTES} bytes"),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(err) => return Err(framing.error_or(multipart_error(err))),
        }
    }
}
