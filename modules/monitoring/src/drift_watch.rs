//! Drift analysis over the request log: every interval, each model version
//! with rows served in the window is compared, feature by feature, with its
//! reference (the first rows it served), read through the features role's
//! `ListServed`. A version whose set of drifted features grows publishes
//! `drift_detected` and alerts the webhook; the latest report of each
//! version is kept in memory for the API, the CLI and the metrics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mlserve_common::config::DriftConfig;
use mlserve_common::events::{publish_bounded, Event, EventBus};
use mlserve_common::ShutdownSignal;
use mlserve_gateway::keys::now_micros;
use mlserve_proto::features::{
    FeatureService, FeaturesClient, ListServedRequest, ServedRow, ServedVersionsRequest,
};
use mlserve_proto::monitoring::{DriftReport, FeatureDrift};
use mlserve_proto::{CallContext, ServiceResult};

use crate::alerts::{Webhook, WebhookMessage};
use crate::drift::{compare, Thresholds};

/// Longest wait for one read of the request log.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A version's reference: its first rows' values by column, kept once full
/// (it never changes after).
struct Reference {
    columns: BTreeMap<Column, Vec<f64>>,
    rows: u64,
    from_us: i64,
    to_us: i64,
}

/// A column of the served rows: an input feature or a prediction output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    prediction: bool,
    name: String,
}

impl Column {
    /// How the drifted list and the event name it.
    fn label(&self) -> String {
        if self.prediction {
            format!("prediction:{}", self.name)
        } else {
            self.name.clone()
        }
    }
}

fn columns_of(rows: &[ServedRow]) -> BTreeMap<Column, Vec<f64>> {
    let mut columns: BTreeMap<Column, Vec<f64>> = BTreeMap::new();
    for row in rows {
        let both = [(false, &row.features), (true, &row.prediction)];
        for (prediction, values) in both {
            for (name, value) in values {
                let column = Column {
                    prediction,
                    name: name.clone(),
                };
                columns.entry(column).or_default().push(*value);
            }
        }
    }
    columns
}

type Key = (String, String);

/// Drift analysis of every served model version.
pub struct DriftWatch {
    features: FeaturesClient,
    events: Arc<dyn EventBus>,
    settings: DriftConfig,
    webhook: Option<Webhook>,
    references: Mutex<HashMap<Key, Arc<Reference>>>,
    reports: Mutex<BTreeMap<Key, DriftReport>>,
    failures: AtomicU64,
}

impl DriftWatch {
    /// A watch reading the request log through `features`.
    pub fn new(
        features: FeaturesClient,
        events: Arc<dyn EventBus>,
        settings: DriftConfig,
        webhook: Option<Webhook>,
    ) -> DriftWatch {
        DriftWatch {
            features,
            events,
            settings,
            webhook,
            references: Mutex::default(),
            reports: Mutex::default(),
            failures: Default::default(),
        }
    }

