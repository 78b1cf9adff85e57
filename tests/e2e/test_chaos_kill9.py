"""Chaos: `kill -9` of the all-in-one process while an alias moves back and
forth, then a restart on the same data directory.

The all-in-one process (every role, SQLite and the local artifact store in
its data directory, the artifact cache in <data>/cache) follows the alias
`production` of a model with two versions (offsets 1 and 2). A thread moves
the alias 1 -> 2 -> 1 ... as fast as the registry answers while two others
send inference requests; at a random moment (0.2 to 3.5 s after the first
acknowledged move, whatever the machine's speed) the process gets SIGKILL. The
restarted process must come up, the alias must point at a ready version that
is the last move the registry acknowledged (or the move in flight at the
kill), the alias history must be an unbroken chain ending there, inference
through the alias must be answered by that version, and the artifact cache
must hold no partial or temporary file, only whole blobs and the staged
version being served."""

import json
import os
import random
import signal
import threading
import time
from collections import Counter

import numpy as np

from chaos_helpers import (PlusTraffic, alias_history, files_under, infer_plus,
                           partial_files, report)
from helpers import get, wait_until
from server import start_server
from test_registry import set_alias, sha, upload
from test_registry_follow import metric, offset_of, plus_model, registry_create

MODEL = "chaos-kill9"
ALIAS = "production"


def write_config(path, data_dir):
    path.write_text("\n".join([
        "[server]", f'data_dir = "{data_dir}"', "",
        "[inference]",
        f'models = [{{ name = "{MODEL}", source = "registry", alias = "{ALIAS}" }}]', "",
        "[events]", 'backend = "memory"', 'retry_delay = "200ms"', ""]))
    return path


class Mover(threading.Thread):
    """Moves the alias between versions 1 and 2 until the process dies;
    records every acknowledged move and the one in flight."""

    def __init__(self, port, start_at):
        super().__init__(daemon=True)
        self.port = port
        self.next = start_at
        self.acked = []
        self.in_flight = None
        self.failure = None
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            target = self.next
            self.in_flight = target
            try:
                r = set_alias(self.port, MODEL, ALIAS, target)
            except Exception as e:  # noqa: BLE001 - the kill ends the loop
                self.failure = repr(e)
                return
            if r.status != 200:
                self.failure = str(r)
                return
            self.acked.append(r.json())
            self.in_flight = None
            self.next = 3 - target


