"""Stage 3: keep only the instruction pairs worth training on.

    uv run python dataquality.py                                   # data/instructions.json -> data/instructionquality.json
    uv run python dataquality.py --judge-votes 3 --judge-threshold 3.5
    uv run python dataquality.py --judge-mode off                  # heuristics only, no LLM
    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_MODEL=llama3.1 uv run python dataquality.py   # another judge

Heuristics first (fast, deterministic, one reason per rejection), then an LLM judge through the
same endpoint layer as generation (likelihood scoring on small local models, a yes/no verdict
from logprobs or a JSON rubric on larger ones; see policytune/judge.py). Judge calls are cached in
data/judge_cache.jsonl: a killed run resumes, a rerun makes no calls and writes the same output.
Outputs: data/instructionquality.json (kept records + `quality`), data/instructionquality.messages.jsonl
(chat `messages` per line for TRL / OpenAI fine-tuning), data/quality_report.json and .md.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field

from policytune import chat, config, facts, heuristics, io, judge, llm

REQUIRED = {"id": str, "instruction": str, "output": str, "answerable": bool, "context": str}
EXAMPLES_PER_REASON = 3


@dataclass
class QualityConfig(llm.LLMOptions):
    input: str = field(default="instructions.json", metadata={"help": "instruction records (under --data-dir unless absolute)"})
    output: str = field(default="instructionquality.json", metadata={"help": "kept records written here"})
    judge_mode: str = field(default="auto", metadata={
        "help": "auto: likelihood on the embedded server, verdict where the endpoint gives logprobs, else rubric; off: heuristics only",
        "choices": judge.MODES + ("off",)})
    judge_threshold: float = field(default=3.0, metadata={
        "help": "keep a pair whose judge score (1-5) is at least this; likelihood: 3 = the excerpt supports the answer's weakest words"})
    judge_votes: int = field(default=1, metadata={"help": "independent judge calls per pair; a pair is kept by majority"})
    judge_cache: str = field(default="judge_cache.jsonl", metadata={"help": "append-only cache of judge calls (resume and reruns)"})
    min_question_words: int = field(default=3, metadata={"help": "shorter questions are rejected"})
    max_question_words: int = field(default=60, metadata={"help": "longer questions are rejected"})
    max_answer_words: int = field(default=80, metadata={"help": "longer answers are rejected (short facts like 'CAPPS' always pass)"})
    min_content_overlap: float = field(default=0.7, metadata={"help": "share of an answer's content words that must appear in its chunk"})
    balance: bool = field(default=True, metadata={"help": "drop surplus pairs so the unanswerable share stays near the input's"})
    balance_tolerance: float = field(default=0.05, metadata={"help": "allowed drift of the unanswerable share before balancing"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.judge_votes < 1:
            raise config.UserError("--judge-votes must be at least 1")
        if not 1.0 <= self.judge_threshold <= 5.0:
            raise config.UserError("--judge-threshold is on the 1-5 scale")
        for name, low in (("min_question_words", 0), ("max_question_words", 1), ("max_answer_words", 1)):
            if getattr(self, name) < low:
                raise config.UserError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        if self.max_question_words < self.min_question_words:
            raise config.UserError(f"--max-question-words ({self.max_question_words}) is below --min-question-words "
                                   f"({self.min_question_words}): no question could pass")
        for name in ("min_content_overlap", "balance_tolerance"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise config.UserError(f"--{name.replace('_', '-')} is a share between 0 and 1, got {getattr(self, name)}")

    def rules(self) -> heuristics.Rules:
        return heuristics.Rules(min_question_words=self.min_question_words, max_question_words=self.max_question_words,
                                max_answer_words=self.max_answer_words, min_content_overlap=self.min_content_overlap)


def malformed(record: dict) -> str | None:
    for name, typ in REQUIRED.items():
        if not isinstance(record.get(name), typ):
            return f"malformed: field {name!r} missing or not {typ.__name__}"
    return None


def unanswerable_share(records: list[dict]) -> float:
    """Of the records that say whether they are answerable (a malformed one may not)."""
    labelled = [r["answerable"] for r in records if isinstance(r.get("answerable"), bool)]
    return labelled.count(False) / len(labelled) if labelled else 0.0


def judge_score(record: dict) -> float:
    verdict = record["quality"].get("judge") or {}
    return verdict.get("score") or 0.0


def balance(kept: list[dict], target: float, tolerance: float) -> tuple[list[dict], list[dict]]:
    """Drop the lowest-scored surplus of the over-represented side so the unanswerable share is near target."""
    share = unanswerable_share(kept)
    # One record is the smallest step: on a small set, a drift below it is no drift.
    if not kept or abs(share - target) <= max(tolerance, 1.0 / len(kept)):
        return kept, []
    too_many_refusals = share > target
    surplus_side = [r for r in kept if r["answerable"] != too_many_refusals]
    other = len(kept) - len(surplus_side)
    # Keep n of the surplus side so that n / (n + other) (or other / (n + other)) lands on target.
    wanted_share = target if too_many_refusals else 1.0 - target
    keep_n = round(wanted_share * other / (1.0 - wanted_share)) if wanted_share < 1.0 else len(surplus_side)
    keep_n = min(len(surplus_side), max(keep_n, 1 if surplus_side else 0))
    ranked = sorted(surplus_side, key=lambda r: (-judge_score(r), r["id"]))
    surplus_ids = {r["id"] for r in ranked[keep_n:]}
    side = "unanswerable" if too_many_refusals else "answerable"
    dropped = [{**r, "reason": f"balance: {side} surplus (input unanswerable share {target:.0%})"}
               for r in kept if r["id"] in surplus_ids]
    return [r for r in kept if r["id"] not in surplus_ids], dropped


def summary(records: list[dict]) -> dict:
    return {"count": len(records), "answerable": sum(r.get("answerable") is True for r in records),
            "unanswerable": sum(r.get("answerable") is False for r in records),
            "unanswerable_share": round(unanswerable_share(records), 3),
            "by_type": dict(sorted(Counter(r.get("type", "?") for r in records).items()))}


def coverage(cfg: QualityConfig, records: list[dict], kept: list[dict]) -> dict | None:
    """Facts of the inventory with at least the wanted number of kept questions after this gate, and each uncovered
    fact with why: too few questions generated (the generation summary's reason) or questions rejected here."""
    facts_path, summary_path = cfg.data_path("facts.json"), cfg.data_path("syntheticdata_summary.json")
    if not facts_path.exists():
        return None
    fact_list = io.read_records(facts_path, "fact inventory", facts.KEYS)
    generation = io.read_json(summary_path, "generation summary") if summary_path.exists() else {}
    if not isinstance(generation, dict):
        raise config.UserError(f"{summary_path}: generation summary file must hold a JSON object")
    wanted = generation.get("questions_per_fact")
    wanted = wanted if isinstance(wanted, int) and wanted > 0 else 3
    before = Counter(r.get("fact_id") for r in records if r.get("answerable") is True)
    after = Counter(r.get("fact_id") for r in kept if r.get("answerable") is True)
    generated_reason = {f.get("fact_id"): f.get("reason") for f in generation.get("uncovered_facts", [])
                        if isinstance(f, dict)}
    uncovered = [{"fact_id": f["id"], "section": f["section"], "text": f["text"][:200], "kept": after[f["id"]],
                  "reason": generated_reason.get(f["id"]) if before[f["id"]] < wanted else
                  f"{before[f['id']] - after[f['id']]} of its questions rejected by the quality gate"}
                 for f in fact_list if after[f["id"]] < wanted]
    covered = len(fact_list) - len(uncovered)
    return {"facts": len(fact_list), "questions_per_fact": wanted, "facts_covered": covered,
            "facts_covered_share": round(covered / max(1, len(fact_list)), 3), "uncovered_facts": uncovered}


def quality_report(cfg: QualityConfig, records: list[dict], kept: list[dict], rejected: list[dict],
                   stages: list[dict], verdicts: dict, judge_mode: str, seconds: float) -> dict:
    """What quality_report.json says about the gate's run: counts per stage and reason, shares, examples, coverage."""
    reasons = Counter(heuristics.rule_name(r["reason"]) for r in rejected)
    examples: dict[str, list[dict]] = {}
    for r in rejected:
        bucket = examples.setdefault(heuristics.rule_name(r["reason"]), [])
        if len(bucket) < EXAMPLES_PER_REASON:
            bucket.append({"id": r.get("id"), "question": r.get("instruction"), "answer": r.get("output"),
                           "reason": r["reason"]})
    preprocess = io.read_json(cfg.data_path("preprocessing_report.json"), "preprocessing report") \
        if cfg.data_path("preprocessing_report.json").exists() else None
    scores = [v["score"] for v in verdicts.values() if v.get("score") is not None]
    report = {
        "input": str(cfg.data_path(cfg.input)),
        "output": str(cfg.data_path(cfg.output)),
        "in": len(records),
        "kept": len(kept),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "stages": stages,
        "before": summary(records),
        "after": summary(kept),
        "judge": {"mode": judge_mode, "threshold": cfg.judge_threshold, "votes": cfg.judge_votes,
                  "judged": len(verdicts), "mean_score": round(sum(scores) / len(scores), 3) if scores else None},
        "seconds": round(seconds, 1),
        "examples": examples,
        # another stage's report, shown only when it has the counts the summary line prints
        "preprocess": {k: v for k, v in preprocess.items() if k != "dropped_records"}
        if isinstance(preprocess, dict) and {"in", "out", "dropped", "relabelled_as_unanswerable"} <= preprocess.keys()
        else None,
        "rejected_records": [{"id": r.get("id"), "reason": r["reason"]} for r in rejected],
        "coverage": coverage(cfg, records, kept),
    }
    assert report["in"] == report["kept"] + sum(reasons.values()), "every input record is kept or has a reason"
    return report


def markdown(report: dict) -> str:
    before, after = report["before"], report["after"]
    lines = ["# Data quality report", "",
             f"{report['in']} instruction records in, **{report['kept']} kept**, {report['rejected']} rejected "
             f"(judge: {report['judge']['mode']}, threshold {report['judge']['threshold']}, "
             f"{report['judge']['votes']} vote(s); {report['seconds']} s).", ""]
    if report.get("preprocess"):
        pre = report["preprocess"]
        lines += [f"Preprocessing: {pre['in']} generated pairs -> {pre['out']} records "
                  f"(dropped {pre['dropped'] or 'none'}; {pre['relabelled_as_unanswerable']} refusals relabelled).", ""]
    lines += ["## Counts per stage", "", "| Stage | In | Out | Rejected |", "|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['in']} | {s['out']} | {s['in'] - s['out']} |" for s in report["stages"]]
    lines += ["", "## Rejections per reason", "", "| Reason | Count |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in report["rejected_by_reason"].items()] or ["| (none) | 0 |"]
    lines += ["", "## Answerable / unanswerable", "", "| | Before | After |", "|---|---|---|",
              f"| answerable | {before['answerable']} | {after['answerable']} |",
              f"| unanswerable | {before['unanswerable']} | {after['unanswerable']} |",
              f"| unanswerable share | {before['unanswerable_share']:.1%} | {after['unanswerable_share']:.1%} |",
              "", "## Per type", "", "| Type | Before | After |", "|---|---|---|"]
    types = sorted(set(before["by_type"]) | set(after["by_type"]))
    lines += [f"| {t} | {before['by_type'].get(t, 0)} | {after['by_type'].get(t, 0)} |" for t in types]
    cover = report.get("coverage")
    if cover:
        lines += ["", "## Coverage of the fact inventory", "",
                  f"{cover['facts_covered']} of {cover['facts']} facts ({cover['facts_covered_share']:.0%}) have at least "
                  f"{cover['questions_per_fact']} kept questions.", ""]
        lines += [f"- {f['kept']} kept: {f['text'][:100]} ({f['reason']})" for f in cover["uncovered_facts"][:40]]
        if len(cover["uncovered_facts"]) > 40:
            lines.append(f"- ... {len(cover['uncovered_facts']) - 40} more in quality_report.json")
    lines += ["", "## Examples of rejected records", ""]
    for name, items in report["examples"].items():
        lines += [f"### {name}", ""]
        for item in items:
            lines += [f"- Q: {item['question']!s}", f"  A: {item['answer']!s}", f"  Why: {item['reason']}"]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(cfg: QualityConfig) -> None:
    config.show(cfg)
    started = time.perf_counter()
    records = io.read_records(cfg.data_path(cfg.input), "instruction records")
    if not records:
        raise config.UserError(f"{cfg.data_path(cfg.input)}: no instruction records to check (did preprocessing keep none?)")

    # 1. Malformed records and heuristics: no model needed.
    rules = cfg.rules()
    candidates, rejected = [], []
    for record in records:
        reason = malformed(record) or heuristics.check(record, rules)
        if reason:
            rejected.append({**record, "reason": reason})
        else:
            candidates.append({**record, "quality": {"heuristics": "pass", "judge": None}})
    stages = [{"stage": "heuristics", "in": len(records), "out": len(candidates)}]
    print(f"heuristics: {len(candidates)} of {len(records)} pass", flush=True)

    # 2. The LLM judge on what the heuristics kept.
    verdicts: dict[str, dict] = {}
    judge_mode = "off"
    if cfg.judge_mode != "off" and candidates:
        # Two server slots per request in flight: each request alternates a prompt with the excerpt and
        # one without, and llama-server keeps a slot's prompt cache only until another prompt lands there.
        with llm.connect(dataclasses.replace(cfg, concurrency=2 * cfg.concurrency)) as endpoint:
            judge_mode = judge.resolve_mode(endpoint, cfg.judge_mode)
            verdicts = judge.judge(endpoint, candidates, cfg.data_path(cfg.judge_cache), judge_mode, cfg.judge_votes,
                                   cfg.judge_threshold, cfg.concurrency, progress=cfg.progress)
        judged = []
        for record in candidates:
            verdict = verdicts[record["id"]]
            record["quality"]["judge"] = verdict
            if verdict["passed"]:
                judged.append(record)
            else:
                rejected.append({**record, "reason": verdict["reason"] if verdict["reason"].startswith("judge")
                                 else f"judge: {verdict['reason']}"})
        stages.append({"stage": f"judge ({judge_mode})", "in": len(candidates), "out": len(judged)})
        candidates = judged

    # 3. Keep the input's share of refusals: too many teach refusing, too few teach guessing.
    kept = candidates
    if cfg.balance:
        kept, surplus = balance(candidates, unanswerable_share(records), cfg.balance_tolerance)
        rejected += surplus
        stages.append({"stage": "balance", "in": len(candidates), "out": len(kept)})

    if not kept:  # an earlier run's kept records and reports stay as they were
        reasons = Counter(heuristics.rule_name(r["reason"]) for r in rejected).most_common(3)
        raise config.UserError(f"no record passed the quality gate ({len(records)} in; rejected "
                               + ", ".join(f"{name} {count}" for name, count in reasons)
                               + f"): nothing written to {cfg.data_path(cfg.output)}")
    for record in rejected:
        record.pop("quality", None)
    report = quality_report(cfg, records, kept, rejected, stages, verdicts, judge_mode, time.perf_counter() - started)
    text = markdown(report)  # before anything is written, so the two reports never disagree
    # The data first, then the report and the config that describe it (as generation does): a kill or a failed write
    # in between never leaves a report of records that were not written ("1124 kept" beside an earlier run's 1476).
    io.write_json_atomic(cfg.data_path(cfg.output), kept)
    io.write_jsonl_atomic(cfg.data_path(cfg.output).with_suffix(".messages.jsonl"),
                          # a with_context record's excerpt goes with its question: the export is for other trainers
                          ({"messages": chat.messages(chat.with_excerpt(r["instruction"], r.get("input") or ""),
                                                      r["output"])} for r in kept))
    io.write_json_atomic(cfg.data_path("quality_report.json"), report)
    io.write_text_atomic(cfg.data_path("quality_report.md"), text)
    config.save(cfg, cfg.data_path("dataquality_config.json"))
    print(f"{report['in']} records -> {report['kept']} kept; rejected {report['rejected_by_reason'] or 'none'}; "
          f"unanswerable share {report['before']['unanswerable_share']:.1%} -> {report['after']['unanswerable_share']:.1%} "
          f"-> {cfg.data_path(cfg.output)}", flush=True)


if __name__ == "__main__":
    config.run(main, QualityConfig)
