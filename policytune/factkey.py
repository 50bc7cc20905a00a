"""A name for each fact, said between its section's name and the fact: "Employee Assistance Programme > short-term
counselling sessions: It offers up to 6 ...".

After its section's name the tuned model must still pick one of the section's ten or so facts, and asked in an
employee's words it picks none: it writes a sentence of its own from the question's words with a guessed figure
(BENCHMARKS.md, forty-second session). The model copies the question's words readily; a fact named by its own rarest
noun phrase, the same in every one of the fact's answers, was meant to turn that habit into a key: the phrase an
employee's question shares with the fact, then the fact as trained. Measured on the sample it did not: the 135M model
named a trained fact in about a fifth of its answers and otherwise copied a phrase of the question into the name,
so `--cite-fact` is off (refusal recall +0.08 and +0.04, accuracy +0.05 and -0.07 at two seeds).
"""
from __future__ import annotations

import re
from collections import Counter

from policytune import facts as facts_lib
from policytune import keyphrases, phrasing

_REPLY = re.compile(r"^(?:Yes|No)\.\s+")
# What a figure counts ("6 short-term counselling sessions", "2 antenatal appointments"): the noun an employee's "how
# many ...?" names, which the noun phrases of `keyphrases` leave out as a figure's unit.
_NOT_COUNTED = r"(?!(?:of|the|a|an|to|in|for|and|or|per|each|every|more|less|than|at|by|on|with|from|plus|minus)\b)"
_COUNTED = re.compile(rf"(?<![\w.,])[£$€]?\d[\d,.]*%?\s+"
                      rf"((?:{_NOT_COUNTED}[a-z][a-z-]*\s+){{0,2}}{_NOT_COUNTED}[a-z][a-z-]*s)\b")
# a count's unit alone names nothing ("10 business days", "3 months")
_UNITS = {"calendar", "business", "working", "work", "consecutive", "full", "paid", "unpaid", "further", "days",
          "weeks", "months", "years", "hours", "minutes", "times", "nights"}


def statement(answer: str) -> str:
    """The fact an answer states, without a yes/no question's opening reply."""
    return _REPLY.sub("", answer.strip())


def keys(records: list[dict]) -> dict[str, str]:
    """{statement: its rarest noun phrase (or what its figure counts) that no earlier statement was named by}, for the
    answerable records generation wrote (not the restatements augmentation adds), rarity counted over those
    statements; a statement without such a phrase has none."""
    statements: dict[str, dict] = {}
    for record in records:
        if record.get("answerable", True) and not record.get("augmentation"):
            statements.setdefault(statement(str(record.get("output") or "")), record)
    frequency = Counter(w for text in statements for w in set(facts_lib.tokens(text)))
    out: dict[str, str] = {}
    taken: set[str] = set()  # a name another fact has ("years of service" of every row of a table) picks out neither
    for text, record in statements.items():
        # a heading's words name the section, which the label already says
        avoid = set(facts_lib.tokens(" ".join(str(h) for h in record.get("headings") or [])))
        counted = [m.group(1) for m in _COUNTED.finditer(text)
                   if set(m.group(1).split()) - _UNITS and set(facts_lib.tokens(m.group(1))) - avoid
                   and keyphrases.is_noun(m.group(1).split()[-1])]  # not "25 days is", "2 hours plus"
        phrases = sorted(dict.fromkeys(counted + keyphrases.ranked(text, frequency, avoid)),
                         key=lambda p: -keyphrases.rarity(facts_lib.tokens(p), frequency))
        name = next((p for p in map(phrasing.lower_first, phrases) if p not in taken), None)
        if name:
            out[text] = name
            taken.add(name)
    return out
