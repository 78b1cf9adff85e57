"""`mlserve jobs export --kubernetes`: the objects the Kubernetes executor
creates for a run (the run's owner ConfigMap and one batch/v1 Job per command
step, built by the same code the executor uses), rendered without a cluster
and validated strictly (unknown fields fail) against Kubernetes' published
schemas, 1.30 and the newest kubernetes-validate ships. No API server runs
here: what an API server would add (admission, defaulting, the owner's uid in
ownerReferences) is not checked."""

import copy
import subprocess

import kubernetes_validate
import pytest
import yaml

import kube
from server import REPO_ROOT, server_binary

WORKFLOW = REPO_ROOT / "examples" / "churn" / "workflow.toml"


def export(*args, config=None):
    cmd = [str(server_binary())]
    if config:
        cmd += ["--config", str(config)]
    cmd += ["jobs", "export", "--kubernetes", str(WORKFLOW), *args]
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def validate(obj):
    for version in kube.KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_churn_examples_jobs_validate_strictly(tmp_path):
    config = tmp_path / "mlserve.toml"
    config.write_text('[training]\nwork_dir = "/var/lib/mlserve/training"\n'
                      '[training.kubernetes]\nnamespace = "mlserve"\nimage = "mlserve:0.1.0"\n'
                      'work_claim = "mlserve-training-work"\nttl_after_finished = "30m"\n')
    objects = export("-p", "python=/usr/bin/python3", "-p", "min_auc=0.8",
                     "--run-id", "churn-retrain-0000beef", config=config)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    # The built-in steps (training set, register, canary) run in the role.
    assert kinds == [("ConfigMap", "mlserve-run-churn-retrain-0000beef"),
                     ("Job", "churn-retrain-0000beef-train-1"),
                     ("Job", "churn-retrain-0000beef-evaluate-1")], kinds
    for obj in objects:
        validate(obj)
    train = objects[1]
    spec = train["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == 1800
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["volumes"] == [{"name": "work",
                               "persistentVolumeClaim": {"claimName": "mlserve-training-work"}}]
    container = pod["containers"][0]
    assert container["image"] == "mlserve:0.1.0"
    assert container["command"] == ["/usr/bin/python3"]
    step_dir = "/var/lib/mlserve/training/runs/churn-retrain-0000beef/train/work"
    assert container["args"] == ["train.py", "--data", f"{step_dir}/training_set.parquet",
                                 "--out", f"{step_dir}/model.onnx"]
    assert container["workingDir"] == str(REPO_ROOT / "examples" / "churn")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLSERVE_RUN_ID"] == "churn-retrain-0000beef" and env["MLSERVE_STEP_DIR"] == step_dir
    labels = spec["template"]["metadata"]["labels"]
    assert labels["training.mlserve.dev/run"] == "churn-retrain-0000beef"
    assert labels["training.mlserve.dev/step"] == "train"
    assert labels["training.mlserve.dev/attempt"] == "1"
    assert train["metadata"]["namespace"] == "mlserve"


def test_a_gpu_step_with_fan_out_validates(tmp_path):
    workflow = tmp_path / "gpu.yaml"
    workflow.write_text(yaml.safe_dump({
        "name": "gpu_sweep",
        "parameters": {"lr": "0.1"},
        "steps": [{"name": "fit", "command": ["python", "fit.py", "--lr", "{{item}}"],
                   "image": "trainer:cuda", "with_items": ["0.1", "0.01"], "timeout": "2h",
                   "resources": {"cpu": "4", "memory": "16Gi", "gpu": 2},
                   "env": {"LR": "{{workflow.parameters.lr}}"}}],
    }))
    proc = subprocess.run([str(server_binary()), "jobs", "export", "--kubernetes", str(workflow)],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    objects = [d for d in yaml.safe_load_all(proc.stdout) if d]
    jobs = [o for o in objects if o["kind"] == "Job"]
    assert len(jobs) == 2
    for obj in objects:
        validate(obj)
    names = {j["metadata"]["name"] for j in jobs}
    assert len(names) == 2 and all(len(n) <= 63 and n == n.lower() for n in names), names
    container = jobs[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"},
                                      "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"}}
    assert container["args"] == ["fit.py", "--lr", "0.01"]
    assert jobs[0]["spec"]["activeDeadlineSeconds"] == 7200


@pytest.mark.parametrize("break_it", ["misspelt field", "wrong type"])
def test_the_validator_refuses_a_broken_job(break_it):
    """The check above can fail: a misspelt field and a wrongly typed one are refused."""
    job = copy.deepcopy(export()[1])
    if break_it == "misspelt field":
        job["spec"]["backofLimit"] = job["spec"].pop("backoffLimit")
    else:
        job["spec"]["template"]["spec"]["containers"][0]["args"] = "train.py"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)


def test_an_unknown_parameter_is_refused():
    proc = subprocess.run([str(server_binary()), "jobs", "export", "--kubernetes", str(WORKFLOW),
                           "-p", "pyhton=python3"],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "pyhton" in proc.stderr, proc.stderr
