"""The questions a handbook asks itself: each FAQ entry's question, answered by the statements under it.

FAQ pages title their entries with the questions employees ask ("Q. Does Sourcegraph match my 401k?" -> "Not at
this time."). The question grammar (`questions.py`) asks about a statement's own words, and "Not at this time." has
none to ask about; nor does a question about "You access Tilt through Rippling." say that it answers "How do I login
to Tilt?". Trained only as code-written questions and under its heading path, the fact is stored but reached by no
question an employee would ask: on the Sourcegraph handbook, where 145 of 361 facts sit under such headings, the tuned
model refused "Does Sourcegraph match 401k contributions?" and most yes/no questions of that kind (BENCHMARKS.md,
thirty-ninth session). The entry's own question is the one phrasing of the fact that its writer chose for employees.
"""
from __future__ import annotations

import re
from typing import Callable

from policytune import citation, phrasing, questions
from policytune import facts as facts_lib

# "Q:", "Q." and "Q " open an FAQ's question; "(this only applies to US employees)" after it qualifies the answer,
# and no employee asks it
_MARKER = re.compile(r"^\s*q(?:\s?[.:]\s*|\s+)(?=\S)", re.I)
_QUALIFIER = re.compile(r"\s*[(\[][^()\[\]]*[)\]]\s*$")
# Whole statements up to about this many words: a long entry's first statements answer its question; the rest
# (steps, exceptions, links) are trained under the section's restatement
MAX_WORDS = 60
# "Questions?" (a contacts section) or "Pregnant?" ask nothing a statement answers
MIN_WORDS = 4
_ASKING = re.compile(r"(?:what|when|where|who|whom|whose|which|why|how|do|does|did|is|are|am|was|were|can|could|will|"
                     r"would|should|shall|may|must|have|has)\b", re.I)


def question(heading: str) -> str | None:
    """The heading as an employee asks it: without its "Q:" marker or a trailing qualifier in brackets; None when the
    heading is no question ("Paid Parental Leave", "Questions?")."""
    text = _MARKER.sub("", str(heading).strip()).strip()
    while _QUALIFIER.search(text):
        text = _QUALIFIER.sub("", text).strip()
    if not facts_lib.asks(str(heading)) or not text.endswith("?") or len(text.split()) < MIN_WORDS:
        return None
    return text[0].upper() + text[1:]


def entries(fact_list: list[dict]) -> list[dict]:
    """One per section whose innermost heading is a question: {"question", "answer", "fact"} with the entry's first
    statements (whole ones, up to MAX_WORDS) as the answer and its first fact as the one the records point at."""
    by_section: dict[str, tuple[str, list[dict]]] = {}
    for fact in fact_list:
        if fact.get("headings") and (asked := question(fact["headings"][-1])):
            by_section.setdefault(fact["section"], (asked, []))[1].append(fact)
    found = []
    for asked, members in by_section.values():
        answer: list[str] = []
        words = 0
        for fact in members:
            words += len(fact["text"].split())
            if answer and words > MAX_WORDS:
                break
            answer.append(fact["text"])
        found.append({"question": asked, "answer": " ".join(answer), "fact": members[0]})
    return found


def phrasings(entry: dict, wanted: int, distinct: Callable[[str, list[str]], bool]) -> list[str]:
    """The entry's question, then in the openings employees use (`questions.WRAPPERS`, about the section that holds
    the FAQ), up to `wanted` in all; `distinct(question, others)` says whether a new one is no near-copy of the others.
    The opening goes before the sentence that asks ("I just joined recently. According to the policy, am I eligible
    ...?"), and nowhere when that sentence does not open with the asking word ("I'm expecting a new child, is that
    covered ...?")."""
    said, _, asks = entry["question"].rpartition(". ")
    topic = citation.label(entry["fact"].get("headings") or []) or ""
    topic = questions.near_miss_topic([h for h in entry["fact"].get("headings") or [] if not facts_lib.asks(str(h))],
                                      topic) if topic else ""
    out = [entry["question"]]
    for wrapper in questions.WRAPPERS if _ASKING.match(asks) else ():
        if len(out) >= wanted or ("{topic}" in wrapper and not questions.speakable(topic)):
            continue
        question = (said + ". " if said else "") + wrapper.format(q=phrasing.lower_first(asks),
                                                                   topic=questions.topic_phrase(topic))
        if distinct(question, out):
            out.append(question)
    return out
