"""Chaos: Redis killed while it carries rate limits, events and the online
feature store at once (issue 16).

One redis-server of the test's own (free port, no persistence; the shared
one at 6379 is never touched) is every Redis of a split deployment:
- the rate-limit counters of two gateway processes (`gateway.rate_limit.
  backend = "redis"`), one with the documented default `redis_failure =
  "open"` and one with `"closed"`;
- the event bus (Redis Streams) of a registry+features process and of an
  inference process that follows the registry alias `plus:production`
  with polling off, so only an `alias_moved` event can make it swap;
- the features role's online store.

test_gateway_redis.py covers a gateway started with Redis already down and
test_features_redis_outage.py online lookups against a features process
alone; here all three run at once through the gateway while Redis is killed
(SIGKILL: it comes back empty) and started again:
- rate limits: before and after the outage both gateways enforce the key's
  bucket (200 then 429); for every request made and answered while Redis was
  down, the fail-open gateway let it through (200, never 429 nor 503) and the
  fail-closed one answered a typed 503 "rate limit store unavailable";
- events: an alias move, a version upload and a feature ingest made during
  the outage are acknowledged before Redis comes back (their events wait in
  the event outbox, `mlserve_events_outbox_pending`, instead of the writes
  waiting for Redis), their events are in the stream once Redis is back, and
  the inference process serves the moved-to version (the event was
  delivered);
- online lookups through the gateway: every failure is a typed 503 "online
  store unavailable", answered within the client's limit (the store's
  command timeout plus a generous margin), and lookups succeed again after.
No timing assertion: counts, and generous bounds for waiting.

A second scenario kills the writer (`kill -9` of the registry+features
process) while Redis is down, just after an alias move and an ingest were
acknowledged: once Redis is back and the process restarted on its data
directory, the events it wrote to its outbox are delivered (the inference
process, which reaches the registry through a forwarder that follows the
restarted process's port, serves the moved-to version).
"""

import subprocess
import threading
import time
import uuid

from chaos_helpers import (Load, PrivateRedis, TcpForwarder, assert_alive, listening, report,
                           shutdown, start_with_config, stream_events, upload_version)
from features_helpers import apply_json
from helpers import http_request, post, wait_until
from server import REPO_ROOT, server_binary
from test_registry_follow import MODEL, metric, plus_model, registry_create, registry_upload
from topology import GatewayProcess

VIEW = "driver_stats"
COMMAND_TIMEOUT_MS = 400          # features.redis_command_timeout
LOOKUP_CLIENT_TIMEOUT_S = COMMAND_TIMEOUT_MS / 1000 + 10.0   # generous on a busy machine
REQUEST_TIMEOUT_S = 30            # the gateway's default deadline
WRITE_TIMEOUT_S = 60              # a guard: writes made during the outage answer at once
MIN_OUTAGE_S = 6.0
DELIVERY_BOUND_S = 30.0
RATE, BURST = 2, 4                # the limited keys' buckets


def toml_events(url, prefix):
    return ["[events]", 'backend = "redis"', f'redis_url = "{url}"', f'stream_prefix = "{prefix}"']


def create_key(config, name, *args):
    """`mlserve keys create` against the gateways' key database (their config file)."""
    proc = subprocess.run([str(server_binary()), "--config", str(config), "keys", "create",
                           "--name", name, *args],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def start_inference(tmp_path, registry_port, redis_url, prefix, *events_extra):
    """An inference process following `MODEL:production` of the registry at
    `registry_port` (gRPC) with polling off: only alias_moved events over
    Redis make it swap."""
    return start_with_config(tmp_path, "inference", [
        "[server]", f'data_dir = "{tmp_path / "inference-data"}"', "",
        "[inference]",
        f'models = [{{ name = "{MODEL}", source = "registry", alias = "production" }}]',
        'registry_poll_interval = "0s"', "",
        "[registry]", f'endpoint = "http://127.0.0.1:{registry_port}"', "",
        *toml_events(redis_url, prefix), *events_extra],
        "--role", "inference")


def production_on_version_1(reg, inference):
    """Versions 1 and 2 of MODEL, `production` on 1 and served by `inference`
    (its alias_moved delivered over Redis)."""
    registry_create(reg, MODEL)
    assert registry_upload(reg, MODEL, {"model.onnx": plus_model(1)}) == 1
    assert registry_upload(reg, MODEL, {"model.onnx": plus_model(2)}) == 2
    r = http_request(reg, "PUT", f"/v1/registry/models/{MODEL}/aliases/production",
                     body={"version": 1})
    assert r.status == 200, str(r)
    wait_until(lambda: metric(inference, "mlserve_inference_registry_serving_version",
                              model=MODEL) == 1, 60,
               "version 1 never served (alias_moved over Redis)\n" + inference.describe(40))


def infer_body():
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
                        "data": [0.0, 0.0, 0.0, 0.0]}]}


