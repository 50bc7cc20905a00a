"""Synthetic instruction pairs from policy chunks: plan, ask the teacher, validate, cache, summarise.

Each chunk gets `pairs_per_chunk` slots. A slot is answerable (a key sentence of the chunk holds the
answer, and its type says what to ask for) or unanswerable (an aspect the chunk never mentions);
the split follows the requested ratio exactly across the chunk list. One request per slot asks for
a single question; unanswerable answers are always `chat.REFUSAL`, written here, never by the model.

Finished chunks are appended to a JSONL cache keyed by chunk id + prompt hash + model + slot plan +
sampling, so a rerun after a crash asks only for the missing chunks and gives the same final file.
"""
from __future__ import annotations

import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from policytune import chat, io, llm

TYPES = ("numeric", "entity", "procedure", "eligibility")
MIN_SENTENCE_WORDS = 5
# Bumped when the code that turns replies into records changes, so cached chunks are redone.
RECORD_LOGIC_VERSION = 2

_TYPE_CUES = {
    "numeric": re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|twelve|twice|double|half)\b", re.I),
    "entity": re.compile(r"\bForm [A-Z0-9-]+|\b[A-Z][a-z]+[A-Z][A-Za-z]+\b|\b(Administrator|Director|Manager|Officer|"
                         r"People Operations|committee|team)\b"),
    "procedure": re.compile(r"\b(must|submit|request|apply|upload|notify|through|record|approv\w*|send|contact)\b", re.I),
    "eligibility": re.compile(r"\b(eligible|eligibility|qualif\w*|entitled|only if|employees who|at least|after \w+ "
                              r"(months|years)|service|probation)\b", re.I),
}


def prompts() -> dict[str, Any]:
    """The generation prompt constants (read from generated_prompt.py, which users edit)."""
    import importlib.util

    # generated_prompt.py sits at the project root beside the stage scripts, not inside the package.
    path = Path(__file__).resolve().parent.parent / "generated_prompt.py"
    spec = importlib.util.spec_from_file_location("generated_prompt", path)
    gp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gp)
    return {"system": gp.GENERATION_SYSTEM_PROMPT, "answerable": gp.ANSWERABLE_PROMPT,
            "question_only": gp.QUESTION_ONLY_PROMPT,
            "unanswerable": gp.UNANSWERABLE_PROMPT, "type_hints": gp.TYPE_HINTS, "aspects": gp.UNANSWERABLE_ASPECTS}


def prompt_sha(prompt_set: dict[str, Any] | None = None) -> str:
    """Hash of the generation prompt constants, stored on every record."""
    return io.content_hash(prompt_set or prompts())


def answerable_schema(max_chars: int = 150) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["question", "answer"],
            "properties": {"question": {"type": "string", "minLength": 8, "maxLength": max_chars},
                           "answer": {"type": "string", "minLength": 1, "maxLength": max_chars}}}


def question_schema(max_chars: int = 150) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["question"],
            "properties": {"question": {"type": "string", "minLength": 8, "maxLength": max_chars}}}


_CAPTION = re.compile(r"(Table|Figure|Chart)\s+[\dA-Z]+[.:]", re.I)


def sentences(text: str) -> list[str]:
    """Sentences and list items of a chunk long enough to hold an answer."""
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z(])|\n+", text)
    cleaned = [re.sub(r"^[\s\-*•|]+", "", p).strip() for p in parts]
    # A caption or a header row names a table's parts; neither states anything an employee could ask about.
    return [s for s in cleaned if len(s.split()) >= MIN_SENTENCE_WORDS and not _CAPTION.match(s)
            and not ("|" in s and not re.search(r"\d", s))]


def topic(chunk: dict) -> str:
    """The section a chunk belongs to, in words (numbering stripped): what questions are about."""
    names = [re.sub(r"^[\d.]+\s*", "", h).strip() for h in chunk.get("headings") or []]
    names = [n for n in names if n]
    return " - ".join(names[-2:]) if names else chunk.get("doc", "the policy")


