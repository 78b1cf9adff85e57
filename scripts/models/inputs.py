"""Realistic request payloads for the benchmark models, written to OUT/inputs/.

  resnet50.bin   FP32 [64, 3, 224, 224]: 64 seeded PIL drawings (shapes,
                 gradients, noise), JPEG-encoded (kept in jpeg/), decoded,
                 resized to 256 on the short side, centre-cropped to 224 and
                 normalised with the ImageNet mean/std, NCHW
  bert.bin       INT64 [64, 128] x 3 (input_ids, attention_mask,
  minilm.bin     token_type_ids, one after the other): SENTENCES tokenized with
                 MiniLM's tokenizer.json (BERT uncased WordPiece), padded or
                 truncated to 128 tokens; the sentences are in sentences.txt
  tabular.bin    FP32 [256, 50] from the tabular model's training distribution
                 (independent standard normal features)
  manifest.json  per model: the file, the row count, and for each input its
                 name, datatype, per-row shape, byte offset and bytes per row

Every array is raw little-endian and C-ordered, so row i of an input is
bytes [offset + i * row_bytes, offset + (i + 1) * row_bytes) of the file, and
a client can send it as-is with the binary tensor extension.  Deterministic
except for the JPEG encoder's version.
"""

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import bert
from .files import atomic_write

IMAGES = 64
TABULAR_ROWS, TABULAR_FEATURES = 256, 50
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# 64 sentences, 5 to 60 words, on a few topics.
SENTENCES = [
    # weather and nature
    "It is raining again this morning.",
    "The forecast says the storm will reach the coast by Thursday evening.",
    "A thick fog rolled over the hills before sunrise and did not lift until almost noon.",
    "Snow fell all night, and by morning the whole village was buried under a quiet white blanket.",
    "The river flooded the lower fields after a week of heavy rain.",
    "Bees are disappearing from many farms, which worries growers who depend on them to pollinate "
    "fruit trees every spring.",
    "Autumn leaves turned the park red and gold.",
    "Scientists measured the glacier and found it had retreated nearly two kilometres since 1950.",
    "The desert gets surprisingly cold at night, so hikers should pack a warm jacket even in summer.",
    "Lightning struck the old oak tree.",
    # food and cooking
    "Preheat the oven to two hundred degrees.",
    "She baked a loaf of sourdough bread with a crisp crust and an open, chewy crumb.",
    "This soup needs more salt.",
    "To make a good risotto, add the warm stock one ladle at a time and keep stirring until the "
    "rice is creamy but still slightly firm in the centre.",
    "The restaurant on the corner serves the best noodles in town, but the queue is always long.",
    "He forgot the garlic bread in the oven and it burned.",
    "Fresh tomatoes, olive oil, basil and a pinch of salt make a simple sauce that tastes of summer.",
    "Coffee prices rose sharply this year after a poor harvest in Brazil and Vietnam.",
    "My grandmother never measured anything when she cooked.",
    "Chop the onions finely, fry them slowly in butter until golden, then add the mushrooms.",
    # technology
    "The server crashed at midnight.",
    "Please restart your computer to finish installing the update.",
    "The new phone has a larger battery, a brighter screen and a camera that works well in low light.",
    "Engineers traced the outage to a misconfigured load balancer that sent all traffic to one "
    "data centre while the others sat idle, and service was restored after about forty minutes.",
    "Machine learning models need large amounts of labelled data to perform well.",
    "The database query took ten seconds because the table had no index on the customer column.",
    "A software update fixed the bug that drained the battery overnight.",
    "Open source projects rely on volunteers who review code, fix bugs and answer questions from "
    "users around the world, often in their spare time and without any payment.",
    "Can you send me the link to the meeting?",
    "The company plans to move its services to the cloud over the next two years.",
    "Quantum computers may one day break the encryption that protects online banking today.",
    # sport
    "The home team won the match in extra time.",
    "She ran the marathon in under three hours, beating her previous best by nearly twelve minutes.",
    "Our goalkeeper saved two penalties.",
    "After a long injury the striker returned to training this week and hopes to play on Saturday.",
    "The tennis final lasted almost five hours and ended after midnight, with both players "
    "exhausted and the crowd on its feet cheering every point of the deciding set.",
    "Cycling up the mountain pass took most of the morning.",
    "The coach was fired after a run of six defeats.",
    "Swimming is good exercise for people with sore joints.",
    # travel
    "The train to the airport leaves every fifteen minutes.",
    "We missed our connecting flight and spent the night in the airport hotel.",
    "Remember to bring your passport.",
    "The old town has narrow streets, small cafes and a market that sells fresh fish every morning.",
    "Tourists crowded the bridge to watch the sunset over the harbour.",
    "Hotel prices in the city double during the summer festival, so book early if you want a room "
    "near the centre.",
    "The road along the coast is beautiful but very winding.",
    "Our luggage arrived two days after we did.",
    # health
    "Drink plenty of water when it is hot.",
    "The doctor recommended rest and a week without running.",
    "Regular sleep, a balanced diet and some daily exercise reduce the risk of many chronic diseases.",
    "The clinic opens at eight and closes at six.",
    "Researchers are testing a new vaccine that could protect children against several strains of "
    "the virus with a single dose, which would make campaigns in remote areas much cheaper and "
    "simpler to run, and early results from the first trials in three countries suggest that "
    "it is both safe and effective.",
    "He sprained his ankle on the stairs.",
    "Washing your hands often is one of the easiest ways to avoid catching a cold.",
    # economy and everyday life
    "The central bank raised interest rates again.",
    "House prices have fallen for the third month in a row.",
    "The shop is closed on Sundays.",
    "Unemployment dropped to its lowest level in a decade as factories hired more workers.",
    "Many small businesses struggled to pay their rent during the long winter.",
    "I need to renew my driving licence before it expires next month.",
    "The council voted to build a new library, a swimming pool and a bus station in the north of "
    "the city, funded partly by a tax on large office buildings and partly by a loan that will be "
    "repaid over thirty years, although several members argued that the money should be spent "
    "on repairing the old roads first.",
    "Where did you park the car?",
    "The children painted the fence blue.",
    "Thank you for your help yesterday.",
]


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------

