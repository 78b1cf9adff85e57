"""Real Triton (bench/baselines/triton_server.py: the nvidia-pytriton wheel's
tritonserver, python backend running onnxruntime), checked with tritonclient
over HTTP and gRPC against onnxruntime run directly on the same model file.

Skipped when bench/.venv-triton is not set up (`bash bench/triton/setup.sh`);
CI does not set it up, so there it is collected and skipped.

  .venv/bin/python -m pytest bench/baselines/test_triton_server.py
"""

import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(HERE))
import make_models  # noqa: E402
import triton_server  # noqa: E402

pytestmark = pytest.mark.skipif(not triton_server.installed(),
                                reason="bench/.venv-triton not set up (bash bench/triton/setup.sh)")


@pytest.fixture(scope="module")
def mlserve_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    make_models.write_spec(out, make_models.BUILDERS["tabular"]())
    return out / "tabular"


@pytest.fixture(scope="module")
def triton(mlserve_model, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton-repo")
    triton_server.write_model(repo, "tabular", mlserve_model, intra_threads=1)
    server = triton_server.Triton(repo, tmp_path_factory.mktemp("log") / "tritonserver.log")
    server.start(["tabular"])
    try:
        yield server
    finally:
        server.stop()


def reference(mlserve_model, x):
    sess = ort.InferenceSession(str(mlserve_model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))


def rows(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 50)).astype(np.float32)


def check(result, want, n):
    # Triton cannot declare a per-row scalar (empty dims): label is [n, 1]
    # there (dims [1] + reshape []), [n] in onnxruntime and mlserve.
    assert result.as_numpy("label").shape == (n, 1)
    np.testing.assert_array_equal(result.as_numpy("label").reshape(-1), want["label"])
    np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"], rtol=1e-6)


def test_metadata(triton):
    client = httpclient.InferenceServerClient(triton.address("http"))
    assert client.is_server_ready() and client.is_model_ready("tabular")
    meta = client.get_model_metadata("tabular")
    assert meta["platform"] == "python" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 50]}]
    config = client.get_model_config("tabular")
    assert config["max_batch_size"] == 64
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 256


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_matches_onnxruntime(triton, mlserve_model, binary):
    x = rows(7, 3)
    client = httpclient.InferenceServerClient(triton.address("http"))
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    check(client.infer("tabular", [inp], outputs=outs), reference(mlserve_model, x), 7)


def test_grpc_matches_onnxruntime(triton, mlserve_model):
    x = rows(5, 4)
    client = grpcclient.InferenceServerClient(triton.address("grpc"))
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    check(client.infer("tabular", [inp]), reference(mlserve_model, x), 5)


def test_only_requested_outputs(triton):
    client = httpclient.InferenceServerClient(triton.address("http"))
    inp = httpclient.InferInput("input", [2, 50], "FP32")
    inp.set_data_from_numpy(rows(2, 5))
    result = client.infer("tabular", [inp], outputs=[httpclient.InferRequestedOutput("probabilities")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]


def test_batched_requests_get_their_own_rows(triton, mlserve_model):
    """Concurrent requests of different sizes, which the dynamic batcher may
    hand model.py together: each answer holds exactly its own rows."""
    sizes = [1, 3, 2, 5, 1, 4, 2, 1] * 4
    inputs = [rows(n, 100 + i) for i, n in enumerate(sizes)]

    def one(x):
        client = httpclient.InferenceServerClient(triton.address("http"))
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer("tabular", [inp])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, inputs))
    for x, result in zip(inputs, results):
        check(result, reference(mlserve_model, x), len(x))


def test_load_serves_a_new_version(triton, mlserve_model):
    """The reload benchmark's swap: version directory 2, then the load call."""
    version_dir = triton_server.write_model(triton.repository, "tabular", mlserve_model, intra_threads=1,
                                            version=2)
    try:
        triton.load("tabular")
        client = httpclient.InferenceServerClient(triton.address("http"))
        assert client.get_model_metadata("tabular")["versions"] == ["2"]
        x = rows(3, 6)
        inp = httpclient.InferInput("input", [3, 50], "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("tabular", [inp])
        assert result.get_response()["model_version"] == "2"
        check(result, reference(mlserve_model, x), 3)
    finally:
        shutil.rmtree(version_dir)
        triton.load("tabular")


def test_queue_bound_off_leaves_the_policy_out(mlserve_model, tmp_path):
    triton_server.write_model(tmp_path, "tabular", mlserve_model, intra_threads=2, queue_bound=False)
    text = (tmp_path / "tabular" / "config.pbtxt").read_text()
    assert "max_queue_size" not in text and "max_queue_delay_microseconds: 500" in text
    assert 'string_value: "2"' in text
