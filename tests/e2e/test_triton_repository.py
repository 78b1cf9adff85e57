"""A Triton model repository (config.pbtxt instead of config.toml) is served
unchanged, its settings honoured."""

import shutil

import numpy as np
import tritonclient.http as httpclient

CONFIG_PBTXT = """
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [
  { name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_INT32, dims: [ 16 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ 16 ] },
  { name: "OUTPUT1", data_type: TYPE_INT32, dims: [ 16 ] }
]
instance_group [ { count: 2, kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 2, 4 ]
  max_queue_delay_microseconds: 300
  default_queue_policy { max_queue_size: 32 }
}
model_warmup [ { name: "unused" batch_size: 1 } ]
"""


def test_config_pbtxt_is_read_and_honoured(tmp_path, models_repo, make_server):
    repo = tmp_path / "triton_repo"
    (repo / "simple" / "1").mkdir(parents=True)
    shutil.copy(models_repo / "simple" / "1" / "model.onnx", repo / "simple" / "1" / "model.onnx")
    (repo / "simple" / "config.pbtxt").write_text(CONFIG_PBTXT)
    server = make_server(repo)
    client = httpclient.InferenceServerClient(server.http_url)
    config = client.get_model_config("simple")
    assert config["max_batch_size"] == 4
    assert config["dynamic_batching"]["preferred_batch_size"] == [2, 4]
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 32
    assert config["instance_group"][0]["count"] == 2
    a = np.arange(64, dtype=np.int32).reshape(4, 16)
    b = np.ones((4, 16), dtype=np.int32)
    inputs = [httpclient.InferInput("INPUT0", [4, 16], "INT32"), httpclient.InferInput("INPUT1", [4, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    too_big = [httpclient.InferInput("INPUT0", [5, 16], "INT32"), httpclient.InferInput("INPUT1", [5, 16], "INT32")]
    too_big[0].set_data_from_numpy(np.zeros((5, 16), dtype=np.int32))
    too_big[1].set_data_from_numpy(np.zeros((5, 16), dtype=np.int32))
    try:
        client.infer("simple", too_big)
        raise AssertionError("batch 5 accepted by a max_batch_size 4 model")
    except Exception as err:  # tritonclient raises InferenceServerException
        assert "batch" in str(err)
