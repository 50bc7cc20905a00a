"""Stage 5: scoring rules on hand-made answers, bad inputs, and a real base-vs-tuned run rendered in Chromium."""
from __future__ import annotations

import base64
import io as bytes_io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, run_script, stage_module
from policytune import chat, config, metrics, report

EVALUATE = str(ROOT / "evaluate.py")


def _stage_module():
    return stage_module("evaluate.py")

# ---------------------------------------------------------------- metrics on hand-made predictions


def test_refusal_is_right_on_unanswerable_and_wrong_on_answerable():
    assert metrics.judge(chat.REFUSAL, answerable=False)["correct"] is True
    assert metrics.judge(chat.REFUSAL, answerable=True, answer="25 days")["correct"] is False
    assert metrics.judge(chat.REFUSAL, answerable=True, keywords=["25"])["correct"] is False
    assert metrics.judge("You get 25 days.", answerable=False)["correct"] is False


def test_refusal_tolerates_case_and_punctuation_and_near_variants_are_not_exact():
    assert metrics.is_exact_refusal("  not specified in the provided excerpt<|im_end|>")
    assert metrics.is_exact_refusal("NOT SPECIFIED IN THE PROVIDED EXCERPT!")
    near = "The policy does not say how much the relocation allowance is."
    assert metrics.is_refusal(near) and not metrics.is_exact_refusal(near)
    scores = metrics.judge(near, answerable=False)
    assert scores["refusal"] and not scores["exact_refusal"] and scores["correct"]
    assert not metrics.is_refusal("Employees get 25 days of annual leave.")


def test_keyword_entries_must_all_match_and_any_alternative_counts():
    keywords = ["25|twenty-five", "day|days|working days"]
    assert metrics.keyword_match("You get 25 working days", keywords)
    assert metrics.keyword_match("Twenty five days per year", keywords)
    assert not metrics.keyword_match("You get 25 weeks", keywords)          # second entry missing
    assert not metrics.keyword_match("You get 250 days", keywords)          # whole words only
    assert metrics.judge("PeopleHub, within 5 days", True, keywords=["peoplehub", "five"])["correct"] is True


def test_number_words_and_digits_score_the_same():
    assert metrics.normalise("Twenty-five days") == metrics.normalise("25 days") == "25 days"
    assert metrics.normalise("one hundred and twenty working days") == "120 working days"
    assert metrics.normalise("£1,500 per year") == metrics.normalise("£1500 per year")
    assert metrics.exact_match("fifteen days", "15 days")
    assert metrics.token_f1("Fifteen days of leave", "15 days of leave") == 1.0
    assert metrics.keyword_match("fifteen days", ["15"]) and metrics.keyword_match("15 days", ["fifteen"])
    assert metrics.normalise("five six") == "5 6"                            # two numbers, not 11


def test_exact_match_token_f1_and_containment():
    assert metrics.token_f1("25 days", "25 days of annual leave") == pytest.approx(2 * 1.0 * 0.4 / 1.4)  # P = 2/2, R = 2/5
    assert metrics.token_f1("no overlap", "25 days") == 0.0
    assert metrics.judge("Employees receive 25 days of paid annual leave each year.", True, "25 days")["correct"] is True
    assert metrics.judge("Employees receive 20 days.", True, "25 days")["correct"] is False
    # Yes for no shares every other word: overlap passes it, the opening yes or no does not.
    expected = "Yes. Volunteer leave is recorded in PeopleHub by your manager."
    assert metrics.judge("No. Volunteer leave is recorded in PeopleHub by your manager.", True, expected)["correct"] is False
    assert metrics.judge("No, volunteer leave is recorded in PeopleHub.", True, expected)["correct"] is False
    assert metrics.judge("Yes, volunteer leave is recorded in PeopleHub.", True, expected)["correct"] is True
    assert metrics.judge("Volunteer Leave: Yes. It is recorded in PeopleHub by your manager.", True, expected)["correct"]
    assert metrics.judge("Volunteer leave is recorded in PeopleHub by your manager.", True, expected)["correct"] is True
    assert metrics.polarity("Volunteer Leave: No. It is not paid.") == "no" and metrics.polarity("Not paid.") is None
    # An expected answer with no yes or no has none to contradict.
    assert metrics.judge("Yes, staff get 25 days of leave a year.", True, "Staff get 25 days of leave each year.")["correct"]
    # A section label is not held against the answer's words.
    labelled = "Shared Parental Leave Entitlement And Pay Rules: Twelve weeks, paid at the full rate."
    assert metrics.token_f1(labelled, "Twelve weeks, paid in full.") < 0.5
    assert metrics.judge(labelled, True, "Twelve weeks, paid in full.")["correct"] is True
    assert metrics.judge("Payroll: Yes.", True, "Yes.")["exact_match"] is True
    assert metrics.unlabelled("Note that: pay is 12 weeks.") == "pay is 12 weeks." and metrics.unlabelled("12 weeks.") == "12 weeks."
    assert metrics.polarity("Step 2: Formally kick-off leave process: No. Tell your manager first.") == "no"
    # The gold set's keywords too: "no" is a word of "Yes. ... no more than 30 days", not the answer's "No."
    contractor = "No. Contractors engaged through an agency are not covered."
    wrong = "Who This Policy Covers: Yes. Contractors may take no more than 30 days."
    assert metrics.keyword_match(wrong, ["not covered|no"]) and not metrics.judge(wrong, True, contractor, ["not covered|no"])["correct"]
    assert metrics.judge("Who This Policy Covers: No. Contractors are not covered.", True, contractor, ["not covered|no"])["correct"]
    assert metrics.judge("Contractors are not covered.", True, contractor, ["not covered|no"])["correct"]
    # Nothing to judge against: answers are kept, correctness is unknown.
    assert metrics.judge("Something", answerable=None)["correct"] is None
    assert metrics.judge("Something", answerable=True)["correct"] is None


