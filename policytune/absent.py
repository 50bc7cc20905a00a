"""Benefits the policy never mentions: near misses about whole topics, not about details of the ones it has.

The other near misses ask for a missing detail of something the policy covers ("Is volunteer leave taxed?"). An
employee also asks about benefits the policy does not have at all ("Do I get leave to foster a child?"), and the
tuned model answered those with a nearby fact: no training question had asked about a topic the policy lacks. The
inventory of everyday benefits is `generated_prompt.ABSENT_BENEFITS` (users edit it for their domain); an entry is
asked only when none of its cue words occurs anywhere in the document, headings included: a word alone is enough
doubt, because a refusal label on a topic the policy covers teaches refusing what it states.
"""
from __future__ import annotations

import re


def document_text(fact_list: list[dict]) -> str:
    """Every fact's text and headings, lower-cased: where a cue word would show that the policy names the topic."""
    parts = []
    for fact in fact_list:
        parts.append(fact["text"])
        parts += [str(h) for h in fact.get("headings") or []]
    return "\n".join(parts).lower()


def mention(cues: list[str], text: str) -> str | None:
    """The first cue (a regular expression, matched from a word start) that `text` holds."""
    for cue in cues:
        found = re.search(rf"\b(?:{cue})", text)
        if found:
            return found.group(0)
    return None


def applies(fact_list: list[dict], headings: str) -> bool:
    """Whether a heading of the document matches `headings` (generated_prompt.ABSENT_BENEFITS_FOR: a kind of leave)."""
    return any(re.search(headings, str(h), re.I) for fact in fact_list for h in fact.get("headings") or [])


def near_misses(fact_list: list[dict], inventory: dict[str, dict], headings: str = ".") -> tuple[list[dict], list[dict]]:
    """(questions about the inventory's benefits the document never names, {question, aspect, reason} for those it
    may name); where no heading matches `headings`, no question, and every benefit reported with that reason."""
    if not applies(fact_list, headings):
        return [], [{"question": entry["questions"][0], "aspect": f"absent_{name}",
                     "reason": f"no heading matches {headings!r}"} for name, entry in inventory.items()]
    text = document_text(fact_list)
    kept, dropped = [], []
    for name, entry in inventory.items():
        aspect = f"absent_{name}"
        word = mention(entry["cues"], text)
        if word:
            dropped.append({"question": entry["questions"][0], "aspect": aspect,
                            "reason": f"the document names {word!r}"})
            continue
        kept += [{"question": question, "aspect": aspect} for question in entry["questions"]]
    return kept, dropped