def _types_of(sentence: str) -> list[str]:
    return [t for t in TYPES if _TYPE_CUES[t].search(sentence)]


def plan(chunks: list[dict], pairs_per_chunk: int, unanswerable_ratio: float, aspects: dict[str, list[str]],
         questions_per_fact: int = 1) -> dict[str, list[dict]]:
    """Decide every slot of every chunk: answerable (type + key sentence) or unanswerable (aspect).

    With questions_per_fact > 1 a key sentence is asked about that many times (another slot, seed
    and, where the sentence allows, another question type) before the next sentence is taken: a
    closed-book model learns a fact from several phrasings, and a held-out phrasing then measures
    whether it learned the fact rather than the wording.

    A rounding accumulator over all slots in chunk order hits the ratio exactly; a slot meant to be
    unanswerable whose chunk mentions every aspect, or answerable in a chunk with no usable
    sentence, switches kind (the summary reports the achieved ratio).
    """
    slots_by_chunk: dict[str, list[dict]] = {}
    position = 0
    for chunk in chunks:
        text = chunk.get("text") or ""
        lowered = text.lower()
        silent = [a for a, cues in aspects.items() if not any(cue.lower() in lowered for cue in cues)]
        candidates = sentences(text)
        asked: Counter[str] = Counter()  # key sentence -> questions planned about it
        offset = int(io.content_hash(chunk["id"], length=8), 16)
        slots = []
        answerable_index = unanswerable_index = 0
        for index in range(pairs_per_chunk):
            unanswerable = math.floor((position + 1) * unanswerable_ratio) > math.floor(position * unanswerable_ratio)
            position += 1
            if not candidates and silent:
                unanswerable = True
            elif not silent and candidates:
                unanswerable = False
            elif not candidates and not silent:
                continue
            if unanswerable:
                aspect = silent[(offset + unanswerable_index) % len(silent)]
                unanswerable_index += 1
                slots.append({"slot": index, "type": "unanswerable", "aspect": aspect})
                continue
            wanted = TYPES[(offset + answerable_index) % len(TYPES)]
            answerable_index += 1
            previous = next((s for s in reversed(slots) if s["type"] != "unanswerable"), None)
            if previous and asked[previous["sentence"]] < questions_per_fact:
                sentence = previous["sentence"]
                other = [t for t in _types_of(sentence) if t != previous["type"]]
                asked[sentence] += 1
                slots.append({"slot": index, "type": other[0] if other else previous["type"], "sentence": sentence})
                continue
            fresh = [s for s in candidates if s not in asked] or candidates
            matching = [s for s in fresh if wanted in _types_of(s)]
            if matching:
                sentence, kind = matching[0], wanted
            else:
                sentence = fresh[0]
                kind = (_types_of(sentence) or ["procedure"])[0]
            asked[sentence] += 1
            slots.append({"slot": index, "type": kind, "sentence": sentence})
        slots_by_chunk[chunk["id"]] = slots
    return slots_by_chunk


def messages_for(chunk: dict, slot: dict, prompt_set: dict[str, Any], teacher_answers: bool = True) -> list[dict]:
    """The chat messages of one slot's request."""
    if slot["type"] == "unanswerable":
        user = prompt_set["unanswerable"].format(excerpt=chunk["text"], topic=topic(chunk), aspect=slot["aspect"])
    else:
        template = prompt_set["answerable"] if teacher_answers else prompt_set["question_only"]
        user = template.format(sentence=slot["sentence"], topic=topic(chunk),
                               type_hint=prompt_set["type_hints"][slot["type"]])
    return [{"role": "system", "content": prompt_set["system"]}, {"role": "user", "content": user}]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


QUESTION_WORDS = {"what", "how", "who", "when", "where", "which", "why", "can", "could", "do", "does", "did", "is",
                  "are", "will", "may", "should", "must", "if", "am", "would", "whom", "whose"}
