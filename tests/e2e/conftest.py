"""Session fixtures: the generated test model repository and a default
all-models server (`--model-control-mode none`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server import REPO_ROOT, start_server

MAKE_MODELS = REPO_ROOT / "scripts" / "make_models.py"


@pytest.fixture(scope="session")
def models_repo(tmp_path_factory):
    """The test model repository, generated once per session by
    scripts/make_models.py (or taken from $MLSERVE_TEST_MODELS)."""
    pre = os.environ.get("MLSERVE_TEST_MODELS")
    if pre:
        return Path(pre)
    if not MAKE_MODELS.exists():
        pytest.fail(f"{MAKE_MODELS} does not exist; cannot generate the test models")
    out = tmp_path_factory.mktemp("models")
    proc = subprocess.run([sys.executable, str(MAKE_MODELS), "--set", "tests", "--out", str(out)],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"make_models.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    for name in ["simple", "simple_nobatch", "identity_fp32", "int64_lookup", "tabular",
                 "slow", "string_len"]:
        assert (out / name / "1" / "model.onnx").exists(), f"make_models.py did not make {name}"
        assert (out / name / "config.toml").exists(), f"make_models.py made no config.toml for {name}"
    return out


@pytest.fixture(scope="session")
def node_server(models_repo):
    """One server with every test model loaded, shared by the session."""
    s = start_server(models_repo)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def server(node_server):
    """The shared server (the conformance suites override this name)."""
    return node_server


@pytest.fixture
def make_server():
    """Factory for test-specific servers; all are stopped (or killed) at teardown."""
    started = []

    def make(repo, *args, **kw):
        s = start_server(repo, *args, **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


# The conformance suites (tritonclient HTTP and gRPC, input validation) run
# against the node itself and through the gateway in both topologies: the
# gateway must pass the whole protocol through unchanged.
CONFORMANCE_TARGETS = ["node", "gateway_all_in_one", "gateway_split"]


class GatewayFront:
    """The gateway of a topology, with the node's attribute names, so a suite
    written against the node runs against the gateway unchanged."""

    def __init__(self, topology):
        self.topology = topology

    @property
    def http_port(self):
        return self.topology.gateway.gateway_http_port

    @property
    def grpc_port(self):
        return self.topology.gateway.gateway_grpc_port

    @property
    def http_url(self):
        return self.topology.http_url

    @property
    def grpc_url(self):
        return self.topology.grpc_url


_fronts = {}


@pytest.fixture(scope="session", params=CONFORMANCE_TARGETS)
def conformance_target(request, models_repo, tmp_path_factory):
    """The node's own ports, or a gateway in front of it (all-in-one, or a
    gateway process routing to one inference process over gRPC)."""
    if request.param == "node":
        return request.getfixturevalue("node_server")
    if request.param not in _fronts:
        from topology import Topology
        kind = request.param.removeprefix("gateway_")
        topo = Topology(kind, models_repo, tmp_path_factory.mktemp(f"conformance_{kind}"),
                        inference_count=1).start()
        request.session.config.add_cleanup(topo.stop)
        _fronts[request.param] = GatewayFront(topo)
    return _fronts[request.param]
