//! An input's JSON `data` to raw little-endian tensor bytes, converted
//! while it is parsed.
//!
//! `data` may be flat or nested in row-major order. Nesting must be regular:
//! every element sits at the same depth and every array at one depth has the
//! same length (no ragged rows). The element count must equal the shape's.
//! Values convert per datatype: BOOL from `true`/`false`; integers from JSON
//! integers, range-checked (a fraction such as `1.5` or `1.0` is refused);
//! FP16/BF16/FP32/FP64 from any JSON number, a finite value too large for the
//! type is refused; BYTES from JSON strings (their UTF-8 bytes), written in the
//! 4-byte-length-prefixed raw form.
//!
//! [`RawSeed`] is a serde seed: given the datatype and the element count up
//! front, it writes each element's bytes as the parser reaches it, so a
//! request's numbers never exist as a tree of JSON values (a value tree
//! costs about 8 times the text; the raw tensor at most the tensor's size),
//! and a request with more elements than its shape is refused as soon as
//! the first extra one is read. Data parsed before its datatype was known
//! goes through the same seed from a `serde_json::Value` ([`json_to_raw`]).

use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::Value;

use crate::datatype::push_bytes_element;
use crate::{DataType, ServiceError};

/// Most bytes reserved up front for a tensor's raw data: a shape may claim
/// far more than the data then holds.
const MAX_RESERVED_BYTES: usize = 16 * 1024 * 1024;

/// Converts the JSON `data` of input `name` to raw bytes, checking that it
/// holds exactly `expected` elements (data parsed before its input's
/// datatype was known).
pub(super) fn json_to_raw(
    name: &str,
    dtype: DataType,
    data: &Value,
    expected: usize,
) -> Result<Vec<u8>, ServiceError> {
    RawSeed {
        name,
        dtype,
        expected,
    }
    .deserialize(data)
    .map_err(|e| ServiceError::bad_request(e.to_string()))
}

/// Parses an input's `data` straight into the raw bytes of `dtype`; the
/// error names the input.
pub(super) struct RawSeed<'a> {
    /// The input's name (for errors).
    pub name: &'a str,
    /// Its datatype.
    pub dtype: DataType,
    /// The element count its shape gives.
    pub expected: usize,
}

impl<'de> DeserializeSeed<'de> for RawSeed<'_> {
    type Value = Vec<u8>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<u8>, D::Error> {
        let size = self.dtype.element_size().unwrap_or(8);
        let mut flat = Flatten {
            dtype: self.dtype,
            expected: self.expected,
            out: Vec::with_capacity(self.expected.saturating_mul(size).min(MAX_RESERVED_BYTES)),
            count: 0,
            dims: Vec::new(),
            leaf_depth: None,
        };
        let named = |msg: String| format!("input '{}': {msg}", self.name);
        deserializer
            .deserialize_any(Level {
                flat: &mut flat,
                depth: 0,
            })
            .map_err(|e| D::Error::custom(named(e.to_string())))?;
        if flat.count != self.expected {
            return Err(D::Error::custom(named(format!(
                "its shape has {} elements but its data has {}",
                self.expected, flat.count
            ))));
        }
        Ok(flat.out)
    }
}

/// The state of one flattening parse: the length seen at each array depth,
/// the depth of the elements, and the bytes written so far.
struct Flatten {
    dtype: DataType,
    expected: usize,
    out: Vec<u8>,
    count: usize,
    /// The length of the arrays at each depth, once one has ended.
    dims: Vec<Option<usize>>,
    leaf_depth: Option<usize>,
}

/// One element as the parser hands it over.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'a str),
    Null,
}

impl fmt::Display for Leaf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leaf::Bool(b) => write!(f, "{b}"),
            Leaf::Int(i) => write!(f, "{i}"),
            Leaf::Uint(u) => write!(f, "{u}"),
            Leaf::Float(x) => write!(f, "{x}"),
            Leaf::Str(s) => write!(f, "{s:?}"),
            Leaf::Null => write!(f, "null"),
        }
    }
}

impl Flatten {
    fn array_starts(&mut self, depth: usize) -> Result<(), String> {
        if let Some(d) = self.leaf_depth.filter(|&d| depth >= d) {
            return Err(format!(
                "'data' mixes nesting depths: an array at depth {depth}, elements at depth {d}"
            ));
        }
        // The enclosing arrays are open, so depth is at most dims.len().
        if self.dims.len() == depth {
            self.dims.push(None);
        }
        Ok(())
    }

    fn array_ends(&mut self, depth: usize, len: usize) -> Result<(), String> {
        match self.dims[depth] {
            None => {
                self.dims[depth] = Some(len);
                Ok(())
            }
            Some(seen) if seen != len => Err(format!(
                "'data' is ragged: arrays at depth {depth} have lengths {seen} and {len}"
            )),
            Some(_) => Ok(()),
        }
    }

