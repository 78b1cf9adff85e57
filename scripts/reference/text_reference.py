#!/usr/bin/env python3
"""The text transform with the Python `tokenizers` package, as a user writes it.

Reads NUL-terminated UTF-8 texts from --texts, encodes them as one batch with
tokenizer.json (truncation to --max-length, right padding with the [PAD]
token to --max-length or to the longest), and writes input_ids,
attention_mask and token_type_ids as little-endian int64 to OUT.<name>.i64
and the shape "batch len" to OUT.shape: the reference of
modules/features/tests/transform_parity.rs.
"""

import argparse

import numpy as np
from tokenizers import Tokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--padding", choices=["max_length", "longest"], default="max_length")
    p.add_argument("--no-truncation", action="store_true")
    p.add_argument("--no-special-tokens", action="store_true")
    p.add_argument("--texts", required=True, help="file of UTF-8 texts, each followed by a NUL byte")
    p.add_argument("--out", required=True, help="output prefix")
    args = p.parse_args()

    raw = open(args.texts, "rb").read().decode("utf-8")
    texts = raw.split("\0")[:-1]
    tok = Tokenizer.from_file(args.tokenizer)
    if not args.no_truncation:
        tok.enable_truncation(max_length=args.max_length)
    pad_id = tok.token_to_id("[PAD]") or 0
    if args.padding == "max_length":
        tok.enable_padding(length=args.max_length, pad_id=pad_id, pad_token="[PAD]")
    else:
        tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    encs = tok.encode_batch(texts, add_special_tokens=not args.no_special_tokens)
    length = len(encs[0].ids) if encs else 0
    outputs = {
        "input_ids": [e.ids for e in encs],
        "attention_mask": [e.attention_mask for e in encs],
        "token_type_ids": [e.type_ids for e in encs],
    }
    for name, rows in outputs.items():
        arr = np.array(rows, dtype="<i8").reshape(len(encs), length)
        arr.tofile(f"{args.out}.{name}.i64")
    with open(f"{args.out}.shape", "w") as f:
        f.write(f"{len(encs)} {length}\n")


if __name__ == "__main__":
    main()
