"""The shipped retraining example (examples/churn) end to end: labelled data
arrives in the feature store, the workflow builds a point-in-time training
set, trains XGBoost in the project's venv, converts it to ONNX, evaluates it
on held-out customers, registers it with its lineage and moves `canary`; an
inference role following `churn@canary` serves it, and its outputs equal
ONNX Runtime's on the registered artifact. New labels then trigger a
retrain by themselves (`data_arrived`), and serving moves to version 2.

Two deployments: all-in-one on SQLite and local files, and split, with
registry, features, training and inference as separate processes on
PostgreSQL, the S3 server and Redis Streams."""

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from helpers import get, post, wait_until
from server import REPO_ROOT, Server
from test_registry import BUCKET, S3, S3_KEY, S3_SECRET, postgres_schema
from test_training import TERMINAL, run_of, step, wait_run

EXAMPLE = REPO_ROOT / "examples" / "churn"
PYTHON = sys.executable


def generate(port, *args):
    subprocess.run([PYTHON, str(EXAMPLE / "generate.py"), "--url", f"http://127.0.0.1:{port}", *args],
                   check=True, timeout=300)


def workflow_text():
    """The shipped workflow, with this venv's Python and the example's directory."""
    text = (EXAMPLE / "workflow.toml").read_text()
    text = text.replace('python = "python3"', f'python = "{PYTHON}"')
    return text.replace('code = "examples/churn"', f'code = "{EXAMPLE}"')


FOLLOW = """
[inference]
registry_poll_interval = "1s"
[[inference.models]]
name = "churn"
alias = "canary"
"""


class AllInOne:
    def __init__(self, tmp):
        config = tmp / "mlserve.toml"
        config.write_text(FOLLOW)
        repo = tmp / "repo"
        repo.mkdir()
        self.server = Server().start(repo, "--config", config, "--data-dir", tmp / "data")
        self.features = self.training = self.registry = self.inference = self.server.http_port

    def stop(self):
        self.server.stop()


class Split:
    """registry, features, training and inference processes sharing
    PostgreSQL schemas, the S3 server and Redis Streams."""

    def __init__(self, tmp):
        self.s3 = S3(tmp / "s3")
        prefix = f"mlserve-test-{uuid.uuid4().hex[:8]}:"
        store = {
            "MLSERVE_REGISTRY__ARTIFACT_BACKEND": "s3",
            "MLSERVE_REGISTRY__S3_ENDPOINT": f"http://127.0.0.1:{self.s3.port}",
            "MLSERVE_REGISTRY__S3_BUCKET": BUCKET,
            "MLSERVE_REGISTRY__S3_ALLOW_HTTP": "true",
            "MLSERVE_REGISTRY__KEY_PREFIX": "mlserve",
            "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "MLSERVE_EVENTS__BACKEND": "redis",
            "MLSERVE_EVENTS__STREAM_PREFIX": prefix,
        }
        repo = tmp / "repo"
        repo.mkdir()
        self.procs = []

        def start(role, ready, env, *args):
            s = Server(ready_path=ready).start(repo, "--role", role, "--data-dir", tmp / role,
                                               *args, env={**store, **env})
            self.procs.append(s)
            return s

        registry = start("registry", "/v1/registry/models",
                         {"MLSERVE_REGISTRY__DATABASE_URL": postgres_schema()})
        features = start("features", "/v1/features/entities",
                         {"MLSERVE_FEATURES__DATABASE_URL": postgres_schema()})
        endpoints = {"MLSERVE_REGISTRY__ENDPOINT": f"http://127.0.0.1:{registry.grpc_port}",
                     "MLSERVE_FEATURES__ENDPOINT": f"http://127.0.0.1:{features.grpc_port}"}
        training = start("training", "/v1/training/workflows",
                         {**endpoints, "MLSERVE_TRAINING__DATABASE_URL": postgres_schema()})
        config = tmp / "inference.toml"
        config.write_text(FOLLOW)
        inference = start("inference", "/v2/health/ready", endpoints, "--config", config)
        self.registry, self.features = registry.http_port, features.http_port
        self.training, self.inference = training.http_port, inference.http_port

    def stop(self):
        for p in self.procs:
            p.stop()
        self.s3.stop()


@pytest.fixture(params=["all_in_one_sqlite", "split_postgres_s3"])
def deployment(request, tmp_path):
    d = AllInOne(tmp_path) if request.param == "all_in_one_sqlite" else Split(tmp_path)
    yield d
    d.stop()


def registered(d, version):
    r = get(d.registry, f"/v1/registry/models/churn/versions/{version}")
    assert r.status == 200, str(r)
    return r.json()


