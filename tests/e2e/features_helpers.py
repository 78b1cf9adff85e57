"""Helpers of the feature-store end-to-end tests: a features-role server, the
definitions they share, and a private redis-server."""

import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import post
from server import Server, ServerStartError

T0 = 1_700_000_000_000_000  # microseconds
MIN = 60_000_000

# The definitions the Rust tests share.
DEFINITIONS = (Path(__file__).resolve().parents[2] / "modules" / "features" / "tests" / "data"
               / "drivers.toml").read_text()


def features_server(tmp_path, *args, env=None):
    """mlserve --role features with its data in tmp_path."""
    full_env = {"MLSERVE_SERVER__DATA_DIR": str(tmp_path / "data")}
    full_env.update(env or {})
    try:
        return Server(ready_path="/v1/features/entities").start(
            tmp_path, "--role", "features", *args, env=full_env)
    except ServerStartError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


def apply_json(port):
    """The DEFINITIONS as an apply request body."""
    return {
        "entities": [{"name": "driver", "join_keys": ["driver_id"], "value_type": "int64"}],
        "feature_views": [{
            "name": "driver_stats", "entities": ["driver"], "ttl_secs": 3600, "online": True,
            "fields": [{"name": "rate", "dtype": "float64"}, {"name": "trips", "dtype": "int64"}],
        }],
    }


def ok(resp):
    assert resp.status == 200, str(resp)
    return resp.json()


def online(port, drivers, features=("driver_stats:rate",), timeout=30):
    return post(port, "/v1/features/online", {
        "features": list(features),
        "entities": [{"keys": {"driver_id": d}} for d in drivers],
    }, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own on `port`, without persistence."""

    def __init__(self, port):
        self.port = port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
