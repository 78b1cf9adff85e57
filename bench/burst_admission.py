#!/usr/bin/env python3
"""Admission by deadline under the paper's burst (issue 13): the burst table.

    .venv/bin/python bench/burst_admission.py [--models tabular,minilm,resnet50]
                                              [--time-factor 0.5] [--spike-load 2]

For each model, mlserve with no flags, one model in its repository:

  1. capacity: closed loop, batch-1 requests over HTTP binary, the in-flight
     count of bench/paper.py (enough to fill batches): requests/s;
  2. admission off (no latency objective) and admission on
     (`latency_objective_ms` in the model's config.toml), each a fresh
     server: the paper's bursty profile open-loop (`loadgen open --profile
     bursty`), rates scaled as paper.py scales them (the spike offers
     --spike-load times the capacity, the rest a tenth of the spike).

The objective is --objective-batches full batches (max_batch_size rows at
the measured capacity), at least --min-objective-ms: a deadline the server
can keep for an admitted request however long the burst lasts.

The table, per model and run: p99 of the admitted (successful) requests and
its ratio to the objective, over the whole run and inside the spike; the
share answered (a success, or a refusal that carried Retry-After, of every
arrival; the rest are client timeouts, drops and errors without it);
goodput in the spike (successes per second that finished within the
objective, estimated from the spike's latency percentiles, divided by the
capacity); and the mean Retry-After the refusals said against the time they
actually had to wait for capacity (from their second until the first second
after the spike without a refusal).

Writes bench/results/<date>/burst-admission/burst_admission.{md,json,png}.
About 3 + 2 x 3 x time-factor minutes per model.
"""

import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlserve_proc import Server  # noqa: E402
from paper import MODEL_SETUP, MODELS, WORK, Progress, ensure_models  # noqa: E402
from saturation import cpu_model, git_commit, run_loadgen  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BURST = WORK / "burst"


def max_batch_size(model):
    for line in (MODELS / model / "config.toml").read_text().splitlines():
        if line.strip().startswith("max_batch_size"):
            return int(line.split("=")[1])
    return 1


def repository(model, objective_ms):
    """bench/work/burst/<model>-<on|off>/<model>: the model's files, its
    config with the objective (or none)."""
    name = f"{model}-{'on' if objective_ms else 'off'}"
    repo = BURST / name
    if repo.exists():
        shutil.rmtree(repo)
    target = repo / model
    target.mkdir(parents=True)
    for entry in (MODELS / model).iterdir():
        if entry.name != "config.toml":
            (target / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    config = (MODELS / model / "config.toml").read_text()
    if objective_ms:
        config = f"latency_objective_ms = {objective_ms}\n" + config
    (target / "config.toml").write_text(config)
    return repo


def capacity(args, model, progress):
    """Closed-loop requests/s of a no-flags mlserve (the admission-off repository)."""
    setup = MODEL_SETUP[model]
    server = Server(args.mlserve, repository(model, 0), [], BURST / f"mlserve-{model}-capacity.log")
    try:
        server.start()
        report, _, _ = run_loadgen(args.loadgen, [
            "closed", "--target", server.url("http"), "--protocol", "http-binary", "--model", model,
            "--batch", "1", "--concurrency", str(setup["closed_concurrency"]),
            "--duration", str(setup["closed_s"]), "--warmup", "4", "--inputs", str(WORK), "--quiet"],
            BURST / f"closed-{model}.json")
    finally:
        server.stop()
    rate = report["inferences_per_s"]
    progress.say(f"  {model}: capacity {rate:,.1f} requests/s (closed loop, "
                 f"{setup['closed_concurrency']} in flight)")
    return rate


def burst(args, model, objective_ms, multiplier, progress):
    """One bursty run on a fresh no-flags server; the loadgen report."""
    label = "on" if objective_ms else "off"
    server = Server(args.mlserve, repository(model, objective_ms), [],
                    BURST / f"mlserve-{model}-{label}.log")
    try:
        server.start()
        progress.say(f"  {model}: bursty, admission {label}"
                     + (f" (objective {objective_ms} ms)" if objective_ms else ""))
        report, _, _ = run_loadgen(args.loadgen, [
            "open", "--target", server.url("http"), "--protocol", "http-binary", "--model", model,
            "--profile", "bursty", "--rate-multiplier", f"{multiplier:.6f}",
            "--time-factor", str(args.time_factor), "--seed", "1", "--inputs", str(WORK),
            "--max-in-flight", str(args.max_in_flight), "--timeout", str(args.timeout),
            "--drain", str(args.timeout), "--metrics-url", f"{server.url('metrics')}/metrics",
            "--quiet"],
            BURST / f"open-{model}-{label}.json")
        stats = server.model_stats(model)
        # The batches the run made: how full the queue kept them.
        report["batches"] = stats["execution_count"]
        report["batch_rows_mean"] = stats["inference_count"] / max(stats["execution_count"], 1)
    finally:
        server.stop()
    return report


def within(latency, objective_ms):
    """Share of successes at or under the objective, from the percentiles
    (the highest percentile that is still within it)."""
    share = 0.0
    for key, q in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999),
                   ("max", 1.0)]:
        value = latency.get(key)
        if value is not None and value <= objective_ms:
            share = q
    return share


