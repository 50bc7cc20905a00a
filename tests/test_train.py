"""Stage 4 (train.py): LoRA SFT on a tiny random Llama (fast) and, once, on the embedded SmolLM2."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from conftest import ROOT, run_script, stage_module
from policytune import chat, config, cpu, factkey, heldout, io, leading, metrics, training

FACTS = [
    ("How long is the probationary period?", "3 months from the start date."),
    ("How many annual leave days with less than 2 years of service?", "20 days."),
    ("How many annual leave days with 10 years or more of service?", "28 days."),
    ("Which form is used to request annual leave?", "Form LV-2 Leave Request, through PeopleHub."),
    ("How many paid public holidays are recognised?", "10 paid public holidays per calendar year."),
    ("How many floating holidays does each employee receive?", "2 floating holidays per calendar year."),
    ("How many days of paid sick leave per year?", "10 days per calendar year at 100% of normal pay."),
    ("Which form is the medical certificate?", "Form MED-1 Medical Certificate."),
    ("How many weeks of paid maternity leave are there?", "16 weeks at 100% of base salary."),
    ("How many weeks of paternity leave?", "4 weeks at 100% of base salary."),
    ("How long is bereavement leave for immediate family?", "Up to 5 business days."),
    ("How long is paid jury service leave?", "Up to 20 business days per calendar year."),
    ("What is the policy reference number?", "HR-POL-007."),
    ("Who owns the policy?", "The Director of People Operations."),
    ("How much paid time off is given to vote?", "Up to 2 hours on election day."),
    ("How many paid days for reserve forces training?", "Up to 15 business days per calendar year."),
]
GAPS = ["What is the relocation allowance amount?", "Who qualifies for a pet bereavement day?",
        "How many days of volunteer leave are available?", "Which offices are in the childcare support pilot?"]

# Fast settings for the tiny model: one thread (shared CI machine), small LoRA, a high learning rate.
TINY_FLAGS = ["--threads", "1", "--lora-r", "8", "--lora-alpha", "16", "--batch-size", "4",
              "--learning-rate", "3e-3", "--logging-steps", "1"]


def make_records() -> list[dict]:
    records = [{"instruction": q, "input": "", "output": a, "answerable": True, "type": "numeric"} for q, a in FACTS]
    records += [{"instruction": q, "input": "", "output": chat.REFUSAL, "answerable": False, "type": "unanswerable"}
                for q in GAPS]
    for r in records:
        r["id"] = hashlib.sha256((r["instruction"] + r["output"]).encode()).hexdigest()[:16]
        r.update({"chunk_id": "c1", "doc": "sample_policy.pdf", "pages": [1], "headings": [], "context": ""})
    return records


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, embedded_base) -> Path:
    """A random-initialised 2-layer Llama with the SmolLM2 tokenizer: same code path, seconds per run."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_base.hf_path)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def workdir(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "instructionquality.json").write_text(json.dumps(make_records()))
    return tmp_path


def train(workdir: Path, *flags: str, **kwargs) -> subprocess.CompletedProcess:
    return run_script(str(ROOT / "train.py"), "--data-dir", str(workdir / "data"),
                      "--checkpoint-dir", str(workdir / "ckpt"), *flags, cwd=workdir, **kwargs)


