//! Model inputs as the load generator sees them: what the model declares
//! (name, datatype, shape with -1 for free dimensions) and the random tensors
//! made once from that, in the protocol's raw little-endian form.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use mlserve_proto::datatype::{element_count, push_bytes_element, split_bytes_elements};
use mlserve_proto::DataType;

/// One input as a model declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// Input name.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Declared shape; -1 marks the batch dimension (first) or a variable one.
    pub shape: Vec<i64>,
}

/// One input tensor ready to send: a concrete shape and its raw data (for
/// `BYTES`, each element is a 4-byte little-endian length and its bytes).
#[derive(Debug, Clone)]
pub struct InputTensor {
    /// Input name.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Concrete shape, batch dimension included when the model has one.
    pub shape: Vec<i64>,
    /// Raw data, shared between every request that carries it.
    pub raw: Bytes,
}

/// Length of the random strings made for `BYTES` inputs.
const STRING_LEN: usize = 16;

/// The concrete shape for a batch of `batch` rows: a leading -1 is the batch
/// dimension and becomes `batch`; any other -1 becomes `variable`. A model
/// without a free leading dimension takes no batch, so `batch` must be 1.
pub fn concrete_shape(spec: &InputSpec, batch: usize, variable: usize) -> Result<Vec<i64>> {
    let batched = spec.shape.first() == Some(&-1);
    if !batched && batch != 1 {
        bail!(
            "input '{}' has shape {:?} with no batch dimension: use --batch 1",
            spec.name,
            spec.shape
        );
    }
    let mut shape = Vec::with_capacity(spec.shape.len());
    for (i, &dim) in spec.shape.iter().enumerate() {
        shape.push(match dim {
            -1 if i == 0 => batch as i64,
            d if d < 0 => variable as i64,
            d => d,
        });
    }
    Ok(shape)
}

/// Random data for one input: FP uniform in [0, 1), integers in [0, 10),
/// booleans 0 or 1, `BYTES` random lowercase strings.
pub fn random_input(
    spec: &InputSpec,
    batch: usize,
    variable: usize,
    rng: &mut fastrand::Rng,
) -> Result<InputTensor> {
    let shape = concrete_shape(spec, batch, variable)?;
    let count = element_count(&shape)
        .with_context(|| format!("input '{}': shape {shape:?} is too large", spec.name))?;
    let mut raw =
        Vec::with_capacity(count * spec.datatype.element_size().unwrap_or(4 + STRING_LEN));
    for _ in 0..count {
        push_random_element(&mut raw, spec.datatype, rng);
    }
    Ok(InputTensor {
        name: spec.name.clone(),
        datatype: spec.datatype,
        shape,
        raw: Bytes::from(raw),
    })
}

/// Random tensors for every input.
pub fn random_inputs(specs: &[InputSpec], batch: usize, seed: u64) -> Result<Vec<InputTensor>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    specs
        .iter()
        .map(|spec| random_input(spec, batch, 1, &mut rng))
        .collect()
}

fn push_random_element(out: &mut Vec<u8>, datatype: DataType, rng: &mut fastrand::Rng) {
    let small = rng.u8(0..10);
    match datatype {
        DataType::Bool => out.push(rng.bool() as u8),
        DataType::Uint8 | DataType::Int8 => out.push(small),
        DataType::Uint16 | DataType::Int16 => out.extend_from_slice(&(small as u16).to_le_bytes()),
        DataType::Uint32 | DataType::Int32 => out.extend_from_slice(&(small as u32).to_le_bytes()),
        DataType::Uint64 | DataType::Int64 => out.extend_from_slice(&(small as u64).to_le_bytes()),
        DataType::Fp32 => out.extend_from_slice(&rng.f32().to_le_bytes()),
        DataType::Fp64 => out.extend_from_slice(&rng.f64().to_le_bytes()),
        // bfloat16 is the top half of an f32.
        DataType::Bf16 => {
            out.extend_from_slice(&((rng.f32().to_bits() >> 16) as u16).to_le_bytes())
        }
        DataType::Fp16 => out.extend_from_slice(&f16_bits_unit(rng.f32()).to_le_bytes()),
        DataType::Bytes => {
            let text: Vec<u8> = (0..STRING_LEN).map(|_| rng.u8(b'a'..=b'z')).collect();
            push_bytes_element(out, &text);
        }
    }
}

/// IEEE half bits of a value in [0, 1) (truncating; subnormals flush to 0).
fn f16_bits_unit(value: f32) -> u16 {
    let bits = value.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if exponent <= 0 {
        return 0;
    }
    ((exponent as u16) << 10) | ((bits >> 13) & 0x3ff) as u16
}

