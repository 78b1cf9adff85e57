#!/usr/bin/env python3
"""Stalls at a high request rate (issue 13, "no stalls"): the tabular model
at a constant --rate (20,000 requests/s) for --seconds, open loop, batch 1
over HTTP binary, alternating between builds for --rounds rounds each.

Connections, `--connections` (repeatable, each a run per round): `on-demand`
opens one per outstanding request (as a client pool grows under load, up to
4,096); a number N is a fixed pool, as wrk2 keeps (an arrival that finds all
N busy waits in the client, its latency still counted from its scheduled
time). Default: a pool of 64, and the generator's pacer waking at most every
200 µs (`--pace-quantum-us`), so that it takes less of the cores it shares
with the server.

    .venv/bin/python bench/stall.py --binary before=/tmp/mlserve-old --binary after=target/release/mlserve

Per run: p99 and p99.9 of the successes, the worst second's p99, errors by
label, the kernel's accept-queue overflows during the run
(TcpExtListenOverflows in /proc/net/netstat: connections dropped because the
listener's queue was full, each one a client waiting out a SYN retransmit),
and the hypervisor's steal (`host_steal.py`): the vCPU time the host took in
the run's worst second (by p99) and in its second with the most steal, so
that a stall the host caused can be told from one the server caused.
Writes bench/results/<date>/stall/stall.{md,json}.
"""

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_timeline import CpuTimeline, available as timeline_available  # noqa: E402
from host_steal import StealSampler, plot as plot_steal  # noqa: E402
from mlserve_proc import Server, cpu_seconds  # noqa: E402
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


def pool_args(connections):
    """The loadgen's options for a `--connections` value."""
    return [] if connections == "on-demand" else ["--connections", connections, "--warm-connections", connections]


def run(args, label, binary, connections, round_no, progress, out):
    server = Server(binary, model_repository("tabular"), [],
                    WORK / "stall" / f"mlserve-{label}-{connections}-{round_no}.log")
    timeline = CpuTimeline(WORK / "stall" / f"perf-{label}-{connections}-{round_no}.data") \
        if args.cpu_timeline else None
    steal = StealSampler()
    try:
        server.start()
        overflows = tcp_ext("ListenOverflows")
        server_cpu = cpu_seconds(server.pid)
        if timeline:
            timeline.start()
            time.sleep(1.0)
        steal.start()
        # The loadgen's first arrival is its start plus a 20 ms lead.
        run_start = time.monotonic() + 0.02
        report, loadgen_cpu, _ = run_loadgen(args.loadgen, [
            "open", "--target", server.url("http"), "--protocol", "http-binary", "--model", "tabular",
            "--rate", str(args.rate), "--duration", str(args.seconds), "--seed", str(round_no),
            "--inputs", str(WORK), "--max-in-flight", "4096", "--timeout", "10", "--drain", "10",
            "--quiet", "--pace-quantum-us", str(args.pace_quantum_us), *pool_args(connections)], WORK / "stall" / f"open-{label}-{connections}-{round_no}.json")
        overflows = tcp_ext("ListenOverflows") - overflows
        server_cpu = cpu_seconds(server.pid) - server_cpu
    finally:
        steal.stop()
        if timeline:
            timeline.stop()
        server.stop()
    per_second = [s["p99_ms"] or 0.0 for s in report["timeline"]]
    worst = max(per_second, default=0.0)
    worst_s = per_second.index(worst) if per_second else 0
    stolen = steal.per_second(run_start, len(per_second))
    row = {"build": label, "connections": connections, "round": round_no, "offered": report["offered"], "ok": report["ok"],
           "p99_ms": report["latency_ms"]["p99"], "p999_ms": report["latency_ms"]["p999"],
           "max_ms": report["latency_ms"]["max"], "worst_second_p99_ms": worst,
           "send_lag_p99_ms": report["send_lag_ms"]["p99"],
           "server_cpu_us": 1e6 * server_cpu / max(report["offered"], 1),
           "loadgen_cpu_us": 1e6 * loadgen_cpu / max(report["offered"], 1),
           "errors": report["errors"], "listen_overflows": overflows,
           "per_second_p99_ms": per_second, "steal_per_second_ms": stolen,
           "steal_worst_second_ms": stolen[worst_s] if stolen else 0.0,
           "steal_most_in_a_second_ms": max(stolen, default=0.0)}
    if timeline:
        bins = timeline.bins()
        row["other_cores_worst_second"] = CpuTimeline.other_in(bins, run_start + worst_s, run_start + worst_s + 1)
        name = f"cpu-{label}-{connections}-{round_no}.png"
        CpuTimeline.plot(bins, out / name, per_second, run_start,
                         f"{label}, {connections} connections, round {round_no}: CPU per 100 ms")
        row["cpu_timeline_png"] = name
    progress.say(f"  {label} ({connections} connections) round {round_no}: p99 {row['p99_ms']:.1f} ms, p99.9 {row['p999_ms']:.1f} ms, "
                 f"worst second p99 {worst:.1f} ms, CPU µs/request server {row['server_cpu_us']:.1f} "
                 f"loadgen {row['loadgen_cpu_us']:.1f}, "
                 + (f"other processes in the worst second {row['other_cores_worst_second']:.2f} cores, "
                    if timeline else "")
                 + f"host steal in the worst second {row['steal_worst_second_ms']:.0f} ms "
                 f"(most in any second {row['steal_most_in_a_second_ms']:.0f} ms), "
                 + f"errors {row['errors']}, accept-queue overflows {overflows}")
    return row


