//! [`LocalRegistry`]: the registry service over the SQL store and the
//! artifact store, publishing version and alias events on the bus: through
//! the outbox when it has one (each event written in the transaction of its
//! change, sent by the drain task), else directly, within the bus's publish
//! timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mlserve_common::config::RegistryConfig;
#[cfg(feature = "testing")]
use mlserve_common::config::RegistryFault;
use mlserve_common::events::outbox::Outbox;
use mlserve_common::events::{publish_bounded, Event, EventBus};
use mlserve_proto::registry::{
    download_parts, pb, split_upload, RegistryService, UploadStream, ANONYMOUS,
};
use mlserve_proto::rpc::ServiceStream;
use mlserve_proto::{CallContext, ServiceError, ServiceResult};
use tokio_stream::StreamExt;

use crate::artifacts::Artifacts;
use crate::error::{RegistryError, Result};
use crate::metrics::RegistryMetrics;
use crate::names;
use crate::store::{page_size, NewVersion, Store};
use crate::upload::{Limits, Upload};

/// The registry role's implementation of [`RegistryService`].
pub struct LocalRegistry {
    store: Store,
    artifacts: Artifacts,
    events: Option<Arc<dyn EventBus>>,
    /// Where the store writes the events of its changes; the drain task
    /// publishes them (then `events` is not used).
    outbox: Option<Arc<Outbox>>,
    limits: Limits,
    /// Test-only fault injection (`registry.fault`), in `testing` builds.
    #[cfg(feature = "testing")]
    fault: RegistryFault,
    metrics: Arc<RegistryMetrics>,
}

/// Who makes a change: the caller the edge authenticated, else the name the
/// request gives, else anonymous. Only mlserve's own services name
/// themselves (`training:<run>`, `monitoring:<rollout>`), in-process or over
/// the internal gRPC port; the REST routes never pass a name a client sent.
fn actor(ctx: &CallContext, claimed: &str) -> String {
    if let Some(caller) = &ctx.caller {
        return caller.identity.clone();
    }
    let name = claimed.trim();
    if name.is_empty() {
        ANONYMOUS.to_string()
    } else {
        name.to_string()
    }
}

fn check_tags(tags: &HashMap<String, String>) -> Result<()> {
    tags.iter().try_for_each(|(k, v)| names::tag(k, v))
}

fn parse_token<T: std::str::FromStr>(token: &str) -> Result<Option<T>> {
    if token.is_empty() {
        return Ok(None);
    }
    token.parse().map(Some).map_err(|_| {
        RegistryError::Invalid(format!("invalid page_token '{}'", token.escape_debug()))
    })
}

/// Cuts a `limit + 1` page to `limit` and gives the next token.
fn page<T>(mut items: Vec<T>, limit: i64, token: impl Fn(&T) -> String) -> (Vec<T>, String) {
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        let next = items.last().map(&token).unwrap_or_default();
        (items, next)
    } else {
        (items, String::new())
    }
}

impl LocalRegistry {
    /// The registry over `store` and `artifacts`; `events` receives version
    /// and alias events when given.
    pub fn new(
        store: Store,
        artifacts: Artifacts,
        events: Option<Arc<dyn EventBus>>,
        limits: Limits,
    ) -> LocalRegistry {
        LocalRegistry {
            store,
            artifacts,
            events,
            outbox: None,
            limits,
            #[cfg(feature = "testing")]
            fault: RegistryFault::None,
            metrics: Arc::default(),
        }
    }

    /// Takes the test-only hooks of `config` (`registry.fault`) in builds
    /// with the `testing` feature; a shipped build has none and this does
    /// nothing.
    #[cfg_attr(not(feature = "testing"), allow(unused_mut, unused_variables))]
    pub fn with_test_hooks(mut self, config: &RegistryConfig) -> LocalRegistry {
        #[cfg(feature = "testing")]
        {
            self.fault = config.fault;
        }
        self
    }

    /// Writes the events of every change to `outbox` in the change's
    /// transaction (the store's database must be the outbox's): a
    /// committed change's event survives a bus outage and a crash, and no
    /// request waits for the bus.
    pub fn with_outbox(mut self, outbox: Arc<Outbox>) -> LocalRegistry {
        self.store = self.store.clone().with_outbox();
        self.outbox = Some(outbox);
        self
    }

    /// The SQL store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The registry's metrics.
    pub fn metrics(&self) -> &Arc<RegistryMetrics> {
        &self.metrics
    }

