#!/usr/bin/env bash
# Installs real Triton Inference Server for the bench into its own venv,
# bench/.venv-triton (gitignored), so the project's .venv is not touched.
#
#   bash bench/triton/setup.sh          # from anywhere; about 150 MB
#
# The venv's interpreter must be the Python the python backend's stub embeds:
# the wheel's stubs (pytriton/tritonserver/python_backend_stubs/3.X/) link
# libpython3.X.so.1.0 by soname, i.e. the system's shared libpython, so the
# venv is made from the system python3 (PYTHON overrides), which has it.
# bench/baselines/triton_server.py then runs tritonserver from the wheel with
# the stub of that version copied into a backend directory of its own.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=bench/.venv-triton
version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if ! ldconfig -p | grep -q "libpython$version.so.1.0"; then
  echo "setup.sh: no shared libpython$version.so.1.0 for the python backend stub" \
       "(Debian: apt-get install libpython$version)" >&2
  exit 1
fi
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r bench/triton/requirements.txt
"$VENV/bin/python" - <<'PY'
import pathlib, sys, pytriton
root = pathlib.Path(pytriton.__file__).parent / "tritonserver"
stub = root / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
for path in (root / "bin" / "tritonserver", root / "backends" / "python" / "libtriton_python.so", stub):
    if not path.is_file():
        sys.exit(f"setup.sh: {path} is missing from the wheel")
print(f"tritonserver: {root / 'bin' / 'tritonserver'}\nstub: {stub}")
PY
