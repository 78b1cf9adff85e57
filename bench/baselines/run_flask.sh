#!/usr/bin/env bash
# The paper's Flask baseline: gunicorn with WORKERS (default 4) sync workers,
# each loading every model of the model repository DIR into single-threaded
# ONNX Runtime sessions.  Serves until stopped (Ctrl-C / SIGTERM).
#   usage: bench/baselines/run_flask.sh DIR PORT [WORKERS]
# HOST (default 127.0.0.1) sets the listen address.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 MODEL_REPOSITORY PORT [WORKERS]" >&2
  exit 2
fi
repo=$(realpath "$1")
cd "$(dirname "$0")/../.."
export MLSERVE_BASELINE_REPO=$repo
exec .venv/bin/python -m gunicorn --workers "${3:-4}" --worker-class sync \
  --bind "${HOST:-127.0.0.1}:$2" --timeout 120 --no-control-socket \
  'bench.baselines.flask_server:create_app()'
