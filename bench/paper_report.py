"""Writes the paper experiment's results: paper.md (Tables 2 and 3, the
fraction of the raw ceiling, server CPU per request, per-phase details),
paper.json, and the plots (throughput over time, latency distributions,
queue depth over time) per workload."""

import json
import re
from pathlib import Path

ARCH_LABEL = {"flask": "Flask monolith (gunicorn, 4 workers)", "mlserve": "mlserve all-in-one",
              "mlserve-split": "mlserve split (gateway -> inference over gRPC)",
              "triton": "Triton (python backend, onnxruntime)"}
ARCH_COLOR = {"flask": "tab:red", "mlserve": "tab:blue", "mlserve-split": "tab:green", "triton": "tab:orange"}
ORDER = ["flask", "triton", "mlserve", "mlserve-split"]
PROFILES = ["steady", "bursty", "ramp"]


def _run(results, arch, model, profile):
    for r in results["profiles"]:
        if r["architecture"] == arch and r["model"] == model and r["profile"]["name"] == profile:
            return r
    return None


def _fmt(v, spec=",.1f", none="–"):
    return none if v is None else format(v, spec)


def _ratio(a, b, spec=".2f"):
    return "–" if not a or not b else format(a / b, spec) + "×"


def _archs(results):
    seen = []
    for r in results["profiles"]:
        if r["architecture"] not in seen:
            seen.append(r["architecture"])
    return sorted(seen, key=lambda a: ORDER.index(a) if a in ORDER else 9)


def _models(results):
    return list(results["workloads"])


def _spike_mean(results, arch, model):
    r = _run(results, arch, model, "bursty")
    for ph in (r or {}).get("phases", []):
        if ph["name"] == "spike":
            return ph["completed_per_s"]
    return None


def _cpu_us(results, arch, model):
    runs = [r for r in results["profiles"] if r["architecture"] == arch and r["model"] == model]
    ok = sum(r["ok"] for r in runs)
    return 1e6 * sum(r["server_cpu_s"] for r in runs) / ok if ok else None


def summary(results):
    """The numbers the README quotes: per workload, mlserve vs Flask (and
    Triton, when it ran) under the burst."""
    out = {}
    for m in _models(results):
        f, s = _run(results, "flask", m, "bursty"), _run(results, "mlserve", m, "bursty")
        row = {"offered_spike_rps": results["workloads"][m]["spike_rps"]}
        t = _run(results, "triton", m, "bursty")
        for name, r in (("flask", f), ("mlserve", s), ("triton", t)):
            if r:
                row[name] = {
                    "peak_sustained_rps": r["spike_peak_sustained_per_s"],
                    "spike_mean_rps": _spike_mean(results, name, m),
                    "p50_ms": r["latency_ms"]["p50"], "p95_ms": r["latency_ms"]["p95"],
                    "p99_ms": r["latency_ms"]["p99"],
                    "success_fraction": r["latency_all_ms"]["success_fraction"],
                    "cpu_us_per_request": _cpu_us(results, name, m),
                }
        if f and s:
            row["throughput_ratio"] = s["spike_peak_sustained_per_s"] / max(f["spike_peak_sustained_per_s"], 1e-9)
            row["spike_mean_ratio"] = (_spike_mean(results, "mlserve", m) or 0) / max(_spike_mean(results, "flask", m) or 0, 1e-9)
            row["p99_ratio_flask_over_mlserve"] = f["latency_ms"]["p99"] / max(s["latency_ms"]["p99"], 1e-9)
        if t and s:
            row["mlserve_over_triton"] = triton_ratios(results, m)
        out[m] = row
    return out


def _closed(results, arch, model, protocol):
    for row in results["saturation"]:
        if row["architecture"] == arch and row["model"] == model and row["protocol"] == protocol:
            return row
    return None


def _quotient(a, b):
    return a / b if a and b else None


