"""Scopes on every gateway route kind, in both topologies, auth on: each
credential (API keys from `mlserve keys create --scope`, JWTs with a scopes
claim) is allowed where its scopes reach and refused elsewhere with 403 (gRPC
PERMISSION_DENIED) naming the missing scope. "Allowed" means the scope check
passed: the answer is whatever the route gives that request (a 404 for an
unknown pipeline, a 400 for a bad canary body), never a 403."""

import base64
import hashlib
import hmac
import json
import subprocess
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from helpers import copy_models, get, post, simple_inputs, simple_json
from server import REPO_ROOT, server_binary
from topology import TOPOLOGIES, start_topology

JWT_SECRET = "e2e-scopes-jwt-secret-of-32-bytes-or-more"

# route kind -> (method, path, body): each request is harmless whatever it
# answers (no split changes, no model loaded).
ROUTES = {
    "infer simple": ("POST", "/v2/models/simple/infer", simple_json(1, seed=1)[0]),
    "infer other": ("POST", "/v2/models/identity_fp32/infer",
                    {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}),
    "model metadata": ("GET", "/v2/models/simple", None),
    "model ready": ("GET", "/v2/models/simple/ready", None),
    "model config": ("GET", "/v2/models/simple/config", None),
    "model stats": ("GET", "/v2/models/simple/stats", None),
    "server metadata": ("GET", "/v2", None),
    "repository index": ("POST", "/v2/repository/index", {}),
    "repository load": ("POST", "/v2/repository/models/no_such_model/load", {}),
    "predict": ("POST", "/v1/models/no_such_pipeline:predict", {"rows": [{"x": 1}]}),
    "canary change": ("POST", "/v1/gateway/canary/simple", {"action": "nonsense"}),
}

# scopes held -> the route kinds they reach; every other kind is refused.
GRANTS = {
    "infer": {"infer simple", "infer other", "model metadata", "model ready", "model config",
              "model stats", "server metadata", "repository index"},
    "infer:simple": {"infer simple", "model metadata", "model ready", "model config", "model stats",
                     "server metadata", "repository index"},
    "predict": {"predict"},
    "rollouts:admin": {"canary change"},
    "registry:write": {"repository load"},
    "features:read,keys:admin": set(),
}

MISSING = {"infer simple": "infer", "infer other": "infer:identity_fp32", "predict": "'predict'",
           "canary change": "'rollouts:admin'", "repository load": "'registry:write'"}


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topo(request, models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("scope_models"), ["simple", "identity_fp32"])
    t = start_topology(request.param, repo, tmp_path_factory.mktemp("scope_data"), "--auth", "on",
                       env={"MLSERVE_GATEWAY__JWT__HS256_SECRET": JWT_SECRET})
    yield t
    t.stop()


@pytest.fixture(scope="module")
def keys(topo):
    """One key per entry of GRANTS."""
    return {scopes: topo.keys("create", "--name", f"scoped-{i}", "--scope", scopes).strip()
            for i, scopes in enumerate(GRANTS)}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def jwt(claims):
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    signed = enc(b'{"alg":"HS256","typ":"JWT"}') + "." + enc(json.dumps(claims).encode())
    sig = hmac.new(JWT_SECRET.encode(), signed.encode(), hashlib.sha256).digest()
    return signed + "." + enc(sig)


def call(topo, kind, token):
    method, path, body = ROUTES[kind]
    port = topo.gateway.gateway_http_port
    if method == "GET":
        return get(port, path, headers=bearer(token))
    return post(port, path, body, headers=bearer(token))


def test_every_scope_on_every_route_kind(topo, keys):
    seen = []
    for scopes, reach in GRANTS.items():
        for kind in ROUTES:
            r = call(topo, kind, keys[scopes])
            seen.append((scopes, kind, r.status))
            if kind in reach:
                assert r.status != 403, f"{scopes} was refused {kind}: {r}"
            else:
                assert r.status == 403, f"{scopes} reached {kind}: {r}"
                message = r.error()
                assert "lacks the scope" in message, message
                if kind in MISSING:
                    assert MISSING[kind] in message, message
    # Allowed requests were served, not merely let through.
    allowed = {(s, k): st for s, k, st in seen}
    assert allowed[("infer", "infer simple")] == 200
    assert allowed[("infer:simple", "infer simple")] == 200
    assert allowed[("infer", "infer other")] == 200
    assert allowed[("rollouts:admin", "canary change")] == 400
    assert allowed[("predict", "predict")] == 404


def test_a_key_without_scopes_given_gets_infer_and_predict(topo):
    key = topo.keys("create", "--name", "default-scopes").strip()
    assert call(topo, "infer simple", key).status == 200
    assert call(topo, "predict", key).status == 404
    assert call(topo, "canary change", key).status == 403
    listed = [json.loads(line) for line in topo.keys("list").splitlines()]
    assert {k["name"]: k["scopes"] for k in listed}["default-scopes"] == ["infer", "predict"]


def test_unknown_scopes_are_refused_by_the_cli(topo):
    env = dict(__import__("os").environ, **topo.env)
    proc = subprocess.run([str(server_binary()), "keys", "create", "--name", "bad", "--scope", "admin"],
                          cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "unknown scope 'admin'" in proc.stderr, proc.stderr


def test_jwt_scopes_come_from_the_scope_claim(topo):
    exp = int(time.time()) + 600
    reader = jwt({"sub": "reader", "exp": exp, "scope": "openid infer:simple"})
    assert call(topo, "infer simple", reader).status == 200
    assert call(topo, "infer other", reader).status == 403
    assert call(topo, "canary change", reader).status == 403
    operator = jwt({"sub": "ops", "exp": exp, "scope": "rollouts:admin"})
    assert call(topo, "canary change", operator).status == 400
    assert call(topo, "infer simple", operator).status == 403
    plain = jwt({"sub": "plain", "exp": exp})
    assert call(topo, "infer simple", plain).status == 200, "no claim: infer and predict"
    assert call(topo, "canary change", plain).status == 403


def grpc_bearer(token):
    return {"authorization": f"Bearer {token}"}


def test_grpc_refuses_with_permission_denied(topo, keys):
    client = grpcclient.InferenceServerClient(topo.grpc_url)
    ins = simple_inputs(2, seed=5)
    inputs = []
    for name, arr in ins.items():
        t = grpcclient.InferInput(name, arr.shape, "INT32")
        t.set_data_from_numpy(arr)
        inputs.append(t)
    allowed = client.infer("simple", inputs, headers=grpc_bearer(keys["infer:simple"]), client_timeout=30)
    np.testing.assert_array_equal(allowed.as_numpy("OUTPUT0"), ins["INPUT0"] + ins["INPUT1"])
    assert client.get_model_metadata("simple", headers=grpc_bearer(keys["infer:simple"])).name == "simple"
    for key, model in ((keys["predict"], "simple"), (keys["infer:simple"], "identity_fp32")):
        with pytest.raises(InferenceServerException) as err:
            client.get_model_metadata(model, headers=grpc_bearer(key))
        assert "PERMISSION_DENIED" in str(err.value.status()), err.value
        assert "lacks the scope" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", inputs, headers=grpc_bearer(keys["predict"]), client_timeout=30)
    assert "PERMISSION_DENIED" in str(err.value.status())
    with pytest.raises(InferenceServerException) as err:
        client.load_model("no_such_model", headers=grpc_bearer(keys["infer"]))
    assert "PERMISSION_DENIED" in str(err.value.status())
    assert "registry:write" in err.value.message()
