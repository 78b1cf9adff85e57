"""What the rendered overlays of deploy/kubernetes promise, read from the
objects `kubectl kustomize` yields (kube.render):

- every ConfigMap, with each Deployment's arguments and environment, is
  accepted by the real binary, and a cluster configuration on a pod-local
  store is refused, naming the key;
- secrets sit only in Secrets;
- the inference HPA (and KEDA's ScaledObject) use the paper's numbers;
- pods drain (preStop, grace), spread, have disruption budgets and CPU
  requests that match their thread settings;
- NetworkPolicies admit only the gateway's ports from outside;
- the production ServiceMonitor scrapes every role's pods, each once;
- the gpu overlay asks for GPUs and places the models there.
"""

import json
import re
import subprocess
import tomllib

import pytest

import kube
from server import server_binary

SPLIT = ["dev", "production", "gpu", "keda"]
ROLES = {"gateway", "registry", "features", "inference", "monitoring", "training"}


def effective(args, env, tmp_path):
    """`mlserve ARGS config` with ENV only (plus PATH): the effective
    configuration as JSON, or the process when it fails."""
    proc = subprocess.run([str(server_binary()), *args, "config"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", **env})
    return proc


def role_of(deployment):
    args = kube.mlserve_container(deployment).get("args", [])
    return args[args.index("--role") + 1] if "--role" in args else None


@pytest.mark.parametrize("overlay", kube.overlays())
def test_every_configmap_is_accepted_by_the_real_binary(overlay, tmp_path):
    objects = kube.render(overlay)
    seen = set()
    for deployment in kube.of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        args, env = kube.command_line(objects, deployment, tmp_path / name)
        proc = effective(args, env, tmp_path)
        assert proc.returncode == 0, f"{overlay}/{name}: {proc.stderr}"
        config = json.loads(proc.stdout)
        role = role_of(deployment)
        seen.add(role)
        if overlay in SPLIT:
            assert config["server"]["roles"] == [role], name
            assert config["server"]["deployment"] == "cluster", name
            assert config["inference"]["strict_readiness"] and config["inference"]["models"], name
    if overlay in SPLIT:
        assert seen == ROLES, f"{overlay} runs {seen}"


@pytest.mark.parametrize("role, key, value, named", [
    ("gateway", "MLSERVE_GATEWAY__DATABASE_URL", "sqlite:///var/lib/mlserve/keys.db", "gateway.database_url"),
    ("features", "MLSERVE_FEATURES__ONLINE_STORE", "memory", "features.online_store"),
    ("features", "MLSERVE_FEATURES__DATABASE_URL", "", "features.database_url"),
    ("registry", "MLSERVE_REGISTRY__ARTIFACT_BACKEND", "local", "registry.artifact_backend"),
    ("inference", "MLSERVE_EVENTS__BACKEND", "memory", "events.backend"),
    ("gateway", "MLSERVE_GATEWAY__RATE_LIMIT__BACKEND", "local", "gateway.rate_limit.backend"),
])
def test_the_cluster_setting_refuses_pod_local_stores(role, key, value, named, tmp_path):
    """The production ConfigMap with one store made pod-local: `mlserve config`
    and serving itself both refuse, naming the key."""
    objects = kube.render("production")
    deployment = kube.find(objects, "Deployment", f"mlserve-{role}")
    args, env = kube.command_line(objects, deployment, tmp_path)
    if value:
        env[key] = value
    else:
        env.pop(key)
    proc = effective(args, env, tmp_path)
    assert proc.returncode != 0
    assert 'server.deployment = "cluster" needs shared stores' in proc.stderr, proc.stderr
    assert named in proc.stderr, proc.stderr
    env["MLSERVE_SERVER__HTTP_PORT"] = env["MLSERVE_SERVER__GRPC_PORT"] = "0"
    env["MLSERVE_SERVER__METRICS_PORT"] = "0"
    serve = subprocess.run([str(server_binary()), *args], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", **env})
    assert serve.returncode != 0 and named in serve.stderr, serve.stderr


CREDENTIALS = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


@pytest.mark.parametrize("overlay", kube.overlays())
def test_secrets_sit_only_in_secrets(overlay):
    for config_map in kube.of_kind(kube.render(overlay), "ConfigMap"):
        for key, value in config_map["data"].items():
            where = f"{overlay}: ConfigMap {config_map['metadata']['name']} {key}"
            assert not re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", key, re.I), where
            assert not CREDENTIALS.search(value), f"{where} holds a URL with a password"
            for secret in kube.SECRET_KEYS:
                assert f"{secret}=" not in value and f"{secret.lower()} =" not in value, where


def inference_hpa(objects):
    return kube.find(objects, "HorizontalPodAutoscaler", "mlserve-inference")


def test_the_inference_hpa_uses_the_papers_numbers():
    adapter = (kube.REPO_ROOT / "deploy" / "prometheus" / "adapter.yaml").read_text()
    for overlay in ("dev", "production", "gpu"):
        spec = inference_hpa(kube.render(overlay))["spec"]
        metric = spec["metrics"][0]["pods"]
        assert metric["target"] == {"type": "AverageValue", "averageValue": "4"}, overlay
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120, overlay
        assert f'as: "{metric["metric"]["name"]}"' in adapter, "the adapter does not serve the HPA's metric"
        # The load's own estimate: the pods' desired replicas summed (average 1).
        desired = spec["metrics"][1]["pods"]
        assert desired["metric"]["name"] == "mlserve_inference_desired_replicas", overlay
        assert desired["target"] == {"type": "AverageValue", "averageValue": "1"}, overlay
        assert f'as: "{desired["metric"]["name"]}"' in adapter, "the adapter does not serve it"


def test_keda_replaces_the_hpa_with_the_same_signal():
    objects = kube.render("keda")
    hpas = [o["metadata"]["name"] for o in kube.of_kind(objects, "HorizontalPodAutoscaler")]
    assert "mlserve-inference" not in hpas and "mlserve-gateway" in hpas
    scaled = kube.find(objects, "ScaledObject", "mlserve-inference")["spec"]
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == "4"
    assert "mlserve_inference_queue_depth" in trigger["metadata"]["query"]
    desired = scaled["triggers"][1]["metadata"]
    assert "mlserve_inference_desired_replicas" in desired["query"] and desired["threshold"] == "1"
    assert scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"] == 120
    assert scaled["scaleTargetRef"]["name"] == "mlserve-inference"


def duration_seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m)", text)
    value, unit = int(match.group(1)), match.group(2)
    return value / 1000 if unit == "ms" else value * (60 if unit == "m" else 1)


@pytest.mark.parametrize("overlay", SPLIT)
def test_pods_drain_spread_and_have_disruption_budgets(overlay):
    objects = kube.render(overlay)
    budgets = kube.of_kind(objects, "PodDisruptionBudget")
    for deployment in kube.of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        container = kube.mlserve_container(deployment)
        mounted = kube.find(objects, "ConfigMap", "mlserve-config")["data"]["mlserve.toml"]
        grace = duration_seconds(tomllib.loads(mounted)["server"]["shutdown_grace"])
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause >= 5, name
        assert pod["terminationGracePeriodSeconds"] >= pause + grace + 1, \
            f"{name}: the grace period does not cover the preStop pause and the drain"
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, name
        labels = deployment["spec"]["selector"]["matchLabels"]
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"] == labels]
        assert covering and covering[0]["spec"].get("maxUnavailable") == 1, f"{name} has no PDB"
        assert container["readinessProbe"], name
        if name == "mlserve-inference":
            assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


@pytest.mark.parametrize("overlay", SPLIT)
def test_cpu_requests_match_the_thread_settings(overlay):
    objects = kube.render(overlay)
    for deployment in kube.of_kind(objects, "Deployment"):
        container = kube.mlserve_container(deployment)
        env = {v["name"]: v.get("value") for v in container["env"]}
        threads = int(env["MLSERVE_SERVER__WORKER_THREADS"])
        threads += int(env.get("MLSERVE_INFERENCE__CPU_THREADS") or 0)
        if "MLSERVE_INFERENCE__CPU_THREADS" in env:
            # A process serving models starts HTTP I/O threads by the node's
            # cores unless told how many.
            threads += int(env["MLSERVE_SERVER__HTTP_IO_THREADS"])
        requested = kube.cpu_cores(container["resources"]["requests"]["cpu"])
        assert threads == requested, f"{overlay}/{deployment['metadata']['name']}: " \
            f"{threads} threads for {requested} requested cores"
        assert "cpu" not in container["resources"].get("limits", {}), "a CPU limit throttles the threads"


def selects(selector, labels):
    """Whether a label selector (matchLabels, matchExpressions with In,
    NotIn, Exists, DoesNotExist) selects LABELS."""
    wanted = selector.get("matchLabels", {})
    tests = {"In": lambda e: labels.get(e["key"]) in e["values"],
             "NotIn": lambda e: labels.get(e["key"]) not in e["values"],
             "Exists": lambda e: e["key"] in labels,
             "DoesNotExist": lambda e: e["key"] not in labels}
    return all(labels.get(k) == v for k, v in wanted.items()) \
        and all(tests[e["operator"]](e) for e in selector.get("matchExpressions", []))


def admitted(policies, pod_labels, port, peer_labels, peer_namespace, namespace="mlserve"):
    """Whether the NetworkPolicies let a peer reach POD_LABELS:PORT."""
    governing = [p for p in policies if selects(p["spec"]["podSelector"], pod_labels)
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not governing:
        return True
    for policy in governing:
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                ns_ok = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": peer_namespace}) \
                    if "namespaceSelector" in peer else peer_namespace == namespace
                pod_ok = selects(peer.get("podSelector", {}), peer_labels)
                if ns_ok and pod_ok:
                    return True
    return False


@pytest.mark.parametrize("overlay", SPLIT)
def test_only_the_gateway_faces_outside(overlay):
    objects = kube.render(overlay)
    policies = kube.of_kind(objects, "NetworkPolicy")
    outside, member = ({}, "elsewhere"), ({"app.kubernetes.io/part-of": "mlserve"}, "mlserve")
    prometheus = ({}, "monitoring")
    for deployment in kube.of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        gateway = deployment["metadata"]["name"] == "mlserve-gateway"
        for port in (8080, 8081):
            assert admitted(policies, labels, port, *outside) == gateway, (deployment["metadata"]["name"], port)
        for port in (8000, 8001, 8002):
            assert not admitted(policies, labels, port, *outside), (deployment["metadata"]["name"], port)
            assert admitted(policies, labels, port, *member), (deployment["metadata"]["name"], port)
        assert admitted(policies, labels, 8002, *prometheus)
        assert not admitted(policies, labels, 8001, *prometheus)
    # The evaluator can say yes: with no policies everything is admitted.
    assert admitted([], {"a": "b"}, 8001, *outside)


def test_the_service_monitor_scrapes_every_role_once():
    """The Prometheus Operator selects Services by their own labels, then
    scrapes the named port of every pod behind them: each role's pods must be
    behind exactly one selected Service (none: no metrics, no dashboards, no
    alerts; two: every series twice), on its metrics port."""
    objects = kube.render("production")
    monitor = kube.find(objects, "ServiceMonitor", "mlserve")["spec"]
    selected = [s for s in kube.of_kind(objects, "Service")
                if selects(monitor["selector"], s["metadata"].get("labels", {}))]
    roles = set()
    for deployment in kube.of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        behind = [s for s in selected if selects({"matchLabels": s["spec"]["selector"]}, pods)]
        assert len(behind) == 1, f"{name}'s pods are behind {[s['metadata']['name'] for s in behind]}"
        for endpoint in monitor["endpoints"]:
            port = next(p for p in behind[0]["spec"]["ports"] if p["name"] == endpoint["port"])
            assert kube.leads_to(port, deployment, "metrics"), (name, port)
        roles.add(role_of(deployment))
    assert roles == ROLES


def test_the_gpu_overlay_puts_inference_on_gpus(tmp_path):
    objects = kube.render("gpu")
    inference = kube.find(objects, "Deployment", "mlserve-inference")
    container = kube.mlserve_container(inference)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"].endswith("-gpu")
    assert any(t["key"] == "nvidia.com/gpu" for t in inference["spec"]["template"]["spec"]["tolerations"])
    args, env = kube.command_line(objects, inference, tmp_path)
    config = json.loads(effective(args, env, tmp_path).stdout)
    assert config["inference"]["instance_kind"] == "gpu"
    for other in kube.of_kind(objects, "Deployment"):
        if other is not inference:
            assert "nvidia.com/gpu" not in kube.mlserve_container(other)["resources"].get("limits", {})
            assert not kube.mlserve_container(other)["image"].endswith("-gpu")


def test_the_readme_applies_every_overlay_and_names_every_secret_key():
    readme = (kube.REPO_ROOT / "deploy" / "README.md").read_text()
    for overlay in kube.overlays():
        assert f"kubectl apply -n mlserve -k deploy/kubernetes/overlays/{overlay}" in readme, overlay
    for key in kube.SECRET_KEYS:
        assert f"--from-literal={key}=" in readme, key
    dev_secret = kube.find(kube.render("dev"), "Secret", "mlserve-secrets")
    assert sorted(dev_secret["data"]) == sorted(kube.SECRET_KEYS)
