//! JPEG decoding through the system libjpeg-turbo, by the `turbojpeg` crate.
//!
//! libjpeg-turbo is the decoder Pillow ships, and its default decompression
//! (accurate integer IDCT, fancy upsampling) is deterministic across its
//! versions and its SIMD paths, so the pixels here equal Pillow's bit for bit.
//! The pure-Rust decoders tried (zune-jpeg 0.5) differ by up to 4 levels
//! per channel on ordinary 4:2:0 photos, which a 1e-5 parity bound cannot
//! absorb. `turbojpeg` 0.5 speaks the TurboJPEG 2.x API, which the system
//! library (Debian's libturbojpeg 2.1, found by pkg-config) provides.

use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat};

use super::{ImageError, RgbImage};

/// How libjpeg words its recoverable warnings (the `JWRN_*` texts of its
/// jerror.h, a table unchanged for decades); no fatal error shares them.
/// TurboJPEG fails a decode that raised one, although every pixel was written,
/// and the crate keeps the error code that would tell, so the first warning's
/// text (the one TurboJPEG reports) is what tells. A truncated file's warning,
/// "Premature end of JPEG file", is left out on purpose: the rest of such an
/// image is grey fill, Pillow refuses it ("image file is truncated"), and so
/// does this, as it is almost always a broken upload.
const RECOVERABLE: [&str; 5] = [
    // extraneous bytes before a marker, a bad Huffman or arithmetic code,
    // a segment ended early, a wrong restart marker, a bad ICC marker
    "Corrupt JPEG data: ",
    "Unknown Adobe color transform code ",
    "Inconsistent progression sequence ",
    "Warning: unknown JFIF revision number ",
    "Invalid SOS parameters for sequential JPEG",
];

/// Whether TurboJPEG's message is one of libjpeg's recoverable warnings.
fn is_recoverable(message: &str) -> bool {
    RECOVERABLE.iter().any(|w| message.starts_with(w))
}

/// A bad-image error (400) from what TurboJPEG said.
fn bad_image(err: turbojpeg::Error) -> ImageError {
    match err {
        turbojpeg::Error::TurboJpegError(message) => ImageError::Decode(format!("jpeg: {message}")),
        other => ImageError::Decode(format!("jpeg: {other}")),
    }
}

fn decompressor() -> Result<Decompressor, ImageError> {
    Decompressor::new().map_err(|e| {
        ImageError::Internal(format!("libturbojpeg: cannot create a decompressor: {e}"))
    })
}

/// The width, height and colour space a JPEG declares, from its header only.
/// A warning raised by the header itself refuses the image, as TurboJPEG does.
fn header(dec: &mut Decompressor, bytes: &[u8]) -> Result<(u32, u32, Colorspace), ImageError> {
    let h = dec.read_header(bytes).map_err(bad_image)?;
    match (u32::try_from(h.width), u32::try_from(h.height)) {
        (Ok(w), Ok(ht)) if w > 0 && ht > 0 => Ok((w, ht, h.colorspace)),
        _ => Err(ImageError::Decode("jpeg: invalid dimensions".into())),
    }
}

/// The width and height a JPEG declares, read from its header only.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    header(&mut decompressor()?, bytes).map(|(w, h, _)| (w, h))
}

