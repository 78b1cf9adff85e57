//! Metrics of the models served from the registry.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::metrics::escape;

/// Counters and gauges of the registry follower, by model (and reason).
#[derive(Default)]
pub struct FollowMetrics {
    serving: Mutex<BTreeMap<String, u64>>,
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

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let per_model = [
            (
                "mlserve_inference_registry_serving_version",
                "gauge",
                "The registry version each followed model serves.",
                &self.serving,
            ),
            (
                "mlserve_inference_registry_swaps_total",
                "counter",
                "Versions switched in (the first load included).",
                &self.swaps,
            ),
            (
                "mlserve_inference_registry_downloads_total",
                "counter",
                "Artifact files downloaded from the registry.",
                &self.downloads,
            ),
            (
                "mlserve_inference_registry_cache_hits_total",
                "counter",
                "Artifact files found in the local cache, checksum verified.",
                &self.cache_hits,
            ),
        ];
        for (name, kind, help, map) in per_model {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (model, value) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {value}", escape(model));
            }
        }
        let name = "mlserve_inference_registry_sync_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Versions refused (the previous one kept serving), by reason.\n# TYPE {name} counter"
        );
        for ((model, reason), value) in self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "{name}{{model=\"{}\",reason=\"{}\"}} {value}",
                escape(model),
                escape(reason)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_labels() {
        let metrics = FollowMetrics::default();
        metrics.serving("m", 2);
        metrics.downloaded("m");
        metrics.cache_hit("m");
        metrics.failure("m", "checksum");
        metrics.failure("m", "checksum");
        let text = metrics.render();
        assert!(
            text.contains("mlserve_inference_registry_serving_version{model=\"m\"} 2"),
            "{text}"
        );
        assert!(text.contains("mlserve_inference_registry_swaps_total{model=\"m\"} 1"));
        assert!(text.contains("mlserve_inference_registry_downloads_total{model=\"m\"} 1"));
        assert!(text.contains("mlserve_inference_registry_cache_hits_total{model=\"m\"} 1"));
        assert!(text.contains(
            "mlserve_inference_registry_sync_failures_total{model=\"m\",reason=\"checksum\"} 2"
        ));
    }
}
