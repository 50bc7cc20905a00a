"""bench/quality.py's orchestration with the stage scripts replaced by a fake (no models, under a second):
recipe parsing, parse once and the same chunks for every recipe, the gold flag, a failing recipe,
--skip-existing resuming, and the measured columns. A real tiny run is described in BENCHMARKS.md."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402

from policytune import config  # noqa: E402

quality = common.load_stage("bench/quality.py")
pipeline = common.load_stage("pipeline.py")


def test_recipes_are_stage_flags_of_generate_to_evaluate():
    assert quality.parse_recipe("baseline=", pipeline) == ("baseline", [])
    assert quality.parse_recipe("qpf4=--generate.questions-per-fact 4 --train.target-modules q_proj,v_proj", pipeline) == \
        ("qpf4", ["--generate.questions-per-fact", "4", "--train.target-modules", "q_proj,v_proj"])
    for text, message in (("nameless", "NAME=FLAGS"), ("a b=--train.epochs 1", "NAME=FLAGS"),
                          ("x=--epochs 1", "not a stage flag"), ("x=--parse.ocr", "parsed once"),
                          ("x=--deploy.verify-n 2", "not per recipe"), ("x=--evaluate.gold g.jsonl", "bench's --gold"),
                          ("x=--train.epochs '1", "quotation")):
        with pytest.raises(config.UserError, match=message):
            quality.parse_recipe(text, pipeline)
    # A recipe's commas survive (a list flag would split them); other flags stay for the parser.
    assert quality.pull_recipes(["--recipe", "a=--train.target-modules q,v", "--skip-existing", "--recipe=b="]) == \
        (["a=--train.target-modules q,v", "b="], ["--skip-existing"])


def _option(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


class FakeStages:
    """Stands in for quality.run_stage: writes what each stage would, fails train when told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, command: list[str], log: Path) -> tuple[int, float]:
        script = command[0]
        name = {"preprocessing.py": "preprocess", "dataquality.py": "quality", "train.py": "train",
                "evaluate.py": "evaluate"}.get(script, "parse" if "--parse-only" in command else "generate")
        self.calls.append((name, command))
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{name} log\nerror: something broke\n")
        data, ckpt = Path(_option(command, "--data-dir")), Path(_option(command, "--checkpoint-dir"))
        if name == "parse":
            data.mkdir(parents=True, exist_ok=True)
            (data / "chunks.json").write_text(json.dumps([{"id": "c1", "doc": "p.pdf", "text": "Leave is 25 days."}]))
        elif name == "generate":
            assert (data / "chunks.json").is_file()
            (data / "facts.json").write_text(json.dumps([{"id": f"f{i}"} for i in range(3)]))
        elif name == "train":
            if _option(command, "--max-steps") == "99":  # a run that fails midway
                return 2, 0.5
            (data / "train_split.json").write_text(json.dumps(
                [{"answerable": True, "fact_id": "f0", "output": "25 days", "instruction": "How many days of annual leave?"},
                 {"answerable": True, "fact_id": "f0", "output": "25"},
                 {"answerable": True, "fact_id": "f2", "output": "x"}, {"answerable": False, "output": "Not specified."}]))
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / "metrics.json").write_text(json.dumps({"tokens": 1234}))
        elif name == "evaluate":
            interval = {"estimate": 0.5, "low": 0.25, "high": 0.75, "n": 4}
            block = {"n": 6, "intervals": {m: {k: interval for k, _ in quality.METRICS} for m in ("base", "tuned", "difference")}}
            reports = Path(_option(command, "--reports-dir"))
            reports.mkdir(parents=True, exist_ok=True)
            # one gold question nearly copies a training question; the other is scored as "the rest"
            items = [{"question": "How many days of annual leave do I get?", "split": "gold", "answerable": True,
                      "tuned_correct": True, "base_correct": False},
                     {"question": "Is the relocation allowance taxed?", "split": "gold", "answerable": False,
                      "tuned_correct": True, "base_correct": False}]
            (reports / "eval.json").write_text(json.dumps({"splits": {"gold": block}, "items": items}))
        return 0, 1.5

    def stages(self) -> list[tuple[str, str]]:
        """(recipe folder name, stage) per call."""
        return [(Path(_option(c, "--data-dir")).parent.name, name) for name, c in self.calls]


