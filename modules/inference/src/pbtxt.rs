//! Reads Triton's `config.pbtxt`, so a Triton model repository is served
//! unchanged. The text is parsed as protobuf text format against Triton's full
//! model configuration schema (mlserve-proto's `model_config.proto`, the one
//! the gRPC `ModelConfig` RPC answers with) with `prost-reflect`: a field
//! Triton does not know is refused, as Triton refuses it. The message is then
//! transcoded into the generated `pb::ModelConfig` and the fields mlserve
//! honours are mapped onto [`ModelConfigFile`]; set fields it has no use for
//! are reported with a warning (the JSON form of the same message, which
//! Triton's clients send with a load request, takes the same path); sequence
//! batching and backends other than ONNX Runtime are refused.

use std::path::Path;
use std::sync::OnceLock;

use mlserve_proto::{pb, ErrorCode};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value as ReflectValue};

use crate::ensemble_plan::{EnsembleConfig, EnsembleStepConfig};
use crate::error::InferenceError;
use crate::graph_level::GraphOptimizationLevel;
use crate::model_config::{
    DynamicBatchingConfig, InstanceGroupConfig, InstanceGroupKind, ModelConfigFile,
    OptimizationConfig, QueuePolicyConfig, TensorConfig, TimeoutAction, VersionPolicy,
};

/// Why a `config.pbtxt` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PbtxtError {
    /// Not a valid Triton `ModelConfig` in text format: a syntax error, a
    /// field Triton does not know, or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// Valid for Triton, but asks for something mlserve does not serve.
    #[error("{0}")]
    Unsupported(String),
    /// Valid for Triton, but a value does not fit mlserve's config.
    #[error("{0}")]
    Invalid(String),
    /// The compiled-in schema would not load (a build defect, not the file's).
    #[error("model_config.proto descriptors: {0}")]
    Schema(String),
}

impl PbtxtError {
    /// The shared error code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            PbtxtError::Syntax(_) | PbtxtError::Unsupported(_) | PbtxtError::Invalid(_) => {
                ErrorCode::BadRequest
            }
            PbtxtError::Schema(_) => ErrorCode::Internal,
        }
    }

    /// The model load failure this makes, naming the file it came from.
    pub fn in_file(self, path: &Path) -> InferenceError {
        let msg = format!("{}: {self}", path.display());
        match self.code() {
            ErrorCode::Internal => InferenceError::Internal(msg),
            _ => InferenceError::InvalidModel(msg),
        }
    }
}

/// Parses `config.pbtxt` text into the config mlserve uses.
pub fn parse(text: &str) -> Result<ModelConfigFile, PbtxtError> {
    let message = DynamicMessage::parse_text_format(schema()?, &colon_before_lists(text))
        .map_err(|e| PbtxtError::Syntax(e.to_string()))?;
    from_message(message)
}

/// Parses the same message in protobuf's JSON mapping, as Triton's clients
/// send it with a repository load request (`tritonclient`'s `load_model(config=...)`):
/// 64-bit numbers may come as strings (`{"max_batch_size": "16"}`), field names in
/// snake_case or lowerCamelCase, enums by name or number. Unknown fields are refused.
pub fn parse_json(text: &str) -> Result<ModelConfigFile, PbtxtError> {
    let mut json = serde_json::Deserializer::from_str(text);
    let message = DynamicMessage::deserialize(schema()?, &mut json)
        .and_then(|m| json.end().map(|()| m))
        .map_err(|e| PbtxtError::Syntax(e.to_string()))?;
    from_message(message)
}

/// A parsed `ModelConfig` message to mlserve's config, reporting the fields
/// it does not use.
fn from_message(message: DynamicMessage) -> Result<ModelConfigFile, PbtxtError> {
    warn_unused(&message, "");
    let config: pb::ModelConfig = message
        .transcode_to()
        .map_err(|e| PbtxtError::Schema(e.to_string()))?;
    to_mlserve(config)
}

