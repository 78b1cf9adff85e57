#!/usr/bin/env python3
"""The dynamic batcher's learned batch size (issue 13): throughput with batch
tuning on and off under a deep closed-loop load.

    .venv/bin/python bench/batch_tuning.py [--models minilm,resnet50]
        [--rounds 2] [--concurrency 64] [--duration 45] [--warmup 15]

It makes MiniLM and ResNet-50 (scripts/make_models.py's builders, into
bench/work/tuning-models) when they are missing, and two repositories of
each: `max_batch_size = 32` without preferred sizes (the bench models
configure [8, 16, 32], and configured sizes switch the tuner off), one with
`batch_tuning = true`, one with `batch_tuning = false` (the batcher as
before: every batch takes up to 32 rows). Then per model, on and off
alternately (ABAB, `--rounds` pairs), it starts one mlserve on that
repository, keeps `--concurrency` requests of one row in flight with
`loadgen closed` (HTTP binary; real rows: tokenized sentences and decoded
JPEGs from bench/work/inputs, made with `make_models.py --set bench-inputs`
when missing), and reads back:

- inferences/s (loadgen's measured window, after `--warmup` s, in which the
  tuner measures its sizes);
- rows per executed batch and the batch sizes run (`/v2/models/M/stats`);
- the learned size (`mlserve_inference_preferred_batch_size` on /metrics).

Writes bench/results/<date>/batch-tuning/batch_tuning.{json,md} and, when
matplotlib is installed, batch_tuning.png. Each ratio is tuning on over off
of the same model in the same run: a ratio, never an absolute threshold.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlserve_proc import Server, cpu_seconds  # noqa: E402
from saturation import cpu_model, git_commit, run_loadgen  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
MODELS = WORK / "tuning-models"
OUTPUTS = {"minilm": "sentence_embedding", "resnet50": "output"}
WARMUP_S = {"minilm": 15.0, "resnet50": 30.0}
DURATION_S = {"minilm": 45.0, "resnet50": 60.0}


def ensure_models(names):
    """Builds each missing model with make_models.py's own builder."""
    sys.path.insert(0, str(REPO / "scripts"))
    import make_models  # noqa: E402  (heavy: only when needed)

    for name in names:
        if not (MODELS / name / "1" / "model.onnx").is_file():
            print(f"making {name} in {MODELS.relative_to(REPO)}", flush=True)
            make_models.write_spec(MODELS, make_models.BUILDERS[name]())
    if not (WORK / "inputs" / "manifest.json").is_file():
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), "--set", "bench-inputs",
                        "--out", str(WORK)], check=True, cwd=REPO)


def tuned_config(text, tuning):
    """The model's config.toml with no preferred sizes, a 32-row limit and
    `batch_tuning` set."""
    text = re.sub(r"(?m)^preferred_batch_size = .*\n", "", text)
    text = re.sub(r"(?m)^max_batch_size = \d+$", "max_batch_size = 32", text)
    flag = "true" if tuning else "false"
    return text.replace("[dynamic_batching]\n", f"[dynamic_batching]\nbatch_tuning = {flag}\n", 1)


def repository(name, tuning):
    """A repository holding only `name`, its model file hard-linked."""
    root = WORK / "tuning-repos" / f"{name}-{'on' if tuning else 'off'}"
    if root.exists():
        shutil.rmtree(root)
    (root / name / "1").mkdir(parents=True)
    source = MODELS / name
    (root / name / "config.toml").write_text(tuned_config((source / "config.toml").read_text(), tuning))
    os.link(source / "1" / "model.onnx", root / name / "1" / "model.onnx")
    return root


def preferred_gauge(server, name):
    """The learned size the server exports, or None when it exports none."""
    with urllib.request.urlopen(f"{server.url('metrics')}/metrics", timeout=10) as r:
        text = r.read().decode()
    pattern = rf'^mlserve_inference_preferred_batch_size\{{[^}}]*model="{name}"[^}}]*\}} (\S+)$'
    found = re.search(pattern, text, re.M)
    return int(float(found.group(1))) if found else None


