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

from conftest import ROOT, run_script, stage_module
from fault_server import FaultServer
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
    assert heuristics.question_well_formed("The excerpt does not specify the notice period.", RULES) == "the question is a refusal"
    assert heuristics.question_well_formed("What do I do if my medication is not covered by our plan?", RULES) is None
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


def test_an_faq_answer_may_be_all_of_its_chunk_and_a_copy_elsewhere_may_not():
    entry = ("Q: When can I enroll in my 401k plan?\nUS teammates: You are eligible to enroll immediately upon hire and "
             "can make changes or update your contribution amount at any time in Human Interest, our 401k provider.")
    answer = entry.split("\n", 1)[1]
    record = pair("When can I enroll in my 401k plan?", answer, entry)
    assert "repeats" in heuristics.check(record)
    assert heuristics.check({**record, "style": "faq"}) is None
    assert "more than 80" in heuristics.check({**record, "style": "faq", "output": " ".join([answer] * 3)})


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


def cached_results(cache: Path) -> dict[tuple[str, int], dict]:
    return {(line["id"], line["vote"]): line["result"] for line in map(json.loads, cache.read_text().splitlines())}


def test_verdict_and_rubric_scores_follow_the_models_reply(endpoint, tmp_path):
    """Verdict: P(yes) of the answerable pair, P(no) of the refusal, mapped onto 1-5; rubric: the
    weakest of the three integer grades. Checked against the model's raw replies in the cache."""
    records = [{**pair(*TWINS[0][:2]), "id": "a"}, {**pair("How much is the relocation allowance?", chat.REFUSAL), "id": "u"}]
    threshold = 3.0
    verdicts = judge.judge(endpoint, records, tmp_path / "verdict.jsonl", "verdict", 1, threshold, 1, progress=False)
    raw = cached_results(tmp_path / "verdict.jsonl")
    assert set(raw) == {("a", 0), ("u", 0)}
    assert verdicts["a"]["score"] == pytest.approx(1 + 4 * raw[("a", 0)]["p_yes"], abs=1e-3)
    assert verdicts["u"]["score"] == pytest.approx(1 + 4 * (1 - raw[("u", 0)]["p_yes"]), abs=1e-3)
    for verdict in verdicts.values():
        assert verdict["mode"] == "verdict" and verdict["passed"] == (verdict["score"] >= threshold), verdict

    verdicts = judge.judge(endpoint, records, tmp_path / "rubric.jsonl", "rubric", 1, threshold, 1, progress=False)
    for (record_id, _), grades in cached_results(tmp_path / "rubric.jsonl").items():
        weakest = min(grades["faithfulness"], grades["relevance"], grades["clarity"])
        assert verdicts[record_id]["score"] == weakest and verdicts[record_id]["passed"] == (weakest >= threshold)


def test_three_judge_votes_rank_a_swapped_number_below_the_right_one_and_keep_by_majority(endpoint, tmp_path):
    """--judge-votes 3: three calls per pair (each with another answer lead), the median as score,
    kept when at least two of the three votes reach the threshold; a rerun answers from the cache."""
    question = "Within how many business days of returning to work must the absence be recorded?"
    # The wrong number is one the excerpt does contain (15 minutes), in the place of the right one.
    records = [{**pair(question, "Within 1 business day."), "id": "right"},
               {**pair(question, "Within 15 business days."), "id": "swapped"}]
    cache = tmp_path / "votes.jsonl"
    verdicts = judge.judge(endpoint, records, cache, "likelihood", 3, 3.0, 1, progress=False)
    assert sorted(cached_results(cache)) == [(r["id"], v) for r in sorted(records, key=lambda r: r["id"]) for v in range(3)]
    right, swapped = verdicts["right"], verdicts["swapped"]
    assert len(right["votes"]) == len(swapped["votes"]) == 3
    assert min(right["votes"]) > max(swapped["votes"]), (right, swapped)
    assert right["passed"] and not swapped["passed"]
    for verdict in (right, swapped):
        assert verdict["score"] == sorted(verdict["votes"])[1]

    # The same cached votes against thresholds between them: two of three reaching it keeps the
    # pair, one of three does not (not "any vote", not "all votes", not the mean).
    low, mid, high = sorted(swapped["votes"])
    assert low < mid < high, "the three answer leads should give three different scores"
    lines = cache.read_text().count("\n")
    between = lambda a, b: (a + b) / 2  # noqa: E731
    assert judge.judge(endpoint, records, cache, "likelihood", 3, between(low, mid), 1, progress=False)["swapped"]["passed"]
    assert not judge.judge(endpoint, records, cache, "likelihood", 3, between(mid, high), 1, progress=False)["swapped"]["passed"]
    assert cache.read_text().count("\n") == lines