STOPWORDS = {"what", "which", "when", "where", "does", "will", "with", "that", "this", "there", "their", "have", "from",
             "about", "policy", "employee", "employees", "should", "would", "could", "they", "them", "into", "your"}


def clean_question(text: str) -> str | None:
    """The first question in the model's text, or None when there is none."""
    text = " ".join(text.split()).strip(" \"'")
    if "?" in text:
        question = text[: text.index("?") + 1].strip(" \"'")
    elif _words(text)[:1] and _words(text)[0] in QUESTION_WORDS:
        # A small teacher often drops the question mark; a question word at the start is enough.
        question = re.split(r"(?<=[.!])\s", text)[0].rstrip(".! ") + "?"
    else:
        return None
    if len(_words(question)) < 3 or re.search(r"\b(excerpt|key sentence)\b", question, re.I):
        return None
    return question


def content_words(text: str) -> set[str]:
    return {w for w in _words(text) if len(w) >= 4 and w not in STOPWORDS} | set(re.findall(r"\d+", text))


def on_topic(question: str, reference: str) -> bool:
    """A question shares at least one content word (or number) with the text it should be about."""
    return bool(content_words(question) & content_words(reference))


def check_answer(answer: str, sentence: str, min_overlap: float = 0.6) -> str | None:
    """None when the answer is grounded in the key sentence, else why not."""
    words = _words(answer)
    if not words:
        return "empty answer"
    if chat.is_refusal(answer):
        return "answerable slot answered with the refusal"
    present = set(_words(sentence))
    overlap = sum(w in present for w in words) / len(words)
    if overlap < min_overlap:
        return f"answer not grounded in the excerpt ({overlap:.0%} of its words)"
    return None


def generate_chunk(endpoint: llm.Endpoint, chunk: dict, slots: list[dict], prompt_set: dict[str, Any], sha: str,
                   temperature: float, max_tokens: int, teacher_answers: bool = True) -> dict:
    """All slots of one chunk: {records, failures}. Bad responses become failures, never exceptions.

    Without teacher answers, an answerable slot's answer is its key sentence, verbatim."""
    records, failures, seen = [], [], set()
    for slot in slots:
        seed = endpoint.options.seed + 1000 * slot["slot"]
        unanswerable = slot["type"] == "unanswerable"
        asks_answer = teacher_answers and not unanswerable
        schema = answerable_schema() if asks_answer else question_schema()
        where = {"chunk_id": chunk["id"], "slot": slot["slot"], "type": slot["type"]}
        try:
            parsed, _ = llm.chat_json(endpoint, messages_for(chunk, slot, prompt_set, teacher_answers), schema,
                                      name="qa_pair", max_tokens=max_tokens, temperature=temperature, seed=seed)
        except llm.LLMError as exc:
            failures.append({**where, "reason": f"llm: {exc}"})
            continue
        question = clean_question(parsed["question"])
        if question is None:
            failures.append({**where, "reason": "no usable question"})
            continue
        reference = f"{topic(chunk)} {chunk['text']}" if unanswerable else slot["sentence"]
        if not on_topic(question, reference):
            failures.append({**where, "reason": "question off topic", "question": question})
            continue
        if unanswerable:
            answer, answer_source = chat.REFUSAL, "refusal"
        elif not asks_answer:
            answer, answer_source = slot["sentence"], "evidence"
        else:
            answer, answer_source = " ".join(parsed["answer"].split()), "model"
            if check_answer(answer, slot["sentence"]):
                # The key sentence is what the policy states: a faithful answer when the teacher's is not.
                answer, answer_source = slot["sentence"], "evidence"
        problem = None
        if question.lower() in seen:
            problem = "duplicate question"
        if problem:
            failures.append({**where, "reason": problem, "question": question})
            continue
        seen.add(question.lower())
        records.append({
            "id": io.content_hash(chunk["id"], question, answer),
            "chunk_id": chunk["id"], "doc": chunk.get("doc"), "pages": chunk.get("pages", []),
            "headings": chunk.get("headings", []), "question": question, "answer": answer,
            "answerable": not unanswerable, "type": slot["type"],
            "evidence": slot.get("sentence", ""), "answer_source": answer_source,
            "model": endpoint.model, "prompt_sha": sha,
            "sampling": {"temperature": temperature, "seed": seed, "max_tokens": max_tokens},
        })
    return {"records": records, "failures": failures}


