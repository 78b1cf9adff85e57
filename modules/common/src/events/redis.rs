//! Redis Streams: topic `t` is the stream `<stream_prefix>t`, trimmed to about
//! `max_len` entries on publish (`XADD MAXLEN ~`). A subscriber is a consumer
//! (this process's name) in a consumer group; it reads with `XREADGROUP` on
//! its own connection and `XACK`s an event only after its handler succeeded.
//! Unacknowledged events are read again from the group's pending list after
//! the retry delay, and events left pending by a consumer of the same group
//! that went away are claimed (`XAUTOCLAIM`) once idle for `claim_idle`.
//! Connections reconnect with exponential backoff; a lost group (Redis
//! restarted empty) is recreated from the stream's first entry, so events
//! published while Redis was down (and sent once the publisher reconnected)
//! are delivered even when they reach the new stream before the reader does.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::{
    Builder, Client, ClientLike, Config as RedisConfig, ReconnectPolicy, StreamsInterface,
};
use fred::types::config::Options;
use fred::types::streams::XReadResponse;
use fred::types::Value;

use super::{
    consumer_name, retry_delay, Event, EventBus, EventError, Handler, Subscription,
    EVENT_FORMAT_VERSION,
};
use crate::config::EventsConfig;

/// The field holding the event's JSON in a stream entry.
const EVENT_FIELD: &str = "event";
/// The field holding the wire format version.
const VERSION_FIELD: &str = "v";
/// Entries read or claimed per call.
const BATCH: u64 = 64;

/// Events over Redis Streams.
pub struct RedisBus {
    client: Client,
    config: EventsConfig,
    consumer: String,
}

impl RedisBus {
    /// Connects to `config.redis_url`; an unreachable Redis is an error.
    pub async fn connect(config: &EventsConfig) -> Result<RedisBus, EventError> {
        let client = new_client(config)?;
        client.init().await.map_err(unavailable)?;
        Ok(RedisBus {
            client,
            config: config.clone(),
            consumer: consumer_name(config),
        })
    }

    /// The stream key of `topic`.
    pub fn stream_key(&self, topic: &str) -> String {
        format!("{}{topic}", self.config.stream_prefix)
    }
}

fn new_client(config: &EventsConfig) -> Result<Client, EventError> {
    let redis = RedisConfig::from_url(&config.redis_url)
        .map_err(|e| EventError::Config(format!("events.redis_url: {}", e.details())))?;
    Builder::from_config(redis)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|e| EventError::Config(e.details().to_string()))
}

fn unavailable(err: fred::error::Error) -> EventError {
    EventError::Unavailable(err.details().to_string())
}

#[async_trait::async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, event: &Event) -> Result<(), EventError> {
        self.publish_json(event.topic(), &event.to_json()).await
    }

    /// `XADD` with the publish timeout as the command's own timeout: while
    /// Redis is down the command fails after it, and a command that timed
    /// out is dropped from the client's queue rather than sent once Redis
    /// is back (a plain outer timeout would leave it queued).
    async fn publish_json(&self, topic: &str, json: &str) -> Result<(), EventError> {
        let key = self.stream_key(topic);
        let fields = vec![
            (VERSION_FIELD, EVENT_FORMAT_VERSION.to_string()),
            (EVENT_FIELD, json.to_string()),
        ];
        let cap = ("MAXLEN", "~", self.config.max_len.max(1) as i64);
        let options = Options {
            timeout: Some(self.publish_timeout()),
            ..Options::default()
        };
        let _id: String = self
            .client
            .with_options(&options)
            .xadd(key, false, cap, "*", fields)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn publish_timeout(&self) -> Duration {
        super::publish_timeout(&self.config)
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        handler: Handler,
    ) -> Result<Subscription, EventError> {
        // Blocking reads get their own connection so publishes never wait.
        let client = new_client(&self.config)?;
        let connection = client.init().await.map_err(unavailable)?;
        let reader = Reader {
            client,
            key: self.stream_key(topic),
            group: group.to_string(),
            consumer: self.consumer.clone(),
            handler,
            retry: retry_delay(&self.config),
            block_ms: (self.config.block.as_millis() as u64).max(1),
            claim_idle: self.config.claim_idle.max(Duration::from_millis(1)),
        };
        reader.ensure_group().await?;
        let task = tokio::spawn(reader.run());
        Ok(Subscription::new(task).also_abort(&connection))
    }

    fn consumer_name(&self) -> String {
        self.consumer.clone()
    }
}

/// One subscription's read loop.
struct Reader {
    client: Client,
    key: String,
    group: String,
    consumer: String,
    handler: Handler,
    retry: Duration,
    block_ms: u64,
    claim_idle: Duration,
}

type Entries = Vec<(String, HashMap<String, String>)>;

impl Reader {
    /// Creates the group at the end of the stream (a new subscriber sees
    /// the events published from now on) unless it exists.
    async fn ensure_group(&self) -> Result<(), EventError> {
        self.create_group("$").await
    }

