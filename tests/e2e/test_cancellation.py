"""A request whose client went away is dropped before it executes (HTTP and
gRPC): it never reaches ONNX Runtime, and the server stays healthy."""

import json
import socket
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient

from helpers import http_request


def slow_body(value):
    data = np.full((1, 256), value, dtype=np.float32)
    return json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 256],
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
    server = make_server(models_repo)
    port = server.http_port
    busy = threading.Thread(target=lambda: http_request(port, "POST", "/v2/models/slow/infer",
                                                        slow_body(0.5), timeout=30))
    busy.start()
    # The first request executes for about 200 ms; everything below is sent,
    # and given up on, well within that time, so it can only have queued.
    time.sleep(0.03)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("INPUT0", [1, 256], "FP32")
    x.set_data_from_numpy(np.zeros((1, 256), dtype=np.float32))
    try:
        grpc.infer("slow", [x], client_timeout=0.03)
    except Exception:
        pass  # deadline exceeded: the client gave up
    for i in range(3):
        abandon_http(port, slow_body(i))
    busy.join()
    time.sleep(1.0)  # anything wrongly queued would have run by now
    after = stats(server)
    assert after["inference_count"] == 1, f"abandoned requests executed: {after}"
    assert after["execution_count"] == 1
    resp = http_request(port, "POST", "/v2/models/slow/infer", slow_body(1.0), timeout=30)
    assert resp.status == 200
