"""`POST /v1/models/{model}:predict` in both topologies: the gateway calls
the features role (entity lookup + tabular assembly; image decode and
resize) and then inference, and post-processes per the model's declared
pipeline (`[gateway.pipelines.<model>]`)."""

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from PIL import Image

from helpers import copy_models, post
from topology import TOPOLOGIES, start_topology

FEATURES = [f"f{i}" for i in range(50)]
FROM_VIEW = FEATURES[:10]  # looked up by user_id; the rest come with the request
COLORS = ["red", "green", "blue"]


def write_color_model(repo):
    """`colors`: [N,3,32,32] image -> per-channel mean logits [N,3]."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    node = helper.make_node("ReduceMean", ["input"], ["logits"], axes=[2, 3], keepdims=0)
    model = helper.make_model(helper.make_graph([node], "colors", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (repo / "colors" / "1").mkdir(parents=True)
    onnx.save(model, str(repo / "colors" / "1" / "model.onnx"))
    (repo / "colors" / "config.toml").write_text("\n".join([
        "max_batch_size = 8", "", "[[input]]", 'name = "input"', 'data_type = "TYPE_FP32"',
        "dims = [3, 32, 32]", "", "[[output]]", 'name = "logits"', 'data_type = "TYPE_FP32"',
        "dims = [3]", ""]))


def write_length_model(repo):
    """`text_len`: (input_ids, attention_mask, token_type_ids) [N,L] -> tokens per text [N,1]."""
    names = ["input_ids", "attention_mask", "token_type_ids"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", "L"]) for n in names]
    y = helper.make_tensor_value_info("length", TensorProto.FLOAT, ["N", 1])
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["mask"], ["length"], axes=[1], keepdims=1)]
    model = helper.make_model(helper.make_graph(nodes, "text_len", inputs, [y]),
                              opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    (repo / "text_len" / "1").mkdir(parents=True)
    onnx.save(model, str(repo / "text_len" / "1" / "model.onnx"))
    lines = ["max_batch_size = 8", ""]
    for n in names:
        lines += ["[[input]]", f'name = "{n}"', 'data_type = "TYPE_INT64"', "dims = [-1]", ""]
    lines += ["[[output]]", 'name = "length"', 'data_type = "TYPE_FP32"', "dims = [1]", ""]
    (repo / "text_len" / "config.toml").write_text("\n".join(lines))


def write_tokenizer(path):
    """A word-level tokenizer.json with [CLS] ... [SEP] around each text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "mlserve": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def predict_repo(models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("predict_models"), ["tabular"])
    write_color_model(repo)
    # The same model under a name whose pipeline only the registry declares.
    import shutil
    shutil.copytree(repo / "colors", repo / "colors_reg")
    write_length_model(repo)
    write_tokenizer(repo / "tokenizer.json")
    return repo


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topo(request, predict_repo, tmp_path_factory):
    env = {
        "MLSERVE_GATEWAY__PIPELINES__TABULAR__OUTPUT": "probabilities",
        "MLSERVE_GATEWAY__PIPELINES__TABULAR__POSTPROCESS": "probabilities_topk",
        "MLSERVE_GATEWAY__PIPELINES__TABULAR__TOP_K": "2",
        "MLSERVE_GATEWAY__PIPELINES__TABULAR__LABELS": '["negative", "positive"]',
        "MLSERVE_GATEWAY__PIPELINES__COLORS__POSTPROCESS": "softmax_topk",
        "MLSERVE_GATEWAY__PIPELINES__COLORS__TOP_K": "1",
        "MLSERVE_GATEWAY__PIPELINES__COLORS__LABELS": '["red", "green", "blue"]',
        "MLSERVE_GATEWAY__PIPELINES__TEXT_LEN__POSTPROCESS": "regression",
    }
    t = start_topology(request.param, predict_repo, tmp_path_factory.mktemp("predict_data"),
                       env=env, features=True)
    yield t
    t.stop()


def ok(resp):
    assert resp.status == 200, str(resp)
    return resp.json()


@pytest.fixture(scope="module")
def user_rows(topo, predict_repo):
    """Defines `user_stats` (f0..f9 by user_id), pushes two users online,
    and registers the tabular and image pipelines with the features role."""
    port = topo.features.http_port
    ok(post(port, "/v1/features/apply", {
        "entities": [{"name": "user", "join_keys": ["user_id"], "value_type": "int64"}],
        "feature_views": [{"name": "user_stats", "entities": ["user"], "ttl_secs": 86400, "online": True,
                           "fields": [{"name": f, "dtype": "float64"} for f in FROM_VIEW]}]}))
    rng = np.random.default_rng(11)
    rows = {uid: rng.standard_normal(50).round(3) for uid in (1, 2)}
    now = int(time.time() * 1e6)
    ok(post(port, "/v1/features/push", {"feature_view": "user_stats", "rows": [
        {"values": {"user_id": uid, **{f: float(v[i]) for i, f in enumerate(FROM_VIEW)}}, "event_ts": now}
        for uid, v in rows.items()]}))
    features = [{"name": f"user_stats:{f}", "missing": "error"} for f in FROM_VIEW]
    features += [{"name": f, "missing": "default", "default": 0} for f in FEATURES[10:]]
    ok(post(port, "/v1/features/pipelines", {"model": "tabular", "kind": "tabular", "spec": {
        "kind": "tabular", "output": "input", "features": features}}))
    ok(post(port, "/v1/features/pipelines", {"model": "colors", "kind": "image", "spec": {
        "kind": "image", "output": "input", "image": {"resize": 32, "crop": [32, 32]}}}))
    ok(post(port, "/v1/features/pipelines", {"model": "colors_reg", "kind": "image", "spec": {
        "kind": "image", "output": "input", "image": {"resize": 32, "crop": [32, 32]}}}))
    ok(post(port, "/v1/features/pipelines", {"model": "text_len", "kind": "text", "spec": {
        "kind": "text", "text": {"tokenizer": str(predict_repo / "tokenizer.json"), "max_length": 8}}}))
    return rows


