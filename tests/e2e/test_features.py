"""The features role end to end on the real binary (embedded defaults:
SQLite + in-memory online store): the CLI (apply, ingest CSV, materialize,
history) through gRPC, and the REST API (online lookups, push, pipelines,
transform, errors)."""

import base64
import csv
import http.client
import io
import os
import struct
import subprocess
import time

from PIL import Image

from features_helpers import DEFINITIONS, MIN, T0, apply_json, features_server, ok, online
from helpers import get, peak_rss_mb, post
from server import REPO_ROOT, server_binary


def cli(server, *args):
    proc = subprocess.run(
        [str(server_binary()), "features", "--endpoint", f"http://127.0.0.1:{server.grpc_port}",
         *map(str, args)],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def iso(us):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + "Z"


def test_cli_and_rest(tmp_path):
    with features_server(tmp_path) as server:
        cli_and_rest(server, tmp_path)


def test_bad_input_gets_typed_errors(tmp_path):
    with features_server(tmp_path) as server:
        bad_input(server, tmp_path)


def cli_and_rest(server, tmp_path):
    port = server.http_port
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "drivers.toml").write_text(DEFINITIONS)
    assert "created feature view driver_stats (v1)" in cli(server, "apply", defs)
    assert "unchanged feature view driver_stats (v1)" in cli(server, "apply", defs)

    data = tmp_path / "stats.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["driver_id", "event_timestamp", "rate", "trips"])
        w.writerow([1, iso(T0), 0.1, 1])
        w.writerow([1, iso(T0 + 30 * MIN), 0.3, 3])
        w.writerow([2, T0, 0.5, ""])
    assert "ingested 3 rows" in cli(server, "ingest", "driver_stats", data)

    entities = tmp_path / "entities.csv"
    entities.write_text(f"driver_id,event_timestamp\n1,{T0 + 10 * MIN}\n1,{T0 + 40 * MIN}\n"
                        f"2,{T0 - 1}\n2,{T0 + 61 * MIN}\n")
    out = tmp_path / "train.csv"
    assert "wrote 4 rows" in cli(server, "history", "--feature", "driver_stats:rate",
                                 "--feature", "driver_stats:trips", "--entities", entities,
                                 "--out", out)
    rows = list(csv.reader(out.open()))
    assert rows == [
        ["event_ts", "driver_id", "driver_stats:rate", "driver_stats:trips"],
        [str(T0 + 10 * MIN), "1", "0.1", "1"],
        [str(T0 + 40 * MIN), "1", "0.3", "3"],
        [str(T0 - 1), "2", "", ""],
        [str(T0 + 61 * MIN), "2", "", ""],
    ]

    out = cli(server, "materialize", iso(T0 - MIN), iso(T0 + 60 * MIN))
    assert "driver_stats: 2 rows written" in out
    body = ok(online(port, [1, 2, 3], ["driver_stats:rate", "driver_stats:trips"]))
    statuses = [[v["status"] for v in r["values"]] for r in body["rows"]]
    assert statuses == [["OUTSIDE_MAX_AGE"] * 2, ["OUTSIDE_MAX_AGE"] * 2, ["NOT_FOUND"] * 2]

    now = int(time.time() * 1e6)
    pushed = ok(post(port, "/v1/features/push", {"feature_view": "driver_stats", "rows": [
        {"values": {"driver_id": 1, "rate": 0.9, "trips": None}, "event_ts": now}]}))
    assert pushed == {"offline_rows": 0, "online_rows": 1}
    body = ok(online(port, [1], ["driver_stats:trips", "driver_stats:rate"]))
    assert body["features"] == ["driver_stats:trips", "driver_stats:rate"]
    assert body["rows"][0]["values"] == [
        {"value": None, "status": "NULL", "event_ts": now},
        {"value": 0.9, "status": "PRESENT", "event_ts": now},
    ]

    # The server's own count and latency histogram of the lookups it
    # answered: the two above, 4 entities (this process made no other).
    stats = ok(get(port, "/v1/features/lookup-stats"))
    assert (stats["lookups"], stats["entities"]) == (2, 4), stats
    counts = [b["count"] for b in stats["buckets"]]
    bounds = [b["le"] for b in stats["buckets"]]
    assert counts == sorted(counts) and bounds == sorted(bounds) and counts[-1] == 2, stats
    assert 0 < stats["seconds"] <= 2 * bounds[-1], stats

    view = ok(get(port, "/v1/features/views/driver_stats"))
    assert view["version"] == 1 and view["tags"] == {"team": "risk"}
    assert ok(get(port, "/v1/features/entities"))["entities"][0]["name"] == "driver"

    pipeline = {"model": "fraud", "kind": "tabular", "spec": {
        "kind": "tabular", "features": [
            {"name": "driver_stats:rate", "missing": "mean"},
            {"name": "amount", "missing": "default", "default": 0}]}}
    ok(post(port, "/v1/features/pipelines", pipeline))
    stored = ok(get(port, "/v1/features/pipelines/fraud"))
    assert (stored["model"], stored["kind"]) == ("fraud", "tabular"), stored
    assert [f["name"] for f in stored["spec"]["features"]] == ["driver_stats:rate", "amount"], stored
    missing = get(port, "/v1/features/pipelines/nope")
    assert missing.status == 404 and "no pipeline" in missing.json()["error"], missing
    out = ok(post(port, "/v1/features/transform", {
        "model": "fraud", "rows": [{"driver_id": 1, "amount": 12.5}, {"driver_id": 7}]}))
    tensor = out["tensors"][0]
    assert tensor["shape"] == [2, 2] and tensor["datatype"] == "FP32"
    values = struct.unpack("<4f", base64.b64decode(tensor["data"]))
    # Driver 7 is unknown: the mean of the offline rates (0.1, 0.3, 0.5).
    assert [round(v, 6) for v in values] == [0.9, 12.5, 0.3, 0.0]

    # An image pipeline over REST: base64 PNG in, FP32 NCHW out.
    ok(post(port, "/v1/features/pipelines", {
        "model": "resnet", "kind": "image", "spec": {"kind": "image", "image": {}}}))
    png = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 30, 90)).save(png, format="PNG")
    out = ok(post(port, "/v1/features/transform", {
        "model": "resnet", "images": [base64.b64encode(png.getvalue()).decode()]}))
    tensor = out["tensors"][0]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("input", "FP32", [1, 3, 224, 224])
    red = struct.unpack("<f", base64.b64decode(tensor["data"])[:4])[0]
    assert abs(red - (200 / 255 - 0.485) / 0.229) < 1e-5

    metrics = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=10)
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    assert 'mlserve_features_requests_total{op="transform",outcome="ok"} 2' in text, text


