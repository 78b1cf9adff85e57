//! The inference role: model manager, Open Inference Protocol over HTTP and
//! gRPC, Prometheus metrics, the repository poller, and the registry
//! follower (models from the registry, swapped when their alias moves).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use mlserve_common::config::ModelControlMode;
use mlserve_common::events::MODELS_TOPIC;
use mlserve_inference::artifact_cache::ArtifactCache;
use mlserve_inference::follow::{Follower, Trigger};
use mlserve_inference::manager::{ManagerOptions, ModelManager};
use mlserve_inference::service::LocalInference;
use mlserve_inference::stats::StatsRegistry;
use mlserve_proto::http::{v2_routes, HttpOptions};
use mlserve_proto::inference::{inference_grpc_server, InferenceClient};

use super::Node;

/// The window the autoscaling signal measures arrivals and service time over.
const DEMAND_WINDOW: Duration = Duration::from_secs(10);
/// The time the autoscaling signal gives a backlog to drain.
const DEMAND_DRAIN: Duration = Duration::from_secs(30);

/// Adds the inference role to `node`: the v2 routes and gRPC service, its
/// metrics, readiness, then loads the models in the background; readiness
/// turns true once the initial loads finish.
pub async fn start(node: &mut Node, ort_cores: usize) -> Result<()> {
    let settings = node.config.inference.clone();
    let server = node.config.server.clone();
    let cpu_threads = ort_cores;
    let library = settings.onnxruntime_library.as_deref();
    let env = mlserve_inference::ort_env::environment(library, cpu_threads)
        .map_err(anyhow::Error::msg)?;
    let options = ManagerOptions {
        root: settings.model_repository.clone(),
        mode: settings.model_control_mode,
        default_queue: settings.default_max_queue_size.max(1),
        default_latency_objective: Some(settings.default_latency_objective)
            .filter(|objective| !objective.is_zero()),
    };
    if !options.root.is_dir() && settings.models.is_empty() {
        anyhow::bail!(
            "model repository '{}' is not a directory (set --model-repository or inference.model_repository)",
            options.root.display()
        );
    }
    let manager = Arc::new(ModelManager::new(
        options,
        env,
        Arc::new(StatsRegistry::default()),
    ));
    let follower = follower(node, &manager).await?;
    let required = if settings.strict_readiness {
        settings.models.iter().map(|m| m.name.clone()).collect()
    } else {
        Vec::new()
    };
    let local = Arc::new(
        LocalInference::new(manager.clone())
            .with_required_models(required)
            .with_server_name(&settings.server_name),
    );
    let client = InferenceClient::from_arc(local.clone());
    node.clients.inference = Some(client.clone());

    node.add_routes(v2_routes(
        client.clone(),
        HttpOptions {
            max_body_bytes: server.http_max_body_bytes,
        },
    ));
    node.grpc.add_service(inference_grpc_server(
        local.clone(),
        server.http_max_body_bytes,
    ));
    node.readiness_owned = true;
    let health = node.readiness.clone();
    health.set(false).await;

    let stats = manager.stats().clone();
    let demand = Arc::new(mlserve_inference::demand::Demand::new(
        stats.clone(),
        DEMAND_WINDOW,
        DEMAND_DRAIN,
    ));
    tokio::spawn(demand.clone().run(node.shutdown.signal()));
    node.metrics.register_collector(Box::new(
        mlserve_inference::metrics::InferenceCollector::new(stats).with_demand(demand),
    ));

    let ready_flag = local.clone();
    let health_off = health.clone();
    node.on_shutdown.push(Box::new(move || {
        ready_flag.set_ready(false);
        tokio::spawn(async move { health_off.set(false).await });
    }));

    let mode = settings.model_control_mode;
    let load_models = settings.load_models.clone();
    let poll_every = settings
        .repository_poll_interval
        .max(Duration::from_millis(50));
    let signal = node.shutdown.signal();
    tokio::spawn(async move {
        let loader = manager.clone();
        let loaded =
            tokio::task::spawn_blocking(move || initial_load(&loader, mode, &load_models)).await;
        if let Ok(Err(err)) | Err(err) = loaded.map_err(|e| anyhow::anyhow!(e)) {
            tracing::error!(error = %err, "initial model load failed");
        }
        if let Some((follower, _)) = &follower {
            follower.sync_all(Trigger::Start).await;
        }
        if signal.is_triggered() {
            return;
        }
        local.set_ready(true);
        health.set(true).await;
        tracing::info!(models = ?manager.loaded_models(), "server ready");
        if let Some((follower, _subscription)) = follower {
            let every = settings.registry_poll_interval;
            if !every.is_zero() {
                let poller = follower.poll(every.max(Duration::from_millis(50)), signal.clone());
                tokio::spawn(poller);
            }
            if mode != ModelControlMode::Poll {
                // Keeps the event subscription alive until shutdown.
                signal.wait().await;
                return;
            }
            poll_repository(manager, poll_every, signal).await;
        } else if mode == ModelControlMode::Poll {
            poll_repository(manager, poll_every, signal).await;
        }
    });
    Ok(())
}

