//! The registry's Prometheus counters, rendered on the node's metrics port.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use mlserve_proto::ErrorCode;

/// Counters of one registry.
#[derive(Debug, Default)]
pub struct RegistryMetrics {
    versions_created: AtomicU64,
    upload_bytes: AtomicU64,
    download_bytes: AtomicU64,
    alias_moves: AtomicU64,
    orphans_collected: AtomicU64,
    refused: [AtomicU64; ErrorCode::ALL.len()],
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
    pub fn render(&self) -> String {
        let mut out = String::new();
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
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let name = "mlserve_registry_uploads_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Version uploads refused, by error code.\n# TYPE {name} counter"
        );
        for (code, counter) in ErrorCode::ALL.iter().zip(&self.refused) {
            let value = get(counter);
            if value > 0 {
                let _ = writeln!(out, "{name}{{code=\"{code}\"}} {value}");
            }
        }
        out
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
        let text = m.render();
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
