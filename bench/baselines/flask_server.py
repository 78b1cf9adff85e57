"""The paper's monolithic baseline: Flask + gunicorn + ONNX Runtime.

Every gunicorn worker (a separate process; 4 sync workers in the paper's
setup) loads every model of a model repository (DIR/<model>/<version>/
model.onnx, the highest version) into its own ONNX Runtime session with one
intra-op and one inter-op thread, and serves the subset of the Open Inference
Protocol (KServe v2) that a benchmark client needs:

  GET  /v2/health/live, /v2/health/ready        200 once the worker is up
  GET  /v2                                      server metadata
  GET  /v2/models/<m>[/versions/<v>]            model metadata (-1: dynamic dim)
  GET  /v2/models/<m>[/versions/<v>]/ready
  POST /v2/models/<m>[/versions/<v>]/infer      JSON `data` (flat or nested) and
                                                the binary tensor extension

Each request runs alone, with the batch the client sent: there is no batching
across requests and no queue but gunicorn's listen backlog.  That is the
point of the baseline.  Errors are {"error": "..."} with 400 (bad request or
a failed run) or 404 (unknown model).

Run (see README.md):
  .venv/bin/python -m gunicorn -w 4 -b 127.0.0.1:8000 \\
      'bench.baselines.flask_server:create_app("DIR")'
"""

import json
import os
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
from flask import Flask, Response, request

PLATFORM = "onnxruntime_onnx"
HEADER = "Inference-Header-Content-Length"

# ONNX Runtime's type strings <-> v2 datatypes <-> numpy
ORT_TO_V2 = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES", "tensor(bfloat16)": "BF16",
}
V2_TO_NP = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}
NP_TO_V2 = {np.dtype(t): name for name, t in V2_TO_NP.items()}


class ApiError(Exception):
    """An error answered as {"error": message} with an HTTP status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Model:
    """One ONNX model in one single-threaded ONNX Runtime session."""

    def __init__(self, name, version, path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.name, self.version = name, version
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: self._signature(i) for i in self.session.get_inputs()}
        self.outputs = {o.name: self._signature(o) for o in self.session.get_outputs()}

    @staticmethod
    def _signature(node):
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in node.shape]
        return {"name": node.name, "datatype": ORT_TO_V2.get(node.type, node.type), "shape": shape}

    def metadata(self):
        return {"name": self.name, "versions": [self.version], "platform": PLATFORM,
                "inputs": list(self.inputs.values()), "outputs": list(self.outputs.values())}


def load_repository(repo):
    """{name: Model} for every DIR/<name>/<numeric version>/model.onnx (highest version)."""
    models = {}
    for model_dir in sorted(Path(repo).iterdir()):
        versions = [int(v.name) for v in model_dir.glob("[0-9]*")
                    if v.name.isdigit() and (v / "model.onnx").is_file()] if model_dir.is_dir() else []
        if versions:
            v = max(versions)
            models[model_dir.name] = Model(model_dir.name, str(v), model_dir / str(v) / "model.onnx")
    return models


# --------------------------------------------------------------------------
# tensor encoding
# --------------------------------------------------------------------------

def _decode_bytes_tensor(raw):
    """The binary extension's BYTES encoding: each element a 4-byte LE length + bytes."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ApiError(400, "truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise ApiError(400, "truncated BYTES element")
        out.append(raw[pos:pos + n])
        pos += n
    return np.array(out, dtype=np.object_)


def _encode_bytes_tensor(array):
    parts = []
    for item in array.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode()
        parts += [struct.pack("<I", len(b)), b]
    return b"".join(parts)


def _check_shape(name, sig, shape):
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ApiError(400, f"input '{name}': shape must be a list of non-negative integers")
    want = sig["shape"]
    if len(shape) != len(want) or any(w >= 0 and w != s for w, s in zip(want, shape)):
        raise ApiError(400, f"input '{name}': shape {shape} does not match the model's {want}")


def decode_input(spec, sig, binary, pos):
    """The numpy array of one request input; returns (array, new binary offset)."""
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if datatype != sig["datatype"]:
        raise ApiError(400, f"input '{name}': datatype {datatype}, the model expects {sig['datatype']}")
    _check_shape(name, sig, shape)
    if datatype not in V2_TO_NP:
        raise ApiError(400, f"input '{name}': datatype {datatype} is not supported")
    count = int(np.prod(shape, dtype=np.int64))
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or pos + size > len(binary):
            raise ApiError(400, f"input '{name}': binary_data_size {size} exceeds the binary data")
        raw = binary[pos:pos + size]
        pos += size
        if datatype == "BYTES":
            array = _decode_bytes_tensor(raw)
        else:
            dtype = np.dtype(V2_TO_NP[datatype]).newbyteorder("<")
            if len(raw) != count * dtype.itemsize:
                raise ApiError(400, f"input '{name}': {len(raw)} bytes for shape {shape} "
                                    f"of {datatype} ({count * dtype.itemsize} expected)")
            array = np.frombuffer(raw, dtype=dtype)
    elif "data" in spec:
        try:
            if datatype == "BYTES":
                flat = np.array(spec["data"], dtype=np.object_).reshape(-1)
                if not all(isinstance(s, str) for s in flat):
                    raise ValueError("BYTES data must be strings")
                array = flat
            else:
                array = np.array(spec["data"], dtype=V2_TO_NP[datatype]).reshape(-1)
        except (TypeError, ValueError) as e:
            raise ApiError(400, f"input '{name}': bad data for {datatype}: {e}") from None
    else:
        raise ApiError(400, f"input '{name}': no data and no binary_data_size")
    if array.size != count:
        raise ApiError(400, f"input '{name}': {array.size} elements for shape {shape}")
    if datatype == "BYTES":  # ONNX Runtime takes str (it stores UTF-8)
        try:
            array = np.array([b.decode() if isinstance(b, bytes) else b for b in array],
                             dtype=np.object_)
        except UnicodeDecodeError as e:
            raise ApiError(400, f"input '{name}': BYTES element is not UTF-8: {e}") from None
    return array.reshape(shape), pos


