"""Shared fixtures: real files, the embedded model, the real eval documents when present."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DOCS = ROOT.parent / "shared" / "eval-docs"
SAMPLE_PDF = ROOT / "data" / "sample_policy.pdf"
# Per-test timeout of tests marked slow (pyproject.toml's `timeout` is the default for the others).
SLOW_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items):
    """Slow tests get a longer timeout, unless they set their own with @pytest.mark.timeout."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


def run_script(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a project script the way a user does, capturing output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def embedded_base():
    from policytune import models

    return models.resolve()


@pytest.fixture(scope="session")
def shared_docs() -> Path:
    if not SHARED_DOCS.is_dir():
        pytest.skip("../shared/eval-docs not present")
    return SHARED_DOCS
