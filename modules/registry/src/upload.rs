//! Receiving a version's files: each file streams into the object store
//! under the version's immutable prefix while it is hashed and inspected;
//! nothing here makes the version visible (the caller commits it).

use std::collections::{HashMap, HashSet};

use mlserve_proto::registry::{pb, UploadItem, UploadStream};
use tokio_stream::StreamExt;

use crate::artifacts::{Artifacts, ObjectWriter};
use crate::error::{RegistryError, Result};
use crate::inspect::{self, FileReport, Inspector};
use crate::names;
use crate::store::FileRow;

/// The file every version must contain (Triton's default model file name).
pub const MODEL_FILE: &str = "model.onnx";

/// Limits of one upload.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of all files.
    pub max_bytes: u64,
    /// Number of files.
    pub max_files: usize,
}

struct OpenFile {
    header: pb::FileHeader,
    writer: ObjectWriter,
    inspector: Inspector,
}

/// One upload in progress.
pub struct Upload<'a> {
    artifacts: &'a Artifacts,
    prefix: String,
    limits: Limits,
    total: u64,
    open: Option<OpenFile>,
    done: Vec<(FileRow, FileReport)>,
    paths: HashSet<String>,
}

fn check_expected_sha(header: &pb::FileHeader) -> Result<()> {
    let sha = &header.sha256;
    if sha.is_empty() || (sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit())) {
        return Ok(());
    }
    Err(RegistryError::Invalid(format!(
        "the sha256 given for '{}' is not 64 hex digits",
        header.path
    )))
}

impl<'a> Upload<'a> {
    /// An upload of files under `prefix` (`models/<name>/upload/<id>`).
    pub fn new(artifacts: &'a Artifacts, prefix: String, limits: Limits) -> Upload<'a> {
        Upload {
            artifacts,
            prefix,
            limits,
            total: 0,
            open: None,
            done: Vec::new(),
            paths: HashSet::new(),
        }
    }

    /// Receives every file of `stream`, then checks the version as a whole.
    /// On error the caller must [`abort`](Upload::abort).
    pub async fn receive(&mut self, mut stream: UploadStream) -> Result<Vec<FileRow>> {
        while let Some(item) = stream.next().await {
            match item.map_err(RegistryError::Upstream)? {
                UploadItem::File(header) => {
                    self.close().await?;
                    self.open(header).await?;
                }
                UploadItem::Chunk(chunk) => {
                    self.total += chunk.len() as u64;
                    if self.total > self.limits.max_bytes {
                        return Err(RegistryError::TooLarge {
                            limit: self.limits.max_bytes,
                        });
                    }
                    let Some(open) = self.open.as_mut() else {
                        return Err(RegistryError::Invalid(
                            "file bytes arrived before any file header".into(),
                        ));
                    };
                    open.inspector.feed(chunk.clone()).await?;
                    open.writer.write(chunk).await?;
                }
            }
        }
        self.close().await?;
        self.check_version()?;
        Ok(self.done.iter().map(|(row, _)| row.clone()).collect())
    }

    async fn open(&mut self, header: pb::FileHeader) -> Result<()> {
        names::file_path(&header.path)?;
        inspect::check_name(&header.path)?;
        check_expected_sha(&header)?;
        if !self.paths.insert(header.path.clone()) {
            return Err(RegistryError::Invalid(format!(
                "file '{}' appears twice in the upload",
                header.path
            )));
        }
        if self.paths.len() > self.limits.max_files {
            return Err(RegistryError::Invalid(format!(
                "a version holds at most {} files",
                self.limits.max_files
            )));
        }
        let key = format!("{}/{}", self.prefix, header.path);
        let writer = self.artifacts.writer(&key).await?;
        let inspector = Inspector::start(header.path.clone());
        self.open = Some(OpenFile {
            header,
            writer,
            inspector,
        });
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let report = match open.inspector.finish().await {
            Ok(report) => report,
            Err(err) => {
                open.writer.abort().await;
                return Err(err);
            }
        };
        let expected = open.header.sha256.to_ascii_lowercase();
        if !expected.is_empty() && expected != report.sha256 {
            open.writer.abort().await;
            return Err(RegistryError::ChecksumMismatch {
                path: open.header.path,
                expected,
                actual: report.sha256,
            });
        }
        open.writer.finish().await?;
        let row = FileRow {
            object_key: format!("{}/{}", self.prefix, open.header.path),
            path: open.header.path,
            sha256: report.sha256.clone(),
            size: report.size,
        };
        self.done.push((row, report));
        Ok(())
    }

    /// The version as a whole: `model.onnx` present, and every external-data
    /// location of every ONNX file inside the version and uploaded.
    fn check_version(&self) -> Result<()> {
        if !self.paths.contains(MODEL_FILE) {
            return Err(RegistryError::Invalid(format!(
                "a version must contain '{MODEL_FILE}' at its root"
            )));
        }
        let sizes: HashMap<&str, u64> = self
            .done
            .iter()
            .map(|(row, _)| (row.path.as_str(), row.size))
            .collect();
        for (row, report) in &self.done {
            let Some(onnx) = &report.onnx else { continue };
            for location in &onnx.external_locations {
                let Some(resolved) = names::resolve_relative(&row.path, location) else {
                    return Err(RegistryError::Refused(format!(
                        "file '{}' refused: external data location '{}' escapes the version (no '..', absolute paths or drive letters)",
                        row.path,
                        location.escape_debug()
                    )));
                };
                if !sizes.contains_key(resolved.as_str()) {
                    return Err(RegistryError::Invalid(format!(
                        "file '{}' references external data '{resolved}', which is not part of the upload",
                        row.path
                    )));
                }
            }
        }
        Ok(())
    }

    /// Abandons the file being written; finished objects are deleted by the
    /// caller (or the collector).
    pub async fn abort(&mut self) {
        if let Some(open) = self.open.take() {
            drop(open.inspector);
            open.writer.abort().await;
        }
    }
}
