//! Finding and loading `libonnxruntime.so` (the `load-dynamic` build of ort).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::{Environment, GlobalThreadPoolOptions};

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// The library file names tried in each directory, newest pin first.
const LIBRARY_NAMES: [&str; 2] = ["libonnxruntime.so.1.31.1", "libonnxruntime.so"];

/// Where the library is looked for, in order: the configured path,
/// `ORT_DYLIB_PATH`, next to the executable, the repository's `.onnxruntime/`
/// (found from the executable in `target/<profile>/`), `./.onnxruntime/`.
pub fn candidate_paths(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(path) = configured {
        paths.push(path.to_path_buf());
        return paths;
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        paths.push(PathBuf::from(path));
        return paths;
    }
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.clone());
        dirs.extend(
            exe_dir
                .ancestors()
                .skip(1)
                .take(3)
                .map(|d| d.join(".onnxruntime")),
        );
    }
    dirs.push(PathBuf::from(".onnxruntime"));
    for dir in dirs {
        for name in LIBRARY_NAMES {
            paths.push(dir.join(name));
        }
    }
    paths
}

/// Loads ONNX Runtime once and returns the process-wide environment. Its
/// global intra-op thread pool has `cpu_threads` threads (the caller
/// included) and is shared by every session that does not ask for its own, so
/// all model instances together never use more cores than that.
pub fn environment(
    configured: Option<&Path>,
    cpu_threads: usize,
) -> Result<&'static Environment, String> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let candidates = candidate_paths(configured);
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "cannot find libonnxruntime.so (tried: {}). Fix: run `bash scripts/setup.sh` in the mlserve \
             repository (it extracts the library from the pinned onnxruntime 1.31.1 wheel into .onnxruntime/), \
             or set ORT_DYLIB_PATH or inference.onnxruntime_library to the library's path",
            tried.join(", ")
        ));
    };
    // The library must be loaded before any other ort call, the pool options included.
    let builder = ort::init_from(path)
        .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
    let pool = GlobalThreadPoolOptions::default()
        .with_intra_threads(cpu_threads.max(1))
        .and_then(|p| p.with_inter_threads(1))
        .and_then(|p| p.with_spin_control(false))
        .map_err(|e| format!("cannot configure the ONNX Runtime thread pool: {e}"))?;
    let builder = builder
        .with_name("mlserve")
        .with_telemetry(false)
        .with_global_thread_pool(pool);
    let env = builder
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
    tracing::info!(library = %path.display(), cpu_threads, "onnx runtime loaded");
    Ok(ENVIRONMENT.get_or_init(|| env))
}
