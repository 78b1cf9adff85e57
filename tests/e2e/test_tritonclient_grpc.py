"""The unchanged tritonclient.grpc client against mlserve; outputs are checked
against onnxruntime run on the same model files."""

import queue
from functools import partial

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from helpers import (IDENTITY_TYPES, assert_matches, copy_models, identity_input,
                     identity_or_skip, ort_reference, simple_inputs, wait_until)
from server import start_server


@pytest.fixture(scope="module")
def server(conformance_target):
    """This suite runs against the node and through the gateway, all-in-one
    and split (see conftest.conformance_target)."""
    return conformance_target

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def client(server):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


def make_inputs(feeds):
    return [grpcclient.InferInput(n, list(a.shape), np_to_triton_dtype(a.dtype)).set_data_from_numpy(a)
            for n, a in feeds.items()]


def run(client, repo, model, feeds, **kw):
    expected = ort_reference(repo, model, feeds)
    outputs = [grpcclient.InferRequestedOutput(n) for n in expected]
    result = client.infer(model, make_inputs(feeds), outputs=outputs, client_timeout=TIMEOUT, **kw)
    for name, ref in expected.items():
        assert_matches(result.as_numpy(name), ref, f"{model}/{name}")
    return result


# ------------------------------------------------------------ health, metadata
def test_server_live_and_ready(client):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


def test_grpc_health_check(server):
    with grpc.insecure_channel(server.grpc_url) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        # HealthCheckRequest{service=""} is empty; HealthCheckResponse{status=SERVING(1)}
        assert check(b"", timeout=TIMEOUT) == b"\x08\x01"


def test_server_metadata(client):
    md = client.get_server_metadata()
    assert md.name and md.version
    assert "binary_tensor_data" in list(md.extensions)


def test_model_metadata(client):
    md = client.get_model_metadata("simple")
    assert md.name == "simple"
    assert "1" in list(md.versions)
    assert {t.name: (t.datatype, list(t.shape)) for t in md.inputs} == {
        "INPUT0": ("INT32", [-1, 16]), "INPUT1": ("INT32", [-1, 16])}
    assert {t.name for t in md.outputs} == {"OUTPUT0", "OUTPUT1"}
    as_json = client.get_model_metadata("tabular", as_json=True)
    assert as_json["name"] == "tabular"
    assert [t["name"] for t in as_json["inputs"]] == ["input"]


def test_model_metadata_unknown_model(client):
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("no_such_model")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    assert "no_such_model" in e.value.message()


def test_model_ready(client):
    assert client.is_model_ready("simple") is True
    assert client.is_model_ready("simple", "1") is True
    assert client.is_model_ready("simple", "99") is False
    assert client.is_model_ready("no_such_model") is False


def test_model_config(client):
    cfg = client.get_model_config("simple").config
    assert cfg.name == "simple"
    assert cfg.max_batch_size == 8
    assert {i.name for i in cfg.input} == {"INPUT0", "INPUT1"}
    assert {o.name for o in cfg.output} == {"OUTPUT0", "OUTPUT1"}


def test_repository_index(client):
    index = {m.name: m for m in client.get_model_repository_index().models}
    for name in ["simple", "identity_fp32", "tabular", "int64_lookup", "string_len"]:
        assert name in index, f"{name} missing from {list(index)}"
        assert index[name].state == "READY"
        assert index[name].version == "1"


# ---------------------------------------------------------------- inference
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_simple(client, models_repo, batch):
    feeds = simple_inputs(batch, seed=batch)
    result = run(client, models_repo, "simple", feeds, request_id="g1")
    resp = result.get_response()
    assert resp.id == "g1" and resp.model_name == "simple"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), feeds["INPUT0"] - feeds["INPUT1"])


def test_default_outputs(client):
    feeds = simple_inputs(2, seed=21)
    result = client.infer("simple", make_inputs(feeds), client_timeout=TIMEOUT)
    assert {o.name for o in result.get_response().outputs} == {"OUTPUT0", "OUTPUT1"}
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), feeds["INPUT0"] + feeds["INPUT1"])


def test_simple_nobatch(client, models_repo):
    run(client, models_repo, "simple_nobatch", simple_inputs(1, seed=7))


@pytest.mark.parametrize("kind", IDENTITY_TYPES)
@pytest.mark.parametrize("batch", [1, 4])
def test_identity(client, models_repo, kind, batch):
    identity_or_skip(models_repo, kind)
    x = identity_input(kind, batch, n=7)
    result = run(client, models_repo, f"identity_{kind}", {"INPUT0": x})
    assert_matches(result.as_numpy("OUTPUT0"), x, f"identity_{kind} echoes its input")


