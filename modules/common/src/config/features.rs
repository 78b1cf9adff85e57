//! The features role: configuration section `[features]`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Which online store serves get-online-features.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnlineStoreKind {
    /// In this process's memory (the embedded default; lost on restart).
    #[default]
    Memory,
    /// Redis, through fred.
    Redis,
}

/// The features role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturesConfig {
    /// SQL database of definitions and the offline store; unset means the
    /// SQLite file `<server.data_dir>/mlserve.db`. `postgres://...` for PostgreSQL.
    pub database_url: Option<String>,
    /// memory | redis.
    pub online_store: OnlineStoreKind,
    /// Redis server of the online store (`redis://host:port/db`).
    pub redis_url: String,
    /// Prefix of every online-store key in Redis.
    pub redis_key_prefix: String,
    /// How long a Redis command may take (queued while reconnecting
    /// included) before the lookup fails with 503.
    #[serde(with = "duration")]
    pub redis_command_timeout: Duration,
    /// How long to wait for a Redis connection to open.
    #[serde(with = "duration")]
    pub redis_connect_timeout: Duration,
    /// Delay between reconnection attempts while Redis is down.
    #[serde(with = "duration")]
    pub redis_reconnect_delay: Duration,
    /// Most entities one get-online-features or transform call may ask for.
    pub max_entities_per_request: usize,
    /// How long a feature mean (the `mean` missing policy) computed from the
    /// offline store is reused before it is computed again.
    #[serde(with = "duration")]
    pub mean_refresh: Duration,
    /// How long the request log (served rows the gateways sampled, which
    /// the monitoring role's drift analysis reads) keeps a row.
    #[serde(with = "duration")]
    pub served_retention: Duration,
    /// gRPC endpoint of a features role in another process (e.g.
    /// `http://features:8001`), used when this process does not run the role
    /// (the gateway's predict pipeline reaches the features role through it).
    pub endpoint: Option<String>,
    /// Preprocessing pipelines by model name (`[features.pipelines.<model>]`,
    /// with `kind = "tabular" | "image" | "text"` and the kind's keys);
    /// pipelines registered through the API are stored in SQL and win.
    pub pipelines: BTreeMap<String, figment::value::Dict>,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            database_url: None,
            online_store: OnlineStoreKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_key_prefix: "mlserve".into(),
            redis_command_timeout: Duration::from_millis(500),
            redis_connect_timeout: Duration::from_secs(1),
            redis_reconnect_delay: Duration::from_millis(200),
            max_entities_per_request: 10_000,
            mean_refresh: Duration::from_secs(60),
            served_retention: Duration::from_secs(30 * 24 * 3600),
            endpoint: None,
            pipelines: BTreeMap::new(),
        }
    }
}
