"""Writes the saturation experiment's results: a Markdown table, the full
JSON, and (when matplotlib is installed) a bar chart of the fraction of the
raw ceiling per model and protocol; with a peer (Triton) measured too, its
rows and mlserve ÷ Triton beside them."""

import json
from pathlib import Path


def _case(report):
    model = Path(report["model"]).parent.parent.name if report["mode"] == "raw" else report["model"]
    return model, report["batch"]


def rows(reports):
    """One summary row per run, in run order."""
    out = []
    for r in reports:
        model, batch = _case(r)
        server = r.get("server", {})
        cpu = r.get("cpu_cores", {})
        target = r.get("target", "mlserve") if r["mode"] != "raw" else None
        path = "raw ONNX Runtime" if r["mode"] == "raw" else r["protocol"]
        out.append({
            "model": model,
            "batch": batch,
            "target": target,
            # mlserve's rows keep the bare protocol; a peer's carry its name
            "path": path if target in (None, "mlserve") else f"{target} {path}",
            "protocol": path,
            "concurrency": r.get("concurrency"),
            "inferences_per_s": r["inferences_per_s"],
            "p50_ms": r["latency_ms"]["p50"],
            "p99_ms": r["latency_ms"]["p99"],
            "fraction_of_raw": 1.0 if r["mode"] == "raw" else r.get("fraction_of_raw", 0.0),
            "errors": r["error_total"],
            "rows_per_execution": server.get("rows_per_execution"),
            "ort_busy": server.get("ort_busy"),
            "server_cores": cpu.get("server"),
            "loadgen_cores": cpu.get("loadgen"),
            "server_us_per_inference": (1e6 * cpu["server"] / r["inferences_per_s"]
                                        if cpu.get("server") is not None and r["inferences_per_s"] else None),
        })
    return out


def peer_ratios(table, peer="triton"):
    """mlserve ÷ peer per case and protocol: throughput, p99, server CPU per
    inference."""
    out = []
    for row in table:
        if row["target"] != "mlserve":
            continue
        other = next((r for r in table if r["target"] == peer and r["model"] == row["model"]
                      and r["batch"] == row["batch"] and r["protocol"] == row["protocol"]), None)
        if other is None:
            continue
        q = lambda a, b: a / b if a and b else None  # noqa: E731
        out.append({"model": row["model"], "batch": row["batch"], "protocol": row["protocol"],
                    "throughput": q(row["inferences_per_s"], other["inferences_per_s"]),
                    "p99": q(row["p99_ms"], other["p99_ms"]),
                    "cpu_per_inference": q(row["server_us_per_inference"], other["server_us_per_inference"])})
    return out


def _num(value, fmt):
    return "" if value is None else format(value, fmt)