def reference_probabilities(models_repo, x):
    sess = ort.InferenceSession(str(Path(models_repo) / "tabular" / "1" / "model.onnx"))
    return sess.run(["probabilities"], {"input": x.astype(np.float32)})[0]


def test_predict_tabular_with_entity_keys_and_request_values(topo, user_rows, predict_repo):
    port = topo.gateway.gateway_http_port
    request_rows = []
    expected = []
    for uid, v in user_rows.items():
        request_rows.append({"user_id": uid, **{f: float(v[i]) for i, f in enumerate(FEATURES) if i >= 10}})
        expected.append(v)
    answer = ok(post(port, "/v1/models/tabular:predict", {"rows": request_rows}))
    assert answer["model_name"] == "tabular" and answer["model_version"] == "1"
    probs = reference_probabilities(predict_repo, np.array(expected, dtype=np.float32))
    assert len(answer["predictions"]) == 2
    for pred, p in zip(answer["predictions"], probs):
        top = pred["top_k"]
        assert len(top) == 2
        assert top[0]["label"] == ["negative", "positive"][int(np.argmax(p))]
        assert abs(top[0]["score"] - float(np.max(p))) < 1e-5
        assert abs(top[0]["score"] + top[1]["score"] - 1.0) < 1e-5

    # KServe's v1 name for the rows answers the same.
    same = ok(post(port, "/v1/models/tabular:predict", {"instances": request_rows}))
    assert same["predictions"] == answer["predictions"]

    # An unknown entity with missing="error" is a 400 naming the feature.
    r = post(port, "/v1/models/tabular:predict", {"rows": [{"user_id": 999}]})
    assert r.status == 400, r
    assert "user_stats" in r.error()


def png(color):
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="PNG")
    return buf.getvalue()


def test_predict_image_base64_and_multipart(topo, user_rows):
    port = topo.gateway.gateway_http_port
    images = [png((250, 10, 10)), png((10, 240, 20)), png((5, 5, 230))]
    answer = ok(post(port, "/v1/models/colors:predict",
                     {"images": [base64.b64encode(i).decode() for i in images]}))
    assert [p["top_k"][0]["label"] for p in answer["predictions"]] == COLORS
    assert all(0.33 < p["top_k"][0]["score"] <= 1.0 for p in answer["predictions"])

    boundary = "mlserveBoundary7"
    body = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{i}.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n".encode() + img + b"\r\n" for i, img in enumerate(images[::-1]))
    body += f"--{boundary}--\r\n".encode()
    r = post(port, "/v1/models/colors:predict", body,
             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert [p["top_k"][0]["label"] for p in ok(r)["predictions"]] == COLORS[::-1]

    r = post(port, "/v1/models/colors:predict", {"image": base64.b64encode(b"not an image").decode()})
    assert r.status == 400, r
    r.error()


def test_predict_text(topo, user_rows):
    port = topo.gateway.gateway_http_port
    answer = ok(post(port, "/v1/models/text_len:predict",
                     {"texts": ["hello world", "mlserve", "hello unknown words here and more words"]}))
    # [CLS] + words + [SEP], truncated to max_length 8.
    assert [p["value"] for p in answer["predictions"]] == [4.0, 3.0, 8.0]
    answer = ok(post(port, "/v1/models/text_len:predict", {"text": "hello"}))
    assert answer["predictions"] == [{"value": 3.0}]


def test_predict_pipeline_declared_in_the_registry(topo, user_rows):
    """Without [gateway.pipelines.colors_reg], the registered model's tag
    `mlserve.pipeline` declares it: all-in-one has the registry role; the
    split topology here runs no registry, so the model has no pipeline (404)."""
    port = topo.gateway.gateway_http_port
    body = {"image": base64.b64encode(png((5, 5, 230))).decode()}
    if topo.kind == "all_in_one":
        tag = json.dumps({"output": "logits", "postprocess": "softmax_topk", "top_k": 2,
                          "labels": ["R", "G", "B"]})
        created = post(topo.gateway.http_port, "/v1/registry/models",
                       {"name": "colors_reg", "tags": {"mlserve.pipeline": tag}})
        assert created.status == 201, created
        top = ok(post(port, "/v1/models/colors_reg:predict", body))["predictions"][0]["top_k"]
        assert [c["label"] for c in top][:1] == ["B"] and len(top) == 2
    else:
        r = post(port, "/v1/models/colors_reg:predict", body)
        assert r.status == 404 and "mlserve.pipeline" in r.error(), r


def test_predict_errors(topo, user_rows):
    port = topo.gateway.gateway_http_port
    for path, body, status in [
        ("/v1/models/nope:predict", {"rows": [{}]}, 404),
        ("/v1/models/tabular:predict", {}, 400),
        ("/v1/models/tabular:predict", b"{oops", 400),
        ("/v1/models/tabular:explain", {"rows": [{}]}, 404),
        # An unknown (or misspelt) field is refused, never ignored.
        ("/v1/models/tabular:predict", {"rows_json": [{}]}, 400),
        ("/v1/models/tabular:predict", {"rows": [{}], "instances": [{}]}, 400),
    ]:
        r = post(port, path, body, headers={"Content-Type": "application/json"})
        assert r.status == status, f"{path} {body}: {r}"
        r.error()
