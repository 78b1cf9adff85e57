//! [`LocalFeatures`]: the feature service over a SQL database and an online store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mlserve_common::events::outbox::Outbox;
use mlserve_common::events::{publish_bounded, Event, EventBus};
use mlserve_common::Database;
use mlserve_proto::features::*;
use mlserve_proto::{CallContext, ServiceResult};

use crate::catalog::{self, Catalog, PIPELINE};
use crate::error::{invalid, FeaturesError, Result};
use crate::metrics::Stats;
use crate::offline::{self, OfflineRow};
use crate::online::{OnlineRow, OnlineStore};
use crate::served;
use crate::transform::{self, text::TextTransform, PipelineSpec};
use crate::values::{feature_row, join_keys, now_micros};
use crate::{history, lookup};

mod transforms;

/// How long a cached catalog is trusted before it is read again (other
/// processes may apply definitions too).
const CATALOG_REFRESH: Duration = Duration::from_secs(2);
/// Rows per online write while materializing.
const MATERIALIZE_CHUNK: usize = 1000;

/// Settings of the local service.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most entities per lookup or transform.
    pub max_entities: usize,
    /// How long a computed feature mean is reused.
    pub mean_refresh: Duration,
    /// How long a served row of the request log is kept.
    pub served_retention: Duration,
    /// Pipelines from the configuration (API-registered ones win).
    pub pipelines: BTreeMap<String, PipelineSpec>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_entities: 10_000,
            mean_refresh: Duration::from_secs(60),
            served_retention: Duration::from_secs(30 * 24 * 3600),
            pipelines: BTreeMap::new(),
        }
    }
}

struct Cached {
    at: Instant,
    catalog: Arc<Catalog>,
    pipelines: Arc<HashMap<String, (i64, PipelineSpec)>>,
}

/// The features role in this process.
pub struct LocalFeatures {
    db: Database,
    online: Arc<dyn OnlineStore>,
    options: Options,
    cache: RwLock<Option<Cached>>,
    means: Mutex<HashMap<String, (Instant, Option<f64>)>>,
    tokenizers: Mutex<HashMap<(String, i64), Arc<TextTransform>>>,
    events: Option<Arc<dyn EventBus>>,
    /// Where `data_arrived` is written (with the offline rows, in their
    /// transaction) for the drain task to publish; then `events` is unused.
    outbox: Option<Arc<Outbox>>,
    /// When the request log was last pruned of rows past the retention.
    last_prune: Mutex<Option<Instant>>,
    /// The calls counted by the decorator [`LocalFeatures::stats`] feeds;
    /// `LookupStats` answers from its lookup histogram.
    stats: Arc<Stats>,
}

