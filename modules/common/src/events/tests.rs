//! The bus contract, run against the in-process bus and a real Redis
//! (127.0.0.1:6379, or `MLSERVE_TEST_REDIS_URL`; never skipped).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{ClientLike, StreamsInterface};
use tokio::sync::mpsc;

use super::redis::RedisBus;
use super::*;

/// A guard against hangs, not a timing assertion.
const WAIT: Duration = Duration::from_secs(20);

fn moved(to: i64) -> Event {
    Event::AliasMoved {
        model: "m".into(),
        alias: "production".into(),
        from: None,
        to: Some(to),
        by: "test".into(),
        at: 1,
    }
}

/// A handler that forwards every event it sees.
fn forward() -> (Handler, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = handler(move |event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event);
            Ok(())
        }
    });
    (handler, rx)
}

/// A handler that fails the first `failures` calls, forwarding every call.
fn flaky(failures: usize) -> (Handler, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = handler(move |event| {
        let tx = tx.clone();
        let call = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = tx.send(event);
            if call < failures {
                Err("injected failure".into())
            } else {
                Ok(())
            }
        }
    });
    (handler, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no event within the wait")
        .expect("handler channel closed")
}

fn fast(mut config: EventsConfig) -> EventsConfig {
    config.retry_delay = Duration::from_millis(50);
    config.block = Duration::from_millis(100);
    config
}

#[test]
fn events_round_trip_as_tagged_json_and_unknown_types_decode() {
    let event = moved(3);
    let text = event.to_json();
    assert!(text.contains("\"type\":\"alias_moved\""), "{text}");
    assert_eq!(Event::from_json(&text).unwrap(), event);
    let newer = r#"{"type":"drift_alert","model":"m","score":0.9}"#;
    assert_eq!(Event::from_json(newer).unwrap(), Event::Unknown);
    assert!(Event::from_json("not json").is_err());
}

#[tokio::test]
async fn memory_every_group_gets_every_event_and_a_group_shares_them() {
    let bus = memory::MemoryBus::new(&fast(EventsConfig::default()));
    let (a, mut rx_a) = forward();
    let (b1, mut rx_b1) = forward();
    let (b2, mut rx_b2) = forward();
    let _sa = bus.subscribe(MODELS_TOPIC, "a", a).await.unwrap();
    let _sb1 = bus.subscribe(MODELS_TOPIC, "b", b1).await.unwrap();
    let _sb2 = bus.subscribe(MODELS_TOPIC, "b", b2).await.unwrap();
    for v in 1..=4 {
        bus.publish(&moved(v)).await.unwrap();
    }
    for v in 1..=4 {
        assert_eq!(next(&mut rx_a).await, moved(v));
    }
    let mut shared = Vec::new();
    for _ in 0..2 {
        shared.push(next(&mut rx_b1).await);
        shared.push(next(&mut rx_b2).await);
    }
    shared.sort_by_key(|e| match e {
        Event::AliasMoved { to, .. } => *to,
        _ => None,
    });
    assert_eq!(shared, (1..=4).map(moved).collect::<Vec<_>>());
    assert!(rx_b1.try_recv().is_err() && rx_b2.try_recv().is_err());
}

#[tokio::test]
async fn memory_failed_handler_sees_the_event_again() {
    let bus = memory::MemoryBus::new(&fast(EventsConfig::default()));
    let (h, mut rx) = flaky(2);
    let _s = bus.subscribe(MODELS_TOPIC, "g", h).await.unwrap();
    bus.publish(&moved(7)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(next(&mut rx).await, moved(7));
    }
    bus.publish(&moved(8)).await.unwrap();
    assert_eq!(next(&mut rx).await, moved(8));
}

#[tokio::test]
async fn memory_dropped_subscription_stops_receiving() {
    let bus = memory::MemoryBus::new(&EventsConfig::default());
    let (h, mut rx) = forward();
    let sub = bus.subscribe(MODELS_TOPIC, "g", h).await.unwrap();
    sub.stop();
    bus.publish(&moved(1)).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
        .await
        .map_or(true, |e| e.is_none()));
}

/// A Redis config with a stream prefix no other test uses.
fn redis_config(test: &str, consumer: &str) -> EventsConfig {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut config = fast(EventsConfig::default());
    config.backend = crate::config::EventsBackend::Redis;
    if let Ok(url) = std::env::var("MLSERVE_TEST_REDIS_URL") {
        config.redis_url = url;
    }
    config.stream_prefix = format!("mlserve-test:{test}:{}:{nanos}:", std::process::id());
    config.consumer = Some(consumer.into());
    config
}

async fn redis_bus(config: &EventsConfig) -> RedisBus {
    RedisBus::connect(config).await.unwrap_or_else(|e| {
        panic!(
            "Redis must be running at {} for these tests: {e}",
            config.redis_url
        )
    })
}

/// Deletes the test's stream and returns how many entries were still pending
/// in `group`.
async fn cleanup(config: &EventsConfig, group: &str) -> u64 {
    let client = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&config.redis_url).unwrap(),
    )
    .build()
    .unwrap();
    client.init().await.unwrap();
    let key = format!("{}{MODELS_TOPIC}", config.stream_prefix);
    let pending: (
        u64,
        fred::prelude::Value,
        fred::prelude::Value,
        fred::prelude::Value,
    ) = client.xpending(&key, group, ()).await.unwrap();
    let _: i64 = client
        .custom(fred::cmd!("DEL"), vec![key.clone()])
        .await
        .unwrap();
    let _ = client.quit().await;
    pending.0
}

