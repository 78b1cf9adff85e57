#!/bin/sh
# deploy/Dockerfile: downloads PACKAGE==VERSION's wheel (no dependencies),
# checks its sha256 and unpacks ONNX Runtime's shared libraries (and, for
# onnxruntime-gpu, its CUDA/TensorRT providers) into /ort.
# Usage: onnxruntime-from-wheel.sh PACKAGE VERSION SHA256
set -eu
package=$1 version=$2 sha256=$3
pip download --no-cache-dir --no-deps --only-binary=:all: "$package==$version"
wheel=$(ls ./*.whl)
echo "$sha256  $wheel" | sha256sum -c -
mkdir -p /ort
python - "$wheel" <<'PY'
import sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
for name in wheel.namelist():
    if "/capi/libonnxruntime" in name:
        with open("/ort/" + name.rsplit("/", 1)[1], "wb") as out:
            out.write(wheel.read(name))
PY
ls -l /ort
