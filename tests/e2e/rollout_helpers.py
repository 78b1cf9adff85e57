"""Models, load and CLI helpers of the progressive-delivery tests.

Every version of `plus` computes OUTPUT0 = INPUT0 + k over FP32 [batch, 4],
so a response says which version answered. The bad canaries keep that
signature: `failing_plus` fails (an out-of-range Gather, a 500) on every
request holding a row whose first value is over 1 (about a third of the
requests the load sends), and `slow_plus` adds a chain of matrix products of the
input (about ten times the time of the request itself) whose result is
multiplied by zero.
"""

import json
import subprocess
import threading
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

from helpers import http_request, post
from server import server_binary

MODEL = "plus"


def _model(nodes, k, initializers=()):
    graph = helper.make_graph(
        nodes, f"plus_{k}",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 4])],
        initializer=[helper.make_tensor("k", TensorProto.FLOAT, [1], [float(k)]), *initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def plus_model(k):
    return _model([helper.make_node("Add", ["INPUT0", "k"], ["OUTPUT0"])], k)


def failing_plus(k):
    """INPUT0 + k, failing when some row's first value is over 1."""
    t = lambda name, dims, vals, dtype=TensorProto.FLOAT: helper.make_tensor(name, dtype, dims, vals)  # noqa: E731
    nodes = [
        helper.make_node("Slice", ["INPUT0", "s0", "s1", "s_axis"], ["first"]),
        helper.make_node("Greater", ["first", "one"], ["over"]),
        helper.make_node("Cast", ["over"], ["index"], to=TensorProto.INT64),
        # data has one element: index 1 is out of range, and ORT refuses it
        helper.make_node("Gather", ["zero", "index"], ["picked"], axis=0),
        helper.make_node("Add", ["INPUT0", "k"], ["shifted"]),
        helper.make_node("Add", ["shifted", "picked"], ["OUTPUT0"]),
    ]
    inits = [t("s0", [1], [0], TensorProto.INT64), t("s1", [1], [1], TensorProto.INT64),
             t("s_axis", [1], [1], TensorProto.INT64), t("one", [1], [1.0]), t("zero", [1], [0.0])]
    return _model(nodes, k, inits)


def slow_plus(k, products=24, n=192):
    """INPUT0 + k + 0 * sum(X M^products), X an [batch * n, n] product of
    the input: the same answer, about ten times the work (it depends on the
    input, so ONNX Runtime cannot fold it away when it loads the model)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, n * n)) * 0.1).astype(np.float32)
    m = (rng.standard_normal((n, n)) * 0.5 / np.sqrt(n)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["INPUT0", "w"], ["wide"]),
             helper.make_node("Reshape", ["wide", "square"], ["x0"])]
    prev = "x0"
    for i in range(products):
        nodes.append(helper.make_node("MatMul", [prev, "m"], [f"p{i}"]))
        prev = f"p{i}"
    nodes += [
        helper.make_node("ReduceSum", [prev], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "nothing"], ["none"]),
        helper.make_node("Add", ["INPUT0", "k"], ["shifted"]),
        helper.make_node("Add", ["shifted", "none"], ["OUTPUT0"]),
    ]
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [4, n * n], w.ravel().tolist()),
             helper.make_tensor("square", TensorProto.INT64, [2], [-1, n]),
             helper.make_tensor("m", TensorProto.FLOAT, [n, n], m.ravel().tolist()),
             helper.make_tensor("nothing", TensorProto.FLOAT, [], [0.0])]
    return _model(nodes, k, inits)


class GatewayLoad:
    """Threads sending `plus` requests to gateways (round robin) with no
    version named, so the split picks it; counts answers per version and
    status, and keeps every failure. One thread by default: requests do not
    overlap, so a slow canary cannot slow the stable version's requests
    down by sharing the cores with them (the comparison stays about the
    versions, not about the machine)."""

    def __init__(self, ports, threads=1, pause=0.002):
        self.ports, self.pause = ports, pause
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.by_version, self.failures = {}, []
        self.per_port = {p: {} for p in ports}
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def _run(self, k):
        rng = np.random.default_rng(100 + k)
        n = 0
        while not self.stop.is_set():
            port = self.ports[(k + n) % len(self.ports)]
            n += 1
            x = rng.standard_normal((1 + int(rng.integers(0, 2)), 4)).astype(np.float32)
            doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                               "data": x.ravel().tolist()}]}
            try:
                r = post(port, f"/v2/models/{MODEL}/infer", doc, timeout=30)
            except OSError as e:
                with self.lock:
                    self.failures.append(("transport", None, repr(e)))
                continue
            version = r.headers.get("x-mlserve-model-version") if r.status != 200 else \
                r.json().get("model_version")
            with self.lock:
                key = (version, r.status)
                self.by_version[key] = self.by_version.get(key, 0) + 1
                self.per_port[port][key] = self.per_port[port].get(key, 0) + 1
                if r.status != 200:
                    self.failures.append((r.status, version, r.body[:200]))
            time.sleep(self.pause)

    def count(self, version=None, status=200):
        with self.lock:
            return sum(n for (v, s), n in self.by_version.items()
                       if (version is None or v == version) and s == status)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def cli(grpc_port, *args, config=None):
    """Runs `mlserve <args> --endpoint ...` and returns its stdout."""
    cmd = [str(server_binary())]
    if config:
        cmd += ["--config", str(config)]
    cmd += [*args, "--endpoint", f"http://127.0.0.1:{grpc_port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done.stdout


def rollout_status(http_port, model=MODEL):
    r = http_request(http_port, "GET", f"/v1/monitoring/rollouts/{model}")
    if r.status == 404:
        return None
    assert r.status == 200, str(r)
    return r.json()


def alias_history(http_port, alias, model=MODEL):
    r = http_request(http_port, "GET", f"/v1/registry/models/{model}/alias-history?alias={alias}")
    assert r.status == 200, str(r)
    return r.json()


def dumps(doc):
    return json.dumps(doc, indent=1)[:6000]