/// The tensor's elements as JSON values (the `data` array of the HTTP JSON
/// form), in row-major order.
pub fn json_data(tensor: &InputTensor) -> Result<Vec<serde_json::Value>> {
    use serde_json::Value;
    let raw = &tensor.raw[..];
    if tensor.datatype == DataType::Bytes {
        return Ok(split_bytes_elements(raw)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|e| Value::from(String::from_utf8_lossy(e).into_owned()))
            .collect());
    }
    let size = tensor.datatype.element_size().unwrap_or(1);
    let values = raw.chunks_exact(size).map(|c| match tensor.datatype {
        DataType::Bool => Value::from(c[0] != 0),
        DataType::Uint8 => Value::from(c[0]),
        DataType::Int8 => Value::from(c[0] as i8),
        DataType::Uint16 => Value::from(u16::from_le_bytes([c[0], c[1]])),
        DataType::Int16 => Value::from(i16::from_le_bytes([c[0], c[1]])),
        DataType::Uint32 => Value::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        DataType::Int32 => Value::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        DataType::Fp32 => Value::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64),
        DataType::Uint64 => Value::from(u64::from_le_bytes(eight(c))),
        DataType::Int64 => Value::from(i64::from_le_bytes(eight(c))),
        DataType::Fp64 => Value::from(f64::from_le_bytes(eight(c))),
        DataType::Bf16 => {
            Value::from(f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
        }
        DataType::Fp16 => Value::from(f16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64),
        DataType::Bytes => Value::Null,
    });
    Ok(values.collect())
}

fn eight(c: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    a
}

/// f32 value of half bits made by [`f16_bits_unit`] (normal numbers and 0).
fn f16_to_f32(bits: u16) -> f32 {
    let exponent = ((bits >> 10) & 0x1f) as u32;
    if exponent == 0 {
        return 0.0;
    }
    f32::from_bits(((exponent + 127 - 15) << 23) | (((bits & 0x3ff) as u32) << 13))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(datatype: DataType, shape: &[i64]) -> InputSpec {
        InputSpec {
            name: "x".into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn leading_free_dim_is_the_batch() {
        let s = spec(DataType::Fp32, &[-1, 3, 224, 224]);
        assert_eq!(concrete_shape(&s, 8, 1).unwrap(), vec![8, 3, 224, 224]);
        let s = spec(DataType::Fp32, &[-1, -1, 4]);
        assert_eq!(concrete_shape(&s, 2, 5).unwrap(), vec![2, 5, 4]);
    }

    #[test]
    fn unbatched_model_takes_batch_one_only() {
        let s = spec(DataType::Fp32, &[16]);
        assert_eq!(concrete_shape(&s, 1, 1).unwrap(), vec![16]);
        assert!(concrete_shape(&s, 4, 1).is_err());
    }

    #[test]
    fn random_input_has_the_shape_and_byte_size() {
        let mut rng = fastrand::Rng::with_seed(1);
        let t = random_input(&spec(DataType::Fp32, &[-1, 50]), 16, 1, &mut rng).unwrap();
        assert_eq!(t.shape, vec![16, 50]);
        assert_eq!(t.raw.len(), 16 * 50 * 4);
        let t = random_input(&spec(DataType::Int64, &[-1, 8]), 3, 1, &mut rng).unwrap();
        assert_eq!(t.raw.len(), 3 * 8 * 8);
        let t = random_input(&spec(DataType::Bytes, &[-1]), 5, 1, &mut rng).unwrap();
        assert_eq!(split_bytes_elements(&t.raw).unwrap().len(), 5);
    }

    #[test]
    fn values_are_in_range() {
        let mut rng = fastrand::Rng::with_seed(2);
        for datatype in [
            DataType::Fp32,
            DataType::Fp16,
            DataType::Bf16,
            DataType::Int64,
            DataType::Bool,
        ] {
            let t = random_input(&spec(datatype, &[-1, 10]), 20, 1, &mut rng).unwrap();
            let values = json_data(&t).unwrap();
            assert_eq!(values.len(), 200);
            for v in values {
                let x = v
                    .as_f64()
                    .unwrap_or_else(|| v.as_bool().map_or(-1.0, |b| b as u8 as f64));
                assert!((0.0..10.0).contains(&x), "{datatype}: {x}");
                if matches!(datatype, DataType::Fp32 | DataType::Fp16 | DataType::Bf16) {
                    assert!(x < 1.0, "{datatype}: {x}");
                }
            }
        }
    }

    #[test]
    fn half_round_trips_exactly_representable_values() {
        for x in [0.5f32, 0.25, 0.75, 0.125] {
            assert_eq!(f16_to_f32(f16_bits_unit(x)), x);
        }
    }

    #[test]
    fn inputs_are_reproducible_from_the_seed() {
        let specs = [spec(DataType::Fp32, &[-1, 4])];
        let a = random_inputs(&specs, 2, 9).unwrap();
        let b = random_inputs(&specs, 2, 9).unwrap();
        assert_eq!(a[0].raw, b[0].raw);
    }
}