def bad_input(server, tmp_path):
    port = server.http_port
    defs = tmp_path / "defs.toml"
    defs.write_text(DEFINITIONS)
    cli(server, "apply", defs)
    cases = [
        (post(port, "/v1/features/online", b"{not json"), 400),
        (post(port, "/v1/features/online", {"features": ["driver_stats:nope"],
                                            "entities": [{"keys": {"driver_id": 1}}]}), 404),
        (post(port, "/v1/features/online", {"features": ["driver_stats:rate"],
                                            "entities": [{"keys": {"driver_id": "x"}}]}), 400),
        (post(port, "/v1/features/ingest", {"feature_view": "driver_stats", "rows": [
            {"values": {"driver_id": 1, "rate": "high"}, "event_ts": 1}]}), 400),
        (post(port, "/v1/features/apply", {"feature_views": [{
            "name": "driver_stats", "entities": ["driver"], "ttl_secs": 3600, "online": True,
            "fields": [{"name": "rate", "dtype": "string"}, {"name": "trips", "dtype": "int64"}]}]}),
         409),
        (post(port, "/v1/features/transform", {"model": "nope"}), 404),
        # The proto's JSON-text names are not REST names: refused, not ignored.
        (post(port, "/v1/features/transform", {"model": "nope", "rows_json": [{}]}), 400),
        (get(port, "/v1/features/views/nope"), 404),
        (post(port, "/v1/features/historical?format=xml", {"features": []}), 400),
    ]
    for resp, status in cases:
        assert resp.status == status, str(resp)
        assert resp.error()
    conflict = cases[4][0].error()
    assert "'rate' cannot change type (float64 -> string)" in conflict


