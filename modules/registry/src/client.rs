//! A client of the registry's REST API, for `mlserve models ...`: uploads
//! and downloads stream from and to disk (never a whole file in memory) and
//! report progress; downloads are verified against sha256 and size.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::upload::MODEL_FILE;

/// Called with the number of bytes just sent or received.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A file to push: its path inside the version and on disk.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// Path inside the version (`/`-separated).
    pub path: String,
    /// Where it is on disk.
    pub source: PathBuf,
    /// Its size.
    pub size: u64,
}

/// The registry at `base` (e.g. `http://127.0.0.1:8000`).
#[derive(Debug, Clone)]
pub struct RestClient {
    base: String,
    http: reqwest::Client,
}

/// A failed call: the server's `{"error": ...}` message with its status, or
/// the transport error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("registry answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The request failed on the way.
    #[error("registry request failed")]
    Transport(#[from] reqwest::Error),
    /// Local files.
    #[error("{0}")]
    Io(String),
}

type Result<T> = std::result::Result<T, ClientError>;

fn io(context: &str, path: &Path, err: std::io::Error) -> ClientError {
    ClientError::Io(format!("{context} '{}': {err}", path.display()))
}

/// The files to push from `source`: every regular file under a directory
/// (symlinks refused), or one `.onnx` file uploaded as `model.onnx`.
pub fn collect_files(source: &Path) -> Result<Vec<LocalFile>> {
    let meta = std::fs::symlink_metadata(source).map_err(|e| io("cannot read", source, e))?;
    if meta.is_file() {
        return Ok(vec![LocalFile {
            path: MODEL_FILE.into(),
            source: source.to_path_buf(),
            size: meta.len(),
        }]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(source.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| io("cannot list", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io("cannot list", &dir, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = format!("{prefix}{name}");
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io("cannot read", &path, e))?;
            if meta.file_type().is_symlink() {
                return Err(ClientError::Io(format!(
                    "'{}' is a symlink: a version holds regular files only",
                    path.display()
                )));
            } else if meta.is_dir() {
                stack.push((path, format!("{relative}/")));
            } else {
                out.push(LocalFile {
                    path: relative,
                    source: path,
                    size: meta.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The sha256 of a file, read on a blocking thread.
pub async fn sha256_file(path: PathBuf) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| io("cannot open", &path, e))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| io("cannot read", &path, e))?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| ClientError::Io(e.to_string()))?
}

/// The chunks of a file on disk, counted by `progress`.
fn file_stream(
    path: PathBuf,
    progress: Progress,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    stream::unfold(None, move |file: Option<tokio::fs::File>| {
        let (path, progress) = (path.clone(), progress.clone());
        async move {
            let mut file = match file {
                Some(file) => file,
                None => match tokio::fs::File::open(&path).await {
                    Ok(file) => file,
                    Err(err) => return Some((Err(err), None)),
                },
            };
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    progress(n as u64);
                    Some((Ok(Bytes::from(buf)), Some(file)))
                }
                Err(err) => Some((Err(err), None)),
            }
        }
    })
}

impl RestClient {
    /// A client of the registry at `base`.
    pub fn new(base: &str) -> RestClient {
        RestClient::with_internal_token(base, None)
    }

    /// A client of the registry at `base` that sends the split deployment's
    /// internal token (`server.internal_token`) with every call.
    pub fn with_internal_token(base: &str, token: Option<&str>) -> RestClient {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = token.and_then(|t| reqwest::header::HeaderValue::from_str(t).ok()) {
            headers.insert(mlserve_proto::internal_auth::INTERNAL_TOKEN_HEADER, value);
        }
        RestClient {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/registry/{path}", self.base)
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        Err(ClientError::Status {
            status: status.as_u16(),
            message,
        })
    }

    async fn json(request: reqwest::RequestBuilder) -> Result<Value> {
        let response = Self::check(request.send().await?).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        Ok(response.json().await?)
    }

    /// `GET` of a registry path, as JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        Self::json(self.http.get(self.url(path))).await
    }

    /// Every item of a paginated list (`key` names the array).
    pub async fn get_all(&self, path: &str, key: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page = self.get(&format!("{path}{sep}page_token={token}")).await?;
            out.extend(page[key].as_array().cloned().unwrap_or_default());
            token = page["next_page_token"].as_str().unwrap_or("").to_string();
            if token.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Registers a model.
    pub async fn create_model(&self, name: &str, description: &str) -> Result<Value> {
        let body = json!({"name": name, "description": description});
        Self::json(self.http.post(self.url("models")).json(&body)).await
    }

    /// Points `alias` at `version`.
    pub async fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<Value> {
        let url = self.url(&format!("models/{name}/aliases/{alias}"));
        Self::json(self.http.put(url).json(&json!({ "version": version }))).await
    }

    /// Uploads `files` as a new version of `name` (multipart, streamed, with
    /// each file's sha256 computed here first so the server verifies it).
    pub async fn push(
        &self,
        name: &str,
        files: &[LocalFile],
        mut metadata: Value,
        progress: Progress,
    ) -> Result<Value> {
        let mut digests = serde_json::Map::new();
        for file in files {
            let sha = sha256_file(file.source.clone()).await?;
            digests.insert(file.path.clone(), Value::String(sha));
        }
        metadata["sha256"] = Value::Object(digests);
        let boundary = format!("mlserve-{:016x}", fastrand::u64(..));
        let mut parts: Vec<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>> =
            Vec::new();
        let text = |s: String| stream::once(async move { Ok(Bytes::from(s)) }).boxed();
        let metadata_part = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n{metadata}\r\n"
        );
        let mut length = metadata_part.len() as u64;
        parts.push(text(metadata_part));
        for file in files {
            let head = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                file.path.replace('"', "%22")
            );
            length += head.len() as u64 + file.size + 2;
            parts.push(text(head));
            parts.push(file_stream(file.source.clone(), progress.clone()).boxed());
            parts.push(text("\r\n".into()));
        }
        let tail = format!("--{boundary}--\r\n");
        length += tail.len() as u64;
        parts.push(text(tail));
        let body = reqwest::Body::wrap_stream(stream::iter(parts).flatten());
        let request = self
            .http
            .post(self.url(&format!("models/{name}/versions")))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(body);
        Self::json(request).await
    }

    /// Downloads one file of a version to `dest`, verifying its sha256 and
    /// size before it takes its final name.
    pub async fn download(
        &self,
        name: &str,
        version: u64,
        file: &Value,
        dest: &Path,
        progress: Progress,
    ) -> Result<()> {
        let path = file["path"].as_str().unwrap_or_default();
        let url = self.url(&format!("models/{name}/versions/{version}/files/{path}"));
        let response = Self::check(self.http.get(url).send().await?).await?;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io("cannot create", dir, e))?;
        }
        let mut partial = dest.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let written = write_verified(response, &partial, path, file, progress).await;
        if let Err(err) = written {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err);
        }
        tokio::fs::rename(&partial, dest)
            .await
            .map_err(|e| io("cannot rename", &partial, e))
    }
}

/// Streams a download into `partial`, checking its sha256 and size.
async fn write_verified(
    response: reqwest::Response,
    partial: &Path,
    path: &str,
    file: &Value,
    progress: Progress,
) -> Result<()> {
    let expected = file["sha256"].as_str().unwrap_or_default();
    let file_out = tokio::fs::File::create(partial)
        .await
        .map_err(|e| io("cannot create", partial, e))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file_out);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| io("cannot write", partial, e))?;
        progress(chunk.len() as u64);
    }
    out.flush()
        .await
        .map_err(|e| io("cannot write", partial, e))?;
    let actual = hex::encode(hasher.finalize());
    if actual != expected || Some(size) != file["size"].as_u64() {
        return Err(ClientError::Io(format!(
            "'{path}' arrived corrupted: sha256 {actual} ({size} bytes), expected {expected}"
        )));
    }
    Ok(())
}
