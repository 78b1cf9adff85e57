"""The inference role follows a registry alias: hot swaps under load (one
process with the in-process event bus; split registry and inference
processes with events over Redis Streams), a corrupted artifact refused while
the old version keeps serving, and a restart that reuses the artifact cache.

Polling is off in these servers (`registry_poll_interval = "0s"`), so every swap
here is driven by an alias-moved event."""

import json
import os
import threading
import uuid
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

from helpers import decode_response, get, http_request, infer_path, parse_metrics, post, wait_until
from server import Server, ServerStartError, start_server

MODEL = "plus"
REDIS_URL = os.environ.get("MLSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379")


# ------------------------------------------------------------------ models
def plus_model(k):
    """OUTPUT0 = INPUT0 + k over FP32 [batch, 4]: versions share the
    signature and differ by a recognisable offset."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "k"], ["OUTPUT0"])], f"plus_{k}",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 4])],
        initializer=[helper.make_tensor("k", TensorProto.FLOAT, [1], [float(k)])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ------------------------------------------------------------ registry REST
def registry_create(port, name):
    r = post(port, "/v1/registry/models", {"name": name})
    assert r.status in (200, 201), str(r)


def registry_upload(port, name, files, headers=None):
    """Uploads a version as multipart (one `file` part per file); returns its number."""
    boundary = uuid.uuid4().hex
    body = b""
    for path, data in files.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                 f"filename=\"{path}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    r = http_request(port, "POST", f"/v1/registry/models/{name}/versions", body=body,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                              **(headers or {})})
    assert r.status in (200, 201), str(r)
    return int(r.json()["version"])


def registry_set_alias(port, name, alias, version, headers=None):
    r = http_request(port, "PUT", f"/v1/registry/models/{name}/aliases/{alias}",
                     body={"version": version}, headers=headers)
    assert r.status == 200, str(r)


# ------------------------------------------------------------------ servers
def duration(secs):
    """A configuration duration ("200ms") of `secs` seconds."""
    return f"{round(secs * 1000)}ms"


def write_config(path, data_dir, events, registry_endpoint=None, poll_secs=0.0):
    """A config file following MODEL's production alias (polling off by default)."""
    lines = ["[server]", f'data_dir = "{data_dir}"', "", "[inference]",
             f'models = [{{ name = "{MODEL}", source = "registry", alias = "production" }}]',
             f'registry_poll_interval = "{duration(poll_secs)}"', ""]
    if registry_endpoint:
        lines += ["[registry]", f'endpoint = "{registry_endpoint}"', ""]
    lines += ["[events]"]
    lines += [f'{k} = {json.dumps(v)}' for k, v in events.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def memory_events():
    return {"backend": "memory", "retry_delay": "200ms"}


def redis_events():
    return {"backend": "redis", "redis_url": REDIS_URL, "retry_delay": "200ms", "block": "200ms",
            "stream_prefix": f"mlserve-e2e:{uuid.uuid4().hex}:"}


def metrics(s):
    r = get(s.metrics_port, "/metrics")
    assert r.status == 200, str(r)
    return parse_metrics(r.body.decode())[0]


def metric(s, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for sample in metrics(s):
        sample_name, sample_labels, value = sample
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
            total += value
    return total


# ------------------------------------------------------------------ traffic
def infer(port, x):
    doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                       "data": x.ravel().tolist()}]}
    return post(port, infer_path(MODEL), doc, timeout=30)


def offset_of(resp, x):
    """The version's offset k read back from a response (None if not one)."""
    return offset_in(decode_response(resp)["OUTPUT0"], x)


def offset_in(out, x):
    k = float(np.round(out[0, 0] - x[0, 0], 3))
    return k if np.allclose(out, x + k, atol=1e-4) else None


def infer_http(server, _client, x):
    """(version, offset) of one HTTP/JSON request; raises on a non-200."""
    r = infer(server.http_port, x)
    if r.status != 200:
        raise AssertionError(str(r))
    return r.json().get("model_version"), offset_of(r, x)


def infer_grpc(_server, client, x):
    """(version, offset) of one gRPC request (tritonclient); raises on an error."""
    i = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    result = client.infer(MODEL, [i], client_timeout=30)
    return result.get_response().model_version, offset_in(result.as_numpy("OUTPUT0"), x)


