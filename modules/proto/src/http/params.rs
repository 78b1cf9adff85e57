//! Parameters between JSON and protobuf: inference parameters (`InferParameter`)
//! both ways, and repository load parameters (`ModelRepositoryParameter`).

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::json_params::JsonParams;
use crate::inference::LoadParameters;
use crate::pb;
use crate::pb::infer_parameter::ParameterChoice;
use crate::pb::model_repository_parameter::ParameterChoice as RepoChoice;
use crate::ServiceError;

/// Inference parameters as protobuf.
pub(super) type InferParams = HashMap<String, pb::InferParameter>;

/// Where parameters sit, as error messages name it ("input 'x'"): written
/// only when a message is, so a good request builds no label.
#[derive(Debug, Clone, Copy)]
pub(super) enum Site<'a> {
    /// The request's own parameters.
    Request,
    /// An input's, by its name.
    Input(&'a str),
    /// A requested output's, by its name.
    Output(&'a str),
}

impl fmt::Display for Site<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Request => f.write_str("the request"),
            Site::Input(name) => write!(f, "input '{name}'"),
            Site::Output(name) => write!(f, "output '{name}'"),
        }
    }
}

/// Converts one JSON parameter: a bool is `bool_param`, an integer
/// `int64_param` (`uint64_param` above `i64::MAX`), any other number
/// `double_param`, a string `string_param`. Anything else is 400; `what` names
/// where the parameter sits, for the message.
pub(super) fn infer_param(
    what: impl fmt::Display,
    key: &str,
    value: Value,
) -> Result<pb::InferParameter, ServiceError> {
    let choice = match value {
        Value::Bool(b) => ParameterChoice::BoolParam(b),
        Value::String(s) => ParameterChoice::StringParam(s),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ParameterChoice::Int64Param(i)
            } else if let Some(u) = n.as_u64() {
                ParameterChoice::Uint64Param(u)
            } else {
                ParameterChoice::DoubleParam(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        other => {
            return Err(ServiceError::bad_request(format!(
                "parameter '{key}' of {what} must be a boolean, a number or a string, not {}",
                kind_of(&other)
            )))
        }
    };
    Ok(pb::InferParameter {
        parameter_choice: Some(choice),
    })
}

/// Converts a JSON parameter object; see [`infer_param`]. Of a repeated
/// key the last value counts (the others are skipped, read last to first).
pub(super) fn infer_params(
    what: impl fmt::Display + Copy,
    map: JsonParams<'_>,
) -> Result<InferParams, ServiceError> {
    let entries: Vec<_> = map.into_iter().collect();
    let mut params = InferParams::with_capacity(entries.len());
    for (k, v) in entries.into_iter().rev() {
        if !params.contains_key(k.as_ref()) {
            let param = infer_param(what, &k, v)?;
            params.insert(k.into_owned(), param);
        }
    }
    Ok(params)
}

/// Converts protobuf parameters to a JSON object (a NaN or infinite double
/// becomes `null`, as JSON has no such numbers; an unset parameter is `null`).
pub(super) fn infer_params_json(params: &InferParams) -> Map<String, Value> {
    params
        .iter()
        .map(|(k, p)| {
            let v = match &p.parameter_choice {
                Some(ParameterChoice::BoolParam(b)) => Value::Bool(*b),
                Some(ParameterChoice::Int64Param(i)) => Value::from(*i),
                Some(ParameterChoice::Uint64Param(u)) => Value::from(*u),
                Some(ParameterChoice::DoubleParam(d)) => {
                    Number::from_f64(*d).map_or(Value::Null, Value::Number)
                }
                Some(ParameterChoice::StringParam(s)) => Value::String(s.clone()),
                None => Value::Null,
            };
            (k.clone(), v)
        })
        .collect()
}

/// Takes a boolean parameter out of `map`; present but not a boolean is 400.
pub(super) fn take_bool(
    map: &mut JsonParams<'_>,
    key: &str,
    what: impl fmt::Display,
) -> Result<Option<bool>, ServiceError> {
    match map.remove(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(ServiceError::bad_request(format!(
            "parameter '{key}' of {what} must be a boolean, not {}",
            kind_of(&other)
        ))),
    }
}

/// Takes a non-negative integer parameter out of `map`; present but not one is 400.
pub(super) fn take_count(
    map: &mut JsonParams<'_>,
    key: &str,
    what: impl fmt::Display,
) -> Result<Option<u64>, ServiceError> {
    match map.remove(key) {
        None => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(ServiceError::bad_request(format!(
            "parameter '{key}' of {what} must be a non-negative integer, not {other}"
        ))),
    }
}

/// Parses the optional body of a repository load or unload request,
/// `{"parameters": {...}}`: strings become `string_param`, except that a key
/// starting with `file:` carries base64 that becomes `bytes_param`; booleans
/// become `bool_param` and integers `int64_param`. An empty body means no
/// parameters.
pub(super) fn load_parameters(model: &str, body: &[u8]) -> Result<LoadParameters, ServiceError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(LoadParameters::new());
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        ServiceError::bad_request(format!(
            "invalid repository request JSON for model '{model}': {e}"
        ))
    })?;
    let Value::Object(mut doc) = doc else {
        return Err(ServiceError::bad_request(
            "the repository request body must be a JSON object",
        ));
    };
    let params = match doc.remove("parameters") {
        None | Some(Value::Null) => return Ok(LoadParameters::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(ServiceError::bad_request(format!(
                "'parameters' of the repository request must be an object, not {}",
                kind_of(&other)
            )))
        }
    };
    let mut out = LoadParameters::new();
    for (key, value) in params {
        let choice = match value {
            Value::String(s) if key.starts_with("file:") => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|e| {
                        ServiceError::bad_request(format!(
                            "load parameter '{key}' is not valid base64: {e}"
                        ))
                    })?;
                RepoChoice::BytesParam(bytes)
            }
            Value::String(s) => RepoChoice::StringParam(s),
            Value::Bool(b) => RepoChoice::BoolParam(b),
            Value::Number(n) if n.as_i64().is_some() => {
                RepoChoice::Int64Param(n.as_i64().unwrap_or_default())
            }
            other => {
                return Err(ServiceError::bad_request(format!(
                    "load parameter '{key}' must be a string, a boolean or an integer, not {other}"
                )))
            }
        };
        out.insert(
            key,
            pb::ModelRepositoryParameter {
                parameter_choice: Some(choice),
            },
        );
    }
    Ok(out)
}