def summarize(report, objective_ms, capacity_rps):
    """The burst table's row of one run."""
    phases = {p["name"]: p for p in report["phases"]}
    spike = phases["spike"]
    timeline = report["timeline"]
    refusals = sum(s.get("with_retry_after", 0) for s in timeline)
    answered = (report["ok"] + refusals) / max(report["offered"], 1)
    # Retry-After against the time a refused request had to wait: from its
    # second to the first second after the spike's start with no refusal.
    spike_start = int(spike["start_s"])
    clear = next((s["t"] for s in timeline
                  if s["t"] > spike["end_s"] and not s.get("with_retry_after")), None)
    said = waited = n = 0.0
    for s in timeline:
        k = s.get("with_retry_after", 0)
        if k and s["t"] >= spike_start and clear is not None and s["t"] < clear:
            said += k * s["retry_after_s_mean"]
            waited += k * (clear - s["t"])
            n += k
    spike_ok_per_s = spike["completed_per_s"]
    in_time = within(spike["latency_ms"], objective_ms)
    return {
        "offered": report["offered"], "ok": report["ok"], "refused_with_retry_after": refusals,
        "errors": report["errors"],
        "p99_ms": report["latency_ms"]["p99"], "spike_p99_ms": spike["latency_ms"]["p99"],
        "p99_over_objective": report["latency_ms"]["p99"] / objective_ms if objective_ms else None,
        "spike_p99_over_objective": spike["latency_ms"]["p99"] / objective_ms if objective_ms else None,
        "answered": answered,
        "spike_offered_per_s": spike["offered_per_s"], "spike_ok_per_s": spike_ok_per_s,
        "spike_ok_over_capacity": spike_ok_per_s / capacity_rps,
        "spike_within_objective": in_time,
        "spike_goodput_over_capacity": spike_ok_per_s * in_time / capacity_rps,
        "retry_after_mean_s": said / n if n else None,
        "waited_for_capacity_mean_s": waited / n if n else None,
        "queue_depth_max": max((s["queue_depth_max"] or 0.0 for s in timeline), default=0.0),
        "batch_rows_mean": report.get("batch_rows_mean"),
    }


def fmt(value, spec):
    return "—" if value is None else format(value, spec)


