"""Real Triton Inference Server as a benchmark peer: the tritonserver binary
of the nvidia-pytriton wheel, its python backend running the model's ONNX
file with onnxruntime ("Triton (python backend, onnxruntime)").

The wheel has no onnxruntime backend, only the python one, so this is what
Triton serving an ONNX model with that wheel looks like.  Install it with
`bash bench/triton/setup.sh` (a venv of its own, bench/.venv-triton).

- `write_model(repo, name, model_dir, ...)` turns an mlserve model directory
  (config.toml + <v>/model.onnx, as scripts/make_models.py writes them) into
  a Triton model: config.pbtxt with `backend: "python"`, the same
  max_batch_size, dynamic batching (preferred sizes, max_queue_delay,
  max_queue_size) and instance count, and a version directory holding
  model.onnx and model.py (bench/baselines/triton_model.py).
- `Triton` starts tritonserver on free ports, explicit model control (the
  models are loaded at start; `load(model)` reloads one, picking up new
  version directories), waits until every model is ready, and stops it
  with SIGINT (then SIGKILL).  Its log goes to a file.

How it must be run (what pytriton's own launcher does, pytriton/triton.py
and pytriton/server/triton_server.py): the binary finds its libraries
through its RPATH (nvidia_pytriton.libs); `--backend-directory` must hold
`python/libtriton_python.so` and, next to it, the stub for the Python the
venv runs (`python_backend_stubs/3.X/triton_python_backend_stub`, which
links the system's libpython3.X.so.1.0), so a backend directory is
assembled per server; the stub's interpreter finds onnxruntime and numpy
through PYTHONPATH (the venv's site-packages) and, being a copy, the
wheel's bundled libraries through LD_LIBRARY_PATH (nvidia_pytriton.libs).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from baseline_proc import free_port, stop_tree  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "bench" / ".venv-triton"
LABEL = "Triton (python backend, onnxruntime)"
MODEL_PY = Path(__file__).resolve().parent / "triton_model.py"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
LOAD_TIMEOUT_S = 120.0


def add_queue_bound_option(parser):
    """`--triton-queue-bound on|off` for the bench scripts (see config_pbtxt)."""
    parser.add_argument("--triton-queue-bound", default="on", choices=["on", "off"],
                        help="give Triton the models' max_queue_size (on, as mlserve) or leave it "
                             "unbounded (off): with the bound its batcher sometimes sleeps 500 ms")


class Install:
    """Where the wheel put tritonserver, and the venv's Python version."""

    def __init__(self, venv=VENV):
        self.venv = Path(venv)
        found = sorted(self.venv.glob("lib/python3.*/site-packages/pytriton/tritonserver"))
        if not found:
            raise FileNotFoundError(f"no nvidia-pytriton in {self.venv}: run `bash bench/triton/setup.sh`")
        self.root = found[0]
        self.site_packages = self.root.parents[1]
        self.python_version = self.site_packages.parent.name.removeprefix("python")
        self.binary = self.root / "bin" / "tritonserver"
        self.stub = self.root / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    def backend_directory(self, dst):
        """dst/python/: the python backend with the stub of this venv's Python."""
        python = Path(dst) / "python"
        python.mkdir(parents=True, exist_ok=True)
        for src in (self.root / "backends" / "python").glob("*.*"):
            shutil.copy2(src, python / src.name)
        shutil.copy2(self.stub, python / "triton_python_backend_stub")
        return Path(dst)


def installed(venv=VENV):
    """True when bench/triton/setup.sh has set the venv up."""
    try:
        install = Install(venv)
    except FileNotFoundError:
        return False
    return install.binary.is_file() and install.stub.is_file() and (
        install.site_packages / "onnxruntime").is_dir()


def _dims(dims):
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensors(kind, entries):
    """input/output blocks. Triton rejects empty `dims` ("must specify
    'dims'"), so a per-row scalar (mlserve's `dims = []`, e.g. tabular's
    label) is `dims: [ 1 ]` with `reshape: { shape: [ ] }`: the model
    produces [batch] and Triton answers [batch, 1]."""
    out = []
    for t in entries:
        dims = f"  dims: {_dims(t['dims'])}" if t["dims"] else "  dims: [ 1 ]\n  reshape: { shape: [ ] }"
        out.append(f'{kind} {{\n  name: "{t["name"]}"\n  data_type: {t["data_type"]}\n{dims}\n}}')
    return out


