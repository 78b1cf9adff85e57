"""Shared helpers for the end-to-end tests: raw HTTP, the binary tensor
extension, onnxruntime reference outputs, Prometheus text parsing."""

import ctypes
import http.client
import json
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ml_dtypes
import numpy as np
import onnxruntime as ort
from tritonclient.utils import (deserialize_bytes_tensor, np_to_triton_dtype,
                                serialize_byte_tensor, triton_to_np_dtype)

IDENTITY_TYPES = ["fp32", "fp16", "fp64", "bf16", "int8", "int16", "int32",
                  "int64", "uint8", "uint16", "uint32", "uint64", "bool", "bytes"]
TRITON_TYPE = {"fp32": "FP32", "fp16": "FP16", "fp64": "FP64", "bf16": "BF16",
               "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
               "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
               "uint64": "UINT64", "bool": "BOOL", "bytes": "BYTES"}


# ------------------------------------------------------------------ raw HTTP
@dataclass
class Resp:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    def error(self):
        """The `error` message of an error body; fails if the body is not
        `{"error": "<non-empty string>"}`."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            raise AssertionError(f"error body is not JSON: status {self.status}, "
                                 f"body {self.body[:300]!r}") from None
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) \
            and doc["error"], f"error body is not {{'error': '...'}}: {doc!r}"
        return doc["error"]

    def __str__(self):
        return f"HTTP {self.status} {self.body[:500]!r}"


def http_request(port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def raw_http(port, head, body, timeout=30):
    """Sends a request over a bare socket while reading the reply in another
    thread, so a server that answers early (413) and closes before taking the
    whole body is still heard; returns (status, body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = []

    def reader():
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            received.append(chunk)

    th = threading.Thread(target=reader, daemon=True)
    try:
        sock.sendall(head)
        th.start()
        try:
            sock.sendall(body)
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        th.join(timeout)
    finally:
        sock.close()
    data = b"".join(received)
    assert data.startswith(b"HTTP/1."), f"no HTTP response, got {data[:200]!r}"
    head_part, _, rest = data.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), rest


def socket_response(sock):
    """Reads one whole HTTP/1.1 response (with a Content-Length) off a raw
    socket: its head and body as bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside the answer"
        body += chunk
    return head, body


def get(port, path, **kw):
    return http_request(port, "GET", path, **kw)


def post(port, path, body=None, **kw):
    return http_request(port, "POST", path, body=body, **kw)


def infer_path(model, version=None):
    if version is None:
        return f"/v2/models/{model}/infer"
    return f"/v2/models/{model}/versions/{version}/infer"


def hammer(clients, requests, send):
    """Runs `clients` threads of `requests` calls each; returns every
    client's list of (status, body) answers."""
    answers = [[] for _ in range(clients)]

    def run(client):
        for n in range(requests):
            answers[client].append(send(client, n))

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def peak_rss_mb(server):
    """The server process's peak resident set (VmHWM), in MiB."""
    with open(f"/proc/{server.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def wait_until(predicate, timeout, message, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {message}")


# ------------------------------------------------------- JSON / binary tensors
def json_tensor(name, arr):
    dt = np_to_triton_dtype(arr.dtype)
    if dt == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.flatten()]
    else:
        data = arr.flatten().tolist()
    return {"name": name, "datatype": dt, "shape": list(arr.shape), "data": data}


def tensor_bytes(arr):
    if np_to_triton_dtype(arr.dtype) == "BYTES":
        s = serialize_byte_tensor(arr)
        return s.item() if s.size > 0 else b""
    return np.ascontiguousarray(arr).tobytes()


