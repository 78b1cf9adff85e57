#!/usr/bin/env bash
# The retraining loop in one command, on the embedded defaults:
#   1. starts mlserve (every role, config examples/churn/mlserve.toml);
#   2. generates a churn-like labelled data set into the feature store;
#   3. applies the workflow and runs it: point-in-time training set ->
#      XGBoost -> ONNX -> held-out AUC -> registered with lineage -> canary;
#   4. asks the inference role for predictions: it follows churn@canary, and
#      churn@production, which the monitoring role sets to this first version.
# Then it stops the server. Run from anywhere: bash examples/churn/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
[[ -x target/release/mlserve ]] || cargo build --release
bin=target/release/mlserve
python=$PWD/.venv/bin/python
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.onnxruntime/libonnxruntime.so}
rm -rf data/churn-example
conf=(--config examples/churn/mlserve.toml --host 127.0.0.1)
"$bin" "${conf[@]}" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -fs localhost:8000/v2/health/ready >/dev/null && break
  sleep 0.5
done
"$python" examples/churn/generate.py --url http://127.0.0.1:8000 --apply --customers 4000
"$bin" "${conf[@]}" workflows apply examples/churn/workflow.toml
"$bin" "${conf[@]}" jobs submit churn-retrain -p "python=$python" -p "code=$PWD/examples/churn" --wait
echo "waiting for the inference role to serve churn@canary..."
for _ in $(seq 60); do
  curl -fs localhost:8000/v2/models/churn/ready >/dev/null && break
  sleep 0.5
done
curl -s localhost:8000/v2/models/churn/infer -d '{
  "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 8],
              "data": [[2, 95, 4, -1.5, 1, 2, 3, 0], [60, 30, 0, 0.8, 24, 0, 12, 1]]}]
}' | "$python" -m json.tool
