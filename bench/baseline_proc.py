"""The Flask + gunicorn baseline as a benchmark process, and CPU accounting
over a process tree.

`Flask` starts `bench/baselines/run_flask.sh REPO PORT WORKERS` on a free
port (picked by binding port 0 and closing it; the script needs a number),
waits until every worker answers, and stops the whole tree with SIGTERM
(then SIGKILL). Its log goes to a file.
"""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from mlserve_proc import CLK_TCK

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0


def free_port():
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    """Direct child pids of `pid` (all its threads' children)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree(pid):
    """`pid` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def tree_cpu_seconds(pid):
    """{pid: user + system CPU seconds} of the live processes of the tree."""
    out = {}
    for p in tree(pid):
        try:
            text = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        out[p] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_delta(before, after):
    """CPU seconds the tree spent between two `tree_cpu_seconds` snapshots
    (a process born in between counts from zero)."""
    return sum(t - before.get(p, 0.0) for p, t in after.items())


class Flask:
    """The paper's Flask monolith: gunicorn with `workers` sync workers, each
    loading every model of `repository` into single-threaded ONNX Runtime."""

    def __init__(self, repository, workers, log_path):
        self.repository = Path(repository)
        self.workers = workers
        self.log_path = Path(log_path)
        self.proc = None
        self.port = None

    @property
    def pid(self):
        return self.proc.pid

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, model):
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["bash", str(REPO / "bench" / "baselines" / "run_flask.sh"), str(self.repository),
               str(self.port), str(self.workers)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            # Every worker loads the models before it accepts; wait until all
            # of them exist and the model answers its metadata.
            if len(children(self.pid)) >= self.workers and self._answers(model):
                return self
            time.sleep(0.25)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"the Flask baseline did not become ready (log {self.log_path}):\n{tail}")

    def _answers(self, model):
        try:
            with urllib.request.urlopen(f"{self.url()}/v2/models/{model}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        stop_tree(self.proc, signal.SIGTERM)


def stop_tree(proc, signum, timeout=STOP_TIMEOUT_S):
    """Stops a server process with `signum` (SIGKILL after `timeout` s), then
    kills what it left of its tree (workers, stubs) if it had to be killed."""
    if proc is None or proc.poll() is not None:
        return
    pids = tree(proc.pid)
    proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for p in pids[1:]:  # children left behind by a killed parent
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
