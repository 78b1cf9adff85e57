"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

    .venv/bin/python fuzz/seeds.py

Deterministic: the same files every run (stale files of a target are removed
first, except `regression-*`: inputs that once crashed a target, kept by hand
beside the regression test of their fix). Each seed is a valid input, a near miss or a nasty one (bombs, deep
nesting, huge declared sizes, lengths past the end, truncations); the layout
of each target's input (a leading selector byte, a header line) is described
in its fuzz_targets/<target>.rs.
"""

import base64
import gzip
import hashlib
import hmac
import io
import json
import pathlib
import struct
import sys
import tomllib
import zlib

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tritonclient.grpc import service_pb2 as pb

ROOT = pathlib.Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
REPO = ROOT.parent


def write(target, seeds):
    """Writes `seeds` ({name: bytes}) as fuzz/corpus/<target>/<name>."""
    out = CORPUS / target
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if not old.name.startswith("regression-"):
            old.unlink()
    for name, data in seeds.items():
        if isinstance(data, str):
            data = data.encode()
        (out / name).write_bytes(data)


def js(value):
    return json.dumps(value, separators=(",", ":"))


# --- the v2 JSON request -------------------------------------------------------

def infer_json():
    return {
        "int32_nested": js({"inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 4], "data": [[0, 1, 2, 3]]},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}),
        "fp32_outputs": js({"id": "r1", "parameters": {"binary_data_output": True, "priority": 1},
                            "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2],
                                        "data": [0.5, -1e38, 3.4e38, 1e-45]}],
                            "outputs": [{"name": "y", "parameters": {"binary_data": False}},
                                        {"name": "z", "parameters": {"classification": 3}}]}),
        "every_type": js({"inputs": [
            {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
            {"name": "u8", "datatype": "UINT8", "shape": [2], "data": [0, 255]},
            {"name": "i8", "datatype": "INT8", "shape": [2], "data": [-128, 127]},
            {"name": "u64", "datatype": "UINT64", "shape": [1], "data": [18446744073709551615]},
            {"name": "i64", "datatype": "INT64", "shape": [1], "data": [-9223372036854775808]},
            {"name": "f16", "datatype": "FP16", "shape": [2], "data": [65504, 1e-8]},
            {"name": "f64", "datatype": "FP64", "shape": [1], "data": [1.7976931348623157e308]},
            {"name": "bf16", "datatype": "BF16", "shape": [1], "data": [1.5]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["caf\u00e9", ""]}]}),
        "data_before_datatype": '{"inputs":[{"data":[[1,2],[3,4]],"name":"x","shape":[2,2],"datatype":"INT16"}]}',
        "shared_memory": js({"inputs": [{"name": "x", "datatype": "FP32", "shape": [4],
                                         "parameters": {"shared_memory_region": "r",
                                                        "shared_memory_byte_size": 16}}]}),
        "huge_shape": js({"inputs": [{"name": "x", "datatype": "FP32",
                                      "shape": [4294967296, 4294967296, 4294967296], "data": [1]}]}),
        "huge_shape_bytes": js({"inputs": [{"name": "x", "datatype": "BYTES",
                                            "shape": [9223372036854775807], "data": ["a"]}]}),
        "negative_shape": js({"inputs": [{"name": "x", "datatype": "INT8", "shape": [-1, 2], "data": [1, 2]}]}),
        "count_mismatch": js({"inputs": [{"name": "x", "datatype": "INT8", "shape": [3], "data": [1, 2]}]}),
        "out_of_range": js({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [2], "data": [256, -1]}]}),
        "fp16_overflow": js({"inputs": [{"name": "x", "datatype": "FP16", "shape": [1], "data": [1e10]}]}),
        "deep_nesting": '{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":'
                        + "[" * 20000 + "1" + "]" * 20000 + "}]}",
        "deep_nesting_deferred": '{"inputs":[{"data":' + "[" * 20000 + "]" * 20000
                                 + ',"name":"x","datatype":"FP32","shape":[0]}]}',
        "deep_parameters": '{"parameters":{"a":' + '{"b":' * 5000 + "1" + "}" * 5000 + '},"inputs":[]}',
        "nan_literals": '{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[NaN,Infinity]}]}',
        "unicode_escapes": '{"inputs":[{"name":"\\ud800x","datatype":"BYTES","shape":[1],"data":["\\u0000\\udfff"]}]}',
        "duplicate_keys": '{"inputs":[{"name":"a","name":"b","datatype":"INT8","shape":[1],"shape":[2],"data":[1,2]}]}',
        "binary_size_without_header": js({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1],
                                                      "parameters": {"binary_data_size": 1}}]}),
        "classification_zero": js({"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": 0}}]}),
        "many_outputs": js({"inputs": [], "outputs": [{"name": str(i)} for i in range(300)]}),
        "empty": "",
        "not_json": "\xff\xfe{",
    }


# --- the binary tensor extension -------------------------------------------------

def infer_binary():
    def req(header, binary=b"", length=None):
        header = js(header).encode()
        n = len(header) if length is None else length
        return str(n).encode() + b"\n" + header + binary

    fp32 = np.arange(8, dtype="<f4").tobytes()
    bytes_elems = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0)
    two = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 4],
                       "parameters": {"binary_data_size": 32}},
                      {"name": "s", "datatype": "BYTES", "shape": [2],
                       "parameters": {"binary_data_size": len(bytes_elems)}}],
           "outputs": [{"name": "o", "parameters": {"binary_data": True}}]}
    one = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 4],
                       "parameters": {"binary_data_size": 32}}]}
    return {
        "two_inputs": req(two, fp32 + bytes_elems),
        "mixed_json_binary": req({"inputs": [
            {"name": "a", "datatype": "INT8", "shape": [2], "data": [1, 2]},
            {"name": "b", "datatype": "INT8", "shape": [2], "parameters": {"binary_data_size": 2}}]}, b"\x01\x02"),
        "header_past_body": req(one, fp32, length=100000),
        "header_length_huge": b"18446744073709551616\n" + js(one).encode() + fp32,
        "header_length_negative": b"-1\n" + js(one).encode() + fp32,
        "header_length_text": b" 12abc \n" + js(one).encode() + fp32,
        "header_cuts_json": req(one, fp32, length=10),
        "size_past_end": req({"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 4],
                                          "parameters": {"binary_data_size": 18446744073709551615}}]}, fp32),
        "size_short": req(one, fp32[:31]),
        "size_long": req(one, fp32 + b"\0"),
        "size_not_shape": req({"inputs": [{"name": "a", "datatype": "FP32", "shape": [3],
                                           "parameters": {"binary_data_size": 8}}]}, fp32[:8]),
        "size_and_data": req({"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": [1],
                                          "parameters": {"binary_data_size": 1}}]}, b"\x01"),
        "size_negative": req({"inputs": [{"name": "a", "datatype": "INT8", "shape": [1],
                                          "parameters": {"binary_data_size": -1}}]}, b"\x01"),
        "huge_shape_binary": req({"inputs": [{"name": "a", "datatype": "FP64",
                                              "shape": [2305843009213693952, 8],
                                              "parameters": {"binary_data_size": 0}}]}),
        "raw_fp32": b"0\n" + np.arange(12, dtype="<f4").tobytes(),
        "raw_int8": b"0\n" + bytes(range(13)),
        "raw_bytes": b"0\n" + b"hello",
        "raw_empty": b"0\n",
        "raw_odd": b"0\n" + b"\x01\x02\x03\x04\x05\x06\x07",
        "no_header": b"\n" + js(one).encode(),
    }


# --- gRPC ModelInfer ----------------------------------------------------------------

def grpc_infer():
    def tensor(name, datatype, shape, **contents):
        t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
        for field, values in contents.items():
            getattr(t.contents, field).extend(values)
        return t

    def req(pick, inputs, raw=(), outputs=(), params=None):
        r = pb.ModelInferRequest(model_name="m", id="1")
        r.inputs.extend(inputs)
        r.raw_input_contents.extend(raw)
        for name in outputs:
            r.outputs.add(name=name)
        for k, v in (params or {}).items():
            if isinstance(v, bool):
                r.parameters[k].bool_param = v
            elif isinstance(v, int):
                r.parameters[k].int64_param = v
            else:
                r.parameters[k].string_param = v
        return bytes([pick]) + r.SerializeToString()

    text = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 3) + b"abc"
    batch = [tensor("INPUT0", "FP32", [2, 4]), tensor("INPUT1", "INT64", [2, 3]), tensor("TEXT", "BYTES", [2, 1])]
    raw = [np.ones((2, 4), "<f4").tobytes(), np.arange(6, dtype="<i8").tobytes(), text]
    typed = [tensor("INPUT0", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4]),
             tensor("INPUT1", "INT64", [1, 2], int64_contents=[-1, 2**62]),
             tensor("TEXT", "BYTES", [1, 1], bytes_contents=[b"x"])]
    fixed = [tensor("HALF", "FP16", [2, 2]), tensor("FLAGS", "BOOL", [3]), tensor("PIXELS", "UINT8", [3])]
    fixed_raw = [np.ones(4, "<f2").tobytes(), b"\x01\x00\x01", b"\x00\x7f\xff"]
    return {
        "batched_raw": req(0, batch, raw, outputs=["OUTPUT0"], params={"priority": 1, "timeout": 1000}),
        "batched_typed": req(0, typed),
        "fixed_raw": req(1, fixed, fixed_raw),
        "fixed_typed": req(1, [tensor("HALF", "FP16", [2, 2], fp32_contents=[1, 2, 3, 4]),
                               tensor("FLAGS", "BOOL", [2], bool_contents=[True, False]),
                               tensor("PIXELS", "UINT8", [3], uint_contents=[0, 255, 256])]),
        "bool_not_01": req(1, fixed, [fixed_raw[0], b"\x02\x00\x01", fixed_raw[2]]),
        "raw_and_contents": req(0, typed, raw),
        "raw_count_mismatch": req(0, batch, raw[:2]),
        "bytes_length_past_end": req(0, batch, raw[:2] + [struct.pack("<I", 0xFFFFFFFF) + b"x" * 4]),
        "bytes_truncated_prefix": req(0, batch, raw[:2] + [text + b"\x01\x00"]),
        "batch_mismatch": req(0, [tensor("INPUT0", "FP32", [2, 4]), tensor("INPUT1", "INT64", [3, 1]),
                                  tensor("TEXT", "BYTES", [2, 1])],
                              [raw[0], np.arange(3, dtype="<i8").tobytes(), text]),
        "huge_shape": req(0, [tensor("INPUT0", "FP32", [2**62, 2**62]), batch[1], batch[2]], raw),
        "negative_shape": req(0, [tensor("INPUT0", "FP32", [-1, 4]), batch[1], batch[2]], raw),
        "duplicate_input": req(0, [batch[0], batch[0], batch[2]], [raw[0], raw[0], raw[2]]),
        "unknown_input": req(0, [tensor("NOPE", "FP32", [1])], [b"\0" * 4]),
        "wrong_type": req(0, [tensor("INPUT0", "FP64", [2, 4]), batch[1], batch[2]], raw),
        "unknown_output": req(0, batch, raw, outputs=["NOPE"]),
        "bad_priority": req(0, batch, raw, params={"priority": -5, "timeout": "soon"}),
        "empty": b"\x00",
        "varint_overflow": b"\x00\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        "length_past_end": b"\x00\x32\xff\xff\xff\x0f",
    }


# --- gzip and deflate bodies -----------------------------------------------------------

def body_decompress():
    # Selector byte: low 3 bits pick the coding (0 gzip, 1 x-gzip, 2 deflate,
    # 3 identity, 4 none, 5 br), bits 5..7 the limit (1 KiB << n).
    def sel(coding, limit_shift):
        return bytes([coding | limit_shift << 5])

    text = b"{\"inputs\": []} " * 40
    gz = gzip.compress(text, mtime=0)
    zl = zlib.compress(text)
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = raw.compress(text) + raw.flush()
    bomb = gzip.compress(b"\0" * (4 << 20), compresslevel=9, mtime=0)
    zbomb = zlib.compress(b"\0" * (4 << 20), 9)
    # A gzip whose members each inflate just under the limit, many times over.
    members = gzip.compress(b"a" * 1000, mtime=0) * 200
    bad_crc = bytearray(gz)
    bad_crc[-8] ^= 0xFF
    bad_adler = bytearray(zl)
    bad_adler[-1] ^= 0xFF
    return {
        "gzip": sel(0, 7) + gz,
        "x_gzip": sel(1, 7) + gz,
        "zlib": sel(2, 7) + zl,
        "bare_deflate": sel(2, 7) + raw,
        "identity": sel(3, 0) + text,
        "none": sel(4, 0) + b"plain",
        "unknown_coding": sel(5, 0) + gz,
        "gzip_bomb": sel(0, 7) + bomb,
        "zlib_bomb": sel(2, 3) + zbomb,
        "exactly_limit": sel(0, 0) + gzip.compress(b"x" * 1024, mtime=0),
        "one_past_limit": sel(0, 0) + gzip.compress(b"x" * 1025, mtime=0),
        "many_members": sel(0, 7) + members,
        "truncated_gzip": sel(0, 7) + gz[:-6],
        "bad_crc": sel(0, 7) + bytes(bad_crc),
        "bad_adler": sel(2, 7) + bytes(bad_adler),
        "gzip_trailing_garbage": sel(0, 7) + gz + b"garbage",
        "zlib_header_only": sel(2, 7) + b"\x78\x9c",
        "gzip_header_only": sel(0, 7) + b"\x1f\x8b\x08\x00",
        "empty_gzip": sel(0, 0) + gzip.compress(b"", mtime=0),
        "empty": sel(0, 0),
    }


# --- config.pbtxt ---------------------------------------------------------------------------

def pbtxt_config():
    text = """
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] } ]
output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] label_filename: "labels.txt" }
instance_group [ { count: 2, kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  default_queue_policy { max_queue_size: 64 timeout_action: REJECT allow_timeout_override: true }
  priority_levels: 2
  default_priority_level: 1
}
version_policy: { specific: { versions: [1, 3] } }
optimization { graph { level: 1 } }
model_warmup [ { name: "w" batch_size: 1 } ]
"""
    as_json = js({"name": "m", "maxBatchSize": "16",
                  "input": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": ["4"]}],
                  "dynamic_batching": {"maxQueueDelayMicroseconds": "100"},
                  "versionPolicy": {"latest": {"numVersions": 2}}})
    t = lambda s: b"\x00" + s.encode()
    j = lambda s: b"\x01" + s.encode()
    return {
        "triton": t(text),
        "minimal": t('name: "m"'),
        "no_batch": t("max_batch_size: 0\nversion_policy: { all: {} }"),
        "json": j(as_json),
        "json_empty": j("{}"),
        "huge_dims": t('input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 9223372036854775807, -9223372036854775808 ] } ]'),
        "huge_batch": t("max_batch_size: 2147483647"),
        "queue_overflow": t("dynamic_batching { max_queue_delay_microseconds: 18446744073709551615 "
                            "default_queue_policy { default_timeout_microseconds: 18446744073709551615 } }"),
        "negative_count": t("instance_group [ { count: -1 } ]"),
        "other_platform": t('platform: "tensorflow_savedmodel"'),
        "unknown_field": t("no_such_field: 1"),
        "deep_nesting": t("optimization " + "{ graph " * 3000 + "}" * 3000),
        "deep_nesting_list": t("input [ " * 3000 + "]" * 3000),
        "unterminated": t('name: "m'),
        "wrong_type": t('max_batch_size: "eight"'),
        "json_deep": j('{"input":' + "[" * 5000 + "]" * 5000 + "}"),
        "json_wrong": j('{"maxBatchSize": "-1", "dims": null}'),
    }


# --- the ONNX walker --------------------------------------------------------------------------

def onnx_walk():
    def model(graph, **kw):
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **kw)
        return m.SerializeToString()

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    plain = model(graph)

    ext = onnx.TensorProto()
    ext.CopyFrom(w)
    ext.ClearField("raw_data")
    ext.data_location = TensorProto.EXTERNAL
    for k, v in [("location", "weights.bin"), ("offset", "0"), ("length", "64")]:
        entry = ext.external_data.add()
        entry.key, entry.value = k, v
    external = model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [ext]))
    escape = external.replace(b"weights.bin", b"../../etc/x")

    # Subgraphs nested inside If nodes' attributes.
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [y])
    inner = leaf
    for _ in range(30):
        node = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=leaf)
        inner = helper.make_graph([node], "inner", [], [y])
    nested = model(helper.make_graph(inner.node, "g", [x], [y]))

    no_graph = helper.make_model(graph).SerializeToString()[:4]
    # Field 7 (graph), wire type 2, with a length far past the end.
    long_len = b"\x08\x08\x3a\xff\xff\xff\xff\x0f"
    # A varint of eleven bytes.
    long_varint = b"\x08" + b"\xff" * 10 + b"\x01"
    # Graph nested in itself as an unknown group-ish field many levels deep.
    deep = b""
    for _ in range(2000):
        deep = b"\x3a" + encode_varint(len(deep)) + deep
    return {
        "matmul.onnx": plain,
        "external_data.onnx": external,
        "external_escape.onnx": escape,
        "nested_if.onnx": nested,
        "truncated.onnx": plain[: len(plain) // 2],
        "no_graph.onnx": no_graph,
        "ir_only": b"\x08\x07",
        "length_past_end": long_len,
        "long_varint": long_varint,
        "deep_graphs": b"\x08\x08" + deep,
        "wire_type_7": b"\x08\x08\x3f",
        "group_start": b"\x08\x08\x3b\x3c",
        "pickle": b"\x80\x04\x95" + b"\0" * 8,
        "elf": b"\x7fELF" + b"\0" * 60,
        "pe": b"MZ" + b"\0" * 58 + struct.pack("<I", 64) + b"PE\0\0",
        "pe_offset_huge": b"MZ" + b"\0" * 58 + struct.pack("<I", 0xFFFFFFFF),
        "empty": b"",
    }


def encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# --- images ---------------------------------------------------------------------------------------

def images():
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))

    def save(img, fmt, **kw):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    png = save(rgb, "PNG")
    jpeg = save(rgb, "JPEG", quality=80)
    seeds = {
        "rgb.png": png,
        "rgba.png": save(rgb.convert("RGBA"), "PNG"),
        "gray.png": save(rgb.convert("L"), "PNG"),
        "gray_alpha.png": save(rgb.convert("LA"), "PNG"),
        "palette.png": save(rgb.convert("P"), "PNG"),
        "bilevel.png": save(rgb.convert("1"), "PNG"),
        "gray16.png": save(Image.fromarray((rng.integers(0, 65535, (8, 8))).astype(np.uint16)), "PNG"),
        "one_pixel.png": save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"),
        "wide.png": save(Image.new("RGB", (300, 1), (9, 9, 9)), "PNG"),
        "rgb.jpg": jpeg,
        "progressive.jpg": save(rgb, "JPEG", progressive=True),
        "gray.jpg": save(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": save(rgb.convert("CMYK"), "JPEG"),
        "subsampled_420.jpg": save(rgb, "JPEG", subsampling=2),
        "tiny.jpg": save(Image.new("RGB", (1, 1)), "JPEG"),
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "signature_only.png": png[:8],
        "soi_only.jpg": jpeg[:3],
    }
    # PNG declaring 100000 x 100000 (IHDR's CRC recomputed).
    seeds["huge_declared.png"] = png_with_size(png, 100000, 100000)
    seeds["zero_width.png"] = png_with_size(png, 0, 24)
    # JPEG whose SOF declares 65535 x 65535.
    seeds["huge_declared.jpg"] = jpeg_with_size(jpeg, 65535, 65535)
    seeds["zero_height.jpg"] = jpeg_with_size(jpeg, 0, 32)
    # A PNG whose zlib data is a bomb: 4000 x 4000 declared, one small IDAT.
    seeds["idat_bomb.png"] = png_chunks(4000, 4000, zlib.compress(b"\0" * (4001 * 4000 * 3), 9))
    # Every spec variant gets a seed: the selector byte goes first.
    out = {}
    for i, (name, data) in enumerate(sorted(seeds.items())):
        out[name] = bytes([(i * 37) & 0xFF]) + data
    return out


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_chunks(width, height, idat):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_with_size(png, width, height):
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    return png[:8] + png_chunk(b"IHDR", bytes(ihdr)) + png[33:]


def jpeg_with_size(jpeg, width, height):
    data = bytearray(jpeg)
    i = 2
    while i + 4 < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            break
        i += 2 + length
    return bytes(data)


# --- predict bodies ---------------------------------------------------------------------------------

def predict_body():
    png = images()["rgb.png"][1:]
    ct = "multipart/form-data; boundary=XyZ"

    def multipart(parts, boundary="XyZ", end=True):
        out = b""
        for name, filename, data in parts:
            disp = f'Content-Disposition: form-data; name="{name}"'
            if filename:
                disp += f'; filename="{filename}"'
            out += f"--{boundary}\r\n{disp}\r\n\r\n".encode() + data + b"\r\n"
        if end:
            out += f"--{boundary}--\r\n".encode()
        return out

    line = lambda content_type, body: content_type.encode() + b"\n" + body
    return {
        "multipart": line(ct, multipart([("image", "a.png", png), ("text", None, b"hello"),
                                         ("row", None, b'{"user_id": "7"}')])),
        "multipart_unterminated": line(ct, multipart([("text", None, b"x")], end=False)),
        "multipart_no_name": line(ct, b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--\r\n"),
        "multipart_unknown_field": line(ct, multipart([("other", None, b"x")])),
        "multipart_not_utf8": line(ct, multipart([("text", None, b"\xff\xfe")])),
        "multipart_quoted_boundary": line('multipart/form-data; boundary="a b"',
                                          multipart([("text", None, b"x")], boundary="a b")),
        "multipart_long_boundary": line("multipart/form-data; boundary=" + "b" * 200,
                                        multipart([("text", None, b"x")], boundary="b" * 200)),
        "multipart_huge_header": line(ct, b"--XyZ\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\nx\r\n--XyZ--\r\n"),
        "multipart_no_boundary": line("multipart/form-data", b"--\r\n"),
        "multipart_many_parts": line(ct, multipart([("text", None, b"t")] * 300)),
        "json_rows": line("application/json", js({"rows": [{"user_id": "7", "amount": 3.5}]}).encode()),
        "json_instances": line("", js({"instances": [{"a": 1}, {"b": [1, 2]}]}).encode()),
        "json_images": line("application/json", js({"images": [base64.b64encode(png).decode()]}).encode()),
        "json_image_bad_base64": line("application/json", js({"image": "!!not base64!!"}).encode()),
        "json_texts": line("application/json", js({"texts": ["a", "b\u00e9"]}).encode()),
        "json_both": line("application/json", js({"row": {}, "rows": [{}]}).encode()),
        "json_unknown": line("application/json", js({"rowz": []}).encode()),
        "json_deep": line("application/json", b'{"rows":[{"a":' + b"[" * 20000 + b"]" * 20000 + b"}]}"),
    }


def registry_upload():
    # Selector byte: content type in the low 3 bits (0: boundary=XyZ, 1: quoted,
    # 2: after charset, 3: capitals, 4: multipart/mixed, 5: JSON, 6: none,
    # 7: the body's first line), the size of the body's pieces in the high 5.
    def sel(content_type, step=0):
        return bytes([content_type | step << 3])

    def part(name, data, filename=None, headers=b"", boundary="XyZ"):
        disp = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        return f"--{boundary}\r\n{disp}\r\n".encode() + headers + b"\r\n" + data + b"\r\n"

    def end(boundary="XyZ"):
        return f"--{boundary}--\r\n".encode()

    model = b"\x08\x07\x12\x04test:\x00"  # a few ONNX-ish protobuf bytes
    config = b'name: "m"\nplatform: "onnxruntime_onnx"\n'
    meta = js({"description": "v", "lineage": {"training_run": "r1", "code_version": "abc"},
               "metrics": {"auc": 0.9}, "tags": {"stage": "dev"}}).encode()
    meta_sha = js({"description": "two files", "sha256": {
        "model.onnx": hashlib.sha256(model).hexdigest(),
        "config.pbtxt": hashlib.sha256(config).hexdigest()}}).encode()
    one = part("metadata", meta, headers=b"Content-Type: application/json\r\n") + \
        part("file", model, "model.onnx", b"Content-Type: application/octet-stream\r\n") + end()
    two = part("metadata", meta_sha) + part("file", model, "model.onnx") + \
        part("file", config, "config.pbtxt") + end()
    return {
        "one_file": sel(0) + one,
        "two_files_sha256": sel(0) + two,
        "two_files_in_7_byte_pieces": sel(0, 7) + two,
        "one_file_byte_by_byte": sel(0, 1) + one,
        "quoted_boundary": sel(1, 3) + one,
        "charset_then_boundary": sel(2) + two,
        "capitals": sel(3, 16) + one,
        "no_metadata": sel(0) + part("file", model, "model.onnx") + end(),
        "no_metadata_no_filename": sel(0) + part("file", model) + end(),
        "wrong_part_name": sel(0) + part("metadata", meta) + part("model", model, "model.onnx") +
        part("file", config, "config.pbtxt") + end(),
        "metadata_after_file": sel(0) + part("file", model, "m.onnx") + part("metadata", meta) + end(),
        "metadata_twice": sel(0) + part("metadata", meta) + part("metadata", meta) + end(),
        "metadata_not_json": sel(0) + part("metadata", b"{description: v") + end(),
        "metadata_unknown_field": sel(0) + part("metadata", js({"descr": "v"}).encode()) + end(),
        "metadata_not_utf8": sel(0) + part("metadata", b'{"description":"\xff\xfe"}') + end(),
        "metadata_only": sel(0) + part("metadata", meta) + end(),
        "empty_body": sel(0),
        "only_end": sel(0) + end(),
        "empty_file": sel(0) + part("file", b"", "empty") + end(),
        "truncated_in_file": sel(0) + one[: len(one) - 20],
        "truncated_in_headers": sel(0) + b'--XyZ\r\nContent-Disposition: form-data; na',
        "unterminated": sel(0, 5) + part("metadata", meta) + part("file", model, "model.onnx"),
        "huge_declared_length": sel(0) + part(
            "file", model, "model.onnx", b"Content-Length: 18446744073709551615\r\n") + end(),
        "huge_part_header": sel(0) + b"--XyZ\r\nX-Pad: " + b"a" * 20000 +
        b'\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nx\r\n' + end(),
        "many_headers": sel(0) + part("file", b"x", "a", b"".join(
            f"X-H{i}: v\r\n".encode() for i in range(100))) + end(),
        "many_files": sel(0) + b"".join(part("file", b"x", f"f{i}") for i in range(300)) + end(),
        "preamble_epilogue": sel(0) + b"junk before\r\n" + one + b"junk after",
        "lf_only": sel(0) + one.replace(b"\r\n", b"\n"),
        "boundary_in_data": sel(0) + part("file", b"--XyZ-\r\n--Xy", "a") + end(),
        "path_traversal_name": sel(0) + part("file", b"x", "../../etc/passwd") + end(),
        "multipart_mixed": sel(4) + one,
        "json": sel(5) + js({"description": "v"}).encode(),
        "no_content_type": sel(6) + one,
        "first_line_boundary": sel(7) + b'multipart/form-data; boundary="a b"\n' +
        part("metadata", meta, boundary="a b") + part("file", model, "m", boundary="a b") + end("a b"),
        "first_line_long_boundary": sel(7) + b"multipart/form-data; boundary=" + b"b" * 200 + b"\n" +
        part("file", model, "m", boundary="b" * 200) + end("b" * 200),
        "first_line_no_boundary": sel(7) + b"multipart/form-data\n" + one,
    }


# --- CSV and Parquet ingest -----------------------------------------------------------------------

def features_csv():
    return {
        "valid": "user_id,ts,amount,count,active,city\n1,2024-01-01T00:00:00Z,3.5,2,true,Oslo\n"
                 "2,2024-01-02T00:00:00Z,,0,0,\n",
        "quotes": 'user_id,ts,city\n1,2024-01-01T00:00:00Z,"a, ""quoted""\nnewline"\n',
        "crlf": "user_id,ts,amount\r\n1,1704067200000000,1e308\r\n",
        "header_only": "user_id,ts\n",
        "unterminated_quote": 'user_id,ts,city\n1,2024-01-01T00:00:00Z,"open\n',
        "bad_types": "user_id,ts,amount,count,active\nx,yesterday,NaN,1.5,maybe\n",
        "huge_numbers": "user_id,ts,amount,count\n99999999999999999999,-9223372036854775808,-1e999,9223372036854775808\n",
        "field_count": "user_id,ts\n1\n1,2,3\n",
        "unknown_column": "user_id,ts,nope\n1,2024-01-01T00:00:00Z,x\n",
        "duplicate_column": "user_id,ts,city,city\n1,2024-01-01T00:00:00Z,a,b\n",
        "no_ts": "user_id,amount\n1,2\n",
        "bom": "\ufeffuser_id,ts\n1,2024-01-01T00:00:00Z\n",
        "times": "user_id,ts\n1,2024-02-30T25:61:61+99:99\n2,1970-01-01\n3,+275760-09-13T00:00:00Z\n4,-1\n",
        "empty": "",
        "blank_lines": "\n\n\nuser_id,ts\n\n",
    }


def features_parquet():
    ts = pa.array([1704067200000000, 1704153600000000], pa.timestamp("us"))
    base = {
        "user_id": pa.array([1, 2], pa.int64()),
        "ts": ts,
        "amount": pa.array([3.5, None], pa.float64()),
        "count": pa.array([1, None], pa.int64()),
        "active": pa.array([True, False]),
        "city": pa.array(["Oslo", None]),
    }

    def file(columns, **kw):
        buf = io.BytesIO()
        pq.write_table(pa.table(columns), buf, **kw)
        return buf.getvalue()

    valid = file(base)
    seeds = {
        "valid.parquet": valid,
        "ns.parquet": file({**base, "ts": pa.array([1, 2], pa.timestamp("ns"))}),
        "ms.parquet": file({**base, "ts": pa.array([1, 2], pa.timestamp("ms"))}),
        "ts_text.parquet": file({"user_id": base["user_id"], "ts": pa.array(["2024-01-01T00:00:00Z", "x"])}),
        "ts_int.parquet": file({"user_id": base["user_id"], "ts": pa.array([2**62, -(2**63)], pa.int64())}),
        "no_compression.parquet": file(base, compression="NONE"),
        "gzip.parquet": file(base, compression="GZIP"),
        "dictionary.parquet": file({"user_id": pa.array([1] * 50, pa.int64()),
                                    "ts": pa.array([0] * 50, pa.timestamp("us")),
                                    "city": pa.array(["a", "b"] * 25)}, use_dictionary=True),
        "v2_pages.parquet": file(base, data_page_version="2.0"),
        "nested.parquet": file({"user_id": base["user_id"], "ts": ts,
                                "city": pa.array([[1], [2, 3]], pa.list_(pa.int32()))}),
        "unknown_column.parquet": file({"user_id": base["user_id"], "ts": ts, "nope": pa.array([1, 2])}),
        "uint64.parquet": file({"user_id": pa.array([2**64 - 1, 0], pa.uint64()), "ts": ts}),
        "decimal.parquet": file({"user_id": base["user_id"], "ts": ts,
                                 "amount": pa.array([1, 2], pa.decimal128(10, 2))}),
        "truncated.parquet": valid[: len(valid) // 2] + valid[-8:],
        "footer_len_huge.parquet": valid[:-8] + struct.pack("<I", 0x7FFFFFFF) + b"PAR1",
        "magic_only": b"PAR1PAR1",
        "bad_magic": b"PAR1 nope",
        "empty": b"",
    }
    return seeds


# --- workflow definitions ---------------------------------------------------------------------------

def workflow_spec():
    churn = (REPO / "examples/churn/workflow.toml").read_text()
    small = """
name = "w"
[parameters]
n = 3
x = 0.5
flag = true
[[steps]]
name = "a"
command = ["true", "{{workflow.parameters.n}}"]
outputs.parameters = [{ name = "p", path = "p.txt" }]
retry = { limit = 2, backoff = "1s" }
timeout = "1m"
[[steps]]
name = "b"
dependencies = ["a"]
when = "{{steps.a.outputs.parameters.p}} >= 0.8"
command = ["sh", "-c", "echo {{steps.a.outputs.parameters.p}}"]
[[schedules]]
cron = "*/5 * * * *"
timezone = "Europe/Oslo"
"""
    t = lambda s: b"\x00" + s.encode()
    y = lambda s: b"\x01" + s.encode()
    as_yaml = yaml.safe_dump(tomllib.loads(small), sort_keys=False)
    churn_yaml = yaml.safe_dump(tomllib.loads(churn), sort_keys=False)
    return {
        "churn.toml": t(churn),
        "small.toml": t(small),
        "small.yaml": y(as_yaml),
        "churn.yaml": y(churn_yaml),
        "cycle.toml": t('name = "c"\n[[steps]]\nname = "a"\ndependencies = ["b"]\ncommand = ["true"]\n'
                        '[[steps]]\nname = "b"\ndependencies = ["a"]\ncommand = ["true"]\n'),
        "missing_dep.toml": t('name = "c"\n[[steps]]\nname = "a"\ndependencies = ["zz"]\ncommand = ["true"]\n'),
        "bad_cron.toml": t(small.replace("*/5 * * * *", "61 25 * * * * *").replace("Europe/Oslo", "Mars/Base")),
        "huge_timeout.toml": t('name = "w"\ntimeout = "18446744073709551615s"\n[[steps]]\nname = "a"\n'
                               'command = ["true"]\nretry = { limit = 4294967295, backoff = "9999999999999d" }\n'),
        "template_loop.toml": t('name = "w"\n[parameters]\na = "{{workflow.parameters.a}}"\n'
                                '[[steps]]\nname = "s"\ncommand = ["{{workflow.parameters.a}}{{"]\n'),
        "unknown_key.toml": t('name = "w"\nnope = 1\n'),
        "deep.toml": t('name = "w"\n[parameters]\nx = ' + "[" * 3000 + "]" * 3000 + "\n"),
        "yaml_anchors_bomb.yaml": y("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
                                    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
                                    "name: [*d, *d, *d, *d, *d, *d, *d, *d]\n"),
        "yaml_deep.yaml": y("name: w\nparameters: " + "[" * 3000 + "]" * 3000 + "\n"),
        "yaml_tags.yaml": y("name: !!binary aGVsbG8=\nsteps: !custom []\n"),
        "yaml_float.yaml": y("name: w\nparameters: {x: .nan, y: -.inf, z: 1e400}\n"),
        "empty": b"\x00",
    }


# --- JWT ------------------------------------------------------------------------------------------------

SECRET = b"fuzz-secret-fuzz-secret-fuzz-secret-0123"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def jwt(header, claims, key=SECRET):
    head = b64(js(header).encode()) + b"." + b64(js(claims).encode())
    return head + b"." + b64(hmac.new(key, head, hashlib.sha256).digest())


def jwt_verify():
    good = {"sub": "u1", "iss": "https://issuer.example", "aud": "mlserve", "exp": 4102444800,
            "scope": "infer predict registry.read"}
    hs = {"alg": "HS256", "typ": "JWT"}
    signed = lambda header, claims: b"\x01" + js(header).encode() + b"\n" + js(claims).encode()
    return {
        "valid": b"\x00" + jwt(hs, good),
        "wrong_key": b"\x00" + jwt(hs, good, key=b"k" * 32),
        "alg_none": b"\x00" + b64(b'{"alg":"none"}') + b"." + b64(js(good).encode()) + b".",
        "rs256_header": b"\x00" + b64(b'{"alg":"RS256","kid":"k1"}') + b"." + b64(js(good).encode()) + b".c2ln",
        "two_parts": b"\x00" + b"abc.def",
        "bad_base64": b"\x00" + b"!!!.???.***",
        "huge_header": b"\x00" + b64(js({"alg": "HS256", "x": "a" * 10000}).encode()) + b".e30.e30",
        "signed_valid": signed(hs, good),
        "signed_expired": signed(hs, {**good, "exp": 1}),
        "signed_nbf_future": signed(hs, {**good, "nbf": 4102444800}),
        "signed_exp_string": signed(hs, {**good, "exp": "tomorrow"}),
        "signed_exp_float": signed(hs, {**good, "exp": 1e300}),
        "signed_exp_negative": signed(hs, {**good, "exp": -9223372036854775808}),
        "signed_no_iss": signed(hs, {k: v for k, v in good.items() if k != "iss"}),
        "signed_aud_list": signed(hs, {**good, "aud": ["x", "mlserve"]}),
        "signed_scope_list": signed(hs, {**good, "scope": ["infer", 7]}),
        "signed_scope_object": signed(hs, {**good, "scope": {"a": 1}}),
        "signed_claims_array": signed(hs, [1, 2]),
        "signed_deep": b"\x01" + js(hs).encode() + b"\n" + b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}",
        "signed_header_crit": signed({**hs, "crit": ["exp"], "jku": "http://x"}, good),
        "signed_not_json": b"\x01" + js(hs).encode() + b"\n\xff\xfe",
    }


TARGETS = {
    "infer_json": infer_json,
    "infer_binary": infer_binary,
    "grpc_infer": grpc_infer,
    "body_decompress": body_decompress,
    "pbtxt_config": pbtxt_config,
    "onnx_walk": onnx_walk,
    "image_transform": images,
    "predict_body": predict_body,
    "registry_upload": registry_upload,
    "features_csv": features_csv,
    "features_parquet": features_parquet,
    "workflow_spec": workflow_spec,
    "jwt_verify": jwt_verify,
}


def main():
    targets = sys.argv[1:] or list(TARGETS)
    total = 0
    for target in targets:
        seeds = TARGETS[target]()
        write(target, seeds)
        size = sum(len(v if isinstance(v, bytes) else v.encode()) for v in seeds.values())
        total += size
        print(f"{target}: {len(seeds)} seeds, {size} bytes")
    print(f"total: {total} bytes")


if __name__ == "__main__":
    main()
