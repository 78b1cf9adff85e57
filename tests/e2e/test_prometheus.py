"""A real Prometheus scrapes mlserve under load, in both topologies, and the
p99 it computes from the latency histograms agrees with the load
generator's own p99 of the same requests, to within one bucket.

Prometheus (Debian's package, installed by scripts/setup.sh) runs on a free
port with a scratch storage directory and scrapes every process's metrics
port each second. `loadgen closed` drives `heavy` (24 dense layers, batch 1,
enough in flight to queue) through the gateway's HTTP port; it is the only
traffic to that route, so the histograms and the load generator describe
the same requests. The histograms are cumulative since the process
started, so the query reads them as they are at the last scrape, after
the load. Agreement is about the two measurements, not about speed: no
threshold depends on the machine.
"""

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from helpers import copy_models, metric_values, parse_metrics, wait_until
from server import REPO_ROOT
from topology import TOPOLOGIES, start_topology

MODEL = "heavy"
FIRST_BUCKET_S = 25e-6  # mlserve's latency buckets: 25 us x 2^k
LOADGEN = REPO_ROOT / "target" / "release" / "loadgen"


def bucket_index(seconds):
    """Which latency bucket (0: <= 25 us, k: <= 25 us x 2^k) holds `seconds`."""
    return max(0, math.ceil(math.log2(seconds / FIRST_BUCKET_S) - 1e-9))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """A Prometheus process scraping `targets` (host:port) every second."""

    def __init__(self, tmp, targets):
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
            "scrape_configs:\n  - job_name: mlserve\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n")
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, expr):
        """The instant vector of `expr` now: [(labels, value)]."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return [(s["metric"], float(s["value"][1])) for s in doc["data"]["result"]]

    def scalar(self, expr):
        result = self.query(expr)
        return result[0][1] if result else None

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def scrape_count(port, name, **labels):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        samples, _ = parse_metrics(r.read().decode())
    return sum(metric_values(samples, name, **labels))


@pytest.fixture(params=TOPOLOGIES)
def scraped(request, models_repo, tmp_path):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: run scripts/setup.sh")
    repo = copy_models(models_repo, tmp_path / "repo", [MODEL])
    topo = start_topology(request.param, repo, tmp_path / "data", inference_count=1)
    procs = {id(p): p for p in [topo.gateway, *topo.inference]}.values()
    prom = Prometheus(tmp_path, [f"127.0.0.1:{p.metrics_port}" for p in procs])
    try:
        wait_until(prom.ready, 60, "prometheus did not become ready")
        wait_until(lambda: prom.scalar("sum(up)") == len(procs), 60,
                   f"prometheus does not see every target up: {prom.query('up')}")
        yield topo, prom
    finally:
        prom.stop()
        topo.stop()


def test_histogram_p99_agrees_with_the_load_generator(scraped, tmp_path):
    topo, prom = scraped
    report_path = tmp_path / "loadgen.json"
    subprocess.run([str(LOADGEN), "closed", "--target", f"http://{topo.http_url}",
                    "--protocol", "http-binary", "--model", MODEL, "--batch", "1",
                    "--concurrency", "8", "--duration", "6", "--warmup", "0", "--quiet",
                    "--json-out", str(report_path)], check=True, cwd=REPO_ROOT, timeout=120)
    report = json.loads(report_path.read_text())
    assert report["error_total"] == 0, report["errors"]
    client_p99 = report["latency_ms"]["p99"] / 1e3

    gateway = 'mlserve_gateway_request_duration_seconds{route="/v2/models/{model}/infer",' \
              f'model="{MODEL}",status_class="2xx"}}'
    inference = f'mlserve_inference_request_duration_seconds{{model="{MODEL}"}}'
    # Prometheus has the final state once its last scrape shows each
    # process's own final count. (A request the load generator gave up on at
    # its end may have been served without the gateway finishing it.)
    finals = {
        inference: scrape_count(topo.inference[0].metrics_port,
                                "mlserve_inference_request_duration_seconds_count", model=MODEL),
        gateway: scrape_count(topo.gateway.metrics_port, "mlserve_gateway_request_duration_seconds_count",
                              route="/v2/models/{model}/infer", model=MODEL, status_class="2xx"),
    }
    for series, final in finals.items():
        assert final >= report["requests"] > 0, (series, final, report["requests"])
        count = f'sum({series.replace("_seconds{", "_seconds_count{")})'
        wait_until(lambda: prom.scalar(count) == final, 30,
                   f"prometheus never scraped the final count {final} of {count}")

    for name, series in [("gateway", gateway), ("inference", inference)]:
        buckets = series.replace("_seconds{", "_seconds_bucket{")
        p99 = prom.scalar(f"histogram_quantile(0.99, sum by (le) ({buckets}))")
        assert p99 is not None and p99 > 0, (name, prom.query(buckets))
        assert abs(bucket_index(p99) - bucket_index(client_p99)) <= 1, \
            f"{topo.kind} {name}: Prometheus p99 {p99 * 1e3:.3f} ms, loadgen p99 {client_p99 * 1e3:.3f} ms " \
            f"(buckets {bucket_index(p99)} and {bucket_index(client_p99)})"