@pytest.mark.parametrize("batch", [1, 6])
def test_int64_lookup(client, models_repo, batch):
    ids = np.random.default_rng(batch).integers(0, 8, (batch, 8)).astype(np.int64)
    result = run(client, models_repo, "int64_lookup", {"ids": ids})
    assert result.as_numpy("embeddings").shape == (batch, 8, 4)


@pytest.mark.parametrize("batch", [1, 9])
def test_tabular(client, models_repo, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 50)).astype(np.float32)
    result = run(client, models_repo, "tabular", {"input": x})
    assert result.as_numpy("label").shape == (batch,)


@pytest.mark.parametrize("batch", [1, 3])
def test_string_len(client, models_repo, batch):
    words = [b"hello", b"", "\u65e5\u672c".encode(), b"grpc"]
    text = np.array([[words[i % 4]] for i in range(batch)], dtype=np.object_)
    result = run(client, models_repo, "string_len", {"text": text})
    assert_matches(result.as_numpy("text_out"), text, "string_len/text_out echoes")


def test_large_tensor_over_4mib(client):
    x = np.random.default_rng(0).standard_normal((1, 2 * 1024 * 1024)).astype(np.float32)  # 8 MiB
    result = client.infer("identity_fp32", make_inputs({"INPUT0": x}), client_timeout=TIMEOUT)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_async_infer(client):
    done = queue.Queue()
    sent = {}
    for i in range(12):
        feeds = simple_inputs(1 + i % 4, seed=200 + i)
        sent[str(i)] = feeds
        client.async_infer("simple", make_inputs(feeds),
                           callback=partial(lambda q, result, error: q.put((result, error)), done),
                           request_id=str(i), client_timeout=TIMEOUT)
    seen = set()
    for _ in sent:
        result, error = done.get(timeout=TIMEOUT)
        assert error is None, error
        rid = result.get_response().id
        feeds = sent[rid]
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), feeds["INPUT0"] + feeds["INPUT1"])
        seen.add(rid)
    assert seen == set(sent)


def test_concurrent_requests_get_their_own_results(client, models_repo):
    """Many requests at once to `heavy` (max_batch_size 4): the batcher merges
    them, and every caller must still get the rows of its own input."""
    done = queue.Queue()
    sent = {}
    for i in range(24):
        x = np.random.default_rng(400 + i).standard_normal((1 + i % 2, 256)).astype(np.float32)
        sent[f"h{i}"] = x
        client.async_infer("heavy", make_inputs({"INPUT0": x}),
                           callback=partial(lambda q, result, error: q.put((result, error)), done),
                           request_id=f"h{i}", client_timeout=TIMEOUT)
    results = {}
    for _ in sent:
        result, error = done.get(timeout=TIMEOUT)
        assert error is None, error
        results[result.get_response().id] = result.as_numpy("OUTPUT0")
    assert set(results) == set(sent)
    for rid, x in sent.items():
        ref = ort_reference(models_repo, "heavy", {"INPUT0": x})["OUTPUT0"]
        assert_matches(results[rid], ref, f"heavy/{rid}")


def test_stream_infer(server):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    done = queue.Queue()
    try:
        c.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), done))
        sent = {}
        for i in range(10):
            feeds = simple_inputs(1 + i % 3, seed=300 + i)
            sent[f"s{i}"] = feeds
            c.async_stream_infer("simple", make_inputs(feeds), request_id=f"s{i}")
        # an invalid request in the middle of the stream: only INPUT0
        bad = simple_inputs(1)
        c.async_stream_infer("simple", make_inputs({"INPUT0": bad["INPUT0"]}), request_id="bad")
        for i in range(10, 13):
            feeds = simple_inputs(2, seed=300 + i)
            sent[f"s{i}"] = feeds
            c.async_stream_infer("simple", make_inputs(feeds), request_id=f"s{i}")
        results, errors = {}, []
        for _ in range(len(sent) + 1):
            result, error = done.get(timeout=TIMEOUT)
            if error is not None:
                errors.append(error)
            else:
                results[result.get_response().id] = result
        assert len(errors) == 1 and "INPUT1" in str(errors[0]), errors
        assert set(results) == set(sent)
        for rid, feeds in sent.items():
            np.testing.assert_array_equal(results[rid].as_numpy("OUTPUT0"), feeds["INPUT0"] + feeds["INPUT1"])
            np.testing.assert_array_equal(results[rid].as_numpy("OUTPUT1"), feeds["INPUT0"] - feeds["INPUT1"])
    finally:
        c.stop_stream()
        c.close()


