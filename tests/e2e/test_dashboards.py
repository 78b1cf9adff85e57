"""The Grafana dashboards (deploy/grafana) have no dead panel: every query
of every panel, run against a real Prometheus scraping a loaded mlserve,
returns data. In both topologies.

mlserve serves `simple` from its repository and follows `plus` from the
registry (production alias, polled each second). `plus` is registered only
after the start, so the follower first fails to resolve it (a sync failure,
reason "registry") and then serves version 1 (a swap). The registry is the
all-in-one process's own, or a process of its own in the split topology.
Prometheus (test_prometheus.Prometheus) scrapes every process each second.
A background client sends, through the gateway's HTTP port, good requests
to both models, some with a bad input shape (400) and some to a model that
does not exist (404), the whole time the panels are queried.

All-in-one, the process also follows `plus`'s `canary` alias and runs the
monitoring role (a reading each second): before the panels are queried, the
monitoring role rolls `plus` out twice through its REST API, version 2 with
one short step (its checks end it, promoted or aborted: a finished rollout;
latency is not judged, so a busy machine does not abort it) and then
version 3 held at 30% (one long step whose checks stay inconclusive: a
rollout running while the panels are queried). The split topology runs no
monitoring process (rollouts across processes need the gateways' shared
PostgreSQL and Redis events, as test_rollouts.Split sets up), so the rollout
dashboard is checked all-in-one only. So is the drift dashboard: all-in-one,
the gateway logs every served row and the monitoring role analyses drift
each second against a reference of 20 rows (test_drift.py drives a real
drift; here the reports, their PSI and KS, and the request log's counters
need only exist).

Each panel target's `expr` runs as an instant query with the dashboard's
variables substituted: `$model` by each model the `model` variable lists
(its label_values query, run against the same Prometheus), and Grafana's
`$__rate_interval`, `$__interval` and `$__range` by fixed durations. A query
has data when it returns at least one series with a finite value (a
histogram_quantile over no requests is NaN: Grafana draws nothing). Queries
are retried until every one has data or a generous deadline passes; the
failure lists every dead panel. No assertion depends on speed.
"""

import json
import math
import re
import shutil
import threading
import time
from collections import Counter

import pytest
import yaml

from helpers import (copy_models, get, http_request, infer_path, metric_values, parse_metrics, post,
                     simple_json, wait_until)
from rollout_helpers import dumps, rollout_status
from server import REPO_ROOT, Server
from test_prometheus import Prometheus
from test_registry_follow import plus_model, registry_create, registry_set_alias, registry_upload
from topology import TOPOLOGIES, start_topology

GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
REPO_MODEL = "simple"
FOLLOWED = "plus"
# Grafana's own variables, at values that suit a 1 s scrape and a few
# minutes of data
BUILTINS = {"__rate_interval": "30s", "__interval": "15s", "__range": "5m"}
DATA_DEADLINE_S = 180
# The monitoring role's dashboard: its $model lists the models rolled out
# (only `plus`), and only the all-in-one topology runs the monitoring role.
ROLLOUT_DASHBOARD = "rollout.json"
# Drift over the request log: the monitoring role again, so all-in-one only;
# its $model lists the models with a drift report (both).
DRIFT_DASHBOARD = "drift.json"
MONITORING_DASHBOARDS = {ROLLOUT_DASHBOARD, DRIFT_DASHBOARD}


# ------------------------------------------------------------ dashboards
def load(path):
    return json.loads(path.read_text())


def panels(doc):
    """Every panel, rows' nested panels included, rows themselves not."""
    for p in doc.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def substitute(expr, variables):
    """`expr` with $name, ${name} and [[name]] replaced from `variables`;
    an unknown variable fails the test (it would be one Grafana cannot fill)."""
    def value(m):
        name = next(g for g in m.groups() if g)
        assert name in variables, f"unknown variable ${name} in {expr}"
        return variables[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


def variable_queries(doc):
    """(name, metric, label) of each label_values() query variable."""
    out = []
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", query)
        assert m, f"{var['name']}: only label_values(METRIC, LABEL) variables are checked, not {query}"
        out.append((var["name"], m.group(1), m.group(2)))
    return out


def test_dashboards_use_the_provisioned_datasource():
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources.yaml").read_text())["datasources"]
    assert [(s["type"], s["uid"]) for s in sources] == [("prometheus", "prometheus")]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards.yaml").read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"] and providers[0]["options"]["path"]
    assert {p.stem for p in DASHBOARDS} >= {"overview", "model", "rollout", "drift"}
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids), uids
    for path in DASHBOARDS:
        doc = load(path)
        assert doc["schemaVersion"] >= 36, path.name
        ids = [p["id"] for p in doc["panels"]]
        assert len(set(ids)) == len(ids), f"{path.name}: panel ids repeat"
        for var in doc.get("templating", {}).get("list", []):
            assert var["datasource"]["uid"] == "prometheus", (path.name, var["name"])
        for p in panels(doc):
            assert p["datasource"]["uid"] == "prometheus", (path.name, p["title"])
            assert p["targets"], f"{path.name}: {p['title']} has no query"
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "prometheus", (path.name, p["title"])
                assert t["expr"].strip(), (path.name, p["title"])
    for name in ["model.json", ROLLOUT_DASHBOARD, DRIFT_DASHBOARD]:
        doc = load(GRAFANA / "dashboards" / name)
        assert [var for var, _, _ in variable_queries(doc)] == ["model"], name


