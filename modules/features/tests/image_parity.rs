//! Parity of the image transform with PIL + numpy
//! (scripts/reference/image_reference.py, run from the repository's .venv),
//! and its typed errors.

#[allow(dead_code)]
#[path = "support/python.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use mlserve_features::transform::image::{self, ImageSpec, Interpolation, Layout};
use mlserve_proto::ErrorCode;
use support::{make_images, python, root, run, scratch};

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("reference output");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn interpolation_name(i: Interpolation) -> &'static str {
    match i {
        Interpolation::Nearest => "nearest",
        Interpolation::Box => "box",
        Interpolation::Bilinear => "bilinear",
        Interpolation::Hamming => "hamming",
        Interpolation::Bicubic => "bicubic",
        Interpolation::Lanczos => "lanczos",
    }
}

/// Runs the reference on `images` with `spec`; returns all tensors concatenated.
fn reference(spec: &ImageSpec, images: &[PathBuf], out: &Path) -> Vec<f32> {
    let f = |v: &[f32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut cmd = Command::new(python());
    cmd.arg(root().join("scripts/reference/image_reference.py"))
        .args(["--resize", &spec.resize.to_string()])
        .args([
            "--crop",
            &spec.crop[0].to_string(),
            &spec.crop[1].to_string(),
        ])
        .args(["--interpolation", interpolation_name(spec.interpolation)])
        .args(["--scale", &spec.scale.to_string()])
        .arg("--mean")
        .args(f(&spec.mean))
        .arg("--std")
        .args(f(&spec.std))
        .args([
            "--layout",
            if spec.layout == Layout::Nchw {
                "NCHW"
            } else {
                "NHWC"
            },
        ])
        .arg("--out")
        .arg(out)
        .args(images);
    run(&mut cmd);
    read_f32(out)
}

/// Transforms every image with `spec` and compares with the reference.
/// Returns the largest absolute difference seen.
fn compare(spec: &ImageSpec, images: &[PathBuf], dir: &Path, tag: &str) -> f32 {
    let want = reference(spec, images, &dir.join(format!("{tag}.f32")));
    let mut offset = 0;
    let mut worst = 0f32;
    for path in images {
        let bytes = std::fs::read(path).expect("image");
        let (shape, got) =
            image::transform(spec, &bytes).unwrap_or_else(|e| panic!("{tag} {path:?}: {e}"));
        assert_eq!(shape.iter().product::<usize>(), got.len(), "{tag} {path:?}");
        let expected = &want[offset..offset + got.len()];
        offset += got.len();
        let diff = got
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= 1e-5,
            "{tag} {}: max abs diff {diff}",
            path.display()
        );
        worst = worst.max(diff);
    }
    assert_eq!(
        offset,
        want.len(),
        "{tag}: reference wrote more values than compared"
    );
    worst
}

