"""The training role end to end, against the real binary: workflows applied
over REST and the CLI, refused with a 400 naming the problem and nothing
stored, and runs of real processes on the local executor: retries with
backoff, a step that always fails, a timeout that kills the step's whole
process tree, cancel, `kill -9` of the role in the middle of a step with
the run finished by its retry policy after a restart, and a DAG with
conditions, fan-out, output parameters and an exit handler."""

import json
import os
import signal
import subprocess
import textwrap
import time

import pytest

from helpers import get, post, wait_until
from server import REPO_ROOT, Server, server_binary

TERMINAL = {"succeeded", "failed", "cancelled"}


def start_training(tmp_path, data_dir=None, extra=()):
    """A process with the training and registry roles (no models)."""
    repo = tmp_path / "empty-repo"
    repo.mkdir(exist_ok=True)
    data = data_dir or (tmp_path / "data")
    return Server(ready_path="/v1/training/workflows").start(
        repo, "--role", "training,registry", "--data-dir", data, *extra)


def apply(port, text, fmt="toml"):
    return post(port, f"/v1/training/workflows?format={fmt}", textwrap.dedent(text).encode())


def applied(port, text, fmt="toml"):
    r = apply(port, text, fmt)
    assert r.status == 200, str(r)
    return r.json()


def submit(port, workflow, **parameters):
    r = post(port, f"/v1/training/workflows/{workflow}/runs", {"parameters": parameters})
    assert r.status == 200, str(r)
    return r.json()["id"]


def run_of(port, run_id):
    r = get(port, f"/v1/training/runs/{run_id}")
    assert r.status == 200, str(r)
    return r.json()


def wait_run(port, run_id, timeout=60):
    return wait_until(lambda: (lambda r: r if r["state"] in TERMINAL else None)(run_of(port, run_id)),
                      timeout, f"run {run_id} did not end")


def step(run, name):
    return next(s for s in run["steps"] if s["name"] == name)


def logs(port, run_id, name, stream="stdout"):
    r = get(port, f"/v1/training/runs/{run_id}/steps/{name}/logs?stream={stream}")
    assert r.status == 200, str(r)
    return r.body.decode()


