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


def _stated(fact_text: str) -> set[str]:
    return {m.group(2).replace(",", "") for m in _FIGURE.finditer(fact_text)}


def _asserted(question: str, stated: set[str]) -> re.Match | None:
    """The question's one figure that the fact (its figures: `stated`) asserts, not a condition's, a reference or a
    year; None when it has no such figure, or several (which one a reply denies is unclear)."""
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
    return asserted[0] if len(asserted) == 1 else None


def wrong_figure(question: str, fact_text: str) -> tuple[str, str] | None:
    """The question with its one asserted figure replaced by a figure the fact does not state, and that figure as
    written ("$330"); None when the question has no such figure, or several (which one the reply denies is unclear).
    """
    stated = _stated(fact_text)
    match = _asserted(question, stated)
    if match is None:
        return None
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


# What goes with a figure when a question stops asking it: its qualifier before ("up to 3"), a duration's unit with its
# "of" after ("20 days of annual leave" -> "annual leave"), a time limit's whole phrase ("within 7 calendar days of
# returning to work", "at least 8 weeks before the expected week of childbirth").
_QUALIFIER = re.compile(r"(?:\b(?:up to|at least|a total of|a maximum of|a minimum of|about|around|only)\s+)?$", re.I)
_UNITS = r"(?:days?|weeks?|months?|years?|hours?|nights?|minutes?)"
_DURATION_OF = re.compile(rf"^\s+(?:[a-z-]+\s+){{0,2}}?{_UNITS}\s+of\s+(?=[a-z])")
_COUNTED = re.compile(rf"^\s+(?=(?:(?!of\b|the\b|a\b|an\b|to\b|in\b|and\b|or\b)[a-z-]+\s+){{0,2}}?[a-z-]+s\b)"
                      rf"(?!(?:[a-z-]+\s+){{0,2}}?(?:{_UNITS}|times?)\b)")
_NOTICE = re.compile(rf"^\s+(?:[a-z-]+\s+){{0,2}}?{_UNITS}['’]s?\s+(?=notice\b)")
# the rest of a time limit after its unit, to the end of its phrase
_LIMIT = re.compile(rf"^\s+(?:[a-z-]+\s+){{0,2}}?{_UNITS}(?:\s+(?:of|before|after|in advance|from|prior to)\b[^,?]*)?"
                    r"(?=[,?]|$)")
_DEADLINE = re.compile(rf"^\s+(?:[a-z-]+\s+){{0,2}}?{_UNITS}\s+(?:before|after|in advance|prior to)\b")
_LIMIT_WORD = re.compile(r"\b(?:within|for)\s+$", re.I)
_MONEY_OF = re.compile(r"\s+of\s+$")
_MONEY_PERIOD = re.compile(r"^(?:\s+(?:per|a|an|each)\s+(?:calendar\s+|academic\s+|leave\s+|working\s+)?[a-z]+)?")
# A figure after one of these ("the first 10 days", "a 4-week block") cannot go without leaving a hole.
_HOLE = re.compile(r"\b(?:by|after|before|in|every|per|than|over|to|of|at|on|from|until|a|an|the|is|are|be|"
                   r"maximum|minimum|total)\s+$", re.I)


def without_figure(question: str, fact_text: str) -> str | None:
    """The fact's yes/no question without the figure it asserts, as employees ask whether something is given or
    required at all: "Can partners ... attend up to 2 antenatal appointments?" -> "Can partners ... attend antenatal
    appointments?", "Do I get 20 days of annual leave a year?" -> "Do I get annual leave a year?", "Must the
    certificate be uploaded within 7 calendar days of returning to work?" -> "Must the certificate be uploaded?". Its
    answer is still "Yes.", and the statement gives the figure. None when the figure cannot go without leaving a
    hole ("Is the probationary period 3 months?", a percentage, "a maximum of $4,000")."""
    match = _asserted(question, _stated(fact_text))
    if match is None or match.group(3):
        return None
    before, after = question[:match.start()], question[match.end():]
    before = before[:_QUALIFIER.search(before).start()]
    if match.group(1):  # money: the amount "of" something ("an allowance of $50"), or "up to $40 of any fee"
        if _MONEY_OF.search(before) and not _HOLE.search(_MONEY_OF.sub("", before)):
            before, after = _MONEY_OF.sub("", before), after[_MONEY_PERIOD.match(after).end():]
        elif re.match(r"^\s+of\s+", after) and not _HOLE.search(before):
            after = " " + after.lstrip()[3:]
        else:
            return None
    elif _LIMIT_WORD.search(before) and (limit := _LIMIT.match(after)):
        before, after = _LIMIT_WORD.sub("", before), after[limit.end():]
    elif _HOLE.search(before):
        return None
    elif cut := (_DURATION_OF.match(after) or _NOTICE.match(after) or _COUNTED.match(after)):
        after = " " + after[cut.end():].lstrip()
    elif (limit := _LIMIT.match(after)) and _DEADLINE.match(after):  # not "Is the probation 3 months from ...?"
        after = after[limit.end():]
    else:
        return None
    out = re.sub(r"\s+([?,])", r"\1", " ".join(f"{before.rstrip()} {after.lstrip()}".split()))
    out = re.sub(r",\s*\?$", "?", out)
    if len(out.split()) < 5 or out == question or re.search(r"\b(?:" + "|".join(_DANGLING) + r")\?$", out, re.I):
        return None
    return out


_DANGLING = phrasing.DANGLING | {"up", "least", "than"}  # "... of leave up?", "... at least?"
