"""How many CPU cores other processes leave free: the thread count that shares a busy machine.

Threads beyond the free cores are worse than useless on a shared machine: each parallel step
waits for its slowest thread, and a thread whose core another process holds is descheduled
for a whole time slice (measured: two 2-thread trainings on 2 cores 4-13x slower each, where
sharing fairly costs 2x). ``FreeCores`` compares the machine's busy time (``/proc/stat``)
with this process's own CPU time between two calls, so it follows other processes as they
start and stop. Linux only; elsewhere every core counts as free.
"""

from __future__ import annotations

import os
import time

MIN_INTERVAL = 0.05  # seconds between samples: /proc/stat counts in 10 ms ticks


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (steal included), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


class FreeCores:
    """Cores not busy with other processes over the interval since the previous call."""

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores or os.cpu_count() or 1
        self._last = self._sample()
        self._free = self.cores

    @staticmethod
    def _sample() -> tuple[float, float, float | None]:
        return time.perf_counter(), time.process_time(), _machine_busy_seconds()

    def __call__(self) -> int:
        """Free cores, at least 1; the previous answer when called again within
        MIN_INTERVAL (too short to measure)."""
        if time.perf_counter() - self._last[0] < MIN_INTERVAL:
            return self._free
        now = self._sample()
        if now[2] is None or self._last[2] is None:
            return self.cores
        wall = now[0] - self._last[0]
        others = (now[2] - self._last[2]) - (now[1] - self._last[1])
        self._last = now
        self._free = max(1, min(self.cores, round(self.cores - max(0.0, others) / wall)))
        return self._free
