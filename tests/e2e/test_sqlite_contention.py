"""The all-in-one process's roles write one SQLite file (issue 16): uploads
and feature ingests at once never fail. Counts, never timings."""

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
