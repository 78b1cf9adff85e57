"""The command line and start-up errors of the real binary: roles, missing
ONNX Runtime library, bad configuration. Each must fail fast with a message
that says what is wrong and how to fix it."""

import os
import subprocess
import tempfile

from server import server_binary


def run(*args, env_extra=None, timeout=30):
    """Runs the binary in a scratch directory, so a role that starts before
    the failure writes its embedded-default data there, not into the repo."""
    env = dict(os.environ)
    env.update(env_extra or {})
    with tempfile.TemporaryDirectory(prefix="mlserve-cli-") as scratch:
        return subprocess.run([str(server_binary()), *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=scratch)


def test_unknown_role_names_the_valid_ones():
    result = run("--role", "bogus")
    assert result.returncode != 0
    assert "unknown role 'bogus'" in result.stderr
    assert "inference" in result.stderr


def test_every_role_is_compiled_in_and_a_role_missing_its_peer_says_so(models_repo):
    # Every role is in the default build (the refusal of a compiled-out
    # role is a unit test of mlserve-common's Role::parse_list); the
    # monitoring role alone, with no registry to move aliases in, refuses
    # to start and says what to set.
    result = run("--role", "inference,monitoring", "--model-repository", str(models_repo),
                 "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0")
    assert result.returncode != 0
    assert "the monitoring role needs the registry" in result.stderr, result.stderr[-2000:]
    assert "registry.endpoint" in result.stderr


def test_missing_onnxruntime_library_says_how_to_fix_it(models_repo):
    result = run("--model-repository", str(models_repo), "--http-port", "0", "--grpc-port", "0",
                 "--metrics-port", "0", env_extra={"ORT_DYLIB_PATH": "/nonexistent/libonnxruntime.so"})
    assert result.returncode != 0
    assert "cannot find libonnxruntime.so" in result.stderr
    assert "scripts/setup.sh" in result.stderr and "ORT_DYLIB_PATH" in result.stderr


def test_unknown_config_keys_are_errors(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nhttp_prot = 1\n")
    result = run("--config", str(config))
    assert result.returncode != 0
    assert "http_prot" in result.stderr


def test_env_override_of_a_misspelt_key_is_an_error():
    result = run(env_extra={"MLSERVE_INFERENCE__MODEL_REPO": "/tmp"})
    assert result.returncode != 0
    assert "model_repo" in result.stderr


def test_missing_model_repository_is_an_error(tmp_path):
    result = run("--model-repository", str(tmp_path / "absent"), "--http-port", "0",
                 "--grpc-port", "0", "--metrics-port", "0")
    assert result.returncode != 0
    assert "is not a directory" in result.stderr


def test_a_removed_key_names_its_replacement(tmp_path):
    config = tmp_path / "old.toml"
    config.write_text('[gateway]\nfeatures_endpoint = "http://f:8001"\n')
    result = run("--config", str(config))
    assert result.returncode != 0
    assert "gateway.features_endpoint was removed" in result.stderr
    assert "features.endpoint" in result.stderr
    result = run(env_extra={"MLSERVE_GATEWAY__MAX_BODY_BYTES": "10"})
    assert result.returncode != 0
    assert "server.http_max_body_bytes" in result.stderr


def test_a_removed_flag_names_its_replacement():
    result = run("--shutdown-grace-secs", "5")
    assert result.returncode != 0
    assert "server.shutdown_grace_secs was removed" in result.stderr
    assert "server.shutdown_grace instead" in result.stderr


def test_durations_need_a_unit():
    result = run(env_extra={"MLSERVE_SERVER__SHUTDOWN_GRACE": "30"})
    assert result.returncode != 0
    assert 'a duration needs a unit: write "30s"' in result.stderr
    result = run("--shutdown-grace", "1m 30s", "config")
    assert result.returncode == 0, result.stderr
    assert '"shutdown_grace": "1m 30s"' in result.stdout


def test_an_empty_or_short_hs256_secret_fails_the_start():
    """A token signed with an empty key must never pass: the gateway refuses
    to start with such a secret, naming the key to fix."""
    for secret in ["", "short-secret"]:
        result = run("--role", "gateway", "--http-port", "0", "--grpc-port", "0",
                     "--metrics-port", "0",
                     env_extra={"MLSERVE_GATEWAY__AUTH": "on",
                                "MLSERVE_GATEWAY__JWT__HS256_SECRET": secret})
        assert result.returncode != 0, result.stderr
        assert "gateway.jwt.hs256_secret" in result.stderr, result.stderr
        assert "at least 32 bytes" in result.stderr, result.stderr
