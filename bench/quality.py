"""Quality benchmark: named recipes run through the pipeline on the same chunks, each scored on the gold set.

    uv run python bench/quality.py                                                 # the baseline: today's defaults
    uv run python bench/quality.py --recipe baseline= --recipe "qpf4=--generate.questions-per-fact 4"
    uv run python bench/quality.py --skip-existing --recipe ...                    # resume a killed bench
    uv run python bench/quality.py --sections 2,4,5 --recipe "ep1=" --recipe "ep3=--train.epochs 3"  # part of the policy

A recipe is `NAME=FLAGS`: FLAGS are pipeline.py stage flags (`--<stage>.<flag> value`, quoted as one
argument) for the stages generate to evaluate; `baseline=` has none. The document is parsed once
(bench/results/quality/_parse/) and its chunks.json copied into every recipe's data folder, so
recipes differ only in their flags. Each recipe runs pipeline.py's stage commands from generate to
evaluate in bench/results/quality/<NAME>/{data,checkpoints,reports} (one log per stage under
logs/), with `--evaluate.gold GOLD` added: every recipe answers the same hand-written gold
questions, and only those. A failing recipe is reported with its stage and exit code; the others
still run. The table gives, per recipe, the tuned and base model's gold-set metrics with 95%
bootstrap intervals, the paired tuned - base difference, training records, facts covered, training
tokens and wall seconds per stage. Everything is saved to bench/results/quality.json.

Without --skip-existing a recipe starts from an empty folder (clean timings). With it, a recipe whose
flags, chunks and gold file are unchanged keeps the stages it finished; a stage killed midway
reruns (and may resume from its own cache or trainer checkpoint, so its time can read short). It
does not notice edited code: after changing a stage, run without --skip-existing.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import common

from policytune import config, io

RECIPE_STAGES = ["generate", "preprocess", "quality", "train", "evaluate"]
SAMPLE_GOLD = common.ROOT / "sample" / "gold.jsonl"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# A gold question this close to a training question (content-word Jaccard) is counted as seen in training.
NEAR_COPY = 0.6
METRICS = [("answerable_accuracy", "answerable acc"), ("refusal_recall", "refusal recall"),
           ("false_refusal_rate", "false refusals"), ("hallucination_rate", "hallucination")]


@dataclass
class QualityBenchConfig(config.Base):
    recipe: list[str] = field(default_factory=lambda: ["baseline="], metadata={
        "help": "NAME=FLAGS, FLAGS being pipeline stage flags such as '--generate.questions-per-fact 4'; repeatable"})
    pdf: list[str] = field(default_factory=lambda: [str(common.SAMPLE_PDF)], metadata={"help": "policy document(s)"})
    gold: str = field(default=str(SAMPLE_GOLD), metadata={"help": "gold questions (JSON lines) every recipe is scored on"})
    sections: list[str] = field(default_factory=list, metadata={
        "help": "top-level section numbers to keep (e.g. 2,4,5): chunks and gold questions of those sections only, "
                "a cheaper run for curves such as accuracy against epochs"})
    skip_existing: bool = field(default=False, metadata={
        "help": "keep what a recipe with unchanged flags already finished (resume a killed bench)"})
    trained_wordings: bool = field(default=True, metadata={
        "help": "also ask each answerable gold question in the closest training wording of its fact (reports_trained/): "
                "a fact stored but not recalled in an employee's words scores there, not on the gold set"})


def pull_recipes(argv: list[str]) -> tuple[list[str], list[str]]:
    """Take the --recipe values out of argv: a recipe's flags may hold commas, which list flags would split.
    A --recipe without a value stays in argv, for argparse to report."""
    recipes, rest = [], []
    i = 0
    while i < len(argv):
        if argv[i] == "--recipe" and i + 1 < len(argv):
            recipes.append(argv[i + 1])
            i += 2
            continue
        if argv[i].startswith("--recipe="):
            recipes.append(argv[i].split("=", 1)[1])
        else:
            rest.append(argv[i])
        i += 1
    return recipes, rest


def parse_recipe(text: str, pipeline) -> tuple[str, list[str]]:
    """NAME=FLAGS as (name, argv of stage flags); anything but a stage flag of generate..evaluate is an error."""
    name, eq, flags = text.partition("=")
    if not eq or not NAME.fullmatch(name):
        raise config.UserError(f"--recipe {text!r}: expected NAME=FLAGS with NAME of letters, digits, '_', '.', '-'")
    try:
        argv = shlex.split(flags)
    except ValueError as exc:
        raise config.UserError(f"--recipe {name}: {exc}") from None
    own, extra = pipeline.split_stage_flags(argv)
    if own:
        raise config.UserError(f"--recipe {name}: {own[0]!r} is not a stage flag (--<stage>.<flag> value)")
    for stage in extra:
        if stage not in RECIPE_STAGES:
            raise config.UserError(f"--recipe {name}: --{stage}.* flags are not per recipe (the bench runs "
                                   f"{', '.join(RECIPE_STAGES)}; the document is parsed once for all)")
    if "--gold" in extra.get("evaluate", []):
        raise config.UserError(f"--recipe {name}: every recipe is scored on the bench's --gold; set it there")
    return name, argv


def run_stage(command: list[str], log: Path) -> tuple[int, float]:
    """Run one stage script from the project root, output to `log`; returns (exit code, wall seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.call([sys.executable, *command], cwd=common.ROOT, stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return code, round(time.perf_counter() - started, 1)


def tail(log: Path, lines: int = 5) -> str:
    """The last lines of a stage log, to show why it failed."""
    text = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    return "\n".join("    " + line for line in text[-lines:])


def parse_once(cfg: QualityBenchConfig, pipeline, root: Path) -> dict[str, Any]:
    """Parse the document(s) into root/_parse/data/chunks.json, reused when the same files were parsed before."""
    folder = root / "_parse"
    key = io.content_hash([(str(Path(p).resolve()), io.file_sha256(p)) for p in cfg.pdf])
    state_path, chunks = folder / "parse.json", folder / "data" / "chunks.json"
    if cfg.skip_existing and state_path.exists() and chunks.exists():
        state = io.read_json(state_path, "parse state")
        if state.get("key") == key and state.get("exit") == 0:
            print(f"== parse: reusing {chunks}", flush=True)
            return {**state, "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    plan_cfg = pipeline.PipelineConfig(pdf=cfg.pdf, data_dir=str(folder / "data"), checkpoint_dir=str(folder / "checkpoints"),
                                       reports_dir=str(folder / "reports"))
    step = pipeline.plan(plan_cfg, {})[0]
    print(f"== parse: python {' '.join(step.command)}", flush=True)
    code, seconds = run_stage(step.command, folder / "parse.log")
    state = {"key": key, "pdf": cfg.pdf, "exit": code, "seconds": seconds, "chunks": str(chunks)}
    io.write_json_atomic(state_path, state)
    if code != 0:
        raise config.UserError(f"parsing {', '.join(cfg.pdf)} failed (exit {code}); log: {folder / 'parse.log'}\n"
                               + tail(folder / "parse.log"))
    print(f"   parsed in {seconds}s -> {chunks}", flush=True)
    return state


def top_section(label: str) -> str:
    """ "2.1 Accrual" or "2.1" -> "2"; "" when the label does not start with a section number."""
    head = label.strip().split(" ", 1)[0].rstrip(".")
    return head.split(".")[0] if head[:1].isdigit() else ""


def keep_sections(chunks: Path, gold: Path, sections: list[str], folder: Path) -> tuple[Path, Path]:
    """Chunks and gold questions of the given top-level sections, written beside the parse; their paths."""
    wanted = {s.strip().rstrip(".") for s in sections}
    tag = "-".join(sorted(wanted, key=lambda s: (len(s), s)))
    kept_chunks = [c for c in io.read_records(chunks, "chunks")
                   if c.get("headings") and top_section(c["headings"][0]) in wanted]
    kept_gold = [line for line in gold.read_text(encoding="utf-8").splitlines()
                 if line.strip() and top_section(str(json.loads(line).get("section", ""))) in wanted]
    if not kept_chunks or not kept_gold:
        raise config.UserError(f"--sections {','.join(sections)}: {len(kept_chunks)} chunks and {len(kept_gold)} gold "
                               "questions in those sections; name top-level section numbers of the document")
    chunk_path, gold_path = folder / f"chunks-{tag}.json", folder / f"gold-{tag}.jsonl"
    io.write_json_atomic(chunk_path, kept_chunks)
    io.write_text_atomic(gold_path, "\n".join(kept_gold) + "\n")
    print(f"== sections {', '.join(sorted(wanted))}: {len(kept_chunks)} chunks, {len(kept_gold)} gold questions", flush=True)
    return chunk_path, gold_path


def seed_base_answers(root: Path, log: Path) -> int:
    """Copy the base model's logged answers from earlier recipes into this recipe's answer log.

    The base model, its prompt and the gold questions are the same in every recipe, and evaluate.py
    reuses a logged answer only when its run key (base model, dtype, answer length, system prompt)
    matches, so every recipe after the first generates only the tuned model's answers: its evaluate
    time is about half a fresh pipeline's."""
    if log.exists():
        return 0
    rows: dict[tuple, dict] = {}
    for other in sorted(root.glob("*/reports/eval.answers.jsonl")):
        for row in io.read_jsonl(other):  # skips a last line cut by a kill
            if row.get("model") == "base":
                rows.setdefault((row.get("run"), row.get("question")), row)
    if rows:
        io.write_text_atomic(log, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows.values()))
    return len(rows)


def run_recipe(name: str, flags: list[str], cfg: QualityBenchConfig, pipeline, chunks: Path, root: Path) -> dict[str, Any]:
    """One recipe's stages, generate to evaluate, in its own folder; returns its state (flags, stages, status)."""
    folder = root / name
    gold = str(Path(cfg.gold).resolve())
    key = io.content_hash(flags, io.file_sha256(chunks), io.file_sha256(gold))
    state_path = folder / "recipe.json"
    state = io.read_json(state_path, "recipe state") if cfg.skip_existing and state_path.exists() else {}
    if state.get("key") != key:
        shutil.rmtree(folder, ignore_errors=True)  # another recipe's leftovers would skew its data and times
        state = {"key": key, "name": name, "flags": flags, "stages": {}}
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "chunks.json").exists():
        shutil.copy2(chunks, data / "chunks.json")
    # every gold question's refusal-start probability, for the separability column (a recipe may still set it)
    _, extra = pipeline.split_stage_flags(["--evaluate.divergence-max", "0"] + flags + ["--evaluate.gold", gold])
    plan_cfg = pipeline.PipelineConfig(pdf=cfg.pdf, data_dir=str(data), checkpoint_dir=str(folder / "checkpoints"),
                                       reports_dir=str(folder / "reports"))
    try:
        steps = [s for s in pipeline.plan(plan_cfg, extra) if s.name in RECIPE_STAGES]
    except config.UserError as exc:  # a flag a stage cannot read: no stage runs, the other recipes still do
        state["status"] = f"failed before its first stage: {exc}"
        print(f"== {name}: {state['status']}", flush=True)
        io.write_json_atomic(state_path, state)
        return state
    state["status"] = "ok"
    evaluate_command: list[str] = []
    for step in steps:
        if step.name == "evaluate":
            evaluate_command = step.command
        done = state["stages"].get(step.name)
        if done and done["exit"] == 0:
            print(f"== {name} / {step.name}: finished before ({done['seconds']}s), kept", flush=True)
            done["reused"] = True
            continue
        if step.name == "evaluate":
            seed_base_answers(root, folder / "reports" / "eval.answers.jsonl")
        log = folder / "logs" / f"{step.name}.log"
        print(f"== {name} / {step.name}: python {' '.join(step.command)}", flush=True)
        code, seconds = run_stage(step.command, log)
        state["stages"][step.name] = {"exit": code, "seconds": seconds, "log": str(log)}
        # A rerun stage makes what later stages made stale: they run again too.
        for later in RECIPE_STAGES[RECIPE_STAGES.index(step.name) + 1:] + ["trained_wordings"]:
            state["stages"].pop(later, None)
        io.write_json_atomic(state_path, state)
        print(f"   exit {code} in {seconds}s (log: {log})", flush=True)
        if code != 0:
            state["status"] = f"failed at {step.name} (exit {code})"
            print(tail(log), flush=True)
            break
    if cfg.trained_wordings and state["status"] == "ok" and evaluate_command and \
            state["stages"].get("trained_wordings", {}).get("exit") != 0:
        run_trained_wordings(name, folder, state, evaluate_command, Path(gold))
    io.write_json_atomic(state_path, state)
    return state


