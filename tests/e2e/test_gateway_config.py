"""The example configurations (all-in-one, split) are accepted by the binary
and say what their README says: the split gateway routes to two inference
processes with auth on; the all-in-one gateway uses the in-process role."""

import json
import subprocess

from server import REPO_ROOT, server_binary


def effective(path):
    proc = subprocess.run([str(server_binary()), "--config", str(path), "config"],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{path}: {proc.stderr}"
    return json.loads(proc.stdout)


def test_examples_are_accepted():
    aio = effective(REPO_ROOT / "config" / "all-in-one.toml")
    assert aio["server"]["roles"] == [] and aio["gateway"]["auth"] == "off"
    assert aio["gateway"]["inference_endpoints"] == []
    split = {p.stem: effective(p) for p in (REPO_ROOT / "config" / "split").glob("*.toml")}
    assert set(split) == {"gateway", "features", "inference-a", "inference-b", "registry"}
    gateway = split["gateway"]
    assert gateway["server"]["roles"] == ["gateway"] and gateway["gateway"]["auth"] == "on"
    grpc_ports = {split[n]["server"]["grpc_port"] for n in ("inference-a", "inference-b")}
    assert {int(e.rsplit(":", 1)[1]) for e in gateway["gateway"]["inference_endpoints"]} == grpc_ports
    assert gateway["features"]["endpoint"].endswith(f":{split['features']['server']['grpc_port']}")
    ports = [c["server"][k] for c in split.values() for k in ("http_port", "grpc_port", "metrics_port")]
    ports += [gateway["gateway"]["http_port"], gateway["gateway"]["grpc_port"]]
    assert len(ports) == len(set(ports)), "every process of the split example has its own ports"