/// Decodes a JPEG to RGB, refusing images over `max_pixels` before any
/// pixel is allocated. Recoverable data flaws in the image data (libjpeg
/// warnings such as extra bytes before a marker) are tolerated as Pillow
/// tolerates them; a truncated file is refused, as Pillow refuses it.
pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    let mut dec = decompressor()?;
    let (width, height, colorspace) = header(&mut dec, bytes)?;
    if matches!(colorspace, Colorspace::CMYK | Colorspace::YCCK) {
        return Err(ImageError::Decode(
            "jpeg: CMYK images are not supported".into(),
        ));
    }
    super::check_pixels(width, height, max_pixels)?;
    let (w, h) = (width as usize, height as usize);
    let mut data = vec![0u8; w * h * 3];
    let out = Image {
        pixels: data.as_mut_slice(),
        width: w,
        pitch: w * 3,
        height: h,
        format: PixelFormat::RGB,
    };
    match dec.decompress(bytes, out) {
        Ok(()) => {}
        Err(turbojpeg::Error::TurboJpegError(message)) if is_recoverable(&message) => {
            tracing::debug!(warning = %message, "jpeg decoded with a warning");
        }
        Err(e) => return Err(bad_image(e)),
    }
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_proto::ErrorCode;

    /// A 64x48 4:2:0 JPEG of a noisy gradient, written by libjpeg-turbo.
    fn jpeg() -> Vec<u8> {
        let (w, h) = (64usize, 48usize);
        let pixels: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i * 7 + (i / 3) * 13 + (i * i) % 17) % 256) as u8)
            .collect();
        let image = Image {
            pixels: pixels.as_slice(),
            width: w,
            pitch: w * 3,
            height: h,
            format: PixelFormat::RGB,
        };
        let out = turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2).expect("compress");
        out.to_vec()
    }

    fn code(bytes: &[u8]) -> ErrorCode {
        decode(bytes, u64::MAX).expect_err("refused").code()
    }

    #[test]
    fn extra_bytes_before_the_end_are_a_warning_and_decode_the_same_pixels() {
        let clean = jpeg();
        assert_eq!(&clean[clean.len() - 2..], b"\xFF\xD9");
        let mut flawed = clean[..clean.len() - 2].to_vec();
        flawed.extend_from_slice(&[0x11; 40]);
        flawed.extend_from_slice(b"\xFF\xD9");
        // TurboJPEG itself fails the decode with the warning ...
        let mut dec = Decompressor::new().expect("decompressor");
        let mut scratch = vec![0u8; 64 * 48 * 3];
        let out = Image {
            pixels: scratch.as_mut_slice(),
            width: 64,
            pitch: 64 * 3,
            height: 48,
            format: PixelFormat::RGB,
        };
        match dec.decompress(&flawed, out) {
            // (the entropy decoder reads a few of the 40 bytes ahead)
            Err(turbojpeg::Error::TurboJpegError(m)) => assert!(
                m.starts_with("Corrupt JPEG data: ")
                    && m.ends_with("extraneous bytes before marker 0xd9"),
                "{m}"
            ),
            other => panic!("expected the warning, got {other:?}"),
        }
        // ... which is tolerated here, with every pixel decoded.
        let want = decode(&clean, u64::MAX).expect("clean");
        let got = decode(&flawed, u64::MAX).expect("tolerated warning");
        assert_eq!(got, want);
        assert_eq!(dimensions(&flawed).expect("dimensions"), (64, 48));
    }

    #[test]
    fn a_warning_in_the_header_a_truncation_and_garbage_are_bad_requests() {
        let clean = jpeg();
        // Garbage between the APP0 segment and the next marker: libjpeg
        // warns while reading the header, and TurboJPEG fails the header.
        let app0_end = 4 + usize::from(u16::from_be_bytes([clean[4], clean[5]]));
        let mut in_header = clean[..app0_end].to_vec();
        in_header.extend_from_slice(b"\x11\x22\x33");
        in_header.extend_from_slice(&clean[app0_end..]);
        assert_eq!(code(&in_header), ErrorCode::BadRequest);
        assert_eq!(code(&clean[..clean.len() * 2 / 3]), ErrorCode::BadRequest);
        let err = decode(&clean[..clean.len() * 2 / 3], u64::MAX).expect_err("truncated");
        assert!(
            err.to_string().contains("Premature end of JPEG file"),
            "{err}"
        );
        assert_eq!(code(b"\xFF\xD8\xFFnot a jpeg"), ErrorCode::BadRequest);
        assert_eq!(code(&clean[..20]), ErrorCode::BadRequest);
    }

    #[test]
    fn only_libjpeg_warnings_count_as_recoverable() {
        assert!(is_recoverable(
            "Corrupt JPEG data: 3 extraneous bytes before marker 0xd9"
        ));
        assert!(is_recoverable("Corrupt JPEG data: bad Huffman code"));
        assert!(!is_recoverable("Premature end of JPEG file"));
        assert!(!is_recoverable("Bogus marker length"));
        assert!(!is_recoverable("Not a JPEG file: starts with 0x89 0x50"));
        assert!(!is_recoverable(
            "tjDecompress2(): Memory allocation failure"
        ));
    }
}
