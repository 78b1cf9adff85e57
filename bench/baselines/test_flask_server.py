"""The Flask baseline under gunicorn, checked with tritonclient.http.

The server gets a socket bound here to port 0 (gunicorn --bind fd://N), so
there is no race for the port.  Outputs are compared with onnxruntime run
directly on the same model files.

  .venv/bin/python -m pytest bench/baselines
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_models  # noqa: E402

MODELS = ("tabular", "string_len", "simple_nobatch")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    for name in MODELS:
        make_models.write_spec(out, make_models.BUILDERS[name]())
    return out


@pytest.fixture(scope="module")
def url(repo, tmp_path_factory):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    log_path = tmp_path_factory.mktemp("log") / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"fd://{sock.fileno()}",
             "--no-control-socket", f"bench.baselines.flask_server:create_app({str(repo)!r})"],
            cwd=ROOT, pass_fds=[sock.fileno()], stdout=log, stderr=subprocess.STDOUT)
    sock.close()
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://{address}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn not ready in 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(url):
    return httpclient.InferenceServerClient(url)


def reference(repo, model, feeds):
    sess = ort.InferenceSession(str(repo / model / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def post(url, path, body, headers=None):
    """(status, parsed JSON or raw bytes) of a raw POST."""
    req = urllib.request.Request(f"http://{url}{path}", data=body, method="POST",
                                 headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data


def test_metadata(client):
    assert client.is_server_ready()
    assert client.is_model_ready("tabular")
    meta = client.get_model_metadata("tabular")
    assert meta["name"] == "tabular" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 50]}]
    assert meta["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [-1]},
                               {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    fixed = client.get_model_metadata("simple_nobatch")
    assert [i["shape"] for i in fixed["inputs"]] == [[1, 16], [1, 16]]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tabular_matches_onnxruntime(client, repo, binary):
    x = np.random.default_rng(3).standard_normal((7, 50)).astype(np.float32)
    want = reference(repo, "tabular", {"input": x})
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    result = client.infer("tabular", [inp], outputs=outs)
    assert result.as_numpy("label").dtype == np.int64
    np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
    np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"], rtol=1e-6)
    sizes = [(o.get("parameters") or {}).get("binary_data_size") for o in result.get_response()["outputs"]]
    assert sizes == ([7 * 8, 7 * 2 * 4] if binary else [None, None])


def test_only_requested_outputs(client):
    x = np.zeros((1, 50), np.float32)
    inp = httpclient.InferInput("input", [1, 50], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("tabular", [inp], outputs=[httpclient.InferRequestedOutput("probabilities")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes(client, binary):
    text = np.array([["héllo wörld"], ["abc"], [""]], dtype=object)
    inp = httpclient.InferInput("text", [3, 1], "BYTES")
    inp.set_data_from_numpy(text, binary_data=binary)
    result = client.infer("string_len", [inp],
                          outputs=[httpclient.InferRequestedOutput("upper", binary_data=binary)])
    got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("upper").reshape(-1)]
    assert got == ["HéLLO WöRLD", "ABC", ""]


def test_nested_json_and_raw_binary(url, repo):
    x = np.random.default_rng(4).standard_normal((2, 50)).astype(np.float32)
    want = reference(repo, "tabular", {"input": x})["probabilities"]
    body = {"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 50],
                                    "data": x.tolist()}],
            "outputs": [{"name": "probabilities"}]}
    status, resp = post(url, "/v2/models/tabular/infer", json.dumps(body).encode())
    assert status == 200 and resp["id"] == "r1" and resp["model_name"] == "tabular"
    np.testing.assert_allclose(np.array(resp["outputs"][0]["data"]).reshape(2, 2), want, rtol=1e-6)
    # binary in, binary out for every output (request-level binary_data_output)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 50],
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    req = urllib.request.Request(f"http://{url}/v2/models/tabular/infer", data=head + x.tobytes(),
                                 method="POST", headers={"Inference-Header-Content-Length": str(len(head))})
    with urllib.request.urlopen(req, timeout=10) as r:
        n = int(r.headers["Inference-Header-Content-Length"])
        data = r.read()
    meta = json.loads(data[:n])
    assert [o["parameters"]["binary_data_size"] for o in meta["outputs"]] == [16, 16]
    np.testing.assert_allclose(np.frombuffer(data[n + 16:], "<f4").reshape(2, 2), want, rtol=1e-6)


@pytest.mark.parametrize("body, status, fragment", [
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 49], "data": [0] * 49}]},
     400, "shape"),
    ({"inputs": [{"name": "input", "datatype": "INT32", "shape": [1, 50], "data": [0] * 50}]},
     400, "datatype"),
    ({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 50], "data": [0] * 50}]},
     400, "unknown input"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 50], "data": [1, 2]}]},
     400, "elements"),
    ({"inputs": []}, 400, "missing"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 50], "data": [0] * 50}],
      "outputs": [{"name": "nope"}]}, 400, "unknown output"),
])
def test_errors(url, body, status, fragment):
    got, resp = post(url, "/v2/models/tabular/infer", json.dumps(body).encode())
    assert got == status and fragment in resp["error"], resp


def test_error_statuses(url, client):
    status, resp = post(url, "/v2/models/nope/infer", b"{}")
    assert status == 404 and "nope" in resp["error"]
    status, resp = post(url, "/v2/models/tabular/infer", b"not json")
    assert status == 400 and "JSON" in resp["error"]
    status, resp = post(url, "/v2/models/tabular/infer", b'{"inputs": []}',
                        headers={"Inference-Header-Content-Length": "999"})
    assert status == 400 and "error" in resp
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "404"