def _random_colour(rng):
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def draw_image(rng, width, height):
    """A seeded drawing: a gradient background, shapes, lines, text-like marks, noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x / width + np.sin(angle) * y / height)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    c0, c1 = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    bg = (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.uint8)
    img = Image.fromarray(bg, "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 12)):
        x0, x1 = sorted(rng.integers(0, width, 2))
        y0, y1 = sorted(rng.integers(0, height, 2))
        box = [int(x0), int(y0), int(x1) + 8, int(y1) + 8]
        kind = rng.integers(0, 4)
        fill = _random_colour(rng)
        if kind == 0:
            d.ellipse(box, fill=fill, outline=_random_colour(rng), width=int(rng.integers(1, 5)))
        elif kind == 1:
            d.rectangle(box, fill=fill)
        elif kind == 2:
            pts = [(int(px), int(py)) for px, py in
                   zip(rng.integers(0, width, 5), rng.integers(0, height, 5))]
            d.polygon(pts, fill=fill)
        else:
            d.line(box, fill=fill, width=int(rng.integers(2, 12)))
    for _ in range(rng.integers(0, 3)):
        d.text((int(rng.integers(0, width - 40)), int(rng.integers(0, height - 20))),
               "mlserve", fill=_random_colour(rng))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5))))
    arr = np.asarray(img).astype(np.float32)
    arr += rng.normal(0.0, rng.uniform(2, 20), arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def preprocess(jpeg_bytes):
    """torchvision's ImageNet eval transform: resize short side to 256
    (bilinear), centre crop 224, scale to [0, 1], normalise; FP32 [3, 224, 224]."""
    img = Image.open(io.BytesIO(jpeg_bytes)).convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((max(256, round(w * scale)), max(256, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = np.asarray(img).astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def make_images(jpeg_dir, n=IMAGES, seed=2024):
    """Draw n images of varied sizes, write them as JPEGs, return [n, 3, 224, 224]."""
    rng = np.random.default_rng(seed)
    jpeg_dir.mkdir(parents=True, exist_ok=True)
    out = np.empty((n, 3, 224, 224), np.float32)
    for i in range(n):
        w, h = int(rng.integers(240, 640)), int(rng.integers(240, 640))
        buf = io.BytesIO()
        draw_image(rng, w, h).save(buf, "JPEG", quality=int(rng.integers(70, 96)))
        data = buf.getvalue()
        atomic_write(jpeg_dir / f"{i:03d}.jpg", data)
        out[i] = preprocess(data)
    return out


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

V2_TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def write_bin(path, named_arrays):
    """Concatenate arrays (same row count) into path; return the manifest entry."""
    rows = {a.shape[0] for _, a in named_arrays}
    assert len(rows) == 1, rows
    entries, offset, chunks = [], 0, []
    for name, a in named_arrays:
        a = np.ascontiguousarray(a, a.dtype.newbyteorder("<"))
        entries.append({"name": name, "datatype": V2_TYPES[a.dtype], "shape": list(a.shape[1:]),
                        "offset": offset, "row_bytes": a.nbytes // a.shape[0], "bytes": a.nbytes})
        chunks.append(a.tobytes())
        offset += a.nbytes
    atomic_write(path, b"".join(chunks))
    return {"file": path.name, "rows": rows.pop(), "bytes": offset, "inputs": entries}


def write(out, force=False):
    """Write OUT/inputs/ (see the module doc).  Skipped when its manifest
    exists, unless force."""
    d = Path(out) / "inputs"
    if (d / "manifest.json").exists() and not force:
        print(f"skip inputs: {d / 'manifest.json'} exists")
        return
    d.mkdir(parents=True, exist_ok=True)
    models = {}

    images = make_images(d / "jpeg")
    models["resnet50"] = {**write_bin(d / "resnet50.bin", [("input", images)]),
                          "outputs": ["output"]}

    assert len(SENTENCES) == 64 and all(5 <= len(s.split()) <= 60 for s in SENTENCES)
    atomic_write(d / "sentences.txt", "".join(s + "\n" for s in SENTENCES).encode())
    feeds = bert.encode(SENTENCES)
    text = [(k, feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
    models["bert_base"] = {**write_bin(d / "bert.bin", text), "outputs": ["pooler_output"]}
    models["minilm"] = {**write_bin(d / "minilm.bin", text), "outputs": ["sentence_embedding"]}

    # tabular: the training rows are standard normal (make_models.build_tabular,
    # seed 7); these come from the same distribution with another seed
    rows = np.random.default_rng(8).standard_normal((TABULAR_ROWS, TABULAR_FEATURES))
    models["tabular"] = {**write_bin(d / "tabular.bin", [("input", rows.astype(np.float32))]),
                         "outputs": ["label", "probabilities"]}

    manifest = {
        "doc": "row i of an input is bytes [offset + i * row_bytes, offset + (i + 1) * row_bytes) "
               "of file; raw little-endian, C order; shape excludes the batch dim; outputs are "
               "the ones a benchmark client should request",
        "models": models,
    }
    atomic_write(d / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    tokens = feeds["attention_mask"].sum(1)
    print(f"wrote {d}: resnet50.bin {images.shape} (+ {IMAGES} JPEGs), bert.bin and minilm.bin "
          f"[{len(SENTENCES)}, 128] x 3 ({tokens.min()}-{tokens.max()} tokens, "
          f"{int((tokens >= 128).sum())} truncated), tabular.bin [{TABULAR_ROWS}, {TABULAR_FEATURES}]")
