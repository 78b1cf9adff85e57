"""The gateway in both topologies (one all-in-one process; two inference
processes and a gateway process on loopback), auth on: the Open Inference
Protocol through the gateway with tritonclient unchanged (HTTP and gRPC),
auth failures, rate limits and their headers, the canary split over 1000
requests, body limits and deadlines."""

import base64
import hashlib
import hmac
import json
import math
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers import (check_simple, copy_models, get, post, raw_http, simple_inputs, simple_json,
                     slow_request)
from topology import TOPOLOGIES, start_topology

JWT_SECRET = "e2e-jwt-secret-of-at-least-32-bytes"
MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def gateway_repo(models_repo, tmp_path_factory):
    """simple and slow, plus `canary`: identity_fp32 served as versions 1 and 2."""
    repo = copy_models(models_repo, tmp_path_factory.mktemp("gw_models"), ["simple", "slow"])
    src = Path(models_repo) / "identity_fp32"
    dst = repo / "canary"
    for version in ("1", "2"):
        (dst / version).mkdir(parents=True)
        (dst / version / "model.onnx").write_bytes((src / "1" / "model.onnx").read_bytes())
    config = (src / "config.toml").read_text().replace("latest = { num_versions = 1 }", "all = {}")
    (dst / "config.toml").write_text(config)
    return repo


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topo(request, gateway_repo, tmp_path_factory):
    env = {"MLSERVE_GATEWAY__JWT__HS256_SECRET": JWT_SECRET,
           "MLSERVE_SERVER__HTTP_MAX_BODY_BYTES": str(MAX_BODY)}
    t = start_topology(request.param, gateway_repo, tmp_path_factory.mktemp("gw_data"),
                       "--auth", "on", env=env)
    yield t
    t.stop()


@pytest.fixture(scope="module")
def key(topo):
    """An unlimited API key that may also change canary splits."""
    return topo.keys("create", "--name", "e2e-admin", "--scope", "infer,predict,rollouts:admin").strip()


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def port(topo):
    return topo.gateway.gateway_http_port


def jwt(claims, secret=JWT_SECRET):
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    signed = enc(b'{"alg":"HS256","typ":"JWT"}') + "." + enc(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return signed + "." + enc(sig)


def test_probes_need_no_credentials(topo):
    assert get(port(topo), "/v2/health/ready").status == 200
    assert get(port(topo), "/v2/health/live").status == 200


def triton_inputs(module, arrays):
    """tritonclient InferInputs (http or grpc module) of INT32 arrays."""
    inputs = []
    for name, arr in arrays.items():
        t = module.InferInput(name, arr.shape, "INT32")
        t.set_data_from_numpy(arr)
        inputs.append(t)
    return inputs


def test_v2_http_through_the_gateway_with_tritonclient(topo, key):
    client = httpclient.InferenceServerClient(topo.http_url)
    ins = simple_inputs(2, seed=3)
    inputs = triton_inputs(httpclient, ins)
    result = client.infer("simple", inputs, headers=auth(key))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ins["INPUT0"] + ins["INPUT1"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), ins["INPUT0"] - ins["INPUT1"])
    assert client.is_model_ready("simple", headers=auth(key))
    assert client.get_model_metadata("simple", headers=auth(key))["name"] == "simple"


def test_v2_grpc_through_the_gateway_with_tritonclient(topo, key):
    client = grpcclient.InferenceServerClient(topo.grpc_url)
    ins = simple_inputs(3, seed=4)
    inputs = triton_inputs(grpcclient, ins)
    result = client.infer("simple", inputs, headers={"authorization": f"Bearer {key}"}, client_timeout=30)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ins["INPUT0"] + ins["INPUT1"])
    assert client.is_server_ready(), "readiness needs no credentials"
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", inputs)
    assert "UNAUTHENTICATED" in str(err.value.status())
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", inputs, headers={"apikey": key[:-1] + "0" if key[-1] != "0" else key[:-1] + "1"})
    assert "UNAUTHENTICATED" in str(err.value.status())


def test_auth_failures_are_401_with_a_challenge(topo, key):
    body, ins = simple_json(1)
    now = int(time.time())
    cases = {
        "no credential": {},
        "unknown key": auth("mlsk_000000000000_" + "0" * 64),
        "malformed key": {"apikey": "mlsk_nope"},
        "expired jwt": auth(jwt({"sub": "svc", "exp": now - 60})),
        "jwt not yet valid": auth(jwt({"sub": "svc", "exp": now + 600, "nbf": now + 300})),
        "jwt with the wrong secret": auth(jwt({"sub": "svc", "exp": now + 600}, secret="other")),
        "garbage": auth("a.b.c"),
    }
    for what, headers in cases.items():
        r = post(port(topo), "/v2/models/simple/infer", body, headers=headers)
        assert r.status == 401, f"{what}: {r}"
        assert r.headers.get("www-authenticate", "").startswith("Bearer"), what
        r.error()
    for headers in (auth(key), {"apikey": key}, auth(jwt({"sub": "svc", "exp": now + 600}))):
        r = post(port(topo), "/v2/models/simple/infer", body, headers=headers)
        assert r.status == 200, r
        check_simple(r, ins)