def test_redis_killed_under_rate_limits_events_and_lookups(tmp_path):
    redis = PrivateRedis()
    prefix = f"mlserve-chaos:{uuid.uuid4().hex[:8]}:"
    procs, traffic = [], []
    try:
        redis.start()
        # ------------------------------------------------------ topology
        core = start_with_config(tmp_path, "core", [
            "[server]", f'data_dir = "{tmp_path / "core-data"}"', "",
            "[features]", 'online_store = "redis"', f'redis_url = "{redis.url}"',
            f'redis_command_timeout = "{COMMAND_TIMEOUT_MS}ms"', 'redis_reconnect_delay = "100ms"',
            "", *toml_events(redis.url, prefix)],
            "--role", "registry,features", ready_path="/v1/registry/models")
        procs.append(core)
        inference = start_inference(tmp_path, core.grpc_port, redis.url, prefix)
        procs.append(inference)
        gateway_data = tmp_path / "gateway-data"

        def gateway(name, failure):
            return start_with_config(tmp_path, name, [
                "[server]", f'data_dir = "{gateway_data}"', "",
                "[gateway]", 'auth = "on"',
                f'inference_endpoints = ["http://127.0.0.1:{inference.grpc_port}"]', "",
                "[features]", f'endpoint = "http://127.0.0.1:{core.grpc_port}"', "",
                "[gateway.rate_limit]", 'backend = "redis"', f'redis_url = "{redis.url}"',
                f'redis_failure = "{failure}"'],
                "--role", "gateway", "--gateway-http-port", "0", "--gateway-grpc-port", "0",
                cls=GatewayProcess)
        # "open" is the documented default (config/mlserve.toml); said
        # explicitly so the test does not depend on it.
        gw_open = gateway("gateway-open", "open")
        procs.append(gw_open)
        gw_closed = gateway("gateway-closed", "closed")
        procs.append(gw_closed)
        gw_config = tmp_path / "gateway-open.toml"
        key_open = create_key(gw_config, "open", "--rate", str(RATE), "--burst", str(BURST))
        key_closed = create_key(gw_config, "closed", "--rate", str(RATE), "--burst", str(BURST))
        key_lookups = create_key(gw_config, "lookups", "--rate", "0", "--scope", "features:read")
        key_check = create_key(gw_config, "check", "--rate", "0")
        reg = core.http_port

        # ------------------------------------------------------- state
        production_on_version_1(reg, inference)
        r = post(reg, "/v1/features/apply", apply_json(reg))
        assert r.status == 200, str(r)
        now_us = int(time.time() * 1e6)
        r = post(reg, "/v1/features/push", {"feature_view": VIEW, "to": "online", "rows": [
            {"values": {"driver_id": d, "rate": d / 10, "trips": d}, "event_ts": now_us}
            for d in range(1, 17)]})
        assert r.status == 200 and r.json()["online_rows"] == 16, str(r)

        # ----------------------------------------------------- traffic
        def infer_via(gw, key):
            return lambda _n: post(gw.gateway_http_port, f"/v2/models/{MODEL}/infer", infer_body(),
                                headers={"Authorization": f"Bearer {key}"},
                                timeout=REQUEST_TIMEOUT_S)

        def lookup(_n):
            return post(gw_open.gateway_http_port, "/v1/features/online", {
                "features": [f"{VIEW}:rate"],
                "entities": [{"keys": {"driver_id": d}} for d in range(1, 17)]},
                headers={"Authorization": f"Bearer {key_lookups}"},
                timeout=LOOKUP_CLIENT_TIMEOUT_S)

        rl_open = Load("ratelimit.fail_open", infer_via(gw_open, key_open), pause=0.05)
        rl_closed = Load("ratelimit.fail_closed", infer_via(gw_closed, key_closed), pause=0.05)
        lookups = Load("online_lookups", lookup, pause=0.02)
        traffic = [rl_open, rl_closed, lookups]
        for t in traffic:
            t.start()

        wait_until(lambda: rl_open.seen({200, 429}) and rl_closed.seen({200, 429})
                   and len([a for a in lookups.after(0) if a[2] == 200]) >= 10, 60,
                   "limits enforced and lookups served before the outage")
        first_lookup = lookups.after(0)[0]
        assert first_lookup[2] == 200

        # ------------------------------------------------------ outage
        redis.kill()
        killed_at = time.monotonic()
        # Writes whose events travel over Redis, made while it is down.
        writes = {}

        def write(name, call):
            started = time.monotonic()
            try:
                resp = call()
                writes[name] = {"status": resp.status,
                                "body": resp.body[:200].decode(errors="replace"),
                                "started_s": round(started - killed_at, 3),
                                "answered_s": round(time.monotonic() - killed_at, 3)}
            except OSError as e:
                writes[name] = {"status": None, "error": repr(e),
                                "started_s": round(started - killed_at, 3)}

        # One thread per write, made at once: none of them waits for Redis
        # (each event is written to the outbox with its change).
        outage_writes = [
            ("alias_move", lambda: http_request(
                reg, "PUT", f"/v1/registry/models/{MODEL}/aliases/production",
                body={"version": 2}, timeout=WRITE_TIMEOUT_S)),
            ("upload", lambda: upload_version(reg, MODEL, {"model.onnx": plus_model(3)},
                                              timeout=WRITE_TIMEOUT_S)),
            ("ingest", lambda: post(reg, "/v1/features/ingest", {
                "feature_view": VIEW, "rows": [{"values": {"driver_id": 77, "rate": 0.77,
                                                           "trips": 77}, "event_ts": now_us}]},
                timeout=WRITE_TIMEOUT_S)),
        ]
        writers = [threading.Thread(target=write, args=w, daemon=True) for w in outage_writes]
        for w in writers:
            w.start()

        def outage_seen():
            now = time.monotonic()
            return (now - killed_at >= MIN_OUTAGE_S
                    and len(rl_open.between(killed_at, now)) >= 3
                    and len(rl_closed.between(killed_at, now)) >= 3
                    and sum(1 for a in lookups.between(killed_at, now) if a[2] == 503) >= 3)
        wait_until(outage_seen, 60, "answers during the outage")
        # The events of the outage's writes wait in the outbox.
        pending_during_outage = metric(core, "mlserve_events_outbox_pending")
        writes_done_before_redis_back = not any(w.is_alive() for w in writers)
        restart_began = time.monotonic()
        redis.start()
        up_at = time.monotonic()

        # ---------------------------------------------------- recovery
        def delivered():
            return metric(inference, "mlserve_inference_registry_serving_version",
                          model=MODEL) == 2
        delivery = None
        deadline = up_at + DELIVERY_BOUND_S
        while time.monotonic() < deadline:
            if delivered():
                delivery = round(time.monotonic() - up_at, 3)
                break
            time.sleep(0.1)
        wait_until(lambda: (rl_open.seen({429}, up_at) and rl_closed.seen({200, 429}, up_at)
                            and lookups.seen({200}, up_at)), DELIVERY_BOUND_S,
                   "limits and lookups back after the outage")
        for w in writers:
            w.join(WRITE_TIMEOUT_S + 10)
        assert not any(w.is_alive() for w in writers), \
            "a write made during the outage never answered"
        time.sleep(0.5)
        for t in traffic:
            t.stop_flag.set()
        for t in traffic:
            t.stop(REQUEST_TIMEOUT_S + 10)

        # The events now in the (restarted, empty at first) Redis.
        models_stream = stream_events(redis.port, f"{prefix}models")
        data_stream = stream_events(redis.port, f"{prefix}data")
        alias_events = [e for _, e in models_stream
                        if e and e.get("type") == "alias_moved" and e.get("alias") == "production"
                        and e.get("to") == 2]
        version_events = [e for _, e in models_stream
                          if e and e.get("type") == "model_version_registered"
                          and e.get("version") == 3]
        data_events = [e for _, e in data_stream
                       if e and e.get("type") == "data_arrived" and e.get("feature_view") == VIEW]
        # Where each consumer group of the models stream stands: a group
        # recreated after the alias event, at the stream's end, has its
        # last-delivered id past the event without having delivered it.
        groups = {}
        for info in redis.command("XINFO", "GROUPS", f"{prefix}models") or []:
            g = dict(zip(info[::2], info[1::2]))
            groups[g["name"]] = {k: g.get(k) for k in ("last-delivered-id", "entries-read", "lag",
                                                       "pending")}
        alias_ids = [i for i, e in models_stream
                     if e and e.get("type") == "alias_moved" and e.get("to") == 2]
        served = post(gw_open.gateway_http_port, f"/v2/models/{MODEL}/infer", infer_body(),
                      headers={"Authorization": f"Bearer {key_check}"})

        # ------------------------------------------------------ numbers
        outage = {t.name: t.between(killed_at, restart_began) for t in traffic}

        def first_after(t, status):
            ends = [a[1] for a in t.after(up_at) if a[2] == status]
            return round(min(ends) - up_at, 3) if ends else None

        numbers = {
            "outage_s": round(up_at - killed_at, 3),
            "traffic": {t.name: t.tally.summary() for t in traffic},
            "during_outage_by_status": {n: Load.by_status(a) for n, a in outage.items()},
            "slowest_failed_lookup_s": lookups.tally.slowest_failure,
            "outage_writes": writes,
            # A write answered only once Redis was back waited for it.
            "outage_writes_answered_after_redis_back": sorted(
                n for n, w in writes.items()
                if w.get("answered_s") is not None and w["answered_s"] >= up_at - killed_at),
            "outbox_pending_during_outage": pending_during_outage,
            "outbox_pending_after": metric(core, "mlserve_events_outbox_pending"),
            "events_in_stream_after": {"alias_moved_to_2": len(alias_events),
                                       "model_version_registered_3": len(version_events),
                                       "data_arrived": len(data_events)},
            "alias_move_delivered_s_after_redis_back": delivery,
            "alias_moved_to_2_stream_ids": alias_ids,
            "models_stream_groups": groups,
            "first_after_redis_back_s": {
                "lookup_200": first_after(lookups, 200),
                "fail_closed_200": first_after(rl_closed, 200),
                "fail_open_429": first_after(rl_open, 429),
                "fail_closed_429": first_after(rl_closed, 429)},
        }
        report("redis_killed", numbers)

        # ----------------------------------------------------- verdicts
        # Rate limits: the failure modes while Redis was down.
        open_out, closed_out = outage[rl_open.name], outage[rl_closed.name]
        assert open_out and closed_out
        assert all(a[2] == 200 for a in open_out), \
            f"fail open must let requests through: {Load.by_status(open_out)}"
        assert all(a[2] == 503 and "rate limit store unavailable" in (a[3] or "")
                   for a in closed_out), \
            f"fail closed must answer a typed 503: {[(a[2], a[3]) for a in closed_out][:5]}"
        for t in (rl_open, rl_closed):
            assert set(t.tally.statuses) <= {200, 429, 503}, t.tally.summary()
            assert not t.tally.exceptions, t.tally.summary()
        assert rl_open.tally.statuses[503] == 0, rl_open.tally.summary()
        # Online lookups: typed 503 within the client's limit, nothing else.
        assert set(lookups.tally.statuses) <= {200, 503}, lookups.tally.summary()
        assert not lookups.tally.exceptions, \
            f"lookups unanswered within {LOOKUP_CLIENT_TIMEOUT_S} s: {lookups.tally.summary()}"
        bad = [a for a in lookups.after(0)
               if a[2] == 503 and "online store unavailable" not in (a[3] or "")]
        assert not bad, f"untyped lookup failures: {bad[:5]}"
        assert lookups.tally.statuses[503] >= 3
        # Events: the writes made during the outage were acknowledged and
        # their events are in the stream; the alias move reached the
        # inference process.
        assert writes["alias_move"]["status"] == 200, writes
        assert writes["upload"]["status"] == 201, writes
        assert writes["ingest"]["status"] == 200, writes
        # ... before Redis came back: none waited for it.
        assert writes_done_before_redis_back, f"a write waited for Redis: {writes}"
        assert not numbers["outage_writes_answered_after_redis_back"], writes
        assert pending_during_outage >= 3, numbers
        assert numbers["outbox_pending_after"] == 0, numbers
        assert alias_events, f"the alias_moved event of the outage is lost: {models_stream}"
        assert version_events, f"the model_version_registered event is lost: {models_stream}"
        assert data_events, f"the data_arrived event of the outage is lost: {data_stream}"
        assert delivery is not None, \
            f"the inference process never served version 2 within {DELIVERY_BOUND_S} s of " \
            f"Redis returning (alias_moved not delivered)\n{inference.describe(60)}"
        assert served.status == 200 and served.json()["model_version"] == "2", str(served)
        assert_alive(procs)
    finally:
        shutdown(traffic, procs)
        redis.kill()


