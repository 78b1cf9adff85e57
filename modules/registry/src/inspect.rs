//! What a version may contain: each uploaded file is hashed, sized and
//! sniffed while it streams (on a blocking thread, never a tokio worker), and
//! refused when it is a pickle, an executable, a script or an archive, or an
//! `.onnx` file that does not parse.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{RegistryError, Result};
use crate::onnx::{self, OnnxSummary};

/// Bytes kept from the start of each file for sniffing.
const HEAD_BYTES: usize = 512;

/// Chunks in flight between the upload and the inspecting thread.
const CHANNEL_CHUNKS: usize = 4;

/// What inspecting one file found.
#[derive(Debug)]
pub struct FileReport {
    /// Lowercase hex sha256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The ONNX walk's result for `.onnx` files.
    pub onnx: Option<OnnxSummary>,
}

const PICKLE_EXTENSIONS: &[&str] = &["pkl", "pickle", "joblib", "pt", "pth", "ckpt", "pyc"];
const EXECUTABLE_EXTENSIONS: &[&str] = &[
    "exe", "dll", "so", "dylib", "sh", "bash", "bat", "cmd", "ps1", "py", "com", "msi", "bin.exe",
];
const ARCHIVE_EXTENSIONS: &[&str] = &[
    "tar", "tgz", "gz", "zip", "bz2", "xz", "7z", "zst", "rar", "whl", "egg", "jar",
];

fn refused(path: &str, why: &str) -> RegistryError {
    RegistryError::Refused(format!("file '{path}' refused: {why}"))
}

/// Refuses a file by its name alone (before any byte is stored).
pub fn check_name(path: &str) -> Result<()> {
    let lower = path.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if PICKLE_EXTENSIONS.contains(&ext) {
        return Err(refused(path, "pickle files can execute code when loaded"));
    }
    if EXECUTABLE_EXTENSIONS.contains(&ext) {
        return Err(refused(
            path,
            "executables and scripts are not model artifacts",
        ));
    }
    if ARCHIVE_EXTENSIONS.contains(&ext) {
        return Err(refused(
            path,
            "archives are not accepted: upload the files of the version one by one",
        ));
    }
    Ok(())
}

/// Refuses a file by its first bytes.
pub fn check_head(path: &str, head: &[u8]) -> Result<()> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Err(refused(path, "pickle data can execute code when loaded"));
    }
    if starts(b"\x7fELF") {
        return Err(refused(path, "ELF executables are not model artifacts"));
    }
    if starts(b"MZ") && head.len() >= 0x40 {
        let at = u32::from_le_bytes([head[0x3c], head[0x3d], head[0x3e], head[0x3f]]) as usize;
        if head.get(at..at + 4) == Some(b"PE\0\0".as_slice()) {
            return Err(refused(path, "Windows executables are not model artifacts"));
        }
    }
    for magic in [
        b"\xfe\xed\xfa\xce",
        b"\xfe\xed\xfa\xcf",
        b"\xce\xfa\xed\xfe",
        b"\xcf\xfa\xed\xfe",
        b"\xca\xfe\xba\xbe",
    ] {
        if starts(magic) {
            return Err(refused(path, "Mach-O executables are not model artifacts"));
        }
    }
    if starts(b"#!") {
        return Err(refused(path, "scripts (shebang) are not model artifacts"));
    }
    let archive = starts(b"PK\x03\x04")
        || starts(b"PK\x05\x06")
        || starts(b"\x1f\x8b")
        || starts(b"BZh")
        || starts(b"\xfd7zXZ\0")
        || starts(b"\x28\xb5\x2f\xfd")
        || starts(b"7z\xbc\xaf\x27\x1c")
        || starts(b"Rar!")
        || head.get(257..262) == Some(b"ustar".as_slice());
    if archive {
        return Err(refused(
            path,
            "archives are not accepted: upload the files of the version one by one",
        ));
    }
    Ok(())
}

/// Reads chunks from the upload, hashing, counting and keeping the head.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.current.has_remaining() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let bytes = self.current.split_to(n);
        self.hasher.update(&bytes);
        self.size += n as u64;
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(n);
            self.head.extend_from_slice(&bytes[..take]);
        }
        buf[..n].copy_from_slice(&bytes);
        Ok(n)
    }
}

