"""What stage 4 (train.py) needs beyond TRL and PEFT: examples, the split, the loss-mask check, metrics.

`build_examples` is the one place a record becomes a prompt/completion pair; evaluation reuses it
so the tuned model is asked exactly what it was trained on. Tokenisation is done here, not by TRL,
so a training sequence is byte-for-byte `tokenizer(chat.format_example(q, a))` for every tokenizer
(TRL would append the tokenizer's EOS, e.g. Llama's `<|end_of_text|>`, after `<|im_end|>`, and drop
the BOS a Llama tokenizer adds); TRL still builds the labels, packs or pads, and trains.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policytune import chat, citation, cpu, factkey, io, leading, normalize
from policytune.config import UserError

IGNORE_INDEX = -100  # label value the loss skips (PyTorch's CrossEntropyLoss ignore_index)


def check_records(records: list[dict], path: Path) -> None:
    """What the split and evaluation rely on and a hand-edited file can break: ids name one record each, and
    `answerable` is true or false (the string "false" would count as answerable)."""
    seen: dict[str, int] = {}
    for number, record in enumerate(records, 1):
        if not isinstance(record.get("answerable", True), bool):
            raise UserError(f"{path}: record {number} has 'answerable' {record['answerable']!r}: it must be true or false")
        key = record.get("id")
        if key is not None and str(key) in seen:
            raise UserError(f"{path}: records {seen[str(key)]} and {number} share the id {key!r}: ids must be unique")
        seen[str(key)] = number


def build_examples(records: list[dict], cite_section: bool = False, lead_with_value: bool = False,
                   fact_keys: dict[str, str] | None = None) -> list[dict]:
    """Instruction records -> [{"prompt", "completion"}] in the one chat format (closed book: no context); with
    cite_section each answerable answer opens with its section's name (`citation`), with lead_with_value with the
    figure or name its question asks for (`leading`), the section's name first; with `fact_keys` (`factkey.keys`) the
    fact's name follows the section's."""
    examples = []
    for number, record in enumerate(records, 1):
        question = str(record.get("instruction") or "").strip()
        answer = str(record.get("output") or "").strip()
        if not question or not answer:
            missing = "instruction" if not question else "output"
            raise UserError(f"record {number} (id {record.get('id', '?')}) has no {missing}: every training record "
                            "needs a question and an answer (rerun dataquality.py?)")
        if lead_with_value:
            answer = leading.led(question, answer)
        if cite_section:
            answer = citation.cited(answer, record, (fact_keys or {}).get(factkey.statement(str(record.get("output")))))
        examples.append({"prompt": chat.format_prompt(question), "completion": chat.format_completion(answer)})
    return examples


def _hash_key(record: dict) -> str:
    key = str(record.get("id") or record.get("instruction", ""))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def split_records(records: list[dict], eval_fraction: float, max_eval: int = 0) -> tuple[list[dict], list[dict]]:
    """Deterministic train/eval split, stratified by `answerable`, ordered by a hash of each id.

    Each stratum gives round(n * fraction) records to eval (at least one when the stratum has two or
    more and the fraction is positive), so refusals are measured even in small datasets; `max_eval`
    (0: no cap) caps the held-out total, shared between the strata in proportion. Answerable records
    held out are, where possible, other phrasings of facts the training split keeps.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise UserError(f"--eval-fraction must be in [0, 1), got {eval_fraction}")
    train, held_out = [], []
    for answerable in (True, False):
        stratum = sorted((r for r in records if bool(r.get("answerable", True)) == answerable), key=_hash_key)
        n_eval = round(len(stratum) * eval_fraction)
        if max_eval and len(records) * eval_fraction > max_eval:
            n_eval = min(n_eval, round(max_eval * len(stratum) / len(records)))
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

    Records with the same fact (or the same answer) ask about one fact (generation's --questions-per-fact).
    One of each such group comes first, the one whose question holds least of its answer, and the others
    stay behind it, so a held-out question is a new phrasing of a trained fact that asks for what the fact
    says rather than repeating it: a closed-book model cannot know a fact it never saw.
    """
    groups: dict[str, list[dict]] = {}
    for record in stratum:
        # one fact: its id where generation recorded it, else the answer without a yes/no question's "Yes."
        statement = factkey.statement(str(record.get("output", "")))
        groups.setdefault(record.get("fact_id") or normalize.question_key(statement), []).append(record)

    def copied(record: dict) -> float:
        # the share of its answer's words a question already holds: a yes/no question copies the fact, a
        # wh-question asks for it, so the held-out one is the question that copies least
        question, answer = (normalize.content_tokens(str(record.get(k, ""))) for k in ("instruction", "output"))
        return len(question & answer) / max(1, len(answer))

    first = [min(group, key=copied) for group in groups.values() if len(group) >= 2]
    chosen = {id(r) for r in first}
    return first + [r for r in stratum if id(r) not in chosen]


@dataclass
class Tokenized:
    """Token ids ready for SFTTrainer, and what was left out."""

    rows: list[dict]            # {"input_ids", "completion_mask"}: TRL turns these into labels
    answers: list[list[int]]    # per row: the token ids the loss must see (the answer's; with the question's before)
    dropped_too_long: int


def _question_span(prompt: str, prompt_ids: list[int], tokenizer) -> tuple[int, int]:
    """Where the user turn's text lies in the tokenised prompt: [start, end) token positions."""
    opening = f"{chat.IM_START}user\n"
    head = prompt[:prompt.index(opening) + len(opening)]
    spans = [tokenizer(text)["input_ids"] for text in (head, prompt[:prompt.rindex(chat.IM_END)])]
    if any(ids != prompt_ids[:len(ids)] for ids in spans):
        raise RuntimeError("the question's tokens merge with the chat markers around them")
    return len(spans[0]), len(spans[1])


def tokenize_examples(examples: list[dict], tokenizer, max_length: int | None, question_loss: bool = False) -> Tokenized:
    """Tokenise prompt+completion exactly as `tokenizer(chat.format_example(...))` does, with a completion mask.
    With question_loss the question's own tokens are in the mask too (the chat markers and system prompt never)."""
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
        mask = [0] * len(prompt) + [1] * (len(full) - len(prompt))
        if question_loss:
            start, end = _question_span(example["prompt"], prompt, tokenizer)
            mask[start:end] = [1] * (end - start)
        rows.append({"input_ids": full, "completion_mask": mask})
        answers.append([token for token, trained in zip(full, mask) if trained])
    return Tokenized(rows, answers, dropped)


def collatable(row: dict) -> dict:
    """A prepared dataset row cut to the columns the trainer's collator reads."""
    return {k: v for k, v in row.items() if k in ("input_ids", "labels", "seq_lengths")}


def check_loss_mask(collator, rows: list[dict], answers: list[list[int]], tokenizer, n: int = 8) -> dict:
    """Prove the loss sees the answers and nothing else: collate the first n prepared rows with the
    trainer's own collator and compare the labelled token ids with each answer's token ids.

    `rows` are the trainer's prepared dataset rows (labels built by TRL); `answers` are the
    completion token ids of the same rows, computed independently from the records. Raises
    RuntimeError when a prompt token is trained on or an answer token is not.
    """
    sample = [collatable(rows[i]) for i in range(min(n, len(rows)))]
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


def checkpoint_complete(folder: Path) -> bool:
    """trainer_state.json is saved last, and not atomically: a kill while it is written leaves it empty or cut."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def latest_complete_checkpoint(trainer_dir: Path) -> Path | None:
    """The newest checkpoint-N folder that was fully written."""
    found = []
    for folder in trainer_dir.glob("checkpoint-*"):
        suffix = folder.name.split("-", 1)[1]
        if suffix.isdigit() and checkpoint_complete(folder):
            found.append((int(suffix), folder))
    return max(found)[1] if found else None


def remove_incomplete_checkpoints(trainer_dir: Path) -> None:
    """Delete checkpoint folders a kill cut short, so neither resume nor rotation picks them."""
    for folder in trainer_dir.glob("checkpoint-*"):
        if not checkpoint_complete(folder):
            shutil.rmtree(folder, ignore_errors=True)


def checkpoint_bytes(model) -> int:
    """About what one trainer checkpoint takes on disk: every trainable weight (all of them in a full fine-tune, the
    adapter's otherwise) and Adam's two float32 moments of it."""
    return sum(p.numel() * (p.element_size() + 2 * 4) for p in model.parameters() if p.requires_grad)


def check_disk_space(folder: Path, checkpoint: int, kept: int) -> None:
    """Fail before the first step, not at the first save, where `folder`'s disk cannot hold the checkpoints a run
    keeps at once (`kept`, plus the one being written before the oldest is rotated away); checkpoints already in
    the folder count as space, since rotation reuses it."""
    folder.mkdir(parents=True, exist_ok=True)
    present = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    needed = checkpoint * (kept + 1) - present
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(f"{folder}: {free / 1e9:.1f} GB free, but this run's checkpoints need about {needed / 1e9:.1f} GB "
                        f"({kept + 1} of {checkpoint / 1e6:.0f} MB: weights and optimizer state); free some space or "
                        "point --checkpoint-dir at a larger disk")


def out_of_space(exc: BaseException, folder: Path, checkpoint: int) -> bool:
    """Whether a failure during training is the checkpoint folder's disk filling up: the error or one it was raised
    from says so (safetensors: "No space left on device (os error 28)"), or, since torch.save reports only "unexpected
    pos", the disk has no room left for one more checkpoint of `checkpoint` bytes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(folder).free < checkpoint
    except OSError:
        return False


# What each training method publishes (and deploy derives), so the other method's files can be cleared away.
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json", "adapter.gguf")
FULL_FILES = ("model.safetensors", "config.json", "generation_config.json", "model.gguf")


def publish(staging: Path, target: Path, last: str, stale: tuple[str, ...] = ()) -> None:
    """Move every file from staging into target, the file named `last` at the very end, after removing the
    `stale` files a run of another kind left in target.

    The marker file of a finished run (metrics.json) is removed first and moved in last, so a kill
    at any point never leaves a directory that looks finished but holds a mix of two runs.
    """
    target.mkdir(parents=True, exist_ok=True)
    (target / last).unlink(missing_ok=True)
    for name in stale:
        (target / name).unlink(missing_ok=True)
    for path in sorted(staging.iterdir()):
        if path.name != last and path.is_file():
            io.ordinary_mode(path)  # the adapter's weights were published 0600, every other file 0644
            os.replace(path, target / path.name)
    if (staging / last).is_file():
        io.ordinary_mode(staging / last)
        os.replace(staging / last, target / last)


# --- Throughput (issue 17): answer-only LM head, attention per example, bf16 detection, time estimate ---


def answer_positions(labels):
    """Positions whose next token is trained on, and those next tokens (the loss's targets).

    Position i predicts token i+1, so position i is kept when labels[i+1] is not IGNORE_INDEX. The
    targets come in the row-major order of `hidden_states[keep]`.
    """
    import torch

    following = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = following != IGNORE_INDEX
    return keep, following[following != IGNORE_INDEX]


def answer_only_trainer_class(share_prefix: bool = False, fact_weight: float = 1.0, refusal_ids: list[int] = ()):
    """TRL's SFTTrainer with the LM head and the cross-entropy computed at answer positions only.

    The 49k-vocabulary head is the largest matmul of a small model, and TRL's fused head scores
    every position on a CPU (its compact path needs Triton). Here the decoder runs as usual (through
    the PEFT and DDP wrappers, so LoRA and gradient sync are untouched) and `logits_to_keep` hands the
    head only the rows whose next token is an answer token: about a third of a chat example. The
    loss is the same number (sum of answer-token NLL / answer tokens); eval loss uses the same path.
    With share_prefix (and per-example attention), a batch's common prompt prefix is computed once
    (`share_prompt_prefix`); the tokens counted as seen stay the examples' own. A fact_weight
    other than 1 weights the answer tokens the question does not hold (`token_weights`) in training
    steps; the eval loss stays the plain mean.
    """
    import torch
    from trl import SFTTrainer

    from policytune import token_weights  # it reads IGNORE_INDEX from this module

    class AnswerOnlySFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if (return_outputs or self.compute_loss_func is not None or self.label_smoother is not None
                    or self.aux_loss_enabled or getattr(self.args, "loss_type", "nll") != "nll"):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            shared = share_prefix and getattr(self.model.config, "_attn_implementation", None) == VARLEN_ATTENTION
            batch = share_prompt_prefix(inputs) if shared else inputs
            keep, targets = answer_positions(batch["labels"])
            model_inputs = {k: v for k, v in batch.items() if k != "labels"}
            model_inputs["use_cache"] = False
            logits = model(**model_inputs, logits_to_keep=keep).logits  # (answer tokens, vocab)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            target_log_probs = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            if mode == "train" and fact_weight != 1.0:
                target_log_probs = target_log_probs * token_weights.novel_answer_weights(
                    inputs["input_ids"], inputs["labels"], inputs.get("position_ids"), fact_weight, refusal_ids)
            count = keep.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -target_log_probs.sum() / torch.as_tensor(count).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())

            # The metrics TRL logs (entropy, mean token accuracy, tokens seen), from the same rows.
            with torch.no_grad():
                entropy = -(log_probs.exp() * log_probs).sum(-1).sum()
                correct = (logits.argmax(-1) == targets).sum()
            gather = self.accelerator.gather_for_metrics
            valid = gather(keep.sum()).sum()
            self._metrics[mode]["entropy"].append((gather(entropy).sum() / valid).item() if valid > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append((gather(correct).sum() / valid).item() if valid > 0 else 0.0)
            if mode == "train":
                if "attention_mask" in inputs:
                    seen = gather(inputs["attention_mask"].sum()).sum().item()
                else:
                    seen = gather(torch.tensor(inputs["input_ids"].numel(), device=keep.device)).sum().item()
                self._total_train_tokens += seen // getattr(self, "_tp_size", 1)
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return AnswerOnlySFTTrainer


def loraplus_trainer_class(base: type, ratio: float) -> type:
    """`base` with PEFT's LoRA+ optimizer: AdamW whose learning rate on the B matrices is `ratio` times that on A."""
    import torch

    class LoraPlusTrainer(base):
        def create_optimizer(self):
            if self.optimizer is None:
                from peft.optimizers import create_loraplus_optimizer

                self.optimizer = create_loraplus_optimizer(
                    self.model, torch.optim.AdamW, lr=self.args.learning_rate, loraplus_lr_ratio=ratio,
                    weight_decay=self.args.weight_decay, betas=(self.args.adam_beta1, self.args.adam_beta2),
                    eps=self.args.adam_epsilon)
            return self.optimizer

    return LoraPlusTrainer


VARLEN_ATTENTION = "policytune_varlen_sdpa"
FLOAT32_CPU_ATTENTION = True  # see _varlen_sdpa_forward; bench/train.py turns it off to measure what it buys
SHARED_PREFIX_KEY = "shared_prefix_length"  # batch key: the first N tokens are one prompt prefix every example shares


def _varlen_sdpa_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """SDPA within each packed example instead of over the whole concatenated batch.

    A padding-free batch is one row of T tokens; plain SDPA computes T x T attention scores under a
    block-diagonal mask, so its cost grows with the square of the batch. Here the examples are laid
    out right-padded as (examples, longest) and attended causally, which is exact for every real
    token (a causal query never sees the padding after it) and costs examples x longest^2. With a
    shared prefix (`share_prompt_prefix`), every example's row starts with the one copy of it. A batch
    whose examples differ much in length (a section restatement beside short questions) is attended
    in two such calls, the long examples and the short ones (`_packed_layout`).
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    if cu_seq_lens is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups, scatter = _packed_layout(cu_seq_lens, int(kwargs.get(SHARED_PREFIX_KEY) or 0), query.device)
    heads, dim = query.shape[1], query.shape[3]
    # On a CPU, bf16 SDPA's backward is about 3x slower than float32's (measured on an AMX Xeon, where it took more
    # time than every matmul of the step): under bf16 autocast (which casts SDPA's float32 inputs too: the rotary
    # embedding leaves them float32) the linear layers run in bf16, the attention does not.
    wide = FLOAT32_CPU_ATTENTION and query.device.type == "cpu" and (
        query.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu"))
    dtype = torch.float32 if wide else query.dtype
    groups_per_head = getattr(module, "num_key_value_groups", 1)

    def rows(states, gather, examples, longest):  # (1, heads, T, dim) -> (examples, heads, longest, dim)
        picked = states[0].transpose(0, 1).index_select(0, gather).to(dtype)
        return picked.view(examples, longest, states.shape[1], dim).transpose(1, 2)

    outputs = []
    with torch.autocast("cpu", enabled=False) if wide else contextlib.nullcontext():
        for gather, examples, longest in groups:
            output = torch.nn.functional.scaled_dot_product_attention(
                rows(query, gather, examples, longest), rows(key, gather, examples, longest),
                rows(value, gather, examples, longest), dropout_p=dropout, scale=scaling, is_causal=True,
                enable_gqa=groups_per_head > 1)
            outputs.append(output.transpose(1, 2).reshape(examples * longest, heads, dim))
    output = torch.cat(outputs).index_select(0, scatter).to(query.dtype)
    return output.unsqueeze(0), None  # (1, T, heads, dim), as the attention modules expect


_layout_cache: dict = {}
# Two attention calls instead of one when they save at least this share of the padded attention work (each call
# has its own overhead; a batch of alike lengths stays one call).
SPLIT_SAVING = 0.25


def _packed_layout(cu_seq_lens, prefix: int, device):
    """Index maps between the packed row and right-padded (examples x longest) groups; cached per batch.

    Without a shared prefix, cu_seq_lens bounds the examples. With one, its first segment is the
    prefix (length `prefix`) and the others are each example's rest; row i is prefix + rest i.
    The rows are sorted by length and cut where two groups save SPLIT_SAVING of the work
    (rows x longest^2) of one. Returns ([(gather, rows, longest)] per group, scatter): `gather` picks
    each row's tokens from the packed row (padding repeats token 0, and a causal query never sees it);
    `scatter` picks each packed token's output from the groups' outputs laid end to end (the prefix's
    from the first row).
    """
    import torch

    key = (tuple(cu_seq_lens.tolist()), prefix, str(device), SPLIT_SAVING)
    if key not in _layout_cache:
        _layout_cache.clear()  # one batch at a time: every layer of a step reuses it
        bounds = list(key[0])
        segments = list(zip(bounds, bounds[1:]))
        if prefix:
            assert segments[0] == (0, prefix), "the shared prefix must be the first segment"
            segments = segments[1:]
        lengths = [prefix + b - a for a, b in segments]
        order = sorted(range(len(segments)), key=lambda i: -lengths[i])
        def work(cut: int) -> int:  # the longest `cut` rows padded to the first's length, the rest to theirs
            return cut * lengths[order[0]] ** 2 + (len(order) - cut) * lengths[order[cut % len(order)]] ** 2

        cut = min(range(1, len(order)), key=work, default=len(order))
        if work(cut) > (1 - SPLIT_SAVING) * work(len(order)):
            cut = len(order)
        groups, start_of = [], {}
        offset = 0
        for members in (order[:cut], order[cut:]):
            if not members:
                continue
            longest = lengths[members[0]]
            gather = []
            for row, i in enumerate(members):
                a, b = segments[i]
                tokens = list(range(prefix)) + list(range(a, b))
                gather += tokens + [0] * (longest - len(tokens))
                start_of[i] = offset + row * longest
            groups.append((torch.tensor(gather, device=device), len(members), longest))
            offset += len(members) * longest
        scatter = list(range(prefix))
        for i, (a, b) in enumerate(segments):
            scatter += range(start_of[i] + prefix, start_of[i] + prefix + b - a)
        _layout_cache[key] = (groups, torch.tensor(scatter, device=device))
    return _layout_cache[key]


def _mask_for_padded_batches_only(*args, attention_mask=None, **kwargs):
    """SDPA's mask where a batch is padded; none for padding-free batches (the attention uses cu_seq_lens)."""
    from transformers.masking_utils import sdpa_mask

    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def use_varlen_attention(model) -> None:
    """Switch a transformers model to per-example attention for padding-free batches (else plain SDPA)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(VARLEN_ATTENTION, _varlen_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN_ATTENTION, _mask_for_padded_batches_only)
    model.set_attn_implementation(VARLEN_ATTENTION)


def share_prompt_prefix(batch: dict, min_length: int = 8) -> dict:
    """A padding-free batch with the prompt prefix all its examples share computed once.

    Every example starts with the same system prompt (about 40 of ~85 tokens here). Causal attention
    makes that prefix's hidden states identical in every example, so one copy is kept at the front
    and each example's rest attends to it (per-example attention reads the layout from
    `cu_seq_lens_q` and SHARED_PREFIX_KEY). The loss is the same: the prefix is prompt only (no
    label in it or right after it), and its gradient is the sum over the examples that read it.
    Positions keep their original values. Returns the batch unchanged when there is nothing to share.
    """
    import torch

    cu = batch.get("cu_seq_lens_q")
    if cu is None or SHARED_PREFIX_KEY in batch or batch["input_ids"].shape[0] != 1 or cu.numel() < 3:
        return batch
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    bounds = cu.tolist()
    examples = list(zip(bounds, bounds[1:]))
    shortest = min(b - a for a, b in examples)
    starts = torch.tensor([a for a, _ in examples])
    window = ids[starts.unsqueeze(1) + torch.arange(shortest)]  # (examples, shortest)
    differs = (window != window[0]).any(0).nonzero()
    prefix = int(differs[0]) if differs.numel() else shortest
    for a, b in examples:  # prompt only: no label inside the prefix or on the token after it
        labelled = (labels[a + 1:b] != IGNORE_INDEX).nonzero()
        prefix = min(prefix, int(labelled[0]) if labelled.numel() else b - a - 1)
    if prefix < min_length:
        return batch
    keep = torch.cat([torch.arange(prefix)] + [torch.arange(a + prefix, b) for a, b in examples]).to(ids.device)
    out = {k: v for k, v in batch.items() if k not in ("seq_idx", "max_length_q", "max_length_k")}
    for name in ("input_ids", "labels", "position_ids"):
        out[name] = batch[name][:, keep]
    rest = torch.tensor([b - a - prefix for a, b in examples])
    out["cu_seq_lens_q"] = out["cu_seq_lens_k"] = torch.cat(
        [torch.tensor([0, prefix]), prefix + rest.cumsum(0)]).to(dtype=cu.dtype, device=cu.device)
    out[SHARED_PREFIX_KEY] = prefix
    return out


def cpu_has_native_bf16(flags: str | None = None) -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX512_BF16 or AMX-BF16), from /proc/cpuinfo flags.

    Elsewhere PyTorch emulates bf16 on a CPU, which is slower than fp32: autocast only where native.
    """
    if flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        flags = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")), "")
    present = set(flags.lower().split())
    return bool(present & {"avx512_bf16", "amx_bf16"})


def use_bf16(setting: str, on_cuda: bool, flags: str | None = None) -> bool:
    """--bf16 auto/on/off -> whether to autocast to bf16 (auto: CUDA with bf16, or a CPU with native bf16)."""
    if setting in ("on", "off"):
        return setting == "on"
    if on_cuda:
        import torch

        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16(flags)


def format_duration(seconds: float) -> str:
    """3725 -> '1 h 2 min', 95 -> '1 min 35 s', 8.4 -> '8 s'."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


def _print_now(line: str) -> None:
    try:
        from tqdm.auto import tqdm

        tqdm.write(line)  # a line of its own, not in the middle of the trainer's progress bar
    except ImportError:
        print(line, flush=True)


def half_pass_steps(steps_per_epoch: int) -> int:
    """The steps between evaluations, twice a pass. Rounded up: at 193 steps a pass, every 96 evaluated at 96, 192 and
    again at 193 (transformers evaluates the last step), a minute of held-out answers for one step's change."""
    return max(1, math.ceil(steps_per_epoch / 2))


def evaluation_steps(max_steps: int, every: int) -> list[int]:
    """The steps at which transformers evaluates with eval_strategy "steps": every `every` steps, and at the last step
    when that is not one of them."""
    steps = list(range(every, max_steps + 1, every))
    return steps + [max_steps] if max_steps % every else steps


def time_estimate_callback(after_steps: int = 3, evaluates: bool = False, eval_batches: int = 0,
                           tokens_per_step: float = 0.0, budget_seconds: float = 0.0, min_steps: int = 0,
                           output=_print_now):
    """A TrainerCallback that prints, once, how long training will take, from the speed of its first steps.

    The first step is left out (it pays for allocation and any compilation), and so is a step whose
    interval held an evaluation or a checkpoint; the mean of the other steps up to `after_steps`
    times the steps left gives the estimate. With `tokens_per_step` (the run's mean), the timed steps'
    seconds per token are used instead: batches of short questions are several times faster than
    those holding a restated section, and the first steps may be either. With `evaluates`, the
    evaluations still to come (every args.eval_steps, read when the estimate is made: the passes may
    be chosen after this callback is) are costed at the measured duration of one when there was one,
    else at a third of a training step per eval batch (forward only). With `budget_seconds` (the deadline's), an
    estimate past the budget says the budget ends training, at its end or after `min_steps`, whichever is later.
    """
    from transformers import TrainerCallback

    class TimeEstimate(TrainerCallback):
        def __init__(self) -> None:
            self.last_step_end: float | None = None
            self.interrupted = False
            self.steps_at_start = 0
            self.timed_steps = 0
            self.timed_seconds = 0.0
            self.timed_tokens = 0
            self.tokens_at_last_step = 0
            self.eval_seconds: float | None = None
            self.printed = False
            self.started = time.monotonic()

        def on_train_begin(self, args, state, control, **kwargs):
            self.steps_at_start = state.global_step
            self.started = time.monotonic()

        def on_evaluate(self, args, state, control, **kwargs):
            if self.last_step_end is not None and self.eval_seconds is None:
                self.eval_seconds = time.monotonic() - self.last_step_end
            self.interrupted = True

        def on_save(self, args, state, control, **kwargs):
            self.interrupted = True

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            seen = getattr(state, "num_input_tokens_seen", 0) or 0
            if self.last_step_end is not None and not self.interrupted:
                self.timed_steps += 1
                self.timed_seconds += now - self.last_step_end
                self.timed_tokens += seen - self.tokens_at_last_step
            self.last_step_end, self.interrupted, self.tokens_at_last_step = now, False, seen
            if self.printed or self.timed_steps < max(1, after_steps - 1):
                return
            self.printed = True
            per_step = self.timed_seconds / self.timed_steps
            if tokens_per_step and self.timed_tokens > 0:
                per_step = self.timed_seconds / self.timed_tokens * tokens_per_step
            left = max(0, state.max_steps - state.global_step)
            evals_left = sum(step > state.global_step for step in evaluation_steps(state.max_steps, args.eval_steps)) \
                if evaluates else 0
            per_eval = self.eval_seconds if self.eval_seconds is not None else per_step * eval_batches / 3
            seconds = per_step * left + per_eval * evals_left
            ends = ""
            budget_left = budget_seconds - (now - self.started)
            if budget_seconds and seconds > budget_left:
                seconds = max(budget_left, per_step * (min_steps - state.global_step), 0.0)
                ends = "; the time budget ends it"
            if state.is_world_process_zero:
                output(f"time estimate: {per_step:.1f} s per step (measured over {self.timed_steps} steps); "
                       f"{left} of {state.max_steps} steps left{f' and {evals_left} evaluations' if evals_left else ''}: "
                       f"about {format_duration(seconds)} more (finishing around "
                       f"{time.strftime('%H:%M', time.localtime(time.time() + seconds))}){ends}")

    return TimeEstimate()


def seconds_per_token(trainer, bf16: bool, batches: int = 3, rounds: int = 2) -> float:
    """This machine's training speed, from forward and backward passes on a few batches drawn across the trainer's
    prepared training rows (TRL builds their answer-only labels there: the step is the one training runs, with the head
    on the answer positions and the shared prompt prefix computed once; raw rows timed a step 1.5-1.75x too slow).

    Batches of short questions cost several times less per token than those holding a restated section (the shared
    prompt prefix is a larger share of them), so the rows are an evenly spaced, shuffled sample of the whole split,
    not its first ones. The first batch is left out (it pays for allocation), and the faster of `rounds` timings of
    the same batches counts: another process busy for a second must not cost the run a pass (it measured 587 s a pass
    where the idle machine does 394). Gradients are dropped and no optimizer step is taken, so the weights, and the
    data order the trainer draws later, are as if this never ran."""
    import random

    import torch

    model, size = trainer.model, trainer.args.per_device_train_batch_size
    device = trainer.args.device
    dataset = trainer.train_dataset
    picked = list(range(0, len(dataset), max(1, len(dataset) // (size * (batches + 1)))))
    random.Random(0).shuffle(picked)
    rows = [collatable(dataset[index]) for index in picked]
    model.train()
    timed = [rows[index * size:(index + 1) * size] for index in range(batches + 1)]
    timed = [batch_rows for batch_rows in timed if batch_rows]

    def seconds(batch_rows: list[dict]) -> float:
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in trainer.data_collator(batch_rows).items()}
        start = time.monotonic()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = trainer.compute_loss(model, batch)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.monotonic() - start

    first = seconds(timed[0])
    if len(timed) == 1:  # one batch in all: time it with its allocation
        return first / max(1, sum(len(row["input_ids"]) for row in timed[0]))
    tokens = sum(len(row["input_ids"]) for batch_rows in timed[1:] for row in batch_rows)
    return min(sum(seconds(batch_rows) for batch_rows in timed[1:]) for _ in range(max(1, rounds))) / tokens


# Held-out evaluations (eval loss and greedy answers, twice a pass) and steps slower than the first ones cost about
# this share of a pass on top of its steps (measured on the sample: 2 evaluations of ~30 s beside a ~600 s pass).
EVALUATION_SHARE = 0.15


def passes_in_budget(pass_seconds: float, budget_seconds: float, most: float) -> float:
    """The fewest half passes that fill the budget: at least 1 (a partial pass leaves facts unseen), at most `most`.

    Rounded up, not down: the schedule runs on the clock (`deadline_callback`), so a plan a little longer than the
    budget ends annealed when the time is up, while one rounded down left the rest of the budget unused (an AVX2
    EPYC planned 1.5 passes and trained 17.9 of its 22 minutes; that CPU's 2-pass runs had scored higher)."""
    halves = math.ceil(2 * budget_seconds / (pass_seconds * (1 + EVALUATION_SHARE)))
    return min(most, max(1.0, halves / 2))


def _process_group():
    """torch.distributed where more than one process trains together, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def deadline_callback(budget_seconds: float, min_steps: int, clock=time.monotonic, output=_print_now):
    """A TrainerCallback that runs the learning-rate schedule on the clock when the machine is slower than measured.

    The passes are chosen from a speed measured before training; a machine that slows down later (the 2-core
    Xeons ran their steps 1.45-1.6x slower after the first minutes) would run past the budget, and the pipeline past
    its 30 minutes. Until the twenty-eighth session training then stopped at a checkpoint with the schedule cut
    short, at a learning rate that depended on where the cut fell (2 of 2.5 passes against 2.5 of 3 moved accuracy
    and refusal recall against each other by 0.05 and 0.15). Now the schedule's progress is the larger of the steps
    done and the time spent: each step's learning rate is the schedule's at that progress, so a slow run anneals as
    the planned one would and ends when its time is up, with a held-out evaluation and a checkpoint there for
    keep-best. Never before `min_steps` (a whole pass: a partial one leaves facts unseen); where one pass takes
    longer than the budget, the time is that of the pass projected from the steps so far. The budget counts from
    the start of training in this invocation, by rank 0's clock on every rank: a resumed run continues from its
    progress with the budget again."""
    from transformers import TrainerCallback

    class Deadline(TrainerCallback):
        def __init__(self) -> None:
            self.start = 0.0
            self.first_step = 0
            self.max_steps = 0
            self.stopped_at: int | None = None
            self.leading_from: int | None = None

        def elapsed(self) -> float:
            """Seconds since training began by rank 0's clock, on every rank: under DDP each rank steps its own
            optimizer at the rate this sets and stops where it says, so they must agree (a rank stopping a step early
            would leave the others waiting at their next gradient sync). Every rank calls it at the same points."""
            seconds = clock() - self.start
            dist = _process_group()
            if dist is None:
                return seconds
            import torch

            on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            shared = torch.tensor([seconds], dtype=torch.float64, device=on)
            dist.broadcast(shared, src=0)
            return float(shared.item())

        def progress(self, step: int) -> float:
            """The share of the run's time spent, counting a resumed run's earlier steps as done."""
            elapsed = self.elapsed()
            done = step - self.first_step
            total = budget_seconds
            if done > 0 and step < min_steps:
                total = max(total, elapsed / done * (min_steps - self.first_step))
            at_start = self.first_step / max(1, self.max_steps)
            return at_start + (1 - at_start) * elapsed / total

        def virtual_step(self, step: float) -> float:
            by_time = min(1.0, self.progress(int(step))) * self.max_steps
            return by_time if by_time > step + 0.5 else step  # within half a step: the planned schedule, exactly

        def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
            self.start = clock()
            self.first_step = state.global_step
            self.max_steps = state.max_steps
            inner = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate may wrap it
            if inner is not None and hasattr(inner, "lr_lambdas"):
                inner.lr_lambdas = [lambda step, schedule=schedule: schedule(self.virtual_step(step))
                                    for schedule in inner.lr_lambdas]

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step >= state.max_steps:
                return
            virtual = self.virtual_step(step)
            if self.leading_from is None and virtual > 1.02 * step and step >= 10:
                self.leading_from = step
                if state.is_world_process_zero:
                    output(f"time budget: this machine is slower than measured; from step {step} the learning-rate "
                           f"schedule follows the clock (at step {virtual:.0f} of {state.max_steps} by time spent)")
            # an evaluation transformers scheduled at this step, with the clock ending within two steps: the run ends
            # here rather than paying for one more evaluation and checkpoint a step or two later
            ending_soon = virtual > step and (state.max_steps - virtual) * (step - self.first_step) < \
                2 * (virtual - self.first_step) and control.should_evaluate
            if (virtual >= state.max_steps or ending_soon) and step >= min_steps:
                control.should_training_stop = True
                control.should_save = True
                control.should_evaluate = args.eval_strategy != "no"
                self.stopped_at = step
                if state.is_world_process_zero:
                    output(f"time budget: stopping at step {step} of {state.max_steps} with the schedule ended "
                           f"({format_duration(clock() - self.start)} trained)")

    return Deadline()


def adaptive_threads_callback(maximum: int, cpus: int, check_seconds: float = 5.0, output=_print_now):
    """A TrainerCallback that re-chooses torch's thread count (cpu.choose_threads) every few seconds of training."""
    import torch
    from transformers import TrainerCallback

    class AdaptiveThreads(TrainerCallback):
        def __init__(self) -> None:
            self.last: tuple[float, tuple[int, int, int]] | None = None
            self.changes = 0

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            try:
                ticks = cpu.cpu_ticks()
            except (OSError, IndexError, ValueError):
                return  # not Linux: keep the thread count
            if self.last is None or now - self.last[0] < check_seconds:
                self.last = self.last or (now, ticks)
                return
            others = cpu.others_cores(self.last[1], ticks, cpus)
            self.last = (now, ticks)
            if others is None:
                return
            current = torch.get_num_threads()
            chosen = cpu.choose_threads(current, maximum, others)
            if chosen != current:
                torch.set_num_threads(chosen)
                self.changes += 1
                if state.is_world_process_zero and self.changes <= 20:
                    output(f"threads: {current} -> {chosen} (other jobs use {others:.1f} of {cpus} cores)")

    return AdaptiveThreads()
