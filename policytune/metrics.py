"""Scoring answers against the policy: pure functions, the same code for the base and tuned model.

An answer to an answerable question is correct when it is not a refusal and either contains every
keyword (an entry may list alternatives, `days|working days`) or, without keywords, matches the
expected answer (exact match, the expected answer appearing whole, or token F1 over a threshold).
An answer to an unanswerable question is correct when it is a refusal. Text is normalised first
(case, punctuation, articles, thousands separators, and number words to digits: "twenty-five" and
"25" are the same answer), following SQuAD's answer normalisation plus the number step.
The headline rates get percentile-bootstrap intervals, and tuned - base a paired one (the same
resampled questions for both models), with a fixed seed so a rerun reports the same interval.
"""
from __future__ import annotations

import random
import re
import statistics
from collections import Counter
from typing import Any, Iterable

from policytune import chat

UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
SCALES = {"thousand": 1_000, "million": 1_000_000}
ARTICLES = {"a", "an", "the"}

# Phrases a model uses to decline when it was not taught the exact refusal string. Counting them
# as refusals keeps the comparison fair to the base model; the exact-refusal rate is reported too.
REFUSAL_VARIANTS = (
    "not specified", "not mentioned", "not stated", "not provided in",
    "does not say", "doesn't say", "does not specify", "doesn't specify", "does not state",
    "doesn't state", "does not mention", "doesn't mention", "no information",
    "i don't know", "i do not know", "cannot find", "can't find",
)
# Policies state exclusions in these words ("Cosmetic surgery is not covered by the plan"): they
# decline only when what is silent is the text itself.
_TEXT_SILENT = re.compile(r"\bnot (?:included|covered|addressed|found) (?:in|by) the (?:provided |given )?"
                          r"(?:excerpt|policy|document|text|context|handbook|information)\b")

DEFAULT_F1_THRESHOLD = 0.5


def _numbers_to_digits(words: list[str]) -> list[str]:
    """Replace runs of number words ("one hundred and twenty five") with their digits ("125")."""
    out: list[str] = []
    total = current = 0
    in_number = False

    def flush() -> None:
        nonlocal total, current, in_number
        if in_number:
            out.append(str(total + current))
        total = current = 0
        in_number = False

    for index, word in enumerate(words):
        last_two = current % 100
        if word in UNITS:
            value = UNITS[word]
            # "twenty five" fills the units slot; "five six" are two numbers.
            slot_free = last_two == 0 or (last_two >= 20 and last_two % 10 == 0 and value < 10)
            if in_number and not slot_free:
                flush()
            current += value
            in_number = True
        elif word in TENS:
            if in_number and last_two != 0:
                flush()
            current += TENS[word]
            in_number = True
        elif word == "hundred" and in_number and current % 100 == current and current > 0:
            current *= 100
        elif word in SCALES and in_number:
            total += max(current, 1) * SCALES[word]
            current = 0
        elif (word == "and" and in_number and index + 1 < len(words)
              and (words[index + 1] in UNITS or words[index + 1] in TENS)):
            continue  # "one hundred and twenty"
        else:
            flush()
            out.append(word)
    flush()
    return out


def normalise_words(text: str) -> list[str]:
    """Lowercased words with punctuation and articles removed and number words as digits."""
    text = text.split(chat.IM_END)[0].lower()
    text = text.replace("%", " percent ").replace("per cent", "percent")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)          # 1,000 -> 1000
    text = re.sub(r"(?<=\d)\.(?=\d)", "<dot>", text)          # keep decimals: 2.5
    text = re.sub(r"[^\w<>]+|_", " ", text).replace("<dot>", ".")
    words = _numbers_to_digits(text.split())
    return [w for w in words if w not in ARTICLES]


def normalise(text: str) -> str:
    """The normalised answer as one string (see normalise_words)."""
    return " ".join(normalise_words(text))


_REFUSAL_NORMALISED = normalise(chat.REFUSAL)


def is_exact_refusal(text: str) -> bool:
    """The exact refusal string, tolerant of case, whitespace, punctuation and the end marker."""
    return normalise(text) == _REFUSAL_NORMALISED


def is_refusal(text: str) -> bool:
    """The refusal or a near-variant ("not mentioned", "does not say", ...)."""
    if is_exact_refusal(text):
        return True
    lowered = " ".join(text.lower().replace("’", "'").split())
    return any(variant in lowered for variant in REFUSAL_VARIANTS) or bool(_TEXT_SILENT.search(lowered))


