//! The role's own alerts (a rollout aborted), sent to a webhook in
//! Alertmanager's webhook format (version 4), so an Alertmanager receiver,
//! or anything that takes its JSON, gets them. Sending never blocks the
//! rollout: each alert is posted by a task of its own, retried with
//! doubling delays, and dropped (logged) after the last try.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One alert as Alertmanager's webhook lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing`.
    pub status: String,
    /// `alertname`, `severity` and what the alert is about.
    pub labels: BTreeMap<String, String>,
    /// `summary` and `description`.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339 (Alertmanager's zero time: not resolved).
    pub ends_at: String,
    /// Where it came from.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// A stable id of the label set.
    pub fingerprint: String,
}

/// Alertmanager's webhook body (version 4).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    /// `4`.
    pub version: String,
    /// Identifies the group.
    pub group_key: String,
    /// Alerts left out (never: one alert per message).
    pub truncated_alerts: u64,
    /// `firing`.
    pub status: String,
    /// `mlserve-monitoring`.
    pub receiver: String,
    /// The labels the group shares.
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert has.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert has.
    pub common_annotations: BTreeMap<String, String>,
    /// Empty: no Alertmanager UI.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

impl WebhookMessage {
    /// A message of one firing alert.
    pub fn firing(
        name: &str,
        severity: &str,
        labels: &[(&str, String)],
        summary: &str,
        description: &str,
        at: SystemTime,
    ) -> WebhookMessage {
        let mut all = BTreeMap::from([
            ("alertname".to_string(), name.to_string()),
            ("severity".to_string(), severity.to_string()),
        ]);
        for (k, v) in labels {
            all.insert((*k).to_string(), v.clone());
        }
        let annotations = BTreeMap::from([
            ("summary".to_string(), summary.to_string()),
            ("description".to_string(), description.to_string()),
        ]);
        let fingerprint = {
            use sha2::{Digest, Sha256};
            let text: String = all.iter().map(|(k, v)| format!("{k}={v};")).collect();
            hex::encode(&Sha256::digest(text.as_bytes())[..8])
        };
        let alert = Alert {
            status: "firing".into(),
            labels: all.clone(),
            annotations: annotations.clone(),
            starts_at: humantime::format_rfc3339_millis(at).to_string(),
            ends_at: "0001-01-01T00:00:00Z".into(),
            generator_url: String::new(),
            fingerprint,
        };
        WebhookMessage {
            version: "4".into(),
            group_key: format!("{{}}:{{alertname=\"{name}\"}}"),
            truncated_alerts: 0,
            status: "firing".into(),
            receiver: "mlserve-monitoring".into(),
            group_labels: BTreeMap::from([("alertname".to_string(), name.to_string())]),
            common_labels: all,
            common_annotations: annotations,
            external_url: String::new(),
            alerts: vec![alert],
        }
    }
}

/// Posts alerts to a webhook.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    client: reqwest::Client,
    tries: u32,
    first_delay: Duration,
}

impl Webhook {
    /// A webhook at `url`, tried `tries` times (at least once), the first
    /// retry after `first_delay`, each next one after twice the last.
    pub fn new(url: String, tries: u32, first_delay: Duration) -> Webhook {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Webhook {
            url,
            client,
            tries: tries.max(1),
            first_delay,
        }
    }

    /// Sends `message` in the background.
    pub fn send(&self, message: WebhookMessage) {
        let hook = self.clone();
        tokio::spawn(async move { hook.deliver(&message).await });
    }

    /// Sends `message`, retrying; true once a 2xx answered.
    pub async fn deliver(&self, message: &WebhookMessage) -> bool {
        let mut delay = self.first_delay;
        for attempt in 1..=self.tries {
            let result = self.client.post(&self.url).json(message).send().await;
            match result {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => {
                    tracing::warn!(url = %self.url, attempt, status = %r.status(), "alert webhook refused")
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, attempt, error = %e, "alert webhook unreachable")
                }
            }
            if attempt < self.tries {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
        tracing::error!(url = %self.url, tries = self.tries, "alert dropped after the last try");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_firing_alert_in_alertmanagers_shape() {
        let m = WebhookMessage::firing(
            "MlserveRolloutAborted",
            "warning",
            &[("model", "m".into()), ("canary", "3".into())],
            "rollout of m v3 aborted",
            "error rate 30%",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["version"], "4");
        assert_eq!(json["status"], "firing");
        let alert = &json["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "MlserveRolloutAborted");
        assert_eq!(alert["labels"]["model"], "m");
        assert_eq!(alert["annotations"]["description"], "error rate 30%");
        assert_eq!(alert["startsAt"], "2023-11-14T22:13:20.000Z");
        assert!(json.get("groupLabels").is_some() && json.get("externalURL").is_some());
        assert!(alert.get("generatorURL").is_some());
    }
}
