//! Tabular assembly: an ordered feature list, each from a feature view
//! (`view:feature`, looked up online by the row's join keys) or from the
//! request (a plain name), with a policy for missing values, into one
//! `[rows, features]` tensor.

use std::collections::HashMap;

use mlserve_proto::features::{GetOnlineFeaturesResponse, Tensor, PRESENT};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{invalid, Result};

/// What happens when a feature has no value (not found, null, too old, or
/// absent from the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// The request fails with 400 naming the feature.
    #[default]
    Error,
    /// The declared `default` is used.
    Default,
    /// The declared `mean`, else the mean of the offline values, is used.
    Mean,
}

/// One input column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TabularFeature {
    /// `view:feature` for a feature store value, a plain name for a value the
    /// request supplies.
    pub name: String,
    /// Missing-value policy.
    #[serde(default)]
    pub missing: Missing,
    /// The value used by the `default` policy.
    #[serde(default)]
    pub default: Option<f64>,
    /// A declared mean for the `mean` policy (else computed offline).
    #[serde(default)]
    pub mean: Option<f64>,
}

impl TabularFeature {
    /// The `view:feature` reference, when the value comes from a view.
    pub fn view_ref(&self) -> Option<&str> {
        self.name.contains(':').then_some(self.name.as_str())
    }
}

/// A tabular pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TabularSpec {
    /// Name of the output tensor.
    #[serde(default = "default_output")]
    pub output: String,
    /// FP32 (default) or FP64.
    #[serde(default = "default_datatype")]
    pub datatype: String,
    /// The columns, in the model's order.
    pub features: Vec<TabularFeature>,
}

fn default_output() -> String {
    "input".into()
}

fn default_datatype() -> String {
    "FP32".into()
}

impl TabularSpec {
    /// Checks the spec's shape (references are checked when used).
    pub fn validate(&self, model: &str) -> Result<()> {
        if self.features.is_empty() {
            return Err(invalid(format!(
                "tabular pipeline of '{model}' has no features"
            )));
        }
        if !["FP32", "FP64"].contains(&self.datatype.as_str()) {
            return Err(invalid(format!(
                "tabular pipeline of '{model}': datatype must be FP32 or FP64"
            )));
        }
        for f in &self.features {
            if f.missing == Missing::Default && f.default.is_none() {
                return Err(invalid(format!(
                    "tabular pipeline of '{model}': feature '{}' has missing = \"default\" but no default",
                    f.name
                )));
            }
        }
        Ok(())
    }

    /// The `view:feature` references to look up, in order, without repeats.
    pub fn lookups(&self) -> Vec<String> {
        let mut refs: Vec<String> = Vec::new();
        for f in &self.features {
            if let Some(r) = f.view_ref() {
                if !refs.iter().any(|x| x == r) {
                    refs.push(r.to_string());
                }
            }
        }
        refs
    }
}

fn number(value: &Value, feature: &str, row: usize) -> Result<Option<f64>> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        Value::Bool(b) => Ok(Some(if *b { 1.0 } else { 0.0 })),
        other => Err(invalid(format!(
            "row {row}: feature '{feature}' is {other}, not a number"
        ))),
    }
}

/// Assembles the tensor. `online` answers [`TabularSpec::lookups`] for the
/// rows (None when there are no lookups); `means` holds the mean of every
/// feature with the mean policy and no declared mean (None: no data).
pub fn assemble(
    spec: &TabularSpec,
    rows: &[Map<String, Value>],
    online: Option<&GetOnlineFeaturesResponse>,
    means: &HashMap<String, Option<f64>>,
) -> Result<Tensor> {
    let width = spec.features.len();
    let mut values = Vec::with_capacity(rows.len() * width);
    for (r, row) in rows.iter().enumerate() {
        for feature in &spec.features {
            let found = match (feature.view_ref(), online) {
                (Some(reference), Some(online)) => {
                    let column = online.features.iter().position(|f| f == reference);
                    match column.and_then(|c| online.rows.get(r).map(|x| &x.values[c])) {
                        Some(v) if v.status == PRESENT => {
                            let value: Value = serde_json::from_str(&v.value_json)
                                .map_err(|e| invalid(format!("online value: {e}")))?;
                            number(&value, &feature.name, r)?
                        }
                        _ => None,
                    }
                }
                (Some(_), None) => None,
                (None, _) => match row.get(&feature.name) {
                    Some(value) => number(value, &feature.name, r)?,
                    None => None,
                },
            };
            let value = match (found, feature.missing) {
                (Some(v), _) => v,
                (None, Missing::Error) => {
                    return Err(invalid(format!(
                        "row {r}: feature '{}' is missing (policy: error)",
                        feature.name
                    )))
                }
                (None, Missing::Default) => feature.default.unwrap_or(0.0),
                (None, Missing::Mean) => match feature.mean {
                    Some(m) => m,
                    None => means.get(&feature.name).copied().flatten().ok_or_else(|| {
                        invalid(format!(
                            "row {r}: feature '{}' is missing and has no mean (no offline data)",
                            feature.name
                        ))
                    })?,
                },
            };
            values.push(value);
        }
    }
    let data = if spec.datatype == "FP64" {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    } else {
        values
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect()
    };
    Ok(Tensor {
        name: spec.output.clone(),
        datatype: spec.datatype.clone(),
        shape: vec![rows.len() as i64, width as i64],
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_proto::features::{FeatureValue, OnlineFeatureRow};

    fn spec() -> TabularSpec {
        serde_json::from_value(serde_json::json!({
            "features": [
                {"name": "stats:rate", "missing": "mean", "mean": 0.5},
                {"name": "stats:trips", "missing": "default", "default": -1.0},
                {"name": "amount"}
            ]
        }))
        .unwrap()
    }

    fn value(json: &str, status: &str) -> FeatureValue {
        FeatureValue {
            value_json: json.into(),
            status: status.into(),
            event_ts: 1,
        }
    }

    #[test]
    fn columns_follow_the_spec_and_policies_fill_gaps() {
        let online = GetOnlineFeaturesResponse {
            features: vec!["stats:rate".into(), "stats:trips".into()],
            rows: vec![
                OnlineFeatureRow {
                    values: vec![value("0.25", "PRESENT"), value("7", "PRESENT")],
                },
                OnlineFeatureRow {
                    values: vec![value("null", "NOT_FOUND"), value("null", "OUTSIDE_MAX_AGE")],
                },
            ],
        };
        let rows: Vec<Map<String, Value>> = vec![
            serde_json::from_str(r#"{"id": 1, "amount": 10}"#).unwrap(),
            serde_json::from_str(r#"{"id": 2, "amount": true}"#).unwrap(),
        ];
        let t = assemble(&spec(), &rows, Some(&online), &HashMap::new()).unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        let got: Vec<f32> = t
            .data
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got, vec![0.25, 7.0, 10.0, 0.5, -1.0, 1.0]);
    }

    #[test]
    fn a_missing_request_value_with_the_error_policy_is_refused() {
        let rows: Vec<Map<String, Value>> = vec![serde_json::from_str(r#"{"id": 1}"#).unwrap()];
        let err = assemble(&spec(), &rows, None, &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("'amount' is missing"), "{err}");
    }
}
