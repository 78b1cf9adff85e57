//! The image transform: JPEG or PNG bytes in, a normalised f32 tensor out.
//!
//! The default [`ImageSpec`] is the torchvision ResNet-50 recipe: resize the
//! shorter side to 256 (bilinear, antialiased as Pillow does it), centre-crop
//! 224 x 224, scale to [0, 1], subtract the ImageNet mean and divide by its
//! standard deviation, lay out as NCHW RGB. For the same bytes the output
//! equals Pillow + numpy (`scripts/reference/image_reference.py`) bit for bit
//! on 8-bit images: libjpeg-turbo decodes, the resampling reproduces
//! Pillow's fixed-point arithmetic, and normalisation is the same f32 ops.
//!
//! As with Pillow's `Image.open`, EXIF orientation is not applied. CMYK
//! JPEGs are refused (400); 16-bit grayscale PNGs keep their high byte where
//! Pillow would clip them.
//!
//! All functions here are synchronous CPU work: call them from a blocking pool.

mod jpeg;
mod png;
mod resample;

use mlserve_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use resample::Window;

/// How an image is resized (Pillow's resampling filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Nearest neighbour (`Image.NEAREST`).
    Nearest,
    /// Box filter (`Image.BOX`).
    Box,
    /// Bilinear, antialiased when downscaling (`Image.BILINEAR`); the torchvision default.
    #[default]
    Bilinear,
    /// Hamming window (`Image.HAMMING`).
    Hamming,
    /// Bicubic with a = -0.5 (`Image.BICUBIC`); timm's usual choice.
    Bicubic,
    /// Lanczos-3 (`Image.LANCZOS`).
    Lanczos,
}

/// Memory order of the output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Layout {
    /// Channels first: `[N, 3, H, W]` (PyTorch, ONNX exports of torchvision models).
    #[default]
    Nchw,
    /// Channels last: `[N, H, W, 3]` (TensorFlow / Keras).
    Nhwc,
}

/// What the image transform does. Every field has the ResNet-50 default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSpec {
    /// Resize so the shorter side has this many pixels, keeping the aspect
    /// ratio (the longer side is truncated as torchvision truncates it).
    /// 0 keeps the decoded size.
    pub resize: u32,
    /// Centre crop `[height, width]`, taken after the resize; it must fit in
    /// the resized image. `[0, 0]` keeps the whole (resized) image, which
    /// then must have the same size for every image of a batch.
    pub crop: [u32; 2],
    /// Resampling filter of the resize.
    pub interpolation: Interpolation,
    /// Samples are divided by this first (255 scales to [0, 1]; 1 keeps 0..255).
    pub scale: f32,
    /// Per-channel mean (R, G, B) subtracted after scaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B) the result is divided by.
    pub std: [f32; 3],
    /// Output layout.
    pub layout: Layout,
    /// Largest decoded image accepted, in pixels (width x height); larger
    /// images are refused before their pixels are allocated.
    pub max_pixels: u64,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            resize: 256,
            crop: [224, 224],
            interpolation: Interpolation::Bilinear,
            scale: 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            layout: Layout::Nchw,
            max_pixels: 40_000_000,
        }
    }
}

/// Why an image could not be transformed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not a JPEG or PNG this decoder can read.
    #[error("bad image: {0}")]
    Decode(String),
    /// The image is larger than the spec allows.
    #[error("image too large: {0}")]
    TooLarge(String),
    /// The spec itself is unusable (zero std, a crop that cannot fit, ...).
    #[error("invalid image spec: {0}")]
    InvalidSpec(String),
    /// Images of one batch produced tensors of different shapes.
    #[error("images of a batch differ in size: {0}")]
    ShapeMismatch(String),
    /// The decoder library failed in a way the input does not explain.
    #[error("image decoder failure: {0}")]
    Internal(String),
}

impl ImageError {
    /// The shared error code (and so the HTTP status and gRPC code) of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ImageError::Decode(_) | ImageError::InvalidSpec(_) | ImageError::ShapeMismatch(_) => {
                ErrorCode::BadRequest
            }
            ImageError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            ImageError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// A decoded 8-bit RGB image, rows top to bottom, pixels packed R, G, B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` samples.
    pub data: Vec<u8>,
}

