//! The online store: the latest value of every entity of every online view,
//! read in one round trip per batch. In memory (default) or in Redis.

mod memory;
mod redis;

use async_trait::async_trait;

use crate::error::Result;

pub use self::redis::{RedisOptions, RedisStore};
pub use memory::MemoryStore;

/// One entity's latest row of a view.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineRow {
    /// The entity key (JSON array of join key values).
    pub key: String,
    /// Event time, microseconds since the epoch.
    pub event_ts: i64,
    /// Feature values, a JSON object.
    pub values_json: String,
}

/// A stored value as read back: its event time and its JSON object.
pub type Stored = Option<(i64, String)>;

/// Where online features live.
#[async_trait]
pub trait OnlineStore: Send + Sync + 'static {
    /// Writes `rows` of `view`, each only if it is not older than what is
    /// stored (an older value never replaces a newer one). `ttl_secs` > 0 lets
    /// the store drop a row one TTL after it left its max age. Returns how
    /// many rows were written.
    async fn write(&self, view: &str, rows: &[OnlineRow], ttl_secs: i64) -> Result<usize>;
    /// Reads `(view, entity key)` pairs, in order, in one round trip.
    async fn read(&self, keys: &[(String, String)]) -> Result<Vec<Stored>>;
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;
}

/// Milliseconds a written row should live: until one TTL after it left its
/// max age, and at least one TTL from now (so a row already too old when
/// written reads as OUTSIDE_MAX_AGE for a while rather than vanishing).
pub fn expire_ms(event_ts: i64, ttl_secs: i64, now: i64) -> Option<i64> {
    if ttl_secs <= 0 {
        return None;
    }
    let ttl = ttl_secs.saturating_mul(1_000_000);
    let end = event_ts.saturating_add(ttl).saturating_add(ttl);
    Some((end - now).max(ttl) / 1000)
}

#[cfg(test)]
#[path = "online/store_tests.rs"]
mod store_tests;