def test_two_judges_that_call_their_model_alike_each_judge_and_a_rerun_asks_neither(tmp_path):
    records = [{**pair(*TWINS[0][:2]), "id": "a"}, {**pair("How much is the relocation allowance?", chat.REFUSAL), "id": "u"}]
    cache = tmp_path / "judge_cache.jsonl"
    with FaultServer() as first, FaultServer() as second:
        for server in (first, second, first):
            with llm.connect(llm.LLMOptions(base_url=server.url, model="local", max_retries=0)) as endpoint:
                judge.judge(endpoint, records, cache, "rubric", 1, 3.0, 1, progress=False)
        assert len(first.requests) == len(second.requests) == len(records)


# --- balance: the unanswerable share of the input survives the gate -----------------------------

def _dataquality():
    """dataquality.py imported as a module (a script at the project root)."""
    return stage_module("dataquality.py")


def scored(record_id: str, answerable: bool, score: float) -> dict:
    return {"id": record_id, "answerable": answerable, "quality": {"judge": {"score": score}}}


def test_balance_drops_the_lowest_scored_surplus_until_the_share_is_the_inputs():
    balance = _dataquality().balance
    # Too many refusals: 6 answerable + 6 unanswerable against an input share of 30%.
    kept_in = [scored(f"a{n}", True, 4.0) for n in range(6)] + [scored(f"u{n}", False, s)
                                                               for n, s in enumerate([3.0, 5.0, 3.5, 4.5, 3.2, 4.0])]
    kept, dropped = balance(kept_in, 0.3, 0.05)
    # Keep n refusals with n / (6 + n) nearest 30%: n = 3, the three best scored.
    assert sorted(r["id"] for r in kept if not r["answerable"]) == ["u1", "u3", "u5"]
    assert sum(r["answerable"] for r in kept) == 6
    assert sorted(r["id"] for r in dropped) == ["u0", "u2", "u4"]
    assert all(r["reason"] == "balance: unanswerable surplus (input unanswerable share 30%)" for r in dropped)
    # Too few: 14 answerable + 2 unanswerable; keep 5 answerable (2 / 7 = 29%), ties broken by id.
    kept_in = [scored(f"a{n:02d}", True, 3.0 + (n % 3) / 2) for n in range(14)] + [scored("u0", False, 3.0),
                                                                                   scored("u1", False, 3.0)]
    kept, dropped = balance(kept_in, 0.3, 0.05)
    assert sorted(r["id"] for r in kept) == ["a01", "a02", "a05", "a08", "a11", "u0", "u1"]
    assert all(r["reason"].startswith("balance: answerable surplus") for r in dropped) and len(dropped) == 9
    # Within the tolerance, or within one record of the target, nothing is dropped.
    assert balance(kept_in[:9] + kept_in[14:], 0.2, 0.05)[1] == []
    assert balance([scored("a", True, 3), scored("u", False, 3)], 0.3, 0.05)[1] == []


def balance_records() -> list[dict]:
    """20 records, 30% unanswerable, each passing the heuristics unless `wrong` makes it ungrounded."""
    records = []
    for n in range(20):
        context = f"Employees in office {n} receive {10 + n} days of paid leave per year. Requests go through PeopleHub."
        answerable = n < 14
        records.append({"id": f"r{n:02d}", "instruction": (f"How many days of paid leave are there in office {n}?" if answerable
                                                         else f"Who approves a leave request in office {n}?"),
                        "input": "", "output": f"{10 + n} days per year." if answerable else chat.REFUSAL,
                        "answerable": answerable, "type": "numeric" if answerable else "unanswerable",
                        "context": context, "chunk_id": f"c{n}", "doc": "policy.pdf", "pages": [1]})
    return records


