"""Generates a churn-like labelled data set into the feature store.

Customers have eight account and usage features; whether one churns follows
a logistic model of them (short tenure, high charges, support calls, falling
usage, month-to-month contracts and late payments raise the risk; a
discount lowers it) with noise, so a model can learn it but not perfectly.
Feature rows go to the `customer_stats` view, labels to `churn_labels` one
day later (the outcome is known after the fact), both through the feature
store's REST API. Every ingest publishes `data_arrived`.

    python generate.py --url http://127.0.0.1:8000 --customers 4000 --seed 1
"""

import argparse
import json
import math
import random
import sys
import time
import urllib.request

FEATURES = ["tenure_months", "monthly_charges", "support_calls", "usage_trend",
            "contract_months", "late_payments", "data_gb", "discount"]
DAY_US = 86_400_000_000


def post(url, path, body):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.loads(r.read())


def customer(rng):
    tenure = rng.expovariate(1 / 24)
    contract = rng.choice([1, 1, 1, 12, 24])
    row = {
        "tenure_months": round(tenure, 2),
        "monthly_charges": round(rng.uniform(15, 120), 2),
        "support_calls": float(min(12, int(rng.expovariate(1 / 1.5)))),
        "usage_trend": round(rng.gauss(0, 1), 3),
        "contract_months": float(contract),
        "late_payments": float(min(6, int(rng.expovariate(1 / 0.7)))),
        "data_gb": round(rng.lognormvariate(2, 0.6), 2),
        "discount": float(rng.random() < 0.2),
    }
    logit = (-1.2 - 0.05 * row["tenure_months"] + 0.02 * row["monthly_charges"]
             + 0.35 * row["support_calls"] - 0.8 * row["usage_trend"]
             - 0.06 * row["contract_months"] + 0.45 * row["late_payments"]
             - 0.9 * row["discount"] + rng.gauss(0, 0.8))
    churned = float(rng.random() < 1 / (1 + math.exp(-logit)))
    return row, churned


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="the features role's HTTP API")
    ap.add_argument("--customers", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first-id", type=int, default=1, help="first customer id")
    ap.add_argument("--apply", action="store_true", help="apply features.json first")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if args.apply:
        with open(__file__.rsplit("/", 1)[0] + "/features.json") as f:
            post(args.url, "/v1/features/apply", json.load(f))
    now = int(time.time() * 1e6)
    stats, labels, positives = [], [], 0
    for i in range(args.customers):
        cid = args.first_id + i
        row, churned = customer(rng)
        ts = now - 2 * DAY_US - rng.randrange(0, 30) * DAY_US
        stats.append({"values": {"customer_id": cid, **row}, "event_ts": ts})
        labels.append({"values": {"customer_id": cid, "churned": churned}, "event_ts": ts + DAY_US})
        positives += churned
    for start in range(0, len(stats), 1000):
        post(args.url, "/v1/features/ingest", {"feature_view": "customer_stats",
                                               "rows": stats[start:start + 1000]})
    # The labels land as one batch, so they publish one data_arrived and start
    # one retraining run (chunks arriving mid-run would add a follow-up run).
    post(args.url, "/v1/features/ingest", {"feature_view": "churn_labels", "rows": labels})
    print(f"ingested {len(stats)} customers ({positives / len(stats):.1%} churned)", file=sys.stderr)


if __name__ == "__main__":
    main()
