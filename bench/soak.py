#!/usr/bin/env python3
"""A bounded soak (issue 16): tabular requests at a steady rate through the
gateway of the real all-in-one binary while the served version changes every
`--swap-every` seconds; the server's RSS and open file descriptors sampled.

The all-in-one process (every role; SQLite, artifacts and cache in a temp
data directory; in-process events) follows the registry alias `production`
of the model `plus`, a small tabular ONNX model (FP32 features [batch, 4];
version k answers OUTPUT0 = INPUT0 + k, so every answer names the version
that computed it). Swaps alternate: an upload of a new version with the alias
moved to it, then the alias moved back to the version before it.

Load: `--threads` threads, each with its own keep-alive connection to the
gateway, paced to `--rate` requests/s in all (a thread that falls more than a
second behind skips ahead instead of bursting). Every answer is counted by
status and by the version that served it; a 200 whose output is not that
version's is counted as a mismatch.

At the end: `soak.json` (settings, samples, swaps, counts, checks) and
`soak.png` (RSS and fds over time, swaps and the end of warm-up marked) in
`--out` (default bench/results/<UTC date>/). Warm-up is the first 20% of the
run or 2 minutes, whichever is shorter. Checks (non-zero exit if one fails):
RSS growth after warm-up (max RSS in the last 10% of the run minus RSS at the
end of warm-up) <= --max-rss-growth-mb (50), fd growth (last sample minus the
sample at the end of warm-up) <= --max-fd-growth (10), no 5xx, every request
answered (no connection error or timeout), no mismatched answer.

    .venv/bin/python bench/soak.py                 # 30 minutes, 100 req/s
    .venv/bin/python bench/soak.py --minutes 3     # a harness check

tests/e2e/test_soak.py runs `run_soak` for about a minute.
"""

import argparse
import datetime
import http.client
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

from chaos_helpers import _Threads  # noqa: E402
from helpers import get, json_tensor, wait_until  # noqa: E402
from server import ServerStartError  # noqa: E402
from test_registry_follow import (MODEL, memory_events, metric, plus_model,  # noqa: E402
                                  registry_create, registry_set_alias, registry_upload,
                                  write_config)
from topology import GatewayProcess  # noqa: E402

ALIAS = "production"  # write_config follows MODEL's production alias
INFER_PATH = f"/v2/models/{MODEL}/infer"


# --------------------------------------------------------------- /proc
def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# ----------------------------------------------------------------- load
class PacedLoad(_Threads):
    """`threads` threads sending JSON infer requests (one row of 4 features)
    over keep-alive connections to `port`, `rate` requests/s in all."""

    def __init__(self, port, rate, threads, timeout=30.0):
        self.port, self.timeout = port, timeout
        self.interval = threads / rate
        self.status = Counter()       # status code (as str) or "exception"
        self.versions = Counter()     # model_version of the 200s
        self.mismatched = []          # (version, output row, input row) of wrong 200s
        self.errors = []              # first few failures
        self.skipped = 0              # send slots dropped because a thread fell behind
        self.pending = []             # swaps waiting for their version's first answer
        rng = np.random.default_rng(16)
        self.rows = rng.standard_normal((64, 4)).astype(np.float32)
        self.bodies = [json.dumps({"inputs": [json_tensor("INPUT0", r.reshape(1, 4))]}).encode()
                       for r in self.rows]
        self.nthreads = threads
        self._spawn(threads)

    def expect(self, swap, since):
        """Sets swap["first_answer_after_s"] when its version first answers
        after `since` (monotonic)."""
        with self.lock:
            self.pending.append((swap, str(swap["to"]), since))

    def counts(self):
        with self.lock:
            return dict(self.status), dict(self.versions)

    def _fail(self, key, what):
        with self.lock:
            self.status[key] += 1
            if len(self.errors) < 20:
                self.errors.append(what)

    def _run(self, index):
        threads = self.nthreads
        conn = None
        n = index
        # threads start staggered so the requests are spread evenly
        next_at = time.monotonic() + self.interval * index / threads
        while not self.stop_flag.is_set():
            now = time.monotonic()
            if next_at > now:
                if self.stop_flag.wait(next_at - now):
                    break
            elif now - next_at > 1.0:
                missed = int((now - next_at) / self.interval)
                with self.lock:
                    self.skipped += missed
                next_at += missed * self.interval
            next_at += self.interval
            k = n % len(self.bodies)
            n += threads
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request("POST", INFER_PATH, body=self.bodies[k],
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException) as e:
                self._fail("exception", repr(e))
                conn.close()
                conn = None
                continue
            if r.status != 200:
                self._fail(str(r.status), f"HTTP {r.status} {body[:300]!r}")
                continue
            self._answered(body, self.rows[k])
        if conn is not None:
            conn.close()

    def _answered(self, body, row):
        doc = json.loads(body)
        version = str(doc.get("model_version"))
        out = np.asarray(doc["outputs"][0]["data"], dtype=np.float32)
        ok = version.isdigit() and np.allclose(out, row + int(version), atol=1e-4)
        with self.lock:
            self.status["200"] += 1
            self.versions[version] += 1
            if not ok and len(self.mismatched) < 100:
                self.mismatched.append((version, out.tolist(), row.tolist()))
            for p in [p for p in self.pending if p[1] == version]:
                p[0]["first_answer_after_s"] = round(time.monotonic() - p[2], 3)
                self.pending.remove(p)


