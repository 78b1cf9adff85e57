//! The Open Inference Protocol tensor datatypes and their wire facts.

use std::fmt;
use std::str::FromStr;

use crate::pb;

/// A tensor element type as named on the wire (`"FP32"`, `"BYTES"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Boolean, one byte per element (0 or 1).
    Bool,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Unsigned 64-bit integer.
    Uint64,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// IEEE half precision.
    Fp16,
    /// IEEE single precision.
    Fp32,
    /// IEEE double precision.
    Fp64,
    /// bfloat16.
    Bf16,
    /// Variable-length byte strings; in raw form each element is a 4-byte
    /// little-endian length followed by the bytes.
    Bytes,
}

impl DataType {
    /// Every datatype, in the protocol's order.
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bf16,
        DataType::Bytes,
    ];

    /// The wire name (`"FP32"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bf16 => "BF16",
            DataType::Bytes => "BYTES",
        }
    }

    /// Bytes per element; `None` for the variable-length `BYTES`.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }

    /// The model-config enum value (`TYPE_FP32`).
    pub fn to_config(self) -> pb::DataType {
        match self {
            DataType::Bool => pb::DataType::TypeBool,
            DataType::Uint8 => pb::DataType::TypeUint8,
            DataType::Uint16 => pb::DataType::TypeUint16,
            DataType::Uint32 => pb::DataType::TypeUint32,
            DataType::Uint64 => pb::DataType::TypeUint64,
            DataType::Int8 => pb::DataType::TypeInt8,
            DataType::Int16 => pb::DataType::TypeInt16,
            DataType::Int32 => pb::DataType::TypeInt32,
            DataType::Int64 => pb::DataType::TypeInt64,
            DataType::Fp16 => pb::DataType::TypeFp16,
            DataType::Fp32 => pb::DataType::TypeFp32,
            DataType::Fp64 => pb::DataType::TypeFp64,
            DataType::Bf16 => pb::DataType::TypeBf16,
            DataType::Bytes => pb::DataType::TypeString,
        }
    }

    /// The model-config name (`"TYPE_FP32"`; `BYTES` is `TYPE_STRING`).
    pub fn config_name(self) -> &'static str {
        self.to_config().as_str_name()
    }

    /// Parses a wire name (`FP32`) or a model-config name (`TYPE_FP32`, `TYPE_STRING`).
    pub fn parse(name: &str) -> Option<DataType> {
        let bare = name.strip_prefix("TYPE_").unwrap_or(name);
        if bare == "STRING" {
            return Some(DataType::Bytes);
        }
        DataType::ALL.into_iter().find(|d| d.as_str() == bare)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::parse(s).ok_or_else(|| format!("unknown datatype '{s}'"))
    }
}

/// Number of elements of a shape, or `None` when a dimension is negative or
/// the product overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Splits raw `BYTES` tensor data (4-byte little-endian length + bytes, per
/// element) into its elements, checking that the lengths cover the data exactly.
pub fn split_bytes_elements(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err("BYTES data ends inside an element length prefix".into());
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if rest.len() < len {
            return Err(format!(
                "BYTES element of length {len} runs past the end of the data"
            ));
        }
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(out)
}

/// Appends one `BYTES` element in raw form.
pub fn push_bytes_element(out: &mut Vec<u8>, element: &[u8]) {
    out.extend_from_slice(&(element.len() as u32).to_le_bytes());
    out.extend_from_slice(element);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_both_spellings() {
        for dt in DataType::ALL {
            assert_eq!(DataType::parse(dt.as_str()), Some(dt));
            assert_eq!(DataType::parse(dt.config_name()), Some(dt));
        }
        assert_eq!(DataType::parse("FP33"), None);
    }

    #[test]
    fn element_count_rejects_negative_and_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }

    #[test]
    fn bytes_elements_split_and_reject_truncation() {
        let mut raw = Vec::new();
        push_bytes_element(&mut raw, b"ab");
        push_bytes_element(&mut raw, b"");
        assert_eq!(
            split_bytes_elements(&raw).unwrap(),
            vec![&b"ab"[..], &b""[..]]
        );
        assert!(split_bytes_elements(&raw[..5]).is_err());
        assert!(split_bytes_elements(&raw[..2]).is_err());
    }
}
