//! Raw little-endian tensor bytes to an output's JSON `data` (a flat array in
//! row-major order, as Triton writes it).
//!
//! BOOL becomes `true`/`false`; integers JSON integers; FP16/BF16/FP32 are
//! written through `f32` (the shortest text that reads back to the same value)
//! and FP64 as `f64`. JSON has no NaN or infinity: those are written as `null`
//! (Triton writes a bare `nan`, which is not JSON). BYTES elements become JSON
//! strings; an element that is not valid UTF-8 is written lossily (each invalid
//! sequence becomes U+FFFD): ask for binary output to get the exact bytes.

use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::datatype::{element_count, split_bytes_elements};
use crate::{DataType, ServiceError};

/// An output's data, checked against its shape, ready to serialize as JSON.
pub(super) enum JsonData<'a> {
    /// A fixed-size datatype: the raw bytes hold exactly the shape's elements.
    Fixed(DataType, &'a [u8]),
    /// BYTES elements.
    Bytes(Vec<&'a [u8]>),
}

impl<'a> JsonData<'a> {
    /// Checks that `raw` holds the elements of `shape` in `dtype` (a mismatch is
    /// the engine's fault: 500).
    pub(super) fn new(
        name: &str,
        dtype: DataType,
        shape: &[i64],
        raw: &'a [u8],
    ) -> Result<Self, ServiceError> {
        let count = element_count(shape).ok_or_else(|| {
            ServiceError::internal(format!("output '{name}' has an invalid shape {shape:?}"))
        })?;
        match dtype.element_size() {
            Some(size) => {
                if count.checked_mul(size) != Some(raw.len()) {
                    return Err(ServiceError::internal(format!(
                        "output '{name}' has {} bytes, but shape {shape:?} of {dtype} needs {}",
                        raw.len(),
                        count.saturating_mul(size)
                    )));
                }
                Ok(JsonData::Fixed(dtype, raw))
            }
            None => {
                let elements = split_bytes_elements(raw).map_err(|e| {
                    ServiceError::internal(format!("output '{name}': malformed BYTES data: {e}"))
                })?;
                if elements.len() != count {
                    return Err(ServiceError::internal(format!(
                        "output '{name}' has {} BYTES elements, but shape {shape:?} needs {count}",
                        elements.len()
                    )));
                }
                Ok(JsonData::Bytes(elements))
            }
        }
    }
}

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (dtype, raw) = match self {
            JsonData::Bytes(elements) => {
                let mut seq = serializer.serialize_seq(Some(elements.len()))?;
                for element in elements {
                    seq.serialize_element(&String::from_utf8_lossy(element))?;
                }
                return seq.end();
            }
            JsonData::Fixed(dtype, raw) => (*dtype, *raw),
        };
        let size = dtype.element_size().unwrap_or(1).max(1);
        let mut seq = serializer.serialize_seq(Some(raw.len() / size))?;
        macro_rules! each {
            ($n:literal, |$b:ident| $conv:expr) => {
                for chunk in raw.chunks_exact($n) {
                    let mut $b = [0u8; $n];
                    $b.copy_from_slice(chunk);
                    seq.serialize_element(&$conv)?;
                }
            };
        }
        match dtype {
            DataType::Bool => each!(1, |b| b[0] != 0),
            DataType::Uint8 => each!(1, |b| b[0]),
            DataType::Int8 => each!(1, |b| i8::from_le_bytes(b)),
            DataType::Uint16 => each!(2, |b| u16::from_le_bytes(b)),
            DataType::Int16 => each!(2, |b| i16::from_le_bytes(b)),
            DataType::Uint32 => each!(4, |b| u32::from_le_bytes(b)),
            DataType::Int32 => each!(4, |b| i32::from_le_bytes(b)),
            DataType::Uint64 => each!(8, |b| u64::from_le_bytes(b)),
            DataType::Int64 => each!(8, |b| i64::from_le_bytes(b)),
            DataType::Fp16 => each!(2, |b| half::f16::from_le_bytes(b).to_f32()),
            DataType::Bf16 => each!(2, |b| half::bf16::from_le_bytes(b).to_f32()),
            DataType::Fp32 => each!(4, |b| f32::from_le_bytes(b)),
            DataType::Fp64 => each!(8, |b| f64::from_le_bytes(b)),
            DataType::Bytes => {}
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datatype::push_bytes_element;
    use crate::ErrorCode;

    fn text(dtype: DataType, shape: &[i64], raw: &[u8]) -> String {
        serde_json::to_string(&JsonData::new("o", dtype, shape, raw).unwrap()).unwrap()
    }

    fn le<T: Copy, const N: usize>(values: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|v| f(*v)).collect()
    }

    #[test]
    fn every_datatype_serializes() {
        assert_eq!(text(DataType::Bool, &[3], &[1, 0, 1]), "[true,false,true]");
        assert_eq!(text(DataType::Uint8, &[2], &[0, 255]), "[0,255]");
        assert_eq!(text(DataType::Int8, &[2], &[0x80, 0x7f]), "[-128,127]");
        assert_eq!(
            text(DataType::Uint16, &[1], &le(&[65535u16], u16::to_le_bytes)),
            "[65535]"
        );
        assert_eq!(
            text(DataType::Int16, &[2], &le(&[-2i16, 300], i16::to_le_bytes)),
            "[-2,300]"
        );
        assert_eq!(
            text(DataType::Uint32, &[1], &le(&[u32::MAX], u32::to_le_bytes)),
            "[4294967295]"
        );
        assert_eq!(
            text(DataType::Int32, &[2, 1], &le(&[-1i32, 5], i32::to_le_bytes)),
            "[-1,5]"
        );
        assert_eq!(
            text(DataType::Uint64, &[1], &le(&[u64::MAX], u64::to_le_bytes)),
            "[18446744073709551615]"
        );
        assert_eq!(
            text(DataType::Int64, &[1], &le(&[i64::MIN], i64::to_le_bytes)),
            "[-9223372036854775808]"
        );
        assert_eq!(
            text(DataType::Fp32, &[2], &le(&[0.1f32, -2.5], f32::to_le_bytes)),
            "[0.1,-2.5]"
        );
        assert_eq!(
            text(DataType::Fp64, &[1], &le(&[0.1f64], f64::to_le_bytes)),
            "[0.1]"
        );
        let h = [half::f16::from_f32(0.5), half::f16::from_f32(-3.25)];
        assert_eq!(
            text(DataType::Fp16, &[2], &le(&h, half::f16::to_le_bytes)),
            "[0.5,-3.25]"
        );
        let b = [half::bf16::from_f32(1.0), half::bf16::from_f32(-0.15625)];
        assert_eq!(
            text(DataType::Bf16, &[2], &le(&b, half::bf16::to_le_bytes)),
            "[1.0,-0.15625]"
        );
    }

    #[test]
    fn non_finite_floats_become_null() {
        let raw = le(&[f32::NAN, f32::INFINITY, 1.0], f32::to_le_bytes);
        assert_eq!(text(DataType::Fp32, &[3], &raw), "[null,null,1.0]");
    }

    #[test]
    fn bytes_become_strings_lossily() {
        let mut raw = Vec::new();
        for e in [&b"ab"[..], b"", "é".as_bytes(), &[0xff, b'x']] {
            push_bytes_element(&mut raw, e);
        }
        assert_eq!(
            text(DataType::Bytes, &[2, 2], &raw),
            "[\"ab\",\"\",\"é\",\"\u{fffd}x\"]"
        );
    }

    #[test]
    fn size_mismatches_are_internal_errors() {
        let err = JsonData::new("o", DataType::Fp32, &[2], &[0; 7])
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::Internal);
        let mut raw = Vec::new();
        push_bytes_element(&mut raw, b"a");
        assert!(JsonData::new("o", DataType::Bytes, &[2], &raw).is_err());
        assert!(JsonData::new("o", DataType::Bytes, &[1], &raw[..3]).is_err());
        assert!(JsonData::new("o", DataType::Int32, &[-1], &[]).is_err());
    }
}
