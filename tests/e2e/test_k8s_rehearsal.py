"""The cluster rehearsal: the dev overlay's split deployment as separate
processes on loopback, each started with exactly its Deployment's arguments
and environment and the rendered ConfigMaps and Secret, against real
PostgreSQL, Redis and an S3 server: one registry, two features, two
inference and two gateway processes, and last the monitoring role.

What stands in for the cluster, and nothing else, is rewritten:
- DNS: the Services' names become loopback addresses (mlserve-postgres -> the
  local PostgreSQL, in a schema of its own; mlserve-redis -> the local Redis;
  mlserve-s3 -> an s3s-fs process; mlserve-registry, mlserve-features and
  the headless mlserve-inference-pods -> the processes' ports, as flags; the
  monitoring role's scrape targets, the headless mlserve-gateway-pods and
  mlserve-inference-pods, -> every gateway's and inference process's metrics
  port, as a flag);
- kube-proxy: gateway i reaches features process i, the monitoring role
  features process 0;
- the pod's paths: listeners bind 127.0.0.1 on free ports; the emptyDir is a
  temporary directory;
- the event streams get a prefix of their own, so other tests on the same
  Redis cannot interfere.

The scenarios: keys created once and honoured (and revoked) by both
gateways; a feature pushed through one features process is read through the
other; predict with features through both gateways; a hot swap by alias on
both inference processes; a canary split set through one gateway and applied
by the other, then promoted; the monitoring role reading every gateway and
inference process and driving a rollout that both gateways apply. The
monitoring role starts last: running, it would start a rollout of its own
(monitoring.rollouts.trigger_alias) when the hand-made canary scenario moves
the canary alias, and its split would replace the one set by hand.
"""

import json
import re
import subprocess
import time
import uuid

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tomllib
from onnx import TensorProto, helper

import kube
from helpers import get, post, wait_until
from server import REPO_ROOT, Server, server_binary
from test_registry import S3, postgres_schema
from test_registry_follow import metric, registry_set_alias, registry_upload
from topology import GatewayProcess

MODEL = "tabular"
FEATURES = [f"f{i}" for i in range(50)]
FROM_VIEW = FEATURES[:10]


def tabular_version(seed):
    """A model with the ConfigMap's followed name's signature: input [N,50]
    -> probabilities [N,2]; versions differ by their weights."""
    w = np.random.default_rng(seed).standard_normal((50, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)], f"tabular_{seed}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 50])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    config = "\n".join(["max_batch_size = 8", "", "[[input]]", 'name = "input"',
                        'data_type = "TYPE_FP32"', "dims = [50]", "", "[[output]]",
                        'name = "probabilities"', 'data_type = "TYPE_FP32"', "dims = [2]", ""])
    return {"model.onnx": model.SerializeToString(), "config.toml": config.encode()}


def reference(files, x):
    sess = ort.InferenceSession(files["model.onnx"])
    return sess.run(["probabilities"], {"input": x.astype(np.float32)})[0]


