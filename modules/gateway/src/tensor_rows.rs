//! Numeric tensors of the Open Inference Protocol read as rows of `f64`,
//! from raw little-endian bytes or typed contents: what post-processing and
//! the request log read of a model's inputs and outputs.

use mlserve_proto::pb;

/// The values of a tensor of `datatype`, from `raw` bytes when the request
/// or response carried them, else from its typed `contents`. `None` for a
/// datatype that is not a plain number (BYTES, FP16, BF16) or no data.
pub fn values(
    datatype: &str,
    raw: Option<&[u8]>,
    contents: Option<&pb::InferTensorContents>,
) -> Option<Vec<f64>> {
    match raw {
        Some(raw) => from_raw(datatype, raw),
        None => from_contents(datatype, contents?),
    }
}

fn from_raw(datatype: &str, raw: &[u8]) -> Option<Vec<f64>> {
    fn read<const N: usize>(raw: &[u8], to: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        raw.chunks_exact(N)
            .map(|b| to(b.try_into().unwrap_or([0; N])))
            .collect()
    }
    Some(match datatype {
        "FP32" => read::<4>(raw, |b| f64::from(f32::from_le_bytes(b))),
        "FP64" => read::<8>(raw, f64::from_le_bytes),
        "INT8" => read::<1>(raw, |b| f64::from(i8::from_le_bytes(b))),
        "INT16" => read::<2>(raw, |b| f64::from(i16::from_le_bytes(b))),
        "INT32" => read::<4>(raw, |b| f64::from(i32::from_le_bytes(b))),
        "INT64" => read::<8>(raw, |b| i64::from_le_bytes(b) as f64),
        "UINT8" | "BOOL" => read::<1>(raw, |b| f64::from(b[0])),
        "UINT16" => read::<2>(raw, |b| f64::from(u16::from_le_bytes(b))),
        "UINT32" => read::<4>(raw, |b| f64::from(u32::from_le_bytes(b))),
        "UINT64" => read::<8>(raw, |b| u64::from_le_bytes(b) as f64),
        _ => return None,
    })
}

fn from_contents(datatype: &str, c: &pb::InferTensorContents) -> Option<Vec<f64>> {
    Some(match datatype {
        "FP32" => c.fp32_contents.iter().map(|v| f64::from(*v)).collect(),
        "FP64" => c.fp64_contents.clone(),
        "INT8" | "INT16" | "INT32" => c.int_contents.iter().map(|v| f64::from(*v)).collect(),
        "INT64" => c.int64_contents.iter().map(|v| *v as f64).collect(),
        "UINT8" | "UINT16" | "UINT32" => c.uint_contents.iter().map(|v| f64::from(*v)).collect(),
        "UINT64" => c.uint64_contents.iter().map(|v| *v as f64).collect(),
        "BOOL" => c
            .bool_contents
            .iter()
            .map(|v| f64::from(u8::from(*v)))
            .collect(),
        _ => return None,
    })
}

/// `values` cut into batch rows by `shape`: the first dimension is the
/// batch and the rest one row; a shape of one dimension or none holds one
/// value per row. `None` when the values do not fill the batch evenly.
pub fn rows(shape: &[i64], values: Vec<f64>) -> Option<Vec<Vec<f64>>> {
    if shape.len() <= 1 {
        return Some(values.into_iter().map(|v| vec![v]).collect());
    }
    let batch = shape[0].max(1) as usize;
    if !values.len().is_multiple_of(batch) {
        return None;
    }
    let width = (values.len() / batch).max(1);
    Some(values.chunks(width).map(<[f64]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_typed_contents_read_alike() {
        let raw: Vec<u8> = [1.5f32, -2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let typed = pb::InferTensorContents {
            fp32_contents: vec![1.5, -2.0, 3.0, 4.0],
            ..Default::default()
        };
        let a = values("FP32", Some(&raw), None).unwrap();
        let b = values("FP32", None, Some(&typed)).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            rows(&[2, 2], a).unwrap(),
            vec![vec![1.5, -2.0], vec![3.0, 4.0]]
        );
        let ints: Vec<u8> = [-7i64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(values("INT64", Some(&ints), None).unwrap(), vec![-7.0, 9.0]);
        assert_eq!(
            values("UINT8", Some(&[200, 1]), None).unwrap(),
            vec![200.0, 1.0]
        );
    }

    #[test]
    fn strings_and_uneven_batches_are_refused() {
        assert!(values("BYTES", Some(b"abc"), None).is_none());
        assert!(rows(&[2, 3], vec![0.0; 5]).is_none());
        assert_eq!(rows(&[3], vec![1.0, 2.0, 3.0]).unwrap().len(), 3);
    }
}
