"""Loss weights that put an answer's new tokens first.

Most of an answer repeats its question ("Line managers must approve or query timesheets by 12:00 on
the following Monday" for "By what time must line managers approve or query timesheets?"). The
tokens the question does not hold (the time, the figure, the name, the yes or no) are the fact,
and they are what the gold set asks for; the rest is copying, which the model learns within a pass.
Weighting the new tokens more spends the same steps on the facts (salient-span masking, Rho-1's
selective token loss). Refusals are left at weight 1: they are all new tokens, and weighting them
would move the refusal threshold rather than teach a fact.
"""
from __future__ import annotations

IGNORE_INDEX = -100


def novel_answer_weights(input_ids, labels, position_ids, weight: float, skip_prefix: list[int] = ()):
    """One weight per loss target, in the order of `training.answer_positions(labels)`.

    A target gets `weight` when its token is not among its own example's prompt tokens, else 1;
    examples whose answer starts with `skip_prefix` (the refusal's tokens) keep 1 throughout. The
    weights are scaled to average 1, so the loss keeps its scale and learning rate. Examples are the
    rows of a padded batch, or the spans of a padding-free one (its positions restart at 0).
    """
    import torch

    w = torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
    if position_ids is not None and labels.shape[0] == 1:
        bounds = (position_ids[0] == 0).nonzero().flatten().tolist() + [labels.shape[1]]
        spans = [(0, a, b) for a, b in zip(bounds, bounds[1:])]
    else:
        spans = [(row, 0, labels.shape[1]) for row in range(labels.shape[0])]
    skip = list(skip_prefix)
    for row, a, b in spans:
        lab, ids = labels[row, a:b], input_ids[row, a:b]
        answer = lab != IGNORE_INDEX
        if not answer.any():
            continue
        if skip and lab[answer][: len(skip)].tolist() == skip:
            continue
        novel = answer & ~torch.isin(lab, ids[~answer])
        w[row, a:b][novel] = weight
    following = labels[:, 1:]
    targets = w[:, 1:][following != IGNORE_INDEX]
    return targets * (targets.numel() / targets.sum().clamp(min=1e-8))
