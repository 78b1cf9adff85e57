"""Every metric name the deployment depends on (the inference HPA, the
prometheus-adapter rule, KEDA's query, the alert rules) is one the real
binary exports: a name that does not exist would scale on nothing and alert
never, silently."""

import http.client
import re

import pytest
import yaml

import kube
from helpers import copy_models, parse_metrics, post, simple_json
from server import start_server

PROMETHEUS = kube.REPO_ROOT / "deploy" / "prometheus"
NAME = re.compile(r"\bmlserve_[a-z0-9_]+\b")


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
    (so the labelled families have samples)."""
    repo = copy_models(models_repo, tmp_path_factory.mktemp("k8s_metrics"), ["simple"])
    with start_server(repo) as s:
        assert post(s.http_port, "/v2/models/simple/infer", simple_json()[0]).status == 200
        bad = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}]}
        assert post(s.http_port, "/v2/models/simple/infer", bad).status == 400
        conn = http.client.HTTPConnection("127.0.0.1", s.metrics_port, timeout=10)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
        conn.close()
    samples, _ = parse_metrics(body)
    return {name for name, _, _ in samples}


def test_every_metric_the_deployment_uses_is_exported(exported):
    used = names_used()
    assert {n for _, n in used} >= {"mlserve_inference_queue_depth"}, used
    assert any("rules.yaml" in where for where, _ in used), used
    missing = [(where, n) for where, n in used if n not in exported]
    assert not missing, f"not in a real scrape: {missing}; exported: " + \
        str(sorted(n for n in exported if n.startswith("mlserve_inference"))[:40])


def test_the_check_can_fail(exported):
    assert "mlserve_inference_queue_depthh" not in exported
