"""The load generator's fixed pool (`loadgen open --connections N`, as wrk2
keeps): at most N requests on the wire, the rest wait in the client and are
all sent and answered. The server allows one connection more than the pool
(the generator's metadata probe), so a generator that opened a connection
per outstanding request would have connections refused."""

import json
import subprocess

from helpers import copy_models, get, metric_values, parse_metrics
from server import REPO_ROOT, start_server

LOADGEN = REPO_ROOT / "target" / "release" / "loadgen"
MODEL = "slow"
POOL = 2


def refused(port):
    samples, _ = parse_metrics(get(port, "/metrics").body.decode())
    return sum(metric_values(samples, "mlserve_connections_refused_total", protocol="http"))


def test_a_fixed_pool_sends_every_arrival_over_its_own_connections(models_repo, tmp_path):
    repo = copy_models(models_repo, tmp_path / "repo", [MODEL])
    env = {"MLSERVE_SERVER__HTTP_MAX_CONNECTIONS": str(POOL + 1)}
    with start_server(repo, env=env) as server:
        report_path = tmp_path / "open.json"
        subprocess.run([str(LOADGEN), "open", "--target", f"http://127.0.0.1:{server.http_port}",
                        "--model", MODEL, "--rate", "10", "--arrivals", "constant", "--duration", "1",
                        "--connections", str(POOL), "--warm-connections", str(POOL), "--timeout", "30",
                        "--quiet", "--json-out", str(report_path)],
                       check=True, cwd=REPO_ROOT, timeout=120)
        report = json.loads(report_path.read_text())
        assert report["connections"] == POOL
        assert report["offered"] == 10
        assert report["ok"] == 10, report["errors"]
        assert report["error_total"] == 0, report["errors"]
        assert refused(server.metrics_port) == 0
