"""Drift on served features, end to end: the gateway logs the rows it serves
to the features role's offline store, and the monitoring role compares each
feature's served values with the version's reference.

One mlserve process with every role, events on Redis Streams (so the test
reads `drift_detected` from the stream). The model `pick` takes FP32
[batch, 6] (features INPUT0[0] .. INPUT0[5], standard normals) and answers
OUTPUT0 = the first column, so a shift of column 0 moves the prediction too
and a shift of any other column does not. The gateway logs every served row
(sample rate 1); the monitoring role analyses every 500 ms the last 2 s of
rows against the version's first 800 rows.

1. Unshifted traffic for 8 s: no feature of any analysis drifts (the count
   of feature analyses is printed: the false-positive rate is 0 of them).
2. Columns 1 and 4 shifted by 1.5 standard deviations for as long: exactly
   those two drift, never another one; `drift_detected` is on the stream
   with those two, the gauge reads 1, `mlserve monitor drift` prints them,
   and the webhook gets `MlserveModelDrift`.
3. Column 0 shifted: its prediction drifts too (`prediction:OUTPUT0`).
"""

import json
import subprocess
import threading
import time
import uuid

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import get, metric_values, parse_metrics, post, wait_until
from rollout_helpers import cli
from test_rollouts import receiver  # noqa: F401 - the webhook receiver fixture
from topology import GatewayProcess

MODEL = "pick"
FEATURES = 6
PHASE_S = 8.0


def pick_model():
    """OUTPUT0 = INPUT0[:, 0:1] over FP32 [batch, 6]."""
    t = lambda name, vals: helper.make_tensor(name, TensorProto.INT64, [1], vals)  # noqa: E731
    graph = helper.make_graph(
        [helper.make_node("Slice", ["INPUT0", "s0", "s1", "axis"], ["OUTPUT0"])], "pick",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 1])],
        initializer=[t("s0", [0]), t("s1", [1]), t("axis", [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


CONFIG = """
[server]
data_dir = "{data_dir}"

[events]
backend = "redis"
stream_prefix = "{prefix}"
retry_delay = "200ms"

[gateway.request_log]
sample_rate = 1.0
max_rows_per_second = 0.0
max_rows_per_request = 8
flush_interval = "200ms"

[monitoring]
alert_webhook = "http://127.0.0.1:{webhook_port}/alerts"
alert_webhook_retry_delay = "100ms"

[monitoring.drift]
interval = "500ms"
window = "2s"
reference_rows = 800
min_rows = 400
max_rows = 1500
"""


class Traffic:
    """One thread sending batches of 8 rows through the gateway; `shift`
    (column -> offset) applies from the moment it is set."""

    def __init__(self, port):
        self.port, self.stop = port, threading.Event()
        self.shift = {}
        self.failures, self.sent = [], 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        rng = np.random.default_rng(5)
        while not self.stop.is_set():
            x = rng.standard_normal((8, FEATURES)).astype(np.float32)
            for column, offset in dict(self.shift).items():
                x[:, column] += offset
            doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                               "data": x.ravel().tolist()}]}
            try:
                r = post(self.port, f"/v2/models/{MODEL}/infer", doc, timeout=30)
            except OSError as e:
                self.failures.append(repr(e))
                continue
            if r.status != 200:
                self.failures.append(str(r))
            self.sent += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


def reports(port):
    r = get(port, f"/v1/monitoring/drift/{MODEL}")
    if r.status == 404:
        return []
    assert r.status == 200, str(r)
    return r.json()["reports"]


def watch(port, seconds):
    """Every analysed report seen for `seconds` (one per analysis time)."""
    seen, deadline = {}, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for rep in reports(port):
            if rep["state"] != "collecting":
                seen[rep["analysed_at_us"]] = rep
        time.sleep(0.2)
    return list(seen.values())