class Cluster:
    """The dev overlay's processes on loopback."""

    def __init__(self, tmp):
        self.objects = kube.render("dev")
        self.tmp = tmp
        self.procs = []
        secret = kube.container_env(self.objects, self.deployment("registry"))
        # The roles' ports answer only the internal token (server.internal_token).
        self.token = {"x-mlserve-internal-token": secret["MLSERVE_SERVER__INTERNAL_TOKEN"]}
        self.s3 = S3(tmp / "s3", bucket=self.settings()["registry"]["s3_bucket"],
                     key=secret["AWS_ACCESS_KEY_ID"], secret=secret["AWS_SECRET_ACCESS_KEY"])
        self.dns = {
            "postgres://mlserve@mlserve-postgres:5432/mlserve": postgres_schema(),
            "redis://mlserve-redis:6379": "redis://127.0.0.1:6379",
            "http://mlserve-s3:9000": f"http://127.0.0.1:{self.s3.port}",
        }
        self.streams = f"mlserve-rehearsal-{uuid.uuid4().hex[:8]}:"
        try:
            self.registry = self.start("registry", "/health/ready")
            self.endpoint = f"http://127.0.0.1:{self.registry.grpc_port}"
            self.features = [self.start("features", "/health/ready",
                                        "--registry-endpoint", self.endpoint) for _ in range(2)]
            # Strict readiness: an inference pod is not ready before the
            # production alias exists, so these start once they are live.
            self.inference = [self.start("inference", "/v2/health/live",
                                         "--registry-endpoint", self.endpoint) for _ in range(2)]
        except BaseException:
            self.stop()
            raise

    def settings(self):
        text = kube.find(self.objects, "ConfigMap", "mlserve-config")["data"]["mlserve.toml"]
        return tomllib.loads(text)

    def deployment(self, role):
        return kube.find(self.objects, "Deployment", f"mlserve-{role}")

    def env(self, role):
        """The Deployment's environment with the cluster's names on loopback."""
        env = {}
        for key, value in kube.container_env(self.objects, self.deployment(role)).items():
            for name, address in self.dns.items():
                value = value.replace(name, address)
            env[key] = value
        for value in env.values():
            assert "mlserve-postgres" not in value and "mlserve-redis" not in value \
                and "mlserve-s3" not in value, value
        env["MLSERVE_EVENTS__STREAM_PREFIX"] = self.streams
        return env

    def start(self, role, ready, *flags, process=Server):
        n = sum(1 for p in self.procs if getattr(p, "role", None) == role)
        pod = self.tmp / f"{role}-{n}"
        pod.mkdir()
        args, env = kube.command_line(self.objects, self.deployment(role), pod / "etc")
        mode = self.settings()["inference"]["model_control_mode"]
        server = process() if process is GatewayProcess else process(ready_path=ready)
        server.role = role
        server.start(pod / "models", *args, "--model-control-mode", mode, "--data-dir", pod / "data",
                     *flags, env=self.env(role))
        self.procs.append(server)
        return server

    def start_gateways(self):
        inference = ",".join(f"http://127.0.0.1:{s.grpc_port}" for s in self.inference)
        self.gateways = [self.start("gateway", None, "--registry-endpoint", self.endpoint,
                                    "--features-endpoint", f"http://127.0.0.1:{f.grpc_port}",
                                    "--inference-endpoints", inference, process=GatewayProcess)
                         for f in self.features]

    def scrape_targets(self):
        """The ConfigMap's monitoring.scrape_targets on loopback. Each must be
        a headless Service (every pod, not one picked by kube-proxy) of the
        gateway or inference pods whose port leads to their metrics port; it
        becomes the metrics ports of that role's processes."""
        processes = {"gateway": self.gateways, "inference": self.inference}
        targets = []
        for target in self.settings()["monitoring"]["scrape_targets"]:
            name, port = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target).groups()
            service = kube.find(self.objects, "Service", name)["spec"]
            assert service.get("clusterIP") == "None", f"{target}: not a headless Service"
            role = next(r for r in processes
                        if service["selector"] == self.deployment(r)["spec"]["selector"]["matchLabels"])
            service_port = next(p for p in service["ports"] if p["port"] == int(port))
            assert kube.leads_to(service_port, self.deployment(role), "metrics"), target
            targets += [f"127.0.0.1:{p.metrics_port}" for p in processes[role]]
        return targets

    def start_monitoring(self):
        ready = kube.mlserve_container(self.deployment("monitoring"))["readinessProbe"]["httpGet"]["path"]
        self.monitoring = self.start("monitoring", ready, "--registry-endpoint", self.endpoint,
                                     "--features-endpoint", f"http://127.0.0.1:{self.features[0].grpc_port}",
                                     "--scrape-target", ",".join(self.scrape_targets()))
        return self.monitoring

    def keys(self, *args):
        """`mlserve keys ARGS` with a gateway's configuration (its database)."""
        cli_args, env = kube.command_line(self.objects, self.deployment("gateway"), self.tmp / "cli")
        config = [a for a in cli_args if a not in ("--role", "gateway")]
        proc = subprocess.run([str(server_binary()), *config, "keys", *args], cwd=str(REPO_ROOT),
                              env={"PATH": "/usr/bin:/bin", **self.env("gateway")},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def describe(self):
        return "\n\n".join(p.describe(tail=40) for p in self.procs)

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        self.s3.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("rehearsal"))
    yield c
    c.stop()


