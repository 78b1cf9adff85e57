//! Prometheus metrics of the features role: calls, outcomes and time per
//! operation, and entities looked up, taken by a [`Metered`] wrapper around
//! any [`FeatureService`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use mlserve_common::metrics::{
    counter, counter_family, histogram_family, latency_histogram, Collector, DescriptorEncoder,
    Histogram, Label,
};
use mlserve_proto::features::*;
use mlserve_proto::{CallContext, ServiceResult};

/// Calls and seconds per (operation, outcome).
type Calls = BTreeMap<(&'static str, &'static str), (u64, f64)>;

/// Counters per (operation, outcome).
#[derive(Debug)]
pub struct Stats {
    calls: Mutex<Calls>,
    online_entities: AtomicU64,
    lookup: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            calls: Mutex::default(),
            online_entities: AtomicU64::new(0),
            lookup: latency_histogram(),
        }
    }
}

impl Stats {
    fn record<T>(&self, op: &'static str, started: Instant, result: &ServiceResult<T>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        if let Ok(mut calls) = self.calls.lock() {
            let entry = calls.entry((op, outcome)).or_default();
            entry.0 += 1;
            entry.1 += started.elapsed().as_secs_f64();
        }
    }
}

/// Encoded at scrape time.
impl Collector for Stats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let calls = self.calls.lock().map(|c| c.clone()).unwrap_or_default();
        let labels = |op: &'static str, outcome: &'static str| {
            [("op", Label(op)), ("outcome", Label(outcome))]
        };
        counter_family(
            &mut encoder,
            "mlserve_features_requests_total",
            "Feature service calls by operation and outcome.",
            calls
                .iter()
                .map(|((op, outcome), (n, _))| (labels(op, outcome), *n)),
        )?;
        counter_family(
            &mut encoder,
            "mlserve_features_request_seconds_total",
            "Time spent in feature service calls (seconds).",
            calls
                .iter()
                .map(|((op, outcome), (_, secs))| (labels(op, outcome), *secs)),
        )?;
        counter(
            &mut encoder,
            "mlserve_features_online_entities_total",
            "Entities asked of the online store.",
            self.online_entities.load(Ordering::Relaxed),
        )?;
        histogram_family(
            &mut encoder,
            "mlserve_features_lookup_duration_seconds",
            "Online feature lookups (get_online_features), any outcome (seconds).",
            [([("op", Label("get_online_features"))], &self.lookup)],
        )
    }
}

/// A [`FeatureService`] that counts and times every call of `inner`.
pub struct Metered {
    inner: Arc<dyn FeatureService>,
    stats: Arc<Stats>,
}

impl Metered {
    /// Wraps `inner`; the counters go to `stats`.
    pub fn new(inner: Arc<dyn FeatureService>, stats: Arc<Stats>) -> Metered {
        Metered { inner, stats }
    }
}

macro_rules! metered {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.stats.record($op, started, &result);
        result
    }};
}

#[async_trait]
impl FeatureService for Metered {
    async fn apply(&self, ctx: CallContext, r: ApplyRequest) -> ServiceResult<ApplyResponse> {
        metered!(self, "apply", self.inner.apply(ctx, r))
    }
    async fn list_entities(
        &self,
        ctx: CallContext,
        r: ListRequest,
    ) -> ServiceResult<ListEntitiesResponse> {
        metered!(self, "list_entities", self.inner.list_entities(ctx, r))
    }
    async fn list_feature_views(
        &self,
        ctx: CallContext,
        r: ListRequest,
    ) -> ServiceResult<ListFeatureViewsResponse> {
        metered!(
            self,
            "list_feature_views",
            self.inner.list_feature_views(ctx, r)
        )
    }
    async fn ingest(&self, ctx: CallContext, r: IngestRequest) -> ServiceResult<WriteResponse> {
        metered!(self, "ingest", self.inner.ingest(ctx, r))
    }
    async fn push(&self, ctx: CallContext, r: PushRequest) -> ServiceResult<WriteResponse> {
        metered!(self, "push", self.inner.push(ctx, r))
    }
    async fn materialize(
        &self,
        ctx: CallContext,
        r: MaterializeRequest,
    ) -> ServiceResult<MaterializeResponse> {
        metered!(self, "materialize", self.inner.materialize(ctx, r))
    }
    async fn get_online_features(
        &self,
        ctx: CallContext,
        r: GetOnlineFeaturesRequest,
    ) -> ServiceResult<GetOnlineFeaturesResponse> {
        let entities = r.entities.len() as u64;
        let started = Instant::now();
        let result = self.inner.get_online_features(ctx, r).await;
        self.stats.record("get_online_features", started, &result);
        self.stats.lookup.observe(started.elapsed().as_secs_f64());
        self.stats
            .online_entities
            .fetch_add(entities, Ordering::Relaxed);
        result
    }
    async fn get_historical_features(
        &self,
        ctx: CallContext,
        r: GetHistoricalFeaturesRequest,
    ) -> ServiceResult<HistoricalStream> {
        metered!(
            self,
            "get_historical_features",
            self.inner.get_historical_features(ctx, r)
        )
    }
    async fn put_pipeline(&self, ctx: CallContext, p: Pipeline) -> ServiceResult<ApplyResponse> {
        metered!(self, "put_pipeline", self.inner.put_pipeline(ctx, p))
    }
    async fn list_pipelines(
        &self,
        ctx: CallContext,
        r: ListRequest,
    ) -> ServiceResult<ListPipelinesResponse> {
        metered!(self, "list_pipelines", self.inner.list_pipelines(ctx, r))
    }
    async fn get_pipeline(
        &self,
        ctx: CallContext,
        r: GetPipelineRequest,
    ) -> ServiceResult<Pipeline> {
        metered!(self, "get_pipeline", self.inner.get_pipeline(ctx, r))
    }
    async fn transform(
        &self,
        ctx: CallContext,
        r: TransformRequest,
    ) -> ServiceResult<TransformResponse> {
        metered!(self, "transform", self.inner.transform(ctx, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::online::MemoryStore;

    #[tokio::test]
    async fn calls_are_counted_by_outcome() {
        let dir = std::env::temp_dir().join(format!("mlserve-metrics-{}", std::process::id()));
        let db = mlserve_common::db::testing::sqlite(&dir).await;
        let local =
            crate::LocalFeatures::new(db, Arc::new(MemoryStore::default()), Default::default());
        let stats = Arc::new(Stats::default());
        let metered = Metered::new(Arc::new(local), stats.clone());
        metered
            .list_entities(CallContext::new(), ListRequest {})
            .await
            .unwrap();
        let request = GetOnlineFeaturesRequest {
            features: vec!["nope:x".into()],
            entities: vec![EntityRow::default(); 3],
        };
        assert!(metered
            .get_online_features(CallContext::new(), request)
            .await
            .is_err());
        let mut registry = mlserve_common::metrics::Registry::default();
        registry.register_collector(Box::new(stats.clone()));
        let text = mlserve_common::metrics::encode(&registry);
        assert!(
            text.contains("mlserve_features_requests_total{op=\"list_entities\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("op=\"get_online_features\",outcome=\"not_found\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mlserve_features_online_entities_total 3"),
            "{text}"
        );
    }
}