def _contains(haystack: list[str], needle: list[str]) -> bool:
    """Whole-word containment of a normalised phrase."""
    if not needle:
        return False
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def keyword_match(prediction: str, keywords: Iterable[str]) -> bool:
    """Every keyword entry appears in the prediction (any of its `|` alternatives), after normalising."""
    words = normalise_words(prediction)
    for entry in keywords:
        alternatives = [normalise_words(alt) for alt in entry.split("|")]
        if not any(_contains(words, alt) for alt in alternatives if alt):
            return False
    return True


def exact_match(prediction: str, answer: str) -> bool:
    """Normalised prediction equals the normalised expected answer."""
    return normalise(prediction) == normalise(answer)


def token_f1(prediction: str, answer: str) -> float:
    """SQuAD-style token F1 between normalised prediction and expected answer."""
    predicted, expected = normalise_words(prediction), normalise_words(answer)
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


# A section label opening an answer, where the model was trained to give one ("Volunteer Leave: ...",
# policytune/citation.py): the expected answers have none. A numbered step's heading holds a colon of its own
# ("Step 2: Formally kick-off leave process: Yes. ..."), and a fact's name may follow the section's
# ("Volunteer Leave > volunteer days: ...", policytune/factkey.py).
_LABEL = re.compile(r"^\s*(?:(?:step|part|phase|stage|section)\s+\w{1,3}:\s*)?[^.?!:\n]{1,60}(?: > [^.?!:\n]{1,60})?:"
                    r"\s*(?=\S)", re.I)


def unlabelled(text: str) -> str:
    """The answer without an opening section label."""
    return _LABEL.sub("", text, count=1)


def polarity(text: str) -> str | None:
    """"yes" or "no" where the answer opens with one (after a section label), else None (an answer with no opening
    yes or no contradicts neither)."""
    match = re.match(r"\s*(yes|no)\b", unlabelled(text), re.I)
    return match.group(1).lower() if match else None


def polarity_agrees(prediction: str, answer: str) -> bool:
    """The prediction does not open with the opposite of the expected answer's yes or no (an expected answer without
    one has nothing to contradict)."""
    expected = polarity(answer)
    return expected is None or polarity(prediction) in (None, expected)


def numbers(text: str) -> set[str]:
    """The numbers of a text after normalising ("twenty-five days" and "25 days" both give {"25"})."""
    return {w for w in normalise_words(text) if any(c.isdigit() for c in w)}


def numbers_agree(prediction: str, answer: str) -> bool:
    """Every number of the expected answer is in the prediction."""
    return numbers(answer) <= numbers(prediction)


def answer_words(text: str) -> int:
    """Length of an answer in whitespace-separated words."""
    return len(text.split())


def judge(prediction: str, answerable: bool | None, answer: str | None = None,
          keywords: list[str] | None = None, f1_threshold: float = DEFAULT_F1_THRESHOLD) -> dict[str, Any]:
    """Score one answer. `correct` is None when there is nothing to judge it against."""
    refusal = is_refusal(prediction)
    scores: dict[str, Any] = {
        "refusal": refusal,
        "exact_refusal": is_exact_refusal(prediction),
        "exact_match": None, "token_f1": None, "keyword_match": None,
        "words": answer_words(prediction),
    }
    if answerable is False:
        scores["correct"] = refusal
        return scores
    if answerable is None:
        scores["correct"] = None
        return scores
    if answer:
        # a section label is where the answer comes from, not part of it: scored without it too
        content = unlabelled(prediction)
        scores["exact_match"] = exact_match(prediction, answer) or exact_match(content, answer)
        scores["token_f1"] = round(max(token_f1(prediction, answer), token_f1(content, answer)), 4)
    if keywords:
        scores["keyword_match"] = keyword_match(prediction, keywords)
        # "not covered|no" is in "Yes. ... no more than ...": the opening yes or no must not contradict the answer's
        scores["correct"] = not refusal and scores["keyword_match"] and (not answer or polarity_agrees(prediction, answer))
    elif answer:
        contained = _contains(normalise_words(prediction), normalise_words(answer))
        # Word overlap alone would pass "Employees get 30 days" for "Employees get 25 days", and "No. Leave is
        # recorded in PeopleHub." for "Yes. Leave is recorded in PeopleHub.".
        scores["correct"] = not refusal and (scores["exact_match"] or contained or (
            scores["token_f1"] >= f1_threshold and numbers_agree(prediction, answer)
            and polarity_agrees(prediction, answer)))
    else:
        scores["correct"] = None
    return scores


