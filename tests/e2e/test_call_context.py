"""The call context end to end in the split topology (a gateway process in
front of one inference process over gRPC): a deadline given at the gateway
expires in the remote inference queue, the request id is echoed, and the
W3C traceparent sent to the gateway shows on the inference process's span;
a gRPC stream keeps the request id and trace (its deadline crossing is
checked by the adapter tests in modules/proto)."""

import json
import queue
import threading
import uuid

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from helpers import (copy_models, get, http_request, metric_values, parse_metrics, post,
                     slow_request, wait_until)
from topology import start_topology

# The inference process logs each answered request inside the span of its
# RPC, which carries the request id and the traceparent.
LOG_FILTER = "info,mlserve_proto=debug,mlserve_inference=debug"
REQUEST_TIMEOUT = 60


@pytest.fixture(scope="module")
def split(models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("ctx_models"), ["slow", "simple"])
    t = start_topology("split", repo, tmp_path_factory.mktemp("ctx_data"), inference_count=1,
                       env={"RUST_LOG": LOG_FILTER})
    yield t
    t.stop()


def traceparent():
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


def slow_stats(t):
    """(executions, successes, failures) of `slow` on the inference process."""
    r = get(t.inference[0].http_port, "/v2/models/slow/stats")
    assert r.status == 200, r
    stats = json.loads(r.body)["model_stats"][0]
    inference = stats["inference_stats"]
    return stats["execution_count"], inference["success"]["count"], inference["fail"]["count"]


def queue_depth(t):
    r = http_request(t.inference[0].metrics_port, "GET", "/metrics")
    samples, _ = parse_metrics(r.body.decode())
    return sum(metric_values(samples, "mlserve_inference_queue_depth", model="slow"))


def test_a_gateway_deadline_expires_in_the_remote_queue_without_running(split):
    """Ordered by what the server reports, not by sleeps: two full batches
    are sent (one executes, one waits in the queue), then the late request,
    which queues behind them and expires there."""
    gateway = split.gateway.gateway_http_port
    executions, successes, failures = slow_stats(split)
    answers = queue.Queue()

    def blocker(seed):
        doc, _ = slow_request(seed=seed, batch=4)  # one full batch each
        answers.put(post(gateway, "/v2/models/slow/infer", doc, timeout=REQUEST_TIMEOUT))

    busy = [threading.Thread(target=blocker, args=(seed,)) for seed in (1, 2)]
    for t in busy:
        t.start()
    wait_until(lambda: queue_depth(split) >= 1 or not any(t.is_alive() for t in busy), 30,
               "no blocking request ever waited in the queue")
    doc, _ = slow_request(seed=3, batch=4)
    r = post(gateway, "/v2/models/slow/infer", doc, timeout=REQUEST_TIMEOUT,
             headers={"Mlserve-Timeout-Ms": "150", "X-Request-Id": "late-1"})
    assert r.status == 503, r
    message = r.error().lower()
    assert "timeout expired" in message or "deadline" in message, message
    assert r.headers.get("x-request-id") == "late-1"
    for t in busy:
        t.join(timeout=REQUEST_TIMEOUT)
    assert [answers.get_nowait().status for _ in busy] == [200, 200]
    # The expired request failed in the inference process's queue and never ran.
    now = slow_stats(split)
    assert now[0] == executions + 2, f"executions {executions} -> {now[0]}: the late request ran"
    assert now[1] == successes + 2
    assert now[2] == failures + 1, "the inference process did not record the expiry"


def test_request_id_and_traceparent_reach_the_inference_span(split):
    trace, rid = traceparent(), f"rid-{uuid.uuid4().hex[:8]}"
    doc = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
                      {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [2] * 16}]}
    r = post(split.gateway.gateway_http_port, "/v2/models/simple/infer", doc,
             headers={"traceparent": trace, "X-Request-Id": rid})
    assert r.status == 200, r
    assert r.headers.get("x-request-id") == rid
    inference = split.inference[0]
    wait_until(lambda: trace in inference.log, 10, "the traceparent never reached the inference span")
    line = next(l for l in inference.log.splitlines() if trace in l)
    assert rid in line and "inference answered" in line, line


def test_a_stream_keeps_its_context(split):
    trace, rid = traceparent(), f"stream-{uuid.uuid4().hex[:8]}"
    channel = grpc.insecure_channel(split.grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    def request(i):
        req = service_pb2.ModelInferRequest(model_name="simple", id=f"s{i}")
        for name in ("INPUT0", "INPUT1"):
            t = req.inputs.add(name=name, datatype="INT32", shape=[1, 16])
            t.contents.int_contents.extend([i] * 16)
        return req

    call = stub.ModelStreamInfer(iter([request(i) for i in range(3)]), timeout=30,
                                 metadata=[("traceparent", trace), ("x-request-id", rid)])
    answers = list(call)
    assert [a.error_message for a in answers] == ["", "", ""]
    assert sorted(a.infer_response.id for a in answers) == ["s0", "s1", "s2"]
    assert dict(call.initial_metadata()).get("x-request-id") == rid
    inference = split.inference[0]
    wait_until(lambda: inference.log.count(trace) >= 3, 10,
               "the stream's requests did not carry the traceparent to the inference span")
    channel.close()
