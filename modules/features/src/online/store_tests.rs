//! The same checks against the in-memory store and a real Redis.

use std::time::Duration;

use super::redis::RedisOptions;
use super::*;

fn row(key: &str, ts: i64, v: &str) -> OnlineRow {
    OnlineRow {
        key: key.into(),
        event_ts: ts,
        values_json: v.into(),
    }
}

async fn newer_wins_and_reads_keep_order(store: &dyn OnlineStore) {
    assert_eq!(
        store
            .write(
                "v",
                &[row("[1]", 10, "{\"x\":1}"), row("[2]", 10, "{\"x\":2}")],
                0
            )
            .await
            .unwrap(),
        2
    );
    // An older value never replaces a newer one; an equal or newer one does.
    assert_eq!(
        store
            .write("v", &[row("[1]", 5, "{\"x\":0}")], 0)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .write("v", &[row("[2]", 11, "{\"x\":3}")], 0)
            .await
            .unwrap(),
        1
    );
    let keys = vec![
        ("v".to_string(), "[2]".to_string()),
        ("v".to_string(), "[9]".to_string()),
        ("v".to_string(), "[1]".to_string()),
        ("w".to_string(), "[1]".to_string()),
    ];
    let got = store.read(&keys).await.unwrap();
    assert_eq!(
        got,
        vec![
            Some((11, "{\"x\":3}".to_string())),
            None,
            Some((10, "{\"x\":1}".to_string())),
            None
        ]
    );
    assert_eq!(store.read(&keys[..1]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn memory_store() {
    newer_wins_and_reads_keep_order(&MemoryStore::default()).await;
}

fn redis_options(prefix: &str) -> RedisOptions {
    RedisOptions {
        url: std::env::var("MLSERVE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        prefix: format!(
            "test-{prefix}-{}-{}",
            std::process::id(),
            crate::values::now_micros()
        ),
        command_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        reconnect_delay_ms: 100,
    }
}

#[tokio::test]
async fn redis_store() {
    let store = RedisStore::connect(redis_options("order"))
        .await
        .expect("Redis at 127.0.0.1:6379 is required for this test");
    newer_wins_and_reads_keep_order(&store).await;
}

#[tokio::test]
async fn redis_keys_expire_one_ttl_after_max_age() {
    let store = RedisStore::connect(redis_options("ttl"))
        .await
        .expect("Redis at 127.0.0.1:6379 is required for this test");
    let now = crate::values::now_micros();
    // ttl 1 s, event 1.9 s ago: lives one TTL from now.
    store
        .write("v", &[row("[1]", now - 1_900_000, "{}")], 1)
        .await
        .unwrap();
    let key = ("v".to_string(), "[1]".to_string());
    let mut gone = false;
    for _ in 0..100 {
        if store.read(std::slice::from_ref(&key)).await.unwrap()[0].is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the key should expire");
}

#[test]
fn expiry_is_one_ttl_past_max_age() {
    assert_eq!(expire_ms(0, 0, 5), None);
    assert_eq!(expire_ms(1_000_000, 10, 1_000_000), Some(20_000));
    assert_eq!(expire_ms(0, 1, 10_000_000), Some(1000));
}