#[test]
fn image_transform_equals_pil_numpy_reference() {
    let dir = scratch("image");
    let images = make_images(&dir);
    let default = ImageSpec::default();
    let mut specs = vec![("resnet50", default.clone())];
    for interp in [
        Interpolation::Nearest,
        Interpolation::Box,
        Interpolation::Hamming,
        Interpolation::Bicubic,
        Interpolation::Lanczos,
    ] {
        let spec = ImageSpec {
            interpolation: interp,
            resize: 300,
            crop: [255, 299],
            ..default.clone()
        };
        specs.push((interpolation_name(interp), spec));
    }
    specs.push((
        "upscale_nhwc",
        ImageSpec {
            resize: 700,
            crop: [333, 517],
            layout: Layout::Nhwc,
            ..default.clone()
        },
    ));
    specs.push((
        "raw_pixels_full",
        ImageSpec {
            resize: 0,
            crop: [0, 0],
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            ..default.clone()
        },
    ));
    for (tag, spec) in &specs {
        let worst = compare(spec, &images, &dir, tag);
        eprintln!("{tag}: {} images, max abs diff {worst:e}", images.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A JPEG with junk before its end marker: libjpeg warns ("extraneous bytes
/// before marker 0xd9"), Pillow decodes it anyway, and so does the transform,
/// to the same values.
#[test]
fn jpeg_with_a_recoverable_warning_equals_pil_numpy_reference() {
    let dir = scratch("warning");
    let images = make_images(&dir);
    let clean = std::fs::read(&images[0]).expect("jpeg");
    assert_eq!(&clean[clean.len() - 2..], b"\xFF\xD9");
    let mut flawed = clean[..clean.len() - 2].to_vec();
    flawed.extend_from_slice(&[0x11; 40]);
    flawed.extend_from_slice(b"\xFF\xD9");
    let path = dir.join("extraneous_before_eoi.jpg");
    std::fs::write(&path, &flawed).expect("write");
    let raw = ImageSpec {
        resize: 0,
        crop: [0, 0],
        scale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
        ..ImageSpec::default()
    };
    for (tag, spec) in [
        ("warning_raw", raw),
        ("warning_resnet50", ImageSpec::default()),
    ] {
        compare(&spec, std::slice::from_ref(&path), &dir, tag);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batch_is_the_concatenation_of_single_transforms() {
    let dir = scratch("batch");
    let images = make_images(&dir);
    let bytes: Vec<Vec<u8>> = images
        .iter()
        .map(|p| std::fs::read(p).expect("image"))
        .collect();
    let spec = ImageSpec::default();
    let (shape, batch) = image::transform_batch(&spec, &bytes).expect("batch");
    assert_eq!(shape, [bytes.len(), 3, 224, 224]);
    let singles: Vec<f32> = bytes
        .iter()
        .flat_map(|b| image::transform(&spec, b).expect("one").1)
        .collect();
    assert_eq!(batch, singles);

    // Different sizes without a crop cannot form one tensor.
    let uncropped = ImageSpec {
        resize: 0,
        crop: [0, 0],
        ..spec.clone()
    };
    let err = image::transform_batch(&uncropped, &bytes[..2]).expect_err("ragged batch");
    assert_eq!(err.code(), ErrorCode::BadRequest, "{err}");

    // A bad image is reported by its index.
    let mut with_bad = bytes[..2].to_vec();
    with_bad.push(b"\xFF\xD8\xFFnot really".to_vec());
    let err = image::transform_batch(&spec, &with_bad).expect_err("bad image");
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert!(err.to_string().contains("image 2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_and_oversized_images_get_typed_errors() {
    let dir = scratch("errors");
    let images = make_images(&dir);
    let jpeg = std::fs::read(&images[0]).expect("jpeg");
    let png = std::fs::read(
        images
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "png"))
            .expect("a png"),
    )
    .expect("png");
    let spec = ImageSpec::default();

    for (what, bytes) in [
        ("empty", Vec::new()),
        ("text", b"hello, world".to_vec()),
        ("jpeg header only", jpeg[..20].to_vec()),
        ("png signature only", png[..8].to_vec()),
        ("png cut short", png[..png.len() / 2].to_vec()),
        ("jpeg cut short", jpeg[..jpeg.len() / 2].to_vec()),
        ("cmyk jpeg", cmyk_jpeg(&dir)),
    ] {
        let err = image::transform(&spec, &bytes).expect_err(what);
        assert_eq!(err.code(), ErrorCode::BadRequest, "{what}: {err}");
    }

    let (w, h) = image::dimensions(&jpeg).expect("dimensions");
    assert_eq!((w, h), (640, 480));
    for bytes in [&jpeg, &png] {
        let small = ImageSpec {
            max_pixels: 1000,
            ..spec.clone()
        };
        let err = image::transform(&small, bytes).expect_err("over max_pixels");
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge, "{err}");
        assert_eq!(err.code().http_status(), 413);
    }

    // A thin strip resized by its shorter side would explode: refused.
    let strip = thin_png(&dir);
    let err = image::transform(&spec, &strip).expect_err("resized over max_pixels");
    assert_eq!(err.code(), ErrorCode::PayloadTooLarge, "{err}");

    let bad_spec = ImageSpec {
        std: [0.0, 1.0, 1.0],
        ..spec.clone()
    };
    assert_eq!(
        image::transform(&bad_spec, &jpeg)
            .expect_err("zero std")
            .code(),
        ErrorCode::BadRequest
    );
    let too_big_crop = ImageSpec {
        resize: 100,
        crop: [224, 224],
        ..spec.clone()
    };
    assert!(too_big_crop.validate().is_err());
    // A crop larger than a (non-resized) image is the image's fault.
    let no_resize = ImageSpec {
        resize: 0,
        crop: [1000, 1000],
        ..spec
    };
    assert_eq!(
        image::transform(&no_resize, &jpeg)
            .expect_err("crop")
            .code(),
        ErrorCode::BadRequest
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn image_spec_defaults_and_json() {
    let spec: ImageSpec = serde_json_free_parse();
    assert_eq!(spec, ImageSpec::default());
    assert_eq!(spec.fixed_shape(), Some([1, 3, 224, 224]));
    assert_eq!(spec.resized_size(640, 480), (341, 256));
    assert_eq!(spec.resized_size(480, 640), (256, 341));
}

/// The empty spec deserialises to the defaults (through serde's value-free
/// path: a unit struct map, so no JSON crate is needed here).
fn serde_json_free_parse() -> ImageSpec {
    use serde::de::value::{Error, MapDeserializer};
    use serde::Deserialize;
    let empty: Vec<(String, String)> = Vec::new();
    ImageSpec::deserialize(MapDeserializer::<_, Error>::new(empty.into_iter())).expect("defaults")
}

/// A CMYK JPEG written by PIL.
fn cmyk_jpeg(dir: &Path) -> Vec<u8> {
    let path = dir.join("cmyk.jpg");
    run(Command::new(python()).args([
        "-c",
        "import sys; from PIL import Image; Image.new('CMYK', (64, 48), (10, 200, 30, 5)).save(sys.argv[1])",
    ]).arg(&path));
    std::fs::read(path).expect("cmyk jpeg")
}

/// A 2000x1 PNG: its shorter side resized to 256 makes 512000x256 pixels.
fn thin_png(dir: &Path) -> Vec<u8> {
    let path = dir.join("thin.png");
    run(Command::new(python())
        .args([
            "-c",
            "import sys; from PIL import Image; Image.new('RGB', (2000, 1), (1, 2, 3)).save(sys.argv[1])",
        ])
        .arg(&path));
    std::fs::read(path).expect("thin png")
}
