//! Prometheus metrics of the features role: calls, outcomes and time per
//! operation, and entities looked up, taken by observing any
//! [`FeatureService`] through its generated [`FeaturesObserved`] decorator.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlserve_common::metrics::{
    counter, counter_family, histogram_family, latency_histogram, Collector, DescriptorEncoder,
    Histogram, Label,
};
use mlserve_proto::features::*;
use mlserve_proto::{CallObserver, ServiceError};

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

/// Counts and times every call of the service it observes (through the
/// generated [`FeaturesObserved`] decorator), and the entities each online
/// lookup asks for.
impl CallObserver for Stats {
    fn started(&self, _rpc: &'static str, request: &dyn Any) {
        if let Some(lookup) = request.downcast_ref::<GetOnlineFeaturesRequest>() {
            self.online_entities
                .fetch_add(lookup.entities.len() as u64, Ordering::Relaxed);
        }
    }

    fn finished(&self, rpc: &'static str, elapsed: Duration, error: Option<&ServiceError>) {
        let outcome = error.map_or("ok", |e| e.code.as_str());
        let seconds = elapsed.as_secs_f64();
        if let Ok(mut calls) = self.calls.lock() {
            let entry = calls.entry((rpc, outcome)).or_default();
            entry.0 += 1;
            entry.1 += seconds;
        }
        if rpc == "get_online_features" {
            self.lookup.observe(seconds);
        }
    }
}

/// `inner`, with every call counted and timed into `stats`.
pub fn observed(inner: Arc<dyn FeatureService>, stats: Arc<Stats>) -> FeaturesObserved {
    FeaturesObserved::new(inner, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::online::MemoryStore;
    use mlserve_proto::CallContext;

    #[tokio::test]
    async fn calls_are_counted_by_outcome() {
        let dir = std::env::temp_dir().join(format!("mlserve-metrics-{}", std::process::id()));
        let db = mlserve_common::db::testing::sqlite(&dir).await;
        let local =
            crate::LocalFeatures::new(db, Arc::new(MemoryStore::default()), Default::default());
        let stats = Arc::new(Stats::default());
        let metered = observed(Arc::new(local), stats.clone());
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