def markdown(setup, table):
    lines = [
        f"# Saturation throughput vs raw ONNX Runtime ({setup['date']})",
        "",
        f"Machine: {setup['cores']} cores ({setup['cpu']}); commit {setup['git']}; "
        f"server flags `{' '.join(setup['server_args']) or '(none: the defaults)'}`; loadgen {setup['loadgen_threads']} thread(s)"
        + ("; --quick" if setup["quick"] else "") + ".",
        "",
        "The raw ceiling runs the same model in-process with as many intra-op threads as the "
        "server gives ONNX Runtime, on batches of the same size. The load generator runs on the "
        "same cores as the server, so the fractions are conservative.",
        "",
        "| model | batch | path | concurrency | inferences/s | p50 ms | p99 ms | fraction of raw "
        "| rows/execution | ORT busy | server cores | server µs/inference | loadgen cores | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        lines.append(
            f"| {row['model']} | {row['batch']} | {row['path']} | {row['concurrency'] or ''} "
            f"| {row['inferences_per_s']:,.0f} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} "
            f"| {row['fraction_of_raw']:.3f} | {_num(row['rows_per_execution'], '.1f')} "
            f"| {_num(row['ort_busy'], '.0%')} | {_num(row['server_cores'], '.2f')} "
            f"| {_num(row['server_us_per_inference'], ',.1f')} "
            f"| {_num(row['loadgen_cores'], '.2f')} | {row['errors']} |")
    lines += [
        "",
        "- rows/execution: rows per ONNX Runtime run in the server (the dynamic batcher may merge "
        "requests); ORT busy: share of wall time the server's instance spent in a batch "
        "(input copy + run + output split), from /v2/models/M/stats.",
        "- server cores / loadgen cores: CPU seconds per wall second of each process during the "
        "run (warm-up included); server µs/inference: server CPU per row answered.",
        "",
    ]
    ratios = peer_ratios(table)
    if ratios:
        lines += [
            "## mlserve ÷ Triton (python backend, onnxruntime)",
            "",
            "Rows named `triton ...` are real Triton (the nvidia-pytriton wheel's tritonserver; its "
            "python backend runs the same model file in onnxruntime with the same intra-op threads, "
            "the same batching settings"
            + (", except max_queue_size, left unbounded (`--triton-queue-bound off`)"
               if setup.get("triton_queue_bound") == "off" else
               ", max_queue_size included (`--triton-queue-bound on`): Triton's batcher then now and "
               "then sleeps its 500 ms idle wait with requests queued")
            + "); server CPU is its process tree (python stubs included). "
            "Throughput above 1, p99 and CPU below 1: mlserve ahead.",
            "",
            "| model | batch | protocol | throughput | p99 | server CPU per inference |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for r in ratios:
            lines.append(f"| {r['model']} | {r['batch']} | {r['protocol']} | {_num(r['throughput'], '.2f')}× "
                         f"| {_num(r['p99'], '.2f')}× | {_num(r['cpu_per_inference'], '.2f')}× |")
        lines.append("")
    return "\n".join(lines)


def _short(rate):
    """1234567 -> 1.23M, 65216 -> 65.2k, 28.4 -> 28.4."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if rate >= div:
            return f"{rate / div:.3g}{unit}"
    return f"{rate:.3g}"


def plot(path, table, setup):
    """Bar chart of the fraction of the raw ceiling; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases, ticks = [], []
    for row in table:
        key = f"{row['model']}\nbatch {row['batch']}"
        if key not in cases:
            cases.append(key)
            ticks.append(key)
        if row["path"] == "raw ONNX Runtime":
            ticks[cases.index(key)] = f"{key}\nraw {_short(row['inferences_per_s'])} inf/s"
    protocols = [p for p in dict.fromkeys(r["path"] for r in table) if p != "raw ONNX Runtime"]
    width = 0.8 / max(len(protocols), 1)
    fig, ax = plt.subplots(figsize=(2.2 * len(cases) + 2, 5))
    for i, protocol in enumerate(protocols):
        xs, ys, labels = [], [], []
        for j, case in enumerate(cases):
            row = next((r for r in table if r["path"] == protocol
                        and f"{r['model']}\nbatch {r['batch']}" == case), None)
            if row:
                xs.append(j + (i - (len(protocols) - 1) / 2) * width)
                ys.append(row["fraction_of_raw"])
                labels.append(f"{row['fraction_of_raw']:.2f}\n{_short(row['inferences_per_s'])}/s")
        bars = ax.bar(xs, ys, width, label=protocol)
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="raw ONNX Runtime")
    ax.set_xticks(range(len(cases)), ticks)
    ax.set_ylabel("server throughput / raw ceiling")
    ax.set_ylim(0, max([1.25] + [r["fraction_of_raw"] * 1.25 for r in table]))
    who = "mlserve and Triton" if any(r["target"] == "triton" for r in table) else "mlserve"
    ax.set_title(f"{who} at saturation vs in-process ONNX Runtime ({setup['cores']} cores, {setup['date']})",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(protocols) + 1, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(out_dir, setup, reports):
    """Writes saturation.md, saturation.json and saturation.png; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = rows(reports)
    written = []
    md = out_dir / "saturation.md"
    md.write_text(markdown(setup, table))
    written.append(md)
    js = out_dir / "saturation.json"
    js.write_text(json.dumps({"setup": setup, "rows": table, "mlserve_over_triton": peer_ratios(table),
                               "runs": reports}, indent=2) + "\n")
    written.append(js)
    png = out_dir / "saturation.png"
    if plot(png, table, setup):
        written.append(png)
    return written
