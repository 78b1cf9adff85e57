//! The monitoring role: configuration section `[monitoring]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use crate::events::aliases;

/// The monitoring role: the windows it keeps, where it reads them, and the
/// rollouts it drives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringConfig {
    /// gRPC endpoint of the monitoring role, for the CLI and for roles of
    /// other processes; unset: this process (or `127.0.0.1:<server.grpc_port>`).
    pub endpoint: Option<String>,
    /// SQL database of rollouts. It must be the gateways' database: the
    /// rollout writes the traffic split they read. Unset: `gateway.database_url`,
    /// else the embedded SQLite file in `server.data_dir`.
    pub database_url: Option<String>,
    /// Metrics endpoints of the other roles' processes (`host:port`, path
    /// `/metrics`), scraped every `scrape_interval`; `dns:///name:port` stands
    /// for every address the name resolves to (a headless Service's pods).
    /// Empty: the roles of this process are read in-process.
    pub scrape_targets: Vec<String>,
    /// Time between two readings of the metrics.
    #[serde(with = "duration")]
    pub scrape_interval: Duration,
    /// The sliding window `windows` and `rollouts status` show, and the
    /// longest one kept.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Rollouts: the defaults of every rollout and what starts one.
    pub rollouts: RolloutsConfig,
    /// Where the role's own alerts (a rollout aborted) are posted, in
    /// Alertmanager's webhook format (an Alertmanager receiver URL works).
    /// Unset: no webhook.
    pub alert_webhook: Option<String>,
    /// Tries per alert before it is dropped (logged).
    pub alert_webhook_tries: u32,
    /// The first retry's delay; each next one waits twice as long.
    #[serde(with = "duration")]
    pub alert_webhook_retry_delay: Duration,
    /// Drift: the served rows the gateways log, against a reference.
    pub drift: DriftConfig,
}

/// Drift analysis (`[monitoring.drift]`): every `interval`, each model
/// version's rows in the request log over the last `window` are compared
/// with its reference, the first `reference_rows` rows it served. A feature
/// (an input column, or a prediction output) drifts when its PSI is at or
/// over `psi_threshold` and its Kolmogorov–Smirnov p-value is under
/// `ks_alpha`; then `drift_detected` is published and alerted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// Time between two analyses; 0 turns drift analysis off.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// The current window: rows served in the last `window`.
    #[serde(with = "duration")]
    pub window: Duration,
    /// The reference: the first rows a version served.
    pub reference_rows: u64,
    /// Fewest current rows an analysis needs (fewer: `collecting`).
    pub min_rows: u64,
    /// Most current rows read per analysis (the newest).
    pub max_rows: u64,
    /// Quantile bins of the PSI.
    pub bins: usize,
    /// PSI at or over this (0.2: a large shift)...
    pub psi_threshold: f64,
    /// ...and a KS p-value under this make a feature drifted.
    pub ks_alpha: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            interval: Duration::from_secs(60),
            window: Duration::from_secs(15 * 60),
            reference_rows: 1000,
            min_rows: 200,
            max_rows: 5000,
            bins: 10,
            psi_threshold: 0.2,
            ks_alpha: 0.01,
        }
    }
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            endpoint: None,
            database_url: None,
            scrape_targets: Vec::new(),
            scrape_interval: Duration::from_secs(5),
            window: Duration::from_secs(60),
            rollouts: RolloutsConfig::default(),
            alert_webhook: None,
            alert_webhook_tries: 5,
            alert_webhook_retry_delay: Duration::from_secs(1),
            drift: DriftConfig::default(),
        }
    }
}

/// One step of a rollout: `weight` percent to the canary for `duration`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Percent of traffic to the canary, 1..=100.
    pub weight: u32,
    /// How long the step lasts (it also needs one passing check to end).
    #[serde(with = "duration")]
    pub duration: Duration,
}

