"""The split deployment's internal token (issue 16, service to service): with
`server.internal_token` set, the node's own ports answer only callers that
send it, the roles send it to each other, and the probes stay open."""

import os
import subprocess

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers import get, simple_inputs
from server import REPO_ROOT, server_binary
from topology import start_topology

TOKEN = "internal-0123456789abcdef"
HEADER = "x-mlserve-internal-token"


@pytest.fixture(scope="module", params=["split", "all_in_one"])
def topology(request, models_repo, tmp_path_factory):
    topo = start_topology(request.param, models_repo,
                          tmp_path_factory.mktemp(f"token_{request.param}"),
                          env={"MLSERVE_SERVER__INTERNAL_TOKEN": TOKEN}, inference_count=1)
    yield topo
    topo.stop()


def infer_simple(client, mod, **kw):
    feeds = simple_inputs(1, seed=3)
    inputs = []
    for name, a in feeds.items():
        i = mod.InferInput(name, [1, 16], "INT32")
        i.set_data_from_numpy(a)
        inputs.append(i)
    out = client.infer("simple", inputs, **kw).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, feeds["INPUT0"] + feeds["INPUT1"])


def test_the_gateway_reaches_inference_with_the_token(topology):
    """The gateway's own ports authenticate users, not the token: a client
    infers through them, and in the split topology the gateway's calls to
    the inference process carry the token."""
    with httpclient.InferenceServerClient(topology.http_url) as c:
        infer_simple(c, httpclient)
    with grpcclient.InferenceServerClient(topology.grpc_url) as c:
        infer_simple(c, grpcclient)


def test_the_nodes_http_port_needs_the_token_but_probes_do_not(topology):
    node = topology.inference[0]
    refused = get(node.http_port, "/v2/models/simple")
    assert refused.status == 401, str(refused)
    assert HEADER in refused.json()["error"]
    wrong = get(node.http_port, "/v2/models/simple", headers={HEADER: TOKEN[:-1] + "x"})
    assert wrong.status == 401, str(wrong)
    assert get(node.http_port, "/v2/models/simple", headers={HEADER: TOKEN}).status == 200
    assert get(node.http_port, "/v2/health/ready").status == 200
    assert get(node.http_port, "/v2/health/live").status == 200
    with httpclient.InferenceServerClient(node.http_url) as c:
        with pytest.raises(InferenceServerException) as e:
            infer_simple(c, httpclient)
        assert HEADER in e.value.message()
        infer_simple(c, httpclient, headers={HEADER: TOKEN})


def test_the_nodes_grpc_port_needs_the_token_but_health_does_not(topology):
    node = topology.inference[0]
    with grpcclient.InferenceServerClient(node.grpc_url) as c:
        with pytest.raises(InferenceServerException) as e:
            infer_simple(c, grpcclient)
        assert e.value.status() == "StatusCode.UNAUTHENTICATED", e.value.status()
        with pytest.raises(InferenceServerException):
            c.get_model_metadata("simple", headers={HEADER: "wrong-token-0123456789"})
        assert c.get_model_metadata("simple", headers={HEADER: TOKEN}).name == "simple"
        infer_simple(c, grpcclient, headers={HEADER: TOKEN})
    with grpc.insecure_channel(node.grpc_url) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=10) == b"\x08\x01"  # status: SERVING


def test_a_short_token_fails_the_start(models_repo, tmp_path):
    proc = subprocess.run(
        [str(server_binary()), "--model-repository", str(models_repo), "--data-dir", str(tmp_path),
         "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
         "--gateway-http-port", "0", "--gateway-grpc-port", "0"],
        cwd=str(REPO_ROOT), env={**os.environ, "MLSERVE_SERVER__INTERNAL_TOKEN": "short"},
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "server.internal_token" in proc.stderr + proc.stdout