/// `inference.ModelConfig`, decoded from the compiled schema once.
fn schema() -> Result<MessageDescriptor, PbtxtError> {
    static ROOT: OnceLock<Result<MessageDescriptor, String>> = OnceLock::new();
    ROOT.get_or_init(|| {
        DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
            .map_err(|e| e.to_string())?
            .get_message_by_name("inference.ModelConfig")
            .ok_or_else(|| "inference.ModelConfig is missing".to_string())
    })
    .clone()
    .map_err(PbtxtError::Schema)
}

/// Triton writes a list of messages without a colon (`input [ { ... } ]`),
/// which the text format allows but prost-reflect's parser does not: this puts
/// the colon in between a field name and its `[`. Strings and comments are
/// copied untouched; nothing else changes.
fn colon_before_lists(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut chars = text.chars().peekable();
    let mut after_name = false;
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '"' | '\'' => {
                while let Some(s) = chars.next() {
                    out.push(s);
                    if s == '\\' {
                        out.extend(chars.next());
                    } else if s == c || s == '\n' {
                        break;
                    }
                }
                after_name = false;
            }
            '#' => {
                while let Some(s) = chars.next_if(|s| *s != '\n') {
                    out.push(s);
                }
            }
            '[' if after_name => {
                out.pop();
                out.push_str(": [");
                after_name = false;
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                while let Some(s) = chars.next_if(|s| s.is_ascii_alphanumeric() || *s == '_') {
                    out.push(s);
                }
                // A name starts with a letter; `0x1F` or `5f` are numbers.
                after_name = !c.is_ascii_digit();
            }
            c if c.is_whitespace() => {}
            _ => after_name = false,
        }
    }
    out
}

/// The `config.pbtxt` fields mlserve honours, as dotted paths; a message
/// field listed here is walked into, any other set field is reported.
const HONOURED: &[&str] = &[
    "name",
    "platform",
    "backend",
    "max_batch_size",
    "default_model_filename",
    "input",
    "input.name",
    "input.data_type",
    "input.dims",
    "input.optional",
    "output",
    "output.name",
    "output.data_type",
    "output.dims",
    "dynamic_batching",
    "dynamic_batching.preferred_batch_size",
    "dynamic_batching.max_queue_delay_microseconds",
    "dynamic_batching.priority_levels",
    "dynamic_batching.default_priority_level",
    "dynamic_batching.preserve_ordering",
    "dynamic_batching.default_queue_policy",
    "dynamic_batching.default_queue_policy.max_queue_size",
    "dynamic_batching.default_queue_policy.default_timeout_microseconds",
    "dynamic_batching.default_queue_policy.allow_timeout_override",
    "dynamic_batching.default_queue_policy.timeout_action",
    "instance_group",
    "instance_group.name",
    "instance_group.count",
    "instance_group.kind",
    "instance_group.gpus",
    "version_policy",
    "version_policy.latest",
    "version_policy.latest.num_versions",
    "version_policy.all",
    "version_policy.specific",
    "version_policy.specific.versions",
    "optimization",
    "optimization.graph",
    "optimization.graph.level",
    "ensemble_scheduling",
    "ensemble_scheduling.step",
    "ensemble_scheduling.step.model_name",
    "ensemble_scheduling.step.model_version",
    "ensemble_scheduling.step.input_map",
    "ensemble_scheduling.step.output_map",
    // Refused with a clear error by `to_mlserve`.
    "sequence_batching",
];

/// Warns, by dotted path, about every field set in `message` that mlserve
/// does not honour.
fn warn_unused(message: &DynamicMessage, place: &str) {
    for (field, value) in message.fields() {
        let path = format!("{place}{}", field.name());
        if !HONOURED.contains(&path.as_str()) {
            tracing::warn!(field = %path, "config.pbtxt field not used by mlserve, ignored");
            continue;
        }
        let inner = format!("{path}.");
        match value {
            ReflectValue::Message(m) => warn_unused(m, &inner),
            ReflectValue::List(items) => items
                .iter()
                .filter_map(ReflectValue::as_message)
                .for_each(|m| warn_unused(m, &inner)),
            _ => {}
        }
    }
}

