//! Prometheus metrics of the features role: calls, outcomes and time per
//! operation, and entities looked up, taken by a [`Metered`] wrapper around
//! any [`FeatureService`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use mlserve_proto::features::*;
use mlserve_proto::{CallContext, ServiceResult};

/// Calls and seconds per (operation, outcome).
type Calls = BTreeMap<(&'static str, &'static str), (u64, f64)>;

/// Counters per (operation, outcome).
#[derive(Default)]
pub struct Stats {
    calls: Mutex<Calls>,
    online_entities: AtomicU64,
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

    /// The Prometheus text exposition of these counters.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP mlserve_features_requests_total Feature service calls by operation and outcome.\n\
             # TYPE mlserve_features_requests_total counter\n",
        );
        let calls = self.calls.lock().map(|c| c.clone()).unwrap_or_default();
        for ((op, outcome), (count, _)) in &calls {
            out.push_str(&format!(
                "mlserve_features_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}} {count}\n"
            ));
        }
        out.push_str(
            "# HELP mlserve_features_request_seconds_total Time spent in feature service calls.\n\
             # TYPE mlserve_features_request_seconds_total counter\n",
        );
        for ((op, outcome), (_, secs)) in &calls {
            out.push_str(&format!(
                "mlserve_features_request_seconds_total{{op=\"{op}\",outcome=\"{outcome}\"}} {secs}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP mlserve_features_online_entities_total Entities asked of the online store.\n\
             # TYPE mlserve_features_online_entities_total counter\n\
             mlserve_features_online_entities_total {}\n",
            self.online_entities.load(Ordering::Relaxed)
        ));
        out
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
        let result = metered!(
            self,
            "get_online_features",
            self.inner.get_online_features(ctx, r)
        );
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
        let text = stats.render();
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
