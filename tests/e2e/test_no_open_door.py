"""No door without a lock (issue 16): with the gateway's authentication on,
every route the binary serves refuses a caller without credentials, apart
from the probes and the console's static files.

The routes are not listed by hand: they are read from the Rust sources
(every `.route(...)` call), so a route added later is walked too. Each one
is tried with every method:
- on the gateway's port without credentials: 401;
- on the node's own ports, which serve every role's API without user
  credentials: unreachable from another address than loopback when no
  internal token is set (the default bind), and 401 without the token
  when one is set (the split deployment);
- gRPC: every method of every service in the protos, on the gateway's port
  and on token-locked node ports: UNAUTHENTICATED.
A credential holding other scopes gets 403 naming the missing one on each
service's routes."""

import os
import re
import socket
import subprocess

import grpc
import pytest

from helpers import http_request
from server import REPO_ROOT, Server, server_binary
from topology import GatewayProcess

TOKEN = "internal-0123456789abcdef"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# Open by design: liveness and readiness probes, and the console's files
# (the page must load to show its sign-in form; its data needs credentials).
PUBLIC = {"/v2/health/live", "/v2/health/ready", "/health/live", "/health/ready",
          "/ui", "/ui/", "/ui/{*path}"}
# The protocol's own probes over gRPC, open as their HTTP twins.
GRPC_PUBLIC = {"/inference.GRPCInferenceService/ServerLive",
               "/inference.GRPCInferenceService/ServerReady"}
# The metrics port's one route: Prometheus scrapes it, read-only, as Triton's.
METRICS_ONLY = {"/metrics"}
SAMPLE = {"model": "tabular", "model_name": "tabular", "name": "tabular", "version": "1",
          "id": "r1", "step": "s", "alias": "production", "*path": "model.onnx",
          "region": "r", "spec": "tabular:predict", "action": "abort"}

ROUTE = re.compile(r'\.route\(\s*(?:&format!\("([^"]+)"\)|"([^"]+)"|([A-Z_]+)\s*,)')
CONST = re.compile(r'const ([A-Z_]+): &str = "([^"]+)";')


def source_routes():
    """Every route template registered in the Rust sources."""
    found = set()
    files = list((REPO_ROOT / "modules").glob("*/src/**/*.rs")) + \
        list((REPO_ROOT / "src").glob("**/*.rs"))
    for path in files:
        if path.name.endswith("tests.rs"):
            continue
        text = path.read_text()
        consts = dict(CONST.findall(text))
        for fmt, literal, const in ROUTE.findall(text):
            if fmt:
                template = re.sub(r"(?<!\{)\{([A-Z_]+)\}(?!\})",
                                  lambda m: consts[m.group(1)], fmt)
                template = template.replace("{{", "{").replace("}}", "}")
            else:
                template = literal or consts[const]
            found.add(template)
    return found


def concrete(template):
    return re.sub(r"\{([^}]+)\}", lambda m: SAMPLE[m.group(1)], template)


def grpc_methods():
    """`/package.Service/Method` for every rpc in the protos (the open
    probes of GRPC_PUBLIC left out)."""
    methods = []
    for proto in sorted((REPO_ROOT / "modules/proto/proto").glob("*.proto")):
        text = proto.read_text()
        package = re.search(r"^package (\w+);", text, re.M).group(1)
        for service, body in re.findall(r"^service (\w+) \{(.*?)^\}", text, re.M | re.S):
            for method in re.findall(r"^\s*rpc (\w+)\s*\(", body, re.M):
                methods.append(f"/{package}.{service}/{method}")
    return [m for m in methods if m not in GRPC_PUBLIC]