# ------------------------------------------------------------------- errors
def test_missing_input_is_invalid_argument(client):
    feeds = simple_inputs(1)
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple", make_inputs({"INPUT0": feeds["INPUT0"]}), client_timeout=TIMEOUT)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "INPUT1" in e.value.message()


def test_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException) as e:
        client.infer("no_such_model", make_inputs(simple_inputs(1)), client_timeout=TIMEOUT)
    assert e.value.status() == "StatusCode.NOT_FOUND"
    assert "no_such_model" in e.value.message()


def test_raw_contents_size_mismatch(server):
    """raw_input_contents with 60 bytes for an INT32 [1,16] input (64 bytes)."""
    with grpc.insecure_channel(server.grpc_url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = service_pb2.ModelInferRequest(model_name="simple")
        for name in ("INPUT0", "INPUT1"):
            t = req.inputs.add()
            t.name, t.datatype = name, "INT32"
            t.shape.extend([1, 16])
        req.raw_input_contents.extend([b"\x00" * 60, b"\x00" * 64])
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req, timeout=TIMEOUT)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "INPUT0" in e.value.details()
        # typed contents instead of raw work too
        req = service_pb2.ModelInferRequest(model_name="simple")
        for name, vals in (("INPUT0", range(16)), ("INPUT1", [1] * 16)):
            t = req.inputs.add()
            t.name, t.datatype = name, "INT32"
            t.shape.extend([1, 16])
            t.contents.int_contents.extend(vals)
        resp = stub.ModelInfer(req, timeout=TIMEOUT)
        out = grpcclient.InferResult(resp).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(out, np.arange(1, 17, dtype=np.int32).reshape(1, 16))


# --------------------------------------------------------------- statistics
def _stats(client, model):
    entries = [s for s in client.get_inference_statistics(model).model_stats
               if s.name == model and s.version == "1"]
    assert len(entries) == 1
    return entries[0]


def test_inference_statistics_count_up(client, models_repo):
    before = _stats(client, "identity_int16")
    n = 4
    for i in range(n):
        run(client, models_repo, "identity_int16", {"INPUT0": identity_input("int16", 3, seed=i)})
    want = before.inference_stats.success.count + n
    wait_until(lambda: _stats(client, "identity_int16").inference_stats.success.count >= want,
               10, "success count did not go up")
    after = _stats(client, "identity_int16")
    assert after.inference_stats.success.count == want
    assert after.inference_count == before.inference_count + 3 * n
    assert before.execution_count < after.execution_count <= before.execution_count + n
    assert after.inference_stats.compute_infer.count > before.inference_stats.compute_infer.count
    assert after.last_inference > 0


# ------------------------------------------------- explicit model control
@pytest.fixture(scope="module")
def explicit_server(models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("explicit_grpc") / "repo",
                       ["simple", "identity_fp32"])
    s = start_server(repo, "--model-control-mode", "explicit", "--load-model", "simple")
    yield s
    s.stop()


def _infer_simple(c):
    feeds = simple_inputs(1, seed=6)
    out = c.infer("simple", make_inputs(feeds), client_timeout=TIMEOUT).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, feeds["INPUT0"] + feeds["INPUT1"])


def test_explicit_load_unload(explicit_server):
    c = grpcclient.InferenceServerClient(explicit_server.grpc_url)
    try:
        assert c.is_model_ready("simple") is True
        assert c.is_model_ready("identity_fp32") is False
        index = {m.name: m for m in c.get_model_repository_index().models}
        assert index["simple"].state == "READY"
        assert "identity_fp32" in index and index["identity_fp32"].state != "READY"

        c.load_model("identity_fp32")
        assert c.is_model_ready("identity_fp32") is True
        _infer_simple(c)

        c.unload_model("simple")
        wait_until(lambda: not c.is_model_ready("simple"), 15, "simple still ready after unload")
        with pytest.raises(InferenceServerException) as e:
            _infer_simple(c)
        assert "simple" in e.value.message()

        c.load_model("simple")
        assert c.is_model_ready("simple") is True
        _infer_simple(c)
    finally:
        c.close()
