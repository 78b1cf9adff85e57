"""The unchanged tritonclient.http client against mlserve; outputs are checked
against onnxruntime run on the same model files."""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from helpers import (IDENTITY_TYPES, assert_matches, copy_models, identity_input,
                     identity_or_skip, ort_reference, simple_inputs, wait_until)
from server import start_server


@pytest.fixture(scope="module")
def server(conformance_target):
    """This suite runs against the node and through the gateway, all-in-one
    and split (see conftest.conformance_target)."""
    return conformance_target


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(server.http_url, network_timeout=60.0)
    yield c
    c.close()


def run(client, repo, model, feeds, binary_in=True, binary_out=True, **kw):
    """Infers `feeds` on `model` and checks every output against onnxruntime."""
    inputs = []
    for name, arr in feeds.items():
        i = httpclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        i.set_data_from_numpy(arr, binary_data=binary_in)
        inputs.append(i)
    expected = ort_reference(repo, model, feeds)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in expected]
    result = client.infer(model, inputs, outputs=outputs, **kw)
    for name, ref in expected.items():
        assert_matches(result.as_numpy(name), ref, f"{model}/{name}")
    return result


# ------------------------------------------------------------ health, metadata
def test_server_live_and_ready(client):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


def test_server_metadata(client):
    md = client.get_server_metadata()
    assert isinstance(md["name"], str) and md["name"]
    assert isinstance(md["version"], str) and md["version"]
    assert "binary_tensor_data" in md["extensions"]


def test_model_metadata_batching_model(client):
    md = client.get_model_metadata("simple")
    assert md["name"] == "simple"
    assert "1" in md["versions"]
    assert md["platform"]
    ins = {t["name"]: t for t in md["inputs"]}
    outs = {t["name"]: t for t in md["outputs"]}
    assert set(ins) == {"INPUT0", "INPUT1"} and set(outs) == {"OUTPUT0", "OUTPUT1"}
    for t in list(ins.values()) + list(outs.values()):
        assert t["datatype"] == "INT32"
        assert t["shape"] == [-1, 16], t


def test_model_metadata_non_batching_and_versioned(client):
    md = client.get_model_metadata("simple_nobatch", model_version="1")
    assert md["name"] == "simple_nobatch"
    assert {t["name"]: t["shape"] for t in md["inputs"]} == {"INPUT0": [1, 16], "INPUT1": [1, 16]}


def test_model_metadata_unknown_model_raises(client):
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("no_such_model")
    assert "no_such_model" in e.value.message()


def test_model_ready(client):
    assert client.is_model_ready("simple") is True
    assert client.is_model_ready("simple", "1") is True
    assert client.is_model_ready("simple", "99") is False
    assert client.is_model_ready("no_such_model") is False


def test_model_config(client):
    cfg = client.get_model_config("simple")
    assert cfg["name"] == "simple"
    assert cfg["max_batch_size"] == 8
    assert {i["name"] for i in cfg["input"]} == {"INPUT0", "INPUT1"}
    assert {o["name"] for o in cfg["output"]} == {"OUTPUT0", "OUTPUT1"}
    assert client.get_model_config("simple_nobatch").get("max_batch_size", 0) == 0


def test_repository_index(client, models_repo):
    index = client.get_model_repository_index()
    assert isinstance(index, list)
    by_name = {m["name"]: m for m in index}
    for name in ["simple", "simple_nobatch", "identity_fp32", "tabular", "int64_lookup"]:
        assert name in by_name, f"{name} missing from index {index}"
        assert by_name[name]["state"] == "READY", by_name[name]
        assert by_name[name].get("version") == "1", by_name[name]


# ---------------------------------------------------------------- inference
@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_simple(client, models_repo, batch, binary):
    feeds = simple_inputs(batch, seed=batch)
    result = run(client, models_repo, "simple", feeds, binary, binary)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), feeds["INPUT0"] + feeds["INPUT1"])


