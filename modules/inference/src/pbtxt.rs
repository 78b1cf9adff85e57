//! Reads Triton's `config.pbtxt`, so a Triton model repository is served
//! unchanged. The text is parsed as protobuf text format against Triton's full
//! model configuration schema (`proto/model_config.proto`, compiled in by the
//! build script) with `prost-reflect`: a field Triton does not know is refused,
//! as Triton refuses it. The fields mlserve honours are then mapped onto
//! [`ModelConfigFile`]; Triton fields it has no use for are dropped with a
//! warning; scheduling kinds it cannot honour (sequence batching, ensembles)
//! and backends other than ONNX Runtime are refused.

use std::path::Path;
use std::sync::OnceLock;

use mlserve_proto::ErrorCode;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor};
use serde_json::{Map, Value};

use crate::error::InferenceError;
use crate::model_config::ModelConfigFile;

/// The compiled schema, a `FileDescriptorSet` written by `build.rs`.
const DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/model_config.descriptors.bin"));

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
    let config = to_mlserve(message_json(&message))?;
    serde_json::from_value(Value::Object(config)).map_err(|e| PbtxtError::Invalid(e.to_string()))
}

/// `inference.ModelConfig`, decoded from the compiled schema once.
fn schema() -> Result<MessageDescriptor, PbtxtError> {
    static ROOT: OnceLock<Result<MessageDescriptor, String>> = OnceLock::new();
    ROOT.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTORS)
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

/// The fields set in a message, by their proto names, enums by value name.
fn message_json(message: &DynamicMessage) -> Map<String, Value> {
    message
        .fields()
        .map(|(field, value)| (field.name().to_string(), field_json(value, &field.kind())))
        .collect()
}

fn field_json(value: &prost_reflect::Value, kind: &Kind) -> Value {
    use prost_reflect::Value as V;
    match value {
        V::Bool(b) => Value::Bool(*b),
        V::I32(n) => Value::from(*n),
        V::I64(n) => Value::from(*n),
        V::U32(n) => Value::from(*n),
        V::U64(n) => Value::from(*n),
        V::F32(x) => Value::from(f64::from(*x)),
        V::F64(x) => Value::from(*x),
        V::String(s) => Value::String(s.clone()),
        V::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        V::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(named) => Value::String(named.name().to_string()),
            None => Value::from(*n),
        },
        V::Message(m) => Value::Object(message_json(m)),
        V::List(items) => Value::Array(items.iter().map(|v| field_json(v, kind)).collect()),
        V::Map(entries) => {
            let value_kind = match kind.as_message() {
                Some(entry) => entry.map_entry_value_field().kind(),
                None => kind.clone(),
            };
            let entries = entries
                .iter()
                .map(|(k, v)| (map_key(k), field_json(v, &value_kind)));
            Value::Object(entries.collect())
        }
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// Keeps the `allowed` keys of an object, warning about the others.
fn keep(mut object: Map<String, Value>, allowed: &[&str], place: &str) -> Map<String, Value> {
    object.retain(|key, _| {
        let kept = allowed.contains(&key.as_str());
        if !kept {
            tracing::warn!(field = %format!("{place}{key}"), "config.pbtxt field not used by mlserve, ignored");
        }
        kept
    });
    object
}

fn objects(value: Option<Value>) -> Vec<Map<String, Value>> {
    match value {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| v.as_object().cloned())
            .collect(),
        _ => Vec::new(),
    }
}

/// Maps Triton's fields (as [`message_json`] gives them) onto the keys of
/// [`ModelConfigFile`].
fn to_mlserve(mut config: Map<String, Value>) -> Result<Map<String, Value>, PbtxtError> {
    for refused in ["sequence_batching", "ensemble_scheduling"] {
        if config.contains_key(refused) {
            let msg = format!("{refused} is not supported by mlserve");
            return Err(PbtxtError::Unsupported(msg));
        }
    }
    let mut out = Map::new();
    for key in [
        "name",
        "platform",
        "max_batch_size",
        "default_model_filename",
    ] {
        if let Some(v) = config.remove(key) {
            out.insert(key.into(), v);
        }
    }
    if let Some(Value::String(backend)) = config.remove("backend") {
        if backend != "onnxruntime" {
            let msg = format!("backend '{backend}' is not served (only onnxruntime)");
            return Err(PbtxtError::Unsupported(msg));
        }
    }
    for (key, place) in [("input", "input."), ("output", "output.")] {
        let tensors: Vec<Value> = objects(config.remove(key))
            .into_iter()
            .map(|t| Value::Object(keep(t, &["name", "data_type", "dims", "optional"], place)))
            .collect();
        out.insert(key.into(), Value::Array(tensors));
    }
    if let Some(Value::Object(batching)) = config.remove("dynamic_batching") {
        let allowed = [
            "preferred_batch_size",
            "max_queue_delay_microseconds",
            "priority_levels",
            "default_priority_level",
            "default_queue_policy",
            "preserve_ordering",
        ];
        let mut batching = keep(batching, &allowed, "dynamic_batching.");
        if let Some(Value::Object(policy)) = batching.remove("default_queue_policy") {
            let allowed = [
                "max_queue_size",
                "default_timeout_microseconds",
                "allow_timeout_override",
                "timeout_action",
            ];
            let policy = keep(policy, &allowed, "dynamic_batching.default_queue_policy.");
            batching.insert("default_queue_policy".into(), Value::Object(policy));
        }
        out.insert("dynamic_batching".into(), Value::Object(batching));
    }
    let groups: Vec<Value> = objects(config.remove("instance_group"))
        .into_iter()
        .map(|g| {
            Value::Object(keep(
                g,
                &["count", "kind", "gpus", "name"],
                "instance_group.",
            ))
        })
        .collect();
    out.insert("instance_group".into(), Value::Array(groups));
    if let Some(Value::Object(mut policy)) = config.remove("version_policy") {
        // proto3 leaves `num_versions: 0` out; mlserve serves at least one.
        if let Some(Value::Object(latest)) = policy.get_mut("latest") {
            latest.entry("num_versions").or_insert(Value::from(0));
        }
        out.insert("version_policy".into(), Value::Object(policy));
    }
    if let Some(Value::Object(optimization)) = config.remove("optimization") {
        let optimization = keep(optimization, &["graph"], "optimization.");
        let level = optimization
            .get("graph")
            .and_then(|g| g.get("level"))
            .and_then(Value::as_i64);
        // Triton's ONNX Runtime backend: 0 (default) all, -1 basic only, 1 basic and extended.
        let level = match level {
            Some(-1) => "basic",
            Some(1) => "extended",
            _ => "all",
        };
        out.insert(
            "optimization".into(),
            serde_json::json!({ "graph_optimization_level": level }),
        );
    }
    keep(config, &[], "");
    Ok(out)
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
            (groups[0].count, groups[0].kind.as_deref()),
            (2, Some("KIND_CPU"))
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
