//! Moving files between a step's directory and the object store: output
//! artifacts and logs up (with their sha256 and size), input artifacts down.

use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use mlserve_registry::artifacts::Artifacts;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes read per chunk.
const CHUNK: usize = 1 << 20;

/// The object key of a file a step instance produced.
pub fn key(run: &str, instance_dir: &str, relative: &str) -> String {
    format!("runs/{run}/{instance_dir}/{relative}")
}

/// Lowercase hex sha256 of a file.
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Uploads `path` to `key`; returns its sha256 and size.
pub async fn upload(
    artifacts: &Artifacts,
    path: &Path,
    key: &str,
) -> Result<(String, i64), String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let mut writer = artifacts.writer(key).await.map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut size = 0i64;
    loop {
        let mut buffer = vec![0u8; CHUNK];
        let n = match file.read(&mut buffer).await {
            Ok(n) => n,
            Err(e) => {
                writer.abort().await;
                return Err(format!("cannot read '{}': {e}", path.display()));
            }
        };
        if n == 0 {
            break;
        }
        buffer.truncate(n);
        hasher.update(&buffer);
        size += n as i64;
        if let Err(e) = writer.write(Bytes::from(buffer)).await {
            writer.abort().await;
            return Err(e.to_string());
        }
    }
    writer.finish().await.map_err(|e| e.to_string())?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// Downloads `key` into `path` (its directories created), through a
/// temporary file so a partial download is never seen at `path`.
pub async fn download(artifacts: &Artifacts, key: &str, path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot create '{}': {e}", parent.display()))?;
    }
    let partial = path.with_extension("partial");
    let mut stream = artifacts
        .read(key)
        .await
        .map_err(|e| format!("cannot read artifact '{key}': {e}"))?;
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| format!("cannot write '{}': {e}", partial.display()))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading artifact '{key}': {e}"))?;
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("writing '{}': {e}", partial.display()))?;
    }
    file.flush().await.map_err(|e| e.to_string())?;
    drop(file);
    tokio::fs::rename(&partial, path)
        .await
        .map_err(|e| format!("cannot move '{}' into place: {e}", path.display()))
}

/// Reads an output parameter's file: its text without the trailing newline.
pub async fn read_parameter(path: &Path) -> Result<String, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Reads a metrics file: a JSON object of names to numbers.
pub async fn read_metrics(path: &Path) -> Result<Vec<(String, f64)>, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read metrics '{}': {e}", path.display()))?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| format!("metrics '{}' is not a JSON object: {e}", path.display()))?;
    map.into_iter()
        .map(|(name, value)| {
            value
                .as_f64()
                .filter(|v| v.is_finite())
                .map(|v| (name.clone(), v))
                .ok_or_else(|| format!("metric '{name}' is not a finite number"))
        })
        .collect()
}
