"""Drop-in gaps a Triton user hits, found by running their client code
unchanged (issue 13): BYTES elements with NUL and non-UTF-8 bytes, load
overrides in Triton's protobuf JSON, Triton's error texts, a configurable
server name and the system shared-memory extension. Every test uses the
unchanged tritonclient over HTTP and gRPC."""

import json
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException

from helpers import copy_models, simple_inputs
from server import start_server

PROTOCOLS = ["http", "grpc"]


def client_for(server, protocol):
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http_url, network_timeout=60.0)
    return grpcclient.InferenceServerClient(server.grpc_url)


def module_for(protocol):
    return httpclient if protocol == "http" else grpcclient


@pytest.fixture(scope="module")
def server(conformance_target):
    """The node, and a gateway in front of it (all-in-one and split)."""
    return conformance_target


# ------------------------------------------------------------- BYTES elements
ODD_ELEMENTS = [b"a\x00b", b"\x00", b"", b"caf\xe9", b"\xff\xfe\x00\x01", "日本".encode()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bytes_with_nul_and_non_utf8_round_trip_exactly(server, protocol):
    """identity_bytes gives back every element byte for byte, as Triton's
    BYTES carry arbitrary bytes (binary data on HTTP, raw contents on gRPC)."""
    mod = module_for(protocol)
    data = np.array([ODD_ELEMENTS], dtype=np.object_)
    with client_for(server, protocol) as c:
        i = mod.InferInput("INPUT0", list(data.shape), "BYTES")
        if protocol == "http":
            i.set_data_from_numpy(data, binary_data=True)
            out = [mod.InferRequestedOutput("OUTPUT0", binary_data=True)]
        else:
            i.set_data_from_numpy(data)
            out = [mod.InferRequestedOutput("OUTPUT0")]
        got = c.infer("identity_bytes", [i], outputs=out).as_numpy("OUTPUT0")
    assert got.shape == data.shape
    assert [bytes(x) for x in got.flatten()] == ODD_ELEMENTS


def test_nul_bytes_in_json_strings_round_trip(server):
    """Over HTTP JSON, a NUL travels as \\u0000 in both directions."""
    data = np.array([["x\x00y".encode(), b"\x00\x00"]], dtype=np.object_)
    with client_for(server, "http") as c:
        i = httpclient.InferInput("INPUT0", [1, 2], "BYTES")
        i.set_data_from_numpy(data, binary_data=False)
        out = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)]
        got = c.infer("identity_bytes", [i], outputs=out).as_numpy("OUTPUT0")
    assert [x if isinstance(x, bytes) else x.encode() for x in got.flatten()] == \
        [b"x\x00y", b"\x00\x00"]


# ---------------------------------------------------------------- error texts
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_and_version_errors_use_tritons_words(server, protocol):
    with client_for(server, protocol) as c:
        with pytest.raises(InferenceServerException) as e:
            c.get_model_metadata("foo")
        assert e.value.message().startswith("Request for unknown model: 'foo' is not found"), \
            e.value.message()
        with pytest.raises(InferenceServerException) as e:
            c.get_model_metadata("simple", model_version="99")
        assert e.value.message().startswith(
            "Request for unknown model: 'simple' version 99 is not found"), e.value.message()
        feeds = simple_inputs(1, seed=2)
        mod = module_for(protocol)
        inputs = [mod.InferInput(n, [1, 16], "INT32") for n in feeds]
        for i, a in zip(inputs, feeds.values()):
            i.set_data_from_numpy(a)
        with pytest.raises(InferenceServerException) as e:
            c.infer("foo", inputs)
        assert e.value.message().startswith("Request for unknown model: 'foo' is not found"), \
            e.value.message()


