"""The all-in-one process's roles write one SQLite file (issue 16): uploads
and feature ingests at once never fail, and a refused upload spends no
version number. Counts, never timings."""

from features_helpers import apply_json, ok
from helpers import hammer, post
from test_registry import tiny_model, upload, versions


def test_uploads_and_ingests_in_one_process_never_fail(server):
    """The all-in-one process's registry and feature store share the SQLite
    file: 4 clients upload versions while 4 ingest feature rows. None fails,
    and the versions are numbered 1..N with no gap and none twice."""
    port = server.http_port
    assert post(port, "/v1/registry/models", {"name": "contended"}).status == 201
    ok(post(port, "/v1/features/apply", apply_json(port)))
    files = tiny_model(3.0)

    def send(client, n):
        if client < 4:
            r = upload(port, "contended", files)
            return ("upload", r.status, str(r) if r.status != 201 else "")
        rows = [{"values": {"driver_id": client * 1000 + n * 10 + i, "rate": 0.5, "trips": i},
                 "event_ts": 1_700_000_000_000_000 + n} for i in range(20)]
        r = post(port, "/v1/features/ingest", {"feature_view": "driver_stats", "rows": rows})
        return ("ingest", r.status, str(r) if r.status != 200 else "")

    answers = [a for client in hammer(8, 25, send) for a in client]
    failed = [a for a in answers if a[1] not in (200, 201)]
    assert failed == [], f"{len(failed)} of {len(answers)} failed, e.g. {failed[:3]}"
    assert sorted(versions(port, "contended")) == list(range(1, 4 * 25 + 1))


def test_a_refused_upload_spends_no_version_number(server):
    port = server.http_port
    assert post(port, "/v1/registry/models", {"name": "gapless"}).status == 201
    good = tiny_model(1.0)
    assert upload(port, "gapless", good).status == 201
    refused = upload(port, "gapless", {"weights.bin": b"no model.onnx here"})
    assert refused.status == 400, str(refused)
    assert upload(port, "gapless", good, {"sha256": {"model.onnx": "0" * 64}}).status == 400
    r = upload(port, "gapless", good)
    assert r.status == 201 and r.json()["version"] == 2, str(r)
    assert versions(port, "gapless") == [2, 1]