def artifact(d, version):
    r = get(d.registry, f"/v1/registry/models/churn/versions/{version}/files/model.onnx")
    assert r.status == 200, str(r)
    return r.body


def served_version(d):
    r = get(d.inference, "/v2/models/churn")
    return r.json()["versions"] if r.status == 200 else None


def check_served_equals_onnxruntime(d, version):
    model = artifact(d, version)
    rng = np.random.default_rng(5)
    x = np.column_stack([rng.exponential(24, 8), rng.uniform(15, 120, 8), rng.integers(0, 6, 8),
                         rng.normal(0, 1, 8), rng.choice([1, 12, 24], 8), rng.integers(0, 4, 8),
                         rng.lognormal(2, 0.6, 8), rng.integers(0, 2, 8)]).astype(np.float32)
    expected = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    r = post(d.inference, "/v2/models/churn/infer", {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                    "data": x.flatten().tolist()}]})
    assert r.status == 200, str(r)
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
    np.testing.assert_array_equal(outputs["label"], expected[0])
    np.testing.assert_allclose(outputs["probabilities"], expected[1], rtol=1e-5, atol=1e-6)


def test_the_retraining_loop_serves_what_it_registered(deployment):
    d = deployment
    generate(d.features, "--apply", "--customers", "3000", "--seed", "1")
    r = post(d.training, "/v1/training/workflows", workflow_text().encode())
    assert r.status == 200, str(r)
    r = post(d.training, "/v1/training/workflows/churn-retrain/runs", {})
    assert r.status == 200, str(r)
    run = wait_run(d.training, r.json()["id"], timeout=300)
    assert run["state"] == "succeeded", json.dumps(run, indent=1)

    # lineage: the run, the training set's sha256, the evaluation's metrics
    dataset = next(a for a in run["artifacts"] if a["name"] == "dataset")
    sha = step(run, "training-set")["outputs"]["sha256"]
    assert sha == dataset["sha256"] and int(step(run, "training-set")["outputs"]["rows"]) == 3000
    auc = float(step(run, "evaluate")["outputs"]["auc"])
    assert auc >= 0.75, auc
    version = int(step(run, "register")["outputs"]["version"])
    v = registered(d, version)
    assert v["lineage"] == {"training_run": run["id"], "dataset_snapshot": sha,
                            "code_version": "examples/churn@v1"}, v
    assert v["metrics"]["auc"] == pytest.approx(auc)
    assert v["created_by"] == f"training:{run['id']}"
    model = next(a for a in run["artifacts"] if a["name"] == "model")
    assert model["sha256"] == hashlib.sha256(artifact(d, version)).hexdigest()
    alias = get(d.registry, "/v1/registry/models/churn/aliases/canary")
    assert alias.status == 200 and alias.json()["version"] == version, str(alias)

    wait_until(lambda: served_version(d) == [str(version)], 60, "churn@canary is not served")
    check_served_equals_onnxruntime(d, version)

    # new labels arrive: data_arrived on churn_labels retrains by itself
    generate(d.features, "--customers", "1500", "--seed", "2", "--first-id", "100000")

    def triggered():
        runs = get(d.training, "/v1/training/runs?workflow=churn-retrain").json()["runs"]
        return [r for r in runs if r["trigger"] == "event"]

    event_runs = wait_until(triggered, 60, "data_arrived did not submit a run")
    assert len(event_runs) == 1, event_runs
    second = wait_run(d.training, event_runs[0]["id"], timeout=300)
    assert second["state"] == "succeeded", json.dumps(second, indent=1)
    assert int(step(second, "training-set")["outputs"]["rows"]) == 4500
    new_version = int(step(second, "register")["outputs"]["version"])
    assert new_version == version + 1
    wait_until(lambda: served_version(d) == [str(new_version)], 60, "the new canary is not served")
    check_served_equals_onnxruntime(d, new_version)


def test_a_model_below_the_threshold_is_not_registered(tmp_path):
    d = AllInOne(tmp_path)
    try:
        generate(d.features, "--apply", "--customers", "800", "--seed", "3")
        text = workflow_text().replace("min_auc = 0.75", "min_auc = 0.999")
        assert post(d.training, "/v1/training/workflows", text.encode()).status == 200
        r = post(d.training, "/v1/training/workflows/churn-retrain/runs", {})
        run = wait_run(d.training, r.json()["id"], timeout=300)
        assert run["state"] == "succeeded", run
        assert step(run, "register")["state"] == "skipped"
        assert step(run, "canary")["state"] == "skipped"
        assert get(d.registry, "/v1/registry/models/churn").status == 404
    finally:
        d.stop()
