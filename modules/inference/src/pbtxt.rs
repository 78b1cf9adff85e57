//! Reads Triton's `config.pbtxt` (protobuf text format), so a Triton model
//! repository is served unchanged. The fields mlserve honours are mapped onto
//! [`ModelConfigFile`]; fields it has no use for are dropped with a warning;
//! scheduling kinds it cannot honour (sequence batching, ensembles) are refused.

use serde_json::{Map, Value};

use crate::error::{InferenceError, Result};
use crate::model_config::ModelConfigFile;

/// Fields that are lists in Triton's schema even when written once.
const REPEATED: [&str; 8] = [
    "input",
    "output",
    "instance_group",
    "dims",
    "preferred_batch_size",
    "versions",
    "gpus",
    "profile",
];

/// Parses `config.pbtxt` text into the config mlserve uses.
pub fn parse(text: &str) -> Result<ModelConfigFile> {
    let mut tokens = tokenize(text)?.into_iter().peekable();
    let message = parse_message(&mut tokens, false)?;
    let config = to_mlserve(message)?;
    serde_json::from_value(Value::Object(config))
        .map_err(|e| InferenceError::InvalidModel(format!("config.pbtxt: {e}")))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Punct(char),
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            while chars.next().is_some_and(|c| c != '\n') {}
        } else if "{}[]:,;<>".contains(c) {
            let c = match c {
                '<' => '{',
                '>' => '}',
                other => other,
            };
            tokens.push(Token::Punct(c));
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated string")),
                    Some(q) if q == c => break,
                    Some('\\') => s.push(match chars.next() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some(other) => other,
                        None => return Err(bad("unterminated string")),
                    }),
                    Some(other) => s.push(other),
                }
            }
            tokens.push(Token::Text(s));
        } else if c.is_ascii_alphanumeric() || "_.+-".contains(c) {
            let mut word = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_ascii_alphanumeric() || "_.+-".contains(**c))
            {
                word.push(c);
                chars.next();
            }
            tokens.push(Token::Word(word));
        } else {
            return Err(bad(&format!("unexpected character '{c}'")));
        }
    }
    Ok(tokens)
}

fn bad(msg: &str) -> InferenceError {
    InferenceError::InvalidModel(format!("config.pbtxt: {msg}"))
}

type Tokens = std::iter::Peekable<std::vec::IntoIter<Token>>;

fn parse_message(tokens: &mut Tokens, nested: bool) -> Result<Map<String, Value>> {
    let mut fields = Map::new();
    loop {
        match tokens.next() {
            None if nested => return Err(bad("missing '}'")),
            None => return Ok(fields),
            Some(Token::Punct('}')) if nested => return Ok(fields),
            Some(Token::Punct(',' | ';')) => continue,
            Some(Token::Word(name)) => {
                if tokens.peek() == Some(&Token::Punct(':')) {
                    tokens.next();
                }
                let value = match tokens.next() {
                    Some(Token::Punct('[')) => Value::Array(parse_list(tokens)?),
                    Some(token) => parse_value(token, tokens)?,
                    None => return Err(bad(&format!("field '{name}' has no value"))),
                };
                add_field(&mut fields, name, value);
            }
            Some(other) => return Err(bad(&format!("unexpected {other:?}"))),
        }
    }
}

fn parse_list(tokens: &mut Tokens) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    loop {
        match tokens.next() {
            Some(Token::Punct(']')) => return Ok(items),
            Some(Token::Punct(',')) => continue,
            Some(token) => items.push(parse_value(token, tokens)?),
            None => return Err(bad("missing ']'")),
        }
    }
}

fn parse_value(token: Token, tokens: &mut Tokens) -> Result<Value> {
    Ok(match token {
        Token::Punct('{') => Value::Object(parse_message(tokens, true)?),
        Token::Text(s) => Value::String(s),
        Token::Word(w) if w == "true" || w == "false" => Value::Bool(w == "true"),
        Token::Word(w) => match (w.parse::<i64>(), w.parse::<f64>()) {
            (Ok(i), _) => Value::from(i),
            (_, Ok(f)) => Value::from(f),
            _ => Value::String(w),
        },
        Token::Punct(p) => return Err(bad(&format!("unexpected '{p}'"))),
    })
}

fn add_field(fields: &mut Map<String, Value>, name: String, value: Value) {
    let repeated = REPEATED.contains(&name.as_str());
    match fields.get_mut(&name) {
        Some(Value::Array(items)) if repeated => match value {
            Value::Array(more) => items.extend(more),
            one => items.push(one),
        },
        _ if repeated => {
            let items = match value {
                Value::Array(items) => items,
                one => vec![one],
            };
            fields.insert(name, Value::Array(items));
        }
        _ => {
            fields.insert(name, value);
        }
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

fn to_mlserve(mut config: Map<String, Value>) -> Result<Map<String, Value>> {
    for refused in ["sequence_batching", "ensemble_scheduling"] {
        if config.contains_key(refused) {
            return Err(bad(&format!("{refused} is not supported by mlserve")));
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
    if let Some(backend) = config.remove("backend") {
        if backend != "onnxruntime" {
            return Err(bad(&format!(
                "backend {backend} is not served (only onnxruntime)"
            )));
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
    if let Some(Value::Object(policy)) = config.remove("version_policy") {
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
}
