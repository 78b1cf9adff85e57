"""The web console (issue 14) in headless Chromium, against a real mlserve
with real data.

One process with every role and `gateway.auth` on serves the console at
/ui on the gateway's port. The test seeds it through the node's own port
(loopback, as the other suites do): `plus` in the registry (three versions
with metrics, lineage and files; production on 1, and canary moved to 2,
which starts a rollout held at 20% for ten minutes), traffic through the
gateway (so windows, statistics and drift fill in, one column shifted so a
feature drifts), two training workflows (a finished run with a fan-out, an
exit handler, artifacts and metrics; a running one that prints a tick a
second), and a feature view with online values. Two keys are made with
`mlserve keys create`: an admin holding every scope, and a reader holding
registry:read, features:read and infer.

Node scripts under tests/console drive Chromium through playwright-core
(Debian's /usr/bin/chromium, no browser download) and print one JSON line:
- walk.mjs: every page renders what the API returns (the script reads the
  same API and compares it with the DOM); every control has a label;
- scopes.mjs: the reader sees no button it could not use, and the same
  requests made directly are refused with 403;
- actions.mjs: an alias move, a rollout abort, a run cancel (after its
  step's logs streamed live) and a key revoke, done through the UI by
  keyboard with the confirmation dialog; their effect is checked here
  through the API;
- weight.mjs: the overview's bytes transferred and first-render timings.

MLSERVE_CONSOLE_SCREENSHOTS=1 writes a screenshot of every page into
docs/console/ (off by default, so a test run leaves the tree clean).
The binary embeds console/ when it is built; MLSERVE_CONSOLE_DIR=<repo>/console
has the browser load the console's files from the working tree instead (the
binary's headers kept), to try a console change before the next build.
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import textwrap
import threading
import time
from contextlib import ExitStack, contextmanager

import numpy as np
import pytest

from helpers import copy_models, get, post, simple_json, wait_until
from rollout_helpers import plus_model
from server import REPO_ROOT, ServerStartError, server_binary
from test_registry import set_alias, upload
from topology import GatewayProcess, start_topology

CONSOLE = REPO_ROOT / "tests" / "console"
SHOTS = REPO_ROOT / "docs" / "console"
MODEL = "plus"
ALL_SCOPES = "infer,predict,registry:read,registry:write,features:read,features:write," \
    "training:submit,rollouts:admin,keys:admin"
READER_SCOPES = "registry:read,features:read,infer"
JWT_SECRET = "console-e2e-jwt-secret-of-32-bytes-or-more"
LOOKUP_DRIVER = 1001
SCRIPT_TIMEOUT_S = 420

CONFIG = """
[server]
data_dir = "{data_dir}"

[inference]
models = [
  {{ name = "{model}", source = "registry", alias = "production" }},
  {{ name = "{model}", source = "registry", alias = "canary" }},
]
registry_poll_interval = "0s"

[events]
backend = "memory"
retry_delay = "200ms"

[gateway.request_log]
sample_rate = 1.0
max_rows_per_second = 0.0
flush_interval = "200ms"

[monitoring]
scrape_interval = "500ms"
window = "10s"

[monitoring.rollouts]
steps = [{{ weight = 20, duration = "10m" }}]
interval = "1s"
threshold = 1000
min_requests = 5
max_error_rate = 0.5
max_error_rate_increase = 0.5
max_p99 = "30s"
max_p99_ratio = 1000.0
serve_timeout = "60s"

[monitoring.drift]
interval = "500ms"
window = "3s"
reference_rows = 150
min_rows = 60
max_rows = 1000
"""

DEMO = """
name: console-demo
description: prepare rows, train two folds, evaluate
parameters:
  seed: 7
steps:
  - name: prepare
    command: ["sh", "-c", "echo preparing rows; seq 1 50 > rows.csv; echo wrote 50 rows"]
    outputs:
      artifacts: [{name: rows, path: rows.csv}]
  - name: train
    dependencies: [prepare]
    with_items: [1, 2]
    command: ["sh", "-c", "echo training fold {{item}} with seed {{workflow.parameters.seed}}"]
  - name: evaluate
    dependencies: [train]
    command: ["sh", "-c", "echo evaluating; echo '{\\"auc\\": 0.91, \\"loss\\": 0.23}' > metrics.json; echo weights > model.txt"]
    outputs:
      metrics: metrics.json
      artifacts: [{name: model, path: model.txt}]
