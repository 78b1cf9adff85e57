#!/usr/bin/env python3
"""The paper's experiment on this machine: Tables 2 and 3, Figures 2 and 3,
queue depth over time, and the fraction of the raw ONNX Runtime ceiling.

One command:

    .venv/bin/python bench/paper.py [--quick] [--time-factor 0.2]

It expects target/release/mlserve and target/release/loadgen (build them
with `cargo build --release -p mlserve -p mlserve-loadgen`), makes the bench
models and the request payloads in bench/work/ when they are missing, and
for each model, one after the other:

  1. raw ceiling: `loadgen raw` at a few batch sizes with the ONNX Runtime
     threads the server gets; the best inferences/s is the ceiling;
  2. mlserve all-in-one (target/release/mlserve on free ports, this model
     only): saturation with `loadgen closed` over HTTP binary and gRPC (the
     fraction of the ceiling), then, for the profile workloads, the three
     profiles open-loop (`loadgen open`, rows of real payloads, queue depth
     sampled from /metrics);
  3. the Flask monolith (bench/baselines/run_flask.sh, 4 gunicorn workers):
     its closed-loop saturation, then the same three profiles at the same
     rates;
  4. with `--architectures ...,triton`: real Triton (the nvidia-pytriton
     wheel's tritonserver, python backend running onnxruntime with the
     ONNX Runtime threads mlserve gets, mlserve's batching settings;
     bench/baselines/triton_server.py, set up by bench/triton/setup.sh):
     the same closed-loop saturation over HTTP binary and gRPC and the same
     profiles at the same rates.

Rates: the paper's profiles (steady 100 rps, bursty 100 rps with 1,000 rps
from 60 s to 120 s, ramp 50 to 500 rps) are scaled per workload so that the
spike offers --spike-load times mlserve's measured closed-loop capacity
(steady is a tenth of that), capped at --max-rate requests/s (the load
generator shares the 2 cores); durations are scaled by --time-factor.

Writes bench/results/<date>/paper.md, paper.json and the plots. Every server
is stopped at the end, also on error or Ctrl-C.
"""

import argparse
import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "baselines"))
import triton_server  # noqa: E402
from baseline_proc import Flask, cpu_delta, tree_cpu_seconds  # noqa: E402
from mlserve_proc import Server  # noqa: E402
from paper_report import write_outputs  # noqa: E402
from saturation import cpu_model, git_commit, run_loadgen  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
MODELS = WORK / "models"
PROFILES = ["steady", "bursty", "ramp"]

# Per model: mlserve's threads with --mlserve-threads tuned (compute-bound
# models give ONNX Runtime both cores; the tokio worker is nearly idle for
# them; by default mlserve runs with no thread flags) and Triton's and the raw
# ceiling's ONNX Runtime intra-op threads, the raw ceiling's batch
# sizes, how many requests keep the server saturated in closed loop (enough
# for the dynamic batcher to form batches near the raw optimum), and the
# closed-loop window: long enough to hold 20+ batches, since a batch's
# requests complete together and the window counts whole batches.
MODEL_SETUP = {
    "tabular": {"worker_threads": 1, "cpu_threads": 1, "raw_batches": [1, 16, 64],
                "closed_concurrency": 128, "closed_s": 8},
    "resnet50": {"worker_threads": 1, "cpu_threads": 2, "raw_batches": [1, 8, 16, 32],
                 "closed_concurrency": 16, "closed_s": 12},
    "minilm": {"worker_threads": 1, "cpu_threads": 2, "raw_batches": [1, 8, 16, 32],
               "closed_concurrency": 16, "closed_s": 12},
    "bert_base": {"worker_threads": 1, "cpu_threads": 2, "raw_batches": [1, 4, 8, 16],
                  "closed_concurrency": 8, "closed_s": 20},
}
ARCHITECTURES = ["flask", "mlserve", "mlserve-split", "triton"]


class Progress:
    """`[mm:ss] text` lines on stdout."""

    def __init__(self):
        self.start = time.monotonic()

    def say(self, text):
        e = int(time.monotonic() - self.start)
        print(f"[{e // 60:2d}:{e % 60:02d}] {text}", flush=True)