# --------------------------------------------------------------- server
def start_all_in_one(workdir):
    """The all-in-one binary following MODEL's production alias, with
    versions 1 and 2 registered and version 1 served; the GatewayProcess."""
    workdir = Path(workdir)
    repo = workdir / "repo"
    repo.mkdir(exist_ok=True)
    config = write_config(workdir / "mlserve.toml", workdir / "data", memory_events())
    server = GatewayProcess().start(repo, "--config", config)
    try:
        registry_create(server.http_port, MODEL)
        for k in (1, 2):
            assert registry_upload(server.http_port, MODEL, {"model.onnx": plus_model(k)}) == k
        registry_set_alias(server.http_port, MODEL, ALIAS, 1)
        wait_until(lambda: get(server.gateway_http_port, f"/v2/models/{MODEL}/ready").status == 200,
                   120, "version 1 never became ready through the gateway\n" + server.describe(40))
    except BaseException:
        server.stop()
        raise
    return server


# ------------------------------------------------------------------ run
def warmup_seconds(duration_s):
    return min(0.2 * duration_s, 120.0)


def sample_at(samples, t):
    """The first sample taken at or after `t` (the last one if none)."""
    return next((s for s in samples if s["t"] >= t), samples[-1])


def evaluate(samples, status, mismatched, duration_s, max_rss_growth_mb, max_fd_growth):
    warm = warmup_seconds(duration_s)
    at_warm = sample_at(samples, warm)
    tail = [s for s in samples if s["t"] >= 0.9 * duration_s] or samples[-1:]
    rss_growth = max(s["rss"] for s in tail) - at_warm["rss"]
    fd_growth = samples[-1]["fds"] - at_warm["fds"]
    five_xx = sum(v for k, v in status.items() if k.isdigit() and int(k) >= 500)
    unanswered = status.get("exception", 0)
    checks = {
        "rss_growth_ok": rss_growth <= max_rss_growth_mb * 2**20,
        "fd_growth_ok": fd_growth <= max_fd_growth,
        "no_5xx": five_xx == 0,
        "all_answered": unanswered == 0,
        "no_mismatch": not mismatched,
    }
    return {
        "warmup_s": warm,
        "rss_at_warmup_mb": round(at_warm["rss"] / 2**20, 1),
        "rss_end_mb": round(samples[-1]["rss"] / 2**20, 1),
        "rss_max_last_10pct_mb": round(max(s["rss"] for s in tail) / 2**20, 1),
        "rss_growth_mb": round(rss_growth / 2**20, 1),
        "fds_at_warmup": at_warm["fds"],
        "fds_end": samples[-1]["fds"],
        "fds_min": min(s["fds"] for s in samples),
        "fds_max": max(s["fds"] for s in samples),
        "fd_growth": fd_growth,
        "five_xx": five_xx,
        "unanswered": unanswered,
        "mismatched": len(mismatched),
        "checks": checks,
        "passed": all(checks.values()),
    }


