"""Loss-bearing policy text for training, beside the Q/A pairs: knowledge augmentation in one mixed run.

Questions alone teach a closed-book model to answer from facts it has stored; storing them needs
the statements themselves, seen in more than one form, in the same run as the questions
(Allen-Zhu & Li 3.1; Jiang et al. 2024: documents and Q/A mixed beat documents first). Each
section is restated under its heading path ("What does the policy say about 5. Parental Leave >
5.3 Paternity and Partner Leave?" -> its statements), and each fact can be asked for by the words
that open it ("Complete the policy statement under <topic>: <opening words>" -> the fact).
"""
from __future__ import annotations

from policytune import io

SECTION_PROMPT = "What does the policy say about {section}?"
FACT_PROMPT = "Under {topic}, the policy says: {opening} ..."
OPENING_WORDS = 4


def _record(question: str, answer: str, kind: str, section: str) -> dict:
    return {"id": io.content_hash(kind, question, answer), "instruction": question, "input": "", "output": answer,
            "answerable": True, "type": kind, "section": section, "augmentation": True}


def section_records(facts: list[dict], max_words: int = 180) -> list[dict]:
    """One record per section (split into parts of at most max_words): the heading path asks, the statements answer."""
    by_section: dict[str, list[str]] = {}
    for fact in facts:
        by_section.setdefault(fact["section"] or fact.get("topic") or "the policy", []).append(fact["text"])
    records = []
    for section, statements in by_section.items():
        parts, current = [], []
        for statement in statements:
            if current and sum(len(s.split()) for s in current) + len(statement.split()) > max_words:
                parts.append(current)
                current = []
            current.append(statement)
        parts.append(current)
        for number, part in enumerate(parts, 1):
            label = section if len(parts) == 1 else f"{section} (part {number} of {len(parts)})"
            records.append(_record(SECTION_PROMPT.format(section=label), " ".join(part), "restatement", section))
    return records


def fact_records(facts: list[dict]) -> list[dict]:
    """One record per fact with enough words to open it: its topic and first words ask, the whole fact answers."""
    records = []
    for fact in facts:
        words = fact["text"].split()
        if len(words) <= OPENING_WORDS + 2:
            continue
        question = FACT_PROMPT.format(topic=fact.get("topic") or "the policy", opening=" ".join(words[:OPENING_WORDS]))
        records.append(_record(question, fact["text"], "statement", fact["section"]))
    return records


def knowledge_records(facts: list[dict], section_restatements: int, fact_statements: int) -> list[dict]:
    """The augmentation records of one run: each section `section_restatements` times, each fact `fact_statements` times.

    Repeats are identical records: the trainer shuffles everything together, so they land at
    different points of the run like epochs of the text."""
    once_sections, once_facts = section_records(facts), fact_records(facts)
    records = []
    for repeat in range(max(section_restatements, fact_statements)):
        if repeat < section_restatements:
            records += [{**r, "id": f"{r['id']}-{repeat}"} for r in once_sections]
        if repeat < fact_statements:
            records += [{**r, "id": f"{r['id']}-{repeat}"} for r in once_facts]
    return records