def _rate(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics for one model from rows of {answerable, type, scores (from judge)}."""
    answerable = [r["scores"] for r in rows if r["answerable"] is True]
    unanswerable = [r["scores"] for r in rows if r["answerable"] is False]
    scored = [s for s in answerable if s["correct"] is not None]
    with_answer = [s for s in answerable if s["token_f1"] is not None]
    all_scores = [r["scores"] for r in rows]
    return {
        "n": len(rows),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "n_answerable_scored": len(scored),
        "answerable_accuracy": _rate([s["correct"] for s in scored]),
        "exact_match": _rate([s["exact_match"] for s in with_answer]),
        "token_f1": _mean([s["token_f1"] for s in with_answer]),
        "keyword_accuracy": _rate([s["keyword_match"] for s in answerable if s["keyword_match"] is not None]),
        "refusal_recall": _rate([s["refusal"] for s in unanswerable]),
        "exact_refusal_recall": _rate([s["exact_refusal"] for s in unanswerable]),
        "false_refusal_rate": _rate([s["refusal"] for s in answerable]),
        "hallucination_rate": _rate([not s["refusal"] for s in unanswerable]),
        "refusal_rate": _rate([s["refusal"] for s in all_scores]),
        "exact_refusal_rate": _rate([s["exact_refusal"] for s in all_scores]),
        "mean_answer_words": _mean([s["words"] for s in all_scores]),
        "mean_answer_words_non_refusal": _mean([s["words"] for s in all_scores if not s["refusal"]]),
        "accuracy": _rate([s["correct"] for s in all_scores if s["correct"] is not None]),
    }


def summarise_by_type(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per question type: n, accuracy (over judged items), refusal rate and mean answer words."""
    out = {}
    for kind in sorted({r["type"] for r in rows}):
        group = [r["scores"] for r in rows if r["type"] == kind]
        out[kind] = {
            "n": len(group),
            "accuracy": _rate([s["correct"] for s in group if s["correct"] is not None]),
            "refusal_rate": _rate([s["refusal"] for s in group]),
            "mean_answer_words": _mean([s["words"] for s in group]),
        }
    return out


def top_section(section: Any) -> str:
    """The top-level section number of "4.2" or "4.2.1" ("4"); a heading without a number ("Parental leave",
    "401k contribution") is its own group; "unknown" when there is none."""
    match = re.match(r"\s*(?:section\s+)?(\d+)(?![\w-])", str(section or ""), re.IGNORECASE)
    return match.group(1) if match else str(section or "").strip() or "unknown"


def summarise_by_section(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per top-level policy section (rows carry `section`): n, accuracy over judged items, refusal rate."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(top_section(row.get("section")), []).append(row)
    out = {}
    # Numeric order ("2" before "10"), then headings; "unknown" last.
    for name in sorted(groups, key=lambda s: (not s.isdigit(), s == "unknown", int(s) if s.isdigit() else 0, s)):
        group = groups[name]
        out[name] = {
            "n": len(group),
            "n_answerable": sum(r["answerable"] is True for r in group),
            "n_unanswerable": sum(r["answerable"] is False for r in group),
            "accuracy": _rate([r["scores"]["correct"] for r in group if r["scores"]["correct"] is not None]),
            "refusal_rate": _rate([r["scores"]["refusal"] for r in group]),
        }
    return out


# ---------------------------------------------------------------- bootstrap confidence intervals

# The four rates the README and the pipeline headline quote; each is a mean of 0/1 item outcomes
# over its own items (answerable or unanswerable questions), which is what metric_outcomes returns.
INTERVAL_METRICS = ("answerable_accuracy", "refusal_recall", "false_refusal_rate", "hallucination_rate")
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95


def metric_outcomes(rows: list[dict[str, Any]], key: str) -> list[bool]:
    """Per item 0/1 outcomes whose mean is the metric `key` (the same items summarise counts)."""
    answerable = [r["scores"] for r in rows if r["answerable"] is True]
    unanswerable = [r["scores"] for r in rows if r["answerable"] is False]
    if key == "answerable_accuracy":
        return [s["correct"] for s in answerable if s["correct"] is not None]
    if key == "refusal_recall":
        return [s["refusal"] for s in unanswerable]
    if key == "false_refusal_rate":
        return [s["refusal"] for s in answerable]
    if key == "hallucination_rate":
        return [not s["refusal"] for s in unanswerable]
    raise ValueError(f"no bootstrap outcome for metric {key!r}")


def _percentile(ordered: list[float], fraction: float) -> float:
    """Linear-interpolated percentile of sorted values (numpy's default method)."""
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def paired_bootstrap(base: list[bool], tuned: list[bool], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, level: float = BOOTSTRAP_LEVEL) -> dict[str, dict[str, Any]]:
    """Percentile-bootstrap intervals of two models' rates over the same items and of tuned - base.

    Each resample draws the same item indices for both models (paired), so an item both models get
    right or wrong adds no spread to the difference. The seed is fixed: the same data gives the
    same interval every run. Returns {"base", "tuned", "difference"}: {estimate, low, high, n}.
    """
    if len(base) != len(tuned):
        raise ValueError("paired bootstrap needs the same items for both models")
    n = len(base)
    if n == 0:
        return {name: {"estimate": None, "low": None, "high": None, "n": 0} for name in ("base", "tuned", "difference")}
    rng = random.Random(seed)
    base_values, tuned_values = [float(v) for v in base], [float(v) for v in tuned]
    draws: dict[str, list[float]] = {"base": [], "tuned": [], "difference": []}
    for _ in range(resamples):
        picks = rng.choices(range(n), k=n)
        b = sum(base_values[i] for i in picks) / n
        t = sum(tuned_values[i] for i in picks) / n
        draws["base"].append(b)
        draws["tuned"].append(t)
        draws["difference"].append(t - b)
    estimates = {"base": sum(base_values) / n, "tuned": sum(tuned_values) / n}
    estimates["difference"] = estimates["tuned"] - estimates["base"]
    tail = (1 - level) / 2
    out = {}
    for name, values in draws.items():
        values.sort()
        out[name] = {"estimate": round(estimates[name], 4), "low": round(_percentile(values, tail), 4),
                     "high": round(_percentile(values, 1 - tail), 4), "n": n}
    return out


def confidence_intervals(base_rows: list[dict[str, Any]], tuned_rows: list[dict[str, Any]],
                         resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                         level: float = BOOTSTRAP_LEVEL) -> dict[str, dict[str, dict[str, Any]]]:
    """Bootstrap intervals of INTERVAL_METRICS for both models and their paired difference.

    The rows are the same questions in the same order for both models. Returns
    {"base"|"tuned"|"difference": {metric: {estimate, low, high, n}}}.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {"base": {}, "tuned": {}, "difference": {}}
    for key in INTERVAL_METRICS:
        base, tuned = metric_outcomes(base_rows, key), metric_outcomes(tuned_rows, key)
        if len(base) != len(tuned):  # answerable_accuracy skips unjudged items: the same ones for both
            raise ValueError(f"{key}: base and tuned rows are not the same questions")
        for name, interval in paired_bootstrap(base, tuned, resamples, seed, level).items():
            out[name][key] = interval
    return out


def separability(unanswerable: list[float], answerable: list[float]) -> float | None:
    """How well a score tells near misses from answerable questions: the chance that a random near miss scores
    higher than a random answerable question, ties counting half (ROC AUC). 0.5 is chance: then no threshold on
    the score raises refusal recall without raising false refusals as much. None without both kinds."""
    if not unanswerable or not answerable:
        return None
    wins = sum((u > a) + 0.5 * (u == a) for u in unanswerable for a in answerable)
    return round(wins / (len(unanswerable) * len(answerable)), 4)


def refusal_start_probs(items: list[dict[str, Any]], model: str, answerable: bool | None) -> list[float]:
    """One model's probability of starting the refusal (evaluate's divergence) on the items of one kind whose
    divergence was measured."""
    return [i["divergence"]["refusal_first_token_prob"][model] for i in items
            if i.get("divergence") and i["answerable"] is answerable]


def refusal_separability(items: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per model, `separability` of the refusal-start probability: near misses against answerable questions."""
    return {model: separability(refusal_start_probs(items, model, False), refusal_start_probs(items, model, True))
            for model in ("base", "tuned")}


def next_token_divergence(tuned_logits, base_logits) -> tuple[list[float], list[bool]]:
    """Per position KL(tuned || base) in nats and whether both models' top-1 tokens agree.

    Both arguments are [positions, vocab] logits from the same teacher-forced input.
    """
    import torch

    tuned_log = torch.log_softmax(tuned_logits.float(), dim=-1)
    base_log = torch.log_softmax(base_logits.float(), dim=-1)
    kl = (tuned_log.exp() * (tuned_log - base_log)).sum(dim=-1).clamp_min(0.0)
    agree = tuned_logits.argmax(dim=-1) == base_logits.argmax(dim=-1)
    return [float(v) for v in kl], [bool(v) for v in agree]
