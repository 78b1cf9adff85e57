//! The training role: workflows and runs in SQL, step artifacts and logs in
//! the registry's object store, the local executor, REST under
//! `/v1/training/` and the gRPC `training.TrainingService`. At start it
//! resumes the runs this node was driving when it stopped.

use std::sync::Arc;

use anyhow::{Context, Result};
use mlserve_common::config::TrainingExecutor;
use mlserve_common::db;
use mlserve_proto::training::{training_grpc_server, TrainingClient};
use mlserve_registry::artifacts::Artifacts;
use mlserve_training::builtin::BuiltinEnv;
use mlserve_training::executor::{Executor, LocalExecutor};
use mlserve_training::jobs::JobOptions;
use mlserve_training::kubernetes::KubernetesExecutor;
use mlserve_training::service::LocalTraining;
use mlserve_training::store::Store;
use mlserve_training::{triggers, Engine, Settings};

use super::Node;

/// Adds the training role to `node`.
pub async fn start(node: &mut Node) -> Result<()> {
    let config = node.config.clone();
    let settings = &config.training;
    let data_dir = &config.server.data_dir;
    let url = match &settings.database_url {
        Some(url) => url.clone(),
        None => db::default_url(data_dir),
    };
    let database = node
        .databases
        .open(&url)
        .await
        .context("training: cannot open the database")?;
    let artifacts = Artifacts::from_config(&config.registry, data_dir)
        .map_err(|e| anyhow::anyhow!("training: artifact store: {e}"))?;
    let work_dir = settings.work_dir(data_dir);
    tokio::fs::create_dir_all(&work_dir)
        .await
        .with_context(|| format!("training: cannot create '{}'", work_dir.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let executor: Arc<dyn Executor> = match settings.executor {
        TrainingExecutor::Local => Arc::new(LocalExecutor),
        TrainingExecutor::Kubernetes => Arc::new(
            KubernetesExecutor::connect(
                JobOptions::from_config(settings, &work_dir),
                settings.kubernetes.poll_interval,
            )
            .await
            .map_err(|e| anyhow::anyhow!("training: executor = \"kubernetes\": {e}"))?,
        ),
    };
    let engine = Engine::with_executor(
        Store::new(database),
        BuiltinEnv {
            registry: node.clients.registry.clone(),
            features: node.clients.features.clone(),
            artifacts,
        },
        Settings {
            node: settings
                .node
                .clone()
                .unwrap_or_else(mlserve_common::events::host_name),
            work_dir,
            max_parallel: if settings.max_parallel_steps == 0 {
                cores
            } else {
                settings.max_parallel_steps
            },
            gpus: settings.gpus,
            kill_grace: settings.kill_grace,
        },
        Some(node.events.clone()),
        executor,
    );
    let resumed = engine
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("training: {e}"))?;
    tracing::info!(node = %engine.settings().node, executor = engine.executor().name(), resumed, "training role started");
    // Triggers: data_arrived and drift_detected events, and cron schedules.
    let subscriptions = triggers::subscribe(engine.clone(), &node.events)
        .await
        .map_err(|e| anyhow::anyhow!("training: cannot subscribe to events: {e}"))?;
    let scheduler = triggers::Scheduler::new(engine.clone(), mlserve_training::store::now_us());
    let signal = node.shutdown.signal();
    tokio::spawn(async move {
        scheduler.run(signal.wait()).await;
        drop(subscriptions);
    });
    let local = Arc::new(LocalTraining::new(engine));
    let client = TrainingClient::from_arc(local.clone());
    node.clients.training = Some(client.clone());
    node.add_routes(mlserve_training::http::routes(
        client,
        config.server.http_max_body_bytes,
    ));
    node.grpc.add_service(training_grpc_server(
        local,
        config.server.http_max_body_bytes,
    ));
    Ok(())
}
