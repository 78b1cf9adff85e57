"""Chaos: PostgreSQL restarted while the registry and the feature store take
writes (issue 16).

A PostgreSQL of the test's own (initdb into /tmp, a free port; the
machine's shared server at 5432 is never touched) holds the metadata of a
registry process and the definitions and offline store of a features
process (two processes, two connection pools). Writers upload model
versions, move an alias, ingest rows and push rows (online and offline)
without pause (two threads each); PostgreSQL is stopped (`pg_ctl stop -m
fast`, as a restart does; `-m immediate`, as a crash), kept down longer
than the pools' 10 s acquire timeout so that requests fail during the
outage, and started again. Just before the stop a session locks the tables
alias moves and feature rows go to, so that some writes are certainly in
flight (waiting inside their transactions) when the server goes down (with
`fast`, their sessions are ended just before the others, as the shutdown
ends them, so that none can commit when the lock holder's session ends).

Pass conditions (counts, no timing assertion):
- every write the servers acknowledged (2xx) is read back afterwards:
  versions (ready, same sha256), alias moves (in the alias history),
  ingested and pushed rows (historical retrieval; pushed rows online too);
- every failed request, those in flight at the stop included, is a typed
  503 with an `{"error": "..."}` body: no 500, no other status, no request
  left without an answer within the client's 30 s timeout (the gateway's
  default deadline), and some did fail (the outage was felt);
- writes succeed again after PostgreSQL returns, within a generous 30 s
  bound. The measured recovery time (PostgreSQL accepting connections ->
  first acknowledged fresh write, per process) is printed and written to
  $MLSERVE_CHAOS_RESULTS; the issue's 5 s target is reported, not asserted
  (no timing assertions on a busy 2-core machine).
"""

import json
import threading
import time

import pytest

from chaos_helpers import (Load, PrivatePostgres, Tally, alias_history, all_versions,
                           assert_alive, report, shutdown, start_with_config, timed,
                           upload_version)
from features_helpers import MIN, T0, apply_json, ok
from helpers import get, http_request, post, wait_until
from test_registry import sha, tiny_model
from test_registry_follow import registry_create

MODEL = "chaos"
VIEW = "driver_stats"
REQUEST_TIMEOUT_S = 30      # the client's limit: the gateway's default deadline
# Longer than the pools' 10 s acquire timeout (modules/common/src/db.rs), so
# requests made while PostgreSQL is down fail instead of waiting it out.
OUTAGE_S = 13.0
RECOVERY_BOUND_S = 30.0     # pass condition; the target of issue 16 is 5 s
RECOVERY_TARGET_S = 5.0
# Tables locked just before the stop (registry alias moves, feature rows).
LOCKED_TABLES = ["registry_alias_history", "feature_rows"]
PAUSE_S = 0.05              # between two writes of one writer thread
WRITER_THREADS = 2          # per kind of write
ACKS_BEFORE, ACKS_AFTER = 10, 5   # acknowledged writes per kind around the outage


def start(role, tmp_path, database_url, ready_path):
    """`mlserve --role ROLE` with its own data directory, its metadata in
    `database_url`."""
    return start_with_config(tmp_path, role, [
        "[server]", f'data_dir = "{tmp_path / f"{role}-data"}"', "",
        f"[{role}]", f'database_url = "{database_url}"'], "--role", role, ready_path=ready_path)


def historical(port, keys_and_ts):
    """{(driver_id, event_ts): rate} of a point-in-time lookup."""
    entities = [{"keys": {"driver_id": d}, "event_ts": ts} for d, ts in keys_and_ts]
    resp = post(port, "/v1/features/historical", {"features": [f"{VIEW}:rate"],
                                                   "entities": entities}, timeout=60)
    assert resp.status == 200, str(resp)
    rows = [json.loads(line) for line in resp.body.decode().splitlines() if line.strip()]
    assert len(rows) == len(entities), f"{len(rows)} rows for {len(entities)} entities"
    return {key: row[f"{VIEW}:rate"] for key, row in zip(keys_and_ts, rows)}


