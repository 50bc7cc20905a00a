"""The whole pipeline on a policy PDF the test writes: parse -> generate -> preprocess -> quality -> train ->
evaluate -> deploy, with the embedded model and llama.cpp, and proof that the tuned model learned the policy.

E2E_TRAIN_LEARNING_RATE (read by this test only) replaces the training learning rate: with 0 the adapter
learns nothing and the test must fail on its learning assertions.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import ROOT, run_script
from policytune import chat, metrics, modelfile

COMPANY = "Kestrel Maritime Ltd."
# (heading, sub-heading, sentence): every sentence is one fact with a distinctive number, form, system or role.
POLICY = [
    ("1. Remote Work", "1.1 Eligibility",
     "Employees may work remotely for up to 3 days per week after completing 6 months of service."),
    ("1. Remote Work", "1.2 Home Office Equipment",
     "Remote workers receive a one-off home office allowance of €450."),
    ("2. Expenses", "2.1 Submitting Claims",
     "Expense claims must be submitted on Form EXP-14 within 30 days of the purchase."),
    ("2. Expenses", "2.2 Approval Limits",
     "Claims above €800 must be approved by the Regional Finance Controller."),
    ("2. Expenses", "2.3 Receipts",
     "Receipts are uploaded to the Ledgerline portal."),
    ("3. Information Security", "3.1 Lost Devices",
     "A lost laptop must be reported to the Service Desk within 4 hours."),
    ("3. Information Security", "3.2 Passwords",
     "Passwords must be changed every 90 days."),
    ("4. Training", "4.1 Training Budget",
     "Each employee has an annual training budget of €1,200."),
    ("4. Training", "4.2 Compliance Training",
     "Mandatory compliance training is completed in the Brightpath system by 15 November each year."),
]
# Hand-written questions as an employee asks them (none is a generated phrasing), and near misses the
# policy is silent on.
GOLD = [
    {"id": "form", "question": "Which form do I use for expense claims?", "keywords": ["EXP-14"]},
    {"id": "receipts", "question": "Where are receipts uploaded?", "keywords": ["Ledgerline"]},
    {"id": "laptop", "question": "Who do I report a lost laptop to?", "keywords": ["Service Desk"]},
    {"id": "passwords", "question": "How often must passwords be changed?", "keywords": ["90|ninety"]},
    {"id": "budget", "question": "What is the annual training budget?", "keywords": ["1,200|1200"]},
    {"id": "tax", "question": "Is the home office allowance taxed?", "answer": chat.REFUSAL},
    {"id": "carry-over", "question": "Can unused training budget be carried over into next year?", "answer": chat.REFUSAL},
    {"id": "contractors", "question": "Do contractors also get the home office allowance?", "answer": chat.REFUSAL},
]
# Measured on a 2-core machine shared with other jobs: one thread per stage, 3 epochs at 2e-3 teach the
# nine facts (held-out phrasings answered) in about 3-4 minutes of training.
TRAIN_FLAGS = ["--train.epochs", "3", "--train.lora-r", "16", "--train.lora-alpha", "32", "--train.eval-fraction", "0.2",
               "--train.eval-steps", "8", "--train.threads", "1"]


def build_policy_pdf(path: Path) -> Path:
    """A 2-page policy: title, numbered headings at two levels, one fact per sub-section, page footers."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    styles = getSampleStyleSheet()
    story = [Paragraph(f"{COMPANY} Workplace Policy", styles["Title"]),
             Paragraph(f"This policy applies to every employee of {COMPANY}", styles["BodyText"])]
    section = None
    for heading, sub, sentence in POLICY:
        if heading != section:
            if heading.startswith("3."):
                story.append(PageBreak())
            story.append(Paragraph(heading, styles["Heading1"]))
            section = heading
        story += [Paragraph(sub, styles["Heading2"]), Paragraph(sentence, styles["BodyText"])]

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.drawString(60, 20, f"{COMPANY} - internal")
        canvas.drawRightString(A4[0] - 60, 20, f"Page {doc.page}")
        canvas.restoreState()

    SimpleDocTemplate(str(path), pagesize=A4, invariant=1).build(story, onFirstPage=footer, onLaterPages=footer)
    return path


