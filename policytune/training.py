"""What stage 4 (train.py) needs beyond TRL and PEFT: examples, the split, the loss-mask check, metrics.

`build_examples` is the one place a record becomes a prompt/completion pair; evaluation reuses it
so the tuned model is asked exactly what it was trained on. Tokenisation is done here, not by TRL,
so a training sequence is byte-for-byte `tokenizer(chat.format_example(q, a))` for every tokenizer
(TRL would append the tokenizer's EOS, e.g. Llama's `<|end_of_text|>`, after `<|im_end|>`, and drop
the BOS a Llama tokenizer adds); TRL still builds the labels, packs or pads, and trains.
"""
from __future__ import annotations

import hashlib
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policytune import chat, normalize
from policytune.config import UserError

IGNORE_INDEX = -100  # label value the loss skips (PyTorch's CrossEntropyLoss ignore_index)


def build_examples(records: list[dict]) -> list[dict]:
    """Instruction records -> [{"prompt", "completion"}] in the one chat format (closed book: no context)."""
    examples = []
    for number, record in enumerate(records, 1):
        question = str(record.get("instruction") or "").strip()
        answer = str(record.get("output") or "").strip()
        if not question or not answer:
            missing = "instruction" if not question else "output"
            raise UserError(f"record {number} (id {record.get('id', '?')}) has no {missing}: every training record "
                            "needs a question and an answer (rerun dataquality.py?)")
        examples.append({"prompt": chat.format_prompt(question), "completion": chat.format_completion(answer)})
    return examples


