//! [`RegistryService`] over gRPC: the remote side of the registry client.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use super::pb::registry_service_client::RegistryServiceClient;
use super::pb::{download_part, upload_part};
use super::{pb, ByteStream, RegistryService, UploadItem, UploadStream};
use crate::{ServiceError, ServiceResult};

/// A registry role reached over gRPC. Cloning shares the HTTP/2 connection.
#[derive(Clone)]
pub struct RemoteRegistry {
    client: RegistryServiceClient<Channel>,
}

/// Connects lazily to a registry role at `uri` (e.g. `http://10.0.0.5:8001`);
/// the first call opens the connection.
pub fn connect_registry(uri: &str, connect_timeout: Duration) -> ServiceResult<RemoteRegistry> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|e| ServiceError::bad_request(format!("invalid registry endpoint '{uri}': {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    Ok(RemoteRegistry {
        client: RegistryServiceClient::new(endpoint.connect_lazy()),
    })
}

impl RemoteRegistry {
    fn client(&self) -> RegistryServiceClient<Channel> {
        self.client.clone()
    }
}

#[async_trait]
impl RegistryService for RemoteRegistry {
    async fn create_model(
        &self,
        request: pb::CreateModelRequest,
    ) -> ServiceResult<pb::RegisteredModel> {
        Ok(self.client().create_model(request).await?.into_inner())
    }

    async fn get_model(&self, name: &str) -> ServiceResult<pb::RegisteredModel> {
        let request = pb::GetModelRequest { name: name.into() };
        Ok(self.client().get_model(request).await?.into_inner())
    }

    async fn list_models(
        &self,
        request: pb::ListModelsRequest,
    ) -> ServiceResult<pb::ListModelsResponse> {
        Ok(self.client().list_models(request).await?.into_inner())
    }

    async fn update_model(
        &self,
        request: pb::UpdateModelRequest,
    ) -> ServiceResult<pb::RegisteredModel> {
        Ok(self.client().update_model(request).await?.into_inner())
    }

    async fn delete_model(&self, name: &str) -> ServiceResult<()> {
        let request = pb::DeleteModelRequest { name: name.into() };
        self.client().delete_model(request).await?;
        Ok(())
    }

    async fn create_version(
        &self,
        request: pb::CreateVersionRequest,
        files: UploadStream,
    ) -> ServiceResult<pb::ModelVersion> {
        // An error in the caller's stream must abort the upload, never end it
        // early (the server would take a short stream for a complete one): the
        // forwarder keeps the stream open and reports the error, and dropping
        // the call resets the stream.
        let (tx, rx) = mpsc::channel::<pb::UploadPart>(4);
        let (failed_tx, failed_rx) = oneshot::channel::<ServiceError>();
        tokio::spawn(forward_upload(request, files, tx, failed_tx));
        let mut client = self.client();
        tokio::select! {
            result = client.create_version(ReceiverStream::new(rx)) => Ok(result?.into_inner()),
            Ok(err) = failed_rx => Err(err),
        }
    }

    async fn get_version(&self, name: &str, version: u64) -> ServiceResult<pb::ModelVersion> {
        let request = pb::GetVersionRequest {
            name: name.into(),
            version,
        };
        Ok(self.client().get_version(request).await?.into_inner())
    }

    async fn list_versions(
        &self,
        request: pb::ListVersionsRequest,
    ) -> ServiceResult<pb::ListVersionsResponse> {
        Ok(self.client().list_versions(request).await?.into_inner())
    }

    async fn update_version(
        &self,
        request: pb::UpdateVersionRequest,
    ) -> ServiceResult<pb::ModelVersion> {
        Ok(self.client().update_version(request).await?.into_inner())
    }

    async fn download(
        &self,
        name: &str,
        version: u64,
        path: &str,
    ) -> ServiceResult<(pb::VersionFile, ByteStream)> {
        let request = pb::DownloadRequest {
            name: name.into(),
            version,
            path: path.into(),
        };
        let mut stream = self.client().download(request).await?.into_inner();
        let file = match stream.message().await? {
            Some(pb::DownloadPart {
                part: Some(download_part::Part::File(file)),
            }) => file,
            _ => {
                return Err(ServiceError::internal(
                    "download stream did not start with the file",
                ))
            }
        };
        let chunks = stream.map(|part| match part?.part {
            Some(download_part::Part::Chunk(chunk)) => Ok(chunk),
            _ => Err(ServiceError::internal(
                "download stream sent something other than a chunk",
            )),
        });
        Ok((file, Box::pin(chunks)))
    }

    async fn set_alias(&self, request: pb::SetAliasRequest) -> ServiceResult<pb::AliasMove> {
        Ok(self.client().set_alias(request).await?.into_inner())
    }

    async fn get_alias(&self, name: &str, alias: &str) -> ServiceResult<pb::Alias> {
        let request = pb::GetAliasRequest {
            name: name.into(),
            alias: alias.into(),
        };
        Ok(self.client().get_alias(request).await?.into_inner())
    }

    async fn resolve_alias(&self, name: &str, alias: &str) -> ServiceResult<pb::ModelVersion> {
        let request = pb::GetAliasRequest {
            name: name.into(),
            alias: alias.into(),
        };
        Ok(self.client().resolve_alias(request).await?.into_inner())
    }

    async fn delete_alias(&self, request: pb::DeleteAliasRequest) -> ServiceResult<pb::AliasMove> {
        Ok(self.client().delete_alias(request).await?.into_inner())
    }

    async fn list_aliases(&self, name: &str) -> ServiceResult<Vec<pb::Alias>> {
        let request = pb::ListAliasesRequest { name: name.into() };
        Ok(self
            .client()
            .list_aliases(request)
            .await?
            .into_inner()
            .aliases)
    }

    async fn alias_history(
        &self,
        request: pb::AliasHistoryRequest,
    ) -> ServiceResult<pb::AliasHistoryResponse> {
        Ok(self.client().alias_history(request).await?.into_inner())
    }
}

/// Sends the header, then the caller's files, to the gRPC request stream.
/// On an error in `files` it reports the error and holds the stream open
/// until the call is dropped, so the server never sees a clean end.
async fn forward_upload(
    request: pb::CreateVersionRequest,
    mut files: UploadStream,
    tx: mpsc::Sender<pb::UploadPart>,
    failed: oneshot::Sender<ServiceError>,
) {
    let header = pb::UploadPart {
        part: Some(upload_part::Part::Header(request)),
    };
    if tx.send(header).await.is_err() {
        return;
    }
    while let Some(item) = files.next().await {
        let part = match item {
            Ok(UploadItem::File(file)) => upload_part::Part::File(file),
            Ok(UploadItem::Chunk(chunk)) => upload_part::Part::Chunk(chunk),
            Err(err) => {
                let _ = failed.send(err);
                tx.closed().await;
                return;
            }
        };
        if tx.send(pb::UploadPart { part: Some(part) }).await.is_err() {
            return;
        }
    }
}
