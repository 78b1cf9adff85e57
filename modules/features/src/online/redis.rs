//! The Redis online store: one string key per (view, entity) holding
//! `event_ts|values_json`; reads are one MGET per batch, writes one Lua script
//! per chunk that keeps the newer of stored and written values.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;

use super::{expire_ms, OnlineRow, OnlineStore, Stored};
use crate::error::{FeaturesError, Result};
use crate::values::now_micros;

/// Rows per write script (bounds a script's run time on the server).
const WRITE_CHUNK: usize = 1000;

/// Compare-and-set per key: writes when nothing is stored or the stored
/// event time is not newer. ARGV holds (event_ts, values, expire_ms) per key,
/// expire_ms 0 meaning no expiry. Returns the number of keys written.
const WRITE_SCRIPT: &str = r#"
local written = 0
for i = 1, #KEYS do
  local ts = tonumber(ARGV[3 * i - 2])
  local current = redis.call('GET', KEYS[i])
  local newer = true
  if current then
    local sep = string.find(current, '|', 1, true)
    if sep and tonumber(string.sub(current, 1, sep - 1)) > ts then newer = false end
  end
  if newer then
    local value = ARGV[3 * i - 2] .. '|' .. ARGV[3 * i - 1]
    local px = tonumber(ARGV[3 * i])
    if px > 0 then
      redis.call('SET', KEYS[i], value, 'PX', px)
    else
      redis.call('SET', KEYS[i], value)
    end
    written = written + 1
  end
end
return written
"#;

/// Connection settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key.
    pub prefix: String,
    /// Deadline of each command, waiting for a reconnection included.
    pub command_timeout: Duration,
    /// Deadline to open a connection.
    pub connect_timeout: Duration,
    /// Pause between reconnection attempts (forever) while Redis is down.
    pub reconnect_delay_ms: u32,
}

/// The Redis online store.
pub struct RedisStore {
    client: Client,
    prefix: String,
}

fn unavailable(err: fred::error::Error) -> FeaturesError {
    FeaturesError::OnlineUnavailable(format!("redis: {err}"))
}

impl RedisStore {
    /// Connects to Redis; an error when it cannot be reached now. After that
    /// the client reconnects forever, and commands fail with `Unavailable`
    /// after `command_timeout` while it is down.
    pub async fn connect(options: RedisOptions) -> Result<RedisStore> {
        let config = Config::from_url(&options.url)
            .map_err(|e| FeaturesError::Invalid(format!("invalid redis url: {e}")))?;
        let client = Builder::from_config(config)
            .with_performance_config(|perf| {
                perf.default_command_timeout = options.command_timeout;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = options.connect_timeout;
                conn.internal_command_timeout = options.command_timeout;
                conn.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_constant(0, options.reconnect_delay_ms))
            .build()
            .map_err(unavailable)?;
        tokio::time::timeout(options.connect_timeout * 2, client.init())
            .await
            .map_err(|_| FeaturesError::OnlineUnavailable("redis: connect timed out".into()))?
            .map_err(unavailable)?;
        Ok(RedisStore {
            client,
            prefix: options.prefix,
        })
    }

    fn key(&self, view: &str, entity: &str) -> String {
        format!("{}:fv:{view}:{entity}", self.prefix)
    }
}

#[async_trait]
impl OnlineStore for RedisStore {
    async fn write(&self, view: &str, rows: &[OnlineRow], ttl_secs: i64) -> Result<usize> {
        let mut written = 0usize;
        for chunk in rows.chunks(WRITE_CHUNK) {
            let now = now_micros();
            let keys: Vec<String> = chunk.iter().map(|r| self.key(view, &r.key)).collect();
            let mut args: Vec<String> = Vec::with_capacity(chunk.len() * 3);
            for row in chunk {
                args.push(row.event_ts.to_string());
                args.push(row.values_json.clone());
                args.push(
                    expire_ms(row.event_ts, ttl_secs, now)
                        .unwrap_or(0)
                        .to_string(),
                );
            }
            let n: i64 = self
                .client
                .eval(WRITE_SCRIPT, keys, args)
                .await
                .map_err(unavailable)?;
            written += n.max(0) as usize;
        }
        Ok(written)
    }

    async fn read(&self, keys: &[(String, String)]) -> Result<Vec<Stored>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys.iter().map(|(v, k)| self.key(v, k)).collect();
        let values: Vec<Option<String>> = if names.len() == 1 {
            vec![self
                .client
                .get(names[0].clone())
                .await
                .map_err(unavailable)?]
        } else {
            self.client.mget(names).await.map_err(unavailable)?
        };
        values
            .into_iter()
            .map(|value| match value {
                None => Ok(None),
                Some(text) => {
                    let (ts, json) = text.split_once('|').ok_or_else(|| {
                        FeaturesError::Internal("malformed online value in redis".into())
                    })?;
                    let ts = ts.parse::<i64>().map_err(|_| {
                        FeaturesError::Internal("malformed online timestamp in redis".into())
                    })?;
                    Ok(Some((ts, json.to_string())))
                }
            })
            .collect()
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
