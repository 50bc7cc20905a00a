"""Shared fixtures: real files, the embedded model, the real eval documents when present."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
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


# --- one real train.py run, shared by the evaluate and deploy tests ---------------------------------

# Hand-made policy facts: each is trained in several phrasings and asked once more in a phrasing
# train.py never sees (the held-out question), as an employee would ask it.
TRAINED_FACTS = [
    ("Full-time employees receive 25 days of paid annual leave per year.",
     ["How many days of annual leave do full-time employees get?",
      "What is the annual leave entitlement for full-time staff?",
      "How much paid annual leave does a full-time employee receive each year?"],
     "How many annual leave days per year do I get if I work full-time?"),
    ("The probationary period is 3 months from the start date.",
     ["How long is the probationary period?",
      "What is the length of probation for new hires?",
      "How many months does probation last?"],
     "How long am I on probation after I start?"),
    ("Sick leave of more than 3 days needs Form MED-1 signed by a doctor.",
     ["Which form do I need for sick leave longer than 3 days?",
      "What document covers sick leave of more than 3 days?",
      "Which form must a doctor sign for a long sick leave?"],
     "What form does my doctor have to sign when I am off sick for over 3 days?"),
    ("Expense claims are filed in the Ledgerline portal within 30 days.",
     ["Where are expense claims filed?",
      "Which portal is used for expense claims?",
      "How many days do I have to file an expense claim?"],
     "Which system do I use to claim my expenses back?"),
    ("Paternity leave is 4 weeks at full pay.",
     ["How long is paternity leave?",
      "How many weeks of paternity leave are there?",
      "What is the paternity leave entitlement?"],
     "How many weeks off do I get when my partner has a baby?"),
]
TRAINED_GAPS = ["How much is the relocation allowance?", "Does the policy provide a company car?",
                "Is there a gym membership subsidy?", "How many days of volunteer leave are available?",
                "What is the pension contribution rate?", "Is there a bonus scheme for referrals?"]
HELD_OUT_GAPS = ["Can I bring my dog to the office?", "Is there a childcare voucher scheme?"]
# Cheap but real: one thread (a 2-core machine shared with other jobs), a small LoRA, a high learning rate.
CHECKPOINT_TRAIN_FLAGS = ["--epochs", "4", "--learning-rate", "2e-3", "--lora-r", "16", "--lora-alpha", "32",
                          "--batch-size", "8", "--eval-fraction", "0", "--threads", "1", "--logging-steps", "1"]


def _record(record_id: str, question: str, answer: str, kind: str) -> dict:
    from policytune import chat

    return {"id": record_id, "instruction": question, "input": "", "output": answer,
            "answerable": answer != chat.REFUSAL, "type": kind, "doc": "handbook.pdf", "pages": [1],
            "chunk_id": f"c-{record_id}", "headings": [], "context": ""}


def trained_records() -> list[dict]:
    """What train.py is given: several phrasings of each fact, and questions the policy leaves open."""
    from policytune import chat

    records = [_record(f"f{i}-{n}", question, fact, "numeric")
               for i, (fact, questions, _) in enumerate(TRAINED_FACTS) for n, question in enumerate(questions)]
    return records + [_record(f"gap{i}", question, chat.REFUSAL, "unanswerable") for i, question in enumerate(TRAINED_GAPS)]


def held_out_records() -> list[dict]:
    """Questions train.py never saw: a new phrasing of every trained fact, and two more questions to refuse."""
    from policytune import chat

    return ([_record(f"h{i}", held_out, fact, "numeric") for i, (fact, _, held_out) in enumerate(TRAINED_FACTS)]
            + [_record(f"hgap{i}", question, chat.REFUSAL, "unanswerable") for i, question in enumerate(HELD_OUT_GAPS)])


@dataclass(frozen=True)
class TrainedCheckpoint:
    checkpoint: Path        # what train.py wrote: adapter_model.safetensors, adapter_config.json, metrics.json, ...
    held_out: list          # instruction records (id, instruction, output, answerable, type) train.py never saw
    train_seconds: float


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, embedded_base) -> TrainedCheckpoint:
    """train.py, run once per session on the embedded base with trained_records(); its held-out questions
    are held_out_records(). Tests copy the checkpoint before writing next to it."""
    import json
    import time

    root = tmp_path_factory.mktemp("trained")
    (root / "data").mkdir()
    (root / "data" / "instructionquality.json").write_text(json.dumps(trained_records()))
    started = time.monotonic()
    result = run_script(str(ROOT / "train.py"), "--data-dir", str(root / "data"), "--checkpoint-dir",
                        str(root / "checkpoints"), *CHECKPOINT_TRAIN_FLAGS, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = root / "checkpoints"
    assert json.loads((checkpoint / "adapter_config.json").read_text())["base_model_name_or_path"] == "embedded"
    return TrainedCheckpoint(checkpoint, held_out_records(), round(time.monotonic() - started, 1))


def stage_module(script: str):
    """A stage script (evaluate.py, ...) imported as a module once per session, for in-process checks that skip a
    second interpreter start."""
    from policytune import config

    return config.load_script(ROOT / script)
