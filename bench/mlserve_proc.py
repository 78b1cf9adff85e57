"""An mlserve process for benchmarks, and CPU accounting from /proc.

`Server` starts the binary on free ports (port 0), reads the ports from its
`listening` log lines, waits for `server ready`, and stops it with SIGTERM
(then SIGKILL). Its log goes to a file, never to a pipe that could fill.
"""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

_LISTENING = re.compile(
    r'service"?[=:]\s*"?(gateway-http|gateway-grpc|http|grpc|metrics)\b.*?addr"?[=:]\s*"?([0-9.]+):(\d+)')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Server:
    """One mlserve serving `repository`, with `args` added to its command line.

    It runs in `cwd` (default: this process's), where it reads
    `config/mlserve.toml`: a build of another commit runs in its own checkout,
    so it reads the config file its own version understands.
    """

    def __init__(self, binary, repository, args, log_path, cwd=None, prefix=(),
                 start_timeout=START_TIMEOUT_S):
        """`prefix` runs the binary under another program (valgrind and its
        options); such a start may take longer than `start_timeout`."""
        self.binary = Path(binary)
        self.prefix = list(prefix)
        self.start_timeout = start_timeout
        self.cwd = cwd
        self.repository = Path(repository)
        self.args = list(args)
        self.log_path = Path(log_path)
        self.proc = None
        self.ports = {}

    @property
    def pid(self):
        return self.proc.pid

    def url(self, service):
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [*self.prefix, str(self.binary), "--model-repository", str(self.repository), "--host", "127.0.0.1",
               "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
               "--gateway-http-port", "0", "--gateway-grpc-port", "0",
               "--data-dir", str(self.log_path.with_suffix(".data")), *self.args]
        env = dict(os.environ, NO_COLOR="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                         cwd=self.cwd)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            text = _ANSI.sub("", self.log_path.read_text(errors="replace"))
            for service, _, port in _LISTENING.findall(text):
                self.ports[service] = int(port)
            if "server ready" in text and {"http", "grpc"} <= self.ports.keys():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"mlserve did not become ready (log {self.log_path}):\n{tail}")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def model_stats(self, model):
        """The model's entry of `GET /v2/models/{model}/stats` (Triton's shape)."""
        with urllib.request.urlopen(f"{self.url('http')}/v2/models/{model}/stats", timeout=10) as r:
            return json.loads(r.read())["model_stats"][0]


def _stat_ticks(path):
    """(comm, utime + stime in ticks) of a /proc stat file."""
    text = Path(path).read_text()
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, int(fields[11]) + int(fields[12])


def cpu_seconds(pid):
    """CPU seconds (user + system) the process used so far, exited threads included."""
    return _stat_ticks(f"/proc/{pid}/stat")[1] / CLK_TCK


def thread_group(comm):
    """A readable group for a thread name of mlserve."""
    if comm.startswith("inst-"):
        return "onnxruntime instance"
    if comm.startswith("sched-"):
        return "batcher"
    if comm.startswith(("tokio-runtime", "tokio-rt")):
        return "tokio (workers + blocking)"
    if comm.startswith("mlserve-http"):
        return "HTTP I/O threads"
    return "other"


def thread_cpu(pid):
    """{tid: (group, cpu seconds)} of the process's live threads."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm, ticks = _stat_ticks(task / "stat")
        except (OSError, ValueError):
            continue  # the thread just exited
        out[task.name] = (thread_group(comm), ticks / CLK_TCK)
    return out
