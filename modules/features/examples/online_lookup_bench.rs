//! Online lookups per second against Redis, below HTTP: the Redis store alone
//! (one MGET per batch) and the whole get-online-features path of
//! `LocalFeatures` (references, entity keys, statuses), for batches of 1, 32
//! and 256 entities, with several lookups in flight.
//!
//! `cargo run --release -p mlserve-features --example online_lookup_bench -- [SECONDS] [CONCURRENCY]`
//! Needs Redis at 127.0.0.1:6379 (`MLSERVE_BENCH_REDIS_URL`) and writes
//! `bench/results/<date>/features_lookup_store.json`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlserve_common::db::testing;
use mlserve_features::catalog::parse_definitions;
use mlserve_features::online::{OnlineStore, RedisOptions, RedisStore};
use mlserve_features::{LocalFeatures, Options};
use mlserve_proto::features::*;
use mlserve_proto::CallContext;

const ENTITIES: i64 = 100_000;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let url = std::env::var("MLSERVE_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench-{}", std::process::id());
    let store: Arc<dyn OnlineStore> = Arc::new(
        RedisStore::connect(RedisOptions {
            url: url.clone(),
            prefix: prefix.clone(),
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            reconnect_delay_ms: 100,
        })
        .await
        .expect("redis"),
    );
    let dir = std::env::temp_dir().join(format!("mlserve-lookup-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let service = Arc::new(LocalFeatures::new(
        testing::sqlite(&dir).await,
        store.clone(),
        Options::default(),
    ));
    let defs = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]
value_type = "int64"
[[feature_view]]
name = "user_stats"
entities = ["user"]
ttl_secs = 600
online = true
fields = [{ name = "a", dtype = "float64" }, { name = "b", dtype = "int64" }, { name = "c", dtype = "string" }]
"#;
    service
        .apply(
            CallContext::new(),
            parse_definitions(defs, "bench").unwrap(),
        )
        .await
        .unwrap();
    eprintln!("loading {ENTITIES} entities into redis ({url}, prefix {prefix}) ...");
    let now = mlserve_features::values::now_micros();
    for start in (0..ENTITIES).step_by(5000) {
        let rows: Vec<Row> = (start..start + 5000)
            .map(|id| Row {
                values: [
                    ("user_id".to_string(), id.to_string()),
                    ("a".to_string(), format!("{}.5", id % 97)),
                    ("b".to_string(), (id * 7).to_string()),
                    ("c".to_string(), format!("\"tier-{}\"", id % 5)),
                ]
                .into_iter()
                .collect(),
                event_ts: now,
            })
            .collect();
        service
            .push(
                CallContext::new(),
                PushRequest {
                    feature_view: "user_stats".into(),
                    rows,
                    to: "online".into(),
                },
            )
            .await
            .unwrap();
        eprint!("\r  {} / {ENTITIES}", start + 5000);
    }
    eprintln!();
    let mut results = Vec::new();
    for path in ["store", "service"] {
        for batch in [1usize, 32, 256] {
            let done = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            for worker in 0..concurrency {
                let (store, service, done, stop) =
                    (store.clone(), service.clone(), done.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let mut next = (worker as i64 * 7919) % ENTITIES;
                    while !stop.load(Ordering::Relaxed) {
                        let ids: Vec<i64> = (0..batch as i64)
                            .map(|i| (next + i * 13) % ENTITIES)
                            .collect();
                        next = (next + 1) % ENTITIES;
                        if path == "store" {
                            let keys: Vec<(String, String)> = ids
                                .iter()
                                .map(|id| ("user_stats".to_string(), format!("[{id}]")))
                                .collect();
                            let got = store.read(&keys).await.unwrap();
                            assert!(got.iter().all(|v| v.is_some()));
                        } else {
                            let request = GetOnlineFeaturesRequest {
                                features: vec![
                                    "user_stats:a".into(),
                                    "user_stats:b".into(),
                                    "user_stats:c".into(),
                                ],
                                entities: ids
                                    .iter()
                                    .map(|id| EntityRow {
                                        keys: [("user_id".to_string(), id.to_string())]
                                            .into_iter()
                                            .collect(),
                                        event_ts: 0,
                                    })
                                    .collect(),
                            };
                            let got = service
                                .get_online_features(CallContext::new(), request)
                                .await
                                .unwrap();
                            assert!(got.rows.iter().all(|r| r.values[0].status == PRESENT));
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            let started = Instant::now();
            let mut last = 0;
            while started.elapsed().as_secs_f64() < seconds {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = done.load(Ordering::Relaxed);
                eprint!(
                    "\r  {path} batch {batch:>3}: {:>8.0} lookups/s   ",
                    (now - last) as f64 / 0.5
                );
                last = now;
            }
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.await.unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            let lookups = done.load(Ordering::Relaxed) as f64 / secs;
            eprintln!(
                "\r  {path} batch {batch:>3}: {lookups:>8.0} lookups/s, {:>9.0} entities/s",
                lookups * batch as f64
            );
            results.push(serde_json::json!({
                "path": path, "batch": batch, "concurrency": concurrency, "seconds": secs,
                "lookups_per_s": lookups, "entities_per_s": lookups * batch as f64,
            }));
        }
    }
    let date = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "undated".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/results")
        .join(date);
    std::fs::create_dir_all(&root).unwrap();
    let out = root.join("features_lookup_store.json");
    let doc = serde_json::json!({"redis": url, "entities": ENTITIES, "results": results});
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    eprintln!("wrote {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
}