    /// Announces a committed change's `event`: with an outbox the store
    /// wrote it in the change's transaction and the drain is woken; else it
    /// is published on the bus, within its publish timeout (lost if that
    /// fails: logged).
    async fn publish(&self, event: Event) {
        if let Some(outbox) = &self.outbox {
            outbox.wake();
            return;
        }
        if let Some(bus) = &self.events {
            if let Err(err) = publish_bounded(bus.as_ref(), &event).await {
                tracing::warn!(error = %err, ?event, "registry event not published");
            }
        }
    }

    async fn publish_move(&self, moved: &pb::AliasMove) {
        self.metrics.alias_moved();
        self.publish(crate::store::alias_event(moved)).await;
    }

    /// The collector: fails uploads pending for longer than `grace`, then
    /// deletes the objects whose version is neither ready nor pending, once
    /// older than `grace`, aborting the multipart uploads their markers
    /// record (S3 keeps the parts of an upload nobody aborted, unlisted).
    /// Returns how many objects were deleted.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<usize> {
        let grace_us = grace.as_micros().min(i64::MAX as u128) as i64;
        let cutoff = crate::store::now_us().saturating_sub(grace_us);
        for (model, slot) in self.store.expire_pending(cutoff).await? {
            tracing::info!(model = %model, slot, "abandoned upload failed by the collector");
        }
        self.collect_objects("models/", cutoff).await
    }

    /// Deletes the objects under `relative` whose version prefix is neither
    /// ready nor pending and that were last modified at or before `cutoff_us`.
    async fn collect_objects(&self, relative: &str, cutoff: i64) -> Result<usize> {
        let live = self.store.live_prefixes().await?;
        let mut deleted = 0;
        for meta in self.artifacts.list(relative).await? {
            let key = self.artifacts.relative(&meta.location);
            let prefix: Vec<&str> = key.splitn(5, '/').take(4).collect();
            // A marker older than `grace` in a live prefix belongs to a ready
            // version (a pending one that old was just failed): its upload was
            // completed and only the marker's deletion failed.
            let live_prefix = prefix.len() == 4 && live.contains(&prefix.join("/"));
            if live_prefix && !crate::artifacts::is_multipart_marker(&key) {
                continue;
            }
            if meta.last_modified.timestamp_micros() > cutoff {
                continue;
            }
            // a multipart marker: its upload is aborted first
            self.artifacts.remove(&meta).await?;
            deleted += 1;
        }
        self.metrics.orphans_collected(deleted as u64);
        if deleted > 0 {
            tracing::info!(
                objects = deleted,
                prefix = relative,
                "orphan artifacts collected"
            );
        }
        Ok(deleted)
    }

    async fn create_version_inner(
        &self,
        request: pb::CreateVersionRequest,
        files: UploadStream,
    ) -> Result<pb::ModelVersion> {
        names::model_name(&request.name)?;
        check_tags(&request.tags)?;
        if let Some((key, _)) = request.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(RegistryError::Invalid(format!(
                "metric '{key}' is not a finite number"
            )));
        }
        for key in request.metrics.keys() {
            names::tag(key, "")?;
        }
        let name = request.name.clone();
        let new = NewVersion {
            description: request.description,
            lineage: request.lineage.unwrap_or_default(),
            metrics: request.metrics,
            tags: request.tags,
            created_by: request.created_by.clone(),
        };
        let upload_id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let pending = self.store.begin_version(&name, &new, &upload_id).await?;
        let mut upload = Upload::new(&self.artifacts, pending.prefix.clone(), self.limits);
        let received = upload.receive(files).await;
        let outcome = match received {
            Ok(rows) => {
                #[cfg(feature = "testing")]
                if self.fault == RegistryFault::CrashBeforeCommit {
                    tracing::error!(model = %name, slot = pending.slot, "fault injection: crashing between artifact write and commit");
                    std::process::abort();
                }
                let bytes: u64 = rows.iter().map(|row| row.size).sum();
                self.store
                    .commit_version(&name, pending.slot, &rows)
                    .await
                    .map(|committed| (committed, bytes))
            }
            Err(err) => {
                upload.abort().await;
                Err(err)
            }
        };
        let (committed, bytes) = match outcome {
            Ok(done) => done,
            Err(err) => {
                self.refused(&name, pending.slot, &pending.prefix, &err)
                    .await;
                return Err(err);
            }
        };
        self.metrics.version_created(bytes);
        let version = committed.version;
        tracing::info!(model = %name, version, by = %new.created_by, bytes, "model version registered");
        self.publish(Event::ModelVersionRegistered {
            model: name.clone(),
            version: version as i64,
        })
        .await;
        // The version as its transaction committed it: no read after the
        // commit, whose failure would answer 503 for a registered version.
        Ok(committed)
    }

    /// Marks a refused upload failed (it spent no version number) and
    /// deletes what it wrote.
    async fn refused(&self, name: &str, slot: i64, prefix: &str, err: &RegistryError) {
        tracing::info!(model = %name, slot, error = %err, "version upload refused");
        if let Err(e) = self.store.fail_version(name, slot, &err.to_string()).await {
            tracing::warn!(error = %e, "marking a version failed did not work");
        }
        if let Err(e) = self.artifacts.delete_prefix(prefix).await {
            tracing::warn!(error = %e, prefix = %prefix, "objects left for the collector");
        }
    }
}

