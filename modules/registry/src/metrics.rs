//! The registry's Prometheus counters, rendered on the node's metrics port.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlserve_common::metrics::{
    counter, counter_family, latency_histogram, Collector, DescriptorEncoder, Histogram, Label,
};

use mlserve_proto::ErrorCode;

/// Counters of one registry.
#[derive(Debug)]
pub struct RegistryMetrics {
    versions_created: AtomicU64,
    upload_bytes: AtomicU64,
    download_bytes: AtomicU64,
    alias_moves: AtomicU64,
    orphans_collected: AtomicU64,
    refused: [AtomicU64; ErrorCode::ALL.len()],
    upload: Histogram,
    download: Histogram,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        RegistryMetrics {
            versions_created: AtomicU64::new(0),
            upload_bytes: AtomicU64::new(0),
            download_bytes: AtomicU64::new(0),
            alias_moves: AtomicU64::new(0),
            orphans_collected: AtomicU64::new(0),
            refused: Default::default(),
            upload: latency_histogram(),
            download: latency_histogram(),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl RegistryMetrics {
    /// A version committed ready with `bytes` of files.
    pub fn version_created(&self, bytes: u64) {
        add(&self.versions_created, 1);
        add(&self.upload_bytes, bytes);
    }
    /// An upload refused with `code`.
    pub fn upload_refused(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            add(&self.refused[i], 1);
        }
    }
    /// Bytes sent by downloads.
    pub fn downloaded(&self, bytes: u64) {
        add(&self.download_bytes, bytes);
    }
    /// An alias set, moved or deleted.
    pub fn alias_moved(&self) {
        add(&self.alias_moves, 1);
    }
    /// Orphan objects deleted by the collector.
    pub fn orphans_collected(&self, n: u64) {
        add(&self.orphans_collected, n);
    }

    /// The Prometheus text exposition of every counter.
    /// An upload that took `took` (committed or refused).
    pub fn upload_took(&self, took: Duration) {
        self.upload.observe(took.as_secs_f64());
    }

    /// A download stream's life: observed when the stream ends or is dropped.
    pub fn download_timer(self: &Arc<Self>) -> DownloadTimer {
        DownloadTimer {
            metrics: self.clone(),
            started: Instant::now(),
        }
    }
}

/// Observes a download's duration when dropped (the stream finished or the
/// caller went away).
#[derive(Debug)]
pub struct DownloadTimer {
    metrics: Arc<RegistryMetrics>,
    started: Instant,
}

impl Drop for DownloadTimer {
    fn drop(&mut self) {
        self.metrics
            .download
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Encoded at scrape time.
impl Collector for RegistryMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "mlserve_registry_versions_created_total",
                "Versions committed ready.",
                get(&self.versions_created),
            ),
            (
                "mlserve_registry_upload_bytes_total",
                "Bytes of files in committed versions.",
                get(&self.upload_bytes),
            ),
            (
                "mlserve_registry_download_bytes_total",
                "Bytes of artifact files sent.",
                get(&self.download_bytes),
            ),
            (
                "mlserve_registry_alias_moves_total",
                "Aliases set, moved or deleted.",
                get(&self.alias_moves),
            ),
            (
                "mlserve_registry_orphans_collected_total",
                "Orphan artifact objects deleted.",
                get(&self.orphans_collected),
            ),
        ] {
            counter(&mut encoder, name, help, value)?;
        }
        counter_family(
            &mut encoder,
            "mlserve_registry_uploads_refused_total",
            "Version uploads refused, by error code.",
            ErrorCode::ALL
                .iter()
                .zip(&self.refused)
                .filter(|(_, c)| get(c) > 0)
                .map(|(code, c)| ([("code", Label(code.as_str()))], get(c))),
        )?;
        for (name, help, histogram) in [
            (
                "mlserve_registry_upload_duration_seconds",
                "Version uploads, committed or refused (seconds).",
                &self.upload,
            ),
            (
                "mlserve_registry_download_duration_seconds",
                "Artifact file downloads, first byte asked to stream end (seconds).",
                &self.download,
            ),
        ] {
            mlserve_common::metrics::histogram(&mut encoder, name, help, histogram)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let m = RegistryMetrics::default();
        m.version_created(10);
        m.version_created(5);
        m.upload_refused(ErrorCode::PayloadTooLarge);
        m.alias_moved();
        m.upload_took(Duration::from_millis(3));
        let m = Arc::new(m);
        drop(m.download_timer());
        let mut registry = mlserve_common::metrics::Registry::default();
        registry.register_collector(Box::new(m));
        let text = mlserve_common::metrics::encode(&registry);
        assert!(
            text.contains("mlserve_registry_upload_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mlserve_registry_download_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mlserve_registry_versions_created_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("mlserve_registry_upload_bytes_total 15\n"),
            "{text}"
        );
        assert!(
            text.contains("mlserve_registry_uploads_refused_total{code=\"payload_too_large\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("code=\"bad_request\""), "{text}");
    }
}