#[tokio::test]
async fn redis_publish_subscribe_and_every_group_gets_every_event() {
    let config = redis_config("groups", "c1");
    let bus = redis_bus(&config).await;
    let (a, mut rx_a) = forward();
    let (b, mut rx_b) = forward();
    let _sa = bus.subscribe(MODELS_TOPIC, "a", a).await.unwrap();
    let _sb = bus.subscribe(MODELS_TOPIC, "b", b).await.unwrap();
    for v in 1..=5 {
        bus.publish(&moved(v)).await.unwrap();
    }
    for v in 1..=5 {
        assert_eq!(next(&mut rx_a).await, moved(v));
        assert_eq!(next(&mut rx_b).await, moved(v));
    }
    assert_eq!(cleanup(&config, "a").await, 0, "every event acknowledged");
}

#[tokio::test]
async fn redis_failed_handler_gets_the_event_again_then_acks() {
    let config = redis_config("redeliver", "c1");
    let bus = redis_bus(&config).await;
    let (h, mut rx) = flaky(2);
    let _s = bus.subscribe(MODELS_TOPIC, "g", h).await.unwrap();
    bus.publish(&moved(42)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(next(&mut rx).await, moved(42));
    }
    bus.publish(&moved(43)).await.unwrap();
    assert_eq!(next(&mut rx).await, moved(43));
    assert_eq!(cleanup(&config, "g").await, 0, "acknowledged once handled");
}

#[tokio::test]
async fn redis_event_left_by_a_dead_consumer_goes_to_another_of_its_group() {
    let mut config = redis_config("claim", "dying");
    config.claim_idle = Duration::from_millis(200);
    let dying = redis_bus(&config).await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let stuck = handler(move |event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event);
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let sub = dying.subscribe(MODELS_TOPIC, "g", stuck).await.unwrap();
    dying.publish(&moved(5)).await.unwrap();
    assert_eq!(next(&mut seen).await, moved(5));
    drop(sub); // the consumer dies mid-handler: the event stays pending

    let mut survivor_config = config.clone();
    survivor_config.consumer = Some("survivor".into());
    let survivor = redis_bus(&survivor_config).await;
    let (h, mut rx) = forward();
    let _s = survivor.subscribe(MODELS_TOPIC, "g", h).await.unwrap();
    assert_eq!(next(&mut rx).await, moved(5));
    assert_eq!(cleanup(&config, "g").await, 0);
}

#[tokio::test]
async fn redis_restarted_consumer_reads_its_own_pending_events_first() {
    let config = redis_config("restart", "same");
    let bus = redis_bus(&config).await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let failing = handler(move |event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event);
            Err::<(), String>("down".into())
        }
    });
    let sub = bus.subscribe(MODELS_TOPIC, "g", failing).await.unwrap();
    bus.publish(&moved(9)).await.unwrap();
    assert_eq!(next(&mut seen).await, moved(9));
    drop(sub);
    let again = redis_bus(&config).await;
    let (h, mut rx) = forward();
    let _s = again.subscribe(MODELS_TOPIC, "g", h).await.unwrap();
    assert_eq!(next(&mut rx).await, moved(9));
    assert_eq!(cleanup(&config, "g").await, 0);
}

#[tokio::test]
async fn unreachable_redis_is_an_error_at_connect() {
    let mut config = redis_config("down", "c");
    config.redis_url = "redis://127.0.0.1:1".into();
    let err = match connect(&config).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(err) => err,
    };
    assert!(matches!(err, EventError::Unavailable(_)), "{err}");
}

/// A TCP proxy to Redis that the test can cut: every open connection is
/// dropped and new ones are refused until it is restored.
struct Proxy {
    port: u16,
    down: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (down2, open2) = (down.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if down2.load(Ordering::SeqCst) {
                    continue; // dropped: refused while down
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                open2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            down,
            open,
            accept,
        }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for task in self.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test]
async fn redis_subscriber_reconnects_and_gets_what_was_published_meanwhile() {
    let config = redis_config("reconnect", "c1");
    let direct = redis_bus(&config).await;
    let upstream = config
        .redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Proxy::start(upstream).await;
    let mut proxied_config = config.clone();
    proxied_config.redis_url = format!("redis://127.0.0.1:{}", proxy.port);
    let proxied = redis_bus(&proxied_config).await;
    let (h, mut rx) = forward();
    let _s = proxied.subscribe(MODELS_TOPIC, "g", h).await.unwrap();
    direct.publish(&moved(1)).await.unwrap();
    assert_eq!(next(&mut rx).await, moved(1));

    proxy.cut();
    direct.publish(&moved(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the reader notice
    proxy.restore();
    assert_eq!(
        next(&mut rx).await,
        moved(2),
        "delivered after the reconnect"
    );
    direct.publish(&moved(3)).await.unwrap();
    assert_eq!(next(&mut rx).await, moved(3));
    assert_eq!(cleanup(&config, "g").await, 0);
}
