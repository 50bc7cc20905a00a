"""How busy the machine is, so a stage can take every core when nothing else needs one.

On the 2-core machine one extra thread is worth 1.5-1.7x when the other core is idle, and costs
2.7-5x when another job holds it (the threads wait for each other at every op while the scheduler
shares a core): BENCHMARKS.md. So thread counts follow the load of *other* processes.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def physical_cores() -> int:
    """Physical cores (hyper-threads share one core's matmul units, so torch gains nothing from them)."""
    import psutil

    return max(1, psutil.cpu_count(logical=False) or 1)


def cpu_ticks(proc_stat: str | None = None, self_stat: str | None = None) -> tuple[int, int, int]:
    """(busy ticks of the whole machine, all ticks, busy ticks of this process) from /proc (Linux)."""
    proc_stat = proc_stat if proc_stat is not None else Path("/proc/stat").read_text()
    self_stat = self_stat if self_stat is not None else Path("/proc/self/stat").read_text()
    fields = [int(v) for v in proc_stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    own = self_stat.rsplit(")", 1)[1].split()
    return total - idle, total, int(own[11]) + int(own[12])  # utime + stime


def others_cores(before: tuple[int, int, int], after: tuple[int, int, int], cpus: int) -> float | None:
    """Cores other processes kept busy between two cpu_ticks() samples (None when no time passed)."""
    (busy0, total0, own0), (busy1, total1, own1) = before, after
    if total1 <= total0:
        return None
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / ((total1 - total0) / cpus)


def others_busy(seconds: float = 1.0) -> float | None:
    """Cores other processes use, sampled over `seconds`; None where /proc is not there."""
    try:
        before = cpu_ticks()
        time.sleep(seconds)
        return others_cores(before, cpu_ticks(), os.cpu_count() or 1)
    except (OSError, IndexError, ValueError):
        return None


def choose_threads(current: int, maximum: int, others: float) -> int:
    """Every core while the machine is otherwise idle; one fewer while other jobs use one.

    Hysteresis keeps it from flapping: down at half a core used by others, back up below a quarter.
    """
    if maximum <= 1:
        return 1
    if current >= maximum and others >= 0.5:
        return maximum - 1
    if current < maximum and others < 0.25:
        return maximum
    return current
