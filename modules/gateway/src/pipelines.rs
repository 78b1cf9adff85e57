//! Where a model's predict pipeline is declared: `[gateway.pipelines.<model>]`
//! first, else the registry: the registered model's tag
//! [`PIPELINE_TAG`] holding the same keys as JSON, e.g.
//! `{"output": "probabilities", "postprocess": "probabilities_topk", "top_k": 2}`.
//! Registry answers are cached for [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mlserve_common::config::PipelineConfig;
use mlserve_proto::registry::{pb, RegistryClient, RegistryService};
use mlserve_proto::CallContext;
use mlserve_proto::ErrorCode;

use crate::error::GatewayError;

/// The registered-model tag that declares a predict pipeline.
pub const PIPELINE_TAG: &str = "mlserve.pipeline";
/// How long a pipeline read from the registry (or its absence) is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// The pipelines of the configuration and of the registry.
pub struct Pipelines {
    configured: std::collections::BTreeMap<String, PipelineConfig>,
    registry: Option<RegistryClient>,
    cache: Mutex<HashMap<String, (Option<PipelineConfig>, Instant)>>,
}

impl Pipelines {
    /// Pipelines from `configured`, then from `registry` when there is one.
    pub fn new(
        configured: std::collections::BTreeMap<String, PipelineConfig>,
        registry: Option<RegistryClient>,
    ) -> Pipelines {
        Pipelines {
            configured,
            registry,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The pipeline of `model`, or 404.
    pub async fn get(&self, model: &str) -> Result<PipelineConfig, GatewayError> {
        let missing = || {
            GatewayError::NotFound(format!(
                "model '{model}' has no predict pipeline (gateway.pipelines.{model}, or the registry tag '{PIPELINE_TAG}')"
            ))
        };
        if let Some(pipeline) = self.configured.get(model) {
            return Ok(pipeline.clone());
        }
        let Some(registry) = &self.registry else {
            return Err(missing());
        };
        if let Ok(cache) = self.cache.lock() {
            if let Some((found, at)) = cache.get(model) {
                if at.elapsed() < CACHE_TTL {
                    return found.clone().ok_or_else(missing);
                }
            }
        }
        let request = pb::GetModelRequest {
            name: model.to_string(),
        };
        let found = match registry.get_model(CallContext::new(), request).await {
            Ok(registered) => match registered.tags.get(PIPELINE_TAG) {
                Some(json) => Some(serde_json::from_str::<PipelineConfig>(json).map_err(|e| {
                    GatewayError::Internal(format!(
                        "registry tag '{PIPELINE_TAG}' of model '{model}' is invalid: {e}"
                    ))
                })?),
                None => None,
            },
            Err(err) if err.code == ErrorCode::NotFound => None,
            Err(err) => {
                return Err(GatewayError::Unavailable(format!(
                    "registry: {}",
                    err.message
                )))
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(model.to_string(), (found.clone(), Instant::now()));
        }
        found.ok_or_else(missing)
    }
}
