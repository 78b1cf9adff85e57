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
    bucket_family, counter, counter_family, latency_buckets, Collector, DescriptorEncoder, Label,
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
    lookup: LookupLatency,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            calls: Mutex::default(),
            online_entities: AtomicU64::new(0),
            lookup: LookupLatency::default(),
        }
    }
}

impl Stats {
    /// The online lookups so far, as `LookupStats` answers them.
    pub fn lookup_stats(&self) -> LookupStatsResponse {
        let mut cumulative = 0;
        let buckets = self
            .lookup
            .bounds
            .iter()
            .zip(&self.lookup.counts)
            .map(|(le, n)| {
                cumulative += n.load(Ordering::Relaxed);
                LatencyBucket {
                    le: *le,
                    count: cumulative,
                }
            })
            .collect();
        LookupStatsResponse {
            lookups: self.lookup.total.load(Ordering::Relaxed),
            seconds: self.lookup.nanos.load(Ordering::Relaxed) as f64 / 1e9,
            entities: self.online_entities.load(Ordering::Relaxed),
            buckets,
        }
    }
}

/// Online lookup durations in the shared latency buckets, kept as plain
/// counters so the service can answer them as well as export them.
#[derive(Debug)]
struct LookupLatency {
    /// The finite upper bounds (seconds).
    bounds: Vec<f64>,
    /// Lookups in each finite bucket alone.
    counts: Vec<AtomicU64>,
    /// Every lookup (the +Inf bucket is `total` minus the finite ones).
    total: AtomicU64,
    /// Summed duration.
    nanos: AtomicU64,
}

impl Default for LookupLatency {
    fn default() -> Self {
        let bounds: Vec<f64> = latency_buckets().collect();
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        LookupLatency {
            bounds,
            counts,
            total: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        }
    }
}

impl LookupLatency {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|le| seconds <= *le) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// `(upper bound, count in that bucket alone)`, +Inf last.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(le, n)| (*le, n.load(Ordering::Relaxed)))
            .collect();
        let finite: u64 = out.iter().map(|(_, n)| n).sum();
        let total = self.total.load(Ordering::Relaxed);
        out.push((f64::INFINITY, total.saturating_sub(finite)));
        out
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
        bucket_family(
            &mut encoder,
            "mlserve_features_lookup_duration_seconds",
            "Online feature lookups (get_online_features), any outcome (seconds).",
            [(
                [("op", Label("get_online_features"))],
                self.lookup.buckets(),
                self.lookup.nanos.load(Ordering::Relaxed) as f64 / 1e9,
            )],
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
            self.lookup.observe(elapsed);
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
        assert!(
            text.contains(
                "mlserve_features_lookup_duration_seconds_count{op=\"get_online_features\"} 1"
            ),
            "{text}"
        );
        let lookups = stats.lookup_stats();
        assert_eq!((lookups.lookups, lookups.entities), (1, 3));
        assert_eq!(lookups.buckets.len(), 21);
        let counts: Vec<u64> = lookups.buckets.iter().map(|b| b.count).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert_eq!(counts.last(), Some(&1), "a lookup takes under 26 s");
    }
}
