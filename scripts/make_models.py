#!/usr/bin/env python3
"""Write Triton-style model repositories of small ONNX models for mlserve.

Each model is written as OUT/<model>/config.toml and OUT/<model>/1/model.onnx.
All weights come from numpy's default_rng with fixed seeds, so the output is
byte-for-byte deterministic.  Sets:

  tests     tiny fixtures for the test suite (simple, simple_nobatch,
            identity_<type>, int64_lookup, tabular, heavy, slow, string_len)
  examples  simple, tabular, int64_lookup, string_len (+ resnet50 with --resnet50)
  resnet50  ResNet-50 v1.5 with random weights (~100 MB)
  bert      bert_base (BERT-base topology, random weights, ~440 MB) and minilm
            (the real all-MiniLM-L6-v2 weights, ~90 MB, + its tokenizer.json)
  bench     tabular + resnet50 + bert_base + minilm
  bench-inputs
            no models: OUT/inputs/ with request payloads for the bench models
            (scripts/models/inputs.py)

A model whose model.onnx already exists is skipped unless --force.  Files are
written atomically: a new model directory is staged in OUT/.<model>.XXXX and
renamed into place; an existing one has each file replaced by tmp + rename.
--check loads every model of the set in onnxruntime, runs one random batch and
checks config.toml against the model.
"""

import argparse
import os
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as TP, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import bert, inputs, resnet50  # noqa: E402
from models.files import atomic_write  # noqa: E402

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17

TRITON_TYPES = {
    TP.BOOL: "TYPE_BOOL", TP.UINT8: "TYPE_UINT8", TP.UINT16: "TYPE_UINT16",
    TP.UINT32: "TYPE_UINT32", TP.UINT64: "TYPE_UINT64", TP.INT8: "TYPE_INT8",
    TP.INT16: "TYPE_INT16", TP.INT32: "TYPE_INT32", TP.INT64: "TYPE_INT64",
    TP.FLOAT16: "TYPE_FP16", TP.FLOAT: "TYPE_FP32", TP.DOUBLE: "TYPE_FP64",
    TP.STRING: "TYPE_STRING", TP.BFLOAT16: "TYPE_BF16",
}
IDENTITY_TYPES = {
    "fp32": TP.FLOAT, "fp16": TP.FLOAT16, "fp64": TP.DOUBLE, "bf16": TP.BFLOAT16,
    "int8": TP.INT8, "int16": TP.INT16, "int32": TP.INT32, "int64": TP.INT64,
    "uint8": TP.UINT8, "uint16": TP.UINT16, "uint32": TP.UINT32, "uint64": TP.UINT64,
    "bool": TP.BOOL, "bytes": TP.STRING,
}


@dataclass
class Spec:
    """A model to write: its ONNX graph and the scheduling part of its config."""

    name: str
    model: onnx.ModelProto
    max_batch_size: int
    batching: dict | None = None  # keys: preferred, delay_us, queue
    notes: str = ""
    extra: dict = field(default_factory=dict)  # check-time hints (expected outputs)
    files: dict = field(default_factory=dict)  # more files next to config.toml: name -> bytes


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def vi(name, elem_type, shape):
    """A tensor value_info; None in shape means an unnamed dynamic dim."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def make_model(nodes, inputs, outputs, inits=(), name="g", doc="", opsets=None):
    """Wrap nodes into a checked opset-17 / IR 8 ModelProto."""
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = helper.make_model(
        graph, opset_imports=opsets or [helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION, producer_name="mlserve-make_models", doc_string=doc)
    onnx.checker.check_model(model)
    return model


def f32(a):
    """numpy -> float32 (numpy 2 promotes float32 * np.float64 to float64)."""
    return np.asarray(a).astype(np.float32)


def batching(delay_us=0, preferred=(), queue=64):
    return {"preferred": list(preferred), "delay_us": delay_us, "queue": queue}


# --------------------------------------------------------------------------
# model builders
# --------------------------------------------------------------------------

def build_simple(batched):
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32 x16)."""
    shape = ["batch", 16] if batched else [1, 16]
    nodes = [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
             helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])]
    model = make_model(nodes, [vi("INPUT0", TP.INT32, shape), vi("INPUT1", TP.INT32, shape)],
                       [vi("OUTPUT0", TP.INT32, shape), vi("OUTPUT1", TP.INT32, shape)],
                       name="simple", doc=build_simple.__doc__)
    expect = lambda f: {"OUTPUT0": f["INPUT0"] + f["INPUT1"], "OUTPUT1": f["INPUT0"] - f["INPUT1"]}
    if batched:
        return Spec("simple", model, 8, batching(100, [4, 8], 64), extra={"expect": expect})
    return Spec("simple_nobatch", model, 0, extra={"expect": expect})