@pytest.mark.parametrize("stop_mode", ["fast", "immediate"])
def test_postgres_restart_loses_no_acknowledged_write(tmp_path, stop_mode):
    """`fast`: a restart (sessions terminated, checkpoint); `immediate`: a
    crash (no checkpoint: recovery from the WAL when it starts again)."""
    pg = PrivatePostgres()
    servers, writers = [], []
    try:
        pg.start()
        registry = start("registry", tmp_path, pg.url, "/v1/registry/models")
        servers.append(registry)
        features = start("features", tmp_path, pg.url, "/v1/features/entities")
        servers.append(features)
        reg, feat = registry.http_port, features.http_port

        registry_create(reg, MODEL)
        first = tiny_model(0.5)
        r = upload_version(reg, MODEL, first)
        assert r.status == 201, str(r)
        v1 = r.json()["version"]
        ok(http_request(reg, "PUT", f"/v1/registry/models/{MODEL}/aliases/production",
                        body={"version": v1}))
        ok(post(feat, "/v1/features/apply", apply_json(feat)))

        # ------------------------------------------------- the ledgers
        lock = threading.Lock()
        versions = {v1: {"model.onnx": sha(first["model.onnx"])}}   # version -> {path: sha}
        version_seq = {}         # upload seq -> version, acknowledged
        moves = []               # acknowledged alias moves (id, to_version)
        ingested = {}            # (driver_id, event_ts) -> rate
        pushed = {}              # (driver_id, event_ts) -> rate

        def upload(n):
            return upload_version(reg, MODEL, tiny_model(1.0 + n), {"tags": {"seq": str(n)}},
                                  timeout=REQUEST_TIMEOUT_S)

        def on_upload(n, resp):
            doc = resp.json()
            with lock:
                versions[doc["version"]] = {f["path"]: f["sha256"] for f in doc["files"]}
                version_seq[n] = doc["version"]

        def move(n):
            with lock:
                choices = sorted(versions)
            target = choices[n % len(choices)]
            return http_request(reg, "PUT", f"/v1/registry/models/{MODEL}/aliases/production",
                                body={"version": target}, timeout=REQUEST_TIMEOUT_S)

        def on_move(n, resp):
            doc = resp.json()
            with lock:
                moves.append((doc["id"], doc["to_version"]))

        def ingest_row(n):
            return {"values": {"driver_id": 1_000 + n, "rate": n / 1000, "trips": n},
                    "event_ts": T0 + n * MIN}

        def ingest(n):
            return post(feat, "/v1/features/ingest", {"feature_view": VIEW,
                                                      "rows": [ingest_row(n)]},
                        timeout=REQUEST_TIMEOUT_S)

        def on_ingest(n, resp):
            assert resp.json()["offline_rows"] == 1, str(resp)
            row = ingest_row(n)
            with lock:
                ingested[(row["values"]["driver_id"], row["event_ts"])] = row["values"]["rate"]

        push_rows = {}

        def push(n):
            row = {"values": {"driver_id": 500_000 + n, "rate": n / 100, "trips": n},
                   "event_ts": int(time.time() * 1e6)}
            push_rows[n] = row
            return post(feat, "/v1/features/push", {"feature_view": VIEW, "rows": [row],
                                                    "to": "online_and_offline"},
                        timeout=REQUEST_TIMEOUT_S)

        def on_push(n, resp):
            doc = resp.json()
            assert (doc["offline_rows"], doc["online_rows"]) == (1, 1), str(resp)
            row = push_rows[n]
            with lock:
                pushed[(row["values"]["driver_id"], row["event_ts"])] = row["values"]["rate"]

        writers = [Load(name, step, WRITER_THREADS, PAUSE_S, on_ack) for name, step, on_ack in [
            ("registry.upload", upload, on_upload), ("registry.alias_move", move, on_move),
            ("features.ingest", ingest, on_ingest), ("features.push", push, on_push)]]
        for w in writers:
            w.start()
        wait_until(lambda: all(w.acks() >= ACKS_BEFORE for w in writers), 60,
                   "writes acknowledged before the outage")

        # --------------------------------------------------- the outage
        # Writes in flight when PostgreSQL goes down, for certain: a session
        # locks the tables alias moves and feature rows are written to, so
        # those writes wait inside their transactions when the stop comes.
        locker = pg.hold_locks(LOCKED_TABLES)
        def waiting():
            queries = pg.waiting_on_locks()
            return ([q for q in queries if "registry_alias" in q],
                    [q for q in queries if "feature_rows" in q])
        wait_until(lambda: all(waiting()), 30,
                   "alias moves and feature writes waiting on the locked tables")
        in_flight = [len(w) for w in waiting()]
        stop_began = time.monotonic()
        if stop_mode == "fast":
            # The fast shutdown ends every session at once, the lock holder's
            # too: a waiting write could then commit in between. End theirs
            # first, the way the shutdown does (57P01), then stop.
            pg.terminate_waiting()
        pg.stop(mode=stop_mode)
        down_at = time.monotonic()
        locker.wait(30)
        time.sleep(OUTAGE_S)
        pg.start()
        up_at = time.monotonic()

        # Recovery: a fresh write per process, retried until acknowledged.
        recovery = {}

        def probe(name, call):
            deadline = up_at + RECOVERY_BOUND_S
            tally = Tally(f"probe.{name}")
            while time.monotonic() < deadline:
                resp = timed(tally, call)
                if resp is not None and 200 <= resp.status < 300:
                    recovery[name] = {"recovered_s": round(time.monotonic() - up_at, 3),
                                      "probes": tally.summary()}
                    return resp
                time.sleep(0.1)
            recovery[name] = {"recovered_s": None, "probes": tally.summary()}
            return None

        probes = [
            threading.Thread(target=probe, args=("registry", lambda: http_request(
                reg, "PUT", f"/v1/registry/models/{MODEL}/aliases/probe", body={"version": v1},
                timeout=REQUEST_TIMEOUT_S))),
            threading.Thread(target=probe, args=("features", lambda: post(
                feat, "/v1/features/ingest",
                {"feature_view": VIEW, "rows": [{"values": {"driver_id": 999_999, "rate": 9.99,
                                                            "trips": 9}, "event_ts": T0}]},
                timeout=REQUEST_TIMEOUT_S))),
        ]
        for t in probes:
            t.start()
        for t in probes:
            t.join(RECOVERY_BOUND_S + REQUEST_TIMEOUT_S + 5)
        recovered_at = time.monotonic()
        # A little more traffic once recovered, then stop the writers.
        wait_until(lambda: all(w.acks(after=recovered_at) >= ACKS_AFTER for w in writers), 60,
                   "writes acknowledged after the recovery")
        for w in writers:
            w.stop_flag.set()
        for w in writers:
            assert w.stop(REQUEST_TIMEOUT_S + 10), f"writer {w.name} hung"

        # -------------------------------------------------- read back
        found = {}
        listed = {v["version"]: v for v in all_versions(reg, MODEL)}
        missing_versions = [v for v in versions
                            if v not in listed or listed[v]["status"] != "ready"
                            or {f["path"]: f["sha256"] for f in listed[v]["files"]} != versions[v]]
        found["versions"] = len(versions) - len(missing_versions)
        # Downloads of the last version acknowledged before the outage and
        # of the newest one: the bytes are the artifact store's.
        for v in {max(versions), max(version_seq.values(), default=v1)}:
            r = get(reg, f"/v1/registry/models/{MODEL}/versions/{v}/files/model.onnx")
            assert r.status == 200 and sha(r.body) == versions[v]["model.onnx"], str(r)
        # Uploads that failed (or never answered) yet committed: the server
        # could not tell the client. Not a lost write; counted for the record.
        seqs_ready = {v["tags"].get("seq"): v["version"] for v in listed.values()
                      if v["status"] == "ready" and "seq" in v["tags"]}
        unacknowledged_committed = sorted(int(s) for s in seqs_ready
                                          if int(s) not in version_seq)

        prod_history = alias_history(reg, MODEL, "production")
        history_ids = {m["id"] for m in prod_history}
        missing_moves = [m for m in moves if m[0] not in history_ids]
        found["alias_moves"] = len(moves) - len(missing_moves)
        current = ok(get(reg, f"/v1/registry/models/{MODEL}/aliases/production"))["version"]
        assert current == prod_history[-1]["to_version"], (current, prod_history[-1])
        probe_moves = alias_history(reg, MODEL, "probe")
        assert probe_moves, "the registry probe's acknowledged move is not in the history"

        got = historical(feat, list(ingested)) if ingested else {}
        missing_ingested = [k for k, rate in ingested.items() if got.get(k) != rate]
        found["ingested_rows"] = len(ingested) - len(missing_ingested)
        got = historical(feat, list(pushed)) if pushed else {}
        missing_pushed = [k for k, rate in pushed.items() if got.get(k) != rate]
        found["pushed_rows_offline"] = len(pushed) - len(missing_pushed)
        online = post(feat, "/v1/features/online", {
            "features": [f"{VIEW}:rate"],
            "entities": [{"keys": {"driver_id": d}} for d, _ in pushed]})
        assert online.status == 200, str(online)
        online_values = [r["values"][0] for r in online.json()["rows"]]
        missing_online = [k for k, v in zip(pushed, online_values)
                          if v.get("status") != "PRESENT" or v.get("value") != pushed[k]]
        found["pushed_rows_online"] = len(pushed) - len(missing_online)

        # ---------------------------------------------------- numbers
        def during(w):
            """Answers to requests made while PostgreSQL was stopping or down."""
            return w.select(lambda s, e, st, err: stop_began <= s < up_at)

        def crossing(w):
            """Answers to requests in flight when the stop began."""
            return w.select(lambda s, e, st, err: s < stop_began <= e)

        numbers = {
            "stop_mode": stop_mode,
            "outage_s": round(up_at - down_at, 3),
            "stop_s": round(down_at - stop_began, 3),
            "writers": {w.name: w.tally.summary() for w in writers},
            "statements_waiting_on_locks_at_stop": {"registry": in_flight[0],
                                                    "features": in_flight[1]},
            "requests_in_flight_at_stop": {w.name: Load.by_status(crossing(w)) for w in writers},
            "requests_made_during_outage": {w.name: Load.by_status(during(w)) for w in writers},
            "acknowledged": {"versions": len(versions), "alias_moves": len(moves),
                             "ingested_rows": len(ingested), "pushed_rows": len(pushed)},
            "found_afterwards": found,
            "unacknowledged_uploads_committed": unacknowledged_committed,
            "recovery_s": {k: v["recovered_s"] for k, v in recovery.items()},
            "recovery_probes": {k: v["probes"] for k, v in recovery.items()},
            "recovery_within_target_5s": all(
                v["recovered_s"] is not None and v["recovered_s"] <= RECOVERY_TARGET_S
                for v in recovery.values()),
            "first_writer_ack_after_restart_s": {w.name: w.first_ack_after(up_at)
                                                 for w in writers},
        }
        report(f"postgres_restart_{stop_mode}", numbers)

        # ---------------------------------------------------- verdicts
        assert not missing_versions, f"acknowledged versions lost: {missing_versions}"
        assert not missing_moves, f"acknowledged alias moves lost: {missing_moves}"
        assert not missing_ingested, f"acknowledged ingested rows lost: {missing_ingested[:10]}"
        assert not missing_pushed, f"acknowledged pushed rows lost offline: {missing_pushed[:10]}"
        assert not missing_online, f"acknowledged pushed rows lost online: {missing_online[:10]}"
        for w in writers:
            assert not w.ack_errors, f"{w.name}: acknowledged answers not as expected: " \
                                     f"{w.ack_errors[:3]}"
            bad = w.tally.untyped_failures()
            assert not bad, f"{w.name}: failures that are not a typed 503: {bad[:5]}"
        failed = sum(w.tally.statuses[503] for w in writers)
        assert failed > 0, "no request failed although PostgreSQL was down longer than the " \
                           "acquire timeout"
        for name, r in recovery.items():
            assert r["recovered_s"] is not None, \
                f"{name}: no write succeeded within {RECOVERY_BOUND_S} s of PostgreSQL returning"
        assert_alive(servers)
    finally:
        shutdown(writers, servers)
        pg.close()
