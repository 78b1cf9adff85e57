"""What the gateway hop and the gRPC transport add per request.

Runs the tabular model (scripts/make_models.py) at concurrency 1, batch 1,
through loadgen's closed loop, side by side in one run:

  direct        client -> inference process (no gateway)
  in-process    client -> gateway -> inference role in the same process
  grpc-hop      client -> gateway process -> gRPC -> inference process

each with the client speaking HTTP (binary tensors) and gRPC. For each it
reports p50 / p99 latency and the server CPU time per request (utime+stime
of every server process over the measured window, from /proc). The hop costs
are the differences: in-process - direct is the gateway itself, grpc-hop -
in-process is the extra gRPC transport.

Usage: .venv/bin/python bench/gateway/hop.py [--duration 10] [--out bench/results/<date>/gateway_hop]
Needs target/release/mlserve and target/release/loadgen
(`cargo build --release --bin mlserve -p loadgen`).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from server import Server  # noqa: E402
from topology import GatewayProcess  # noqa: E402

LOADGEN = ROOT / "target" / "release" / "loadgen"
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def cpu_us(pids):
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total * TICK_US


def loadgen(target, protocol, duration, out):
    cmd = [str(LOADGEN), "closed", "--target", target, "--protocol", protocol, "--model", "tabular",
           "--concurrency", "1", "--batch", "1", "--duration", str(duration), "--warmup", "0",
           "--quiet", "--json-out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=duration + 60)
    return json.loads(Path(out).read_text())


def measure(name, http_port, grpc_port, pids, duration, tmp):
    rows = []
    for protocol, port in (("http-binary", http_port), ("grpc", grpc_port)):
        target = f"http://127.0.0.1:{port}"
        loadgen(target, protocol, 2, tmp / "warm.json")  # warm-up, not measured
        before = cpu_us(pids)
        result = loadgen(target, protocol, duration, tmp / f"{name}-{protocol}.json")
        cpu = cpu_us(pids) - before
        lat = result["latency_ms"]
        rows.append({
            "path": name, "client": protocol, "requests": result["requests"],
            "errors": result["error_total"], "p50_ms": lat["p50"], "p99_ms": lat["p99"],
            "mean_ms": lat["mean"], "cpu_us_per_request": cpu / max(result["requests"], 1),
        })
        print(f"{name:11s} {protocol:11s} p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms  "
              f"cpu {rows[-1]['cpu_us_per_request']:.0f} us/req  ({result['requests']} req)", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-hop-"))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_models.py"), "--set", "tests",
                    "--out", str(tmp / "models")], check=True, capture_output=True)
    repo = tmp / "models"
    env = {"MLSERVE_SERVER__DATA_DIR": str(tmp / "data")}
    # Same thread budget everywhere: one tokio worker per process, ONNX
    # Runtime on one core, so differences are the hop, not parallelism.
    common = ["--worker-threads", "1", "--cpu-threads", "1", "--load-model", "tabular",
              "--model-control-mode", "explicit"]
    rows = []
    inference = Server().start(repo, "--role", "inference", *common, env=env)
    try:
        rows += measure("direct", inference.http_port, inference.grpc_port, [inference.pid],
                        args.duration, tmp)
        gateway = GatewayProcess().start(
            repo, "--role", "gateway", "--inference-endpoints", f"http://127.0.0.1:{inference.grpc_port}",
            "--gateway-http-port", "0", "--gateway-grpc-port", "0", "--worker-threads", "1", env=env)
        try:
            rows += measure("grpc-hop", gateway.gateway_http_port, gateway.gateway_grpc_port,
                            [gateway.pid, inference.pid], args.duration, tmp)
        finally:
            gateway.stop()
    finally:
        inference.stop()
    aio = GatewayProcess().start(repo, "--role", "inference,gateway", *common,
                                 "--gateway-http-port", "0", "--gateway-grpc-port", "0", env=env)
    try:
        rows += measure("in-process", aio.gateway_http_port, aio.gateway_grpc_port, [aio.pid],
                        args.duration, tmp)
    finally:
        aio.stop()

    by = {(r["path"], r["client"]): r for r in rows}
    lines = ["| client | path | p50 ms | p99 ms | server CPU us/req |", "|---|---|---|---|---|"]
    for client in ("http-binary", "grpc"):
        for path in ("direct", "in-process", "grpc-hop"):
            r = by[(path, client)]
            lines.append(f"| {client} | {path} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                         f"{r['cpu_us_per_request']:.0f} |")
    lines += ["", "| client | added by | p50 ms | p99 ms | CPU us/req |", "|---|---|---|---|---|"]
    for client in ("http-binary", "grpc"):
        for what, a, b in (("gateway (in-process)", "direct", "in-process"),
                           ("gRPC transport", "in-process", "grpc-hop"),
                           ("gateway + gRPC hop", "direct", "grpc-hop")):
            x, y = by[(a, client)], by[(b, client)]
            lines.append(f"| {client} | {what} | {y['p50_ms'] - x['p50_ms']:+.3f} | "
                         f"{y['p99_ms'] - x['p99_ms']:+.3f} | "
                         f"{y['cpu_us_per_request'] - x['cpu_us_per_request']:+.0f} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(
            f"# Gateway hop: tabular, batch 1, concurrency 1, {args.duration:.0f} s per cell\n\n"
            f"Machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
            + table + "\n")


if __name__ == "__main__":
    main()
