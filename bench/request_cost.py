"""Server instructions per request, counted by callgrind: repeatable on a
busy machine, where CPU time per request is not.

For each protocol, mlserve (all roles, no flags but ports) runs under
`valgrind --tool=callgrind` with instrumentation off. After a warm-up, the
instrumentation is switched on (`callgrind_control -i on`), exactly N
requests of the tabular model at batch 1 are sent over 16 keep-alive
connections (one request in flight on each, as wrk does), and it is
switched off again. Every instruction
the server executed in that window, on every thread, is in the dump:
divided by N it is the server's cost of one request. The dump's top
functions (exclusive cost) show where it goes.

    .venv/bin/python bench/request_cost.py [--requests 2000] [--protocols http-json,http-binary,grpc]

Writes results/<date>/request-cost/{request_cost.json,request_cost.md} and
keeps the callgrind dumps (bench/work/request-cost/) for
`callgrind_annotate`.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlserve_proc import Server  # noqa: E402

MODEL = "tabular"
FEATURES = 50
PROTOCOLS = ("http-json", "http-binary", "grpc")
START_UNDER_VALGRIND_S = 900.0


def ensure_model(work):
    """The tabular test model (scripts/make_models.py --set tests)."""
    models = work / "models"
    if not (models / MODEL / "1" / "model.onnx").exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), "--set", "tests",
                        "--out", str(models)], check=True, cwd=REPO)
    only = work / "repo"
    only.mkdir(parents=True, exist_ok=True)
    link = only / MODEL
    if not link.exists():
        link.symlink_to(models / MODEL)
    return only


class Client:
    """Sends one tabular request at a time over one connection."""

    def __init__(self, protocol, server):
        self.protocol = protocol
        row = np.random.default_rng(5).standard_normal((1, FEATURES)).astype(np.float32)
        if protocol == "grpc":
            import tritonclient.grpc as grpcclient
            self.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
            self.inputs = [grpcclient.InferInput("input", [1, FEATURES], "FP32")]
            self.inputs[0].set_data_from_numpy(row)
            return
        self.conn = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=600)
        if protocol == "http-json":
            self.body = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32",
                                                "data": row.flatten().tolist()}]}).encode()
            self.headers = {"Content-Type": "application/json"}
        else:
            head = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32",
                                           "parameters": {"binary_data_size": row.nbytes}}],
                               "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
            self.body = head + row.tobytes()
            self.headers = {"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(len(head))}

    def send(self):
        if self.protocol == "grpc":
            self.grpc.infer(MODEL, self.inputs, client_timeout=600)
            return
        self.conn.request("POST", f"/v2/models/{MODEL}/infer", self.body, self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {body[:300]!r}")


def wait_for_dump(out_file, previous):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dumps = sorted(out_file.parent.glob(out_file.name + "*"))
        fresh = [d for d in dumps if d not in previous and d.stat().st_size > 0]
        if fresh:
            time.sleep(1.0)  # the dump is written in one go; let it finish
            return fresh[-1]
        time.sleep(0.5)
    raise RuntimeError("callgrind wrote no dump")


def total_instructions(dump):
    """The `totals:` line of a callgrind dump (its `summary:` reads 0 when
    the instrumentation started switched off)."""
    text = dump.read_text(errors="replace")
    m = re.search(r"^totals:\s+(\d+)", text, re.M)
    if not m:
        raise RuntimeError(f"no totals in {dump}")
    return int(m.group(1))


def annotate(dump):
    """callgrind_annotate's listing of every function by exclusive cost."""
    return subprocess.run(["callgrind_annotate", "--threshold=100", str(dump)], capture_output=True,
                          text=True, check=True).stdout


def top_functions(out, count):
    """[(share, instructions, function)] by exclusive cost, from `annotate`'s listing."""
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" not in line and "file:function" not in line:
            rows.append((float(m.group(2)), int(m.group(1).replace(",", "")), m.group(3).strip()))
        if len(rows) >= count:
            break
    return rows


def by_object(out):
    """{object file name: instructions}, the exclusive cost of every function
    in `annotate`'s listing summed by the file its code is in (the binary,
    ONNX Runtime, libc)."""
    objects = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+.*\[([^\]]+)\]\s*$", line)
        if m:
            name = Path(m.group(2)).name
            objects[name] = objects.get(name, 0) + int(m.group(1).replace(",", ""))
    return objects


def executions(server):
    """(inferences, executions) of the model so far, from its statistics."""
    conn = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=600)
    conn.request("GET", f"/v2/models/{MODEL}/stats")
    stats = json.loads(conn.getresponse().read())["model_stats"]
    conn.close()
    return (sum(int(m.get("inference_count", 0)) for m in stats),
            sum(int(m.get("execution_count", 0)) for m in stats))


def send_all(clients, requests):
    """`requests` requests spread over the clients, each on its own thread."""
    share = [requests // len(clients) + (i < requests % len(clients)) for i in range(len(clients))]
    errors = []

    def run(client, n):
        try:
            for _ in range(n):
                client.send()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c, n)) for c, n in zip(clients, share)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]}")


