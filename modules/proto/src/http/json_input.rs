//! An input's JSON `data` to raw little-endian tensor bytes.
//!
//! `data` may be flat or nested in row-major order. Nesting must be regular:
//! every element sits at the same depth and every array at one depth has the
//! same length (no ragged rows). The element count must equal the shape's.
//! Values convert per datatype: BOOL from `true`/`false`; integers from JSON
//! integers, range-checked (a fraction such as `1.5` or `1.0` is refused);
//! FP16/BF16/FP32/FP64 from any JSON number, a finite value too large for the
//! type is refused; BYTES from JSON strings (their UTF-8 bytes), written in the
//! 4-byte-length-prefixed raw form.

use serde_json::Value;

use crate::datatype::push_bytes_element;
use crate::{DataType, ServiceError};

/// Converts the JSON `data` of input `name` to raw bytes, checking that it
/// holds exactly `expected` elements.
pub(super) fn json_to_raw(
    name: &str,
    dtype: DataType,
    data: &Value,
    expected: usize,
) -> Result<Vec<u8>, ServiceError> {
    let mut leaves = Vec::with_capacity(expected.min(1 << 20));
    let mut walk = Walk {
        dims: Vec::new(),
        leaf_depth: None,
    };
    walk.visit(data, 0, &mut leaves)
        .map_err(|msg| ServiceError::bad_request(format!("input '{name}': {msg}")))?;
    if leaves.len() != expected {
        return Err(ServiceError::bad_request(format!(
            "input '{name}': its shape has {expected} elements but its data has {}",
            leaves.len()
        )));
    }
    encode(dtype, &leaves)
        .map_err(|msg| ServiceError::bad_request(format!("input '{name}': {msg}")))
}

/// The state of a flattening walk: the length seen at each array depth and the
/// depth of the elements.
struct Walk {
    dims: Vec<usize>,
    leaf_depth: Option<usize>,
}

impl Walk {
    fn visit<'a>(
        &mut self,
        value: &'a Value,
        depth: usize,
        leaves: &mut Vec<&'a Value>,
    ) -> Result<(), String> {
        match value {
            Value::Array(items) => {
                if let Some(d) = self.leaf_depth.filter(|&d| depth >= d) {
                    return Err(format!(
                        "'data' mixes nesting depths: an array at depth {depth}, elements at depth {d}"
                    ));
                }
                match self.dims.get(depth) {
                    None => self.dims.push(items.len()),
                    Some(&len) if len != items.len() => {
                        return Err(format!(
                            "'data' is ragged: arrays at depth {depth} have lengths {len} and {}",
                            items.len()
                        ))
                    }
                    Some(_) => {}
                }
                items
                    .iter()
                    .try_for_each(|item| self.visit(item, depth + 1, leaves))
            }
            leaf => {
                match self.leaf_depth {
                    None if depth < self.dims.len() => {
                        return Err(format!("'data' mixes elements and arrays at depth {depth}"));
                    }
                    None => self.leaf_depth = Some(depth),
                    Some(d) if d != depth => {
                        return Err(format!(
                            "'data' mixes nesting depths: elements at depths {d} and {depth}"
                        ));
                    }
                    Some(_) => {}
                }
                leaves.push(leaf);
                Ok(())
            }
        }
    }
}

