#!/usr/bin/env python3
"""The image transform as a torchvision-style user writes it with PIL + numpy.

For each image: Image.open -> convert("RGB") -> resize the shorter side
(torchvision's Resize(int) size rule) -> centre crop (torchvision's offsets)
-> np.asarray(float32) / scale -> (x - mean) / std in float32 -> NCHW or
NHWC.  The tensors of all images are written back to back to --out as
little-endian float32, the reference mlserve's image transform is tested
against (modules/features/tests/transform_parity.rs).
"""

import argparse
import sys

import numpy as np
from PIL import Image

FILTERS = {
    "nearest": Image.NEAREST, "box": Image.BOX, "bilinear": Image.BILINEAR,
    "hamming": Image.HAMMING, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS,
}


def resized_size(w, h, size):
    """torchvision.transforms.functional.resize with an int size."""
    if size == 0:
        return w, h
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def center_crop(img, ch, cw):
    """torchvision.transforms.functional.center_crop (crop must fit)."""
    w, h = img.size
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


def transform(path, args):
    img = Image.open(path).convert("RGB")
    size = resized_size(*img.size, args.resize)
    if size != img.size:
        img = img.resize(size, FILTERS[args.interpolation])
    if args.crop != [0, 0]:
        img = center_crop(img, *args.crop)
    x = np.asarray(img, dtype=np.float32) / np.float32(args.scale)
    x = (x - np.array(args.mean, np.float32)) / np.array(args.std, np.float32)
    assert x.dtype == np.float32
    return x.transpose(2, 0, 1) if args.layout == "NCHW" else x


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--crop", type=int, nargs=2, default=[224, 224], metavar=("H", "W"))
    p.add_argument("--interpolation", choices=FILTERS, default="bilinear")
    p.add_argument("--scale", type=float, default=255.0)
    p.add_argument("--mean", type=float, nargs=3, default=[0.485, 0.456, 0.406])
    p.add_argument("--std", type=float, nargs=3, default=[0.229, 0.224, 0.225])
    p.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW")
    p.add_argument("--out", required=True, help="file for the float32 tensors")
    p.add_argument("images", nargs="+")
    args = p.parse_args()
    with open(args.out, "wb") as f:
        for path in args.images:
            x = transform(path, args)
            f.write(np.ascontiguousarray(x).astype("<f4").tobytes())
            print(path, "x".join(map(str, x.shape)), file=sys.stderr)


if __name__ == "__main__":
    main()