def test_simple_binary_in_json_out_and_request_id(client, models_repo):
    result = run(client, models_repo, "simple", simple_inputs(2), True, False, request_id="req-42")
    assert result.get_response()["id"] == "req-42"
    assert result.get_response()["model_name"] == "simple"


def test_simple_nobatch(client, models_repo):
    run(client, models_repo, "simple_nobatch", simple_inputs(1, seed=9))


def test_default_outputs_are_all_binary(client):
    feeds = simple_inputs(2, seed=3)
    inputs = [httpclient.InferInput(n, [2, 16], "INT32").set_data_from_numpy(a)
              for n, a in feeds.items()]
    result = client.infer("simple", inputs)  # no outputs: binary_data_output=true
    for o in result.get_response()["outputs"]:
        assert "binary_data_size" in o.get("parameters", {}), o
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), feeds["INPUT0"] - feeds["INPUT1"])


def test_requested_output_subset(client):
    feeds = simple_inputs(1, seed=4)
    inputs = [httpclient.InferInput(n, [1, 16], "INT32").set_data_from_numpy(a)
              for n, a in feeds.items()]
    result = client.infer("simple", inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT1")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), feeds["INPUT0"] - feeds["INPUT1"])


# tritonclient sends BF16 only as binary data, so there is no bf16/json case
@pytest.mark.parametrize("kind,binary", [(k, b) for k in IDENTITY_TYPES for b in ("binary", "json")
                                         if (k, b) != ("bf16", "json")])
@pytest.mark.parametrize("batch", [1, 4])
def test_identity(client, models_repo, kind, batch, binary):
    identity_or_skip(models_repo, kind)
    binary = binary == "binary"
    x = identity_input(kind, batch, n=6)
    result = run(client, models_repo, f"identity_{kind}", {"INPUT0": x}, binary, binary)
    assert_matches(result.as_numpy("OUTPUT0"), x, f"identity_{kind} echoes its input")


@pytest.mark.parametrize("batch", [1, 5])
def test_int64_lookup(client, models_repo, batch):
    rng = np.random.default_rng(batch)
    ids = rng.integers(0, 8, (batch, 8)).astype(np.int64)
    result = run(client, models_repo, "int64_lookup", {"ids": ids})
    assert result.as_numpy("embeddings").shape == (batch, 8, 4)
    assert result.as_numpy("ids_sum").shape == (batch,)


@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tabular(client, models_repo, batch, binary):
    x = np.random.default_rng(batch).standard_normal((batch, 50)).astype(np.float32)
    result = run(client, models_repo, "tabular", {"input": x}, binary, binary)
    assert result.as_numpy("probabilities").shape == (batch, 2)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_string_len(client, models_repo, batch, binary):
    words = [b"hello", b"", "gr\u00fc\u00dfe".encode(), b"mlserve speaks v2"]
    text = np.array([[words[i % len(words)]] for i in range(batch)], dtype=np.object_)
    result = run(client, models_repo, "string_len", {"text": text}, binary, binary)
    assert_matches(result.as_numpy("text_out"), text, "string_len/text_out echoes")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_and_response(client, models_repo, algorithm):
    run(client, models_repo, "simple", simple_inputs(4, seed=11),
        request_compression_algorithm=algorithm, response_compression_algorithm=algorithm)


def test_async_infer(server, models_repo):
    c = httpclient.InferenceServerClient(server.http_url, concurrency=4, network_timeout=60.0)
    try:
        pending = []
        for i in range(12):
            feeds = simple_inputs(1 + i % 4, seed=100 + i)
            inputs = [httpclient.InferInput(n, list(a.shape), "INT32").set_data_from_numpy(a)
                      for n, a in feeds.items()]
            pending.append((feeds, c.async_infer("simple", inputs, request_id=str(i))))
        for i, (feeds, req) in enumerate(pending):
            result = req.get_result(timeout=60)
            assert result.get_response()["id"] == str(i)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), feeds["INPUT0"] + feeds["INPUT1"])
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), feeds["INPUT0"] - feeds["INPUT1"])
    finally:
        c.close()


