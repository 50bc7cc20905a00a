"""Training's own check on what matters: greedy answers to held-out phrasings, scored as evaluate.py scores them.

Eval loss on a few records says little about whether the model now answers a trained fact asked in
other words, or refuses what the policy leaves open (a refusal is short, so its loss dominates
nothing). At every evaluation this callback answers a fixed, balanced sample of the held-out split
with the model as it is, and adds `eval_answer_score` (the mean of answerable accuracy and refusal
recall) to the evaluation metrics, so keep-best and early stopping can use it; the curve goes to
metrics.json.
"""
from __future__ import annotations

import hashlib
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


def callback(records: list[dict], batch_size: int = 32, max_new_tokens: int = 48):
    """A TrainerCallback that scores held-out answers at every evaluation (its `history` is the curve)."""
    from transformers import TrainerCallback

    class HeldOutAnswers(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []

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
            result = score(records, predictions)
            # The trainer hands every callback this same dict, and reads it for the best checkpoint after them.
            metrics["eval_answer_score"] = result["answer_score"]
            self.history.append({"step": state.global_step, **result})
            print(f"held-out answers at step {state.global_step}: accuracy {result['answerable_accuracy']}, "
                  f"refusal recall {result['refusal_recall']}, score {result['answer_score']}", flush=True)

    return HeldOutAnswers()
