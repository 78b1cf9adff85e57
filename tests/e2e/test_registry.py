"""The registry role against the real binary, over REST: the same suite on
SQLite with a local artifact directory and on PostgreSQL with a real S3
server (s3s-fs, built by scripts/setup.sh); bad input (each a 4xx naming
the problem, nothing half-written); crash safety (a failure injected between
the artifact write and the version commit leaves no visible version and the
orphan is collected); 16 clients moving and reading one alias."""

import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from helpers import get, http_request, post, wait_until
from server import REPO_ROOT, Server

S3S_FS = Path(os.environ.get("MLSERVE_S3S_FS", REPO_ROOT / ".tools" / "bin" / "s3s-fs"))
S3_KEY, S3_SECRET, BUCKET = "mlserve-test", "mlserve-test-secret", "mlserve-test"
PG_URL = os.environ.get("MLSERVE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
MAX_UPLOAD = 1024 * 1024


# ------------------------------------------------------------------ models
def tiny_model(k=1.0, external=None):
    """Y = X + k; with `external`, the constant is stored as external data
    at that location. Returns {path: bytes} of the version's files."""
    weight = numpy_helper.from_array(np.full([4], k, dtype=np.float32), "k")
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "k"], ["Y"])], "plus",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if external is None:
        return {"model.onnx": model.SerializeToString()}
    raw = model.graph.initializer[0].raw_data
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in [("location", external), ("offset", "0"), ("length", str(len(raw)))]:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return {"model.onnx": model.SerializeToString(), "weights.bin": raw}


def sha(data):
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ REST
def multipart(files, metadata=None):
    boundary = uuid.uuid4().hex
    body = b""
    if metadata is not None:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
                 f"Content-Type: application/json\r\n\r\n{json.dumps(metadata)}\r\n").encode()
    for path, data in files.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                 f"filename=\"{path}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(port, name, files, metadata=None, user=None):
    body, headers = multipart(files, metadata)
    if user:
        headers["X-Mlserve-User"] = user
    return http_request(port, "POST", f"/v1/registry/models/{name}/versions", body=body,
                        headers=headers)


def set_alias(port, name, alias, version, user=None):
    headers = {"X-Mlserve-User": user} if user else None
    return http_request(port, "PUT", f"/v1/registry/models/{name}/aliases/{alias}",
                        body={"version": version}, headers=headers)


def versions(port, name):
    r = get(port, f"/v1/registry/models/{name}/versions")
    assert r.status == 200, str(r)
    return [v["version"] for v in r.json()["versions"]]


