//! `pb::ModelConfig` as Triton's JSON: proto field names in snake_case, enums
//! by name (`"TYPE_FP32"`, `"KIND_CPU"`, `"REJECT"`), 64-bit integers as JSON
//! numbers, every scalar field written (defaults included), an absent message
//! field left out. Written by hand: the prost types have no serde.

use serde_json::{json, Map, Value};

use crate::pb;
use crate::pb::model_config::SchedulingChoice;
use crate::pb::model_version_policy::PolicyChoice;

/// An enum by its proto name, or its number when the value is not one of
/// the enum's (a newer peer may send more values than this build knows).
fn enum_name(value: i32, name: Option<&'static str>) -> Value {
    name.map_or_else(|| Value::from(value), Value::from)
}

fn data_type(value: i32) -> Value {
    enum_name(
        value,
        pb::DataType::try_from(value).ok().map(|d| d.as_str_name()),
    )
}

/// The configuration as Triton's JSON.
pub(super) fn model_config_json(c: &pb::ModelConfig) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(c.name));
    out.insert("platform".into(), json!(c.platform));
    out.insert("backend".into(), json!(c.backend));
    if let Some(policy) = &c.version_policy {
        let policy = match &policy.policy_choice {
            Some(PolicyChoice::Latest(l)) => {
                json!({ "latest": { "num_versions": l.num_versions } })
            }
            Some(PolicyChoice::All(_)) => json!({ "all": {} }),
            Some(PolicyChoice::Specific(s)) => json!({ "specific": { "versions": s.versions } }),
            None => json!({}),
        };
        out.insert("version_policy".into(), policy);
    }
    out.insert(
        "max_batch_size".into(),
        json!(c.max_batch_size.unwrap_or(0)),
    );
    let inputs: Vec<Value> = c
        .input
        .iter()
        .map(|i| json!({ "name": i.name, "data_type": data_type(i.data_type), "dims": i.dims, "optional": i.optional }))
        .collect();
    out.insert("input".into(), Value::Array(inputs));
    let outputs: Vec<Value> = c
        .output
        .iter()
        .map(|o| {
            json!({
                "name": o.name,
                "data_type": data_type(o.data_type),
                "dims": o.dims,
                "label_filename": o.label_filename,
            })
        })
        .collect();
    out.insert("output".into(), Value::Array(outputs));
    let groups: Vec<Value> = c
        .instance_group
        .iter()
        .map(|g| {
            let kind = pb::model_instance_group::Kind::try_from(g.kind).ok().map(|k| k.as_str_name());
            json!({ "name": g.name, "kind": enum_name(g.kind, kind), "count": g.count, "gpus": g.gpus })
        })
        .collect();
    out.insert("instance_group".into(), Value::Array(groups));
    out.insert(
        "default_model_filename".into(),
        json!(c.default_model_filename),
    );
    if let Some(SchedulingChoice::DynamicBatching(d)) = &c.scheduling_choice {
        let mut batching = Map::new();
        batching.insert("preferred_batch_size".into(), json!(d.preferred_batch_size));
        batching.insert(
            "max_queue_delay_microseconds".into(),
            json!(d.max_queue_delay_microseconds),
        );
        batching.insert("preserve_ordering".into(), json!(d.preserve_ordering));
        batching.insert("priority_levels".into(), json!(d.priority_levels));
        batching.insert(
            "default_priority_level".into(),
            json!(d.default_priority_level),
        );
        if let Some(q) = &d.default_queue_policy {
            let action = pb::model_queue_policy::TimeoutAction::try_from(q.timeout_action)
                .ok()
                .map(|a| a.as_str_name());
            batching.insert(
                "default_queue_policy".into(),
                json!({
                    "timeout_action": enum_name(q.timeout_action, action),
                    "default_timeout_microseconds": q.default_timeout_microseconds,
                    "allow_timeout_override": q.allow_timeout_override,
                    "max_queue_size": q.max_queue_size,
                }),
            );
        }
        out.insert("dynamic_batching".into(), Value::Object(batching));
    }
    if let Some(SchedulingChoice::EnsembleScheduling(e)) = &c.scheduling_choice {
        let steps: Vec<Value> = e
            .step
            .iter()
            .map(|s| {
                json!({
                    "model_name": s.model_name,
                    "model_version": s.model_version,
                    "input_map": s.input_map,
                    "output_map": s.output_map,
                })
            })
            .collect();
        out.insert("ensemble_scheduling".into(), json!({ "step": steps }));
    }
    if let Some(o) = &c.optimization {
        let mut optimization = Map::new();
        if let Some(g) = &o.graph {
            optimization.insert("graph".into(), json!({ "level": g.level }));
        }
        out.insert("optimization".into(), Value::Object(optimization));
    }
    let params: Map<String, Value> = c
        .parameters
        .iter()
        .map(|(k, p)| (k.clone(), json!({ "string_value": p.string_value })))
        .collect();
    out.insert("parameters".into(), Value::Object(params));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_uses_triton_names_and_enum_names() {
        let config = pb::ModelConfig {
            name: "simple".into(),
            platform: "onnxruntime_onnx".into(),
            backend: "onnxruntime".into(),
            version_policy: Some(pb::ModelVersionPolicy {
                policy_choice: Some(PolicyChoice::Specific(pb::model_version_policy::Specific {
                    versions: vec![1, 3],
                })),
            }),
            max_batch_size: Some(8),
            input: vec![pb::ModelInput {
                name: "INPUT0".into(),
                data_type: pb::DataType::TypeInt32 as i32,
                dims: vec![16],
                ..Default::default()
            }],
            output: vec![pb::ModelOutput {
                name: "OUTPUT0".into(),
                data_type: pb::DataType::TypeString as i32,
                dims: vec![-1],
                ..Default::default()
            }],
            instance_group: vec![pb::ModelInstanceGroup {
                name: "g".into(),
                count: 2,
                gpus: vec![],
                kind: pb::model_instance_group::Kind::Cpu as i32,
                ..Default::default()
            }],
            scheduling_choice: Some(SchedulingChoice::DynamicBatching(
                pb::ModelDynamicBatching {
                    preferred_batch_size: vec![4, 8],
                    max_queue_delay_microseconds: 100,
                    default_queue_policy: Some(pb::ModelQueuePolicy {
                        timeout_action: pb::model_queue_policy::TimeoutAction::Delay as i32,
                        default_timeout_microseconds: 5000,
                        allow_timeout_override: true,
                        max_queue_size: 16,
                    }),
                    ..Default::default()
                },
            )),
            optimization: Some(pb::ModelOptimizationPolicy {
                graph: Some(pb::model_optimization_policy::Graph { level: 1 }),
                ..Default::default()
            }),
            parameters: [(
                "k".to_string(),
                pb::ModelParameter {
                    string_value: "v".into(),
                },
            )]
            .into(),
            ..Default::default()
        };
        let v = model_config_json(&config);
        assert_eq!(
            v["version_policy"],
            json!({"specific": {"versions": [1, 3]}})
        );
        assert_eq!(v["max_batch_size"], 8);
        assert_eq!(
            v["input"][0],
            json!({"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16], "optional": false})
        );
        assert_eq!(v["output"][0]["data_type"], "TYPE_STRING");
        assert_eq!(
            v["instance_group"][0],
            json!({"name": "g", "kind": "KIND_CPU", "count": 2, "gpus": []})
        );
        assert_eq!(v["dynamic_batching"]["preferred_batch_size"], json!([4, 8]));
        assert_eq!(v["dynamic_batching"]["max_queue_delay_microseconds"], 100);
        assert_eq!(
            v["dynamic_batching"]["default_queue_policy"],
            json!({"timeout_action": "DELAY", "default_timeout_microseconds": 5000,
                   "allow_timeout_override": true, "max_queue_size": 16})
        );
        assert_eq!(v["optimization"], json!({"graph": {"level": 1}}));
        assert_eq!(v["parameters"], json!({"k": {"string_value": "v"}}));
    }

    #[test]
    fn absent_messages_are_left_out_and_policies_render() {
        let mut config = pb::ModelConfig {
            name: "m".into(),
            ..Default::default()
        };
        let v = model_config_json(&config);
        assert!(v.get("dynamic_batching").is_none() && v.get("version_policy").is_none());
        assert_eq!(v["max_batch_size"], 0);
        config.version_policy = Some(pb::ModelVersionPolicy {
            policy_choice: Some(PolicyChoice::Latest(pb::model_version_policy::Latest {
                num_versions: 1,
            })),
        });
        assert_eq!(
            model_config_json(&config)["version_policy"],
            json!({"latest": {"num_versions": 1}})
        );
        config.version_policy = Some(pb::ModelVersionPolicy {
            policy_choice: Some(PolicyChoice::All(pb::model_version_policy::All {})),
        });
        assert_eq!(
            model_config_json(&config)["version_policy"],
            json!({"all": {}})
        );
    }

    #[test]
    fn ensemble_steps_render_with_their_maps() {
        let step = pb::model_ensembling::Step {
            model_name: "a".into(),
            model_version: -1,
            input_map: [("x".to_string(), "IN".to_string())].into(),
            output_map: [("y".to_string(), "OUT".to_string())].into(),
            ..Default::default()
        };
        let config = pb::ModelConfig {
            platform: "ensemble".into(),
            scheduling_choice: Some(SchedulingChoice::EnsembleScheduling(pb::ModelEnsembling {
                step: vec![step],
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            model_config_json(&config)["ensemble_scheduling"],
            json!({"step": [{"model_name": "a", "model_version": -1,
                             "input_map": {"x": "IN"}, "output_map": {"y": "OUT"}}]})
        );
    }
}