def batch_sizes(before, after):
    """{rows: batches run} between two /stats snapshots."""
    def counts(stats):
        return {b["batch_size"]: b["compute_infer"]["count"] for b in stats.get("batch_stats", [])}
    b, a = counts(before), counts(after)
    return {size: n - b.get(size, 0) for size, n in sorted(a.items()) if n - b.get(size, 0) > 0}


def measure(args, name, tuning, log):
    """One server on the model's on/off repository, one closed-loop run."""
    server = Server(args.mlserve, repository(name, tuning), [], log)
    server.start()
    try:
        warmup, duration = args.warmup or WARMUP_S[name], args.duration or DURATION_S[name]
        stats0, cpu0 = server.model_stats(name), cpu_seconds(server.pid)
        report, _, wall = run_loadgen(args.loadgen, [
            "closed", "--target", server.url("http"), "--protocol", "http-binary", "--model", name,
            "--inputs", str(WORK.relative_to(REPO)), "--outputs", OUTPUTS[name], "--concurrency", str(args.concurrency),
            "--duration", str(duration), "--warmup", str(warmup), "--quiet"])
        stats1, cpu1 = server.model_stats(name), cpu_seconds(server.pid)
        sizes = batch_sizes(stats0, stats1)
        rows = sum(size * n for size, n in sizes.items())
        return {
            "model": name,
            "tuning": tuning,
            "inferences_per_s": report["inferences_per_s"],
            "errors": report["error_total"],
            "latency_ms": report["latency_ms"],
            "learned_size": preferred_gauge(server, name),
            "rows_per_batch": rows / sum(sizes.values()) if sizes else 0.0,
            "batch_sizes": sizes,
            "server_cores": (cpu1 - cpu0) / wall,
        }
    finally:
        server.stop()


def summarize(runs):
    """Per model: median inferences/s on and off, their ratio, the learned
    sizes, and each ABAB pair's ratio."""
    out = {}
    for name in dict.fromkeys(r["model"] for r in runs):
        on = [r for r in runs if r["model"] == name and r["tuning"]]
        off = [r for r in runs if r["model"] == name and not r["tuning"]]
        med = lambda rs: statistics.median(r["inferences_per_s"] for r in rs)  # noqa: E731
        out[name] = {
            "on_inferences_per_s": med(on),
            "off_inferences_per_s": med(off),
            "ratio_on_over_off": med(on) / med(off),
            "pair_ratios": [a["inferences_per_s"] / b["inferences_per_s"] for a, b in zip(on, off)],
            "learned_sizes": [r["learned_size"] for r in on],
            "rows_per_batch_on": statistics.median(r["rows_per_batch"] for r in on),
            "rows_per_batch_off": statistics.median(r["rows_per_batch"] for r in off),
        }
    return out


def write_markdown(path, setup, runs, summary):
    lines = [
        "# Batch tuning on vs off (issue 13)", "",
        f"{setup['date']}, {setup['cores']} cores ({setup['cpu']}), commit {setup['git']}, "
        f"load average at start {setup['load_average']}. A busy machine: other builds shared it.", "",
        f"`loadgen closed`, HTTP binary, {setup['concurrency']} one-row requests in flight, "
        "max_batch_size 32, no preferred sizes; on and off alternately (ABAB).", "",
        "| model | tuning off inf/s | tuning on inf/s | on / off | learned size | rows/batch off | rows/batch on |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['off_inferences_per_s']:.1f} | {s['on_inferences_per_s']:.1f} | "
            f"{s['ratio_on_over_off']:.3f} (pairs {', '.join(f'{r:.3f}' for r in s['pair_ratios'])}) | "
            f"{', '.join(str(x) for x in s['learned_sizes'])} | {s['rows_per_batch_off']:.1f} | "
            f"{s['rows_per_batch_on']:.1f} |")
    lines += ["", "## Every run, in order", "",
              "| model | tuning | inf/s | p50 ms | p99 ms | errors | learned | batch sizes run (rows: batches) |",
              "|---|---|---:|---:|---:|---:|---|---|"]
    for r in runs:
        sizes = ", ".join(f"{k}: {v}" for k, v in r["batch_sizes"].items())
        lines.append(
            f"| {r['model']} | {'on' if r['tuning'] else 'off'} | {r['inferences_per_s']:.1f} | "
            f"{r['latency_ms']['p50']:.0f} | {r['latency_ms']['p99']:.0f} | {r['errors']} | "
            f"{r['learned_size']} | {sizes} |")
    path.write_text("\n".join(lines) + "\n")


