"""Server lifecycle: repository polling and version switch under load,
graceful SIGTERM, readiness, queue-full rejection and request timeouts."""

import http.client
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

from helpers import (check_simple, copy_models, decode_response, get, infer_path,
                     metric_values, ort_reference, parse_metrics, post, simple_json,
                     slow_request, wait_until)
from server import start_server

REQUEST_TIMEOUT = 120


def write_simple_plus_one(path):
    """A `simple` whose OUTPUT0 is INPUT0 + INPUT1 + 1 (OUTPUT1 unchanged)."""
    shape = ["batch", 16]
    nodes = [helper.make_node("Add", ["INPUT0", "INPUT1"], ["sum"]),
             helper.make_node("Add", ["sum", "one"], ["OUTPUT0"]),
             helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])]
    graph = helper.make_graph(
        nodes, "simple_v2",
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("OUTPUT0", "OUTPUT1")],
        initializer=[helper.make_tensor("one", TensorProto.INT32, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def metrics(s):
    r = http.client.HTTPConnection("127.0.0.1", s.metrics_port, timeout=10)
    try:
        r.request("GET", "/metrics")
        resp = r.getresponse()
        assert resp.status == 200
        return parse_metrics(resp.read().decode())[0]
    finally:
        r.close()


def queue_depth(s, model):
    vals = metric_values(metrics(s), "mlserve_inference_queue_depth", model=model)
    return sum(vals) if vals else None


# ------------------------------------------------------------- (a) polling
def test_poll_switches_to_new_version_without_failures(models_repo, tmp_path, make_server):
    repo = copy_models(models_repo, tmp_path / "repo", ["simple"])
    s = make_server(repo, "--model-control-mode", "poll", "--repository-poll-interval", "500ms")
    stop = threading.Event()
    lock = threading.Lock()
    failures, seen = [], {"1": 0, "2": 0}

    def worker(k):
        i = 0
        while not stop.is_set():
            i += 1
            doc, ins = simple_json(1 + i % 3, seed=k * 100000 + i)
            try:
                r = post(s.http_port, infer_path("simple"), doc, timeout=30)
            except Exception as e:  # noqa: BLE001 - every failure is recorded
                with lock:
                    failures.append(f"request raised {e!r}")
                continue
            if r.status != 200:
                with lock:
                    failures.append(str(r))
                continue
            out = decode_response(r)["OUTPUT0"]
            base = ins["INPUT0"] + ins["INPUT1"]
            version = r.json().get("model_version")
            with lock:
                if np.array_equal(out, base) and version == "1":
                    seen["1"] += 1
                elif np.array_equal(out, base + 1) and version == "2":
                    seen["2"] += 1
                else:
                    failures.append(f"unexpected output for version {version!r}: {out} vs {base}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(4)]
    for th in threads:
        th.start()
    try:
        wait_until(lambda: seen["1"] >= 20 or failures, 30, "no responses from version 1")
        stage = tmp_path / "stage2"
        stage.mkdir()
        write_simple_plus_one(stage / "model.onnx")
        os.rename(stage, repo / "simple" / "2")  # atomic: the poller sees all or nothing
        wait_until(lambda: seen["2"] >= 1 or failures, 30, "responses never switched to version 2")
        target = seen["2"] + 50
        wait_until(lambda: seen["2"] >= target or failures, 30, "version 2 stopped answering")
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert failures == [], f"{len(failures)} failed requests, first: {failures[:3]}\n{s.describe(60)}"
    assert seen["1"] >= 20 and seen["2"] >= 51
    assert get(s.http_port, "/v2/models/simple/versions/2/ready").status == 200
    assert "2" in get(s.http_port, "/v2/models/simple").json()["versions"]


def test_poll_adds_and_removes_models(models_repo, tmp_path, make_server):
    repo = copy_models(models_repo, tmp_path / "repo", ["simple"])
    s = make_server(repo, "--model-control-mode", "poll", "--repository-poll-interval", "500ms")
    assert get(s.http_port, "/v2/models/identity_int32/ready").status != 200
    copy_models(models_repo, tmp_path / "stage", ["identity_int32"])
    os.rename(tmp_path / "stage" / "identity_int32", repo / "identity_int32")
    wait_until(lambda: get(s.http_port, "/v2/models/identity_int32/ready").status == 200, 30,
               "a model added to the repository was not loaded")
    x = np.arange(4, dtype=np.int32).reshape(1, 4)
    doc = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 4], "data": x.ravel().tolist()}]}
    np.testing.assert_array_equal(decode_response(post(s.http_port, infer_path("identity_int32"), doc))["OUTPUT0"], x)

    shutil.move(str(repo / "identity_int32"), str(tmp_path / "removed"))
    wait_until(lambda: get(s.http_port, "/v2/models/identity_int32/ready").status != 200, 30,
               "a model removed from the repository is still ready")
    doc2, ins = simple_json(1)
    check_simple(post(s.http_port, infer_path("simple"), doc2), ins)


