"""Bad requests get the right status and an `{"error": ...}` body naming the
problem, and leave the server healthy; plus the less common request forms
(gzip/deflate bodies, raw binary body, nested JSON, binary outputs)."""

import gzip
import json
import struct
import zlib

import numpy as np
import pytest

from helpers import (binary_request, check_simple, copy_models, decode_response, get,
                     infer_path, json_tensor, post, post_binary, raw_http, simple_inputs,
                     simple_json)
from server import start_server


@pytest.fixture(scope="module")
def server(conformance_target):
    """This suite runs against the node and through the gateway, all-in-one
    and split (see conftest.conformance_target)."""
    return conformance_target


MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def still_healthy(request):
    """After every test: the server that test used is live and serves a valid request."""
    yield
    s = request.getfixturevalue("limit_server") if "limit_server" in request.fixturenames \
        else request.getfixturevalue("server")
    assert get(s.http_port, "/v2/health/live").status == 200, s.describe(40)
    doc, ins = simple_json(2, seed=99)
    check_simple(post(s.http_port, infer_path("simple"), doc), ins)


def expect_error(resp, status, *words):
    """Asserts the status, an `{"error": ...}` body, and each word in the message."""
    if isinstance(status, int):
        status = (status,)
    assert resp.status in status, f"expected {status}, got {resp}"
    msg = resp.error()
    for w in words:
        assert w.lower() in msg.lower(), f"error message {msg!r} does not mention {w!r}"
    return msg


def t(name, datatype, shape, data):
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


ONES = [1] * 16


# ---------------------------------------------------------- inputs / shapes
def test_missing_input(server):
    r = post(server.http_port, infer_path("simple"), {"inputs": [t("INPUT0", "INT32", [1, 16], ONES)]})
    expect_error(r, 400, "INPUT1")


def test_unknown_input(server):
    doc = {"inputs": [t("INPUT0", "INT32", [1, 16], ONES), t("INPUT1", "INT32", [1, 16], ONES),
                      t("BOGUS_INPUT", "INT32", [1, 16], ONES)]}
    expect_error(post(server.http_port, infer_path("simple"), doc), 400, "BOGUS_INPUT")


def test_duplicate_input(server):
    doc = {"inputs": [t("INPUT0", "INT32", [1, 16], ONES), t("INPUT0", "INT32", [1, 16], ONES),
                      t("INPUT1", "INT32", [1, 16], ONES)]}
    expect_error(post(server.http_port, infer_path("simple"), doc), 400, "INPUT0")


def test_wrong_datatype(server):
    doc = {"inputs": [t("INPUT0", "FP32", [1, 16], [1.0] * 16), t("INPUT1", "INT32", [1, 16], ONES)]}
    msg = expect_error(post(server.http_port, infer_path("simple"), doc), 400, "INPUT0")
    assert "FP32" in msg or "INT32" in msg, msg


def test_unknown_datatype(server):
    doc = {"inputs": [t("INPUT0", "INT33", [1, 16], ONES), t("INPUT1", "INT32", [1, 16], ONES)]}
    expect_error(post(server.http_port, infer_path("simple"), doc), 400, "INT33")


@pytest.mark.parametrize("shape,count", [
    ([1, 16, 1], 16),   # wrong rank
    ([16], 16),         # batch dim missing
    ([1, 15], 15),      # wrong fixed dim
    ([1, -16], 16),     # negative dim
    ([-1, 16], 16),     # -1 is only a wildcard in metadata
], ids=["rank", "no-batch", "fixed-dim", "negative", "minus-one"])
def test_bad_shape(server, shape, count):
    doc = {"inputs": [t("INPUT0", "INT32", shape, [1] * count), t("INPUT1", "INT32", [1, 16], ONES)]}
    expect_error(post(server.http_port, infer_path("simple"), doc), 400, "INPUT0")


@pytest.mark.parametrize("shape", [[1, 2**62], [1, 2**63 - 1], [2**31, 2**33], [1, 2**64]],
                         ids=["2^62", "i64max", "product-overflow", "u64-overflow"])
