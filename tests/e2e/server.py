"""Starts the real mlserve binary for the end-to-end tests.

A `Server` runs `target/release/mlserve` (or `$MLSERVE_BIN`) on port 0 for
HTTP, gRPC and metrics, reads its stderr in a background thread, takes the
ports from the `listening` log lines, waits for `server ready` and for
`GET /v2/health/ready` to answer 200, and kills the process on teardown.
"""

import atexit
import http.client
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# `service=http` / `service="http"` (tracing fmt) or `"service":"http"` (JSON)
_SERVICE = re.compile(r'\bservice"?[=:]\s*"?(http|grpc|metrics)\b')
_ADDR = re.compile(r'\baddr"?[=:]\s*"?\[?([0-9a-fA-F.:]+?)\]?:(\d+)(?=["\s,}]|$)')


def server_binary():
    """Path of the server binary: `$MLSERVE_BIN` or target/release/mlserve."""
    env = os.environ.get("MLSERVE_BIN")
    return Path(env) if env else REPO_ROOT / "target" / "release" / "mlserve"


class ServerStartError(RuntimeError):
    """The server did not come up; the message carries its log."""


class Server:
    """One mlserve process. Use `Server().start(repo, *extra_args)` or as a
    context manager: `with Server().start(repo) as s: ...`."""

    def __init__(self, binary=None, ready_path="/v2/health/ready"):
        self.binary = Path(binary) if binary else server_binary()
        # answers 200 once the process serves (a process without the
        # inference role has no /v2 routes: pass one of its own paths)
        self.ready_path = ready_path
        self.proc = None
        self.ports = {}
        self.args = []
        self.repo = None
        self._lines = []
        self._lock = threading.Lock()
        self._ready_logged = threading.Event()
        self._reader = None
        self._data_dir = None

    # ---------------------------------------------------------------- start
    def start(self, repo, *extra_args, env=None, timeout=START_TIMEOUT_S):
        if not self.binary.exists():
            raise ServerStartError(
                f"server binary {self.binary} does not exist; build it with "
                "`cargo build --release` or set MLSERVE_BIN")
        extra = [str(a) for a in extra_args]
        args = [str(self.binary), "--model-repository", str(repo),
                "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
        if "--host" not in extra:
            args += ["--host", "127.0.0.1"]
        if "--model-control-mode" not in extra:
            args += ["--model-control-mode", "none"]
        # never a fixed port: the gateway's own listeners too (harmless
        # without the gateway role)
        if "--gateway-http-port" not in extra:
            args += ["--gateway-http-port", "0"]
        if "--gateway-grpc-port" not in extra:
            args += ["--gateway-grpc-port", "0"]
        # a data directory of its own (SQLite, artifacts, cache) unless the
        # test chose one, so servers never share state through the repo's data/
        chosen = "--data-dir" in extra or "--config" in extra or (
            env and "MLSERVE_SERVER__DATA_DIR" in env)
        if not chosen:
            if self._data_dir is None:
                self._data_dir = tempfile.mkdtemp(prefix="mlserve-e2e-")
                atexit.register(shutil.rmtree, self._data_dir, True)
            args += ["--data-dir", self._data_dir]
        args += extra
        self.args = args
        self.repo = Path(repo)
        full_env = dict(os.environ)
        full_env.setdefault("RUST_LOG", "info")
        full_env["NO_COLOR"] = "1"
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            args, cwd=str(REPO_ROOT), env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            self._wait_started(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _read_log(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            with self._lock:
                self._lines.append(line)
            if "listening" in line:
                svc, addr = _SERVICE.search(line), _ADDR.search(line)
                if svc and addr:
                    with self._lock:
                        self.ports[svc.group(1)] = int(addr.group(2))
            if "server ready" in line:
                self._ready_logged.set()
        self.proc.stderr.close()

    def _wait_started(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(timeout=2)
                raise ServerStartError(
                    f"mlserve exited with code {self.proc.returncode} during "
                    f"start\n{self.describe()}")
            with self._lock:
                have_ports = all(k in self.ports for k in ("http", "grpc", "metrics"))
            if have_ports and self._ready_logged.is_set():
                if self._health_ready():
                    return
            time.sleep(0.05)
        raise ServerStartError(
            f"mlserve did not become ready within {timeout:.0f} s (ports seen: "
            f"{self.ports}, 'server ready' logged: {self._ready_logged.is_set()})"
            f"\n{self.describe()}")

    def _health_ready(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.ports["http"], timeout=5)
            conn.request("GET", self.ready_path)
            status = conn.getresponse().status
            conn.close()
            return status == 200
        except OSError:
            return False

    # ----------------------------------------------------------- properties
    @property
    def pid(self):
        return self.proc.pid

    @property
    def http_port(self):
        return self.ports["http"]

    @property
    def grpc_port(self):
        return self.ports["grpc"]

    @property
    def metrics_port(self):
        return self.ports["metrics"]

    @property
    def http_url(self):
        """host:port, the form tritonclient.http wants (no scheme)."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self):
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log(self):
        with self._lock:
            return "\n".join(self._lines)

    def describe(self, tail=200):
        with self._lock:
            lines = self._lines[-tail:]
        return ("command: " + " ".join(self.args) + "\n--- mlserve log (last "
                f"{len(lines)} lines) ---\n" + "\n".join(lines))

    # ------------------------------------------------------------- stopping
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def sigterm(self):
        """Send SIGTERM and return at once."""
        if self.running():
            os.kill(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout):
        """Wait for exit; returns the exit code (raises TimeoutExpired)."""
        code = self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def kill(self):
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if self._reader is not None:
                self._reader.join(timeout=5)

    def stop(self, timeout=15.0):
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns the exit code
        of a graceful exit, or None when it had to be killed."""
        if self.proc is None:
            return None
        if not self.running():
            return self.proc.returncode
        self.sigterm()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def start_server(repo, *args, **kw):
    """Starts a Server; a start failure becomes a test failure carrying the log."""
    import pytest
    try:
        return Server().start(repo, *args, **kw)
    except ServerStartError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)