/// Time between two prunes of the request log.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl LocalFeatures {
    /// A service over `db` (migrated) and `online`.
    pub fn new(db: Database, online: Arc<dyn OnlineStore>, options: Options) -> LocalFeatures {
        LocalFeatures {
            db,
            online,
            options,
            cache: RwLock::new(None),
            means: Mutex::new(HashMap::new()),
            tokenizers: Mutex::new(HashMap::new()),
            events: None,
            outbox: None,
            last_prune: Mutex::new(None),
            stats: Arc::default(),
        }
    }

    /// The counters `LookupStats` reads: observe this service with them
    /// ([`crate::metrics::observed`]) for the answer to count its calls.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Deletes request-log rows past the retention, at most once a minute
    /// (called on writes, so an idle log costs nothing).
    async fn prune_served(&self) -> Result<()> {
        {
            let mut last = self.last_prune.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let retention =
            i64::try_from(self.options.served_retention.as_micros()).unwrap_or(i64::MAX);
        let pruned = served::prune(&self.db, now_micros().saturating_sub(retention)).await?;
        if pruned > 0 {
            tracing::debug!(rows = pruned, "request log pruned");
        }
        Ok(())
    }

    /// Publishes `data_arrived` on `bus` after every ingest, offline push
    /// and materialization that wrote rows.
    pub fn with_events(mut self, bus: Arc<dyn EventBus>) -> LocalFeatures {
        self.events = Some(bus);
        self
    }

    /// Writes `data_arrived` to `outbox` (the outbox of this service's
    /// database): with the offline rows, in their transaction, for ingest
    /// and offline pushes; right after the online writes for
    /// materialization (they are not in SQL). The drain task publishes
    /// them, so a write never waits for the bus and its event outlives a
    /// bus outage and a crash.
    pub fn with_outbox(mut self, outbox: Arc<Outbox>) -> LocalFeatures {
        self.outbox = Some(outbox);
        self
    }

    /// The `data_arrived` event of `rows` rows reaching `view`, when rows
    /// were written and someone listens (a bus or an outbox).
    fn data_event(
        &self,
        view: &str,
        rows: usize,
        source: &str,
        newest: Option<i64>,
    ) -> Option<Event> {
        if rows == 0 || (self.events.is_none() && self.outbox.is_none()) {
            return None;
        }
        Some(Event::DataArrived {
            feature_view: view.to_string(),
            rows: rows as u64,
            source: source.to_string(),
            newest_event: newest,
            at: now_micros(),
        })
    }

    /// The event a SQL write stages in its own transaction: with an
    /// outbox, the data event; else none.
    fn staged<'e>(&self, event: &'e Option<Event>) -> Option<&'e Event> {
        self.outbox.as_ref().and(event.as_ref())
    }

    /// Tells subscribers (the training role's triggers) that rows arrived,
    /// once the write is done: wakes the outbox's drain when the write
    /// staged `event` in its transaction (`staged`), writes it to the
    /// outbox now when it did not, or, without an outbox, publishes it
    /// within the bus's publish timeout. Best effort: the write has
    /// happened either way (a failure is logged).
    async fn data_arrived(&self, event: Option<Event>, staged: bool) {
        let Some(event) = event else { return };
        match (&self.outbox, &self.events) {
            (Some(outbox), _) if staged => outbox.wake(),
            (Some(outbox), _) => {
                if let Err(err) = outbox.stage_now(&event).await {
                    tracing::warn!(error = %err, ?event, "could not write data_arrived to the event outbox");
                }
            }
            (None, Some(bus)) => {
                if let Err(err) = publish_bounded(bus.as_ref(), &event).await {
                    tracing::warn!(error = %err, ?event, "could not publish data_arrived");
                }
            }
            (None, None) => {}
        }
    }

    /// The online store's name (memory or redis).
    pub fn online_store(&self) -> &'static str {
        self.online.name()
    }

    async fn catalog(&self) -> Result<(Arc<Catalog>, Arc<HashMap<String, (i64, PipelineSpec)>>)> {
        if let Ok(guard) = self.cache.read() {
            if let Some(c) = guard.as_ref().filter(|c| c.at.elapsed() < CATALOG_REFRESH) {
                return Ok((c.catalog.clone(), c.pipelines.clone()));
            }
        }
        let catalog = Arc::new(catalog::load(&self.db).await?);
        let mut pipelines = HashMap::new();
        for (model, version, spec) in catalog::load_kind(&self.db, PIPELINE).await? {
            let value = serde_json::from_str(&spec)
                .map_err(|e| FeaturesError::Internal(format!("stored pipeline '{model}': {e}")))?;
            let spec = serde_json::from_value(value)
                .map_err(|e| FeaturesError::Internal(format!("stored pipeline '{model}': {e}")))?;
            pipelines.insert(model, (version, spec));
        }
        let pipelines = Arc::new(pipelines);
        if let Ok(mut guard) = self.cache.write() {
            *guard = Some(Cached {
                at: Instant::now(),
                catalog: catalog.clone(),
                pipelines: pipelines.clone(),
            });
        }
        Ok((catalog, pipelines))
    }

    fn invalidate(&self) {
        if let Ok(mut guard) = self.cache.write() {
            *guard = None;
        }
    }

    fn all_pipelines(
        &self,
        stored: &HashMap<String, (i64, PipelineSpec)>,
    ) -> BTreeMap<String, (i64, PipelineSpec)> {
        let mut all: BTreeMap<String, (i64, PipelineSpec)> = self
            .options
            .pipelines
            .iter()
            .map(|(m, s)| (m.clone(), (0, s.clone())))
            .collect();
        all.extend(stored.iter().map(|(m, s)| (m.clone(), s.clone())));
        all
    }

    async fn validated_rows(
        &self,
        view_name: &str,
        rows: &[Row],
        default_ts: Option<i64>,
    ) -> Result<(i64, Vec<OfflineRow>)> {
        let (catalog, _) = self.catalog().await?;
        let view = catalog.view(view_name)?;
        let keys = join_keys(&catalog, view);
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let event_ts = match (row.event_ts, default_ts) {
                (0, Some(now)) => now,
                (0, None) => return Err(invalid(format!("row {i}: event_ts is required"))),
                (ts, _) => ts,
            };
            let (key, values_json) = feature_row(&keys, view, &row.values)
                .map_err(|e| invalid(format!("row {i}: {e}")))?;
            out.push(OfflineRow {
                key,
                event_ts,
                values_json,
            });
        }
        Ok((view.ttl_secs, out))
    }

    async fn write_online(&self, view: &str, rows: &[OfflineRow], ttl: i64) -> Result<usize> {
        let online: Vec<OnlineRow> = rows
            .iter()
            .map(|r| OnlineRow {
                key: r.key.clone(),
                event_ts: r.event_ts,
                values_json: r.values_json.clone(),
            })
            .collect();
        self.online.write(view, &online, ttl).await
    }
}

