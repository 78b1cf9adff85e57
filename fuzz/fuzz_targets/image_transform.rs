//! JPEG and PNG through the features role's image transform
//! (`transform/image.rs`: libjpeg-turbo or the png crate, then Pillow's
//! resampling, crop and normalisation). The first byte picks the spec
//! (resize, crop, filter, layout; a 1-megapixel limit keeps runs fast);
//! the rest is the encoded image. Checked: no panic (a 400 is fine); a
//! decoded image has width x height x 3 samples and the size its header
//! declares; a transformed tensor has the values its shape says, all finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlserve_features::transform::image::{
    decode, dimensions, transform, ImageSpec, Interpolation, Layout,
};

const MAX_PIXELS: u64 = 1 << 20;
const FILTERS: [Interpolation; 6] = [
    Interpolation::Nearest,
    Interpolation::Box,
    Interpolation::Bilinear,
    Interpolation::Hamming,
    Interpolation::Bicubic,
    Interpolation::Lanczos,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let (resize, crop) = match pick & 3 {
        0 => (16, [8, 8]),
        1 => (0, [0, 0]),
        2 => (7, [0, 0]),
        _ => (32, [32, 5]),
    };
    let spec = ImageSpec {
        resize,
        crop,
        interpolation: FILTERS[usize::from(pick >> 2 & 7) % FILTERS.len()],
        layout: if pick & 0x80 == 0 {
            Layout::Nchw
        } else {
            Layout::Nhwc
        },
        max_pixels: MAX_PIXELS,
        ..ImageSpec::default()
    };
    if let Ok(img) = decode(bytes, MAX_PIXELS) {
        assert_eq!(img.data.len(), img.width as usize * img.height as usize * 3);
        assert_eq!(dimensions(bytes).ok(), Some((img.width, img.height)));
    }
    if let Ok((shape, values)) = transform(&spec, bytes) {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "{shape:?}");
        assert!(values.iter().all(|v| v.is_finite()));
    }
});