# -------------------------------------------------------------- (b) SIGTERM
def test_sigterm_finishes_in_flight_requests(models_repo, tmp_path, make_server):
    repo = copy_models(models_repo, tmp_path / "repo", ["slow", "simple"])
    grace = 30
    s = make_server(repo, "--shutdown-grace", f"{grace}s")
    doc, x = slow_request(seed=1, batch=4)  # one full batch per request: long in flight
    expected = ort_reference(repo, "slow", {"INPUT0": x})["OUTPUT0"]

    def http_call(_):
        return post(s.http_port, infer_path("slow"), doc, timeout=REQUEST_TIMEOUT)

    def grpc_call(_):
        with grpcclient.InferenceServerClient(s.grpc_url) as c:
            i = grpcclient.InferInput("INPUT0", list(x.shape), "FP32").set_data_from_numpy(x)
            return c.infer("slow", [i], client_timeout=REQUEST_TIMEOUT).as_numpy("OUTPUT0")

    pool = ThreadPoolExecutor(8)
    http_futs = [pool.submit(http_call, i) for i in range(6)]
    grpc_futs = [pool.submit(grpc_call, i) for i in range(2)]
    try:
        # Every request is in the server before SIGTERM, however fast either
        # side runs: each request is a batch of its own on slow's single
        # instance, so with some of them queued (the model busy with one
        # more) queued + answered = 7 means all 8 arrived.
        futs = http_futs + grpc_futs

        def all_in():
            depth = queue_depth(s, "slow") or 0
            return depth >= 1 and depth + sum(f.done() for f in futs) >= len(futs) - 1
        wait_until(all_in, 60, "the requests never all reached slow's queue")
        pending = sum(not f.done() for f in futs)
        s.sigterm()
        assert pending >= 2, f"only {pending} requests were in flight at SIGTERM"

        def not_ready():
            try:
                return get(s.http_port, "/v2/health/ready", timeout=5).status != 200
            except ConnectionError:
                return True
        wait_until(not_ready, 10, "still ready after SIGTERM\n" + s.describe(20))
        try:
            r = post(s.http_port, infer_path("simple"), simple_json(1)[0], timeout=10)
            assert r.status == 503, f"new request after SIGTERM got {r}"
        except ConnectionError:
            pass  # refused: the listener is closed

        for f in http_futs:
            r = f.result(timeout=REQUEST_TIMEOUT)
            assert r.status == 200, f"in-flight request failed after SIGTERM: {r}\n{s.describe(40)}"
            np.testing.assert_allclose(decode_response(r)["OUTPUT0"], expected, rtol=1e-5, atol=1e-6)
        for f in grpc_futs:
            np.testing.assert_allclose(f.result(timeout=REQUEST_TIMEOUT), expected, rtol=1e-5, atol=1e-6)
        code = s.wait(timeout=grace + 10)
        assert code == 0, f"exit code {code}\n{s.describe(40)}"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def test_sigterm_idle_server_exits_zero(models_repo, tmp_path, make_server):
    s = make_server(copy_models(models_repo, tmp_path / "repo", ["simple"]), "--shutdown-grace", "10s")
    s.sigterm()
    assert s.wait(timeout=20) == 0, s.describe(40)
    with pytest.raises(ConnectionError):
        get(s.http_port, "/v2/health/live", timeout=5)