# --------------------------------------------------------------- traffic
def plus_json(n):
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n],
                        "data": [float(i) for i in range(n)]}]}


def bad_simple_json():
    # INPUT0 and INPUT1 are [-1, 16]: [1, 8] is refused by the inference role
    return {"inputs": [{"name": f"INPUT{i}", "datatype": "INT32", "shape": [1, 8], "data": list(range(8))}
                       for i in range(2)]}


# (what, model, body, expected status)
REQUESTS = [
    ("simple ok", REPO_MODEL, simple_json()[0], 200),
    ("plus ok", FOLLOWED, plus_json(4), 200),
    ("simple bad shape", REPO_MODEL, bad_simple_json(), 400),
    ("plus bad shape", FOLLOWED, plus_json(3), 400),
    ("unknown model", "no_such_model", simple_json()[0], 404),
]


class Traffic:
    """A thread sending REQUESTS round and round through the gateway
    (a short pause between rounds), counting statuses per request kind."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses = Counter()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            for what, model, body, _ in REQUESTS:
                try:
                    status = post(self.port, infer_path(model), body, timeout=60).status
                except OSError as e:
                    status = repr(e)
                with self.lock:
                    self.statuses[(what, status)] += 1
            self.stop.wait(0.05)

    def unexpected(self):
        expected = {what: status for what, _, _, status in REQUESTS}
        with self.lock:
            return {k: n for k, n in self.statuses.items() if expected[k[0]] != k[1]}

    def rounds(self):
        with self.lock:
            return min(self.statuses[(what, status)] for what, _, _, status in REQUESTS)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(120)


# --------------------------------------------------------------- fixture
def scrape(port, name, **labels):
    r = get(port, "/metrics", timeout=10)
    samples, _ = parse_metrics(r.body.decode())
    return sum(metric_values(samples, name, **labels))


@pytest.fixture(params=TOPOLOGIES)
def loaded(request, models_repo, tmp_path):
    """(topology, prometheus, the registry's HTTP port): `simple` from the
    repository, `plus` followed from a registry where it is not yet."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: run scripts/setup.sh")
    repo = copy_models(models_repo, tmp_path / "repo", [REPO_MODEL])
    followed = [f'{{name="{FOLLOWED}",source="registry",alias="production"}}']
    env = {"MLSERVE_INFERENCE__REGISTRY_POLL_INTERVAL": "1s"}
    if request.param == "all_in_one":
        # the canary beside production, for the monitoring role's rollouts
        followed.append(f'{{name="{FOLLOWED}",source="registry",alias="canary"}}')
        env["MLSERVE_MONITORING__SCRAPE_INTERVAL"] = "1s"
        # every served row logged, and drift analysed each second against
        # a reference of 20 rows, so the drift dashboard has data
        env["MLSERVE_GATEWAY__REQUEST_LOG__SAMPLE_RATE"] = "1.0"
        env["MLSERVE_GATEWAY__REQUEST_LOG__FLUSH_INTERVAL"] = "200ms"
        env["MLSERVE_MONITORING__DRIFT__INTERVAL"] = "1s"
        env["MLSERVE_MONITORING__DRIFT__REFERENCE_ROWS"] = "20"
        env["MLSERVE_MONITORING__DRIFT__MIN_ROWS"] = "10"
    env["MLSERVE_INFERENCE__MODELS"] = f"[{','.join(followed)}]"
    registry = None
    stack = []
    try:
        if request.param == "split":
            empty = tmp_path / "registry-repo"
            empty.mkdir()
            registry = Server(ready_path="/v1/registry/models").start(
                empty, "--role", "registry", "--data-dir", tmp_path / "registry-data")
            stack.append(registry)
            env["MLSERVE_REGISTRY__ENDPOINT"] = f"http://127.0.0.1:{registry.grpc_port}"
        topo = start_topology(request.param, repo, tmp_path / "data", env=env, inference_count=1)
        stack.append(topo)
        procs = list({id(p): p for p in [topo.gateway, *topo.inference]}.values())
        procs += [registry] if registry else []
        prom = Prometheus(tmp_path, [f"127.0.0.1:{p.metrics_port}" for p in procs])
        stack.append(prom)
        wait_until(prom.ready, 60, "prometheus did not become ready")
        wait_until(lambda: prom.scalar("sum(up)") == len(procs), 60,
                   f"prometheus does not see every target up: {prom.query('up')}")
        yield topo, prom, (registry or topo.gateway).http_port
    finally:
        for item in reversed(stack):
            item.stop()