def trees_cpu_seconds(pids):
    """`tree_cpu_seconds` over one process tree or several (the split
    deployment's processes together)."""
    out = {}
    for pid in pids if isinstance(pids, (list, tuple)) else [pids]:
        out.update(tree_cpu_seconds(pid))
    return out


def machine_busy_seconds():
    """CPU seconds all processes of the machine spent so far (/proc/stat:
    everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def raw_run(batch, report, other_cores):
    """One raw batch size: inferences/s = batch / mean `Session::run` time.
    (The window count, `inferences_per_s` of the report, counts whole runs
    that end in the window: at 16 images a run that is ±1 run in 4 s.)"""
    mean_ms = report["latency_ms"]["mean"]
    return {"batch": batch,
            "inferences_per_s": batch * 1000.0 / mean_ms if mean_ms > 0 else report["inferences_per_s"],
            "inferences_per_s_window": report["inferences_per_s"],
            "p50_ms": report["latency_ms"]["p50"], "other_cores": other_cores}


def model_repository(model):
    """bench/work/repos/<model>/: a repository holding only `model` (a link)."""
    repo = WORK / "repos" / model
    repo.mkdir(parents=True, exist_ok=True)
    link = repo / model
    if not link.exists():
        link.symlink_to(MODELS / model, target_is_directory=True)
    return repo


def ensure_models(models, progress):
    missing = [m for m in models if not (MODELS / m / "1" / "model.onnx").is_file()]
    if missing:
        progress.say(f"making bench models {missing} in {MODELS.relative_to(REPO)}")
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), "--set", "bench",
                        "--out", str(MODELS)], check=True, cwd=REPO)
    if not (WORK / "inputs" / "manifest.json").is_file():
        progress.say("making request payloads in bench/work/inputs")
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), "--set",
                        "bench-inputs", "--out", str(WORK)], check=True, cwd=REPO)


class Experiment:
    """Settings and collected results of one run."""

    def __init__(self, args, out_dir, progress):
        self.args = args
        self.progress = progress
        self.scratch = WORK / "paper" / out_dir.name
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.results = {"raw": {}, "saturation": [], "profiles": [], "workloads": {}}
        self.f = 0.5 if args.quick else 1.0

    def say(self, text):
        self.progress.say(text)

    def loadgen(self, args, name):
        return run_loadgen(self.args.loadgen, args, self.scratch / f"{name}.json")

    # --- the ceiling -----------------------------------------------------

    def raw(self, model):
        setup = MODEL_SETUP[model]
        best = None
        runs = []
        for batch in setup["raw_batches"]:
            busy0 = machine_busy_seconds()
            r, cpu, wall = self.loadgen([
                "raw", "--model-file", str((MODELS / model / "1" / "model.onnx").relative_to(REPO)),
                "--batch", str(batch), "--intra-threads", str(setup["cpu_threads"]),
                "--duration", str(4 * self.f), "--warmup", str(1.5 * self.f), "--inputs", str(WORK),
                "--quiet"],
                f"raw-{model}-b{batch}")
            other = max(machine_busy_seconds() - busy0 - cpu, 0.0) / wall
            runs.append(raw_run(batch, r, other))
            if other > 0.1:
                self.say(f"  WARNING: other processes used {other:.2f} cores during raw b{batch}")
            if best is None or runs[-1]["inferences_per_s"] > best["inferences_per_s"]:
                best = runs[-1]
        self.results["raw"][model] = {"intra_threads": setup["cpu_threads"], "runs": runs,
                                      "best": best}
        each = ", ".join(f"b{x['batch']} {x['inferences_per_s']:,.1f}" for x in runs)
        self.say(f"  raw {model}: best {best['inferences_per_s']:,.1f} inf/s at batch "
                 f"{best['batch']} ({each})")
        return best["inferences_per_s"]

    # --- closed-loop saturation -----------------------------------------

    def closed(self, arch, model, url, protocol, concurrency, pid):
        seconds = MODEL_SETUP[model]["closed_s"] * self.f
        cpu0, busy0 = trees_cpu_seconds(pid), machine_busy_seconds()
        r, client_cpu, wall = self.loadgen([
            "closed", "--target", url, "--protocol", protocol, "--model", model,
            "--batch", "1", "--concurrency", str(concurrency), "--duration", str(seconds),
            "--warmup", str(4 * self.f), "--inputs", str(WORK), "--quiet"],
            f"closed-{arch}-{model}-{protocol}")
        server_cpu = cpu_delta(cpu0, trees_cpu_seconds(pid))
        other = machine_busy_seconds() - busy0 - server_cpu - client_cpu
        ceiling = self.results["raw"].get(model, {}).get("best", {}).get("inferences_per_s")
        row = {
            "architecture": arch, "model": model, "protocol": protocol,
            "concurrency": concurrency, "inferences_per_s": r["inferences_per_s"],
            "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
            "errors": r["error_total"], "raw_ceiling": ceiling,
            "fraction_of_raw": r["inferences_per_s"] / ceiling if ceiling else None,
            "server_cores": server_cpu / wall, "loadgen_cores": client_cpu / wall,
            "other_cores": max(other, 0.0) / wall,
        }
        self.results["saturation"].append(row)
        frac = f" = {row['fraction_of_raw']:.3f} of raw" if ceiling else ""
        self.say(f"  {arch} {model} {protocol} closed c{concurrency}: "
                 f"{row['inferences_per_s']:,.1f} inf/s{frac}, p99 {row['p99_ms']:.1f} ms"
                 + (f", {row['errors']} errors" if row["errors"] else "")
                 + (f"; WARNING: other processes used {row['other_cores']:.2f} cores"
                    if row["other_cores"] > 0.1 else ""))
        return row

    # --- open-loop profiles ---------------------------------------------

    def profiles(self, arch, model, url, pid, metrics_url):
        w = self.results["workloads"][model]
        for profile in PROFILES:
            args = [
                "open", "--target", url, "--protocol", self.args.protocol, "--model", model,
                "--profile", profile, "--rate-multiplier", f"{w['rate_multiplier']:.6f}",
                "--time-factor", str(self.args.time_factor), "--arrivals", self.args.arrivals,
                "--seed", "1", "--inputs", str(WORK), "--max-in-flight",
                str(w["max_in_flight"]), "--timeout", str(self.args.timeout),
                "--drain", str(self.args.timeout)]
            if metrics_url:
                args += ["--metrics-url", metrics_url]
            if arch != "flask" and self.args.protocol != "grpc" and self.args.warm_connections:
                # A kept-alive pool, as a load balancer keeps (mlserve and
                # Triton keep connections alive). Never for Flask:
                # gunicorn's sync workers close every connection, and an idle
                # one would hold a worker.
                args += ["--warm-connections", str(self.args.warm_connections)]
            if self.args.loadgen_quiet:
                args.append("--quiet")
            self.say(f"  {arch} {model} {profile}")
            cpu0, busy0 = trees_cpu_seconds(pid), machine_busy_seconds()
            r, client_cpu, wall = self.loadgen(args, f"open-{arch}-{model}-{profile}")
            server_cpu = cpu_delta(cpu0, trees_cpu_seconds(pid))
            other = max(machine_busy_seconds() - busy0 - server_cpu - client_cpu, 0.0)
            r["other_cores"] = other / wall
            r["architecture"] = arch
            r["server_cpu_s"] = server_cpu
            r["loadgen_cpu_s"] = client_cpu
            r["run_wall_s"] = wall
            self.results["profiles"].append(r)
            l = r["latency_ms"]
            spike = r.get("spike_peak_sustained_per_s")
            self.say(f"    ok {r['ok']}/{r['offered']}, p50 {l['p50']:.1f} p99 {l['p99']:.1f} ms"
                     + (f", spike peak {spike:,.1f}/s" if spike is not None else "")
                     + (f", errors {r['errors']}" if r["errors"] else "")
                     + f", server CPU {1e6 * server_cpu / max(r['ok'], 1):,.0f} us/request"
                     + (f"; WARNING: other processes used {r['other_cores']:.2f} cores"
                        if r["other_cores"] > 0.1 else ""))

    # --- one model -------------------------------------------------------

    def model(self, model, profiles, saturation):
        setup = MODEL_SETUP[model]
        repo = model_repository(model)
        self.say(f"{model}: raw ONNX Runtime ceiling ({setup['cpu_threads']} intra-op thread(s))")
        self.raw(model)
        # No thread flags by default: what a new user gets.
        server_args = [] if self.args.mlserve_threads == "default" else [
            "--worker-threads", str(setup["worker_threads"]),
            "--cpu-threads", str(setup["cpu_threads"])]
        server = Server(self.args.mlserve, repo, server_args, WORK / f"mlserve-{model}.log")
        try:
            self.say(f"{model}: mlserve all-in-one ({' '.join(server_args) or 'no flags'})")
            server.start()
            http, grpc = server.url("http"), server.url("grpc")
            rows = {}
            for protocol in (["http-binary", "grpc"] if saturation else [self.args.protocol]):
                url = grpc if protocol == "grpc" else http
                rows[protocol] = self.closed("mlserve", model, url, protocol,
                                             setup["closed_concurrency"], server.pid)
            if profiles:
                self.plan_rates(model, rows[self.args.protocol])
                self.profiles("mlserve", model, grpc if self.args.protocol == "grpc" else http,
                              server.pid, f"{server.url('metrics')}/metrics")
        finally:
            server.stop()
        if "mlserve-split" in self.args.architectures:
            self.split(model, server_args, profiles, saturation)
        if profiles and "flask" in self.args.architectures:
            flask = Flask(repo, self.args.flask_workers, WORK / f"flask-{model}.log")
            try:
                self.say(f"{model}: Flask monolith ({self.args.flask_workers} gunicorn workers)")
                flask.start(model)
                if self.args.protocol != "grpc":
                    self.closed("flask", model, flask.url(), self.args.protocol,
                                2 * self.args.flask_workers, flask.pid)
                    self.profiles("flask", model, flask.url(), flask.pid, None)
                else:
                    self.say("  the Flask baseline has no gRPC: skipped")
            finally:
                flask.stop()
        if "triton" in self.args.architectures:
            self.triton(model, profiles, saturation)

    def triton(self, model, profiles, saturation):
        """Real Triton, python backend running onnxruntime with mlserve's
        ONNX Runtime threads and batching settings: the same closed-loop
        runs and profiles as mlserve, at the same rates."""
        setup = MODEL_SETUP[model]
        repo = WORK / "repos-triton" / model
        triton_server.write_model(repo, model, MODELS / model, intra_threads=setup["cpu_threads"],
                                  queue_bound=self.args.triton_queue_bound == "on")
        server = triton_server.Triton(repo, WORK / f"triton-{model}.log")
        try:
            self.say(f"{model}: {triton_server.LABEL} ({setup['cpu_threads']} intra-op thread(s))")
            server.start([model])
            http, grpc = server.url("http"), server.url("grpc")
            for protocol in (["http-binary", "grpc"] if saturation else [self.args.protocol]):
                self.closed("triton", model, grpc if protocol == "grpc" else http, protocol,
                            setup["closed_concurrency"], server.pid)
            if profiles:
                # No queue-depth scrape: loadgen reads mlserve's metric name.
                self.profiles("triton", model, grpc if self.args.protocol == "grpc" else http,
                              server.pid, None)
        finally:
            server.stop()

    def split(self, model, server_args, profiles, saturation):
        """The split deployment on loopback: an inference process and a
        gateway process (`--role gateway`, one tokio worker) that reaches it
        over gRPC; the load goes to the gateway's ports. Same rates as the
        all-in-one run, so the two rows compare side by side."""
        repo = model_repository(model)
        inference = Server(self.args.mlserve, repo, ["--role", "inference", *server_args],
                           WORK / f"mlserve-split-inference-{model}.log")
        gateway = None
        try:
            self.say(f"{model}: mlserve split (gateway process -> inference process over gRPC)")
            inference.start()
            gateway = Server(self.args.mlserve, repo, [
                "--role", "gateway", "--worker-threads", "1",
                "--inference-endpoints", inference.url("grpc")],
                WORK / f"mlserve-split-gateway-{model}.log")
            gateway.start()
            http, grpc = gateway.url("gateway-http"), gateway.url("gateway-grpc")
            pids = [inference.pid, gateway.pid]
            rows = {}
            for protocol in (["http-binary", "grpc"] if saturation else [self.args.protocol]):
                url = grpc if protocol == "grpc" else http
                rows[protocol] = self.closed("mlserve-split", model, url, protocol,
                                             MODEL_SETUP[model]["closed_concurrency"], pids)
            if profiles:
                self.profiles("mlserve-split", model, grpc if self.args.protocol == "grpc" else http,
                              pids, f"{inference.url('metrics')}/metrics")
        finally:
            if gateway is not None:
                gateway.stop()
            inference.stop()

    def plan_rates(self, model, capacity_row):
        capacity = capacity_row["inferences_per_s"]  # batch 1: requests/s
        spike = min(self.args.spike_load * capacity, self.args.max_rate)
        w = {
            "capacity_rps": capacity,
            "spike_rps": spike,
            "rate_multiplier": spike / 1000.0,
            "capped": spike < self.args.spike_load * capacity,
            "max_in_flight": self.args.max_in_flight,
        }
        self.results["workloads"][model] = w
        self.say(f"  rates: mlserve capacity {capacity:,.1f} rps -> spike {spike:,.1f} rps, steady "
                 f"{spike / 10:,.1f} rps, ramp {spike / 20:,.1f} -> {spike / 2:,.1f} rps"
                 + (f" (capped by --max-rate {self.args.max_rate:g})" if w["capped"] else ""))


def planned_minutes(args, profile_models, sat_models):
    f = 0.5 if args.quick else 1.0
    per_profile_s = sum({"steady": 300, "bursty": 180, "ramp": 300}[p] for p in PROFILES) * args.time_factor
    total = 0.0
    for m in set(profile_models) | set(sat_models):
        total += len(MODEL_SETUP[m]["raw_batches"]) * 6 * f + 15
        total += (2 if m in sat_models else 1) * (MODEL_SETUP[m]["closed_s"] + 5) * f
        if m in profile_models:
            archs = 1 + sum(a in args.architectures for a in ("flask", "mlserve-split", "triton"))
            total += archs * (per_profile_s + 3 * 8) + 25 + (MODEL_SETUP[m]["closed_s"] + 5) * f
    return total / 60


def stop_on_signals():
    """SIGTERM and SIGINT (even when started in the background, where SIGINT
    is ignored) unwind the stack, so every `finally` stops its server."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def main():
    stop_on_signals()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a short smoke run: time factor 0.05, shorter closed-loop and raw runs")
    ap.add_argument("--time-factor", type=float, default=None,
                    help="scales the profiles' durations (default 0.2: a 5-minute profile takes 60 s)")
    ap.add_argument("--workloads", default="tabular,resnet50,minilm",
                    help="models run through the profiles (tabular, resnet50, minilm, bert_base)")
    ap.add_argument("--saturation", default="tabular,resnet50,minilm,bert_base",
                    help="models whose saturation fraction of raw is measured over HTTP binary and gRPC")
    ap.add_argument("--architectures", default="flask,mlserve",
                    help="flask, mlserve, mlserve-split (a gateway process in front of an "
                         "inference process, over gRPC), triton (real Triton, python backend "
                         "running onnxruntime: bash bench/triton/setup.sh first)")
    ap.add_argument("--spike-load", type=float, default=2.0,
                    help="the spike's rate as a multiple of mlserve's closed-loop capacity")
    ap.add_argument("--max-rate", type=float, default=20000.0,
                    help="cap on the spike rate, requests/s (the load generator shares the cores)")
    ap.add_argument("--protocol", default="http-binary", choices=["http-binary", "http-json", "grpc"],
                    help="wire protocol of the profile runs (the Flask baseline speaks HTTP only)")
    ap.add_argument("--arrivals", default="poisson", choices=["poisson", "constant"])
    ap.add_argument("--max-in-flight", type=int, default=2048,
                    help="the client's bound on outstanding requests (2048: gunicorn's listen backlog)")
    ap.add_argument("--timeout", type=float, default=None, help="per-request timeout and drain, s")
    ap.add_argument("--flask-workers", type=int, default=4)
    ap.add_argument("--mlserve-threads", default="default", choices=["default", "tuned"],
                    help="default: mlserve with no thread flags (what a new user gets); tuned: "
                         "each model's --worker-threads/--cpu-threads of MODEL_SETUP")
    triton_server.add_queue_bound_option(ap)
    ap.add_argument("--warm-connections", type=int, default=0,
                    help="kept-alive HTTP connections opened before each mlserve profile run "
                         "(default 0: connections open on demand, as for Flask)")
    ap.add_argument("--loadgen-quiet", action="store_true", help="no loadgen progress lines")
    ap.add_argument("--out", type=Path, help="results directory (default bench/results/<date>)")
    ap.add_argument("--mlserve", type=Path, default=REPO / "target" / "release" / "mlserve")
    ap.add_argument("--loadgen", type=Path, default=REPO / "target" / "release" / "loadgen")
    args = ap.parse_args()
    if args.time_factor is None:
        args.time_factor = 0.05 if args.quick else 0.2
    if args.timeout is None:
        args.timeout = 10.0 if args.quick else 20.0
    args.architectures = [a.strip() for a in args.architectures.split(",") if a.strip()]
    for arch in args.architectures:
        if arch not in ARCHITECTURES:
            sys.exit(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    profile_models = [m.strip() for m in args.workloads.split(",") if m.strip()]
    sat_models = [m.strip() for m in args.saturation.split(",") if m.strip()]
    for m in profile_models + sat_models:
        if m not in MODEL_SETUP:
            sys.exit(f"unknown model {m!r}; known: {', '.join(MODEL_SETUP)}")
    for binary in (args.mlserve, args.loadgen):
        if not binary.is_file():
            sys.exit(f"{binary} is missing: run `cargo build --release -p mlserve -p mlserve-loadgen`")
    if "triton" in args.architectures and not triton_server.installed():
        sys.exit("Triton is not set up: run `bash bench/triton/setup.sh`")

    progress = Progress()
    date = datetime.date.today().isoformat()
    out_dir = args.out or REPO / "bench" / "results" / date
    order = [m for m in MODEL_SETUP if m in profile_models or m in sat_models]
    ensure_models(order, progress)
    cores = len(os.sched_getaffinity(0))
    progress.say(f"{cores} cores; models {order}; profiles for {profile_models}; time factor "
                 f"{args.time_factor:g}; spike = {args.spike_load:g} x mlserve capacity "
                 f"(max {args.max_rate:g} rps); ~{planned_minutes(args, profile_models, sat_models):.0f} min planned")
    exp = Experiment(args, out_dir, progress)
    for model in order:
        exp.model(model, model in profile_models, model in sat_models)
    setup = {
        "date": date, "cores": cores, "cpu": cpu_model(), "git": git_commit(),
        "time_factor": args.time_factor, "spike_load": args.spike_load, "max_rate": args.max_rate,
        "protocol": args.protocol, "arrivals": args.arrivals, "max_in_flight": args.max_in_flight,
        "timeout_s": args.timeout, "flask_workers": args.flask_workers, "quick": args.quick,
        "warm_connections": args.warm_connections,
        "triton_queue_bound": args.triton_queue_bound, "mlserve_threads": args.mlserve_threads,
        "architectures": args.architectures, "model_setup": {m: MODEL_SETUP[m] for m in order},
        "wall_minutes": (time.monotonic() - progress.start) / 60,
    }
    for path in write_outputs(out_dir, setup, exp.results):
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
