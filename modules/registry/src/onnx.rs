//! A minimal, streaming walk of an ONNX `ModelProto`: it checks the protobuf
//! wire format of the whole file and collects every external-data location
//! of the graph's initializers (subgraphs and sparse initializers included),
//! reading the bytes once, in order, without holding the file in memory.
//!
//! Field numbers (onnx.proto): ModelProto.graph = 7; GraphProto.node = 1,
//! .initializer = 5, .sparse_initializer = 15; NodeProto.attribute = 5;
//! AttributeProto.g = 6, .graphs = 11, .t = 5, .tensors = 10,
//! .sparse_tensor = 22, .sparse_tensors = 23; TensorProto.external_data = 13;
//! SparseTensorProto.values = 1, .indices = 2; StringStringEntryProto.key =
//! 1, .value = 2.

use std::io::{self, Read};

/// Deepest nesting of messages followed (subgraphs inside subgraphs...).
const MAX_DEPTH: usize = 64;

/// What the walk found in a well-formed model.
#[derive(Debug, Default, PartialEq)]
pub struct OnnxSummary {
    /// `ModelProto.ir_version`.
    pub ir_version: u64,
    /// Every `location` of an external-data entry, as written in the file.
    pub external_locations: Vec<String>,
}

/// Why a file is not a readable ONNX model.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// Not a valid protobuf `ModelProto`.
    #[error("not a valid ONNX model: {0}")]
    Malformed(String),
    /// Reading the bytes failed.
    #[error("reading the model failed: {0}")]
    Io(#[from] io::Error),
}

fn malformed<T>(why: impl Into<String>) -> Result<T, OnnxError> {
    Err(OnnxError::Malformed(why.into()))
}

/// What a length-delimited field holds, as far as this walk cares.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Model,
    Graph,
    Node,
    Attribute,
    Tensor,
    Sparse,
    Entry,
}

fn child(kind: Kind, field: u64) -> Option<Kind> {
    match (kind, field) {
        (Kind::Model, 7) => Some(Kind::Graph),
        (Kind::Graph, 1) => Some(Kind::Node),
        (Kind::Graph, 5) => Some(Kind::Tensor),
        (Kind::Graph, 15) => Some(Kind::Sparse),
        (Kind::Node, 5) => Some(Kind::Attribute),
        (Kind::Attribute, 6 | 11) => Some(Kind::Graph),
        (Kind::Attribute, 5 | 10) => Some(Kind::Tensor),
        (Kind::Attribute, 22 | 23) => Some(Kind::Sparse),
        (Kind::Sparse, 1 | 2) => Some(Kind::Tensor),
        (Kind::Tensor, 13) => Some(Kind::Entry),
        _ => None,
    }
}

struct Walker<R> {
    reader: R,
    pos: u64,
    summary: OnnxSummary,
    saw_graph: bool,
}

impl<R: Read> Walker<R> {
    fn byte(&mut self) -> Result<Option<u8>, OnnxError> {
        let mut b = [0u8; 1];
        loop {
            match self.reader.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.pos += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn varint(&mut self) -> Result<u64, OnnxError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(b) = self.byte()? else {
                return malformed("truncated varint");
            };
            if shift == 63 && b > 1 {
                return malformed("varint overflows 64 bits");
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        malformed("varint longer than 10 bytes")
    }

    fn skip(&mut self, n: u64) -> Result<(), OnnxError> {
        let copied = io::copy(&mut (&mut self.reader).take(n), &mut io::sink())?;
        self.pos += copied;
        if copied < n {
            return malformed("truncated field");
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, OnnxError> {
        if n > 1 << 20 {
            return malformed("string field over 1 MiB");
        }
        let mut buf = vec![0u8; n as usize];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => OnnxError::Malformed("truncated field".into()),
                _ => OnnxError::Io(e),
            })?;
        self.pos += n;
        Ok(buf)
    }

    /// Walks one message of `kind` ending at `end` (`None`: end of input).
    fn message(&mut self, kind: Kind, end: Option<u64>, depth: usize) -> Result<(), OnnxError> {
        if depth > MAX_DEPTH {
            return malformed("messages nested too deeply");
        }
        let (mut key, mut value) = (None, None);
        loop {
            if end.is_some_and(|end| self.pos >= end) {
                break;
            }
            let tag = if end.is_none() {
                // At the top level the end of input ends the message.
                match self.byte()? {
                    None => break,
                    Some(b) if b & 0x80 == 0 => u64::from(b),
                    Some(b) => {
                        let rest = self.varint()?;
                        u64::from(b & 0x7f) | (rest << 7)
                    }
                }
            } else {
                self.varint()?
            };
            let (field, wire) = (tag >> 3, tag & 7);
            if field == 0 {
                return malformed("field number 0");
            }
            match wire {
                0 => {
                    let v = self.varint()?;
                    if kind == Kind::Model && field == 1 {
                        self.summary.ir_version = v;
                    }
                }
                1 => self.skip(8)?,
                5 => self.skip(4)?,
                2 => {
                    let len = self.varint()?;
                    let Some(field_end) = self.pos.checked_add(len) else {
                        return malformed("a field's length is out of range");
                    };
                    if end.is_some_and(|end| field_end > end) {
                        return malformed("a field runs past the end of its message");
                    }
                    match (kind, field, child(kind, field)) {
                        (Kind::Entry, 1, _) => key = Some(self.bytes(len)?),
                        (Kind::Entry, 2, _) => value = Some(self.bytes(len)?),
                        (_, _, Some(inner)) => {
                            if inner == Kind::Graph && kind == Kind::Model {
                                self.saw_graph = true;
                            }
                            self.message(inner, Some(field_end), depth + 1)?;
                        }
                        _ => self.skip(len)?,
                    }
                }
                _ => return malformed(format!("unsupported wire type {wire}")),
            }
        }
        if end.is_some_and(|end| self.pos != end) {
            return malformed("a message does not end where its length says");
        }
        if kind == Kind::Entry && key.as_deref() == Some(b"location".as_slice()) {
            let location = String::from_utf8(value.unwrap_or_default())
                .map_err(|_| OnnxError::Malformed("external data location is not UTF-8".into()))?;
            self.summary.external_locations.push(location);
        }
        Ok(())
    }
}

/// Walks a whole `ModelProto` from `reader`.
pub fn walk(reader: impl Read) -> Result<OnnxSummary, OnnxError> {
    let mut walker = Walker {
        reader,
        pos: 0,
        summary: OnnxSummary::default(),
        saw_graph: false,
    };
    walker.message(Kind::Model, None, 0)?;
    if !walker.saw_graph {
        return malformed("the model has no graph");
    }
    if walker.summary.ir_version == 0 {
        return malformed("the model has no ir_version");
    }
    Ok(walker.summary)
}

#[cfg(test)]
#[path = "onnx_tests.rs"]
mod tests;