def key_terms(fact: str) -> list[str]:
    """The numbers and names a right answer must repeat: digits, and capitalised words after the first."""
    words = fact.rstrip(".").split()
    return [w.strip(",.") for i, w in enumerate(words) if re.search(r"\d", w) or (i > 0 and w[:1].isupper())]


def states_the_fact(answer: str, fact: str) -> bool:
    """Stricter than evaluate.py's token F1 (which accepts "allowance of €1,200" for "€450"): every key term."""
    said = metrics.normalise(answer)
    return not metrics.is_refusal(answer) and all(metrics.normalise(t) in said for t in key_terms(fact))


def answer_logprobs(server, tokenizer, question: str, answer: str, top_k: int = 20) -> list[dict[int, float]]:
    """llama.cpp's top-k next-token log-probabilities at each position of the answer, teacher-forced."""
    prompt = tokenizer(chat.format_prompt(question))["input_ids"]
    ids = prompt + tokenizer(chat.format_completion(answer), add_special_tokens=False)["input_ids"]
    out = []
    for end in range(len(prompt), len(ids)):
        response = server.handle_completions({"prompt": ids[:end], "n_predict": 1, "n_probs": top_k, "temperature": 0.0,
                                              "cache_prompt": True, "samplers": ["top_k"], "top_k": 1})
        top = response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        out.append({entry["id"]: entry["logprob"] for entry in top})
    return out


def pipeline(tmp_path: Path, *flags: str, timeout: float):
    return run_script("pipeline.py", "--pdf", str(tmp_path / "policy.pdf"), "--data-dir", str(tmp_path / "data"),
                      "--checkpoint-dir", str(tmp_path / "checkpoints"), "--reports-dir", str(tmp_path / "reports"),
                      *flags, timeout=timeout)