def plot(path, runs):
    """Inferences/s of every run, on and off side by side per model."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(dict.fromkeys(r["model"] for r in runs))
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        mine = [r for r in runs if r["model"] == name]
        labels = [f"{'on' if r['tuning'] else 'off'}\n#{i // 2 + 1}" for i, r in enumerate(mine)]
        colours = ["tab:green" if r["tuning"] else "tab:grey" for r in mine]
        ax.bar(range(len(mine)), [r["inferences_per_s"] for r in mine], color=colours)
        ax.set_xticks(range(len(mine)), labels)
        learned = sorted({r["learned_size"] for r in mine if r["tuning"]})
        ax.set_title(f"{name} (learned size {', '.join(map(str, learned))})")
        ax.set_ylabel("inferences/s")
    fig.suptitle("Batch tuning on (green) vs off (grey), runs in order; busy 2-core machine", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="minilm,resnet50")
    ap.add_argument("--rounds", type=int, default=2, help="on/off pairs per model")
    ap.add_argument("--concurrency", type=int, default=64, help="one-row requests in flight")
    ap.add_argument("--duration", type=float, default=0, help="measured s (0: per model default)")
    ap.add_argument("--warmup", type=float, default=0, help="unmeasured s (0: per model default)")
    ap.add_argument("--out", type=Path,
                    default=REPO / "bench" / "results" / datetime.date.today().isoformat() / "batch-tuning")
    ap.add_argument("--mlserve", type=Path, default=REPO / "target" / "release" / "mlserve")
    ap.add_argument("--loadgen", type=Path, default=REPO / "target" / "release" / "loadgen")
    args = ap.parse_args()
    names = [m for m in args.models.split(",") if m]
    ensure_models(names)
    setup = {"date": datetime.date.today().isoformat(), "cores": len(os.sched_getaffinity(0)),
             "cpu": cpu_model(), "git": git_commit(), "concurrency": args.concurrency,
             "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3])}
    runs = []
    for name in names:
        for i in range(2 * args.rounds):
            tuning = i % 2 == 0
            log = WORK / "tuning-logs" / f"{name}-{i}.log"
            r = measure(args, name, tuning, log)
            runs.append(r)
            print(f"{name} tuning {'on ' if tuning else 'off'}: {r['inferences_per_s']:.1f} inf/s, "
                  f"learned {r['learned_size']}, {r['rows_per_batch']:.1f} rows/batch, "
                  f"{r['errors']} errors", flush=True)
    summary = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch_tuning.json").write_text(
        json.dumps({"setup": setup, "summary": summary, "runs": runs}, indent=2) + "\n")
    write_markdown(args.out / "batch_tuning.md", setup, runs, summary)
    plotted = plot(args.out / "batch_tuning.png", runs)
    for name, s in summary.items():
        print(f"{name}: on/off {s['ratio_on_over_off']:.3f}, learned {s['learned_sizes']}")
    print(f"wrote {args.out}/batch_tuning.{{json,md{',png' if plotted else ''}}}")


if __name__ == "__main__":
    main()
