"""A request whose client went away is dropped before it executes (HTTP and
gRPC): it never reaches ONNX Runtime, and the server stays healthy."""

import json
import socket
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient

from helpers import http_request, wait_until


BUSY_ROWS = 4  # slow's max_batch_size: a busy request is a batch of its own


def slow_body(value, rows=1):
    data = np.full((rows, 256), value, dtype=np.float32)
    return json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [rows, 256],
                                   "data": data.flatten().tolist()}]}).encode()


def abandon_http(port, body):
    """Sends a request and closes the connection without reading the answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body)
    time.sleep(0.02)
    sock.close()


def stats(server):
    resp = http_request(server.http_port, "GET", "/v2/models/slow/stats")
    assert resp.status == 200
    return json.loads(resp.body)["model_stats"][0]


def test_abandoned_requests_never_execute(make_server, models_repo):
    """Ordered by what the server reports, not by sleeps: the abandoned
    requests are sent once one full busy batch executes and another waits,
    so a whole execution stands between them and the model however fast it
    runs; afterwards one more request, queued behind anything left, is the
    barrier before the count."""
    server = make_server(models_repo)
    port = server.http_port
    answers = []

    def busy_request():
        answers.append(http_request(port, "POST", "/v2/models/slow/infer",
                                    slow_body(0.5, BUSY_ROWS), timeout=120))

    busy = [threading.Thread(target=busy_request) for _ in range(2)]
    for t in busy:
        t.start()
    # The statistics API's queue_depth (an mlserve extension) reads the
    # same counter as the metric.
    wait_until(lambda: stats(server).get("queue_depth", 0) >= 1, 60,
               "a busy batch waiting behind the other")
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("INPUT0", [1, 256], "FP32")
    x.set_data_from_numpy(np.zeros((1, 256), dtype=np.float32))
    try:
        grpc.infer("slow", [x], client_timeout=0.03)
    except Exception:
        pass  # deadline exceeded: the client gave up
    for i in range(3):
        abandon_http(port, slow_body(i))
    for t in busy:
        t.join()
    assert [r.status for r in answers] == [200, 200], [str(r) for r in answers]
    # FIFO: anything wrongly kept in the queue runs before (or with) this one.
    resp = http_request(port, "POST", "/v2/models/slow/infer", slow_body(1.0), timeout=120)
    assert resp.status == 200
    after = stats(server)
    assert after["inference_count"] == 2 * BUSY_ROWS + 1, f"abandoned requests executed: {after}"
    assert after["execution_count"] == 3, after
