#!/usr/bin/env python3
"""Server CPU and context switches per request, thread by thread, at a fixed
open-loop rate: where a request's cost goes between the tokio workers, the
HTTP I/O threads and a model's instance thread, and how often each thread
sleeps and is woken.

The tabular model at batch 1 over HTTP binary (Poisson arrivals; a fixed
pool of --connections, 64 by default as stall.py, or `on-demand`; the
generator's pacer waking at most every --pace-quantum-us), --seconds at each
--rate, builds alternating round by round. For each thread with work: CPU
microseconds per answered request (utime + stime from
/proc/<pid>/task/<tid>/stat) and voluntary and involuntary context switches
per request (/proc/<pid>/task/<tid>/status).

    .venv/bin/python bench/thread_cost.py --binary before=/tmp/mlserve-old --binary after=target/release/mlserve

Writes bench/results/<date>/thread-cost/thread_cost.{md,json}.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlserve_proc import Server, thread_cpu, thread_group  # noqa: E402
from paper import WORK, Progress, ensure_models, model_repository  # noqa: E402
from saturation import cpu_model, git_commit, run_loadgen  # noqa: E402
from stall import pool_args  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOKIO, HTTP_IO, INSTANCES = thread_group("tokio-rt-worker"), thread_group("mlserve-http-0"), thread_group("inst-")


def threads(pid):
    """{tid: (group, voluntary switches, involuntary switches, CPU seconds)}."""
    out = {}
    for tid, (group, cpu) in thread_cpu(pid).items():
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        out[tid] = (group, int(fields["voluntary_ctxt_switches"]),
                    int(fields["nonvoluntary_ctxt_switches"]), cpu)
    return out


def run(args, label, binary, rate, round_no, progress):
    server = Server(binary, model_repository("tabular"), [],
                    WORK / "thread-cost" / f"mlserve-{label}-{rate:g}-{round_no}.log")
    try:
        server.start()
        before = threads(server.pid)
        report, _, _ = run_loadgen(args.loadgen, [
            "open", "--target", server.url("http"), "--protocol", "http-binary", "--model", "tabular",
            "--rate", str(rate), "--duration", str(args.seconds), "--seed", str(round_no),
            "--inputs", str(WORK), "--max-in-flight", "4096", "--timeout", "10", "--drain", "10",
            "--quiet", "--pace-quantum-us", str(args.pace_quantum_us), *pool_args(args.connections)])
        after = threads(server.pid)
    finally:
        server.stop()
    ok = max(report["ok"], 1)
    groups = {}
    for tid, (group, vol, invol, cpu) in after.items():
        _, vol0, invol0, cpu0 = before.get(tid, (group, 0, 0, 0.0))
        g = groups.setdefault(group, [0, 0, 0])
        g[0] += (cpu - cpu0) * 1e6 / ok
        g[1] += (vol - vol0) / ok
        g[2] += (invol - invol0) / ok
    row = {"build": label, "rate": rate, "round": round_no, "ok": report["ok"], "offered": report["offered"],
           "p99_ms": report["latency_ms"]["p99"], "errors": report["errors"],
           "threads": {g: {"cpu_us_per_request": v[0], "voluntary_per_request": v[1],
                           "involuntary_per_request": v[2]} for g, v in groups.items()}}
    total = sum(v[0] for v in groups.values())
    progress.say(f"  {label} at {rate:g}/s round {round_no}: {total:.1f} us CPU per request, p99 "
                 f"{row['p99_ms']:.1f} ms, errors {row['errors'] or 0}")
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", required=True, help="LABEL=PATH, repeatable")
    ap.add_argument("--rate", type=float, action="append", help="requests/s (repeatable; default 5000, 10000)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", default="64", help="a fixed pool of N connections, or on-demand")
    ap.add_argument("--pace-quantum-us", type=int, default=200, help="the generator's pacer quantum")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--loadgen", type=Path, default=REPO / "target" / "release" / "loadgen")
    args = ap.parse_args()
    rates = args.rate or [5000.0, 10000.0]
    builds = [tuple(b.split("=", 1)) for b in args.binary]
    progress = Progress()
    ensure_models(["tabular"], progress)
    (WORK / "thread-cost").mkdir(parents=True, exist_ok=True)
    rows = [run(args, label, binary, rate, round_no, progress)
            for rate in rates for round_no in range(1, args.rounds + 1) for label, binary in builds]
    date = datetime.date.today().isoformat()
    out = args.out or REPO / "bench" / "results" / date / "thread-cost"
    out.mkdir(parents=True, exist_ok=True)
    result = {"date": date, "commit": git_commit(), "cpu": cpu_model(), "seconds": args.seconds,
              "connections": args.connections, "pace_quantum_us": args.pace_quantum_us,
              "builds": dict(builds), "runs": rows}
    (out / "thread_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Server CPU and context switches per request, by thread (tabular, HTTP binary, batch 1)", "",
             f"{date}, commit {result['commit']}, {result['cpu']}; mlserve with no flags; {args.seconds:g} s "
             f"per run, Poisson arrivals, connections: {args.connections}; builds alternate round by round. Per answered request: CPU "
             "microseconds, voluntary (slept) and involuntary (preempted) context switches.", "",
             "| rate/s | build | round | p99 ms | tokio CPU µs | tokio vol / invol | HTTP I/O CPU µs "
             "| HTTP I/O vol / invol | instance CPU µs | instance vol / invol | server CPU µs |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = []
        for group in (TOKIO, HTTP_IO, INSTANCES):
            g = r["threads"].get(group, {})
            cells.append(f"{g.get('cpu_us_per_request', 0):.1f} | {g.get('voluntary_per_request', 0):.2f} / "
                         f"{g.get('involuntary_per_request', 0):.2f}")
        total = sum(v["cpu_us_per_request"] for v in r["threads"].values())
        lines.append(f"| {r['rate']:,.0f} | {r['build']} | {r['round']} | {r['p99_ms']:.1f} | "
                     + " | ".join(cells) + f" | {total:.1f} |")
    (out / "thread_cost.md").write_text("\n".join(lines) + "\n")
    progress.say(f"wrote {out}/thread_cost.{{md,json}}")


if __name__ == "__main__":
    main()