    /// Creates the group, reading from `start` ("$": what is published
    /// next; "0": every entry the stream holds), unless it exists.
    async fn create_group(&self, start: &str) -> Result<(), EventError> {
        let created: Result<String, _> = self
            .client
            .xgroup_create(&self.key, &self.group, start, true)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(err) if err.details().contains("BUSYGROUP") => Ok(()),
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn run(self) {
        // Our own pending entries first (a restart under the same consumer
        // name), then new ones; failures send us back to the pending list.
        let mut backlog: Option<String> = Some("0".into());
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut claim_at = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            if retry_at.is_some_and(|at| at <= now) {
                retry_at = None;
                backlog = Some("0".into());
            }
            if claim_at <= now {
                claim_at = now + self.claim_idle;
                if !self.claim().await {
                    retry_at.get_or_insert(now + self.retry);
                }
            }
            let block = match &backlog {
                Some(_) => None,
                None => {
                    let until = [retry_at, Some(claim_at)]
                        .into_iter()
                        .flatten()
                        .min()
                        .map_or(self.block_ms, |at| {
                            at.saturating_duration_since(now).as_millis() as u64
                        });
                    Some(until.clamp(1, self.block_ms))
                }
            };
            let id = backlog.clone().unwrap_or_else(|| ">".into());
            // A blocking read that times out answers nil: no entries, not
            // an error (xreadgroup_map would refuse to convert it).
            let read: Result<Value, _> = self
                .client
                .xreadgroup(
                    &self.group,
                    &self.consumer,
                    Some(BATCH),
                    block,
                    false,
                    &self.key,
                    id,
                )
                .await;
            let read = read.and_then(|value| {
                if value.is_null() {
                    Ok(XReadResponse::default())
                } else {
                    value.into_xread_response::<String, String, String, String>()
                }
            });
            let mut entries = match read {
                Ok(response) => response.into_values().flatten().collect::<Entries>(),
                Err(err) => {
                    tracing::warn!(stream = %self.key, group = %self.group, error = %err.details(), "event read failed, retrying");
                    if err.details().contains("NOGROUP") {
                        // The group is gone: Redis restarted empty (or it was
                        // deleted). Every entry the stream holds now was
                        // published after that, unseen by this group: events
                        // publishers sent while Redis was down land as soon
                        // as they reconnect, possibly before this read. From
                        // "$" they would be skipped; from the stream's start
                        // they are delivered (at-least-once: handlers are
                        // idempotent).
                        if let Err(err) = self.create_group("0").await {
                            tracing::warn!(stream = %self.key, error = %err, "cannot recreate the consumer group");
                        }
                    }
                    tokio::time::sleep(self.retry).await;
                    backlog = Some("0".into());
                    continue;
                }
            };
            if backlog.is_some() {
                match entries.last() {
                    Some((last, _)) => backlog = Some(last.clone()),
                    None => backlog = None,
                }
            }
            entries.sort_by_key(|entry| stream_id_key(&entry.0));
            if !self.handle_all(entries).await {
                retry_at.get_or_insert_with(|| tokio::time::Instant::now() + self.retry);
            }
        }
    }

    /// Claims entries other consumers of the group left pending too long.
    /// False when a claimed entry's handler failed.
    async fn claim(&self) -> bool {
        let idle_ms = self.claim_idle.as_millis() as u64;
        let mut cursor = "0-0".to_string();
        let mut all_ok = true;
        for _ in 0..16 {
            let claimed: Result<(String, Entries), _> = self
                .client
                .xautoclaim_values(
                    &self.key,
                    &self.group,
                    &self.consumer,
                    idle_ms,
                    cursor.as_str(),
                    Some(BATCH),
                    false,
                )
                .await;
            match claimed {
                Ok((next, entries)) => {
                    if !entries.is_empty() {
                        tracing::info!(stream = %self.key, group = %self.group, count = entries.len(), "claimed events left pending by another consumer");
                    }
                    all_ok &= self.handle_all(entries).await;
                    if next == "0-0" {
                        break;
                    }
                    cursor = next;
                }
                Err(err) => {
                    tracing::debug!(stream = %self.key, error = %err.details(), "event claim failed");
                    break;
                }
            }
        }
        all_ok
    }

    /// Handles entries in order, acknowledging each that succeeded. False
    /// when any handler failed (those stay pending).
    async fn handle_all(&self, entries: Entries) -> bool {
        let mut all_ok = true;
        for (id, fields) in entries {
            let Some(text) = fields.get(EVENT_FIELD) else {
                // Trimmed from the stream while pending: nothing to deliver.
                self.ack(&id).await;
                continue;
            };
            let event = match Event::from_json(text) {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(stream = %self.key, id = %id, error = %err, "dropping an undecodable event");
                    self.ack(&id).await;
                    continue;
                }
            };
            match (self.handler)(event).await {
                Ok(()) => self.ack(&id).await,
                Err(err) => {
                    tracing::warn!(stream = %self.key, group = %self.group, id = %id, error = %err, "event handler failed, will retry");
                    all_ok = false;
                }
            }
        }
        all_ok
    }

    async fn ack(&self, id: &str) {
        let acked: Result<i64, _> = self.client.xack(&self.key, &self.group, id).await;
        if let Err(err) = acked {
            // Not acknowledged: it is delivered again later (at-least-once).
            tracing::warn!(stream = %self.key, id = %id, error = %err.details(), "event ack failed");
        }
    }
}

/// Orders stream ids `<ms>-<seq>` numerically.
fn stream_id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}
