"""Hypervisor steal during a run: the time the host kept this VM's vCPUs
from running while the guest had work for them (the `steal` column of
/proc/stat). A thread of the guest that the host stops looks, from inside,
as if it ran on for those milliseconds; when it is the server's one I/O
thread, every connection waits. Sampling /proc/stat every 10 ms tells which
seconds of a run lost CPU to the host, next to the run's per-second
latency.

    steal = StealSampler(); steal.start(); ...the run...; steal.stop()
    per_second_ms = steal.per_second(run_start, seconds)
"""

import os
import threading
import time
from pathlib import Path

INTERVAL_S = 0.01
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def steal_ticks():
    """The machine's steal so far, in clock ticks over all CPUs (0 where
    /proc/stat has no steal column)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) if len(fields) > 8 else 0


class StealSampler:
    """Reads the machine's steal every 10 ms in a thread of its own."""

    def __init__(self):
        self.samples = []  # (time.monotonic(), ticks since the start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        """Ends the sampling; a sampler never started stops at once."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()

    def _run(self):
        first = steal_ticks()
        while not self._stop.wait(INTERVAL_S):
            self.samples.append((time.monotonic(), steal_ticks() - first))

    def per_second(self, run_start, seconds):
        """Milliseconds of vCPU time stolen in each second of a run that
        began at `run_start` (time.monotonic()), for `seconds` seconds."""
        stolen = [0.0] * max(int(seconds + 0.999), 0)
        previous = 0
        for at, ticks in self.samples:
            second = int(at - run_start)
            if ticks > previous and 0 <= second < len(stolen):
                stolen[second] += (ticks - previous) * _TICK_S * 1000.0
            previous = ticks
        return stolen


def plot(runs, png, slow_ms=10.0):
    """One panel per run: each second's p99 (line, log scale) over the host's
    steal in that second (bars). `runs` is [(title, p99_ms per second, steal
    ms per second)]; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 1.6 * len(runs) + 0.6), sharex=True, squeeze=False)
    for ax, (title, p99, stolen) in zip(axes[:, 0], runs):
        seconds = [i + 0.5 for i in range(len(stolen))]
        ax.bar(seconds, stolen, width=0.8, color="tab:red", alpha=0.5, label="host steal (ms of vCPU time)")
        ax.set_ylim(0, max(500.0, max(stolen, default=0.0) * 1.1))
        ax.set_ylabel("steal ms", fontsize=8)
        ax2 = ax.twinx()
        ax2.plot([i + 0.5 for i in range(len(p99))], p99, color="black", marker=".", label="p99 of the second (ms)")
        ax2.axhline(slow_ms, color="gray", linestyle=":", linewidth=1)
        ax2.set_yscale("log")
        ax2.set_ylabel("p99 ms", fontsize=8)
        ax.set_title(title, fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("second of the run")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True
