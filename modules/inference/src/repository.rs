//! Reading a Triton-style model repository from disk:
//! `<root>/<model>/<version>/<model file>` plus `<root>/<model>/config.toml`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{InferenceError, Result};

/// Checks a model name: not empty, at most 200 bytes, letters, digits and
/// `_ - .`, not starting with `.` (so no traversal and no hidden files).
pub fn validate_model_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(InferenceError::InvalidInput(format!(
            "invalid model name '{}': use 1-200 letters, digits, '_', '-' or '.', not starting with '.'",
            name.escape_debug()
        )))
    }
}

/// Size and modification time of a file, to notice changes while polling.
pub type FileStamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// What identifies the contents of one version directory and its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStamp {
    /// The model file's stamp.
    pub model_file: FileStamp,
    /// The model's config.toml (or config.pbtxt) stamp: a config change
    /// reloads every version.
    pub config: FileStamp,
}

/// The model directories of the repository, sorted, hidden ones skipped.
pub fn list_models(root: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(root).map_err(|e| {
        InferenceError::InvalidModel(format!(
            "cannot read model repository {}: {e}",
            root.display()
        ))
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| validate_model_name(name).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The numeric version directories of a model that hold the model file.
pub fn list_versions(model_dir: &Path, model_filename: &str) -> Vec<i64> {
    let mut versions = list_version_dirs(model_dir);
    versions.retain(|v| model_dir.join(v.to_string()).join(model_filename).is_file());
    versions
}

/// The numeric version directories of a model, sorted, whatever they hold
/// (an ensemble's are empty).
pub fn list_version_dirs(model_dir: &Path) -> Vec<i64> {
    let Ok(entries) = std::fs::read_dir(model_dir) else {
        return Vec::new();
    };
    let mut versions: Vec<i64> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| name.parse::<i64>().ok().filter(|v| *v >= 0))
        .collect();
    versions.sort_unstable();
    versions
}

/// Path of a version's model file.
pub fn model_file(model_dir: &Path, version: i64, model_filename: &str) -> PathBuf {
    model_dir.join(version.to_string()).join(model_filename)
}

/// The stamp of one version.
pub fn version_stamp(model_dir: &Path, version: i64, model_filename: &str) -> VersionStamp {
    VersionStamp {
        model_file: stamp(&model_file(model_dir, version, model_filename)),
        config: stamp(&model_dir.join("config.toml"))
            .or_else(|| stamp(&model_dir.join("config.pbtxt"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_traversal_or_odd_characters_are_refused() {
        for bad in [
            "",
            "..",
            "../etc",
            "a/b",
            ".hidden",
            "a\0b",
            "a b",
            &"x".repeat(201),
        ] {
            assert!(validate_model_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["resnet50", "bert-base_v2", "m.1"] {
            assert!(validate_model_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn versions_need_the_model_file() {
        let dir = std::env::temp_dir().join(format!("mlserve-repo-test-{}", std::process::id()));
        let model = dir.join("m");
        std::fs::create_dir_all(model.join("1")).unwrap();
        std::fs::create_dir_all(model.join("2")).unwrap();
        std::fs::create_dir_all(model.join("notaversion")).unwrap();
        std::fs::write(model.join("1").join("model.onnx"), b"x").unwrap();
        assert_eq!(list_versions(&model, "model.onnx"), vec![1]);
        assert_eq!(list_models(&dir).unwrap(), vec!["m".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