/// `value` as mlserve's (unsigned or narrower) type, or an error naming the field.
fn fits<T, V>(value: V, field: &str) -> Result<T, PbtxtError>
where
    T: TryFrom<V>,
    V: Copy + std::fmt::Display,
{
    T::try_from(value).map_err(|_| PbtxtError::Invalid(format!("{field} {value} is out of range")))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn tensor(name: String, data_type: i32, dims: Vec<i64>, optional: bool) -> TensorConfig {
    let data_type = pb::DataType::try_from(data_type)
        .map_or_else(|_| data_type.to_string(), |t| t.as_str_name().to_string());
    TensorConfig {
        name,
        data_type,
        dims,
        optional,
    }
}

/// Maps Triton's typed configuration onto [`ModelConfigFile`], refusing what
/// mlserve cannot serve.
fn to_mlserve(config: pb::ModelConfig) -> Result<ModelConfigFile, PbtxtError> {
    use pb::model_config::SchedulingChoice;
    use pb::model_version_policy::PolicyChoice;
    if let Some(SchedulingChoice::SequenceBatching(_)) = &config.scheduling_choice {
        let msg = "sequence_batching is not supported by mlserve".to_string();
        return Err(PbtxtError::Unsupported(msg));
    }
    if !config.backend.is_empty() && config.backend != "onnxruntime" {
        let msg = format!(
            "backend '{}' is not served (only onnxruntime)",
            config.backend
        );
        return Err(PbtxtError::Unsupported(msg));
    }
    let ensemble_scheduling = match &config.scheduling_choice {
        Some(SchedulingChoice::EnsembleScheduling(e)) => Some(ensemble(e)),
        _ => None,
    };
    let dynamic_batching = match config.scheduling_choice {
        Some(SchedulingChoice::DynamicBatching(b)) => {
            let policy = b.default_queue_policy.unwrap_or_default();
            let timeout_action = match policy.timeout_action() {
                pb::model_queue_policy::TimeoutAction::Reject => TimeoutAction::Reject,
                pb::model_queue_policy::TimeoutAction::Delay => TimeoutAction::Delay,
            };
            Some(DynamicBatchingConfig {
                preferred_batch_size: b
                    .preferred_batch_size
                    .into_iter()
                    .map(|n| fits(n, "dynamic_batching.preferred_batch_size"))
                    .collect::<Result<_, _>>()?,
                max_queue_delay_microseconds: b.max_queue_delay_microseconds,
                priority_levels: fits(b.priority_levels, "dynamic_batching.priority_levels")?,
                default_priority_level: fits(
                    b.default_priority_level,
                    "dynamic_batching.default_priority_level",
                )?,
                default_queue_policy: QueuePolicyConfig {
                    max_queue_size: policy.max_queue_size,
                    default_timeout_microseconds: policy.default_timeout_microseconds,
                    allow_timeout_override: policy.allow_timeout_override,
                    timeout_action: Some(timeout_action),
                },
                preserve_ordering: b.preserve_ordering,
                batch_tuning: None,
            })
        }
        _ => None,
    };
    let instance_group = config
        .instance_group
        .into_iter()
        .map(|g| {
            let kind = match g.kind() {
                pb::model_instance_group::Kind::Auto => InstanceGroupKind::Auto,
                pb::model_instance_group::Kind::Gpu => InstanceGroupKind::Gpu,
                pb::model_instance_group::Kind::Cpu => InstanceGroupKind::Cpu,
                pb::model_instance_group::Kind::Model => InstanceGroupKind::Model,
            };
            Ok(InstanceGroupConfig {
                // Triton reads an absent (zero) count as one instance.
                count: fits::<u32, _>(g.count, "instance_group.count")?.max(1),
                kind: Some(kind),
                gpus: g.gpus,
                name: non_empty(g.name),
            })
        })
        .collect::<Result<_, PbtxtError>>()?;
    let version_policy = config
        .version_policy
        .and_then(|p| p.policy_choice)
        .map(|choice| match choice {
            PolicyChoice::Latest(l) => VersionPolicy::Latest {
                num_versions: l.num_versions,
            },
            PolicyChoice::All(_) => VersionPolicy::All {},
            PolicyChoice::Specific(s) => VersionPolicy::Specific {
                versions: s.versions,
            },
        });
    let optimization = config.optimization.map(|o| OptimizationConfig {
        graph_optimization_level: Some(GraphOptimizationLevel::from_triton(
            o.graph.map_or(0, |g| i64::from(g.level)),
        )),
        ..Default::default()
    });
    Ok(ModelConfigFile {
        name: non_empty(config.name),
        platform: non_empty(config.platform),
        backend: None,
        max_batch_size: config
            .max_batch_size
            .map(|n| fits(n, "max_batch_size"))
            .transpose()?,
        input: config
            .input
            .into_iter()
            .map(|t| tensor(t.name, t.data_type, t.dims, t.optional))
            .collect(),
        output: config
            .output
            .into_iter()
            .map(|t| tensor(t.name, t.data_type, t.dims, false))
            .collect(),
        dynamic_batching,
        instance_group,
        version_policy,
        optimization,
        default_model_filename: non_empty(config.default_model_filename),
        ensemble_scheduling,
        latency_objective_ms: None,
    })
}

/// Triton's `ensemble_scheduling` as mlserve's config holds it.
fn ensemble(config: &pb::ModelEnsembling) -> EnsembleConfig {
    let step = config
        .step
        .iter()
        .map(|s| EnsembleStepConfig {
            model_name: s.model_name.clone(),
            model_version: s.model_version,
            input_map: s.input_map.clone().into_iter().collect(),
            output_map: s.output_map.clone().into_iter().collect(),
        })
        .collect();
    EnsembleConfig { step }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config::{InstanceGroupConfig, VersionPolicy};

    const TRITON_SIMPLE: &str = r#"
        name: "simple"
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        input [
          { name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ] },
          { name: "INPUT1" data_type: TYPE_INT32 dims: 16 }
        ]
        output { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] label_filename: "labels.txt" }
        output { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
        instance_group [ { count: 2, kind: KIND_CPU } ]
        dynamic_batching {
          preferred_batch_size: [ 4, 8 ]
          max_queue_delay_microseconds: 100
          default_queue_policy { max_queue_size: 64 timeout_action: REJECT allow_timeout_override: true }
        }
        version_policy: { specific: { versions: [1, 3] } }
        optimization { graph { level: 1 } execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
        model_warmup [ { name: "w" batch_size: 1 } ]  # ignored, with a warning
    "#;

    #[test]
    fn a_triton_config_maps_onto_mlserve_fields() {
        let config = parse(TRITON_SIMPLE).unwrap();
        assert_eq!(config.name.as_deref(), Some("simple"));
        assert_eq!(config.max_batch_size, Some(8));
        assert_eq!(config.input.len(), 2);
        assert_eq!(config.input[1].dims, vec![16]);
        assert_eq!(config.output.len(), 2);
        assert_eq!(config.output[0].data_type, "TYPE_INT32");
        let groups: Vec<&InstanceGroupConfig> = config.instance_group.iter().collect();
        assert_eq!(
            (groups[0].count, groups[0].kind),
            (2, Some(InstanceGroupKind::Cpu))
        );
        let batching = config.dynamic_batching.unwrap();
        assert_eq!(batching.preferred_batch_size, vec![4, 8]);
        assert_eq!(batching.max_queue_delay_microseconds, 100);
        assert_eq!(batching.default_queue_policy.max_queue_size, 64);
        assert!(batching.default_queue_policy.allow_timeout_override);
        assert_eq!(
            config.version_policy,
            Some(VersionPolicy::Specific {
                versions: vec![1, 3]
            })
        );
        assert_eq!(
            config.optimization.unwrap().graph_optimization_level,
            Some(crate::graph_level::GraphOptimizationLevel::Extended)
        );
    }

    #[test]
    fn tritons_protobuf_json_maps_like_the_text_form() {
        let config = parse_json(
            r#"{"name": "simple", "maxBatchSize": "16",
                "input": [{"name": "INPUT0", "dataType": "TYPE_INT32", "dims": ["16"]}],
                "dynamic_batching": {"maxQueueDelayMicroseconds": "100"},
                "instanceGroup": [{"kind": "KIND_CPU", "count": 2}]}"#,
        )
        .unwrap();
        assert_eq!(config.max_batch_size, Some(16));
        assert_eq!(config.input[0].dims, vec![16]);
        assert_eq!(config.input[0].data_type, "TYPE_INT32");
        assert_eq!(
            config
                .dynamic_batching
                .unwrap()
                .max_queue_delay_microseconds,
            100
        );
        assert_eq!(config.instance_group[0].count, 2);
        for bad in [
            r#"{"max_batch_sise": 4}"#,
            r#"{"max_batch_size": "x"}"#,
            "[1]",
            "{} {}",
        ] {
            assert!(
                matches!(parse_json(bad), Err(PbtxtError::Syntax(_))),
                "{bad} accepted"
            );
        }
        let ensemble = parse_json(r#"{"ensembleScheduling": {"step": [{"modelName": "a"}]}}"#);
        let steps = ensemble.unwrap().ensemble_scheduling.unwrap().step;
        assert_eq!(steps[0].model_name, "a");
    }

    #[test]
    fn unsupported_scheduling_and_syntax_errors_are_refused() {
        assert!(parse("name: \"s\" sequence_batching { }")
            .unwrap_err()
            .to_string()
            .contains("sequence_batching"));
        assert!(parse("backend: \"pytorch\"")
            .unwrap_err()
            .to_string()
            .contains("pytorch"));
        assert!(parse("input [ { name: \"x\" ").is_err());
        assert!(parse("name: \"unterminated").is_err());
    }

    #[test]
    fn colon_less_lists_parse_and_strings_and_comments_stay_as_written() {
        let text = "name: 'a [b' # input [ not a field\n\
                    input [ { name: \"x [\\\" y\" data_type: TYPE_FP32 dims [ -1, 3 ] } ]\n\
                    output < name: \"z\" data_type: TYPE_INT64 dims: 0x2 >";
        let config = parse(text).unwrap();
        assert_eq!(config.name.as_deref(), Some("a [b"));
        assert_eq!(config.input[0].name, "x [\" y");
        assert_eq!(config.input[0].dims, vec![-1, 3]);
        assert_eq!(config.output[0].dims, vec![2]);
        assert_eq!(
            colon_before_lists("dims [1] s: \"k [\" # j [\n"),
            "dims : [1] s: \"k [\" # j [\n"
        );
    }

    #[test]
    fn fields_outside_tritons_schema_are_refused_by_name() {
        let err = parse("max_batch_sise: 4").unwrap_err();
        assert!(
            matches!(&err, PbtxtError::Syntax(m) if m.contains("max_batch_sise")),
            "{err}"
        );
        let err = parse("input [ { name: \"x\" shape: [1] } ]").unwrap_err();
        assert!(err.to_string().contains("'shape'"), "{err}");
        let err = parse("dynamic_batching { } sequence_batching { }").unwrap_err();
        assert!(err.to_string().contains("scheduling_choice"), "{err}");
        let err = parse("max_batch_size: \"8\"").unwrap_err();
        assert!(matches!(err, PbtxtError::Syntax(_)), "{err}");
    }

    #[test]
    fn an_explicit_zero_batch_size_differs_from_an_absent_one() {
        assert_eq!(parse("max_batch_size: 0").unwrap().max_batch_size, Some(0));
        assert_eq!(parse("name: \"m\"").unwrap().max_batch_size, None);
        let latest = parse("version_policy { latest { } }").unwrap();
        assert_eq!(
            latest.version_policy(),
            VersionPolicy::Latest { num_versions: 0 }
        );
        let all = parse("version_policy: { all: { } }").unwrap();
        assert_eq!(all.version_policy(), VersionPolicy::All {});
        let err = parse("max_batch_size: -1").unwrap_err();
        assert!(matches!(err, PbtxtError::Invalid(_)), "{err}");
    }

    #[test]
    fn a_bad_file_fails_the_load_naming_the_file_and_the_field() {
        let dir = std::env::temp_dir().join(format!("mlserve-pbtxt-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.pbtxt"), "name: \"m\"\nmax_batch_sise: 4\n").unwrap();
        let err = ModelConfigFile::read(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        let msg = err.to_string();
        assert!(matches!(err, InferenceError::InvalidModel(_)), "{msg}");
        assert!(
            msg.contains("config.pbtxt") && msg.contains("max_batch_sise"),
            "{msg}"
        );
    }
}
