//! Embeds the web console: every file under the repository's `console/`
//! folder becomes an entry of `FILES` (path, bytes) in
//! `$OUT_DIR/console_files.rs`, read by `src/console.rs`. Cargo reruns this
//! when anything under the folder changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.join("../../console");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    if root.is_dir() {
        collect(&root, &root, &mut files);
    }
    files.sort();
    let mut out =
        String::from("/// Every file of the console: its path under `console/`, its bytes.\n");
    out.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for (relative, absolute) in files {
        writeln!(out, "    ({relative:?}, include_bytes!({absolute:?})),").expect("a string");
    }
    out.push_str("];\n");
    let target = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(target.join("console_files.rs"), out).expect("OUT_DIR is writable");
}

/// Every regular file under `dir` (hidden ones left out), as its
/// `/`-separated path relative to `root` and its absolute path.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let entries = std::fs::read_dir(dir).expect("the console folder is readable");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.is_file() {
            let relative = path
                .strip_prefix(root)
                .expect("under the root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let absolute = path.canonicalize().expect("an existing file");
            files.push((relative, absolute.to_string_lossy().into_owned()));
        }
    }
}
