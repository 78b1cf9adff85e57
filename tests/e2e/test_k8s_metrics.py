"""Every metric name the deployment depends on (the inference HPA, the
prometheus-adapter rule, KEDA's query, the alert rules) is one the real
binary exports: a name that does not exist would scale on nothing and alert
never, silently."""

import http.client
import re

import pytest
import yaml

import kube
from helpers import copy_models, parse_metrics, post, simple_json, wait_until
from topology import GatewayProcess

PROMETHEUS = kube.REPO_ROOT / "deploy" / "prometheus"
NAME = re.compile(r"\bmlserve_[a-z0-9_]+\b")
# Exported only once a model version has served its drift reference (1,000
# logged rows by default), which this short scrape does not reach:
# tests/e2e/test_drift.py reads it from a real drift, and the rule's unit
# tests feed it synthetic series.
NOT_YET_EXPORTED = {"mlserve_monitoring_drift_detected"}
DESIRED = "mlserve_inference_desired_replicas"
SYNC_FAILURES = "mlserve_inference_registry_sync_failures_total"


def names_used():
    """(where, metric name) for every mlserve_* name in the scaling and alerting objects."""
    used = []
    for overlay in ("production", "keda"):
        for obj in kube.render(overlay):
            if obj["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
                text = yaml.safe_dump(obj["spec"])
                used += [(f"{overlay}/{obj['kind']}/{obj['metadata']['name']}", n)
                         for n in NAME.findall(text)]
    for rule in yaml.safe_load((PROMETHEUS / "adapter.yaml").read_text())["rules"]:
        used += [("adapter.yaml seriesQuery", n) for n in NAME.findall(rule["seriesQuery"])]
    for group in yaml.safe_load((PROMETHEUS / "rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            used += [(f"rules.yaml {rule['alert']}", n) for n in NAME.findall(rule["expr"])]
    return used


@pytest.fixture(scope="module")
def exported(models_repo, tmp_path_factory):
    """Sample names of a real scrape, after one good and one refused request
    on the node, one good request through the gateway, and a sync failure
    (it follows a model the registry does not have), so the labelled
    families have samples."""
    repo = copy_models(models_repo, tmp_path_factory.mktemp("k8s_metrics"), ["simple"])
    env = {"MLSERVE_INFERENCE__MODELS": '[{name="unregistered",source="registry",alias="production"}]'}
    with GatewayProcess().start(repo, env=env) as s:
        assert post(s.http_port, "/v2/models/simple/infer", simple_json()[0]).status == 200
        bad = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}]}
        assert post(s.http_port, "/v2/models/simple/infer", bad).status == 400
        assert post(s.gateway_http_port, "/v2/models/simple/infer", simple_json()[0]).status == 200

        def scraped():
            names = scrape(s.metrics_port)
            return names if {SYNC_FAILURES, DESIRED} <= names else None
        return wait_until(scraped, 60, f"no {SYNC_FAILURES} for a followed model the registry lacks, "
                          f"or no {DESIRED} (sampled every second)")


def scrape(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    samples, _ = parse_metrics(body)
    return {name for name, _, _ in samples}


def test_every_metric_the_deployment_uses_is_exported(exported):
    used = names_used()
    assert {n for _, n in used} >= {"mlserve_inference_queue_depth"}, used
    assert any("rules.yaml" in where for where, _ in used), used
    missing = [(where, n) for where, n in used if n not in exported and n not in NOT_YET_EXPORTED]
    assert not missing, f"not in a real scrape: {missing}; exported: " + \
        str(sorted(n for n in exported if n.startswith("mlserve_inference"))[:40])


def test_the_check_can_fail(exported):
    assert "mlserve_inference_queue_depthh" not in exported
