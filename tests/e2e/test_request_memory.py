"""Memory per request is bounded by what the request carries (issue 16).

Measured before the streaming parse: one 61 MB JSON request naming a million
inputs raised the inference process's peak RSS from 42 MB to 813 MB, and
four concurrent 66 MB numeric arrays peaked at 7.7 GB, because `data` was
parsed into a tree of JSON values first. Now an input's data is converted to
its raw tensor as it is parsed, and the count of inputs is checked as they
are read. The bounds asserted here are a fraction of those measurements and
several times what the bodies themselves take: they hold on any machine,
since they count bytes, not time."""

import gzip
import json
import threading

import pytest

from helpers import copy_models, http_request, peak_rss_mb, wait_until
from server import start_server

MB = 1024 * 1024


def fp32_request(elements):
    """A ~4 bytes per element JSON request for `simple`'s INPUT0, whose shape
    the model refuses only after the body is parsed."""
    data = ",".join(["0.5"] * elements)
    head = '{"inputs":[{"name":"INPUT0","shape":[1,%d],"datatype":"FP32","data":[' % elements
    return (head + data + "]}]}").encode()


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_big_numeric_arrays_cost_about_their_own_size(models_repo, tmp_path, encoding):
    """Four at once, plain or as gzip bodies of a few hundred KB each that
    inflate to 61 MB (gzip bombs once peaked at 5.3 GB)."""
    repo = copy_models(models_repo, tmp_path / "repo", ["simple"])
    with start_server(repo) as server:
        body = fp32_request(16_000_000)
        assert len(body) > 60 * MB and len(body) < 64 * MB
        headers = {"Content-Type": "application/json"}
        if encoding == "gzip":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        before = peak_rss_mb(server)
        answers = []

        def send():
            r = http_request(server.http_port, "POST", "/v2/models/simple/infer", body=body,
                             headers=headers, timeout=300)
            answers.append((r.status, r.body[:200]))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        grown = peak_rss_mb(server) - before
        print(f"4 x {len(body) / MB:.1f} MB {encoding} JSON arrays: peak RSS {before:.0f} -> "
              f"{before + grown:.0f} MiB (+{grown:.0f})")
        assert [s for s, _ in answers] == [400] * 4, answers
        assert all(b"INPUT0" in b for _, b in answers), answers
        # Each request holds its body and its raw tensor (4 x (61 + 57) MiB);
        # a value tree cost 7.7 GB.
        assert grown < 1200, f"peak RSS grew {grown:.0f} MiB"
        # The server is still up and serving.
        wait_until(lambda: http_request(server.http_port, "GET", "/v2/health/ready").status
                   == 200, 30, "not ready after the big requests")


def test_a_million_inputs_are_refused_while_parsing(models_repo, tmp_path):
    repo = copy_models(models_repo, tmp_path / "repo", ["simple"])
    with start_server(repo) as server:
        one = '{"name":"INPUT0","shape":[1],"datatype":"FP32","data":[1]}'
        body = ('{"inputs":[' + ",".join([one] * 1_000_000) + "]}").encode()
        assert len(body) > 55 * MB
        before = peak_rss_mb(server)
        r = http_request(server.http_port, "POST", "/v2/models/simple/infer", body=body,
                         headers={"Content-Type": "application/json"}, timeout=300)
        grown = peak_rss_mb(server) - before
        print(f"a million inputs ({len(body) / MB:.0f} MB): +{grown:.0f} MiB peak RSS")
        assert r.status == 400, r.body[:200]
        assert "at most 4096 inputs" in json.loads(r.body)["error"]
        # The body itself, and the first 4096 inputs; it was +771 MB.
        assert grown < 300, f"peak RSS grew {grown:.0f} MiB"
