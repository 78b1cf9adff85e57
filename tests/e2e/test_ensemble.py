"""Triton ensemble models (issue 13): a model directory whose config.pbtxt has
`platform: "ensemble"` and `ensemble_scheduling` steps, read unchanged from a
Triton repository (an empty `1/` directory, no model file), served with the
unchanged tritonclient over HTTP and gRPC, on the node and through the
gateway (all-in-one and split). The ensemble's outputs must equal
onnxruntime's run of its composing models in sequence."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto as TP, helper, numpy_helper
from tritonclient.utils import InferenceServerException

from server import start_server
from topology import start_topology

PROTOCOLS = ["http", "grpc"]

# model_a: OUTPUT = INPUT * 2 + 1; model_b: RELU = relu(X), SUM = sum(relu(X), axis 1).
MODEL_A_CONFIG = """
name: "model_a"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { }
"""

MODEL_B_CONFIG = """
name: "model_b"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "RELU" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "SUM" data_type: TYPE_FP32 dims: [ 1 ] }
]
"""

# Step 1 (model_a) feeds step 2 (model_b); step 3 (model_b on the raw input)
# depends on nothing but the ensemble input and runs beside them. Step 3's
# SUM output is not mapped: an unused output is fine.
PIPELINE_CONFIG = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "DOUBLED" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "ACTIVATED" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "TOTAL" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "RAW_RELU" data_type: TYPE_FP32 dims: [ 4 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "model_a"
      model_version: -1
      input_map { key: "INPUT" value: "IN" }
      output_map { key: "OUTPUT" value: "DOUBLED" }
    },
    {
      model_name: "model_b"
      model_version: -1
      input_map { key: "X" value: "DOUBLED" }
      output_map { key: "RELU" value: "ACTIVATED" }
      output_map { key: "SUM" value: "TOTAL" }
    },
    {
      model_name: "model_b"
      model_version: -1
      input_map { key: "X" value: "IN" }
      output_map { key: "RELU" value: "RAW_RELU" }
    }
  ]
}
"""

BROKEN_CONFIG = """
name: "broken_ensemble"
platform: "ensemble"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling {
  step [ { model_name: "missing_model" model_version: -1
           input_map { key: "INPUT" value: "IN" } output_map { key: "OUTPUT" value: "OUT" } } ]
}
"""

OUTPUTS = ["DOUBLED", "ACTIVATED", "TOTAL", "RAW_RELU"]


def onnx_model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def fp32(name, shape):
    return helper.make_tensor_value_info(name, TP.FLOAT, shape)


def model_a():
    inits = [numpy_helper.from_array(np.array(2, np.float32), "two"),
             numpy_helper.from_array(np.array(1, np.float32), "one")]
    nodes = [helper.make_node("Mul", ["INPUT", "two"], ["twice"]),
             helper.make_node("Add", ["twice", "one"], ["OUTPUT"])]
    return onnx_model(nodes, [fp32("INPUT", ["batch", 4])], [fp32("OUTPUT", ["batch", 4])], inits)


def model_b():
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Relu", ["X"], ["RELU"]),
             helper.make_node("ReduceSum", ["RELU", "axis1"], ["SUM"], keepdims=1)]
    outputs = [fp32("RELU", ["batch", 4]), fp32("SUM", ["batch", 1])]
    return onnx_model(nodes, [fp32("X", ["batch", 4])], outputs, inits)


