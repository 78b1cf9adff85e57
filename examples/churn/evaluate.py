"""Evaluates the ONNX churn model on the held-out customers.

Runs the model with ONNX Runtime (what serving runs) on the customers whose
id is a multiple of 5, and writes the AUC and the log loss as output
parameters (auc.txt, logloss.txt) and as metrics (metrics.json).

    python evaluate.py --data training_set.parquet --model model.onnx --out .
"""

import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from sklearn.metrics import log_loss, roc_auc_score

from train import held_out, load


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ids, x, y = load(args.data)
    test = held_out(ids)
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"input": x[test]})[0][:, 1]
    auc = float(roc_auc_score(y[test], probabilities))
    loss = float(log_loss(y[test], probabilities, labels=[0, 1]))
    print(f"held-out rows {test.sum()}: auc {auc:.4f}, log loss {loss:.4f}", flush=True)
    with open(os.path.join(args.out, "auc.txt"), "w") as f:
        f.write(f"{auc:.6f}\n")
    with open(os.path.join(args.out, "logloss.txt"), "w") as f:
        f.write(f"{loss:.6f}\n")
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump({"auc": auc, "log_loss": loss, "held_out_rows": int(test.sum())}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
