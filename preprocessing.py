"""Stage 2: flatten generated Q/A pairs into clean instruction records.

    uv run python preprocessing.py                                   # data/syntheticdata.json -> data/instructions.json
    uv run python preprocessing.py --data-dir /tmp/run --near-duplicate-threshold 0.9

Each record: the question as `instruction`, the answer as `output` (`input` empty: closed book, the
model learns the policy instead of reading it), the chunk's `context_text` as `context` for the
quality gate, and the provenance (chunk, document, pages, headings, model, prompt hash).
Text is NFKC-normalised, labels ("Q:", "Answer:"), wrapping quotes and trailing chatter are
stripped, every refusal wording becomes exactly the one refusal string, and exact and
near-duplicate questions are removed. Every dropped record is counted with its reason in
data/preprocessing_report.json.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from policytune import chat, config, io, normalize

TYPES = ("numeric", "entity", "procedure", "eligibility", "unanswerable")


@dataclass
class PreprocessConfig(config.Base):
    input: str = field(default="syntheticdata.json", metadata={"help": "generated pairs (under --data-dir unless absolute)"})
    chunks: str = field(default="chunks.json", metadata={"help": "chunks the pairs were generated from (for each pair's context)"})
    output: str = field(default="instructions.json", metadata={"help": "instruction records written here"})
    input_format: str = field(default="closed_book", metadata={
        "help": "closed_book: `input` empty (the model learns the policy); with_context: `input` holds the chunk",
        "choices": ("closed_book", "with_context")})
    near_duplicate_threshold: float = field(default=0.8, metadata={
        "help": "token Jaccard at or above which two questions are duplicates (1.0: exact duplicates only)"})

    def __post_init__(self) -> None:
        if not 0.0 < self.near_duplicate_threshold <= 1.0:
            raise config.UserError("--near-duplicate-threshold must be in (0, 1]")


def flatten(pair: dict, contexts: dict[str, str], input_format: str) -> tuple[dict | None, str | None, bool]:
    """One generated pair -> (instruction record, None, relabelled) or (None, drop reason, False)."""
    question, answer = pair.get("question"), pair.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        return None, "malformed: question or answer missing or not text", False
    if not isinstance(pair.get("id"), str) or not pair["id"]:
        return None, "malformed: no id", False
    if pair.get("chunk_id") not in contexts:
        return None, f"malformed: chunk {pair.get('chunk_id')!r} not in chunks.json", False
    question = normalize.clean_question(question)
    # The policy's own sentence is never a refusal, even when it says "... are not covered": relabelling
    # it would teach the model to refuse a stated fact. Only a teacher's wording is canonicalised.
    answer = normalize.clean_answer(answer) if pair.get("answer_source") == "evidence" else normalize.canonical_answer(answer)
    if not question:
        return None, "empty question", False
    if not answer:
        return None, "empty answer", False
    said_answerable = pair.get("answerable", True) is not False and pair.get("type") != "unanswerable"
    refused = answer == chat.REFUSAL
    if not said_answerable and not refused:
        # Asked to be unanswerable, but the teacher answered it: neither label can be trusted.
        return None, "malformed: marked unanswerable but the answer is not a refusal", False
    relabelled = said_answerable and refused
    kind = pair.get("type") if pair.get("type") in TYPES else "procedure"
    context = contexts[pair["chunk_id"]]
    record = {
        "id": pair["id"],
        "instruction": question,
        "input": context if input_format == "with_context" else "",
        "output": answer,
        "answerable": not refused,
        "type": "unanswerable" if refused else (kind if kind != "unanswerable" else "procedure"),
        "chunk_id": pair["chunk_id"],
        "doc": pair.get("doc", ""),
        "pages": pair.get("pages", []),
        "headings": pair.get("headings", []),
        "context": context,
        "model": pair.get("model", ""),
        "prompt_sha": pair.get("prompt_sha", ""),
    }
    # Which fact a question asks about (and how it was worded) travels on, for the split and coverage counts.
    record.update({k: pair[k] for k in ("fact_id", "section", "style", "answer_source") if k in pair})
    return record, None, relabelled


def main(cfg: PreprocessConfig) -> None:
    config.show(cfg)
    pairs = io.read_records(cfg.data_path(cfg.input), "generated pairs")
    chunks = io.read_records(cfg.data_path(cfg.chunks), "chunks")
    contexts = {c["id"]: c.get("context_text") or c.get("text", "") for c in chunks if "id" in c}

    records, dropped, relabelled = [], [], 0
    for pair in pairs:
        record, reason, was_relabelled = flatten(pair, contexts, cfg.input_format)
        if record is None:
            dropped.append({"id": pair.get("id"), "reason": reason, "question": pair.get("question"),
                            "answer": pair.get("answer")})
            continue
        relabelled += was_relabelled
        records.append(record)

    duplicate_of = normalize.near_duplicates([r["instruction"] for r in records], cfg.near_duplicate_threshold)
    kept = []
    for i, record in enumerate(records):
        if i in duplicate_of:
            original = records[duplicate_of[i]]
            exact = normalize.question_key(original["instruction"]) == normalize.question_key(record["instruction"])
            dropped.append({"id": record["id"], "reason": f"{'duplicate' if exact else 'near_duplicate'}: of {original['id']}",
                            "question": record["instruction"], "answer": record["output"],
                            "kept_question": original["instruction"]})
        else:
            kept.append(record)

    reasons = Counter(d["reason"].split(":", 1)[0] for d in dropped)
    report = {
        "stage": "preprocess",
        "input": str(cfg.data_path(cfg.input)),
        "in": len(pairs),
        "out": len(kept),
        "dropped": dict(sorted(reasons.items())),
        "relabelled_as_unanswerable": relabelled,
        "answerable_out": sum(r["answerable"] for r in kept),
        "unanswerable_out": sum(not r["answerable"] for r in kept),
        "dropped_records": dropped,
    }
    assert report["in"] == report["out"] + sum(reasons.values())
    if not kept:  # an earlier run's records and report stay as they were
        raise config.UserError(f"{cfg.data_path(cfg.input)}: no usable pair among {len(pairs)} "
                               f"(dropped: {dict(reasons) or 'none'}): nothing written to {cfg.data_path(cfg.output)}")
    io.write_json_atomic(cfg.data_path(cfg.output), kept)
    io.write_json_atomic(cfg.data_path("preprocessing_report.json"), report)
    config.save(cfg, cfg.data_path("preprocessing_config.json"))
    print(f"{len(pairs)} pairs -> {len(kept)} instruction records ({relabelled} refusals relabelled unanswerable; "
          f"dropped: {dict(reasons) or 'none'}) -> {cfg.data_path(cfg.output)}", flush=True)


if __name__ == "__main__":
    config.run(main, PreprocessConfig)
