//! The monitoring role's own metrics: rollout weights, checks and outcomes,
//! readings of the other roles' metrics, and the windows it computed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use mlserve_common::metrics::{
    counter, counter_family, gauge_family, Collector, DescriptorEncoder, Label,
};
use mlserve_proto::monitoring::FeatureDrift;

use crate::drift_watch::DriftWatch;
use crate::engine::Engine;

/// Counters and gauges the engine updates.
#[derive(Debug, Default)]
pub struct MonitoringMetrics {
    weights: Mutex<BTreeMap<String, u32>>,
    checks: Mutex<BTreeMap<(String, &'static str), u64>>,
    outcomes: Mutex<BTreeMap<(String, &'static str), u64>>,
    readings: Mutex<(u64, u64)>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MonitoringMetrics {
    /// The canary's share of `model`'s traffic is `weight` percent.
    pub fn weight(&self, model: &str, weight: u32) {
        locked(&self.weights).insert(model.to_string(), weight);
    }

    /// One check of `model`'s canary ended with `result`.
    pub fn check(&self, model: &str, result: &str) {
        let result = match result {
            "pass" => "pass",
            "fail" => "fail",
            _ => "inconclusive",
        };
        *locked(&self.checks)
            .entry((model.to_string(), result))
            .or_default() += 1;
    }

    /// A rollout of `model` ended (`promoted` or `aborted`).
    pub fn finished(&self, model: &str, outcome: &str) {
        let outcome = if outcome == "promoted" {
            "promoted"
        } else {
            "aborted"
        };
        *locked(&self.outcomes)
            .entry((model.to_string(), outcome))
            .or_default() += 1;
    }

    /// A reading of the sources: how many sources answered, how many failed.
    pub fn read(&self, failed: bool) {
        let mut r = locked(&self.readings);
        r.0 += 1;
        if failed {
            r.1 += 1;
        }
    }
}

/// Encodes the metrics and the default window of every model version.
pub struct MonitoringCollector {
    metrics: Arc<MonitoringMetrics>,
    engine: Arc<Engine>,
    drift: Option<Arc<DriftWatch>>,
}

impl fmt::Debug for MonitoringCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitoringCollector")
            .finish_non_exhaustive()
    }
}

impl MonitoringCollector {
    /// A collector of `metrics` and `engine`'s windows.
    pub fn new(metrics: Arc<MonitoringMetrics>, engine: Arc<Engine>) -> Self {
        MonitoringCollector {
            metrics,
            engine,
            drift: None,
        }
    }

    /// Also encodes `drift`'s latest reports.
    pub fn with_drift(mut self, drift: Option<Arc<DriftWatch>>) -> Self {
        self.drift = drift;
        self
    }
}

impl Collector for MonitoringCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let m = &self.metrics;
        let weights = locked(&m.weights).clone();
        gauge_family(
            &mut encoder,
            "mlserve_rollout_canary_weight_percent",
            "Percent of the model's traffic the rollout sends to the canary.",
            weights
                .iter()
                .map(|(model, w)| ([("model", Label(model))], i64::from(*w))),
        )?;
        let checks = locked(&m.checks).clone();
        counter_family(
            &mut encoder,
            "mlserve_rollout_checks_total",
            "Rollout analysis checks by result (pass, fail, inconclusive).",
            checks.iter().map(|((model, result), n)| {
                ([("model", Label(model)), ("result", Label(result))], *n)
            }),
        )?;
        let outcomes = locked(&m.outcomes).clone();
        counter_family(
            &mut encoder,
            "mlserve_rollouts_finished_total",
            "Rollouts ended, by outcome (promoted, aborted).",
            outcomes.iter().map(|((model, outcome), n)| {
                ([("model", Label(model)), ("outcome", Label(outcome))], *n)
            }),
        )?;
        let (readings, failed) = *locked(&m.readings);
        counter(
            &mut encoder,
            "mlserve_monitoring_readings_total",
            "Readings of the other roles' metrics.",
            readings,
        )?;
        counter(
            &mut encoder,
            "mlserve_monitoring_reading_failures_total",
            "Readings in which a source could not be read.",
            failed,
        )?;
        let mut windows: Vec<_> = self
            .engine
            .windows(self.engine.default_window())
            .into_iter()
            .collect();
        windows.sort_by(|a, b| a.0.cmp(&b.0));
        gauge_family(
            &mut encoder,
            "mlserve_monitoring_window_requests",
            "Requests per model version in the sliding window.",
            windows.iter().map(|((model, version), s)| {
                (
                    [("model", Label(model)), ("version", Label(version))],
                    s.totals.requests as i64,
                )
            }),
        )?;
        gauge_family(
            &mut encoder,
            "mlserve_monitoring_window_server_errors",
            "Requests answered with a 5xx per model version in the sliding window.",
            windows.iter().map(|((model, version), s)| {
                (
                    [("model", Label(model)), ("version", Label(version))],
                    s.totals.server_errors as i64,
                )
            }),
        )?;
        gauge_family(
            &mut encoder,
            "mlserve_monitoring_window_p99_microseconds",
            "p99 latency per model version in the sliding window (microseconds).",
            windows.iter().filter_map(|((model, version), s)| {
                s.totals.quantile(0.99).map(|p| {
                    (
                        [("model", Label(model)), ("version", Label(version))],
                        (p * 1e6) as i64,
                    )
                })
            }),
        )?;
        match &self.drift {
            Some(drift) => encode_drift(&mut encoder, drift),
            None => Ok(()),
        }
    }
}

/// The drift reports: a version's state, and each feature's PSI and KS.
fn encode_drift(encoder: &mut DescriptorEncoder, drift: &DriftWatch) -> fmt::Result {
    let reports = drift.reports("", "");
    gauge_family(
        encoder,
        "mlserve_monitoring_drift_detected",
        "1 while a model version's served inputs or predictions drifted from its reference (0: not drifted; absent: still collecting rows).",
        reports
            .iter()
            .filter(|r| r.state != "collecting")
            .map(|r| {
                (
                    [("model", Label(&r.model)), ("version", Label(&r.version))],
                    i64::from(r.state == "drifted"),
                )
            }),
    )?;
    gauge_family(
        encoder,
        "mlserve_monitoring_drift_rows",
        "Rows of the request log in a version's last drift analysis, by window (reference, current).",
        reports.iter().flat_map(|r| {
            [("reference", r.reference_rows), ("current", r.current_rows)]
                .map(|(window, rows)| {
                    (
                        [
                            ("model", Label(&r.model)),
                            ("version", Label(&r.version)),
                            ("window", Label(window)),
                        ],
                        rows as i64,
                    )
                })
        }),
    )?;
    let per_feature = |pick: fn(&FeatureDrift) -> f64| {
        reports.iter().flat_map(move |r| {
            r.features.iter().map(move |f| {
                (
                    [
                        ("model", Label(&r.model)),
                        ("version", Label(&r.version)),
                        ("feature", Label(&f.feature)),
                        ("kind", Label(&f.kind)),
                    ],
                    pick(f),
                )
            })
        })
    };
    gauge_family(
        encoder,
        "mlserve_monitoring_drift_psi",
        "Population stability index of a feature's served values against the version's reference.",
        per_feature(|f| f.psi),
    )?;
    gauge_family(
        encoder,
        "mlserve_monitoring_drift_ks",
        "Kolmogorov-Smirnov statistic of a feature's served values against the version's reference.",
        per_feature(|f| f.ks),
    )?;
    counter(
        encoder,
        "mlserve_monitoring_drift_failures_total",
        "Drift analyses that could not read the request log.",
        drift.failures(),
    )
}