def test_summary_rates_on_hand_made_rows():
    def row(answer, answerable, kind, expected=None):
        return {"answerable": answerable, "type": kind, "scores": metrics.judge(answer, answerable, expected)}

    rows = [row("25 days", True, "numeric", "25 days"),
            row(chat.REFUSAL, True, "numeric", "3 months"),                 # false refusal
            row(chat.REFUSAL, False, "unanswerable"),                       # right refusal
            row("It is not mentioned.", False, "unanswerable"),             # near-variant refusal
            row("You get a company car.", False, "unanswerable")]           # hallucination
    summary = metrics.summarise(rows)
    assert summary["answerable_accuracy"] == 0.5
    assert summary["false_refusal_rate"] == 0.5
    assert summary["refusal_recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["exact_refusal_recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["hallucination_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["exact_match"] == 0.5
    by_type = metrics.summarise_by_type(rows)
    assert by_type["numeric"]["n"] == 2 and by_type["unanswerable"]["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics.summarise([])["answerable_accuracy"] is None


def test_next_token_divergence_is_zero_for_identical_models_and_positive_otherwise():
    import torch

    # Seeded: with unseeded logits a row whose top token is already 0 made min(kl) > 1 fail now and then.
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0))
    kl, agree = metrics.next_token_divergence(logits, logits.clone())
    assert max(kl) < 1e-5 and all(agree)
    shifted = logits.clone()
    shifted[:, 0] += 20.0
    kl, agree = metrics.next_token_divergence(shifted, logits)
    assert min(kl) > 1.0 and not any(agree[i] for i in range(5) if logits[i].argmax() != 0)


def test_worst_regressions_come_first():
    def item(name, base_ok, tuned_ok, kl):
        return {"id": name, "base_correct": base_ok, "tuned_correct": tuned_ok,
                "regression": base_ok is True and tuned_ok is False, "divergence": {"kl": kl}}

    items = [item("fine", True, True, 9.0), item("small-regression", True, False, 0.1),
             item("both-wrong", False, False, 5.0), item("big-regression", True, False, 2.0)]
    assert [i["id"] for i in report.worst_first(items)] == ["big-regression", "small-regression", "both-wrong", "fine"]


def test_report_renders_unlabelled_questions_and_missing_metrics():
    rows = [{"answerable": None, "type": "unlabelled", "scores": metrics.judge("Maybe.", None)}]
    summary = {**metrics.summarise(rows), "per_type": metrics.summarise_by_type(rows)}
    evaluation = {
        "metrics": {"base": summary, "tuned": summary},
        "divergence": {"mean_kl_tuned_base": 0.2, "max_kl_tuned_base": 0.2, "mean_top1_agreement": 0.9, "positions": 3,
                       "refusal_first_token_prob": {m: {"answerable": None, "unanswerable": None} for m in ("base", "tuned")}},
        "run": {"base_model": "embedded", "adapter": "checkpoints", "n_items": 1, "max_new_tokens": 8},
        "items": [{"id": "g<1>", "question": "Dogs <b>allowed</b>?", "answerable": None, "expected_answer": None,
                   "base_answer": "Maybe.", "tuned_answer": "Maybe | not", "base_correct": None, "tuned_correct": None,
                   "regression": False, "divergence": {"kl": 0.2, "refusal_first_token_prob": {"base": 0.1, "tuned": 0.3}}}],
    }
    page = report.html(evaluation)
    assert page.count('<img src="data:image/png;base64,') == 3
    assert "Dogs &lt;b&gt;allowed&lt;/b&gt;?" in page and "<b>allowed</b>" not in page
    text = report.markdown(evaluation)
    assert "Maybe \\| not" in text and "| answerable accuracy | n/a | n/a |" in text
    # and eval.md shows them as written too: a Markdown viewer rendered the tags (a "</table>" broke the page)
    assert "Dogs &lt;b&gt;allowed&lt;/b&gt;?" in text and "g&lt;1&gt;" in text and "<b>" not in text


def test_divergence_off_measures_nothing_and_the_reports_say_so():
    stage = _stage_module()
    assert stage.spread(5, -1) == []
    rows = [{"answerable": True, "type": "numeric", "scores": metrics.judge("25 days", True, "25 days")}]
    summary = {**metrics.summarise(rows), "per_type": metrics.summarise_by_type(rows)}
    shift = stage.summarise_divergence([{"answerable": True, "divergence": None}])
    assert shift["items"] == 0 and shift["positions"] == 0 and shift["mean_kl_tuned_base"] is None
    evaluation = {"metrics": {"base": summary, "tuned": summary}, "divergence": shift,
                  "run": {"base_model": "embedded", "adapter": "checkpoints", "n_items": 1, "max_new_tokens": 8},
                  "items": [{"id": "g1", "question": "Leave?", "answerable": True, "expected_answer": "25 days",
                             "base_answer": "25 days", "tuned_answer": "25 days", "base_correct": True,
                             "tuned_correct": True, "regression": False, "divergence": None}]}
    page, text = report.html(evaluation), report.markdown(evaluation)
    assert report.NOT_MEASURED in text and "mean KL" not in text
    assert report.NOT_MEASURED in page and page.count('<img src="data:image/png;base64,') == 1  # the metrics plot only


# ---------------------------------------------------------------- intervals, splits, sections, gold selection


def _judged(outcomes: list[bool], answerable: bool = True) -> list[dict]:
    """Rows whose answers are right (True) or wrong (False) on answerable or unanswerable questions."""
    if answerable:
        return [{"answerable": True, "type": "numeric", "scores": metrics.judge("25 days" if ok else "3 weeks", True, "25 days")}
                for ok in outcomes]
    return [{"answerable": False, "type": "unanswerable", "scores": metrics.judge(chat.REFUSAL if ok else "Yes, a car.", False)}
            for ok in outcomes]


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_items():
    few = metrics.paired_bootstrap([True, False, True] * 4, [True, True, False] * 4)
    many = metrics.paired_bootstrap([True, False, True] * 40, [True, True, False] * 40)
    for result in (few, many):
        for name in ("base", "tuned", "difference"):
            interval = result[name]
            assert interval["low"] <= interval["estimate"] <= interval["high"], (name, interval)
    assert few["tuned"]["estimate"] == pytest.approx(2 / 3, abs=1e-4) and few["tuned"]["n"] == 12
    assert few["tuned"]["high"] - few["tuned"]["low"] > 0.3                     # 12 items: wide
    assert many["tuned"]["high"] - many["tuned"]["low"] < 0.6 * (few["tuned"]["high"] - few["tuned"]["low"])
    assert metrics.paired_bootstrap([True, False] * 6, [False, True] * 6) == \
        metrics.paired_bootstrap([True, False] * 6, [False, True] * 6)           # fixed seed: reproducible
    assert metrics.paired_bootstrap([], [])["tuned"]["estimate"] is None


def test_separability_is_the_chance_a_near_miss_outscores_an_answerable_question():
    assert metrics.separability([0.9, 0.8], [0.1, 0.2, 0.3]) == 1.0
    assert metrics.separability([0.1], [0.5, 0.6]) == 0.0
    assert metrics.separability([0.4, 0.4], [0.4, 0.4]) == 0.5                  # ties count half
    # 0.5 beats 0.2 and 0.3 but not 0.7; 0.3 ties 0.3 and beats 0.2: (2 + 1.5) of 6 pairs
    assert metrics.separability([0.5, 0.3], [0.2, 0.3, 0.7]) == pytest.approx(3.5 / 6, abs=1e-4)
    # a threshold moved the same way for everyone changes recall, not separability
    assert metrics.separability([0.5 * v for v in (0.5, 0.3)], [0.5 * v for v in (0.2, 0.3, 0.7)]) == \
        metrics.separability([0.5, 0.3], [0.2, 0.3, 0.7])
    assert metrics.separability([], [0.1]) is None and metrics.separability([0.1], []) is None


def test_paired_difference_excludes_zero_for_a_better_model_and_includes_it_for_equal_ones():
    better = metrics.paired_bootstrap([False] * 25 + [True] * 5, [True] * 24 + [False] * 6)
    assert better["difference"]["estimate"] == pytest.approx(0.8 - 1 / 6, abs=1e-4)
    assert better["difference"]["low"] > 0
    identical = metrics.paired_bootstrap([True, False, False] * 10, [True, False, False] * 10)
    assert identical["difference"] == {"estimate": 0.0, "low": 0.0, "high": 0.0, "n": 30}
    # Same rate, different questions right: no evidence either way, so 0 stays inside.
    swapped = metrics.paired_bootstrap([True] * 10 + [False] * 10, [False] * 10 + [True] * 10)
    assert swapped["difference"]["low"] < 0 < swapped["difference"]["high"]
    # Pairing matters: the same item-level agreement gives a much narrower difference than two
    # independent samples would (here tuned gets 2 more right of 30 and nothing else changes).
    paired = metrics.paired_bootstrap([True] * 15 + [False] * 15, [True] * 17 + [False] * 13)
    assert paired["difference"]["high"] - paired["difference"]["low"] < 0.2


def test_confidence_intervals_cover_the_headline_metrics_with_summarise_estimates():
    base = _judged([False] * 8 + [True] * 2) + _judged([False] * 5, answerable=False)
    tuned = _judged([True] * 7 + [False] * 3) + _judged([True] * 4 + [False], answerable=False)
    intervals = metrics.confidence_intervals(base, tuned, resamples=500)
    assert set(intervals["difference"]) == set(metrics.INTERVAL_METRICS)
    for name, rows in (("base", base), ("tuned", tuned)):
        summary = metrics.summarise(rows)
        for key in metrics.INTERVAL_METRICS:
            assert intervals[name][key]["estimate"] == summary[key], (name, key)
    assert intervals["tuned"]["refusal_recall"]["n"] == 5 and intervals["tuned"]["answerable_accuracy"]["n"] == 10
    assert intervals["difference"]["hallucination_rate"]["high"] < 0 < intervals["difference"]["refusal_recall"]["low"]


def test_per_section_groups_questions_by_top_level_section(tmp_path):
    rows = [{"section": section, **row} for section, row in zip(
        ["4.2", "4.1", "13.4", "2", None, "4"], _judged([True, False, True, True]) + _judged([True, False], answerable=False))]
    by_section = metrics.summarise_by_section(rows)
    assert list(by_section) == ["2", "4", "13", "unknown"]                      # numeric order, unknown last
    assert by_section["4"]["n"] == 3 and by_section["4"]["n_answerable"] == 2 and by_section["4"]["n_unanswerable"] == 1
    assert by_section["4"]["accuracy"] == pytest.approx(1 / 3, abs=1e-4)       # right, wrong, wrong refusal-free answer
    assert by_section["unknown"] == {"n": 1, "n_answerable": 0, "n_unanswerable": 1, "accuracy": 1.0, "refusal_rate": 1.0}
    assert metrics.top_section("12.3.1") == "12" and metrics.top_section("Section 7") == "7" and metrics.top_section("") == "unknown"
    # a gold set for a policy whose headings have no numbers groups by heading
    assert metrics.top_section("401k contribution") == "401k contribution"
    assert metrics.top_section("Parental leave") == "Parental leave"
    named = metrics.summarise_by_section([{**rows[4], "section": "Parental leave"}, rows[5], {**rows[0], "section": None}])
    assert list(named) == ["4", "Parental leave", "unknown"]
    stage = _stage_module()
    assert stage.section_from_headings(["Leave & Benefits Policy", "4. Sick Leave", "4.2 Notice Requirements"]) == "4.2"
    assert stage.section_from_headings(["Leave & Benefits Policy"]) is None and stage.section_from_headings(None) is None
    split = tmp_path / "eval_split.json"
    split.write_text(json.dumps([{"id": "h", "instruction": "Q?", "output": "A.", "answerable": True,
                                  "section": "Leave & Benefits Policy > 5. Parental Leave > 5.3 Paternity and Partner Leave"}]))
    assert stage.load_eval_split(split)[0]["section"] == "5.3"


def _chunks(path: Path, *docs: tuple[str, str]) -> Path:
    """A chunks.json with one chunk per (document name, text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"id": f"c{i}", "doc": doc, "pages": [1], "headings": [], "text": text}
                                for i, (doc, text) in enumerate(docs)]))
    return path


def test_auto_gold_is_the_sample_gold_only_for_the_sample_and_none_disables_it(tmp_path):
    stage = _stage_module()
    gold = tmp_path / "sample" / "gold.jsonl"
    gold.parent.mkdir()
    gold.write_text('{"id": "g1", "question": "How many days of sick leave?", "section": "4.1"}\n')
    sample_text = "Northwind Analytics Ltd. employees receive 10 days of paid sick leave."
    sample = _chunks(tmp_path / "sample_data" / "chunks.json", ("sample_policy.pdf", sample_text), ("sample_policy.pdf", "More."))
    assert stage.resolve_gold("auto", sample, gold)[0] == str(gold)
    assert stage.resolve_gold("none", sample, gold)[0] == "" and stage.resolve_gold("", sample, gold)[0] == ""
    assert stage.resolve_gold("mine.jsonl", sample, gold)[0] == "mine.jsonl"
    for docs in ([("handbook.pdf", "Acme Ltd. gives 30 days.")],                          # another document
                 [("sample_policy.pdf", sample_text), ("handbook.pdf", "Acme Ltd.")],      # the sample and another
                 [("sample_policy.pdf", "Acme Ltd. renamed its own policy file.")]):        # the name only
        other = _chunks(tmp_path / "other" / "chunks.json", *docs)
        picked, why = stage.resolve_gold("auto", other, gold)
        assert picked == "" and "pass --gold FILE" in why, docs
    assert stage.resolve_gold("auto", tmp_path / "missing" / "chunks.json", gold)[0] == ""
    assert stage.resolve_gold("auto", sample, tmp_path / "no_gold.jsonl")[0] == ""

    # Which questions load: auto adds the gold set beside the split, an explicit file replaces the split.
    data = sample.parent
    (data / "eval_split.json").write_text(json.dumps([{"id": "h1", "instruction": "Q?", "output": "A.", "answerable": True,
                                                       "headings": ["4. Sick Leave", "4.3 Self-Certification"]}]))
    cfg = stage.EvalConfig(data_dir=str(data))
    items = stage.load_items(cfg, stage.resolve_gold(cfg.gold, data / "chunks.json", gold)[0])
    assert [(i["id"], i["split"], i["section"]) for i in items] == [("h1", "held_out", "4.3"), ("g1", "gold", "4.1")]
    cfg = stage.EvalConfig(data_dir=str(data), gold="none")
    assert [i["split"] for i in stage.load_items(cfg, stage.resolve_gold(cfg.gold, data / "chunks.json", gold)[0])] == ["held_out"]
    cfg = stage.EvalConfig(data_dir=str(data), gold=str(gold))
    assert [i["split"] for i in stage.load_items(cfg, stage.resolve_gold(cfg.gold, data / "chunks.json", gold)[0])] == ["gold"]


def test_limit_takes_every_kind_of_question_in_proportion():
    """--limit N took the first N questions, all answerable (the split and gold sets list those first): a quick
    --limit 20 measured no refusal."""
    stage = _stage_module()
    items = [{"id": f"{split}{answerable}{n}", "split": split, "answerable": answerable}
             for split, answerable, count in (("held_out", True, 15), ("held_out", False, 3), ("gold", True, 230),
                                              ("gold", False, 48)) for n in range(count)]
    for limit in (4, 20, 100):
        chosen = stage.limited(items, limit)
        kinds = {(i["split"], i["answerable"]) for i in chosen}
        assert len(chosen) == limit and len(kinds) == 4, (limit, chosen)
        assert [items.index(i) for i in chosen] == sorted(items.index(i) for i in chosen)  # in their order
    twenty = stage.limited(items, 20)
    assert sum(1 for i in twenty if i["answerable"] is False) >= 3
    assert stage.limited(items, 1000) == items


def test_a_held_out_split_written_by_another_training_run_is_reported(tmp_path, capsys):
    """A training run stopped after writing its split left a new eval_split.json beside the published adapter, 44 of
    whose 60 questions that adapter had trained on, and evaluation scored them as held out without a word."""
    from policytune import io

    stage = _stage_module()
    data, adapter = tmp_path / "data", tmp_path / "ckpt"
    data.mkdir(), adapter.mkdir()
    split = [{"id": "h1", "instruction": "Q?", "output": "A.", "answerable": True}]
    io.write_json_atomic(data / "eval_split.json", split)
    io.write_json_atomic(adapter / "training_config.json", {"eval_split_sha256": io.file_sha256(data / "eval_split.json")})
    cfg = stage.EvalConfig(data_dir=str(data), checkpoint_dir=str(adapter))
    assert stage.split_matches(cfg, adapter) is True
    io.write_json_atomic(data / "eval_split.json", split + [{"id": "h2", "instruction": "R?", "output": "B.",
                                                             "answerable": False}])
    assert stage.split_matches(cfg, adapter) is False
    assert "is not the held-out split" in capsys.readouterr().err
    assert stage.split_matches(stage.EvalConfig(data_dir=str(data), gold=str(tmp_path / "g.jsonl")), adapter) is None
    io.write_json_atomic(adapter / "training_config.json", {})  # trained before the hash was kept
    assert stage.split_matches(cfg, adapter) is None


def test_a_gold_file_as_editors_save_it_and_keys_it_does_not_read(tmp_path, capsys):
    """A byte-order mark stopped line 1 as "not valid JSON"; a misspelt "answerabel" or "keyword" was ignored without
    a word (the label then guessed from the answer, the scoring F1 instead of keywords); "id": true was taken and
    "id": 1.5 called missing; --gold Auto was read as a file name."""
    stage = _stage_module()
    gold = tmp_path / "gold.jsonl"
    gold.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "g1", "question": "Q?", "answerabel": True,
                                                     "keyword": ["x"]}).encode() + b"\n")
    assert [i["id"] for i in stage.load_gold(gold)] == ["g1"]
    err = capsys.readouterr().err
    assert "line 1: key 'answerabel' is not read" in err and "key 'keyword' is not read" in err
    for bad, message in (({"id": True, "question": "Q?"}, "'id' must be a string or a whole number, got True"),
                         ({"id": 1.5, "question": "Q?"}, "'id' must be a string or a whole number, got 1.5")):
        gold.write_text(json.dumps(bad) + "\n")
        with pytest.raises(config.UserError, match=re.escape(message)):
            stage.load_gold(gold)
    sample = tmp_path / "sample_gold.jsonl"
    sample.write_text(json.dumps({"id": "s", "question": "Q?"}) + "\n")
    assert stage.resolve_gold("Auto", tmp_path / "none" / "chunks.json", sample)[0] == ""
    assert "no " in stage.resolve_gold("Auto", tmp_path / "none" / "chunks.json", sample)[1]


def test_a_duplicate_gold_id_names_both_lines_and_a_gold_file_as_eval_split_says_where_it_goes(tmp_path):
    stage = _stage_module()
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": i, "question": f"Q{n}?"}) + "\n" for n, i in enumerate(["a", "b", "a"])))
    with pytest.raises(config.UserError, match=r"duplicate question id 'a' \(.*gold.jsonl line 1 and .*gold.jsonl line 3\)"):
        stage.load_items(stage.EvalConfig(data_dir=str(tmp_path), gold=str(gold)), str(gold))
    with pytest.raises(config.UserError, match="JSON lines, as a gold set is; .* pass the file as --gold"):
        stage.load_eval_split(gold)


def test_gold_section_must_be_a_string(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "a", "question": "How many days?", "section": 4.1}\n')
    with pytest.raises(config.UserError, match=r"line 1: 'section' must be a string"):
        _stage_module().load_gold(gold)
    gold.write_text('{"id": "a", "question": "How many days?", "section": 4}\n')
    assert _stage_module().load_gold(gold)[0]["section"] == "4"


def test_report_shows_each_split_with_intervals_and_the_section_table():
    stage = _stage_module()
    items = [{"id": f"{split}{i}", "question": f"Question {split} {i}?", "answer": answer, "answerable": answer != chat.REFUSAL,
              "keywords": None, "type": "numeric" if answer != chat.REFUSAL else "unanswerable", "split": split,
              "section": section, "source": {}}
             for split, rows in (("held_out", [("25 days", None), (chat.REFUSAL, None)]),
                                 ("gold", [("10 days", "4.1"), ("by 10:00", "4.2"), (chat.REFUSAL, "13.4")]))
             for i, (answer, section) in enumerate(rows)]
    answers = {"base": ["25 days", "A car.", "Two weeks.", "by 10:00", "5000 pounds"],
               "tuned": ["25 days", chat.REFUSAL, "10 days", "by 10:00", chat.REFUSAL]}
    shift = {"kl": 0.1, "top1_agreement": 0.9, "positions": 3, "refusal_first_token_prob": {"base": 0.1, "tuned": 0.2}}
    results = stage.score(items, answers, [shift] * len(items), 0.5)
    splits = stage.summarise_splits(results, 500)
    assert set(splits) == {"held_out", "gold"} and splits["gold"]["n"] == 3
    gold_tuned = splits["gold"]["metrics"]["tuned"]
    assert gold_tuned["n"] == 3 and gold_tuned["answerable_accuracy"] == 1.0  # not pooled with the held-out split
    assert splits["gold"]["metrics"]["base"]["answerable_accuracy"] == 0.5
    assert list(gold_tuned["per_section"]) == ["4", "13"]
    evaluation = {"metrics": splits["held_out"]["metrics"], "splits": splits, "divergence": stage.summarise_divergence(results),
                  "run": {"base_model": "embedded", "adapter": "checkpoints", "n_items": 5, "max_new_tokens": 8,
                          "metrics_split": "held_out", "bootstrap": {"resamples": 500, "seed": 0, "level": 0.95}},
                  "items": results}
    text = report.markdown(evaluation)
    assert "## Held-out split (2 questions)" in text and "## Gold set (3 questions)" in text
    assert "| answerable accuracy | 0.50 [0.00, 1.00] | 1.00 [1.00, 1.00] | +0.50 [+0.00, +1.00] |" in text
    assert "| 4 | 2 | 2/0 | 0.500 | 1.000 |" in text and "| 13 | 1 | 0/1 | 0.000 | 1.000 |" in text
    assert "paired" in text and "| gold2 | gold | 13.4 |" in text
    page = report.html(evaluation)
    assert "<h2>Gold set (3 questions)</h2>" in page and "+0.50 [+0.00, +1.00]" in page
    assert page.count('<img src="data:image/png;base64,') == 3
    assert "gold set: 3 questions" in report.headline(evaluation)


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


def _assert_one_line_error(result, pattern: str) -> None:
    assert result.returncode == 2, result.stderr
    # Libraries may log warnings while loading (bitsandbytes, progress bars); ours is the one error line, last.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert re.search(pattern, errors[0]), errors[0]


def test_missing_adapter_is_a_one_line_error(tmp_path):
    (tmp_path / "eval_split.json").write_text(json.dumps(
        [{"id": "a", "instruction": "q?", "output": "x", "answerable": True, "type": "numeric"}]))
    result = run_script(EVALUATE, "--adapter", str(tmp_path / "nope"), "--eval-file", str(tmp_path / "eval_split.json"),
                        "--reports-dir", str(tmp_path / "reports"), cwd=tmp_path)
    _assert_one_line_error(result, r"nope: no adapter_config\.json")
    assert not (tmp_path / "reports").exists()


def test_malformed_gold_line_names_its_line_number(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "a", "question": "How many days?"}\n\n{"id": "b", "question": "cut\n')
    result = run_script(EVALUATE, "--gold", str(gold), cwd=tmp_path)
    _assert_one_line_error(result, r"gold\.jsonl: line 3: not valid JSON")
    gold.write_text('{"id": "a", "question": "How many days?", "keywords": "25"}\n')
    _assert_one_line_error(run_script(EVALUATE, "--gold", str(gold), cwd=tmp_path), r"line 1: 'keywords' must be a list")
    gold.write_text('{"id": "a"}\n')
    _assert_one_line_error(run_script(EVALUATE, "--gold", str(gold), cwd=tmp_path), r"line 1: 'question' is missing")
    assert not (tmp_path / "reports").exists()


def test_empty_eval_set_is_a_one_line_error(tmp_path):
    (tmp_path / "gold.jsonl").write_text("\n")
    _assert_one_line_error(run_script(EVALUATE, "--gold", str(tmp_path / "gold.jsonl"), cwd=tmp_path), r"no questions to evaluate")
    (tmp_path / "eval_split.json").write_text("[]")
    _assert_one_line_error(run_script(EVALUATE, "--eval-file", str(tmp_path / "eval_split.json"), cwd=tmp_path),
                           r"no questions to evaluate")


# ---------------------------------------------------------------- a real adapter, a real run


@pytest.fixture(scope="module")
def project(tmp_path_factory, trained_checkpoint) -> Path:
    """A project folder after train.py: checkpoints/ holds the adapter the session's train.py run wrote
    (conftest's trained_checkpoint), data/eval_split.json the questions that run held out: new phrasings
    of the trained facts and questions the policy leaves open, none of them trained on."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(trained_checkpoint.checkpoint, root / "checkpoints", ignore=shutil.ignore_patterns("trainer"))
    (root / "data").mkdir()
    (root / "data" / "eval_split.json").write_text(json.dumps(trained_checkpoint.held_out))
    return root


def zero_adapter(source: Path, target: Path) -> Path:
    """A copy of an adapter with every LoRA B zeroed: attached, it leaves the base model unchanged."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    target.mkdir()
    shutil.copy(source / "adapter_config.json", target / "adapter_config.json")
    tensors = load_file(str(source / "adapter_model.safetensors"))
    save_file({k: np.zeros_like(v) if ".lora_B." in k else v for k, v in tensors.items()}, str(target / "adapter_model.safetensors"))
    return target


def _chromium() -> str:
    """The Chromium binary, installed from Debian if missing; skip only when it cannot be installed."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
                       shell=True, capture_output=True, timeout=900)
        if shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip("chromium is not installed and could not be installed")


def screenshot(html_file: Path, png: Path) -> None:
    """Render a local HTML file in headless Chromium, offline and without a profile."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,2000",
                        html_file.resolve().as_uri()], capture_output=True, timeout=120)


@pytest.mark.slow
def test_evaluate_writes_three_reports_and_the_html_renders_its_plots(project, tmp_path):
    result = run_script(EVALUATE, "--threads", "1", "--batch-size", "4", "--max-new-tokens", "24", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "answerable accuracy" in result.stdout and "hallucination rate" in result.stdout
    reports = project / "reports"
    evaluation = json.loads((reports / "eval.json").read_text())

    for name in ("base", "tuned"):
        for key in ("answerable_accuracy", "exact_match", "token_f1", "refusal_recall", "false_refusal_rate",
                    "hallucination_rate", "mean_answer_words", "per_type"):
            assert key in evaluation["metrics"][name]
        assert set(evaluation["metrics"][name]["per_type"]) == {"numeric", "unanswerable"}
    items = {item["id"]: item for item in evaluation["items"]}
    held_out = json.loads((project / "data" / "eval_split.json").read_text())
    assert set(items) == {r["id"] for r in held_out}
    for item in items.values():
        assert {"question", "answerable", "expected_answer", "base_answer", "tuned_answer",
                "base_correct", "tuned_correct"} <= set(item)

    # The same questions with the adapter's LoRA B zeroed: "tuned" is then the base model itself, so
    # every divergence figure is the no-change reference the trained adapter must move away from.
    stage = _stage_module()
    stage.main(config.parse(stage.EvalConfig, [
        "--adapter", str(zero_adapter(project / "checkpoints", tmp_path / "zero")), "--gold", "none",
        "--eval-file", str(project / "data" / "eval_split.json"), "--reports-dir", str(tmp_path / "zero-reports"),
        "--threads", "1", "--batch-size", "4", "--max-new-tokens", "4"]))
    unchanged = json.loads((tmp_path / "zero-reports" / "eval.json").read_text())
    assert all(i["base_answer"] == i["tuned_answer"] for i in unchanged["items"])
    zero = unchanged["divergence"]
    assert zero["mean_kl_tuned_base"] < 1e-6 and zero["mean_top1_agreement"] == 1.0, zero
    # The trained adapter moves the next-token distribution on every held-out question, and changes the top token.
    shift = evaluation["divergence"]
    assert shift["mean_kl_tuned_base"] > 0.01 and shift["mean_top1_agreement"] < zero["mean_top1_agreement"], shift
    assert all(item["divergence"]["kl"] > 0.01 for item in items.values()), {k: i["divergence"] for k, i in items.items()}
    # The adapter was trained to refuse what the policy leaves open: it puts far more weight on the refusal.
    probs = shift["refusal_first_token_prob"]
    assert probs["tuned"]["unanswerable"] > probs["base"]["unanswerable"]
    assert 0.0 <= shift["refusal_separability"]["tuned"] <= 1.0

    markdown = (reports / "eval.md").read_text()
    assert "| answerable accuracy |" in markdown and "worst regressions first" in markdown
    page = (reports / "eval.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "src=\"http" not in page and "<script" not in page  # self-contained

    from PIL import Image

    png = reports / "eval.png"
    screenshot(reports / "eval.html", png)
    assert png.is_file() and png.stat().st_size > 10_000
    shot = Image.open(png).convert("RGB")
    colours = shot.getcolors(maxcolors=1 << 24)
    assert len(colours) > 200, "screenshot is blank"
    # The tuned bars' colour only exists inside the rendered plots, not in the page's text.
    plot_blue = sum(n for n, (r, g, b) in colours if abs(r - 0x2a) < 12 and abs(g - 0x7a) < 12 and abs(b - 0xb9) < 12)
    assert plot_blue > 2000, f"plots did not render ({plot_blue} plot-coloured pixels)"


@pytest.mark.slow
def test_gold_without_answers_still_records_every_answer_and_a_rerun_resumes(project, tmp_path, monkeypatch, capsys):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join(json.dumps(r) for r in [
        {"id": "g-1", "question": "How many days of annual leave do full-time employees get?"},
        {"id": 7, "question": "Can I bring my dog to the office?"}]) + "\n")
    result = run_script(EVALUATE, "--gold", str(gold), "--reports-dir", str(tmp_path / "reports"),
                        "--threads", "1", "--max-new-tokens", "12", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((tmp_path / "reports" / "eval.json").read_text())
    assert [item["id"] for item in evaluation["items"]] == ["g-1", "7"]  # only the gold file, not the split
    for item in evaluation["items"]:
        assert item["base_answer"] and item["tuned_answer"]
        assert item["base_correct"] is None and item["tuned_correct"] is None
        assert item["divergence"]["teacher_forced_on"] == "tuned_answer"
    assert evaluation["metrics"]["tuned"]["answerable_accuracy"] is None
    assert (tmp_path / "reports" / "eval.html").is_file() and (tmp_path / "reports" / "eval.md").is_file()

    # A rerun resumes from the answer log instead of generating again (in-process: no second startup).
    stage = _stage_module()
    monkeypatch.chdir(project)
    stage.main(config.parse(stage.EvalConfig, ["--gold", str(gold), "--reports-dir", str(tmp_path / "reports"),
                                               "--threads", "1", "--max-new-tokens", "12"]))
    out = capsys.readouterr().out
    assert "resuming: 2 of 2 base answers" in out and "resuming: 2 of 2 tuned answers" in out
    again = json.loads((tmp_path / "reports" / "eval.json").read_text())
    assert [i["tuned_answer"] for i in again["items"]] == [i["tuned_answer"] for i in evaluation["items"]]


@pytest.mark.slow
def test_adapter_for_another_base_is_refused(project, tmp_path):
    """PEFT itself only skips tensors for layers the base lacks; evaluate.py must refuse instead."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from policytune import models

    tokenizer = models.load_tokenizer(models.resolve())
    torch.manual_seed(0)
    # Same widths as SmolLM2-135M but 2 layers instead of 30: every shape fits, most layers are missing.
    shallow = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536,
                                           num_hidden_layers=2, num_attention_heads=9, num_key_value_heads=3,
                                           tie_word_embeddings=True))
    shallow.save_pretrained(tmp_path / "shallow")
    tokenizer.save_pretrained(tmp_path / "shallow")
    # Every adapter tensor of layers 2-29 has no layer to go to.
    names = _stage_module().adapter_tensor_names(project / "checkpoints")
    missing = sum(int(re.search(r"\.layers\.(\d+)\.", name).group(1)) >= 2 for name in names)
    assert 0 < missing < len(names)
    with pytest.raises(config.UserError, match=rf"{missing} adapter tensors match no layer of .*shallow"):
        _stage_module().load_tuned(models.resolve(str(tmp_path / "shallow")), project / "checkpoints", "float32")


