"""The shipped Prometheus alert rules are valid (`promtool check rules`) and
pass their unit tests (`promtool test rules`: every alert fires on the
series it is for and stays quiet on the others; deploy/prometheus/rules_test.yaml).

promtool comes with Debian's `prometheus` package (scripts/setup.sh): the
test fails, rather than skips, where it is missing."""

import shutil
import subprocess

import pytest
import yaml

from server import REPO_ROOT

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yaml"
RULES_TEST = PROMETHEUS / "rules_test.yaml"


def promtool(*args):
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed (Debian's prometheus package): run scripts/setup.sh")
    proc = subprocess.run([tool, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def alerts():
    return [rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def test_rules_are_valid():
    out = promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(alerts())} rules found" in out, out


def test_rules_pass_their_unit_tests():
    promtool("test", "rules", str(RULES_TEST))


def test_every_alert_is_tested_firing_and_quiet():
    """Each alert has a case expecting it and one expecting nothing."""
    firing, quiet = set(), set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    shipped = set(alerts())
    assert {"MlserveGatewayErrorRate", "MlserveGatewayLatencyP99", "MlserveInferenceQueueSaturated",
            "MlserveRegistrySyncRefused", "MlserveModelDrift"} <= shipped
    assert shipped - firing == set(), "alerts never tested firing"
    assert shipped - quiet == set(), "alerts never tested quiet"
