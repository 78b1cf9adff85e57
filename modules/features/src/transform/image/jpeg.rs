//! JPEG decoding through the system libjpeg-turbo (its TurboJPEG API).
//!
//! libjpeg-turbo is the decoder Pillow ships, and its default decompression
//! (accurate integer IDCT, fancy upsampling) is deterministic across its
//! versions and its SIMD paths, so the pixels here equal Pillow's bit for bit.
//! The pure-Rust decoders tried (zune-jpeg 0.5) differ by up to 4 levels
//! per channel on ordinary 4:2:0 photos, which a 1e-5 parity bound cannot
//! absorb. Only the TurboJPEG 2.x entry points are used; 3.x keeps them.

use std::ffi::{c_char, c_int, c_uchar, c_ulong, c_void, CStr};

use super::{ImageError, RgbImage};

/// `TJPF_RGB`: packed 8-bit R, G, B.
const TJPF_RGB: c_int = 0;
/// `TJCS_CMYK` and `TJCS_YCCK`: four-channel JPEGs, which TurboJPEG cannot turn into RGB.
const TJCS_CMYK: c_int = 3;
const TJCS_YCCK: c_int = 4;
/// `TJERR_WARNING`: the image was decoded but the data had a recoverable flaw.
const TJERR_WARNING: c_int = 0;

#[link(name = "turbojpeg")]
extern "C" {
    fn tjInitDecompress() -> *mut c_void;
    fn tjDecompressHeader3(
        handle: *mut c_void,
        jpeg_buf: *const c_uchar,
        jpeg_size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        jpeg_subsamp: *mut c_int,
        jpeg_colorspace: *mut c_int,
    ) -> c_int;
    fn tjDecompress2(
        handle: *mut c_void,
        jpeg_buf: *const c_uchar,
        jpeg_size: c_ulong,
        dst_buf: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjGetErrorStr2(handle: *mut c_void) -> *mut c_char;
    fn tjGetErrorCode(handle: *mut c_void) -> c_int;
    fn tjDestroy(handle: *mut c_void) -> c_int;
}

/// One TurboJPEG decompressor, destroyed on drop. Not shared between threads.
struct Decompressor(*mut c_void);

impl Decompressor {
    fn new() -> Result<Self, ImageError> {
        // SAFETY: tjInitDecompress has no preconditions; null means failure.
        let handle = unsafe { tjInitDecompress() };
        if handle.is_null() {
            return Err(ImageError::Internal(
                "libturbojpeg: cannot create a decompressor".into(),
            ));
        }
        Ok(Decompressor(handle))
    }

    fn last_error(&self) -> String {
        // SAFETY: the handle is live; libturbojpeg returns a NUL-terminated
        // string that stays valid until the next call on this handle.
        unsafe { CStr::from_ptr(tjGetErrorStr2(self.0)) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe { tjDestroy(self.0) };
    }
}

/// The width and height a JPEG declares, read from its header only.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let dec = Decompressor::new()?;
    header(&dec, bytes).map(|(w, h, _)| (w, h))
}

fn header(dec: &Decompressor, bytes: &[u8]) -> Result<(u32, u32, c_int), ImageError> {
    let size = c_ulong::try_from(bytes.len())
        .map_err(|_| ImageError::Decode("jpeg: input too large".into()))?;
    let (mut w, mut h, mut subsamp, mut colorspace) = (0, 0, 0, 0);
    // SAFETY: the buffer is valid for `size` bytes; the out-pointers are live locals.
    let rc = unsafe {
        tjDecompressHeader3(
            dec.0,
            bytes.as_ptr(),
            size,
            &mut w,
            &mut h,
            &mut subsamp,
            &mut colorspace,
        )
    };
    if rc != 0 {
        return Err(ImageError::Decode(format!("jpeg: {}", dec.last_error())));
    }
    let (w, h) = (u32::try_from(w), u32::try_from(h));
    match (w, h) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h, colorspace)),
        _ => Err(ImageError::Decode("jpeg: invalid dimensions".into())),
    }
}

/// Decodes a JPEG to RGB, refusing images over `max_pixels` before any
/// pixel is allocated. Recoverable data flaws (libjpeg warnings such as extra
/// bytes before a marker) are tolerated as Pillow tolerates them; a
/// truncated file is refused, as Pillow refuses it.
pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    let dec = Decompressor::new()?;
    let (width, height, colorspace) = header(&dec, bytes)?;
    if colorspace == TJCS_CMYK || colorspace == TJCS_YCCK {
        return Err(ImageError::Decode(
            "jpeg: CMYK images are not supported".into(),
        ));
    }
    super::check_pixels(width, height, max_pixels)?;
    let mut data = vec![0u8; width as usize * height as usize * 3];
    // SAFETY: `data` holds width*height*3 bytes, exactly what a pitch-0 RGB
    // decode at the header's size writes; the input slice is valid.
    let rc = unsafe {
        tjDecompress2(
            dec.0,
            bytes.as_ptr(),
            bytes.len() as c_ulong,
            data.as_mut_ptr(),
            width as c_int,
            0,
            height as c_int,
            TJPF_RGB,
            0,
        )
    };
    if rc != 0 {
        // SAFETY: the handle is live.
        let kind = unsafe { tjGetErrorCode(dec.0) };
        let message = dec.last_error();
        // A truncated file is only a warning to libjpeg (the rest is filled
        // with grey); Pillow refuses it ("image file is truncated"), and so
        // does this: it is almost always a broken upload.
        if kind != TJERR_WARNING || message.starts_with("Premature end of JPEG file") {
            return Err(ImageError::Decode(format!("jpeg: {message}")));
        }
        tracing::debug!(warning = %message, "jpeg decoded with a warning");
    }
    Ok(RgbImage {
        width,
        height,
        data,
    })
}
