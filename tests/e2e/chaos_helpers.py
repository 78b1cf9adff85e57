"""Helpers of the chaos end-to-end tests (test_chaos_*.py, issue 16).

Dependencies of the test's own that a scenario may stop, kill or fill up (a
PostgreSQL cluster, a redis-server, an s3s-fs, a tmpfs of a few MB): never
the machine's shared services (PostgreSQL at 5432, Redis at 6379), which CI
and other tests use; free loopback ports and fresh directories only. Then
load threads that tally every answer, the registry and inference calls of
the scenarios, and the scenario's numbers (printed, seen with `pytest -s`,
and written as JSON to $MLSERVE_CHAOS_RESULTS/<scenario>.json when that
variable is set)."""

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from features_helpers import RedisServer, free_port
from helpers import get, http_request, infer_path, post, wait_until
from server import Server, ServerStartError
from test_registry import S3_KEY, S3_SECRET, S3S_FS, multipart
from test_registry_follow import offset_of

PG_BIN = Path(os.environ.get("MLSERVE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
# The machine's shared services: never started, stopped or used here.
SHARED_PORTS = {5432, 6379}
S3_BUCKET = "mlserve-chaos"


def private_port():
    """A free loopback port (an ephemeral one: never a shared service's)."""
    port = free_port()
    assert port not in SHARED_PORTS, port
    return port


def listening(port, timeout=1.0):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- servers
def start_with_config(tmp_path, name, config_lines, *args, ready_path="/v2/health/ready",
                      cls=Server):
    """An mlserve process with a config file of its own (`config_lines`;
    the defaults otherwise, so a scenario does not depend on
    config/mlserve.toml) and an empty model repository; a start failure
    fails the test with the log."""
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    config = tmp_path / f"{name}.toml"
    config.write_text("\n".join(config_lines) + "\n")
    try:
        return cls(ready_path=ready_path).start(repo, "--config", config, *args)
    except ServerStartError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


def assert_alive(procs):
    """Every process still runs and none panicked."""
    for p in procs:
        assert p.running(), f"a process died:\n{p.describe(60)}"
        assert "panicked" not in p.log, p.describe(60)


def shutdown(loads, procs):
    """Teardown: the load threads told to stop, then the processes stopped
    (newest first), which ends the requests still in flight."""
    for load in loads:
        load.stop_flag.set()
    for p in reversed(procs):
        p.stop()


# ------------------------------------------------------------- PostgreSQL
class PrivatePostgres:
    """A PostgreSQL cluster of the test's own: `initdb` into a fresh
    directory under /tmp (owned by the `postgres` OS user, since initdb
    refuses to run as root), served on a free loopback port. `stop()` and
    `start()` restart it; `close()` removes it."""

    def __init__(self, port=None):
        self.port = port or private_port()
        assert self.port not in SHARED_PORTS
        # Under /tmp itself: pytest's tmp_path lies in a root-only (0700)
        # directory the postgres user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="mlserve-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.socket_dir = self.root
        self._as_root = os.geteuid() == 0
        self.initialized = False

    def _run(self, *argv, timeout=120, check=True):
        cmd = [str(a) for a in argv]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n"
                                 f"{proc.stderr}\n--- server log ---\n{self.log_tail()}")
        return proc

    def init(self):
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-instructions", "--no-sync")
        self.initialized = True
        return self

    def start(self, timeout=60):
        """Starts the server and returns once it accepts connections."""
        if not self.initialized:
            self.init()
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.socket_dir} -c max_connections=100")
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w",
                  "-t", str(int(timeout)), "start", timeout=timeout + 30)
        return self

    def stop(self, mode="fast", timeout=60):
        """Stops the server (`fast`: sessions are terminated, as a
        restart does; `immediate`: as a crash) and returns once it is down."""
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", str(int(timeout)),
                  "stop", timeout=timeout + 30)

    def running(self):
        proc = self._run(PG_BIN / "pg_ctl", "-D", self.data, "status", check=False)
        return proc.returncode == 0

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _psql_argv(self, sql):
        return ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql]

    def psql(self, sql):
        """Runs `sql`; returns the rows (tab-separated fields)."""
        proc = subprocess.run(self._psql_argv(sql) + ["-At", "-F", "\t"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"psql failed: {proc.stderr}"
        return [line.split("\t") for line in proc.stdout.splitlines() if line]

    def hold_locks(self, tables, timeout=30):
        """A session that holds EXCLUSIVE locks on `tables` (reads pass,
        writes wait) until it is killed or the server stops: the writes of
        the servers are then in flight when the server goes down. Returns
        once the locks are granted; kill the returned process to release."""
        sql = (f"BEGIN; LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE; "
               "SELECT pg_sleep(600);")
        proc = subprocess.Popen(self._psql_argv(sql), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        names = ", ".join(f"'{t}'" for t in tables)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.psql("SELECT count(*) FROM pg_locks l JOIN pg_class c "
                             "ON c.oid = l.relation WHERE l.granted "
                             f"AND l.mode = 'ExclusiveLock' AND c.relname IN ({names})")
            if int(rows[0][0]) == len(tables):
                return proc
            time.sleep(0.05)
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"the locks on {tables} were not granted within {timeout} s")

    def waiting_on_locks(self):
        """The statements (their text) that wait for a lock now."""
        rows = self.psql("SELECT regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_activity "
                         "WHERE wait_event_type = 'Lock'")
        return [r[0] for r in rows]

    def terminate_waiting(self):
        """Ends the sessions that wait for a lock as a fast shutdown ends
        every session (SIGTERM: "terminating connection due to administrator
        command", SQLSTATE 57P01). Returns how many were ended."""
        rows = self.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE wait_event_type = 'Lock'")
        return sum(1 for r in rows if r[0] == "t")

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self):
        if self.initialized and self.data.exists():
            try:
                if self.running():
                    self.stop(mode="immediate")
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------ Redis
class PrivateRedis(RedisServer):
    """A redis-server of the test's own on a free port, without persistence:
    killed (SIGKILL), it comes back empty, as a Redis without a volume does;
    `start()` again serves the same port."""

    def __init__(self, port=None):
        super().__init__(port or private_port())
        assert self.port not in SHARED_PORTS

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def command(self, *args):
        return redis_command(self.port, *args)


class RedisError(Exception):
    pass


def redis_command(port, *args, timeout=5):
    """Sends one command (RESP) and returns its decoded reply."""
    payload = f"*{len(args)}\r\n".encode()
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        payload += f"${len(b)}\r\n".encode() + b + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        return _read_reply(s.makefile("rb"))


def _read_reply(r):
    line = r.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else r.read(n + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(r) for _ in range(n)]
    raise OSError(f"unexpected redis reply {line!r}")


def stream_events(port, key):
    """Every entry of a stream as (id, event dict)."""
    out = []
    for entry_id, fields in redis_command(port, "XRANGE", key, "-", "+") or []:
        f = dict(zip(fields[::2], fields[1::2]))
        out.append((entry_id, json.loads(f["event"]) if "event" in f else None))
    return out


# -------------------------------------------------------------- forwarder
class TcpForwarder:
    """A loopback TCP forwarder on a free port of its own to `target_port`,
    which `retarget()` changes (a restarted process listens on a new port):
    each accepted connection is piped to the target of the moment; when
    either side closes, both do, so the client reconnects (to the new
    target)."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        assert self.port not in SHARED_PORTS
        self.stop_flag = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def retarget(self, port):
        self.target = port

    def _accept(self):
        while not self.stop_flag.is_set():
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.stop_flag.set()
        self.sock.close()


# ----------------------------------------------------------------- s3s-fs
class S3Server:
    """An s3s-fs process of the test's own with one bucket. `kill9()` kills
    it with SIGKILL; `start()` (again) serves the same directory on the same
    port."""

    def __init__(self, root, bucket=S3_BUCKET):
        if not S3S_FS.exists():
            pytest.fail(f"{S3S_FS} is missing: run scripts/setup.sh (it builds s3s-fs)")
        self.root = Path(root)
        self.bucket = bucket
        (self.root / bucket).mkdir(parents=True, exist_ok=True)
        self.port = private_port()
        self.proc = None

    def start(self, timeout=30):
        self.proc = subprocess.Popen(
            [str(S3S_FS), "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", S3_KEY, "--secret-key", S3_SECRET, str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(self.port) or self.proc.poll() is not None, timeout,
                   "s3s-fs did not start listening")
        assert self.proc.poll() is None, f"s3s-fs exited with {self.proc.returncode}"
        return self

    def kill9(self):
        """SIGKILL, then waits until it is gone and its port refuses."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        wait_until(lambda: not listening(self.port), 10, "the killed s3s-fs port still answers")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def registry_env(self, key_prefix="mlserve"):
        """The registry settings that put its artifacts in this server."""
        return {
            "MLSERVE_REGISTRY__ARTIFACT_BACKEND": "s3",
            "MLSERVE_REGISTRY__S3_ENDPOINT": self.endpoint,
            "MLSERVE_REGISTRY__S3_BUCKET": self.bucket,
            "MLSERVE_REGISTRY__S3_ALLOW_HTTP": "true",
            "MLSERVE_REGISTRY__KEY_PREFIX": key_prefix,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        }

    def objects(self, prefix="mlserve/models"):
        """Complete objects in the bucket under `prefix` (relative paths)."""
        return files_under(self.root / self.bucket / prefix)

    def open_multipart_uploads(self):
        """What s3s-fs keeps at its root for multipart uploads that were
        neither completed nor aborted: the upload records
        (`.upload-<id>.json`), their parts (`.upload_id-<id>.part-<n>`) and
        their pending attributes (`.bucket-...upload-<id>.metadata.json`).
        (Attribute files of deleted objects, which s3s-fs itself never
        removes, and its own `.tmp.*` files, are not counted.)"""
        return [p.name for p in sorted(self.root.iterdir()) if p.is_file() and (
            p.name.startswith((".upload-", ".upload_id-", ".upload_part_info-"))
            or (p.name.startswith(".bucket-") and ".upload-" in p.name))]

    def upload_part_files(self):
        return [n for n in self.open_multipart_uploads() if n.startswith(".upload_id-")]


# ------------------------------------------------------------------ tmpfs
class Tmpfs:
    """A tmpfs of `size` (e.g. "4m") mounted on `path` (root only), as a
    context manager: unmounted on the way out, whatever happened inside
    (lazily when something still holds it), so no test leaves a mount."""

    def __init__(self, path, size):
        self.path = Path(path)
        self.size = size
        self.mounted = False

    def __enter__(self):
        self.path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755",
                               "tmpfs", str(self.path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs on {self.path} (root and mount are needed): "
                        f"mount -t tmpfs failed ({proc.returncode}): {proc.stderr.strip()}",
                        pytrace=False)
        self.mounted = True
        return self

    def __exit__(self, *exc):
        if self.mounted and os.path.ismount(self.path):
            proc = subprocess.run(["umount", str(self.path)], capture_output=True, text=True)
            if proc.returncode != 0:  # something still holds it: detach it
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True, text=True)
        self.mounted = False
        return False

    def free_bytes(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def total_bytes(self):
        st = os.statvfs(self.path)
        return st.f_blocks * st.f_frsize


# ---------------------------------------------------------------- tallies
class Tally:
    """Answers of one kind of request, by status, with the error bodies of
    the failures and the slowest answer."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.statuses = Counter()
        self.errors = []          # (status, error message or None, raw body, seconds)
        self.exceptions = []      # (repr, seconds): timeouts, resets
        self.slowest_failure = 0.0
        self.slowest = 0.0
        self.requests = 0

    def record(self, resp, took):
        with self.lock:
            self.requests += 1
            self.slowest = max(self.slowest, took)
            self.statuses[resp.status] += 1
            if resp.status >= 300:
                self.slowest_failure = max(self.slowest_failure, took)
                try:
                    doc = json.loads(resp.body)
                except ValueError:
                    doc = None
                message = doc.get("error") if isinstance(doc, dict) else None
                self.errors.append((resp.status, message if isinstance(message, str) and message
                                    else None, resp.body[:300], took))

    def record_exception(self, exc, took):
        with self.lock:
            self.requests += 1
            self.slowest = max(self.slowest, took)
            self.slowest_failure = max(self.slowest_failure, took)
            self.statuses["exception"] += 1
            self.exceptions.append((repr(exc), took))

    def summary(self):
        with self.lock:
            return {
                "requests": self.requests,
                "by_status": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
                "slowest_s": round(self.slowest, 3),
                "slowest_failure_s": round(self.slowest_failure, 3),
                "error_samples": sorted({(s, m or repr(b)) for s, m, b, _ in self.errors})[:5],
                "exceptions": [e for e, _ in self.exceptions[:5]],
            }

    def untyped_failures(self):
        """Failures that are not a typed 503: another status, a body that is
        not {"error": "<message>"}, or no answer at all."""
        with self.lock:
            bad = [(s, m, b) for s, m, b, _ in self.errors if s != 503 or not m]
            bad += [("exception", e, None) for e, _ in self.exceptions]
            return bad


def timed(tally, call):
    """Runs call() (an HTTP request returning a Resp), records it; returns
    the Resp or None when it raised."""
    started = time.monotonic()
    try:
        resp = call()
    except OSError as e:  # timeouts, resets, refused
        tally.record_exception(e, time.monotonic() - started)
        return None
    tally.record(resp, time.monotonic() - started)
    return resp


def report(scenario, numbers):
    """Prints the scenario's numbers and writes them as JSON to
    $MLSERVE_CHAOS_RESULTS/<scenario>.json when that variable is set."""
    text = json.dumps(numbers, indent=2, sort_keys=True, default=str)
    print(f"\n=== chaos scenario {scenario} ===\n{text}")
    out = os.environ.get("MLSERVE_CHAOS_RESULTS")
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{scenario}.json").write_text(text + "\n")


# ------------------------------------------------------------------ loads
class _Threads:
    """Daemon threads running `self._run(i)` until `stop_flag` is set."""

    def _spawn(self, count):
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(count)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=60):
        """Stops the threads; whether they all ended within `timeout` s each."""
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self.threads)


class Load(_Threads):
    """`threads` threads calling `call(n)` (one request returning a Resp; n
    unique across the threads) with `pause` s between two calls until
    stopped. Every answer is tallied and kept as (started, ended, status or
    None when there was no answer, error message or None); `on_ack(n, resp)`
    sees each 2xx (what it raises is kept in `ack_errors`)."""

    def __init__(self, name, call, threads=1, pause=0.05, on_ack=None):
        self.name, self.call, self.pause, self.on_ack = name, call, pause, on_ack
        self.tally = Tally(name)
        self.answers = []
        self.ack_errors = []
        self.numbers = itertools.count()
        self._spawn(threads)

    def _run(self, _i):
        while not self.stop_flag.is_set():
            with self.lock:
                n = next(self.numbers)
            started = time.monotonic()
            resp = timed(self.tally, lambda: self.call(n))
            ended = time.monotonic()
            error = None
            if resp is not None and not 200 <= resp.status < 300:
                try:
                    error = resp.error()
                except AssertionError as e:
                    error = f"UNTYPED: {e}"
            elif resp is not None and self.on_ack is not None:
                try:
                    self.on_ack(n, resp)
                except Exception as e:  # noqa: BLE001 - reported by the test
                    with self.lock:
                        self.ack_errors.append(f"{e!r} for {resp}")
            with self.lock:
                self.answers.append((started, ended, resp.status if resp else None, error))
            time.sleep(self.pause)

    def select(self, keep):
        """The answers (started, ended, status, error) for which keep(...) holds."""
        with self.lock:
            return [a for a in self.answers if keep(*a)]

    def between(self, start, end):
        """Answers to requests made at or after `start` and answered before `end`."""
        return self.select(lambda s, e, st, err: s >= start and e < end)

    def after(self, t):
        """Answers to requests made at or after `t`."""
        return self.select(lambda s, e, st, err: s >= t)

    def acks(self, after=None):
        return len(self.select(lambda s, e, st, err: st is not None and 200 <= st < 300
                               and (after is None or e > after)))

    def first_ack_after(self, t):
        """Seconds from `t` to the first 2xx answered after it (None if none)."""
        ends = [e for s, e, st, err in self.select(
            lambda s, e, st, err: st is not None and 200 <= st < 300 and e > t)]
        return round(min(ends) - t, 3) if ends else None

    def seen(self, statuses, since=0.0):
        """Whether every status of `statuses` answered a request made since `since`."""
        return set(statuses) <= {a[2] for a in self.after(since)}

    @staticmethod
    def by_status(answers):
        out = Counter(str(a[2]) for a in answers)
        return dict(sorted(out.items()))


class PlusTraffic(_Threads):
    """`threads` threads sending inference requests to `model` (a
    `plus_model` version: OUTPUT0 = INPUT0 + version) non-stop; counts the
    answers by status and by the version (model_version) that answered, and
    keeps every failure and every answer whose offset is not its version."""

    def __init__(self, port, model, threads=2, timeout=30):
        self.port, self.model, self.timeout = port, model, timeout
        self.status = Counter()
        self.versions = Counter()
        self.mismatched = []
        self.errors = []
        self._spawn(threads)

    def _run(self, seed):
        rng = np.random.default_rng(seed)
        while not self.stop_flag.is_set():
            x = rng.standard_normal((1, 4)).astype(np.float32)
            try:
                r = infer_plus(self.port, self.model, x, timeout=self.timeout)
            except Exception as e:  # noqa: BLE001 - every failure is counted
                with self.lock:
                    self.status["exception"] += 1
                    self.errors.append(repr(e))
                time.sleep(0.05)
                continue
            with self.lock:
                self.status[r.status] += 1
                if r.status != 200:
                    self.errors.append(str(r))
                    continue
                version, k = r.json().get("model_version"), offset_of(r, x)
                self.versions[version] += 1
                if k is None or str(int(k)) != version:
                    self.mismatched.append((version, k))

    def total(self):
        with self.lock:
            return sum(self.status.values())


def infer_plus(port, model, x, timeout=30):
    doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                       "data": x.ravel().tolist()}]}
    return post(port, infer_path(model), doc, timeout=timeout)


# --------------------------------------------------------------- registry
def upload_version(port, model, files, metadata=None, timeout=30):
    """POSTs a version (multipart: `metadata`, one `file` part per file); the Resp."""
    body, headers = multipart(files, metadata)
    return http_request(port, "POST", f"/v1/registry/models/{model}/versions", body=body,
                        headers=headers, timeout=timeout)


def _pages(port, path, key):
    """Every item under `key` of a paginated listing (`path` has a query)."""
    out, token = [], ""
    while True:
        r = get(port, f"{path}&page_token={token}")
        assert r.status == 200, str(r)
        page = r.json()
        out += page[key]
        token = page["next_page_token"]
        if not token:
            return out


def all_versions(port, model):
    """Every listed version (its document), newest first."""
    return _pages(port, f"/v1/registry/models/{model}/versions?limit=200", "versions")


def alias_history(port, model, alias):
    """Every move of `alias`, oldest first."""
    return _pages(port, f"/v1/registry/models/{model}/alias-history?alias={alias}&limit=200",
                  "moves")


# ------------------------------------------------------- throttled upload
class SlowUpload:
    """A POST sent over a bare socket in `chunk`-byte pieces with `pause`
    seconds between them, in a thread of its own. It stops once `hold_at`
    bytes of the body are out and waits until `release()`, so the test can
    act (kill a dependency) at a known point of the transfer; the reply is
    read by another thread, so an early answer is heard too."""

    def __init__(self, port, path, headers, body, chunk=256 * 1024, pause=0.002,
                 hold_at=None, timeout=300):
        self.port, self.path, self.headers, self.body = port, path, headers, body
        self.chunk, self.pause, self.hold_at, self.timeout = chunk, pause, hold_at, timeout
        self.sent = 0
        self.held = threading.Event()
        self._release = threading.Event()
        self.done = threading.Event()
        self.status = None
        self.reply = b""
        self.error = None
        self.send_error = None
        self.took = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def release(self):
        self._release.set()

    def _run(self):
        started = time.monotonic()
        received = []
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        except OSError as e:
            self.error = repr(e)
            self.done.set()
            return

        def reader():
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                received.append(data)
                if _complete(b"".join(received)):
                    return

        rd = threading.Thread(target=reader, daemon=True)
        rd.start()
        try:
            head = [f"POST {self.path} HTTP/1.1", "Host: 127.0.0.1",
                    f"Content-Length: {len(self.body)}", "Connection: close"]
            head += [f"{k}: {v}" for k, v in self.headers.items()]
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            view = memoryview(self.body)
            while self.sent < len(self.body):
                if self.hold_at is not None and self.sent >= self.hold_at \
                        and not self._release.is_set():
                    self.held.set()
                    self._release.wait(self.timeout)
                n = min(self.chunk, len(self.body) - self.sent)
                sock.sendall(view[self.sent:self.sent + n])
                self.sent += n
                if self.pause:
                    time.sleep(self.pause)
        except OSError as e:  # the server may answer and close before the end
            self.send_error = repr(e)
        self.held.set()
        rd.join(self.timeout)
        sock.close()
        self.took = time.monotonic() - started
        data = b"".join(received)
        if data.startswith(b"HTTP/1."):
            head, _, rest = data.partition(b"\r\n\r\n")
            self.status = int(head.split()[1])
            self.reply = rest
        else:
            self.error = f"no HTTP reply (sent {self.sent} bytes, send error " \
                         f"{self.send_error}): {data[:200]!r}"
        self.done.set()

    def wait(self, timeout=None):
        assert self.done.wait(timeout or self.timeout), "the upload never finished"
        return self

    def error_message(self):
        try:
            return json.loads(self.reply).get("error")
        except ValueError:
            return None


def _complete(data):
    """Whether `data` holds a whole HTTP response (headers and body)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value.strip())
    return False


# ------------------------------------------------------------------ files
def files_under(root):
    """Every file under `root` (relative paths, sorted); [] if it does not exist."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def partial_files(cache_root):
    """Files of the artifact cache that are partial or temporary: anything in
    its tmp/ directory, and any *.part, *.tmp or *.partial file anywhere."""
    return [rel for rel in files_under(cache_root)
            if rel.startswith("tmp/") or Path(rel).name.endswith((".part", ".tmp", ".partial"))
            or ".tmp." in Path(rel).name]