# -------------------------------------------------------------- rollouts
def start_rollout(port, canary, steps, analysis):
    """Starts a rollout of FOLLOWED's version `canary` through the
    monitoring role's REST API, then moves the canary alias there so the
    inference role serves it (the move finds this rollout and starts no
    other)."""
    r = http_request(port, "POST", "/v1/monitoring/rollouts", body={
        "model": FOLLOWED, "canary": canary, "steps": steps, "analysis": analysis})
    assert r.status == 200, str(r)
    registry_set_alias(port, FOLLOWED, "canary", canary)


def roll_out(port, describe):
    """Version 2 with one short step that its checks end, waited for until
    it ended; then version 3 held at 30% with checks that stay
    inconclusive, waited for until it sends traffic to the canary."""
    def status():
        return rollout_status(port, model=FOLLOWED)

    def where(canary, states, weight=None):
        st = status()
        return st and st["rollout"]["canary"] == canary and st["rollout"]["state"] in states \
            and (weight is None or st["rollout"]["weight"] == weight)

    assert registry_upload(port, FOLLOWED, {"model.onnx": plus_model(2)}) == 2
    start_rollout(port, 2, [{"weight": 50, "duration_ms": 2000}],
                  {"interval_ms": 1000, "min_requests": 5, "max_p99_ms": 60000, "max_p99_ratio": 1000.0})
    wait_until(lambda: where(2, ("promoted", "aborted")), 120,
               f"the rollout of version 2 never ended:\n{dumps(status())}\n{describe()}", interval=0.2)
    assert registry_upload(port, FOLLOWED, {"model.onnx": plus_model(3)}) == 3
    start_rollout(port, 3, [{"weight": 30, "duration_ms": 600000}],
                  {"interval_ms": 1000, "min_requests": 1000000})
    wait_until(lambda: where(3, ("progressing",), weight=30), 120,
               f"the rollout of version 3 never reached 30%:\n{dumps(status())}\n{describe()}", interval=0.2)


# ------------------------------------------------------------------ test
def test_every_panel_finds_data(loaded):
    topo, prom, registry_port = loaded
    gateway = topo.gateway.gateway_http_port
    failures = "mlserve_inference_registry_sync_failures_total"
    for s in topo.inference:
        wait_until(lambda: scrape(s.metrics_port, failures, model=FOLLOWED) > 0, 60,
                   f"the follower never reported {FOLLOWED} missing\n{topo.describe()}")

    registry_create(registry_port, FOLLOWED)
    version = registry_upload(registry_port, FOLLOWED, {"model.onnx": plus_model(1)})
    registry_set_alias(registry_port, FOLLOWED, "production", version)
    for s in topo.inference:
        wait_until(lambda: scrape(s.metrics_port, "mlserve_inference_registry_serving_version",
                                  model=FOLLOWED) == version, 90,
                   f"{FOLLOWED} version {version} never served\n{topo.describe()}")
    wait_until(lambda: post(gateway, infer_path(FOLLOWED), plus_json(4), timeout=30).status == 200, 60,
               f"the gateway never answered {FOLLOWED}\n{topo.describe()}")

    with Traffic(gateway) as traffic:
        wait_until(lambda: traffic.rounds() >= 3 or traffic.unexpected(), 120,
                   f"the traffic did not get going: {traffic.statuses}")
        dashboards = DASHBOARDS
        if topo.kind == "all_in_one":
            # the process's own HTTP port: registry and monitoring routes alike
            roll_out(registry_port, topo.describe)
        else:
            dashboards = [p for p in DASHBOARDS if p.name not in MONITORING_DASHBOARDS]
        queries = {}  # (dashboard, panel, refId, model) -> expr
        for path in dashboards:
            doc = load(path)
            choices = [{}]
            models = {FOLLOWED} if path.name == ROLLOUT_DASHBOARD else {REPO_MODEL, FOLLOWED}
            for name, metric, label in variable_queries(doc):
                def listed():
                    values = {labels[label] for labels, _ in prom.query(f"count by ({label}) ({metric})")}
                    return sorted(values) if models <= values else None
                values = wait_until(listed, 90, f"{path.name}: ${name} (label_values({metric}, {label})) "
                                    f"never listed {sorted(models)}")
                choices = [dict(c, **{name: v}) for c in choices for v in values]
            for choice in choices:
                for p in panels(doc):
                    for t in p["targets"]:
                        key = (path.name, p["title"], t["refId"], choice.get("model", ""))
                        queries[key] = substitute(t["expr"], {**BUILTINS, **choice})
        assert len(queries) >= 20, sorted(queries)

        deadline = time.monotonic() + DATA_DEADLINE_S
        while queries and time.monotonic() < deadline:
            for key, expr in list(queries.items()):
                if any(math.isfinite(v) for _, v in prom.query(expr)):
                    del queries[key]
            if queries:
                time.sleep(1)
        lines = [f"  {d} / {title} [{ref}] model={m or '-'}: {queries[(d, title, ref, m)]}\n"
                 f"    -> {prom.query(queries[(d, title, ref, m)])}" for d, title, ref, m in sorted(queries)]
        assert not lines, f"{topo.kind}: {len(lines)} dead panel queries after {DATA_DEADLINE_S} s:\n" \
            + "\n".join(lines)
    assert traffic.unexpected() == {}, f"unexpected answers: {traffic.unexpected()}\n{topo.describe()}"