def outside_address():
    """An address of this machine other than 127.0.0.1: its outbound
    interface's, else 127.0.0.2 (a listener bound to 127.0.0.1 refuses
    both; one bound to 0.0.0.0 accepts both)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        address = "127.0.0.1"
    return address if not address.startswith("127.") else "127.0.0.2"


def reachable(address, port):
    try:
        with socket.create_connection((address, port), timeout=5):
            return True
    except OSError:
        return False


def grpc_code(port, method, metadata=()):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(b"", timeout=10, metadata=metadata)
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def walk_http(port, templates, expected, headers=None):
    """What is wrong with the answers to every method on every route: each
    should be `expected`, or 405 for a method the route does not serve
    (refused before any credential is looked at, so it tells nothing but
    that the route exists). A route answering 405 to every method would be
    one the walk never reached: that is wrong too."""
    wrong = []
    for template in sorted(templates):
        statuses = {}
        for method in METHODS:
            r = http_request(port, method, concrete(template), headers=headers)
            statuses[method] = r.status
            if r.status not in (expected, 405):
                wrong.append((template, method, r.status, r.body[:120]))
        if expected not in statuses.values():
            wrong.append((template, "no method reached", statuses))
    return wrong


def test_the_route_list_is_read_from_the_sources():
    """The walk's own input: a sanity check that the parser finds the route
    families (so an empty list cannot pass the walk)."""
    routes = source_routes()
    for family in ["/v2/models/{model_name}/infer", "/v1/registry/models/{name}/aliases/{alias}",
                   "/v1/features/online", "/v1/training/runs/{id}/cancel",
                   "/v1/monitoring/rollouts/{model}/{action}", "/v1/keys/{id}",
                   "/v1/gateway/canary/{model}", "/v1/models/{spec}", "/v1/whoami"]:
        assert family in routes or family.replace("{model_name}", "{model}") in routes, family
    assert len(routes) > 60, sorted(routes)
    assert len(grpc_methods()) > 60
    assert "/registry.RegistryService/SetAlias" in grpc_methods()


@pytest.fixture(scope="module")
def locked_monolith(models_repo, tmp_path_factory):
    """All roles in one process, gateway.auth on, its listeners on every
    address, no internal token: the default a user gets."""
    env = {"MLSERVE_SERVER__DATA_DIR": str(tmp_path_factory.mktemp("door_monolith"))}
    s = GatewayProcess().start(models_repo, "--host", "0.0.0.0", "--auth", "on", env=env)
    s.door_env = env
    yield s
    s.stop()


def test_the_monolith_gateway_refuses_every_route_without_credentials(locked_monolith):
    routes = source_routes() - PUBLIC - METRICS_ONLY
    assert walk_http(locked_monolith.gateway_http_port, routes, 401) == []
    for path in ["/v2/health/live", "/v2/health/ready", "/ui/"]:
        r = http_request(locked_monolith.gateway_http_port, "GET", path)
        assert r.status in (200, 404), (path, r.status)
    for method in grpc_methods():
        if method.startswith("/inference."):
            code = grpc_code(locked_monolith.gateway_grpc_port, method)
            assert code == grpc.StatusCode.UNAUTHENTICATED, (method, code)


def test_the_monolith_node_ports_face_only_loopback(locked_monolith):
    address = outside_address()
    assert reachable(address, locked_monolith.gateway_http_port), \
        f"control: the gateway listens on {address}"
    assert reachable(address, locked_monolith.metrics_port), "control: metrics too"
    for port in [locked_monolith.http_port, locked_monolith.grpc_port]:
        assert not reachable(address, port), f"node port {port} answers on {address}"
        assert reachable("127.0.0.1", port)


def test_a_node_bound_outside_without_a_token_refuses_to_start(models_repo):
    with pytest.raises(Exception) as failed:
        Server().start(models_repo, "--node-host", "0.0.0.0", "--auth", "on",
                       timeout=30)
    assert "server.internal_token" in str(failed.value), str(failed.value)


@pytest.fixture(scope="module")
def locked_split(models_repo, tmp_path_factory):
    """The split deployment with the token: one process with registry,
    features, training and monitoring, one inference process, and a gateway
    (auth on) reaching both over gRPC."""
    env = {"MLSERVE_SERVER__INTERNAL_TOKEN": TOKEN,
           "MLSERVE_SERVER__DATA_DIR": str(tmp_path_factory.mktemp("door_split"))}
    procs = []
    try:
        backend = Server(ready_path="/health/ready").start(
            models_repo, "--role", "registry,features,training,monitoring", env=env)
        procs.append(backend)
        inference = Server().start(models_repo, "--role", "inference", env=env)
        procs.append(inference)
        endpoint = f"http://127.0.0.1:{backend.grpc_port}"
        gateway = GatewayProcess().start(
            models_repo, "--role", "gateway", "--auth", "on",
            "--inference-endpoints", f"http://127.0.0.1:{inference.grpc_port}",
            "--registry-endpoint", endpoint, "--features-endpoint", endpoint,
            env={**env, "MLSERVE_TRAINING__ENDPOINT": endpoint,
                 "MLSERVE_MONITORING__ENDPOINT": endpoint})
        procs.append(gateway)
        yield {"backend": backend, "inference": inference, "gateway": gateway, "env": env}
    finally:
        for p in reversed(procs):
            p.stop()


def test_the_split_gateway_refuses_every_route_without_credentials(locked_split):
    gateway = locked_split["gateway"]
    routes = source_routes() - PUBLIC - METRICS_ONLY
    assert walk_http(gateway.gateway_http_port, routes, 401) == []
    for method in grpc_methods():
        if method.startswith("/inference."):
            assert grpc_code(gateway.gateway_grpc_port, method) == \
                grpc.StatusCode.UNAUTHENTICATED, method


def test_token_locked_node_ports_refuse_every_route_and_rpc(locked_split):
    routes = source_routes() - PUBLIC - METRICS_ONLY
    for name in ["backend", "inference"]:
        node = locked_split[name]
        assert walk_http(node.http_port, routes, 401) == [], name
        probes = ["/health/live", "/health/ready"]
        if name == "inference":
            probes.append("/v2/health/live")
        for path in probes:
            assert http_request(node.http_port, "GET", path).status == 200, (name, path)
        for method in grpc_methods():
            code = grpc_code(node.grpc_port, method)
            assert code == grpc.StatusCode.UNAUTHENTICATED, (name, method, code)
        ok = grpc_code(node.grpc_port, "/grpc.health.v1.Health/Check")
        assert ok != grpc.StatusCode.UNAUTHENTICATED, name


def key(env, *scopes):
    """A new key holding `scopes`, made by `mlserve keys create` on the
    database of the processes started with `env`."""
    args = [str(server_binary()), "keys", "create", "--name", "door"]
    for scope in scopes:
        args += ["--scope", scope]
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run(args, cwd=str(REPO_ROOT), env=full, capture_output=True, text=True,
                          timeout=60, check=True)
    return proc.stdout.strip()


# (method, path, the scope it needs, a scope that is not enough)
SERVICE_CALLS = [
    ("GET", "/v1/registry/models", "registry:read", "registry:write"),
    ("POST", "/v1/registry/models", "registry:write", "registry:read"),
    ("PUT", "/v1/registry/models/tabular/aliases/production", "registry:write", "registry:read"),
    ("GET", "/v1/features/entities", "features:read", "features:write"),
    ("POST", "/v1/features/online", "features:read", "registry:read"),
    ("POST", "/v1/features/ingest", "features:write", "features:read"),
    ("GET", "/v1/training/runs", "training:submit", "features:read"),
    ("POST", "/v1/training/runs/r1/cancel", "training:submit", "registry:read"),
    ("GET", "/v1/monitoring/rollouts", "rollouts:admin", "features:read"),
    ("POST", "/v1/monitoring/rollouts/tabular/abort", "rollouts:admin", "registry:read"),
    ("GET", "/v1/keys", "keys:admin", "rollouts:admin"),
    ("POST", "/v1/keys", "keys:admin", "registry:write"),
]


def test_each_service_route_needs_its_scope(locked_split):
    """A key with another scope is refused with 403 naming the missing one;
    a key with the scope gets past the check (whatever the service then
    answers to the sample request, it is not 401 or 403)."""
    gateway = locked_split["gateway"]
    env = locked_split["env"]
    for method, path, needed, other in SERVICE_CALLS:
        refused = http_request(gateway.gateway_http_port, method, path, body={},
                               headers={"Authorization": f"Bearer {key(env, other)}"})
        assert refused.status == 403, (method, path, other, refused.status)
        assert needed in refused.json()["error"], (method, path, refused.body)
        allowed = http_request(gateway.gateway_http_port, method, path, body={},
                               headers={"Authorization": f"Bearer {key(env, needed)}"})
        assert allowed.status not in (401, 403), (method, path, needed, allowed.status,
                                                  allowed.body[:200])
    who = http_request(gateway.gateway_http_port, "GET", "/v1/whoami",
                       headers={"Authorization": f"Bearer {key(env, 'registry:read')}"})
    assert who.status == 200 and who.json()["scopes"] == ["registry:read"], who.body
    assert who.json()["identity"] == "key:door" and who.json()["auth"] is True


def test_the_registry_records_the_authenticated_caller_not_a_claim(locked_split, locked_monolith):
    """Uploads and alias moves through the gateway are recorded under the
    key's identity; a header naming someone else changes nothing."""
    from test_registry import multipart, tiny_model
    for name, gateway, env in [
            ("split", locked_split["gateway"], locked_split["env"]),
            ("monolith", locked_monolith, locked_monolith.door_env)]:
        writer = {"Authorization": f"Bearer {key(env, 'registry:write', 'registry:read')}",
                  "X-Mlserve-User": "mallory"}
        port = gateway.gateway_http_port
        model = f"door-{name}"
        r = http_request(port, "POST", "/v1/registry/models", body={"name": model}, headers=writer)
        assert r.status == 201, r.body
        body, headers = multipart(tiny_model(2.0))
        r = http_request(port, "POST", f"/v1/registry/models/{model}/versions", body=body,
                         headers={**headers, **writer})
        assert r.status == 201, r.body
        assert r.json()["created_by"] == "key:door", (name, r.json())
        r = http_request(port, "PUT", f"/v1/registry/models/{model}/aliases/production",
                         body={"version": 1}, headers=writer)
        assert r.status == 200, r.body
        history = http_request(port, "GET", f"/v1/registry/models/{model}/alias-history",
                               headers=writer).json()["moves"]
        assert [m["actor"] for m in history] == ["key:door"], (name, history)
