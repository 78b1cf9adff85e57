//! `mlserve keys ...`: gateway API keys, written straight to the gateway's
//! database (`gateway.database_url`, default the SQLite file in
//! `server.data_dir`).

use anyhow::Result;
use clap::{Args, Subcommand};
use mlserve_common::{Config, Database};
use mlserve_gateway::keys::KeyStore;

/// `mlserve keys` arguments.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

/// The `mlserve keys` subcommands.
#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Creates a key and prints it once: it is stored hashed and cannot be shown again.
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// Requests per second allowed (token refill rate); 0 is unlimited.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Bucket size (burst); default: the rate (at least 1).
        #[arg(long, default_value_t = 0.0)]
        burst: f64,
        /// What the key may do: infer, infer:<model>, predict, rollouts:admin,
        /// registry:read, registry:write, features:read, features:write,
        /// training:submit, keys:admin (repeat or separate with commas).
        /// Default: infer and predict.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Scheduling priority of the key's requests, as Triton's request
        /// priority (1 is the highest level of a model with priority_levels;
        /// a client may ask for a lower one, never a higher); 0: the
        /// request's own.
        #[arg(long, default_value_t = 0)]
        priority: u32,
    },
    /// Lists keys (never their secrets) as JSON lines.
    List,
    /// Revokes the key with this id, or every live key with this name.
    Revoke {
        /// Key id or name.
        key: String,
    },
}

/// Runs one `mlserve keys` subcommand.
pub async fn run(args: KeysArgs, config: &Config) -> Result<()> {
    let url = config
        .gateway
        .database_url
        .clone()
        .unwrap_or_else(|| mlserve_common::db::default_url(&config.server.data_dir));
    let store = KeyStore::new(Database::connect(&url).await?);
    match args.command {
        KeysCommand::Create {
            name,
            rate,
            burst,
            scopes,
            priority,
        } => {
            let burst = if burst < 1.0 { rate.max(1.0) } else { burst };
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let (key, secret) = store
                .create_scoped(&name, rate, burst, &scopes, priority)
                .await?;
            eprintln!(
                "created key {} for '{}' ({} req/s, burst {}, scopes {}, priority {}); it is shown once, store it now:",
                key.id,
                key.name,
                key.rate,
                key.burst,
                key.scopes.join(" "),
                key.priority
            );
            println!("{secret}");
        }
        KeysCommand::List => {
            for key in store.list().await? {
                println!("{}", serde_json::to_string(&key)?);
            }
        }
        KeysCommand::Revoke { key } => {
            let n = store.revoke(&key).await?;
            eprintln!("revoked {n} key(s)");
        }
    }
    Ok(())
}