def drift_events(prefix):
    out = subprocess.run(["redis-cli", "--raw", "XRANGE", f"{prefix}monitoring", "-", "+"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()
            if line.startswith("{") and "drift_detected" in line]


@pytest.fixture
def server(tmp_path, receiver):
    repo = tmp_path / "repo"
    (repo / MODEL / "1").mkdir(parents=True)
    (repo / MODEL / "1" / "model.onnx").write_bytes(pick_model())
    prefix = f"mlserve:test-drift:{uuid.uuid4().hex[:8]}:"
    config = tmp_path / "mlserve.toml"
    config.write_text(CONFIG.format(data_dir=tmp_path / "data", prefix=prefix,
                                    webhook_port=receiver.port))
    proc = GatewayProcess()
    proc.start(repo, "--config", config)
    proc.prefix, proc.config_path = prefix, config
    yield proc
    proc.stop()
    subprocess.run(["redis-cli", "DEL", f"{prefix}monitoring", f"{prefix}models",
                    f"{prefix}data", f"{prefix}training"], capture_output=True, timeout=30)


def test_two_shifted_features_drift_and_nothing_else(server, receiver):
    port = server.http_port
    with Traffic(server.gateway_http_port) as traffic:
        # 1. The reference fills, then unshifted rows: no drift.
        wait_until(lambda: any(r["state"] == "ok" for r in reports(port)), 60,
                   "a first analysis against a full reference")
        calm = watch(port, PHASE_S)
        analyses = [f for rep in calm for f in rep["features"]]
        false_positives = [(rep["analysed_at_us"], f["feature"]) for rep in calm
                           for f in rep["features"] if f["drifted"]]
        print(f"unshifted: {len(calm)} analyses, {len(analyses)} feature analyses, "
              f"{len(false_positives)} drifted")
        assert len(calm) >= 4, calm
        assert {f["feature"] for f in analyses} >= {f"INPUT0[{i}]" for i in range(FEATURES)}
        assert false_positives == [], false_positives
        assert drift_events(server.prefix) == []

        # 2. Columns 1 and 4 shifted: exactly those drift.
        traffic.shift = {1: 1.5, 4: 1.5}
        shifted = {"INPUT0[1]", "INPUT0[4]"}
        wait_until(lambda: any(set(r["drifted"]) == shifted for r in reports(port)), 30,
                   "columns 1 and 4 drifted")
        during = watch(port, PHASE_S)
        ever = {name for rep in during for name in rep["drifted"]}
        assert ever == shifted, during[-1]
        last = during[-1]
        assert last["state"] == "drifted" and set(last["drifted"]) == shifted, last
        by_name = {f["feature"]: f for f in last["features"]}
        for name in shifted:
            assert by_name[name]["psi"] >= 0.2 and by_name[name]["p_value"] < 0.01, by_name[name]
            moved = by_name[name]["current_mean"] - by_name[name]["reference_mean"]
            assert 1.0 < moved < 2.0, by_name[name]
        assert not by_name["OUTPUT0"]["drifted"] and by_name["OUTPUT0"]["kind"] == "prediction"

        events = wait_until(lambda: drift_events(server.prefix), 10, "drift_detected on the stream")
        assert events[0]["model"] == MODEL and events[0]["version"] == 1, events
        assert set(events[0]["features"]) <= shifted and \
            set().union(*(set(e["features"]) for e in events)) == shifted, events

        samples, _ = parse_metrics(get(server.metrics_port, "/metrics").body.decode())
        assert metric_values(samples, "mlserve_monitoring_drift_detected",
                             model=MODEL, version="1") == [1.0]
        psi = metric_values(samples, "mlserve_monitoring_drift_psi", model=MODEL,
                            version="1", feature="INPUT0[4]", kind="input")
        assert psi and psi[0] >= 0.2, psi

        table = cli(server.grpc_port, "monitor", "drift", MODEL, config=server.config_path)
        assert "drifted" in table, table
        rows = {line.split()[0]: line for line in table.splitlines()[2:] if line.strip()}
        assert rows["INPUT0[1]"].rstrip().endswith("yes") and \
            rows["INPUT0[0]"].rstrip().endswith("no"), table

        alerts = wait_until(lambda: [a for m in receiver.received for a in m["alerts"]
                                     if a["labels"]["alertname"] == "MlserveModelDrift"], 15,
                            "the drift alert posted to the webhook")
        assert alerts[0]["labels"]["model"] == MODEL and alerts[0]["labels"]["version"] == "1"

        # 3. Column 0 shifted: the prediction (its copy) drifts with it.
        traffic.shift = {0: 1.5}
        wait_until(lambda: any({"INPUT0[0]", "prediction:OUTPUT0"} <= set(r["drifted"])
                               for r in reports(port)), 30, "prediction drift")
    assert traffic.failures == [], traffic.failures[:5]

    samples, _ = parse_metrics(get(server.metrics_port, "/metrics").body.decode())
    logged = {lab["outcome"]: v for n, lab, v in samples
              if n == "mlserve_gateway_request_log_rows_total"}
    assert logged["written"] > 0 and logged["failed"] == 0, logged


# --------------------------------------------------------------------- split
SPLIT_CONFIG = """
[server]
data_dir = "{data_dir}"

[features]
database_url = "{db}"

[gateway.request_log]
sample_rate = 1.0
max_rows_per_second = 0.0
max_rows_per_request = 8
flush_interval = "200ms"

[monitoring.drift]
interval = "500ms"
window = "2s"
reference_rows = 800
min_rows = 400
max_rows = 1500
"""


def test_split_the_log_and_the_analysis_travel_over_grpc(tmp_path):
    """Registry and features in one process (the offline store in
    PostgreSQL), inference and the gateway in another, the monitoring role
    in a third: the gateway's rows reach the features role through its gRPC
    `LogServed`, the monitoring role reads them through `ListServed`, and a
    shift of column 2 drifts that column only."""
    from server import Server, ServerStartError
    from test_registry import postgres_schema

    repo = tmp_path / "repo"
    (repo / MODEL / "1").mkdir(parents=True)
    (repo / MODEL / "1" / "model.onnx").write_bytes(pick_model())
    db = postgres_schema()

    def config(name):
        path = tmp_path / f"{name}.toml"
        path.write_text(SPLIT_CONFIG.format(data_dir=tmp_path / f"{name}-data", db=db))
        return path

    procs = []
    try:
        stores = Server(ready_path="/v1/registry/models")
        procs.append(stores)
        stores.start(repo, "--config", config("stores"), "--role", "registry,features")
        grpc = f"http://127.0.0.1:{stores.grpc_port}"
        serving = GatewayProcess()
        procs.append(serving)
        serving.start(repo, "--config", config("serving"), "--role", "inference,gateway",
                      "--features-endpoint", grpc)
        monitoring = Server(ready_path="/health/ready")
        procs.append(monitoring)
        monitoring.start(repo, "--config", config("monitoring"), "--role", "monitoring",
                         "--registry-endpoint", grpc, "--features-endpoint", grpc,
                         "--scrape-target", f"127.0.0.1:{serving.metrics_port}")
    except ServerStartError as e:
        for p in reversed(procs):
            p.stop()
        pytest.fail(str(e), pytrace=False)
    try:
        port = monitoring.http_port
        with Traffic(serving.gateway_http_port) as traffic:
            wait_until(lambda: any(r["state"] == "ok" for r in reports(port)), 60,
                       "a first analysis over gRPC")
            calm = watch(port, 3)
            assert [f for rep in calm for f in rep["features"] if f["drifted"]] == []
            traffic.shift = {2: 1.5}
            wait_until(lambda: any(r["drifted"] == ["INPUT0[2]"] for r in reports(port)), 30,
                       "column 2 drifted")
            during = watch(port, 3)
            assert {n for rep in during for n in rep["drifted"]} == {"INPUT0[2]"}, during[-1]
        assert traffic.failures == [], traffic.failures[:5]
    finally:
        for p in reversed(procs):
            p.stop()
