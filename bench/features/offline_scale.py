"""Offline-store scale check through the real server: ingest N rows (N/10
entities) over REST, materialize them, and join 10,000 entity rows point in
time. `python bench/features/offline_scale.py N [DATABASE_URL]` (SQLite in a
temporary data dir when no URL is given)."""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "e2e"))
from server import Server
from helpers import post
N = int(sys.argv[1]); url = sys.argv[2] if len(sys.argv) > 2 else None
tmp = Path(tempfile.mkdtemp())
env = {"MLSERVE_SERVER__DATA_DIR": str(tmp / "data"), "RUST_LOG": "warn,mlserve=info"}
if url: env["MLSERVE_FEATURES__DATABASE_URL"] = url
s = Server(ready_path="/v1/features/entities").start(tmp, "--role", "features", env=env)
try:
    p = s.http_port
    post(p, "/v1/features/apply", {"entities": [{"name": "u", "join_keys": ["uid"], "value_type": "int64"}],
        "feature_views": [{"name": "v", "entities": ["u"], "ttl_secs": 0, "online": True, "fields": [{"name": "x", "dtype": "float64"}]}]})
    T0 = 1_700_000_000_000_000
    t = time.time()
    for start in range(0, N, 10000):
        rows = [{"values": {"uid": i % (N // 10), "x": i * 0.5}, "event_ts": T0 + i} for i in range(start, start + 10000)]
        r = post(p, "/v1/features/ingest", {"feature_view": "v", "rows": rows}, timeout=600); assert r.status == 200, r
    print(f"ingest {N}: {time.time()-t:.1f}s")
    t = time.time(); r = post(p, "/v1/features/materialize", {"end_ts": T0 + N}, timeout=600); assert r.status == 200, r
    print(f"materialize {N} rows ({N//10} entities): {time.time()-t:.1f}s {r.json()['views'][0]['rows_written']}")
    ents = [{"keys": {"uid": i % (N // 10)}, "event_ts": T0 + i * 7 % N} for i in range(10000)]
    t = time.time(); r = post(p, "/v1/features/historical", {"features": ["v:x"], "entities": ents}, timeout=600); assert r.status == 200, r
    print(f"history 10000 entity rows over {N}: {time.time()-t:.1f}s lines={len(r.body.splitlines())}")
finally:
    s.stop()