def cache_key(chunk_id: str, sha: str, model: str, slots: list[dict], temperature: float, max_tokens: int, seed: int,
              teacher_answers: bool = True) -> str:
    """What a chunk's cached result depends on: a change in any of these regenerates it."""
    return io.content_hash(chunk_id, sha, model, slots, temperature, max_tokens, seed, teacher_answers,
                           RECORD_LOGIC_VERSION)


def generate_pairs(endpoint: llm.Endpoint, chunks: list[dict], cache_path: str | Path, *, pairs_per_chunk: int = 3,
                   unanswerable_ratio: float = 0.3, temperature: float = 0.7, max_tokens: int = 200,
                   concurrency: int = 4, progress: bool = True, teacher_answers: bool = True,
                   questions_per_fact: int = 1) -> tuple[list[dict], dict]:
    """Generate (or resume) pairs for all chunks; returns (records in chunk order, summary)."""
    from tqdm import tqdm

    started = time.perf_counter()
    prompt_set = prompts()
    sha = prompt_sha(prompt_set)
    slots_by_chunk = plan(chunks, pairs_per_chunk, unanswerable_ratio, prompt_set["aspects"], questions_per_fact)
    keys = {c["id"]: cache_key(c["id"], sha, endpoint.model, slots_by_chunk[c["id"]], temperature, max_tokens,
                               endpoint.options.seed, teacher_answers) for c in chunks}
    cache = io.JsonlLog(cache_path)
    done = {entry["key"]: entry for entry in cache.records() if entry.get("key") in keys.values()}
    pending = [c for c in chunks if keys[c["id"]] not in done]
    from_cache = len(chunks) - len(pending)
    if from_cache:
        print(f"resuming: {from_cache} of {len(chunks)} chunks already in {cache_path}", flush=True)

    bar = tqdm(total=len(pending), unit="chunk", disable=not progress, dynamic_ncols=True)
    new_pairs = 0

    def work(chunk: dict) -> dict:
        return generate_chunk(endpoint, chunk, slots_by_chunk[chunk["id"]], prompt_set, sha, temperature, max_tokens,
                              teacher_answers)

    def finished(chunk: dict, result: dict | None, error: Exception | None) -> None:
        nonlocal new_pairs
        if error is not None:  # a bug or an unexpected reply: log the chunk and go on
            result = {"records": [], "failures": [{"chunk_id": chunk["id"], "reason": f"error: {error!r}"[:300]}]}
        entry = {"key": keys[chunk["id"]], "chunk_id": chunk["id"], **result}
        cache.append(entry)
        done[entry["key"]] = entry
        for failure in result["failures"]:
            tqdm.write(f"skipped chunk {failure['chunk_id']} slot {failure.get('slot', '-')}: {failure['reason']}")
        new_pairs += len(result["records"])
        bar.update(1)
        bar.set_postfix_str(f"{new_pairs / max(time.perf_counter() - started, 1e-9):.2f} pairs/s")

    try:
        llm.run_concurrently(work, pending, concurrency, finished)
    finally:
        bar.close()
        cache.close()

    records = [r for c in chunks for r in done[keys[c["id"]]]["records"]]
    failures = [f for c in chunks for f in done[keys[c["id"]]]["failures"]]
    records, dropped = rebalance(records, unanswerable_ratio)
    seconds = time.perf_counter() - started
    summary = summarise(records, failures, chunks, requested_ratio=unanswerable_ratio)
    summary["dropped"] = dropped
    summary.update({"chunks_from_cache": from_cache, "chunks_generated": len(pending), "new_pairs": new_pairs,
                    "seconds": round(seconds, 1), "pairs_per_second": round(new_pairs / max(seconds, 1e-9), 3),
                    "model": endpoint.model, "prompt_sha": sha, "pairs_per_chunk": pairs_per_chunk,
                    "teacher_answers": teacher_answers, "questions_per_fact": questions_per_fact,
                    "sampling": {"temperature": temperature, "seed": endpoint.options.seed, "max_tokens": max_tokens}})
    return records, summary