def test_kill9_during_alias_swaps_restart_serves_last_good_version(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    data = tmp_path / "data"
    cache = data / "cache"
    config = write_config(tmp_path / "mlserve.toml", data)
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    kill_after = round(rng.uniform(0.2, 3.5), 2)
    numbers = {"scenario": "kill9_during_alias_swap", "kill_after_first_move_s": kill_after}
    first = start_server(repo, "--config", config)
    again = None
    loads = []
    try:
        port = first.http_port

        def serving(s):
            return metric(s, "mlserve_inference_registry_serving_version", model=MODEL)

        registry_create(port, MODEL)
        blobs = {}
        for k in (1, 2):
            onnx_bytes = plus_model(k)
            blobs[k] = sha(onnx_bytes)
            r = upload(port, MODEL, {"model.onnx": onnx_bytes})
            assert r.status == 201 and r.json()["version"] == k, str(r)
        # Both versions served once, so both are in the cache before the chaos.
        for k in (1, 2):
            assert set_alias(port, MODEL, ALIAS, k).status == 200
            wait_until(lambda: serving(first) == k, 60,
                       f"version {k} never served\n" + first.describe(40))
        setup_moves = 2

        mover = Mover(port, start_at=1)
        traffic = PlusTraffic(port, MODEL, timeout=10)
        loads += [mover, traffic]
        mover.start()
        traffic.start()
        wait_until(lambda: mover.acked or mover.failure, 60,
                   "no alias move answered\n" + first.describe(40))
        time.sleep(kill_after)
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(30)
        mover.join(30)
        traffic.stop(30)
        assert not mover.is_alive(), "the alias mover did not stop after the kill"
        first.kill()  # reaps the reader thread; the process is already gone
        acked = mover.acked
        last_acked = acked[-1]["to_version"] if acked else 2
        status_before = traffic.status
        numbers["moves_acknowledged"] = len(acked)
        numbers["move_in_flight_at_kill"] = mover.in_flight
        numbers["last_acknowledged_version"] = last_acked
        numbers["requests_before_kill"] = sum(status_before.values())
        numbers["responses_before_kill"] = {str(k): v for k, v in status_before.items()}
        numbers["cache_files_at_kill"] = files_under(cache)
        assert len(acked) >= 1, f"no alias move was acknowledged: {mover.failure}"
        assert not traffic.mismatched, traffic.mismatched[:3]

        # The restart on the same data directory.
        started = time.monotonic()
        again = start_server(repo, "--config", config)
        numbers["restart_ready_s"] = round(time.monotonic() - started, 1)
        port = again.http_port

        alias = get(port, f"/v1/registry/models/{MODEL}/aliases/{ALIAS}")
        assert alias.status == 200, str(alias)
        alias = alias.json()
        version = alias["version"]
        numbers["alias_after_restart"] = version
        assert alias["model_version"]["version"] == version
        assert alias["model_version"]["status"] == "ready", alias
        history = alias_history(port, MODEL, ALIAS)
        numbers["alias_history_length"] = len(history)
        for before, after in zip(history, history[1:]):
            assert after["from_version"] == before["to_version"], (before, after)
        assert history[-1]["to_version"] == version, history[-3:]
        ids = {m["id"] for m in history}
        assert all(m["id"] in ids for m in acked), "an acknowledged move is missing"
        # Every acknowledged move is there, plus at most the one in flight
        # (committed, its answer lost with the process).
        extra = len(history) - setup_moves - len(acked)
        numbers["committed_but_unacknowledged_moves"] = extra
        assert extra in (0, 1) and (extra == 0 or mover.in_flight is not None), \
            (len(history), setup_moves, len(acked), mover.in_flight)
        expected = last_acked if extra == 0 else mover.in_flight
        assert version == expected, \
            f"alias at {version}; last acknowledged {last_acked}, in flight {mover.in_flight}"

        # Served by that version through the alias.
        wait_until(lambda: serving(again) == version, 60,
                   f"the restarted process does not serve version {version}\n"
                   + again.describe(40))
        answers = Counter()
        for i in range(20):
            x = np.full((1, 4), float(i), dtype=np.float32)
            r = infer_plus(port, MODEL, x)
            answers[r.status] += 1
            assert r.status == 200, str(r)
            assert r.json()["model_version"] == str(version)
            assert offset_of(r, x) == float(version)
        numbers["requests_after_restart"] = sum(answers.values())
        numbers["responses_after_restart"] = {str(k): v for k, v in answers.items()}
        numbers["downloads_after_restart"] = metric(
            again, "mlserve_inference_registry_downloads_total", model=MODEL)

        # The cache: whole blobs, the served record, the served stage; nothing partial.
        files = files_under(cache)
        numbers["cache_files_after_restart"] = files
        numbers["partial_files_left"] = partial_files(cache)
        stages = sorted(p.name for p in (cache / "stage" / MODEL).iterdir()) \
            if (cache / "stage" / MODEL).exists() else []
        numbers["staged_versions"] = stages
        assert numbers["partial_files_left"] == [], files
        for rel in files:
            if "/" not in rel:
                assert sha((cache / rel).read_bytes()) == rel, f"cached {rel} is not whole"
        assert {blobs[1], blobs[2]} <= set(files), files
        record = json.loads((cache / "served" / f"{MODEL}.json").read_text())
        numbers["served_record_version"] = record.get("version")
        assert record.get("version") == version, record
        assert stages == [f"v{version}"], \
            f"staged versions {stages}, but only v{version} is served"
        staged = cache / "stage" / MODEL / f"v{version}" / str(version) / "model.onnx"
        assert sha(staged.read_bytes()) == blobs[version]
    finally:
        report("kill9_during_alias_swap", numbers)
        for load in loads:
            load.stop_flag.set()
        first.kill()
        if again is not None:
            again.stop()