def build_identity(suffix, elem_type):
    """OUTPUT0 = Identity(INPUT0), [batch, -1] of one element type."""
    model = make_model([helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
                       [vi("INPUT0", elem_type, ["batch", None])],
                       [vi("OUTPUT0", elem_type, ["batch", None])],
                       name=f"identity_{suffix}", doc=f"Identity on {suffix} tensors")
    return Spec(f"identity_{suffix}", model, 8, batching(0),
                extra={"expect": lambda f: {"OUTPUT0": f["INPUT0"]}})


def build_int64_lookup():
    """embeddings = table[ids] (table FP32 [1000, 4]); ids_sum = sum(ids, axis 1)."""
    table = f32(np.random.default_rng(64).standard_normal((1000, 4)))
    nodes = [helper.make_node("Gather", ["table", "ids"], ["embeddings"], axis=0),
             helper.make_node("ReduceSum", ["ids", "axis1"], ["ids_sum"], keepdims=0)]
    inits = [numpy_helper.from_array(table, "table"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    model = make_model(nodes, [vi("ids", TP.INT64, ["batch", 8])],
                       [vi("embeddings", TP.FLOAT, ["batch", 8, 4]),
                        vi("ids_sum", TP.INT64, ["batch"])],
                       inits, name="int64_lookup", doc=build_int64_lookup.__doc__)
    expect = lambda f: {"embeddings": table[f["ids"]], "ids_sum": f["ids"].sum(axis=1)}
    return Spec("int64_lookup", model, 16, extra={"expect": expect, "int_range": (0, 1000)})


def build_tabular():
    """XGBoost binary classifier (50 trees, depth 4) on 50 synthetic features."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from xgboost import XGBClassifier

    rng = np.random.default_rng(7)
    x = f32(rng.standard_normal((4000, 50)))
    logit = 1.5 * x[:, 0] - 2.0 * x[:, 3] + x[:, 7] * x[:, 11] + 0.8 * np.sin(2 * x[:, 20])
    y = (logit + rng.normal(0, 0.5, len(x)) > 0).astype(np.int64)
    clf = XGBClassifier(n_estimators=50, max_depth=4, learning_rate=0.3, tree_method="hist",
                        n_jobs=1, random_state=0)
    clf.fit(x, y)
    # onnxmltools supports opset <= 15 for xgboost; the graph is one
    # ai.onnx.ml TreeEnsembleClassifier with outputs label and probabilities
    # (no ZipMap).
    model = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, 50]))],
                            target_opset=15)
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert all(n.op_type != "ZipMap" for n in model.graph.node)
    for v in [*model.graph.input, *model.graph.output]:
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.name = "tabular"  # onnxmltools uses a random uuid
    model.doc_string = build_tabular.__doc__
    model.producer_name = "mlserve-make_models (onnxmltools)"
    onnx.checker.check_model(model)
    expect = lambda f: {"label": clf.predict(f["input"]),
                        "probabilities": clf.predict_proba(f["input"])}
    return Spec("tabular", model, 64, batching(500, [16, 32, 64], 256),
                extra={"expect": expect, "rtol": 1e-4})


def build_heavy():
    """24 x (MatMul 256x256 + Tanh) on [batch, 256]."""
    rng = np.random.default_rng(24)
    nodes, inits, x = [], [], "INPUT0"
    for i in range(24):
        w = f32(rng.standard_normal((256, 256)) * (1.5 / np.sqrt(256)))
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "OUTPUT0" if i == 23 else f"t{i}"
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [out])]
        x = out
    model = make_model(nodes, [vi("INPUT0", TP.FLOAT, ["batch", 256])],
                       [vi("OUTPUT0", TP.FLOAT, ["batch", 256])], inits,
                       name="heavy", doc=build_heavy.__doc__)
    return Spec("heavy", model, 4, batching(0, [], 64), extra={"time": True})


# slow: each batch item is broadcast to SLOW_ROWS rows so every layer is a
# [rows, 1024] x [1024, 1024] GEMM (compute bound, unlike a batch-1 GEMV);
# SLOW_LAYERS share one weight to keep the file at ~5 MB.  Sized to ~200 ms
# per batch item on one thread of the machine it was written on.
SLOW_ROWS, SLOW_HIDDEN, SLOW_LAYERS = 256, 1024, 96


def build_slow():
    """Deliberately slow: [batch,256] -> rows x 1024 hidden, N shared MatMul+Tanh, mean."""
    rng = np.random.default_rng(300)
    h = SLOW_HIDDEN
    inits = [
        numpy_helper.from_array(f32(rng.standard_normal((SLOW_ROWS, 256)) * 0.1), "rows"),
        numpy_helper.from_array(f32(rng.standard_normal((256, h)) / 16), "w_in"),
        numpy_helper.from_array(f32(rng.standard_normal((h, h)) * (1.5 / np.sqrt(h))), "w"),
        numpy_helper.from_array(f32(rng.standard_normal((h, 256)) / np.sqrt(h)), "w_out"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [helper.make_node("Unsqueeze", ["INPUT0", "axis1"], ["x3"]),
             helper.make_node("Add", ["x3", "rows"], ["xr"]),  # [batch, rows, 256]
             helper.make_node("MatMul", ["xr", "w_in"], ["h_in"]),
             helper.make_node("Tanh", ["h_in"], ["a_in"])]
    x = "a_in"
    for i in range(SLOW_LAYERS):
        nodes += [helper.make_node("MatMul", [x, "w"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"a{i}"])]
        x = f"a{i}"
    nodes += [helper.make_node("ReduceMean", [x], ["pooled"], axes=[1], keepdims=0),
              helper.make_node("MatMul", ["pooled", "w_out"], ["OUTPUT0"])]
    model = make_model(nodes, [vi("INPUT0", TP.FLOAT, ["batch", 256])],
                       [vi("OUTPUT0", TP.FLOAT, ["batch", 256])], inits,
                       name="slow", doc=build_slow.__doc__)
    return Spec("slow", model, 4, batching(0, [], 8), extra={"time": True})


def ascii_upper(s):
    """What StringNormalizer UPPER does in the "C" locale."""
    return "".join(c.upper() if c.isascii() else c for c in s)


def build_string_len():
    """text_out = Identity(text); upper = ASCII upper-case of text (STRING [batch, 1]).

    StringNormalizer only accepts [C] or [1, C], so text is reshaped to [batch],
    normalised and reshaped back.  locale "C" is used because ORT's default
    (en_US.UTF-8) is missing on minimal systems; it upper-cases ASCII only and
    needs valid UTF-8 input.
    """
    nodes = [helper.make_node("Identity", ["text"], ["text_out"]),
             helper.make_node("Shape", ["text"], ["text_shape"]),
             helper.make_node("Reshape", ["text", "flat"], ["text_flat"]),
             helper.make_node("StringNormalizer", ["text_flat"], ["upper_flat"],
                              case_change_action="UPPER", locale="C"),
             helper.make_node("Reshape", ["upper_flat", "text_shape"], ["upper"])]
    model = make_model(nodes, [vi("text", TP.STRING, ["batch", 1])],
                       [vi("text_out", TP.STRING, ["batch", 1]),
                        vi("upper", TP.STRING, ["batch", 1])],
                       [numpy_helper.from_array(np.array([-1], np.int64), "flat")],
                       name="string_len", doc=build_string_len.__doc__)
    expect = lambda f: {"text_out": f["text"],
                        "upper": np.vectorize(ascii_upper, otypes=[object])(f["text"])}
    return Spec("string_len", model, 8, batching(0), extra={"expect": expect})


def build_resnet50():
    """ResNet-50 v1.5, seeded He-init weights, BatchNorm folded."""
    nodes, inits, inp, out = resnet50.build()
    model = make_model(nodes, [inp], [out], inits, name="resnet50", doc=build_resnet50.__doc__)
    return Spec("resnet50", model, 32, batching(2000, [8, 16, 32], 256), extra={"time": True})


def build_bert_base():
    """BERT-base encoder (12 x 768, 12 heads), seeded N(0, 0.02) weights, seq 128."""
    weights = bert.random_weights(bert.BERT_BASE, seed=110)
    nodes, inits, ins, outs = bert.build(bert.BERT_BASE, weights, heads=["pooler_output"])
    model = make_model(nodes, ins, outs, inits, name="bert_base", doc=build_bert_base.__doc__)
    check = lambda d: bert.check(d, bert.BERT_BASE, weights)  # noqa: E731
    return Spec("bert_base", model, 16, batching(2000, [4, 8, 16], 256),
                extra={"int_range": (0, 2), "check": check})


def build_minilm():
    """all-MiniLM-L6-v2 (real weights), seq 128, mean-pooled L2-normalised embedding."""
    weights = bert.minilm_weights()
    nodes, inits, ins, outs = bert.build(bert.MINILM, weights, heads=["sentence_embedding"])
    model = make_model(nodes, ins, outs, inits, name="minilm", doc=build_minilm.__doc__)
    check = lambda d: bert.check(d, bert.MINILM, weights)  # noqa: E731
    tok = (bert.minilm_dir() / "tokenizer.json").read_bytes()
    return Spec("minilm", model, 32, batching(2000, [8, 16, 32], 256),
                extra={"int_range": (0, 2), "check": check}, files={"tokenizer.json": tok})


SETS = {
    "tests": ["simple", "simple_nobatch", *[f"identity_{t}" for t in IDENTITY_TYPES],
              "int64_lookup", "tabular", "heavy", "slow", "string_len"],
    "examples": ["simple", "tabular", "int64_lookup", "string_len"],
    "resnet50": ["resnet50"],
    "bert": ["bert_base", "minilm"],
    "bench": ["tabular", "resnet50", "bert_base", "minilm"],
}
BUILDERS = {
    "simple": lambda: build_simple(True),
    "simple_nobatch": lambda: build_simple(False),
    **{f"identity_{t}": (lambda t=t, e=e: build_identity(t, e)) for t, e in IDENTITY_TYPES.items()},
    "int64_lookup": build_int64_lookup, "tabular": build_tabular, "heavy": build_heavy,
    "slow": build_slow, "string_len": build_string_len, "resnet50": build_resnet50,
    "bert_base": build_bert_base, "minilm": build_minilm,
}


# --------------------------------------------------------------------------
# config.toml and atomic writing
# --------------------------------------------------------------------------

def io_entries(values, batched):
    """(name, triton type, dims) of graph inputs/outputs, minus the batch dim."""
    entries = []
    for v in values:
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if batched:
            assert tt.shape.dim[0].dim_param == "batch", f"{v.name}: first dim must be 'batch'"
            dims = dims[1:]
        entries.append((v.name, TRITON_TYPES[tt.elem_type], dims))
    return entries


def config_toml(spec):
    """Render the model's config.toml (Triton field names)."""
    batched = spec.max_batch_size > 0
    doc = (spec.model.doc_string or "").strip().splitlines()
    lines = [f"# {spec.name}: {doc[0] if doc else ''}".rstrip(),
             "# generated by scripts/make_models.py", "",
             f"max_batch_size = {spec.max_batch_size}"]
    for section, values in (("input", spec.model.graph.input), ("output", spec.model.graph.output)):
        for name, dtype, dims in io_entries(values, batched):
            lines += ["", f"[[{section}]]", f'name = "{name}"', f'data_type = "{dtype}"',
                      f"dims = {dims}"]
    if spec.batching is not None:
        b = spec.batching
        lines += ["", "[dynamic_batching]"]
        if b["preferred"]:
            lines.append(f"preferred_batch_size = {b['preferred']}")
        lines += [f"max_queue_delay_microseconds = {b['delay_us']}", "",
                  "[dynamic_batching.default_queue_policy]",
                  f"max_queue_size = {b['queue']}",
                  "default_timeout_microseconds = 0", "allow_timeout_override = true"]
    lines += ["", "[[instance_group]]", "count = 1", 'kind = "KIND_CPU"', "",
              "[version_policy]", "latest = { num_versions = 1 }", ""]
    return "\n".join(lines)


def write_spec(out, spec):
    """Write OUT/<name>/config.toml and OUT/<name>/1/model.onnx atomically."""
    model_bytes = spec.model.SerializeToString()
    config = config_toml(spec).encode()
    dst = out / spec.name
    if dst.exists():
        (dst / "1").mkdir(exist_ok=True)
        atomic_write(dst / "1" / "model.onnx", model_bytes)
        atomic_write(dst / "config.toml", config)
        for name, data in spec.files.items():
            atomic_write(dst / name, data)
    else:
        stage = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=out))
        try:
            (stage / "1").mkdir()
            (stage / "1" / "model.onnx").write_bytes(model_bytes)
            (stage / "config.toml").write_bytes(config)
            for name, data in spec.files.items():
                (stage / name).write_bytes(data)
            os.chmod(stage, 0o755)
            os.rename(stage, dst)
        except BaseException as err:
            for p in sorted(stage.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            stage.rmdir()
            # Another process made the same model meanwhile (the output is
            # deterministic): keep its directory, never replace it.
            if not (isinstance(err, OSError) and (dst / "1" / "model.onnx").is_file()):
                raise
    return len(model_bytes)


# --------------------------------------------------------------------------
# --check
# --------------------------------------------------------------------------

NP_TYPES = {"TYPE_STRING": object, "TYPE_BF16": np.uint16, "TYPE_BOOL": np.bool_}


def random_input(rng, dtype, shape, int_range=None):
    """A random numpy array for a Triton type (bf16 as raw uint16 bits)."""
    if dtype == "TYPE_STRING":
        words = ["alpha", "beta", "gamma", "héllo", "x", "mixed Case 42"]
        return np.array(rng.choice(words, size=shape), dtype=object)
    if dtype == "TYPE_BOOL":
        return rng.random(shape) < 0.5
    if dtype == "TYPE_BF16":
        return (f32(rng.standard_normal(shape)).view(np.uint32) >> 16).astype(np.uint16)
    np_type = np.dtype(helper.tensor_dtype_to_np_dtype(
        {v: k for k, v in TRITON_TYPES.items()}[dtype]))
    if np_type.kind == "f":
        return rng.standard_normal(shape).astype(np_type)
    lo, hi = int_range or (0 if np_type.kind == "u" else -100, 100)
    return rng.integers(lo, hi, size=shape).astype(np_type)


def check_model(out, spec, threads_timing=1):
    """Load OUT/<name> in onnxruntime, run one random batch, compare with config."""
    import onnxruntime as ort

    cfg = tomllib.loads((out / spec.name / "config.toml").read_text())
    path = str(out / spec.name / "1" / "model.onnx")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    batch = min(2, cfg["max_batch_size"])
    lead = [batch] if batch else []
    assert [i["name"] for i in cfg["input"]] == [i.name for i in sess.get_inputs()]
    assert [o["name"] for o in cfg["output"]] == [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(0)
    feeds = {i["name"]: random_input(rng, i["data_type"], lead + [3 if d < 0 else d for d in i["dims"]],
                                     spec.extra.get("int_range"))
             for i in cfg["input"]}
    if any(i["data_type"] == "TYPE_BF16" for i in cfg["input"]):
        ort_feeds = {k: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(v, TP.BFLOAT16)
                     for k, v in feeds.items()}
        results = sess.run_with_ort_values(None, ort_feeds)
        # OrtValue.numpy() cannot export bf16, so only type and shape are checked.
        got = [(r.data_type(), tuple(r.shape())) for r in results]
        assert got == [("tensor(bfloat16)", feeds["INPUT0"].shape)], got
        print(f"  check {spec.name}: OUTPUT0 bfloat16 {list(got[0][1])}")
        return
    results = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for o in cfg["output"]:
        r = results[o["name"]]
        want = lead + o["dims"]
        assert len(r.shape) == len(want) and all(w < 0 or w == s for w, s in zip(want, r.shape)), \
            f"{o['name']}: shape {r.shape} vs config {want}"
        if r.dtype.kind == "f":
            assert np.isfinite(r).all(), f"{o['name']} has NaN/inf"
            assert r.size < 2 or np.ptp(r) > 0, f"{o['name']} is constant"
    expect = spec.extra.get("expect")
    if expect:
        for name, want in expect(feeds).items():
            got = results[name]
            if got.dtype == object:
                assert (got == want).all(), name
            else:
                np.testing.assert_allclose(got, want, rtol=spec.extra.get("rtol", 1e-6),
                                           atol=1e-6, err_msg=name)
    shapes = ", ".join(f"{k} {v.dtype} {list(v.shape)}" for k, v in results.items())
    msg = f"  check {spec.name}: {shapes}" + (" (matches reference)" if expect else "")
    if spec.extra.get("time"):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads_timing
        opts.inter_op_num_threads = 1
        one = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        x = {k: v[:1] for k, v in feeds.items()}
        one.run(None, x)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            one.run(None, x)
            times.append(time.perf_counter() - t0)
        msg += f"; batch 1, {threads_timing} thread: {1e3 * min(times):.1f} ms (min of 3)"
    print(msg)
    if "check" in spec.extra:  # the model's own checks (real inputs, timings)
        for line in spec.extra["check"](out / spec.name):
            print(f"    {line}")


# --------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", required=True, choices=sorted([*SETS, "bench-inputs"]))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--force", action="store_true", help="overwrite existing models")
    parser.add_argument("--resnet50", action="store_true", help="add resnet50 to --set examples")
    parser.add_argument("--check", action="store_true", help="load and run every model after")
    args = parser.parse_args(argv)

    if args.set == "bench-inputs":
        inputs.write(args.out, force=args.force)
        return
    names = list(SETS[args.set])
    if args.set == "examples" and args.resnet50:
        names.append("resnet50")
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    specs, written = [], 0
    for name in names:
        target = args.out / name / "1" / "model.onnx"
        if target.exists() and not args.force:
            print(f"skip {name}: {target} exists")
            if args.check:  # rebuild in memory only, for the reference outputs
                specs.append(BUILDERS[name]())
            continue
        t0 = time.perf_counter()
        spec = BUILDERS[name]()
        specs.append(spec)
        size = write_spec(args.out, spec)
        written += 1
        print(f"wrote {args.out / name} ({size / 1e6:.2f} MB, {time.perf_counter() - t0:.2f} s)")
    print(f"set {args.set}: wrote {written} of {len(names)} models "
          f"in {time.perf_counter() - t_start:.2f} s")
    if args.check:
        t0 = time.perf_counter()
        for spec in specs:
            check_model(args.out, spec)
        print(f"check: {len(specs)} models ok in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
