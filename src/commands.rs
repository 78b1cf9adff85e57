//! Client subcommands (`mlserve models ...`, `mlserve features ...`,
//! `mlserve keys ...`, `mlserve workflows ...`, `mlserve jobs ...`,
//! `mlserve rollouts ...`, `mlserve monitor ...`). They talk to a running mlserve over HTTP, or to its
//! database directly, and exit; without a subcommand `mlserve` serves.

#[cfg(feature = "features")]
mod features;
#[cfg(feature = "gateway")]
mod keys;
#[cfg(feature = "registry")]
mod models;
#[cfg(feature = "monitoring")]
mod rollouts;
#[cfg(feature = "training")]
mod training;

use anyhow::Result;
use clap::Subcommand;
use mlserve_common::Config;

/// A client subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The model registry: create, push, list, versions, alias, pull.
    #[cfg(feature = "registry")]
    Models(models::ModelsArgs),
    /// The feature store: apply, ingest, materialize, get-online.
    #[cfg(feature = "features")]
    Features(features::FeaturesArgs),
    /// Gateway API keys: create, list, revoke.
    #[cfg(feature = "gateway")]
    Keys(keys::KeysArgs),
    /// Training workflows: apply, list.
    #[cfg(feature = "training")]
    Workflows(training::WorkflowsArgs),
    /// Training runs: submit, list, get, logs, cancel, retry.
    #[cfg(feature = "training")]
    Jobs(training::JobsArgs),
    /// Progressive delivery: start, status, list, pause, resume, promote, abort.
    #[cfg(feature = "monitoring")]
    Rollouts(rollouts::RolloutsArgs),
    /// The monitoring role's sliding windows.
    #[cfg(feature = "monitoring")]
    Monitor(rollouts::MonitorArgs),
    /// Prints the effective configuration (defaults, file, environment and
    /// flags merged) as JSON, after checking it: unknown keys are errors.
    Config,
}

/// Runs `command` to completion on a small runtime of its own.
pub fn run(command: Command, config: Config) -> Result<()> {
    if let Command::Config = command {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            #[cfg(feature = "registry")]
            Command::Models(args) => models::run(args, &config).await,
            #[cfg(feature = "features")]
            Command::Features(args) => features::run(args, &config).await,
            #[cfg(feature = "gateway")]
            Command::Keys(args) => keys::run(args, &config).await,
            #[cfg(feature = "training")]
            Command::Workflows(args) => training::workflows(args, &config).await,
            #[cfg(feature = "training")]
            Command::Jobs(args) => training::jobs(args, &config).await,
            #[cfg(feature = "monitoring")]
            Command::Rollouts(args) => rollouts::rollouts(args, &config).await,
            #[cfg(feature = "monitoring")]
            Command::Monitor(args) => rollouts::monitor(args, &config).await,
            Command::Config => Ok(()),
        }
    })
}
