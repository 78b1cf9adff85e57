//! Running the repository's Python (.venv, made by scripts/setup.sh) from
//! the transform tests and the transform benchmark. Missing Python is a
//! failure, never a skip. Include it with `#[allow(dead_code)] #[path = ...]
//! mod support;`: each user takes a part.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The .venv interpreter; panics with the fix if it is missing.
pub fn python() -> PathBuf {
    let py = root().join(".venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/setup.sh first",
        py.display()
    );
    py
}

/// Runs a command to success and returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A fresh scratch directory of its own: tests running in parallel that
/// ask for the same `name` each get a different one.
pub fn scratch(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("mlserve-parity-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Writes the test images of scripts/reference/make_images.py into `dir`
/// and returns their paths.
pub fn make_images(dir: &Path) -> Vec<PathBuf> {
    let listing = run(Command::new(python())
        .arg(root().join("scripts/reference/make_images.py"))
        .arg(dir));
    let paths: Vec<PathBuf> = listing.lines().map(|n| dir.join(n)).collect();
    assert!(
        paths.len() >= 12,
        "expected the full image set, got {paths:?}"
    );
    paths
}

/// The real BERT WordPiece tokenizer.json of all-MiniLM-L6-v2, fetched by
/// scripts/models/bert.py into the cache if it is not there yet. Asked once
/// per process; bert.py's file lock makes concurrent processes share one fill.
pub fn minilm_tokenizer() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = run(Command::new(python())
            .current_dir(root().join("scripts"))
            .args(["-c", "from models import bert; print(bert.minilm_dir())"]));
        let dir = out.lines().last().unwrap_or_default().trim();
        let path = PathBuf::from(dir).join("tokenizer.json");
        assert!(
            path.is_file(),
            "{} missing (bert.py printed {out:?})",
            path.display()
        );
        path
    })
    .clone()
}
