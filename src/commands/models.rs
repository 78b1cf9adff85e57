//! `mlserve models ...`: the registry.

use anyhow::Result;
use clap::{Args, Subcommand};
use mlserve_common::Config;

/// `mlserve models` arguments.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

/// The `mlserve models` subcommands.
#[derive(Debug, Subcommand)]
enum ModelsCommand {}

/// Runs one `mlserve models` subcommand.
pub async fn run(args: ModelsArgs, _config: &Config) -> Result<()> {
    match args.command {}
}
