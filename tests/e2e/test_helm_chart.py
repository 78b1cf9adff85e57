"""deploy/helm/mlserve: the Helm chart is generated from the kustomize tree
(deploy/helm/generate.py), so there is one source of truth. The committed
chart is what the generator writes now, `helm lint` accepts it, and `helm
template` with the default values renders exactly the production overlay's
objects (ConfigMaps under fixed names instead of hashed ones, plus a
checksum annotation that rolls the pods when they change); values change
what they name."""

import json
import subprocess
import sys

import yaml

import kube

HELM = kube.KUBECTL.parent / "helm"
CHART = kube.REPO_ROOT / "deploy" / "helm" / "mlserve"


def helm(*args):
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def template(*sets, namespace="mlserve"):
    """The chart rendered as a release in `namespace` (deploy/README.md's)."""
    out = helm("template", "mlserve", str(CHART), "--namespace", namespace,
               *[a for s in sets for a in ("--set", s)])
    return [d for d in yaml.safe_load_all(out) if d]


def normalized(objects):
    """Objects keyed by (kind, name), ConfigMap names without kustomize's
    hash and without the chart's checksum annotation."""
    names = {}
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            name = obj["metadata"]["name"]
            names[name] = name.rsplit("-", 1)[0] if name.count("-") >= 2 else name
    result = {}
    for obj in objects:
        text = json.dumps(obj, sort_keys=True)
        for old, new in names.items():
            text = text.replace(f'"{old}"', f'"{new}"')
        obj = json.loads(text)
        annotations = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
        annotations.pop("checksum/config", None)
        result[(obj["kind"], obj["metadata"]["name"])] = obj
    return result


def test_the_committed_chart_is_what_the_generator_writes():
    proc = subprocess.run([sys.executable, str(kube.REPO_ROOT / "deploy" / "helm" / "generate.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_helm_lint_accepts_the_chart():
    assert "0 chart(s) failed" in helm("lint", str(CHART))


def test_the_default_values_render_the_production_overlay():
    chart, overlay = normalized(template()), normalized(kube.render("production"))
    assert chart.keys() == overlay.keys()
    for key in overlay:
        assert chart[key] == overlay[key], key
    for obj in template():
        kube.validate(obj)


def test_values_change_what_they_name():
    objects = template("image.tag=9.9.9", "replicas.inference=5",
                       "stores.MLSERVE_FEATURES__REDIS_URL=redis://other:6379/0")
    inference = kube.find(objects, "Deployment", "mlserve-inference")
    assert inference["spec"]["replicas"] == 5
    assert kube.mlserve_container(inference)["image"].endswith(":9.9.9")
    stores = kube.find(objects, "ConfigMap", "mlserve-stores")
    assert stores["data"]["MLSERVE_FEATURES__REDIS_URL"] == "redis://other:6379/0"
    before = kube.find(template(), "Deployment", "mlserve-gateway")["spec"]["template"]["metadata"]
    after = kube.find(objects, "Deployment", "mlserve-gateway")["spec"]["template"]["metadata"]
    assert before["annotations"]["checksum/config"] != after["annotations"]["checksum/config"]


def test_the_training_role_binding_names_the_release_namespace():
    binding = kube.find(template(namespace="ml-prod"), "RoleBinding", "mlserve-training")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mlserve-training", "namespace": "ml-prod"}]
