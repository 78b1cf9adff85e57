"""One client's bad data must not fail other clients' requests (issue 16,
tried as an attacker would): bad requests sent at once with good ones, to a
model that batches and to one that has no [dynamic_batching] section.
Counts, never timings."""

import numpy as np
import pytest

from helpers import get, hammer, post_binary


def text(values):
    return {"text": np.array([[v] for v in values], dtype=object)}


def test_a_bad_string_fails_alone_and_no_good_request_fails(server):
    """3 clients send a BYTES element that is not UTF-8, which string_len's
    StringNormalizer refuses, 9 send valid text, all at once to string_len
    (which batches): every bad one fails, and not one good one does."""
    def send(client, n):
        if client < 3:
            r = post_binary(server.http_port, "string_len", text([b"caf\xe9"]))
            return ("bad", r.status)
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
    assert all(a[1] != 200 for a in bad_answers), bad_answers[:3]
    assert len(bad_answers) == 3 * 40


def test_nul_bytes_are_carried_when_batched_with_other_requests(server):
    """A NUL inside a BYTES element is data, as in Triton: 3 clients send
    one, 9 send plain text, all batched together, and every answer is exact."""
    def send(client, n):
        word = f"w{client}\x00{n}" if client < 3 else f"w{client}x{n}"
        r = post_binary(server.http_port, "string_len", text([word.encode(), b"ok"]))
        if r.status != 200:
            return (r.status, str(r))
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        return (200, outputs["text_out"]["data"] == [word, "ok"]
                and outputs["upper"]["data"] == [word.upper(), "OK"])

    answers = [a for client in hammer(12, 40, send) for a in client]
    assert len(answers) == 12 * 40
    assert [a for a in answers if a != (200, True)] == []


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
