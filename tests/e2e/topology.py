"""Starts mlserve in a deployment topology for the end-to-end tests.

- `all_in_one`: one process, every role compiled in (the gateway routes to
  the in-process inference role).
- `split`: one process per role on loopback: two inference processes, a
  features process when asked for, and a gateway that reaches them over gRPC
  (`--role gateway --inference-endpoints ... --features-endpoint ...`).

Every port is 0 (picked by the OS, read back from the log). The gateway's
own listeners log `service="gateway-http"` / `"gateway-grpc"`; a gateway
process is started once it logged `gateway ready` and its
`/v2/health/ready` answers 200 (some inference endpoint is ready).
"""

import os
import re
import subprocess
import time

from helpers import get
from server import REPO_ROOT, Server, ServerStartError, server_binary

_GATEWAY = re.compile(r'\bservice"?[=:]\s*"?gateway-(http|grpc)\b')
_ADDR = re.compile(r'\baddr"?[=:]\s*"?\[?([0-9a-fA-F.:]+?)\]?:(\d+)(?=["\s,}]|$)')

TOPOLOGIES = ["all_in_one", "split"]


class GatewayProcess(Server):
    """An mlserve process that runs the gateway role (alone or with others)."""

    def gateway_ports(self):
        ports = {}
        for line in self.log.splitlines():
            if "listening" in line:
                svc, addr = _GATEWAY.search(line), _ADDR.search(line)
                if svc and addr:
                    ports[svc.group(1)] = int(addr.group(2))
        return ports

    def _wait_started(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(timeout=2)
                raise ServerStartError(
                    f"mlserve exited with code {self.proc.returncode} during start\n{self.describe()}")
            ports = self.gateway_ports()
            if "gateway ready" in self.log and len(ports) == 2 and self._gateway_ready(ports["http"]):
                self.ports.update({f"gateway_{k}": v for k, v in ports.items()})
                return
            time.sleep(0.05)
        raise ServerStartError(f"the gateway did not become ready within {timeout:.0f} s\n{self.describe()}")

    @staticmethod
    def _gateway_ready(port):
        try:
            return get(port, "/v2/health/ready", timeout=5).status == 200
        except OSError:
            return False

    @property
    def gateway_http_port(self):
        return self.ports["gateway_http"]

    @property
    def gateway_grpc_port(self):
        return self.ports["gateway_grpc"]


class Topology:
    """A running topology: `gateway` (a GatewayProcess), `inference` (the
    processes serving models; the gateway itself when all-in-one), `procs`."""

    def __init__(self, kind, models, data_dir, gateway_args=(), env=None, inference_count=2,
                 features=False):
        if kind not in TOPOLOGIES:
            raise ValueError(kind)
        self.kind = kind
        self.models = models
        self.env = dict(env or {})
        self.env["MLSERVE_SERVER__DATA_DIR"] = str(data_dir)
        self.gateway_args = [str(a) for a in gateway_args]
        self.inference_count = inference_count
        self.with_features = features
        self.features = None
        self.gateway = None
        self.inference = []
        self.procs = []

    def start(self):
        ports = ["--gateway-http-port", "0", "--gateway-grpc-port", "0"]
        try:
            if self.kind == "all_in_one":
                self.gateway = GatewayProcess().start(self.models, *ports, *self.gateway_args, env=self.env)
                self.inference = [self.gateway]
                self.features = self.gateway if self.with_features else None
                self.procs = [self.gateway]
            else:
                for _ in range(self.inference_count):
                    s = Server().start(self.models, "--role", "inference", env=self.env)
                    self.inference.append(s)
                    self.procs.append(s)
                endpoints = ",".join(f"http://127.0.0.1:{s.grpc_port}" for s in self.inference)
                remote = []
                if self.with_features:
                    self.features = Server(ready_path="/v1/features/entities").start(
                        self.models, "--role", "features", env=self.env)
                    self.procs.append(self.features)
                    remote = ["--features-endpoint", f"http://127.0.0.1:{self.features.grpc_port}"]
                self.gateway = GatewayProcess().start(
                    self.models, "--role", "gateway", "--inference-endpoints", endpoints,
                    *remote, *ports, *self.gateway_args, env=self.env)
                self.procs.append(self.gateway)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for p in reversed(self.procs):
            p.stop()

    @property
    def http_url(self):
        """host:port of the gateway's HTTP listener (tritonclient.http form)."""
        return f"127.0.0.1:{self.gateway.gateway_http_port}"

    @property
    def grpc_url(self):
        return f"127.0.0.1:{self.gateway.gateway_grpc_port}"

    def keys(self, *args):
        """Runs `mlserve keys ARGS` against this topology's database; returns stdout."""
        env = dict(os.environ)
        env.update(self.env)
        proc = subprocess.run([str(server_binary()), "keys", *args], cwd=str(REPO_ROOT), env=env,
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"mlserve keys {args} failed: {proc.stderr}")
        return proc.stdout

    def describe(self):
        return "\n\n".join(p.describe(tail=60) for p in self.procs)


def start_topology(kind, models, data_dir, *gateway_args, **kw):
    """Starts a Topology; a start failure becomes a test failure with the logs."""
    import pytest
    try:
        return Topology(kind, models, data_dir, gateway_args, **kw).start()
    except ServerStartError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)
