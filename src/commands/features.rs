//! `mlserve features ...`: the feature store.

use anyhow::Result;
use clap::{Args, Subcommand};
use mlserve_common::Config;

/// `mlserve features` arguments.
#[derive(Debug, Args)]
pub struct FeaturesArgs {
    #[command(subcommand)]
    command: FeaturesCommand,
}

/// The `mlserve features` subcommands.
#[derive(Debug, Subcommand)]
enum FeaturesCommand {}

/// Runs one `mlserve features` subcommand.
pub async fn run(args: FeaturesArgs, _config: &Config) -> Result<()> {
    match args.command {}
}