def measure(binary, repo, work, protocol, requests, warmup, cwd, connections):
    out_file = work / f"callgrind.{protocol}.out"
    for old in work.glob(out_file.name + "*"):
        old.unlink()
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}"]
    server = Server(binary, repo, [], work / f"server.{protocol}.log", cwd=cwd, prefix=valgrind,
                    start_timeout=START_UNDER_VALGRIND_S)
    try:
        server.start()
        clients = [Client(protocol, server) for _ in range(connections)]
        send_all(clients, warmup)
        before_stats = executions(server)
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True)
        began = time.monotonic()
        send_all(clients, requests)
        elapsed = time.monotonic() - began
        subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True, capture_output=True)
        after_stats = executions(server)
        before = set(work.glob(out_file.name + "*"))
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
        dump = wait_for_dump(out_file, before)
    finally:
        server.stop()
    total = total_instructions(dump)
    listing = annotate(dump)
    ort = sum(n for name, n in by_object(listing).items() if name.startswith("libonnxruntime"))
    rows = after_stats[0] - before_stats[0]
    batches = after_stats[1] - before_stats[1]
    return {"protocol": protocol, "requests": requests, "connections": connections, "instructions": total,
            "instructions_per_request": total / requests, "seconds_under_valgrind": elapsed,
            "onnxruntime_per_request": ort / requests,
            "outside_onnxruntime_per_request": (total - ort) / requests,
            "rows_per_batch": rows / batches if batches else None,
            "dump": str(dump.relative_to(REPO)), "top": top_functions(listing, 15)}


def write(out_dir, setup, runs):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "request_cost.json").write_text(json.dumps({"setup": setup, "runs": runs}, indent=2) + "\n")
    lines = ["# Server instructions per request (callgrind)", "",
             f"mlserve `{setup['commit']}`, all roles in one process, no flags; `{MODEL}` at batch 1, "
             f"{setup['requests']} requests over {setup['connections']} keep-alive connections, one request "
             f"in flight on each, after {setup['warmup']} unmeasured ones. Every thread's instructions in the window, divided by "
             "the requests. Counted, not timed: the figure does not move with the machine's load.", "",
             "ONNX Runtime's share is its own code's (the library's functions, exclusive): it runs once per "
             "batch, so it moves with how many requests the batcher found together, and the rest is the "
             "steadier figure to compare builds by.", "",
             "| protocol | instructions per request | ratio to HTTP binary | in ONNX Runtime | outside it "
             "| rows per batch |", "|---|---:|---:|---:|---:|---:|"]
    base = next((r["instructions_per_request"] for r in runs if r["protocol"] == "http-binary"), None)
    for r in runs:
        ratio = f"{r['instructions_per_request'] / base:.2f}x" if base else ""
        rows = f"{r['rows_per_batch']:.2f}" if r.get("rows_per_batch") else ""
        lines.append(f"| {r['protocol']} | {r['instructions_per_request']:,.0f} | {ratio} "
                     f"| {r['onnxruntime_per_request']:,.0f} | {r['outside_onnxruntime_per_request']:,.0f} "
                     f"| {rows} |")
    for r in runs:
        lines += ["", f"## {r['protocol']}: top functions (exclusive)", "", "| share | per request | function |",
                  "|---:|---:|---|"]
        for share, ir, fn in r["top"]:
            lines.append(f"| {share:.1f}% | {ir / r['requests']:,.0f} | `{fn[:140]}` |")
    (out_dir / "request_cost.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(REPO / "target" / "release" / "mlserve"))
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--connections", type=int, default=16,
                    help="requests in flight, one connection each (the dynamic batcher sees them together)")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--cwd", default=None,
                    help="where the binary runs (reads config/mlserve.toml): the checkout it was built from")
    ap.add_argument("--out", default=None, help="results folder (default results/<date>/request-cost)")
    args = ap.parse_args()
    work = REPO / "bench" / "work" / "request-cost"
    work.mkdir(parents=True, exist_ok=True)
    repo = ensure_model(work)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    runs = []
    for protocol in args.protocols.split(","):
        print(f"{protocol}: starting mlserve under callgrind ...", file=sys.stderr, flush=True)
        run = measure(Path(args.binary), repo, work, protocol, args.requests, args.warmup, args.cwd,
                      args.connections)
        print(f"{protocol}: {run['instructions_per_request']:,.0f} instructions per request, "
              f"{run['outside_onnxruntime_per_request']:,.0f} outside ONNX Runtime, "
              f"{run['rows_per_batch'] or 0:.2f} rows per batch", file=sys.stderr)
        runs.append(run)
    out = Path(args.out) if args.out else REPO / "bench" / "results" / datetime.date.today().isoformat() / "request-cost"
    setup = {"commit": commit, "requests": args.requests, "warmup": args.warmup, "model": MODEL,
             "connections": args.connections,
             "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()}
    write(out, setup, runs)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    main()