def binary_request(inputs, outputs=None, parameters=None):
    """inputs: {name: np array}. Returns (body, json_header_length)."""
    doc = {"inputs": []}
    blobs = []
    for name, arr in inputs.items():
        raw = tensor_bytes(arr)
        doc["inputs"].append({"name": name, "datatype": np_to_triton_dtype(arr.dtype),
                              "shape": list(arr.shape),
                              "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    if outputs is not None:
        doc["outputs"] = outputs
    if parameters is not None:
        doc["parameters"] = parameters
    header = json.dumps(doc).encode()
    return header + b"".join(blobs), len(header)


def post_binary(port, model, inputs, outputs=None, parameters=None, headers=None):
    body, hlen = binary_request(inputs, outputs, parameters)
    h = {"Inference-Header-Content-Length": str(hlen),
         "Content-Type": "application/octet-stream", **(headers or {})}
    return post(port, infer_path(model), body, headers=h)


def decode_response(resp):
    """Decodes an infer response (JSON or binary) to {output name: array}."""
    assert resp.status == 200, str(resp)
    hlen = resp.headers.get("inference-header-content-length")
    header = resp.body if hlen is None else resp.body[:int(hlen)]
    doc = json.loads(header)
    offset = 0 if hlen is None else int(hlen)
    out = {}
    for o in doc["outputs"]:
        dt, shape = o["datatype"], o["shape"]
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            assert hlen is not None, "binary output without Inference-Header-Content-Length"
            raw = resp.body[offset:offset + size]
            offset += size
            if dt == "BYTES":
                arr = deserialize_bytes_tensor(raw) if size else np.empty(0, np.object_)
            else:
                arr = np.frombuffer(raw, dtype=triton_to_np_dtype(dt))
        elif dt == "BYTES":
            arr = np.array([s.encode() for s in _flatten(o["data"])], dtype=np.object_)
        else:
            arr = np.array(_flatten(o["data"]), dtype=triton_to_np_dtype(dt))
        out[o["name"]] = arr.reshape(shape)
    if hlen is not None:
        assert offset == len(resp.body), \
            f"binary section is {len(resp.body) - int(hlen)} bytes, outputs declare {offset - int(hlen)}"
    return out


def _flatten(data):
    if isinstance(data, list):
        return [x for d in data for x in _flatten(d)]
    return [data]


# -------------------------------------------------------- reference outputs
@lru_cache(maxsize=None)
def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def model_file(repo, model, version=1):
    return Path(repo) / model / str(version) / "model.onnx"


def ort_reference(repo, model, feeds, version=1):
    """Runs onnxruntime on the model file; feeds/returns {name: array} in the
    server's representation (BYTES as object arrays of bytes, BF16 as
    ml_dtypes.bfloat16)."""
    sess = _session(str(model_file(repo, model, version)))
    if any(a.dtype == ml_dtypes.bfloat16 for a in feeds.values()):
        return _run_bf16(sess, feeds)
    ort_feeds = {k: (np.vectorize(lambda b: b.decode(), otypes=[np.object_])(v)
                     if v.dtype == np.object_ else v) for k, v in feeds.items()}
    names = [o.name for o in sess.get_outputs()]
    result = {}
    for name, arr in zip(names, sess.run(names, ort_feeds)):
        if arr.dtype == np.object_ or arr.dtype.kind == "U":
            arr = np.array([s.encode() if isinstance(s, str) else s
                            for s in arr.flatten()], dtype=np.object_).reshape(arr.shape)
        result[name] = arr
    return result


def _run_bf16(sess, feeds):
    # onnxruntime's numpy binding has no bfloat16; go through OrtValue.
    vals = {}
    for k, v in feeds.items():
        if v.dtype == ml_dtypes.bfloat16:
            vals[k] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                np.ascontiguousarray(v).view(np.uint16), onnx_element_type=16)
        else:
            vals[k] = ort.OrtValue.ortvalue_from_numpy(v)
    names = [o.name for o in sess.get_outputs()]
    result = {}
    for name, val in zip(names, sess.run_with_ort_values(names, vals)):
        if val.data_type() == "tensor(bfloat16)":
            n = int(np.prod(val.shape()))
            raw = bytes((ctypes.c_uint16 * n).from_address(val.data_ptr())) if n else b""
            result[name] = np.frombuffer(raw, np.uint16).view(ml_dtypes.bfloat16) \
                .reshape(val.shape()).copy()
        else:
            result[name] = val.numpy()
    return result


def assert_matches(actual, expected, what=""):
    """Exact for ints/bool/bytes, allclose(rtol=1e-5, atol=1e-6) for floats."""
    assert actual is not None, f"{what}: output missing"
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert list(actual.shape) == list(expected.shape), \
        f"{what}: shape {list(actual.shape)} != reference {list(expected.shape)}"
    if expected.dtype == ml_dtypes.bfloat16 or expected.dtype.kind == "f":
        assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                                   rtol=1e-5, atol=1e-6, err_msg=what)
    elif expected.dtype == np.object_:
        a = [x.encode() if isinstance(x, str) else bytes(x) for x in actual.flatten()]
        assert a == list(expected.flatten()), f"{what}: {a} != {list(expected.flatten())}"
    else:
        assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
        np.testing.assert_array_equal(actual, expected, err_msg=what)