@pytest.mark.slow
def test_pipeline_turns_a_policy_pdf_into_a_tuned_model_that_beats_the_base_and_deploys_to_llama_cpp(tmp_path):
    build_policy_pdf(tmp_path / "policy.pdf")
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(g) + "\n" for g in GOLD))
    data, checkpoints = tmp_path / "data", tmp_path / "checkpoints"
    flags = ["--generate.rewordings-per-fact", "0", "--generate.questions-per-fact", "4",
             "--quality.judge-mode", "off",
             *TRAIN_FLAGS, "--train.learning-rate", os.environ.get("E2E_TRAIN_LEARNING_RATE", "2e-3"),
             "--evaluate.gold", str(gold), "--evaluate.eval-file", str(data / "eval_split.json"),
             "--evaluate.threads", "1", "--evaluate.max-new-tokens", "32",
             "--deploy.modelfile", str(tmp_path / "Modelfile"), "--deploy.threads", "1",
             "--deploy.verify-n", "2", "--deploy.verify-answer-tokens", "8"]

    # parse .. evaluate
    result = pipeline(tmp_path, *flags, "--to", "evaluate", timeout=1500)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    print(re.findall(r"stage times: .*", result.stdout))
    for stage in ("parse", "generate", "preprocess", "quality", "train", "evaluate"):
        assert f"== {stage}: python " in result.stdout, stage
    facts = [f["text"] for f in json.loads((data / "facts.json").read_text())]
    assert all(sentence in facts for _, _, sentence in POLICY), facts
    evaluation = json.loads((tmp_path / "reports" / "eval.json").read_text())
    items = evaluation["items"]

    # (a) The tuned model beats the base on questions it was not trained on.
    held_out = evaluation["splits"]["held_out"]["metrics"]
    base, tuned = held_out["base"], held_out["tuned"]
    summary = {split: {m: (block["metrics"][m]["answerable_accuracy"], block["metrics"][m]["refusal_recall"])
                       for m in ("base", "tuned")} for split, block in evaluation["splits"].items()}
    answers = [(i["split"], i["question"], i["base_answer"], i["tuned_answer"]) for i in items]
    assert tuned["n_answerable"] >= 3 and tuned["n_unanswerable"] >= 1, summary
    trained = {r["instruction"] for r in json.loads((data / "train_split.json").read_text())}
    assert not trained & {i["question"] for i in items}, "a held-out or gold question was trained on"
    assert tuned["answerable_accuracy"] > base["answerable_accuracy"], (summary, answers)
    assert tuned["refusal_recall"] > 0 and tuned["refusal_recall"] >= base["refusal_recall"], (summary, answers)
    # evaluate.py scores held-out answers by token F1: also require the fact's own numbers and names.
    strict = {m: sum(states_the_fact(i[f"{m}_answer"], i["expected_answer"]) for i in items
                     if i["split"] == "held_out" and i["answerable"]) for m in ("base", "tuned")}
    assert strict["tuned"] > strict["base"], (strict, answers)
    gold_metrics = evaluation["splits"]["gold"]["metrics"]
    assert gold_metrics["tuned"]["answerable_accuracy"] > gold_metrics["base"]["answerable_accuracy"], (summary, answers)
    assert gold_metrics["tuned"]["refusal_recall"] >= gold_metrics["base"]["refusal_recall"], (summary, answers)

    # deploy: the earlier stages are up to date and skipped
    result = pipeline(tmp_path, *flags, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    for stage in ("parse", "generate", "preprocess", "quality", "train", "evaluate"):
        assert f"== {stage}: up to date, skipped" in result.stdout, stage
    report = json.loads((checkpoints / "deploy_report.json").read_text())
    assert report["passed"] and report["verified"], report["failures"]

    # (c) The Modelfile names files that exist: the base GGUF and the adapter deploy wrote.
    parsed = modelfile.read_modelfile(tmp_path / "Modelfile")
    base_gguf, adapter_gguf = (tmp_path / parsed["FROM"]).resolve(), (tmp_path / parsed["ADAPTER"]).resolve()
    assert base_gguf.is_file() and adapter_gguf.is_file(), parsed
    assert os.path.samefile(adapter_gguf, checkpoints / "adapter.gguf") and os.path.samefile(base_gguf, report["base_gguf"])
    assert parsed["TEMPLATE"] == chat.OLLAMA_TEMPLATE and parsed["SYSTEM"] == chat.SYSTEM_PROMPT

    # (b) In llama.cpp the adapter makes the trained answers (the facts) of the held-out questions likelier.
    from policytune import llm, models

    tokenizer = models.load_tokenizer(models.resolve())
    pairs = [(i["question"], i["expected_answer"]) for i in items if i["split"] == "held_out" and i["answerable"]]
    runs = {}
    for name, lora in (("base", None), ("adapter", adapter_gguf)):
        server = llm.start_local_server(str(base_gguf), 1, 1, 512, lora=str(lora) if lora else None)
        runs[name] = [answer_logprobs(server, tokenizer, q, a) for q, a in pairs]
        del server
    targets = [tokenizer(chat.format_completion(a), add_special_tokens=False)["input_ids"] for _, a in pairs]
    top1 = {name: sum(max(p, key=p.get) == t for seq, ids in zip(run, targets) for p, t in zip(seq, ids))
            / sum(map(len, targets)) for name, run in runs.items()}
    # Where the adapter's top-k holds the answer token its log-probability is exact; the base's is exact or,
    # when missing from its top-k, at most its k-th log-probability: a gain here is a lower bound.
    gains = [tuned_p[t] - base_p.get(t, min(base_p.values()))
             for base_seq, tuned_seq, ids in zip(runs["base"], runs["adapter"], targets)
             for base_p, tuned_p, t in zip(base_seq, tuned_seq, ids) if t in tuned_p]
    print({"held_out_and_gold": summary, "strict_held_out": strict, "llama_cpp_top1": top1,
           "mean_logprob_gain": round(sum(gains) / max(1, len(gains)), 3), "deploy": re.findall(r"stage times: .*", result.stdout)})
    assert top1["adapter"] >= top1["base"] + 0.2, top1
    assert len(gains) >= 0.8 * sum(map(len, targets)) and sum(gains) / len(gains) > 0.5, (len(gains), sum(gains))
