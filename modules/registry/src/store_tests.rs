//! One suite for the SQL store, run on SQLite and on PostgreSQL.

use std::collections::HashMap;

use mlserve_common::db::testing;

use super::*;

fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn ready_version(store: &Store, name: &str, path: &str) -> u64 {
    let pending = store
        .begin_version(name, &NewVersion::default(), "u1")
        .await
        .unwrap();
    let file = FileRow {
        path: path.into(),
        sha256: "ab".repeat(32),
        size: 3,
        object_key: format!("{}/{path}", pending.prefix),
    };
    store
        .commit_version(name, pending.slot, &[file])
        .await
        .unwrap()
        .version
}

async fn suite(store: Store) {
    // Models: create, duplicate, get, search, tags, pagination.
    store
        .create_model("resnet", "Image classifier", &tags(&[("team", "vision")]))
        .await
        .unwrap();
    let dup = store.create_model("resnet", "", &HashMap::new()).await;
    assert!(matches!(dup, Err(RegistryError::Conflict(_))), "{dup:?}");
    store
        .create_model("bert", "Text 100%_model", &tags(&[("team", "nlp")]))
        .await
        .unwrap();
    store
        .create_model("tabular", "", &HashMap::new())
        .await
        .unwrap();
    let model = store.get_model("resnet").await.unwrap();
    assert_eq!(model.tags["team"], "vision");
    assert_eq!(model.latest_version, 0);
    let names = |ms: Vec<pb::RegisteredModel>| ms.into_iter().map(|m| m.name).collect::<Vec<_>>();
    let none = HashMap::new();
    assert_eq!(
        names(store.list_models("", &none, "", 2).await.unwrap()),
        ["bert", "resnet"]
    );
    assert_eq!(
        names(store.list_models("", &none, "resnet", 10).await.unwrap()),
        ["tabular"]
    );
    assert_eq!(
        names(store.list_models("CLASSIF", &none, "", 10).await.unwrap()),
        ["resnet"]
    );
    assert_eq!(
        names(store.list_models("0%_", &none, "", 10).await.unwrap()),
        ["bert"]
    );
    // A literal '%' matches only the description that has one.
    assert_eq!(
        names(store.list_models("%", &none, "", 10).await.unwrap()),
        ["bert"]
    );
    assert_eq!(
        names(
            store
                .list_models("", &tags(&[("team", "nlp")]), "", 10)
                .await
                .unwrap()
        ),
        ["bert"]
    );
    store
        .update_model(
            "resnet",
            Some("new"),
            &tags(&[("stage", "beta")]),
            &["team".into()],
        )
        .await
        .unwrap();
    let model = store.get_model("resnet").await.unwrap();
    assert_eq!(model.description, "new");
    assert_eq!(model.tags, tags(&[("stage", "beta")]));

    // Versions: numbering, pending invisible, failed invisible and spending
    // no number, commit.
    let v1 = ready_version(&store, "resnet", "model.onnx").await;
    assert_eq!(v1, 1);
    let pending = store
        .begin_version("resnet", &NewVersion::default(), "u2")
        .await
        .unwrap();
    assert!(pending.slot < 0, "a pending upload holds no version number");
    assert!(matches!(
        store.get_version("resnet", 2).await,
        Err(RegistryError::NotFound(_))
    ));
    store
        .fail_version("resnet", pending.slot, "checksum")
        .await
        .unwrap();
    assert!(store
        .commit_version("resnet", pending.slot, &[])
        .await
        .is_err());
    let v2 = ready_version(&store, "resnet", "model.onnx").await;
    assert_eq!(v2, 2, "a refused upload leaves no gap");
    let v3 = ready_version(&store, "resnet", "model.onnx").await;
    assert_eq!(v3, 3);
    let listed: Vec<u64> = store
        .list_versions("resnet", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(listed, [3, 2, 1]);
    assert_eq!(
        store.list_versions("resnet", 3, 10).await.unwrap()[0].version,
        2
    );
    let file = store.file("resnet", 1, "model.onnx").await.unwrap();
    assert_eq!(file.size, 3);
    assert!(store.file("resnet", 1, "other").await.is_err());
    assert_eq!(store.get_model("resnet").await.unwrap().latest_version, 3);
    store
        .update_version("resnet", 1, Some("first"), &tags(&[("ok", "yes")]), &[])
        .await
        .unwrap();
    let v = store.get_version("resnet", 1).await.unwrap();
    assert_eq!(
        (v.description.as_str(), v.tags["ok"].as_str()),
        ("first", "yes")
    );

    // Aliases: missing version refused, moves recorded, deletion recorded.
    let missing = store.set_alias("resnet", "production", 9, "ann").await;
    assert!(
        matches!(missing, Err(RegistryError::NotFound(_))),
        "{missing:?}"
    );
    let first = store
        .set_alias("resnet", "production", 1, "ann")
        .await
        .unwrap();
    assert_eq!((first.from_version, first.to_version), (0, 1));
    let second = store
        .set_alias("resnet", "production", 3, "bob")
        .await
        .unwrap();
    assert_eq!((second.from_version, second.to_version), (1, 3));
    store
        .set_alias("resnet", "staging", 1, "bob")
        .await
        .unwrap();
    assert_eq!(
        store
            .get_alias("resnet", "production")
            .await
            .unwrap()
            .version,
        3
    );
    assert_eq!(
        store.get_version("resnet", 3).await.unwrap().aliases,
        ["production"]
    );
    let deleted = store.delete_alias("resnet", "staging", "cy").await.unwrap();
    assert_eq!((deleted.from_version, deleted.to_version), (1, 0));
    assert!(store.delete_alias("resnet", "staging", "cy").await.is_err());
    let history = store.alias_history("resnet", "", 0, 100).await.unwrap();
    assert_eq!(history.len(), 4);
    let production = store
        .alias_history("resnet", "production", 0, 100)
        .await
        .unwrap();
    assert_eq!(production.len(), 2);
    assert_eq!(production[1].actor, "bob");
    let after = store
        .alias_history("resnet", "", history[1].id, 100)
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(
        store.get_model("resnet").await.unwrap().aliases,
        [("production".to_string(), 3u64)].into_iter().collect()
    );

    // Collection bookkeeping: stale pending uploads fail; live prefixes.
    let stale = store
        .begin_version("bert", &NewVersion::default(), "u9")
        .await
        .unwrap();
    let live = store.live_prefixes().await.unwrap();
    assert!(live.contains(&stale.prefix));
    let expired = store.expire_pending(now_us() + 1).await.unwrap();
    assert_eq!(expired, [("bert".to_string(), stale.slot)]);
    assert!(!store.live_prefixes().await.unwrap().contains(&stale.prefix));

    // Deleting a model removes everything it owns.
    let aliases = store.delete_model("resnet", "test").await.unwrap();
    assert_eq!(aliases, [("production".to_string(), 3)]);
    assert!(matches!(
        store.get_model("resnet").await,
        Err(RegistryError::NotFound(_))
    ));
    assert!(store.alias_history("resnet", "", 0, 10).await.is_err());
    store
        .create_model("resnet", "", &HashMap::new())
        .await
        .unwrap();
    assert_eq!(ready_version(&store, "resnet", "model.onnx").await, 1);
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("mlserve-store-{}", fastrand::u64(..)));
    suite(Store::new(testing::sqlite(&dir).await)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn store_suite_on_postgres() {
    suite(Store::new(testing::postgres().await)).await;
}

/// Sixteen uploads begin and commit at once, and every other one is refused
/// before its commit: the committed ones are numbered 1..=8, no gap, none twice.
async fn concurrent_uploads_number_without_gaps(store: Store) {
    store.create_model("m", "", &HashMap::new()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let pending = store
                .begin_version("m", &NewVersion::default(), &format!("u{i}"))
                .await
                .unwrap();
            if i % 2 == 1 {
                store
                    .fail_version("m", pending.slot, "refused")
                    .await
                    .unwrap();
                return None;
            }
            Some(
                store
                    .commit_version("m", pending.slot, &[])
                    .await
                    .unwrap()
                    .version,
            )
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.extend(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<u64>>());
}

#[tokio::test]
async fn concurrent_uploads_number_without_gaps_on_postgres() {
    concurrent_uploads_number_without_gaps(Store::new(testing::postgres().await)).await;
}

#[tokio::test]
async fn concurrent_uploads_number_without_gaps_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("mlserve-store-{}", fastrand::u64(..)));
    concurrent_uploads_number_without_gaps(Store::new(testing::sqlite(&dir).await)).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The committed version is answered from its own transaction: equal to what
/// a read gives afterwards, and built with no read after the commit, so a
/// database lost right after it cannot turn a registered version into a 503
/// (and a client's retry into a second version).
#[tokio::test]
async fn a_committed_version_is_answered_from_its_transaction() {
    let dir = std::env::temp_dir().join(format!("mlserve-store-{}", fastrand::u64(..)));
    let store = Store::new(testing::sqlite(&dir).await);
    store.create_model("m", "", &HashMap::new()).await.unwrap();
    let new = NewVersion {
        description: "first".into(),
        lineage: pb::Lineage {
            training_run: "run-7".into(),
            ..Default::default()
        },
        metrics: HashMap::from([("auc".to_string(), 0.91)]),
        tags: tags(&[("stage", "test")]),
        created_by: "ci".into(),
    };
    let pending = store.begin_version("m", &new, "u1").await.unwrap();
    let file = |path: &str| FileRow {
        path: path.into(),
        sha256: "cd".repeat(32),
        size: 5,
        object_key: format!("{}/{path}", pending.prefix),
    };
    let committed = store
        .commit_version("m", pending.slot, &[file("model.onnx"), file("labels.txt")])
        .await
        .unwrap();
    assert_eq!(committed, store.get_version("m", 1).await.unwrap());
    assert_eq!(committed.version, 1);
    assert_eq!(committed.status, pb::VersionStatus::Ready as i32);
    let paths: Vec<&str> = committed.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["labels.txt", "model.onnx"]);
    assert_eq!(
        (committed.metrics["auc"], committed.tags["stage"].as_str()),
        (0.91, "test")
    );
    // The database gone now, a read fails: the answer above needed none.
    store.database().pool.close().await;
    assert!(store.get_version("m", 1).await.is_err());
    let _ = std::fs::remove_dir_all(dir);
}