on_exit:
  name: report
  command: ["sh", "-c", "echo run ended {{workflow.status}}"]
"""

SLEEPER = """
name: console-sleeper
description: a long step that prints a tick a second
steps:
  - name: setup
    command: ["sh", "-c", "echo ready"]
  - name: work
    dependencies: [setup]
    command: ["sh", "-c", "i=0; while [ $i -lt 900 ]; do i=$((i+1)); echo tick $i; sleep 1; done"]
"""


# ------------------------------------------------------------------ seeding
def ok(resp):
    assert resp.status in (200, 201), str(resp)
    return resp.json()


def run_of(port, run_id):
    return ok(get(port, f"/v1/training/runs/{run_id}"))


def plus_rows(rng, state):
    """A `plus` request: 1 to 4 standard-normal rows, `state["shift"]` added to column 2."""
    x = rng.standard_normal((int(rng.integers(1, 5)), 4)).astype(np.float32)
    x[:, 2] += state["shift"]
    return MODEL, {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                               "data": x.ravel().tolist()}]}


def simple_rows(rng, state):
    """A `simple` request of one row."""
    return "simple", simple_json(1, seed=int(rng.integers(0, 1 << 30)))[0]


@contextmanager
def traffic(port, key, request):
    """One thread sending `request(rng, state)`'s (model, body) through the
    gateway with `key` until the context ends. Yields the state (`shift`,
    and the `failures`)."""
    state = {"shift": 0.0, "failures": []}
    stop = threading.Event()

    def send():
        rng = np.random.default_rng(14)
        while not stop.is_set():
            model, doc = request(rng, state)
            try:
                r = post(port, f"/v2/models/{model}/infer", doc, timeout=30,
                         headers={"Authorization": f"Bearer {key}"})
                if r.status != 200:
                    state["failures"].append(str(r))
            except OSError as e:
                state["failures"].append(repr(e))
            time.sleep(0.01)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(60)


def seed_features(port):
    """An entity; a feature view with online values for drivers 1001 to 1003
    (events 1 to 3 minutes old), materialized (incrementally) up to 2 minutes ago (so its
    newest event is newer than its last materialize); an offline view with
    neither an event nor a materialize."""
    ok(post(port, "/v1/features/apply", {
        "entities": [{"name": "driver", "join_keys": ["driver_id"], "value_type": "int64",
                      "description": "a driver of the fleet"}],
        "feature_views": [{"name": "driver_stats", "entities": ["driver"], "ttl_secs": 86400,
                           "online": True, "source": "trips table",
                           "fields": [{"name": "rate", "dtype": "float64"},
                                      {"name": "trips", "dtype": "int64"}]},
                          {"name": "driver_ratings", "entities": ["driver"], "ttl_secs": 0,
                           "online": False, "source": "ratings table",
                           "fields": [{"name": "stars", "dtype": "float64"}]}],
    }))
    now_us = int(time.time() * 1e6)
    rows = [{"values": {"driver_id": 1000 + i, "rate": 0.5 + i / 10, "trips": 10 * i},
             "event_ts": now_us - i * 60_000_000} for i in range(1, 4)]
    ok(post(port, "/v1/features/push", {"feature_view": "driver_stats", "rows": rows,
                                         "to": "online_and_offline"}))
    # Incremental: the runs the freshness records (a range run leaves no mark).
    ok(post(port, "/v1/features/materialize", {"feature_views": ["driver_stats"], "incremental": True,
                                                "end_ts": now_us - 120_000_000}))
    fresh = {f["view"]: f for f in ok(get(port, "/v1/features/views"))["freshness"]}
    assert fresh["driver_stats"]["materialized_at_us"] > 0, fresh
    assert fresh["driver_ratings"]["newest_event_us"] == 0, fresh


def make_key(config, name, scopes):
    out = subprocess.run([str(server_binary()), "--config", str(config), "keys", "create",
                          "--name", name, "--scope", scopes],
                         cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def drift_reports(port):
    r = get(port, f"/v1/monitoring/drift/{MODEL}")
    return r.json()["reports"] if r.status == 200 else []


@pytest.fixture(scope="module")
def console(models_repo, tmp_path_factory):
    if not (CONSOLE / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/console/node_modules is missing: run scripts/setup.sh (npm ci)")
    if not os.access("/usr/bin/chromium", os.X_OK) and not os.environ.get("MLSERVE_CHROMIUM"):
        pytest.fail("/usr/bin/chromium is missing: run scripts/setup.sh (Debian's chromium)")
    tmp = tmp_path_factory.mktemp("console")
    repo = copy_models(models_repo, tmp / "repo", ["simple"])
    config = tmp / "mlserve.toml"
    config.write_text(CONFIG.format(data_dir=tmp / "data", model=MODEL))
    try:
        s = GatewayProcess(ready_path="/health/ready").start(
            repo, "--config", config, "--auth", "on",
            env={"MLSERVE_GATEWAY__JWT__HS256_SECRET": JWT_SECRET})
    except ServerStartError as e:
        pytest.fail(str(e), pytrace=False)
    with ExitStack() as stack:
        stack.callback(s.stop)
        admin = make_key(config, "console-admin", ALL_SCOPES)
        reader = make_key(config, "console-reader", READER_SCOPES)
        port = s.http_port

        # Training: a finished run (its id is the lineage of version 3), a running one.
        for text in (DEMO, SLEEPER):
            ok(post(port, "/v1/training/workflows?format=yaml", textwrap.dedent(text).encode()))
        demo = ok(post(port, "/v1/training/workflows/console-demo/runs", {"parameters": {}}))["id"]
        wait_until(lambda: run_of(port, demo)["state"] in ("succeeded", "failed", "cancelled"), 120,
                   f"the demo run did not end\n{s.describe(40)}", interval=0.3)
        assert run_of(port, demo)["state"] == "succeeded", json.dumps(run_of(port, demo), indent=1)
        sleeper = ok(post(port, "/v1/training/workflows/console-sleeper/runs", {}))["id"]

        # The registry: three versions, production on 1, canary on 2 (a rollout).
        ok(post(port, "/v1/registry/models", {"name": MODEL, "description": "adds k to every value",
                                               "tags": {"team": "console"}}))
        for k, (auc, loss, run_id) in enumerate([(0.81, 0.31, ""), (0.84, 0.27, ""), (0.91, 0.23, demo)], 1):
            meta = {"description": f"INPUT0 + {k}", "metrics": {"auc": auc, "loss": loss},
                    "lineage": {"training_run": run_id, "dataset_snapshot": f"snapshot-{k}",
                                "code_version": f"c0ffee{k}"},
                    "tags": {"k": str(k)}}
            files = {"model.onnx": plus_model(k), "README.txt": f"plus {k}\n".encode()}
            assert ok(upload(port, MODEL, files, meta))["version"] == k
        ok(set_alias(port, MODEL, "production", 1))
        wait_until(lambda: get(port, f"/v2/models/{MODEL}/versions/1/ready").status == 200, 60,
                   "version 1 never served\n" + s.describe(40))
        load = stack.enter_context(traffic(s.gateway_http_port, admin, plus_rows))
        ok(set_alias(port, MODEL, "canary", 2))

        def rollout_state():
            r = get(port, f"/v1/monitoring/rollouts/{MODEL}")
            return r.status == 200 and r.json()["rollout"]["state"]
        wait_until(lambda: rollout_state() == "progressing", 90,
                   "the rollout never progressed\n" + s.describe(40), interval=0.3)

        seed_features(port)

        # Drift: once version 1 has its reference, column 2 moves by 2 sigma.
        wait_until(lambda: any(rep["version"] == "1" and rep["state"] != "collecting"
                               for rep in drift_reports(port)), 120,
                   f"no drift analysis of version 1: {drift_reports(port)}", interval=0.3)
        load["shift"] = 2.0
        wait_until(lambda: any(rep["version"] == "1" and rep["drifted"] for rep in drift_reports(port)),
                   120, f"the shift never drifted: {drift_reports(port)}", interval=0.3)
        assert run_of(port, sleeper)["state"] == "running", run_of(port, sleeper)
        assert load["failures"] == [], load["failures"][:5]
        yield {"server": s, "admin": admin, "reader": reader, "demo": demo, "sleeper": sleeper,
               "url": f"http://127.0.0.1:{s.gateway_http_port}"}


def node_script(console, name, **env):
    """Runs tests/console/<name> and returns its JSON line (fails with its output)."""
    full = dict(os.environ)
    full.update({"MLSERVE_URL": console["url"], "MLSERVE_ADMIN_KEY": console["admin"],
                 "MLSERVE_MODEL": MODEL})
    full.update({k: str(v) for k, v in env.items()})
    proc = subprocess.run(["node", str(CONSOLE / name)], cwd=str(CONSOLE), env=full,
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": "no result line"}
    assert proc.returncode == 0 and result.get("ok"), \
        f"{name} failed:\n{result.get('error')}\n--- stdout ---\n{proc.stdout[-3000:]}\n" \
        f"--- stderr ---\n{proc.stderr[-3000:]}\n--- mlserve ---\n{console['server'].describe(40)}"
    return result


def jwt(claims):
    """An HS256 JWT signed with the server's secret."""
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    signed = enc(b'{"alg":"HS256","typ":"JWT"}') + "." + enc(json.dumps(claims).encode())
    return signed + "." + enc(hmac.new(JWT_SECRET.encode(), signed.encode(), hashlib.sha256).digest())


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_the_console_files_load_without_credentials_and_the_data_does_not(console):
    port = console["server"].gateway_http_port
    page = get(port, "/ui/")
    assert page.status == 200 and b'<script type="module" src="js/app.js">' in page.body, str(page)
    assert page.headers["content-type"].startswith("text/html")
    assert get(port, "/ui/js/app.js").headers["content-type"].startswith("text/javascript")
    assert get(port, "/v1/whoami").status == 401
    who = ok(get(port, "/v1/whoami", headers=bearer(console["reader"])))
    assert who["identity"] == "key:console-reader" and who["auth"] is True, who
    assert sorted(who["scopes"]) == sorted(READER_SCOPES.split(",")), who


