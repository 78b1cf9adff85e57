//! The outbox's drain against a fake bus that fails, then succeeds, on
//! SQLite and on PostgreSQL (127.0.0.1:5432, never skipped).

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;
use crate::db::testing;
use crate::events::{Handler, Subscription};
use crate::Shutdown;

/// A guard against hangs, not a timing assertion.
const WAIT: Duration = Duration::from_secs(20);

/// A bus that answers each publish from a script (`false`: unavailable),
/// then accepts everything; it keeps what it accepted, in order.
#[derive(Default)]
struct FakeBus {
    script: Mutex<VecDeque<bool>>,
    accepted: Mutex<Vec<(String, String)>>,
    attempts: AtomicI64,
    /// Each publish takes this long (to overlap two drains).
    delay: Duration,
    /// Refuses everything.
    down: bool,
}

impl FakeBus {
    fn failing(times: usize) -> FakeBus {
        FakeBus {
            script: Mutex::new(std::iter::repeat_n(false, times).collect()),
            ..FakeBus::default()
        }
    }

    fn accepted(&self) -> Vec<(String, String)> {
        self.accepted.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl EventBus for FakeBus {
    async fn publish(&self, event: &Event) -> Result<(), EventError> {
        self.publish_json(event.topic(), &event.to_json()).await
    }

    async fn publish_json(&self, topic: &str, json: &str) -> Result<(), EventError> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.down || self.script.lock().unwrap().pop_front() == Some(false) {
            return Err(EventError::Unavailable("fake outage".into()));
        }
        self.accepted
            .lock()
            .unwrap()
            .push((topic.to_string(), json.to_string()));
        Ok(())
    }

    async fn subscribe(&self, _: &str, _: &str, _: Handler) -> Result<Subscription, EventError> {
        Err(EventError::Config(
            "the fake bus has no subscriptions".into(),
        ))
    }

    fn consumer_name(&self) -> String {
        "fake".into()
    }

    fn publish_timeout(&self) -> Duration {
        Duration::from_millis(200)
    }
}

/// A bus whose publish never returns (Redis down, no timeout of its own).
struct HangingBus;

#[async_trait::async_trait]
impl EventBus for HangingBus {
    async fn publish(&self, _: &Event) -> Result<(), EventError> {
        std::future::pending().await
    }

    async fn subscribe(&self, _: &str, _: &str, _: Handler) -> Result<Subscription, EventError> {
        Err(EventError::Config("none".into()))
    }

    fn consumer_name(&self) -> String {
        "hanging".into()
    }

    fn publish_timeout(&self) -> Duration {
        Duration::from_millis(50)
    }
}

fn moved(to: i64) -> Event {
    Event::AliasMoved {
        model: "m".into(),
        alias: "production".into(),
        from: None,
        to: Some(to),
        by: "test".into(),
        at: to,
    }
}

fn arrived(rows: u64) -> Event {
    Event::DataArrived {
        feature_view: "v".into(),
        rows,
        source: "ingest".into(),
        newest_event: None,
        at: 1,
    }
}

/// Stages each event in a transaction of its own, committed.
async fn stage_all(outbox: &Outbox, events: &[Event]) {
    for event in events {
        let mut tx = outbox.database().begin_write().await.unwrap();
        stage(&mut tx, event).await.unwrap();
        tx.commit().await.unwrap();
    }
}

fn wire(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.topic().to_string(), e.to_json()))
        .collect()
}