def test_rate_limits_answer_429_with_headers(topo):
    limited = topo.keys("create", "--name", f"limited-{uuid.uuid4().hex[:6]}", "--rate", "0.05", "--burst", "3").strip()
    body, _ = simple_json(1)
    seen = []
    for _ in range(3):
        r = post(port(topo), "/v2/models/simple/infer", body, headers=auth(limited))
        assert r.status == 200, r
        assert r.headers["ratelimit-limit"] == "3"
        seen.append(int(r.headers["ratelimit-remaining"]))
        assert int(r.headers["ratelimit-reset"]) > 0
    assert seen == [2, 1, 0]
    r = post(port(topo), "/v2/models/simple/infer", body, headers=auth(limited))
    assert r.status == 429, r
    assert "rate limit" in r.error()
    assert r.headers["ratelimit-remaining"] == "0"
    assert int(r.headers["retry-after"]) >= 1
    # Another caller is not affected.
    other = topo.keys("create", "--name", f"other-{uuid.uuid4().hex[:6]}", "--rate", "0.05", "--burst", "3").strip()
    assert post(port(topo), "/v2/models/simple/infer", body, headers=auth(other)).status == 200


def canary_infer(conn_port, key, request_id):
    x = np.ones((1, 4), dtype=np.float32)
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]}
    return post(conn_port, "/v2/models/canary/infer", body, headers={**auth(key), "X-Request-Id": request_id})


def test_canary_split_proportions_determinism_promote_rollback(topo, key):
    p = port(topo)
    split = {"action": "set", "stable": "1", "canary": "2", "weight": 0.2}
    r = post(p, "/v1/gateway/canary/canary", split, headers=auth(key))
    assert r.status == 200, r
    assert r.json()["weight"] == 0.2
    n, canary = 1000, 0
    for i in range(n):
        r = canary_infer(p, key, f"req-{uuid.uuid4()}")
        assert r.status == 200, r
        version = r.headers["x-mlserve-model-version"]
        assert version == r.json()["model_version"]
        canary += version == "2"
    sigma = math.sqrt(n * 0.2 * 0.8)
    assert abs(canary - 200) < 5 * sigma, f"{canary} of {n} went to the canary"
    first = {rid: canary_infer(p, key, rid).headers["x-mlserve-model-version"] for rid in (f"fixed-{i}" for i in range(20))}
    again = {rid: canary_infer(p, key, rid).headers["x-mlserve-model-version"] for rid in first}
    assert first == again, "the same request id always lands on the same version"
    # Over gRPC the split follows the OIP request id.
    client = grpcclient.InferenceServerClient(topo.grpc_url)
    x = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    grpc_auth = {"authorization": f"Bearer {key}"}

    def grpc_version(rid):
        return client.infer("canary", [x], request_id=rid, headers=grpc_auth).get_response().model_version

    by_id = {f"g-{i}": grpc_version(f"g-{i}") for i in range(200)}
    assert 40 - 5 * 5.66 < sum(v == "2" for v in by_id.values()) < 40 + 5 * 5.66, by_id
    assert all(grpc_version(rid) == v for rid, v in list(by_id.items())[:20])
    # An explicit version bypasses the split.
    r = post(p, "/v2/models/canary/versions/1/infer",
             {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}, headers=auth(key))
    assert r.status == 200 and r.json()["model_version"] == "1"

    r = post(p, "/v1/gateway/canary/canary", {"action": "promote"}, headers=auth(key))
    assert r.status == 200 and r.json()["stable"] == "2", r
    assert {canary_infer(p, key, f"p-{i}").headers["x-mlserve-model-version"] for i in range(30)} == {"2"}
    post(p, "/v1/gateway/canary/canary", dict(split, stable="2", canary="1", weight=1.0), headers=auth(key))
    assert canary_infer(p, key, "x").headers["x-mlserve-model-version"] == "1"
    r = post(p, "/v1/gateway/canary/canary", {"action": "rollback"}, headers=auth(key))
    assert r.status == 200 and r.json()["stable"] == "2"
    assert {canary_infer(p, key, f"r-{i}").headers["x-mlserve-model-version"] for i in range(30)} == {"2"}
    assert get(p, "/v1/gateway/canary/canary", headers=auth(key)).json()["canary"] == ""
    bad = post(p, "/v1/gateway/canary/canary", {"action": "set", "stable": "1", "canary": "2", "weight": 2}, headers=auth(key))
    assert bad.status == 400, bad
    bad.error()
    assert post(p, "/v1/gateway/canary/canary", split, headers={}).status == 401


