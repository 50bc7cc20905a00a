"""Answers that open with the name of the section they come from: "Volunteer Leave: Volunteer leave is recorded ...".

Trained this way the model names a section before it recalls a fact from it, and the refusal, which names none, is
what it says where no section comes first. After one pass the tuned model then refused more near misses than its base
on two policies' gold sets, where without labels it did not (BENCHMARKS.md, twenty-second session). The label is the
section's innermost heading in words; refusals, and the section restatements (whose question names the section
already), are left as they are. Users see the label too: an answer says where in the policy it comes from.
"""
from __future__ import annotations

from policytune import facts


def cited(answer: str, record: dict) -> str:
    """`answer` opened with the record's section name, where the record is answerable and has headings."""
    headings = [h for h in record.get("headings") or [] if str(h).strip()]
    if not record.get("answerable", True) or not headings:
        return answer
    return f"{facts.heading_name(headings[-1])}: {answer}"