/// The container format, recognised from the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG (JFIF, Exif, ...): starts with FF D8 FF.
    Jpeg,
    /// PNG: starts with the 8-byte PNG signature.
    Png,
}

/// Recognises JPEG and PNG by their signatures.
pub fn sniff(bytes: &[u8]) -> Result<Format, ImageError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(Format::Png)
    } else if bytes.is_empty() {
        Err(ImageError::Decode("empty input".into()))
    } else {
        Err(ImageError::Decode("not a JPEG or PNG".into()))
    }
}

fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), ImageError> {
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(ImageError::TooLarge(format!(
            "{width}x{height} is {pixels} pixels, over the limit of {max_pixels}"
        )));
    }
    Ok(())
}

/// Decodes a JPEG or PNG to 8-bit RGB (as Pillow's `convert("RGB")` would),
/// refusing images over `max_pixels`.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    match sniff(bytes)? {
        Format::Jpeg => jpeg::decode(bytes, max_pixels),
        Format::Png => png::decode(bytes, max_pixels),
    }
}

/// The width and height an image declares, from its header alone.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    match sniff(bytes)? {
        Format::Jpeg => jpeg::dimensions(bytes),
        Format::Png => png::dimensions(bytes),
    }
}

impl ImageSpec {
    /// Checks the values that would make every transform fail or produce garbage.
    pub fn validate(&self) -> Result<(), ImageError> {
        let bad = |m: String| Err(ImageError::InvalidSpec(m));
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite())
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return bad(format!(
                "mean {:?} and std {:?} must be finite, std non-zero",
                self.mean, self.std
            ));
        }
        if self.scale == 0.0 || !self.scale.is_finite() {
            return bad(format!(
                "scale must be finite and non-zero, not {}",
                self.scale
            ));
        }
        if (self.crop[0] == 0) != (self.crop[1] == 0) {
            return bad(format!(
                "crop {:?}: both sides or neither must be 0",
                self.crop
            ));
        }
        if self.resize > 0 && self.crop[0].min(self.crop[1]) > self.resize {
            return bad(format!(
                "crop {:?} cannot fit in a shorter side of {}",
                self.crop, self.resize
            ));
        }
        Ok(())
    }

    /// The size the resize step gives an image of `width` x `height`:
    /// torchvision's `Resize(int)` rule (shorter side to `resize`, the longer
    /// one `int(resize * long / short)`).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        if self.resize == 0 {
            return (width, height);
        }
        let (short, long) = if width <= height {
            (width, height)
        } else {
            (height, width)
        };
        let new_long = (self.resize as f64 * long as f64 / short as f64) as u32;
        if width <= height {
            (self.resize, new_long)
        } else {
            (new_long, self.resize)
        }
    }

    /// The `[H, W]` an image of `width` x `height` ends up with.
    fn output_window(&self, width: u32, height: u32) -> Result<(u32, u32, Window), ImageError> {
        let (rw, rh) = self.resized_size(width, height);
        // A very thin image resized by its shorter side grows without bound.
        if rw as u64 * rh as u64 > self.max_pixels {
            return Err(ImageError::TooLarge(format!(
                "a {width}x{height} image resized to {rw}x{rh} is over the limit of {} pixels",
                self.max_pixels
            )));
        }
        let [ch, cw] = if self.crop == [0, 0] {
            [rh, rw]
        } else {
            self.crop
        };
        if ch > rh || cw > rw || rw == 0 || rh == 0 {
            return Err(ImageError::Decode(format!(
                "a {width}x{height} image resized to {rw}x{rh} cannot be cropped to {cw}x{ch}"
            )));
        }
        // torchvision: int(round((size - crop) / 2.0)), Python's round-half-even.
        let offset = |size: u32, crop: u32| ((size - crop) as f64 / 2.0).round_ties_even() as u32;
        let window = Window {
            left: offset(rw, cw),
            top: offset(rh, ch),
            width: cw,
            height: ch,
        };
        Ok((rw, rh, window))
    }

    /// The shape of one transformed image, `[1, 3, H, W]` or `[1, H, W, 3]`,
    /// when the spec fixes it (a crop is set).
    pub fn fixed_shape(&self) -> Option<[usize; 4]> {
        (self.crop != [0, 0]).then(|| self.shape(1, self.crop[0], self.crop[1]))
    }

    fn shape(&self, n: usize, h: u32, w: u32) -> [usize; 4] {
        match self.layout {
            Layout::Nchw => [n, 3, h as usize, w as usize],
            Layout::Nhwc => [n, h as usize, w as usize, 3],
        }
    }

    /// Per channel, the normalised value of every possible sample: the same
    /// f32 operations numpy performs per element, `(v / scale - mean) / std`.
    fn table(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0f32; 256]; 3];
        for (c, row) in lut.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                *out = (v as f32 / self.scale - self.mean[c]) / self.std[c];
            }
        }
        lut
    }
}

