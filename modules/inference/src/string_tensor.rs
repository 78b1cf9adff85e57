//! ONNX string tensors that carry arbitrary bytes, as Triton's BYTES do.
//!
//! An ONNX Runtime string element is a `std::string`: any bytes, NUL and
//! non-UTF-8 included. `ort`'s own constructor goes through `FillStringTensor`
//! (C strings, cut at the first NUL) and its extractor insists on UTF-8, so
//! both directions are written here against the C API: each element's buffer
//! is sized with `GetResizedStringTensorElementBuffer` and filled by copy, and
//! the output is read whole with `GetStringTensorContent` and its offsets.

use std::ptr::{self, NonNull};

use ort::memory::Allocator;
use ort::value::{DynValue, TensorElementType};
use ort::AsPointer;

use mlserve_common::datatype::push_bytes_element;

/// Builds a string tensor of `shape` from `elements`, byte for byte.
///
/// `elements` must hold exactly as many items as the shape has elements.
pub fn bytes_tensor<'a>(
    shape: &[i64],
    elements: impl ExactSizeIterator<Item = &'a [u8]>,
) -> ort::Result<DynValue> {
    let count: i64 = shape.iter().product();
    if usize::try_from(count).ok() != Some(elements.len()) {
        return Err(ort::Error::new(format!(
            "{} string elements for a tensor of shape {shape:?}",
            elements.len()
        )));
    }
    let mut allocator = Allocator::default();
    let mut value: *mut ort::sys::OrtValue = ptr::null_mut();
    // SAFETY: the allocator and shape outlive the call; `value` receives a new
    // tensor that `DynValue::from_ptr` below takes ownership of.
    unsafe {
        ort::Error::result_from_status((ort::api().CreateTensorAsOrtValue)(
            allocator.ptr_mut(),
            shape.as_ptr(),
            shape.len(),
            TensorElementType::String.into(),
            &mut value,
        ))?;
    }
    let value = NonNull::new(value).ok_or_else(|| ort::Error::new("no string tensor"))?;
    // SAFETY: `value` is the tensor just created with `allocator`.
    let tensor = unsafe { DynValue::from_ptr(value, Some(&allocator)) };
    for (index, element) in elements.enumerate() {
        let mut buffer: *mut std::ffi::c_char = ptr::null_mut();
        // SAFETY: `index` is within the tensor; ONNX Runtime sizes element
        // `index` to `element.len()` bytes and hands back its buffer, which
        // is then filled with exactly that many bytes.
        unsafe {
            ort::Error::result_from_status((ort::api().GetResizedStringTensorElementBuffer)(
                value.as_ptr(),
                index,
                element.len(),
                &mut buffer,
            ))?;
            if !element.is_empty() {
                ptr::copy_nonoverlapping(element.as_ptr(), buffer.cast::<u8>(), element.len());
            }
        }
    }
    Ok(tensor)
}

/// The elements of the string tensor `value` (of `count` elements) in the v2
/// BYTES encoding: each one a little-endian u32 length and its bytes.
pub fn tensor_bytes(value: &DynValue, count: usize) -> ort::Result<Vec<u8>> {
    let api = ort::api();
    let mut total = 0usize;
    // SAFETY: `value` is a live string tensor of `count` elements; the content
    // buffer holds `total` bytes and `offsets` one entry per element.
    let (content, offsets) = unsafe {
        ort::Error::result_from_status((api.GetStringTensorDataLength)(value.ptr(), &mut total))?;
        let mut content = vec![0u8; total];
        let mut offsets = vec![0usize; count];
        ort::Error::result_from_status((api.GetStringTensorContent)(
            value.ptr(),
            content.as_mut_ptr().cast(),
            total,
            offsets.as_mut_ptr(),
            count,
        ))?;
        (content, offsets)
    };
    let mut raw = Vec::with_capacity(total + 4 * count);
    for (i, &start) in offsets.iter().enumerate() {
        let end = offsets.get(i + 1).copied().unwrap_or(total);
        let element = content
            .get(start..end)
            .ok_or_else(|| ort::Error::new("string tensor offsets out of order"))?;
        push_bytes_element(&mut raw, element);
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_common::datatype::split_bytes_elements;

    fn load_onnx_runtime() {
        let library = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.onnxruntime/libonnxruntime.so");
        crate::ort_env::environment(Some(&library), 1).expect("ONNX Runtime (scripts/setup.sh)");
    }

    #[test]
    fn any_bytes_round_trip_through_a_string_tensor() {
        load_onnx_runtime();
        let elements: [&[u8]; 5] = [b"a\0b", b"", b"caf\xe9", b"\0", b"plain text"];
        let tensor = bytes_tensor(&[5], elements.iter().copied()).unwrap();
        let raw = tensor_bytes(&tensor, 5).unwrap();
        assert_eq!(split_bytes_elements(&raw).unwrap(), elements.to_vec());
    }

    #[test]
    fn a_count_that_does_not_fit_the_shape_is_refused() {
        load_onnx_runtime();
        let elements: [&[u8]; 2] = [b"a", b"b"];
        assert!(bytes_tensor(&[3], elements.iter().copied()).is_err());
    }
}