#[async_trait]
impl RegistryService for LocalRegistry {
    async fn create_model(
        &self,
        _: CallContext,
        request: pb::CreateModelRequest,
    ) -> ServiceResult<pb::RegisteredModel> {
        names::model_name(&request.name)?;
        check_tags(&request.tags)?;
        self.store
            .create_model(&request.name, &request.description, &request.tags)
            .await?;
        tracing::info!(model = %request.name, "registered model created");
        Ok(self.store.get_model(&request.name).await?)
    }

    async fn get_model(
        &self,
        _: CallContext,
        request: pb::GetModelRequest,
    ) -> ServiceResult<pb::RegisteredModel> {
        names::model_name(&request.name)?;
        Ok(self.store.get_model(&request.name).await?)
    }

    async fn list_models(
        &self,
        _: CallContext,
        request: pb::ListModelsRequest,
    ) -> ServiceResult<pb::ListModelsResponse> {
        let limit = page_size(request.limit);
        let models = self
            .store
            .list_models(
                &request.query,
                &request.tags,
                &request.page_token,
                limit + 1,
            )
            .await?;
        let (models, next_page_token) = page(models, limit, |m| m.name.clone());
        Ok(pb::ListModelsResponse {
            models,
            next_page_token,
        })
    }

    async fn update_model(
        &self,
        _: CallContext,
        request: pb::UpdateModelRequest,
    ) -> ServiceResult<pb::RegisteredModel> {
        names::model_name(&request.name)?;
        check_tags(&request.set_tags)?;
        self.store
            .update_model(
                &request.name,
                request.description.as_deref(),
                &request.set_tags,
                &request.remove_tags,
            )
            .await?;
        Ok(self.store.get_model(&request.name).await?)
    }

    async fn delete_model(
        &self,
        ctx: CallContext,
        request: pb::DeleteModelRequest,
    ) -> ServiceResult<pb::DeleteModelResponse> {
        let name = request.name.as_str();
        names::model_name(name)?;
        let by = actor(&ctx, "");
        let aliases = self.store.delete_model(name, &by).await?;
        tracing::info!(model = %name, "registered model deleted");
        let now = crate::store::now_us();
        for (alias, version) in aliases {
            self.publish(Event::AliasMoved {
                model: name.to_string(),
                alias,
                from: Some(version as i64),
                to: None,
                by: by.clone(),
                at: now,
            })
            .await;
        }
        if let Err(err) = self
            .collect_objects(&format!("models/{name}/"), crate::store::now_us())
            .await
        {
            tracing::warn!(model = %name, error = %err, "artifacts left for the collector");
        }
        Ok(pb::DeleteModelResponse {})
    }

    async fn create_version(
        &self,
        ctx: CallContext,
        parts: ServiceStream<pb::UploadPart>,
    ) -> ServiceResult<pb::ModelVersion> {
        let started = Instant::now();
        let (mut request, files) = split_upload(parts).await?;
        request.created_by = actor(&ctx, &request.created_by);
        let result = self.create_version_inner(request, files).await;
        self.metrics.upload_took(started.elapsed());
        if let Err(err) = &result {
            self.metrics.upload_refused(err.code());
        }
        Ok(result?)
    }

    async fn get_version(
        &self,
        _: CallContext,
        request: pb::GetVersionRequest,
    ) -> ServiceResult<pb::ModelVersion> {
        names::model_name(&request.name)?;
        Ok(self
            .store
            .get_version(&request.name, request.version)
            .await?)
    }

    async fn list_versions(
        &self,
        _: CallContext,
        request: pb::ListVersionsRequest,
    ) -> ServiceResult<pb::ListVersionsResponse> {
        names::model_name(&request.name)?;
        let limit = page_size(request.limit);
        let before = parse_token::<u64>(&request.page_token)?.unwrap_or(0);
        let versions = self
            .store
            .list_versions(&request.name, before, limit + 1)
            .await?;
        let (versions, next_page_token) = page(versions, limit, |v| v.version.to_string());
        Ok(pb::ListVersionsResponse {
            versions,
            next_page_token,
        })
    }