def alive(pid):
    """True when `pid` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cmd(script, *args):
    """A TOML/JSON argv running `script` with sh; `args` are its $1, $2..."""
    return json.dumps(["sh", "-c", textwrap.dedent(script).strip(), "step", *args])


PARAM = "{{workflow.parameters.%s}}"


# --------------------------------------------------------------- bad input
BAD = {
    "a cycle": ("""
        name = "wf"
        [[steps]]
        name = "a"
        command = ["true"]
        dependencies = ["b"]
        [[steps]]
        name = "b"
        command = ["true"]
        dependencies = ["a"]
        """, "cycle"),
    "a missing dependency": ("""
        name = "wf"
        [[steps]]
        name = "a"
        command = ["true"]
        dependencies = ["nowhere"]
        """, "'nowhere'"),
    "an unknown parameter": ("""
        name = "wf"
        [parameters]
        known = "1"
        [[steps]]
        name = "a"
        command = ["echo", "{{workflow.parameters.unknown}}"]
        """, "unknown parameter 'unknown'"),
    "an unknown template reference": ("""
        name = "wf"
        [[steps]]
        name = "a"
        command = ["echo", "{{steps.a.outputs.result}}"]
        """, "unknown template reference"),
    "an output of a step it does not depend on": ("""
        name = "wf"
        [[steps]]
        name = "a"
        command = ["true"]
        outputs.parameters = [{ name = "x", path = "x.txt" }]
        [[steps]]
        name = "b"
        command = ["echo", "{{steps.a.outputs.parameters.x}}"]
        """, "does not depend on it"),
    "an artifact path that escapes": ("""
        name = "wf"
        [[steps]]
        name = "a"
        command = ["true"]
        outputs.artifacts = [{ name = "m", path = "../../etc/passwd" }]
        """, "escapes the step's directory"),
    "a command that does not exist": ("""
        name = "wf"
        [[steps]]
        name = "a"
        command = ["no-such-program-mlserve", "x"]
        """, "'no-such-program-mlserve' does not exist"),
    "a duplicate step name": ("""
        name = "wf"
        [[steps]]
        name = "a"
        command = ["true"]
        [[steps]]
        name = "a"
        command = ["false"]
        """, "duplicate step name 'a'"),
    "an unknown key": ("""
        name = "wf"
        [[steps]]
        name = "a"
        comand = ["true"]
        """, "unknown field `comand`"),
    "an unknown built-in": ("""
        name = "wf"
        [[steps]]
        name = "a"
        uses = "registry.delete_everything"
        """, "unknown built-in"),
}


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    s = start_training(tmp_path_factory.mktemp("trainer"))
    yield s
    s.stop()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_workflows_are_refused_naming_the_problem(trainer, case):
    text, expected = BAD[case]
    r = apply(trainer.http_port, text)
    assert r.status == 400, str(r)
    assert expected in r.error(), r.error()
    names = [w["name"] for w in get(trainer.http_port, "/v1/training/workflows").json()["workflows"]]
    assert "wf" not in names, "a refused workflow was stored"


def test_submit_refuses_unknown_parameters_and_missing_workflows(trainer):
    port = trainer.http_port
    applied(port, """
        name = "params"
        [parameters]
        program = "true"
        [[steps]]
        name = "a"
        command = ["{{workflow.parameters.program}}"]
        """)
    r = post(port, "/v1/training/workflows/params/runs", {"parameters": {"nope": "1"}})
    assert r.status == 400 and "unknown parameter 'nope'" in r.error(), str(r)
    r = post(port, "/v1/training/workflows/params/runs",
             {"parameters": {"program": "no-such-program-mlserve"}})
    assert r.status == 400 and "does not exist" in r.error(), str(r)
    r = post(port, "/v1/training/workflows/absent/runs", {})
    assert r.status == 404, str(r)
    assert get(port, "/v1/training/runs?workflow=params").json()["runs"] == []


def test_apply_versions_like_feature_definitions(trainer):
    port = trainer.http_port
    text = """
        name = "versions"
        [[steps]]
        name = "a"
        command = ["true"]
        """
    assert applied(port, text) == {"name": "versions", "version": 1, "created": True}
    assert applied(port, text) == {"name": "versions", "version": 1, "created": False}
    changed = text.replace('["true"]', '["true", "x"]')
    assert applied(port, changed)["version"] == 2
    assert get(port, "/v1/training/workflows/versions?version=1").json()["version"] == 1


# ------------------------------------------------------------------- retries
def test_a_step_that_fails_twice_is_retried_with_backoff(trainer, tmp_path):
    port = trainer.http_port
    command = cmd("""
        n=$(cat "$1/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1/count"
        date +%s%N >> "$1/times"
        echo "attempt $n"
        [ $n -ge 3 ]
        """, PARAM % "dir")
    applied(port, f"""
        name = "flaky"
        [parameters]
        dir = ""
        [[steps]]
        name = "flaky"
        command = {command}
        retry = {{ limit = 3, backoff = "300ms", factor = 2 }}
        """)
    run_id = submit(port, "flaky", dir=str(tmp_path))
    run = wait_run(port, run_id)
    assert run["state"] == "succeeded", run
    s = step(run, "flaky")
    assert s["attempt"] == 3 and s["state"] == "succeeded", s
    times = [int(t) for t in (tmp_path / "times").read_text().split()]
    gaps = [(b - a) / 1e9 for a, b in zip(times, times[1:])]
    # the backoff is a lower bound: 300 ms, then 600 ms
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps
    out = logs(port, run_id, "flaky")
    assert "attempt 1" in out and "attempt 3" in out and "=== attempt 3 of step flaky ===" in out


def test_a_step_that_always_fails_fails_the_run_with_its_logs_kept(trainer):
    port = trainer.http_port
    command = cmd('echo "to stdout"; echo "to stderr" >&2; exit 3')
    applied(port, f"""
        name = "broken"
        [[steps]]
        name = "broken"
        command = {command}
        retry = {{ limit = 1, backoff = "100ms" }}
        [[steps]]
        name = "after"
        dependencies = ["broken"]
        command = ["true"]
        """)
    run = wait_run(port, submit(port, "broken"))
    assert run["state"] == "failed" and "broken" in run["message"], run
    s = step(run, "broken")
    assert s["state"] == "failed" and s["attempt"] == 2 and s["exit_code"] == 3, s
    assert step(run, "after")["state"] == "skipped"
    assert logs(port, run["id"], "broken").count("to stdout") == 2
    assert "to stderr" in logs(port, run["id"], "broken", "stderr")
    kept = {a["name"] for a in run["artifacts"] if a["step"] == "broken"}
    assert {"logs/stdout", "logs/stderr"} <= kept


def test_exit_codes_limit_which_failures_are_retried(trainer):
    port = trainer.http_port
    applied(port, f"""
        name = "codes"
        [[steps]]
        name = "a"
        command = {cmd('exit 7')}
        retry = {{ limit = 3, backoff = "50ms", exit_codes = [1] }}
        """)
    run = wait_run(port, submit(port, "codes"))
    assert run["state"] == "failed" and step(run, "a")["attempt"] == 1, run


# ---------------------------------------------------- timeouts and cancel
def pids_in(path):
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_a_step_past_its_timeout_is_killed_with_its_children(trainer, tmp_path):
    port = trainer.http_port
    pids = tmp_path / "pids"
    command = cmd("""
        sh -c 'trap "" TERM; echo $$ >> "$0"; sleep 600' "$1" &
        echo $$ >> "$1"; sleep 600
        """, PARAM % "pids")
    applied(port, f"""
        name = "slow"
        [parameters]
        pids = ""
        [[steps]]
        name = "slow"
        command = {command}
        timeout = "1s"
        """)
    run = wait_run(port, submit(port, "slow", pids=str(pids)))
    assert run["state"] == "failed", run
    assert "timed out after 1s" in step(run, "slow")["message"]
    started = pids_in(pids)
    assert len(started) == 2, started
    assert not any(alive(p) for p in started), "a process of the timed-out step survived"


def test_cancel_kills_the_running_step(trainer, tmp_path):
    port = trainer.http_port
    pids = tmp_path / "pids"
    command = cmd('sleep 600 & echo $! >> "$1"; echo $$ >> "$1"; wait', PARAM % "pids")
    applied(port, f"""
        name = "cancel-me"
        [parameters]
        pids = ""
        [[steps]]
        name = "long"
        command = {command}
        [[steps]]
        name = "next"
        dependencies = ["long"]
        command = ["true"]
        """)
    run_id = submit(port, "cancel-me", pids=str(pids))
    wait_until(lambda: len(pids_in(pids)) == 2, 30, "the step did not start")
    r = post(port, f"/v1/training/runs/{run_id}/cancel")
    assert r.status == 200, str(r)
    run = wait_run(port, run_id)
    assert run["state"] == "cancelled", run
    assert step(run, "long")["state"] == "cancelled"
    assert step(run, "next")["state"] in ("cancelled", "pending")
    assert not any(alive(p) for p in pids_in(pids))
    again = post(port, f"/v1/training/runs/{run_id}/cancel")
    assert again.status == 409, str(again)


# --------------------------------------------------------------------- crash
def test_kill_9_mid_step_then_restart_finishes_the_run(tmp_path):
    data = tmp_path / "data"
    journal = tmp_path / "journal"
    server = start_training(tmp_path, data)
    port = server.http_port
    command = cmd("""
        echo "start $$" >> "$1"
        sh -c 'sleep 3' &
        wait
        echo "end $$" >> "$1"
        """, PARAM % "journal")
    applied(port, f"""
        name = "survivor"
        [parameters]
        journal = ""
        [[steps]]
        name = "work"
        command = {command}
        retry = {{ limit = 2, backoff = "100ms" }}
        [[steps]]
        name = "after"
        dependencies = ["work"]
        command = ["true"]
        """)
    run_id = submit(port, "survivor", journal=str(journal))
    wait_until(lambda: journal.exists() and "start" in journal.read_text(), 30,
               "the step did not start")
    first = int(journal.read_text().split()[1])
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    # the orphaned step keeps running while the role is down
    assert alive(first)
    restarted = start_training(tmp_path, data)
    try:
        run = wait_run(restarted.http_port, run_id, timeout=90)
        assert run["state"] == "succeeded", run
        lines = journal.read_text().split("\n")
        starts = [ln for ln in lines if ln.startswith("start")]
        ends = [ln for ln in lines if ln.startswith("end")]
        # the first attempt was killed before it ended; the second ran alone
        assert len(starts) == 2 and ends == [f"end {starts[1].split()[1]}"], lines
        assert not alive(first)
        s = step(run, "work")
        assert s["attempt"] == 2, s
        assert step(run, "after")["state"] == "succeeded"
    finally:
        restarted.stop()


# ------------------------------------------------- the DAG and its features
def test_dag_with_fan_out_conditions_outputs_and_exit_handler(trainer, tmp_path):
    port = trainer.http_port
    status_file = tmp_path / "status"
    r = apply(port, textwrap.dedent("""
        name: dag
        parameters:
          threshold: 0.5
          out: ""
        steps:
          - name: score
            command: ["sh", "-c", "echo 0.9 > score.txt; echo '{\\"auc\\": 0.9}' > metrics.json"]
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
          - name: never
            dependencies: [score]
            when: "{{steps.score.outputs.parameters.auc}} < {{workflow.parameters.threshold}}"
            command: ["false"]
          - name: consume
            dependencies: [publish]
            inputs:
              artifacts: [{name: squares, from: "{{steps.publish.outputs.artifacts.squares}}", path: in/squares.json}]
            command: ["sh", "-c", "cat in/squares.json > copy.txt"]
            outputs:
              parameters: [{name: copy, path: copy.txt}]
        on_exit:
          name: report
          command: ["sh", "-c", "echo {{workflow.status}} > {{workflow.parameters.out}}"]
        """), "yaml")
    assert r.status == 200, str(r)
    run = wait_run(port, submit(port, "dag", out=str(status_file)))
    assert run["state"] == "succeeded", json.dumps(run, indent=1)
    assert [step(run, f"square({i})")["item"] for i in range(3)] == ["1", "2", "3"]
    assert step(run, "never")["state"] == "skipped"
    assert json.loads(step(run, "consume")["outputs"]["copy"]) == ["1", "4", "9"]
    assert status_file.read_text().strip() == "Succeeded"
    assert {"step": "score", "name": "auc", "value": 0.9} in run["metrics"]
    squares = next(a for a in run["artifacts"] if a["name"] == "squares")
    assert squares["key"] == f"runs/{run['id']}/publish/squares.json" and squares["size"] > 0


def test_retry_reruns_only_what_failed(trainer, tmp_path):
    port = trainer.http_port
    marker = tmp_path / "fixed"
    first = cmd('echo ran >> "$1.first"', PARAM % "marker")
    second = cmd('test -e "$1"', PARAM % "marker")
    applied(port, f"""
        name = "fixable"
        [parameters]
        marker = ""
        [[steps]]
        name = "first"
        command = {first}
        [[steps]]
        name = "second"
        dependencies = ["first"]
        command = {second}
        """)
    run_id = submit(port, "fixable", marker=str(marker))
    assert wait_run(port, run_id)["state"] == "failed"
    marker.write_text("now it exists")
    r = post(port, f"/v1/training/runs/{run_id}/retry")
    assert r.status == 200, str(r)
    run = wait_run(port, run_id)
    assert run["state"] == "succeeded", run
    assert (tmp_path / "fixed.first").read_text().count("ran") == 1


# ----------------------------------------------------------------------- CLI
def test_cli_apply_submit_wait_get_and_logs(trainer, tmp_path):
    grpc = f"http://127.0.0.1:{trainer.grpc_port}"

    def cli(*args):
        return subprocess.run([str(server_binary()), *args, "--endpoint", grpc],
                              cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120)

    wf = tmp_path / "hello.yaml"
    wf.write_text(textwrap.dedent("""
        name: hello
        parameters: {who: world}
        steps:
          - name: greet
            command: ["echo", "hello {{workflow.parameters.who}}"]
        """))
    out = cli("workflows", "apply", str(wf))
    assert out.returncode == 0 and "workflow hello v1 applied" in out.stdout, out
    out = cli("jobs", "submit", "hello", "-p", "who=mlserve", "--wait")
    assert out.returncode == 0, out
    run_id = out.stdout.split("\n")[0].strip()
    assert "greet" in out.stdout and "SUCCEEDED" in out.stdout
    out = cli("jobs", "logs", run_id, "greet")
    assert out.returncode == 0 and "hello mlserve" in out.stdout, out
    out = cli("jobs", "list", "--workflow", "hello")
    assert run_id in out.stdout and "succeeded" in out.stdout, out
    out = cli("jobs", "submit", "hello", "-p", "nobody=1")
    assert out.returncode != 0 and "unknown parameter 'nobody'" in out.stderr, out


# ---------------------------------------------------------------------- cron
def test_a_schedule_fires_in_its_slot_and_once_across_a_restart(tmp_path):
    """Real time: an every-minute schedule fires for the next minute (never
    before it) and a restart right after does not fire that slot again."""
    data = tmp_path / "data"
    server = start_training(tmp_path, data)
    applied(server.http_port, """
        name = "minutely"
        [[schedules]]
        cron = "* * * * *"
        timezone = "Europe/Paris"
        [[steps]]
        name = "a"
        command = ["true"]
        """)
    slot = (int(time.time()) // 60 + 1) * 60

    def scheduled(port):
        runs = get(port, "/v1/training/runs?workflow=minutely").json()["runs"]
        return [r for r in runs if r["trigger"] == "schedule"]

    fired = wait_until(lambda: scheduled(server.http_port), slot - time.time() + 30,
                       "the schedule did not fire")
    assert len(fired) == 1 and slot * 1e6 <= fired[0]["created_at_us"] < (slot + 60) * 1e6, fired
    assert wait_run(server.http_port, fired[0]["id"])["state"] == "succeeded"
    server.stop()
    restarted = start_training(tmp_path, data)
    try:
        time.sleep(2)
        in_slot = [r for r in scheduled(restarted.http_port)
                   if r["created_at_us"] < (slot + 60) * 1e6]
        assert len(in_slot) == 1, in_slot
    finally:
        restarted.stop()
