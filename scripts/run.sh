#!/usr/bin/env bash
# The main job: fetch ONNX Runtime if absent, make the example models if
# absent, build, and serve them with every role on the embedded defaults (gateway
# 8080/8081, node HTTP 8000, gRPC 8001, metrics 8002). Extra arguments go to
# mlserve (e.g. --http-port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ ! -f models/resnet50/1/model.onnx ]]; then
  echo "run: making the example models in models/ (ResNet-50 weights are seeded, made on demand)"
  .venv/bin/python scripts/make_models.py --set examples --resnet50 --out models
fi
cargo build --release --bin mlserve
exec ./target/release/mlserve --model-repository models "$@"
