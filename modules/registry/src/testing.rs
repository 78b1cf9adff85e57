//! Test helpers: a real S3 server (s3s-fs, installed by scripts/setup.sh
//! into `.tools/`), registries over SQLite + a local directory and over
//! PostgreSQL + S3, and hand-made ONNX bytes.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlserve_common::config::RegistryConfig;
use mlserve_common::db::testing;
use mlserve_proto::CallContext;

use crate::artifacts::Artifacts;
use crate::store::Store;
use crate::upload::Limits;
use crate::LocalRegistry;

/// Access key of the test S3 server.
pub const S3_ACCESS_KEY: &str = "mlserve-test";
/// Secret key of the test S3 server.
pub const S3_SECRET_KEY: &str = "mlserve-test-secret";

/// A running s3s-fs with one bucket; killed on drop.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    root: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn s3s_binary() -> PathBuf {
    std::env::var_os("MLSERVE_S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/s3s-fs")
        })
}

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlserve-{tag}-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl S3Server {
    /// Starts s3s-fs on a free port. Panics when it is not installed: tests
    /// that need S3 never skip.
    pub fn start() -> S3Server {
        let binary = s3s_binary();
        assert!(
            binary.exists(),
            "{} is missing: run scripts/setup.sh (it installs s3s-fs)",
            binary.display()
        );
        let root = temp_dir("s3");
        let bucket = "mlserve-test".to_string();
        std::fs::create_dir_all(root.join(&bucket)).expect("bucket dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            root,
        }
    }

    /// The artifact store on this server, keys under `prefix`.
    pub fn artifacts(&self, prefix: &str) -> Artifacts {
        use object_store::aws::AmazonS3Builder;
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_region("us-east-1")
            .with_allow_http(true)
            .with_access_key_id(S3_ACCESS_KEY)
            .with_secret_access_key(S3_SECRET_KEY)
            .build()
            .expect("s3 store");
        Artifacts::new(Arc::new(store), prefix)
    }
}

/// The context of a test's call: no deadline, no caller.
pub fn ctx() -> CallContext {
    CallContext::new()
}

/// Limits used by the tests: 1 MiB per version, 16 files.
pub const TEST_LIMITS: Limits = Limits {
    max_bytes: 1024 * 1024,
    max_files: 16,
};

/// A registry over SQLite and a local directory (kept alive by the returned path).
pub async fn local_registry() -> (Arc<LocalRegistry>, Artifacts, PathBuf) {
    let dir = temp_dir("registry");
    let db = testing::sqlite(&dir).await;
    let config = RegistryConfig::default();
    let artifacts = Artifacts::from_config(&config, &dir).expect("local store");
    (registry_over(db, &artifacts), artifacts, dir)
}

/// A registry with the test limits, no events and no fault.
fn registry_over(db: mlserve_common::Database, artifacts: &Artifacts) -> Arc<LocalRegistry> {
    Arc::new(LocalRegistry::new(
        Store::new(db),
        artifacts.clone(),
        None,
        TEST_LIMITS,
    ))
}

/// A registry over PostgreSQL and `s3`.
pub async fn postgres_s3_registry(s3: &S3Server, prefix: &str) -> (Arc<LocalRegistry>, Artifacts) {
    let db = testing::postgres().await;
    let artifacts = s3.artifacts(prefix);
    (registry_over(db, &artifacts), artifacts)
}

/// Appends a protobuf varint.
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
pub fn len_field(field: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(field << 3 | 2, &mut out);
    varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// A minimal ONNX `ModelProto` (ir_version 8, a graph with one initializer
/// whose data lives at `external`, when given).
pub fn onnx_bytes(external: Option<&str>) -> Vec<u8> {
    let mut tensor = len_field(8, b"weight");
    if let Some(location) = external {
        let mut entry = len_field(1, b"location");
        entry.extend(len_field(2, location.as_bytes()));
        tensor.extend(len_field(13, &entry));
    } else {
        tensor.extend(len_field(9, &[0u8; 16]));
    }
    let mut graph = len_field(2, b"main");
    graph.extend(len_field(5, &tensor));
    let mut model = vec![0x08, 8];
    model.extend(len_field(7, &graph));
    model
}