def run_soak(duration_s=1800.0, rate=100.0, swap_every=60.0, threads=4, sample_every=5.0,
             max_rss_growth_mb=50.0, max_fd_growth=10, out_dir=None, log=None):
    """Runs the soak; returns the result document (also written to
    `out_dir`/soak.json with the plot `out_dir`/soak.png when out_dir is set)."""
    settings = {"duration_s": duration_s, "rate_per_s": rate, "swap_every_s": swap_every,
                "threads": threads, "sample_every_s": sample_every,
                "max_rss_growth_mb": max_rss_growth_mb, "max_fd_growth": max_fd_growth,
                "model": f"{MODEL} (tabular: FP32 [1, 4] -> [1, 4], version k adds k)",
                "path": "gateway HTTP/JSON, keep-alive", "cpus": os.cpu_count()}
    log = log or (lambda line: print(line, flush=True))
    with tempfile.TemporaryDirectory(prefix="mlserve-soak-") as workdir:
        server = start_all_in_one(workdir)
        try:
            doc = _soak(server, settings, log)
        finally:
            server.stop()
    doc.update(evaluate(doc["samples"], doc["status"], doc["mismatched_samples"], duration_s,
                        max_rss_growth_mb, max_fd_growth))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "soak.json").write_text(json.dumps(doc, indent=1) + "\n")
        plot(doc, out)
        doc["written"] = [str(out / "soak.json"), str(out / doc["plot"])]
    return doc


def _soak(server, settings, log):
    duration, swap_every = settings["duration_s"], settings["swap_every_s"]
    pid, port = server.pid, server.gateway_http_port
    load = PacedLoad(port, settings["rate_per_s"], settings["threads"])
    samples, swaps = [], []
    serving, latest = 1, 2          # the alias names version 1; versions 1..2 exist
    t0 = time.monotonic()
    load.start()
    next_sample, next_swap, next_report = 0.0, swap_every, 60.0
    try:
        while True:
            t = time.monotonic() - t0
            if t >= duration:
                break
            if t >= next_sample:
                st, _ = load.counts()
                samples.append({"t": round(t, 2), "rss": rss_bytes(pid), "fds": open_fds(pid),
                                "requests": sum(st.values())})
                next_sample += settings["sample_every_s"]
            if t >= next_swap:
                swaps.append(_swap(server, load, len(swaps), serving, latest, t0))
                serving, latest = swaps[-1]["to"], max(latest, swaps[-1]["to"])
                next_swap += swap_every
            if t >= next_report:
                st, ver = load.counts()
                log(f"[soak] {t / 60:4.1f} min: {sum(st.values())} requests {st}, versions {ver}, "
                    f"RSS {samples[-1]['rss'] / 2**20:.1f} MB, fds {samples[-1]['fds']}, "
                    f"swaps {len(swaps)}")
                next_report += 60.0
            wake = min(next_sample, next_swap, next_report, duration)
            time.sleep(max(0.0, min(1.0, wake - (time.monotonic() - t0))))
        st, _ = load.counts()
        samples.append({"t": round(time.monotonic() - t0, 2), "rss": rss_bytes(pid),
                        "fds": open_fds(pid), "requests": sum(st.values())})
    finally:
        load.stop()
    status, versions = load.counts()
    alive = server.running() and "panicked" not in server.log
    serving_metric = metric(server, "mlserve_inference_registry_serving_version", model=MODEL) \
        if alive else None
    return {"settings": settings, "samples": samples, "swaps": swaps, "status": status,
            "versions": versions, "requests": sum(status.values()), "skipped_slots": load.skipped,
            "errors": load.errors, "mismatched_samples": load.mismatched,
            "alias_at_end": serving, "serving_version_metric_at_end": serving_metric,
            "server_alive_at_end": alive}


def _swap(server, load, index, serving, latest, t0):
    """Swap `index`: even ones upload version latest+1 and move the alias to
    it, odd ones move the alias back to the version it named before."""
    started = time.monotonic()
    if index % 2 == 0:
        kind, target = "upload+alias", latest + 1
        assert registry_upload(server.http_port, MODEL, {"model.onnx": plus_model(target)}) == target
    else:
        kind, target = "alias", serving - 1
    swap = {"t": round(started - t0, 2), "kind": kind, "from": serving, "to": target,
            "acked_after_s": None, "first_answer_after_s": None}
    load.expect(swap, started)
    registry_set_alias(server.http_port, MODEL, ALIAS, target)
    swap["acked_after_s"] = round(time.monotonic() - started, 3)
    return swap


