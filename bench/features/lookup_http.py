"""Online lookups per second through the real server's REST API, against
Redis: starts `mlserve --role features` with `online_store = "redis"`, loads
ENTITIES entities with a push, then runs closed-loop clients (keep-alive HTTP,
one thread each) posting /v1/features/online for batches of 1, 32 and 256
entities. Prints progress; writes bench/results/<date>/features_lookup_http.json.

    .venv/bin/python bench/features/lookup_http.py [--seconds 5] [--clients 8]

Needs target/release/mlserve and Redis at 127.0.0.1:6379 (--redis-url).
"""

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from server import Server  # noqa: E402

ENTITIES = 100_000


def post(conn, path, body):
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path}: HTTP {resp.status} {data[:300]!r}")
    return json.loads(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlserve-lookup-http-"))
    env = {
        "MLSERVE_SERVER__DATA_DIR": str(tmp / "data"),
        "MLSERVE_FEATURES__ONLINE_STORE": "redis",
        "MLSERVE_FEATURES__REDIS_URL": args.redis_url,
        "MLSERVE_FEATURES__REDIS_KEY_PREFIX": f"bench-http-{os.getpid()}",
        "RUST_LOG": "warn,mlserve=info",
    }
    server = Server(ready_path="/v1/features/entities").start(tmp, "--role", "features", env=env)
    try:
        port = server.http_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        post(conn, "/v1/features/apply", {
            "entities": [{"name": "user", "join_keys": ["user_id"], "value_type": "int64"}],
            "feature_views": [{"name": "user_stats", "entities": ["user"], "ttl_secs": 600,
                               "online": True, "fields": [
                                   {"name": "a", "dtype": "float64"},
                                   {"name": "b", "dtype": "int64"},
                                   {"name": "c", "dtype": "string"}]}]})
        now = int(time.time() * 1e6)
        for start in range(0, ENTITIES, 5000):
            rows = [{"values": {"user_id": i, "a": i % 97 + 0.5, "b": i * 7, "c": f"tier-{i % 5}"},
                     "event_ts": now} for i in range(start, start + 5000)]
            post(conn, "/v1/features/push", {"feature_view": "user_stats", "rows": rows})
            print(f"\r  loaded {start + 5000} / {ENTITIES}", end="", file=sys.stderr)
        print(file=sys.stderr)
        results = []
        for batch in (1, 32, 256):
            done = [0] * args.clients
            stop = threading.Event()

            def client(n):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                nxt = (n * 7919) % ENTITIES
                while not stop.is_set():
                    ids = [(nxt + i * 13) % ENTITIES for i in range(batch)]
                    nxt = (nxt + 1) % ENTITIES
                    body = post(c, "/v1/features/online", {
                        "features": ["user_stats:a", "user_stats:b", "user_stats:c"],
                        "entities": [{"keys": {"user_id": i}} for i in ids]})
                    assert body["rows"][0]["values"][0]["status"] == "PRESENT", body
                    done[n] += 1

            threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            last = 0
            while time.monotonic() - started < args.seconds:
                time.sleep(0.5)
                total = sum(done)
                print(f"\r  batch {batch:>3}: {(total - last) / 0.5:>8.0f} lookups/s   ",
                      end="", file=sys.stderr)
                last = total
            stop.set()
            for t in threads:
                t.join()
            secs = time.monotonic() - started
            rate = sum(done) / secs
            print(f"\r  batch {batch:>3}: {rate:>8.0f} lookups/s, {rate * batch:>9.0f} entities/s",
                  file=sys.stderr)
            results.append({"batch": batch, "clients": args.clients, "seconds": secs,
                            "lookups_per_s": rate, "entities_per_s": rate * batch})
        out_dir = ROOT / "bench" / "results" / time.strftime("%Y-%m-%d")
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / "features_lookup_http.json"
        out.write_text(json.dumps({"redis": args.redis_url, "entities": ENTITIES,
                                   "client": "python http.client, keep-alive, one thread each",
                                   "results": results}, indent=2))
        print(f"wrote {out}", file=sys.stderr)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