def markdown(result):
    lines = [
        "# Admission by deadline under the paper's burst",
        "",
        f"{result['date']}, commit {result['commit']}, {result['cpu']}; mlserve with no flags; "
        f"bursty profile x{result['time_factor']:g} time, spike = {result['spike_load']:g} x the "
        f"closed-loop capacity, the rest a tenth of the spike; HTTP binary, batch 1, Poisson "
        f"arrivals; client timeout {result['timeout_s']:g} s.",
        "",
        "| model | capacity req/s | objective ms | admission | p99 ms (spike) | p99 ÷ objective (spike) "
        "| answered | spike ok/s ÷ capacity | spike within objective | spike goodput ÷ capacity "
        "| Retry-After s | waited for capacity s | queue max | rows per batch |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result["models"]:
        for label in ("off", "on"):
            r = m[label]
            lines.append(
                f"| {m['model']} | {m['capacity_rps']:,.0f} | {m['objective_ms']} | {label} "
                f"| {fmt(r['p99_ms'], ',.0f')} ({fmt(r['spike_p99_ms'], ',.0f')}) "
                f"| {fmt(r['p99_ms'] / m['objective_ms'], '.2f')} "
                f"({fmt(r['spike_p99_ms'] / m['objective_ms'], '.2f')}) "
                f"| {r['answered']:.3f} | {r['spike_ok_over_capacity']:.2f} "
                f"| ≥{r['spike_within_objective']:.2f} | {r['spike_goodput_over_capacity']:.2f} "
                f"| {fmt(r['retry_after_mean_s'], '.1f')} | {fmt(r['waited_for_capacity_mean_s'], '.1f')} "
                f"| {r['queue_depth_max']:.0f} | {fmt(r.get('batch_rows_mean'), '.1f')} |")
    lines += [
        "",
        "- p99: of the successful requests, from their intended send time. With admission off "
        "the objective is not enforced; its ratio is shown for comparison.",
        "- answered: successes plus refusals carrying Retry-After, over every arrival.",
        "- spike ok/s: successes per second of the spike phase's arrivals, over the closed-loop "
        "capacity (batch 1 with the in-flight count of paper.py, so batches smaller than a "
        "queue fills). Within objective: the highest of p50, p95, p99, p99.9, max of the spike's "
        "successes at or under the objective (a lower bound of the share). Goodput: their product.",
        "- Retry-After: the mean the refusals said; waited for capacity: the mean time from a "
        "refusal's second to the first second after the spike with no refusal.",
        "- rows per batch: the model's inferences over its executions in the whole run "
        "(`/v2/models/{m}/stats`).",
        "",
        "Errors by label:",
        "",
    ]
    for m in result["models"]:
        for label in ("off", "on"):
            lines.append(f"- {m['model']} admission {label}: {json.dumps(m[label]['errors'])}")
    return "\n".join(lines) + "\n"


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = result["models"]
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 7), squeeze=False)
    for col, m in enumerate(models):
        top, bottom = axes[0][col], axes[1][col]
        for label, colour in (("off", "tab:gray"), ("on", "tab:blue")):
            timeline = m["reports"][label]["timeline"]
            t = [s["t"] for s in timeline]
            top.plot(t, [s["ok"] for s in timeline], color=colour, label=f"ok/s, admission {label}")
            if label == "on":
                top.plot(t, [s.get("with_retry_after", 0) for s in timeline], color="tab:red",
                         label="refused/s (Retry-After)")
                top.plot(t, [s["offered"] for s in timeline], color="black", lw=0.8, ls=":",
                         label="offered/s")
            bottom.plot(t, [s["p99_ms"] for s in timeline], color=colour, label=f"p99, admission {label}")
        top.axhline(m["capacity_rps"], color="tab:green", lw=0.8, ls="--", label="capacity")
        bottom.axhline(m["objective_ms"], color="tab:red", lw=0.8, ls="--", label="objective")
        bottom.set_yscale("log")
        top.set_title(f"{m['model']}")
        top.set_ylabel("requests per second")
        bottom.set_ylabel("p99 of the second's successes, ms")
        bottom.set_xlabel("s")
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    fig.suptitle("The paper's burst, admission by deadline off and on (mlserve, no flags)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tabular,minilm,resnet50")
    ap.add_argument("--time-factor", type=float, default=0.5)
    ap.add_argument("--spike-load", type=float, default=2.0)
    ap.add_argument("--objective-batches", type=float, default=4.0,
                    help="the objective in full-batch service times at capacity")
    ap.add_argument("--min-objective-ms", type=int, default=20)
    ap.add_argument("--max-rate", type=float, default=20000.0)
    ap.add_argument("--max-in-flight", type=int, default=4096)
    ap.add_argument("--timeout", type=float, default=30.0, help="client timeout and drain, s")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--report-only", action="store_true",
                    help="write the outputs again from --out's burst_admission.json and the loadgen "
                         "reports kept in bench/work/burst (no run)")
    ap.add_argument("--mlserve", type=Path, default=REPO / "target" / "release" / "mlserve")
    ap.add_argument("--loadgen", type=Path, default=REPO / "target" / "release" / "loadgen")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    progress = Progress()
    if args.report_only:
        out = args.out or REPO / "bench" / "results" / datetime.date.today().isoformat() / "burst-admission"
        result = json.loads((out / "burst_admission.json").read_text())
        for m in result["models"]:
            m["reports"] = {label: json.loads((BURST / f"open-{m['model']}-{label}.json").read_text())
                            for label in ("off", "on")}
            for label, report in m["reports"].items():
                m[label] = summarize(report, m["objective_ms"], m["capacity_rps"])
        write(result, out, progress)
        return
    ensure_models(models, progress)
    BURST.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat()
    out = args.out or REPO / "bench" / "results" / date / "burst-admission"
    out.mkdir(parents=True, exist_ok=True)
    result = {"date": date, "commit": git_commit(), "cpu": cpu_model(), "time_factor": args.time_factor,
              "spike_load": args.spike_load, "timeout_s": args.timeout, "models": []}
    for model in models:
        progress.say(f"{model}")
        rps = capacity(args, model, progress)
        batch_ms = 1000.0 * max_batch_size(model) / rps
        objective_ms = int(max(args.min_objective_ms, round(args.objective_batches * batch_ms)))
        spike = min(args.spike_load * rps, args.max_rate)
        multiplier = spike / 1000.0  # the profile's spike is 1,000 requests/s
        reports = {label: burst(args, model, objective_ms if label == "on" else 0, multiplier, progress)
                   for label in ("off", "on")}
        row = {"model": model, "capacity_rps": rps, "objective_ms": objective_ms,
               "spike_rps": spike, "reports": reports}
        for label, report in reports.items():
            row[label] = summarize(report, objective_ms, rps)
            r = row[label]
            progress.say(f"    {label}: p99 {fmt(r['p99_ms'], ',.0f')} ms (spike "
                         f"{fmt(r['spike_p99_ms'], ',.0f')}), answered {r['answered']:.3f}, spike ok "
                         f"{r['spike_ok_over_capacity']:.2f} x capacity, Retry-After "
                         f"{fmt(r['retry_after_mean_s'], '.1f')} s vs waited "
                         f"{fmt(r['waited_for_capacity_mean_s'], '.1f')} s")
        result["models"].append(row)
    write(result, out, progress)


def write(result, out, progress):
    (out / "burst_admission.md").write_text(markdown(result))
    slim = {**result, "models": [{k: v for k, v in m.items() if k != "reports"} for m in result["models"]]}
    (out / "burst_admission.json").write_text(json.dumps(slim, indent=2) + "\n")
    plot(result, out / "burst_admission.png")
    progress.say(f"wrote {out}/burst_admission.{{md,json,png}}")


if __name__ == "__main__":
    main()
