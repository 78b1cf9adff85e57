//! The clients of every service, as the roles of this process see them: a
//! local `Arc<dyn Trait>` when the service's role runs here, a gRPC client
//! when it runs elsewhere (configured endpoints), or none.

use mlserve_proto::features::FeaturesClient;
use mlserve_proto::inference::InferenceClient;
use mlserve_proto::monitoring::MonitoringClient;
use mlserve_proto::registry::RegistryClient;
use mlserve_proto::training::TrainingClient;

/// One client per service; `None` when it is neither here nor configured.
#[derive(Clone, Default)]
pub struct Clients {
    /// The inference service (Open Inference Protocol).
    pub inference: Option<InferenceClient>,
    /// The registry service (models, versions, aliases, artifacts).
    pub registry: Option<RegistryClient>,
    /// The feature service (lookups, transforms, stores).
    pub features: Option<FeaturesClient>,
    /// The training service (workflows, runs, logs).
    pub training: Option<TrainingClient>,
    /// The monitoring service (rollouts, windows, drift).
    pub monitoring: Option<MonitoringClient>,
}