/// Rollout defaults (`[monitoring.rollouts]`). The default is the paper's:
/// 10% of traffic to the canary for 15 minutes, then 100%.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutsConfig {
    /// A move of this alias starts a rollout of the version it now names
    /// (the training role moves it). Empty: rollouts start only by hand.
    pub trigger_alias: String,
    /// The alias of the stable version; promotion moves it to the canary.
    pub production_alias: String,
    /// The steps, as (weight, duration) pairs. Used unless `step_weight` is set.
    pub steps: Vec<StepConfig>,
    /// Flagger's form: steps of `step_weight` percent up to `max_weight`,
    /// each lasting `interval`. 0: use `steps`.
    pub step_weight: u32,
    /// The last step's weight in Flagger's form.
    pub max_weight: u32,
    /// Time between two analysis checks (Flagger's `interval`).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Failed checks after which the rollout aborts.
    pub threshold: u32,
    /// The canary's server-error share must stay at or under this.
    pub max_error_rate: f64,
    /// ... and exceed the stable version's by no more than this.
    pub max_error_rate_increase: f64,
    /// The canary's p99 latency must stay at or under this.
    #[serde(with = "duration")]
    pub max_p99: Duration,
    /// ... and within this factor of the stable version's p99.
    pub max_p99_ratio: f64,
    /// A canary p99 within this of the stable version's never fails the
    /// ratio: at sub-millisecond latencies one scheduling hiccup moves a
    /// p99 by several times.
    #[serde(with = "duration")]
    pub p99_ratio_floor: Duration,
    /// Canary requests an interval needs to count as a pass or a fail.
    pub min_requests: u64,
    /// Longest wait for every inference process to serve the canary (or,
    /// when promoting, the production alias's new version) before the
    /// rollout aborts.
    #[serde(with = "duration")]
    pub serve_timeout: Duration,
}

impl Default for RolloutsConfig {
    fn default() -> Self {
        RolloutsConfig {
            trigger_alias: aliases::CANARY.into(),
            production_alias: aliases::PRODUCTION.into(),
            steps: vec![StepConfig {
                weight: 10,
                duration: Duration::from_secs(15 * 60),
            }],
            step_weight: 0,
            max_weight: 50,
            interval: Duration::from_secs(60),
            threshold: 2,
            max_error_rate: 0.01,
            max_error_rate_increase: 0.005,
            max_p99: Duration::from_secs(1),
            max_p99_ratio: 3.0,
            p99_ratio_floor: Duration::from_millis(5),
            min_requests: 20,
            serve_timeout: Duration::from_secs(300),
        }
    }
}

impl RolloutsConfig {
    /// The steps this configuration describes: Flagger's form when
    /// `step_weight` is set, else `steps`. Checked: weights 1..=100, rising.
    pub fn resolved_steps(&self) -> Result<Vec<StepConfig>, String> {
        let steps = if self.step_weight > 0 {
            if self.max_weight == 0 || self.max_weight > 100 {
                return Err("monitoring.rollouts.max_weight must be 1..=100".into());
            }
            let mut steps = Vec::new();
            let mut weight = self.step_weight;
            while weight < self.max_weight {
                steps.push(StepConfig {
                    weight,
                    duration: self.interval,
                });
                weight += self.step_weight;
            }
            steps.push(StepConfig {
                weight: self.max_weight,
                duration: self.interval,
            });
            steps
        } else {
            self.steps.clone()
        };
        check_steps(&steps)?;
        Ok(steps)
    }
}

/// Checks a step list: at least one step, weights 1..=100 and not falling.
pub fn check_steps(steps: &[StepConfig]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("a rollout needs at least one step".into());
    }
    let mut last = 0;
    for step in steps {
        if step.weight == 0 || step.weight > 100 {
            return Err(format!("step weight {} must be 1..=100", step.weight));
        }
        if step.weight < last {
            return Err(format!(
                "step weights must not fall ({last} then {})",
                step.weight
            ));
        }
        last = step.weight;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_papers_ten_percent_for_fifteen_minutes() {
        let steps = RolloutsConfig::default().resolved_steps().unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].weight, 10);
        assert_eq!(steps[0].duration, Duration::from_secs(900));
    }

    #[test]
    fn flaggers_form_steps_up_to_the_max_weight() {
        let config = RolloutsConfig {
            step_weight: 20,
            max_weight: 50,
            interval: Duration::from_secs(30),
            ..Default::default()
        };
        let weights: Vec<u32> = config
            .resolved_steps()
            .unwrap()
            .iter()
            .map(|s| s.weight)
            .collect();
        assert_eq!(weights, vec![20, 40, 50]);
    }

    #[test]
    fn bad_steps_are_refused() {
        let step = |weight| StepConfig {
            weight,
            duration: Duration::from_secs(1),
        };
        assert!(check_steps(&[]).is_err());
        assert!(check_steps(&[step(0)]).is_err());
        assert!(check_steps(&[step(101)]).is_err());
        assert!(check_steps(&[step(50), step(10)]).is_err());
        assert!(check_steps(&[step(10), step(10), step(100)]).is_ok());
    }
}