#[async_trait]
impl FeatureService for LocalFeatures {
    async fn apply(
        &self,
        _ctx: CallContext,
        request: ApplyRequest,
    ) -> ServiceResult<ApplyResponse> {
        self.invalidate();
        let (current, stored) = self.catalog().await?;
        let in_use: Vec<String> = self
            .all_pipelines(&stored)
            .values()
            .filter_map(|(_, spec)| match spec {
                PipelineSpec::Tabular(t) => Some(t.lookups()),
                _ => None,
            })
            .flatten()
            .collect();
        let changes = catalog::plan(&current, request, &in_use)?;
        let mut tx = self.db.begin_write().await.map_err(FeaturesError::from)?;
        let mut lines = Vec::new();
        for change in &changes {
            if change.verb != "unchanged" {
                catalog::store(
                    &mut tx,
                    change.kind,
                    &change.name,
                    change.version,
                    &change.spec,
                )
                .await?;
            }
            let kind = change.kind.replace('_', " ");
            lines.push(format!(
                "{} {kind} {} (v{})",
                change.verb, change.name, change.version
            ));
        }
        tx.commit().await.map_err(FeaturesError::from)?;
        self.invalidate();
        tracing::info!(changes = changes.len(), "feature definitions applied");
        Ok(ApplyResponse { changes: lines })
    }

