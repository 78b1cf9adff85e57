"""`mlserve jobs export --argo` checked against Argo Workflows' published
schema: hera's pydantic models (generated from Argo's OpenAPI spec), made
strict (an unknown field is an error, as the API server's structural schema
prunes or refuses it; types are not coerced). The committed example export
and the export of a workflow using every feature (DAG, fan-out, `when`,
artifacts, retries with exit codes, timeouts, resources with a GPU, the exit
handler) must validate; a misspelt field and a wrongly typed one must not."""

import copy
import functools
import json
import subprocess
import textwrap

import pytest
import yaml

from server import REPO_ROOT, server_binary

GOLDEN = REPO_ROOT / "examples" / "churn" / "argo-workflow.yaml"

EVERYTHING = textwrap.dedent("""
    name: everything
    parameters:
      threshold: 0.5
      out: ""
    timeout: 1h
    steps:
      - name: score
        command: ["sh", "-c", "echo 0.9 > score.txt"]
        image: python:3.12-slim
        resources: {cpu: "2", memory: 4Gi, gpu: 1}
        env: {MODE: fast}
        working_dir: /work
        timeout: 10m
        retry: {limit: 3, backoff: 2s, factor: 2.0, max_backoff: 30s, exit_codes: [1, 137]}
        outputs:
          parameters: [{name: auc, path: score.txt}]
          metrics: metrics.json
      - name: square
        dependencies: [score]
        with_items: [1, 2, 3]
        command: ["sh", "-c", "echo $(( {{item}} * {{item}} )) > sq.txt"]
        outputs:
          parameters: [{name: value, path: sq.txt}]
      - name: publish
        dependencies: [square]
        when: "{{steps.score.outputs.parameters.auc}} >= {{workflow.parameters.threshold}}"
        command: ["sh", "-c", "echo '{{steps.square.outputs.parameters.value}}' > squares.json"]
        outputs:
          artifacts: [{name: squares, path: squares.json}]
      - name: consume
        dependencies: [publish]
        inputs:
          artifacts: [{name: squares, from: "{{steps.publish.outputs.artifacts.squares}}", path: in/squares.json}]
        command: ["sh", "-c", "cat in/squares.json"]
      - name: alias
        dependencies: [publish]
        uses: registry.alias
        with: {model: churn, alias: canary, version: "3"}
    on_exit:
      name: report
      command: ["sh", "-c", "echo {{workflow.status}}"]
    """)


@functools.cache
def strict_workflow_model():
    """hera's Workflow model with every Argo model set to refuse unknown fields."""
    from hera.shared._pydantic import APIBaseModel
    import hera.workflows.models  # noqa: F401  (defines every Argo model)
    from hera.workflows.models import Workflow

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    models = list(subclasses(APIBaseModel))
    assert len(models) > 200, "hera's Argo models were not all loaded"
    for cls in models:
        cls.model_config["extra"] = "forbid"
    for cls in models:
        cls.model_rebuild(force=True)
    return Workflow


def validate(doc):
    return strict_workflow_model().model_validate_json(json.dumps(doc), strict=True)


def export(path):
    proc = subprocess.run([str(server_binary()), "jobs", "export", "--argo", str(path)],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_the_committed_example_export_validates():
    # (A Rust test checks that the binary still writes exactly this file.)
    doc = yaml.safe_load(GOLDEN.read_text())
    assert validate(doc).kind == "Workflow"


def test_an_export_using_every_feature_validates(tmp_path):
    path = tmp_path / "everything.yaml"
    path.write_text(EVERYTHING)
    doc = export(path)
    workflow = validate(doc)
    assert workflow.spec.on_exit == "report" and workflow.spec.active_deadline_seconds == 3600
    score = next(t for t in doc["spec"]["templates"] if t["name"] == "score")
    assert score["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert score["retryStrategy"]["limit"] and score["activeDeadlineSeconds"] == 600
    tasks = {t["name"]: t for t in doc["spec"]["templates"][0]["dag"]["tasks"]}
    assert tasks["square"]["withItems"] == ["1", "2", "3"] and tasks["publish"]["when"]
    assert {t["name"] for t in doc["spec"]["templates"]} >= {"score", "square", "publish", "consume",
                                                             "alias", "report"}


@pytest.mark.parametrize("break_it", ["misspelt dependencies", "list-valued retry limit",
                                      "unknown template field"])
def test_the_validator_refuses_what_argo_would(break_it):
    doc = copy.deepcopy(yaml.safe_load(GOLDEN.read_text()))
    dag = next(t for t in doc["spec"]["templates"] if "dag" in t)
    task = next(t for t in dag["dag"]["tasks"] if "dependencies" in t)
    if break_it == "misspelt dependencies":
        task["dependancies"] = task.pop("dependencies")
    elif break_it == "list-valued retry limit":
        template = next(t for t in doc["spec"]["templates"] if "container" in t)
        template["retryStrategy"] = {"limit": [3]}
    else:
        doc["spec"]["templates"][0]["containr"] = {}
    with pytest.raises(Exception) as err:
        validate(doc)
    assert "validation error" in str(err.value)
