"""Smoke test of the benchmarks' shared machinery and one bench end to end at tiny size (not a benchmark)."""
from __future__ import annotations

import json
import os
import sys

import pypdfium2
import pytest

from conftest import ROOT, SAMPLE_PDF, run_script

sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402


def test_table_rounds_and_aligns_columns():
    text = common.table([{"variant": "a", "s/page": 0.123456}, {"variant": "longer", "s/page": 1234.5}])
    lines = text.splitlines()
    assert lines[0].startswith("| variant") and "0.123" in text and "1234" in text
    assert len({len(line) for line in lines}) == 1


def test_matmul_peak_counts_two_n_cubed_flops_over_the_fastest_repeat_and_restores_threads(monkeypatch):
    """A fake clock that moves only when a matmul runs makes each repeat's time known, so the figure is
    checked without timing anything: repeats of 4, 2, 3 and 5 ms on 128 x 128 matrices within a
    9.5 ms budget give 2 * 128**3 FLOP / 2 ms = 2.097152 GFLOP/s."""
    import torch

    durations = iter([1.0, 1.0, 1.0, 0.004, 0.002, 0.003, 0.005])  # 3 warm-ups, then the repeats
    now = [100.0]
    real_matmul = torch.matmul

    def matmul(*args, **kwargs):
        result = real_matmul(*args, **kwargs)
        now[0] += next(durations)
        return result

    monkeypatch.setattr(common.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(torch, "matmul", matmul)
    threads = torch.get_num_threads()
    assert common.matmul_peak_gflops(1, size=128, seconds=0.0095) == pytest.approx(2 * 128 ** 3 / 0.002 / 1e9)
    assert next(durations, None) is None, "the repeats stop at the deadline, not before"
    assert torch.get_num_threads() == threads


def test_parse_bench_writes_results_with_the_machine(tmp_path):
    result = run_script("bench/parse.py", "--pdf", str(SAMPLE_PDF), "--variants", "pypdfium2",
                        "--rounds", "1", "--repeats", "0", env={"POLICYTUNE_BENCH_RESULTS": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| pypdfium2" in result.stdout
    saved = json.loads((tmp_path / "parse.json").read_text())
    document = pypdfium2.PdfDocument(str(SAMPLE_PDF))
    pages = len(document)
    characters = sum(len(page.get_textpage().get_text_range()) for page in document)
    document.close()
    assert saved["pages"] == pages and saved["machine"]["cores"] == os.cpu_count()
    row = saved["rows"][0]
    assert row["variant"] == "pypdfium2" and row["pages"] == pages and row["characters"] == characters
    # The measuring process's own peak, in MiB: a Python process with pypdfium2 loaded, not bytes or GiB.
    assert 10 < row["peak RSS MiB"] < 4096


def test_unknown_variant_is_a_one_line_error():
    result = run_script("bench/parse.py", "--variants", "magic", timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: --variants")