def ok(resp):
    assert resp.status == 200, str(resp)
    return resp.json()


def test_inference_is_ready_only_once_the_followed_model_serves(cluster):
    port = cluster.registry.http_port
    for s in cluster.inference:
        assert get(s.http_port, "/v2/health/ready").status != 200, "ready before any model"
    tag = json.dumps({"output": "probabilities", "postprocess": "probabilities_topk", "top_k": 2,
                      "labels": ["negative", "positive"]})
    body = {"name": MODEL, "tags": {"mlserve.pipeline": tag}}
    refused = post(port, "/v1/registry/models", body)
    assert refused.status == 401, "the registry's port answered without the internal token"
    created = post(port, "/v1/registry/models", body, headers=cluster.token)
    assert created.status == 201, created
    cluster.versions = [tabular_version(seed) for seed in (1, 2, 3)]
    assert [registry_upload(port, MODEL, v, cluster.token) for v in cluster.versions] == [1, 2, 3]
    registry_set_alias(port, MODEL, "production", 1, cluster.token)
    for s in cluster.inference:
        wait_until(lambda: get(s.http_port, "/v2/health/ready").status == 200, 60,
                   "inference never became ready\n" + cluster.describe())
    cluster.start_gateways()


def test_keys_created_once_are_honoured_and_revoked_by_both_gateways(cluster):
    key = cluster.keys("create", "--name", "rehearsal")
    path = f"/v2/models/{MODEL}"
    for g in cluster.gateways:
        assert get(g.gateway_http_port, path).status == 401
        assert get(g.gateway_http_port, path, headers={"Authorization": f"Bearer {key}"}).status == 200
    cluster.keys("revoke", "rehearsal")
    for g in cluster.gateways:
        wait_until(lambda: get(g.gateway_http_port, path,
                               headers={"Authorization": f"Bearer {key}"}).status == 401, 10,
                   "a revoked key still works")
    cluster.key = cluster.keys("create", "--name", "rehearsal-2", "--scope", "infer,predict,rollouts:admin")


def test_a_feature_pushed_through_one_features_process_is_read_through_the_other(cluster):
    one, other = (f.http_port for f in cluster.features)
    ok(post(one, "/v1/features/apply", {
        "entities": [{"name": "user", "join_keys": ["user_id"], "value_type": "int64"}],
        "feature_views": [{"name": "user_stats", "entities": ["user"], "ttl_secs": 86400,
                           "online": True,
                           "fields": [{"name": f, "dtype": "float64"} for f in FROM_VIEW]}]},
            headers=cluster.token))
    rng = np.random.default_rng(7)
    cluster.rows = {uid: rng.standard_normal(50).round(3) for uid in (1, 2)}
    ok(post(one, "/v1/features/push", {"feature_view": "user_stats", "rows": [
        {"values": {"user_id": uid, **{f: float(v[i]) for i, f in enumerate(FROM_VIEW)}},
         "event_ts": int(time.time() * 1e6)} for uid, v in cluster.rows.items()]},
            headers=cluster.token))
    answer = ok(post(other, "/v1/features/online", {
        "features": ["user_stats:f3"], "entities": [{"keys": {"user_id": 2}}]},
        headers=cluster.token))
    assert answer["rows"][0]["values"][0]["value"] == pytest.approx(cluster.rows[2][3]), answer
    features = [{"name": f"user_stats:{f}", "missing": "error"} for f in FROM_VIEW]
    features += [{"name": f, "missing": "default", "default": 0} for f in FEATURES[10:]]
    ok(post(one, "/v1/features/pipelines", {"model": MODEL, "kind": "tabular", "spec": {
        "kind": "tabular", "output": "input", "features": features}},
        headers=cluster.token))


