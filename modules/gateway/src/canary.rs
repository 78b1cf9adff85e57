//! Canary traffic splits: a model served as a stable and a canary version,
//! chosen per request by weight, deterministically when the request has an id.

use std::collections::HashMap;
use std::sync::RwLock;

use mlserve_common::config::CanaryConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::GatewayError;

/// One model's split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanarySplit {
    /// The version most requests go to.
    pub stable: String,
    /// The version under test ("" once promoted or rolled back).
    pub canary: String,
    /// Share of requests for the canary, 0.0 to 1.0.
    pub weight: f64,
}

impl CanarySplit {
    /// Checks versions (non-negative integers) and the weight.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let version_ok =
            |v: &str| !v.is_empty() && v.len() < 20 && v.bytes().all(|b| b.is_ascii_digit());
        if !version_ok(&self.stable) {
            return Err(GatewayError::BadRequest(format!(
                "canary: stable version '{}' must be a non-negative integer",
                self.stable
            )));
        }
        if !self.canary.is_empty() && !version_ok(&self.canary) {
            return Err(GatewayError::BadRequest(format!(
                "canary: canary version '{}' must be a non-negative integer",
                self.canary
            )));
        }
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(GatewayError::BadRequest(format!(
                "canary: weight {} must be between 0 and 1",
                self.weight
            )));
        }
        Ok(())
    }

    /// The version for a request: by the hash of `request_id` when given
    /// (the same id always lands on the same version), else at random.
    pub fn choose(&self, request_id: Option<&str>) -> &str {
        if self.canary.is_empty() || self.weight <= 0.0 {
            return &self.stable;
        }
        let point = match request_id {
            Some(id) if !id.is_empty() => unit_hash(id),
            _ => fastrand::f64(),
        };
        if point < self.weight {
            &self.canary
        } else {
            &self.stable
        }
    }
}

/// Maps a string to [0, 1) uniformly (the first 8 bytes of its SHA-256).
fn unit_hash(id: &str) -> f64 {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// What an admin call does to a model's split.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum CanaryAction {
    /// Set (or replace) the split.
    Set {
        /// The stable version.
        stable: String,
        /// The canary version.
        canary: String,
        /// The canary's share.
        weight: f64,
    },
    /// The canary becomes the stable version; all traffic goes to it.
    Promote,
    /// All traffic back to the stable version.
    Rollback,
}

/// Every model's split, changed at run time by admin calls.
#[derive(Debug, Default)]
pub struct CanaryTable {
    splits: RwLock<HashMap<String, CanarySplit>>,
}

impl CanaryTable {
    /// The table configured at start.
    pub fn from_config(
        config: &std::collections::BTreeMap<String, CanaryConfig>,
    ) -> Result<CanaryTable, GatewayError> {
        let table = CanaryTable::default();
        for (model, c) in config {
            table.apply(
                model,
                CanaryAction::Set {
                    stable: c.stable.clone(),
                    canary: c.canary.clone(),
                    weight: c.weight,
                },
            )?;
        }
        Ok(table)
    }

    /// The split of `model`, if any.
    pub fn get(&self, model: &str) -> Option<CanarySplit> {
        self.splits.read().ok()?.get(model).cloned()
    }

    /// The version `model` should be served from for this request, when it has a split.
    pub fn choose(&self, model: &str, request_id: Option<&str>) -> Option<String> {
        let splits = self.splits.read().ok()?;
        splits.get(model).map(|s| s.choose(request_id).to_string())
    }

    /// Applies an admin action and returns the new split.
    pub fn apply(&self, model: &str, action: CanaryAction) -> Result<CanarySplit, GatewayError> {
        let mut splits = self
            .splits
            .write()
            .map_err(|_| GatewayError::Internal("canary table lock poisoned".into()))?;
        let current = splits.get(model).cloned();
        let next = match (action, current) {
            (
                CanaryAction::Set {
                    stable,
                    canary,
                    weight,
                },
                _,
            ) => CanarySplit {
                stable,
                canary,
                weight,
            },
            (CanaryAction::Promote, Some(s)) if !s.canary.is_empty() => CanarySplit {
                stable: s.canary,
                canary: String::new(),
                weight: 0.0,
            },
            (CanaryAction::Rollback, Some(s)) => CanarySplit {
                stable: s.stable,
                canary: String::new(),
                weight: 0.0,
            },
            (action, _) => {
                return Err(GatewayError::NotFound(format!(
                    "model '{model}' has no canary to {}",
                    match action {
                        CanaryAction::Promote => "promote",
                        _ => "roll back",
                    }
                )))
            }
        };
        next.validate()?;
        tracing::info!(model, stable = %next.stable, canary = %next.canary, weight = next.weight, "canary split changed");
        splits.insert(model.to_string(), next.clone());
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weight: f64) -> CanarySplit {
        CanarySplit {
            stable: "1".into(),
            canary: "2".into(),
            weight,
        }
    }

    #[test]
    fn the_same_id_always_gets_the_same_version() {
        let s = split(0.5);
        for i in 0..100 {
            let id = format!("req-{i}");
            assert_eq!(s.choose(Some(&id)), s.choose(Some(&id)));
        }
    }

    #[test]
    fn proportions_follow_the_weight() {
        let s = split(0.1);
        let n = 20_000;
        let canary = (0..n)
            .filter(|i| s.choose(Some(&format!("id-{i}"))) == "2")
            .count();
        let share = canary as f64 / n as f64;
        // 5 standard deviations of a binomial(20000, 0.1) share is 0.0106.
        assert!((share - 0.1).abs() < 0.0106, "share {share}");
        assert_eq!(split(0.0).choose(Some("x")), "1");
        assert_eq!(split(1.0).choose(None), "2");
    }

    #[test]
    fn promote_and_rollback() {
        let table = CanaryTable::default();
        assert!(table.apply("m", CanaryAction::Promote).is_err());
        table
            .apply(
                "m",
                CanaryAction::Set {
                    stable: "1".into(),
                    canary: "2".into(),
                    weight: 0.3,
                },
            )
            .unwrap();
        let promoted = table.apply("m", CanaryAction::Promote).unwrap();
        assert_eq!((promoted.stable.as_str(), promoted.weight), ("2", 0.0));
        assert_eq!(table.choose("m", None).as_deref(), Some("2"));
        table
            .apply(
                "m",
                CanaryAction::Set {
                    stable: "2".into(),
                    canary: "3".into(),
                    weight: 1.0,
                },
            )
            .unwrap();
        assert_eq!(table.choose("m", Some("a")).as_deref(), Some("3"));
        table.apply("m", CanaryAction::Rollback).unwrap();
        assert_eq!(table.choose("m", Some("a")).as_deref(), Some("2"));
        assert_eq!(table.choose("other", None), None);
    }

    #[test]
    fn bad_splits_are_refused() {
        let table = CanaryTable::default();
        for (stable, canary, weight) in [
            ("x", "2", 0.1),
            ("1", "y", 0.1),
            ("1", "2", 1.5),
            ("", "2", 0.1),
        ] {
            let err = table
                .apply(
                    "m",
                    CanaryAction::Set {
                        stable: stable.into(),
                        canary: canary.into(),
                        weight,
                    },
                )
                .unwrap_err();
            assert_eq!(err.code(), mlserve_proto::ErrorCode::BadRequest);
        }
    }
}