def write_model(repo, name, config, model=None):
    version = repo / name / "1"
    version.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    if model is not None:
        onnx.save(model, str(version / "model.onnx"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ensemble") / "repo"
    write_model(repo, "model_a", MODEL_A_CONFIG, model_a())
    write_model(repo, "model_b", MODEL_B_CONFIG, model_b())
    # As Triton keeps it: an empty version directory, no model file.
    write_model(repo, "pipeline", PIPELINE_CONFIG)
    write_model(repo, "broken_ensemble", BROKEN_CONFIG)
    return repo


def reference(repo, x):
    """onnxruntime's run of the composing models in sequence."""
    def session(name):
        return ort.InferenceSession(str(repo / name / "1" / "model.onnx"),
                                    providers=["CPUExecutionProvider"])
    doubled = session("model_a").run(None, {"INPUT": x})[0]
    activated, total = session("model_b").run(None, {"X": doubled})
    raw_relu = session("model_b").run(None, {"X": x})[0]
    return {"DOUBLED": doubled, "ACTIVATED": activated, "TOTAL": total, "RAW_RELU": raw_relu}


@pytest.fixture(scope="module", params=["node", "all_in_one", "split"])
def target(request, repo, tmp_path_factory):
    """The node (explicit mode, loading only the ensemble: its composing
    models load with it), or a gateway in front of it in either topology."""
    if request.param == "node":
        s = start_server(repo, "--model-control-mode", "explicit", "--load-model", "pipeline")
        yield s
        s.stop()
        return
    topo = start_topology(request.param, repo, tmp_path_factory.mktemp(request.param),
                          inference_count=1)
    yield topo
    topo.stop()


def client_for(target, protocol):
    if protocol == "http":
        return httpclient.InferenceServerClient(target.http_url, network_timeout=60.0)
    return grpcclient.InferenceServerClient(target.grpc_url)


def infer(c, protocol, x, outputs=None):
    module = httpclient if protocol == "http" else grpcclient
    given = module.InferInput("IN", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    wanted = [module.InferRequestedOutput(name) for name in outputs] if outputs else None
    return c.infer("pipeline", [given], outputs=wanted)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_ensemble_equals_its_models_run_in_sequence(target, repo, protocol):
    x = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    expected = reference(repo, x)
    with client_for(target, protocol) as c:
        result = infer(c, protocol, x)
        for name in OUTPUTS:
            got = result.as_numpy(name)
            assert got is not None, f"no output {name}"
            assert got.shape == expected[name].shape, name
            np.testing.assert_allclose(got, expected[name], rtol=1e-6, err_msg=name)
        assert (expected["DOUBLED"] < 0).any(), "the input must exercise relu"
        only_total = infer(c, protocol, x, outputs=["TOTAL"])
        np.testing.assert_allclose(only_total.as_numpy("TOTAL"), expected["TOTAL"], rtol=1e-6)
        assert only_total.as_numpy("DOUBLED") is None, "only the asked-for output comes back"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metadata_config_readiness_and_statistics(target, protocol):
    with client_for(target, protocol) as c:
        assert c.is_model_ready("pipeline")
        metadata = c.get_model_metadata("pipeline")
        config = c.get_model_config("pipeline")
        if protocol == "http":
            assert metadata["platform"] == "ensemble"
            assert metadata["inputs"] == [{"name": "IN", "datatype": "FP32", "shape": [-1, 4]}]
            assert [o["name"] for o in metadata["outputs"]] == OUTPUTS
            assert config["platform"] == "ensemble"
            steps = config["ensemble_scheduling"]["step"]
            assert [s["model_name"] for s in steps] == ["model_a", "model_b", "model_b"]
            assert steps[1]["output_map"] == {"RELU": "ACTIVATED", "SUM": "TOTAL"}
        else:
            assert metadata.platform == "ensemble"
            assert [(t.name, list(t.shape)) for t in metadata.inputs] == [("IN", [-1, 4])]
            assert [o.name for o in metadata.outputs] == OUTPUTS
            assert config.config.platform == "ensemble"
            steps = config.config.ensemble_scheduling.step
            assert [s.model_name for s in steps] == ["model_a", "model_b", "model_b"]
            assert dict(steps[0].input_map) == {"INPUT": "IN"}
        infer(c, protocol, np.ones((2, 4), np.float32))
        stats = c.get_inference_statistics("pipeline")
        if protocol == "http":
            success = stats["model_stats"][0]["inference_stats"]["success"]["count"]
        else:
            success = stats.model_stats[0].inference_stats.success.count
        assert success >= 1


@pytest.fixture(scope="module")
def explicit(repo):
    s = start_server(repo, "--model-control-mode", "explicit")
    yield s
    s.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_loading_an_ensemble_loads_its_models_and_a_broken_one_fails(explicit, protocol):
    with client_for(explicit, protocol) as c:
        with pytest.raises(InferenceServerException) as e:
            c.load_model("broken_ensemble")
        message = e.value.message()
        assert message.startswith("failed to load 'broken_ensemble'"), message
        assert "missing_model" in message, message
        c.load_model("pipeline")
        assert c.is_model_ready("model_a") and c.is_model_ready("model_b")
        assert c.is_model_ready("pipeline")


def test_an_ensemble_is_ready_only_while_its_models_are(explicit):
    with client_for(explicit, "grpc") as c:
        c.load_model("pipeline")
        c.unload_model("model_b")
        assert not c.is_model_ready("pipeline")
        with pytest.raises(InferenceServerException) as e:
            infer(c, "grpc", np.ones((1, 4), np.float32))
        assert "model_b" in e.value.message(), e.value.message()
        c.load_model("model_b")
        assert c.is_model_ready("pipeline")
        result = infer(c, "grpc", np.ones((1, 4), np.float32))
        np.testing.assert_allclose(result.as_numpy("TOTAL"), [[12.0]])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_that_does_not_fit_fails_typed(explicit, protocol):
    with client_for(explicit, protocol) as c:
        c.load_model("pipeline")
        with pytest.raises(InferenceServerException) as e:
            infer(c, protocol, np.ones((9, 4), np.float32))
        assert "batch-size must be <= 8" in e.value.message(), e.value.message()
        if protocol == "grpc":
            assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        else:
            assert e.value.status() == "400"