def test_every_page_renders_what_the_api_returns(console):
    env = {"MLSERVE_DEMO_RUN": console["demo"], "MLSERVE_SLEEPER_RUN": console["sleeper"],
           "MLSERVE_LOOKUP_KEY": LOOKUP_DRIVER}
    if os.environ.get("MLSERVE_CONSOLE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        env["MLSERVE_CONSOLE_SCREENSHOTS_DIR"] = str(SHOTS)
    result = node_script(console, "walk.mjs", **env)
    assert result["pages"] == ["overview", "models", "serving", "rollouts", "training", "features",
                               "keys"], result


def test_a_credential_without_a_scope_sees_no_button_and_is_refused(console):
    token = jwt({"sub": "analyst", "exp": int(time.time()) + 3600, "scope": "registry:read features:read"})
    result = node_script(console, "scopes.mjs", MLSERVE_READER_KEY=console["reader"],
                         MLSERVE_SLEEPER_RUN=console["sleeper"], MLSERVE_JWT=token)
    assert result["jwt"] == {"identity": "jwt:analyst", "whoami": "jwt:analyst",
                             "nav": ["Overview", "Models", "Rollouts", "Training", "Features"]}, result["jwt"]
    assert all(result["hidden"].values()), result["hidden"]
    assert set(result["hidden"]) == {"move_alias", "rollout_actions", "cancel_run", "start_run", "keys"}
    for call in result["refused"]:
        assert call["status"] == 403 and "lacks the scope" in call["error"], call
    # Nothing those requests asked for happened.
    port = console["server"].http_port
    assert ok(get(port, f"/v1/registry/models/{MODEL}/aliases/production"))["version"] == 1
    assert ok(get(port, f"/v1/monitoring/rollouts/{MODEL}"))["rollout"]["state"] == "progressing"
    assert run_of(port, console["sleeper"])["state"] == "running"
    gw = console["server"].gateway_http_port
    names = [k["name"] for k in ok(get(gw, "/v1/keys", headers=bearer(console["admin"])))["keys"]]
    assert "sneaky" not in names, names


def test_actions_through_the_ui_take_effect(console):
    result = node_script(console, "actions.mjs", MLSERVE_ALIAS_TO=3,
                         MLSERVE_SLEEPER_RUN=console["sleeper"])
    gw, admin = console["server"].gateway_http_port, bearer(console["admin"])
    # The alias moved, by the admin's key.
    alias = ok(get(gw, f"/v1/registry/models/{MODEL}/aliases/production", headers=admin))
    assert alias["version"] == 3, alias
    moves = ok(get(gw, f"/v1/registry/models/{MODEL}/alias-history?alias=production",
                   headers=admin))["moves"]
    assert (moves[-1]["from_version"], moves[-1]["to_version"]) == (1, 3), moves
    assert moves[-1]["actor"] == "key:console-admin", moves
    # The rollout aborted, with the console's reason.
    rollout = ok(get(gw, f"/v1/monitoring/rollouts/{MODEL}", headers=admin))["rollout"]
    assert rollout["state"] == "aborted" and "abort from the console" in rollout["reason"], rollout
    # The run cancelled, after its logs streamed live.
    assert result["run"]["lines_streamed"] >= 3, result["run"]
    run = ok(get(gw, f"/v1/training/runs/{console['sleeper']}", headers=admin))
    assert run["state"] == "cancelled", run
    # The key made in the console worked, and is refused once revoked.
    key = result["key"]
    assert key["scopes_when_made"] == ["infer", "registry:read"], key
    listed = {k["id"]: k for k in ok(get(gw, "/v1/keys", headers=admin))["keys"]}
    assert listed[key["id"]]["revoked_at"] is not None, listed[key["id"]]
    wait_until(lambda: get(gw, "/v1/whoami", headers=bearer(key["secret"])).status == 401, 30,
               "the revoked key is still accepted")


def test_overview_weight_and_first_render(console):
    result = node_script(console, "weight.mjs")
    print("\nconsole overview weight:", json.dumps(result))
    assert result["asset_requests"] >= 3 and result["asset_bytes"] > 0, result
    assert result["first_contentful_paint_ms"] > 0, result


# --------------------------------------------------------------------- split
@pytest.fixture(scope="module")
def split_console(models_repo, tmp_path_factory):
    """The split topology: a gateway process (auth on) in front of an
    inference process and a features process over gRPC; no registry,
    training or monitoring role is reached, so their pages are left out."""
    tmp = tmp_path_factory.mktemp("console_split")
    repo = copy_models(models_repo, tmp / "repo", ["simple"])
    topo = start_topology("split", repo, tmp / "data", "--auth", "on", features=True,
                          inference_count=1)
    with ExitStack() as stack:
        stack.callback(topo.stop)
        admin = topo.keys("create", "--name", "console-admin", "--scope", ALL_SCOPES).strip()
        seed_features(topo.features.http_port)
        load = stack.enter_context(traffic(topo.gateway.gateway_http_port, admin, simple_rows))
        wait_until(lambda: ok(get(topo.gateway.gateway_http_port, "/v2/models/simple/stats",
                                  headers=bearer(admin)))["model_stats"][0]["inference_count"] > 0,
                   60, "no request reached simple through the gateway")
        yield {"server": topo.gateway, "admin": admin,
               "url": f"http://127.0.0.1:{topo.gateway.gateway_http_port}", "load": load}


def test_split_the_pages_of_the_roles_reached_render_their_api_data(split_console):
    roles = ok(get(split_console["server"].gateway_http_port, "/v1/gateway/roles",
                   headers=bearer(split_console["admin"])))["roles"]
    assert {r["role"] for r in roles} == {"gateway", "inference", "features"}, roles
    assert all(r["up"] for r in roles), roles
    result = node_script(split_console, "walk.mjs", MLSERVE_MODEL="simple",
                         MLSERVE_LOOKUP_KEY=LOOKUP_DRIVER)
    assert result["pages"] == ["overview", "serving", "features", "keys"], result
    assert split_console["load"]["failures"] == [], split_console["load"]["failures"][:5]
