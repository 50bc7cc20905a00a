"""Smoke test of the benchmarks' shared machinery and one bench end to end at tiny size (not a benchmark)."""
from __future__ import annotations

import json
import sys

from conftest import ROOT, SAMPLE_PDF, run_script

sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402


def test_table_rounds_and_aligns_columns():
    text = common.table([{"variant": "a", "s/page": 0.123456}, {"variant": "longer", "s/page": 1234.5}])
    lines = text.splitlines()
    assert lines[0].startswith("| variant") and "0.123" in text and "1234" in text
    assert len({len(line) for line in lines}) == 1


def test_matmul_peak_is_a_positive_rate():
    assert common.matmul_peak_gflops(1, size=128, seconds=0.05) > 0


def test_parse_bench_writes_results_with_the_machine(tmp_path):
    result = run_script("bench/parse.py", "--pdf", str(SAMPLE_PDF), "--variants", "pypdfium2",
                        "--rounds", "1", "--repeats", "0", env={"POLICYTUNE_BENCH_RESULTS": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| pypdfium2" in result.stdout
    saved = json.loads((tmp_path / "parse.json").read_text())
    assert saved["pages"] > 0 and saved["machine"]["cores"] >= 1
    assert saved["rows"][0]["peak RSS MiB"] > 0


def test_unknown_variant_is_a_one_line_error():
    result = run_script("bench/parse.py", "--variants", "magic", timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: --variants")
