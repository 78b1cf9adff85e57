//! Client subcommands (`mlserve models ...`, `mlserve features ...`,
//! `mlserve keys ...`). They talk to a running mlserve over HTTP, or to its
//! database directly, and exit; without a subcommand `mlserve` serves.

#[cfg(feature = "features")]
mod features;
#[cfg(feature = "gateway")]
mod keys;
#[cfg(feature = "registry")]
mod models;

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
            Command::Config => Ok(()),
        }
    })
}
