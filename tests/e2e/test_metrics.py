"""The Prometheus endpoint: families, labels, and counts that match the
requests sent to a fresh server."""

import http.client

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from helpers import (check_simple, copy_models, infer_path, metric_values, parse_metrics,
                     post, simple_inputs, simple_json, wait_until)
from server import start_server

MODEL = {"model": "simple", "version": "1"}
HTTP_BATCHES = [1, 2, 3]
GRPC_BATCHES = [1, 2]
N_FAILED = 3


def scrape(s):
    conn = http.client.HTTPConnection("127.0.0.1", s.metrics_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200, body[:300]
        assert r.getheader("Content-Type", "").startswith("application/openmetrics-text"), \
            r.getheader("Content-Type")
        assert body.endswith("# EOF\n"), body[-200:]
        return parse_metrics(body)
    finally:
        conn.close()


def one(samples, name, **labels):
    vals = metric_values(samples, name, **labels)
    assert len(vals) == 1, f"expected one {name}{labels} sample, found {vals}: " + \
        str([(n, lab) for n, lab, _ in samples if n.startswith(name)][:10])
    return vals[0]


@pytest.fixture(scope="module")
def used_server(models_repo, tmp_path_factory):
    """A fresh server that has seen exactly: 5 successful `simple` requests
    (3 HTTP + 2 gRPC, batch sizes 1,2,3,1,2, one after another) and 3
    rejected ones (wrong shape)."""
    repo = copy_models(models_repo, tmp_path_factory.mktemp("metrics") / "repo",
                       ["simple", "identity_fp32"])
    s = start_server(repo)
    for i, b in enumerate(HTTP_BATCHES):
        doc, ins = simple_json(b, seed=i)
        check_simple(post(s.http_port, infer_path("simple"), doc), ins)
    with grpcclient.InferenceServerClient(s.grpc_url) as c:
        for i, b in enumerate(GRPC_BATCHES):
            feeds = simple_inputs(b, seed=10 + i)
            inputs = [grpcclient.InferInput(n, [b, 16], "INT32").set_data_from_numpy(a)
                      for n, a in feeds.items()]
            out = c.infer("simple", inputs, client_timeout=60).as_numpy("OUTPUT0")
            np.testing.assert_array_equal(out, feeds["INPUT0"] + feeds["INPUT1"])
    for _ in range(N_FAILED):
        bad = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 15], "data": [1] * 15},
                          {"name": "INPUT1", "datatype": "INT32", "shape": [1, 15], "data": [1] * 15}]}
        r = post(s.http_port, infer_path("simple"), bad)
        assert r.status == 400, str(r)
    n_ok = len(HTTP_BATCHES) + len(GRPC_BATCHES)
    # counters may be updated just after the response is sent
    wait_until(lambda: metric_values(scrape(s)[0], "mlserve_inference_request_success_total", **MODEL)
               == [n_ok], 10, "success counter never reached the number of successful requests")
    yield s
    s.stop()


def test_success_counter_matches_requests(used_server):
    samples, _ = scrape(used_server)
    assert one(samples, "mlserve_inference_request_success_total", **MODEL) == \
        len(HTTP_BATCHES) + len(GRPC_BATCHES)
    untouched = metric_values(samples, "mlserve_inference_request_success_total", model="identity_fp32")
    assert untouched in ([], [0.0]), untouched


def test_failure_counter_has_reason(used_server):
    samples, _ = scrape(used_server)
    failures = [(lab, v) for n, lab, v in samples
                if n == "mlserve_inference_request_failure_total" and lab.get("model") == "simple"]
    assert failures, "no mlserve_inference_request_failure_total sample for simple"
    for lab, _ in failures:
        assert lab.get("version") == "1" and lab.get("reason"), lab
    assert sum(v for _, v in failures) == N_FAILED, failures


def test_inference_and_execution_counts(used_server):
    samples, _ = scrape(used_server)
    items = sum(HTTP_BATCHES) + sum(GRPC_BATCHES)
    n_requests = len(HTTP_BATCHES) + len(GRPC_BATCHES)
    assert one(samples, "mlserve_inference_count_total", **MODEL) == items
    # the requests were sent one after another, so each ran alone
    assert one(samples, "mlserve_inference_exec_count_total", **MODEL) == n_requests


def test_duration_counters(used_server):
    samples, types = scrape(used_server)
    for name in ["queue", "compute_input", "compute_infer", "compute_output"]:
        v = one(samples, f"mlserve_inference_{name}_duration_us_total", **MODEL)
        assert v >= 0, (name, v)
    assert one(samples, "mlserve_inference_request_duration_us_total", **MODEL) > 0


def test_batch_size_histogram(used_server):
    samples, types = scrape(used_server)
    assert types.get("mlserve_inference_batch_size") == "histogram", types
    count = one(samples, "mlserve_inference_batch_size_count", **MODEL)
    total = one(samples, "mlserve_inference_batch_size_sum", **MODEL)
    assert count == len(HTTP_BATCHES) + len(GRPC_BATCHES)
    assert total == sum(HTTP_BATCHES) + sum(GRPC_BATCHES)
    buckets = [(lab["le"], v) for n, lab, v in samples
               if n == "mlserve_inference_batch_size_bucket" and lab.get("model") == "simple"]
    assert buckets and dict(buckets).get("+Inf") == count, buckets
    values = [v for _, v in sorted(buckets, key=lambda b: float(b[0]))]
    assert values == sorted(values), f"buckets are not cumulative: {buckets}"


def test_queue_depth_gauge_idle_is_zero(used_server):
    samples, types = scrape(used_server)
    assert types.get("mlserve_inference_queue_depth") == "gauge", types
    assert one(samples, "mlserve_inference_queue_depth", **MODEL) == 0


def test_metric_families_are_typed(used_server):
    _, types = scrape(used_server)
    for family in ["mlserve_inference_request_success", "mlserve_inference_request_failure",
                   "mlserve_inference_count", "mlserve_inference_exec_count"]:
        assert types.get(family) == "counter" or types.get(family + "_total") == "counter", \
            (family, {k: v for k, v in types.items() if k.startswith("mlserve_")})



def test_latency_histograms_count_every_request(used_server):
    """The request histogram counts the successful requests, the queue one
    every request that ran, the compute one every batch; buckets are
    cumulative, in seconds, from 25 us."""
    samples, types = scrape(used_server)
    n_ok = len(HTTP_BATCHES) + len(GRPC_BATCHES)
    for name in ["request", "queue", "compute"]:
        family = f"mlserve_inference_{name}_duration_seconds"
        assert types.get(family) == "histogram", (family, types.get(family))
        count = one(samples, f"{family}_count", **MODEL)
        assert count == n_ok, (family, count)
        assert one(samples, f"{family}_sum", **MODEL) > 0
        buckets = sorted(((float(lab["le"]), v) for n, lab, v in samples
                          if n == f"{family}_bucket" and lab.get("model") == "simple"))
        assert buckets[0][0] == 0.000025 and buckets[-1] == (float("inf"), count), buckets
        values = [v for _, v in buckets]
        assert values == sorted(values), buckets