/// Writes the elements in the raw form of `dtype`.
fn encode(dtype: DataType, leaves: &[&Value]) -> Result<Vec<u8>, String> {
    let size = dtype.element_size().unwrap_or(8);
    let mut out = Vec::with_capacity(leaves.len().saturating_mul(size));
    macro_rules! ints {
        ($conv:ident, $t:ty) => {
            for (i, v) in leaves.iter().enumerate() {
                let x = $conv(v, <$t>::MIN as i128, <$t>::MAX as i128)
                    .map_err(|p| element_error(i, v, p, dtype))?;
                // The range was checked against the type's bounds just above.
                out.extend_from_slice(&(x as $t).to_le_bytes());
            }
        };
    }
    macro_rules! floats {
        ($conv:expr) => {
            for (i, v) in leaves.iter().enumerate() {
                let x = v
                    .as_f64()
                    .ok_or_else(|| element_error(i, v, "not a number", dtype))?;
                let bytes = $conv(x).ok_or_else(|| element_error(i, v, "out of range", dtype))?;
                out.extend_from_slice(&bytes);
            }
        };
    }
    match dtype {
        DataType::Bool => {
            for (i, v) in leaves.iter().enumerate() {
                let b = v
                    .as_bool()
                    .ok_or_else(|| element_error(i, v, "not a boolean", dtype))?;
                out.push(u8::from(b));
            }
        }
        DataType::Uint8 => ints!(integer, u8),
        DataType::Uint16 => ints!(integer, u16),
        DataType::Uint32 => ints!(integer, u32),
        DataType::Uint64 => ints!(integer, u64),
        DataType::Int8 => ints!(integer, i8),
        DataType::Int16 => ints!(integer, i16),
        DataType::Int32 => ints!(integer, i32),
        DataType::Int64 => ints!(integer, i64),
        DataType::Fp16 => {
            floats!(
                |x: f64| finite_as(x, half::f16::from_f64(x), |h| h.is_infinite())
                    .map(|h| h.to_le_bytes())
            )
        }
        DataType::Bf16 => {
            floats!(
                |x: f64| finite_as(x, half::bf16::from_f64(x), |h| h.is_infinite())
                    .map(|h| h.to_le_bytes())
            )
        }
        DataType::Fp32 => {
            floats!(|x: f64| finite_as(x, x as f32, |f| f.is_infinite()).map(f32::to_le_bytes))
        }
        DataType::Fp64 => floats!(|x: f64| Some(x.to_le_bytes())),
        DataType::Bytes => {
            for (i, v) in leaves.iter().enumerate() {
                let s = v
                    .as_str()
                    .ok_or_else(|| element_error(i, v, "not a string", dtype))?;
                if u32::try_from(s.len()).is_err() {
                    return Err(format!(
                        "element {i} is longer than a BYTES element may be (4 GiB)"
                    ));
                }
                push_bytes_element(&mut out, s.as_bytes());
            }
        }
    }
    Ok(out)
}

/// An integer within `[min, max]`, or why the value is not one.
fn integer(v: &Value, min: i128, max: i128) -> Result<i128, &'static str> {
    let Value::Number(n) = v else {
        return Err("not an integer");
    };
    let x = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => i128::from(i),
        (None, Some(u)) => i128::from(u),
        (None, None) => return Err("not an integer"),
    };
    if x < min || x > max {
        return Err("out of range");
    }
    Ok(x)
}

/// `converted` unless a finite `x` overflowed to infinity in the narrower type.
fn finite_as<T>(x: f64, converted: T, is_inf: impl Fn(&T) -> bool) -> Option<T> {
    if x.is_finite() && is_inf(&converted) {
        None
    } else {
        Some(converted)
    }
}

