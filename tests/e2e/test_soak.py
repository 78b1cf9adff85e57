"""A short run of the soak harness (bench/soak.py, issue 16): the real
all-in-one binary following a registry alias, tabular requests through the
gateway at a modest steady rate (20/s over keep-alive connections), a swap
every 15 s (an upload of a new version with the alias moved to it, then the
alias moved back), RSS and open fds sampled every 2 s, for 75 s.

Checked: the server lives and never panicked; every request was answered
200 (no 5xx, no other status, no connection error or timeout) by the version
its output names; every swap took effect (its version answered afterwards)
and the alias's version serves at the end; open fds stay flat after warm-up
(within 10). RSS growth after warm-up is bounded at 100 MB, not the soak's
50 MB: warm-up here is 15 s, and the swaps that follow create ONNX Runtime
sessions and touch allocator arenas for the first time, so a short run
measures growth towards the steady state, not a leak; the bound still catches
a gross per-request or per-swap leak. The 30-minute soak (`bench/soak.py`)
holds the 50 MB bound. Nothing here is timed: a busy 2-core machine that
sends fewer requests than the rate asks still passes."""

import json
import sys

import pytest

from server import REPO_ROOT, ServerStartError

sys.path.insert(0, str(REPO_ROOT / "bench"))
import soak  # noqa: E402

DURATION_S = 75.0
SWAP_EVERY_S = 15.0
RSS_BOUND_MB = 100.0
FD_BOUND = 10


def test_short_soak_swaps_without_errors_or_fd_growth(tmp_path):
    try:
        doc = soak.run_soak(duration_s=DURATION_S, rate=20.0, swap_every=SWAP_EVERY_S, threads=2,
                            sample_every=2.0, max_rss_growth_mb=RSS_BOUND_MB,
                            max_fd_growth=FD_BOUND, out_dir=tmp_path)
    except ServerStartError as e:
        pytest.fail(str(e), pytrace=False)
    numbers = {k: doc[k] for k in ("requests", "status", "versions", "rss_at_warmup_mb",
                                    "rss_end_mb", "rss_growth_mb", "fds_at_warmup", "fds_end",
                                    "fds_max", "fd_growth", "checks")}
    numbers["swaps"] = doc["swaps"]
    print("\n=== short soak ===\n" + json.dumps(numbers, indent=1))
    failures = doc["errors"][:5]

    assert doc["server_alive_at_end"], "the server died or panicked during the soak"
    assert doc["requests"] > 0, "no request was sent"
    assert doc["status"] == {"200": doc["requests"]}, \
        f"answers other than 200: {doc['status']}, first failures: {failures}"
    assert doc["five_xx"] == 0 and doc["unanswered"] == 0
    assert doc["mismatched_samples"] == [], \
        f"answers whose output is not their version's: {doc['mismatched_samples'][:3]}"

    # swaps at 15, 30, 45 and 60 s: versions 3 (new), 2, 4 (new), 3
    swaps = doc["swaps"]
    assert [(s["kind"], s["to"]) for s in swaps] == [
        ("upload+alias", 3), ("alias", 2), ("upload+alias", 4), ("alias", 3)], swaps
    assert all(s["first_answer_after_s"] is not None for s in swaps), \
        f"a swap never took effect: {swaps}"
    assert set(doc["versions"]) == {"1", "2", "3", "4"}, doc["versions"]
    assert doc["serving_version_metric_at_end"] == doc["alias_at_end"] == 3

    after_warmup = [s for s in doc["samples"] if s["t"] >= doc["warmup_s"]]
    assert doc["fd_growth"] <= FD_BOUND, numbers
    assert max(s["fds"] for s in after_warmup) - doc["fds_at_warmup"] <= FD_BOUND, numbers
    assert doc["rss_growth_mb"] <= RSS_BOUND_MB, numbers
    assert doc["passed"], doc["checks"]
    assert (tmp_path / "soak.json").exists() and (tmp_path / doc["plot"]).exists()