# ------------------------------------------------------------------ backends
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    """An s3s-fs process with one bucket, on a free port."""

    def __init__(self, root, bucket=BUCKET, key=S3_KEY, secret=S3_SECRET):
        if not S3S_FS.exists():
            pytest.fail(f"{S3S_FS} is missing: run scripts/setup.sh (it builds s3s-fs)")
        self.root = root
        (root / bucket).mkdir(parents=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(S3S_FS), "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", key, "--secret-key", secret, str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(listening, 20, "s3s-fs did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def postgres_schema():
    """A fresh schema in the test database; its URL."""
    schema = f"reg_{uuid.uuid4().hex[:12]}"
    proc = subprocess.run(["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-c",
                           f"CREATE SCHEMA {schema}"], capture_output=True, text=True)
    assert proc.returncode == 0, f"PostgreSQL is required at {PG_URL}: {proc.stderr}"
    return f"{PG_URL}?options=-c%20search_path%3D{schema}"


class Backend:
    """Where a registry keeps its state, and how to count its stored objects."""

    def __init__(self, kind, tmp):
        self.kind, self.tmp, self.s3 = kind, tmp, None
        self.env = {"MLSERVE_SERVER__DATA_DIR": str(tmp / "data"),
                    "MLSERVE_REGISTRY__MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}
        if kind == "postgres-s3":
            self.s3 = S3(tmp / "s3")
            self.env.update({
                "MLSERVE_REGISTRY__DATABASE_URL": postgres_schema(),
                "MLSERVE_REGISTRY__ARTIFACT_BACKEND": "s3",
                "MLSERVE_REGISTRY__S3_ENDPOINT": f"http://127.0.0.1:{self.s3.port}",
                "MLSERVE_REGISTRY__S3_BUCKET": BUCKET,
                "MLSERVE_REGISTRY__S3_ALLOW_HTTP": "true",
                "MLSERVE_REGISTRY__KEY_PREFIX": "mlserve",
                "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            })

    def objects(self):
        """Every stored artifact object (relative paths)."""
        if self.s3:
            base = self.s3.root / BUCKET / "mlserve" / "models"
        else:
            base = self.tmp / "data" / "artifacts" / "models"
        if not base.exists():
            return []
        return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                      if p.is_file() and "#" not in p.name)

    def start(self, *args, env=None):
        repo = self.tmp / "repo"
        repo.mkdir(exist_ok=True)
        server = Server(ready_path="/v1/registry/models")
        return server.start(repo, "--role", "registry", *args, env={**self.env, **(env or {})})

    def close(self):
        if self.s3:
            self.s3.stop()


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
def backend(request, tmp_path):
    b = Backend(request.param, tmp_path)
    yield b
    b.close()


@pytest.fixture
def registry(backend):
    server = backend.start()
    yield server
    server.stop()


# ------------------------------------------------------------------ suite
def test_rest_suite(registry, backend):
    port = registry.http_port
    r = post(port, "/v1/registry/models",
             {"name": "plus", "description": "Adds a constant", "tags": {"team": "ml"}})
    assert r.status == 201, str(r)
    assert r.json()["name"] == "plus" and r.json()["latest_version"] == 0
    for name in ["bert", "tabular"]:
        assert post(port, "/v1/registry/models", {"name": name}).status == 201

    files = tiny_model(2.0, external="weights.bin")
    files["config.toml"] = b'max_batch_size = 0\n'
    metadata = {"description": "first", "metrics": {"accuracy": 0.91},
                "tags": {"stage": "test"},
                "lineage": {"training_run": "run-1", "dataset_snapshot": "ds-3",
                            "code_version": "abc123"},
                "sha256": {p: sha(d) for p, d in files.items()}}
    r = upload(port, "plus", files, metadata, user="alice")
    assert r.status == 201, str(r)
    v1 = r.json()
    # A header naming a user is a claim, not an identity: ignored (the
    # gateway's authenticated caller is recorded, test_no_open_door.py).
    assert v1["version"] == 1 and v1["status"] == "ready" and v1["created_by"] == "anonymous"
    assert v1["metrics"] == {"accuracy": 0.91} and v1["lineage"]["code_version"] == "abc123"
    assert {f["path"]: (f["sha256"], f["size"]) for f in v1["files"]} == \
        {p: (sha(d), len(d)) for p, d in files.items()}
    for path, data in files.items():
        r = get(port, f"/v1/registry/models/plus/versions/1/files/{path}")
        assert r.status == 200 and r.body == data, path
        assert r.headers["x-mlserve-sha256"] == sha(data)

    r = upload(port, "plus", tiny_model(3.0))
    assert r.status == 201, str(r)
    assert r.json()["created_by"] == "anonymous"
    assert versions(port, "plus") == [2, 1]
    page = get(port, "/v1/registry/models/plus/versions?limit=1").json()
    assert [v["version"] for v in page["versions"]] == [2]
    rest = get(port, f"/v1/registry/models/plus/versions?limit=1&page_token={page['next_page_token']}")
    assert [v["version"] for v in rest.json()["versions"]] == [1]

    # Models: get, search, tag filter, pagination, update.
    model = get(port, "/v1/registry/models/plus").json()
    assert model["latest_version"] == 2 and model["tags"] == {"team": "ml"}
    found = get(port, "/v1/registry/models?query=CONSTANT").json()["models"]
    assert [m["name"] for m in found] == ["plus"]
    assert [m["name"] for m in get(port, "/v1/registry/models?tags=team=ml").json()["models"]] \
        == ["plus"]
    first = get(port, "/v1/registry/models?limit=2").json()
    assert [m["name"] for m in first["models"]] == ["bert", "plus"]
    second = get(port, f"/v1/registry/models?limit=2&page_token={first['next_page_token']}").json()
    assert [m["name"] for m in second["models"]] == ["tabular"] and second["next_page_token"] == ""
    r = http_request(port, "PATCH", "/v1/registry/models/plus",
                     body={"description": "new", "set_tags": {"owner": "bob"},
                           "remove_tags": ["team"]})
    assert r.status == 200 and r.json()["tags"] == {"owner": "bob"}, str(r)
    r = http_request(port, "PATCH", "/v1/registry/models/plus/versions/1",
                     body={"set_tags": {"approved": "yes"}})
    assert r.status == 200 and r.json()["tags"] == {"stage": "test", "approved": "yes"}, str(r)

    # Aliases: set, move, get with its version, list, delete, history.
    assert set_alias(port, "plus", "production", 1, user="alice").status == 200
    r = set_alias(port, "plus", "production", 2, user="bob")
    assert r.status == 200 and (r.json()["from_version"], r.json()["to_version"]) == (1, 2)
    alias = get(port, "/v1/registry/models/plus/aliases/production").json()
    assert alias["version"] == 2 and alias["model_version"]["version"] == 2
    assert alias["updated_by"] == "anonymous"
    assert set_alias(port, "plus", "staging", 1).status == 200
    aliases = get(port, "/v1/registry/models/plus/aliases").json()["aliases"]
    assert [(a["alias"], a["version"]) for a in aliases] == [("production", 2), ("staging", 1)]
    r = http_request(port, "DELETE", "/v1/registry/models/plus/aliases/staging",
                     headers={"X-Mlserve-User": "carol"})
    assert r.status == 200 and r.json()["to_version"] is None, str(r)
    assert get(port, "/v1/registry/models/plus/aliases/staging").status == 404
    moves = get(port, "/v1/registry/models/plus/alias-history").json()["moves"]
    assert [(m["alias"], m["from_version"], m["to_version"], m["actor"]) for m in moves] == [
        ("production", None, 1, "anonymous"), ("production", 1, 2, "anonymous"),
        ("staging", None, 1, "anonymous"), ("staging", 1, None, "anonymous")]
    only = get(port, "/v1/registry/models/plus/alias-history?alias=production&limit=1").json()
    assert len(only["moves"]) == 1 and only["next_page_token"]
    assert get(port, "/v1/registry/models/plus").json()["aliases"] == {"production": 2}

    # Deleting a model removes its versions, aliases and objects.
    assert len(backend.objects()) == 4
    assert http_request(port, "DELETE", "/v1/registry/models/plus").status == 204
    assert get(port, "/v1/registry/models/plus").status == 404
    assert get(port, "/v1/registry/models/plus/versions/1/files/model.onnx").status == 404
    wait_until(lambda: backend.objects() == [], 10, "objects of a deleted model remain")


# ------------------------------------------------------------------ bad input
def test_bad_input_is_refused_with_a_reason_and_leaves_nothing(registry, backend):
    port = registry.http_port
    for name in ["..", "a b", "-x", "x" * 129, "", "é", "a/b"]:
        r = post(port, "/v1/registry/models", {"name": name})
        assert r.status == 400 and "invalid model name" in r.error(), (name, str(r))
    assert post(port, "/v1/registry/models", {"name": "m"}).status == 201
    r = post(port, "/v1/registry/models", {"name": "m"})
    assert r.status == 409 and "already exists" in r.error()
    assert get(port, "/v1/registry/models/..%2Fetc").status == 400
    assert get(port, "/v1/registry/models/nope").status == 404
    r = post(port, "/v1/registry/models", b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.error()
    assert upload(port, "m", tiny_model()).status == 201
    before = backend.objects()
    assert len(before) == 1

    good = tiny_model()["model.onnx"]
    escaping = tiny_model(external="../../etc/passwd")
    absolute = tiny_model(external="/etc/passwd")
    cases = [
        ({"model.onnx": good}, {"sha256": {"model.onnx": "0" * 64}}, 400, "checksum mismatch"),
        ({"model.onnx": good, "../evil.bin": b"x"}, None, 400, "path traversal"),
        ({"model.onnx": good, "/etc/passwd": b"x"}, None, 400, "invalid file path"),
        ({"model.onnx": escaping["model.onnx"], "weights.bin": escaping["weights.bin"]}, None,
         400, "escapes the version"),
        ({"model.onnx": absolute["model.onnx"]}, None, 400, "escapes the version"),
        ({"model.onnx": good, "big.bin": os.urandom(MAX_UPLOAD + 1)}, None, 413,
         "exceeds the limit"),
        ({"model.onnx": b"definitely not onnx"}, None, 400, "not a valid ONNX model"),
        ({"model.onnx": good, "model.pkl": b"\x80\x04K\x01."}, None, 400, "pickle"),
        ({"model.onnx": good, "weights.npz": b"\x80\x04K\x01."}, None, 400, "pickle"),
        ({"model.onnx": good, "run": b"#!/bin/sh\necho hi\n"}, None, 400, "shebang"),
        ({"model.onnx": good, "lib": b"\x7fELF\x02\x01\x01\x00"}, None, 400, "ELF"),
        ({"model.onnx": good, "bundle.tar": b"x"}, None, 400, "archives are not accepted"),
        ({"labels.txt": b"cat\n"}, None, 400, "must contain 'model.onnx'"),
    ]
    for files, metadata, status, reason in cases:
        r = upload(port, "m", files, metadata)
        assert r.status == status and reason in r.error(), (reason, str(r))
        assert versions(port, "m") == [1], reason
        assert backend.objects() == before, reason
    r = http_request(port, "POST", "/v1/registry/models/m/versions", body=b"raw",
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status == 400 and "multipart" in r.error(), str(r)
    r = upload(port, "nope", {"model.onnx": good})
    assert r.status == 404 and "nope" in r.error()
    r = set_alias(port, "m", "production", 7)
    assert r.status == 404 and "version 7" in r.error(), str(r)
    r = set_alias(port, "m", "42", 1)
    assert r.status == 400 and "cannot be a number" in r.error()
    r = http_request(port, "PUT", "/v1/registry/models/m/aliases/production", body={"v": 1})
    assert r.status == 400, str(r)
    assert get(port, "/v1/registry/models/m/versions/zero").status == 400
    assert get(port, "/v1/registry/models/m/versions/1/files/..%2F..%2Fetc%2Fpasswd").status == 400
    assert get(port, "/v1/registry/models/m/alias-history").json()["moves"] == []
    assert versions(port, "m") == [1]
    metrics = get(registry.metrics_port, "/metrics").body.decode()
    assert "mlserve_registry_versions_created_total 1\n" in metrics, metrics
    assert 'mlserve_registry_uploads_refused_total{code="payload_too_large"} 1\n' in metrics
    assert 'mlserve_registry_uploads_refused_total{code="bad_request"} 12\n' in metrics, metrics


# ------------------------------------------------------------------ crash safety
def test_a_crash_between_write_and_commit_leaves_no_version_and_the_orphan_is_collected(backend):
    crashing = backend.start(env={"MLSERVE_REGISTRY__FAULT": "crash_before_commit"})
    port = crashing.http_port
    assert post(port, "/v1/registry/models", {"name": "m"}).status == 201
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        upload(port, "m", tiny_model(external="weights.bin"))
    crashing.wait(10)
    assert not crashing.running()
    assert "fault injection" in crashing.log
    written = backend.objects()
    assert len(written) == 2, written

    restarted = backend.start(env={"MLSERVE_REGISTRY__GC_GRACE": "0s"})
    try:
        port = restarted.http_port
        assert versions(port, "m") == []
        assert get(port, "/v1/registry/models/m/versions/1").status == 404
        assert get(port, "/v1/registry/models/m").json()["latest_version"] == 0
        wait_until(lambda: backend.objects() == [], 20, "the orphan objects were not collected")
        # The next upload works and gets a fresh number; the crashed one stays invisible.
        r = upload(port, "m", tiny_model())
        assert r.status == 201, str(r)
        assert versions(port, "m") == [r.json()["version"]]
    finally:
        restarted.stop()


# ------------------------------------------------------------------ concurrency
def test_sixteen_clients_moving_and_reading_one_alias(registry):
    port = registry.http_port
    assert post(port, "/v1/registry/models", {"name": "m"}).status == 201
    for k in range(4):
        assert upload(port, "m", tiny_model(float(k))).status == 201
    assert set_alias(port, "m", "production", 1, user="init").status == 200
    set_versions = {1}
    moves, seen, errors = [], [], []
    lock = threading.Lock()

    def mover(i):
        rng = random.Random(i)
        for _ in range(15):
            v = rng.randint(1, 4)
            with lock:
                set_versions.add(v)
            r = set_alias(port, "m", "production", v, user=f"mover-{i}")
            if r.status != 200:
                errors.append(str(r))
                continue
            with lock:
                moves.append(r.json())

    def reader():
        for _ in range(30):
            r = get(port, "/v1/registry/models/m/aliases/production")
            if r.status != 200:
                errors.append(str(r))
                continue
            doc = r.json()
            if doc["version"] != doc["model_version"]["version"]:
                errors.append(f"alias and its version disagree: {doc}")
            seen.append(doc["version"])

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(moves) == 8 * 15 and len(seen) == 8 * 30
    assert set(seen) <= set_versions, f"read {set(seen) - set_versions}, never set"

    history, token = [], ""
    while True:
        page = get(port, f"/v1/registry/models/m/alias-history?alias=production&limit=50"
                         f"&page_token={token}").json()
        history += page["moves"]
        token = page["next_page_token"]
        if not token:
            break
    assert len(history) == 1 + len(moves)
    # Moves are atomic: each starts where the previous one ended.
    for before, after in zip(history, history[1:]):
        assert after["from_version"] == before["to_version"], (before, after)
    assert sorted(m["id"] for m in moves) == sorted(m["id"] for m in history[1:])
    final = get(port, "/v1/registry/models/m/aliases/production").json()["version"]
    assert final == history[-1]["to_version"]