/// The contract of one pass: rows go out in id order, a row is deleted
/// only once the bus accepted it, a refused row and those after it stay.
async fn deletes_only_after_success_in_order(db: Database) {
    let outbox = Outbox::new(db);
    let events = vec![moved(1), arrived(5), moved(2), moved(3)];
    stage_all(&outbox, &events).await;
    assert_eq!(outbox.count().await.unwrap(), 4);

    // Down from the start: nothing is sent, nothing deleted.
    let bus = FakeBus::failing(1);
    match outbox.drain_once(&bus).await {
        Err(DrainError::Bus { sent: 0, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(bus.accepted().is_empty());
    assert_eq!(outbox.count().await.unwrap(), 4);

    // Accepts one, then fails: the first is deleted, the rest wait.
    *bus.script.lock().unwrap() = [true, false].into_iter().collect();
    match outbox.drain_once(&bus).await {
        Err(DrainError::Bus { sent: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(bus.accepted(), wire(&events[..1]));
    assert_eq!(outbox.count().await.unwrap(), 3);

    // Back: the rest, in order, and the table is empty.
    assert_eq!(outbox.drain_once(&bus).await.unwrap(), 3);
    assert_eq!(bus.accepted(), wire(&events));
    assert_eq!(outbox.count().await.unwrap(), 0);
    assert_eq!(outbox.drain_once(&bus).await.unwrap(), 0);
    assert_eq!(bus.accepted().len(), 4, "a deleted row is never sent again");
}

#[tokio::test]
async fn sqlite_rows_are_deleted_only_after_their_publish_in_order() {
    let dir = tempdir();
    deletes_only_after_success_in_order(testing::sqlite(&dir).await).await;
}

#[tokio::test]
async fn postgres_rows_are_deleted_only_after_their_publish_in_order() {
    deletes_only_after_success_in_order(testing::postgres().await).await;
}

#[tokio::test]
async fn a_rolled_back_change_leaves_no_event() {
    let dir = tempdir();
    let outbox = Outbox::new(testing::sqlite(&dir).await);
    let mut tx = outbox.database().begin_write().await.unwrap();
    stage(&mut tx, &moved(1)).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(outbox.count().await.unwrap(), 0);
    let bus = FakeBus::default();
    assert_eq!(outbox.drain_once(&bus).await.unwrap(), 0);
    assert!(bus.accepted().is_empty());
}

#[tokio::test]
async fn an_undecodable_row_is_dropped_not_blocking_the_rest() {
    let dir = tempdir();
    let outbox = Outbox::new(testing::sqlite(&dir).await);
    sqlx::query(
        "INSERT INTO event_outbox (topic, payload, created_at) VALUES ('models', 'not json', 0)",
    )
    .execute(&outbox.database().pool)
    .await
    .unwrap();
    stage_all(&outbox, &[moved(7)]).await;
    // MemoryBus decodes (the default publish_json): the bad row is dropped.
    let bus = crate::events::memory::MemoryBus::new(&Default::default());
    assert_eq!(outbox.drain_once(&bus).await.unwrap(), 2);
    assert_eq!(outbox.count().await.unwrap(), 0);
}

/// The task: a row staged while the bus is down goes out once it is back
/// (retried with backoff, no wake needed), and a row staged later is sent
/// on its wake-up, long before the poll.
#[tokio::test]
async fn the_drain_task_retries_until_the_bus_is_back_and_wakes_on_new_rows() {
    let dir = tempdir();
    let outbox = Outbox::new(testing::sqlite(&dir).await);
    let bus = Arc::new(FakeBus::failing(3));
    let shutdown = Shutdown::new();
    stage_all(&outbox, &[moved(1)]).await;
    // A poll far longer than the test: only backoff and wake-ups send.
    let task = outbox.start(bus.clone(), Duration::from_secs(3600), shutdown.signal());
    let sent = |n: usize| {
        let bus = bus.clone();
        async move {
            while bus.accepted().len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    tokio::time::timeout(WAIT, sent(1))
        .await
        .expect("sent after the outage");
    assert_eq!(
        bus.attempts.load(Ordering::Relaxed),
        4,
        "3 refused, then sent"
    );
    stage_all(&outbox, &[moved(2)]).await;
    outbox.wake();
    tokio::time::timeout(WAIT, sent(2))
        .await
        .expect("sent on wake-up");
    assert_eq!(bus.accepted(), wire(&[moved(1), moved(2)]));
    assert_eq!(outbox.count().await.unwrap(), 0);
    shutdown.trigger();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

/// Rows a crashed process left are sent by the next one's first pass, and
/// the gauge shows what waits while the bus is down.
#[tokio::test]
async fn rows_left_by_a_previous_process_are_sent_and_counted() {
    let dir = tempdir();
    let db = testing::sqlite(&dir).await;
    stage_all(&Outbox::new(db.clone()), &[arrived(1), arrived(2)]).await;
    let outboxes = Outboxes::default();
    let down: Arc<dyn EventBus> = Arc::new(FakeBus {
        down: true,
        ..FakeBus::default()
    });
    let shutdown = Shutdown::new();
    let (outbox, created) = outboxes.open(
        "db",
        &db,
        &down,
        Duration::from_millis(20),
        &shutdown.signal(),
    );
    assert!(created);
    let (_, again) = outboxes.open(
        "db",
        &db,
        &down,
        Duration::from_millis(20),
        &shutdown.signal(),
    );
    assert!(!again, "one outbox per database");
    tokio::time::timeout(WAIT, async {
        while outboxes.pending() != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the gauge counts the waiting rows");
    let text = crate::metrics::encode_collector(outboxes.clone());
    assert!(text.contains("mlserve_events_outbox_pending 2"), "{text}");
    shutdown.trigger();

    let up = Arc::new(FakeBus::default());
    let next = Shutdown::new();
    let _task = Outbox::new(outbox.database().clone()).start(
        up.clone(),
        Duration::from_millis(20),
        next.signal(),
    );
    tokio::time::timeout(WAIT, async {
        while up.accepted().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the next process sends what the first left");
    assert_eq!(up.accepted(), wire(&[arrived(1), arrived(2)]));
    next.trigger();
}

/// Drains until the table is empty; how many rows this drain sent.
async fn drain_all(outbox: &Outbox, bus: &FakeBus) -> usize {
    let mut total = 0;
    loop {
        let sent = outbox.drain_once(bus).await.unwrap();
        total += sent;
        if sent == 0 && outbox.count().await.unwrap() == 0 {
            return total;
        }
    }
}

/// Two replicas draining one PostgreSQL table at once send every row
/// exactly once (a pass locks its batch; the other skips it).
#[tokio::test]
async fn postgres_replicas_never_send_the_same_row() {
    let db = testing::postgres().await;
    let a = Outbox::new(db.clone());
    let b = Outbox::new(db);
    let events: Vec<Event> = (1..=150).map(moved).collect();
    stage_all(&a, &events).await;
    let slow = || FakeBus {
        delay: Duration::from_millis(2),
        ..FakeBus::default()
    };
    let (bus_a, bus_b) = (slow(), slow());
    let (sent_a, sent_b) = tokio::time::timeout(WAIT * 3, async {
        tokio::join!(drain_all(&a, &bus_a), drain_all(&b, &bus_b))
    })
    .await
    .expect("both drains end");
    assert_eq!(sent_a + sent_b, events.len());
    let mut all: Vec<(String, String)> = bus_a.accepted();
    all.extend(bus_b.accepted());
    assert_eq!(all.len(), events.len(), "no row sent twice");
    all.sort();
    let mut expected = wire(&events);
    expected.sort();
    assert_eq!(all, expected);
    for bus in [&bus_a, &bus_b] {
        let ids: Vec<i64> = bus
            .accepted()
            .iter()
            .map(|(_, json)| match Event::from_json(json).unwrap() {
                Event::AliasMoved { to: Some(to), .. } => to,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "each replica sends in order: {ids:?}"
        );
    }
}

#[tokio::test]
async fn a_bounded_publish_gives_up_after_the_bus_timeout() {
    let started = std::time::Instant::now();
    let err = crate::events::publish_bounded(&HangingBus, &moved(1))
        .await
        .unwrap_err();
    assert!(matches!(err, EventError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < WAIT, "bounded");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mlserve-outbox-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