/// Inspects one file as its chunks arrive.
pub struct Inspector {
    tx: Option<mpsc::Sender<Bytes>>,
    task: JoinHandle<Result<FileReport>>,
}

impl Inspector {
    /// Starts inspecting the file at `path` (already name-checked).
    pub fn start(path: String) -> Inspector {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let task = tokio::task::spawn_blocking(move || inspect(path, rx));
        Inspector { tx: Some(tx), task }
    }

    /// Hands over the next chunk; an error means the file was refused.
    pub async fn feed(&mut self, chunk: Bytes) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped early: it refused the file.
        self.tx = None;
        match (&mut self.task).await {
            Ok(Err(err)) => Err(err),
            Ok(Ok(_)) => Err(RegistryError::Internal("inspector ended early".into())),
            Err(err) => Err(RegistryError::Internal(format!("inspector failed: {err}"))),
        }
    }

    /// Ends the file and returns what was found.
    pub async fn finish(mut self) -> Result<FileReport> {
        self.tx = None;
        match self.task.await {
            Ok(result) => result,
            Err(err) => Err(RegistryError::Internal(format!("inspector failed: {err}"))),
        }
    }
}

fn inspect(path: String, rx: mpsc::Receiver<Bytes>) -> Result<FileReport> {
    let mut reader = ChannelReader {
        rx,
        current: Bytes::new(),
        hasher: Sha256::new(),
        size: 0,
        head: Vec::with_capacity(HEAD_BYTES),
    };
    let onnx = if path.to_ascii_lowercase().ends_with(".onnx") {
        let summary = onnx::walk(&mut reader).map_err(|e| refused(&path, &e.to_string()))?;
        Some(summary)
    } else {
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        None
    };
    check_head(&path, &reader.head)?;
    Ok(FileReport {
        sha256: hex::encode(reader.hasher.finalize()),
        size: reader.size,
        onnx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_names_are_refused() {
        for bad in [
            "model.pkl",
            "x.joblib",
            "a/b.PT",
            "run.sh",
            "lib.so",
            "m.tar",
            "m.zip",
            "x.py",
        ] {
            assert!(check_name(bad).is_err(), "{bad} accepted");
        }
        for ok in [
            "model.onnx",
            "weights.bin",
            "config.toml",
            "tokenizer.json",
            "labels.txt",
        ] {
            check_name(ok).unwrap();
        }
    }

    #[test]
    fn dangerous_bytes_are_refused_whatever_the_name() {
        let mut pe = vec![0u8; 256];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        for bad in [
            b"\x80\x04\x95pickle".to_vec(),
            b"\x7fELF\x02\x01".to_vec(),
            pe,
            b"\xcf\xfa\xed\xfe....".to_vec(),
            b"#!/bin/sh\nrm -rf /".to_vec(),
            b"PK\x03\x04zip".to_vec(),
            b"\x1f\x8b\x08gzip".to_vec(),
            tar,
        ] {
            let err = check_head("labels.txt", &bad).unwrap_err();
            assert!(err.to_string().contains("labels.txt"), "{err}");
        }
        check_head("labels.txt", b"cat\ndog\n").unwrap();
        check_head("w.bin", b"MZ\0\0 just floats").unwrap();
    }

    #[tokio::test]
    async fn inspecting_hashes_sizes_and_refuses_while_streaming() {
        let mut inspector = Inspector::start("labels.txt".into());
        inspector.feed(Bytes::from_static(b"cat\n")).await.unwrap();
        inspector.feed(Bytes::from_static(b"dog\n")).await.unwrap();
        let report = inspector.finish().await.unwrap();
        assert_eq!(report.size, 8);
        assert_eq!(report.sha256, hex::encode(Sha256::digest(b"cat\ndog\n")));

        let mut inspector = Inspector::start("model.onnx".into());
        let mut result = Ok(());
        for _ in 0..64 {
            result = inspector.feed(Bytes::from_static(b"garbage garbage")).await;
            if result.is_err() {
                break;
            }
        }
        let err = match result {
            Err(err) => err,
            Ok(()) => inspector.finish().await.unwrap_err(),
        };
        assert!(err.to_string().contains("not a valid ONNX model"), "{err}");
    }
}
