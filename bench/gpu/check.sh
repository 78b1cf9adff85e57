#!/usr/bin/env bash
# The GPU check (issue 15): run on a machine with an NVIDIA GPU.
#
#   bash bench/gpu/check.sh            # from the repository root
#
# 1. Installs onnxruntime-gpu (the version pinned for onnxruntime in
#    requirements.txt) and its CUDA 12 / cuDNN 9 libraries into a venv of its
#    own (bench/gpu/.venv), from PyPI or, offline, from $WHEELS
#    (`pip download` them elsewhere first), and points mlserve at the
#    wheel's libonnxruntime.so.
# 2. Makes ResNet-50 (scripts/make_models.py) with instance_group kind GPU.
# 3. Measures raw ONNX Runtime on the CUDA provider at batch $BATCH
#    (raw_cuda.py), then mlserve serving the same model at the same batch
#    (loadgen, closed loop over gRPC), in the same run.
# 4. Fails unless mlserve ÷ raw >= 0.9 and mlserve never logged its CPU
#    fallback ("gpu execution provider unavailable, falling back to cpu").
# Results: $OUT/gpu-check.json (or bench/results/gpu-check.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
BATCH=${BATCH:-8}
CONCURRENCY=${CONCURRENCY:-4}
DURATION=${DURATION:-20}
OUT_DIR=${OUT:-bench/results}
MLSERVE_BIN=${MLSERVE_BIN:-target/release/mlserve}
LOADGEN_BIN=${LOADGEN_BIN:-target/release/loadgen}
ORT_VERSION=$(sed -n 's/^onnxruntime==//p' requirements.txt)
VENV=bench/gpu/.venv
WORK=$(mktemp -d)
trap 'kill "${SERVER_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || { echo "gpu-check: no NVIDIA GPU" >&2; exit 2; }
[[ -x $MLSERVE_BIN && -x $LOADGEN_BIN ]] || cargo build --release --bin mlserve --bin loadgen

echo "== onnxruntime-gpu $ORT_VERSION =="
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
pip_from=()
[[ -n ${WHEELS:-} ]] && pip_from=(--no-index --find-links "$WHEELS")
"$VENV/bin/pip" install -q "${pip_from[@]}" "onnxruntime-gpu==$ORT_VERSION" \
  "$(grep '^numpy==' requirements.txt)" "$(grep '^onnx==' requirements.txt)" \
  nvidia-cudnn-cu12 nvidia-cublas-cu12 nvidia-cuda-runtime-cu12 nvidia-cufft-cu12 \
  nvidia-curand-cu12 nvidia-cuda-nvrtc-cu12
SITE=$("$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')
ORT_DYLIB_PATH=$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* | head -1)
LD_LIBRARY_PATH=$(ls -d "$SITE"/nvidia/*/lib | paste -sd:):$SITE/onnxruntime/capi${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export ORT_DYLIB_PATH LD_LIBRARY_PATH

echo "== ResNet-50 on the GPU =="
"$VENV/bin/python" scripts/make_models.py --set resnet50 --out "$WORK/models"
sed -i 's/kind = "KIND_CPU"/kind = "KIND_GPU"/' "$WORK/models/resnet50/config.toml"
grep -q 'kind = "KIND_GPU"' "$WORK/models/resnet50/config.toml"

echo "== raw ONNX Runtime, CUDA provider, batch $BATCH =="
"$VENV/bin/python" bench/gpu/raw_cuda.py "$WORK/models/resnet50/1/model.onnx" \
  --batch "$BATCH" --duration "$DURATION" --json "$WORK/raw.json"

echo "== mlserve, batch $BATCH =="
"$MLSERVE_BIN" --role inference --model-repository "$WORK/models" --host 127.0.0.1 \
  --http-port 18000 --grpc-port 18001 --metrics-port 18002 2> "$WORK/mlserve.log" &
SERVER_PID=$!
for _ in $(seq 1 600); do
  curl -sf http://127.0.0.1:18000/v2/models/resnet50/ready >/dev/null && break
  kill -0 $SERVER_PID || { cat "$WORK/mlserve.log"; exit 1; }
  sleep 0.5
done
"$LOADGEN_BIN" closed --target http://127.0.0.1:18001 --protocol grpc --model resnet50 \
  --batch "$BATCH" --concurrency "$CONCURRENCY" --threads 2 --duration "$DURATION" \
  --quiet --json-out "$WORK/mlserve.json"

mkdir -p "$OUT_DIR"
"$VENV/bin/python" - "$WORK" "$OUT_DIR/gpu-check.json" <<'PY'
import json, pathlib, sys
work, out = pathlib.Path(sys.argv[1]), sys.argv[2]
raw = json.loads((work / "raw.json").read_text())
served = json.loads((work / "mlserve.json").read_text())
log = (work / "mlserve.log").read_text()
fallback = "falling back to cpu" in log
ratio = served["inferences_per_s"] / raw["inferences_per_s"]
result = {"raw_cuda_img_per_s": raw["inferences_per_s"], "mlserve_img_per_s": served["inferences_per_s"],
          "ratio": ratio, "batch": raw["batch"], "errors": served["error_total"],
          "cpu_fallback_logged": fallback, "device": raw["device"]}
pathlib.Path(out).write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
ok = ratio >= 0.9 and not fallback and served["error_total"] == 0
print("gpu-check:", "PASS" if ok else "FAIL", f"(mlserve / raw = {ratio:.2f}, target 0.90)")
sys.exit(0 if ok else 1)
PY
