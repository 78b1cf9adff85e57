//! The feature service suite, run against the embedded defaults (SQLite +
//! memory), against PostgreSQL + Redis, and through the gRPC adapters: every
//! operation, its errors and their codes, with hand-computed expectations.

use std::sync::Arc;
use std::time::Duration;

use mlserve_common::db::testing;
use mlserve_features::online::{MemoryStore, OnlineStore, RedisOptions, RedisStore};
use mlserve_features::{LocalFeatures, Options};
use mlserve_proto::features::*;
use mlserve_proto::rpc::GrpcOptions;
use mlserve_proto::{CallContext, ErrorCode};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

const T0: i64 = 1_700_000_000_000_000;
const MIN: i64 = 60_000_000;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mlserve-features-{name}-{}-{}",
        std::process::id(),
        mlserve_features::values::now_micros()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn redis() -> Arc<dyn OnlineStore> {
    Arc::new(
        RedisStore::connect(RedisOptions {
            url: std::env::var("MLSERVE_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            prefix: format!(
                "suite-{}-{}",
                std::process::id(),
                mlserve_features::values::now_micros()
            ),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            reconnect_delay_ms: 100,
        })
        .await
        .expect("Redis at 127.0.0.1:6379 is required for this test"),
    )
}

async fn sqlite_memory(name: &str) -> FeaturesClient {
    let db = testing::sqlite(&scratch(name)).await;
    FeaturesClient::local(LocalFeatures::new(
        db,
        Arc::new(MemoryStore::default()),
        Options::default(),
    ))
}

async fn postgres_redis() -> FeaturesClient {
    let db = testing::postgres().await;
    FeaturesClient::local(LocalFeatures::new(db, redis().await, Options::default()))
}

async fn through_grpc(local: FeaturesClient) -> FeaturesClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(features_grpc_server(Arc::new(local), 16 << 20))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let options = GrpcOptions {
        connect_timeout: Duration::from_secs(5),
        max_message_bytes: 16 << 20,
        ..GrpcOptions::default()
    };
    let client = FeaturesClient::connect_lazy(&format!("http://{addr}"), &options).unwrap();
    assert!(client.is_remote());
    client
}

/// A call with no deadline, id or caller.
fn ctx() -> CallContext {
    CallContext::new()
}

fn definitions() -> ApplyRequest {
    let text = include_str!("data/drivers.toml");
    mlserve_features::catalog::parse_definitions(text, "test").unwrap()
}

fn row(driver: i64, ts: i64, rate: f64, trips: i64, tier: &str) -> Row {
    let mut values = std::collections::HashMap::new();
    values.insert("driver_id".to_string(), driver.to_string());
    values.insert("rate".to_string(), rate.to_string());
    values.insert("trips".to_string(), trips.to_string());
    values.insert("tier".to_string(), serde_json::json!(tier).to_string());
    Row {
        values,
        event_ts: ts,
    }
}

fn entity(driver: i64, ts: i64) -> EntityRow {
    EntityRow {
        keys: [("driver_id".to_string(), driver.to_string())]
            .into_iter()
            .collect(),
        event_ts: ts,
    }
}

async fn ingest(client: &FeaturesClient, rows: Vec<Row>) -> i64 {
    client
        .ingest(
            ctx(),
            IngestRequest {
                feature_view: "driver_stats".into(),
                rows,
            },
        )
        .await
        .unwrap()
        .offline_rows
}

