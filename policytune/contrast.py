"""Yes/no questions whose answer is "No.": the fact's own question with its figure changed.

A fact's yes/no question repeats the fact, so its answer is nearly always "Yes." (on the sample, 363 of 409
answered yes/no questions). Trained on that, the model answered "Yes." to any yes/no question, near misses
included ("Can I buy extra days of annual leave?" -> "Yes. Employees may buy ..."). Asking the fact's question
with a wrong figure ("Do I get 30 days of annual leave a year?" -> "No. Employees receive 20 days ...") makes
the reply depend on the figure the policy states, which is the knowledge we want retrieved.

Only a figure the statement asserts is changed, never a condition's ("with 10 or more years", "after 6 months",
"more than 5 days", "if I have taken up to 26 weeks"): moving a threshold can leave the answer "Yes." (15 or more
years still qualifies) or unknown. Nor a reference or a date ("Table 4", "31 March"): "Table 6" is nonsense, not "No.".
"""
from __future__ import annotations

import re

from policytune import phrasing

# A figure preceded by one of these words, or followed by "or more", is a condition, not what the statement gives.
_CONDITION = re.compile(r"\b(?:with|after|if|where|when|once|over|exceeding|beyond|than|under|within the first|"
                        r"for (?:a|an|any)? ?(?:period|absence|stay|trip|flight)s? of|lasting|aged?|from|between|"
                        r"of service|completed|reached?|reaching)\s+"
                        r"(?:(?:at least|up to|about|around|a total of|the first)\s+)?$", re.I)
# A figure inside a subordinate clause ("if I have taken up to 26 weeks", "who joined in the last 3 months") is one too.
_CLAUSE = re.compile(r"\b(?:if|where|when|whenever|unless|once|while|who|whose|which|that|provided|until)\b[^,;]*$",
                     re.I)
# A reference or a date is not an amount: "Table 4", "section 11.4", "Form LV-2", "31 March", "the 15th day".
_REFERENCE = re.compile(r"\b(?:table|section|form|step|figure|appendix|part|clause|paragraph|page|schedule|"
                        r"level|grade|band|tier|no\.?|number)\s*$", re.I)
_DATE_AFTER = re.compile(rf"^(?:st|nd|rd|th)\b|^\s+(?:{phrasing.MONTHS})\b")
_OR_MORE = re.compile(r"^\s*(?:\S+\s+){0,2}(?:or (?:more|longer|over|above|less|fewer|under)|\+)", re.I)
_FIGURE = re.compile(r"(?<![\w.,:/-])([£$€]?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(%| per ?cent)?(?!(?!(?:st|nd|rd|th)\b)[A-Za-z])(?![\w.,:/-]*\d)")  # "15th", not "401k"


def _bumped(value: int, percent: bool) -> list[int]:
    """Wrong figures to try, plausible next to the right one: half as much again, then double, then one more."""
    options = [value + max(1, value // 2), value * 2, value + 1]
    if percent:
        options = [v for v in options if v <= 100] + [max(1, value // 2)]
    return [v for v in options if v != value]


def wrong_figure(question: str, fact_text: str) -> tuple[str, str] | None:
    """The question with its one asserted figure replaced by a figure the fact does not state, and that figure as
    written ("$330"); None when the question has no such figure, or several (which one the reply denies is unclear).
    """
    stated = {m.group(2).replace(",", "") for m in _FIGURE.finditer(fact_text)}
    asserted = []
    for match in _FIGURE.finditer(question):
        number = match.group(2).replace(",", "")
        if number not in stated or 1900 <= int(number) <= 2100:  # a year is a date, not an amount
            continue
        before, after = question[:match.start()], question[match.end():]
        if _CONDITION.search(before) or _CLAUSE.search(before) or _OR_MORE.match(after):
            continue
        if _REFERENCE.search(before) or _DATE_AFTER.match(after):
            continue
        asserted.append(match)
    if len(asserted) != 1:
        return None
    match = asserted[0]
    value = int(match.group(2).replace(",", ""))
    if value == 0:
        return None
    for wrong in _bumped(value, bool(match.group(3))):
        if str(wrong) in stated:
            continue  # the policy states it elsewhere in the sentence ("15 days after 5 years"): maybe "Yes."
        written = f"{wrong:,}" if "," in match.group(2) else str(wrong)
        figure = f"{match.group(1)}{written}{match.group(3) or ''}"
        rest = question[match.end():]
        if value == 1:  # "1 day" -> "2 days"
            rest = re.sub(r"^(\s+(?:\w+ ){0,2}(?:day|week|month|year|hour|session|night|instalment))\b", r"\1s", rest)
        return question[:match.start()] + figure + rest, figure
    return None
