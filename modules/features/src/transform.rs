//! Transforms: the CPU stage that turns a request into a model's input
//! tensors. A model's [`PipelineSpec`] says which: tabular assembly from
//! feature views and request values, the image transform, or the text
//! transform. Image and text work runs on the blocking pool.

pub mod image;
pub mod tabular;
pub mod text;

use std::path::PathBuf;

use mlserve_proto::features::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, FeaturesError, Result};

/// A model's preprocessing, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PipelineSpec {
    /// Ordered features from views and the request, one FP32 row per entity.
    Tabular(tabular::TabularSpec),
    /// Images decoded, resized, cropped and normalised.
    Image {
        /// Name of the output tensor.
        #[serde(default = "default_input")]
        output: String,
        /// The image recipe (ResNet-50 defaults).
        #[serde(default)]
        image: image::ImageSpec,
    },
    /// Texts tokenised into input_ids / attention_mask / token_type_ids.
    Text {
        /// The tokenizer and its padding and truncation.
        text: text::TextSpec,
    },
}

fn default_input() -> String {
    "input".into()
}

impl PipelineSpec {
    /// `tabular`, `image` or `text`.
    pub fn kind(&self) -> &'static str {
        match self {
            PipelineSpec::Tabular(_) => "tabular",
            PipelineSpec::Image { .. } => "image",
            PipelineSpec::Text { .. } => "text",
        }
    }

    /// Parses a spec from JSON, checking what can be checked without data.
    pub fn from_json(value: serde_json::Value, model: &str) -> Result<PipelineSpec> {
        let spec: PipelineSpec = serde_json::from_value(value)
            .map_err(|e| invalid(format!("pipeline of model '{model}': {e}")))?;
        match &spec {
            PipelineSpec::Tabular(t) => t.validate(model)?,
            PipelineSpec::Image { image, .. } => image
                .validate()
                .map_err(|e| invalid(format!("pipeline of model '{model}': {e}")))?,
            PipelineSpec::Text { text } => {
                if !text.tokenizer.is_file() {
                    return Err(invalid(format!(
                        "pipeline of model '{model}': tokenizer '{}' is not a file",
                        text.tokenizer.display()
                    )));
                }
            }
        }
        Ok(spec)
    }

    /// Parses a spec from any serializable table (a configuration section).
    pub fn from_config<T: Serialize>(table: &T, model: &str) -> Result<PipelineSpec> {
        let value = serde_json::to_value(table)
            .map_err(|e| invalid(format!("pipeline of model '{model}': {e}")))?;
        PipelineSpec::from_json(value, model)
    }

    /// The tokenizer file of a text pipeline.
    pub fn tokenizer(&self) -> Option<&PathBuf> {
        match self {
            PipelineSpec::Text { text } => Some(&text.tokenizer),
            _ => None,
        }
    }
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Runs the image transform over `images` on the blocking pool.
pub async fn run_image(
    spec: &image::ImageSpec,
    output: &str,
    images: Vec<Vec<u8>>,
) -> Result<Tensor> {
    if images.is_empty() {
        return Err(invalid("an image pipeline needs at least one image"));
    }
    let spec = spec.clone();
    let (shape, values) =
        tokio::task::spawn_blocking(move || image::transform_batch(&spec, &images))
            .await
            .map_err(|e| FeaturesError::Internal(format!("image transform task: {e}")))?
            .map_err(|e| FeaturesError::Transform(e.code(), e.to_string()))?;
    Ok(Tensor {
        name: output.to_string(),
        datatype: "FP32".into(),
        shape: shape.iter().map(|&d| d as i64).collect(),
        data: f32_bytes(&values),
    })
}

/// Runs a loaded text transform over `texts` on the blocking pool.
pub async fn run_text(
    transform: std::sync::Arc<text::TextTransform>,
    texts: Vec<String>,
) -> Result<Vec<Tensor>> {
    if texts.is_empty() {
        return Err(invalid("a text pipeline needs at least one text"));
    }
    let batch = tokio::task::spawn_blocking(move || transform.encode(&texts))
        .await
        .map_err(|e| FeaturesError::Internal(format!("text transform task: {e}")))?
        .map_err(|e| FeaturesError::Transform(e.code(), e.to_string()))?;
    let shape = vec![batch.shape[0] as i64, batch.shape[1] as i64];
    Ok(batch
        .tensors
        .into_iter()
        .map(|t| Tensor {
            name: t.output.as_str().to_string(),
            datatype: "INT64".into(),
            shape: shape.clone(),
            data: t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
        .collect())
}
