"""Each pass asks a fact's questions with a few words left out (train.py --question-noise).

Repeated passes over the same data show a fact in the same two or three wordings every time, and the
model learns to recall it from those exact words. Leaving out a different few words of each question
on every pass (word dropout, applied to the question only, never to the system prompt or the answer)
makes no single word the key to the fact. It costs no tokens: the batch only gets shorter.
"""
from __future__ import annotations

from dataclasses import dataclass

from policytune import chat
from policytune.training import IGNORE_INDEX


@dataclass
class Layout:
    """Where a question sits in a tokenised chat example, which tokens start a word, and the refusal."""

    user_header: list[int]    # <|im_start|>user\n
    im_end: int
    starts_word: list[bool]   # per vocabulary id: a leading space marker (GPT-2 "Ġ", SentencePiece "▁")
    has_letter: list[bool]    # per vocabulary id: punctuation alone ends a question and is never left out
    refusal: list[int]        # the refusal's completion tokens


def layout(tokenizer) -> Layout:
    header = tokenizer(chat.IM_START + "user\n", add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return Layout(user_header=header, im_end=tokenizer.convert_tokens_to_ids(chat.IM_END),
                  starts_word=[p.startswith(("Ġ", "▁")) for p in pieces],
                  has_letter=[any(ch.isalnum() for ch in p) for p in pieces],
                  refusal=tokenizer(chat.format_completion(chat.REFUSAL), add_special_tokens=False)["input_ids"])


def question_span(ids: list[int], lay: Layout) -> tuple[int, int] | None:
    """[start, end) of the user turn's text in one example's token ids, or None when it has none."""
    n = len(lay.user_header)
    for i in range(len(ids) - n + 1):
        if ids[i:i + n] == lay.user_header:
            start = i + n
            end = ids.index(lay.im_end, start) if lay.im_end in ids[start:] else None
            return (start, end) if end is not None and end > start else None
    return None


def words(ids: list[int], lay: Layout) -> list[list[int]]:
    """Positions of a question's tokens, one group per space-separated word ("part-time" is one), without
    the punctuation that ends a word ("year," leaves its comma, "time?" its question mark)."""
    groups: list[list[int]] = []
    for pos, token in enumerate(ids):
        if not groups or lay.starts_word[token]:
            groups.append([])
        groups[-1].append(pos)
    for group in groups:
        while group and not lay.has_letter[ids[group[-1]]]:
            group.pop()
    return [g for g in groups if g]


def drop_words(batch: dict, rate: float, lay: Layout, generator) -> dict:
    """A padding-free batch with each answerable question's words left out at `rate` (at least two kept).

    Positions restart at 0 in each example and the sequence bounds follow, so per-example attention
    and the answer-only loss read the shorter batch as they read any other.
    """
    import torch

    cu = batch.get("cu_seq_lens_q")
    if rate <= 0 or cu is None or batch["input_ids"].shape[0] != 1:
        return batch
    ids = batch["input_ids"][0]
    bounds = cu.tolist()
    keep = torch.ones(ids.numel(), dtype=torch.bool)
    lengths = []
    for a, b in zip(bounds, bounds[1:]):
        example = ids[a:b].tolist()
        span = question_span(example, lay)
        answer = [t for t, label in zip(example, batch["labels"][0, a:b].tolist()) if label != IGNORE_INDEX]
        dropped = 0
        # A near miss keeps every word: without "volunteer", "Is volunteer leave paid?" may be a question the
        # policy answers, and the refusal would be taught on it.
        if span and answer != lay.refusal:
            groups = words(example[span[0]:span[1]], lay)
            draws = torch.rand(len(groups), generator=generator) < rate
            if len(groups) - int(draws.sum()) >= 2:
                for group, drop in zip(groups, draws.tolist()):
                    if drop:
                        keep[[a + span[0] + p for p in group]] = False
                        dropped += len(group)
        lengths.append(b - a - dropped)
    if bool(keep.all()):
        return batch
    out = {k: v for k, v in batch.items() if k != "seq_idx"}
    for name in ("input_ids", "labels"):
        out[name] = batch[name][:, keep.to(ids.device)]
    out["position_ids"] = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0).to(ids.device)
    new_cu = torch.tensor([0] + lengths).cumsum(0).to(dtype=cu.dtype, device=cu.device)
    out["cu_seq_lens_q"] = out["cu_seq_lens_k"] = new_cu
    out["max_length_q"] = out["max_length_k"] = max(lengths)
    return out