class Load:
    """Threads sending requests non-stop (4 over HTTP, 2 over gRPC),
    recording every failure and which version (by output offset and
    model_version) answered."""

    def __init__(self, server, http_threads=4, grpc_threads=2):
        self.server, self.stop = server, threading.Event()
        self.lock = threading.Lock()
        self.failures, self.seen, self.order, self.ok = [], {}, [], {}
        calls = [infer_http] * http_threads + [infer_grpc] * grpc_threads
        self.threads = [threading.Thread(target=self._run, args=(i, call), daemon=True)
                        for i, call in enumerate(calls)]

    def _run(self, k, call):
        rng = np.random.default_rng(k)
        client = grpcclient.InferenceServerClient(self.server.grpc_url) \
            if call is infer_grpc else None
        while not self.stop.is_set():
            x = rng.standard_normal((1 + int(rng.integers(0, 3)), 4)).astype(np.float32)
            try:
                version, k_seen = call(self.server, client, x)
            except Exception as e:  # noqa: BLE001 - every failure is recorded
                with self.lock:
                    self.failures.append(f"{call.__name__} raised {e!r}")
                continue
            with self.lock:
                if k_seen is None or str(int(k_seen)) != version:
                    self.failures.append(f"version {version!r} answered with offset {k_seen}")
                    continue
                self.seen[version] = self.seen.get(version, 0) + 1
                self.ok[call.__name__] = self.ok.get(call.__name__, 0) + 1
                if not self.order or self.order[-1] != version:
                    self.order.append(version)
        if client is not None:
            client.close()

    def count(self, version):
        with self.lock:
            return self.seen.get(version, 0)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def wait_for_version(load, version, more=30, timeout=60):
    """Waits until `version` answered `more` further requests (or a failure)."""
    target = load.count(version) + more
    wait_until(lambda: load.count(version) >= target or load.failures, timeout,
               f"responses never switched to version {version}")


def serving_version(s):
    return metric(s, "mlserve_inference_registry_serving_version", model=MODEL)


def hot_swap(registry_port, inference):
    """v1 serving under load, production moves to v2 then back to v1: no
    failed request, and the outputs follow the alias."""
    registry_create(registry_port, MODEL)
    v1 = registry_upload(registry_port, MODEL, {"model.onnx": plus_model(1)})
    v2 = registry_upload(registry_port, MODEL, {"model.onnx": plus_model(2)})
    assert (v1, v2) == (1, 2)
    registry_set_alias(registry_port, MODEL, "production", 1)
    wait_until(lambda: get(inference.http_port, f"/v2/models/{MODEL}/ready").status == 200, 60,
               "the model never became ready after the alias was set\n" + inference.describe(40))
    with Load(inference) as load:
        wait_for_version(load, "1")
        registry_set_alias(registry_port, MODEL, "production", 2)
        wait_for_version(load, "2")
        registry_set_alias(registry_port, MODEL, "production", 1)
        wait_for_version(load, "1")
    assert load.failures == [], \
        f"{len(load.failures)} failed requests, first: {load.failures[:3]}\n{inference.describe(60)}"
    assert load.order[:3] == ["1", "2", "1"], load.order
    assert set(load.ok) == {"infer_http", "infer_grpc"}, load.ok
    # the swap counter moves just after the switch: wait for it, not race it
    wait_until(lambda: metric(inference, "mlserve_inference_registry_swaps_total",
                              model=MODEL) == 3, 10, "three swaps were not counted")
    assert serving_version(inference) == 1
    # v1 came back from the cache: two files downloaded in all, one cache hit
    assert metric(inference, "mlserve_inference_registry_downloads_total", model=MODEL) == 2
    assert metric(inference, "mlserve_inference_registry_cache_hits_total", model=MODEL) == 1


def all_in_one(tmp_path):
    """Registry and inference in one process (in-process events); returns
    (server, config path, data dir)."""
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    data = tmp_path / "data"
    config = write_config(tmp_path / "mlserve.toml", data, memory_events())
    return start_server(repo, "--config", config, "--role", "registry,inference"), config, data


def serve_v1(s):
    """Registers MODEL with version 1 (offset 1) as production; waits until it serves."""
    registry_create(s.http_port, MODEL)
    registry_upload(s.http_port, MODEL, {"model.onnx": plus_model(1)})
    registry_set_alias(s.http_port, MODEL, "production", 1)
    wait_until(lambda: serving_version(s) == 1, 60, "version 1 never served\n" + s.describe(40))


# -------------------------------------------------------------------- tests
def test_hot_swap_all_in_one(tmp_path):
    s, _, _ = all_in_one(tmp_path)
    try:
        hot_swap(s.http_port, s)
    finally:
        s.stop()


def split(tmp_path, events, poll_secs=0.0):
    """A registry process and an inference process following it over gRPC."""
    repo = tmp_path / "repo"
    repo.mkdir()
    reg_config = write_config(tmp_path / "registry.toml", tmp_path / "registry-data", events)
    registry = Server(ready_path="/v1/registry/models").start(
        repo, "--config", reg_config, "--role", "registry")
    try:
        inf_config = write_config(tmp_path / "inference.toml", tmp_path / "inference-data", events)
        # the endpoint and the poll interval as flags (they override the file)
        return registry, start_server(
            repo, "--config", inf_config, "--role", "inference",
            "--registry-endpoint", f"http://127.0.0.1:{registry.grpc_port}",
            "--registry-poll-interval", duration(poll_secs))
    except BaseException:
        registry.stop()
        raise


