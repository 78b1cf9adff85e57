"""The monitoring role's two numbers the issue asks for, in one run:

1. Time from a threshold breach to the rollback taking effect. One process
   with every role serves `plus` as production (v1) and canary. Checks run
   every second and two failed checks abort. Per trial, a canary that fails
   about a third of its requests (tests/e2e/rollout_helpers.failing_plus)
   moves in under load through the gateway. The breach is the first failed
   answer the client sees. The rollback is in effect at the last answer
   from that canary version: after it, no request reaches it. Also timed is
   the abort decision, from the rollout's records. All are reported in
   seconds and in check intervals.
2. The monitoring role's CPU per 1,000 requests per second observed. A
   process runs registry, inference and gateway, and a separate process runs
   the monitoring role alone, scraping it every second (`--scrape-interval`).
   `loadgen closed` drives the gateway. The monitoring process's CPU seconds
   per second are divided by the gateway's requests per second over 1,000,
   and set beside the same process idle.

    cargo build --release --workspace --all-targets
    .venv/bin/python bench/rollback.py          # about two minutes

Writes bench/results/<date>/rollback.{json,md}.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from mlserve_proc import Server, cpu_seconds  # noqa: E402
from rollout_helpers import MODEL, failing_plus, plus_model  # noqa: E402
from test_registry_follow import registry_create, registry_set_alias, registry_upload  # noqa: E402

CONFIG = """
[inference]
models = [
  {{ name = "{m}", source = "registry", alias = "production" }},
  {{ name = "{m}", source = "registry", alias = "canary" }},
]
registry_poll_interval = "0s"

[monitoring]
scrape_interval = "{scrape}"