# --------------------------------------------------------------- statistics
def _stats(client, model):
    doc = client.get_inference_statistics(model)
    entries = [s for s in doc["model_stats"] if s["name"] == model and s["version"] == "1"]
    assert len(entries) == 1, doc
    return entries[0]


def test_inference_statistics_count_up(client, models_repo):
    before = _stats(client, "identity_int32")
    n = 5
    for i in range(n):
        run(client, models_repo, "identity_int32", {"INPUT0": identity_input("int32", 2, seed=i)})
    want_success = before["inference_stats"]["success"]["count"] + n
    wait_until(lambda: _stats(client, "identity_int32")["inference_stats"]["success"]["count"]
               >= want_success, 10, "success count did not go up")
    after = _stats(client, "identity_int32")
    assert after["inference_stats"]["success"]["count"] == want_success
    assert after["inference_count"] == before["inference_count"] + 2 * n  # batch 2 each
    assert before["execution_count"] + 1 <= after["execution_count"] <= before["execution_count"] + n
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert after["inference_stats"][key]["count"] >= before["inference_stats"][key]["count"] + 1, key
    assert after["last_inference"] > 0
    # mlserve's extensions: nothing waits now; the instances serving it.
    assert after["queue_depth"] == 0 and after["instances"] >= 1, after
    all_stats = client.get_inference_statistics()
    assert "identity_int32" in {s["name"] for s in all_stats["model_stats"]}


def test_inference_statistics_unknown_model(client):
    with pytest.raises(InferenceServerException):
        client.get_inference_statistics("no_such_model")


# ------------------------------------------------- explicit model control
@pytest.fixture(scope="module")
def explicit_server(models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("explicit_http") / "repo",
                       ["simple", "identity_fp32"])
    s = start_server(repo, "--model-control-mode", "explicit", "--load-model", "simple")
    yield s
    s.stop()


def _infer_simple(c):
    feeds = simple_inputs(1, seed=5)
    inputs = [httpclient.InferInput(n, [1, 16], "INT32").set_data_from_numpy(a)
              for n, a in feeds.items()]
    out = c.infer("simple", inputs).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, feeds["INPUT0"] + feeds["INPUT1"])


def test_explicit_load_unload(explicit_server):
    c = httpclient.InferenceServerClient(explicit_server.http_url, network_timeout=60.0)
    try:
        assert c.is_model_ready("simple") is True
        assert c.is_model_ready("identity_fp32") is False
        index = {m["name"]: m for m in c.get_model_repository_index()}
        assert index["simple"]["state"] == "READY"
        assert "identity_fp32" in index and index["identity_fp32"].get("state") != "READY"

        c.load_model("identity_fp32")
        assert c.is_model_ready("identity_fp32") is True
        x = np.arange(6, dtype=np.float32).reshape(1, 6)
        i = httpclient.InferInput("INPUT0", [1, 6], "FP32").set_data_from_numpy(x)
        np.testing.assert_array_equal(c.infer("identity_fp32", [i]).as_numpy("OUTPUT0"), x)

        _infer_simple(c)
        c.unload_model("simple")
        wait_until(lambda: not c.is_model_ready("simple"), 15, "simple still ready after unload")
        with pytest.raises(InferenceServerException) as e:
            _infer_simple(c)
        assert "simple" in e.value.message()
        index = {m["name"]: m for m in c.get_model_repository_index()}
        assert index["simple"].get("state") != "READY", index["simple"]

        c.load_model("simple")
        assert c.is_model_ready("simple") is True
        _infer_simple(c)
    finally:
        c.close()


def test_explicit_load_unknown_model_fails(explicit_server):
    c = httpclient.InferenceServerClient(explicit_server.http_url)
    try:
        with pytest.raises(InferenceServerException) as e:
            c.load_model("no_such_model")
        assert "no_such_model" in e.value.message()
        assert c.is_server_live()
    finally:
        c.close()
