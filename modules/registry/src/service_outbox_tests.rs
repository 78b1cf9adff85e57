//! The registry's events through the outbox: each change writes its event
//! in its own transaction (nothing is published on the request path), a
//! refused change writes none, and the drain sends them in order.

use std::sync::Arc;
use std::time::Duration;

use mlserve_common::config::{EventsConfig, RegistryConfig};
use mlserve_common::db::testing;
use mlserve_common::events::memory::MemoryBus;
use mlserve_common::events::outbox::Outbox;
use mlserve_common::events::testing::watch;
use mlserve_common::events::{Event, MODELS_TOPIC};
use mlserve_proto::registry::{pb, RegistryCalls, RegistryClient, RegistryService};

use super::tests::{files, header};
use crate::artifacts::Artifacts;
use crate::store::Store;
use crate::testing::{ctx, onnx_bytes, temp_dir, TEST_LIMITS};
use crate::LocalRegistry;

fn alias(model: &str, alias: &str, version: u64) -> pb::SetAliasRequest {
    pb::SetAliasRequest {
        name: model.into(),
        alias: alias.into(),
        version,
        actor: "ci".into(),
    }
}

#[tokio::test]
async fn changes_write_their_events_to_the_outbox_in_order() {
    let dir = temp_dir("registry-outbox");
    let db = testing::sqlite(&dir).await;
    let outbox = Outbox::new(db.clone());
    let artifacts = Artifacts::from_config(&RegistryConfig::default(), &dir).unwrap();
    // A bus that would fail the test if the registry published on it.
    let bus = Arc::new(MemoryBus::new(&EventsConfig::default()));
    let (_subscription, mut seen) = watch(bus.as_ref(), MODELS_TOPIC).await;
    let local = Arc::new(
        LocalRegistry::new(Store::new(db), artifacts, Some(bus.clone()), TEST_LIMITS)
            .with_outbox(outbox.clone()),
    );
    let client = RegistryClient::from_arc(local.clone());
    client
        .create_model(
            ctx(),
            pb::CreateModelRequest {
                name: "m".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let onnx = onnx_bytes(None);
    let v1 = client
        .upload(ctx(), header("m"), files(&[("model.onnx", &onnx, "")]))
        .await
        .unwrap();
    client
        .set_alias(ctx(), alias("m", "production", v1.version))
        .await
        .unwrap();
    // Refused: no such version, no event.
    client
        .set_alias(ctx(), alias("m", "production", 9))
        .await
        .unwrap_err();
    client
        .delete_alias(
            ctx(),
            pb::DeleteAliasRequest {
                name: "m".into(),
                alias: "production".into(),
                actor: "ci".into(),
            },
        )
        .await
        .unwrap();
    client
        .set_alias(ctx(), alias("m", "staging", 1))
        .await
        .unwrap();
    client
        .delete_model(ctx(), pb::DeleteModelRequest { name: "m".into() })
        .await
        .unwrap();

    // Nothing went to the bus: every event waits in the outbox.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(seen.try_recv().is_err(), "published on the request path");
    assert_eq!(outbox.count().await.unwrap(), 5);

    assert_eq!(outbox.drain_once(bus.as_ref()).await.unwrap(), 5);
    let mut events = Vec::new();
    while events.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("delivered")
            .unwrap();
        events.push(event);
    }
    let moves: Vec<(String, Option<i64>, Option<i64>)> = events[1..]
        .iter()
        .map(|e| match e {
            Event::AliasMoved {
                alias, from, to, ..
            } => (alias.clone(), *from, *to),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        events[0],
        Event::ModelVersionRegistered {
            model: "m".into(),
            version: 1
        }
    );
    assert_eq!(
        moves,
        [
            ("production".to_string(), None, Some(1)),
            ("production".to_string(), Some(1), None),
            ("staging".to_string(), None, Some(1)),
            ("staging".to_string(), Some(1), None),
        ]
    );
    assert_eq!(outbox.count().await.unwrap(), 0);
}
