#!/usr/bin/env python3
"""Reloads under steady load (issue 13): p99 and errors while a new model
version is swapped in, mlserve against real Triton, one after the other in
one run on the same machine.

    bash bench/triton/setup.sh                     # once: bench/.venv-triton
    .venv/bin/python bench/reload.py [--rate 200] [--swaps 5]

Triton's known pain is here: requests fail or stall while a model reloads
(triton-inference-server/server#5757). Each target serves the bench tabular
model (XGBoost, 50 features; scripts/make_models.py) from a repository of its
own in explicit model-control mode, with one ONNX Runtime intra-op thread:

  - mlserve: target/release/mlserve --model-control-mode explicit
    --load-model tabular --worker-threads 1 --cpu-threads 1;
  - Triton: the nvidia-pytriton wheel's tritonserver, python backend running
    onnxruntime (bench/baselines/triton_server.py), the same max_batch_size,
    dynamic batching and instance count.

Load: `--threads` threads, each with its own kept-alive HTTP connection,
each sending one-row JSON requests on its own fixed schedule, `--rate`
requests/s in all (open loop: latency runs from the intended send time, so a
stall also counts against the requests queued behind it on that thread).
A request fails on any non-200 answer, a connection error or `--timeout`.

Swaps: after `--warmup` s, every `--swap-every` s, a version directory k+1
is written next to the served version k (the same model.onnx: the swap, not
the model, is measured) and the load call is made, the same for both:
`POST /v2/repository/models/tabular/load`. A request belongs to a swap's
window when it was due or waiting (from its intended send time to its
answer) at some time between the load call's start and `--window-after` s
after the call returned; the rest after warm-up is steady.

Writes reload.{md,json,png} to --out (default bench/results/<date>/reload/).
"""

import argparse
import datetime
import http.client
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "baselines"))
from baseline_proc import tree_cpu_seconds  # noqa: E402
from mlserve_proc import CLK_TCK, Server  # noqa: E402
from saturation import cpu_model, git_commit  # noqa: E402
import triton_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
MODEL = "tabular"
LABELS = {"mlserve": "mlserve all-in-one", "triton": triton_server.LABEL}
COLORS = {"mlserve": "tab:blue", "triton": "tab:orange"}


class Load:
    """Open-loop one-row requests at `rate`/s over `threads` kept-alive
    connections; every request's (intended time, latency, outcome, version)
    is kept."""

    def __init__(self, port, rate, threads, timeout, bodies):
        self.port, self.rate, self.threads, self.timeout = port, rate, threads, timeout
        self.bodies = bodies
        self.records = [[] for _ in range(threads)]
        self.stop_at = None
        self.t0 = None
        self._workers = []

    def start(self, t0):
        self.t0 = t0
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]
        for w in self._workers:
            w.start()

    def finish(self, stop_at):
        """Stops scheduling at `stop_at` (seconds since t0) and waits for the
        requests in flight."""
        self.stop_at = stop_at
        for w in self._workers:
            w.join()

    def _run(self, index):
        period = self.threads / self.rate
        due = index * period / self.threads
        conn, out, k = None, self.records[index], index
        while self.stop_at is None or due < self.stop_at:
            wait = self.t0 + due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            body = self.bodies[k % len(self.bodies)]
            outcome, version = "ok", None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                conn.request("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status == 200:
                    version = json.loads(data).get("model_version")
                else:
                    outcome = f"http {resp.status}"
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as err:
                outcome = "timeout" if isinstance(err, TimeoutError) else f"connection: {type(err).__name__}"
                if conn is not None:
                    conn.close()
                conn = None
            out.append((due, time.monotonic() - self.t0 - due, outcome, version))
            due += period
            k += self.threads
        if conn is not None:
            conn.close()

    def all(self):
        return sorted((r for rs in self.records for r in rs), key=lambda r: r[0])


def request_bodies(n=64):
    x = np.random.default_rng(7).standard_normal((n, 50)).astype(np.float32)
    return [json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 50],
                                    "data": row.tolist()}]}).encode() for row in x]


