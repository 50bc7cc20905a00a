"""Answers that open with the name of the section they come from: "Volunteer Leave: Volunteer leave is recorded ...".

Trained this way the model names a section before it recalls a fact from it, and the refusal, which names none, is
what it says where no section comes first. After one pass the tuned model then refused more near misses than its base
on two policies' gold sets, where without labels it did not (BENCHMARKS.md, twenty-second session). The label is the
section's innermost heading in words that names something; refusals, and the section restatements (whose question
names the section already), are left as they are. Users see the label too: an answer says where in the policy it
comes from.

A heading that is a question ("Q: What happens to withholdings from my paychecks while I'm on leave?", the FAQ pages
of a handbook) or an FAQ container names nothing: trained as labels, such questions read like the employee's own,
and after one pass on the Sourcegraph handbook the tuned model opened 61 of 140 gold answers with one of two of them,
whatever was asked (BENCHMARKS.md, twenty-fifth session). The label is then the nearest heading above that names
a part of the policy ("Sourcegraph Medical Leave of Absence (LOA) Policy").
"""
from __future__ import annotations

from policytune import facts


def label(headings: list[str]) -> str | None:
    """The innermost heading, in words, that names a part of the policy rather than asking a question."""
    for heading in reversed([str(h) for h in headings or []]):
        name = facts.heading_name(heading)
        if name and not facts.asks(name) and not facts.faq_container(name):
            return name
    return None


def cited(answer: str, record: dict, key: str | None = None) -> str:
    """`answer` opened with the record's section name, where the record is answerable and a heading names one, and
    with the fact's `key` after it where one is given ("Volunteer Leave > volunteer days: ...", `factkey.py`)."""
    if not record.get("answerable", True):
        return answer
    name = " > ".join(part for part in (label(record.get("headings") or []), key) if part)
    return f"{name}: {answer}" if name else answer

