//! Triton's classification extension: an output requested with
//! `"parameters": {"classification": K}` comes back as the top K classes of
//! each batch row, as BYTES elements `"<value>:<index>"` (mlserve has no label
//! files, so no `:<label>` suffix).
//!
//! As in Triton, a batching model (`max_batch_size > 0`) classifies each row
//! of the first dimension and answers shape `[batch, K]`; a non-batching model
//! classifies all elements at once and answers `[K]`. K is capped at the number
//! of classes. Classes are ordered by value, highest first; ties keep index
//! order and NaN sorts last. Values are written like C++ `std::to_string`:
//! six decimals for floating point (`0.750000`), plain digits for integers.

use bytes::Bytes;

use crate::datatype::{element_count, push_bytes_element};
use crate::{DataType, ServiceError};

/// The classified form of an output: its new shape and raw BYTES data.
#[derive(Debug)]
pub(super) struct Classified {
    /// `[batch, K]` for a batching model, `[K]` otherwise.
    pub shape: Vec<i64>,
    /// BYTES elements `"<value>:<index>"`, row by row.
    pub raw: Bytes,
}

/// Classifies output `name` (`dtype`, `shape`, `raw` as the model produced it).
pub(super) fn classify(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    raw: &[u8],
    k: usize,
    batched: bool,
) -> Result<Classified, ServiceError> {
    let Some(size) = dtype.element_size().filter(|_| dtype != DataType::Bool) else {
        return Err(ServiceError::bad_request(format!(
            "classification needs a numeric output, but output '{name}' is {dtype}"
        )));
    };
    let count = element_count(shape)
        .filter(|n| n.checked_mul(size) == Some(raw.len()))
        .ok_or_else(|| {
            ServiceError::internal(format!(
                "output '{name}' does not hold the elements of shape {shape:?}"
            ))
        })?;
    let rows = match shape.first() {
        Some(&batch) if batched => usize::try_from(batch).unwrap_or(0),
        _ => 1,
    };
    let row_len = count.checked_div(rows).unwrap_or(0);
    let k = k.min(row_len);
    let mut out = Vec::with_capacity(rows * k * 16);
    let mut order: Vec<usize> = Vec::with_capacity(row_len);
    for row in 0..rows {
        let base = row * row_len;
        order.clear();
        order.extend(0..row_len);
        let key = |i: usize| value_f64(dtype, element(raw, size, base + i));
        // Highest first; NaN last; equal values keep index order (stable sort).
        order.sort_by(|&a, &b| {
            let (x, y) = (key(a), key(b));
            match (x.is_nan(), y.is_nan()) {
                (false, false) => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                (nan_x, nan_y) => nan_x.cmp(&nan_y),
            }
        });
        for &i in &order[..k] {
            let text = format!("{}:{i}", value_text(dtype, element(raw, size, base + i)));
            push_bytes_element(&mut out, text.as_bytes());
        }
    }
    let k = k as i64;
    let shape = if batched && !shape.is_empty() {
        vec![rows as i64, k]
    } else {
        vec![k]
    };
    Ok(Classified {
        shape,
        raw: Bytes::from(out),
    })
}

fn element(raw: &[u8], size: usize, index: usize) -> &[u8] {
    &raw[index * size..(index + 1) * size]
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

/// The element's value, for ordering.
fn value_f64(dtype: DataType, b: &[u8]) -> f64 {
    match dtype {
        DataType::Uint8 => f64::from(b[0]),
        DataType::Int8 => f64::from(b[0] as i8),
        DataType::Uint16 => f64::from(u16::from_le_bytes(array(b))),
        DataType::Int16 => f64::from(i16::from_le_bytes(array(b))),
        DataType::Uint32 => f64::from(u32::from_le_bytes(array(b))),
        DataType::Int32 => f64::from(i32::from_le_bytes(array(b))),
        DataType::Uint64 => u64::from_le_bytes(array(b)) as f64,
        DataType::Int64 => i64::from_le_bytes(array(b)) as f64,
        DataType::Fp16 => f64::from(half::f16::from_le_bytes(array(b))),
        DataType::Bf16 => f64::from(half::bf16::from_le_bytes(array(b))),
        DataType::Fp32 => f64::from(f32::from_le_bytes(array(b))),
        DataType::Fp64 => f64::from_le_bytes(array(b)),
        DataType::Bool | DataType::Bytes => 0.0,
    }
}

/// The element's value as text, like C++ `std::to_string`.
fn value_text(dtype: DataType, b: &[u8]) -> String {
    match dtype {
        DataType::Uint64 => u64::from_le_bytes(array(b)).to_string(),
        DataType::Int64 => i64::from_le_bytes(array(b)).to_string(),
        DataType::Fp64 => format!("{:.6}", f64::from_le_bytes(array(b))),
        DataType::Fp16 | DataType::Bf16 | DataType::Fp32 => {
            format!("{:.6}", value_f64(dtype, b) as f32)
        }
        _ => format!("{}", value_f64(dtype, b) as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datatype::split_bytes_elements;
    use crate::ErrorCode;

    fn strings(c: &Classified) -> Vec<String> {
        split_bytes_elements(&c.raw)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e.to_vec()).unwrap())
            .collect()
    }

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn top_k_per_batch_row() {
        let raw = f32s(&[0.1, 0.7, 0.2, 0.9, 0.05, 0.05]);
        let c = classify("p", DataType::Fp32, &[2, 3], &raw, 2, true).unwrap();
        assert_eq!(c.shape, vec![2, 2]);
        assert_eq!(
            strings(&c),
            ["0.700000:1", "0.200000:2", "0.900000:0", "0.050000:1"]
        );
    }

    #[test]
    fn non_batching_model_classifies_everything_and_caps_k() {
        let raw: Vec<u8> = [3i32, -1, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
        let c = classify("p", DataType::Int32, &[3], &raw, 10, false).unwrap();
        assert_eq!(c.shape, vec![3]);
        assert_eq!(strings(&c), ["8:2", "3:0", "-1:1"]);
    }

    #[test]
    fn nan_sorts_last_and_bytes_are_refused() {
        let raw = f32s(&[f32::NAN, 1.0]);
        let c = classify("p", DataType::Fp32, &[1, 2], &raw, 1, true).unwrap();
        assert_eq!(strings(&c), ["1.000000:1"]);
        let err = classify("p", DataType::Bytes, &[1], &[0, 0, 0, 0], 1, false).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert!(classify("p", DataType::Fp32, &[2], &[0; 7], 1, false).is_err());
    }
}
