#!/usr/bin/env python3
"""Two mlserve builds side by side: throughput and server CPU per request.

    .venv/bin/python bench/before_after.py --before OLD/target/release/mlserve \
        [--after target/release/mlserve] [--rounds 3] [--quick]

Answers "what did this change cost?" in one run on one machine. Both builds
serve the same bench model (tabular, batch 1 by default: per-request cost is
everything there) from two processes started with the same flags; the load
alternates between them in ABBA order over several rounds, per protocol
(HTTP binary and gRPC), so drift of the machine (another process, thermal
state) falls on both sides alike. Each measurement is `loadgen closed` at a
fixed number of requests in flight. Reported per protocol: the median over
rounds of inferences/s and of server CPU milliseconds per inference, and
after/before ratios. Writes bench/results/<date>/before_after.{md,json} and,
with matplotlib, before_after.png (every round as a point).
"""

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlserve_proc import Server  # noqa: E402
from saturation import MODELS, REPO, Case, Progress, ensure_models, git_commit, measure_closed  # noqa: E402


def checkout(binary):
    """The checkout a `target/release/mlserve` was built in, so that it reads
    its own version's config/mlserve.toml; None (this directory) otherwise."""
    root = Path(binary).resolve().parents[2]
    return root if (root / "config" / "mlserve.toml").is_file() else None


def measure(ctx, server, case, protocol, concurrency):
    """One closed-loop run; (inferences/s, server CPU ms per inference, p99 ms, errors)."""
    ctx = dict(ctx, server=server)
    r = measure_closed(ctx, case, protocol, concurrency, case.duration, case.warmup)
    ips = r["inferences_per_s"]
    cpu_ms = r["cpu_cores"]["server"] / ips * 1e3 if ips else float("nan")
    return {"inferences_per_s": ips, "server_cpu_ms_per_inference": cpu_ms,
            "p99_ms": r["latency_ms"]["p99"], "errors": r["error_total"]}


def summarize(runs):
    """Per protocol: medians per build and the after/before ratios."""
    out = {}
    for protocol in sorted({r["protocol"] for r in runs}):
        side = {}
        for build in ("before", "after"):
            mine = [r for r in runs if r["protocol"] == protocol and r["build"] == build]
            side[build] = {
                "inferences_per_s": statistics.median(r["inferences_per_s"] for r in mine),
                "server_cpu_ms_per_inference": statistics.median(r["server_cpu_ms_per_inference"] for r in mine),
                "p99_ms": statistics.median(r["p99_ms"] for r in mine),
                "errors": sum(r["errors"] for r in mine),
            }
        b, a = side["before"], side["after"]
        out[protocol] = {**side,
                         "throughput_ratio": a["inferences_per_s"] / b["inferences_per_s"],
                         "cpu_per_inference_ratio": a["server_cpu_ms_per_inference"] / b["server_cpu_ms_per_inference"]}
    return out


