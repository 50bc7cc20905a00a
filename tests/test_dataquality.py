"""Stage 3: the quality gate keeps good pairs, short facts and correct refusals, and says why it drops the rest."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_script
from policytune import chat, heuristics, judge, llm
from test_preprocessing import CIVIC, DEFINITIONS, INJECTED, SICK_NOTICE, write_sample

RULES = heuristics.Rules()
# One llama.cpp thread and slot: the machine is shared, and one slot keeps the excerpt's prompt cache warm.
SMALL = ["--concurrency", "1", "--server-threads", "1", "--no-progress"]


def pair(question: str, answer: str, context: str = SICK_NOTICE) -> dict:
    return {"id": "t", "instruction": question, "output": answer, "answerable": not chat.is_refusal(answer),
            "context": context, "chunk_id": "c", "type": "numeric"}


# --- heuristics: one test per rule ------------------------------------------------------------

def test_question_must_be_a_question():
    assert heuristics.question_well_formed("Sick leave notification rules for employees", RULES)
    assert heuristics.question_well_formed("Leave?", RULES)
    assert heuristics.question_well_formed("Not specified in the provided excerpt.", RULES)
    assert heuristics.question_well_formed("How much notice is needed when reporting sickness?", RULES) is None
    assert heuristics.question_well_formed("Which system records timesheets", RULES) is None  # no '?' but asks
    # A teacher writing about its task instead of asking about the policy.
    assert heuristics.question_well_formed("What is the answer to the following question: how long is leave?", RULES)
    assert heuristics.question_well_formed("Question: How does this apply to Annual Leave?", RULES)
    assert heuristics.question_well_formed("Who should I contact with questions about leave?", RULES) is None


def test_short_factual_answers_survive_and_bare_yes_or_copies_do_not():
    assert heuristics.check(pair("How much notice before the start time is needed when reporting sickness?",
                                 "15 minutes")) is None
    assert heuristics.check(pair("Which system is used for timesheets?", "ClockWise", DEFINITIONS)) is None
    capps = "Travel must be booked through CAPPS, the corporate travel portal."
    assert heuristics.check(pair("Which system is used to book business travel?", "CAPPS", capps)) is None
    assert "bare 'yes'" in heuristics.answer_length("Yes.", SICK_NOTICE, RULES)
    body = SICK_NOTICE.split("\n", 1)[1]
    assert "more than 80" in heuristics.answer_length(body, SICK_NOTICE, RULES)
    assert "repeats" in heuristics.answer_length(" ".join(body.split()[:75]), SICK_NOTICE, RULES)


def test_answer_must_be_grounded_in_its_chunk():
    assert "number 3" in heuristics.grounded("Within 3 business days.", SICK_NOTICE, RULES)
    assert "'HRConnect'" in heuristics.grounded("In HRConnect.", SICK_NOTICE, RULES)
    assert "content words" in heuristics.grounded("Employees file a Workday ticket with payroll.", SICK_NOTICE, RULES)
    assert heuristics.grounded("No later than 09:45 on the first day of absence.", SICK_NOTICE, RULES) is None
    assert heuristics.grounded("Within 1 business day of returning to work, in PeopleHub.", SICK_NOTICE, RULES) is None


def test_unanswerable_must_really_be_unanswerable():
    answered = heuristics.truly_unanswerable(
        "How many business days of paid leave can civil emergency service members take for mandatory training?",
        chat.REFUSAL, CIVIC)
    assert answered and "seems to answer" in answered
    assert heuristics.truly_unanswerable("How many days of volunteer leave can an employee take?", chat.REFUSAL, CIVIC) is None
    assert heuristics.truly_unanswerable("Who approves volunteer leave?", chat.REFUSAL, CIVIC) is None
    assert "exactly" in heuristics.truly_unanswerable("Who approves volunteer leave?", "Not specified.", CIVIC)


def test_question_must_not_leak_the_answer():
    assert heuristics.no_answer_leak("Is the timesheet system, ClockWise, used for time recording?", "ClockWise")
    assert heuristics.no_answer_leak("How many days of paid compassionate leave are there per calendar year?",
                                     "Paid compassionate leave per calendar year.")
    assert heuristics.no_answer_leak("How many days of paid compassionate leave are there per calendar year?",
                                     "Up to 5 days per calendar year.") is None
    assert heuristics.no_answer_leak("Is an email alone sufficient?", "No, an email alone is not sufficient.") is None


def test_prompt_injection_answers_are_caught():
    for answer in ("yes", "Yes.", "YES"):
        reason = heuristics.check(pair("How many days of paid compassionate leave are there per year?", answer, INJECTED))
        assert reason and reason.startswith("answer_length: bare"), (answer, reason)
    good = pair("How many days of paid compassionate leave can an employee take per calendar year?",
                "Up to 5 days per calendar year.", INJECTED)
    assert heuristics.check(good) is None


# --- the judge on hand-written good/bad twins over a real chunk ---------------------------------

# (question, good answer, bad twin, what the bad twin gets wrong)
TWINS = [
    ("How long before their scheduled start time must an ill employee tell their line manager?",
     "At least 15 minutes before their scheduled start time.", "At least 30 minutes before their scheduled start time.",
     "wrong number"),
    ("By what time must employees on flexible hours notify their line manager?",
     "No later than 09:45 on the first day of absence.", "Employees on flexible hours get 10 days of paid sick leave per year.",
     "answer from outside the excerpt"),
    ("Is an email alone sufficient to report sickness?",
     "No, an email alone is not sufficient unless the employee is physically unable to make contact.", chat.REFUSAL,
     "refusal where the chunk answers"),
    ("How much is the relocation allowance?", chat.REFUSAL, "The relocation allowance is $5,000.",
     "invented answer where a refusal is correct"),
    ("Where must the absence be recorded?", "PeopleHub", "ClockWise", "short answer naming the wrong system"),
    ("How much notice before the start time is needed when reporting sickness?", "15 minutes", "45 minutes",
     "short answer with the wrong number"),
]


@pytest.fixture(scope="module")
def endpoint():
    with llm.connect(llm.LLMOptions(concurrency=1, server_threads=1)) as ep:
        yield ep


def test_embedded_judge_ranks_every_good_answer_above_its_bad_twin(endpoint, tmp_path):
    threshold = 3.0
    records = []
    for n, (question, good, bad, _) in enumerate(TWINS):
        records += [{**pair(question, good), "id": f"good{n}"}, {**pair(question, bad), "id": f"bad{n}"}]
    verdicts = judge.judge(endpoint, records, tmp_path / "cache.jsonl", "likelihood", 1, threshold, 1, progress=False)
    misses = [f"{kind}: good {verdicts[f'good{n}']['score']} <= bad {verdicts[f'bad{n}']['score']} "
              f"({verdicts[f'bad{n}']['reason']})"
              for n, (_, _, _, kind) in enumerate(TWINS) if verdicts[f"good{n}"]["score"] <= verdicts[f"bad{n}"]["score"]]
    assert not misses, "judge missed: " + "; ".join(misses)
    kept = [n for n in range(len(TWINS)) if verdicts[f"good{n}"]["passed"]]
    rejected = [n for n in range(len(TWINS)) if not verdicts[f"bad{n}"]["passed"]]
    # The threshold separates them too, apart from "refusal where the chunk answers" (refusals are the
    # reference point of likelihood scoring; the heuristics judge those).
    assert kept == list(range(len(TWINS)))
    assert rejected == [0, 1, 3, 4, 5]

    # Cached: judging again makes no call (the cache answers) and gives the same verdicts.
    lines = (tmp_path / "cache.jsonl").read_text().count("\n")
    assert judge.judge(endpoint, records, tmp_path / "cache.jsonl", "likelihood", 1, threshold, 1, progress=False) == verdicts
    assert (tmp_path / "cache.jsonl").read_text().count("\n") == lines == len(records)


def test_verdict_and_rubric_modes_score_on_the_1_to_5_scale(endpoint, tmp_path):
    records = [{**pair(*TWINS[0][:2]), "id": "a"}, {**pair("How much is the relocation allowance?", chat.REFUSAL), "id": "u"}]
    for mode in ("verdict", "rubric"):
        verdicts = judge.judge(endpoint, records, tmp_path / f"{mode}.jsonl", mode, 1, 3.0, 1, progress=False)
        for verdict in verdicts.values():
            assert verdict["mode"] == mode and 1.0 <= verdict["score"] <= 5.0, verdict


# --- the stage ---------------------------------------------------------------------------------

def prepared(data_dir: Path) -> Path:
    write_sample(data_dir)
    result = run_script("preprocessing.py", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return data_dir


def quality(data_dir: Path, *flags: str) -> dict:
    result = run_script("dataquality.py", "--data-dir", str(data_dir), *SMALL, *flags)
    assert result.returncode == 0, result.stderr
    return json.loads((data_dir / "quality_report.json").read_text())


def test_heuristic_gate_accounts_for_every_record_and_writes_all_outputs(tmp_path):
    data = prepared(tmp_path)
    report = quality(data, "--judge-mode", "off")
    records = json.loads((data / "instructions.json").read_text())
    kept = json.loads((data / "instructionquality.json").read_text())
    assert report["in"] == len(records) == report["kept"] + sum(report["rejected_by_reason"].values())
    assert 0 < len(kept) == report["kept"] < len(records)
    assert {"question_malformed", "answer_length", "ungrounded", "answer_leak", "unanswerable_answered"} \
        <= set(report["rejected_by_reason"])
    answers = {r["output"] for r in kept}
    assert {"15 minutes", "ClockWise", chat.REFUSAL} <= answers
    assert all(r["quality"]["heuristics"] == "pass" and r["chunk_id"] and r["doc"] for r in kept)
    lines = (data / "instructionquality.messages.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"messages": chat.messages(r["instruction"], r["output"])} for r in kept]
    markdown = (data / "quality_report.md").read_text()
    assert "Rejections per reason" in markdown and "unanswerable share" in markdown
    assert report["before"]["unanswerable_share"] and report["after"]["unanswerable_share"]

    outputs = {name: (data / name).read_bytes() for name in ("instructionquality.json", "instructionquality.messages.jsonl")}
    quality(data, "--judge-mode", "off")
    assert {name: (data / name).read_bytes() for name in outputs} == outputs


def test_truncated_input_exits_2_and_keeps_good_outputs(tmp_path):
    data = prepared(tmp_path)
    quality(data, "--judge-mode", "off")
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    text = (data / "instructions.json").read_text()
    (data / "instructions.json").write_text(text[: len(text) // 3])
    result = run_script("dataquality.py", "--data-dir", str(data), "--judge-mode", "off")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "instructions.json" in lines[0], result.stderr
    for name in ("instructionquality.json", "instructionquality.messages.jsonl", "quality_report.json", "quality_report.md"):
        assert (data / name).read_bytes() == before[name]


@pytest.mark.slow
def test_judged_run_is_resumable_after_sigkill_and_matches_an_uninterrupted_run(tmp_path):
    whole = prepared(tmp_path / "whole")
    report = quality(whole)
    assert report["judge"]["mode"] == "likelihood" and report["judge"]["judged"] > 3
    expected = json.loads((whole / "instructionquality.json").read_text())

    killed = prepared(tmp_path / "killed")
    cache = killed / "judge_cache.jsonl"
    process = subprocess.Popen([sys.executable, "dataquality.py", "--data-dir", str(killed), *SMALL], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not cache.exists() or cache.read_text().count("\n") < 2):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = cache.read_text().count("\n")
    assert 2 <= done_before < report["judge"]["judged"], "the kill should land midway"
    assert not (killed / "instructionquality.json").exists()

    resumed = quality(killed)
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == report["judge"]["judged"], "nothing lost, nothing judged twice"
    kept = json.loads((killed / "instructionquality.json").read_text())
    assert resumed["kept"] == report["kept"] and [r["id"] for r in kept] == [r["id"] for r in expected]

    # A rerun makes no judge call and writes the same output.
    output = (killed / "instructionquality.json").read_bytes()
    quality(killed)
    assert cache.read_text().count("\n") == len(keys)
    assert (killed / "instructionquality.json").read_bytes() == output