def predict(cluster, gateway, request_id=None):
    headers = {"Authorization": f"Bearer {cluster.key}"}
    if request_id:
        headers["X-Request-Id"] = request_id
    rows = [{"user_id": uid, **{f: float(v[i]) for i, f in enumerate(FEATURES) if i >= 10}}
            for uid, v in cluster.rows.items()]
    return ok(post(gateway.gateway_http_port, f"/v1/models/{MODEL}:predict", {"rows": rows},
                   headers=headers))


def expected(cluster, version):
    x = np.array([cluster.rows[uid] for uid in sorted(cluster.rows)], dtype=np.float32)
    return reference(cluster.versions[version - 1], x)


def check(cluster, answer, version):
    assert answer["model_name"] == MODEL and answer["model_version"] == str(version), answer
    probs = expected(cluster, version)
    assert len(answer["predictions"]) == len(probs), answer
    for prediction, p in zip(answer["predictions"], probs):
        top = prediction["top_k"]
        assert top[0]["label"] == ["negative", "positive"][int(np.argmax(p))], (top, p)
        assert top[0]["score"] == pytest.approx(float(np.max(p)), abs=1e-5)


def predicts(cluster, gateway):
    """Whether predict answers 200 through GATEWAY (the other features
    process reads the new pipeline from PostgreSQL within its 2 s refresh)."""
    headers = {"Authorization": f"Bearer {cluster.key}"}
    return post(gateway.gateway_http_port, f"/v1/models/{MODEL}:predict",
                {"rows": [{"user_id": 1}]}, headers=headers).status == 200


def test_predict_with_features_through_both_gateways(cluster):
    for g in cluster.gateways:
        wait_until(lambda: predicts(cluster, g), 10, "the pipeline never reached this gateway's features")
        check(cluster, predict(cluster, g), 1)


def test_a_hot_swap_by_alias_reaches_both_inference_processes(cluster):
    registry_set_alias(cluster.registry.http_port, MODEL, "production", 2, cluster.token)
    for s in cluster.inference:
        wait_until(lambda: metric(s, "mlserve_inference_registry_serving_version", model=MODEL) == 2,
                   60, "an inference process never moved to v2\n" + cluster.describe())
    for g in cluster.gateways:
        # Both inference processes serve v2: many requests, none on v1.
        answers = [predict(cluster, g) for _ in range(20)]
        for answer in answers:
            check(cluster, answer, 2)


def test_a_canary_split_set_through_one_gateway_applies_on_the_other(cluster):
    registry_set_alias(cluster.registry.http_port, MODEL, "canary", 3, cluster.token)
    first, second = cluster.gateways
    auth = {"Authorization": f"Bearer {cluster.key}"}
    for s in cluster.inference:
        wait_until(lambda: get(s.http_port, f"/v2/models/{MODEL}/versions/3/ready",
                               headers=cluster.token).status == 200, 60,
                   "the canary version was never served\n" + cluster.describe())
    split = {"action": "set", "stable": "2", "canary": "3", "weight": 0.5}
    assert post(first.gateway_http_port, f"/v1/gateway/canary/{MODEL}", split, headers=auth).status == 200

    def split_on_second():
        seen = {predict(cluster, second, f"req-{i}")["model_version"] for i in range(20)}
        return seen == {"2", "3"}
    wait_until(split_on_second, 15, "the other gateway never applied the split")
    for i in range(10):
        answer = predict(cluster, second, f"same-{i}")
        check(cluster, answer, int(answer["model_version"]))
        assert predict(cluster, first, f"same-{i}")["model_version"] == answer["model_version"], \
            "the same request id lands on different versions through the two gateways"

    assert post(second.gateway_http_port, f"/v1/gateway/canary/{MODEL}", {"action": "promote"},
                headers=auth).status == 200
    wait_until(lambda: all(predict(cluster, first, f"p-{i}")["model_version"] == "3"
                           for i in range(10)), 15, "the promotion never reached the first gateway")


