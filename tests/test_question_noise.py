"""Word dropout on training questions (train.py --question-noise): what it leaves out and what it never touches."""
from __future__ import annotations

import json

import pytest

from conftest import stage_module
from policytune import chat, question_noise, training
from test_train import make_records, tiny_model, train  # noqa: F401 (tiny_model is a fixture)

QUESTION = "How many days of annual leave do I get in my first year, if I'm part-time?"
NEAR_MISS = "Is volunteer leave paid?"


@pytest.fixture(scope="module")
def tokenizer(embedded_base):
    from policytune import models

    return models.load_tokenizer(embedded_base)


def batch_of(tokenizer, records: list[dict]) -> dict:
    """A padding-free batch as the trainer builds it: TRL's collator over rows labelled on their completion."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = [{"input_ids": row["input_ids"], "labels": [t if m else training.IGNORE_INDEX
                                                       for t, m in zip(row["input_ids"], row["completion_mask"])]}
            for row in training.tokenize_examples(training.build_examples(records), tokenizer, None).rows]
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                               padding_free=True, return_position_ids=True)
    return collator(rows)


def examples(batch: dict) -> list[tuple[list[int], list[int], list[int]]]:
    bounds = batch["cu_seq_lens_q"].tolist()
    return [tuple(batch[k][0, a:b].tolist() for k in ("input_ids", "labels", "position_ids"))
            for a, b in zip(bounds, bounds[1:])]


def test_words_are_left_out_of_answerable_questions_only(tokenizer):
    import torch

    batch = batch_of(tokenizer, [{"instruction": QUESTION, "output": "25 days."},
                                 {"instruction": NEAR_MISS, "output": chat.REFUSAL}])
    layout = question_noise.layout(tokenizer)
    assert question_noise.drop_words(batch, 0.0, layout, torch.Generator()) is batch
    before = examples(batch)
    prefix = tokenizer(chat.format_prompt("")[: -len(chat.IM_END + "\n" + chat.IM_START + "assistant\n")])["input_ids"]
    shortened = set()
    for seed in range(20):
        noisy = question_noise.drop_words(batch, 0.5, layout, torch.Generator().manual_seed(seed))
        (ids, labels, positions), near_miss = examples(noisy)
        assert near_miss == before[1]  # a near miss keeps every word: it is what makes it one
        assert ids[: len(prefix)] == prefix  # the system prompt and the user header stay
        assert [t for t in labels if t != training.IGNORE_INDEX] == \
            [t for t in before[0][1] if t != training.IGNORE_INDEX]  # the answer stays, and is all the loss sees
        assert positions == list(range(len(ids)))
        text = tokenizer.decode(ids).split("user\n", 1)[1].split(chat.IM_END)[0]
        kept = [word.strip(",?") for word in text.split()]
        assert text.endswith("?") and len(kept) >= 2 and set(kept) <= {w.strip(",?") for w in QUESTION.split()}
        shortened.add(text)
    assert len(shortened) > 10  # a different few words each time


def test_question_noise_trains_on_shorter_batches(tmp_path, tiny_model):
    runs = {}
    for noise in ("0", "0.4"):
        workdir = tmp_path / noise
        (workdir / "data").mkdir(parents=True)
        (workdir / "data" / "instructionquality.json").write_text(json.dumps(make_records()))
        result = train(workdir, "--base-model", str(tiny_model), "--threads", "1", "--lora-r", "8", "--lora-alpha",
                       "16", "--batch-size", "4", "--max-steps", "3", "--eval-fraction", "0", "--logging-steps", "1",
                       "--question-noise", noise)
        assert result.returncode == 0, result.stderr[-3000:]
        state = json.loads((workdir / "ckpt" / "trainer" / "checkpoint-3" / "trainer_state.json").read_text())
        runs[noise] = [h["num_tokens"] for h in state["log_history"] if "num_tokens" in h]
    # the same batches, fewer tokens computed: the words left out
    assert len(runs["0"]) == len(runs["0.4"]) == 3 and all(a > b for a, b in zip(runs["0"], runs["0.4"]))


def test_question_noise_is_checked():
    stage = stage_module("train.py")
    with pytest.raises(ValueError, match="question-noise must be in"):
        stage.TrainConfig(question_noise=1.0)
    with pytest.raises(ValueError, match="needs --answer-only-head"):
        stage.TrainConfig(question_noise=0.1, padding_free=False)