# ------------------------------------------------- explicit loads, overrides
@pytest.fixture(scope="module")
def explicit_server(models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("dropin") / "repo",
                       ["simple", "identity_fp32"])
    broken = repo / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    s = start_server(repo, "--model-control-mode", "explicit", "--load-model", "simple")
    yield s
    s.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_failed_loads_say_failed_to_load(explicit_server, protocol):
    with client_for(explicit_server, protocol) as c:
        for model in ["no_such_model", "broken"]:
            with pytest.raises(InferenceServerException) as e:
                c.load_model(model)
            assert e.value.message().startswith(f"failed to load '{model}'"), e.value.message()
        assert c.is_server_live()


def max_batch_size(c, protocol, model):
    config = c.get_model_config(model)
    return config["max_batch_size"] if protocol == "http" else config.config.max_batch_size


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_triton_style_override_changes_max_batch_size(explicit_server, protocol):
    """The override as protobuf JSON: a 64-bit-style number as a string, and
    the whole config as Triton's gRPC client prints it (camelCase names, int64
    dims as strings), edited and sent back."""
    with client_for(explicit_server, protocol) as c:
        c.load_model("identity_fp32", config=json.dumps({"max_batch_size": "4"}))
        assert max_batch_size(c, protocol, "identity_fp32") == 4

        with grpcclient.InferenceServerClient(explicit_server.grpc_url) as g:
            config = json.loads(json_format.MessageToJson(g.get_model_config("identity_fp32").config))
        assert "maxBatchSize" in config
        config["maxBatchSize"] = 6
        c.load_model("identity_fp32", config=json.dumps(config))
        assert max_batch_size(c, protocol, "identity_fp32") == 6

        x = np.arange(18, dtype=np.float32).reshape(6, 3)
        mod = module_for(protocol)
        i = mod.InferInput("INPUT0", [6, 3], "FP32")
        i.set_data_from_numpy(x)
        np.testing.assert_array_equal(c.infer("identity_fp32", [i]).as_numpy("OUTPUT0"), x)
        i = mod.InferInput("INPUT0", [7, 3], "FP32")
        i.set_data_from_numpy(np.zeros((7, 3), np.float32))
        with pytest.raises(InferenceServerException):
            c.infer("identity_fp32", [i])

        with pytest.raises(InferenceServerException) as e:
            c.load_model("identity_fp32", config=json.dumps({"max_batch_sise": 4}))
        assert e.value.message().startswith("failed to load 'identity_fp32'"), e.value.message()
        assert "max_batch_sise" in e.value.message()
        assert max_batch_size(c, protocol, "identity_fp32") == 6

        # A load without an override goes back to the repository's config.
        c.load_model("identity_fp32")
        assert max_batch_size(c, protocol, "identity_fp32") == 8


# ---------------------------------------------------------------- server name
def test_server_name_is_configurable(models_repo, make_server):
    s = make_server(models_repo, env={"MLSERVE_INFERENCE__SERVER_NAME": "triton"})
    with client_for(s, "http") as c:
        assert c.get_server_metadata()["name"] == "triton"
    with client_for(s, "grpc") as c:
        assert c.get_server_metadata().name == "triton"


