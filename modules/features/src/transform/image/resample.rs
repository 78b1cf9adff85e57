//! Resizing that reproduces Pillow's `Image.resize` on 8-bit RGB exactly.
//!
//! The convolution filters follow Pillow's published algorithm: for each
//! output index the source window is centred at `(i + 0.5) * scale`, widened
//! by the filter support times `max(scale, 1)` (which is what makes
//! downscaling antialiased), weights are normalised in f64, then turned into
//! 22-bit fixed point; the image is filtered horizontally first, each pass
//! rounding and clamping to u8. Nearest follows Pillow's affine scaling: the
//! source coordinate is accumulated in f64 from `scale / 2` and truncated.
//!
//! Every output pixel depends only on its own window, so only the pixels of
//! the crop are computed; the result equals resizing fully, then cropping.

use super::{Interpolation, RgbImage};

/// Fixed-point precision of the weights: 32 bits minus 8 for the sample and
/// 2 for the sign and headroom (Pillow's choice, needed for equal rounding).
const PRECISION_BITS: u32 = 22;

/// A rectangle of the resized image: left, top, width, height.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// The filter of an interpolation and its support (radius at scale 1).
fn filter(interp: Interpolation) -> (fn(f64) -> f64, f64) {
    match interp {
        Interpolation::Box => (box_filter, 0.5),
        Interpolation::Bilinear => (bilinear_filter, 1.0),
        Interpolation::Hamming => (hamming_filter, 1.0),
        Interpolation::Bicubic => (bicubic_filter, 2.0),
        Interpolation::Lanczos => (lanczos_filter, 3.0),
        // Nearest never reaches the convolution; see `nearest_table`.
        Interpolation::Nearest => (box_filter, 0.5),
    }
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
    } else {
        0.0
    }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let x = x * std::f64::consts::PI;
    // Pillow writes these two constants as C floats.
    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
}

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Fixed-point weights for a range of output indices along one axis.
struct Coeffs {
    /// Per output index: first source index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `bounds.len() * ksize` weights; the taps of output `i` start at `i * ksize`.
    weights: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    fn new(in_size: u32, out_size: u32, first: u32, count: u32, interp: Interpolation) -> Coeffs {
        let (f, support) = filter(interp);
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(count as usize);
        let mut weights = vec![0i32; count as usize * ksize];
        let mut taps = vec![0f64; ksize];
        for (i, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // Truncation toward zero, then clamping, as Pillow rounds the bounds.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for (x, tap) in taps.iter_mut().enumerate().take(n) {
                *tap = f((x as f64 + xmin as f64 - center + 0.5) * ss);
                ww += *tap;
            }
            for (x, tap) in taps.iter().enumerate().take(n) {
                let k = if ww != 0.0 { tap / ww } else { *tap };
                let fixed = k * (1u32 << PRECISION_BITS) as f64;
                weights[i * ksize + x] = if k < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, n));
        }
        Coeffs {
            bounds,
            weights,
            ksize,
        }
    }

    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (xmin, n) = self.bounds[i];
        (xmin, &self.weights[i * self.ksize..i * self.ksize + n])
    }
}

/// Rounds and clamps a fixed-point sum to a sample.
#[inline]
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes `img` to `out_w` x `out_h` with `interp` and returns only `window`
/// of the result (which must lie inside `out_w` x `out_h`).
pub(super) fn resize_window(
    img: &RgbImage,
    out_w: u32,
    out_h: u32,
    window: Window,
    interp: Interpolation,
) -> RgbImage {
    if interp == Interpolation::Nearest {
        return nearest(img, out_w, out_h, window);
    }
    let in_w = img.width as usize;
    let (cw, ch) = (window.width as usize, window.height as usize);
    let need_h = out_w != img.width;
    let need_v = out_h != img.height;
    let vert = need_v.then(|| Coeffs::new(img.height, out_h, window.top, window.height, interp));
    // The source rows the vertical pass reads (or the crop's rows if none).
    let (r0, r1) = match &vert {
        Some(v) => {
            let first = v.bounds.iter().map(|b| b.0).min().unwrap_or(0);
            let last = v.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
            (first, last.max(first))
        }
        None => (window.top as usize, (window.top + window.height) as usize),
    };
    let mut tmp = vec![0u8; (r1 - r0) * cw * 3];
    if need_h {
        let horiz = Coeffs::new(img.width, out_w, window.left, window.width, interp);
        for (row, out) in (r0..r1).zip(tmp.chunks_exact_mut(cw * 3)) {
            let src = &img.data[row * in_w * 3..(row + 1) * in_w * 3];
            for (j, px) in out.chunks_exact_mut(3).enumerate() {
                let (xmin, k) = horiz.taps(j);
                let mut s = [HALF; 3];
                let taps = &src[xmin * 3..(xmin + k.len()) * 3];
                for (p, &w) in taps.chunks_exact(3).zip(k) {
                    s[0] += p[0] as i32 * w;
                    s[1] += p[1] as i32 * w;
                    s[2] += p[2] as i32 * w;
                }
                px.copy_from_slice(&[clip8(s[0]), clip8(s[1]), clip8(s[2])]);
            }
        }
    } else {
        let left = window.left as usize * 3;
        for (row, out) in (r0..r1).zip(tmp.chunks_exact_mut(cw * 3)) {
            let start = row * in_w * 3 + left;
            out.copy_from_slice(&img.data[start..start + cw * 3]);
        }
    }
    let data = match vert {
        None => tmp,
        Some(vert) => {
            let stride = cw * 3;
            let mut out = vec![0u8; ch * stride];
            // Tap-major accumulation over whole rows: contiguous, vectorisable.
            let mut acc = vec![0i32; stride];
            for (i, row) in out.chunks_exact_mut(stride).enumerate() {
                let (ymin, k) = vert.taps(i);
                acc.fill(HALF);
                for (t, &w) in k.iter().enumerate() {
                    let src = &tmp[(ymin + t - r0) * stride..(ymin + t - r0 + 1) * stride];
                    for (a, &v) in acc.iter_mut().zip(src) {
                        *a += v as i32 * w;
                    }
                }
                for (o, &a) in row.iter_mut().zip(&acc) {
                    *o = clip8(a);
                }
            }
            out
        }
    };
    RgbImage {
        width: window.width,
        height: window.height,
        data,
    }
}

