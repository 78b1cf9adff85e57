"""The paper's loop in one test, in one process with every role: data
arrives, the shipped churn workflow (examples/churn) retrains, evaluates and
registers a version and moves `canary`; the monitoring role rolls it out
through the gateway (10% of the traffic, checked every second), the checks
pass, and `production` moves to it.

The first run's version has nothing to be compared with: the monitoring role
makes it production at once (Flagger's initialization). The second run,
submitted by the `data_arrived` of new labels, is the one rolled out, with
traffic flowing through the gateway the whole time: no request fails."""

import json
import threading

import numpy as np

from helpers import get, post, wait_until
from rollout_helpers import alias_history, dumps, rollout_status
from test_training_example import generate, workflow_text
from test_training import step, wait_run
from topology import GatewayProcess

CONFIG = """
[inference]
registry_poll_interval = "1s"
models = [
  { name = "churn", source = "registry", alias = "production" },
  { name = "churn", source = "registry", alias = "canary" },
]

[monitoring]
scrape_interval = "200ms"
window = "10s"

[monitoring.rollouts]
steps = [{ weight = 10, duration = "3s" }]
interval = "1s"
threshold = 2
min_requests = 3
max_p99 = "2s"
serve_timeout = "60s"
"""

ROWS = [[2, 95, 4, -1.5, 1, 2, 3, 0], [60, 30, 0, 0.8, 24, 0, 12, 1]]


class Traffic:
    """One thread asking the gateway for churn predictions non-stop."""

    def __init__(self, port):
        self.port, self.stop = port, threading.Event()
        self.answers, self.failures = {}, []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 8],
                            "data": np.asarray(ROWS, dtype=np.float32).ravel().tolist()}]}
        while not self.stop.is_set():
            try:
                r = post(self.port, "/v2/models/churn/infer", body, timeout=30)
            except OSError as e:
                self.failures.append(repr(e))
                continue
            if r.status != 200:
                self.failures.append(str(r))
                continue
            v = r.json()["model_version"]
            self.answers[v] = self.answers.get(v, 0) + 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


def finished_rollout(port, canary):
    st = rollout_status(port, "churn")
    if st and st["rollout"]["canary"] == canary and st["rollout"]["state"] in ("promoted", "aborted"):
        return st
    return None


def test_data_retrain_register_canary_analyse_promote(tmp_path):
    config = tmp_path / "mlserve.toml"
    config.write_text(CONFIG)
    repo = tmp_path / "repo"
    repo.mkdir()
    s = GatewayProcess(ready_path="/health/ready").start(
        repo, "--config", config, "--data-dir", tmp_path / "data")
    try:
        port = s.http_port
        generate(port, "--apply", "--customers", "3000", "--seed", "1")
        assert post(port, "/v1/training/workflows", workflow_text().encode()).status == 200
        r = post(port, "/v1/training/workflows/churn-retrain/runs", {})
        assert r.status == 200, str(r)
        first = wait_run(port, r.json()["id"], timeout=300)
        assert first["state"] == "succeeded", json.dumps(first, indent=1)
        v1 = int(step(first, "register")["outputs"]["version"])

        # The first version becomes production without analysis.
        status = wait_until(lambda: finished_rollout(port, v1), 60,
                            f"no rollout of version {v1}: {rollout_status(port, 'churn')}")
        assert status["rollout"]["state"] == "promoted", dumps(status)
        assert "without analysis" in status["rollout"]["reason"], dumps(status)
        wait_until(lambda: get(port, f"/v2/models/churn/versions/{v1}/ready").status == 200, 60,
                   "version 1 is not served")

        with Traffic(s.gateway_http_port) as traffic:
            wait_until(lambda: traffic.answers.get(str(v1), 0) >= 20 or traffic.failures, 60,
                       "no traffic through the gateway")
            # New labels: data_arrived retrains, the new version moves canary.
            generate(port, "--customers", "1500", "--seed", "2", "--first-id", "100000")

            def event_run():
                runs = get(port, "/v1/training/runs?workflow=churn-retrain").json()["runs"]
                return [x for x in runs if x["trigger"] == "event"]

            runs = wait_until(event_run, 60, "data_arrived did not submit a run")
            second = wait_run(port, runs[0]["id"], timeout=300)
            assert second["state"] == "succeeded", json.dumps(second, indent=1)
            v2 = int(step(second, "register")["outputs"]["version"])
            assert v2 == v1 + 1
            status = wait_until(lambda: finished_rollout(port, v2), 120,
                                f"the rollout of {v2} never ended: "
                                f"{dumps(rollout_status(port, 'churn'))}\n{s.describe(60)}",
                                interval=0.2)
            before = traffic.answers.get(str(v2), 0)
            wait_until(lambda: traffic.answers.get(str(v2), 0) >= before + 20, 30,
                       "the promoted version answers nothing")
        assert traffic.failures == [], traffic.failures[:5]
        rollout = status["rollout"]
        assert rollout["state"] == "promoted", dumps(status)
        assert rollout["started_by"].startswith("alias 'canary' moved by training:"), dumps(status)
        records = status["records"]
        assert any("10% of traffic" in r["message"] for r in records if r["kind"] == "step"), \
            dumps(status)
        assert "pass" in [r["result"] for r in records if r["kind"] == "check"], dumps(status)
        moves = alias_history(port, "production", model="churn")["moves"]
        assert (moves[-1]["from_version"], moves[-1]["to_version"]) == (v1, v2), moves
        assert moves[-1]["actor"].startswith("monitoring:"), moves
    finally:
        s.stop()