/// The point-in-time join with hand-computed answers.
async fn point_in_time(client: &FeaturesClient) {
    assert_eq!(
        ingest(
            client,
            vec![
                row(1, T0, 0.1, 1, "a"),
                row(1, T0 + 10 * MIN, 0.2, 2, "b"),
                row(1, T0 + 30 * MIN, 0.3, 3, "c"),
                row(2, T0, 0.5, 5, "z"),
            ]
        )
        .await,
        4
    );
    // Same event time as an existing row, created later: wins the tie.
    assert_eq!(
        ingest(client, vec![row(1, T0 + 10 * MIN, 0.25, 9, "tie")]).await,
        1
    );
    let entities = vec![
        entity(1, T0 - 1),            // before any value: the future is never returned
        entity(1, T0),                // at the event time exactly
        entity(1, T0 + 15 * MIN),     // tie at T0+10 broken by created time
        entity(1, T0 + 30 * MIN + 1), // latest
        entity(2, T0 + 59 * MIN),     // within the 1 h TTL
        entity(2, T0 + 61 * MIN),     // TTL expired
        entity(3, T0),                // unknown entity
        entity(1, T0 + 89 * MIN),     // T0+30 is 59 min old: within TTL
    ];
    let mut stream = client
        .get_historical_features(
            ctx(),
            GetHistoricalFeaturesRequest {
                features: vec!["driver_stats:rate".into(), "driver_stats:tier".into()],
                entities,
            },
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(r) = stream.next().await {
        let r = r.unwrap();
        got.push((r.row, r.values_json.join(" ")));
    }
    let expected: Vec<(i64, String)> = [
        "null null",
        "0.1 \"a\"",
        "0.25 \"tie\"",
        "0.3 \"c\"",
        "0.5 \"z\"",
        "null null",
        "null null",
        "0.3 \"c\"",
    ]
    .iter()
    .enumerate()
    .map(|(i, s)| (i as i64, s.to_string()))
    .collect();
    assert_eq!(got, expected);
}

async fn online_values(client: &FeaturesClient, drivers: &[i64]) -> Vec<Vec<(String, String)>> {
    let response = client
        .get_online_features(
            ctx(),
            GetOnlineFeaturesRequest {
                features: vec!["driver_stats:rate".into(), "driver_stats:tier".into()],
                entities: drivers.iter().map(|d| entity(*d, 0)).collect(),
            },
        )
        .await
        .unwrap();
    response
        .rows
        .iter()
        .map(|r| {
            r.values
                .iter()
                .map(|v| (v.value_json.clone(), v.status.clone()))
                .collect()
        })
        .collect()
}

fn pair(value: &str, status: &str) -> (String, String) {
    (value.to_string(), status.to_string())
}

async fn materialize_2023(client: &FeaturesClient) -> MaterializeResponse {
    let range = MaterializeRequest {
        start_ts: T0 - 60 * MIN,
        end_ts: T0 + 120 * MIN,
        ..Default::default()
    };
    client.materialize(ctx(), range).await.unwrap()
}

/// Materialize, push and lookups with every status.
async fn online(client: &FeaturesClient) {
    let done = materialize_2023(client).await;
    assert_eq!(done.views.len(), 1);
    assert_eq!(
        done.views[0].rows_written, 2,
        "latest row of each of 2 entities"
    );
    // Rows from 2023 are older than the 1 h TTL now.
    assert_eq!(
        online_values(client, &[1, 9]).await,
        vec![
            vec![pair("null", OUTSIDE_MAX_AGE), pair("null", OUTSIDE_MAX_AGE)],
            vec![pair("null", NOT_FOUND), pair("null", NOT_FOUND)],
        ]
    );
    let now = mlserve_features::values::now_micros();
    let mut fresh = row(1, now, 0.9, 5, "x");
    fresh.values.insert("tier".into(), "null".into());
    let pushed = client
        .push(
            ctx(),
            PushRequest {
                feature_view: "driver_stats".into(),
                rows: vec![fresh],
                to: "online".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!((pushed.online_rows, pushed.offline_rows), (1, 0));
    // Materializing again never replaces the newer pushed value.
    materialize_2023(client).await;
    assert_eq!(
        online_values(client, &[1]).await,
        vec![vec![pair("0.9", PRESENT), pair("null", NULL)]]
    );
    // Incremental: the first run takes everything up to its end, the next
    // one only what is newer.
    let first = client
        .materialize(
            ctx(),
            MaterializeRequest {
                end_ts: T0 + 120 * MIN,
                incremental: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.views[0].end_ts, T0 + 120 * MIN);
    ingest(client, vec![row(2, now - 1, 0.7, 7, "n")]).await;
    let second = client
        .materialize(
            ctx(),
            MaterializeRequest {
                end_ts: now,
                incremental: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(second.views[0].start_ts, T0 + 120 * MIN + 1);
    assert_eq!(second.views[0].rows_written, 1);
    assert_eq!(
        online_values(client, &[2]).await,
        vec![vec![pair("0.7", PRESENT), pair("\"n\"", PRESENT)]]
    );
}

async fn transform(client: &FeaturesClient) {
    let spec = serde_json::json!({
        "kind": "tabular",
        "features": [
            {"name": "driver_stats:rate", "missing": "mean"},
            {"name": "driver_stats:trips", "missing": "default", "default": -1.0},
            {"name": "amount"}
        ]
    });
    client
        .put_pipeline(
            ctx(),
            Pipeline {
                model: "fraud".into(),
                kind: "tabular".into(),
                spec_json: spec.to_string(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .list_pipelines(ctx(), ListRequest {})
            .await
            .unwrap()
            .pipelines[0]
            .model,
        "fraud"
    );
    let response = client
        .transform(
            ctx(),
            TransformRequest {
                model: "fraud".into(),
                rows_json: vec![
                    r#"{"driver_id": 1, "amount": 3}"#.into(),
                    r#"{"driver_id": 99, "amount": 4}"#.into(),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let tensor = &response.tensors[0];
    assert_eq!(
        (tensor.name.as_str(), tensor.datatype.as_str()),
        ("input", "FP32")
    );
    assert_eq!(tensor.shape, vec![2, 3]);
    let values: Vec<f32> = tensor
        .data
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // Driver 99 is unknown: rate falls back to the offline mean of rate
    // (0.1 + 0.2 + 0.3 + 0.5 + 0.25 + 0.7) / 6, trips to the default.
    let mean = (0.1 + 0.2 + 0.3 + 0.5 + 0.25 + 0.7) / 6.0;
    assert_eq!(values, vec![0.9, 5.0, 3.0, mean as f32, -1.0, 4.0]);
    let request = response.clone().into_infer_request("fraud");
    assert_eq!(request.inputs[0].shape, vec![2, 3]);
}

async fn errors(client: &FeaturesClient) {
    let code = |r: Result<_, mlserve_proto::ServiceError>| r.map(|_: ()| ()).unwrap_err().code;
    let mut retyped = definitions();
    retyped.feature_views[0].fields[0].dtype = "string".into();
    let err = client.apply(ctx(), retyped).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(
        err.message.contains("cannot change type"),
        "{}",
        err.message
    );
    let unknown = IngestRequest {
        feature_view: "nope".into(),
        rows: vec![row(1, T0, 0.1, 1, "a")],
    };
    assert_eq!(
        code(client.ingest(ctx(), unknown).await.map(|_| ())),
        ErrorCode::NotFound
    );
    let mut bad = row(1, T0, 0.1, 1, "a");
    bad.values.insert("trips".into(), "\"many\"".into());
    let bad = IngestRequest {
        feature_view: "driver_stats".into(),
        rows: vec![bad],
    };
    assert_eq!(
        code(client.ingest(ctx(), bad).await.map(|_| ())),
        ErrorCode::BadRequest
    );
    let missing = TransformRequest {
        model: "nope".into(),
        ..Default::default()
    };
    assert_eq!(
        code(client.transform(ctx(), missing).await.map(|_| ())),
        ErrorCode::NotFound
    );
    let bad_ref = GetOnlineFeaturesRequest {
        features: vec!["driver_stats".into()],
        entities: vec![entity(1, 0)],
    };
    assert_eq!(
        code(client.get_online_features(ctx(), bad_ref).await.map(|_| ())),
        ErrorCode::BadRequest
    );
}

async fn suite(client: FeaturesClient) {
    let applied = client.apply(ctx(), definitions()).await.unwrap();
    assert_eq!(
        applied.changes,
        vec![
            "created entity driver (v1)",
            "created feature view driver_stats (v1)"
        ]
    );
    let mut more = definitions();
    more.feature_views[0].fields.push(Field {
        name: "extra".into(),
        dtype: "bool".into(),
    });
    let again = client.apply(ctx(), more).await.unwrap();
    assert_eq!(again.changes[1], "updated feature view driver_stats (v2)");
    assert_eq!(
        client
            .list_feature_views(ctx(), ListRequest {})
            .await
            .unwrap()
            .feature_views[0]
            .version,
        2
    );
    assert_eq!(
        client
            .list_entities(ctx(), ListRequest {})
            .await
            .unwrap()
            .entities[0]
            .join_keys,
        vec!["driver_id"]
    );
    point_in_time(&client).await;
    let listed = client
        .list_feature_views(ctx(), ListRequest {})
        .await
        .unwrap();
    let fresh = &listed.freshness[0];
    assert_eq!(fresh.view, "driver_stats");
    assert_eq!((fresh.materialized_to_us, fresh.materialized_at_us), (0, 0));
    assert!(fresh.newest_event_us >= T0, "{fresh:?}");
    online(&client).await;
    // online() ends with incremental materializes, the last one up to its
    // own "now", after the newest event it ingested: that is the freshness.
    let listed = client
        .list_feature_views(ctx(), ListRequest {})
        .await
        .unwrap();
    let fresh = &listed.freshness[0];
    assert!(fresh.materialized_to_us > T0 + 120 * MIN, "{fresh:?}");
    assert!(
        fresh.newest_event_us < fresh.materialized_to_us,
        "{fresh:?}"
    );
    assert!(
        fresh.materialized_at_us >= fresh.materialized_to_us,
        "{fresh:?}"
    );
    transform(&client).await;
    errors(&client).await;
}

#[tokio::test]
async fn embedded_defaults_sqlite_and_memory() {
    suite(sqlite_memory("local").await).await;
}

#[tokio::test]
async fn postgres_and_redis() {
    suite(postgres_redis().await).await;
}

#[tokio::test]
async fn through_grpc_on_embedded_defaults() {
    suite(through_grpc(sqlite_memory("grpc").await).await).await;
}

#[tokio::test]
async fn through_grpc_on_postgres_and_redis() {
    suite(through_grpc(postgres_redis().await).await).await;
}
