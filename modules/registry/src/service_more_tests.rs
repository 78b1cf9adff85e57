//! The orphan collector and the events the registry publishes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mlserve_proto::registry::{pb, RegistryCalls, RegistryClient, RegistryService};
use mlserve_proto::ErrorCode;

use super::tests::{download, files, header};
use crate::testing::{ctx, local_registry, onnx_bytes};

#[tokio::test]
async fn the_collector_fails_abandoned_uploads_and_deletes_their_objects() {
    let (registry, artifacts, dir) = local_registry().await;
    let client = RegistryClient::from_arc(registry.clone());
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
    let kept = client
        .upload(
            ctx(),
            header("m"),
            files(&[("model.onnx", &onnx_bytes(None), "")]),
        )
        .await
        .unwrap();
    // A crash between the artifact write and the commit leaves a pending row
    // and its objects; nobody sees the version.
    let store = registry.store();
    let pending = store
        .begin_version("m", &crate::store::NewVersion::default(), "crashed")
        .await
        .unwrap();
    let mut writer = artifacts
        .writer(&format!("{}/model.onnx", pending.prefix))
        .await
        .unwrap();
    writer.write(Bytes::from(onnx_bytes(None))).await.unwrap();
    writer.finish().await.unwrap();
    let stray = artifacts
        .writer("models/m/9/orphan/model.onnx")
        .await
        .unwrap();
    stray.finish().await.unwrap();
    assert_eq!(
        client
            .get_version(
                ctx(),
                pb::GetVersionRequest {
                    name: "m".into(),
                    version: kept.version + 1,
                },
            )
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    // Within the grace period nothing is touched.
    assert_eq!(
        registry
            .collect_garbage(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(artifacts.list("models/").await.unwrap().len(), 3);
    // After it, the pending upload fails and both orphans go.
    assert_eq!(registry.collect_garbage(Duration::ZERO).await.unwrap(), 2);
    let left = artifacts.list("models/").await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(artifacts
        .relative(&left[0].location)
        .starts_with("models/m/upload/"));
    assert_eq!(
        download(&client, "m", kept.version, "model.onnx").await,
        onnx_bytes(None)
    );
    // A late commit of the collected upload is refused.
    assert!(store.commit_version("m", pending.slot, &[]).await.is_err());
    // Deleting a model leaves other models' uploads in progress alone.
    client
        .create_model(
            ctx(),
            pb::CreateModelRequest {
                name: "other".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let uploading = store
        .begin_version("other", &crate::store::NewVersion::default(), "busy")
        .await
        .unwrap();
    client
        .delete_model(ctx(), pb::DeleteModelRequest { name: "m".into() })
        .await
        .unwrap();
    assert!(store
        .live_prefixes()
        .await
        .unwrap()
        .contains(&uploading.prefix));
    assert!(artifacts.list("models/m/").await.unwrap().is_empty());
    store
        .commit_version("other", uploading.slot, &[])
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn versions_and_alias_moves_are_published_on_the_bus() {
    use mlserve_common::config::EventsConfig;
    use mlserve_common::events::{handler, memory::MemoryBus, Event, EventBus, MODELS_TOPIC};

    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(&EventsConfig::default()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _subscription = bus
        .subscribe(
            MODELS_TOPIC,
            "test",
            handler(move |event| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event);
                    Ok(())
                }
            }),
        )
        .await
        .unwrap();
    let dir = crate::testing::temp_dir("events");
    let db = mlserve_common::db::testing::sqlite(&dir).await;
    let artifacts = crate::artifacts::Artifacts::from_config(&Default::default(), &dir).unwrap();
    let registry = crate::LocalRegistry::new(
        crate::store::Store::new(db),
        artifacts,
        Some(bus),
        crate::testing::TEST_LIMITS,
    );
    let client = RegistryClient::local(registry);
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
    for _ in 0..2 {
        client
            .upload(
                ctx(),
                header("m"),
                files(&[("model.onnx", &onnx_bytes(None), "")]),
            )
            .await
            .unwrap();
    }
    let set = |version| pb::SetAliasRequest {
        name: "m".into(),
        alias: "production".into(),
        version,
        actor: "ann".into(),
    };
    client.set_alias(ctx(), set(1)).await.unwrap();
    client.set_alias(ctx(), set(2)).await.unwrap();
    client
        .delete_model(ctx(), pb::DeleteModelRequest { name: "m".into() })
        .await
        .unwrap();
    let mut events = Vec::new();
    while events.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event")
            .unwrap();
        events.push(event);
    }
    let summary: Vec<String> = events
        .iter()
        .map(|e| match e {
            Event::ModelVersionRegistered { model, version } => {
                format!("registered {model} {version}")
            }
            Event::AliasMoved {
                model,
                alias,
                from,
                to,
                by,
                ..
            } => {
                format!("moved {model}@{alias} {from:?}->{to:?} by {by}")
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "registered m 1",
            "registered m 2",
            "moved m@production None->Some(1) by ann",
            "moved m@production Some(1)->Some(2) by ann",
            "moved m@production Some(2)->None by anonymous",
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_authenticated_caller_is_the_actor_over_the_claimed_name() {
    use mlserve_proto::{CallContext, Caller};

    let (registry, _artifacts, dir) = local_registry().await;
    let client = RegistryClient::from_arc(registry);
    let authenticated = || CallContext {
        caller: Some(Arc::new(Caller {
            identity: "key-7".into(),
            scopes: vec![],
            priority: 0,
        })),
        ..CallContext::new()
    };
    let model = pb::CreateModelRequest {
        name: "m".into(),
        ..Default::default()
    };
    client.create_model(ctx(), model).await.unwrap();
    let onnx = onnx_bytes(None);
    let upload = files(&[("model.onnx", &onnx, "")]);
    let claimed = client.upload(ctx(), header("m"), upload).await.unwrap();
    assert_eq!(claimed.created_by, "ci");
    let upload = files(&[("model.onnx", &onnx, "")]);
    let version = client
        .upload(authenticated(), header("m"), upload)
        .await
        .unwrap();
    assert_eq!(version.created_by, "key-7");
    let moved = client
        .set_alias(
            authenticated(),
            pb::SetAliasRequest {
                name: "m".into(),
                alias: "production".into(),
                version: version.version,
                actor: "ann".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.actor, "key-7");
    let _ = std::fs::remove_dir_all(dir);
}