def test_balance_flag_restores_the_inputs_unanswerable_share_and_no_balance_keeps_the_drift(tmp_path):
    records = balance_records()
    for r in records[:8]:  # 8 of 14 answers get a number the excerpt does not have: 6 + 6 survive
        r["output"] = f"{90 + int(r['id'][1:])} days per year."
    (tmp_path / "instructions.json").write_text(json.dumps(records))
    report = quality(tmp_path, "--judge-mode", "off")
    assert report["before"]["unanswerable_share"] == 0.3
    assert [s["stage"] for s in report["stages"]] == ["heuristics", "balance"]
    assert report["stages"][1] == {"stage": "balance", "in": 12, "out": 9}
    # 3 of the 6 refusals stay: 3 / 9 is the share nearest 30%, within the 5-point tolerance.
    assert (report["after"]["answerable"], report["after"]["unanswerable"]) == (6, 3)
    assert abs(report["after"]["unanswerable_share"] - report["before"]["unanswerable_share"]) <= 0.05
    balanced = [r for r in report["rejected_records"] if r["reason"].startswith("balance:")]
    assert [r["id"] for r in balanced] == ["r17", "r18", "r19"]  # equal (no judge) scores: by id
    kept = json.loads((tmp_path / "instructionquality.json").read_text())
    assert sum(not r["answerable"] for r in kept) == 3 and "| unanswerable share | 30.0% | 33.3% |" in \
        (tmp_path / "quality_report.md").read_text()

    unbalanced = quality(tmp_path, "--judge-mode", "off", "--no-balance")
    assert unbalanced["after"]["unanswerable_share"] == 0.5 and unbalanced["kept"] == 12
    assert [s["stage"] for s in unbalanced["stages"]] == ["heuristics"]


def test_judge_votes_flag_makes_three_calls_per_pair_and_reports_them(tmp_path):
    records = balance_records()[12:15]  # two answers and a refusal
    (tmp_path / "instructions.json").write_text(json.dumps(records))
    report = quality(tmp_path, "--judge-votes", "3", "--no-balance")
    assert report["judge"]["votes"] == 3 and report["judge"]["judged"] == 3
    assert "3 vote(s)" in (tmp_path / "quality_report.md").read_text()
    lines = [json.loads(line) for line in (tmp_path / "judge_cache.jsonl").read_text().splitlines()]
    assert sorted((line["id"], line["vote"]) for line in lines) == [(r["id"], v) for r in records for v in range(3)]
    for record in json.loads((tmp_path / "instructionquality.json").read_text()):
        verdict = record["quality"]["judge"]
        assert len(verdict["votes"]) == 3 and verdict["score"] == sorted(verdict["votes"])[1]
        assert sum(v >= 3.0 for v in verdict["votes"]) >= 2


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
    # The shares are those of the records in and out; balancing left them as they were: 22% is
    # within one record (1/9) of the input's 18%.
    assert report["before"]["unanswerable_share"] == round(sum(not r["answerable"] for r in records) / len(records), 3) == 0.176
    assert report["after"]["unanswerable_share"] == round(sum(not r["answerable"] for r in kept) / len(kept), 3) == 0.222
    assert report["stages"][-1] == {"stage": "balance", "in": len(kept), "out": len(kept)}
    assert "| unanswerable share | 17.6% | 22.2% |" in markdown

    outputs = {name: (data / name).read_bytes() for name in ("instructionquality.json", "instructionquality.messages.jsonl")}
    quality(data, "--judge-mode", "off")
    assert {name: (data / name).read_bytes() for name in outputs} == outputs

    # records made with their policy text export it with the question (the export was the closed-book one, byte for byte)
    assert run_script("preprocessing.py", "--data-dir", str(data), "--input-format", "with_context").returncode == 0
    quality(data, "--judge-mode", "off")
    kept = json.loads((data / "instructionquality.json").read_text())
    exported = [json.loads(line)["messages"] for line in (data / "instructionquality.messages.jsonl").read_text().splitlines()]
    assert kept and all(r["input"] for r in kept)
    assert [m[1]["content"] for m in exported] == [f"<excerpt>\n{r['input'].strip()}\n</excerpt>\n\n{r['instruction']}"
                                                   for r in kept]


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