/// The registry follower when `inference.models` lists any: its registry
/// client (local, or remote at `registry.endpoint`), artifact
/// cache, metrics, and its subscription to the model events (made before the
/// first sync, so no alias move is missed).
async fn follower(
    node: &mut Node,
    manager: &Arc<ModelManager>,
) -> Result<Option<(Arc<Follower>, mlserve_common::events::Subscription)>> {
    let settings = &node.config.inference;
    if settings.models.is_empty() {
        return Ok(None);
    }
    if let Some(clash) = settings
        .models
        .iter()
        .find(|m| settings.model_repository.join(&m.name).is_dir())
    {
        anyhow::bail!(
            "inference.models: '{}' is also a directory of the model repository; serve it from one place",
            clash.name
        );
    }
    let Some(registry) = node.clients.registry.clone() else {
        anyhow::bail!(
            "inference.models needs the registry: run the registry role in this process or set registry.endpoint"
        );
    };
    let cache_dir = settings
        .artifact_cache_dir
        .clone()
        .unwrap_or_else(|| node.config.server.data_dir.join("cache"));
    let cache = ArtifactCache::new(cache_dir);
    // Before the subscription and the first sync: what a killed process
    // left half-done in the cache is no one's now.
    cache.clear_working_dirs().await;
    let follower = Arc::new(
        Follower::new(
            manager.clone(),
            registry,
            cache,
            settings.models.clone(),
            node.events.clone(),
        )
        .map_err(anyhow::Error::msg)?
        .with_placement(settings.instance_kind),
    );
    // Every inference process is its own consumer group: each must see
    // every alias move.
    let group = format!("inference-{}", node.events.consumer_name());
    let subscription = node
        .events
        .subscribe(MODELS_TOPIC, &group, follower.handler())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to model events: {e}"))?;
    node.metrics
        .register_collector(Box::new(follower.metrics().clone()));
    tracing::info!(models = follower.models().len(), group = %group, "following models in the registry");
    Ok(Some((follower, subscription)))
}

fn initial_load(
    manager: &ModelManager,
    mode: ModelControlMode,
    load_models: &[String],
) -> Result<()> {
    match mode {
        ModelControlMode::Explicit if !load_models.iter().any(|m| m == "*") => {
            for name in load_models {
                if let Err(err) = manager.load(name, None) {
                    tracing::error!(model = %name, error = %err, "model failed to load");
                }
            }
            Ok(())
        }
        _ => manager.load_all().map_err(anyhow::Error::from),
    }
}

async fn poll_repository(
    manager: Arc<ModelManager>,
    every: Duration,
    signal: mlserve_common::ShutdownSignal,
) {
    let mut ticks = signal.ticks(every);
    while ticks.next().await {
        let manager = manager.clone();
        match tokio::task::spawn_blocking(move || manager.poll_once()).await {
            Ok(Err(err)) => tracing::warn!(error = %err, "repository poll failed"),
            Err(err) => tracing::warn!(error = %err, "repository poll task failed"),
            Ok(Ok(())) => {}
        }
    }
}
