//! `mlserve keys ...`: gateway API keys.

use anyhow::Result;
use clap::{Args, Subcommand};
use mlserve_common::Config;

/// `mlserve keys` arguments.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

/// The `mlserve keys` subcommands.
#[derive(Debug, Subcommand)]
enum KeysCommand {}

/// Runs one `mlserve keys` subcommand.
pub async fn run(args: KeysArgs, _config: &Config) -> Result<()> {
    match args.command {}
}
