"""`mlserve models create | push | list | versions | alias | pull` against a
real registry process, with a real model from scripts/make_models.py:
streamed uploads and downloads, aliases, and a corrupted artifact refused
by `pull` (sha256 checked before the file takes its name)."""

import json
import os
import shutil
import subprocess

from server import REPO_ROOT, server_binary
from test_registry import Backend


def cli(port, *args):
    proc = subprocess.run([str(server_binary()), "models", *map(str, args),
                           "--registry", f"http://127.0.0.1:{port}"],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120)
    return proc


def ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_push_list_alias_and_pull_a_real_model(models_repo, tmp_path):
    backend = Backend("sqlite-local", tmp_path)
    server = backend.start()
    try:
        port = server.http_port
        source = tmp_path / "simple"
        (source / "extra").mkdir(parents=True)
        shutil.copy(models_repo / "simple" / "1" / "model.onnx", source / "model.onnx")
        shutil.copy(models_repo / "simple" / "config.toml", source / "config.toml")
        (source / "extra" / "labels.txt").write_text("zero\none\n")

        ok(cli(port, "create", "simple", "--description", "the simple test model"))
        out = ok(cli(port, "push", "simple", source, "--alias", "staging",
                     "--metric", "accuracy=0.97", "--tag", "team=ml",
                     "--training-run", "run-42"))
        v1 = json.loads(out)
        assert v1["version"] == 1 and v1["metrics"] == {"accuracy": 0.97}
        assert sorted(f["path"] for f in v1["files"]) == \
            ["config.toml", "extra/labels.txt", "model.onnx"]
        assert v1["lineage"]["training_run"] == "run-42"

        single = models_repo / "simple_nobatch" / "1" / "model.onnx"
        v2 = json.loads(ok(cli(port, "push", "simple", single)))
        assert v2["version"] == 2 and [f["path"] for f in v2["files"]] == ["model.onnx"]
        ok(cli(port, "alias", "simple", "production", 2))

        listing = ok(cli(port, "list"))
        assert listing.startswith("simple\tlatest=2")
        assert '"production":2' in listing and '"staging":1' in listing
        rows = ok(cli(port, "versions", "simple")).splitlines()
        assert [r.split("\t")[:2] for r in rows] == [["2", "ready"], ["1", "ready"]]

        by_alias = tmp_path / "by_alias"
        ok(cli(port, "pull", "simple", "--alias", "production", by_alias))
        assert (by_alias / "model.onnx").read_bytes() == single.read_bytes()
        by_version = tmp_path / "by_version"
        ok(cli(port, "pull", "simple", "--version", 1, by_version))
        for path in ["model.onnx", "config.toml", "extra/labels.txt"]:
            assert (by_version / path).read_bytes() == (source / path).read_bytes(), path

        # Rot in the artifact store: pull refuses the file and keeps nothing.
        stored = [p for p in (tmp_path / "data" / "artifacts").rglob("config.toml")]
        assert len(stored) == 1
        original = stored[0].read_bytes()
        stored[0].write_bytes(bytes([original[0] ^ 1]) + original[1:])
        rotten = tmp_path / "rotten"
        proc = cli(port, "pull", "simple", "--version", 1, rotten)
        assert proc.returncode != 0 and "arrived corrupted" in proc.stderr, proc.stderr
        assert not (rotten / "config.toml").exists()
        stored[0].write_bytes(original[:-3])
        proc = cli(port, "pull", "simple", "--version", 1, rotten)
        assert proc.returncode != 0, proc.stderr
        assert not (rotten / "config.toml").exists()

        # Refusals carry the server's (or the CLI's) reason.
        link_dir = tmp_path / "linked"
        link_dir.mkdir()
        shutil.copy(single, link_dir / "model.onnx")
        os.symlink("/etc/passwd", link_dir / "passwd")
        proc = cli(port, "push", "simple", link_dir)
        assert proc.returncode != 0 and "symlink" in proc.stderr, proc.stderr
        bad_dir = tmp_path / "bad"
        bad_dir.mkdir()
        shutil.copy(single, bad_dir / "model.onnx")
        (bad_dir / "model.pkl").write_bytes(b"\x80\x04K\x01.")
        proc = cli(port, "push", "simple", bad_dir)
        assert proc.returncode != 0 and "400" in proc.stderr and "pickle" in proc.stderr, \
            proc.stderr
        proc = cli(port, "alias", "simple", "production", 9)
        assert proc.returncode != 0 and "404" in proc.stderr, proc.stderr
        rows = ok(cli(port, "versions", "simple")).splitlines()
        assert len(rows) == 2
    finally:
        server.stop()
        backend.close()