def test_recipes_share_one_parse_a_failure_is_reported_and_skip_existing_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    fake = FakeStages()
    monkeypatch.setattr(quality, "run_stage", fake)
    pdf, gold = tmp_path / "p.pdf", tmp_path / "gold.jsonl"
    pdf.write_bytes(b"%PDF-1.4 not really")
    gold.write_text('{"id": "g1", "question": "How many days?"}\n')
    argv = ["--pdf", str(pdf), "--gold", str(gold)]
    recipes = ["ok=--train.max-steps 2", "broken=--train.max-steps 99", "unreadable=--train.epochs -1"]

    def bench(*extra: str) -> dict:
        with pytest.raises(SystemExit) as exit_info:  # a failed recipe makes the bench exit 1, after reporting
            quality.main(config.parse(quality.QualityBenchConfig, [*argv, *extra, *(f"--recipe={r}" for r in recipes)]))
        assert exit_info.value.code == 1
        return json.loads((tmp_path / "results" / "quality.json").read_text())

    saved = bench()
    root = tmp_path / "results" / "quality"
    assert fake.stages() == [("_parse", "parse"), ("ok", "generate"), ("ok", "preprocess"), ("ok", "quality"), ("ok", "train"),
                             ("ok", "evaluate"), ("broken", "generate"), ("broken", "preprocess"), ("broken", "quality"),
                             ("broken", "train")]
    for name in ("ok", "broken", "unreadable"):  # the same chunks, copied
        assert (root / name / "data" / "chunks.json").read_text() == (root / "_parse" / "data" / "chunks.json").read_text()
    evaluate = next(c for n, c in fake.calls if n == "evaluate")
    assert _option(evaluate, "--gold") == str(gold.resolve()) and _option(evaluate, "--reports-dir") == str(root / "ok" / "reports")
    assert _option(next(c for n, c in fake.calls if n == "train"), "--max-steps") == "2"

    ok, broken, unreadable = saved["recipes"]
    assert ok["state"]["status"] == "ok" and list(ok["state"]["stages"]) == quality.RECIPE_STAGES
    assert ok["measured"] == {"n_gold": 6, "intervals": ok["measured"]["intervals"], "train_records": 4, "facts_covered": 2,
                              "facts_total": 3, "facts_basis": ok["measured"]["facts_basis"], "train_tokens": 1234,
                              "gold_near_copies": {"answerable": 1, "unanswerable": 0, "threshold": quality.NEAR_COPY},
                              "gold_rest": {"answerable": 0, "unanswerable": 1, "base_accuracy": None,
                                            "base_refusal_recall": 0.0, "tuned_accuracy": None,
                                            "tuned_refusal_recall": 1.0},
                              "separability": {"n": 0, "base": None, "tuned": None}}  # the fake measured no divergence
    assert _option(evaluate, "--divergence-max") == "0", "every gold question's refusal probability, for separability"
    assert broken["state"]["status"] == "failed at train (exit 2)" and "evaluate" not in broken["state"]["stages"]
    assert broken["measured"] == {}
    # a flag its stage cannot read stops that recipe before its first stage, not after generating its data
    assert unreadable["state"]["status"] == ("failed before its first stage: train stage: --epochs and --max-steps "
                                             "must be 0 (automatic) or positive") and unreadable["state"]["stages"] == {}
    out = capsys.readouterr().out
    assert "| ok " in out and "0.50 [0.25, 0.75]" in out and "+0.50 [+0.25, +0.75]" in out and "2/3" in out
    assert "| 1/0 " in out, "gold questions a training question nearly copies, answerable/unanswerable"
    assert "failed at train (exit 2)" in out and "error: something broke" in out
    assert [r["model"] for r in saved["rows"]] == ["tuned", "base", "tuned − base", "tuned", "tuned"]

    # Resume: the parse and every finished stage are kept; only the failed stage runs again.
    fake.calls.clear()
    saved = bench("--skip-existing")
    assert fake.stages() == [("broken", "train")]
    assert saved["parse"]["reused"] and saved["recipes"][0]["measured"]["train_tokens"] == 1234

    # Changed flags for a recipe: that recipe starts over, in an emptied folder.
    recipes[0] = "ok=--train.max-steps 3"
    (root / "ok" / "stale.txt").write_text("from the previous flags")
    fake.calls.clear()
    bench("--skip-existing")
    assert fake.stages()[:5] == [("ok", s) for s in quality.RECIPE_STAGES] and not (root / "ok" / "stale.txt").exists()

    # Without --skip-existing everything runs again, the parse included.
    fake.calls.clear()
    bench()
    assert fake.stages()[0] == ("_parse", "parse") and len(fake.calls) == 10


def test_the_sample_gold_is_refused_for_another_document(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    pdf = tmp_path / "mine.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    cfg = config.parse(quality.QualityBenchConfig, ["--pdf", str(pdf), "--gold", str(tmp_path / "gold.jsonl")])
    with pytest.raises(config.UserError, match="gold file not found"):
        quality.main(cfg)
    if quality.SAMPLE_GOLD.is_file():
        with pytest.raises(config.UserError, match="bundled sample policy only"):
            quality.main(config.parse(quality.QualityBenchConfig, ["--pdf", str(pdf)]))


def test_sections_keep_their_chunks_and_gold_questions_only(tmp_path):
    chunks = tmp_path / "chunks.json"
    chunks.write_text(json.dumps([
        {"id": "a", "headings": ["2. Annual Leave", "2.1 Accrual"], "text": "x"},
        {"id": "b", "headings": ["12. Pensions"], "text": "y"},
        {"id": "c", "headings": ["Leave & Benefits Policy"], "text": "z"},
        {"id": "d", "headings": [], "text": "w"}]))
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join(json.dumps({"id": i, "question": "q?", "section": s})
                              for i, s in (("g1", "2.1"), ("g2", "12.3"), ("g3", "1.2"))) + "\n")
    kept_chunks, kept_gold = quality.keep_sections(chunks, gold, ["2", "12."], tmp_path)
    assert [c["id"] for c in json.loads(kept_chunks.read_text())] == ["a", "b"]   # "2" is not "12"'s prefix
    assert [json.loads(line)["id"] for line in kept_gold.read_text().splitlines()] == ["g1", "g2"]
    with pytest.raises(config.UserError, match="--sections 7"):
        quality.keep_sections(chunks, gold, ["7"], tmp_path)