def test_hot_swap_split_over_redis_streams(tmp_path):
    registry, inference = split(tmp_path, redis_events())
    try:
        hot_swap(registry.http_port, inference)
    finally:
        inference.stop()
        registry.stop()


def test_split_without_shared_events_follows_by_polling(tmp_path):
    # Each process has its own in-process bus: no event crosses, only polls.
    registry, inference = split(tmp_path, memory_events(), poll_secs=0.2)
    try:
        hot_swap(registry.http_port, inference)
    finally:
        inference.stop()
        registry.stop()


def stored_copies(root, data):
    """Files under `root` whose bytes are `data` (the registry's stored artifact)."""
    return [p for p in Path(root).rglob("*") if p.is_file() and p.stat().st_size == len(data)
            and p.read_bytes() == data]


def test_corrupted_version_is_refused_and_old_keeps_serving(tmp_path):
    s, _, data = all_in_one(tmp_path)
    try:
        serve_v1(s)
        bad = plus_model(3)
        v3 = registry_upload(s.http_port, MODEL, {"model.onnx": bad})
        copies = stored_copies(data / "artifacts", bad)
        assert copies, "cannot find the stored artifact of the new version"
        for path in copies:  # same size, different bytes: only a checksum notices
            flipped = bytearray(bad)
            flipped[-1] ^= 0xFF
            os.chmod(path, 0o644)
            path.write_bytes(bytes(flipped))

        with Load(s) as load:
            wait_for_version(load, "1", more=10)
            registry_set_alias(s.http_port, MODEL, "production", v3)
            wait_until(lambda: metric(s, "mlserve_inference_registry_sync_failures_total",
                                      model=MODEL, reason="checksum") >= 1, 60,
                       "the corrupted version was not reported\n" + s.describe(40))
            wait_for_version(load, "1", more=20)
        assert load.failures == [], f"{load.failures[:3]}\n{s.describe(60)}"
        assert set(load.seen) == {"1"}, load.seen
        assert serving_version(s) == 1
        wait_until(lambda: "registry version refused" in s.log, 10, "the refusal was not logged")
    finally:
        s.stop()


def test_restart_serves_from_the_cache_without_downloading(tmp_path):
    s, config, _ = all_in_one(tmp_path)
    try:
        serve_v1(s)
        assert metric(s, "mlserve_inference_registry_downloads_total", model=MODEL) == 1
    finally:
        s.stop()

    again = start_server(tmp_path / "repo", "--config", config, "--role", "registry,inference")
    try:
        # The start-up sync runs before readiness: serving already.
        assert serving_version(again) == 1
        assert metric(again, "mlserve_inference_registry_downloads_total", model=MODEL) == 0
        assert metric(again, "mlserve_inference_registry_cache_hits_total", model=MODEL) == 1
        x = np.ones((1, 4), dtype=np.float32)
        r = infer(again.http_port, x)
        assert r.status == 200 and offset_of(r, x) == 1.0, str(r)
        assert "artifact downloaded" not in again.log
    finally:
        again.stop()


def test_restart_with_the_registry_down_serves_the_last_version_from_the_cache(tmp_path):
    s, _, data = all_in_one(tmp_path)
    try:
        serve_v1(s)
    finally:
        s.stop()
    # Nothing listens on port 1: every registry call fails as unavailable.
    config = write_config(tmp_path / "inference.toml", data, memory_events(),
                          registry_endpoint="http://127.0.0.1:1")
    alone = start_server(tmp_path / "repo", "--config", config, "--role", "inference")
    try:
        assert serving_version(alone) == 1
        assert metric(alone, "mlserve_inference_registry_downloads_total", model=MODEL) == 0
        x = np.full((2, 4), 0.5, dtype=np.float32)
        r = infer(alone.http_port, x)
        assert r.status == 200 and offset_of(r, x) == 1.0, str(r)
        assert "serving the version served last" in alone.log
    finally:
        alone.stop()


def test_a_followed_name_that_is_also_a_repository_model_is_refused(tmp_path):
    (tmp_path / "repo" / MODEL / "1").mkdir(parents=True)
    config = write_config(tmp_path / "mlserve.toml", tmp_path / "data", memory_events())
    with pytest.raises(ServerStartError, match="also a directory of the model repository"):
        Server().start(tmp_path / "repo", "--config", config, "--role", "registry,inference",
                       timeout=30)