def encode_output(name, array, binary):
    """The response entry of one output; returns (entry, bytes or None)."""
    entry = {"name": name, "datatype": NP_TO_V2[array.dtype], "shape": list(array.shape)}
    if binary:
        raw = (_encode_bytes_tensor(array) if array.dtype == object
               else np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes())
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    if array.dtype == object:
        entry["data"] = [b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)
                         for b in array.reshape(-1)]
    else:
        entry["data"] = array.reshape(-1).tolist()
    return entry, None


# --------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------

def infer(model, body, header_length):
    """Run one v2 infer request; returns (response header dict, binary chunks)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ApiError(400, f"bad {HEADER}: {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise ApiError(400, f"{HEADER} {n} is outside the body ({len(body)} bytes)")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        req = json.loads(head)
    except ValueError as e:
        raise ApiError(400, f"request is not valid JSON: {e}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise ApiError(400, "request must be an object with an 'inputs' list")
    feeds, pos = {}, 0
    for spec in req["inputs"]:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in model.inputs:
            raise ApiError(400, f"unknown input '{name}' for model '{model.name}'")
        if name in feeds:
            raise ApiError(400, f"input '{name}' given twice")
        feeds[name], pos = decode_input(spec, model.inputs[name], binary, pos)
    missing = [n for n in model.inputs if n not in feeds]
    if missing:
        raise ApiError(400, f"missing inputs {missing} for model '{model.name}'")
    default_binary = bool((req.get("parameters") or {}).get("binary_data_output", False))
    wanted = req.get("outputs") or [{"name": n} for n in model.outputs]
    names, as_binary = [], []
    for out in wanted:
        name = out.get("name") if isinstance(out, dict) else None
        if name not in model.outputs:
            raise ApiError(400, f"unknown output '{name}' for model '{model.name}'")
        names.append(name)
        as_binary.append(bool((out.get("parameters") or {}).get("binary_data", default_binary)))
    try:
        results = model.session.run(names, feeds)
    except Exception as e:  # ORT rejects bad values (e.g. out-of-range indices)
        raise ApiError(400, f"inference failed: {e}") from None
    response = {"model_name": model.name, "model_version": model.version, "outputs": []}
    if "id" in req:
        response["id"] = req["id"]
    chunks = []
    for name, array, binary_out in zip(names, results, as_binary):
        entry, raw = encode_output(name, np.asarray(array), binary_out)
        response["outputs"].append(entry)
        if raw is not None:
            chunks.append(raw)
    return response, chunks


def create_app(model_repository=None):
    """The WSGI app over MODEL_REPOSITORY (default: $MLSERVE_BASELINE_REPO)."""
    repo = model_repository or os.environ.get("MLSERVE_BASELINE_REPO")
    if not repo or not Path(repo).is_dir():
        raise SystemExit(f"flask_server: model repository {repo!r} is not a directory")
    models = load_repository(repo)
    if not models:
        raise SystemExit(f"flask_server: no DIR/<model>/<version>/model.onnx under {repo}")
    app = Flask("mlserve-flask-baseline")

    def model_or_404(name, version=None):
        model = models.get(name)
        if model is None or (version is not None and version != model.version):
            raise ApiError(404, f"unknown model '{name}'" + (f" version {version}" if version else ""))
        return model

    @app.errorhandler(ApiError)
    def api_error(e):
        return {"error": str(e)}, e.status

    @app.errorhandler(404)
    def not_found(_):
        return {"error": f"no route {request.method} {request.path}"}, 404

    @app.errorhandler(405)
    def bad_method(_):
        return {"error": f"method {request.method} not allowed on {request.path}"}, 405

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    def health():
        return Response(status=200)

    @app.get("/v2")
    def server_metadata():
        return {"name": "mlserve-flask-baseline", "version": "1",
                "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<version>")
    def model_metadata(name, version=None):
        return model_or_404(name, version).metadata()

    @app.get("/v2/models/<name>/ready")
    @app.get("/v2/models/<name>/versions/<version>/ready")
    def model_ready(name, version=None):
        model_or_404(name, version)
        return Response(status=200)

    @app.post("/v2/models/<name>/infer")
    @app.post("/v2/models/<name>/versions/<version>/infer")
    def model_infer(name, version=None):
        model = model_or_404(name, version)
        response, chunks = infer(model, request.get_data(cache=False), request.headers.get(HEADER))
        head = json.dumps(response, separators=(",", ":")).encode()
        if not chunks:
            return Response(head, status=200, mimetype="application/json")
        return Response(b"".join([head, *chunks]), status=200,
                        mimetype="application/octet-stream", headers={HEADER: str(len(head))})

    app.config["MODELS"] = models
    return app