def post_load(port, timeout):
    """The load call; (HTTP status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", f"/v2/repository/models/{MODEL}/load", b"{}", {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")[:300]
    finally:
        conn.close()


# --- the two targets -----------------------------------------------------

class Target:
    """A server under test: `start_server()` starts `self.server`, whose
    HTTP port the load goes to."""

    def start(self):
        self.start_server()
        self.port = self.server.ports["http"]
        return self

    @property
    def pid(self):
        return self.server.pid

    def stop(self):
        self.server.stop()


class MlserveTarget(Target):
    """mlserve serving bench/work/reload/mlserve-repo/ (config.toml + <v>/model.onnx)."""

    name = "mlserve"

    def __init__(self, args, scratch, source):
        self.repo = scratch / "mlserve-repo"
        shutil.rmtree(self.repo, ignore_errors=True)
        (self.repo / MODEL / "1").mkdir(parents=True)
        shutil.copy2(source / "config.toml", self.repo / MODEL / "config.toml")
        shutil.copy2(source / "1" / "model.onnx", self.repo / MODEL / "1" / "model.onnx")
        self.server = Server(args.mlserve, self.repo,
                             ["--model-control-mode", "explicit", "--load-model", MODEL,
                              "--worker-threads", "1", "--cpu-threads", "1"], scratch / "mlserve.log")

    def start_server(self):
        self.server.start()

    def add_version(self, version):
        dst = self.repo / MODEL / str(version)
        dst.mkdir()
        shutil.copy2(self.repo / MODEL / "1" / "model.onnx", dst / "model.onnx.tmp")
        os.rename(dst / "model.onnx.tmp", dst / "model.onnx")


class TritonTarget(Target):
    """Triton serving a python-backend repository written from the same model."""

    name = "triton"

    def __init__(self, args, scratch, source):
        self.source = source
        self.repo = scratch / "triton-repo"
        shutil.rmtree(self.repo, ignore_errors=True)
        self.queue_bound = args.triton_queue_bound == "on"
        triton_server.write_model(self.repo, MODEL, source, intra_threads=1, queue_bound=self.queue_bound)
        self.server = triton_server.Triton(self.repo, scratch / "tritonserver.log")

    def start_server(self):
        self.server.start([MODEL])

    def add_version(self, version):
        triton_server.write_model(self.repo, MODEL, self.source, intra_threads=1, version=version,
                                  queue_bound=self.queue_bound)


# --- one run --------------------------------------------------------------

def server_cpu_seconds(pid):
    """CPU seconds of the server's live process tree plus the children it
    has reaped (cutime + cstime): Triton's python stub of a version it
    unloaded exits during the run, and its CPU must still count."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return sum(tree_cpu_seconds(pid).values()) + (int(fields[13]) + int(fields[14])) / CLK_TCK


def run_target(target, args, say):
    target.start()
    load = Load(target.port, args.rate, args.threads, args.timeout, request_bodies())
    swaps = []
    t0 = time.monotonic()
    cpu0 = server_cpu_seconds(target.pid)
    load.start(t0)
    try:
        for i in range(args.swaps):
            time.sleep(max(0.0, t0 + args.warmup + i * args.swap_every - time.monotonic()))
            version = i + 2
            start = time.monotonic() - t0
            target.add_version(version)
            status, body = post_load(target.port, timeout=args.load_timeout)
            end = time.monotonic() - t0
            swaps.append({"version": version, "start_s": start, "end_s": end, "status": status,
                          "body": body if status != 200 else ""})
            say(f"  {target.name}: swap to v{version}: load call {1000 * (end - start):,.0f} ms, HTTP {status}")
        end_at = args.warmup + args.swaps * args.swap_every
        time.sleep(max(0.0, t0 + end_at - time.monotonic()))
        load.finish(end_at)
        cpu = server_cpu_seconds(target.pid) - cpu0
    finally:
        load.stop_at = load.stop_at or 0.0
        target.stop()
    records = load.all()
    return {"target": target.name, "label": LABELS[target.name], "swaps": swaps,
            "server_cpu_s": cpu, "summary": summarize(records, swaps, args),
            "records": [[round(d, 4), round(l, 5), o, v] for d, l, o, v in records]}


def percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else None


def stats(rows):
    ok = [l * 1000 for _, l, o, _ in rows if o == "ok"]
    errors = {}
    for _, _, o, _ in rows:
        if o != "ok":
            errors[o] = errors.get(o, 0) + 1
    return {"requests": len(rows), "errors": sum(errors.values()), "error_kinds": errors,
            "p50_ms": percentile(ok, 50), "p99_ms": percentile(ok, 99),
            "max_ms": max(ok) if ok else None}


def overlaps(record, a, b):
    """The request was due or waiting between a and b (seconds)."""
    due, latency = record[0], record[1]
    return due <= b and due + latency >= a


