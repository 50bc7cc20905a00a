"""Loss-bearing policy text for training, beside the Q/A pairs: knowledge augmentation in one mixed run.

Questions alone teach a closed-book model to answer from facts it has stored; storing them needs
the statements themselves, seen in more than one form, in the same run as the questions
(Allen-Zhu & Li 3.1; Jiang et al. 2024: documents and Q/A mixed beat documents first). Each
section is restated under its heading path ("What does the policy say about 5. Parental Leave >
5.3 Paternity and Partner Leave?" -> its statements), and each fact can be asked for by the words
that open it ("Complete the policy statement under <topic>: <opening words>" -> the fact).
Optionally, a section restated more than once lists its statements in another order each time
after the first (Allen-Zhu & Li's extractable knowledge came from restatements with permuted
sentences); on the sample's gold set it made no difference, so it is off by default.
"""
from __future__ import annotations

import random

from policytune import io

SECTION_PROMPT = "What does the policy say about {section}?"
FACT_PROMPT = "Under {topic}, the policy says: {opening} ..."
OPENING_WORDS = 4


def _record(question: str, answer: str, kind: str, section: str) -> dict:
    return {"id": io.content_hash(kind, question, answer), "instruction": question, "input": "", "output": answer,
            "answerable": True, "type": kind, "section": section, "augmentation": True}


def section_records(facts: list[dict], max_words: int = 180, order: int = 0) -> list[dict]:
    """One record per section (split into parts of at most max_words): the heading path asks, the statements answer.

    order 0 keeps the policy's order; another number shuffles each part's statements (the same for the same
    number), so a part's question is answered by the same statements in every order."""
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
            if order:
                part = random.Random(f"{section}|{number}|{order}").sample(part, len(part))
            # an FAQ entry's heading path ends in its question: "... > Q: Does Sourcegraph match my 401k??" reads badly
            name = section.rstrip(" ?")
            label = name if len(parts) == 1 else f"{name} (part {number} of {len(parts)})"
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


def knowledge_records(facts: list[dict], section_restatements: int, fact_statements: int,
                      permute: bool = False) -> list[dict]:
    """The augmentation records of one run: each section `section_restatements` times, each fact `fact_statements` times.

    The trainer shuffles everything together, so repeats land at different points of the run like
    epochs of the text. With `permute`, every section repeat after the first lists its statements in
    another order; without it, repeats are identical."""
    once_sections, once_facts = section_records(facts), fact_records(facts)
    records = []
    for repeat in range(max(section_restatements, fact_statements)):
        if repeat < section_restatements:
            sections = section_records(facts, order=repeat) if permute and repeat else once_sections
            records += [{**r, "id": f"{r['id']}-{repeat}"} for r in sections]
        if repeat < fact_statements:
            records += [{**r, "id": f"{r['id']}-{repeat}"} for r in once_facts]
    return records
