//! What names, aliases, tag keys and file paths may look like.
//!
//! - Model names and aliases: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` (so never
//!   blank, never `.` or `..`, never a path separator).
//! - Tag keys: the same character set, up to 128 characters; values up to
//!   4096 characters.
//! - File paths inside a version: relative, `/`-separated, up to 8 levels,
//!   each component `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` or starting with a
//!   dot but not `.`/`..`; no absolute paths, no backslashes, no traversal.

use crate::error::{RegistryError, Result};

/// Longest model name, alias or tag key.
pub const MAX_NAME_LEN: usize = 128;
/// Longest tag value.
pub const MAX_TAG_VALUE_LEN: usize = 4096;
/// Deepest file path inside a version.
pub const MAX_PATH_DEPTH: usize = 8;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = match chars.next() {
        Some(first) => {
            first.is_ascii_alphanumeric() && name.len() <= MAX_NAME_LEN && chars.all(is_name_char)
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "invalid {kind} '{}': use 1 to {MAX_NAME_LEN} characters of [A-Za-z0-9._-], starting with a letter or digit",
            name.escape_debug()
        )))
    }
}

/// Checks a registered model name.
pub fn model_name(name: &str) -> Result<()> {
    check_name("model name", name)
}

/// Checks an alias name. Aliases that look like version numbers are refused
/// so `models/x/aliases/3` can never be mistaken for version 3.
pub fn alias_name(alias: &str) -> Result<()> {
    check_name("alias", alias)?;
    if alias.chars().all(|c| c.is_ascii_digit()) {
        return Err(RegistryError::Invalid(format!(
            "invalid alias '{alias}': an alias cannot be a number"
        )));
    }
    Ok(())
}

/// Checks a tag key and value.
pub fn tag(key: &str, value: &str) -> Result<()> {
    check_name("tag key", key)?;
    if value.len() > MAX_TAG_VALUE_LEN {
        return Err(RegistryError::Invalid(format!(
            "tag '{key}' has a value longer than {MAX_TAG_VALUE_LEN} bytes"
        )));
    }
    Ok(())
}

/// Checks a file path inside a version and returns it unchanged.
pub fn file_path(path: &str) -> Result<()> {
    let refuse = |why: &str| {
        Err(RegistryError::Invalid(format!(
            "invalid file path '{}': {why}",
            path.escape_debug()
        )))
    };
    if path.is_empty() {
        return refuse("empty");
    }
    if path.starts_with('/') || path.contains('\\') || path.contains(':') {
        return refuse("paths are relative, '/'-separated, without drive letters");
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_PATH_DEPTH {
        return refuse("too deep");
    }
    for part in parts {
        if part.is_empty() || part == "." || part == ".." {
            return refuse("no empty, '.' or '..' components (path traversal)");
        }
        if part.len() > MAX_NAME_LEN || !part.chars().all(is_name_char) {
            return refuse("components use 1 to 128 characters of [A-Za-z0-9._-]");
        }
    }
    Ok(())
}

/// Resolves `location` (an ONNX external-data location) relative to the
/// directory of `model_path`; `None` when it escapes the version.
pub fn resolve_relative(model_path: &str, location: &str) -> Option<String> {
    if location.is_empty()
        || location.starts_with('/')
        || location.contains('\\')
        || location.contains(':')
    {
        return None;
    }
    let mut parts: Vec<&str> = model_path.split('/').collect();
    parts.pop();
    for part in location.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    file_path(&joined).ok().map(|_| joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_charset() {
        for ok in ["resnet50", "a", "my-model_v2.1", &"x".repeat(128)] {
            model_name(ok).unwrap();
        }
        for bad in [
            "",
            " ",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "a\\b",
            "a b",
            "é",
            &"x".repeat(129),
            "../etc",
            "a\0",
        ] {
            assert!(model_name(bad).is_err(), "{bad:?} accepted");
        }
        alias_name("production").unwrap();
        assert!(alias_name("3").is_err());
    }

    #[test]
    fn paths_stay_inside_the_version() {
        for ok in ["model.onnx", "tokenizer/vocab.txt", ".config", "a/b/c.bin"] {
            file_path(ok).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "C:x",
            "a\\b",
            "a/b/c/d/e/f/g/h/i",
        ] {
            assert!(file_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn external_data_resolves_relative_to_the_model() {
        assert_eq!(
            resolve_relative("model.onnx", "weights.bin").as_deref(),
            Some("weights.bin")
        );
        assert_eq!(
            resolve_relative("sub/model.onnx", "../weights.bin").as_deref(),
            Some("weights.bin")
        );
        assert_eq!(resolve_relative("model.onnx", "../weights.bin"), None);
        assert_eq!(resolve_relative("model.onnx", "/etc/passwd"), None);
        assert_eq!(resolve_relative("model.onnx", "C:\\w.bin"), None);
    }
}
