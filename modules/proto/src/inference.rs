//! The inference service contract (Triton's `GRPCInferenceService`): the
//! trait, its client (local or gRPC) and the gRPC adapters, all generated
//! from `proto/grpc_service.proto`.
//!
//! Versions are strings as on the wire; an empty version means "the
//! default" (the highest ready version). `ModelReady` answers `ready: false`
//! for a model the server does not know, as Triton does.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::rpc::ServiceStream;
use crate::{pb, CallContext};

include!(concat!(env!("OUT_DIR"), "/inference.service.rs"));

/// Largest gRPC message accepted or sent, matching the HTTP body limit default.
pub const MAX_GRPC_MESSAGE_BYTES: usize = crate::rpc::DEFAULT_MAX_MESSAGE_BYTES;

/// The tensor parameter naming the system shared-memory region that holds an
/// input's data or receives an output (Triton's extension).
pub const SHARED_MEMORY_REGION: &str = "shared_memory_region";
/// The tensor parameter giving the bytes used in that region.
pub const SHARED_MEMORY_BYTE_SIZE: &str = "shared_memory_byte_size";
/// The tensor parameter giving the start within that region (default 0).
pub const SHARED_MEMORY_OFFSET: &str = "shared_memory_offset";

/// One entry of the model repository index.
pub type ModelIndex = pb::repository_index_response::ModelIndex;

/// Parameters of a repository load request (`config` override and the like).
pub type LoadParameters = HashMap<String, pb::ModelRepositoryParameter>;

/// How many stream responses may wait for the client before the stream stops
/// reading new requests (backpressure instead of an unbounded buffer).
const STREAM_BUFFER: usize = 64;

/// `ModelStreamInfer` as Triton serves it: each request of the stream is
/// run through `service`'s `ModelInfer` under the stream's context, and its
/// answer (or its error, as `error_message`) is sent as it completes. A slow
/// reader slows the stream down: no new request starts while
/// [`STREAM_BUFFER`] answers wait.
pub fn infer_each(
    service: Arc<dyn InferenceService>,
    ctx: CallContext,
    mut requests: ServiceStream<pb::ModelInferRequest>,
) -> ServiceStream<pb::ModelStreamInferResponse> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        while let Some(next) = requests.next().await {
            let request = match next {
                Ok(request) => request,
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    break;
                }
            };
            let Ok(permit) = tx.clone().reserve_owned().await else {
                break;
            };
            let service = service.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let message = match service.model_infer(ctx, request).await {
                    Ok(response) => pb::ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(response),
                    },
                    Err(err) => pb::ModelStreamInferResponse {
                        error_message: err.message,
                        infer_response: None,
                    },
                };
                permit.send(Ok(message));
            });
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[cfg(test)]
#[path = "inference/adapter_tests.rs"]
mod adapter_tests;