# Noun-phrase and section questions ask about a topic, not for the fact a gold question asks for.
_TOPIC_OPENINGS = ("What does the policy say about", "What should I know about", "What are the rules on")


def trained_wordings(gold_items: list[dict], train: list[dict]) -> list[dict]:
    """Each answerable gold question asked instead in the training question closest to it: one whose answer holds the
    gold keywords and at least half of the gold answer's content words. The tuned model's accuracy on these against
    the gold set's separates a fact it did not store from one it stored but cannot recall in an employee's words."""
    from policytune import metrics, normalize

    candidates = [r for r in train if isinstance(r, dict) and r.get("answerable") is True
                  and not str(r.get("instruction", "")).startswith(_TOPIC_OPENINGS)]
    out = []
    for item in gold_items:
        if not item.get("answerable") or not item.get("keywords"):
            continue
        expected = normalize.content_tokens(item.get("answer") or item.get("expected_answer") or "")
        same_fact = [r for r in candidates if metrics.keyword_match(str(r.get("output", "")), item["keywords"])
                     and len(expected & normalize.content_tokens(str(r.get("output", "")))) >= len(expected) / 2]
        if not same_fact:
            continue
        asked = normalize.content_tokens(item["question"])
        closest = max(same_fact, key=lambda r: len(asked & normalize.content_tokens(str(r["instruction"]))))
        out.append({**{k: item[k] for k in ("answer", "keywords", "type", "section") if k in item},
                    "id": f"{item['id']}-trained", "question": closest["instruction"], "answerable": True})
    return out


