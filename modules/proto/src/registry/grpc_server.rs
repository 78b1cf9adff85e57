//! Exposes any [`RegistryService`] as the gRPC `registry.RegistryService`.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::pb::registry_service_server::{RegistryService as GrpcRegistry, RegistryServiceServer};
use super::pb::{download_part, upload_part};
use super::{pb, RegistryService, UploadItem};
use crate::ServiceError;

/// The tonic service adapter over a [`RegistryService`].
#[derive(Clone)]
pub struct RegistryGrpcAdapter {
    inner: Arc<dyn RegistryService>,
}

/// Builds the tonic server for `service`.
pub fn registry_grpc_server(
    service: Arc<dyn RegistryService>,
) -> RegistryServiceServer<RegistryGrpcAdapter> {
    RegistryServiceServer::new(RegistryGrpcAdapter { inner: service })
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<pb::DownloadPart, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcRegistry for RegistryGrpcAdapter {
    async fn create_model(
        &self,
        req: Request<pb::CreateModelRequest>,
    ) -> Result<Response<pb::RegisteredModel>, Status> {
        Ok(Response::new(
            self.inner.create_model(req.into_inner()).await?,
        ))
    }

    async fn get_model(
        &self,
        req: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::RegisteredModel>, Status> {
        Ok(Response::new(
            self.inner.get_model(&req.into_inner().name).await?,
        ))
    }

    async fn list_models(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Ok(Response::new(
            self.inner.list_models(req.into_inner()).await?,
        ))
    }

    async fn update_model(
        &self,
        req: Request<pb::UpdateModelRequest>,
    ) -> Result<Response<pb::RegisteredModel>, Status> {
        Ok(Response::new(
            self.inner.update_model(req.into_inner()).await?,
        ))
    }

    async fn delete_model(
        &self,
        req: Request<pb::DeleteModelRequest>,
    ) -> Result<Response<pb::DeleteModelResponse>, Status> {
        self.inner.delete_model(&req.into_inner().name).await?;
        Ok(Response::new(pb::DeleteModelResponse {}))
    }

    async fn create_version(
        &self,
        req: Request<Streaming<pb::UploadPart>>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        let mut incoming = req.into_inner();
        let header = match incoming.message().await? {
            Some(pb::UploadPart {
                part: Some(upload_part::Part::Header(header)),
            }) => header,
            _ => {
                return Err(ServiceError::bad_request(
                    "an upload must start with the version header",
                )
                .into())
            }
        };
        let files = incoming.map(|part| match part?.part {
            Some(upload_part::Part::File(file)) => Ok(UploadItem::File(file)),
            Some(upload_part::Part::Chunk(chunk)) => Ok(UploadItem::Chunk(chunk)),
            _ => Err(ServiceError::bad_request(
                "an upload carries one header, then files and chunks",
            )),
        });
        let version = self.inner.create_version(header, Box::pin(files)).await?;
        Ok(Response::new(version))
    }

    async fn get_version(
        &self,
        req: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.inner.get_version(&req.name, req.version).await?,
        ))
    }

    async fn list_versions(
        &self,
        req: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        Ok(Response::new(
            self.inner.list_versions(req.into_inner()).await?,
        ))
    }

    async fn update_version(
        &self,
        req: Request<pb::UpdateVersionRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        Ok(Response::new(
            self.inner.update_version(req.into_inner()).await?,
        ))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        req: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let req = req.into_inner();
        let (file, chunks) = self
            .inner
            .download(&req.name, req.version, &req.path)
            .await?;
        let first = pb::DownloadPart {
            part: Some(download_part::Part::File(file)),
        };
        let rest = chunks.map(|chunk| {
            chunk
                .map(|bytes| pb::DownloadPart {
                    part: Some(download_part::Part::Chunk(bytes)),
                })
                .map_err(Status::from)
        });
        let stream = tokio_stream::once(Ok(first)).chain(rest);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn set_alias(
        &self,
        req: Request<pb::SetAliasRequest>,
    ) -> Result<Response<pb::AliasMove>, Status> {
        Ok(Response::new(self.inner.set_alias(req.into_inner()).await?))
    }

    async fn get_alias(
        &self,
        req: Request<pb::GetAliasRequest>,
    ) -> Result<Response<pb::Alias>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.inner.get_alias(&req.name, &req.alias).await?,
        ))
    }

    async fn resolve_alias(
        &self,
        req: Request<pb::GetAliasRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.inner.resolve_alias(&req.name, &req.alias).await?,
        ))
    }

    async fn delete_alias(
        &self,
        req: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::AliasMove>, Status> {
        Ok(Response::new(
            self.inner.delete_alias(req.into_inner()).await?,
        ))
    }

    async fn list_aliases(
        &self,
        req: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        let aliases = self.inner.list_aliases(&req.into_inner().name).await?;
        Ok(Response::new(pb::ListAliasesResponse { aliases }))
    }

    async fn alias_history(
        &self,
        req: Request<pb::AliasHistoryRequest>,
    ) -> Result<Response<pb::AliasHistoryResponse>, Status> {
        Ok(Response::new(
            self.inner.alias_history(req.into_inner()).await?,
        ))
    }
}