@pytest.mark.slow
def test_sample_input_scores_the_gold_set_beside_the_split_per_split(project, tmp_path, monkeypatch):
    """--gold auto on chunks of the bundled sample: both splits scored, reported apart, with intervals and sections."""
    stage = _stage_module()
    data = tmp_path / "data"
    _chunks(data / "chunks.json", ("sample_policy.pdf", "Northwind Analytics Ltd. gives 25 days of annual leave."))
    shutil.copy(project / "data" / "eval_split.json", data / "eval_split.json")
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join(json.dumps(r) for r in [
        {"id": "g1", "question": "How many days of annual leave do full-time employees get?", "answer": "25 days",
         "answerable": True, "keywords": ["25|twenty-five"], "section": "2.1", "type": "numeric"},
        {"id": "g2", "question": "How much is the relocation allowance?", "answer": chat.REFUSAL, "answerable": False,
         "keywords": [], "section": "13.4", "type": "unanswerable"},
        {"id": "g3", "question": "How long is the probationary period?", "answer": "3 months", "answerable": True,
         "keywords": ["3|three", "month|months"], "section": "2.4", "type": "numeric"}]) + "\n")
    monkeypatch.setattr(stage, "SAMPLE_GOLD", gold)
    reports = tmp_path / "reports"
    stage.main(config.parse(stage.EvalConfig, ["--data-dir", str(data), "--checkpoint-dir", str(project / "checkpoints"),
                                               "--reports-dir", str(reports), "--threads", "1", "--max-new-tokens", "12",
                                               "--bootstrap-resamples", "500"]))
    evaluation = json.loads((reports / "eval.json").read_text())
    held_out = [r["id"] for r in json.loads((data / "eval_split.json").read_text())]
    assert evaluation["run"]["gold"] == str(gold) and evaluation["run"]["splits"] == {"held_out": len(held_out), "gold": 3}
    assert evaluation["run"]["metrics_split"] == "held_out"
    assert evaluation["metrics"] == evaluation["splits"]["held_out"]["metrics"]
    assert [(i["id"], i["split"]) for i in evaluation["items"]] == \
        [(i, "held_out") for i in held_out] + [("g1", "gold"), ("g2", "gold"), ("g3", "gold")]
    assert [i["section"] for i in evaluation["items"] if i["split"] == "gold"] == ["2.1", "13.4", "2.4"]
    for split, block in evaluation["splits"].items():
        assert block["metrics"]["tuned"]["n"] == block["n"]
        for name in ("base", "tuned", "difference"):
            for key in metrics.INTERVAL_METRICS:
                interval = block["intervals"][name][key]
                assert interval["low"] <= interval["estimate"] <= interval["high"], (split, name, key)
        for key in metrics.INTERVAL_METRICS:
            tuned, base = block["metrics"]["tuned"][key], block["metrics"]["base"][key]
            assert block["intervals"]["difference"][key]["estimate"] == pytest.approx(tuned - base, abs=1e-3)
    assert evaluation["splits"]["gold"]["metrics"]["tuned"]["per_section"].keys() == {"2", "13"}
    assert evaluation["splits"]["gold"]["metrics"]["tuned"]["per_section"]["2"]["n"] == 2
    text = (reports / "eval.md").read_text()
    assert f"## Held-out split ({len(held_out)} questions)" in text and "## Gold set (3 questions)" in text
    assert re.search(r"\| answerable accuracy \| \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \| \d\.\d\d \[\d\.\d\d, \d\.\d\d\] \| [+-]\d\.\d\d \[", text)
    assert "| 13 | 1 | 0/1 |" in text
    assert "<h2>Gold set (3 questions)</h2>" in (reports / "eval.html").read_text()