/// Pillow's nearest-neighbour source index for each output index along one
/// axis: `(i + 0.5) * scale`, accumulated in f64 and truncated.
fn nearest_table(in_size: u32, out_size: u32) -> Vec<usize> {
    let step = in_size as f64 / out_size as f64;
    let mut pos = step * 0.5;
    let mut table = Vec::with_capacity(out_size as usize);
    for _ in 0..out_size {
        table.push((pos.max(0.0) as usize).min(in_size as usize - 1));
        pos += step;
    }
    table
}

fn nearest(img: &RgbImage, out_w: u32, out_h: u32, window: Window) -> RgbImage {
    let xs = nearest_table(img.width, out_w);
    let ys = nearest_table(img.height, out_h);
    let (l, t) = (window.left as usize, window.top as usize);
    let mut data = Vec::with_capacity(window.width as usize * window.height as usize * 3);
    for &y in &ys[t..t + window.height as usize] {
        let row = &img.data[y * img.width as usize * 3..];
        for &x in &xs[l..l + window.width as usize] {
            data.extend_from_slice(&row[x * 3..x * 3 + 3]);
        }
    }
    RgbImage {
        width: window.width,
        height: window.height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: u32, h: u32) -> RgbImage {
        let data = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for interp in [
            Interpolation::Bilinear,
            Interpolation::Bicubic,
            Interpolation::Lanczos,
        ] {
            let c = Coeffs::new(640, 256, 0, 256, interp);
            for i in 0..256 {
                let sum: i32 = c.taps(i).1.iter().sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= c.ksize as i32,
                    "{interp:?} {i}: {sum}"
                );
            }
        }
    }

    #[test]
    fn window_equals_crop_of_full_resize() {
        let img = image(97, 61);
        for interp in [
            Interpolation::Nearest,
            Interpolation::Bilinear,
            Interpolation::Bicubic,
        ] {
            let full = resize_window(
                &img,
                40,
                50,
                Window {
                    left: 0,
                    top: 0,
                    width: 40,
                    height: 50,
                },
                interp,
            );
            let win = resize_window(
                &img,
                40,
                50,
                Window {
                    left: 7,
                    top: 11,
                    width: 20,
                    height: 30,
                },
                interp,
            );
            for y in 0..30 {
                let a = &full.data[((y + 11) * 40 + 7) * 3..((y + 11) * 40 + 27) * 3];
                assert_eq!(a, &win.data[y * 60..(y + 1) * 60], "{interp:?} row {y}");
            }
        }
    }

    #[test]
    fn same_size_is_a_copy_and_constant_stays_constant() {
        let img = image(31, 17);
        let same = resize_window(
            &img,
            31,
            17,
            Window {
                left: 0,
                top: 0,
                width: 31,
                height: 17,
            },
            Interpolation::Bicubic,
        );
        assert_eq!(same.data, img.data);
        let flat = RgbImage {
            width: 50,
            height: 40,
            data: vec![200; 50 * 40 * 3],
        };
        for interp in [
            Interpolation::Box,
            Interpolation::Hamming,
            Interpolation::Lanczos,
            Interpolation::Bilinear,
        ] {
            let out = resize_window(
                &flat,
                23,
                71,
                Window {
                    left: 0,
                    top: 0,
                    width: 23,
                    height: 71,
                },
                interp,
            );
            assert!(out.data.iter().all(|&v| v == 200), "{interp:?}");
        }
    }
}
