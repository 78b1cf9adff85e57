"""Connections that hold a server's resources without finishing a request
(issue 16): a client that connects and sends nothing, one that trickles its
headers, one that sits idle after an answer. With a header read timeout each
is cut off; the connection limit closes one connection over it at once. No
timing is asserted: the sockets wait far longer than the configured timeout,
and only whether the server closed them counts."""

import socket

import pytest

from helpers import get, socket_response, wait_until
from server import start_server
from topology import GatewayProcess

HEADER_TIMEOUT_S = 1
# A socket waits this long for the server to act: far beyond the timeout.
PATIENCE_S = 60


@pytest.fixture(scope="module")
def impatient_server(models_repo):
    s = start_server(models_repo, env={
        "MLSERVE_SERVER__HTTP_HEADER_READ_TIMEOUT": f"{HEADER_TIMEOUT_S}s"})
    yield s
    s.stop()


def closed_by_server(sock):
    """Waits for the server to close `sock`; True once it has (EOF or reset,
    possibly after a 408), False if it was still open after PATIENCE_S."""
    sock.settimeout(PATIENCE_S)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            assert data.startswith(b"HTTP/1.1 408"), data[:200]
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def read_response(sock):
    """The head of the one HTTP/1.1 response on `sock`."""
    return socket_response(sock)[0]


def ports(server):
    return {"node": server.http_port, "gateway": GatewayProcess.gateway_ports(server)["http"],
            "metrics": server.metrics_port}


@pytest.mark.parametrize("listener", ["node", "gateway", "metrics"])
@pytest.mark.parametrize("client", ["connect-only", "trickle", "idle-after-answer"])
def test_a_slow_or_idle_connection_is_cut_off(impatient_server, listener, client):
    port = ports(impatient_server)[listener]
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S) as sock:
        if client == "trickle":
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x":
                sock.sendall(bytes([byte]))
        elif client == "idle-after-answer":
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 ")
            # then nothing more: the connection is kept alive, and idle
        assert closed_by_server(sock), f"{client} connection to {listener} still open"
    # and the server still serves
    path = "/metrics" if listener == "metrics" else "/v2/health/live"
    assert get(port, path).status == 200


def test_one_connection_over_the_limit_is_closed_at_once(models_repo, make_server):
    limit = 4
    server = make_server(models_repo, env={"MLSERVE_SERVER__HTTP_MAX_CONNECTIONS": str(limit)})
    held = []

    def hold_one():
        """Opens a connection and proves the server took it (an answer on it)."""
        sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=PATIENCE_S)
        try:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            if read_response(sock).startswith(b"HTTP/1.1 200"):
                held.append(sock)
                return True
        except (AssertionError, ConnectionResetError):
            pass  # refused: a connection closing just before still held a slot
        sock.close()
        return False

    try:
        for _ in range(limit):
            wait_until(hold_one, 30, "the server took no new connection")
        extra = socket.create_connection(("127.0.0.1", server.http_port), timeout=PATIENCE_S)
        with extra:
            extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert closed_by_server(extra), "a connection over the limit was served"
        # One held connection goes: a new one is served again.
        held.pop().close()
        wait_until(hold_one, 30, "no connection was taken after one closed")
    finally:
        for sock in held:
            sock.close()
