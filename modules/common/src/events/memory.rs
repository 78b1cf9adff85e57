//! The in-process bus: one unbounded queue per subscriber; each consumer
//! group gets every event, handed round-robin to the group's subscribers.
//! A failed handler sees its event again after the retry delay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{retry_delay, Event, EventBus, EventError, Handler, Subscription};
use crate::config::EventsConfig;

#[derive(Default)]
struct Group {
    members: Vec<mpsc::UnboundedSender<Event>>,
    next: usize,
}

/// Events within this process only.
pub struct MemoryBus {
    /// topic -> group -> subscribers.
    topics: Mutex<BTreeMap<String, BTreeMap<String, Group>>>,
    retry: Duration,
    publish_timeout: Duration,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new(config: &EventsConfig) -> MemoryBus {
        MemoryBus {
            topics: Mutex::new(BTreeMap::new()),
            retry: retry_delay(config),
            publish_timeout: super::publish_timeout(config),
        }
    }
}

#[async_trait::async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, event: &Event) -> Result<(), EventError> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let Some(groups) = topics.get_mut(event.topic()) else {
            return Ok(());
        };
        for group in groups.values_mut() {
            group.members.retain(|m| !m.is_closed());
            // Round-robin over the live members; a member closing between the
            // check and the send hands the event to the next one.
            let mut pending = Some(event.clone());
            for _ in 0..group.members.len() {
                let index = group.next % group.members.len();
                group.next = group.next.wrapping_add(1);
                match group.members[index].send(pending.take().unwrap_or(Event::Unknown)) {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(back)) => pending = Some(back),
                }
            }
        }
        Ok(())
    }

    fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        handler: Handler,
    ) -> Result<Subscription, EventError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(topic.to_string())
            .or_default()
            .entry(group.to_string())
            .or_default()
            .members
            .push(tx);
        let task = tokio::spawn(run(rx, handler, self.retry, group.to_string()));
        Ok(Subscription::new(task))
    }

    fn consumer_name(&self) -> String {
        "memory".into()
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Event>,
    handler: Handler,
    retry: Duration,
    group: String,
) {
    let mut failed: VecDeque<Event> = VecDeque::new();
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let wake =
            retry_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            received = rx.recv() => match received {
                Some(event) => {
                    if let Err(err) = handler(event.clone()).await {
                        tracing::warn!(group = %group, error = %err, "event handler failed, will retry");
                        failed.push_back(event);
                        retry_at.get_or_insert_with(|| tokio::time::Instant::now() + retry);
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep_until(wake), if retry_at.is_some() => {
                retry_at = None;
                for event in std::mem::take(&mut failed) {
                    if let Err(err) = handler(event.clone()).await {
                        tracing::warn!(group = %group, error = %err, "event handler failed again, will retry");
                        failed.push_back(event);
                    }
                }
                if !failed.is_empty() {
                    retry_at = Some(tokio::time::Instant::now() + retry);
                }
            }
        }
    }
}
