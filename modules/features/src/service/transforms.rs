//! The transform half of [`LocalFeatures`]: tabular assembly (online lookups
//! and offline means), loaded tokenizers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use mlserve_proto::features::{EntityRow, Tensor};

use super::LocalFeatures;
use crate::error::{invalid, FeaturesError, Result};
use crate::transform::{self, text::TextTransform};
use crate::{lookup, offline};

impl LocalFeatures {
    pub(super) async fn mean_of(&self, reference: &str) -> Result<Option<f64>> {
        if let Ok(means) = self.means.lock() {
            if let Some((at, mean)) = means.get(reference) {
                if at.elapsed() < self.options.mean_refresh {
                    return Ok(*mean);
                }
            }
        }
        let (view, feature) = reference
            .split_once(':')
            .ok_or_else(|| invalid(format!("'{reference}' has no offline mean")))?;
        let mean = offline::mean(&self.db, view, feature).await?;
        if let Ok(mut means) = self.means.lock() {
            means.insert(reference.to_string(), (Instant::now(), mean));
        }
        Ok(mean)
    }

    pub(super) async fn text_transform(
        &self,
        model: &str,
        version: i64,
        spec: &transform::text::TextSpec,
    ) -> Result<Arc<TextTransform>> {
        let key = (model.to_string(), version);
        if let Some(t) = self
            .tokenizers
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(t);
        }
        let spec = spec.clone();
        let loaded = tokio::task::spawn_blocking(move || TextTransform::load(spec))
            .await
            .map_err(|e| FeaturesError::Internal(format!("tokenizer load task: {e}")))?
            .map_err(|e| FeaturesError::Transform(e.code(), e.to_string()))?;
        let loaded = Arc::new(loaded);
        if let Ok(mut map) = self.tokenizers.lock() {
            map.insert(key, loaded.clone());
        }
        Ok(loaded)
    }

    pub(super) async fn tabular(
        &self,
        spec: &transform::tabular::TabularSpec,
        rows_json: &[String],
    ) -> Result<Tensor> {
        if rows_json.is_empty() {
            return Err(invalid("a tabular pipeline needs at least one row"));
        }
        let mut rows = Vec::with_capacity(rows_json.len());
        let mut entities = Vec::with_capacity(rows_json.len());
        for (i, text) in rows_json.iter().enumerate() {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
                .map_err(|e| invalid(format!("row {i} is not a JSON object: {e}")))?;
            entities.push(EntityRow {
                keys: object
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
                event_ts: 0,
            });
            rows.push(object);
        }
        let refs = spec.lookups();
        let online = if refs.is_empty() {
            None
        } else {
            let (catalog, _) = self.catalog().await?;
            Some(
                lookup::get_online(
                    &catalog,
                    self.online.as_ref(),
                    &refs,
                    &entities,
                    self.options.max_entities,
                )
                .await?,
            )
        };
        let mut means = HashMap::new();
        for f in &spec.features {
            if f.missing == transform::tabular::Missing::Mean && f.mean.is_none() {
                if let Some(r) = f.view_ref() {
                    means.insert(f.name.clone(), self.mean_of(r).await?);
                }
            }
        }
        transform::tabular::assemble(spec, &rows, online.as_ref(), &means)
    }
}