def test_a_million_entity_lookup_is_refused_while_parsing(tmp_path):
    """A lookup over the entity limit (10,000) is refused as soon as its
    parse passes the limit: parsed whole, a million entities cost about
    180 MB before the service counted them (issue 16)."""
    with features_server(tmp_path) as server:
        port = server.http_port
        ok(post(port, "/v1/features/apply", apply_json(port)))
        one = '{"keys":{"driver_id":1}}'
        body = ('{"features":["driver_stats:rate"],"entities":['
                + ",".join([one] * 1_000_000) + "]}").encode()
        before = peak_rss_mb(server)
        r = post(port, "/v1/features/online", body,
                 headers={"Content-Type": "application/json"}, timeout=300)
        grown = peak_rss_mb(server) - before
        print(f"a million entities ({len(body) / 2**20:.0f} MiB): peak RSS {before:.0f} -> "
              f"{before + grown:.0f} MiB (+{grown:.0f})")
        assert r.status == 400, str(r)
        assert r.error() == "at least 10001 entities requested, more than the limit of 10000"
        # The body as read (its chunks, then one copy of them: 48 MiB here),
        # 10,000 entities and the allocator's retained pages (mimalloc peaks
        # at about +60 MiB, glibc at +30); parsed whole it was +749 MiB.
        assert grown < 100, f"peak RSS grew {grown:.0f} MiB"
        # Under the limit, the same lookup is answered.
        assert ok(online(port, [1] * 10_000))["rows"][0]["values"][0]["status"] == "NOT_FOUND"


def test_pipelines_from_the_configuration(tmp_path):
    config = tmp_path / "mlserve.toml"
    config.write_text("""
[features.pipelines.scorer]
kind = "tabular"
datatype = "FP64"
features = [
  { name = "amount", missing = "default", default = -1.0 },
  { name = "age" },
]
""")
    with features_server(tmp_path, "--config", config) as server:
        port = server.http_port
        listed = ok(get(port, "/v1/features/pipelines"))["pipelines"]
        assert [(p["model"], p["kind"]) for p in listed] == [("scorer", "tabular")]
        assert [f["name"] for f in listed[0]["spec"]["features"]] == ["amount", "age"], listed
        assert ok(get(port, "/v1/features/pipelines/scorer")) == listed[0]
        out = ok(post(port, "/v1/features/transform", {
            "model": "scorer", "rows": [{"age": 30}, {"amount": 2.5, "age": 41}]}))
        tensor = out["tensors"][0]
        assert (tensor["datatype"], tensor["shape"]) == ("FP64", [2, 2])
        assert struct.unpack("<4d", base64.b64decode(tensor["data"])) == (-1.0, 30.0, 2.5, 41.0)
        missing = post(port, "/v1/features/transform", {"model": "scorer", "rows": [{"amount": 1}]})
        assert missing.status == 400 and "'age' is missing" in missing.error()
    bad = tmp_path / "bad.toml"
    bad.write_text('[features.pipelines.broken]\nkind = "image"\nimage = { resize = "big" }\n')
    proc = subprocess.run([str(server_binary()), "--config", str(bad), "--role", "features",
                           "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60,
                          env={**os.environ,
                               "MLSERVE_SERVER__DATA_DIR": str(tmp_path / "bad-data")})
    assert proc.returncode != 0
    assert "features.pipelines.broken" in proc.stderr, proc.stderr
