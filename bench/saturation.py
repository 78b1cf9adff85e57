#!/usr/bin/env python3
"""Server throughput at saturation as a fraction of raw ONNX Runtime throughput.

One command runs the whole experiment on this machine:

    .venv/bin/python bench/saturation.py [--quick]

It expects target/release/mlserve and target/release/loadgen (build them with
`cargo build --release -p mlserve -p mlserve-loadgen`), makes the bench models
in bench/work/models when they are missing, starts ONE mlserve on free ports,
and for each case (model x batch):

  1. raw ceiling: `loadgen raw`, the model in-process in ONNX Runtime with as
     many intra-op threads as the server gives ONNX Runtime, back-to-back
     batches of the same size;
  2. for each protocol (HTTP binary, gRPC): `loadgen closed` with enough
     requests in flight to keep the model busy (tabular: a short sweep over
     1, 2, 4 and 8 full batches in flight, max_batch_size/batch requests
     each, capped at the queue size; the best level is measured;
     resnet50: 2 requests, so the instance always has the next batch
     queued and runs batches of exactly the case's size, like raw).

With `--peers triton` it then starts real Triton (the nvidia-pytriton
wheel's tritonserver, python backend running onnxruntime with as many
intra-op threads as mlserve's ONNX Runtime gets, the bench models' batching
settings; bench/baselines/triton_server.py, set up by
bench/triton/setup.sh) and measures every case and protocol the same way,
against the same raw ceiling; the report puts mlserve ÷ Triton beside them.

Around every run it samples the server's statistics (/v2/models/M/stats) and
the CPU time of the server's threads and of the load generator, which say
where the time went. Writes bench/results/<date>/saturation.{md,json} and,
when matplotlib is installed, saturation.png. The server is stopped at the
end, also on error or Ctrl-C.
"""

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "baselines"))
import triton_server  # noqa: E402
from baseline_proc import cpu_delta, tree_cpu_seconds  # noqa: E402
from mlserve_proc import Server, cpu_seconds, thread_cpu  # noqa: E402
from saturation_report import write_outputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "bench" / "work" / "models"
MAX_BATCH = {"tabular": 64, "resnet50": 32}  # max_batch_size of the bench models
MAX_QUEUE = 256  # their dynamic_batching max_queue_size


@dataclass
class Case:
    """One model at one batch size, and how long to measure it."""
    model: str
    batch: int
    duration: float
    warmup: float
    sweep: float  # seconds per concurrency level tried; 0 = no sweep
    concurrency: list = field(default_factory=list)

    @property
    def name(self):
        return f"{self.model} b{self.batch}"


