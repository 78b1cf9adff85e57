//! Templates as Argo writes them: `{{workflow.parameters.x}}`,
//! `{{steps.train.outputs.parameters.auc}}`, `{{steps.train.outputs.artifacts.model}}`,
//! `{{item}}`, `{{workflow.name}}`, `{{workflow.uid}}`, `{{workflow.status}}`
//! and mlserve's `{{step.dir}}`. Whitespace inside the braces is ignored.

use std::collections::BTreeMap;

/// What one `{{...}}` names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reference {
    /// `workflow.parameters.<name>`.
    Parameter(String),
    /// `workflow.name`.
    WorkflowName,
    /// `workflow.uid`: the run id.
    RunId,
    /// `workflow.status`: the run's outcome, in the exit handler only.
    WorkflowStatus,
    /// `steps.<step>.outputs.parameters.<name>`.
    OutputParameter {
        /// The producing step.
        step: String,
        /// The parameter.
        name: String,
    },
    /// `steps.<step>.outputs.artifacts.<name>`: the artifact's object key.
    OutputArtifact {
        /// The producing step.
        step: String,
        /// The artifact.
        name: String,
    },
    /// `item`: the fan-out value.
    Item,
    /// `step.dir`: the step's own directory.
    StepDir,
}

impl Reference {
    /// The step this reference reads outputs from, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Reference::OutputParameter { step, .. } | Reference::OutputArtifact { step, .. } => {
                Some(step)
            }
            _ => None,
        }
    }
}

/// A template that names something that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown template reference '{{{{{0}}}}}'")]
pub struct UnknownReference(pub String);

/// Every reference in `text`, in order; an unparseable one is an error.
pub fn references(text: &str) -> Result<Vec<Reference>, UnknownReference> {
    let mut found = Vec::new();
    for inner in placeholders(text) {
        found.push(parse_reference(inner)?);
    }
    Ok(found)
}

/// The text inside each `{{ }}` pair, trimmed.
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    out
}

fn parse_reference(inner: &str) -> Result<Reference, UnknownReference> {
    let parts: Vec<&str> = inner.split('.').collect();
    let unknown = || UnknownReference(inner.to_string());
    Ok(match parts.as_slice() {
        ["item"] => Reference::Item,
        ["step", "dir"] => Reference::StepDir,
        ["workflow", "name"] => Reference::WorkflowName,
        ["workflow", "uid"] => Reference::RunId,
        ["workflow", "status"] => Reference::WorkflowStatus,
        ["workflow", "parameters", name] if !name.is_empty() => {
            Reference::Parameter(name.to_string())
        }
        ["steps", step, "outputs", "parameters", name] if !step.is_empty() && !name.is_empty() => {
            Reference::OutputParameter {
                step: step.to_string(),
                name: name.to_string(),
            }
        }
        ["steps", step, "outputs", "artifacts", name] if !step.is_empty() && !name.is_empty() => {
            Reference::OutputArtifact {
                step: step.to_string(),
                name: name.to_string(),
            }
        }
        _ => return Err(unknown()),
    })
}

/// The values templates are filled from.
pub type Values = BTreeMap<Reference, String>;

/// `text` with every reference replaced by its value; a reference without
/// a value is an error naming it.
pub fn render(text: &str, values: &Values) -> Result<String, UnknownReference> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let inner = after[..end].trim();
        let reference = parse_reference(inner)?;
        let value = values
            .get(&reference)
            .ok_or_else(|| UnknownReference(inner.to_string()))?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every string inside a JSON value (a built-in's arguments), recursively.
pub fn json_strings(value: &serde_json::Value) -> Vec<&str> {
    match value {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(items) => items.iter().flat_map(json_strings).collect(),
        serde_json::Value::Object(map) => map.values().flat_map(json_strings).collect(),
        _ => Vec::new(),
    }
}

/// `value` with every string rendered.
pub fn render_json(
    value: &serde_json::Value,
    values: &Values,
) -> Result<serde_json::Value, UnknownReference> {
    Ok(match value {
        serde_json::Value::String(s) => serde_json::Value::String(render(s, values)?),
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|v| render_json(v, values))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, values)?)))
                .collect::<Result<_, UnknownReference>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_argo_references() {
        let refs = references(
            "{{workflow.parameters.x}} {{ steps.train.outputs.parameters.auc }} {{item}} \
             {{steps.a.outputs.artifacts.model}} {{workflow.uid}}",
        )
        .unwrap();
        assert_eq!(
            refs,
            vec![
                Reference::Parameter("x".into()),
                Reference::OutputParameter {
                    step: "train".into(),
                    name: "auc".into()
                },
                Reference::Item,
                Reference::OutputArtifact {
                    step: "a".into(),
                    name: "model".into()
                },
                Reference::RunId,
            ]
        );
        assert_eq!(
            references("{{workflow.params.x}}").unwrap_err(),
            UnknownReference("workflow.params.x".into())
        );
        assert_eq!(references("no templates {{ unclosed").unwrap(), vec![]);
    }

    #[test]
    fn renders_and_names_what_is_missing() {
        let mut values = Values::new();
        values.insert(Reference::Parameter("t".into()), "0.8".into());
        assert_eq!(
            render("auc >= {{workflow.parameters.t}}!", &values).unwrap(),
            "auc >= 0.8!"
        );
        assert_eq!(
            render("{{item}}", &values).unwrap_err().to_string(),
            "unknown template reference '{{item}}'"
        );
        let json = serde_json::json!({"a": ["{{workflow.parameters.t}}", 1]});
        assert_eq!(
            render_json(&json, &values).unwrap(),
            serde_json::json!({"a": ["0.8", 1]})
        );
    }
}