def rebalance(records: list[dict], unanswerable_ratio: float) -> tuple[list[dict], list[dict]]:
    """Drop unanswerable pairs beyond the requested share; returns (kept, dropped with reasons).

    A small teacher fails answerable slots more often (off-topic questions), which would tilt the
    data towards refusals. The surplus is chosen by record id (a content hash), so it is spread over
    the document and the same on every rerun.
    """
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    if unanswerable_ratio >= 1.0 or not unanswerable:
        return records, []
    allowed = round(len(answerable) * unanswerable_ratio / (1.0 - unanswerable_ratio))
    if len(unanswerable) <= allowed:
        return records, []
    surplus = {r["id"] for r in sorted(unanswerable, key=lambda r: r["id"])[allowed:]}
    kept = [r for r in records if r["id"] not in surplus]
    dropped = [{"id": r["id"], "chunk_id": r["chunk_id"], "question": r["question"],
                "reason": f"rebalanced: unanswerable share above --unanswerable-ratio {unanswerable_ratio:g}"}
               for r in records if r["id"] in surplus]
    return kept, dropped


def summarise(records: list[dict], failures: list[dict], chunks: list[dict], requested_ratio: float) -> dict:
    """Counts for the end-of-stage summary: split, per type, failures by reason."""
    unanswerable = sum(not r["answerable"] for r in records)
    reasons = Counter(re.sub(r"\d+", "N", f["reason"].split(" (")[0])[:80] for f in failures)
    return {
        "chunks": len(chunks), "chunks_with_pairs": len({r["chunk_id"] for r in records}),
        "pairs": len(records), "answerable": len(records) - unanswerable, "unanswerable": unanswerable,
        "unanswerable_ratio": round(unanswerable / len(records), 3) if records else 0.0,
        "requested_unanswerable_ratio": requested_ratio,
        "per_type": dict(Counter(r["type"] for r in records).most_common()),
        "answer_source": dict(Counter(r.get("answer_source", "model") for r in records).most_common()),
        "failures": len(failures), "failure_reasons": dict(reasons.most_common()),
        "failed": failures,
    }


def format_summary(summary: dict) -> str:
    """A few human-readable lines of the summary."""
    lines = [
        f"chunks: {summary['chunks']} ({summary['chunks_from_cache']} from cache), pairs: {summary['pairs']} "
        f"({summary['pairs'] / max(summary['chunks'], 1):.2f} per chunk), {summary['pairs_per_second']} pairs/s",
        f"answerable: {summary['answerable']}, unanswerable: {summary['unanswerable']} "
        f"(ratio {summary['unanswerable_ratio']:.2f}, requested {summary['requested_unanswerable_ratio']:.2f})",
        "per type: " + ", ".join(f"{k} {v}" for k, v in summary["per_type"].items()),
        "answers from: " + ", ".join(f"{k} {v}" for k, v in summary["answer_source"].items()),
        f"dropped to keep the ratio: {len(summary.get('dropped', []))}",
        f"failures: {summary['failures']}" + ("" if not summary["failure_reasons"] else " (" + ", ".join(
            f"{k}: {v}" for k, v in summary["failure_reasons"].items()) + ")"),
    ]
    return "\n".join(lines)