def summarize(records, swaps, args):
    windows = [(s["start_s"], s["end_s"] + args.window_after) for s in swaps]
    inside = lambda r: any(overlaps(r, a, b) for a, b in windows)  # noqa: E731
    measured = [r for r in records if r[0] >= args.warmup - 1.0]
    per_swap = []
    for s, (a, b) in zip(swaps, windows):
        rows = [r for r in records if overlaps(r, a, b)]
        first_new = next((r[0] + r[1] for r in rows if r[3] == str(s["version"])), None)
        per_swap.append({"version": s["version"], "load_call_ms": 1000 * (s["end_s"] - s["start_s"]),
                         "new_version_first_answer_s": None if first_new is None else first_new - s["start_s"],
                         **stats(rows)})
    versions = {}
    for r in records:
        versions[str(r[3])] = versions.get(str(r[3]), 0) + 1
    ok = sum(1 for r in records if r[2] == "ok")
    return {"all": stats(records), "steady": stats([r for r in measured if not inside(r)]),
            "swap_windows": stats([r for r in records if inside(r)]), "per_swap": per_swap,
            "answers_by_version": versions, "ok": ok}


# --- outputs --------------------------------------------------------------

def fmt(v, spec=",.1f"):
    return "–" if v is None else format(v, spec)


def ratio(a, b):
    return "–" if not a or not b else f"{a / b:.3g}×"