def test_writer_killed_while_redis_down_its_events_are_delivered_after_restart(tmp_path):
    """kill -9 of the registry+features process while Redis is down, right
    after an alias move and an ingest were acknowledged (their events only in
    its outbox); Redis back; nothing sends them while the writer is dead; the
    writer restarted on its data directory sends them, and the inference
    process serves the moved-to version."""
    redis = PrivateRedis()
    prefix = f"mlserve-chaos:{uuid.uuid4().hex[:8]}:"
    procs, forwarder = [], None
    try:
        redis.start()
        core_config = ["[server]", f'data_dir = "{tmp_path / "core-data"}"', "",
                       *toml_events(redis.url, prefix)]

        def start_core():
            return start_with_config(tmp_path, "core", core_config, "--role", "registry,features",
                                     ready_path="/v1/registry/models")
        core = start_core()
        procs.append(core)
        # The inference process reaches the registry through a forwarder
        # that follows the restarted writer's port.
        forwarder = TcpForwarder(core.grpc_port)
        inference = start_inference(tmp_path, forwarder.port, redis.url, prefix,
                                    'retry_delay = "200ms"')
        procs.append(inference)
        reg = core.http_port
        production_on_version_1(reg, inference)

        def serving():
            return metric(inference, "mlserve_inference_registry_serving_version", model=MODEL)
        r = post(reg, "/v1/features/apply", apply_json(reg))
        assert r.status == 200, str(r)

        # ------------------------------------------ writes during the outage
        redis.kill()
        started = time.monotonic()
        moved = http_request(reg, "PUT", f"/v1/registry/models/{MODEL}/aliases/production",
                             body={"version": 2}, timeout=WRITE_TIMEOUT_S)
        alias_ack_s = round(time.monotonic() - started, 3)
        started = time.monotonic()
        ingested = post(reg, "/v1/features/ingest", {
            "feature_view": VIEW, "rows": [{"values": {"driver_id": 77, "rate": 0.77, "trips": 77},
                                            "event_ts": int(time.time() * 1e6)}]},
            timeout=WRITE_TIMEOUT_S)
        ingest_ack_s = round(time.monotonic() - started, 3)
        redis_down_at_ack = not listening(redis.port)
        assert moved.status == 200, str(moved)
        assert ingested.status == 200, str(ingested)
        wait_until(lambda: metric(core, "mlserve_events_outbox_pending") >= 2, 30,
                   "the outage's events are not counted as pending\n" + core.describe(40))
        pending_before_kill = metric(core, "mlserve_events_outbox_pending")

        # ------------------------------------- kill -9, Redis back, restart
        core.kill()
        redis.start()
        time.sleep(2.0)
        before_restart = [e for _, e in stream_events(redis.port, f"{prefix}models")
                          if e and e.get("type") == "alias_moved" and e.get("to") == 2]
        serving_before_restart = serving()
        core = start_core()
        procs.append(core)
        forwarder.retarget(core.grpc_port)
        restarted_at = time.monotonic()
        delivery = None
        while time.monotonic() < restarted_at + DELIVERY_BOUND_S:
            if serving() == 2:
                delivery = round(time.monotonic() - restarted_at, 3)
                break
            time.sleep(0.1)
        alias_events = [e for _, e in stream_events(redis.port, f"{prefix}models")
                        if e and e.get("type") == "alias_moved" and e.get("to") == 2]
        data_events = [e for _, e in stream_events(redis.port, f"{prefix}data")
                       if e and e.get("type") == "data_arrived" and e.get("feature_view") == VIEW]
        wait_until(lambda: metric(core, "mlserve_events_outbox_pending") == 0, 30,
                   "the restarted writer's outbox never emptied\n" + core.describe(40))
        numbers = {
            "alias_move_ack_s_redis_down": alias_ack_s,
            "ingest_ack_s_redis_down": ingest_ack_s,
            "redis_still_down_when_both_acknowledged": redis_down_at_ack,
            "outbox_pending_before_kill": pending_before_kill,
            "alias_moved_to_2_in_stream_before_restart": len(before_restart),
            "serving_before_restart": serving_before_restart,
            "delivered_s_after_restart": delivery,
            "alias_moved_to_2_in_stream_after": len(alias_events),
            "data_arrived_in_stream_after": len(data_events),
        }
        report("redis_down_writer_killed", numbers)

        assert redis_down_at_ack, "the writes were acknowledged only once Redis was back"
        assert pending_before_kill >= 2, numbers
        assert not before_restart and serving_before_restart == 1, numbers
        assert alias_events and data_events, numbers
        assert delivery is not None, \
            f"the restarted writer's alias_moved never reached the inference process\n" \
            f"{core.describe(60)}\n{inference.describe(60)}"
        assert_alive([core, inference])
    finally:
        shutdown([], procs)
        if forwarder is not None:
            forwarder.close()
        redis.kill()
