"""The autoscaling signal under real load: `mlserve_inference_desired_replicas`
reads how many inference processes the load needs, and follows it down.

One inference process serving `slow` (compute-bound: one instance, about a
tenth of a second per request on this kind of machine, a queue of 8), so the
process's capacity is a few requests per second and the load generator's own
cost is nothing beside it. `loadgen closed` measures that capacity C; then
`loadgen open` offers 4 C requests per second (evenly spaced) for 25 s:
the requests the process cannot take are refused at once by the full queue,
and they arrived all the same. Once the gauge's 10 s window is all overload,
it reads within 1 of the multiple of its capacity the process itself saw
arrive over the same seconds (4 on an undisturbed machine). After the load
stops it falls back under 0.5.

The capacity is measured on the machine that runs the test, in the same run,
and the check compares the gauge with what the process saw in the gauge's
own window: a busy machine (a capacity measured low or high) changes the
multiple, not the outcome."""

import json
import statistics
import subprocess
import time

from helpers import copy_models, get, metric_values, parse_metrics, wait_until
from server import REPO_ROOT, start_server

MODEL = "slow"
LOADGEN = REPO_ROOT / "target" / "release" / "loadgen"
GAUGE = "mlserve_inference_desired_replicas"


def scrape(port):
    samples, _ = parse_metrics(get(port, "/metrics").body.decode())
    return samples


def desired(port):
    values = metric_values(scrape(port), GAUGE, model=MODEL)
    return values[0] if values else None


def answered(port):
    """(requests answered, requests ended) by the process so far."""
    samples = scrape(port)
    ok = sum(metric_values(samples, "mlserve_inference_request_success_total", model=MODEL))
    failed = sum(metric_values(samples, "mlserve_inference_request_failure_count_total",
                               model=MODEL))
    return ok, ok + failed


def test_overload_reads_its_multiple_and_follows_the_load_down(models_repo, tmp_path):
    repo = copy_models(models_repo, tmp_path / "repo", [MODEL])
    with start_server(repo) as server:
        target = f"http://127.0.0.1:{server.http_port}"
        capacity_report = tmp_path / "closed.json"
        subprocess.run([str(LOADGEN), "closed", "--target", target, "--model", MODEL,
                        "--concurrency", "4", "--duration", "8", "--warmup", "2", "--quiet",
                        "--json-out", str(capacity_report)],
                       check=True, cwd=REPO_ROOT, timeout=120)
        closed = json.loads(capacity_report.read_text())
        assert closed["error_total"] == 0, closed["errors"]
        capacity = closed["requests_per_s"]
        assert capacity > 0, closed

        rate = 4 * capacity
        open_report = tmp_path / "open.json"
        load = subprocess.Popen(
            [str(LOADGEN), "open", "--target", target, "--model", MODEL,
             "--rate", f"{rate:.3f}", "--arrivals", "constant", "--duration", "25", "--quiet",
             "--json-out", str(open_report)],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # The first 12 s fill the 10 s window with overload; then sample
            # the gauge once a second for 10 s.
            time.sleep(12)
            readings = []
            ok_before, ended_before = answered(server.metrics_port)
            for _ in range(10):
                readings.append(desired(server.metrics_port))
                time.sleep(1)
            ok_after, ended_after = answered(server.metrics_port)
        finally:
            _, err = load.communicate(timeout=120)
        assert load.returncode == 0, err.decode()[-2000:]
        offered = json.loads(open_report.read_text())
        print(f"capacity {capacity:.2f} req/s, offered {offered['offered']} requests in "
              f"{offered['wall_s']:.1f} s, served {offered['ok_per_s']:.2f} req/s, "
              f"desired replicas {readings}")
        assert None not in readings, readings
        middle = statistics.median(readings)
        # What the process itself saw over those 10 s: requests that arrived
        # (answered or refused) over requests it could answer. On a quiet
        # machine this is the 4 offered; a busy one slows the model down and
        # the multiple (and the signal with it) goes up.
        multiple = (ended_after - ended_before) / max(ok_after - ok_before, 1)
        print(f"load {multiple:.2f} x what the process served")
        # Even a capacity measured at half the process's real one leaves it
        # overloaded twice over.
        assert multiple >= 1.5, "the load generator did not overload the process"
        # The last reading's 10 s window is the one `multiple` was counted
        # over (the earlier ones lag it by up to 9 s, and a machine that gets
        # busier meanwhile moves the multiple up). Counts of a few dozen
        # requests make the multiple itself uncertain by a tenth or so.
        aligned = readings[-1]
        assert abs(aligned - multiple) <= max(1.0, 0.25 * multiple), (multiple, readings)
        assert middle >= 1.5, (capacity, rate, multiple, readings)

        # No more load: the window empties and the signal goes down with it.
        wait_until(lambda: (desired(server.metrics_port) or 0) < 0.5, 40,
                   "the desired replicas did not fall after the load stopped")
