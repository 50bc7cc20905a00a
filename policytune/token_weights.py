"""Loss weights that put an answer's new tokens first.

Most of an answer repeats its question ("Line managers must approve or query timesheets by 12:00 on
the following Monday" for "By what time must line managers approve or query timesheets?"). The
tokens the question does not hold (the time, the figure, the name, the yes or no) are the fact,
and they are what the gold set asks for. Weighting them more was meant to spend the same steps on
the facts (salient-span masking, Rho-1's selective token loss). Measured on the sample (BENCHMARKS.md,
eleventh session), it did not: the same gold accuracy and a lower held-out one, since the repeated
words are what tie an answer to its question. So `train.py --fact-weight` is 1 (off).

Each example keeps its total weight: weighting across examples would shift the mix instead
(restatements are mostly new tokens, refusals wholly), and a first version that did so lowered
held-out refusal recall from 0.78 to 0.33 after one pass on the sample.
"""
from __future__ import annotations

from policytune.training import IGNORE_INDEX


def novel_answer_weights(input_ids, labels, position_ids, weight: float, skip_prefix: list[int] = ()):
    """One weight per loss target, in the order of `training.answer_positions(labels)`.

    Within an example, a target whose token is not among the example's prompt tokens weighs `weight`
    times one that is; then the example's weights are scaled to sum to its number of answer tokens.
    So each example weighs what it did (the mix of answers, refusals and section restatements is
    untouched) and only the emphasis inside an answer moves. Examples whose answer starts with
    `skip_prefix` (the refusal's tokens) keep 1 throughout. Examples are the rows of a padded batch,
    or the spans of a padding-free one (its positions restart at 0).
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
        span = w[row, a:b]
        span[novel] = weight
        span[answer] *= int(answer.sum()) / float(span[answer].sum())
    return w[:, 1:][labels[:, 1:] != IGNORE_INDEX]
