"""Every overlay in deploy/kubernetes renders with the real kubectl
(kustomize) and every object it yields validates: Kubernetes' kinds against
the 1.30 and the newest schemas kubernetes-validate ships (strict: unknown
fields fail), ServiceMonitor and ScaledObject against their CRDs' schemas."""

import jsonschema
import kubernetes_validate
import pytest

import kube


@pytest.mark.parametrize("overlay", kube.overlays())
def test_overlay_renders_and_every_object_validates(overlay):
    objects = kube.render(overlay)
    assert objects, f"{overlay} renders nothing"
    failures = []
    for obj in objects:
        try:
            kube.validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError,
                kubernetes_validate.SchemaNotFoundError) as e:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {e}")
    assert not failures, "\n".join(failures)


def test_kubectl_is_a_real_kubectl():
    import subprocess
    out = subprocess.run([str(kube.KUBECTL), "version", "--client"], capture_output=True,
                         text=True, timeout=60).stdout
    assert "Client Version: v1.33" in out and "Kustomize Version: v5" in out, out


def test_the_validators_reject_misspelt_fields():
    """The checks above can fail: a misspelt field is refused by both kinds
    of schema, and so is an unknown kind."""
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"selector": {"matchLabels": {"a": "b"}}, "replica": 2,
                           "template": {"metadata": {"labels": {"a": "b"}},
                                        "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kube.validate(deployment)
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
              "spec": {"scaleTargetRef": {"name": "d"}, "cooldownPeriods": 120,
                       "triggers": [{"type": "prometheus", "metadata": {"query": "q"}}]}}
    with pytest.raises(jsonschema.ValidationError):
        kube.validate(scaled)
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
               "metadata": {"name": "x"},
               "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervl": "15s"}]}}
    with pytest.raises(jsonschema.ValidationError):
        kube.validate(monitor)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kube.validate({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}})
