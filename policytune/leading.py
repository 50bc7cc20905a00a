"""Answers that lead with what was asked: "How much can I claim for an eye test?" -> "$150. Employees may claim ...".

A training answer that restates its policy sentence puts the figure after the sentence's own words, so the model
learns to recall the figure from those words (the cloze the question was cut from) and to open its answer by
copying the question. An employee's question, worded otherwise, brings neither back: the tuned model names the right
section, echoes the question and guesses the figure (BENCHMARKS.md). Led by the value, the first tokens after the
section's name must be recalled from the question alone, in each of the fact's phrasings.
"""
from __future__ import annotations

import re

from policytune import chat
from policytune.questions import OPENING, slots, table_cells

# What each question word asks for, by the kinds `questions.slots` finds: "what ..." alone could ask for anything
# ("What requires my manager's agreement?"), so it leads with nothing unless a table's column names it.
_ASKS = [
    (re.compile(r"\bhow many ([a-z-]+)"), ("quantity",)),
    (re.compile(r"\bhow (?:much|long)\b"), ("money", "percent", "quantity")),
    (re.compile(r"\bwhat (?:percentage|percent|share)\b"), ("percent",)),
    (re.compile(r"^(?:when|by when|what date|what time)\b"), ("date", "time")),
    (re.compile(r"\b(?:which|what) form\b"), ("form",)),
    (re.compile(r"\b(?:which|what) (?:system|tool|platform)\b|^where\b"), ("system",)),
    (re.compile(r"\b(?:which|what) (?:provider|plan|company)\b|\bwho (?:provides|runs|administers)\b"), ("provider",)),
    (re.compile(r"^who(?:m)?\b"), ("role",)),
]
# a restatement's question asks for the whole section or statement, not one of its values
_ABOUT = re.compile(r"\bwhat does the policy say about\b|\bwhat should i know about\b|\bwhat are the rules on\b", re.I)
_POLAR = re.compile(r"^(?:yes|no)\b", re.I)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2}


def asked_value(question: str, answer: str) -> str | None:
    """The figure or name a question asks for, as its answer states it: a table column the question names, else the
    first value of the kind its question word asks for that the question leaves out. None for a yes/no answer, or
    where no such value is found."""
    if chat.is_refusal(answer) or _POLAR.match(answer) or _ABOUT.search(question):
        return None
    asked = OPENING.sub("", question).lower()  # "According to the policy, when ...?" asks when
    cells = table_cells(answer)
    if len(cells) > 1:
        # the column the question names: "What is the waiting period for dental insurance?" -> "3 months"
        question_words = _words(question)
        named = [(len(header_words), value) for header_words, value in ((_words(h), v) for h, v in cells[1:])
                 if header_words and header_words <= question_words and value.lower() not in asked]
        return max(named)[1] if named else None
    for pattern, kinds in _ASKS:
        match = pattern.search(asked)
        if not match:
            continue
        unit = match.group(1).rstrip("s") if match.groups() else ""
        for slot in slots(answer):
            value = slot["value"]
            if slot["kind"] in kinds and value.lower() not in asked and (not unit or unit in value.lower()) \
                    and not (slot["kind"] == "role" and re.search(r"\b(?:manager|boss)\b", asked)):
                return None if answer.lower().startswith(value.lower()) else value
        return None
    return None


def led(question: str, answer: str) -> str:
    """The answer opened with the value its question asks for, where it has one ("$150. Employees may claim ...")."""
    value = asked_value(question, answer)
    return f"{value[0].upper()}{value[1:]}. {answer}" if value else answer
