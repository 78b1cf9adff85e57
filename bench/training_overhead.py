"""The training role's scheduling overhead, side by side with the cost of
starting the same processes directly.

- Per step: the time from `POST .../runs` to the step's process running
  (the step writes its start time), over `--runs` one-step runs, against a
  `fork+exec` of the same command from this script.
- A 100-step DAG of no-op steps (`true`), as a chain (each step waits for the
  previous one) and as a fan (100 independent steps, `max_parallel_steps`
  at once): the run's wall time per step, against running the 100 commands
  one after another from this script.

    cargo build --release -p mlserve
    .venv/bin/python bench/training_overhead.py     # about a minute

Writes bench/results/<date>/training_overhead.{json,md}.
"""

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlserve_proc import Server

ROOT = Path(__file__).resolve().parents[1]


def call(url, method="GET", body=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def wait(base, run_id):
    while True:
        run = call(f"{base}/v1/training/runs/{run_id}")
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.02)


def quantiles(values):
    values = sorted(values)
    return {"median": statistics.median(values), "p90": values[int(0.9 * (len(values) - 1))],
            "min": values[0], "max": values[-1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "mlserve"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / datetime.date.today().isoformat()))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlserve-training-bench-"))
    (work / "repo").mkdir()
    server = Server(args.binary, work / "repo", ["--role", "training,inference"], work / "server.log").start()
    base = server.url("http")
    try:
        stamp = work / "stamp"
        call(f"{base}/v1/training/workflows", "POST", f"""
name = "one"
[parameters]
out = ""
[[steps]]
name = "a"
command = ["sh", "-c", "date +%s%N > {{{{workflow.parameters.out}}}}"]
""".encode())
        submit_to_start = []
        for i in range(args.runs):
            t0 = time.time_ns()
            run = call(f"{base}/v1/training/workflows/one/runs", "POST",
                       {"parameters": {"out": str(stamp)}})
            wait(base, run["id"])
            submit_to_start.append((int(stamp.read_text()) - t0) / 1e6)
        direct = []
        for i in range(args.runs):
            t0 = time.time_ns()
            subprocess.run(["sh", "-c", f"date +%s%N > {stamp}"], check=True)
            direct.append((int(stamp.read_text()) - t0) / 1e6)

        chain = "\n".join(
            f'[[steps]]\nname = "s{i}"\ncommand = ["true"]\n' + (f'dependencies = ["s{i - 1}"]\n' if i else "")
            for i in range(args.steps))
        fan = "\n".join(f'[[steps]]\nname = "s{i}"\ncommand = ["true"]\n' for i in range(args.steps))
        dags = {}
        for name, steps in (("chain", chain), ("fan", fan)):
            call(f"{base}/v1/training/workflows", "POST", f'name = "{name}"\n{steps}'.encode())
            t0 = time.monotonic()
            run = wait(base, call(f"{base}/v1/training/workflows/{name}/runs", "POST", {})["id"])
            elapsed = time.monotonic() - t0
            assert run["state"] == "succeeded", run
            dags[name] = elapsed
        t0 = time.monotonic()
        for _ in range(args.steps):
            subprocess.run(["true"], check=True)
        serial_direct = time.monotonic() - t0
    finally:
        server.stop()

    per_step = quantiles(submit_to_start)
    spawn = quantiles(direct)
    result = {
        "submit_to_process_start_ms": per_step,
        "direct_spawn_ms": spawn,
        "dag_steps": args.steps,
        "dag_seconds": dags,
        "direct_serial_seconds": serial_direct,
        "ratios": {
            "submit_to_start_over_direct_spawn": per_step["median"] / spawn["median"],
            "chain_per_step_over_direct": dags["chain"] / serial_direct,
            "fan_per_step_over_direct": dags["fan"] / serial_direct,
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "training_overhead.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Training: scheduling overhead", "",
        f"{args.runs} one-step runs; a {args.steps}-step DAG of `true` steps. "
        "Direct: the same command started by the benchmark itself.", "",
        "| | mlserve | direct | ratio |", "|---|---:|---:|---:|",
        f"| submit to process start, median (ms) | {per_step['median']:.1f} | {spawn['median']:.1f} | "
        f"{result['ratios']['submit_to_start_over_direct_spawn']:.1f}× |",
        f"| submit to process start, p90 (ms) | {per_step['p90']:.1f} | {spawn['p90']:.1f} | |",
        f"| {args.steps}-step chain, per step (ms) | {1000 * dags['chain'] / args.steps:.1f} | "
        f"{1000 * serial_direct / args.steps:.1f} | {result['ratios']['chain_per_step_over_direct']:.1f}× |",
        f"| {args.steps}-step fan, per step (ms) | {1000 * dags['fan'] / args.steps:.1f} | "
        f"{1000 * serial_direct / args.steps:.1f} | {result['ratios']['fan_per_step_over_direct']:.1f}× |",
    ]
    (out / "training_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
