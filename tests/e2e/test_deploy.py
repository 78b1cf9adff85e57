"""deploy/: the Kubernetes manifests parse, reference files that exist, run
roles the binary knows, and carry a configuration the real binary accepts."""

import json
import pathlib
import subprocess

import pytest
import yaml

from server import server_binary

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def documents(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_kustomizations():
    return sorted(KUBERNETES.rglob("kustomization.yaml"))


@pytest.mark.parametrize("kustomization", all_kustomizations(), ids=lambda p: str(p.parent.relative_to(KUBERNETES)))
def test_kustomization_resources_exist_and_parse(kustomization):
    spec = documents(kustomization)[0]
    assert spec["kind"] == "Kustomization"
    for resource in spec["resources"]:
        target = (kustomization.parent / resource).resolve()
        assert target.exists(), f"{kustomization}: missing resource {resource}"
        if target.is_file():
            assert documents(target), f"{target} is empty"


def deployments():
    found = []
    for path in KUBERNETES.rglob("*.yaml"):
        for doc in documents(path):
            if doc.get("kind") == "Deployment":
                found.append((path, doc))
    return found


def test_every_deployment_runs_known_roles():
    known = {"gateway", "registry", "features", "inference"}
    seen = set()
    for path, deployment in deployments():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = container.get("args", [])
        if "--role" in args:
            role = args[args.index("--role") + 1]
            assert role in known, f"{path}: unknown role {role}"
            seen.add(role)
    assert seen == known, f"split deployment lacks roles: {known - seen}"


def test_configmap_is_accepted_by_the_binary(tmp_path):
    config_map = documents(KUBERNETES / "base" / "config.yaml")[0]
    config_file = tmp_path / "mlserve.toml"
    config_file.write_text(config_map["data"]["mlserve.toml"])
    result = subprocess.run(
        [str(server_binary()), "--config", str(config_file), "config"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["gateway"]["auth"] == "on"
    assert effective["features"]["online_store"] == "redis"
    assert effective["events"]["backend"] == "redis"
    assert effective["registry"]["endpoint"] == "http://mlserve-registry:8001"
    assert effective["features"]["endpoint"] == "http://mlserve-features:8001"


def test_autoscaler_metric_is_one_the_binary_exports():
    hpa = documents(KUBERNETES / "base" / "autoscaling.yaml")[0]
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    source = (DEPLOY.parent / "modules" / "inference" / "src" / "metrics.rs").read_text()
    assert f'"{metric}"' in source