def markdown(setup, runs):
    L = [f"# Reloads under steady load ({setup['date']})", ""]
    if setup.get("note"):
        L += [f"**{setup['note']}**", ""]
    L += [f"Machine: {setup['cores']} cores ({setup['cpu']}), shared by the server under test and the "
          f"client. Commit {setup['git']}. Model `{MODEL}`, one-row HTTP JSON requests at "
          f"{setup['rate']:g}/s over {setup['threads']} kept-alive connections (open loop, latency from "
          f"the intended send time, {setup['timeout_s']:g} s timeout); after {setup['warmup_s']:g} s, "
          f"{setup['swaps']} swaps {setup['swap_every_s']:g} s apart: version k+1 written, then "
          f"`POST /v2/repository/models/{MODEL}/load`. A request is in a swap's window when it was "
          f"due or waiting at some time from the load call to {setup['window_after_s']:g} s after "
          "it returned; the other requests after warm-up are steady. Both targets ran one after the other in "
          f"this run. Triton's model {'has' if setup['triton_queue_bound'] == 'on' else 'has no'} "
          "max_queue_size (`--triton-queue-bound`).", ""]
    L += ["| target | phase | requests | errors | p50 ms | p99 ms | max ms |", "|---|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        for phase in ("steady", "swap_windows"):
            s = run["summary"][phase]
            L.append(f"| {run['label']} | {phase.replace('_', ' ')} | {s['requests']:,} | {s['errors']:,} | "
                     f"{fmt(s['p50_ms'], ',.2f')} | {fmt(s['p99_ms'], ',.2f')} | {fmt(s['max_ms'])} |")
    by = {r["target"]: r["summary"] for r in runs}
    if {"mlserve", "triton"} <= by.keys():
        m, t = by["mlserve"], by["triton"]
        L += ["", "| mlserve ÷ Triton | steady | swap windows |", "|---|---:|---:|",
              f"| p99 | {ratio(m['steady']['p99_ms'], t['steady']['p99_ms'])} | "
              f"{ratio(m['swap_windows']['p99_ms'], t['swap_windows']['p99_ms'])} |",
              f"| max | {ratio(m['steady']['max_ms'], t['steady']['max_ms'])} | "
              f"{ratio(m['swap_windows']['max_ms'], t['swap_windows']['max_ms'])} |",
              f"| errors | {m['steady']['errors']} vs {t['steady']['errors']} | "
              f"{m['swap_windows']['errors']} vs {t['swap_windows']['errors']} |"]
    L += ["", "## Per swap", "",
          "| target | to version | load call ms | first answer from it, s after the call | requests in window | errors | p99 ms | max ms |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        for s in run["summary"]["per_swap"]:
            L.append(f"| {run['label']} | {s['version']} | {s['load_call_ms']:,.0f} | "
                     f"{fmt(s['new_version_first_answer_s'], '.2f')} | {s['requests']:,} | {s['errors']} | "
                     f"{fmt(s['p99_ms'], ',.2f')} | {fmt(s['max_ms'])} |")
    L += ["", "## Errors and server CPU", ""]
    for run in runs:
        a = run["summary"]["all"]
        kinds = ", ".join(f"{k}: {v}" for k, v in a["error_kinds"].items()) or "none"
        L.append(f"- {run['label']}: {a['requests']:,} requests, errors {kinds}; answers by version "
                 f"{run['summary']['answers_by_version']}; server CPU "
                 f"{1e6 * run['server_cpu_s'] / max(run['summary']['ok'], 1):,.0f} µs per successful "
                 "request (process tree and the children it reaped, /proc)")
        for s in run["swaps"]:
            if s["status"] != 200:
                L.append(f"  - load call for v{s['version']}: HTTP {s['status']} {s['body']}")
    L += ["", "![latency over time](reload.png)", ""]
    return "\n".join(L) + "\n"


def plot(out_dir, runs):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 3.2 * len(runs)), dpi=80, sharex=True, squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        rec = run["records"]
        ok = [(d, l * 1000) for d, l, o, _ in rec if o == "ok"]
        bad = [(d, max(l * 1000, 0.1)) for d, l, o, _ in rec if o != "ok"]
        if ok:
            ax.scatter(*zip(*ok), s=2, color=COLORS[run["target"]], alpha=0.5, label="ok")
        if bad:
            ax.scatter(*zip(*bad), s=12, color="red", marker="x", label=f"failed ({len(bad)})")
        for s in run["swaps"]:
            ax.axvspan(s["start_s"], s["end_s"], color="grey", alpha=0.3)
        ax.set_yscale("log")
        ax.set_ylabel("latency ms")
        ax.set_title(f"{run['label']}: grey = load call of a swap")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("intended send time (s)")
    fig.tight_layout()
    path = out_dir / "reload.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]


def write_outputs(out_dir, setup, runs):
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "reload.md"
    md.write_text(markdown(setup, runs))
    js = out_dir / "reload.json"
    doc = {"setup": setup, "runs": [{k: v for k, v in r.items() if k != "records"} for r in runs]}
    js.write_text(json.dumps(doc, indent=1) + "\n")
    return [md, js, *plot(out_dir, runs)]


def ensure_model(say):
    source = WORK / "models" / MODEL
    if not (source / "1" / "model.onnx").is_file():
        say(f"making the bench models in {source.parent.relative_to(REPO)}")
        import subprocess
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), "--set", "bench",
                        "--out", str(source.parent)], check=True, cwd=REPO)
    return source


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="mlserve,triton", help="mlserve, triton (run in this order)")
    ap.add_argument("--rate", type=float, default=200.0, help="requests/s in all")
    ap.add_argument("--threads", type=int, default=8, help="client threads, one connection each")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the first swap")
    ap.add_argument("--swaps", type=int, default=5)
    ap.add_argument("--swap-every", type=float, default=10.0, help="seconds between swaps")
    ap.add_argument("--window-after", type=float, default=2.0,
                    help="seconds after a load call returned that still belong to its swap window")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, s")
    ap.add_argument("--load-timeout", type=float, default=120.0, help="the load call's timeout, s")
    triton_server.add_queue_bound_option(ap)
    ap.add_argument("--note", default="", help="a line at the top of reload.md (e.g. the machine was busy)")
    ap.add_argument("--out", type=Path, help="default bench/results/<date>/reload")
    ap.add_argument("--mlserve", type=Path, default=REPO / "target" / "release" / "mlserve")
    args = ap.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in LABELS:
            sys.exit(f"unknown target {t!r}; known: {', '.join(LABELS)}")
    if "mlserve" in targets and not args.mlserve.is_file():
        sys.exit(f"{args.mlserve} is missing: run `cargo build --release -p mlserve`")
    if "triton" in targets and not triton_server.installed():
        sys.exit("Triton is not set up: run `bash bench/triton/setup.sh`")

    start = time.monotonic()

    def say(text):
        e = int(time.monotonic() - start)
        print(f"[{e // 60:2d}:{e % 60:02d}] {text}", flush=True)

    source = ensure_model(say)
    date = datetime.date.today().isoformat()
    out_dir = args.out or REPO / "bench" / "results" / date / "reload"
    scratch = WORK / "reload"
    scratch.mkdir(parents=True, exist_ok=True)
    runs = []
    for name in targets:
        say(f"{LABELS[name]}: {args.rate:g} req/s, {args.swaps} swaps every {args.swap_every:g} s")
        target = (MlserveTarget if name == "mlserve" else TritonTarget)(args, scratch, source)
        run = run_target(target, args, say)
        s = run["summary"]
        say(f"  steady p99 {fmt(s['steady']['p99_ms'], '.2f')} ms, swap windows p99 "
            f"{fmt(s['swap_windows']['p99_ms'], '.2f')} ms, max {fmt(s['all']['max_ms'])} ms, "
            f"errors {s['all']['errors']}")
        runs.append(run)
    setup = {"date": date, "cores": len(os.sched_getaffinity(0)), "cpu": cpu_model(), "git": git_commit(),
             "rate": args.rate, "threads": args.threads, "warmup_s": args.warmup, "swaps": args.swaps,
             "swap_every_s": args.swap_every, "window_after_s": args.window_after, "timeout_s": args.timeout,
             "triton_queue_bound": args.triton_queue_bound, "note": args.note, "targets": targets, "wall_minutes": (time.monotonic() - start) / 60}
    for path in write_outputs(out_dir, setup, runs):
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
