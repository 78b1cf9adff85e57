"""One client's bad data must not fail other clients' requests (issue 16,
tried as an attacker would): bad requests sent at once with good ones, to a
model that batches and to one that has no [dynamic_batching] section.
Counts, never timings."""

import numpy as np
import pytest

from helpers import get, hammer, post_binary


def text(values):
    return {"text": np.array([[v] for v in values], dtype=object)}


@pytest.mark.parametrize("bad", [b"a\x00b", b"caf\xe9"], ids=["nul", "not-utf8"])
def test_bad_strings_fail_alone_and_no_good_request_fails(server, bad):
    """3 clients send a BYTES element a string tensor cannot carry, 9 send
    valid text, all at once to string_len (which batches): every bad one is
    a 400 naming the input, and not one good one fails."""
    def send(client, n):
        if client < 3:
            r = post_binary(server.http_port, "string_len", text([bad]))
            return ("bad", r.status, r.error() if r.status != 200 else "")
        word = f"w{client}x{n}"
        r = post_binary(server.http_port, "string_len", text([word.encode(), b"ok"]))
        if r.status != 200:
            return ("good", r.status, str(r))
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        return ("good", 200, outputs["upper"]["data"] == [word.upper(), "OK"])

    answers = [a for client in hammer(12, 40, send) for a in client]
    good = [a for a in answers if a[0] == "good"]
    bad_answers = [a for a in answers if a[0] == "bad"]
    assert [a for a in good if a[1:] != (200, True)] == [], "good requests failed"
    assert len(good) == 9 * 40
    assert all(a[1] == 400 and "'text'" in a[2] for a in bad_answers), bad_answers[:3]
    assert len(bad_answers) == 3 * 40


def model_stats(port, model):
    r = get(port, f"/v2/models/{model}/stats")
    assert r.status == 200, str(r)
    return r.json()["model_stats"][0]


def test_an_out_of_range_id_fails_alone_and_an_unbatched_model_is_not_batched(server):
    """int64_lookup gathers rows of a 1000-row table and has no
    [dynamic_batching] section: as in Triton, each request runs alone, so an
    id out of the table fails only its own request."""
    before = model_stats(server.http_port, "int64_lookup")

    def send(client, n):
        ids = np.full((1, 8), 5000 if client < 3 else (client * 40 + n) % 1000, np.int64)
        r = post_binary(server.http_port, "int64_lookup", {"ids": ids})
        return ("bad" if client < 3 else "good", r.status)

    answers = [a for client in hammer(12, 30, send) for a in client]
    assert [a for a in answers if a[0] == "good" and a[1] != 200] == []
    assert all(a[1] != 200 for a in answers if a[0] == "bad")
    after = model_stats(server.http_port, "int64_lookup")
    ran = after["execution_count"] - before["execution_count"]
    served = after["inference_count"] - before["inference_count"]
    assert ran == served == 9 * 30, (ran, served)
