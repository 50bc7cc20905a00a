"""What every benchmark shares: the machine description, one measurement per fresh process (so its
peak RSS is its own), the fp32 matmul peak, tables, and results written to bench/results/.

Machines here are shared and noisy, so a bench compares A and B measured in the same run,
interleaved (A, B, A, B, ...), and keeps the best of each: the best run is the one least disturbed
by other work, and a ratio of two bests from one run is the figure worth quoting.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from policytune import config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("POLICYTUNE_BENCH_RESULTS") or ROOT / "bench" / "results")  # tests point it elsewhere
SHARED_DOCS = ROOT.parent / "shared" / "eval-docs"
SAMPLE_PDF = ROOT / "data" / "sample_policy.pdf"

# Enough variety of length and answerability to look like an eval split of a leave policy.
QUESTIONS = [
    "How many days of annual leave does a full-time employee get?",
    "Can unused annual leave be carried over to the next year?",
    "How much notice must I give before taking annual leave?",
    "How many weeks of paid parental leave are provided?",
    "Who approves a request for unpaid leave?",
    "Is there a waiting period before new employees can take sick leave?",
    "What documentation is required for sick leave longer than three days?",
    "How many days of bereavement leave are granted for a close family member?",
    "Does the company pay for gym memberships?",
    "What is the policy on bringing dogs to the office?",
    "How is leave accrued for part-time employees?",
    "Can I take leave during my probation period?",
    "Which form do I use to request jury duty leave?",
    "What happens to accrued leave when I resign?",
    "Is study leave paid?",
    "How many public holidays are observed each year?",
]

if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first on the path, not the project
    sys.path.insert(1, str(ROOT))


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where a result was measured: CPU, cores, load at the start (other users of a shared box)."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2), "when_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    VmHWM first: ru_maxrss survives fork + exec on Linux, so a spawned child would report at least
    the parent's size at the fork (e.g. a parent that had imported docling).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(fn: Callable[..., dict], *args: Any) -> dict:
    """Run fn(*args) in a new spawned process and return its dict plus that process's peak RSS.

    A fresh process per measurement keeps one variant's memory (or warm caches) from leaking into the
    other's figure; fn must live at module level in an importable script.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measured, fn, *args).result()


def _measured(fn: Callable[..., dict], *args: Any) -> dict:
    result = fn(*args)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def matmul_peak_gflops(threads: int, size: int = 1024, seconds: float = 1.5) -> float:
    """Best fp32 GFLOP/s of torch.matmul on size x size matrices with `threads` threads.

    This is the ceiling training can reach on this machine: a LoRA step is mostly such matmuls.
    The best of many short repeats is taken, as the least disturbed by other work on the box.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size, dtype=torch.float32)
        b = torch.randn(size, size, dtype=torch.float32)
        out = torch.empty(size, size, dtype=torch.float32)
        for _ in range(3):  # warm-up: page in, pick kernels
            torch.matmul(a, b, out=out)
        best = float("inf")
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            torch.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - started)
        return 2 * size ** 3 / best / 1e9
    finally:
        torch.set_num_threads(previous)


def best(values: list[float], higher_is_better: bool = True) -> float:
    """The least disturbed of repeated measurements."""
    return max(values) if higher_is_better else min(values)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of `rows` (floats rounded sensibly), ready to paste into BENCHMARKS.md."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def report(name: str, results: dict) -> Path:
    """Write bench/results/<name>.json (with the machine) and return its path."""
    from policytune import io

    path = RESULTS / f"{name}.json"
    io.write_json_atomic(path, {"bench": name, "machine": machine(), "command": " ".join(["uv run python", *sys.argv]),
                                **results})
    print(f"results -> {path}", flush=True)
    return path


def goal(text: str, met: bool) -> str:
    """One line saying whether a goal from issue 10 is met."""
    return f"goal {'MET' if met else 'NOT MET'}: {text}"


def load_stage(script: str):
    """Import a top-level stage script (train.py, evaluate.py, ...) by path: `import evaluate` from
    bench/evaluate.py would import the bench itself."""
    return config.load_script(ROOT / script)