[monitoring.rollouts]
steps = [{{ weight = 10, duration = "10m" }}]
interval = "{interval}"
threshold = 2
min_requests = 5
"""


def call(url, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out: {what}")


class Load:
    """One thread of requests through the gateway: (wall time, version, status)."""

    def __init__(self, url):
        self.url, self.stop, self.seen = url, threading.Event(), []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
                            "data": [0.0, 0.0, 0.0, 0.0]}]}
        n = 0
        while not self.stop.is_set():
            n += 1
            # every third request has a first value over 1: the failing canary refuses it
            body["inputs"][0]["data"][0] = 2.0 if n % 3 == 0 else 0.0
            status, headers, data = call(f"{self.url}/v2/models/{MODEL}/infer", "POST", body)
            version = json.loads(data).get("model_version") if status == 200 else \
                headers.get("x-mlserve-model-version")
            self.seen.append((time.time(), version, status))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def rollback_trials(binary, work, trials, interval_s):
    config = work / "rollback.toml"
    config.write_text(CONFIG.format(m=MODEL, scrape="200ms", interval=f"{int(interval_s * 1000)}ms"))
    repo = work / "repo"
    repo.mkdir(exist_ok=True)
    server = Server(binary, repo, ["--config", str(config)], work / "rollback.log").start()
    node, results = server.ports["http"], []
    try:
        registry_create(node, MODEL)
        registry_upload(node, MODEL, {"model.onnx": plus_model(1)})
        registry_set_alias(node, MODEL, "production", 1)
        wait_for(lambda: call(f"{server.url('http')}/v2/models/{MODEL}/versions/1/ready")[0] == 200,
                 60, "v1 served")
        with Load(server.url("gateway-http")) as load:
            time.sleep(2)
            for trial in range(trials):
                version = registry_upload(node, MODEL, {"model.onnx": failing_plus(100 + trial)})
                moved = time.time()
                registry_set_alias(node, MODEL, "canary", version)

                def aborted():
                    status, _, data = call(f"{server.url('http')}/v1/monitoring/rollouts/{MODEL}")
                    doc = json.loads(data) if status == 200 else {}
                    return doc.get("rollout", {}).get("canary") == version and \
                        doc["rollout"]["state"] == "aborted"
                wait_for(aborted, 120, f"the rollout of {version} aborted")
                time.sleep(3)  # answers still in flight, and the reload, have landed
                status = json.loads(call(f"{server.url('http')}/v1/monitoring/rollouts/{MODEL}")[2])
                decided = [r["at_us"] / 1e6 for r in status["records"]
                           if r["kind"] == "decision" and r["message"].startswith("aborted")][0]
                mine = [(t, s) for t, v, s in load.seen if v == str(version) and t >= moved]
                breach = min(t for t, s in mine if s >= 500)
                last = max(t for t, _ in mine)
                results.append({"version": version, "breach_to_decision_s": decided - breach,
                                "breach_to_effect_s": last - breach,
                                "canary_answers": len(mine),
                                "canary_failures": sum(1 for _, s in mine if s >= 500)})
                print(f"trial {trial + 1}/{trials}: breach -> abort decided "
                      f"{decided - breach:.2f} s, -> last canary answer {last - breach:.2f} s",
                      file=sys.stderr)
    finally:
        server.stop()
    return results


def monitoring_cpu(binary, work, duration, scrape_s):
    repo = work / "repo2"
    repo.mkdir(exist_ok=True)
    config = work / "serving.toml"
    config.write_text(CONFIG.format(m=MODEL, scrape="1s", interval="1s"))
    serving = Server(binary, repo, ["--config", str(config), "--role", "registry,inference,gateway"],
                     work / "serving.log").start()
    try:
        node = serving.ports["http"]
        registry_create(node, MODEL)
        registry_upload(node, MODEL, {"model.onnx": plus_model(1)})
        registry_set_alias(node, MODEL, "production", 1)
        wait_for(lambda: call(f"{serving.url('http')}/v2/models/{MODEL}/versions/1/ready")[0] == 200,
                 60, "v1 served")
        monitor = Server(binary, repo, [
            "--role", "monitoring", "--registry-endpoint", serving.url("grpc"),
            "--scrape-target", f"127.0.0.1:{serving.ports['metrics']}"], work / "monitoring.log")
        # the scrape interval as an environment override
        os.environ["MLSERVE_MONITORING__SCRAPE_INTERVAL"] = f"{int(scrape_s * 1000)}ms"
        try:
            monitor.start()
        finally:
            del os.environ["MLSERVE_MONITORING__SCRAPE_INTERVAL"]
        try:
            time.sleep(2)
            idle0 = cpu_seconds(monitor.pid)
            time.sleep(duration)
            idle = (cpu_seconds(monitor.pid) - idle0) / duration
            report = work / "loadgen.json"
            cpu0, t0 = cpu_seconds(monitor.pid), time.monotonic()
            subprocess.run([str(ROOT / "target" / "release" / "loadgen"), "closed",
                            "--target", f"http://127.0.0.1:{serving.ports['gateway-http']}",
                            "--protocol", "http-binary", "--model", MODEL, "--batch", "1", "--concurrency", "8",
                            "--duration", str(duration), "--warmup", "0", "--quiet",
                            "--json-out", str(report)], check=True, timeout=duration + 120)
            busy = (cpu_seconds(monitor.pid) - cpu0) / (time.monotonic() - t0)
            rps = json.loads(report.read_text())["requests_per_s"]
        finally:
            monitor.stop()
    finally:
        serving.stop()
    return {"scrape_interval_s": scrape_s, "requests_per_s": rps,
            "monitoring_cpu_s_per_s_under_load": busy, "monitoring_cpu_s_per_s_idle": idle,
            "cpu_s_per_s_per_1000_rps": busy / (rps / 1000.0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "mlserve"))
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0, help="check interval (s)")
    ap.add_argument("--duration", type=float, default=15.0, help="CPU measurement (s)")
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    args = ap.parse_args()
    day = datetime.date.today().isoformat()
    out = ROOT / "bench" / "results" / day
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlserve-rollback-") as tmp:
        work = Path(tmp)
        trials = rollback_trials(args.binary, work, args.trials, args.interval)
        cpu = monitoring_cpu(args.binary, work, args.duration, args.scrape_interval)
    decision = [t["breach_to_decision_s"] for t in trials]
    effect = [t["breach_to_effect_s"] for t in trials]
    doc = {"interval_s": args.interval, "threshold": 2, "trials": trials,
           "breach_to_decision_s": {"median": statistics.median(decision), "max": max(decision)},
           "breach_to_effect_s": {"median": statistics.median(effect), "max": max(effect)},
           "cpu": cpu}
    (out / "rollback.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = [f"# Monitoring: rollback time and CPU ({day}, 2 cores)", "",
          f"Checks every {args.interval:g} s, abort after 2 failed checks; canary failing 1 request in 3.", "",
          "| | median | max | median / interval |", "|---|---|---|---|",
          f"| breach -> abort decided | {statistics.median(decision):.2f} s | {max(decision):.2f} s | "
          f"{statistics.median(decision) / args.interval:.1f} |",
          f"| breach -> last canary answer | {statistics.median(effect):.2f} s | {max(effect):.2f} s | "
          f"{statistics.median(effect) / args.interval:.1f} |", "",
          f"Monitoring process, scraping one serving process every {cpu['scrape_interval_s']:g} s: "
          f"{cpu['monitoring_cpu_s_per_s_under_load'] * 1e3:.2f} ms of CPU per second at "
          f"{cpu['requests_per_s']:.0f} req/s through the gateway "
          f"({cpu['cpu_s_per_s_per_1000_rps'] * 1e6:.1f} us of CPU per second per 1,000 req/s), "
          f"{cpu['monitoring_cpu_s_per_s_idle'] * 1e3:.2f} ms per second idle. The process's CPU is "
          f"counted in scheduler ticks of {1000 / os.sysconf('SC_CLK_TCK'):.0f} ms: a reading this "
          "small is a few ticks, and its cost follows the scrape interval and the number of series, "
          "not the request rate."]
    (out / "rollback.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
