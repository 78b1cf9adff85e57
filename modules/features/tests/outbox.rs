//! `data_arrived` through the event outbox: an ingest writes its event with
//! its rows (nothing is published on the request path, so a bus that is
//! down cannot make it wait), a materialization right after its writes, and
//! the drain sends them in order. On SQLite and on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use mlserve_common::config::EventsConfig;
use mlserve_common::db::testing;
use mlserve_common::events::memory::MemoryBus;
use mlserve_common::events::outbox::Outbox;
use mlserve_common::events::testing::watch;
use mlserve_common::events::{Event, DATA_TOPIC};
use mlserve_common::Database;
use mlserve_features::online::MemoryStore;
use mlserve_features::{LocalFeatures, Options};
use mlserve_proto::features::*;
use mlserve_proto::CallContext;

const T0: i64 = 1_700_000_000_000_000;

fn row(driver: i64, ts: i64) -> Row {
    let values = [
        ("driver_id", driver.to_string()),
        ("rate", "0.5".to_string()),
        ("trips", "3".to_string()),
        ("tier", "\"a\"".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Row {
        values,
        event_ts: ts,
    }
}

async fn events_go_through_the_outbox(db: Database) {
    let outbox = Outbox::new(db.clone());
    let bus = Arc::new(MemoryBus::new(&EventsConfig::default()));
    let (_subscription, mut seen) = watch(bus.as_ref(), DATA_TOPIC).await;
    let service = LocalFeatures::new(db, Arc::new(MemoryStore::default()), Options::default())
        .with_events(bus.clone())
        .with_outbox(outbox.clone());
    let client = FeaturesClient::local(service);
    let text = include_str!("data/drivers.toml");
    let definitions = mlserve_features::catalog::parse_definitions(text, "test").unwrap();
    client.apply(CallContext::new(), definitions).await.unwrap();

    let ingest = |rows: Vec<Row>| {
        let client = client.clone();
        async move {
            client
                .ingest(
                    CallContext::new(),
                    IngestRequest {
                        feature_view: "driver_stats".into(),
                        rows,
                    },
                )
                .await
        }
    };
    ingest(vec![row(1, T0), row(2, T0 + 5)]).await.unwrap();
    // A refused ingest (no event_ts) writes no event.
    ingest(vec![row(3, 0)]).await.unwrap_err();
    client
        .materialize(
            CallContext::new(),
            MaterializeRequest {
                end_ts: T0 + 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(seen.try_recv().is_err(), "published on the request path");
    assert_eq!(outbox.count().await.unwrap(), 2);
    assert_eq!(outbox.drain_once(bus.as_ref()).await.unwrap(), 2);
    let mut got = Vec::new();
    while got.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("delivered")
            .unwrap();
        match event {
            Event::DataArrived {
                feature_view,
                rows,
                source,
                newest_event,
                ..
            } => got.push((feature_view, rows, source, newest_event)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        got,
        [
            (
                "driver_stats".to_string(),
                2,
                "ingest".to_string(),
                Some(T0 + 5)
            ),
            (
                "driver_stats".to_string(),
                2,
                "materialize".to_string(),
                None
            ),
        ]
    );
    assert_eq!(outbox.count().await.unwrap(), 0);
}

#[tokio::test]
async fn sqlite_data_events_go_through_the_outbox() {
    let dir = std::env::temp_dir().join(format!(
        "mlserve-features-outbox-{}-{}",
        std::process::id(),
        mlserve_features::values::now_micros()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    events_go_through_the_outbox(testing::sqlite(&dir).await).await;
}

#[tokio::test]
async fn postgres_data_events_go_through_the_outbox() {
    events_go_through_the_outbox(testing::postgres().await).await;
}
