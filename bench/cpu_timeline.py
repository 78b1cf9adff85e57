"""Who had the CPU, 100 ms at a time: a system-wide `perf record` during a
run, binned by process. It answers "did the server stall, or did something
else take the core?" on a small machine shared with the load generator.

    timeline = CpuTimeline(out_dir / "run.perf")
    timeline.start(); ...the run...; timeline.stop()
    bins = timeline.bins()          # [(t_s, {group: share of one core})]
    timeline.plot(bins, png, per_second_p99_ms, offset_s)

Needs `perf` and permission to record every CPU (root, or
kernel.perf_event_paranoid <= -1); `available()` says whether it can run.
"""

import collections
import re
import shutil
import signal
import subprocess
from pathlib import Path

from mlserve_proc import thread_group

BIN_S = 0.1
FREQUENCY_HZ = 999
LOADGEN = "load generator"
IDLE = "idle"
OTHER = "other processes"
_SAMPLE = re.compile(r"\s*(.+?)\s+\d+\s+([\d.]+):")


def available():
    """Whether a system-wide recording can run here."""
    if shutil.which("perf") is None:
        return False
    try:
        paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    except (OSError, ValueError):
        return False
    return paranoid <= -1 or Path("/proc/self").stat().st_uid == 0


def group_of(comm):
    """The group a thread name (of any process) belongs to."""
    if comm.startswith("loadgen"):
        return LOADGEN
    if comm.startswith("swapper"):
        return IDLE
    group = thread_group(comm)
    return OTHER if group == "other" else f"mlserve: {group}"


# What the plot stacks, bottom up: mlserve's thread groups (tokio, HTTP I/O
# threads, instances, batcher, named by mlserve_proc), the load generator,
# everything else.
STACKED = [group_of(comm) for comm in ("tokio-rt-worker", "mlserve-http-0", "inst-", "sched-")] + [LOADGEN, OTHER]


class CpuTimeline:
    """One system-wide recording, started and stopped around a run."""

    def __init__(self, data_path):
        self.data_path = Path(data_path)
        self.proc = None

    def start(self):
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["perf", "record", "-F", str(FREQUENCY_HZ), "-a", "-k", "CLOCK_MONOTONIC", "-o", str(self.data_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)
            self.proc = None

    def bins(self):
        """[(CLOCK_MONOTONIC seconds, as Python's time.monotonic(), {group:
        share of one core})], one entry per 100 ms."""
        out = subprocess.run(["perf", "script", "-i", str(self.data_path), "-F", "comm,tid,time"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True).stdout
        counts = collections.defaultdict(collections.Counter)
        for line in out.splitlines():
            m = _SAMPLE.match(line)
            if m:
                counts[int(float(m.group(2)) / BIN_S)][group_of(m.group(1))] += 1
        if not counts:
            return []
        per_bin = FREQUENCY_HZ * BIN_S
        return [(b * BIN_S, {g: n / per_bin for g, n in counts[b].items()})
                for b in range(min(counts), max(counts) + 1)]

    @staticmethod
    def other_in(bins, start, end):
        """The most of a core other processes took in one 100 ms bin between
        `start` and `end` (monotonic seconds)."""
        return max((s.get(OTHER, 0.0) for t, s in bins if start <= t < end), default=0.0)

    @staticmethod
    def plot(bins, png, p99_per_second=None, run_start=0.0, title=""):
        """A stacked area of the groups' CPU (cores) per 100 ms, seconds from
        `run_start` (monotonic), with the load generator's p99 of each second
        of the run on a second axis."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return False
        times = [t - run_start for t, _ in bins]
        fig, ax = plt.subplots(figsize=(11, 4.5))
        ax.stackplot(times, *[[s.get(n, 0.0) for _, s in bins] for n in STACKED], labels=STACKED, step="post",
                     colors=["tab:blue", "tab:cyan", "tab:orange", "tab:purple", "tab:green", "tab:red"])
        ax.set_xlabel("seconds")
        ax.set_ylabel("cores busy (2 = the whole machine)")
        ax.set_ylim(0, 2.05)
        if p99_per_second:
            ax2 = ax.twinx()
            xs = [i + 0.5 for i in range(len(p99_per_second))]
            ax2.plot(xs, p99_per_second, color="black", marker="o", label="p99 of the second (ms)")
            ax2.set_ylabel("p99 of each second, ms")
            ax2.set_yscale("log")
            ax2.legend(loc="upper right")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        plt.close(fig)
        return True
