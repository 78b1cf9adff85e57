#!/usr/bin/env bash
# The whole test suite: lints, Rust unit and service tests, then the
# end-to-end suite that runs the real binary with tritonclient (HTTP and gRPC).
#
# The workspace compiles once, in the release profile: one `cargo build
# --all-targets` makes the binaries and every test target in a single
# feature resolution (dev-dependencies included, so their features, and the
# test hooks they switch on, are in the binaries the end-to-end suite runs),
# and `cargo test` after it only runs what is built. A separate `cargo build
# --bins` would resolve features without the dev-dependencies and compile
# most of the tree again. The shipped binary is `cargo build --release`.
#
# Caches (pip's, the MiniLM files of scripts/models/bert.py) go under
# $XDG_CACHE_HOME (default ~/.cache) and are filled on demand, safely when
# several tests or processes ask at once; an empty cache directory works.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== cargo-deny (advisories, bans, licenses, sources; see deny.toml) =="
bash scripts/deny.sh
echo "== cargo clippy (check only) =="
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (release: binaries and tests, one feature resolution) =="
cargo build --release --workspace --all-targets
echo "== cargo test (release, nothing left to compile) =="
cargo test --release --workspace
echo "== end-to-end (pytest, real binary) =="
.venv/bin/python -m pytest
# Fuzz smoke: every decoder of untrusted input (fuzz/README.md) runs 15 s of
# coverage-guided fuzzing from its seed corpus, two targets at a time; a
# crash fails the suite and names the input. Its own build (fuzz/target:
# instrumented, so nothing of the release build above is reused).
echo "== fuzz smoke (scripts/fuzz.sh) =="
bash scripts/fuzz.sh 15