def test_base_answers_of_earlier_recipes_seed_a_new_recipe_log(tmp_path):
    for name, rows in (("a", [{"run": "k", "model": "base", "question": "q1", "answer": "x"},
                              {"run": "t", "model": "tuned", "question": "q1", "answer": "y"}]),
                       ("b", [{"run": "k", "model": "base", "question": "q1", "answer": "x"},
                              {"run": "k", "model": "base", "question": "q2", "answer": "z"}])):
        log = tmp_path / name / "reports" / "eval.answers.jsonl"
        log.parent.mkdir(parents=True)
        log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"run": "k", "mod')  # last line cut by a kill
    target = tmp_path / "c" / "reports" / "eval.answers.jsonl"
    assert quality.seed_base_answers(tmp_path, target) == 2
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert {(r["model"], r["question"]) for r in rows} == {("base", "q1"), ("base", "q2")}
    assert quality.seed_base_answers(tmp_path, target) == 0  # a log already there is left alone


def test_a_gold_question_is_also_asked_in_the_closest_training_wording_of_its_fact():
    gold = [{"id": "g1", "question": "How many days of annual leave do I get after 10 years?", "answerable": True,
             "answer": "With 10 years or more of service the entitlement is 28 days a year.", "keywords": ["28 days"]},
            {"id": "g2", "question": "Is volunteer leave paid?", "answerable": False, "keywords": []},
            {"id": "g3", "question": "Who runs our helpline?", "answerable": True, "answer": "ClearPath Wellbeing.",
             "keywords": ["ClearPath"]}]
    train = [{"instruction": "How many days per year with 10 years or more of service?", "answerable": True,
              "output": "Years of service: 10 years or more; Days per year: 28 days; Entitlement: 28 days a year."},
             {"instruction": "What does the policy say about annual leave?", "answerable": True,
              "output": "With 10 years or more of service the entitlement is 28 days a year."},
             {"instruction": "How many days per year with less than 2 years of service?", "answerable": True,
              "output": "Years of service: less than 2 years; Days per year: 25 days."}]
    asked = quality.trained_wordings(gold, train)
    # the fact's own training question, never a topic question, nor another fact's, nor a near miss or an unseen fact
    assert [(a["id"], a["question"]) for a in asked] == \
        [("g1-trained", "How many days per year with 10 years or more of service?")]
    assert asked[0]["keywords"] == ["28 days"] and asked[0]["answerable"] is True


def test_gold_separability_reads_the_gold_questions_refusal_probabilities_only():
    def item(answerable: bool, tuned: float, split: str = "gold", base: float = 0.1) -> dict:
        return {"split": split, "answerable": answerable,
                "divergence": {"refusal_first_token_prob": {"base": base, "tuned": tuned}}}

    items = [item(False, 0.8), item(False, 0.6), item(True, 0.2), item(True, 0.7),
             item(True, 0.99, split="held_out"),                              # another split: not counted
             {"split": "gold", "answerable": False, "divergence": None}]      # not measured: not counted
    measured = quality.gold_separability(items)
    assert measured["n"] == 4 and measured["tuned"] == 0.75 and measured["base"] == 0.5
    assert quality.gold_separability([item(True, 0.2)])["tuned"] is None


def test_trained_wordings_rerun_the_recipes_evaluate_on_their_own_file_without_divergence(tmp_path, monkeypatch):
    folder = tmp_path / "ok"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train_split.json").write_text(json.dumps(
        [{"answerable": True, "instruction": "How many days of annual leave per year?", "output": "25 days a year."}]))
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": "g1", "question": "How much holiday do I get?", "answerable": True,
                                "answer": "25 days a year.", "keywords": ["25 days"]}) + "\n")
    calls = []
    monkeypatch.setattr(quality, "run_stage", lambda command, log: calls.append(command) or (0, 1.0))
    state = {"stages": {}}
    recipe = ["evaluate.py", "--gold", "g.jsonl", "--reports-dir", "r", "--divergence-max", "0", "--threads", "2"]
    quality.run_trained_wordings("ok", folder, state, recipe, gold)
    (command,) = calls
    assert _option(command, "--gold") == str(folder / "data" / "gold_trained_wordings.jsonl")
    assert _option(command, "--reports-dir") == str(folder / "reports_trained")
    assert _option(command, "--divergence-max") == "-1" and _option(command, "--threads") == "2"
    asked = [json.loads(line) for line in (folder / "data" / "gold_trained_wordings.jsonl").read_text().splitlines()]
    assert [a["question"] for a in asked] == ["How many days of annual leave per year?"]
    assert state["stages"]["trained_wordings"]["exit"] == 0