def steal_summary(rows, slow_ms=10.0):
    """One sentence: the host's steal in the seconds whose p99 passed
    `slow_ms`, against the other seconds, over every run."""
    slow, fast = [], []
    for r in rows:
        for p99, stolen in zip(r["per_second_p99_ms"], r["steal_per_second_ms"]):
            (slow if p99 > slow_ms else fast).append(stolen)
    def mean(values):
        return sum(values) / len(values) if values else 0.0
    return (f"Host steal per second, over every run: {mean(slow):.0f} ms on average in the "
            f"{len(slow)} seconds whose p99 passed {slow_ms:g} ms, {mean(fast):.0f} ms in the "
            f"{len(fast)} others.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", required=True, help="LABEL=PATH, repeatable")
    ap.add_argument("--rate", type=float, default=20000.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pace-quantum-us", type=int, default=200,
                    help="the load generator's pacer wakes at most once per this many µs (0: per arrival)")
    ap.add_argument("--cpu-timeline", action="store_true",
                    help="record every CPU with perf during each run and plot who had it, 100 ms at a time")
    ap.add_argument("--connections", action="append",
                    help="'on-demand' or a fixed pool size, repeatable (default: 64, as wrk keeps)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--loadgen", type=Path, default=REPO / "target" / "release" / "loadgen")
    args = ap.parse_args()
    builds = [tuple(b.split("=", 1)) for b in args.binary]
    pools = args.connections or ["64"]
    for pool in pools:
        if pool != "on-demand" and not (pool.isdigit() and int(pool) > 0):
            ap.error(f"--connections {pool}: 'on-demand' or a positive number")
    if args.cpu_timeline and not timeline_available():
        ap.error("--cpu-timeline needs perf and permission to record every CPU")
    date = datetime.date.today().isoformat()
    out = args.out or REPO / "bench" / "results" / date / "stall"
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress()
    ensure_models(["tabular"], progress)
    (WORK / "stall").mkdir(parents=True, exist_ok=True)
    rows = []
    for round_no in range(1, args.rounds + 1):
        for label, binary in builds:
            for pool in pools:
                rows.append(run(args, label, binary, pool, round_no, progress, out))
    result = {"date": date, "commit": git_commit(), "cpu": cpu_model(), "rate": args.rate,
              "pace_quantum_us": args.pace_quantum_us,
              "seconds": args.seconds, "builds": dict(builds), "connections": pools, "runs": rows}
    (out / "stall.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Stalls at {args.rate:,.0f} requests/s (tabular, HTTP binary, batch 1)", "",
             f"{date}, commit {result['commit']}, {result['cpu']}; mlserve with no flags; "
             f"{args.seconds:g} s per run, Poisson arrivals (the load generator's pacer quantum "
             f"{args.pace_quantum_us} µs); connections: on demand (one per outstanding "
             f"request) or a fixed pool of N (arrivals wait in the client for a free one, latency "
             f"from the scheduled time); builds and pools alternate round by round.", "",
             "| build | connections | round | ok / offered | p99 ms | p99.9 ms | max ms | worst second's p99 ms "
             "| client wait p99 ms | CPU µs per request: server, loadgen "
             "| other processes' most in a 100 ms of the worst second, cores "
             "| host steal, worst second / most in a second, ms | errors | accept-queue overflows |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        other = f"{r['other_cores_worst_second']:.2f}" if "other_cores_worst_second" in r else "—"
        lines.append(f"| {r['build']} | {r['connections']} | {r['round']} | {r['ok']:,} / {r['offered']:,} "
                     f"| {r['p99_ms']:.1f} | {r['p999_ms']:.1f} | {r['max_ms']:.1f} | {r['worst_second_p99_ms']:.1f} "
                     f"| {r['send_lag_p99_ms']:.1f} | {r['server_cpu_us']:.1f}, {r['loadgen_cpu_us']:.1f} | {other} "
                     f"| {r['steal_worst_second_ms']:.0f} / {r['steal_most_in_a_second_ms']:.0f} "
                     f"| {json.dumps(r['errors']) if r['errors'] else '—'} | {r['listen_overflows']} |")
    lines += ["", steal_summary(rows)]
    panels = [(f"{r['build']}, {r['connections']} connections, round {r['round']}: p99.9 {r['p999_ms']:.1f} ms",
               r["per_second_p99_ms"], r["steal_per_second_ms"]) for r in rows]
    if plot_steal(panels, out / "stall_steal.png"):
        lines += ["", "![each second's p99 over the host's steal](stall_steal.png)"]
    (out / "stall.md").write_text("\n".join(lines) + "\n")
    progress.say(f"wrote {out}/stall.{{md,json}}")


if __name__ == "__main__":
    main()