def logits(model, tokenizer):
    import torch

    ids = tokenizer(chat.format_prompt(FACTS[0][0]), return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_cite_section_opens_answerable_answers_with_their_sections_name_only():
    records = [{"instruction": "Is volunteer leave recorded?", "output": "Yes. It is recorded in PeopleHub.",
                "answerable": True, "headings": ["7. Other Leave", "7.4 Volunteer Leave"]},
               {"instruction": "Is volunteer leave paid?", "output": chat.REFUSAL, "answerable": False,
                "headings": ["7. Other Leave", "7.4 Volunteer Leave"]},
               {"instruction": "What does the policy say about 7.4 Volunteer Leave?", "output": "Volunteer leave is ..."}]
    plain, cited = training.build_examples(records), training.build_examples(records, cite_section=True)
    assert cited[0]["completion"] == chat.format_completion("Volunteer Leave: Yes. It is recorded in PeopleHub.")
    assert cited[1:] == plain[1:] and cited[0]["prompt"] == plain[0]["prompt"]


def test_cite_fact_names_each_fact_after_its_section_the_same_in_all_its_answers_and_none_twice():
    eap = ["9. Wellbeing", "9.3 Employee Assistance Programme"]
    counselling = "It offers up to 6 short-term counselling sessions per issue per year."
    records = [
        {"instruction": "How many counselling sessions does it offer?", "output": counselling, "answerable": True,
         "headings": eap},
        {"instruction": "Does it offer 9 counselling sessions?", "output": f"No. {counselling}", "answerable": True,
         "headings": eap},
        {"instruction": "Is the helpline open at night?", "output": "Yes. The confidential helpline is open 24 hours.",
         "answerable": True, "headings": eap},
        # two rows of one table: the rarest phrase of both is the same, so only the first is named by it
        {"instruction": "How many days with 5 years?", "output": "Years of service: 5 years; Annual leave days: 25.",
         "answerable": True, "headings": ["3. Annual Leave", "3.1 Accrual"]},
        {"instruction": "How many days with 10 years?", "output": "Years of service: 10 years; Annual leave days: 28.",
         "answerable": True, "headings": ["3. Annual Leave", "3.1 Accrual"]},
        {"instruction": "Is the EAP taxed?", "output": chat.REFUSAL, "answerable": False, "headings": eap},
        {"instruction": "What does the policy say about 9.3 Employee Assistance Programme?", "output": counselling,
         "augmentation": True, "headings": eap}]
    keys = factkey.keys(records)
    assert keys[counselling] == "short-term counselling sessions"
    assert keys["The confidential helpline is open 24 hours."] == "the confidential helpline"
    assert len(set(keys.values())) == len(keys) and sum(k == "years of service" for k in keys.values()) == 1
    # what a figure counts is a noun, never the verb or word after it
    odd = [{"output": "The 25 days is a minimum.", "answerable": True},
           {"output": "A company contribution of 4.5% (4% plus half of 1%).", "answerable": True}]
    assert set(factkey.keys(odd).values()) <= {"company contribution"}
    completions = [e["completion"] for e in training.build_examples(records, cite_section=True, fact_keys=keys)]
    assert completions[0] == chat.format_completion(f"Employee Assistance Programme > short-term counselling sessions: "
                                                    f"{counselling}")
    assert completions[1] == chat.format_completion(f"Employee Assistance Programme > short-term counselling sessions: "
                                                    f"No. {counselling}")  # one name for all of a fact's answers
    assert completions[5] == chat.format_completion(chat.REFUSAL)
    assert completions[3].startswith("Accrual > years of service: ") and completions[4].startswith("Accrual: Years")
    # the scorer reads the verdict after the longer label, and scores the answer without it
    label = completions[1].split(": No.")[0] + ": "
    assert metrics.polarity(label + "No. It offers 6.") == "no"
    assert metrics.unlabelled(label + counselling) == counselling


def test_lead_with_value_opens_an_answer_with_the_figure_or_name_its_question_asks_for():
    row = ("Benefit: Dental insurance; Company contribution: 80% of premium; Employee contribution: 20% of premium; "
           "Waiting period: 3 months.")
    eye = "Employees may claim up to $150 every 2 years for an eye test through PeopleHub Expenses."
    notice = ("To take maternity leave the employee must submit Form PL-1 no later than 15 weeks before the expected "
              "week of childbirth, giving at least 28 days' notice of any change.")
    asked = [("What is the waiting period for dental insurance?", row, "3 months"),
             ("What is the employee contribution for dental insurance?", row, "20% of premium"),
             ("How much can I claim for an eye test?", eye, "$150"),
             ("How many weeks before the birth must I tell them?", notice, "15 weeks"),
             ("How many days' notice of a change do I give?", notice, "28 days"),
             ("Which form do I submit to take maternity leave?", notice, "Form PL-1")]
    for question, answer, value in asked:
        assert leading.asked_value(question, answer) == value, question
        assert leading.led(question, answer) == f"{value[0].upper()}{value[1:]}. {answer}"
    unchanged = [("Can I claim for an eye test?", f"Yes. {eye}"),  # a yes/no answer leads with its verdict
                 ("Is volunteer leave paid?", chat.REFUSAL),
                 ("What does the policy say about eye tests?", eye),  # asks for the whole statement
                 ("What can I claim through PeopleHub Expenses?", eye),  # "what" alone asks for no kind of value
                 ("How much can I claim every 2 years, up to $150?", eye),  # the question holds the value
                 ("Who can claim for an eye test?", eye),  # no role in the answer: the subject is asked for
                 ("What is the policy's version?", "Version: 3.2.")]  # a single cell: nothing to pick among
    for question, answer in unchanged:
        assert leading.led(question, answer) == answer, question
    record = {"instruction": "How much can I claim for an eye test?", "output": eye, "answerable": True,
              "headings": ["8. Health", "8.2 Dental and Vision"]}
    plain = training.build_examples([record], cite_section=True)[0]
    both = training.build_examples([record], cite_section=True, lead_with_value=True)[0]
    assert both["prompt"] == plain["prompt"]
    assert both["completion"] == chat.format_completion(f"Dental and Vision: $150. {eye}")


def test_a_question_heading_is_no_label_the_nearest_heading_that_names_a_part_is():
    page = "Sourcegraph Medical Leave of Absence (LOA) Policy"
    faq = ["Sourcegraph Handbook: Paid Time Off, Leave and Health Benefits", page, "FAQ", "FAQ for US-based Teammates",
           "Q: What happens to withholdings from my paychecks while I'm on leave?"]
    records = [{"instruction": "Do my 401k contributions continue?", "output": "Yes, they continue.",
                "answerable": True, "headings": faq},
               {"instruction": "Who is eligible?", "output": "Full-time teammates.", "answerable": True,
                "headings": [page, "Who is eligible for a LOA?"]},
               {"instruction": "Whom do I email?", "output": "The People Team.", "answerable": True,
                "headings": ["Questions?"]},
               {"instruction": "When do I tell my manager?", "output": "As soon as possible.", "answerable": True,
                "headings": [page, "Step 1: Notify your Manager & the People Team"]},
               {"instruction": "Is the leave paid?", "output": "Yes, for 12 weeks.", "answerable": True,
                "headings": [page, "Pregnant? Here is what to know"]}]
    completions = [e["completion"] for e in training.build_examples(records, cite_section=True)]
    assert completions == [chat.format_completion(a) for a in (
        f"{page}: Yes, they continue.", f"{page}: Full-time teammates.", "The People Team.",
        "Step 1: Notify your Manager & the People Team: As soon as possible.", f"{page}: Yes, for 12 weeks.")]


def test_split_is_stratified_deterministic_and_disjoint():
    records = make_records()
    train_a, eval_a = training.split_records(records, 0.25)
    train_b, eval_b = training.split_records(list(reversed(records)), 0.25)
    assert {r["id"] for r in eval_a} == {r["id"] for r in eval_b}
    assert sum(r["answerable"] for r in eval_a) == 4 and sum(not r["answerable"] for r in eval_a) == 1
    assert not {r["id"] for r in train_a} & {r["id"] for r in eval_a}
    assert len(train_a) + len(eval_a) == len(records)


def test_held_out_questions_are_new_phrasings_of_trained_facts():
    facts = [f"Employees in office {i} receive {10 + i} days of paid leave per year." for i in range(10)]
    records = [{"id": f"{i}-{n}", "instruction": f"Question {n} about office {i}?", "output": fact, "answerable": True}
               for i, fact in enumerate(facts) for n in range(2)]
    records += [{"id": f"single-{i}", "instruction": f"Lone question {i}?", "output": f"Lone fact {i}.", "answerable": True}
                for i in range(10)]
    train, held_out = training.split_records(records, 0.2)
    assert len(held_out) == 6
    trained_answers = {r["output"] for r in train}
    assert all(r["output"] in trained_answers for r in held_out), "a held-out fact was never trained"
    assert {r["id"] for r in training.split_records(list(reversed(records)), 0.2)[1]} == {r["id"] for r in held_out}


def test_examples_tokenise_exactly_like_the_chat_format(embedded_base):
    from policytune import models

    tokenizer = models.load_tokenizer(embedded_base)
    q, a = FACTS[3]
    example = training.build_examples([{"instruction": q, "output": a}])[0]
    assert example == {"prompt": chat.format_prompt(q), "completion": chat.format_completion(a)}
    tokenized = training.tokenize_examples([example], tokenizer, max_length=384)
    assert tokenized.rows[0]["input_ids"] == tokenizer(chat.format_example(q, a))["input_ids"]
    assert tokenizer.decode(tokenized.answers[0]) == chat.format_completion(a)
    # with the question's loss: the same ids, and the question's words (no system prompt, no chat marker) trained too
    asked = training.tokenize_examples([example], tokenizer, max_length=384, question_loss=True)
    assert asked.rows[0]["input_ids"] == tokenized.rows[0]["input_ids"]
    assert tokenizer.decode(asked.answers[0]) == q + chat.format_completion(a)


def test_loss_mask_check_passes_on_real_records_and_fails_when_the_prompt_is_trained(tiny_model, tmp_path):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from transformers import DataCollatorForLanguageModeling as PlainCollator
    from trl import SFTConfig, SFTTrainer

    from policytune import models

    torch.set_num_threads(1)
    base = models.resolve(str(tiny_model))
    tokenizer = models.load_tokenizer(base)
    tokenized = training.tokenize_examples(training.build_examples(make_records()), tokenizer, 384)

    def trainer(completion_only: bool, collator=None, padding_free: bool = True):
        args = SFTConfig(output_dir=str(tmp_path / "trainer"), report_to="none", max_length=None,
                         padding_free=padding_free and collator is None, completion_only_loss=completion_only,
                         bf16=False, gradient_checkpointing=False)
        return SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base.hf_path), args=args,
                          processing_class=tokenizer, train_dataset=Dataset.from_list(tokenized.rows),
                          data_collator=collator, peft_config=LoraConfig(r=4, target_modules="all-linear"))

    good = trainer(completion_only=True)
    result = training.check_loss_mask(good.data_collator, good.train_dataset, tokenized.answers, tokenizer)
    assert result["label_tokens"] == result["answer_tokens"] == sum(len(a) for a in tokenized.answers[:8])
    padded = trainer(completion_only=True, padding_free=False)
    training.check_loss_mask(padded.data_collator, padded.train_dataset, tokenized.answers, tokenizer)

    # A broken collator: one that re-derives labels with the plain language-modelling collator, which
    # labels every token, prompt included.
    plain = PlainCollator(tokenizer, mlm=False)
    broken = trainer(completion_only=True, collator=lambda rows: plain([{"input_ids": r["input_ids"]} for r in rows]))
    with pytest.raises(RuntimeError, match="prompt is being trained on"):
        training.check_loss_mask(broken.data_collator, broken.train_dataset, tokenized.answers, tokenizer)
    # A broken format: the loss over the whole sequence.
    whole = trainer(completion_only=False)
    with pytest.raises(RuntimeError, match="loss mask check failed"):
        training.check_loss_mask(whole.data_collator, whole.train_dataset, tokenized.answers, tokenizer)