def sweep_levels(model, batch):
    """1, 2, 4 and 8 full batches' worth of requests in flight, at most the
    model's queue size (256 requests), so the sweep never fills the queue."""
    base = max(1, MAX_BATCH[model] // batch)
    return sorted({min(base * k, MAX_QUEUE) for k in (1, 2, 4, 8)})


def default_cases(quick):
    """tabular at 16 rows (a small batch of rows per call) and at 1 row (online
    scoring of one row per request, where per-request cost is everything);
    resnet50 at 1 and 8 images. Durations halve with --quick."""
    f = 0.5 if quick else 1.0
    out = []
    for batch in (16, 1):
        out.append(Case("tabular", batch, 10 * f, 2 * f, 3 * f, sweep_levels("tabular", batch)))
    for batch in (1, 8):
        out.append(Case("resnet50", batch, 20 * f, 5 * f, 0, [2]))
    return out


def parse_cases(text, quick):
    """`tabular:16,resnet50:8` -> cases with the default timings per model."""
    defaults = {(c.model, c.batch): c for c in default_cases(quick)}
    out = []
    for item in text.split(","):
        model, _, batch = item.partition(":")
        batch = int(batch or 1)
        if (model, batch) in defaults:
            out.append(defaults[(model, batch)])
            continue
        like = next(c for c in default_cases(quick) if c.model == model)
        conc = sweep_levels(model, batch) if like.sweep else like.concurrency
        out.append(Case(model, batch, like.duration, like.warmup, like.sweep, conc))
    return out


class Progress:
    """`[step/total elapsed/planned]` lines on stdout."""

    def __init__(self, planned_s, steps):
        self.start = time.monotonic()
        self.planned = planned_s
        self.steps = steps
        self.step = 0

    def say(self, text, advance=True):
        if advance:
            self.step += 1
        elapsed = time.monotonic() - self.start
        mm = lambda s: f"{int(s) // 60}:{int(s) % 60:02d}"
        print(f"[{self.step}/{self.steps} {mm(elapsed)}/~{mm(self.planned)}] {text}", flush=True)


def run_loadgen(binary, args, out_json=None):
    """Runs loadgen (its progress on our stderr); returns (its JSON report,
    its CPU seconds, wall seconds). The report is kept at `out_json` when
    given, else written to a scratch file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_json) if out_json else Path(tmp) / "report.json"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.run([str(binary), *args, "--json-out", str(out)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}")
        report = json.loads(out.read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return report, cpu, wall


def stats_delta(before, after):
    """What the server did between two /stats snapshots of one model."""
    def batch_ns(s):
        return sum(b["compute_input"]["ns"] + b["compute_infer"]["ns"] + b["compute_output"]["ns"]
                   for b in s.get("batch_stats", []))
    execs = after["execution_count"] - before["execution_count"]
    rows = after["inference_count"] - before["inference_count"]
    reqs = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    queue_ns = after["inference_stats"]["queue"]["ns"] - before["inference_stats"]["queue"]["ns"]
    return {
        "executions": execs,
        "rows_per_execution": rows / execs if execs else 0.0,
        "requests_per_execution": reqs / execs if execs else 0.0,
        "mean_queue_ms": queue_ns / reqs / 1e6 if reqs else 0.0,
        "compute_s": (batch_ns(after) - batch_ns(before)) / 1e9,
    }


def measure_closed(ctx, case, protocol, concurrency, duration, warmup):
    """One closed-loop run with the server-side and CPU accounting around it
    (mlserve: per thread; Triton: its process tree, the python stubs too)."""
    server, peer = ctx["server"], ctx.get("target", "mlserve") != "mlserve"
    url = server.url("grpc" if protocol == "grpc" else "http")
    stats0 = server.model_stats(case.model)
    threads0, total0 = ({}, tree_cpu_seconds(server.pid)) if peer else (thread_cpu(server.pid), cpu_seconds(server.pid))
    report, client_cpu, wall = run_loadgen(ctx["loadgen"], [
        "closed", "--target", url, "--protocol", protocol, "--model", case.model,
        "--batch", str(case.batch), "--concurrency", str(concurrency),
        "--duration", str(duration), "--warmup", str(warmup), "--threads", str(ctx["client_threads"])])
    stats1 = server.model_stats(case.model)
    threads1, total1 = ({}, tree_cpu_seconds(server.pid)) if peer else (thread_cpu(server.pid), cpu_seconds(server.pid))
    server_cpu = cpu_delta(total0, total1) if peer else total1 - total0
    server_side = stats_delta(stats0, stats1)
    server_side["ort_busy"] = server_side.pop("compute_s") / wall
    groups = {}
    for tid, (group, ticks) in threads1.items():
        groups[group] = groups.get(group, 0.0) + ticks - threads0.get(tid, (group, 0.0))[1]
    report["server"] = server_side
    report["target"] = ctx.get("target", "mlserve")
    report["cpu_cores"] = {
        "server": server_cpu / wall,
        "server_threads": {g: round(v / wall, 3) for g, v in sorted(groups.items())},
        "loadgen": client_cpu / wall,
    }
    return report


def measure_case(ctx, case, progress):
    """Raw ceiling, then each protocol; returns the reports."""
    model_file = (MODELS / case.model / "1" / "model.onnx").relative_to(REPO)  # loadgen runs in REPO
    progress.say(f"{case.name} raw ceiling ({ctx['intra']} intra-op thread(s), {case.duration:g} s)")
    raw, cpu, wall = run_loadgen(ctx["loadgen"], [
        "raw", "--model-file", str(model_file), "--batch", str(case.batch),
        "--intra-threads", str(ctx["intra"]), "--duration", str(case.duration),
        "--warmup", str(min(case.warmup, 3.0))])
    raw["cpu_cores"] = {"loadgen": cpu / wall}
    ceiling = raw["inferences_per_s"]
    progress.say(f"  raw: {ceiling:,.0f} inf/s, p50 {raw['latency_ms']['p50']:.3f} ms", advance=False)
    return [raw, *measure_protocols(ctx, case, ceiling, progress)]


def measure_protocols(ctx, case, ceiling, progress):
    """Each protocol against the server in `ctx`: the concurrency sweep, then
    the measured run at the best level; returns the reports."""
    reports, who = [], "" if ctx.get("target", "mlserve") == "mlserve" else f"{ctx['target']} "
    for protocol in ctx["protocols"]:
        best, sweep = case.concurrency[0], []
        if case.sweep and len(case.concurrency) > 1:
            progress.say(f"{who}{case.name} {protocol}: sweep concurrency {case.concurrency}")
            for c in case.concurrency:
                r = measure_closed(ctx, case, protocol, c, case.sweep, min(1.0, case.warmup))
                sweep.append({"concurrency": c, "inferences_per_s": r["inferences_per_s"],
                              "errors": r["error_total"]})
            best = max(sweep, key=lambda s: (s["errors"] == 0, s["inferences_per_s"]))["concurrency"]
        else:
            progress.step += 1
        progress.say(f"{who}{case.name} {protocol} concurrency {best} ({case.duration:g} s)")
        r = measure_closed(ctx, case, protocol, best, case.duration, case.warmup)
        r["sweep"] = sweep
        r["fraction_of_raw"] = r["inferences_per_s"] / ceiling if ceiling else 0.0
        reports.append(r)
        errors = f", {r['error_total']} errors {r['errors']}" if r["error_total"] else ""
        progress.say(f"  {protocol}: {r['inferences_per_s']:,.0f} inf/s = {r['fraction_of_raw']:.3f} of raw, "
                     f"p50 {r['latency_ms']['p50']:.3f} ms, p99 {r['latency_ms']['p99']:.3f} ms{errors}",
                     advance=False)
    return reports


def planned_seconds(cases, protocols, servers=1):
    total = 0.0
    for c in cases:
        total += c.duration + min(c.warmup, 3.0) + 1
        sweep = (c.sweep + min(1.0, c.warmup) + 0.5) * len(c.concurrency) if c.sweep else 0
        total += servers * len(protocols) * (sweep + c.duration + c.warmup + 0.5)
    return total


def measure_triton(args, cases, ceilings, protocols, intra, progress):
    """Every case and protocol against real Triton serving the same models
    (python backend, `intra` onnxruntime threads); returns the reports."""
    repo = REPO / "bench" / "work" / "saturation-triton"
    models = list(dict.fromkeys(c.model for c in cases))
    for model in models:
        triton_server.write_model(repo, model, MODELS / model, intra_threads=intra,
                                  queue_bound=args.triton_queue_bound == "on")
    server = triton_server.Triton(repo, REPO / "bench" / "work" / "tritonserver.log")
    reports = []
    try:
        server.start(models)
        ctx = {"server": server, "target": "triton", "loadgen": args.loadgen, "protocols": protocols,
               "client_threads": args.client_threads}
        for case, ceiling in zip(cases, ceilings):
            reports.extend(measure_protocols(ctx, case, ceiling, progress))
    finally:
        server.stop()
    return reports


def ensure_models(models):
    missing = [m for m in models if not (MODELS / m / "1" / "model.onnx").is_file()]
    if missing:
        print(f"making bench models {missing} in {MODELS.relative_to(REPO)}", flush=True)
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), "--set", "bench",
                        "--out", str(MODELS)], check=True, cwd=REPO)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="halve every duration")
    ap.add_argument("--cases", help="e.g. tabular:16,resnet50:1 (default: tabular 16 and 1, resnet50 1 and 8)")
    ap.add_argument("--protocols", default="http-binary,grpc", help="comma list of http-binary, grpc, http-json")
    ap.add_argument("--worker-threads", type=int, default=0, help="server tokio workers (0: its default)")
    ap.add_argument("--cpu-threads", type=int, default=0, help="server ONNX Runtime cores (0: its default)")
    ap.add_argument("--client-threads", type=int, default=1, help="loadgen threads")
    ap.add_argument("--peers", default="", help="servers measured after mlserve the same way: triton "
                    "(real Triton, python backend running onnxruntime; bash bench/triton/setup.sh first)")
    triton_server.add_queue_bound_option(ap)
    ap.add_argument("--out", type=Path, help="results directory (default bench/results/<date>)")
    ap.add_argument("--mlserve", type=Path, default=REPO / "target" / "release" / "mlserve")
    ap.add_argument("--loadgen", type=Path, default=REPO / "target" / "release" / "loadgen")
    args = ap.parse_args()

    for binary in (args.mlserve, args.loadgen):
        if not binary.is_file():
            sys.exit(f"{binary} is missing: run `cargo build --release -p mlserve -p mlserve-loadgen`")
    cases = parse_cases(args.cases, args.quick) if args.cases else default_cases(args.quick)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for peer in peers:
        if peer != "triton":
            sys.exit(f"unknown peer {peer!r}; known: triton")
    if peers and not triton_server.installed():
        sys.exit("Triton is not set up: run `bash bench/triton/setup.sh`")
    ensure_models(list(dict.fromkeys(c.model for c in cases)))

    cores = len(os.sched_getaffinity(0))
    # The server's own defaults (src/threads.rs) unless a count is given;
    # only given counts are passed, so a run without them is the no-flags server.
    workers = args.worker_threads or max(cores // 2, 1)
    ort_cores = args.cpu_threads or cores
    server_args = []
    if args.worker_threads:
        server_args += ["--worker-threads", str(workers)]
    if args.cpu_threads:
        server_args += ["--cpu-threads", str(ort_cores)]
    out_dir = args.out or REPO / "bench" / "results" / datetime.date.today().isoformat()
    steps = sum(1 + 2 * len(protocols) * (1 + len(peers)) for _ in cases)
    progress = Progress(planned_seconds(cases, protocols, 1 + len(peers)), steps)
    print(f"{cores} cores: server {workers} tokio worker(s) + {ort_cores} ONNX Runtime core(s); "
          f"raw ceiling with {ort_cores} intra-op thread(s); ~{progress.planned / 60:.1f} min planned",
          flush=True)

    server = Server(args.mlserve, MODELS, server_args, REPO / "bench" / "work" / "mlserve.log")
    reports = []
    try:
        server.start()
        ctx = {"server": server, "loadgen": args.loadgen, "intra": ort_cores,
               "protocols": protocols, "client_threads": args.client_threads}
        for case in cases:
            reports.extend(measure_case(ctx, case, progress))
    finally:
        server.stop()
    if peers:
        ceilings = [r["inferences_per_s"] for r in reports if r["mode"] == "raw"]
        reports.extend(measure_triton(args, cases, ceilings, protocols, ort_cores, progress))
    setup = {
        "date": datetime.date.today().isoformat(),
        "cores": cores,
        "cpu": cpu_model(),
        "git": git_commit(),
        "server_args": server_args,
        "loadgen_threads": args.client_threads,
        "quick": args.quick,
        "peers": peers,
        "triton_queue_bound": args.triton_queue_bound if peers else None,
    }
    written = write_outputs(out_dir, setup, reports)
    for path in written:
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def git_commit():
    """Short commit of the checkout, `-dirty` when tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=REPO)
    return (head.stdout.strip() or "unknown") + ("-dirty" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
