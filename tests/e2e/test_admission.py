"""Admission by deadline, in both topologies: a model's batcher refuses at
once a request it predicts would finish past its deadline (the model's
latency objective, or the request's own timeout), with 503 / UNAVAILABLE, a
Retry-After and the reason, and never runs it.

`slo` is `slow` (a batch of 4 rows takes a few hundred milliseconds) with a
latency objective of 1 s and room for 64 queued requests, so only the queue
bound of admission is in play. Each inference process first runs one batch
(a cold model admits everything: nothing is measured yet). Then a burst of
full batches, many more than one objective's worth per process, arrives at
once: the ones at the back must be refused, and the refused ones must never
reach an instance (the executions counted are the admitted requests').
Nothing here is timed: which requests are admitted depends on the machine's
speed, but every answer must be a 200 with the right output or a typed 503
with Retry-After.

`small_queue` is `slow` without an objective and with a queue of 2: its
"exceeds maximum queue size" answers carry Retry-After too, straight from
the inference role (the gateway adds one to any 503 without it, so these
requests go to an inference process's own port).
"""

import shutil
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc.service_pb2 as pb
import tritonclient.grpc.service_pb2_grpc as pb_grpc

from helpers import (decode_response, infer_path, metric_values, ort_reference, parse_metrics,
                     post, slow_request, http_request)
from topology import TOPOLOGIES, start_topology

OBJECTIVE_MS = 1000
BURST_PER_PROCESS = 16
REQUEST_TIMEOUT = 180


def with_objective(config):
    config = config.replace("max_queue_size = 8", "max_queue_size = 64")
    return f"latency_objective_ms = {OBJECTIVE_MS}\n" + config


def with_small_queue(config):
    return config.replace("max_queue_size = 8", "max_queue_size = 2")


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topo(request, models_repo, tmp_path_factory):
    repo = tmp_path_factory.mktemp("admission_models")
    for name, edit in [("slo", with_objective), ("small_queue", with_small_queue)]:
        shutil.copytree(models_repo / "slow", repo / name)
        config = repo / name / "config.toml"
        config.write_text(edit(config.read_text()))
    t = start_topology(request.param, repo, tmp_path_factory.mktemp("admission_data"))
    yield t
    t.stop()


def metrics(proc):
    r = http_request(proc.metrics_port, "GET", "/metrics")
    assert r.status == 200, r
    samples, _ = parse_metrics(r.body.decode())
    return samples


def totals(topo, model):
    """(deadline refusals, executions) of `model` over every inference process."""
    refused = executions = 0
    for proc in topo.inference:
        samples = metrics(proc)
        refused += sum(metric_values(samples, "mlserve_inference_request_failure_total",
                                     model=model, reason="deadline"))
        executions += sum(metric_values(samples, "mlserve_inference_exec_count_total", model=model))
    return refused, executions


def warm(topo, model, doc):
    """One batch on every inference process, so each has a measured cost."""
    for proc in topo.inference:
        r = post(proc.http_port, infer_path(model), doc, timeout=REQUEST_TIMEOUT)
        assert r.status == 200, r


def retry_after_of(message):
    """The seconds a refusal's message names ("...; retry in N s")."""
    return int(message.rsplit("retry in ", 1)[1].split()[0])


def test_a_burst_past_the_objective_is_refused_at_once_with_retry_after(topo):
    doc, x = slow_request(seed=5, batch=4)
    expected = ort_reference(topo.models, "slo", {"INPUT0": x})["OUTPUT0"]
    warm(topo, "slo", doc)
    refused_before, executions_before = totals(topo, "slo")

    burst = BURST_PER_PROCESS * len(topo.inference)
    port = topo.gateway.gateway_http_port
    with ThreadPoolExecutor(burst) as pool:
        results = list(pool.map(
            lambda _: post(port, infer_path("slo"), doc, timeout=REQUEST_TIMEOUT), range(burst)))

    assert {r.status for r in results} <= {200, 503}, [str(r) for r in results if r.status not in (200, 503)]
    refused = [r for r in results if r.status == 503]
    assert refused, f"none of {burst} full batches was refused with an objective of {OBJECTIVE_MS} ms"
    for r in refused:
        message = r.error()
        assert "past its deadline" in message, message
        assert int(r.headers["retry-after"]) >= 1, r.headers
        assert int(r.headers["retry-after"]) == retry_after_of(message), (r.headers, message)
    for r in results:
        if r.status == 200:
            np.testing.assert_allclose(decode_response(r)["OUTPUT0"], expected, rtol=1e-5, atol=1e-6)

    refused_after, executions_after = totals(topo, "slo")
    assert refused_after - refused_before == len(refused), (refused_before, refused_after, len(refused))
    # Every admitted request ran, alone in its batch (4 rows fill one); no
    # refused one did.
    admitted = burst - len(refused)
    assert executions_after - executions_before == admitted, (
        f"{executions_after - executions_before} batches ran for {admitted} admitted requests")
    for proc in topo.inference:
        waits = metric_values(metrics(proc), "mlserve_inference_predicted_wait_seconds", model="slo")
        assert len(waits) == 1 and waits[0] > 0, waits


def test_a_grpc_refusal_is_unavailable_with_retry_after_metadata(topo):
    doc, x = slow_request(seed=6, batch=4)
    warm(topo, "slo", doc)
    request = pb.ModelInferRequest(model_name="slo")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[4, 256])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    channel = grpc.insecure_channel(topo.grpc_url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)

    def call(_):
        try:
            stub.ModelInfer(request, timeout=REQUEST_TIMEOUT)
            return None
        except grpc.RpcError as err:
            return err

    burst = BURST_PER_PROCESS * len(topo.inference)
    with ThreadPoolExecutor(burst) as pool:
        errors = [e for e in pool.map(call, range(burst)) if e is not None]
    channel.close()
    assert errors, f"none of {burst} full batches over gRPC was refused"
    for err in errors:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        assert "past its deadline" in err.details(), err.details()
        trailers = {**dict(err.initial_metadata() or ()), **dict(err.trailing_metadata() or ())}
        assert int(trailers["retry-after"]) == retry_after_of(err.details()), trailers


def test_a_full_queue_answers_with_retry_after_from_the_inference_role(topo):
    doc, _ = slow_request(seed=7, batch=4)
    proc = topo.inference[0]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda _: post(proc.http_port, infer_path("small_queue"), doc, timeout=REQUEST_TIMEOUT),
            range(8)))
    full = [r for r in results if r.status == 503]
    assert {r.status for r in results} <= {200, 503}, [str(r) for r in results]
    assert full, "8 full batches at once never overflowed a queue of 2"
    for r in full:
        assert "exceeds maximum queue size" in r.error(), r.error()
        assert int(r.headers["retry-after"]) >= 1, r.headers