def test_body_limit_is_413(topo, key):
    big = b'{"inputs": [' + b" " * (MAX_BODY + 10) + b"]}"
    head = (f"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(big)}\r\n\r\n").encode()
    status, body = raw_http(port(topo), head, big)
    assert status == 413, body[:300]
    assert b'"error"' in body


def test_deadlines_are_enforced_and_malformed_ones_refused(topo, key):
    body, _ = slow_request(batch=4)
    r = post(port(topo), "/v2/models/slow/infer", body, headers={**auth(key), "Mlserve-Timeout-Ms": "1"})
    assert r.status == 503, r
    assert int(r.headers["retry-after"]) >= 1
    r.error()
    r = post(port(topo), "/v2/models/slow/infer", body, headers={**auth(key), "Mlserve-Timeout-Ms": "soon"})
    assert r.status == 400, r
    r = post(port(topo), "/v2/models/slow/infer", body, headers={**auth(key), "Mlserve-Timeout-Ms": "60000"})
    assert r.status == 200, r


def test_errors_keep_their_codes_through_the_gateway(topo, key):
    body, _ = simple_json(1)
    r = post(port(topo), "/v2/models/nope/infer", body, headers=auth(key))
    assert r.status == 404, r
    r.error()
    r = post(port(topo), "/v2/models/simple/infer", {"inputs": []}, headers=auth(key))
    assert r.status == 400, r
    r = get(port(topo), "/v2/nothing/here", headers=auth(key))
    assert r.status == 404, r
    r.error()


def test_overload_is_shed_with_503_and_retry_after(topo, key):
    """`slow` queues at most 8 requests per inference process: a burst far
    above that gets typed 503s with Retry-After, never a hang. The deadline
    is far above what the admitted requests take on a slow machine, so every
    503 is a shed, never an expiry."""
    from concurrent.futures import ThreadPoolExecutor
    body, _ = slow_request(batch=1)
    deadline_ms = 300_000

    def one(_):
        return post(port(topo), "/v2/models/slow/infer", body, timeout=deadline_ms / 1000 + 30,
                    headers={**auth(key), "Mlserve-Timeout-Ms": str(deadline_ms)})

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(one, range(64)))
    statuses = [r.status for r in answers]
    assert set(statuses) <= {200, 503}, statuses
    shed = [r for r in answers if r.status == 503]
    assert shed, "a burst of 64 over queues of 8 sheds some"
    assert statuses.count(200) >= 8
    for r in shed:
        assert "queue" in r.error(), r
        assert int(r.headers["retry-after"]) >= 1


def test_gateway_metrics(topo, key):
    post(port(topo), "/v2/models/simple/infer", simple_json(1)[0], headers={})
    text = get(topo.gateway.metrics_port, "/metrics").body.decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("mlserve_gateway_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['mlserve_gateway_requests_total{class="401"}'] >= 1
    assert samples['mlserve_gateway_requests_total{class="2xx"}'] >= 1
    healthy = [v for k, v in samples.items() if k.startswith("mlserve_gateway_endpoint_healthy")]
    assert len(healthy) == (1 if topo.kind == "all_in_one" else 2) and all(v == 1 for v in healthy)


def test_grpc_answers_carry_version_and_rate_limit_metadata(topo):
    import grpc
    import tritonclient.grpc.service_pb2 as pb
    import tritonclient.grpc.service_pb2_grpc as pb_grpc
    limited = topo.keys("create", "--name", f"grpc-{uuid.uuid4().hex[:6]}", "--rate", "0.05", "--burst", "2").strip()
    channel = grpc.insecure_channel(topo.grpc_url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    request = pb.ModelInferRequest(model_name="canary", id="grpc-meta")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 2])
    tensor.contents.fp32_contents.extend([1.0, 2.0])
    metadata = [("authorization", f"Bearer {limited}"), ("x-request-id", "grpc-meta")]
    remaining = []
    for _ in range(2):
        response, call = stub.ModelInfer.with_call(request, metadata=metadata, timeout=30)
        headers = dict(call.initial_metadata())
        assert headers["x-mlserve-model-version"] == response.model_version
        assert headers["ratelimit-limit"] == "2"
        remaining.append(headers["ratelimit-remaining"])
    assert remaining == ["1", "0"]
    try:
        stub.ModelInfer(request, metadata=metadata, timeout=30)
        raise AssertionError("the third call must be rate limited")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        trailers = {**dict(err.initial_metadata() or ()), **dict(err.trailing_metadata() or ())}
        assert trailers.get("mlserve-error-code") == "rate_limited", trailers
        assert int(trailers["retry-after"]) >= 1
    channel.close()