def infer(cluster, gateway, request_id=None):
    """One v2 inference of MODEL through GATEWAY, checked against its
    version's reference; returns the version that answered. (v2, not
    predict: the gateway labels a predict request's metrics with the model
    "tabular:predict", which the monitoring role does not take for MODEL.)"""
    x = np.array([cluster.rows[uid] for uid in sorted(cluster.rows)], dtype=np.float32)
    headers = {"Authorization": f"Bearer {cluster.key}"}
    if request_id:
        headers["X-Request-Id"] = request_id
    answer = ok(post(gateway.gateway_http_port, f"/v2/models/{MODEL}/infer", {"inputs": [
        {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]},
        headers=headers))
    version = int(answer["model_version"])
    out = next(o for o in answer["outputs"] if o["name"] == "probabilities")
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]),
                               reference(cluster.versions[version - 1], x), atol=1e-5)
    return version


def windows(cluster):
    """{version: requests} of MODEL in the monitoring role's window."""
    answer = ok(get(cluster.monitoring.http_port, f"/v1/monitoring/windows?model={MODEL}",
                    headers=cluster.token))
    return {w["version"]: int(w["requests"]) for w in answer["windows"] if w["model"] == MODEL}


def rollouts(cluster):
    return ok(get(cluster.monitoring.http_port, f"/v1/monitoring/rollouts?model={MODEL}",
                  headers=cluster.token))["rollouts"]


def test_the_monitoring_role_reads_every_pod_and_drives_a_rollout(cluster):
    mon = cluster.start_monitoring()
    assert get(mon.http_port, "/health/ready").status == 200
    refused = get(mon.http_port, "/v1/monitoring/rollouts")
    assert refused.status == 401, "the monitoring role's port answered without the internal token"
    # Traffic through both gateways (the promoted split: version 3) reaches
    # its windows, read from the gateways' metrics ports.
    def seen():
        for g in cluster.gateways:
            assert infer(cluster, g) == 3
        return windows(cluster).get("3", 0) > 0
    wait_until(seen, 60, f"the monitoring role never saw version 3's requests: {windows(cluster)}\n"
               + mon.describe(40), interval=1)

    # A rollout started by hand waits until every inference process serves
    # its canary (read from their metrics ports), then both gateways apply
    # its split. One long step whose checks stay inconclusive holds it there.
    port = cluster.registry.http_port
    cluster.versions.append(tabular_version(4))
    assert registry_upload(port, MODEL, cluster.versions[3], cluster.token) == 4
    started = ok(post(mon.http_port, "/v1/monitoring/rollouts", {
        "model": MODEL, "canary": 4, "previous_canary": 3, "steps": [{"weight": 50, "duration_ms": 600000}],
        "analysis": {"min_requests": 1000000}}, headers=cluster.token))
    assert (started["stable"], started["canary"], started["state"]) == (2, 4, "waiting"), started
    assert [(r["id"], r["state"]) for r in rollouts(cluster)] == [(started["id"], "waiting")]
    # The canary alias's move finds this rollout and starts no other.
    registry_set_alias(port, MODEL, "canary", 4, cluster.token)
    wait_until(lambda: [(r["state"], r["weight"]) for r in rollouts(cluster)] == [("progressing", 50)],
               120, f"the rollout never reached its step: {rollouts(cluster)}\n{cluster.describe()}",
               interval=1)
    for g in cluster.gateways:
        wait_until(lambda: {infer(cluster, g, f"rollout-{i}") for i in range(20)} == {2, 4}, 30,
                   "a gateway never applied the rollout's split", interval=1)
    wait_until(lambda: windows(cluster).get("2", 0) > 0 and windows(cluster).get("4", 0) > 0, 60,
               f"the windows never showed both versions: {windows(cluster)}", interval=1)

    # Aborted by hand: the canary alias goes back where it was (3, as the
    # start named it).
    aborted = ok(post(mon.http_port, f"/v1/monitoring/rollouts/{MODEL}/abort", {"reason": "rehearsal"},
                      headers=cluster.token))
    assert aborted["state"] == "aborted" and "rehearsal" in aborted["reason"], aborted
    wait_until(lambda: ok(get(port, f"/v1/registry/models/{MODEL}/aliases/canary",
                              headers=cluster.token))["version"] == 3, 30,
               "the abort did not move the canary alias back")
