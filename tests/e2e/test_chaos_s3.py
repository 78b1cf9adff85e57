"""Chaos: the S3 server is killed (SIGKILL) in the middle of a version
upload, then restarted on the same directory and port.

A registry process keeps its metadata in SQLite and its artifacts in an
s3s-fs of the test's own. A version of 48 MiB streams to S3 as a multipart
upload; once s3s-fs holds some of its parts, s3s-fs is killed, and the
client sends the rest. Expected: the upload gets a typed error (503, the
artifact store is unavailable), no version becomes visible, and once s3s-fs
is back (same directory, same port) the registry's collector removes what
the failed upload left (the object it had completed, and the multipart
upload it could not abort), and the next upload succeeds with the next
version number (refused uploads spend none).

The collector runs every second here with a grace of 10 s
(`registry.gc_interval`, `registry.gc_grace`); the default is 10 min / 1 h."""

import os
import time
from collections import Counter

from chaos_helpers import S3Server, SlowUpload, all_versions, report, upload_version
from helpers import get, wait_until
from server import Server
from test_registry import multipart
from test_registry_follow import metric, plus_model, registry_create

MODEL = "chaos-s3"
BIG = 48 * 1024 * 1024          # six 8 MiB parts
HOLD_AT = 20 * 1024 * 1024      # the kill happens once this much of the body is out
GC_GRACE_S = 10


def registry_versions(port):
    """[(version, status)] of every listed version, newest first."""
    return [(v["version"], v.get("status")) for v in all_versions(port, MODEL)]


def test_s3_killed_mid_upload_no_version_orphans_collected_next_upload_works(tmp_path):
    s3 = S3Server(tmp_path / "s3")
    registry = None
    numbers = {"scenario": "s3_killed_mid_upload"}
    uploads = Counter()  # answers to the version uploads, by status
    try:
        s3.start()
        env = {"MLSERVE_SERVER__DATA_DIR": str(tmp_path / "data"),
               "MLSERVE_REGISTRY__GC_GRACE": f"{GC_GRACE_S}s",
               "MLSERVE_REGISTRY__GC_INTERVAL": "1s",
               **s3.registry_env()}
        (tmp_path / "repo").mkdir()
        registry = Server(ready_path="/v1/registry/models").start(
            tmp_path / "repo", "--role", "registry", env=env)
        port = registry.http_port

        registry_create(port, MODEL)
        r = upload_version(port, MODEL, {"model.onnx": plus_model(1)})
        uploads[str(r.status)] += 1
        assert r.status == 201, str(r)
        assert r.json()["version"] == 1
        before_objects = s3.objects()
        numbers["versions_before"] = [v for v, _ in registry_versions(port)]
        numbers["objects_before"] = len(before_objects)
        assert len(before_objects) == 1, before_objects

        # The big upload: model.onnx completes, blob.bin streams in 8 MiB parts.
        body, headers = multipart({"model.onnx": plus_model(2), "blob.bin": os.urandom(BIG)})
        upload = SlowUpload(port, f"/v1/registry/models/{MODEL}/versions", headers, body,
                            hold_at=HOLD_AT, timeout=300).start()
        assert upload.held.wait(120), "the upload never reached the kill point"
        assert not upload.done.is_set(), \
            f"the upload ended before the kill: {upload.status} {upload.reply[:300]!r}"
        # Mid-transfer on the S3 side: s3s-fs has stored parts of blob.bin.
        wait_until(lambda: s3.upload_part_files(), 60,
                   "s3s-fs never received a part of the upload\n" + registry.describe(40))
        parts_at_kill = len(s3.upload_part_files())
        numbers["body_bytes"] = len(body)
        numbers["sent_at_kill"] = upload.sent
        numbers["s3_parts_stored_at_kill"] = parts_at_kill
        s3.kill9()
        upload.release()
        upload.wait(300)

        numbers["upload_status"] = upload.status
        uploads[str(upload.status)] += 1
        numbers["upload_error"] = upload.error_message()
        numbers["upload_seconds"] = round(upload.took or 0, 1)
        assert upload.error is None, upload.error + "\n" + registry.describe(60)
        assert upload.status == 503, \
            f"expected 503, got {upload.status} {upload.reply[:300]!r}\n{registry.describe(60)}"
        assert "artifact store" in (upload.error_message() or ""), upload.reply[:300]
        assert registry.running(), "the registry died with its S3 server\n" + registry.describe(60)

        # Nothing visible: the registry (SQLite) answers without S3.
        listed = registry_versions(port)
        numbers["versions_after_failure"] = [v for v, _ in listed]
        assert listed == [(1, "ready")], listed
        assert get(port, f"/v1/registry/models/{MODEL}").json()["latest_version"] == 1
        assert get(port, f"/v1/registry/models/{MODEL}/versions/2").status == 404
        numbers["refused_unavailable"] = metric(
            registry, "mlserve_registry_uploads_refused_total", code="unavailable")
        numbers["objects_while_down"] = len(s3.objects())
        numbers["open_multipart_files_while_down"] = len(s3.open_multipart_uploads())

        # S3 comes back on the same directory and port.
        s3.start()

        def collected():
            return s3.objects() == before_objects
        try:
            wait_until(collected, 60, "the orphan object of the failed upload was not collected")
        finally:
            numbers["objects_after_restart"] = s3.objects()
        numbers["orphans_collected_metric"] = metric(
            registry, "mlserve_registry_orphans_collected_total")

        r = upload_version(port, MODEL, {"model.onnx": plus_model(3)})
        uploads[str(r.status)] += 1
        assert r.status == 201, str(r) + "\n" + registry.describe(40)
        numbers["next_upload_status"] = r.status
        numbers["next_upload_version"] = r.json()["version"]
        assert r.json()["version"] == 2, "the failed upload spent a version number"
        listed = registry_versions(port)
        numbers["versions_after"] = [v for v, _ in listed]
        assert listed == [(2, "ready"), (1, "ready")], listed
        assert get(port, f"/v1/registry/models/{MODEL}/versions/2/files/model.onnx").body \
            == plus_model(3)

        # The collector runs every second: give it a few grace periods, then
        # count what is left in the S3 server's directory.
        deadline = time.monotonic() + 3 * GC_GRACE_S
        while True:
            objects, leftovers = s3.objects(), s3.open_multipart_uploads()
            if (len(objects) == 2 and not leftovers) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        numbers["objects_final"] = len(objects)
        numbers["open_multipart_files_final"] = leftovers
        numbers["open_multipart_bytes_final"] = sum(
            (s3.root / name).stat().st_size for name in leftovers if (s3.root / name).exists())
        assert len(objects) == 2, f"objects left: {objects} (one per live version expected)"
        assert leftovers == [], (
            f"the failed upload's multipart upload was never aborted: {leftovers} "
            f"({numbers['open_multipart_bytes_final']} bytes) stay in the S3 server, "
            "unlisted, after the collector ran")
    finally:
        numbers["uploads_by_status"] = dict(uploads)
        report("s3_killed_mid_upload", numbers)
        if registry is not None:
            registry.stop()
        s3.stop()
