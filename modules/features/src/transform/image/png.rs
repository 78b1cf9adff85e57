//! PNG decoding (pure Rust), converted to RGB the way Pillow's
//! `Image.open(..).convert("RGB")` converts: palettes are looked up, gray is
//! replicated, low bit depths are scaled up, alpha is dropped (not blended)
//! and 16-bit colour samples keep their high byte. One deliberate
//! difference: Pillow opens 16-bit grayscale as `I;16` and clips it to 255
//! when converting; here it keeps the high byte like every other 16-bit PNG.

use std::io::Cursor;

use super::{ImageError, RgbImage};

/// The width and height a PNG declares, read from its header only.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let reader = png::Decoder::new(Cursor::new(bytes))
        .read_info()
        .map_err(decode_error)?;
    let info = reader.info();
    Ok((info.width, info.height))
}

/// Decodes a PNG to RGB, refusing images over `max_pixels` before the
/// pixel buffer is allocated. Only the first frame of an APNG is read, as
/// Pillow reads it by default.
pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    // The decoder's own allocation cap (64 MiB by default) follows the
    // pixel limit: room for 16-bit RGBA rows plus the output.
    let limit = usize::try_from(max_pixels.saturating_mul(16)).unwrap_or(usize::MAX);
    let mut decoder =
        png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: limit });
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(decode_error)?;
    let (width, height) = (reader.info().width, reader.info().height);
    super::check_pixels(width, height, max_pixels)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::Decode("png: image too large".into()))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(decode_error)?;
    let (width, height) = (frame.width, frame.height);
    let pixels = width as usize * height as usize;
    let channels = frame.color_type.samples();
    if frame.bit_depth != png::BitDepth::Eight || buf.len() < pixels * channels {
        return Err(ImageError::Decode("png: unexpected sample layout".into()));
    }
    let src = &buf[..pixels * channels];
    let data = match channels {
        3 => src.to_vec(),
        4 => src
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        1 => src.iter().flat_map(|&g| [g, g, g]).collect(),
        2 => src
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        n => return Err(ImageError::Decode(format!("png: {n} channels"))),
    };
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

fn decode_error(e: png::DecodingError) -> ImageError {
    match e {
        png::DecodingError::LimitsExceeded => {
            ImageError::TooLarge("png: over the decoder's memory limit".into())
        }
        e => ImageError::Decode(format!("png: {e}")),
    }
}