# ------------------------------------------------------ system shared memory
@pytest.fixture
def regions():
    """Shared-memory objects made with tritonclient's own utility, destroyed
    at teardown."""
    made = []

    def make(size):
        tag = uuid.uuid4().hex[:12]
        handle = shm.create_shared_memory_region(f"r{tag}", f"/mlserve_{tag}", size)
        made.append(handle)
        return f"r{tag}", f"/mlserve_{tag}", handle

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_system_shared_memory_round_trip(server, regions, protocol):
    """Triton's simple_*_shm_client flow: both inputs in one region, both
    outputs in another, status listed, and the results read back from it.
    On the node, and through a gateway whose inference role is in its own
    process; a gateway routing to other processes refuses, since a region
    lives in the process that maps it, and does not list the extension."""
    mod = module_for(protocol)
    with client_for(server, "http") as c:
        extensions = c.get_server_metadata()["extensions"]
    if getattr(server, "topology", None) is not None and server.topology.kind == "split":
        assert "system_shared_memory" not in extensions
        with client_for(server, protocol) as c:
            with pytest.raises(InferenceServerException) as e:
                c.get_system_shared_memory_status()
            assert "inference process" in e.value.message(), e.value.message()
        return
    assert "system_shared_memory" in extensions
    feeds = simple_inputs(1, seed=11)
    a, b = feeds["INPUT0"], feeds["INPUT1"]
    size = a.nbytes
    in_name, in_key, in_handle = regions(2 * size)
    out_name, out_key, out_handle = regions(2 * size)
    shm.set_shared_memory_region(in_handle, [a, b])
    with client_for(server, protocol) as c:
        c.unregister_system_shared_memory()
        c.register_system_shared_memory(in_name, in_key, 2 * size)
        c.register_system_shared_memory(out_name, out_key, 2 * size)
        status = c.get_system_shared_memory_status()
        if protocol == "http":
            names = {r["name"]: r for r in status}
            assert names[in_name]["key"] == in_key and int(names[in_name]["byte_size"]) == 2 * size
        else:
            assert status.regions[in_name].key == in_key
            assert status.regions[in_name].byte_size == 2 * size

        inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory(in_name, size)
        inputs[1].set_shared_memory(in_name, size, offset=size)
        outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory(out_name, size)
        outputs[1].set_shared_memory(out_name, size, offset=size)
        result = c.infer("simple", inputs, outputs=outputs)
        shape = result.get_output("OUTPUT0")
        shape = shape["shape"] if protocol == "http" else list(shape.shape)
        out0 = shm.get_contents_as_numpy(out_handle, np.int32, shape)
        out1 = shm.get_contents_as_numpy(out_handle, np.int32, shape, offset=size)
        np.testing.assert_array_equal(out0, a + b)
        np.testing.assert_array_equal(out1, a - b)

        c.unregister_system_shared_memory(in_name)
        with pytest.raises(InferenceServerException) as e:
            c.infer("simple", inputs, outputs=outputs)
        assert in_name in e.value.message()
        c.unregister_system_shared_memory()
        status = c.get_system_shared_memory_status()
        assert (len(status) if protocol == "http" else len(status.regions)) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_out_of_bounds_regions_are_refused(node_server, regions, protocol):
    mod = module_for(protocol)
    name, key, handle = regions(64)
    with client_for(node_server, protocol) as c:
        for offset, size in [(0, 65), (60, 8), (64, 1)]:
            with pytest.raises(InferenceServerException):
                c.register_system_shared_memory(f"{name}_{offset}", key, size, offset=offset)
        with pytest.raises(InferenceServerException):
            c.register_system_shared_memory("nokey", "/mlserve_no_such_object", 8)
        with pytest.raises(InferenceServerException):
            c.register_system_shared_memory("escape", "/../../etc/passwd", 8)

        c.register_system_shared_memory(name, key, 64)
        with pytest.raises(InferenceServerException):
            c.register_system_shared_memory(name, key, 64)
        try:
            inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
            inputs[0].set_shared_memory(name, 64)
            inputs[1].set_shared_memory(name, 64, offset=32)  # 32 + 64 > 64
            with pytest.raises(InferenceServerException) as e:
                c.infer("simple", inputs)
            assert "outside" in e.value.message(), e.value.message()

            inputs[1] = mod.InferInput("INPUT1", [1, 16], "INT32")
            inputs[1].set_shared_memory(name, 64)
            outputs = [mod.InferRequestedOutput("OUTPUT0")]
            outputs[0].set_shared_memory(name, 16)  # the output needs 64 bytes
            with pytest.raises(InferenceServerException) as e:
                c.infer("simple", inputs, outputs=outputs)
            assert "at least 64 bytes" in e.value.message(), e.value.message()
            assert c.is_server_live()
        finally:
            c.unregister_system_shared_memory(name)