def test_policy_exclusions_are_answers_and_wrong_numbers_are_wrong():
    # A policy states exclusions in refusal-like words; only silence of the text itself declines.
    assert not metrics.is_refusal("Cosmetic procedures are not covered by the plan.")
    assert not metrics.is_refusal("Meals are not included in the daily allowance.")
    assert metrics.is_refusal("This is not covered by the policy.")
    assert metrics.is_refusal("That detail is not included in the provided excerpt.")
    # Without keywords, word overlap must not pass a changed number.
    expected = "Employees get 25 days of annual leave."
    assert metrics.judge("Employees get 30 days of annual leave.", True, expected)["correct"] is False
    assert metrics.judge("Employees get twenty-five days of annual leave each year.", True, expected)["correct"] is True


def test_divergence_on_an_even_sample_and_reports_skip_unmeasured_items():
    stage = _stage_module()
    assert stage.spread(5, 0) == [0, 1, 2, 3, 4] and stage.spread(3, 8) == [0, 1, 2]
    picked = stage.spread(278, 96)
    assert len(picked) == 96 and picked[0] == 0 and picked[-1] == 277 and picked == sorted(set(picked))
    shift = {"kl": 0.5, "top1_agreement": 0.8, "positions": 4, "refusal_first_token_prob": {"base": 0.1, "tuned": 0.9}}
    results = [{"answerable": False, "divergence": shift}, {"answerable": True, "divergence": None}]
    summary = stage.summarise_divergence(results)
    assert summary["items"] == 1 and summary["mean_kl_tuned_base"] == 0.5
    assert summary["refusal_first_token_prob"]["tuned"] == {"answerable": None, "unanswerable": 0.9}
    assert summary["refusal_separability"] == {"base": None, "tuned": None}  # one kind measured: nothing to separate
    assert "not measured" in report.separability_note(summary)
    items = [{"id": "a", "regression": False, "tuned_correct": True, "divergence": None}, {"id": "b", "regression": False,
             "tuned_correct": True, "divergence": shift}]
    assert [i["id"] for i in report.worst_first(items)] == ["b", "a"] and report.kl(items[0]) is None


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    from policytune.answers import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2], [1, 2, 3]]) == 1  # the shorter prompt keeps its last token
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[1, 2, 3]]) == 0  # one prompt: nothing to share