def test_huge_dims_overflow(server, shape):
    # binary form: a header claiming an absurd shape with 4 bytes of data
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": shape,
                                     "parameters": {"binary_data_size": 4}}]}).encode()
    r = post(server.http_port, infer_path("identity_fp32"), header + b"\0\0\0\0",
             headers={"Inference-Header-Content-Length": str(len(header))})
    expect_error(r, 400)
    # JSON form
    r = post(server.http_port, infer_path("identity_fp32"),
             {"inputs": [t("INPUT0", "FP32", shape, [1.0])]})
    expect_error(r, 400)


def test_batch_above_max_batch_size(server):
    doc, _ = simple_json(9)  # simple has max_batch_size 8
    expect_error(post(server.http_port, infer_path("simple"), doc), 400, "batch")


def test_nonbatching_model_rejects_other_shape(server):
    doc, _ = simple_json(2)  # simple_nobatch is fixed [1,16]
    expect_error(post(server.http_port, infer_path("simple_nobatch"), doc), 400, "INPUT0")


def test_empty_batch_is_rejected_or_empty(server):
    doc = {"inputs": [t("INPUT0", "INT32", [0, 16], []), t("INPUT1", "INT32", [0, 16], [])]}
    r = post(server.http_port, infer_path("simple"), doc)
    if r.status == 200:
        assert decode_response(r)["OUTPUT0"].shape == (0, 16)
    else:
        expect_error(r, 400)


# ------------------------------------------------------------- data sizes
def test_json_data_count_mismatch(server):
    doc = {"inputs": [t("INPUT0", "INT32", [1, 16], [1] * 15), t("INPUT1", "INT32", [1, 16], ONES)]}
    expect_error(post(server.http_port, infer_path("simple"), doc), 400, "INPUT0")


def test_json_data_wrong_element_type(server):
    doc = {"inputs": [t("INPUT0", "INT32", [1, 16], ["x"] * 16), t("INPUT1", "INT32", [1, 16], ONES)]}
    expect_error(post(server.http_port, infer_path("simple"), doc), 400, "INPUT0")


def test_binary_size_not_shape_times_datatype(server):
    ins = simple_inputs(1)
    raw0, raw1 = ins["INPUT0"].tobytes()[:60], ins["INPUT1"].tobytes()
    header = json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 60}},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
    ]}).encode()
    r = post(server.http_port, infer_path("simple"), header + raw0 + raw1,
             headers={"Inference-Header-Content-Length": str(len(header))})
    expect_error(r, 400, "INPUT0")