# ------------------------------------------------------------------ inputs
def identity_input(kind, batch, n=5, seed=0):
    """A [batch, n] input for identity_<kind>, with type extremes for ints."""
    rng = np.random.default_rng(seed + batch * 100 + n)
    shape = (batch, n)
    if kind == "bytes":
        words = ["héllo", "", "日本語", "a b\tc", "x" * 40, "0", "ümlaut", "\u00a9"]
        flat = [words[int(i)].encode() for i in rng.integers(0, len(words), batch * n)]
        return np.array(flat, dtype=np.object_).reshape(shape)
    if kind == "bool":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if kind == "bf16":
        return rng.standard_normal(shape).astype(ml_dtypes.bfloat16)
    dt = triton_to_np_dtype(TRITON_TYPE[kind])
    if np.dtype(dt).kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dt)
    info = np.iinfo(dt)
    arr = rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dt)
    flat = arr.reshape(-1)
    flat[0] = info.max
    if flat.size > 1:
        flat[1] = info.min
    return arr


def simple_inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1000, (batch, 16)).astype(np.int32)
    b = rng.integers(-1000, 1000, (batch, 16)).astype(np.int32)
    return {"INPUT0": a, "INPUT1": b}


def simple_json(batch=1, seed=0):
    ins = simple_inputs(batch, seed)
    return {"inputs": [json_tensor(k, v) for k, v in ins.items()]}, ins


def check_simple(resp, ins):
    out = decode_response(resp)
    np.testing.assert_array_equal(out["OUTPUT0"], ins["INPUT0"] + ins["INPUT1"])
    np.testing.assert_array_equal(out["OUTPUT1"], ins["INPUT0"] - ins["INPUT1"])


def slow_request(seed=0, timeout_us=None, batch=1):
    """A JSON request for `slow` (INPUT0 FP32 [batch, 256]) and its input."""
    x = np.random.default_rng(seed).standard_normal((batch, 256)).astype(np.float32)
    doc = {"inputs": [json_tensor("INPUT0", x)]}
    if timeout_us is not None:
        doc["parameters"] = {"timeout": timeout_us}
    return doc, x


# ----------------------------------------------------------------- repos
def copy_models(src_repo, dst_repo, names):
    dst_repo = Path(dst_repo)
    dst_repo.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(Path(src_repo) / name, dst_repo / name)
    return dst_repo


# ---------------------------------------------------------------- metrics
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format -> (samples [(name, labels, value)], types {family: type})."""
    samples, types = [], {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3]
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparseable metrics line: {line!r}"
        labels = dict(_LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples, types


def metric_values(samples, name, **labels):
    return [v for n, lab, v in samples
            if n == name and all(lab.get(k) == str(x) for k, x in labels.items())]


def identity_or_skip(models_repo, kind):
    """bf16 may be missing (skipped only when its directory is absent); every
    other identity model is required."""
    import pytest
    if not (Path(models_repo) / f"identity_{kind}").is_dir():
        assert kind == "bf16", f"identity_{kind} missing from the test repository"
        pytest.skip("identity_bf16 was not generated")