def run_trained_wordings(name: str, folder: Path, state: dict, evaluate_command: list[str], gold: Path) -> None:
    """The tuned and base models on `trained_wordings` of the recipe's own training split (reports_trained/)."""
    train = read_optional(folder / "data" / "train_split.json")
    items = trained_wordings(list(io.read_jsonl(gold)), train if isinstance(train, list) else [])
    if not items:
        return
    questions = folder / "data" / "gold_trained_wordings.jsonl"
    io.write_text_atomic(questions, "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    command = list(evaluate_command)
    # Only the answers are read here: the divergence would cost two more forward passes per question.
    for flag, value in (("--gold", questions), ("--reports-dir", folder / "reports_trained"), ("--divergence-max", -1)):
        if flag in command:
            command[command.index(flag) + 1] = str(value)
        else:
            command += [flag, str(value)]
    log = folder / "logs" / "trained_wordings.log"
    print(f"== {name} / trained wordings ({len(items)} gold questions in a training wording): "
          f"python {' '.join(command)}", flush=True)
    code, seconds = run_stage(command, log)
    state["stages"]["trained_wordings"] = {"exit": code, "seconds": seconds, "log": str(log)}
    print(f"   exit {code} in {seconds}s (log: {log})", flush=True)


def read_optional(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (a failed recipe's half-made folder)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def measure(folder: Path, stages: dict[str, dict]) -> dict[str, Any]:
    """What a recipe produced: gold-set intervals per model and their difference, training data size and tokens.
    Only from stages that finished in this state: a failed rerun must not show an earlier run's files."""
    def finished(stage: str) -> bool:
        return stages.get(stage, {}).get("exit") == 0

    out: dict[str, Any] = {}
    evaluation = read_optional(folder / "reports" / "eval.json") if finished("evaluate") else None
    if isinstance(evaluation, dict):
        block = (evaluation.get("splits") or {}).get("gold")
        if block:
            out["n_gold"] = block["n"]
            out["intervals"] = block["intervals"]
    if not finished("train"):
        return out
    train = read_optional(folder / "data" / "train_split.json")
    if isinstance(train, list):
        out["train_records"] = len(train)
        answerable = [r for r in train if isinstance(r, dict) and r.get("answerable") is True]
        facts = read_optional(folder / "data" / "facts.json")
        if isinstance(facts, list):
            # Facts the adapter was shown at least once: what closed-book answers can draw on.
            out["facts_covered"] = len({r["fact_id"] for r in answerable if r.get("fact_id")})
            out["facts_total"] = len(facts)
            out["facts_basis"] = "distinct fact_id of answerable training records / facts.json"
        else:
            out["facts_covered"] = len({r.get("output") for r in answerable})
            out["facts_basis"] = "distinct answers of answerable training records (no facts.json)"
    trained = read_optional(folder / "checkpoints" / "metrics.json")
    if isinstance(trained, dict):
        out["train_tokens"] = trained.get("tokens")
    if isinstance(evaluation, dict):
        out["separability"] = gold_separability(evaluation.get("items", []))
    if isinstance(evaluation, dict) and isinstance(train, list):
        out.update(gold_overlap([i for i in evaluation.get("items", []) if i.get("split") == "gold"], train))
    trained = read_optional(folder / "reports_trained" / "eval.json") if finished("trained_wordings") else None
    if isinstance(trained, dict) and (trained.get("splits") or {}).get("gold"):
        block = trained["splits"]["gold"]
        out["trained_wordings"] = {"n": block["n"], **{m: block["intervals"].get(m, {}).get("answerable_accuracy")
                                                       for m in ("tuned", "base")}}
    return out


def gold_separability(items: list[dict]) -> dict[str, Any]:
    """Per model, how well the probability of starting the refusal tells gold near misses from answerable gold
    questions (metrics.separability): refusal recall and false refusals move with where a model's threshold lies,
    which shifts from run to run; this does not."""
    from policytune import metrics

    measured = [i for i in items if i.get("split") == "gold" and i.get("divergence")]
    return {"n": len(measured), **metrics.refusal_separability(measured)}


def gold_overlap(gold_items: list[dict], train: list[dict], threshold: float = NEAR_COPY) -> dict[str, Any]:
    """How many gold questions a training question nearly copies (content-word Jaccard >= threshold), and the tuned
    model's gold figures on the others: generic near-miss templates ("Is volunteer leave paid?") can land on the very
    question a gold writer asked, and a figure earned by copying is not generalisation."""
    from policytune import normalize

    # training records hold the question as "instruction" (Alpaca layout); "question" where one was generated so
    asked = [normalize.content_tokens(r.get("instruction") or r.get("question") or "") for r in train
             if isinstance(r, dict)]
    near = [any(normalize.jaccard(normalize.content_tokens(item["question"]), t) >= threshold for t in asked)
            for item in gold_items]
    rest = [item for item, copied in zip(gold_items, near) if not copied]
    answerable = [i for i in rest if i.get("answerable")]
    unanswerable = [i for i in rest if not i.get("answerable")]

    def share(items: list[dict], model: str) -> float | None:
        return round(sum(bool(i.get(f"{model}_correct")) for i in items) / len(items), 3) if items else None

    return {"gold_near_copies": {"answerable": sum(c for i, c in zip(gold_items, near) if i.get("answerable")),
                                 "unanswerable": sum(c for i, c in zip(gold_items, near) if not i.get("answerable")),
                                 "threshold": threshold},
            "gold_rest": {"answerable": len(answerable), "unanswerable": len(unanswerable),
                          **{f"{m}_{k}": share(items, m) for m in ("base", "tuned")
                             for k, items in (("accuracy", answerable), ("refusal_recall", unanswerable))}}}


def cell(interval: dict[str, Any] | None, signed: bool = False) -> str:
    """"0.42 [0.31, 0.53]"; blank when the metric was not measured."""
    if not interval or interval.get("estimate") is None:
        return ""
    number = "{:+.2f}" if signed else "{:.2f}"
    return f"{number.format(interval['estimate'])} [{number.format(interval['low'])}, {number.format(interval['high'])}]"


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Three rows per recipe (tuned, base, tuned - base) for common.table; one when nothing was scored."""
    rows = []
    for result in results:
        measured, intervals = result["measured"], result["measured"].get("intervals") or {}
        facts = measured.get("facts_covered", "")
        if "facts_total" in measured:
            facts = f"{facts}/{measured['facts_total']}"
        stages = result["state"].get("stages", {})
        for model in ("tuned", "base", "difference") if intervals else ("tuned",):
            row = {"recipe": result["name"] if model == "tuned" else "",
                   "model": {"difference": "tuned − base"}.get(model, model)}
            row.update({label: cell(intervals.get(model, {}).get(key), signed=model == "difference") for key, label in METRICS})
            if model == "tuned":
                copies, rest = measured.get("gold_near_copies"), measured.get("gold_rest")
                row["gold copied a/u"] = f"{copies['answerable']}/{copies['unanswerable']}" if copies else ""
                row["tuned acc / RR, rest"] = (f"{rest['tuned_accuracy']} / {rest['tuned_refusal_recall']}"
                                               if rest else "")
                worded = measured.get("trained_wordings")
                row["acc, trained wording"] = f"{cell(worded['tuned'])} (n {worded['n']})" if worded else ""
                auc = measured.get("separability") or {}
                row["refusal AUC tuned / base"] = (f"{auc['tuned']:.2f} / {auc['base']:.2f} (n {auc['n']})"
                                                   if auc.get("tuned") is not None else "")
                row.update({"n gold": measured.get("n_gold", ""), "train records": measured.get("train_records", ""),
                            "facts covered": facts, "train tokens": measured.get("train_tokens", "")})
                row.update({f"{s} s": stages[s]["seconds"] if s in stages else "" for s in RECIPE_STAGES})
                row["status"] = result["state"].get("status", "")
            rows.append(row)
    return rows


def main(cfg: QualityBenchConfig) -> None:
    # Stages run from the project root: paths given relative to where the bench was started are made absolute.
    cfg = replace(cfg, pdf=[str(Path(p).resolve()) for p in cfg.pdf], gold=str(Path(cfg.gold).resolve()))
    config.show(cfg)
    pipeline = common.load_stage("pipeline.py")
    recipes = [parse_recipe(text, pipeline) for text in cfg.recipe]
    names = [name for name, _ in recipes]
    if len(set(names)) != len(names):
        raise config.UserError(f"--recipe: names must be unique, got {names}")
    for pdf in cfg.pdf:
        if not Path(pdf).is_file():
            raise config.UserError(f"{pdf}: document not found")
    if not Path(cfg.gold).is_file():
        raise config.UserError(f"{cfg.gold}: gold file not found")
    if Path(cfg.gold) == SAMPLE_GOLD.resolve() and [Path(p) for p in cfg.pdf] != [common.SAMPLE_PDF.resolve()]:
        raise config.UserError("sample/gold.jsonl holds questions about the bundled sample policy only; "
                               "pass --gold FILE for other documents")
    root = common.RESULTS / "quality"
    parsed = parse_once(cfg, pipeline, root)
    chunks = Path(parsed["chunks"])
    if cfg.sections:
        chunks, gold = keep_sections(chunks, Path(cfg.gold), cfg.sections, root / "_parse")
        cfg = replace(cfg, gold=str(gold))
    results = []
    for name, flags in recipes:
        state = run_recipe(name, flags, cfg, pipeline, chunks, root)
        results.append({"name": name, "flags": shlex.join(flags), "state": state,
                        "measured": measure(root / name, state["stages"])})
    rows = table_rows(results)
    print()
    print(common.table(rows))
    failed = [r["name"] for r in results if r["state"].get("status") != "ok"]
    if failed:
        print(f"failed recipes: {', '.join(failed)} (their logs are under {root})", flush=True)
    # A run on part of the policy must not overwrite the whole policy's results.
    common.report("quality" + (f"-sections-{'-'.join(cfg.sections)}" if cfg.sections else ""), {"config": config.as_dict(cfg), "gold": cfg.gold,
                              "parse": {k: parsed[k] for k in ("pdf", "seconds", "exit", "reused") if k in parsed},
                              "recipes": results, "rows": rows})
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    recipe_args, own_args = pull_recipes(sys.argv[1:])
    config.run(lambda cfg: main(replace(cfg, recipe=recipe_args) if recipe_args else cfg), QualityBenchConfig, own_args)
