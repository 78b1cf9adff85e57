"""Chaos: the inference role's artifact cache runs out of disk while a new
version downloads.

One process runs the registry and the inference role; the inference role
follows the registry alias `production` of one model and keeps its artifact
cache (`inference.artifact_cache_dir`) on a 4 MiB tmpfs. Version 1 (a few
hundred bytes) serves under load; version 2 carries an 8 MiB file, more than
the tmpfs has free, and the alias moves to it. Expected: every request keeps
being answered by version 1, the failure is visible and typed (the sync
failure metric with reason "cache", the refusal logged with the disk
error), and the cache holds no partial file.

A failed handler of the in-process event bus is retried after
`events.retry_delay`; it is 10 minutes here so that no retry is downloading
while the test looks at the cache (polling is off too), which makes the
"nothing partial is left" check exact."""

import numpy as np

from chaos_helpers import PlusTraffic, Tmpfs, files_under, partial_files, report
from helpers import get, post, wait_until
from server import start_server
from test_registry import set_alias, sha, upload
from test_registry_follow import metric, plus_model, registry_create

MODEL = "chaos-disk"
TMPFS_SIZE = "4m"
BIG = 8 * 1024 * 1024


def write_config(path, data_dir, cache_dir):
    path.write_text("\n".join([
        "[server]", f'data_dir = "{data_dir}"', "",
        "[inference]",
        f'models = [{{ name = "{MODEL}", source = "registry", alias = "production" }}]',
        'registry_poll_interval = "0s"',
        f'artifact_cache_dir = "{cache_dir}"', "",
        "[events]", 'backend = "memory"', 'retry_delay = "10m"', ""]))
    return path


def test_cache_disk_full_during_download_old_version_keeps_serving(tmp_path):
    with Tmpfs(tmp_path / "cache", TMPFS_SIZE) as disk:
        run_scenario(tmp_path, disk)


def run_scenario(tmp_path, disk):
    """The scenario, its artifact cache on the mounted `disk`."""
    server = None
    numbers = {"scenario": "cache_disk_full", "tmpfs_bytes": disk.total_bytes()}
    try:
        (tmp_path / "repo").mkdir()
        config = write_config(tmp_path / "mlserve.toml", tmp_path / "data", disk.path)
        server = start_server(tmp_path / "repo", "--config", config,
                              "--role", "registry,inference")
        port = server.http_port

        def serving():
            return metric(server, "mlserve_inference_registry_serving_version", model=MODEL)

        def failures(reason=None):
            labels = {"model": MODEL} if reason is None else {"model": MODEL, "reason": reason}
            return metric(server, "mlserve_inference_registry_sync_failures_total", **labels)

        registry_create(port, MODEL)
        r = upload(port, MODEL, {"model.onnx": plus_model(1)})
        assert r.status == 201 and r.json()["version"] == 1, str(r)
        assert set_alias(port, MODEL, "production", 1).status == 200
        wait_until(lambda: serving() == 1, 60, "version 1 never served\n" + server.describe(40))

        blob = np.random.default_rng(7).integers(0, 256, BIG, dtype=np.uint8).tobytes()
        r = upload(port, MODEL, {"model.onnx": plus_model(2), "blob.bin": blob})
        assert r.status == 201 and r.json()["version"] == 2, str(r)
        numbers["free_bytes_before_swap"] = disk.free_bytes()
        numbers["new_version_bytes"] = sum(f["size"] for f in r.json()["files"])
        assert numbers["new_version_bytes"] > numbers["free_bytes_before_swap"]

        reasons = ["cache", "download", "registry", "checksum", "load", "warmup"]

        def failures_by_reason():
            return {reason: failures(reason) for reason in reasons if failures(reason)}
        # (the start counted a "registry" failure: the alias did not exist yet)
        failures_before = failures_by_reason()
        numbers["sync_failures_before_swap"] = failures_before
        traffic = PlusTraffic(port, MODEL).start()
        try:
            wait_until(lambda: traffic.total() >= 20, 60, "no traffic answered")
            before_swap = traffic.total()
            assert set_alias(port, MODEL, "production", 2).status == 200
            wait_until(lambda: failures() > sum(failures_before.values()), 60,
                       "the failed download was never reported\n" + server.describe(40))
            at_failure = traffic.total()
            # keep the traffic going a while after the failure
            wait_until(lambda: traffic.total() >= at_failure + 50, 60,
                       "traffic stopped after the failure")
        finally:
            traffic.stop()
        numbers["requests"] = traffic.total()
        numbers["requests_before_swap"] = before_swap
        numbers["responses_by_status"] = {str(k): v for k, v in traffic.status.items()}
        numbers["responses_by_version"] = dict(traffic.versions)
        numbers["wrong_offsets"] = len(traffic.mismatched)
        failures_after = failures_by_reason()
        new_failures = {reason: n - failures_before.get(reason, 0)
                        for reason, n in failures_after.items()
                        if n != failures_before.get(reason, 0)}
        numbers["sync_failures_after_swap"] = new_failures
        numbers["serving_version_after"] = serving()
        cache_files = files_under(disk.path)
        numbers["cache_files"] = cache_files
        numbers["partial_files_left"] = partial_files(disk.path)
        numbers["free_bytes_after"] = disk.free_bytes()

        # The old version answered everything.
        assert traffic.errors == [], f"{len(traffic.errors)} failed: {traffic.errors[:3]}"
        assert traffic.mismatched == [], traffic.mismatched[:3]
        assert set(traffic.versions) == {"1"}, traffic.versions
        assert serving() == 1
        # A typed failure: the cache (disk) reason, the disk error in the log.
        assert new_failures == {"cache": 1}, new_failures
        wait_until(lambda: "registry version refused" in server.log, 10,
                   "the refusal was not logged")
        refusal = [line for line in server.log.splitlines()
                   if "registry version refused" in line]
        numbers["refusal_log"] = refusal[-1][-400:]
        assert any("No space left on device" in line for line in refusal), refusal
        r = get(port, f"/v2/models/{MODEL}/ready")
        assert r.status == 200, str(r)
        index = post(port, "/v2/repository/index", {}).json()
        rows = [row for row in index if row["name"] == MODEL]
        numbers["repository_index"] = rows
        assert [(row.get("version"), row.get("state")) for row in rows] == [("1", "READY")], rows
        # Nothing partial left behind; the big file is not in the cache.
        assert numbers["partial_files_left"] == [], cache_files
        assert sha(blob) not in cache_files, cache_files
        for rel in cache_files:
            if "/" not in rel:  # a cached blob is named by its sha256
                assert sha((disk.path / rel).read_bytes()) == rel, f"{rel} is not whole"
    finally:
        report("cache_disk_full", numbers)
        if server is not None:
            server.stop()