def config_pbtxt(name, config, intra_threads, instances=None, queue_bound=True):
    """Triton's config.pbtxt for an mlserve config.toml (parsed): the python
    backend, the same batch size, dynamic batching and instance count.

    `queue_bound=False` leaves out `default_queue_policy { max_queue_size }`:
    with it, Triton's dynamic batcher (this wheel's 2.x core) now and then
    sleeps its idle wait, `default_wait_microseconds` = 500 ms, with
    requests queued (p99.9 ~502 ms at 8 requests in flight, tabular, on this
    2-core machine; none without the bound)."""
    lines = [f'name: "{name}"', 'backend: "python"', f"max_batch_size: {config.get('max_batch_size', 0)}"]
    lines += _tensors("input", config.get("input", []))
    lines += _tensors("output", config.get("output", []))
    batching = config.get("dynamic_batching")
    if batching is not None:
        policy = batching.get("default_queue_policy", {})
        body = []
        if batching.get("preferred_batch_size"):
            body.append(f"  preferred_batch_size: {_dims(batching['preferred_batch_size'])}")
        body.append(f"  max_queue_delay_microseconds: {batching.get('max_queue_delay_microseconds', 0)}")
        if policy.get("max_queue_size") and queue_bound:
            body.append(f"  default_queue_policy {{ max_queue_size: {policy['max_queue_size']} }}")
        lines.append("dynamic_batching {\n" + "\n".join(body) + "\n}")
    count = instances or sum(g.get("count", 1) for g in config.get("instance_group", [])) or 1
    lines.append(f"instance_group [ {{ count: {count}\n  kind: KIND_CPU }} ]")
    lines.append(f'parameters {{ key: "intra_op_threads"\n  value {{ string_value: "{intra_threads}" }} }}')
    return "\n".join(lines) + "\n"


def write_model(repo, name, model_dir, intra_threads, version=1, instances=None, onnx=None, queue_bound=True):
    """repo/name/config.pbtxt and repo/name/<version>/{model.onnx, model.py}
    from an mlserve model directory (its config.toml and highest version's
    model.onnx, or `onnx`). Returns the version directory."""
    model_dir = Path(model_dir)
    config = tomllib.loads((model_dir / "config.toml").read_text())
    if onnx is None:
        versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
        onnx = model_dir / str(versions[-1]) / "model.onnx"
    dst = Path(repo) / name
    version_dir = dst / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(onnx, version_dir / "model.onnx")
    shutil.copy2(MODEL_PY, version_dir / "model.py")
    (dst / "config.pbtxt").write_text(config_pbtxt(name, config, intra_threads, instances, queue_bound))
    return version_dir


class Triton:
    """tritonserver serving `repository` (explicit model control, `models`
    loaded at start) on free 127.0.0.1 ports."""

    def __init__(self, repository, log_path, install=None, extra_args=()):
        self.repository = Path(repository)
        self.log_path = Path(log_path)
        self.install = install or Install()
        self.extra_args = list(extra_args)
        self.proc = None
        self.ports = {}

    @property
    def pid(self):
        return self.proc.pid

    def url(self, service="http"):
        return f"http://127.0.0.1:{self.ports[service]}"

    def address(self, service="http"):
        """host:port, the form tritonclient takes."""
        return f"127.0.0.1:{self.ports[service]}"

    def command(self, models):
        backends = self.install.backend_directory(self.log_path.with_suffix(".backends"))
        self.ports = {s: free_port() for s in ("http", "grpc", "metrics")}
        cmd = [str(self.install.binary), "--model-repository", str(self.repository),
               "--backend-directory", str(backends),
               "--cache-directory", str(self.install.root / "caches"),
               "--model-control-mode", "explicit", "--strict-readiness", "true",
               "--http-address", "127.0.0.1", "--http-port", str(self.ports["http"]),
               "--grpc-address", "127.0.0.1", "--grpc-port", str(self.ports["grpc"]),
               "--metrics-address", "127.0.0.1", "--metrics-port", str(self.ports["metrics"]),
               "--allow-gpu-metrics", "false", "--exit-on-error", "true",
               # Each stub's shared-memory pool starts at 64 MB instead of
               # 1 MB, so large batches (ResNet-50 at 32: 19 MB) do not grow it.
               "--backend-config", f"python,shm-default-byte-size={64 << 20}", *self.extra_args]
        return cmd + [f"--load-model={m}" for m in models]

    def environment(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.install.site_packages)
        # The stub's RPATH is relative to where the wheel put it; the copy
        # finds the wheel's bundled libraries (libcudart) here, as pytriton's.
        libs = str(self.install.site_packages / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (libs, env.get("LD_LIBRARY_PATH")) if p)
        env["PATH"] = f"{self.install.venv / 'bin'}:{env.get('PATH', '')}"
        env["PYTHONNOUSERSITE"] = "1"
        return env

    def start(self, models):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(models), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=self.environment(), start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._status("/v2/health/ready") == 200 and all(self.ready(m) for m in models):
                return self
            time.sleep(0.25)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"tritonserver did not become ready (log {self.log_path}):\n{tail}")

    def _status(self, path, method="GET", timeout=2.0):
        req = urllib.request.Request(f"{self.url()}{path}", method=method,
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def ready(self, model):
        return self._status(f"/v2/models/{model}/ready") == 200

    def model_stats(self, model):
        """The model's entry of `GET /v2/models/{model}/stats`."""
        with urllib.request.urlopen(f"{self.url()}/v2/models/{model}/stats", timeout=10) as r:
            return json.loads(r.read())["model_stats"][0]

    def load(self, model):
        """POST /v2/repository/models/{model}/load: Triton (re)loads the
        model from the repository, serving the versions its version policy
        picks (the latest by default). Returns when the call returns."""
        status = self._status(f"/v2/repository/models/{model}/load", method="POST", timeout=LOAD_TIMEOUT_S)
        if status != 200:
            raise RuntimeError(f"tritonserver load {model}: HTTP {status} (log {self.log_path})")

    def stop(self):
        stop_tree(self.proc, signal.SIGINT, STOP_TIMEOUT_S)