    /// Analyses every `settings.interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: ShutdownSignal) {
        let mut ticks = shutdown.ticks(self.settings.interval.max(Duration::from_millis(100)));
        while ticks.next().await {
            if let Err(err) = self.analyse().await {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "drift: cannot read the request log");
            }
        }
    }

    /// Analyses that could not read the request log.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The latest reports, by model and version; only `model`'s (and only
    /// `version`) when not empty.
    pub fn reports(&self, model: &str, version: &str) -> Vec<DriftReport> {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| model.is_empty() || r.model == model)
            .filter(|r| version.is_empty() || r.version == version)
            .cloned()
            .collect()
    }

    /// One analysis of every version served in the window.
    pub async fn analyse(&self) -> ServiceResult<()> {
        let now = now_micros();
        let window = i64::try_from(self.settings.window.as_micros()).unwrap_or(i64::MAX);
        let since = now.saturating_sub(window);
        let served = self
            .features
            .served_versions(ctx(), ServedVersionsRequest { since_ts: since })
            .await?;
        let mut reports = BTreeMap::new();
        for version in served.versions {
            let key = (version.model.clone(), version.version.clone());
            let report = self.analyse_version(&key, since, now).await?;
            reports.insert(key, report);
        }
        let previous = std::mem::replace(
            &mut *self.reports.lock().unwrap_or_else(|e| e.into_inner()),
            reports.clone(),
        );
        for (key, report) in &reports {
            let before: BTreeSet<&String> = previous
                .get(key)
                .map(|r| r.drifted.iter().collect())
                .unwrap_or_default();
            if report.drifted.iter().any(|f| !before.contains(f)) {
                self.announce(report).await;
            }
        }
        Ok(())
    }

    async fn analyse_version(&self, key: &Key, since: i64, now: i64) -> ServiceResult<DriftReport> {
        let thresholds = Thresholds {
            psi: self.settings.psi_threshold,
            ks_alpha: self.settings.ks_alpha,
        };
        let mut report = DriftReport {
            model: key.0.clone(),
            version: key.1.clone(),
            state: "collecting".into(),
            analysed_at_us: now,
            psi_threshold: thresholds.psi,
            ks_alpha: thresholds.ks_alpha,
            ..Default::default()
        };
        let Some(reference) = self.reference(key).await? else {
            return Ok(report);
        };
        report.reference_rows = reference.rows;
        report.reference_from_us = reference.from_us;
        report.reference_to_us = reference.to_us;
        // The current window starts after the reference ends: the two never
        // share a row.
        let start = since.max(reference.to_us + 1);
        let current = self
            .served(key, start, self.settings.max_rows.max(1), false)
            .await?;
        report.current_rows = current.len() as u64;
        report.current_from_us = current.first().map_or(0, |r| r.served_ts);
        report.current_to_us = current.last().map_or(0, |r| r.served_ts);
        if (current.len() as u64) < self.settings.min_rows.max(1) {
            return Ok(report);
        }
        let current = columns_of(&current);
        for (column, reference_values) in &reference.columns {
            let Some(current_values) = current.get(column) else {
                continue;
            };
            let Some(d) = compare(reference_values, current_values, self.settings.bins) else {
                continue;
            };
            let drifted = d.drifted(&thresholds);
            if drifted {
                report.drifted.push(column.label());
            }
            report.features.push(FeatureDrift {
                feature: column.name.clone(),
                kind: if column.prediction {
                    "prediction"
                } else {
                    "input"
                }
                .into(),
                psi: d.psi,
                ks: d.ks,
                p_value: d.p_value,
                reference_mean: d.reference_mean,
                current_mean: d.current_mean,
                drifted,
                bin_edges: d.histogram.edges,
                reference_counts: d.histogram.reference,
                current_counts: d.histogram.current,
            });
        }
        report.state = if report.drifted.is_empty() {
            "ok"
        } else {
            "drifted"
        }
        .into();
        Ok(report)
    }

    /// The version's reference, once it has served `reference_rows` rows.
    async fn reference(&self, key: &Key) -> ServiceResult<Option<Arc<Reference>>> {
        if let Some(found) = self
            .references
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Ok(Some(found.clone()));
        }
        let wanted = self.settings.reference_rows.max(1);
        let rows = self.served(key, 0, wanted, true).await?;
        if (rows.len() as u64) < wanted {
            return Ok(None);
        }
        let reference = Arc::new(Reference {
            columns: columns_of(&rows),
            rows: rows.len() as u64,
            from_us: rows.first().map_or(0, |r| r.served_ts),
            to_us: rows.last().map_or(0, |r| r.served_ts),
        });
        self.references
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), reference.clone());
        Ok(Some(reference))
    }

    /// The version's logged rows served from `start` on: the oldest or the
    /// newest `limit` of them, oldest first.
    async fn served(
        &self,
        key: &Key,
        start: i64,
        limit: u64,
        oldest: bool,
    ) -> ServiceResult<Vec<ServedRow>> {
        let request = ListServedRequest {
            model: key.0.clone(),
            version: key.1.clone(),
            start_ts: start,
            end_ts: 0,
            limit,
            oldest,
        };
        Ok(self.features.list_served(ctx(), request).await?.rows)
    }

    /// Publishes `drift_detected` and alerts the webhook.
    async fn announce(&self, report: &DriftReport) {
        tracing::warn!(
            model = %report.model,
            version = %report.version,
            features = ?report.drifted,
            "drift detected"
        );
        let event = Event::DriftDetected {
            model: report.model.clone(),
            version: report.version.parse().unwrap_or(0),
            features: report.drifted.clone(),
            at: now_micros(),
        };
        if let Err(err) = publish_bounded(self.events.as_ref(), &event).await {
            tracing::warn!(error = %err, "drift: cannot publish drift_detected");
        }
        if let Some(hook) = &self.webhook {
            let summary = format!(
                "the served inputs or predictions of {} version {} drifted from its reference",
                report.model, report.version
            );
            let description = report
                .features
                .iter()
                .filter(|f| f.drifted)
                .map(|f| {
                    format!(
                        "{} ({}): PSI {:.3}, KS {:.3} (p {:.2e}), mean {:.4} -> {:.4}",
                        f.feature, f.kind, f.psi, f.ks, f.p_value, f.reference_mean, f.current_mean
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            hook.send(WebhookMessage::firing(
                "MlserveModelDrift",
                "warning",
                &[
                    ("model", report.model.clone()),
                    ("version", report.version.clone()),
                ],
                &summary,
                &description,
                SystemTime::now(),
            ));
        }
    }
}

fn ctx() -> CallContext {
    CallContext::new().with_timeout(READ_TIMEOUT)
}