def test_binary_sizes_exceed_body(server):
    ins = simple_inputs(1)
    header = json.dumps({"inputs": [
        {"name": n, "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}}
        for n in ("INPUT0", "INPUT1")]}).encode()
    r = post(server.http_port, infer_path("simple"), header + ins["INPUT0"].tobytes(),
             headers={"Inference-Header-Content-Length": str(len(header))})
    expect_error(r, 400)


def test_trailing_bytes_after_binary_inputs(server):
    ins = simple_inputs(1)
    body, hlen = binary_request(ins)
    r = post(server.http_port, infer_path("simple"), body + b"extra",
             headers={"Inference-Header-Content-Length": str(hlen)})
    expect_error(r, 400)


def test_bytes_element_length_overruns(server):
    raw = struct.pack("<I", 1000) + b"abc"  # claims 1000 bytes, has 3
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    r = post(server.http_port, infer_path("identity_bytes"), header + raw,
             headers={"Inference-Header-Content-Length": str(len(header))})
    expect_error(r, 400, "INPUT0")


# ------------------------------------------------------------- body format
@pytest.mark.parametrize("body", [b'{"inputs": [', b"not json at all", b"[1,2,3]",
                                  b'{"inputs": "INPUT0"}', b""],
                         ids=["truncated", "garbage", "array", "inputs-not-list", "empty"])
def test_malformed_json(server, body):
    r = post(server.http_port, infer_path("simple"), body, headers={"Content-Type": "application/json"})
    expect_error(r, 400)


def test_header_length_larger_than_body(server):
    doc, _ = simple_json(1)
    body = json.dumps(doc).encode()
    r = post(server.http_port, infer_path("simple"), body,
             headers={"Inference-Header-Content-Length": str(len(body) + 100)})
    expect_error(r, 400)


@pytest.mark.parametrize("value", ["abc", "-5"])
def test_header_length_not_a_length(server, value):
    doc, _ = simple_json(1)
    r = post(server.http_port, infer_path("simple"), json.dumps(doc).encode(),
             headers={"Inference-Header-Content-Length": value})
    expect_error(r, 400)


def test_bad_gzip_body(server):
    r = post(server.http_port, infer_path("simple"), b"\x1f\x8b not really gzip",
             headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    expect_error(r, 400)


# ------------------------------------------------------- models / versions
def test_unknown_model(server):
    doc, _ = simple_json(1)
    expect_error(post(server.http_port, infer_path("no_such_model"), doc), 404, "no_such_model")
    expect_error(get(server.http_port, "/v2/models/no_such_model"), 404, "no_such_model")
    expect_error(get(server.http_port, "/v2/models/no_such_model/config"), 404)


def test_unknown_version(server):
    doc, _ = simple_json(1)
    expect_error(post(server.http_port, infer_path("simple", 99), doc), 404, "99")
    expect_error(get(server.http_port, "/v2/models/simple/versions/99"), 404)


def test_non_numeric_version(server):
    doc, _ = simple_json(1)
    expect_error(post(server.http_port, infer_path("simple", "abc"), doc), (400, 404))


@pytest.mark.parametrize("path", [
    "/v2/models/..%2F..%2Fetc/infer", "/v2/models/..%2F..%2Fetc%2Fpasswd",
    "/v2/models/../../etc/infer", "/v2/models//infer", "/v2/models/%00/infer",
], ids=["encoded-dotdot", "encoded-passwd", "dotdot", "empty", "nul"])
def test_invalid_model_names(server, path):
    if path.endswith("/infer"):
        r = post(server.http_port, path, simple_json(1)[0])
    else:
        r = get(server.http_port, path)
    expect_error(r, (400, 404))


def test_load_invalid_model_name_in_none_mode(server):
    r = post(server.http_port, "/v2/repository/models/..%2F..%2Fetc/load", {})
    assert 400 <= r.status < 500, str(r)
    r.error()


# ------------------------------------------------------------- body limit
@pytest.fixture(scope="module")
def limit_server(models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("limit") / "repo", ["simple", "identity_fp32"])
    s = start_server(repo, "--http-max-body-bytes", str(MiB))
    yield s
    s.stop()


def test_body_above_limit_is_413(limit_server):
    x = np.zeros((1, 600_000), dtype=np.float32)  # 2.4 MB > 1 MiB
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 600_000],
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    body = header + x.tobytes()
    head = (f"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
            f"Inference-Header-Content-Length: {len(header)}\r\nConnection: close\r\n\r\n").encode()
    status, resp_body = raw_http(limit_server.http_port, head, body)
    assert status == 413, resp_body[:300]
    assert b'"error"' in resp_body, resp_body[:300]


def test_chunked_body_above_limit_is_413(limit_server):
    chunk = b"[" + b"1," * (MiB // 2) + b"1]"
    head = (b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    status, _ = raw_http(limit_server.http_port, head, body)
    assert status == 413


def test_gzip_bomb_above_limit_is_rejected(limit_server):
    doc = {"inputs": [t("INPUT0", "FP32", [1, 700_000], [0.0] * 700_000)]}  # ~2.8 MB of JSON
    r = post(limit_server.http_port, infer_path("identity_fp32"), gzip.compress(json.dumps(doc).encode()),
             headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    expect_error(r, (413, 400))


def test_body_just_under_limit_works(limit_server):
    x = np.arange(200_000, dtype=np.float32).reshape(1, -1)  # 800 kB
    out = decode_response(post_binary(limit_server.http_port, "identity_fp32", {"INPUT0": x}))
    np.testing.assert_array_equal(out["OUTPUT0"], x)


# --------------------------------------------------- valid, less common forms
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_body(server, encoding):
    doc, ins = simple_json(3, seed=5)
    raw = json.dumps(doc).encode()
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    r = post(server.http_port, infer_path("simple"), body,
             headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
    check_simple(r, ins)


def test_gzip_response_when_accepted(server):
    doc, ins = simple_json(2, seed=6)
    r = post(server.http_port, infer_path("simple"), doc, headers={"Accept-Encoding": "gzip"})
    assert r.status == 200, str(r)
    if r.headers.get("content-encoding") == "gzip":
        r.body = gzip.decompress(r.body)
    check_simple(r, ins)


def test_raw_binary_body_with_zero_header_length(server):
    x = np.linspace(-3, 3, 10, dtype=np.float32)
    r = post(server.http_port, infer_path("identity_fp32"), x.tobytes(),
             headers={"Inference-Header-Content-Length": "0",
                      "Content-Type": "application/octet-stream"})
    out = decode_response(r)["OUTPUT0"]
    assert out.shape == (1, 10), out.shape
    np.testing.assert_array_equal(out.reshape(-1), x)


def test_raw_binary_body_rejected_for_two_input_model(server):
    r = post(server.http_port, infer_path("simple"), b"\0" * 128,
             headers={"Inference-Header-Content-Length": "0"})
    expect_error(r, 400)


def test_nested_json_data(server):
    ins = simple_inputs(2, seed=8)
    doc = {"inputs": [{"name": n, "datatype": "INT32", "shape": [2, 16], "data": a.tolist()}
                      for n, a in ins.items()]}
    check_simple(post(server.http_port, infer_path("simple"), doc), ins)


def test_binary_data_output_parameter(server):
    doc, ins = simple_json(2, seed=10)
    doc["parameters"] = {"binary_data_output": True}
    r = post(server.http_port, infer_path("simple"), doc)
    assert r.status == 200, str(r)
    hlen = int(r.headers["inference-header-content-length"])
    header = json.loads(r.body[:hlen])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [128, 128], header
    assert all("data" not in o for o in header["outputs"]), header
    assert len(r.body) == hlen + 256
    check_simple(r, ins)


def test_per_output_binary_flag(server):
    doc, ins = simple_json(1, seed=12)
    doc["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": True}},
                      {"name": "OUTPUT1", "parameters": {"binary_data": False}}]
    r = post(server.http_port, infer_path("simple"), doc)
    assert r.status == 200, str(r)
    header = json.loads(r.body[:int(r.headers["inference-header-content-length"])])
    outs = {o["name"]: o for o in header["outputs"]}
    assert outs["OUTPUT0"]["parameters"]["binary_data_size"] == 64
    assert outs["OUTPUT1"]["data"] == (ins["INPUT0"] - ins["INPUT1"]).reshape(-1).tolist()
    check_simple(r, ins)


def test_json_response_without_binary(server):
    doc, ins = simple_json(1, seed=13)
    r = post(server.http_port, infer_path("simple", 1), doc)
    assert r.status == 200 and "inference-header-content-length" not in r.headers, str(r)
    body = r.json()
    assert body["model_name"] == "simple" and body["model_version"] == "1"
    check_simple(r, ins)


def test_mixed_binary_and_json_inputs(server):
    ins = simple_inputs(1, seed=14)
    raw = ins["INPUT1"].tobytes()
    header = json.dumps({"inputs": [
        json_tensor("INPUT0", ins["INPUT0"]),
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": len(raw)}},
    ]}).encode()
    r = post(server.http_port, infer_path("simple"), header + raw,
             headers={"Inference-Header-Content-Length": str(len(header))})
    check_simple(r, ins)


# ------------------------------------------------------------------- gRPC
def test_grpc_wrong_datatype_and_batch_too_big(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        f = np.ones((1, 16), np.float32)
        inputs = [grpcclient.InferInput(n, [1, 16], "FP32").set_data_from_numpy(f)
                  for n in ("INPUT0", "INPUT1")]
        with pytest.raises(InferenceServerException) as e:
            c.infer("simple", inputs, client_timeout=60)
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT", str(e.value)
        assert "INPUT0" in e.value.message() or "INPUT1" in e.value.message()

        ins = simple_inputs(9)
        inputs = [grpcclient.InferInput(n, [9, 16], "INT32").set_data_from_numpy(a) for n, a in ins.items()]
        with pytest.raises(InferenceServerException) as e:
            c.infer("simple", inputs, client_timeout=60)
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT", str(e.value)
        assert "batch" in e.value.message().lower()

        ins = simple_inputs(1)
        inputs = [grpcclient.InferInput(n, [1, 16], "INT32").set_data_from_numpy(a) for n, a in ins.items()]
        with pytest.raises(InferenceServerException) as e:
            c.infer("simple", inputs, model_version="99", client_timeout=60)
        assert e.value.status() == "StatusCode.NOT_FOUND", str(e.value)
