"""An API key sets its requests' scheduling priority (Triton's request
priority: level 1 is served first), in both topologies.

`slow` is copied with one row per batch and two priority levels (requests
without a priority take level 2). Eight requests with a key of no priority
fill the queues; then one request with a level-1 key arrives. It must run
before the queued ones: in first-come order it would finish last in its
process, so several of the queued requests finishing after it shows the
key's priority reached the scheduler (through gRPC metadata when split).
"""

import json
import threading
import time
import urllib.request

import pytest

from helpers import copy_models, metric_values, parse_metrics, post, slow_request, wait_until
from topology import TOPOLOGIES, start_topology

BULK = 8


def two_levels(config):
    config = config.replace("max_batch_size = 4", "max_batch_size = 1")
    config = config.replace("max_queue_size = 8", "max_queue_size = 32")
    return config.replace("[dynamic_batching]\n",
                          "[dynamic_batching]\npriority_levels = 2\ndefault_priority_level = 2\n")


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topo(request, models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("priority_models"), ["slow"])
    config = repo / "slow" / "config.toml"
    config.write_text(two_levels(config.read_text()))
    t = start_topology(request.param, repo, tmp_path_factory.mktemp("priority_data"), "--auth", "on")
    yield t
    t.stop()


def queued(topo):
    """Requests waiting in the queues of every process serving `slow`."""
    total = 0
    for proc in topo.inference:
        with urllib.request.urlopen(proc.metrics_url, timeout=10) as r:
            samples, _ = parse_metrics(r.read().decode())
        total += sum(metric_values(samples, "mlserve_inference_queue_depth", model="slow"))
    return total


def test_a_keys_priority_puts_its_requests_first(topo):
    bulk_key = topo.keys("create", "--name", "bulk").strip()
    urgent_key = topo.keys("create", "--name", "urgent", "--priority", "1").strip()
    listed = {k["name"]: k for k in map(json.loads, topo.keys("list").splitlines())}
    assert (listed["bulk"]["priority"], listed["urgent"]["priority"]) == (0, 1)

    port = topo.gateway.gateway_http_port
    finished = {}
    statuses = {}

    def send(tag, key, seed):
        doc, _ = slow_request(seed)
        resp = post(port, "/v2/models/slow/infer", doc,
                    headers={"Authorization": f"Bearer {key}"}, timeout=120)
        statuses[tag] = resp.status
        finished[tag] = time.monotonic()

    bulk = [threading.Thread(target=send, args=(f"bulk-{i}", bulk_key, i)) for i in range(BULK)]
    for t in bulk:
        t.start()
    # Every process runs one request and queues the rest.
    wait_until(lambda: queued(topo) >= BULK - len(topo.inference), 60,
               "the bulk requests did not queue up")
    urgent = threading.Thread(target=send, args=("urgent", urgent_key, 99))
    urgent.start()
    for t in [*bulk, urgent]:
        t.join(timeout=180)
    assert set(statuses.values()) == {200}, statuses
    after = [tag for tag, at in finished.items() if tag != "urgent" and at > finished["urgent"]]
    assert len(after) >= 3, (
        f"the level-1 request finished after {BULK - len(after)} of {BULK} earlier level-2 "
        f"requests; only {after} came after it")

