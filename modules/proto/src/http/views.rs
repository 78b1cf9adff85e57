//! The JSON forms of the metadata, statistics and repository index replies,
//! with Triton's key names.

use serde_json::{json, Value};

use crate::inference::ModelIndex;
use crate::pb;

/// `GET /v2`: `{"name", "version", "extensions"}`.
pub(super) fn server_metadata(md: &pb::ServerMetadataResponse) -> Value {
    json!({ "name": md.name, "version": md.version, "extensions": md.extensions })
}

/// `GET /v2/models/{m}`: `{"name", "versions", "platform", "inputs", "outputs"}`.
pub(super) fn model_metadata(md: &pb::ModelMetadataResponse) -> Value {
    let tensors = |ts: &[pb::model_metadata_response::TensorMetadata]| -> Vec<Value> {
        ts.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
            .collect()
    };
    json!({
        "name": md.name,
        "versions": md.versions,
        "platform": md.platform,
        "inputs": tensors(&md.inputs),
        "outputs": tensors(&md.outputs),
    })
}

fn duration(d: Option<&pb::StatisticDuration>) -> Value {
    let (count, ns) = d.map_or((0, 0), |d| (d.count, d.ns));
    json!({ "count": count, "ns": ns })
}

/// `GET .../stats`: `{"model_stats": [...]}`; a missing duration is
/// `{"count": 0, "ns": 0}`. Beside Triton's fields each entry carries
/// mlserve's `queue_depth` (requests waiting now) and `instances`.
pub(super) fn statistics(stats: &pb::ModelStatisticsResponse) -> Value {
    let models: Vec<Value> = stats
        .model_stats
        .iter()
        .map(|m| {
            let s = m.inference_stats.as_ref();
            let batches: Vec<Value> = m
                .batch_stats
                .iter()
                .map(|b| {
                    json!({
                        "batch_size": b.batch_size,
                        "compute_input": duration(b.compute_input.as_ref()),
                        "compute_infer": duration(b.compute_infer.as_ref()),
                        "compute_output": duration(b.compute_output.as_ref()),
                    })
                })
                .collect();
            json!({
                "name": m.name,
                "version": m.version,
                "last_inference": m.last_inference,
                "inference_count": m.inference_count,
                "execution_count": m.execution_count,
                "inference_stats": {
                    "success": duration(s.and_then(|s| s.success.as_ref())),
                    "fail": duration(s.and_then(|s| s.fail.as_ref())),
                    "queue": duration(s.and_then(|s| s.queue.as_ref())),
                    "compute_input": duration(s.and_then(|s| s.compute_input.as_ref())),
                    "compute_infer": duration(s.and_then(|s| s.compute_infer.as_ref())),
                    "compute_output": duration(s.and_then(|s| s.compute_output.as_ref())),
                    "cache_hit": duration(s.and_then(|s| s.cache_hit.as_ref())),
                    "cache_miss": duration(s.and_then(|s| s.cache_miss.as_ref())),
                },
                "batch_stats": batches,
                "queue_depth": m.queue_depth,
                "instances": m.instances,
            })
        })
        .collect();
    json!({ "model_stats": models })
}

/// `POST /v2/repository/index`: `[{"name", "version"?, "state", "reason"?}]`;
/// an empty version or reason is left out, as Triton does.
pub(super) fn repository_index(models: &[ModelIndex]) -> Value {
    Value::Array(
        models
            .iter()
            .map(|m| {
                let mut entry = serde_json::Map::new();
                entry.insert("name".into(), Value::from(m.name.as_str()));
                if !m.version.is_empty() {
                    entry.insert("version".into(), Value::from(m.version.as_str()));
                }
                entry.insert("state".into(), Value::from(m.state.as_str()));
                if !m.reason.is_empty() {
                    entry.insert("reason".into(), Value::from(m.reason.as_str()));
                }
                Value::Object(entry)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_fill_missing_durations() {
        let stats = pb::ModelStatisticsResponse {
            model_stats: vec![pb::ModelStatistics {
                name: "m".into(),
                version: "1".into(),
                last_inference: 5,
                inference_count: 4,
                execution_count: 2,
                inference_stats: Some(pb::InferStatistics {
                    success: Some(pb::StatisticDuration { count: 3, ns: 300 }),
                    ..Default::default()
                }),
                batch_stats: vec![pb::InferBatchStatistics {
                    batch_size: 2,
                    ..Default::default()
                }],
                queue_depth: 7,
                instances: 2,
            }],
        };
        let v = statistics(&stats);
        let m = &v["model_stats"][0];
        assert_eq!(
            (m["queue_depth"].as_u64(), m["instances"].as_u64()),
            (Some(7), Some(2))
        );
        assert_eq!(
            m["inference_stats"]["success"],
            json!({"count": 3, "ns": 300})
        );
        assert_eq!(
            m["inference_stats"]["cache_miss"],
            json!({"count": 0, "ns": 0})
        );
        assert_eq!(
            m["batch_stats"][0]["compute_infer"],
            json!({"count": 0, "ns": 0})
        );
        assert_eq!(m["batch_stats"][0]["batch_size"], 2);
        assert_eq!(
            (m["last_inference"].clone(), m["version"].clone()),
            (json!(5), json!("1"))
        );
    }

    #[test]
    fn index_omits_empty_version_and_reason() {
        let models = vec![
            ModelIndex {
                name: "a".into(),
                version: "1".into(),
                state: "READY".into(),
                reason: String::new(),
            },
            ModelIndex {
                name: "b".into(),
                version: String::new(),
                state: "UNAVAILABLE".into(),
                reason: "unloaded".into(),
            },
        ];
        assert_eq!(
            repository_index(&models),
            json!([{"name": "a", "version": "1", "state": "READY"}, {"name": "b", "state": "UNAVAILABLE", "reason": "unloaded"}])
        );
    }
}
