"""Whole-pipeline benchmark: wall time and peak RSS of every stage on the sample, run exactly as
pipeline.py runs them (its own stage plan and command lines), into a scratch data directory.

    uv run python bench/pipeline.py                                   # sample PDF, small train/eval
    uv run python bench/pipeline.py --pdf my.pdf -- --train.epochs 3  # stage flags after --

Stage flags use pipeline.py's `--<stage>.<flag> value` form. The defaults keep training and
evaluation small (a few steps, a few questions) so the figure is about the pipeline's plumbing and
per-stage cost, not a full training run. There is no baseline here: the table is the breakdown.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import common

from policytune import config

# Small sizes so the whole pipeline fits a benchmark run; pass your own after `--` to override.
SMALL = ["--train.max-steps", "4", "--evaluate.limit", "8"]


@dataclass
class PipelineBenchConfig(config.Base):
    pdf: list[str] = field(default_factory=lambda: [str(common.SAMPLE_PDF)], metadata={"help": "policy document(s)"})
    to_stage: str = field(default="deploy", metadata={"help": "last stage to time"})


def run_stage(command: list[str]) -> tuple[int, float, float]:
    """Run one stage script; returns (exit code, wall seconds, peak RSS MiB of that process)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *command], cwd=common.ROOT)
    _, status, usage = os.wait4(process.pid, 0)  # the child's own rusage, not all children's
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024


def main(cfg: PipelineBenchConfig, stage_flags: list[str]) -> None:
    config.show(cfg)
    stage = common.load_stage("pipeline.py")
    _, extra = stage.split_stage_flags(SMALL + stage_flags)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
        plan_cfg = stage.PipelineConfig(pdf=cfg.pdf, data_dir=str(Path(scratch) / "data"),
                                        checkpoint_dir=str(Path(scratch) / "checkpoints"),
                                        reports_dir=str(Path(scratch) / "reports"))
        for step in stage.plan(plan_cfg, extra):
            print(f"== {step.name}: python {' '.join(step.command)}", flush=True)
            code, seconds, rss = run_stage(step.command)
            rows.append({"stage": step.name, "seconds": seconds, "peak RSS MiB": rss, "exit": code})
            if code != 0:
                print(f"stage {step.name} failed (exit {code}); later stages not timed", flush=True)
                break
            if step.name == cfg.to_stage:
                break
    total = sum(r["seconds"] for r in rows)
    rows.append({"stage": "total", "seconds": total, "peak RSS MiB": max(r["peak RSS MiB"] for r in rows), "exit": ""})
    print(common.table(rows))
    common.report("pipeline", {"config": config.as_dict(cfg), "stage_flags": SMALL + stage_flags, "rows": rows})


if __name__ == "__main__":
    own, _, passed = [], None, []
    argv = sys.argv[1:]
    if "--" in argv:
        own, passed = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    else:
        own = argv
    config.run(lambda cfg: main(cfg, passed), PipelineBenchConfig, own)