/// Resizes and crops a decoded image as `spec` says, without normalising.
pub fn resize_crop(spec: &ImageSpec, img: &RgbImage) -> Result<RgbImage, ImageError> {
    let (rw, rh, window) = spec.output_window(img.width, img.height)?;
    Ok(resample::resize_window(
        img,
        rw,
        rh,
        window,
        spec.interpolation,
    ))
}

/// Transforms one encoded image: returns the shape (`[1, 3, H, W]` for NCHW,
/// `[1, H, W, 3]` for NHWC) and the f32 values in that order.
pub fn transform(spec: &ImageSpec, bytes: &[u8]) -> Result<([usize; 4], Vec<f32>), ImageError> {
    spec.validate()?;
    let mut out = Vec::new();
    let (h, w) = transform_into(spec, &spec.table(), bytes, &mut out)?;
    Ok((spec.shape(1, h, w), out))
}

/// Transforms a batch of encoded images into one tensor `[N, ...]`. Every
/// image must come out the same size (always true when a crop is set); the
/// error names the first one that fails, by index.
pub fn transform_batch<B: AsRef<[u8]>>(
    spec: &ImageSpec,
    images: &[B],
) -> Result<([usize; 4], Vec<f32>), ImageError> {
    spec.validate()?;
    let lut = spec.table();
    let mut out = Vec::new();
    let mut size = None;
    for (i, bytes) in images.iter().enumerate() {
        let hw =
            transform_into(spec, &lut, bytes.as_ref(), &mut out).map_err(|e| at_index(i, e))?;
        match size {
            None => size = Some(hw),
            Some(first) if first != hw => {
                return Err(ImageError::ShapeMismatch(format!(
                    "image {i} is {}x{}, image 0 is {}x{}",
                    hw.1, hw.0, first.1, first.0
                )))
            }
            Some(_) => {}
        }
    }
    let (h, w) = size.unwrap_or((spec.crop[0], spec.crop[1]));
    Ok((spec.shape(images.len(), h, w), out))
}

fn at_index(i: usize, e: ImageError) -> ImageError {
    match e {
        ImageError::Decode(m) => ImageError::Decode(format!("image {i}: {m}")),
        ImageError::TooLarge(m) => ImageError::TooLarge(format!("image {i}: {m}")),
        other => other,
    }
}

/// Decodes, resizes, crops and normalises one image, appending to `out`;
/// returns the output height and width.
fn transform_into(
    spec: &ImageSpec,
    lut: &[[f32; 256]; 3],
    bytes: &[u8],
    out: &mut Vec<f32>,
) -> Result<(u32, u32), ImageError> {
    let img = decode(bytes, spec.max_pixels)?;
    let img = resize_crop(spec, &img)?;
    let plane = img.width as usize * img.height as usize;
    let start = out.len();
    out.resize(start + plane * 3, 0.0);
    let dst = &mut out[start..];
    match spec.layout {
        Layout::Nchw => {
            let (r, rest) = dst.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (i, px) in img.data.chunks_exact(3).enumerate() {
                r[i] = lut[0][px[0] as usize];
                g[i] = lut[1][px[1] as usize];
                b[i] = lut[2][px[2] as usize];
            }
        }
        Layout::Nhwc => {
            for (o, px) in dst.chunks_exact_mut(3).zip(img.data.chunks_exact(3)) {
                o[0] = lut[0][px[0] as usize];
                o[1] = lut[1][px[1] as usize];
                o[2] = lut[2][px[2] as usize];
            }
        }
    }
    Ok((img.height, img.width))
}