    async fn list_entities(
        &self,
        _ctx: CallContext,
        _request: ListRequest,
    ) -> ServiceResult<ListEntitiesResponse> {
        let (catalog, _) = self.catalog().await?;
        let mut list: Vec<Entity> = catalog.entities.values().cloned().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ListEntitiesResponse { entities: list })
    }

    async fn list_feature_views(
        &self,
        _ctx: CallContext,
        _request: ListRequest,
    ) -> ServiceResult<ListFeatureViewsResponse> {
        let (catalog, _) = self.catalog().await?;
        let mut list: Vec<FeatureView> = catalog.views.values().cloned().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        let fresh = offline::freshness(&self.db).await?;
        let freshness = list
            .iter()
            .map(|view| {
                let (to, at, newest) = fresh.get(&view.name).copied().unwrap_or_default();
                ViewFreshness {
                    view: view.name.clone(),
                    materialized_to_us: to,
                    materialized_at_us: at,
                    newest_event_us: newest,
                }
            })
            .collect();
        Ok(ListFeatureViewsResponse {
            feature_views: list,
            freshness,
        })
    }

    async fn ingest(
        &self,
        _ctx: CallContext,
        request: IngestRequest,
    ) -> ServiceResult<WriteResponse> {
        let (_, rows) = self
            .validated_rows(&request.feature_view, &request.rows, None)
            .await?;
        let newest = rows.iter().map(|r| r.event_ts).max();
        let event = self.data_event(&request.feature_view, rows.len(), "ingest", newest);
        let staged = self.staged(&event);
        let written = offline::append(&self.db, &request.feature_view, &rows, staged).await?;
        let staged = staged.is_some();
        self.data_arrived(event, staged).await;
        Ok(WriteResponse {
            offline_rows: written as i64,
            online_rows: 0,
        })
    }

    async fn push(&self, _ctx: CallContext, request: PushRequest) -> ServiceResult<WriteResponse> {
        let (to_online, to_offline) = match request.to.as_str() {
            "" | "online" => (true, false),
            "offline" => (false, true),
            "online_and_offline" | "both" => (true, true),
            other => {
                return Err(invalid(format!(
                    "push 'to' must be online, offline or online_and_offline, not '{other}'"
                ))
                .into())
            }
        };
        let (ttl, rows) = self
            .validated_rows(&request.feature_view, &request.rows, Some(now_micros()))
            .await?;
        let mut response = WriteResponse::default();
        if to_offline {
            let newest = rows.iter().map(|r| r.event_ts).max();
            let event = self.data_event(&request.feature_view, rows.len(), "ingest", newest);
            let staged = self.staged(&event);
            let written = offline::append(&self.db, &request.feature_view, &rows, staged).await?;
            response.offline_rows = written as i64;
            let staged = staged.is_some();
            self.data_arrived(event, staged).await;
        }
        if to_online {
            let (catalog, _) = self.catalog().await?;
            if !catalog.view(&request.feature_view)?.online {
                return Err(invalid(format!(
                    "feature view '{}' is not online",
                    request.feature_view
                ))
                .into());
            }
            response.online_rows =
                self.write_online(&request.feature_view, &rows, ttl).await? as i64;
        }
        Ok(response)
    }

    async fn materialize(
        &self,
        _ctx: CallContext,
        request: MaterializeRequest,
    ) -> ServiceResult<MaterializeResponse> {
        let (catalog, _) = self.catalog().await?;
        let names: Vec<String> = if request.feature_views.is_empty() {
            let mut names: Vec<String> = catalog
                .views
                .values()
                .filter(|v| v.online)
                .map(|v| v.name.clone())
                .collect();
            names.sort();
            names
        } else {
            request.feature_views.clone()
        };
        let end = if request.end_ts == 0 {
            now_micros()
        } else {
            request.end_ts
        };
        let mut views = Vec::new();
        for name in names {
            let view = catalog.view(&name)?;
            if !view.online {
                return Err(invalid(format!("feature view '{name}' is not online")).into());
            }
            let start = if request.incremental {
                match offline::watermark(&self.db, &name).await? {
                    Some(previous) => previous.saturating_add(1),
                    None => i64::MIN,
                }
            } else {
                request.start_ts
            };
            if start > end {
                return Err(invalid(format!("materialize {name}: start is after end")).into());
            }
            let ttl = view.ttl_secs;
            let written = Arc::new(AtomicUsize::new(0));
            offline::latest_in_range(&self.db, &name, start, end, MATERIALIZE_CHUNK, |batch| {
                let (online, name, written) = (self.online.clone(), name.clone(), written.clone());
                async move {
                    let n = online.write(&name, &batch, ttl).await?;
                    written.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                }
            })
            .await?;
            let written = written.load(Ordering::Relaxed);
            if request.incremental {
                offline::set_watermark(&self.db, &name, end).await?;
            }
            tracing::info!(view = %name, start, end, "materialized");
            let event = self.data_event(&name, written, "materialize", None);
            self.data_arrived(event, false).await;
            views.push(MaterializedView {
                feature_view: name,
                start_ts: start,
                end_ts: end,
                rows_written: written as i64,
            });
        }
        Ok(MaterializeResponse { views })
    }

    async fn get_online_features(
        &self,
        _ctx: CallContext,
        request: GetOnlineFeaturesRequest,
    ) -> ServiceResult<GetOnlineFeaturesResponse> {
        let (catalog, _) = self.catalog().await?;
        Ok(lookup::get_online(
            &catalog,
            self.online.as_ref(),
            &request.features,
            &request.entities,
            self.options.max_entities,
        )
        .await?)
    }

    async fn get_historical_features(
        &self,
        _ctx: CallContext,
        request: GetHistoricalFeaturesRequest,
    ) -> ServiceResult<HistoricalStream> {
        let (catalog, _) = self.catalog().await?;
        Ok(history::start(&self.db, &catalog, &request.features, request.entities).await?)
    }

    async fn list_entity_rows(
        &self,
        _ctx: CallContext,
        request: EntityRowsRequest,
    ) -> ServiceResult<mlserve_proto::rpc::ServiceStream<EntityRow>> {
        let (catalog, _) = self.catalog().await?;
        let view = catalog.view(&request.feature_view)?;
        let keys: Vec<String> = join_keys(&catalog, view)
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        let rows = offline::entity_rows(
            &self.db,
            &view.name,
            request.start_ts,
            request.end_ts,
            request.limit,
        )
        .await?;
        let entity_rows = rows.into_iter().map(move |(key, event_ts)| {
            let values: Vec<serde_json::Value> = serde_json::from_str(&key).unwrap_or_default();
            Ok(EntityRow {
                keys: keys
                    .iter()
                    .cloned()
                    .zip(values.iter().map(|v| v.to_string()))
                    .collect(),
                event_ts,
            })
        });
        Ok(Box::pin(tokio_stream::iter(
            entity_rows.collect::<Vec<_>>(),
        )))
    }

    async fn put_pipeline(
        &self,
        _ctx: CallContext,
        pipeline: Pipeline,
    ) -> ServiceResult<ApplyResponse> {
        let value = crate::values::parse_json(&pipeline.spec_json, "spec_json")?;
        let spec = PipelineSpec::from_json(value, &pipeline.model)?;
        if !pipeline.kind.is_empty() && pipeline.kind != spec.kind() {
            return Err(invalid(format!(
                "pipeline kind '{}' does not match its spec's kind '{}'",
                pipeline.kind,
                spec.kind()
            ))
            .into());
        }
        if let PipelineSpec::Tabular(t) = &spec {
            let (catalog, _) = self.catalog().await?;
            lookup::parse_refs(&catalog, &t.lookups()).or_else(|e| {
                if t.lookups().is_empty() {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })?;
        }
        let (_, stored) = self.catalog().await?;
        let version = stored.get(&pipeline.model).map_or(1, |(v, _)| v + 1);
        let json =
            serde_json::to_string(&spec).map_err(|e| FeaturesError::Internal(e.to_string()))?;
        let mut tx = self.db.begin_write().await.map_err(FeaturesError::from)?;
        catalog::store(&mut tx, PIPELINE, &pipeline.model, version, &json).await?;
        tx.commit().await.map_err(FeaturesError::from)?;
        self.invalidate();
        Ok(ApplyResponse {
            changes: vec![format!("stored pipeline {} (v{version})", pipeline.model)],
        })
    }

    async fn list_pipelines(
        &self,
        _ctx: CallContext,
        _request: ListRequest,
    ) -> ServiceResult<ListPipelinesResponse> {
        let (_, stored) = self.catalog().await?;
        let pipelines = self
            .all_pipelines(&stored)
            .into_iter()
            .map(|(model, (_, spec))| pipeline_message(model, &spec))
            .collect::<ServiceResult<Vec<_>>>()?;
        Ok(ListPipelinesResponse { pipelines })
    }

    async fn get_pipeline(
        &self,
        _ctx: CallContext,
        request: GetPipelineRequest,
    ) -> ServiceResult<Pipeline> {
        let (_, stored) = self.catalog().await?;
        match self.all_pipelines(&stored).remove(&request.model) {
            Some((_, spec)) => pipeline_message(request.model, &spec),
            None => Err(FeaturesError::NotFound(format!(
                "model '{}' has no pipeline",
                request.model
            ))
            .into()),
        }
    }

    async fn transform(
        &self,
        _ctx: CallContext,
        request: TransformRequest,
    ) -> ServiceResult<TransformResponse> {
        let (_, stored) = self.catalog().await?;
        let (version, spec) = match stored.get(&request.model) {
            Some(found) => found.clone(),
            None => self
                .options
                .pipelines
                .get(&request.model)
                .map(|s| (0, s.clone()))
                .ok_or_else(|| {
                    FeaturesError::NotFound(format!(
                        "model '{}' has no preprocessing pipeline",
                        request.model
                    ))
                })?,
        };
        let batch = request
            .rows_json
            .len()
            .max(request.images.len())
            .max(request.texts.len());
        if batch > self.options.max_entities {
            return Err(invalid(format!(
                "{batch} items, more than the limit of {}",
                self.options.max_entities
            ))
            .into());
        }
        let tensors = match &spec {
            PipelineSpec::Tabular(t) => vec![self.tabular(t, &request.rows_json).await?],
            PipelineSpec::Image { output, image } => {
                vec![transform::run_image(image, output, request.images).await?]
            }
            PipelineSpec::Text { text } => {
                let loaded = self.text_transform(&request.model, version, text).await?;
                transform::run_text(loaded, request.texts).await?
            }
        };
        Ok(TransformResponse { tensors })
    }

    async fn log_served(
        &self,
        _ctx: CallContext,
        request: LogServedRequest,
    ) -> ServiceResult<LogServedResponse> {
        served::validate(&request.rows)?;
        let written = served::append(&self.db, &request.rows).await?;
        if let Err(err) = self.prune_served().await {
            tracing::warn!(error = %err, "cannot prune the request log");
        }
        Ok(LogServedResponse {
            rows: written as u64,
        })
    }

    async fn list_served(
        &self,
        _ctx: CallContext,
        request: ListServedRequest,
    ) -> ServiceResult<ListServedResponse> {
        let range = served::Range {
            model: &request.model,
            version: &request.version,
            start: request.start_ts,
            end: request.end_ts,
            limit: request.limit,
            oldest: request.oldest,
        };
        Ok(ListServedResponse {
            rows: served::list(&self.db, &range).await?,
        })
    }

    async fn served_versions(
        &self,
        _ctx: CallContext,
        request: ServedVersionsRequest,
    ) -> ServiceResult<ServedVersionsResponse> {
        Ok(ServedVersionsResponse {
            versions: served::versions(&self.db, request.since_ts).await?,
        })
    }

    async fn lookup_stats(
        &self,
        _ctx: CallContext,
        _request: LookupStatsRequest,
    ) -> ServiceResult<LookupStatsResponse> {
        Ok(self.stats.lookup_stats())
    }
}

/// A pipeline as the service answers it.
fn pipeline_message(model: String, spec: &PipelineSpec) -> ServiceResult<Pipeline> {
    Ok(Pipeline {
        model,
        kind: spec.kind().into(),
        spec_json: serde_json::to_string(spec)
            .map_err(|e| FeaturesError::Internal(e.to_string()))?,
    })
}
