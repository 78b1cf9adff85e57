//! Post-processing of a model's output per its declared pipeline: softmax
//! and top-k with labels, top-k over probabilities, a regression value, or an
//! L2-normalised embedding.

use mlserve_common::config::{PipelineConfig, Postprocess};
use mlserve_proto::pb;
use serde_json::{json, Value};

use crate::error::GatewayError;
use crate::tensor_rows;

/// One output tensor as rows of f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Batch rows.
    pub rows: Vec<Vec<f64>>,
}

fn internal(message: String) -> GatewayError {
    GatewayError::Internal(message)
}

impl Output {
    /// The output named `name` (or the only/first output) of `response`,
    /// from raw little-endian bytes or typed contents; FP32, FP64, INT64 and
    /// INT32 are read.
    pub fn find(
        response: &pb::ModelInferResponse,
        name: Option<&str>,
    ) -> Result<Output, GatewayError> {
        let index = match name {
            Some(name) => response
                .outputs
                .iter()
                .position(|o| o.name == name)
                .ok_or_else(|| internal(format!("the model has no output '{name}'")))?,
            None if !response.outputs.is_empty() => 0,
            None => return Err(internal("the model returned no output".into())),
        };
        let tensor = &response.outputs[index];
        let raw = response.raw_output_contents.get(index).map(|b| &b[..]);
        if raw.is_none() && tensor.contents.is_none() {
            return Err(internal(format!("output '{}' has no data", tensor.name)));
        }
        let values = tensor_rows::values(&tensor.datatype, raw, tensor.contents.as_ref())
            .ok_or_else(|| internal(format!("cannot post-process datatype {}", tensor.datatype)))?;
        let count = values.len();
        let rows = tensor_rows::rows(&tensor.shape, values).ok_or_else(|| {
            internal(format!(
                "output '{}' has {count} values for batch {}",
                tensor.name,
                tensor.shape.first().copied().unwrap_or(1)
            ))
        })?;
        Ok(Output { rows })
    }
}

fn top_k(pipeline: &PipelineConfig, scores: &[f64]) -> Value {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let k = if pipeline.top_k == 0 {
        1
    } else {
        pipeline.top_k
    };
    let classes: Vec<Value> = order
        .into_iter()
        .take(k)
        .map(|i| {
            let label = pipeline
                .labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| i.to_string());
            json!({"index": i, "label": label, "score": scores[i]})
        })
        .collect();
    json!({ "top_k": classes })
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The predictions, one JSON value per batch row.
pub fn postprocess(pipeline: &PipelineConfig, output: &Output) -> Result<Vec<Value>, GatewayError> {
    let each = |f: &dyn Fn(&[f64]) -> Value| output.rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    Ok(match pipeline.postprocess {
        Postprocess::SoftmaxTopk => each(&|row| top_k(pipeline, &softmax(row))),
        Postprocess::ProbabilitiesTopk => each(&|row| top_k(pipeline, row)),
        Postprocess::Regression => {
            each(&|row| json!({ "value": row.first().copied().unwrap_or(f64::NAN) }))
        }
        Postprocess::Embedding => each(&|row| {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            let scaled: Vec<f64> = row
                .iter()
                .map(|v| if norm > 0.0 { v / norm } else { 0.0 })
                .collect();
            json!({ "embedding": scaled })
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(kind: Postprocess, k: usize, labels: &[&str]) -> PipelineConfig {
        PipelineConfig {
            output: None,
            postprocess: kind,
            top_k: k,
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn softmax_topk_with_labels() {
        let out = Output {
            rows: vec![vec![1.0, 3.0, 2.0]],
        };
        let p = postprocess(
            &pipeline(Postprocess::SoftmaxTopk, 2, &["cat", "dog", "fox"]),
            &out,
        )
        .unwrap();
        let top = p[0]["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["label"], "dog");
        assert_eq!(top[1]["label"], "fox");
        let total: f64 = softmax(&[1.0, 3.0, 2.0]).iter().sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!((top[0]["score"].as_f64().unwrap() - 0.665_240_955).abs() < 1e-6);
    }

    #[test]
    fn regression_and_embedding() {
        let out = Output {
            rows: vec![vec![3.0, 4.0], vec![0.0, 0.0]],
        };
        let e = postprocess(&pipeline(Postprocess::Embedding, 0, &[]), &out).unwrap();
        assert_eq!(e[0]["embedding"], json!([0.6, 0.8]));
        assert_eq!(e[1]["embedding"], json!([0.0, 0.0]));
        let r = postprocess(&pipeline(Postprocess::Regression, 0, &[]), &out).unwrap();
        assert_eq!(r[0]["value"], 3.0);
        let bogus = serde_json::from_str::<PipelineConfig>(r#"{"postprocess": "bogus"}"#);
        let message = bogus.unwrap_err().to_string();
        assert!(message.contains("unknown variant `bogus`"), "{message}");
        assert!(message.contains("softmax_topk"), "{message}");
    }

    #[test]
    fn raw_outputs_are_read_by_shape() {
        let response = pb::ModelInferResponse {
            outputs: vec![pb::model_infer_response::InferOutputTensor {
                name: "p".into(),
                datatype: "FP32".into(),
                shape: vec![2, 2],
                ..Default::default()
            }],
            raw_output_contents: vec![[0.25f32, 0.75, 1.0, 0.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into()],
            ..Default::default()
        };
        let out = Output::find(&response, Some("p")).unwrap();
        assert_eq!(out.rows, vec![vec![0.25, 0.75], vec![1.0, 0.0]]);
        assert!(Output::find(&response, Some("missing")).is_err());
    }
}