    fn leaf(&mut self, depth: usize, leaf: Leaf) -> Result<(), String> {
        match self.leaf_depth {
            // An array was seen at this depth.
            None if depth < self.dims.len() => {
                return Err(format!("'data' mixes elements and arrays at depth {depth}"));
            }
            None => self.leaf_depth = Some(depth),
            Some(d) if d != depth => {
                return Err(format!(
                    "'data' mixes nesting depths: elements at depths {d} and {depth}"
                ))
            }
            Some(_) => {}
        }
        if self.count == self.expected {
            return Err(format!(
                "its shape has {} elements but its data has more",
                self.expected
            ));
        }
        let index = self.count;
        self.push(leaf).map_err(|problem| {
            format!(
                "element {index} ({}) is {problem} for {}",
                shown(leaf),
                self.dtype
            )
        })?;
        self.count += 1;
        Ok(())
    }

    /// Writes one element in the raw form of the datatype, or says why it
    /// is not one.
    fn push(&mut self, leaf: Leaf) -> Result<(), &'static str> {
        macro_rules! int {
            ($t:ty) => {{
                let x = integer(leaf, <$t>::MIN as i128, <$t>::MAX as i128)?;
                // The range was checked against the type's bounds just above.
                self.out.extend_from_slice(&(x as $t).to_le_bytes());
            }};
        }
        let float = |leaf: Leaf| match leaf {
            Leaf::Int(i) => Ok(i as f64),
            Leaf::Uint(u) => Ok(u as f64),
            Leaf::Float(x) => Ok(x),
            _ => Err("not a number"),
        };
        match self.dtype {
            DataType::Bool => match leaf {
                Leaf::Bool(b) => self.out.push(u8::from(b)),
                _ => return Err("not a boolean"),
            },
            DataType::Uint8 => int!(u8),
            DataType::Uint16 => int!(u16),
            DataType::Uint32 => int!(u32),
            DataType::Uint64 => int!(u64),
            DataType::Int8 => int!(i8),
            DataType::Int16 => int!(i16),
            DataType::Int32 => int!(i32),
            DataType::Int64 => int!(i64),
            DataType::Fp16 => {
                let x = float(leaf)?;
                let h = finite_as(x, half::f16::from_f64(x), |h| h.is_infinite())?;
                self.out.extend_from_slice(&h.to_le_bytes());
            }
            DataType::Bf16 => {
                let x = float(leaf)?;
                let h = finite_as(x, half::bf16::from_f64(x), |h| h.is_infinite())?;
                self.out.extend_from_slice(&h.to_le_bytes());
            }
            DataType::Fp32 => {
                let x = float(leaf)?;
                let f = finite_as(x, x as f32, |f| f.is_infinite())?;
                self.out.extend_from_slice(&f.to_le_bytes());
            }
            DataType::Fp64 => self.out.extend_from_slice(&float(leaf)?.to_le_bytes()),
            DataType::Bytes => match leaf {
                Leaf::Str(s) if u32::try_from(s.len()).is_ok() => {
                    push_bytes_element(&mut self.out, s.as_bytes())
                }
                Leaf::Str(_) => return Err("longer than a BYTES element may be (4 GiB)"),
                _ => return Err("not a string"),
            },
        }
        Ok(())
    }
}

/// An integer within `[min, max]`, or why the value is not one.
fn integer(leaf: Leaf, min: i128, max: i128) -> Result<i128, &'static str> {
    let x = match leaf {
        Leaf::Int(i) => i128::from(i),
        Leaf::Uint(u) => i128::from(u),
        _ => return Err("not an integer"),
    };
    if x < min || x > max {
        return Err("out of range");
    }
    Ok(x)
}

/// `converted` unless a finite `x` overflowed to infinity in the narrower type.
fn finite_as<T>(x: f64, converted: T, is_inf: impl Fn(&T) -> bool) -> Result<T, &'static str> {
    if x.is_finite() && is_inf(&converted) {
        Err("out of range")
    } else {
        Ok(converted)
    }
}

/// An element as an error shows it: at most 40 bytes.
fn shown(leaf: Leaf) -> String {
    let mut shown = leaf.to_string();
    if shown.len() > 40 {
        let cut = (0..=40)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push_str("...");
    }
    shown
}

/// One nesting level of `data`: an array (whose items are the next level)
/// or an element.
struct Level<'s> {
    flat: &'s mut Flatten,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Level<'_> {
    fn leaf<E: serde::de::Error>(self, leaf: Leaf) -> Result<(), E> {
        self.flat.leaf(self.depth, leaf).map_err(E::custom)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data: an element or an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth;
        self.flat.array_starts(depth).map_err(A::Error::custom)?;
        let mut len = 0usize;
        while seq
            .next_element_seed(Level {
                flat: &mut *self.flat,
                depth: depth + 1,
            })?
            .is_some()
        {
            len += 1;
        }
        self.flat.array_ends(depth, len).map_err(A::Error::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(A::Error::custom(format!(
            "'data' holds an object at depth {}: tensor data is elements or arrays",
            self.depth
        )))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(Leaf::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Leaf::Int(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(Leaf::Uint(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(Leaf::Float(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(Leaf::Str(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.leaf(Leaf::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.leaf(Leaf::Null)
    }
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
