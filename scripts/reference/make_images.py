#!/usr/bin/env python3
"""Writes the test images of the image-transform parity test into a directory.

Synthetic photos (smooth gradients, edges and noise, seeded) saved by PIL as
JPEG at several sizes, aspect ratios, qualities and chroma subsamplings
(4:4:4, 4:2:2, 4:2:0), progressive and grayscale JPEG, and PNGs in RGB,
RGBA, grayscale, gray + alpha, bilevel, palette (with and without
transparency) and interlaced form.  Prints one file name a line.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def photo(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0)
    img = np.stack([r, g, b], -1)
    img[(x // 16 + y // 16) % 2 == 0] *= 0.6  # hard edges
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


JPEGS = [  # (w, h, quality, subsampling, extra save options)
    (640, 480, 90, 2, {}),
    (480, 640, 75, 2, {}),
    (640, 480, 95, 0, {}),
    (500, 375, 85, 1, {}),
    (1024, 683, 80, 2, {"progressive": True}),
    (333, 517, 70, 2, {}),
    (257, 256, 90, 0, {}),
    (224, 224, 92, 2, {}),
    (2000, 300, 88, 2, {}),
]


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (w, h, q, ss, extra) in enumerate(JPEGS):
        name = f"photo_{w}x{h}_q{q}_s{ss}{'_prog' if extra else ''}.jpg"
        photo(w, h, i).save(out / name, quality=q, subsampling=ss, **extra)
        names.append(name)
    photo(400, 300, 50).convert("L").save(out / "gray_400x300.jpg", quality=90)
    names.append("gray_400x300.jpg")
    base = photo(320, 240, 60)
    pngs = {
        "rgb_320x240.png": (base, {}),
        "rgba_320x240.png": (Image.merge("RGBA", (*base.split(), base.convert("L"))), {}),
        "gray_320x240.png": (base.convert("L"), {}),
        "palette_320x240.png": (base.convert("P", palette=Image.ADAPTIVE, colors=64), {}),
        "palette_trns_320x240.png": (base.convert("P", palette=Image.ADAPTIVE, colors=16),
                                     {"transparency": 3}),
        "gray_alpha_320x240.png": (base.convert("LA"), {}),
        "bilevel_320x240.png": (base.convert("1"), {}),
        "interlaced_300x400.png": (photo(300, 400, 61), {"interlace": 1}),
    }
    for name, (img, extra) in pngs.items():
        img.save(out / name, **extra)
        names.append(name)
    print("\n".join(names))


if __name__ == "__main__":
    main(sys.argv[1])