    async fn update_version(
        &self,
        _: CallContext,
        request: pb::UpdateVersionRequest,
    ) -> ServiceResult<pb::ModelVersion> {
        names::model_name(&request.name)?;
        check_tags(&request.set_tags)?;
        self.store
            .update_version(
                &request.name,
                request.version,
                request.description.as_deref(),
                &request.set_tags,
                &request.remove_tags,
            )
            .await?;
        Ok(self
            .store
            .get_version(&request.name, request.version)
            .await?)
    }

    async fn download(
        &self,
        _: CallContext,
        request: pb::DownloadRequest,
    ) -> ServiceResult<ServiceStream<pb::DownloadPart>> {
        let (name, version, path) = (
            request.name.as_str(),
            request.version,
            request.path.as_str(),
        );
        names::model_name(name)?;
        names::file_path(path)?;
        let row = self.store.file(name, version, path).await?;
        let stream = self.artifacts.read(&row.object_key).await.map_err(|err| {
            tracing::error!(model = %name, version, path, error = %err, "artifact missing from the store");
            ServiceError::from(err)
        })?;
        let metrics = self.metrics.clone();
        let timer = metrics.download_timer();
        let stream = stream.map(move |chunk| {
            let _ = &timer; // the closure owns the timer: it fires when the stream is dropped
            if let Ok(bytes) = &chunk {
                metrics.downloaded(bytes.len() as u64);
            }
            chunk.map_err(|e| ServiceError::from(RegistryError::Store(e)))
        });
        let file = pb::VersionFile {
            path: row.path,
            sha256: row.sha256,
            size: row.size,
        };
        Ok(download_parts(file, Box::pin(stream)))
    }

    async fn set_alias(
        &self,
        ctx: CallContext,
        request: pb::SetAliasRequest,
    ) -> ServiceResult<pb::AliasMove> {
        names::model_name(&request.name)?;
        names::alias_name(&request.alias)?;
        let by = actor(&ctx, &request.actor);
        let moved = self
            .store
            .set_alias(&request.name, &request.alias, request.version, &by)
            .await?;
        tracing::info!(model = %moved.name, alias = %moved.alias, from = moved.from_version, to = moved.to_version, by = %moved.actor, "alias moved");
        self.publish_move(&moved).await;
        Ok(moved)
    }

    async fn get_alias(
        &self,
        _: CallContext,
        request: pb::GetAliasRequest,
    ) -> ServiceResult<pb::Alias> {
        names::model_name(&request.name)?;
        names::alias_name(&request.alias)?;
        Ok(self.store.get_alias(&request.name, &request.alias).await?)
    }

    async fn resolve_alias(
        &self,
        ctx: CallContext,
        request: pb::GetAliasRequest,
    ) -> ServiceResult<pb::ModelVersion> {
        let name = request.name.clone();
        let found = self.get_alias(ctx, request).await?;
        Ok(self.store.get_version(&name, found.version).await?)
    }

    async fn delete_alias(
        &self,
        ctx: CallContext,
        request: pb::DeleteAliasRequest,
    ) -> ServiceResult<pb::AliasMove> {
        names::model_name(&request.name)?;
        names::alias_name(&request.alias)?;
        let by = actor(&ctx, &request.actor);
        let moved = self
            .store
            .delete_alias(&request.name, &request.alias, &by)
            .await?;
        tracing::info!(model = %moved.name, alias = %moved.alias, from = moved.from_version, by = %moved.actor, "alias deleted");
        self.publish_move(&moved).await;
        Ok(moved)
    }

    async fn list_aliases(
        &self,
        _: CallContext,
        request: pb::ListAliasesRequest,
    ) -> ServiceResult<pb::ListAliasesResponse> {
        names::model_name(&request.name)?;
        self.store.model_exists(&request.name).await?;
        Ok(pb::ListAliasesResponse {
            aliases: self.store.aliases(&request.name).await?,
        })
    }

    async fn alias_history(
        &self,
        _: CallContext,
        request: pb::AliasHistoryRequest,
    ) -> ServiceResult<pb::AliasHistoryResponse> {
        names::model_name(&request.name)?;
        if !request.alias.is_empty() {
            names::alias_name(&request.alias)?;
        }
        let limit = page_size(request.limit);
        let after = parse_token::<u64>(&request.page_token)?.unwrap_or(0);
        let moves = self
            .store
            .alias_history(&request.name, &request.alias, after, limit + 1)
            .await?;
        let (moves, next_page_token) = page(moves, limit, |m| m.id.to_string());
        Ok(pb::AliasHistoryResponse {
            moves,
            next_page_token,
        })
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "service_more_tests.rs"]
mod more_tests;

#[cfg(test)]
#[path = "service_outbox_tests.rs"]
mod outbox_tests;