def _hash_key(record: dict) -> str:
    key = str(record.get("id") or record.get("instruction", ""))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def split_records(records: list[dict], eval_fraction: float) -> tuple[list[dict], list[dict]]:
    """Deterministic train/eval split, stratified by `answerable`, ordered by a hash of each id.

    Each stratum gives round(n * fraction) records to eval (at least one when the stratum has two or
    more and the fraction is positive), so refusals are measured even in small datasets. Answerable
    records held out are, where possible, other phrasings of facts the training split keeps.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise UserError(f"--eval-fraction must be in [0, 1), got {eval_fraction}")
    train, held_out = [], []
    for answerable in (True, False):
        stratum = sorted((r for r in records if bool(r.get("answerable", True)) == answerable), key=_hash_key)
        n_eval = round(len(stratum) * eval_fraction)
        if eval_fraction > 0 and n_eval == 0 and len(stratum) >= 2:
            n_eval = 1
        if answerable:
            stratum = _facts_first(stratum)
        held_out += stratum[:n_eval]
        train += stratum[n_eval:]
    # Keep the input order inside each split: stable files, easy diffs between runs.
    order = {id(r): i for i, r in enumerate(records)}
    train.sort(key=lambda r: order[id(r)])
    held_out.sort(key=lambda r: order[id(r)])
    return train, held_out


def _facts_first(stratum: list[dict]) -> list[dict]:
    """Order answerable records so the held-out ones ask about a fact that training still teaches.

    Records with the same answer ask about one fact (generation's --questions-per-fact). One of each
    such group comes first, in hash order, and the others stay behind it, so a held-out question is
    a new phrasing of a trained fact: a closed-book model cannot know a fact it never saw.
    """
    groups: dict[str, list[dict]] = {}
    for record in stratum:
        groups.setdefault(normalize.question_key(str(record.get("output", ""))), []).append(record)
    first = [group[0] for group in groups.values() if len(group) >= 2]
    chosen = {id(r) for r in first}
    return first + [r for r in stratum if id(r) not in chosen]


@dataclass
class Tokenized:
    """Token ids ready for SFTTrainer, and what was left out."""

    rows: list[dict]            # {"input_ids", "completion_mask"}: TRL turns these into labels
    answers: list[list[int]]    # per row: the answer's token ids, exactly what the loss must see
    dropped_too_long: int


def tokenize_examples(examples: list[dict], tokenizer, max_length: int | None) -> Tokenized:
    """Tokenise prompt+completion exactly as `tokenizer(chat.format_example(...))` does, with a completion mask."""
    rows, answers, dropped = [], [], 0
    for example in examples:
        full = tokenizer(example["prompt"] + example["completion"])["input_ids"]
        prompt = tokenizer(example["prompt"])["input_ids"]
        if full[: len(prompt)] != prompt:
            # A token merging across the prompt/answer boundary would make the answer start mid-token.
            raise RuntimeError("tokenised prompt is not a prefix of prompt+completion: "
                               f"{tokenizer.decode(prompt[-3:])!r} vs {tokenizer.decode(full[len(prompt) - 3:len(prompt)])!r}")
        if max_length and len(full) > max_length:
            dropped += 1  # truncating would cut the answer or its end marker: better not to train on it
            continue
        rows.append({"input_ids": full, "completion_mask": [0] * len(prompt) + [1] * (len(full) - len(prompt))})
        answers.append(full[len(prompt):])
    return Tokenized(rows, answers, dropped)


def check_loss_mask(collator, rows: list[dict], answers: list[list[int]], tokenizer, n: int = 8) -> dict:
    """Prove the loss sees the answers and nothing else: collate the first n prepared rows with the
    trainer's own collator and compare the labelled token ids with each answer's token ids.

    `rows` are the trainer's prepared dataset rows (labels built by TRL); `answers` are the
    completion token ids of the same rows, computed independently from the records. Raises
    RuntimeError when a prompt token is trained on or an answer token is not.
    """
    sample = [{k: v for k, v in rows[i].items() if k in ("input_ids", "labels", "seq_lengths")}
              for i in range(min(n, len(rows)))]
    expected = [t for ids in answers[: len(sample)] for t in ids]
    labels = collator(sample)["labels"]
    trained = labels[labels != IGNORE_INDEX].tolist()
    if trained != expected:
        extra = len(trained) - len(expected)
        hint = f" ({extra} more label tokens than answer tokens: the prompt is being trained on)" if extra > 0 else ""
        raise RuntimeError(
            f"loss mask check failed: {len(trained)} label tokens in the first {len(sample)} examples, "
            f"{len(expected)} answer tokens{hint}; the collator or the record format is not completion-only")
    return {"checked_examples": len(sample), "answer_tokens": len(expected), "label_tokens": len(trained)}


def peak_memory() -> dict:
    """Peak resident memory of this process (MB), and peak GPU memory where there is a GPU."""
    import torch

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def metrics_callback():
    """A TrainerCallback that times this run and counts its tokens (resume-aware) for metrics.json."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.monotonic()
            self.tokens_at_start = 0
            self.step_at_start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            # On resume the counter continues from the checkpoint; tokens/s counts this run only.
            self.tokens_at_start = state.num_input_tokens_seen or 0
            self.step_at_start = state.global_step

        def summary(self, state) -> dict[str, Any]:
            seconds = time.monotonic() - self.started
            tokens = (state.num_input_tokens_seen or 0) - self.tokens_at_start
            return {"train_seconds": round(seconds, 2), "steps_this_run": state.global_step - self.step_at_start,
                    "tokens": int(tokens),
                    "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else 0.0}

    return MetricsCallback()


def latest_complete_checkpoint(trainer_dir: Path) -> Path | None:
    """The newest checkpoint-N folder that was fully written (trainer_state.json is saved last)."""
    found = []
    for folder in trainer_dir.glob("checkpoint-*"):
        suffix = folder.name.split("-", 1)[1]
        if suffix.isdigit() and (folder / "trainer_state.json").is_file():
            found.append((int(suffix), folder))
    return max(found)[1] if found else None


def remove_incomplete_checkpoints(trainer_dir: Path) -> None:
    """Delete checkpoint folders a kill cut short, so neither resume nor rotation picks them."""
    for folder in trainer_dir.glob("checkpoint-*"):
        if not (folder / "trainer_state.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)


def publish(staging: Path, target: Path, last: str) -> None:
    """Move every file from staging into target, the file named `last` at the very end.

    The marker file of a finished run (metrics.json) is removed first and moved in last, so a kill
    at any point never leaves a directory that looks finished but holds a mix of two runs.
    """
    target.mkdir(parents=True, exist_ok=True)
    (target / last).unlink(missing_ok=True)
    for path in sorted(staging.iterdir()):
        if path.name != last and path.is_file():
            os.replace(path, target / path.name)
    if (staging / last).is_file():
        os.replace(staging / last, target / last)
