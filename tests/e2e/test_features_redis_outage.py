"""Redis stopped in the middle of a stream of online lookups: every failed
lookup is a typed 503 within the configured command timeout, nothing
panics, lookups succeed again within seconds of Redis returning, and the
offline store (SQL) loses nothing."""

import json
import threading
import time

from features_helpers import T0, MIN, RedisServer, apply_json, free_port, features_server, ok, online
from helpers import post, wait_until

COMMAND_TIMEOUT_MS = 400


def test_lookups_survive_a_redis_outage(tmp_path):
    redis = RedisServer(free_port()).start()
    server = None
    try:
        server = features_server(tmp_path, env={
            "MLSERVE_FEATURES__ONLINE_STORE": "redis",
            "MLSERVE_FEATURES__REDIS_URL": f"redis://127.0.0.1:{redis.port}",
            "MLSERVE_FEATURES__REDIS_COMMAND_TIMEOUT": f"{COMMAND_TIMEOUT_MS}ms",
            "MLSERVE_FEATURES__REDIS_RECONNECT_DELAY": "100ms",
        })
        port = server.http_port
        ok(post(port, "/v1/features/apply", apply_json(port)))
        rows = [{"values": {"driver_id": d, "rate": d / 100, "trips": d}, "event_ts": T0 + d * MIN}
                for d in range(1, 51)]
        assert ok(post(port, "/v1/features/ingest",
                       {"feature_view": "driver_stats", "rows": rows}))["offline_rows"] == 50
        # Recent enough to be PRESENT: push fresh values online as well.
        now_us = int(time.time() * 1e6)
        fresh = [{"values": {"driver_id": d, "rate": d / 10, "trips": d}, "event_ts": now_us}
                 for d in range(1, 33)]
        assert ok(post(port, "/v1/features/push", {
            "feature_view": "driver_stats", "rows": fresh, "to": "online_and_offline"}))["online_rows"] == 32
        body = ok(online(port, range(1, 33)))
        assert all(r["values"][0]["status"] == "PRESENT" for r in body["rows"])

        results = []  # (monotonic time, status, seconds, error message)
        stop = threading.Event()

        def lookups():
            while not stop.is_set():
                started = time.monotonic()
                resp = online(port, range(1, 33), timeout=30)
                took = time.monotonic() - started
                error = resp.error() if resp.status != 200 else None
                results.append((started, resp.status, took, error))
                time.sleep(0.02)

        worker = threading.Thread(target=lookups)
        worker.start()
        try:
            wait_until(lambda: len(results) >= 20, 30, "lookups before the outage")
            killed_at = time.monotonic()
            redis.kill()
            wait_until(lambda: sum(1 for r in results if r[1] == 503) >= 10, 30,
                       "503s while redis is down")
            # Ingestion goes to SQL and keeps working during the outage.
            late = [{"values": {"driver_id": 99, "rate": 0.99, "trips": 99}, "event_ts": T0}]
            assert ok(post(port, "/v1/features/ingest",
                           {"feature_view": "driver_stats", "rows": late}))["offline_rows"] == 1
            pushed = post(port, "/v1/features/push", {
                "feature_view": "driver_stats", "rows": fresh[:1], "to": "online"})
            assert pushed.status == 503, str(pushed)
            restarted_at = time.monotonic()
            redis.start()
            wait_until(lambda: any(r[1] == 200 and r[0] > restarted_at for r in results), 10,
                       "a successful lookup after redis returned")
            recovered_at = next(r[0] for r in results if r[1] == 200 and r[0] > restarted_at)
        finally:
            stop.set()
            worker.join(timeout=60)

        statuses = {r[1] for r in results}
        assert statuses <= {200, 503}, f"unexpected statuses {statuses}"
        failures = [r for r in results if r[1] == 503]
        assert failures and all(r[0] >= killed_at - 1 for r in failures)
        for started, status, took, error in failures:
            assert "online store unavailable" in error, error
            # The configured command timeout bounds a failed lookup (plus
            # HTTP and scheduling slack, generously).
            assert took < COMMAND_TIMEOUT_MS / 1000 + 2.0, f"a failed lookup took {took:.2f} s"
        assert recovered_at - restarted_at < 10
        print(f"\nlookups: {len(results)}, failed with 503: {len(failures)}, slowest failure "
              f"{max(r[2] for r in failures):.3f} s, recovered {recovered_at - restarted_at:.2f} s "
              "after redis restarted")
        assert server.running(), "the server must survive the outage"
        assert "panicked" not in server.log

        # Redis came back empty (no persistence): found nothing, but answers.
        body = ok(online(port, [1]))
        assert body["rows"][0]["values"][0]["status"] == "NOT_FOUND"
        # The offline store lost nothing: all 50 + 32 + 1 rows are there and
        # materializing restores the online values.
        entities = ([{"keys": {"driver_id": d}, "event_ts": T0 + d * MIN} for d in range(1, 51)]
                    + [{"keys": {"driver_id": 99}, "event_ts": T0}]
                    + [{"keys": {"driver_id": d}, "event_ts": now_us} for d in range(1, 33)])
        hist = post(port, "/v1/features/historical",
                    {"features": ["driver_stats:rate"], "entities": entities})
        assert hist.status == 200, str(hist)
        values = [json.loads(line)["driver_stats:rate"] for line in hist.body.decode().splitlines()]
        assert values == ([d / 100 for d in range(1, 51)] + [0.99]
                          + [d / 10 for d in range(1, 33)])
        done = ok(post(port, "/v1/features/materialize", {"end_ts": now_us + 1}))
        assert done["views"][0]["rows_written"] == 51
        body = ok(online(port, [1, 2]))
        assert [r["values"][0]["value"] for r in body["rows"]] == [0.1, 0.2]
    finally:
        if server is not None:
            server.stop()
        redis.kill()