def test_tiny_model_trains_and_writes_a_reloadable_adapter(workdir, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = train(workdir, "--base-model", str(tiny_model), "--max-steps", "6", "--eval-steps", "3", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loss mask check: " in result.stdout and "rank 0/1 joined" in result.stdout
    assert result.stdout.count("time estimate: ") == 1  # issue 16: training says how long it will take
    ckpt = workdir / "ckpt"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "training_config.json",
                 "metrics.json"):
        assert (ckpt / name).is_file(), name
    metrics = json.loads((ckpt / "metrics.json").read_text())
    assert metrics["train_loss"][-1] < metrics["train_loss"][0]
    assert len(metrics["eval_loss"]) == 2 and metrics["global_step"] == 6
    adapter_config = json.loads((ckpt / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model.resolve())
    train_split = json.loads((workdir / "data" / "train_split.json").read_text())
    eval_split = json.loads((workdir / "data" / "eval_split.json").read_text())
    # Tokens seen: 6 steps of 4 examples are whole epochs of the training split, then some examples of the
    # next (which ones depends on the shuffle): padding-free batches hold exactly the examples' tokens.
    from policytune import models

    tokenizer = models.load_tokenizer(models.resolve(str(tiny_model)))
    lengths = sorted(len(row["input_ids"]) for row in
                     training.tokenize_examples(training.build_examples(train_split), tokenizer, 384).rows)
    whole_epochs, extra_steps = divmod(6, -(-len(lengths) // 4))
    whole, extra = whole_epochs * sum(lengths), 4 * extra_steps
    assert whole_epochs >= 1 and whole + sum(lengths[:extra]) <= metrics["tokens"] <= whole + sum(lengths[::-1][:extra]), \
        (metrics["tokens"], whole, lengths)
    assert metrics["tokens_per_second"] == pytest.approx(metrics["tokens"] / metrics["train_seconds"], rel=0.01)
    assert metrics["seconds"] >= metrics["train_seconds"]  # the whole run includes loading and publishing
    # Peak RSS in MB (ru_maxrss is KB on Linux): torch alone is hundreds of MB, and it fits the machine.
    import psutil

    assert 100 < metrics["peak_rss_mb"] < psutil.virtual_memory().total / 2**20, metrics["peak_rss_mb"]
    assert len(train_split) + len(eval_split) == len(make_records())
    assert {False, True} == {r["answerable"] for r in eval_split}

    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = logits(base, tokenizer)
    tuned = PeftModel.from_pretrained(base, ckpt)
    assert (logits(tuned, tokenizer) - before).abs().max() > 1e-3


def test_by_default_the_passes_fill_the_time_budget_and_measuring_leaves_the_training_untouched(tmp_path, tiny_model):
    """--epochs 0 (the default) measures this machine's speed and trains as many half passes as fit in --time-budget,
    between 1 and --max-auto-epochs; the result is the run --epochs N would have given, byte for byte."""
    runs = {}
    for name, flags in {"roomy": ["--time-budget", "600", "--max-auto-epochs", "2"],
                        "tight": ["--time-budget", "0.0001"],
                        "fixed": ["--epochs", "2"]}.items():
        workdir = tmp_path / name
        (workdir / "data").mkdir(parents=True)
        (workdir / "data" / "instructionquality.json").write_text(json.dumps(make_records()))
        result = train(workdir, "--base-model", str(tiny_model), *TINY_FLAGS, "--eval-fraction", "0", *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = (result.stdout, workdir / "ckpt")
    assert "passes: 2 (" in runs["roomy"][0] and "passes: 1 (" in runs["tight"][0] and "passes:" not in runs["fixed"][0]
    for name, epochs in (("roomy", 2), ("tight", 1), ("fixed", 2)):
        assert json.loads((runs[name][1] / "training_config.json").read_text())["epochs_used"] == epochs
    epochs = {name: json.loads((ckpt / "metrics.json").read_text())["epochs"] for name, (_, ckpt) in runs.items()}
    assert epochs == {"roomy": 2, "tight": 1, "fixed": 2}
    assert (runs["roomy"][1] / "adapter_model.safetensors").read_bytes() == \
        (runs["fixed"][1] / "adapter_model.safetensors").read_bytes()
    # Rounded up to the half pass that fills the budget (the deadline ends a longer plan on time, annealed).
    assert training.passes_in_budget(100, 1000, 4) == 4 and training.passes_in_budget(600, 900, 4) == 1.5
    assert training.passes_in_budget(300, 900, 4) == 3.0 and training.passes_in_budget(5000, 60, 4) == 1.0
    assert training.passes_in_budget(660, 1320, 4) == 2.0  # 1.74 passes' time: 1.5 used to leave 4 minutes idle


def test_question_loss_trains_on_the_questions_too_and_not_beside_the_fact_weight(workdir, tiny_model):
    result = train(workdir, "--base-model", str(tiny_model), "--max-steps", "2", "--eval-steps", "2", "--question-loss",
                   *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    checked = re.search(r"loss mask check: (\d+) label tokens = (\d+) question and answer tokens", result.stdout)
    assert checked and checked[1] == checked[2], result.stdout[-2000:]
    rejected = train(workdir, "--base-model", str(tiny_model), "--question-loss", "--fact-weight", "3", *TINY_FLAGS)
    assert rejected.returncode == 2 and "not with --question-loss" in rejected.stderr


def test_neftune_noise_reaches_the_training_steps_only_when_asked(workdir, tiny_model):
    """The same first batch under the same seed: noise on the input embeddings moves its loss; none leaves it."""
    def first_loss(*flags: str) -> float:
        result = train(workdir, "--base-model", str(tiny_model), "--max-steps", "1", "--eval-fraction", "0", "--fresh",
                       *TINY_FLAGS, *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        return float(re.search(r"'loss': '([\d.]+)'", result.stdout + result.stderr)[1])

    plain = first_loss()
    assert first_loss("--neftune-alpha", "0") == plain
    assert abs(first_loss("--neftune-alpha", "20000") - plain) > 0.01
    rejected = train(workdir, "--base-model", str(tiny_model), "--neftune-alpha", "-1", *TINY_FLAGS)
    assert rejected.returncode == 2 and "--neftune-alpha" in rejected.stderr


def test_loraplus_moves_the_b_matrices_ratio_times_as_far_as_plain_lora(workdir, tiny_model):
    """LoRA's B matrices start at zero, so after one AdamW step (no warm-up) each has moved by its learning rate:
    the peak rate with plain LoRA, that times the ratio with LoRA+ (A, whose gradient is zero while B is, stays)."""
    from safetensors.torch import load_file

    def step_sizes(*flags: str) -> tuple[float, float]:
        result = train(workdir, "--base-model", str(tiny_model), "--max-steps", "1", "--eval-fraction", "0", "--fresh",
                       "--warmup-ratio", "0", *TINY_FLAGS, *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        tensors = load_file(workdir / "ckpt" / "adapter_model.safetensors")
        b = max(t.abs().max().item() for name, t in tensors.items() if "lora_B" in name)
        return b, float(json.loads((workdir / "ckpt" / "training_config.json").read_text())["loraplus_ratio"])

    lr = float(TINY_FLAGS[TINY_FLAGS.index("--learning-rate") + 1])
    plain, ratio0 = step_sizes("--loraplus-ratio", "0")
    faster, ratio3 = step_sizes("--loraplus-ratio", "3")
    assert (ratio0, ratio3) == (0, 3)
    assert plain == pytest.approx(lr, rel=0.01) and faster == pytest.approx(3 * lr, rel=0.01), (plain, faster)
    rejected = train(workdir, "--base-model", str(tiny_model), "--loraplus-ratio", "0.5", *TINY_FLAGS)
    assert rejected.returncode == 2 and "--loraplus-ratio" in rejected.stderr


def test_near_miss_repeats_train_each_near_miss_that_many_times_a_pass(workdir, tiny_model):
    """--near-miss-repeats 3: every refusal-labelled training record twice more per pass, nothing else repeated."""
    def steps_per_pass(*flags: str) -> tuple[int, str]:
        result = train(workdir, "--base-model", str(tiny_model), "--max-steps", "1", "--eval-fraction", "0", "--fresh",
                       "--section-restatements", "0", *TINY_FLAGS, "--batch-size", "1", *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        return int(re.search(r"(\d+) steps/epoch", result.stdout)[1]), result.stdout

    near_misses = sum(1 for r in make_records() if r["answerable"] is False)
    once, out = steps_per_pass()
    thrice, out3 = steps_per_pass("--near-miss-repeats", "3")
    assert near_misses and thrice == once + 2 * near_misses and "near misses:" not in out
    assert f"near misses: {near_misses} trained 3 times a pass" in out3
    rejected = train(workdir, "--base-model", str(tiny_model), "--near-miss-repeats", "0", *TINY_FLAGS)
    assert rejected.returncode == 2 and "--near-miss-repeats" in rejected.stderr


def test_full_fine_tuning_writes_a_whole_model_in_place_of_the_adapter(workdir, tiny_model):
    """--method full trains every weight and saves the model itself; the adapter of an earlier LoRA run in the same
    folder is removed, so nothing later loads it instead."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lora = train(workdir, "--base-model", str(tiny_model), "--max-steps", "2", *TINY_FLAGS)
    assert lora.returncode == 0, lora.stderr[-3000:]
    ckpt = workdir / "ckpt"
    assert (ckpt / "adapter_model.safetensors").is_file()
    result = train(workdir, "--base-model", str(tiny_model), "--method", "full", "--max-steps", "6",
                   "--eval-steps", "3", *[f for f in TINY_FLAGS if f not in ("--learning-rate", "3e-3")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at learning rate 0.0003" in result.stdout, "full fine-tuning takes its own default learning rate"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "training_config.json", "metrics.json"):
        assert (ckpt / name).is_file(), name
    assert not (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "adapter_config.json").exists()
    assert json.loads((ckpt / "training_config.json").read_text())["method"] == "full"
    metrics = json.loads((ckpt / "metrics.json").read_text())
    assert metrics["train_loss"][-1] < metrics["train_loss"][0]

    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    tuned = AutoModelForCausalLM.from_pretrained(ckpt)  # loads with stock attention, no policytune code
    assert (logits(tuned, tokenizer) - logits(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer)).abs().max() > 1e-3


def test_publishing_one_method_clears_the_other_methods_files(tmp_path):
    """A LoRA run after a full one (or the reverse) must not leave the other's weights where evaluate and deploy look
    first; a full fine-tune cannot train quantized weights."""
    target, staging = tmp_path / "ckpt", tmp_path / "staging"
    target.mkdir()
    for name in training.FULL_FILES + ("tokenizer.json",):
        (target / name).write_text("old")
    staging.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json", "metrics.json"):
        (staging / name).write_text("new")
    (staging / "adapter_model.safetensors").chmod(0o600)  # as safetensors writes it
    training.publish(staging, target, last="metrics.json", stale=training.FULL_FILES)
    assert sorted(p.name for p in target.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                        "metrics.json", "tokenizer.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in target.iterdir() if p.name != "tokenizer.json"} == \
        dict.fromkeys(["adapter_config.json", "adapter_model.safetensors", "metrics.json"], 0o666 & ~umask)
    stage = stage_module("train.py")
    with pytest.raises(ValueError, match="quantized weights cannot be trained"):
        stage.TrainConfig(method="full", quantization="4bit")
    assert stage.TrainConfig(method="full").peak_learning_rate() == 3e-4
    assert stage.TrainConfig().peak_learning_rate() == 1e-3


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_not_from_zero(workdir, tiny_model):
    flags = ["--base-model", str(tiny_model), "--max-steps", "30", "--eval-steps", "2", "--early-stopping-patience", "0",
             *TINY_FLAGS]
    command = [sys.executable, str(ROOT / "train.py"), "--data-dir", str(workdir / "data"),
               "--checkpoint-dir", str(workdir / "ckpt"), *flags]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trainer_dir = workdir / "ckpt" / "trainer"
    deadline = time.monotonic() + 400  # a loaded shared CI machine needs minutes to import and load
    try:
        while training.latest_complete_checkpoint(trainer_dir) is None and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 400 s"
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert not (workdir / "ckpt" / "metrics.json").exists()  # a killed run never looks finished
    # nor leaves a held-out split beside an adapter that trained on most of it (the split was written at the start)
    assert not (workdir / "data" / "eval_split.json").exists() and not (workdir / "data" / "train_split.json").exists()
    step = int(training.latest_complete_checkpoint(trainer_dir).name.split("-")[1])
    assert step < 30

    # A key written before an upgrade added a flag (here near_miss_repeats, at its default) still names this run.
    key = json.loads((trainer_dir / "run_key.json").read_text())
    del key["settings"]["near_miss_repeats"]
    (trainer_dir / "run_key.json").write_text(json.dumps(key))
    killed = {p.relative_to(trainer_dir): p.read_bytes() for p in trainer_dir.rglob("*") if p.is_file()}
    # A rerun with a setting the trainer refuses, or an explicit --resume whose adapter cannot hold the checkpoint,
    # is one line and leaves the killed run to resume (both once deleted its checkpoints, or rewrote its key).
    assert "--logging-steps must be at least 1" in bad_input_run(workdir, *flags, "--logging-steps", "0").stderr
    assert "were trained with --lora-r 8, which this run changes" in \
        bad_input_run(workdir, *flags, "--lora-r", "4", "--resume").stderr
    assert {p.relative_to(trainer_dir): p.read_bytes() for p in trainer_dir.rglob("*") if p.is_file()} == killed
    # The same command again (no --resume: what a pipeline rerun does) continues the killed run.
    resumed = train(workdir, *flags)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {trainer_dir / f'checkpoint-{step}'}" in resumed.stdout
    metrics = json.loads((workdir / "ckpt" / "metrics.json").read_text())
    assert metrics["resumed_from"] == f"checkpoint-{step}"
    saved = json.loads((workdir / "ckpt" / "training_config.json").read_text())
    assert saved["eval_split_sha256"] == io.file_sha256(workdir / "data" / "eval_split.json")
    assert metrics["global_step"] == 30 and metrics["steps_this_run"] == 30 - step
    # The loss history before the kill is kept, once per step: the same steps an uninterrupted run logs.
    assert metrics["train_loss_steps"] == list(range(1, 31))
    assert metrics["eval_loss_steps"] == sorted(set(metrics["eval_loss_steps"]))
    assert set(range(2, 31, 2)) <= set(metrics["eval_loss_steps"])
    # and so is the held-out answer curve, with its count of kept evaluations going on from before the kill
    curve = metrics["heldout_answers"]
    assert [h["step"] for h in curve] == metrics["eval_loss_steps"]
    assert all(later["kept"] >= earlier["kept"] for earlier, later in zip(curve, curve[1:]))
    # A finished run is not resumed again, and other settings never resume a run that is not theirs.
    assert not (trainer_dir / "run_key.json").exists()

    # --resume continues explicitly even with changed settings (here: more steps).
    more = train(workdir, *flags[:3], "31", *flags[4:], "--resume")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "resuming from" in more.stdout and json.loads((workdir / "ckpt" / "metrics.json").read_text())["global_step"] == 31


def test_a_saved_run_is_this_run_only_when_its_settings_match_or_are_new_ones_at_their_defaults():
    same = stage_module("train.py").same_settings
    assert same({"epochs": 2}, {"epochs": 2, "near_miss_repeats": 1}, {"epochs": 0, "near_miss_repeats": 1})
    assert not same({"epochs": 2}, {"epochs": 2, "near_miss_repeats": 3}, {"epochs": 0, "near_miss_repeats": 1})
    assert not same({"epochs": 2}, {"epochs": 3}, {"epochs": 0})  # a changed setting is another run
    assert not same(None, {"epochs": 2}, {"epochs": 0})  # a key from before settings were saved


@pytest.mark.slow
def test_torchrun_two_ranks_join_and_write_one_adapter(workdir, tiny_model):
    result = run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "train.py"),
                        "--data-dir", str(workdir / "data"), "--checkpoint-dir", str(workdir / "ckpt"),
                        "--base-model", str(tiny_model), "--max-steps", "3", *TINY_FLAGS, cwd=workdir,
                        env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "rank 0/2 joined" in output and "rank 1/2 joined" in output
    assert output.count("adapter saved:") == 1
    metrics = json.loads((workdir / "ckpt" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 3
    assert sorted(p.name for p in (workdir / "ckpt").glob("adapter_model*")) == ["adapter_model.safetensors"]


@pytest.mark.slow
def test_torchrun_two_ranks_choose_their_passes_by_the_budget_on_rank_0s_clock(workdir, tiny_model):
    """With --epochs 0 every rank runs the deadline, reading rank 0's clock at the same points (a broadcast at each
    step and each learning-rate lookup): the ranks finish the pass together and one adapter is written."""
    result = run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "train.py"),
                        "--data-dir", str(workdir / "data"), "--checkpoint-dir", str(workdir / "ckpt"),
                        "--base-model", str(tiny_model), "--time-budget", "0.0001", "--eval-fraction", "0", *TINY_FLAGS,
                        "--batch-size", "1", cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "passes: 1 (" in output and output.count("adapter saved:") == 1
    assert "; the time budget ends it" in output  # the deadline is on: its estimate ends with the pass, past the budget
    metrics = json.loads((workdir / "ckpt" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs"] == 1


def bad_input_run(workdir: Path, *flags: str) -> subprocess.CompletedProcess:
    result = train(workdir, *flags)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")
    assert not (workdir / "ckpt" / "metrics.json").exists()
    assert not (workdir / "ckpt" / "adapter_model.safetensors").exists()
    return result


@pytest.mark.parametrize("flags", [["--logging-steps", "0"], ["--warmup-ratio", "2"], ["--epochs", "nan"],
                                   ["--learning-rate", "inf"], ["--lora-dropout", "1.5"], ["--threads", "-2"]])
def test_settings_the_trainer_would_refuse_late_are_refused_first(flags):
    with pytest.raises(config.UserError):
        config.parse(stage_module("train.py").TrainConfig, flags)


@pytest.mark.parametrize("change, needle", [
    (lambda records: records[1].update(id=records[0]["id"]), "records 1 and 2 share the id"),
    (lambda records: records[-1].update(answerable="false"), "has 'answerable' 'false': it must be true or false"),
], ids=["duplicate_id", "answerable_as_text"])
def test_records_the_split_and_evaluation_cannot_use_exit_2(workdir, change, needle):
    path = workdir / "data" / "instructionquality.json"
    records = [{**r, "id": f"r{n}"} for n, r in enumerate(json.loads(path.read_text()))]
    change(records)
    path.write_text(json.dumps(records))
    assert needle in bad_input_run(workdir).stderr


def test_a_base_whose_weights_fail_to_load_is_one_line_and_writes_no_split(workdir, tiny_model):
    base = workdir / "no-weights"
    shutil.copytree(tiny_model, base, ignore=shutil.ignore_patterns("*.safetensors"))  # tokenizer and config only
    result = bad_input_run(workdir, "--base-model", str(base), *TINY_FLAGS)
    assert str(base) in result.stderr
    assert not list((workdir / "data").glob("*_split.json")), "the split of a run that never trained was written"


def test_missing_dataset_exits_2(workdir):
    (workdir / "data" / "instructionquality.json").unlink()
    assert "not found" in bad_input_run(workdir).stderr


def test_empty_dataset_exits_2(workdir):
    (workdir / "data" / "instructionquality.json").write_text("[]")
    assert "no training records" in bad_input_run(workdir).stderr


def test_records_without_answers_exit_2(workdir):
    records = make_records()
    records[3]["output"] = ""
    (workdir / "data" / "instructionquality.json").write_text(json.dumps(records))
    assert "has no output" in bad_input_run(workdir).stderr


def test_unknown_base_model_exits_2(workdir):
    assert "no such file or folder" in bad_input_run(workdir, "--base-model", "./no-such-model").stderr


# --- Throughput (issue 17): answer-only head, per-example attention, bf16 detection, time estimate ---

def _trainers_on_one_batch(tiny_model, tmp_path, padding_free: bool):
    """The plain SFTTrainer and the answer-only one on identical weights (LoRA B non-zero), and one batch."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from policytune import models

    torch.set_num_threads(1)
    base = models.resolve(str(tiny_model))
    tokenizer = models.load_tokenizer(base)
    rows = training.tokenize_examples(training.build_examples(make_records()), tokenizer, 384).rows

    def make(trainer_class, attention: str = "sdpa"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(base.hf_path)
        if attention == "per-example":
            training.use_varlen_attention(model)
        args = SFTConfig(output_dir=str(tmp_path / "trainer"), report_to="none", max_length=None, padding_free=padding_free,
                         completion_only_loss=True, per_device_train_batch_size=6, use_cpu=True, disable_tqdm=True)
        return trainer_class(model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
                             peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                                    init_lora_weights=False))

    plain = make(SFTTrainer)
    batch = plain.data_collator([plain.train_dataset[i] for i in range(6)])
    return plain, make, batch


def _loss_and_grad(trainer, batch):
    import torch

    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    grads = [p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad]
    return float(loss.detach()), torch.cat(grads)


@pytest.mark.parametrize("padding_free", [True, False], ids=["padding-free", "padded"])
def test_answer_only_loss_equals_the_full_logits_loss(tiny_model, tmp_path, padding_free):
    import torch

    plain, make, batch = _trainers_on_one_batch(tiny_model, tmp_path, padding_free)
    assert ("position_ids" in batch) == padding_free
    # The reference: the model's own loss over full logits (every position through the head).
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        full_logits_loss = float(plain.model(**inputs, labels=batch["labels"]).loss)
    plain_loss, plain_grad = _loss_and_grad(plain, batch)
    answer_only = make(training.answer_only_trainer_class())
    loss, grad = _loss_and_grad(answer_only, batch)
    assert abs(loss - full_logits_loss) < 1e-4 and abs(loss - plain_loss) < 1e-4
    assert torch.allclose(grad, plain_grad, atol=1e-5, rtol=1e-3)
    # TRL's metrics are still logged, from the answer rows.
    assert answer_only._metrics["train"]["mean_token_accuracy"] and answer_only._metrics["train"]["entropy"]
    if padding_free:  # attention within each packed example gives the same loss as the masked whole-batch SDPA
        per_example, grad_per_example = _loss_and_grad(make(training.answer_only_trainer_class(), "per-example"), batch)
        assert abs(per_example - full_logits_loss) < 1e-4
        assert torch.allclose(grad_per_example, plain_grad, atol=1e-5, rtol=1e-3)
        # ... and so does computing the shared system-prompt prefix once for the whole batch.
        assert training.share_prompt_prefix(batch)[training.SHARED_PREFIX_KEY] >= 30
        shared, grad_shared = _loss_and_grad(make(training.answer_only_trainer_class(share_prefix=True), "per-example"), batch)
        assert abs(shared - full_logits_loss) < 1e-4
        assert torch.allclose(grad_shared, plain_grad, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("prefix", [0, 5], ids=["no-prefix", "shared-prefix"])
def test_per_example_attention_is_exact_when_a_long_example_splits_the_batch(prefix):
    import torch

    torch.manual_seed(0)
    rests = [60, 4, 7, 3, 6]  # one section restatement among short questions: attended in two calls
    bounds = [0, prefix] if prefix else [0]
    for n in rests:
        bounds.append(bounds[-1] + n)
    total, heads, dim = bounds[-1], 2, 8
    query, key, value = (torch.randn(1, heads, total, dim) for _ in range(3))
    cu = torch.tensor(bounds)
    groups, _ = training._packed_layout(cu, prefix, query.device)
    assert [rows for _, rows, _ in groups] == [1, 4]  # the long example alone, the short ones together
    out, _ = training._varlen_sdpa_forward(types.SimpleNamespace(num_key_value_groups=1), query, key, value, None,
                                           cu_seq_lens_q=cu, **{training.SHARED_PREFIX_KEY: prefix})
    segments = list(zip(bounds[1:] if prefix else bounds, bounds[2:] if prefix else bounds[1:]))
    for a, b in segments:  # each example alone: its prefix copy, then its own tokens, causally
        index = torch.tensor(list(range(prefix)) + list(range(a, b)))
        alone = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, index], key[:, :, index], value[:, :, index], is_causal=True)
        assert torch.allclose(out[0, a:b].transpose(0, 1), alone[0, :, prefix:], atol=1e-5)
        if prefix:
            assert torch.allclose(out[0, :prefix].transpose(0, 1), alone[0, :, :prefix], atol=1e-5)
    alike = torch.tensor([0, 10, 19, 29])  # lengths alike: one call
    assert len(training._packed_layout(alike, 0, query.device)[0]) == 1


def test_per_example_attention_stays_float32_under_bf16_autocast_on_a_cpu(tiny_model, tmp_path, monkeypatch):
    """bf16 SDPA's backward on a CPU is slower than float32's: under bf16 autocast only the linear layers go bf16."""
    import torch

    _, make, batch = _trainers_on_one_batch(tiny_model, tmp_path, padding_free=True)
    trainer = make(training.answer_only_trainer_class(), "per-example")
    sdpa, seen = torch.nn.functional.scaled_dot_product_attention, []

    def spy(query, key, value, **kwargs):
        out = sdpa(query, key, value, **kwargs)
        seen.append(out.dtype)  # under autocast the inputs may be float32 and the computation still bf16
        return out

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    reference, _ = _loss_and_grad(trainer, batch)
    for float32_attention, wanted in [(True, torch.float32), (False, torch.bfloat16)]:
        monkeypatch.setattr(training, "FLOAT32_CPU_ATTENTION", float32_attention)
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, grad = _loss_and_grad(trainer, batch)
        assert seen and set(seen) == {wanted}
        assert abs(loss - reference) < 0.05 * abs(reference) and torch.isfinite(grad).all()


def test_fact_weight_favours_the_answer_tokens_its_question_lacks(tiny_model):
    import torch

    from policytune import models, token_weights

    tokenizer = models.load_tokenizer(models.resolve(str(tiny_model)))
    examples = [{"prompt": chat.format_prompt(q), "completion": chat.format_completion(a)} for q, a in [
        ("How many weeks of paternity leave are there?", "Paternity leave is 4 weeks at 100% of base salary."),
        ("Is there a pet bereavement day?", chat.REFUSAL)]]
    tok = training.tokenize_examples(examples, tokenizer, None)
    refusal_ids = tok.answers[1]
    ids = torch.tensor([sum((r["input_ids"] for r in tok.rows), [])])
    labels = torch.tensor([sum(([t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])]
                                for r in tok.rows), [])])
    positions = torch.tensor([sum((list(range(len(r["input_ids"]))) for r in tok.rows), [])])
    weights = token_weights.novel_answer_weights(ids, labels, positions, 3.0, refusal_ids)
    _, targets = training.answer_positions(labels)
    assert weights.shape == targets.shape
    first = len(tok.answers[0])
    # Inside the answer the new tokens weigh 3 times the repeated ones; the answer as a whole weighs as before.
    high, low = float(weights[:first].max()), float(weights[:first].min())
    assert abs(high / low - 3.0) < 1e-4 and abs(float(weights[:first].sum()) - first) < 1e-3
    favoured = {tokenizer.decode([t]).strip() for t, w in zip(targets[:first].tolist(), weights[:first].tolist()) if w == high}
    repeated = {tokenizer.decode([t]).strip() for t, w in zip(targets[:first].tolist(), weights[:first].tolist()) if w == low}
    assert {"4", "salary"} <= favoured and {"weeks", "leave"} <= repeated
    assert weights[first:].tolist() == [1.0] * (len(targets) - first)  # the refusal is not weighted
    # A padded batch (one example a row) gets the same weights.
    width = max(len(r["input_ids"]) for r in tok.rows)
    padded_ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in tok.rows])
    padded_labels = torch.tensor([[t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])]
                                  + [-100] * (width - len(r["input_ids"])) for r in tok.rows])
    assert torch.allclose(token_weights.novel_answer_weights(padded_ids, padded_labels, None, 3.0, refusal_ids), weights)


@pytest.mark.parametrize("padding_free", [True, False], ids=["padding-free", "padded"])
def test_the_trainer_applies_the_fact_weights_to_its_loss(tiny_model, tmp_path, padding_free):
    import torch

    from policytune import token_weights

    plain, make, batch = _trainers_on_one_batch(tiny_model, tmp_path, padding_free)
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = plain.model(**inputs).logits
    keep, targets = training.answer_positions(batch["labels"])
    nll = -torch.log_softmax(logits[keep].float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    weights = token_weights.novel_answer_weights(batch["input_ids"], batch["labels"], batch.get("position_ids"), 4.0)
    assert float(weights.max()) > float(weights.min())
    trainer = make(training.answer_only_trainer_class(fact_weight=4.0), "per-example" if padding_free else "sdpa")
    loss, _ = _loss_and_grad(trainer, batch)
    assert abs(loss - float((weights * nll).mean())) < 1e-4 and abs(loss - float(nll.mean())) > 1e-3
    trainer.model.eval()  # the eval loss stays the plain mean
    with torch.no_grad():
        assert abs(float(trainer.compute_loss(trainer.model, dict(batch))) - float(nll.mean())) < 1e-4


def test_answer_positions_are_the_shifted_labels():
    import torch

    labels = torch.tensor([[-100, -100, 7, 8, -100, -100, 9]])
    keep, targets = training.answer_positions(labels)
    assert keep.tolist() == [[False, True, True, False, False, True, False]]
    assert targets.tolist() == [7, 8, 9]


def test_bf16_autocast_only_where_the_cpu_has_it_natively():
    assert training.cpu_has_native_bf16("fpu sse2 avx2 fma avx512f avx512_bf16 avx512_fp16")
    assert training.cpu_has_native_bf16("fpu avx2 amx_bf16 amx_tile amx_int8")
    assert not training.cpu_has_native_bf16("fpu sse2 avx avx2 fma f16c sha_ni vaes")  # AMD EPYC (Zen 2/3): emulated
    assert not training.cpu_has_native_bf16("avx512f avx512bw avx512_vnni")  # AVX-512 without BF16
    assert not training.cpu_has_native_bf16("")
    assert training.use_bf16("off", on_cuda=False, flags="avx512_bf16") is False
    assert training.use_bf16("on", on_cuda=False, flags="avx2") is True
    assert training.use_bf16("auto", on_cuda=False, flags="avx2 fma") is False
    assert training.use_bf16("auto", on_cuda=False, flags="avx512_bf16") is True


def _run_steps(callback, steps: int, seconds: float, max_steps: int, tokens_per_step: int = 0, args=None) -> None:
    """Drive a TrainerCallback through `steps` steps of `seconds` each, as the trainer would."""
    state = types.SimpleNamespace(global_step=0, max_steps=max_steps, is_world_process_zero=True, num_input_tokens_seen=0)
    callback.on_train_begin(args, state, None)
    for step in range(1, steps + 1):
        state.global_step, state.num_input_tokens_seen = step, tokens_per_step * step
        time.sleep(seconds)
        callback.on_step_end(args, state, None)


def test_time_estimate_is_printed_once_after_the_first_steps():
    lines: list[str] = []
    _run_steps(training.time_estimate_callback(after_steps=3, output=lines.append), 7, 0.01, max_steps=40)
    assert len(lines) == 1
    assert lines[0].startswith("time estimate: ") and "37 of 40 steps left" in lines[0] and "more (finishing around" in lines[0]
    assert "measured over 2 steps" in lines[0]
    assert training.format_duration(3725) == "1 h 2 min" and training.format_duration(95) == "1 min 35 s"
    # Timed steps of short examples (100 tokens) in a run whose steps average 2,000 tokens: costed per token
    lines.clear()
    callback = training.time_estimate_callback(after_steps=3, tokens_per_step=2000, output=lines.append)
    _run_steps(callback, 3, 0.02, max_steps=40, tokens_per_step=100)
    per_step = float(lines[0].split("time estimate: ")[1].split(" s per step")[0])
    assert 0.3 <= per_step <= 1.0, lines[0]  # ~0.4 s: 20 times a timed step, not 0.02 s


def test_a_plan_longer_than_the_time_budget_is_estimated_to_end_with_the_budget():
    """Passes are rounded up to fill the budget and the deadline ends a longer plan on time: the estimate says when."""
    def estimate(budget: float, min_steps: int) -> tuple[float, str]:
        lines: list[str] = []
        callback = training.time_estimate_callback(after_steps=3, budget_seconds=budget, min_steps=min_steps,
                                                   output=lines.append)
        _run_steps(callback, 3, 0.05, max_steps=400)
        minutes, seconds = re.search(r"about (?:(\d+) min ?)?(?:(\d+) s)? more", lines[0]).groups()
        return int(minutes or 0) * 60 + int(seconds or 0), lines[0]

    unbounded, line = estimate(0.0, 0)  # ~397 steps of ~0.05 s
    assert 18 <= unbounded <= 40 and "budget" not in line, line
    bounded, line = estimate(5.0, 10)
    assert 4 <= bounded <= 5 and line.endswith("; the time budget ends it"), line
    whole_pass, line = estimate(5.0, 300)  # never before a whole pass: 297 steps more
    assert 14 <= whole_pass <= 30 and line.endswith("; the time budget ends it"), line
    within, line = estimate(600.0, 10)
    assert within == pytest.approx(unbounded, rel=0.5) and "budget" not in line, line


def test_evaluations_twice_a_pass_never_come_a_few_steps_apart():
    """Every half pass a held-out evaluation costs about a minute on a 2-core CPU; one a step or two before the run's
    last step (which transformers evaluates anyway) buys nothing. The sample's 193 steps a pass did exactly that."""
    assert training.evaluation_steps(10, 5) == [5, 10] and training.evaluation_steps(11, 5) == [5, 10, 11]
    for steps_per_epoch in range(16, 400):
        every = training.half_pass_steps(steps_per_epoch)
        for halves in range(2, 9):  # the passes the time budget may choose: 1 to 4, in halves
            points = training.evaluation_steps(math.ceil(steps_per_epoch * halves / 2), every)
            assert len(points) == halves, (steps_per_epoch, halves, points)
            assert min(b - a for a, b in zip([0] + points, points)) >= every / 2, (steps_per_epoch, halves, points)
    # the time estimate counts the evaluation at the end too
    lines: list[str] = []
    callback = training.time_estimate_callback(after_steps=3, evaluates=True, eval_batches=3, output=lines.append)
    _run_steps(callback, 3, 0.0, max_steps=193, args=types.SimpleNamespace(eval_steps=96))
    assert "190 of 193 steps left and 3 evaluations" in lines[0], lines[0]  # 96, 192, 193


# --- keep-best and early stopping -----------------------------------------------------------------

# A learning rate far too high for the tiny model, ramped up over 4 of 10 steps: the eval loss falls
# while the rate is small, then the steps overshoot and it never gets back (measured: lowest at step
# 3 of evaluations every step). --keep-best is on by default.
OVERSHOOT_FLAGS = ["--threads", "1", "--lora-r", "8", "--lora-alpha", "16", "--batch-size", "4", "--logging-steps", "1",
                   "--learning-rate", "20", "--warmup-ratio", "0.4", "--max-steps", "10", "--eval-steps", "1"]


@pytest.fixture(scope="module")
def overshooting_run(tmp_path_factory, tiny_model) -> Path:
    """One train.py run with early stopping (patience 2) whose eval loss bottoms out early."""
    workdir = tmp_path_factory.mktemp("overshoot")
    (workdir / "data").mkdir()
    (workdir / "data" / "instructionquality.json").write_text(json.dumps(make_records()))
    result = train(workdir, "--base-model", str(tiny_model), *OVERSHOOT_FLAGS, "--early-stopping-patience", "2",
                   "--select-by", "loss")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_keep_best_publishes_the_checkpoint_with_the_lowest_eval_loss(overshooting_run):
    ckpt = overshooting_run / "ckpt"
    metrics = json.loads((ckpt / "metrics.json").read_text())
    losses, steps = metrics["eval_loss"], metrics["eval_loss_steps"]
    best_step = steps[losses.index(min(losses))]
    assert best_step != steps[-1], f"the run should overshoot after its best evaluation: {losses}"
    assert metrics["published"] == "best" and metrics["best_checkpoint"] == f"checkpoint-{best_step}"
    assert metrics["best_eval_loss"] == pytest.approx(min(losses), abs=1e-4)
    published = adapter_tensors(ckpt)
    # The trainer keeps the best checkpoint beside the last one: the published adapter is the best's.
    assert same_tensors(published, adapter_tensors(ckpt / "trainer" / f"checkpoint-{best_step}"))
    assert not same_tensors(published, adapter_tensors(ckpt / "trainer" / f"checkpoint-{metrics['global_step']}"))


def test_early_stopping_ends_the_run_when_eval_loss_stops_improving(overshooting_run):
    metrics = json.loads((overshooting_run / "ckpt" / "metrics.json").read_text())
    losses, steps = metrics["eval_loss"], metrics["eval_loss_steps"]
    best = losses.index(min(losses))
    assert metrics["global_step"] < 10, f"no early stop: {losses}"
    # It stopped at the second evaluation in a row that did not beat the best (patience 2).
    assert len(losses) == best + 1 + 2 and all(loss >= losses[best] for loss in losses[best + 1:])
    assert metrics["global_step"] == steps[-1]


def test_keep_best_by_answers_publishes_the_latest_checkpoint_within_noise_of_the_best(tmp_path, tiny_model):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "instructionquality.json").write_text(json.dumps(make_records()))
    result = train(tmp_path, "--base-model", str(tiny_model), "--threads", "1", "--lora-r", "8", "--lora-alpha", "16",
                   "--batch-size", "4", "--max-steps", "3", "--eval-steps", "1", "--eval-fraction", "0.4",
                   "--heldout-answers", "6", "--early-stopping-patience", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "ckpt"
    metrics = json.loads((ckpt / "metrics.json").read_text())
    curve = metrics["heldout_answers"]
    assert [h["step"] for h in curve] == [1, 2, 3] and all(h["answerable"] and h["unanswerable"] for h in curve)
    # a random 2-layer model scores the same at every step: ties, each one kept, so the last step is published
    assert len({h["answer_score"] for h in curve}) == 1 and [h["kept"] for h in curve] == [1, 2, 3]
    assert metrics["best_checkpoint"] == "checkpoint-3" and metrics["best_metric"] == curve[-1]["answer_score"]
    assert same_tensors(adapter_tensors(ckpt), adapter_tensors(ckpt / "trainer" / "checkpoint-3"))
    # what a resumed run continues the count from is in the trainer's own log
    logged = json.loads((ckpt / "trainer" / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    evaluations = [h for h in logged if heldout.KEPT in h]
    assert [h[heldout.KEPT] for h in evaluations] == [1, 2, 3]
    assert all(f"eval_answer_{key}" in h for h in evaluations for key in ("answerable", "unanswerable"))


def test_shared_prompt_prefix_is_kept_once_with_the_original_positions_and_labels():
    import torch

    prompt, ignore = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14], training.IGNORE_INDEX
    examples = [(prompt + [20, 21, 30, 31], 2), (prompt + [22, 32, 33, 34], 1), (prompt + [23, 24, 25, 35], 3)]
    ids = [t for tokens, _ in examples for t in tokens]
    labels = [t if i >= len(tokens) - n_answer else ignore for tokens, n_answer in examples for i, t in enumerate(tokens)]
    positions = [i for tokens, _ in examples for i in range(len(tokens))]
    batch = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "position_ids": torch.tensor([positions]),
             "cu_seq_lens_q": torch.tensor([0, 14, 28, 42], dtype=torch.int32)}
    batch["cu_seq_lens_k"] = batch["cu_seq_lens_q"]
    shared = training.share_prompt_prefix(batch, min_length=4)
    assert shared[training.SHARED_PREFIX_KEY] == 10
    assert shared["input_ids"][0].tolist() == prompt + [20, 21, 30, 31, 22, 32, 33, 34, 23, 24, 25, 35]
    assert shared["position_ids"][0].tolist() == list(range(10)) + [10, 11, 12, 13] * 3
    assert shared["cu_seq_lens_q"].tolist() == [0, 10, 14, 18, 22]
    # The same label tokens, in order: the loss sees exactly the answers.
    kept = shared["labels"][shared["labels"] != ignore].tolist()
    assert kept == [30, 31, 34, 24, 25, 35]
    # Nothing to share (a prefix shorter than min_length, or one example): the batch comes back as it was.
    assert training.share_prompt_prefix(batch, min_length=11) is batch
    one = {**batch, "cu_seq_lens_q": torch.tensor([0, 42], dtype=torch.int32)}
    assert training.share_prompt_prefix(one) is one


def test_held_out_split_is_capped_in_proportion_and_keeps_both_strata():
    records = [{"id": f"a{i}", "instruction": f"q{i}?", "output": f"fact {i // 3}", "answerable": True} for i in range(300)]
    records += [{"id": f"u{i}", "instruction": f"u{i}?", "output": "x", "answerable": False} for i in range(100)]
    train, held_out = training.split_records(records, 0.15, max_eval=40)
    assert len(held_out) == 40 and sum(not r["answerable"] for r in held_out) == 10
    assert len(train) + len(held_out) == 400
    uncapped = training.split_records(records, 0.15)[1]
    assert len(uncapped) == 60


def test_threads_follow_other_jobs_load_with_hysteresis():
    assert cpu.choose_threads(2, 2, others=0.1) == 2
    assert cpu.choose_threads(2, 2, others=0.9) == 1  # another job holds a core: one thread
    assert cpu.choose_threads(1, 2, others=0.4) == 1  # not idle enough to go back yet
    assert cpu.choose_threads(1, 2, others=0.1) == 2
    assert cpu.choose_threads(8, 8, others=3.0) == 7
    assert cpu.choose_threads(1, 1, others=3.0) == 1
    # /proc/stat and /proc/self/stat as Linux writes them: machine busy/total ticks and this process's.
    proc_stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n"
    self_stat = "4242 (python (x)) R 1 2 3 4 5 6 7 8 9 10 70 11 0 0 20 0 3 0\n"
    assert cpu.cpu_ticks(proc_stat, self_stat) == (160, 980, 81)


def test_a_moment_of_load_while_measuring_does_not_cost_the_run_a_pass():
    """The pass time is the faster of two timings of the same batches: a batch slowed once (another process took the
    core for a moment) does not count. A stand-in trainer, because a moment of load cannot be made on cue. The batches
    are the trainer's prepared rows, labels included (raw rows timed a heavier step than training runs)."""
    import torch

    class Trainer:
        def __init__(self) -> None:
            self.model = torch.nn.Linear(4, 1)
            self.args = type("Args", (), {"per_device_train_batch_size": 2, "device": torch.device("cpu")})()
            self.train_dataset = [{"input_ids": [1] * 10, "labels": [-100] * 6 + [1] * 4, "text": "Q? A."}
                                  for _ in range(8)]
            self.calls = 0
            self.collated: list[dict] = []

        def data_collator(self, rows):
            self.collated += rows
            return {"x": torch.ones(len(rows), 4)}

        def compute_loss(self, model, batch):
            self.calls += 1
            if self.calls == 2:  # the first timed batch of the first round
                time.sleep(0.5)
            return model(batch["x"]).sum()

    trainer = Trainer()
    per_token = training.seconds_per_token(trainer, bf16=False)
    assert trainer.calls == 1 + 3 * 2  # the untimed first batch, then two rounds of three
    assert trainer.collated and all(set(row) == {"input_ids", "labels"} for row in trainer.collated)
    assert per_token * 60 < 0.25, "the slowed round was counted"


def test_a_disk_too_small_for_the_checkpoints_stops_the_run_before_it_starts(tmp_path, tiny_model):
    """A full fine-tune's checkpoints are weights plus Adam's two moments (about 1.6 GB at 135M parameters): a
    disk that cannot hold the ones a run keeps gets one clear error before the first step, not a traceback at
    the first save."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from policytune.config import UserError

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    weights = sum(p.numel() for p in model.parameters())
    assert training.checkpoint_bytes(model) == 12 * weights  # float32 weights + 2 moments
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert 0 < trainable < weights and training.checkpoint_bytes(adapted) == 12 * trainable

    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(UserError, match=r"GB free, but this run's checkpoints need about .* --checkpoint-dir"):
        training.check_disk_space(tmp_path / "trainer", checkpoint=free, kept=2)
    training.check_disk_space(tmp_path / "trainer", checkpoint=training.checkpoint_bytes(adapted), kept=2)


def test_a_failure_is_read_as_a_full_disk_only_when_the_error_or_the_free_space_says_so(tmp_path):
    import errno

    free = shutil.disk_usage(tmp_path).free
    assert training.out_of_space(OSError(errno.ENOSPC, "No space left on device"), tmp_path, checkpoint=1)
    try:
        try:
            raise OSError(errno.ENOSPC, "disk")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert training.out_of_space(outer, tmp_path, checkpoint=1)
    torch_style = RuntimeError("[enforce fail at inline_container.cc:671] . unexpected pos 576 vs 534")
    assert training.out_of_space(torch_style, tmp_path, checkpoint=free + 1)  # no room for one more checkpoint
    assert not training.out_of_space(torch_style, tmp_path, checkpoint=1)
    assert not training.out_of_space(ValueError("a bug"), tmp_path, checkpoint=1)


def clocked_run(seconds_per_step: float, max_steps: int = 100, min_steps: int = 20, first_step: int = 0,
                eval_every: int = 0):
    """The deadline callback in a bare training loop whose steps take `seconds_per_step` on its own clock (a 100 s
    budget): the step it ends at, each step's learning rate, the planned schedule, the last control and the output."""
    from types import SimpleNamespace

    import torch
    from transformers import get_cosine_schedule_with_warmup

    now = [0.0]
    lines: list[str] = []
    callback = training.deadline_callback(100, min_steps=min_steps, clock=lambda: now[0], output=lines.append)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=5, num_training_steps=max_steps)
    planned = [scheduler.lr_lambdas[0](step) for step in range(max_steps + 1)]
    for _ in range(first_step):
        optimizer.step()
        scheduler.step()
    state = SimpleNamespace(global_step=first_step, max_steps=max_steps, is_world_process_zero=True)
    args = SimpleNamespace(eval_strategy="steps")
    control = SimpleNamespace(should_training_stop=False, should_save=False, should_evaluate=False)
    callback.on_train_begin(args, state, control, lr_scheduler=scheduler)
    rates = {}
    while state.global_step < max_steps and not control.should_training_stop:
        now[0] += seconds_per_step
        optimizer.step()
        scheduler.step()
        state.global_step += 1
        rates[state.global_step] = scheduler.get_last_lr()[0]
        control.should_evaluate = bool(eval_every) and state.global_step % eval_every == 0  # transformers' flow
        callback.on_step_end(args, state, control)
    return state.global_step, rates, planned, control, lines


def test_a_run_slower_than_measured_follows_its_schedule_on_the_clock_and_ends_annealed_when_its_time_is_up():
    """The learning rate at each step is the planned cosine schedule's at the larger of the steps done and the time
    spent; when the time is up training stops with a held-out evaluation and a checkpoint, never before a whole pass;
    a run on time gets the planned schedule exactly; a resumed run continues from its progress."""
    run = clocked_run
    step, rates, planned, control, lines = run(1.0)  # 100 steps in the 100 s budget: on time
    assert step == 100 and not control.should_training_stop and lines == []
    assert all(rates[s] == planned[s] for s in rates), "a run on time gets the planned schedule exactly"

    step, rates, planned, control, lines = run(2.0)  # twice as slow: half the steps, the whole schedule
    assert step == 50 and control.should_training_stop and control.should_save and control.should_evaluate
    assert rates[25] == pytest.approx(planned[50]) and rates[50] == pytest.approx(0.0, abs=1e-6)
    assert all(a >= b for a, b in zip(list(rates.values())[5:], list(rates.values())[6:])), "still annealing"
    assert len(lines) == 2 and "follows the clock" in lines[0] and "stopping at step 50 of 100" in lines[1]

    # the clock ends a step after an evaluation transformers scheduled: the run ends at that one, not a step later
    assert run(1.97)[0] == 51 and run(1.97, eval_every=10)[0] == 50 and run(1.0, eval_every=10)[0] == 100

    step, rates, _, control, _ = run(10.0, max_steps=80, min_steps=40)  # a pass takes 4x the budget
    assert step == 40 and control.should_training_stop, "never before a whole pass, and annealed at its end"
    assert rates[40] == pytest.approx(0.0, abs=1e-6) and rates[20] > 0.3

    step, rates, planned, control, _ = run(4.0, first_step=50)  # resumed halfway, the budget again, 4 s a step
    assert step == 75 and control.should_training_stop and rates[51] == pytest.approx(planned[51], abs=0.02)


def _deadline_on_rank(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        step, rates, *_ = clocked_run(2.0 if rank == 0 else 1.0)  # rank 1's clock says it is on time
        Path(out, f"rank{rank}.json").write_text(json.dumps({"step": step, "rates": rates}))
    finally:
        dist.destroy_process_group()


def test_under_ddp_every_rank_follows_rank_0s_clock_and_stops_at_the_same_step(tmp_path):
    """Two gloo ranks whose clocks disagree (rank 0 twice as slow): both take rank 0's learning rates and stop at its
    step, as DDP needs (a rank stopping alone would leave the other waiting at its next gradient sync)."""
    import torch.multiprocessing as mp

    mp.spawn(_deadline_on_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 50
    assert ranks[0]["rates"] == ranks[1]["rates"]


def test_a_real_trainer_on_a_slow_clock_anneals_evaluates_and_saves_where_its_time_ends(tiny_model, tmp_path):
    """In a real SFTTrainer whose steps take twice the planned time (the clock: 2 s a step, a 12 s budget for 12
    steps, a pass of 4), the logged learning rates follow the whole cosine schedule in 6 steps, and the run ends
    there with an evaluation and a checkpoint that keep-best can choose."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from policytune import models

    torch.set_num_threads(1)
    base = models.resolve(str(tiny_model))
    tokenizer = models.load_tokenizer(base)
    rows = training.tokenize_examples(training.build_examples(make_records()), tokenizer, 384).rows
    args = SFTConfig(output_dir=str(tmp_path / "trainer"), report_to="none", max_length=None, padding_free=True,
                     completion_only_loss=True, per_device_train_batch_size=2, use_cpu=True, disable_tqdm=True,
                     max_steps=12, learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=1, logging_steps=1,
                     eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4,
                     load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    steps = [0]  # the step under way, which the fake clock reads
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base.hf_path), args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(rows[:8]), eval_dataset=Dataset.from_list(rows[8:10]),
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
                         callbacks=[training.deadline_callback(12, min_steps=4, clock=lambda: 2.0 * steps[0],
                                                               output=lambda line: None)])

    from transformers import TrainerCallback

    class StepCount(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            steps[0] = state.global_step + 1  # the clock at the end of the step under way

    trainer.add_callback(StepCount())
    trainer.train()
    history = trainer.state.log_history
    rates = {h["step"]: h["learning_rate"] for h in history if "learning_rate" in h and "loss" in h}
    assert trainer.state.global_step == 6, "half the planned steps in the planned time"
    def planned(step: float) -> float:  # the cosine schedule of 12 steps, one of warm-up
        return 1e-3 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 11))

    # the rate a step uses was set at the end of the step before, when the clock said twice its count
    assert all(rates[step] == pytest.approx(planned(2 * (step - 1))) for step in range(2, 7))
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12), "annealed to its end"
    assert [h["step"] for h in history if "eval_loss" in h] == [4, 6]
    assert sorted(p.name for p in (tmp_path / "trainer").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]


def test_a_checkpoint_whose_trainer_state_a_kill_cut_short_is_neither_resumed_nor_kept(tmp_path):
    """trainer_state.json is written last but not atomically: a kill during its write (seen under load in CI) left an
    empty file that resuming could not read."""
    for step, state in ((2, '{"global_step": 2}'), (4, "")):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert training.latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    training.remove_incomplete_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
