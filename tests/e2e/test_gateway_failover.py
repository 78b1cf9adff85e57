"""Killing one of two inference processes under load (split topology):
requests in flight on it fail with a typed 503 (never retried: they may have
run) or are retried where safe (connection refused), the rest go to the
survivor, and no request outlives its deadline.

Every check is about behaviour, none about the machine's speed: how many
requests succeed while the survivor carries the whole load depends on how
fast it runs `slow`, so the load phase only requires typed answers within
their deadline; that the survivor serves is shown once the dead endpoint is
out of rotation, by a sequence of requests that must all succeed."""

import threading
import time

from helpers import copy_models, get, parse_metrics, post, slow_request, wait_until
from topology import start_topology

DEADLINE_MS = 3000
# What a request may take past its deadline: the gateway's timer and the
# client's threads on a loaded machine. A hang runs to the client's 30 s.
SLACK_S = 2.0
THREADS = 6
# Generous bounds for the polls below; reaching one is a failure, not a skip.
POLL_S = 60


def endpoint_gauge(topo, name, dead):
    """The gateway's `name{endpoint=...}` for the endpoint whose name contains `dead`."""
    samples, _ = parse_metrics(get(topo.gateway.metrics_port, "/metrics").body.decode())
    values = [v for n, labels, v in samples
              if n == name and dead in labels.get("endpoint", "")]
    assert len(values) == 1, f"{name} for {dead}: {values}"
    return values[0]


def test_killing_an_inference_process_under_load(models_repo, tmp_path):
    repo = copy_models(models_repo, tmp_path / "models", ["slow"])
    topo = start_topology("split", repo, tmp_path / "data")
    try:
        port = topo.gateway.gateway_http_port
        body, _ = slow_request(batch=1)
        victim = topo.inference[0]
        dead = f"127.0.0.1:{victim.grpc_port}"
        stop = threading.Event()
        results = []  # (started, elapsed, status, response)
        lock = threading.Lock()

        def load():
            while not stop.is_set():
                started = time.monotonic()
                r = post(port, "/v2/models/slow/infer", body,
                         headers={"Mlserve-Timeout-Ms": str(DEADLINE_MS)}, timeout=30)
                with lock:
                    results.append((started, time.monotonic() - started, r.status, r))

        def answered_since(t):
            with lock:
                return sum(started > t for started, *_ in results)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(THREADS)]
        for t in threads:
            t.start()
        try:
            # Kill under load: while the victim has requests in flight.
            wait_until(lambda: endpoint_gauge(topo, "mlserve_gateway_endpoint_outstanding", dead) >= 1,
                       POLL_S, f"no request in flight on {dead}\n{topo.describe()}")
            victim.proc.kill()
            killed_at = time.monotonic()
            # The gateway takes the dead endpoint out of rotation (a transport
            # failure or a failed health check), and keeps it out.
            wait_until(lambda: endpoint_gauge(topo, "mlserve_gateway_endpoint_healthy", dead) == 0,
                       POLL_S, f"{dead} was never ejected\n{topo.describe()}")
            ejected_at = time.monotonic()
            # Load goes on after the ejection: a round of answers from every thread.
            wait_until(lambda: answered_since(ejected_at) >= THREADS, POLL_S,
                       "answers to requests sent after the ejection")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=DEADLINE_MS / 1000 + SLACK_S + 30)
        assert not any(t.is_alive() for t in threads), "a request hung"

        statuses = {}
        for started, elapsed, status, r in results:
            statuses[status] = statuses.get(status, 0) + 1
            # 200, or a typed 503: an OIP error body and a Retry-After.
            assert status in (200, 503), f"unexpected answer {r}"
            if status == 503:
                assert r.error(), "503 carries a JSON error"
                assert int(r.headers["retry-after"]) >= 1
            # No request outlives its deadline.
            assert elapsed < DEADLINE_MS / 1000 + SLACK_S, f"request took {elapsed:.2f} s: {r}"
            # Only requests sent before the ejection can fail on the dead
            # endpoint (those in flight at the kill, or sent before the
            # gateway saw it fail); the rest go to the survivor, where a
            # 503 is its own (queue full, deadline), never the dead one's.
            if status == 503 and dead in r.error():
                assert started < ejected_at, \
                    f"a request sent after the ejection went to the dead endpoint: {r}\n{topo.describe()}"
        assert any(started < killed_at for started, *_ in results), "load ran before the kill"
        print(f"\nanswers under load: {statuses}")

        # With the dead endpoint out of rotation, the survivor serves: fresh
        # requests (the default deadline) all succeed.
        for _ in range(5):
            r = post(port, "/v2/models/slow/infer", body, timeout=60)
            assert r.status == 200, f"{r}\n{topo.describe()}"
        assert endpoint_gauge(topo, "mlserve_gateway_endpoint_healthy", dead) == 0, \
            "the dead endpoint stays out of rotation"
    finally:
        topo.stop()
