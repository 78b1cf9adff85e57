"""Raw ONNX Runtime on the CUDA provider: images per second of a model at a
fixed batch, the ceiling bench/gpu/check.sh compares mlserve against."""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    session = ort.InferenceSession(args.model, providers=["CUDAExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit(f"CUDA provider unavailable: {session.get_providers()}")
    feed = {}
    for i in session.get_inputs():
        shape = [args.batch] + [d if isinstance(d, int) else 1 for d in i.shape[1:]]
        feed[i.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(10):
        session.run(None, feed)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.duration:
        session.run(None, feed)
        runs += 1
    elapsed = time.perf_counter() - start
    result = {"batch": args.batch, "runs": runs, "inferences_per_s": runs * args.batch / elapsed,
              "device": ort.get_device()}
    with open(args.json, "w") as f:
        json.dump(result, f)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
