//! The event bus (alias moves, model versions, data arrival): configuration section `[events]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Where events travel.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventsBackend {
    /// In-process only: every role of this process shares one bus; nothing
    /// crosses process boundaries.
    #[default]
    Memory,
    /// Redis Streams: one stream per topic, one consumer group per
    /// subscriber, at-least-once delivery.
    Redis,
}

/// The event bus (alias moves, model versions, data arrival).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// memory | redis.
    pub backend: EventsBackend,
    /// Redis URL for the redis backend (`redis://[user:password@]host:port[/db]`).
    pub redis_url: String,
    /// Prefix of the stream keys: topic `models` lives in `<prefix>models`.
    pub stream_prefix: String,
    /// Approximate length each stream is trimmed to on publish (`MAXLEN ~`).
    pub max_len: u64,
    /// Consumer name of this process inside its groups; unset means
    /// `<hostname>-<pid>`.
    pub consumer: Option<String>,
    /// How long one blocking read waits for new events.
    #[serde(with = "duration")]
    pub block: Duration,
    /// Idle time after which an event delivered to a consumer of the same
    /// group but never acknowledged (that consumer died) is claimed and
    /// redelivered.
    #[serde(with = "duration")]
    pub claim_idle: Duration,
    /// Delay before an event whose handler failed is delivered again, and
    /// between reconnection attempts.
    #[serde(with = "duration")]
    pub retry_delay: Duration,
    /// Longest wait for the bus to accept one published event (Redis down:
    /// the publish fails after this instead of waiting for Redis). Writes
    /// of the registry and the feature store never wait for it: with the
    /// redis backend their events go through the outbox.
    #[serde(with = "duration")]
    pub publish_timeout: Duration,
    /// How often the outbox drain looks for events left by another process
    /// (a crashed one, another replica); it wakes at once for its own.
    #[serde(with = "duration")]
    pub outbox_poll: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            backend: EventsBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            stream_prefix: "mlserve:events:".into(),
            max_len: 10_000,
            consumer: None,
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            publish_timeout: Duration::from_secs(2),
            outbox_poll: Duration::from_secs(1),
        }
    }
}