def write(out_dir, setup, runs, summary):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "before_after.json").write_text(json.dumps(
        {"setup": setup, "runs": runs, "summary": summary}, indent=2) + "\n")
    lines = [f"# before / after: {setup['model']} batch {setup['batch']}, concurrency {setup['concurrency']}",
             "", f"before `{setup['before']}`, after `{setup['after']}`; {setup['rounds']} rounds (ABBA), "
             f"{setup['duration_s']:g} s each; {setup['cores']} cores, server {' '.join(setup['server_args'])}", "",
             "| protocol | before inf/s | after inf/s | throughput after/before | before CPU ms/inf | "
             "after CPU ms/inf | CPU per inference after/before | p99 ms before / after |",
             "|---|---|---|---|---|---|---|---|"]
    for protocol, s in summary.items():
        b, a = s["before"], s["after"]
        lines.append(f"| {protocol} | {b['inferences_per_s']:,.0f} | {a['inferences_per_s']:,.0f} | "
                     f"{s['throughput_ratio']:.3f} | {b['server_cpu_ms_per_inference']:.4f} | "
                     f"{a['server_cpu_ms_per_inference']:.4f} | {s['cpu_per_inference_ratio']:.3f} | "
                     f"{b['p99_ms']:.2f} / {a['p99_ms']:.2f} |")
    (out_dir / "before_after.md").write_text("\n".join(lines) + "\n")
    written = [out_dir / "before_after.md", out_dir / "before_after.json"]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    protocols = list(summary)
    for ax, key, title in ((axes[0], "inferences_per_s", "inferences/s (higher is better)"),
                           (axes[1], "server_cpu_ms_per_inference", "server CPU ms per inference (lower is better)")):
        for i, protocol in enumerate(protocols):
            for j, build in enumerate(("before", "after")):
                x = i * 3 + j
                ax.bar(x, summary[protocol][build][key], color=("#999999", "#1f77b4")[j],
                       label=build if i == 0 else None)
                pts = [r[key] for r in runs if r["protocol"] == protocol and r["build"] == build]
                ax.scatter([x] * len(pts), pts, color="black", s=10, zorder=3)
        ax.set_xticks([i * 3 + 0.5 for i in range(len(protocols))], protocols)
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"{setup['model']} batch {setup['batch']}: before vs after (medians, rounds as points)")
    fig.tight_layout()
    fig.savefig(out_dir / "before_after.png", dpi=110)
    written.append(out_dir / "before_after.png")
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="the baseline mlserve binary")
    ap.add_argument("--after", type=Path, default=REPO / "target" / "release" / "mlserve")
    ap.add_argument("--loadgen", type=Path, default=REPO / "target" / "release" / "loadgen")
    ap.add_argument("--model", default="tabular")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    ap.add_argument("--protocols", default="http-binary,grpc")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="halve the durations")
    ap.add_argument("--out", type=Path, help="results directory (default bench/results/<date>)")
    args = ap.parse_args()
    for binary in (args.before, args.after, args.loadgen):
        if not binary.is_file():
            sys.exit(f"{binary} is missing")
    f = 0.5 if args.quick else 1.0
    case = Case(args.model, args.batch, args.duration * f, args.warmup * f, 0, [args.concurrency])
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    ensure_models([args.model])

    cores = len(os.sched_getaffinity(0))
    workers = max(cores // 2, 1)
    server_args = ["--worker-threads", str(workers), "--cpu-threads", str(max(cores - workers, 1))]
    work = REPO / "bench" / "work"
    servers = {"before": Server(args.before, MODELS, server_args, work / "before.log", checkout(args.before)),
               "after": Server(args.after, MODELS, server_args, work / "after.log", checkout(args.after))}
    steps = args.rounds * len(protocols) * 2
    progress = Progress(steps * (case.duration + case.warmup + 0.5), steps)
    ctx = {"loadgen": args.loadgen, "client_threads": 1}
    runs = []
    try:
        for server in servers.values():
            server.start()
        for rnd in range(args.rounds):
            order = ("before", "after") if rnd % 2 == 0 else ("after", "before")
            for protocol in protocols:
                for build in order:
                    progress.say(f"round {rnd + 1} {protocol} {build}")
                    r = measure(ctx, servers[build], case, protocol, args.concurrency)
                    r.update(build=build, protocol=protocol, round=rnd + 1)
                    runs.append(r)
                    progress.say(f"  {r['inferences_per_s']:,.0f} inf/s, "
                                 f"{r['server_cpu_ms_per_inference']:.4f} server CPU ms/inf", advance=False)
    finally:
        for server in servers.values():
            server.stop()
    summary = summarize(runs)
    setup = {"date": datetime.date.today().isoformat(), "cores": cores, "git": git_commit(),
             "before": str(args.before), "after": str(args.after), "model": args.model, "batch": args.batch,
             "concurrency": args.concurrency, "rounds": args.rounds, "duration_s": case.duration,
             "server_args": server_args}
    out_dir = args.out or REPO / "bench" / "results" / setup["date"]
    for protocol, s in summary.items():
        print(f"{protocol}: throughput after/before {s['throughput_ratio']:.3f}, "
              f"server CPU per inference after/before {s['cpu_per_inference_ratio']:.3f}")
    for path in write(out_dir, setup, runs, summary):
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
