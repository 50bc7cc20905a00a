"""One more phrasing of a fact's question, in the words employees use instead of the policy's.

Employees do not ask in the policy's vocabulary: they say "a year" for "per calendar year", "my manager" for "the
line manager", "EAP" for "the Employee Assistance Programme". A question trained only in the policy's words is
recalled only from those words. The everyday words come from `generated_prompt.EMPLOYEE_WORDS` (users edit it
for their domain); abbreviations come from the document itself ("Employee Assistance Programme (EAP)").
"""
from __future__ import annotations

import re
import zlib

from policytune.phrasing import lower_first
from policytune.questions import OPENING

_ABBREVIATION = re.compile(r"((?:[A-Z][\w'-]*\s+){1,8})\(([A-Z]{2,6})\)")
_CONDITION = re.compile(r"^(?P<ask>\w+(?: [^?]*?)?\w),? if (?P<who>I|my) (?P<rest>[^?,;]+)\?$")
_PARTICIPLE = re.compile(r"^(?:been|had|taken|done|given|made|left|\w+ed)\b")
_CONTRACTIONS = [(r"^What is\b", "What's"), (r"^Who is\b", "Who's"), (r"^How much is\b", "How much's"),
                 (r"\bI am\b", "I'm"), (r"\bdo not\b", "don't"), (r"\bcannot\b", "can't")]


def abbreviations(facts: list[dict]) -> dict[str, str]:
    """{"Employee Assistance Programme": "EAP"} for every name the document abbreviates in brackets, where the
    capitals of the words before the brackets spell the abbreviation."""
    found: dict[str, str] = {}
    for fact in facts:
        for match in _ABBREVIATION.finditer(fact["text"]):
            words, short = match.group(1).split(), match.group(2)
            name = words[-len(short):]
            if len(name) == len(short) and "".join(w[0] for w in name) == short:
                found[" ".join(name)] = short
    return found


def usable(everyday: dict[str, list[str]], facts: list[dict]) -> dict[str, list[str]]:
    """The everyday phrasings this document can take: one that a heading of the document uses ("holiday" where a
    section is "Recognised Public Holidays", "time off" where one is "Time Off in Lieu") names another part of this
    policy, and would ask about that part instead."""
    headings = {heading.lower() for fact in facts for heading in fact.get("headings", [])}
    return {pattern: [c for c in choices if not any(re.search(rf"\b{re.escape(c.lower())}s?\b", h) for h in headings)]
            for pattern, choices in everyday.items()}


def reword(question: str, everyday: dict[str, list[str]], short_names: dict[str, str] | None = None) -> str | None:
    """The question in everyday words: each policy phrase of `everyday` (as `usable` leaves it) that it holds replaced
    by one of its everyday phrasings (picked by the question's hash, so reruns write the same), the document's
    abbreviations used, and the opening contracted. None when nothing else changed: that is the same question."""
    out = question
    for name, short in (short_names or {}).items():
        out = re.sub(rf"\b{re.escape(name)}\b", short, out, flags=re.I)
    pick = zlib.crc32(question.encode())
    for pattern, choices in everyday.items():
        if choices:
            choice = choices[pick % len(choices)]
            out = re.sub(pattern, lambda m: _same_case(m.group(0), choice, m.start()), out, count=1, flags=re.I)
    if out == question:
        return None
    for pattern, short in _CONTRACTIONS:
        out = re.sub(pattern, short, out)
    return out[0].upper() + out[1:]


def _same_case(original: str, replacement: str, at: int) -> str:
    if at and any(w[0].isupper() for w in original.split() if w != "I"):
        return original  # inside a name: "Form MED-1 Medical Certificate" keeps its words
    return replacement[0].upper() + replacement[1:] if original[:1].isupper() else replacement


def situation_first(question: str) -> str | None:
    """The question with its trailing condition said first, as employees open with their situation: "Am I covered,
    if I am still within my probationary period?" -> "I'm still within my probationary period. Am I covered?";
    "What happens to parental leave if I resign?" -> "If I resign, what happens to parental leave?". None when the
    question ends in no "if I ..." or "if my ..." condition. The words are the same, so no near-copy check tells the
    two apart: a plan asks one or the other, never both."""
    opening = OPENING.match(question)
    head = opening.group(0) if opening else ""
    found = _CONDITION.match(question[len(head):])
    if not found or len(found["ask"].split()) < 2:
        return None
    ask, rest = found["ask"], found["rest"].strip()
    if found["who"] == "I" and rest.startswith("am "):
        return f"I'm {rest[3:]}. {head}{ask}?"
    if found["who"] == "I" and rest.startswith("have "):
        have = "I've" if _PARTICIPLE.match(rest[5:]) else "I have"
        return f"{have} {rest[5:]}. {head}{ask}?"
    condition = f"{'if' if head else 'If'} {found['who']} {rest}"
    return f"{head}{condition}, {lower_first(ask)}?"
