//! Metrics of the models served from the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use mlserve_common::metrics::{counter_family, gauge_family, Collector, DescriptorEncoder, Label};

/// Counters and gauges of the registry follower, by model (and reason).
#[derive(Debug, Default)]
pub struct FollowMetrics {
    serving: Mutex<BTreeMap<String, u64>>,
    following: Mutex<BTreeMap<(String, String), u64>>,
    swaps: Mutex<BTreeMap<String, u64>>,
    downloads: Mutex<BTreeMap<String, u64>>,
    cache_hits: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<BTreeMap<(String, String), u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
}

impl FollowMetrics {
    /// `model` now serves `version`.
    pub fn serving(&self, model: &str, version: u64) {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.to_string(), version);
        bump(&self.swaps, model.to_string());
    }

    /// The entry of `model` that follows `follows` (an alias, or `v<N>`
    /// when pinned) serves `version`: one series per entry, so a model
    /// served as production and canary shows both versions.
    pub fn following(&self, model: &str, follows: &str, version: u64) {
        self.following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((model.to_string(), follows.to_string()), version);
    }

    /// A file of `model` was downloaded.
    pub fn downloaded(&self, model: &str) {
        bump(&self.downloads, model.to_string());
    }

    /// A file of `model` came from the cache.
    pub fn cache_hit(&self, model: &str) {
        bump(&self.cache_hits, model.to_string());
    }

    /// A sync of `model` failed for `reason`.
    pub fn failure(&self, model: &str, reason: &str) {
        bump(&self.failures, (model.to_string(), reason.to_string()));
    }
}

/// Encoded at scrape time.
impl Collector for FollowMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let read = |map: &Mutex<BTreeMap<String, u64>>| {
            map.lock().unwrap_or_else(|p| p.into_inner()).clone()
        };
        let serving = read(&self.serving);
        gauge_family(
            &mut encoder,
            "mlserve_inference_registry_serving_version",
            "The registry version each followed model serves.",
            serving
                .iter()
                .map(|(m, v)| ([("model", Label(m))], *v as i64)),
        )?;
        let following = self
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        gauge_family(
            &mut encoder,
            "mlserve_inference_registry_followed_version",
            "The registry version each followed entry (model and alias) serves.",
            following
                .iter()
                .map(|((m, f), v)| ([("model", Label(m)), ("follows", Label(f))], *v as i64)),
        )?;
        for (name, help, map) in [
            (
                "mlserve_inference_registry_swaps_total",
                "Versions switched in (the first load included).",
                &self.swaps,
            ),
            (
                "mlserve_inference_registry_downloads_total",
                "Artifact files downloaded from the registry.",
                &self.downloads,
            ),
            (
                "mlserve_inference_registry_cache_hits_total",
                "Artifact files found in the local cache, checksum verified.",
                &self.cache_hits,
            ),
        ] {
            let values = read(map);
            counter_family(
                &mut encoder,
                name,
                help,
                values.iter().map(|(m, v)| ([("model", Label(m))], *v)),
            )?;
        }
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        counter_family(
            &mut encoder,
            "mlserve_inference_registry_sync_failures_total",
            "Versions refused (the previous one kept serving), by reason.",
            failures
                .iter()
                .map(|((m, r), v)| ([("model", Label(m)), ("reason", Label(r))], *v)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_common::metrics::{encode, Registry};
    use std::sync::Arc;

    #[test]
    fn encodes_every_series_with_labels() {
        let metrics = Arc::new(FollowMetrics::default());
        metrics.serving("m", 2);
        metrics.following("m", "canary", 3);
        metrics.downloaded("m");
        metrics.cache_hit("m");
        metrics.failure("m", "checksum");
        metrics.failure("m", "checksum");
        let mut registry = Registry::default();
        registry.register_collector(Box::new(metrics));
        let text = encode(&registry);
        for line in [
            "mlserve_inference_registry_serving_version{model=\"m\"} 2",
            "mlserve_inference_registry_followed_version{model=\"m\",follows=\"canary\"} 3",
            "mlserve_inference_registry_swaps_total{model=\"m\"} 1",
            "mlserve_inference_registry_downloads_total{model=\"m\"} 1",
            "mlserve_inference_registry_cache_hits_total{model=\"m\"} 1",
            "mlserve_inference_registry_sync_failures_total{model=\"m\",reason=\"checksum\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
