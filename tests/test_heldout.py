"""Training's held-out answer check: which records it asks, and how it scores them."""
from __future__ import annotations

from policytune import chat, heldout


def records(answerable: int, unanswerable: int) -> list[dict]:
    out = [{"id": f"a{i}", "instruction": f"How many days for office {i}?", "answerable": True,
            "output": f"Employees in office {i} receive {10 + i} days of paid leave."} for i in range(answerable)]
    out += [{"id": f"u{i}", "instruction": f"Is bonus {i} taxed?", "answerable": False, "output": chat.REFUSAL}
            for i in range(unanswerable)]
    return out


def test_balanced_sample_takes_half_unanswerable_where_there_are_enough_and_is_stable():
    sample = heldout.balanced_sample(records(30, 10), 16)
    assert len(sample) == 16 and sum(not r["answerable"] for r in sample) == 8
    assert heldout.balanced_sample(records(30, 10), 16) == sample
    few = heldout.balanced_sample(records(30, 3), 16)
    assert len(few) == 16 and sum(not r["answerable"] for r in few) == 3
    assert len(heldout.balanced_sample(records(0, 5), 4)) == 4


def test_score_rewards_the_right_answer_and_the_refusal_and_punishes_their_swap():
    held = records(2, 2)
    right = [held[0]["output"], held[1]["output"], chat.REFUSAL, chat.REFUSAL]
    swapped = [chat.REFUSAL, chat.REFUSAL, "Yes, at 20%.", "Employees receive 12 days."]
    assert heldout.score(held, right) == {"answerable_accuracy": 1.0, "refusal_recall": 1.0,
                                          "false_refusal_rate": 0.0, "answer_score": 1.0}
    worst = heldout.score(held, swapped)
    assert worst["answer_score"] == 0.0 and worst["false_refusal_rate"] == 1.0
    half = heldout.score(held, [held[0]["output"], "Ten days.", chat.REFUSAL, "No."])
    assert half["answer_score"] == 0.5


def evaluation(score: float, accuracy: float, recall: float, kept: int = 0) -> dict:
    return {"answer_score": score, "answerable_accuracy": accuracy, "refusal_recall": recall, "answerable": 41,
            "unanswerable": 7, "kept": kept}


def test_a_later_checkpoint_is_kept_within_one_standard_error_of_the_best_and_not_beyond():
    # The PostHog run whose keep-best published pass 3 of 4 on one near miss (BENCHMARKS.md, twelfth session).
    best = evaluation(0.77, 0.6829, 0.8571, kept=3)
    assert 0.07 < heldout.standard_error(best) < 0.1
    history = [evaluation(0.6864, 0.6585, 0.7143, kept=2), best]
    assert heldout.kept_count(history, evaluation(0.723, 0.7317, 0.7143)) == 4  # one near miss fewer: noise
    assert heldout.kept_count(history, evaluation(0.77, 0.6829, 0.8571)) == 4  # a tie: the later one
    assert heldout.kept_count(history, evaluation(0.60, 0.55, 0.6571)) == 3  # worse by two standard errors
    assert heldout.kept_count([], evaluation(0.1, 0.1, 0.1)) == 1
    # 9 of 9 near misses refused is not certain: the error does not vanish at 1.00
    assert heldout.standard_error({**best, "answerable_accuracy": 1.0, "refusal_recall": 1.0}) > 0.03
    assert heldout.standard_error({"answerable_accuracy": 0.5, "refusal_recall": None, "answerable": 10,
                                   "unanswerable": 0}) > 0
