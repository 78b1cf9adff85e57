#!/usr/bin/env bash
# The whole test suite: Rust unit and service tests, then the end-to-end
# suite that runs the real binary with tritonclient (HTTP and gRPC).
# Everything builds once, in the release profile.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== cargo test (release) =="
cargo test --release --workspace
echo "== cargo build (release binaries) =="
cargo build --release --workspace --bins
echo "== end-to-end (pytest, real binary) =="
.venv/bin/python -m pytest