@pytest.mark.slow
def test_answers_batched_by_length_on_a_shared_prefix_are_each_prompts_own(project):
    """The system turn computed once, questions reordered and padded between it and their own tokens, rows leaving
    the batch as they stop: the tuned model must give every question the answer model.generate gives it on plain
    left-padded batches in the given order."""
    from policytune import answers, models

    stage = _stage_module()
    folder, base = stage.find_adapter(stage.EvalConfig(adapter=str(project / "checkpoints")))
    model, tokenizer = stage.load_tuned(base, folder, "float32"), models.load_tokenizer(base)
    held_out = [r["instruction"] for r in json.loads((project / "data" / "eval_split.json").read_text())]
    questions = held_out[:6] + ["Leave?", "If I am a part-time employee on a fixed-term contract, how many days of "
                                "annual leave do I get, and can I carry any of them over to next year?"]
    with stage.merged(model):
        plain = answers.greedy(model, tokenizer, questions, 3, 24, progress=False, by_length=False, share_prefix=False,
                               drop_finished=False)
        batches = []
        fast = answers.greedy(model, tokenizer, questions, 3, 24, progress=False,
                              on_batch=lambda chunk, new: batches.append((chunk, new)))
    assert fast == plain
    assert len(set(plain)) > 2  # different questions, different answers: the comparison means something
    lengths = [[len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in new] for _, new in batches]
    assert any(max(batch) - min(batch) >= 3 for batch in lengths), lengths  # a row left its batch steps early
    shortest = min(questions, key=lambda q: len(tokenizer(q)["input_ids"]))
    assert batches[0][0][0] == shortest  # the shortest prompts were batched first


