"""Two gateway processes sharing rate-limit counters in Redis (the local
Redis every test machine runs): one key's bucket is drained across both.
Redis unreachable: fail open lets requests through, fail closed answers 503."""

import os
import socket

from helpers import copy_models, post, simple_json
from server import Server
from topology import GatewayProcess, Topology

REDIS_URL = os.environ.get("MLSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway(repo, inference, env, *extra):
    return GatewayProcess().start(
        repo, "--role", "gateway", "--inference-endpoints", f"http://127.0.0.1:{inference.grpc_port}",
        "--gateway-http-port", "0", "--gateway-grpc-port", "0", *extra, env=env)


def test_two_gateways_share_one_bucket_in_redis(models_repo, tmp_path):
    repo = copy_models(models_repo, tmp_path / "models", ["simple"])
    env = {"MLSERVE_SERVER__DATA_DIR": str(tmp_path / "data"),
           "MLSERVE_GATEWAY__RATE_LIMIT__BACKEND": "redis",
           "MLSERVE_GATEWAY__RATE_LIMIT__REDIS_URL": REDIS_URL,
           "MLSERVE_GATEWAY__RATE_LIMIT__REDIS_FAILURE": "closed"}
    procs = []
    try:
        inference = Server().start(repo, "--role", "inference", env=env)
        procs.append(inference)
        a = gateway(repo, inference, env, "--auth", "on")
        procs.append(a)
        b = gateway(repo, inference, env, "--auth", "on")
        procs.append(b)
        keys = Topology("split", repo, tmp_path / "data", env=env)
        key = keys.keys("create", "--name", "shared", "--rate", "0.01", "--burst", "4").strip()
        body, _ = simple_json(1)
        statuses = []
        for i in range(8):
            g = a if i % 2 == 0 else b
            r = post(g.gateway_http_port, "/v2/models/simple/infer", body,
                     headers={"Authorization": f"Bearer {key}"})
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["retry-after"]) >= 1
        assert statuses == [200] * 4 + [429] * 4, statuses

        # Redis down: fail closed answers 503, fail open lets the request through.
        down = dict(env, MLSERVE_GATEWAY__RATE_LIMIT__REDIS_URL=f"redis://127.0.0.1:{closed_port()}",
                    MLSERVE_GATEWAY__RATE_LIMIT__ANONYMOUS_RATE="1")
        closed = gateway(repo, inference, down)
        procs.append(closed)
        r = post(closed.gateway_http_port, "/v2/models/simple/infer", body)
        assert r.status == 503 and "rate limit store" in r.error(), r
        opened = gateway(repo, inference, dict(down, MLSERVE_GATEWAY__RATE_LIMIT__REDIS_FAILURE="open"))
        procs.append(opened)
        for _ in range(3):
            assert post(opened.gateway_http_port, "/v2/models/simple/infer", body).status == 200
    finally:
        for p in reversed(procs):
            p.stop()
