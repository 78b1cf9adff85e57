//! The follower against an in-memory registry (a fake of the registry
//! service, which lives in another crate) with real ONNX Runtime sessions:
//! swaps, refusals that keep the old version serving, the cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use mlserve_common::config::{EventsConfig, FollowedModel, ModelControlMode};
use mlserve_common::events::memory::MemoryBus;
use mlserve_common::events::{Event, EventBus, MODELS_TOPIC};
use mlserve_proto::registry::pb::{self, ModelVersion, VersionFile};
use mlserve_proto::registry::{download_parts, RegistryClient, RegistryService};
use mlserve_proto::rpc::ServiceStream;
use mlserve_proto::{CallContext, ServiceError, ServiceResult};
use prost::Message;
use sha2::{Digest, Sha256};

use super::*;
use crate::artifact_cache::ArtifactCache;
use crate::manager::{ManagerOptions, ModelManager};
use crate::stats::StatsRegistry;
use crate::tensor::{InputTensor, RequestInputs};

/// The few ONNX protobuf messages a one-node model needs.
mod onnx {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Model {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<Graph>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<Opset>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Opset {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(int64, tag = "2")]
        pub version: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Graph {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<Node>,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<Tensor>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfo>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfo>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Node {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "4")]
        pub op_type: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(string, tag = "8")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfo {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<Type>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Type {
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TensorType>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorType {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<Shape>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Shape {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dim>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
}

/// OUTPUT0 = INPUT0 + k over FP32 [batch, 4].
fn plus_model(k: f32) -> Vec<u8> {
    const FLOAT: i32 = 1;
    let value = |name: &str| onnx::ValueInfo {
        name: name.into(),
        r#type: Some(onnx::Type {
            tensor_type: Some(onnx::TensorType {
                elem_type: FLOAT,
                shape: Some(onnx::Shape {
                    dim: vec![
                        onnx::Dim {
                            dim_value: None,
                            dim_param: Some("batch".into()),
                        },
                        onnx::Dim {
                            dim_value: Some(4),
                            dim_param: None,
                        },
                    ],
                }),
            }),
        }),
    };
    onnx::Model {
        ir_version: 8,
        opset_import: vec![onnx::Opset {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(onnx::Graph {
            name: "plus".into(),
            node: vec![onnx::Node {
                input: vec!["INPUT0".into(), "k".into()],
                output: vec!["OUTPUT0".into()],
                op_type: "Add".into(),
            }],
            initializer: vec![onnx::Tensor {
                dims: vec![1],
                data_type: FLOAT,
                float_data: vec![k],
                name: "k".into(),
            }],
            input: vec![value("INPUT0")],
            output: vec![value("OUTPUT0")],
        }),
    }
    .encode_to_vec()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One version of the fake registry: what it records and what it serves.
struct FakeVersion {
    recorded: Vec<u8>,
    served: Vec<u8>,
}

/// A registry in memory: model "m", its versions, its aliases.
#[derive(Default)]
struct FakeRegistry {
    versions: Mutex<HashMap<u64, FakeVersion>>,
    aliases: Mutex<HashMap<String, u64>>,
    /// Every call fails as unreachable.
    down: std::sync::atomic::AtomicBool,
}

impl FakeRegistry {
    fn add(&self, version: u64, recorded: Vec<u8>, served: Vec<u8>) {
        let v = FakeVersion { recorded, served };
        self.versions.lock().unwrap().insert(version, v);
    }

    fn alias(&self, version: u64) {
        self.move_alias("production", version);
    }

    fn move_alias(&self, alias: &str, version: u64) {
        self.aliases.lock().unwrap().insert(alias.into(), version);
    }
}

fn unsupported<T>() -> ServiceResult<T> {
    Err(ServiceError::new(
        mlserve_proto::ErrorCode::Unimplemented,
        "not in the fake",
    ))
}

impl FakeRegistry {
    fn version(&self, name: &str, version: u64) -> ServiceResult<ModelVersion> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ServiceError::unavailable("registry unreachable"));
        }
        let versions = self.versions.lock().unwrap();
        let v = versions
            .get(&version)
            .filter(|_| name == "m")
            .ok_or_else(|| ServiceError::not_found(format!("no version {version}")))?;
        Ok(ModelVersion {
            name: name.into(),
            version,
            files: vec![VersionFile {
                path: "model.onnx".into(),
                sha256: sha256(&v.recorded),
                size: v.recorded.len() as u64,
            }],
            ..Default::default()
        })
    }
}

#[async_trait]
impl RegistryService for FakeRegistry {
    async fn create_model(
        &self,
        _: CallContext,
        _: pb::CreateModelRequest,
    ) -> ServiceResult<pb::RegisteredModel> {
        unsupported()
    }
    async fn get_model(
        &self,
        _: CallContext,
        _: pb::GetModelRequest,
    ) -> ServiceResult<pb::RegisteredModel> {
        unsupported()
    }
    async fn list_models(
        &self,
        _: CallContext,
        _: pb::ListModelsRequest,
    ) -> ServiceResult<pb::ListModelsResponse> {
        unsupported()
    }
    async fn update_model(
        &self,
        _: CallContext,
        _: pb::UpdateModelRequest,
    ) -> ServiceResult<pb::RegisteredModel> {
        unsupported()
    }
    async fn delete_model(
        &self,
        _: CallContext,
        _: pb::DeleteModelRequest,
    ) -> ServiceResult<pb::DeleteModelResponse> {
        unsupported()
    }
    async fn create_version(
        &self,
        _: CallContext,
        _: ServiceStream<pb::UploadPart>,
    ) -> ServiceResult<ModelVersion> {
        unsupported()
    }
    async fn get_version(
        &self,
        _: CallContext,
        request: pb::GetVersionRequest,
    ) -> ServiceResult<ModelVersion> {
        self.version(&request.name, request.version)
    }
    async fn list_versions(
        &self,
        _: CallContext,
        _: pb::ListVersionsRequest,
    ) -> ServiceResult<pb::ListVersionsResponse> {
        unsupported()
    }
    async fn update_version(
        &self,
        _: CallContext,
        _: pb::UpdateVersionRequest,
    ) -> ServiceResult<ModelVersion> {
        unsupported()
    }
    async fn download(
        &self,
        _: CallContext,
        request: pb::DownloadRequest,
    ) -> ServiceResult<ServiceStream<pb::DownloadPart>> {
        let file = self
            .version(&request.name, request.version)?
            .files
            .remove(0);
        let served = self.versions.lock().unwrap()[&request.version]
            .served
            .clone();
        let chunks: Vec<ServiceResult<Bytes>> = served
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(download_parts(file, Box::pin(tokio_stream::iter(chunks))))
    }
    async fn set_alias(
        &self,
        _: CallContext,
        _: pb::SetAliasRequest,
    ) -> ServiceResult<pb::AliasMove> {
        unsupported()
    }
    async fn get_alias(&self, _: CallContext, _: pb::GetAliasRequest) -> ServiceResult<pb::Alias> {
        unsupported()
    }
    async fn resolve_alias(
        &self,
        _: CallContext,
        request: pb::GetAliasRequest,
    ) -> ServiceResult<ModelVersion> {
        let version = self.aliases.lock().unwrap().get(&request.alias).copied();
        let version = version.ok_or_else(|| ServiceError::not_found("no such alias"))?;
        self.version(&request.name, version)
    }
    async fn delete_alias(
        &self,
        _: CallContext,
        _: pb::DeleteAliasRequest,
    ) -> ServiceResult<pb::AliasMove> {
        unsupported()
    }
    async fn list_aliases(
        &self,
        _: CallContext,
        _: pb::ListAliasesRequest,
    ) -> ServiceResult<pb::ListAliasesResponse> {
        unsupported()
    }
    async fn alias_history(
        &self,
        _: CallContext,
        _: pb::AliasHistoryRequest,
    ) -> ServiceResult<pb::AliasHistoryResponse> {
        unsupported()
    }
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlserve-{what}-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn follower(
    registry: &Arc<FakeRegistry>,
    cache: &std::path::Path,
    bus: Arc<dyn EventBus>,
) -> Follower {
    follower_of(registry, cache, bus, &["production"])
}

/// A follower of model "m" under the served name "m", one entry per alias.
fn follower_of(
    registry: &Arc<FakeRegistry>,
    cache: &std::path::Path,
    bus: Arc<dyn EventBus>,
    aliases: &[&str],
) -> Follower {
    let library =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.onnxruntime/libonnxruntime.so");
    let env =
        crate::ort_env::environment(Some(&library), 1).expect("ONNX Runtime (scripts/setup.sh)");
    let options = ManagerOptions {
        root: temp_dir("empty-repo"),
        mode: ModelControlMode::None,
        default_queue: 16,
        default_latency_objective: None,
    };
    let manager = Arc::new(ModelManager::new(
        options,
        env,
        Arc::new(StatsRegistry::default()),
    ));
    let models = aliases
        .iter()
        .map(|alias| FollowedModel {
            name: "m".into(),
            alias: Some(alias.to_string()),
            ..Default::default()
        })
        .collect();
    Follower::new(
        manager,
        RegistryClient::from_arc(registry.clone()),
        ArtifactCache::new(cache.to_path_buf()),
        models,
        bus,
    )
    .unwrap()
}

/// The offset k the serving version adds, and its version number.
async fn served_offset(follower: &Follower) -> (f32, i64) {
    let served = follower.manager.get("m", "").unwrap();
    let x = [1.5f32, -2.0, 0.25, 8.0];
    let data: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let inputs = RequestInputs {
        rows: 1,
        tensors: vec![InputTensor {
            shape: vec![1, 4],
            data: Bytes::from(data),
        }],
    };
    let out = served
        .scheduler
        .enqueue(inputs, 0, None, None)
        .unwrap()
        .wait()
        .await
        .unwrap();
    let y: Vec<f32> = out[0]
        .data
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let k = y[0] - x[0];
    assert!(
        x.iter().zip(&y).all(|(a, b)| (b - a - k).abs() < 1e-5),
        "{y:?}"
    );
    (k, served.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_refuses_bad_versions_and_reuses_the_cache() {
    let registry = Arc::new(FakeRegistry::default());
    registry.add(1, plus_model(1.0), plus_model(1.0));
    registry.add(2, plus_model(2.0), plus_model(2.0));
    let mut corrupted = plus_model(3.0);
    *corrupted.last_mut().unwrap() ^= 0xff;
    registry.add(3, plus_model(3.0), corrupted);
    registry.add(
        4,
        b"not an onnx model".to_vec(),
        b"not an onnx model".to_vec(),
    );
    let cache = temp_dir("cache");
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(&EventsConfig::default()));
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let _sub = bus
        .subscribe(
            MODELS_TOPIC,
            "test",
            mlserve_common::events::handler(move |e| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(e);
                    Ok(())
                }
            }),
        )
        .await
        .unwrap();
    let f = follower(&registry, &cache, bus.clone());
    let m = &f.models()[0].clone();

    registry.alias(1);
    assert_eq!(
        f.sync(m, Trigger::Start).await.unwrap(),
        Synced::Switched(1)
    );
    assert_eq!(served_offset(&f).await, (1.0, 1));
    registry.alias(2);
    assert_eq!(
        f.sync(m, Trigger::Event).await.unwrap(),
        Synced::Switched(2)
    );
    assert_eq!(served_offset(&f).await, (2.0, 2));
    assert!(
        f.manager.get("m", "1").is_err(),
        "the old version was unloaded"
    );
    assert_eq!(f.sync(m, Trigger::Event).await.unwrap(), Synced::Unchanged);

    registry.alias(3);
    let err = f.sync(m, Trigger::Event).await.unwrap_err();
    assert_eq!(err.reason(), "checksum", "{err}");
    assert_eq!(
        served_offset(&f).await,
        (2.0, 2),
        "the old version keeps serving"
    );
    assert_eq!(
        f.sync(m, Trigger::Poll).await.unwrap(),
        Synced::Unchanged,
        "a poll does not retry it"
    );
    registry.alias(4);
    let err = f.sync(m, Trigger::Event).await.unwrap_err();
    assert_eq!(err.reason(), "load", "{err}");
    assert_eq!(served_offset(&f).await, (2.0, 2));

    registry.alias(1);
    assert_eq!(
        f.sync(m, Trigger::Event).await.unwrap(),
        Synced::Switched(1)
    );
    assert_eq!(served_offset(&f).await, (1.0, 1));
    let text = mlserve_common::metrics::encode_collector(f.metrics().clone());
    for line in [
        "mlserve_inference_registry_serving_version{model=\"m\"} 1",
        "mlserve_inference_registry_downloads_total{model=\"m\"} 3",
        "mlserve_inference_registry_cache_hits_total{model=\"m\"} 1",
        "mlserve_inference_registry_sync_failures_total{model=\"m\",reason=\"checksum\"} 1",
        "mlserve_inference_registry_sync_failures_total{model=\"m\",reason=\"load\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // The bus delivers on its own task: wait for the five events rather than
    // take what has arrived so far.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), events.recv())
            .await
            .expect("the bus delivers every event")
            .expect("the channel stays open");
        seen.push(match e {
            Event::ModelServing { version, .. } => format!("serving {version}"),
            Event::ModelSyncFailed {
                version, reason, ..
            } => format!("failed {version} {reason}"),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        seen,
        [
            "serving 1",
            "serving 2",
            "failed 3 checksum",
            "failed 4 load",
            "serving 1"
        ]
    );

    // A restart: the cache serves version 1 without a download.
    let again = follower(&registry, &cache, bus.clone());
    assert_eq!(
        again.sync(m, Trigger::Start).await.unwrap(),
        Synced::Switched(1)
    );
    let text = mlserve_common::metrics::encode_collector(again.metrics().clone());
    assert!(!text.contains("downloads_total{"), "{text}");
    assert!(text.contains("mlserve_inference_registry_cache_hits_total{model=\"m\"} 1"));

    // A cached file that rotted is refused and downloaded again.
    std::fs::write(cache.join(sha256(&plus_model(1.0))), b"rot").unwrap();
    let third = follower(&registry, &cache, bus);
    assert_eq!(
        third.sync(m, Trigger::Start).await.unwrap(),
        Synced::Switched(1)
    );
    assert_eq!(served_offset(&third).await, (1.0, 1));
    assert!(
        mlserve_common::metrics::encode_collector(third.metrics().clone())
            .contains("mlserve_inference_registry_downloads_total{model=\"m\"} 1")
    );

    // The registry unreachable at a restart: the version served last comes
    // from the cache; an event meanwhile fails (and is retried by the bus).
    registry
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let offline = follower(&registry, &cache, third.events.clone());
    assert_eq!(
        offline.sync(m, Trigger::Start).await.unwrap(),
        Synced::Switched(1)
    );
    assert_eq!(served_offset(&offline).await, (1.0, 1));
    let err = offline.sync(m, Trigger::Event).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();
}

/// Two aliases under one served name serve both versions (a gateway canary
/// splits between them); unversioned requests get the first entry's; a
/// version no alias names any more stops serving, and one both name is
/// opened once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_name_follows_production_and_canary() {
    let registry = Arc::new(FakeRegistry::default());
    for v in 1..=3 {
        registry.add(v, plus_model(v as f32), plus_model(v as f32));
    }
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(&EventsConfig::default()));
    let f = follower_of(
        &registry,
        &temp_dir("cache2"),
        bus,
        &["production", "canary"],
    );
    registry.move_alias("production", 1);
    registry.move_alias("canary", 2);
    f.sync_all(Trigger::Start).await;
    assert_eq!(
        served_offset(&f).await,
        (1.0, 1),
        "unversioned: production's"
    );
    assert_eq!(f.manager.get("m", "2").unwrap().version, 2);

    registry.move_alias("canary", 3);
    let canary = f.models()[1].clone();
    assert_eq!(
        f.sync(&canary, Trigger::Event).await.unwrap(),
        Synced::Switched(3)
    );
    assert!(f.manager.get("m", "2").is_err(), "no alias names version 2");
    assert_eq!(f.manager.get("m", "3").unwrap().version, 3);

    // Promotion: production moves to the canary's version, already open.
    let opened = f.manager.get("m", "3").unwrap();
    registry.move_alias("production", 3);
    let production = f.models()[0].clone();
    assert_eq!(
        f.sync(&production, Trigger::Event).await.unwrap(),
        Synced::Switched(3)
    );
    assert!(f.manager.get("m", "1").is_err());
    assert!(
        Arc::ptr_eq(&opened, &f.manager.get("m", "").unwrap()),
        "opened once"
    );

    let twice = vec![f.models()[0].clone(), f.models()[0].clone()];
    let err = Follower::new(
        f.manager.clone(),
        RegistryClient::from_arc(registry.clone()),
        ArtifactCache::new(temp_dir("cache3")),
        twice,
        Arc::new(MemoryBus::new(&EventsConfig::default())),
    )
    .err()
    .unwrap();
    assert!(err.contains("m@production"), "{err}");
}