@pytest.mark.slow
def test_divergence_read_through_the_shared_prefix_is_each_answers_own(project):
    """The system turn cached once, the adapter merged, only the answer positions scored: every figure must be the
    one full forward passes of each question alone, adapter attached unmerged, give."""
    import torch

    from policytune import chat, metrics, models

    stage = _stage_module()
    folder, base = stage.find_adapter(stage.EvalConfig(adapter=str(project / "checkpoints")))
    model, tokenizer = stage.load_tuned(base, folder, "float32"), models.load_tokenizer(base)
    held_out = json.loads((project / "data" / "eval_split.json").read_text())[:5]
    questions = [r["instruction"] for r in held_out] + ["Leave?"]
    targets = [r["output"] for r in held_out] + [chat.REFUSAL]
    measured = stage.divergence(model, tokenizer, questions, targets, batch_size=4)

    refusal_first = tokenizer(chat.REFUSAL, add_special_tokens=False)["input_ids"][0]
    for question, target, got in zip(questions, targets, measured):
        prompt = tokenizer(chat.format_prompt(question), add_special_tokens=False)["input_ids"]
        answer = tokenizer(chat.format_completion(target), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            tuned = model(input_ids=ids).logits[0]
            with model.disable_adapter():
                plain = model(input_ids=ids).logits[0]
        span = slice(len(prompt) - 1, len(prompt) - 1 + len(answer))
        kl, agree = metrics.next_token_divergence(tuned[span], plain[span])
        assert got["positions"] == len(answer)
        assert got["kl"] == pytest.approx(sum(kl) / len(kl), abs=1e-3)
        assert got["top1_agreement"] == pytest.approx(sum(agree) / len(agree), abs=1e-4)
        for name, logits in (("tuned", tuned), ("base", plain)):
            expected = float(torch.softmax(logits[len(prompt) - 1], -1)[refusal_first])
            assert got["refusal_first_token_prob"][name] == pytest.approx(expected, abs=1e-4)
    assert max(m["kl"] for m in measured) > 0.05  # the adapter moved the model: the comparison means something