fn element_error(index: usize, value: &Value, problem: &str, dtype: DataType) -> String {
    let mut shown = value.to_string();
    if shown.len() > 40 {
        let cut = (0..=40)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push_str("...");
    }
    format!("element {index} ({shown}) is {problem} for {dtype}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use serde_json::json;

    fn raw(dtype: DataType, data: Value, n: usize) -> Result<Vec<u8>, ServiceError> {
        json_to_raw("x", dtype, &data, n)
    }

    fn le<T: Copy, const N: usize>(values: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|v| f(*v)).collect()
    }

    #[test]
    fn every_fixed_size_datatype_converts_flat_data() {
        assert_eq!(
            raw(DataType::Bool, json!([true, false, true]), 3).unwrap(),
            vec![1, 0, 1]
        );
        assert_eq!(
            raw(DataType::Uint8, json!([0, 255]), 2).unwrap(),
            vec![0, 255]
        );
        assert_eq!(
            raw(DataType::Uint16, json!([1, 65535]), 2).unwrap(),
            le(&[1u16, 65535], u16::to_le_bytes)
        );
        assert_eq!(
            raw(DataType::Uint32, json!([7, 4294967295u32]), 2).unwrap(),
            le(&[7u32, u32::MAX], u32::to_le_bytes)
        );
        assert_eq!(
            raw(DataType::Uint64, json!([u64::MAX]), 1).unwrap(),
            u64::MAX.to_le_bytes().to_vec()
        );
        assert_eq!(
            raw(DataType::Int8, json!([-128, 127]), 2).unwrap(),
            vec![0x80, 0x7f]
        );
        assert_eq!(
            raw(DataType::Int16, json!([-2, 300]), 2).unwrap(),
            le(&[-2i16, 300], i16::to_le_bytes)
        );
        assert_eq!(
            raw(DataType::Int32, json!([-1, 5]), 2).unwrap(),
            le(&[-1i32, 5], i32::to_le_bytes)
        );
        assert_eq!(
            raw(DataType::Int64, json!([i64::MIN, i64::MAX]), 2).unwrap(),
            le(&[i64::MIN, i64::MAX], i64::to_le_bytes)
        );
        assert_eq!(
            raw(DataType::Fp32, json!([1.5, -2, 0.1]), 3).unwrap(),
            le(&[1.5f32, -2.0, 0.1], f32::to_le_bytes)
        );
        assert_eq!(
            raw(DataType::Fp64, json!([0.1, 3]), 2).unwrap(),
            le(&[0.1f64, 3.0], f64::to_le_bytes)
        );
        let h = [half::f16::from_f32(0.5), half::f16::from_f32(-3.25)];
        assert_eq!(
            raw(DataType::Fp16, json!([0.5, -3.25]), 2).unwrap(),
            le(&h, half::f16::to_le_bytes)
        );
        let b = [half::bf16::from_f32(1.0), half::bf16::from_f32(-0.15625)];
        assert_eq!(
            raw(DataType::Bf16, json!([1.0, -0.15625]), 2).unwrap(),
            le(&b, half::bf16::to_le_bytes)
        );
    }

    #[test]
    fn floats_parse_exactly() {
        // Shortest round-trip text must give back the same bits (this needs
        // serde_json's `float_roundtrip`; its fast default is off by an ULP
        // now and then).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let values: Vec<f64> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
            })
            .collect();
        let text = format!(
            "[{}]",
            values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let data: Value = serde_json::from_str(&text).unwrap();
        let got = raw(DataType::Fp64, data, values.len()).unwrap();
        assert_eq!(got, le(&values, f64::to_le_bytes));
    }

    #[test]
    fn bytes_elements_are_length_prefixed_strings() {
        let got = raw(DataType::Bytes, json!(["ab", "", "é"]), 3).unwrap();
        let mut want = Vec::new();
        for s in ["ab", "", "é"] {
            push_bytes_element(&mut want, s.as_bytes());
        }
        assert_eq!(got, want);
        assert!(raw(DataType::Bytes, json!([1]), 1).is_err());
    }

    #[test]
    fn nested_data_flattens_row_major() {
        let nested = raw(DataType::Int32, json!([[1, 2, 3], [4, 5, 6]]), 6).unwrap();
        assert_eq!(nested, le(&[1i32, 2, 3, 4, 5, 6], i32::to_le_bytes));
        let deep = raw(
            DataType::Bool,
            json!([[[true], [false]], [[false], [true]]]),
            4,
        )
        .unwrap();
        assert_eq!(deep, vec![1, 0, 0, 1]);
        assert_eq!(
            raw(DataType::Fp32, json!(2.0), 1).unwrap(),
            2.0f32.to_le_bytes().to_vec()
        );
        assert_eq!(raw(DataType::Fp32, json!([]), 0).unwrap(), Vec::<u8>::new());
        assert_eq!(
            raw(DataType::Fp32, json!([[], []]), 0).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn inconsistent_nesting_is_refused() {
        for bad in [
            json!([[1, 2], 3]),
            json!([1, [2, 3]]),
            json!([[1, 2], [3]]),
            json!([[1], [[2]]]),
            json!([[[1]], [2]]),
        ] {
            let err = raw(DataType::Int32, bad.clone(), 3).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad}");
            assert!(err.message.starts_with("input 'x'"), "{err}");
        }
    }

    #[test]
    fn element_count_must_match_the_shape() {
        let err = raw(DataType::Int32, json!([1, 2, 3]), 4).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert!(
            err.message.contains("4 elements") && err.message.contains("has 3"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_and_wrong_kinds_are_refused() {
        let cases = [
            (DataType::Uint8, json!([256])),
            (DataType::Uint8, json!([-1])),
            (DataType::Int8, json!([128])),
            (DataType::Int16, json!([-32769])),
            (DataType::Int32, json!([2147483648i64])),
            (DataType::Int64, json!([u64::MAX])),
            (DataType::Uint32, json!([1.5])),
            (DataType::Int32, json!([1.0])),
            (DataType::Int32, json!(["1"])),
            (DataType::Bool, json!([1])),
            (DataType::Fp32, json!(["1.0"])),
            (DataType::Fp32, json!([null])),
            (DataType::Fp32, json!([1e39])),
            (DataType::Fp16, json!([70000.0])),
        ];
        for (dtype, data) in cases {
            let err = raw(dtype, data.clone(), 1).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{dtype} {data}");
            assert!(
                err.message.contains("element 0") && err.message.contains(dtype.as_str()),
                "{err}"
            );
        }
    }
}
