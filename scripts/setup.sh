#!/usr/bin/env bash
# Installs what mlserve needs to build, run and test, into the repository:
#   .venv/            Python with the pinned packages of requirements.txt
#   .onnxruntime/     libonnxruntime.so taken from the pinned onnxruntime wheel
#   .tools/bin/s3s-fs  an S3 server (crates.io s3s-fs) for the registry tests
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
echo "setup: ok (ORT_DYLIB_PATH=$(pwd)/$lib)"
