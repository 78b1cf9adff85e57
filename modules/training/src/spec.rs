//! A workflow as its file declares it: parameters with defaults, a DAG of
//! steps, an exit handler, schedules and event triggers. TOML and YAML read
//! into the same types; names and shapes follow Argo Workflows where Argo has
//! the concept (`dependencies`, `when`, `with_items`, `retry`, `on_exit`,
//! `{{workflow.parameters.x}}`), in snake_case.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A whole workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Unique name; applying the same name again stores a new version.
    pub name: String,
    /// What the workflow does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Parameters and their defaults; a submission may override any of them
    /// and may name no other.
    #[serde(default)]
    pub parameters: BTreeMap<String, Scalar>,
    /// The steps; order does not matter, `dependencies` does.
    pub steps: Vec<StepSpec>,
    /// The whole run's time limit (humantime, e.g. "1h").
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// A step that runs once every other step has ended, whatever the
    /// outcome; it can read `{{workflow.status}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit: Option<StepSpec>,
    /// Cron schedules that submit the workflow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleSpec>,
    /// Events that submit the workflow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerSpec>,
}

/// One node of the DAG: a command, or a built-in (`uses`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the workflow: letters, digits, `-` and `_`.
    pub name: String,
    /// Steps that must succeed (or be skipped) before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// The program and its arguments (templates allowed); no shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// A built-in step instead of a command: `features.training_set`,
    /// `registry.push` or `registry.alias`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// The built-in's arguments (templates allowed in strings).
    #[serde(default, rename = "with", skip_serializing_if = "BTreeMap::is_empty")]
    pub with: BTreeMap<String, serde_json::Value>,
    /// Extra environment variables (templates allowed in values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The command's working directory; the step's own directory when unset.
    /// Relative paths are relative to the training role's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Container image, for the Kubernetes executor and the Argo export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource requests: CPU, memory, GPUs.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Files fetched into the step's directory before it starts.
    #[serde(default, skip_serializing_if = "Inputs::is_empty")]
    pub inputs: Inputs,
    /// Files the step leaves behind: parameters, artifacts, metrics.
    #[serde(default, skip_serializing_if = "Outputs::is_empty")]
    pub outputs: Outputs,
    /// What to do when the step fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// The time limit of one attempt (humantime).
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// A condition, after template substitution (`{{...}} >= 0.8`); the step
    /// is skipped when it is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Fan-out: one instance of the step per item, each reading `{{item}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_items: Option<Vec<Scalar>>,
}

/// Resource requests of a step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU in Kubernetes quantity form ("500m", "2").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory in Kubernetes quantity form ("512Mi", "2Gi").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// GPUs (`nvidia.com/gpu`); the local executor runs GPU steps one at a
    /// time per GPU.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpu: u32,
}

impl Resources {
    /// Nothing requested.
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none() && self.gpu == 0
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A step's inputs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Artifacts fetched from the object store into the step's directory.
    #[serde(default)]
    pub artifacts: Vec<InputArtifact>,
}

impl Inputs {
    /// No inputs.
    pub fn is_empty(&self) -> bool {
        self.artifacts.is_empty()
    }
}

/// An artifact an upstream step produced, placed at `path` before the step runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputArtifact {
    /// The name the step knows it by.
    pub name: String,
    /// Where it comes from: `{{steps.<step>.outputs.artifacts.<name>}}`.
    pub from: String,
    /// Where it is placed, relative to the step's directory.
    pub path: String,
}

/// A step's outputs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Values read from files the step writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<OutputFile>,
    /// Files uploaded to the object store when the step succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<OutputFile>,
    /// A JSON file of `{"name": number}` recorded as the run's metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl Outputs {
    /// No outputs.
    pub fn is_empty(&self) -> bool {
        self.parameters.is_empty() && self.artifacts.is_empty() && self.metrics.is_none()
    }
}

/// An output parameter or artifact: a name and a file in the step's directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFile {
    /// The name other steps use.
    pub name: String,
    /// The file, relative to the step's directory.
    pub path: String,
}

/// Retries of a failed step, with exponential backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Retries after the first attempt.
    pub limit: u32,
    /// The wait before the first retry (humantime); doubles by `factor`.
    #[serde(default = "default_backoff", with = "mlserve_common::config::duration")]
    pub backoff: Duration,
    /// The backoff's growth per retry.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// The longest wait between attempts.
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_backoff: Option<Duration>,
    /// Retry only on these exit codes; empty means any failure (a timeout
    /// and a lost process included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_factor() -> f64 {
    2.0
}

impl RetrySpec {
    /// The wait before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = if self.factor.is_finite() && self.factor >= 1.0 {
            self.factor
        } else {
            1.0
        };
        let exponent = retry.saturating_sub(1).min(32) as i32;
        let seconds = self.backoff.as_secs_f64() * factor.powi(exponent);
        let delay = Duration::from_secs_f64(seconds.min(86_400.0));
        match self.max_backoff {
            Some(max) => delay.min(max),
            None => delay,
        }
    }

    /// Whether an attempt that ended with `exit_code` (none: killed, timed
    /// out or lost) may be retried under this policy.
    pub fn retries_exit(&self, exit_code: Option<i32>) -> bool {
        match exit_code {
            Some(code) if !self.exit_codes.is_empty() => self.exit_codes.contains(&code),
            _ => true,
        }
    }
}

/// A cron schedule: five fields, a time zone, and what to do about slots
/// missed while the role was down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// `minute hour day-of-month month day-of-week`.
    pub cron: String,
    /// IANA time zone; UTC when unset.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// `skip` (default): missed slots are dropped; `run_once`: the latest
    /// missed slot runs at start-up.
    #[serde(default)]
    pub missed: MissedPolicy,
    /// Parameters for the runs it submits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Scalar>,
}

fn default_timezone() -> String {
    "UTC".into()
}

/// What a schedule does with the slots that passed while nobody was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedPolicy {
    /// Drop them.
    #[default]
    Skip,
    /// Run the most recent one once.
    RunOnce,
}

/// An event that submits the workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// `data_arrived` or `drift_detected`.
    pub event: String,
    /// Only events about this feature view (data_arrived) or model
    /// (drift_detected); any when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Parameters for the runs it submits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Scalar>,
}

/// A parameter value: written as a string, number or boolean, used as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A number with a fraction.
    Float(f64),
    /// true or false.
    Bool(bool),
}

impl Scalar {
    /// The value as templates substitute it.
    pub fn as_text(&self) -> String {
        match self {
            Scalar::Text(text) => text.clone(),
            Scalar::Integer(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// Reads a workflow file: YAML when `path` ends in `.yaml`/`.yml`, else TOML.
pub fn parse_file(path: &str, text: &str) -> Result<WorkflowSpec, String> {
    if path.ends_with(".yaml") || path.ends_with(".yml") {
        parse_yaml(text)
    } else {
        parse_toml(text)
    }
}

/// Reads a TOML workflow.
pub fn parse_toml(text: &str) -> Result<WorkflowSpec, String> {
    toml::from_str(text).map_err(|e| format!("invalid workflow (TOML): {e}"))
}

/// Reads a YAML workflow.
pub fn parse_yaml(text: &str) -> Result<WorkflowSpec, String> {
    serde_norway::from_str(text).map_err(|e| format!("invalid workflow (YAML): {e}"))
}

/// `Option<Duration>` as an optional humantime string.
pub(crate) mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `"1m 30s"`, or nothing.
    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads a humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| mlserve_common::config::duration::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