def triton_ratios(results, m):
    """mlserve ÷ Triton for one workload: closed-loop throughput per
    protocol, the burst's peak, p99 of each profile, server CPU per request."""
    out = {}
    for protocol in ("http-binary", "grpc", "http-json"):
        s, t = _closed(results, "mlserve", m, protocol), _closed(results, "triton", m, protocol)
        if s and t:
            out[f"closed_{protocol}_throughput"] = _quotient(s["inferences_per_s"], t["inferences_per_s"])
            out[f"closed_{protocol}_p99"] = _quotient(s["p99_ms"], t["p99_ms"])
    s, t = _run(results, "mlserve", m, "bursty"), _run(results, "triton", m, "bursty")
    if s and t:
        out["spike_peak_throughput"] = _quotient(s["spike_peak_sustained_per_s"], t["spike_peak_sustained_per_s"])
    for p in PROFILES:
        s, t = _run(results, "mlserve", m, p), _run(results, "triton", m, p)
        if s and t:
            out[f"{p}_p99"] = _quotient(s["latency_ms"]["p99"], t["latency_ms"]["p99"])
    out["cpu_us_per_request"] = _quotient(_cpu_us(results, "mlserve", m), _cpu_us(results, "triton", m))
    return out


def triton_section(results, setup):
    """Markdown: mlserve ÷ Triton side by side (below 1 is mlserve cheaper
    or faster for p99 and CPU; above 1 is mlserve ahead for throughput)."""
    models = []
    for m in [r["model"] for r in results["saturation"] if r["architecture"] == "triton"] + [
            r["model"] for r in results["profiles"] if r["architecture"] == "triton"]:
        if m not in models:
            models.append(m)
    if not models:
        return []
    rows = {m: triton_ratios(results, m) for m in models}
    keys = [k for k in ("closed_http-binary_throughput", "closed_grpc_throughput", "closed_http-json_throughput",
                        "spike_peak_throughput", "closed_http-binary_p99", "closed_grpc_p99", "steady_p99",
                        "bursty_p99", "ramp_p99", "cpu_us_per_request") if any(k in r for r in rows.values())]
    L = ["", "## mlserve ÷ Triton (python backend, onnxruntime)", "",
         "Same model file, same ONNX Runtime threads, the same max_batch_size, dynamic batching "
         "and instance count"
         + (" (but no max_queue_size: `--triton-queue-bound off`)" if setup.get("triton_queue_bound") == "off"
            else " (max_queue_size included: `--triton-queue-bound on`)")
         + "; Triton is the nvidia-pytriton wheel's tritonserver, whose only "
         "backend for this is python (onnxruntime inside the python backend's stub process). "
         "Throughput: above 1 is mlserve ahead. p99 and CPU per request: below 1 is mlserve "
         "ahead. CPU is the process tree (tritonserver and its stub processes).", "",
         "| ratio | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for k in keys:
        L.append(f"| {k.replace('_', ' ')} | " + " | ".join(
            _fmt(rows[m].get(k), ".2f") + ("×" if rows[m].get(k) else "") for m in models) + " |")
    return L


def markdown(setup, results):
    archs, models = _archs(results), _models(results)
    L = [f"# The paper's experiment on one machine ({setup['date']})", ""]
    L += [f"Machine: {setup['cores']} cores ({setup['cpu']}), shared by the server under test and the "
          f"load generator. Commit {setup['git']}. Time factor {setup['time_factor']:g} (a 5-minute "
          f"profile took {300 * setup['time_factor']:g} s; bursty is 180 s nominal: 60 s before, a 60 s "
          f"spike, 60 s after). {setup['arrivals'].capitalize()} arrivals, {setup['protocol']} requests "
          f"carrying real payloads (bench/work/inputs), batch 1, at most {setup['max_in_flight']} "
          f"requests in flight, {setup['timeout_s']:g} s timeout. Run took {setup['wall_minutes']:.0f} min"
          + (" (--quick)." if setup["quick"] else ".")
          + (" mlserve ran with no thread flags." if setup.get("mlserve_threads", "tuned") == "default"
             else " mlserve ran with each model's tuned --worker-threads/--cpu-threads."), ""]
    L += ["Rates per workload: the spike offers "
          f"{setup['spike_load']:g}× mlserve's closed-loop capacity (capped at {setup['max_rate']:g} rps); "
          "steady is a tenth of that, the ramp goes from a twentieth to a half (the paper's 100/1,000 "
          "and 50→500 rps shapes).", ""]
    L += ["| workload | mlserve capacity (rps) | steady | bursty: before/after → spike | ramp | max in flight |",
          "|---|---:|---:|---:|---:|---:|"]
    for m in models:
        w = results["workloads"][m]
        s = w["spike_rps"]
        cap = " (capped)" if w["capped"] else ""
        L.append(f"| {m} | {w['capacity_rps']:,.1f} | {s / 10:,.1f} | {s / 10:,.1f} → {s:,.1f}{cap} | "
                 f"{s / 20:,.1f} → {s / 2:,.1f} | {w.get('max_in_flight', setup['max_in_flight'])} |")
    L += ["", "## Table 2: peak sustained throughput during the burst (requests/s)", "",
          "Peak sustained = the best 5-second moving average of successful completions per second "
          "inside the spike window.", ""]
    L += ["| architecture | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    L.append("| offered during the spike | " + " | ".join(
        _fmt(results["workloads"][m]["spike_rps"]) for m in models) + " |")
    for a in archs:
        L.append(f"| {ARCH_LABEL.get(a, a)} | " + " | ".join(
            _fmt((_run(results, a, m, "bursty") or {}).get("spike_peak_sustained_per_s")) for m in models) + " |")
    for a in archs:
        L.append(f"| {ARCH_LABEL.get(a, a)}: mean over the whole spike | " + " | ".join(
            _fmt(_spike_mean(results, a, m)) for m in models) + " |")
    if "mlserve-split" not in archs:
        L.append("| mlserve split (gateway -> inference over gRPC) | "
                 + " | ".join("not run" for _ in models) + " |")
    L.append("| raw ONNX Runtime ceiling (best batch, inferences/s) | " + " | ".join(
        _fmt(results["raw"].get(m, {}).get("best", {}).get("inferences_per_s")) for m in models) + " |")
    if "flask" in archs and "mlserve" in archs:
        L.append("| **mlserve / Flask** (peak) | " + " | ".join(_ratio(
            (_run(results, "mlserve", m, "bursty") or {}).get("spike_peak_sustained_per_s"),
            (_run(results, "flask", m, "bursty") or {}).get("spike_peak_sustained_per_s")) for m in models) + " |")
        L.append("| **mlserve / Flask** (spike mean) | " + " | ".join(_ratio(
            _spike_mean(results, "mlserve", m), _spike_mean(results, "flask", m)) for m in models) + " |")
        L += ["", "A model that runs large batches completes requests in bursts (ResNet-50 at batch 32 "
              "finishes 32 requests at once, 1 to 2 times a second), so a 5-second window can hold one "
              "batch more or less than its share: ±6 rps at 50 rps. The best of several windows leans "
              "high; the mean over the whole spike does not."]
    if "mlserve-split" in archs and "mlserve" in archs:
        L.append("| **split / all-in-one** (peak) | " + " | ".join(_ratio(
            (_run(results, "mlserve-split", m, "bursty") or {}).get("spike_peak_sustained_per_s"),
            (_run(results, "mlserve", m, "bursty") or {}).get("spike_peak_sustained_per_s")) for m in models) + " |")
    L += ["", "## Table 3: latency under the bursty profile (ms, whole run)", "",
          "Latency runs from each request's intended send time (open loop, no coordinated omission). "
          "Percentiles are over the successful requests; *success* is the share of all arrivals that "
          "succeeded, and *p99 all* ranks every failure (503, timeout, client drop) as infinitely slow "
          "(`fail` when the p99 lands on a failure).", "",
          "| workload | architecture | p50 | p95 | p99 | p99.9 | success | p99 all | failures |",
          "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for m in models:
        for a in archs:
            r = _run(results, a, m, "bursty")
            if not r:
                continue
            l, al = r["latency_ms"], r["latency_all_ms"]
            errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
            L.append(f"| {m} | {ARCH_LABEL.get(a, a)} | {l['p50']:,.1f} | {l['p95']:,.1f} | {l['p99']:,.1f} | "
                     f"{l['p999']:,.1f} | {100 * al['success_fraction']:.1f}% | "
                     f"{_fmt(al['p99'], ',.1f', 'fail')} | {errs} |")
        f, s = _run(results, "flask", m, "bursty"), _run(results, "mlserve", m, "bursty")
        if f and s:
            L.append(f"| {m} | **Flask / mlserve** | {_ratio(f['latency_ms']['p50'], s['latency_ms']['p50'])} | "
                     f"{_ratio(f['latency_ms']['p95'], s['latency_ms']['p95'])} | "
                     f"{_ratio(f['latency_ms']['p99'], s['latency_ms']['p99'])} | "
                     f"{_ratio(f['latency_ms']['p999'], s['latency_ms']['p999'])} | | | |")
    L += ["", "## Saturation: fraction of the raw ONNX Runtime ceiling", "",
          "Closed loop at batch 1 with enough requests in flight for the dynamic batcher to form full "
          "batches; the ceiling is the same model in-process with the same ONNX Runtime threads at its "
          "best batch size (batch ÷ mean `Session::run` time). The closed-loop window counts whole "
          "batches of answers (±1 batch: ±2.5% for ResNet-50 at 16 in flight over 12 s), and the "
          "batcher may merge more rows than the raw case ran, so a fraction can exceed 1. Flask's 4 "
          "workers each run a 1-thread session (the same 2 cores).", "",
          "| model | architecture | protocol | in flight | inferences/s | p99 ms | raw ceiling (batch) | fraction of raw | server cores | loadgen cores | other cores |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["saturation"]:
        raw = results["raw"].get(row["model"], {}).get("best", {})
        L.append(f"| {row['model']} | {row['architecture']} | {row['protocol']} | {row['concurrency']} | "
                 f"{row['inferences_per_s']:,.1f} | {row['p99_ms']:,.1f} | "
                 f"{_fmt(raw.get('inferences_per_s'))} (b{raw.get('batch', '?')}) | "
                 f"**{_fmt(row['fraction_of_raw'], '.3f')}** | {row['server_cores']:.2f} | {row['loadgen_cores']:.2f} | "
                 f"{row.get('other_cores', 0):.2f} |")
    L += triton_section(results, setup)
    L += ["", "## Server CPU per successful request (µs, all three profiles)", "",
          "utime + stime of the server's processes (/proc/PID/stat; Flask: gunicorn's master and "
          "workers) over the profile runs, divided by the successful requests.", "",
          "| architecture | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for a in archs:
        L.append(f"| {ARCH_LABEL.get(a, a)} | " + " | ".join(_fmt(_cpu_us(results, a, m), ",.0f") for m in models) + " |")
    L += ["", "## Per phase", "",
          "*other cores*: CPU used by processes other than the server and the load generator during "
          "the run (/proc/stat), i.e. noise from the rest of the machine.", "",
          "| workload | profile | architecture | phase | offered/s | completed/s | peak 5 s | p50 ms | p99 ms | failed | server µs/req | loadgen cores | other cores |",
          "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in models:
        for p in PROFILES:
            for a in archs:
                r = _run(results, a, m, p)
                if not r:
                    continue
                us = 1e6 * r["server_cpu_s"] / max(r["ok"], 1)
                for i, ph in enumerate(r["phases"]):
                    extra = (f"{us:,.0f} | {r['loadgen_cpu_s'] / r['run_wall_s']:.2f} | "
                             f"{r.get('other_cores', 0):.2f}") if i == 0 else " | "
                    L.append(f"| {m} | {p} | {a} | {ph['name']} | {ph['offered_per_s']:,.1f} | "
                             f"{ph['completed_per_s']:,.1f} | {ph['peak_sustained_per_s']:,.1f} | "
                             f"{ph['latency_ms']['p50']:,.1f} | {ph['latency_ms']['p99']:,.1f} | {ph['error_total']} | "
                             f"{extra} |")
    L += ["", "## Plots", ""]
    for m in models:
        for kind in ("throughput", "latency", "queue_depth"):
            L.append(f"![{kind} {m}]({kind}_{m}.png)")
        L.append("")
    return "\n".join(L) + "\n"


def _compact(r):
    """A profile report without the bulky parts, for paper.json."""
    keep = {k: v for k, v in r.items() if k not in ("timeline", "queue_depth", "first_errors")}
    keep["timeline"] = [[s["t"], s["offered_rate"], s["ok"], sum(s["errors"].values()), s["p50_ms"],
                         s["p99_ms"], s["queue_depth_mean"]] for s in r["timeline"]]
    keep["timeline_columns"] = ["t", "offered_rate", "ok", "failed", "p50_ms", "p99_ms", "queue_depth_mean"]
    keep["first_errors"] = r.get("first_errors", {})
    return keep


def plots(out_dir, results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    archs = _archs(results)
    for m in _models(results):
        # Figure 2: completions/s over time against the offered load.
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), dpi=80)
        for ax, p in zip(axes, PROFILES):
            offered = None
            for a in archs:
                r = _run(results, a, m, p)
                if not r:
                    continue
                t = [s["t"] + 0.5 for s in r["timeline"]]
                ok = [s["ok"] for s in r["timeline"]]
                ax.plot(t, ok, color=ARCH_COLOR.get(a), lw=0.6, alpha=0.45)
                avg = [sum(ok[max(0, i - 4):i + 1]) / len(ok[max(0, i - 4):i + 1]) for i in range(len(ok))]
                ax.plot(t, avg, color=ARCH_COLOR.get(a), lw=1.8, label=f"{a} ok/s (5 s mean; thin: per s)")
                failed = [sum(s["errors"].values()) for s in r["timeline"]]
                if any(failed):
                    ax.plot(t, failed, color=ARCH_COLOR.get(a), ls=":", lw=1, label=f"{a} failed/s")
                offered = (t, [s["offered_rate"] for s in r["timeline"]])
            if offered:
                ax.plot(*offered, color="black", ls="--", lw=1, label="offered")
            ax.set_title(f"{m}: {p}")
            ax.set_xlabel("time (s)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("requests/s")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"throughput_{m}.png", plt))

        # Figure 3: latency distributions (percentile spectrum, log scales).
        import math
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), dpi=80, sharey=True)
        ticks = [0.5, 0.9, 0.99, 0.999, 0.9999]
        for ax, p in zip(axes, PROFILES):
            for a in archs:
                r = _run(results, a, m, p)
                if not r or not r["latency_spectrum_ms"]:
                    continue
                pts = [(q, v) for q, v in r["latency_spectrum_ms"] if q < 1.0]
                ax.plot([-math.log10(1 - q) for q, _ in pts], [max(v, 1e-3) for _, v in pts],
                        color=ARCH_COLOR.get(a), marker=".", ms=3,
                        label=f"{a} ({100 * r['latency_all_ms']['success_fraction']:.0f}% ok)")
            ax.set_xticks([-math.log10(1 - q) for q in ticks], [f"p{100 * q:g}" for q in ticks])
            ax.set_yscale("log")
            ax.set_title(f"{m}: {p}")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        axes[0].set_ylabel("latency (ms, from intended send)")
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"latency_{m}.png", plt))

        # Queue depth over time (mlserve), the autoscaling signal.
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), dpi=80)
        for ax, p in zip(axes, PROFILES):
            r = _run(results, "mlserve", m, p)
            if not r:
                continue
            t = [s["t"] + 0.5 for s in r["timeline"]]
            ax.plot(t, [s["queue_depth_mean"] if s["queue_depth_mean"] is not None else float("nan")
                        for s in r["timeline"]], color="tab:blue", label="queue depth (mean/s)")
            ax.plot(t, [s["queue_depth_max"] if s["queue_depth_max"] is not None else float("nan")
                        for s in r["timeline"]], color="tab:blue", lw=0.8, alpha=0.5, label="max")
            ax2 = ax.twinx()
            ax2.plot(t, [s["offered_rate"] for s in r["timeline"]], color="black", ls="--", lw=1)
            ax2.set_ylabel("offered rps", fontsize=8)
            ax.set_title(f"mlserve {m}: {p}")
            ax.set_xlabel("time (s)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("requests queued")
        axes[0].legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"queue_depth_{m}.png", plt))
    return written


def _save(fig, path, plt):
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(out_dir, setup, results):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "paper.md"
    md.write_text(markdown(setup, results))
    js = out_dir / "paper.json"
    doc = {"setup": setup, "summary": summary(results), "raw": results["raw"],
           "saturation": results["saturation"], "workloads": results["workloads"],
           "profiles": [_compact(r) for r in results["profiles"]]}
    text = json.dumps(doc, indent=1)
    # Innermost arrays (timeline rows, spectra) on one line each.
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    js.write_text(text + "\n")
    return [md, js, *plots(out_dir, results)]