# ------------------------------------------------------------ (c) readiness
def test_readiness_endpoints(server):
    assert get(server.http_port, "/v2/health/live").status == 200
    assert get(server.http_port, "/v2/health/ready").status == 200
    for m in ["simple", "simple_nobatch", "identity_bytes", "tabular", "slow", "string_len"]:
        assert get(server.http_port, f"/v2/models/{m}/ready").status == 200, m
        assert get(server.http_port, f"/v2/models/{m}/versions/1/ready").status == 200, m
    assert 400 <= get(server.http_port, "/v2/models/no_such_model/ready").status < 500
    assert 400 <= get(server.http_port, "/v2/models/simple/versions/2/ready").status < 500


def test_explicit_mode_without_models_is_ready(models_repo, tmp_path, make_server):
    repo = copy_models(models_repo, tmp_path / "repo", ["simple"])
    s = make_server(repo, "--model-control-mode", "explicit")
    assert get(s.http_port, "/v2/health/ready").status == 200
    assert 400 <= get(s.http_port, "/v2/models/simple/ready").status < 500
    doc, _ = simple_json(1)
    r = post(s.http_port, infer_path("simple"), doc)
    assert r.status in (400, 404, 503) and "simple" in r.error(), str(r)


# ------------------------------------------------------ (d), (e) queue policy
@pytest.fixture(scope="module")
def slow_server(models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("slow") / "repo", ["slow", "simple"])
    s = start_server(repo)
    yield s
    s.stop()


def test_queue_full_rejects_with_503(slow_server):
    s = slow_server
    doc, x = slow_request(seed=2)
    expected = ort_reference(s.repo, "slow", {"INPUT0": x})["OUTPUT0"]
    with ThreadPoolExecutor(30) as pool:
        futs = [pool.submit(post, s.http_port, infer_path("slow"), doc, timeout=REQUEST_TIMEOUT)
                for _ in range(30)]
        results = [f.result(timeout=REQUEST_TIMEOUT + 10) for f in futs]
    statuses = sorted(r.status for r in results)
    assert set(statuses) <= {200, 503}, statuses
    rejected = [r.error() for r in results if r.status == 503]
    assert any("exceeds maximum queue size" in m for m in rejected), (statuses, rejected[:3])
    assert all("exceeds maximum queue size" in m or "timeout" in m.lower() for m in rejected), rejected
    ok = [r for r in results if r.status == 200]
    assert len(ok) >= 1, statuses
    for r in ok:
        np.testing.assert_allclose(decode_response(r)["OUTPUT0"], expected, rtol=1e-5, atol=1e-6)
    assert get(s.http_port, "/v2/health/live").status == 200
    wait_until(lambda: queue_depth(s, "slow") == 0, 30, "slow's queue depth did not return to 0")
    d, ins = simple_json(1)
    check_simple(post(s.http_port, infer_path("simple"), d), ins)


def test_request_timeout_expires_in_busy_queue(slow_server):
    s = slow_server
    doc, _ = slow_request(seed=3, batch=4)
    timed_doc, _ = slow_request(seed=4, timeout_us=1000)
    with ThreadPoolExecutor(8) as pool:
        blockers = [pool.submit(post, s.http_port, infer_path("slow"), doc, timeout=REQUEST_TIMEOUT)
                    for _ in range(3)]
        wait_until(lambda: (queue_depth(s, "slow") or 0) >= 1 or all(b.done() for b in blockers),
                   10, "slow never got busy")
        timed = [pool.submit(post, s.http_port, infer_path("slow"), timed_doc, timeout=REQUEST_TIMEOUT)
                 for _ in range(4)]
        blocker_results = [b.result(timeout=REQUEST_TIMEOUT) for b in blockers]
        timed_results = [t.result(timeout=REQUEST_TIMEOUT) for t in timed]
    assert [r.status for r in blocker_results] == [200] * 3, [str(r) for r in blocker_results]
    assert {r.status for r in timed_results} <= {200, 503}, [str(r) for r in timed_results]
    expired = [r.error() for r in timed_results if r.status == 503]
    assert expired, "no request with timeout=1000 us expired while slow was busy"
    # Expired in the queue, or refused on arrival once slow's batch time is
    # known (admission: the queue ahead would not let it finish in time).
    assert all("request timeout expired" in m or "past its deadline" in m for m in expired), expired
    assert get(s.http_port, "/v2/health/live").status == 200
