"""Trains the churn model on a training set and converts it to ONNX.

Reads the point-in-time training set (Parquet, from the workflow's
features.training_set step), keeps the customers whose id is not a multiple
of 5 (those are held out for evaluate.py), fits an XGBoost classifier and
writes it as ONNX: input `input` float [batch, 8], outputs `label` and
`probabilities`.

    python train.py --data training_set.parquet --out model.onnx
"""

import argparse
import sys

import numpy as np
import pyarrow.parquet as pq

FEATURES = ["tenure_months", "monthly_charges", "support_calls", "usage_trend",
            "contract_months", "late_payments", "data_gb", "discount"]
LABEL = "churn_labels:churned"


def load(path):
    """(ids, features float32 [n, 8], labels int64 [n]) of the rows with a label."""
    table = pq.read_table(path).to_pydict()
    ids = np.asarray(table["customer_id"], dtype=np.int64)
    x = np.stack([np.asarray([np.nan if v is None else v for v in table[f"customer_stats:{f}"]],
                             dtype=np.float32) for f in FEATURES], axis=1)
    y = np.asarray([np.nan if v is None else v for v in table[LABEL]], dtype=np.float64)
    keep = ~np.isnan(y) & ~np.isnan(x).any(axis=1)
    return ids[keep], x[keep], y[keep].astype(np.int64)


def held_out(ids):
    return ids % 5 == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--trees", type=int, default=120)
    ap.add_argument("--depth", type=int, default=4)
    args = ap.parse_args()

    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from xgboost import XGBClassifier

    ids, x, y = load(args.data)
    train = ~held_out(ids)
    print(f"training on {train.sum()} rows ({y[train].mean():.1%} churned), "
          f"{(~train).sum()} held out", flush=True)
    clf = XGBClassifier(n_estimators=args.trees, max_depth=args.depth, learning_rate=0.1,
                        tree_method="hist", n_jobs=1, random_state=0)
    clf.fit(x[train], y[train])
    model = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
                            target_opset=15)
    for v in [*model.graph.input, *model.graph.output]:
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.name = "churn"
    with open(args.out, "wb") as f:
        f.write(model.SerializeToString())
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
