#!/usr/bin/env python3
"""Stalls at a high request rate (issue 13, "no stalls"): the tabular model
at a constant --rate (20,000 requests/s) for --seconds, open loop, batch 1
over HTTP binary, connections opened on demand (as a client pool grows
under load), alternating between builds for --rounds rounds each.

    .venv/bin/python bench/stall.py --binary before=/tmp/mlserve-old --binary after=target/release/mlserve

Per run: p99 and p99.9 of the successes, the worst second's p99, errors by
label, and the kernel's accept-queue overflows during the run
(TcpExtListenOverflows in /proc/net/netstat: connections dropped because the
listener's queue was full, each one a client waiting out a SYN retransmit).
Writes bench/results/<date>/stall/stall.{md,json}.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlserve_proc import Server  # noqa: E402
from paper import MODELS, WORK, Progress, ensure_models, model_repository  # noqa: E402
from saturation import cpu_model, git_commit, run_loadgen  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def tcp_ext(name):
    """A TcpExt counter of /proc/net/netstat."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            return int(dict(zip(head.split()[1:], values.split()[1:]))[name])
    return 0


def run(args, label, binary, round_no, progress):
    server = Server(binary, model_repository("tabular"), [],
                    WORK / "stall" / f"mlserve-{label}-{round_no}.log")
    try:
        server.start()
        overflows = tcp_ext("ListenOverflows")
        report, _, _ = run_loadgen(args.loadgen, [
            "open", "--target", server.url("http"), "--protocol", "http-binary", "--model", "tabular",
            "--rate", str(args.rate), "--duration", str(args.seconds), "--seed", str(round_no),
            "--inputs", str(WORK), "--max-in-flight", "4096", "--timeout", "10", "--drain", "10",
            "--quiet"], WORK / "stall" / f"open-{label}-{round_no}.json")
        overflows = tcp_ext("ListenOverflows") - overflows
    finally:
        server.stop()
    worst = max((s["p99_ms"] or 0.0 for s in report["timeline"]), default=0.0)
    row = {"build": label, "round": round_no, "offered": report["offered"], "ok": report["ok"],
           "p99_ms": report["latency_ms"]["p99"], "p999_ms": report["latency_ms"]["p999"],
           "max_ms": report["latency_ms"]["max"], "worst_second_p99_ms": worst,
           "errors": report["errors"], "listen_overflows": overflows}
    progress.say(f"  {label} round {round_no}: p99 {row['p99_ms']:.1f} ms, p99.9 {row['p999_ms']:.1f} ms, "
                 f"worst second p99 {worst:.1f} ms, errors {row['errors']}, accept-queue overflows {overflows}")
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", required=True, help="LABEL=PATH, repeatable")
    ap.add_argument("--rate", type=float, default=20000.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--loadgen", type=Path, default=REPO / "target" / "release" / "loadgen")
    args = ap.parse_args()
    builds = [tuple(b.split("=", 1)) for b in args.binary]
    progress = Progress()
    ensure_models(["tabular"], progress)
    (WORK / "stall").mkdir(parents=True, exist_ok=True)
    rows = []
    for round_no in range(1, args.rounds + 1):
        for label, binary in builds:
            rows.append(run(args, label, binary, round_no, progress))
    date = datetime.date.today().isoformat()
    out = args.out or REPO / "bench" / "results" / date / "stall"
    out.mkdir(parents=True, exist_ok=True)
    result = {"date": date, "commit": git_commit(), "cpu": cpu_model(), "rate": args.rate,
              "seconds": args.seconds, "builds": dict(builds), "runs": rows}
    (out / "stall.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Stalls at {args.rate:,.0f} requests/s (tabular, HTTP binary, batch 1)", "",
             f"{date}, commit {result['commit']}, {result['cpu']}; mlserve with no flags; "
             f"{args.seconds:g} s per run, Poisson arrivals, connections opened on demand; builds "
             f"alternate round by round.", "",
             "| build | round | ok / offered | p99 ms | p99.9 ms | max ms | worst second's p99 ms "
             "| errors | accept-queue overflows |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['build']} | {r['round']} | {r['ok']:,} / {r['offered']:,} | {r['p99_ms']:.1f} "
                     f"| {r['p999_ms']:.1f} | {r['max_ms']:.1f} | {r['worst_second_p99_ms']:.1f} "
                     f"| {json.dumps(r['errors']) if r['errors'] else '—'} | {r['listen_overflows']} |")
    (out / "stall.md").write_text("\n".join(lines) + "\n")
    progress.say(f"wrote {out}/stall.{{md,json}}")


if __name__ == "__main__":
    main()
