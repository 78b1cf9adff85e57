//! Tensors as the scheduler moves them: raw little-endian bytes plus a shape.

use bytes::Bytes;

use crate::error::{InferenceError, Result};
use mlserve_common::datatype::{element_count, split_bytes_elements};
use mlserve_common::DataType;

/// One input of one request, validated against the model.
#[derive(Debug, Clone)]
pub struct InputTensor {
    /// Full shape, batch dimension included when the model batches.
    pub shape: Vec<i64>,
    /// Raw data: little-endian elements, or length-prefixed `BYTES` elements.
    pub data: Bytes,
}

/// One request's inputs in the model's input order.
#[derive(Debug, Clone)]
pub struct RequestInputs {
    /// Rows this request adds to a batch (1 when the model does not batch).
    pub rows: usize,
    /// Inputs, in the order of `ModelSpec::inputs`.
    pub tensors: Vec<InputTensor>,
}

impl RequestInputs {
    /// The non-batch part of every input's shape: requests batch together
    /// only when these agree.
    pub fn batch_key(&self) -> impl Iterator<Item = &[i64]> + '_ {
        self.tensors.iter().map(|t| t.shape.get(1..).unwrap_or(&[]))
    }

    /// Whether `other` can share a batch with `self`.
    pub fn batches_with(&self, other: &RequestInputs) -> bool {
        self.batch_key().eq(other.batch_key())
    }
}

/// One output of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Output name.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Full shape of this request's part.
    pub shape: Vec<i64>,
    /// Raw data in the same encoding as inputs.
    pub data: Bytes,
}

/// Splits a whole-batch output into per-request parts by rows along the first
/// dimension: one copy per request, nothing else.
pub fn split_rows(
    name: &str,
    datatype: DataType,
    shape: &[i64],
    data: &[u8],
    rows_per_request: &[usize],
) -> Result<Vec<OutputTensor>> {
    let total_rows: usize = rows_per_request.iter().sum();
    let first = shape.first().copied().unwrap_or(-1);
    if usize::try_from(first).ok() != Some(total_rows) {
        return Err(InferenceError::Internal(format!(
            "output '{name}' has shape {shape:?}, whose first dimension is not the batch of {total_rows} rows"
        )));
    }
    let row_shape = &shape[1..];
    let per_row = element_count(row_shape)
        .ok_or_else(|| InferenceError::Internal(format!("bad shape {shape:?}")))?;
    let mut parts = Vec::with_capacity(rows_per_request.len());
    match datatype.element_size() {
        Some(size) => {
            let row_bytes = per_row * size;
            if data.len() != row_bytes * total_rows {
                return Err(InferenceError::Internal(format!(
                    "output '{name}' holds {} bytes",
                    data.len()
                )));
            }
            let mut offset = 0;
            for &rows in rows_per_request {
                let end = offset + rows * row_bytes;
                parts.push(output_part(
                    name,
                    datatype,
                    rows,
                    row_shape,
                    Bytes::copy_from_slice(&data[offset..end]),
                ));
                offset = end;
            }
        }
        None => {
            let elements = split_bytes_elements(data).map_err(InferenceError::Internal)?;
            let mut cursor = 0;
            let mut offset = 0;
            for &rows in rows_per_request {
                let take = rows * per_row;
                let len: usize = elements[cursor..cursor + take]
                    .iter()
                    .map(|e| 4 + e.len())
                    .sum();
                parts.push(output_part(
                    name,
                    datatype,
                    rows,
                    row_shape,
                    Bytes::copy_from_slice(&data[offset..offset + len]),
                ));
                cursor += take;
                offset += len;
            }
        }
    }
    Ok(parts)
}

fn output_part(
    name: &str,
    datatype: DataType,
    rows: usize,
    row_shape: &[i64],
    data: Bytes,
) -> OutputTensor {
    let mut shape = Vec::with_capacity(row_shape.len() + 1);
    shape.push(rows as i64);
    shape.extend_from_slice(row_shape);
    OutputTensor {
        name: name.to_string(),
        datatype,
        shape,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_common::datatype::push_bytes_element;

    #[test]
    fn fixed_size_outputs_split_by_rows_in_order() {
        let data: Vec<u8> = (0u8..24).collect(); // 3 rows of 2 int32
        let parts = split_rows("y", DataType::Int32, &[3, 2], &data, &[1, 2]).unwrap();
        assert_eq!(parts[0].shape, vec![1, 2]);
        assert_eq!(&parts[0].data[..], &data[..8]);
        assert_eq!(parts[1].shape, vec![2, 2]);
        assert_eq!(&parts[1].data[..], &data[8..]);
    }

    #[test]
    fn bytes_outputs_split_by_elements() {
        let mut data = Vec::new();
        for s in ["a", "bb", "ccc"] {
            push_bytes_element(&mut data, s.as_bytes());
        }
        let parts = split_rows("s", DataType::Bytes, &[3], &data, &[2, 1]).unwrap();
        assert_eq!(
            split_bytes_elements(&parts[0].data).unwrap(),
            vec![&b"a"[..], &b"bb"[..]]
        );
        assert_eq!(
            split_bytes_elements(&parts[1].data).unwrap(),
            vec![&b"ccc"[..]]
        );
    }

    #[test]
    fn an_output_without_the_batch_dimension_is_an_error() {
        assert!(split_rows("y", DataType::Fp32, &[4], &[0; 16], &[1, 2]).is_err());
    }
}
