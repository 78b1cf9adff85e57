"""Request bodies under the process's budget and pace, and gRPC connections
under their limit (issue 16), on the real all-in-one binary.

- Budget: a body counts from its declared length until its request is
  answered; one the budget cannot hold now gets 503 at once (not queued),
  on the node's port and the gateway's alike, since they share one budget;
  an inflated gzip body counts its inflated bytes.
- Pace: a body that stalls is cut off with 400 and its connection closed.
- gRPC: a connection that sends nothing is closed; one over the limit is
  closed at once.
- Metrics: the budget in use (`mlserve_http_body_budget_bytes`) shows a
  held body, and a refused connection counts in
  `mlserve_connections_refused_total`.

No timing is asserted: sockets wait far longer than the configured times,
and only what the server did counts."""

import gzip
import json
import select
import socket

import pytest

from helpers import get, metric_values, parse_metrics, post, socket_response, wait_until
from server import start_server
from topology import GatewayProcess

GRACE_S = 1
BUDGET = 100_000
PATIENCE_S = 60
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.fixture(scope="module")
def budgeted(models_repo):
    """A small body budget; bodies keep the default pace (30 s of grace)."""
    s = start_server(models_repo, env={"MLSERVE_SERVER__HTTP_BODY_BUDGET_BYTES": str(BUDGET)})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def impatient(models_repo):
    """A second of grace for bodies and first bytes; four gRPC connections."""
    s = start_server(models_repo, env={
        "MLSERVE_SERVER__HTTP_HEADER_READ_TIMEOUT": f"{GRACE_S}s",
        "MLSERVE_SERVER__GRPC_MAX_CONNECTIONS": "4",
    })
    yield s
    s.stop()


def scraped(server, name, **labels):
    """The one sample of `name` with `labels` on the server's metrics port."""
    samples, _ = parse_metrics(get(server.metrics_port, "/metrics").body.decode())
    values = metric_values(samples, name, **labels)
    assert len(values) == 1, (name, labels, values)
    return values[0]


def budget_in_use(server):
    return scraped(server, "mlserve_http_body_budget_bytes", state="in_use")


def http_ports(server):
    return {"node": server.http_port, "gateway": GatewayProcess.gateway_ports(server)["http"]}


def grpc_ports(server):
    return {"node": server.grpc_port, "gateway": GatewayProcess.gateway_ports(server)["grpc"]}


def start_post(port, path, length, first=b""):
    """A POST declaring `length` body bytes, of which only `first` is sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode() + first)
    return sock


def answer(sock):
    """The status and JSON body of the one response on `sock`."""
    head, body = socket_response(sock)
    return int(head.split()[1]), json.loads(body) if body else None


def closed(sock):
    """Whether the server closed `sock` (EOF or reset) within PATIENCE_S."""
    sock.settimeout(PATIENCE_S)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.mark.parametrize("held_on,asked_on", [("node", "node"), ("node", "gateway"),
                                              ("gateway", "node")])
def test_a_body_the_budget_cannot_hold_now_gets_503_at_once(budgeted, held_on, asked_on):
    ports = http_ports(budgeted)
    # Most of the budget, held by a body that is still arriving (within its
    # pace: 30 s of grace).
    hold = lambda: start_post(ports[held_on], "/v2/repository/index", 80_000, b" ")
    held = {"sock": hold()}
    try:
        # Once the server has admitted the held request's head, it refuses.
        refusals = []

        def refused_now():
            resp = post(ports[asked_on], "/v2/repository/index", b" " * 50_000)
            refusals.append(resp)
            if resp.status == 503:
                return True
            # On a busy machine a post can be admitted before the held head
            # is read, and then the held request is the one refused (503 on
            # its socket): hold again.
            if select.select([held["sock"]], [], [], 0)[0]:
                held["sock"].close()
                held["sock"] = hold()
            return False

        wait_until(refused_now, 30, "a body past the budget was taken")
        # The held body shows in the budget's gauge while it is held.
        assert budget_in_use(budgeted) >= 80_000
        assert scraped(budgeted, "mlserve_http_body_budget_bytes", state="limit") == BUDGET
        refused = refusals[-1]
        assert all(r.status in (200, 503) for r in refusals), [str(r) for r in refusals]
        assert "request bodies" in refused.json()["error"], refused.json()
        # A small one still fits.
        assert post(ports[asked_on], "/v2/repository/index", b" " * 1_000).status == 200
        held["sock"].sendall(b" " * 79_999)
        status, _ = answer(held["sock"])
        assert status == 200
    finally:
        held["sock"].close()
    # Answered: its share is back.
    wait_until(lambda: post(ports[asked_on], "/v2/repository/index",
                            b" " * 50_000).status == 200, 30, "the budget was not returned")
    wait_until(lambda: budget_in_use(budgeted) == 0, 30, "the gauge kept the answered body")


def test_an_inflated_body_counts_its_inflated_bytes(budgeted):
    port = http_ports(budgeted)["node"]
    small = gzip.compress(b" " * 50_000)
    assert len(small) < 1_000
    ok = post(port, "/v2/repository/index", small, headers={"Content-Encoding": "gzip"})
    assert ok.status == 200, str(ok)
    big = gzip.compress(b" " * 200_000)
    refused = post(port, "/v2/repository/index", big, headers={"Content-Encoding": "gzip"})
    assert refused.status == 503, str(refused)
    assert "request bodies" in refused.json()["error"]


@pytest.mark.parametrize("listener", ["node", "gateway"])
def test_a_stalled_body_is_cut_off_with_400(impatient, listener):
    port = http_ports(impatient)[listener]
    with start_post(port, "/v2/models/simple/infer", 1_000, b'{"inputs": [') as sock:
        status, body = answer(sock)
        assert status == 400, body
        assert "too slowly" in body["error"], body
        assert closed(sock), "the connection stayed open"
    assert post(port, "/v2/repository/index", b"").status == 200


@pytest.mark.parametrize("listener", ["node", "gateway"])
def test_a_grpc_connection_that_sends_nothing_is_closed(impatient, listener):
    with socket.create_connection(("127.0.0.1", grpc_ports(impatient)[listener]),
                                  timeout=PATIENCE_S) as sock:
        assert closed(sock), "a connect-only gRPC connection stayed open"


def speaks_http2(sock):
    """Sends the HTTP/2 preface; True once the server answers with its
    SETTINGS, False if it closes the connection instead."""
    try:
        sock.sendall(H2_PREFACE + H2_EMPTY_SETTINGS)
        frame = sock.recv(9)
    except (ConnectionResetError, BrokenPipeError):
        return False
    return len(frame) == 9 and frame[3] == 0x4


def test_a_grpc_connection_over_the_limit_is_closed_at_once(impatient):
    port = grpc_ports(impatient)["node"]
    held = []

    def hold_one():
        sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S)
        if speaks_http2(sock):
            held.append(sock)
            return True
        sock.close()  # refused: a connection closing just before held a slot
        return False

    try:
        for _ in range(4):
            wait_until(hold_one, 30, "the server took no new gRPC connection")
        refused = lambda: scraped(impatient, "mlserve_connections_refused_total",
                                  protocol="grpc", reason="limit")
        before = refused()
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S) as extra:
            assert not speaks_http2(extra) or closed(extra), "a connection over the limit was served"
        # Counted before it was closed.
        assert refused() > before
        held.pop().close()
        wait_until(hold_one, 30, "no gRPC connection was taken after one closed")
    finally:
        for sock in held:
            sock.close()