/// A short name for the kind of a JSON value, for messages.
pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn choice(v: Value) -> ParameterChoice {
        infer_param("the request", "k", v)
            .unwrap()
            .parameter_choice
            .unwrap()
    }

    #[test]
    fn json_parameters_map_to_their_protobuf_kinds() {
        assert_eq!(choice(json!(true)), ParameterChoice::BoolParam(true));
        assert_eq!(choice(json!(-5)), ParameterChoice::Int64Param(-5));
        assert_eq!(
            choice(json!(u64::MAX)),
            ParameterChoice::Uint64Param(u64::MAX)
        );
        assert_eq!(choice(json!(1.5)), ParameterChoice::DoubleParam(1.5));
        assert_eq!(choice(json!("x")), ParameterChoice::StringParam("x".into()));
        let err = infer_param(Site::Input("a"), "k", json!([1])).unwrap_err();
        assert!(
            err.message.contains("input 'a'") && err.message.contains("'k'"),
            "{err}"
        );
        assert!(infer_param("x", "k", Value::Null).is_err());
    }

    #[test]
    fn protobuf_parameters_back_to_json() {
        let mut params = InferParams::new();
        for (k, v) in [
            ("b", json!(true)),
            ("i", json!(-3)),
            ("u", json!(u64::MAX)),
            ("d", json!(0.25)),
            ("s", json!("v")),
        ] {
            params.insert(k.into(), infer_param("t", k, v).unwrap());
        }
        params.insert(
            "nan".into(),
            pb::InferParameter {
                parameter_choice: Some(ParameterChoice::DoubleParam(f64::NAN)),
            },
        );
        let back = Value::Object(infer_params_json(&params));
        assert_eq!(
            back,
            json!({"b": true, "i": -3, "u": u64::MAX, "d": 0.25, "s": "v", "nan": null})
        );
    }

    #[test]
    fn a_repeated_parameter_counts_with_its_last_value_only() {
        let map: JsonParams = serde_json::from_str(r#"{"k": [1], "j": 1, "k": 2}"#).unwrap();
        let params = infer_params(Site::Request, map).unwrap();
        assert_eq!(params.len(), 2);
        assert_eq!(
            params["k"].parameter_choice,
            Some(ParameterChoice::Int64Param(2))
        );
    }

    #[test]
    fn typed_takers_reject_wrong_kinds() {
        let params = r#"{"binary_data": true, "classification": 3, "bad": "yes"}"#;
        let mut map: JsonParams = serde_json::from_str(params).unwrap();
        assert_eq!(take_bool(&mut map, "binary_data", "o").unwrap(), Some(true));
        assert_eq!(
            take_count(&mut map, "classification", "o").unwrap(),
            Some(3)
        );
        assert_eq!(take_bool(&mut map, "missing", "o").unwrap(), None);
        assert!(take_bool(&mut map, "bad", "o").is_err());
        let mut map: JsonParams = serde_json::from_str(r#"{"c": -1}"#).unwrap();
        assert!(take_count(&mut map, "c", "o").is_err());
    }

    #[test]
    fn load_parameters_decode_strings_files_bools_and_ints() {
        let body =
            br#"{"parameters": {"config": "{\"max_batch_size\": 4}", "file:1/model.onnx": "AAEC",
                        "flag": true, "n": 7}}"#;
        let params = load_parameters("m", body).unwrap();
        let get = |k: &str| params[k].parameter_choice.clone().unwrap();
        assert_eq!(
            get("config"),
            RepoChoice::StringParam("{\"max_batch_size\": 4}".into())
        );
        assert_eq!(
            get("file:1/model.onnx"),
            RepoChoice::BytesParam(vec![0, 1, 2])
        );
        assert_eq!(get("flag"), RepoChoice::BoolParam(true));
        assert_eq!(get("n"), RepoChoice::Int64Param(7));
        assert!(load_parameters("m", b"").unwrap().is_empty());
        assert!(load_parameters("m", b"{}").unwrap().is_empty());
        assert!(load_parameters("m", br#"{"parameters": {"file:x": "!!!"}}"#).is_err());
        assert!(load_parameters("m", br#"{"parameters": {"x": 1.5}}"#).is_err());
        assert!(load_parameters("m", b"[1]").is_err());
        assert!(load_parameters("m", b"{").is_err());
    }
}
