//! Exposes any [`InferenceService`] as Triton's `GRPCInferenceService`.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::InferenceService;
use crate::pb;
use crate::pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// Largest gRPC message accepted or sent, matching the HTTP body limit default.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How many stream responses may wait for the client before the stream stops
/// reading new requests (backpressure instead of an unbounded buffer).
const STREAM_BUFFER: usize = 64;

/// The tonic service adapter over an [`InferenceService`].
#[derive(Clone)]
pub struct InferenceGrpcAdapter {
    inner: Arc<dyn InferenceService>,
}

/// Builds the tonic server for `service`, with message limits raised for big tensors.
pub fn inference_grpc_server(
    service: Arc<dyn InferenceService>,
    max_message_bytes: usize,
) -> GrpcInferenceServiceServer<InferenceGrpcAdapter> {
    GrpcInferenceServiceServer::new(InferenceGrpcAdapter { inner: service })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

type StreamResponse =
    Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not supported by mlserve"
    )))
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceGrpcAdapter {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        let live = self.inner.server_live().await?;
        Ok(Response::new(pb::ServerLiveResponse { live }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = self.inner.server_ready().await?;
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let req = req.into_inner();
        // Triton answers ready=false (not an error) for a model it does not know.
        let ready = self
            .inner
            .model_ready(&req.name, &req.version)
            .await
            .unwrap_or(false);
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(self.inner.server_metadata().await?))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.inner.model_metadata(&req.name, &req.version).await?,
        ))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        Ok(Response::new(
            self.inner.model_infer(req.into_inner()).await?,
        ))
    }

    type ModelStreamInferStream = StreamResponse;

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = self.inner.clone();
        tokio::spawn(async move {
            while let Some(next) = incoming.next().await {
                let request = match next {
                    Ok(request) => request,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                // Wait for a free slot before starting work, so a slow reader
                // slows the stream down instead of piling up responses.
                let Ok(permit) = tx.clone().reserve_owned().await else {
                    break;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let message = match service.model_infer(request).await {
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
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let req = req.into_inner();
        let config = self.inner.model_config(&req.name, &req.version).await?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.inner.model_statistics(&req.name, &req.version).await?,
        ))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let models = self.inner.repository_index(req.into_inner().ready).await?;
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let req = req.into_inner();
        self.inner
            .load_model(&req.model_name, req.parameters)
            .await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        self.inner
            .unload_model(&req.into_inner().model_name)
            .await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryStatusResponse>, Status> {
        unimplemented("system shared memory")
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryRegisterResponse>, Status> {
        unimplemented("system shared memory")
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryUnregisterResponse>, Status> {
        unimplemented("system shared memory")
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryStatusResponse>, Status> {
        unimplemented("CUDA shared memory")
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryRegisterResponse>, Status> {
        unimplemented("CUDA shared memory")
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryUnregisterResponse>, Status> {
        unimplemented("CUDA shared memory")
    }

    async fn trace_setting(
        &self,
        _: Request<pb::TraceSettingRequest>,
    ) -> Result<Response<pb::TraceSettingResponse>, Status> {
        unimplemented("trace settings")
    }

    async fn log_settings(
        &self,
        _: Request<pb::LogSettingsRequest>,
    ) -> Result<Response<pb::LogSettingsResponse>, Status> {
        unimplemented("log settings")
    }
}
