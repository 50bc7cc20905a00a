"""Training's own check on what matters: greedy answers to held-out phrasings, scored as evaluate.py scores them.

Eval loss on a few records says little about whether the model now answers a trained fact asked in
other words, or refuses what the policy leaves open (a refusal is short, so its loss dominates
nothing). At every evaluation this callback answers a fixed, balanced sample of the held-out split
with the model as it is, and adds `eval_answer_score` (the mean of answerable accuracy and refusal
recall) to the evaluation metrics; the curve goes to metrics.json.

Keep-best and early stopping follow `eval_answer_kept`: how many evaluations so far scored within one
standard error of the best score before them. The held-out sample holds 7-17 near misses, so one
answer moves the score by up to 0.07, and the best score was often an earlier checkpoint by that
much or a tie, while on the gold sets the later checkpoint was as good or better (BENCHMARKS.md,
twelfth and thirteenth sessions). So the latest checkpoint within that noise of the best is kept.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

from policytune import answers, metrics


def balanced_sample(records: list[dict], n: int) -> list[dict]:
    """Up to n held-out records, answerable and unanswerable in equal parts where both exist, in hash order."""
    def key(record: dict) -> str:
        return hashlib.sha256(str(record.get("id", record.get("instruction"))).encode()).hexdigest()

    answerable = sorted((r for r in records if r.get("answerable", True)), key=key)
    unanswerable = sorted((r for r in records if not r.get("answerable", True)), key=key)
    half = n // 2
    take_unanswerable = min(len(unanswerable), half if answerable else n)
    take_answerable = min(len(answerable), n - take_unanswerable)
    return answerable[:take_answerable] + unanswerable[:take_unanswerable]


def score(records: list[dict], predictions: list[str]) -> dict[str, Any]:
    """Answerable accuracy, refusal recall and their mean for predictions of these records."""
    rows = [{"answerable": bool(r.get("answerable", True)), "type": r.get("type", ""),
             "scores": metrics.judge(p, bool(r.get("answerable", True)), str(r.get("output", "")), r.get("keywords"))}
            for r, p in zip(records, predictions)]
    summary = metrics.summarise(rows)
    parts = [v for v in (summary["answerable_accuracy"], summary["refusal_recall"]) if v is not None]
    return {"answerable_accuracy": summary["answerable_accuracy"], "refusal_recall": summary["refusal_recall"],
            "false_refusal_rate": summary["false_refusal_rate"],
            "answer_score": round(sum(parts) / len(parts), 4) if parts else 0.0}


KEPT = "eval_answer_kept"
# logged with every evaluation: a resumed run reads them back (`curve`)
PARTS = ("answerable_accuracy", "refusal_recall", "false_refusal_rate", "answerable", "unanswerable")


def curve(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every evaluation's held-out answer figures from a trainer's log, those before a resume included."""
    return [{"step": h.get("step"), "answer_score": h["eval_answer_score"], "kept": h[KEPT],
             **{key: h.get(f"eval_answer_{key}") for key in PARTS}} for h in log_history if KEPT in h]


def standard_error(result: dict[str, Any]) -> float:
    """Of an answer score: each part binomial over its questions, with one right and one wrong answer added so
    that 1.00 on 9 questions is not certain."""
    parts = [(result[key], result[count]) for key, count in (("answerable_accuracy", "answerable"),
                                                              ("refusal_recall", "unanswerable"))
             if result.get(key) is not None and result.get(count)]
    if not parts:
        return 0.0
    shrunk = [((p * n + 1) / (n + 2), n) for p, n in parts]
    return math.sqrt(sum(p * (1 - p) / n for p, n in shrunk)) / len(parts)


def kept_count(earlier: list[dict[str, Any]], result: dict[str, Any]) -> int:
    """`eval_answer_kept` after `result`: earlier evaluations' count, one more when `result` is within one standard
    error of the best score before it. It only grows, and grows exactly at the evaluations worth publishing."""
    count = max((e.get("kept", 0) for e in earlier), default=0)
    if not earlier:
        return count + 1
    best = max(earlier, key=lambda e: e["answer_score"])
    return count + (result["answer_score"] >= best["answer_score"] - standard_error(best))


def callback(records: list[dict], batch_size: int = 64, max_new_tokens: int = 48):
    """A TrainerCallback that scores held-out answers at every evaluation and logs them with it (`curve` reads them)."""
    from transformers import TrainerCallback

    answerable = sum(bool(r.get("answerable", True)) for r in records)

    class HeldOutAnswers(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kwargs):
            if not records or model is None or processing_class is None or metrics is None:
                return
            was_training = model.training
            model.eval()
            try:
                predictions = answers.greedy(model, processing_class, [r["instruction"] for r in records], batch_size,
                                             max_new_tokens, progress=False)
            finally:
                model.train(was_training)
            result = {**score(records, predictions), "answerable": answerable, "unanswerable": len(records) - answerable}
            # the trainer's log, not this object, holds the earlier evaluations: a resumed run continues the count
            result["kept"] = kept_count(curve(state.log_history), result)
            added = {"eval_answer_score": result["answer_score"], KEPT: result["kept"],
                     **{f"eval_answer_{key}": result[key] for key in PARTS if result[key] is not None}}
            # The trainer hands every callback this same dict, and reads it for the best checkpoint after them; its
            # log took a copy before, and is what a checkpoint keeps.
            metrics.update(added)
            logged = next((h for h in reversed(state.log_history) if "eval_loss" in h), None)
            if logged is not None and logged.get("step") == state.global_step:
                logged.update(added)
            print(f"held-out answers at step {state.global_step}: accuracy {result['answerable_accuracy']}, "
                  f"refusal recall {result['refusal_recall']}, score {result['answer_score']}", flush=True)

    return HeldOutAnswers()