# ----------------------------------------------------------------- plot
def plot(doc, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        doc["plot"] = "soak.svg"
        (out / "soak.svg").write_text(svg(doc))
        return
    doc["plot"] = "soak.png"
    t = [s["t"] / 60 for s in doc["samples"]]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5))
    ax1.plot(t, [s["rss"] / 2**20 for s in doc["samples"]], color="tab:blue")
    ax1.set_ylabel("RSS (MB)")
    ax2.plot(t, [s["fds"] for s in doc["samples"]], color="tab:green", drawstyle="steps-post")
    ax2.set_ylabel("open fds")
    ax2.set_xlabel("minutes")
    for ax in (ax1, ax2):
        for i, s in enumerate(doc["swaps"]):
            ax.axvline(s["t"] / 60, color="tab:orange", lw=0.8, ls=":",
                       label="swap" if i == 0 and ax is ax1 else None)
        ax.axvline(doc["warmup_s"] / 60, color="red", lw=1, ls="--",
                   label="end of warm-up" if ax is ax1 else None)
        ax.grid(alpha=0.3)
    ax1.legend(loc="lower right", fontsize=8)
    st = doc["settings"]
    fig.suptitle(f"mlserve soak: {st['duration_s'] / 60:g} min, {st['rate_per_s']:g} req/s, "
                 f"swap every {st['swap_every_s']:g} s; {doc['requests']} requests, "
                 f"RSS growth {doc['rss_growth_mb']} MB, fds {doc['fds_at_warmup']}->{doc['fds_end']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=80)
    plt.close(fig)


def svg(doc):
    """The same two panels as plain SVG (when matplotlib is missing)."""
    w, h, pad = 800, 220, 50
    t_end = max(doc["samples"][-1]["t"], 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{2 * h}">']
    for row, (key, scale, label) in enumerate([("rss", 2**20, "RSS (MB)"), ("fds", 1, "open fds")]):
        ys = [s[key] / scale for s in doc["samples"]]
        lo, hi = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
        top = row * h

        def x(t):
            return pad + (w - 2 * pad) * t / t_end

        def y(v):
            return top + h - pad / 2 - (h - pad) * (v - lo) / (hi - lo)

        pts = " ".join(f"{x(s['t']):.1f},{y(v):.1f}" for s, v in zip(doc["samples"], ys))
        parts.append(f'<polyline fill="none" stroke="blue" points="{pts}"/>')
        for s in doc["swaps"]:
            parts.append(f'<line x1="{x(s["t"]):.1f}" x2="{x(s["t"]):.1f}" y1="{top + pad / 2}" '
                         f'y2="{top + h - pad / 2}" stroke="grey" stroke-dasharray="2"/>')
        xw = x(doc["warmup_s"])
        parts.append(f'<line x1="{xw:.1f}" x2="{xw:.1f}" y1="{top + pad / 2}" y2="{top + h - pad / 2}" '
                     'stroke="red" stroke-dasharray="6"/>')
        parts.append(f'<text x="5" y="{top + 20}" font-size="12">{label}: {lo:.1f} .. {hi:.1f}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ------------------------------------------------------------------ main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=100.0, help="requests/s in all (default 100)")
    p.add_argument("--swap-every", type=float, default=60.0, help="seconds between swaps")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    p.add_argument("--max-fd-growth", type=int, default=10)
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default bench/results/<UTC date>)")
    a = p.parse_args(argv)
    out = a.out or REPO_ROOT / "bench" / "results" / datetime.datetime.now(
        datetime.timezone.utc).strftime("%Y-%m-%d")
    try:
        doc = run_soak(a.minutes * 60, a.rate, a.swap_every, a.threads, a.sample_every,
                       a.max_rss_growth_mb, a.max_fd_growth, out)
    except ServerStartError as e:
        print(f"[soak] the server did not start: {e}", file=sys.stderr)
        return 2
    summary = {k: doc[k] for k in ("requests", "status", "versions", "skipped_slots", "warmup_s",
                                    "rss_at_warmup_mb", "rss_end_mb", "rss_growth_mb",
                                    "fds_at_warmup", "fds_end", "fd_growth", "five_xx",
                                    "unanswered", "mismatched", "checks", "written")}
    summary["swaps"] = len(doc["swaps"])
    print(json.dumps(summary, indent=1))
    if doc["errors"]:
        print("[soak] first failures:", *doc["errors"][:5], sep="\n  ", file=sys.stderr)
    print(f"[soak] {'PASS' if doc['passed'] else 'FAIL'}", flush=True)
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
