"""What the gateway's request log costs: throughput through the gateway with
the log off, at its default (1% of requests, at most 100 rows/s), and
logging every row (sample rate 1, no bound: the worst case), side by side
in one run.

One process with every role (the embedded defaults: SQLite offline store,
the monitoring role analysing drift) serves `pick` (tests/e2e/test_drift:
FP32 [batch, 6] in, its first column out), a model that costs next to
nothing, so the gateway's own per-request work, the log's included, is what
the numbers show. `loadgen closed` (HTTP binary, 8 in flight, batch 4) runs
10 s after 2 s of warm-up per setting, in four rounds in alternating order;
the median round of each counts (rounds on this 2-core machine differ by up
to a quarter). The log's row counters come from /metrics.

    cargo build --release --workspace --all-targets
    .venv/bin/python bench/request_log.py          # about two minutes

Writes bench/results/<date>/request_log.{json,md}.
"""

import datetime
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from helpers import parse_metrics  # noqa: E402
from mlserve_proc import Server  # noqa: E402
from test_drift import MODEL, pick_model  # noqa: E402

SETTINGS = {
    "off": {"sample_rate": 0.0},
    "default": {},
    "every row": {"sample_rate": 1.0, "max_rows_per_second": 0.0},
}


def config_text(values):
    lines = ["[gateway.request_log]"] + [f"{k} = {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def log_rows(metrics_url):
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as r:
        samples, _ = parse_metrics(r.read().decode())
    return {labels["outcome"]: int(v) for name, labels, v in samples
            if name == "mlserve_gateway_request_log_rows_total"}


def run(work, name, values):
    repo = work / "repo"
    config = work / f"{name.replace(' ', '_')}.toml"
    config.write_text(config_text(values))
    server = Server(ROOT / "target" / "release" / "mlserve", repo, ["--config", str(config)],
                    work / f"{name.replace(' ', '_')}.log").start()
    try:
        report = work / "loadgen.json"
        subprocess.run([str(ROOT / "target" / "release" / "loadgen"), "closed",
                        "--target", server.url("gateway-http"), "--model", MODEL,
                        "--protocol", "http-binary", "--batch", "4", "--concurrency", "8",
                        "--warmup", "2", "--duration", "10", "--quiet", "--json-out", str(report)],
                       check=True, timeout=120)
        result = json.loads(report.read_text())
        return {"requests_per_s": result["requests_per_s"], "p99_ms": result["latency_ms"]["p99"],
                "errors": result["error_total"], "log_rows": log_rows(server.url("metrics"))}
    finally:
        server.stop()


def main():
    work = Path(tempfile.mkdtemp(prefix="mlserve-request-log-"))
    (work / "repo" / MODEL / "1").mkdir(parents=True)
    (work / "repo" / MODEL / "1" / "model.onnx").write_bytes(pick_model())
    rounds = {name: [] for name in SETTINGS}
    for order in [list(SETTINGS), list(reversed(SETTINGS))] * 2:
        for name in order:
            rounds[name].append(run(work, name, SETTINGS[name]))
            print(name, rounds[name][-1], flush=True)
    best = {name: sorted(rs, key=lambda r: r["requests_per_s"])[len(rs) // 2]
            for name, rs in rounds.items()}
    off = best["off"]["requests_per_s"]
    out = ROOT / "bench" / "results" / datetime.date.today().isoformat()
    out.mkdir(parents=True, exist_ok=True)
    (out / "request_log.json").write_text(json.dumps({"rounds": rounds, "median": best}, indent=1))
    lines = ["# The gateway's request log: throughput through the gateway",
             "", "`bench/request_log.py`: `pick` (6 features), all roles in one process, "
             "loadgen closed, 8 in flight, batch 4, the median of four 10 s rounds.", "",
             "| request log | req/s | vs off | p99 ms | rows written | rows dropped |",
             "|---|---|---|---|---|---|"]
    for name, r in best.items():
        rows = r["log_rows"]
        lines.append(f"| {name} | {r['requests_per_s']:.0f} | {r['requests_per_s'] / off:.3f} | "
                     f"{r['p99_ms']:.2f} | {rows.get('written', 0)} | {rows.get('dropped', 0)} |")
    (out / "request_log.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
