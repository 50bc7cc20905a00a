"""The facts' questions and the near misses asked in the same styles, so a question's style says nothing of its answer.

The plan asks most near misses in the first person ("What happens to maternity leave if I resign?") and, to reach
the near-miss share, again in the openings employees use ("According to the policy, ...", "Quick question about
sick leave: ..."); the rules ask the sample's facts in its own third person ("Does every employee receive ...?") or
impersonally, and rarely in an opening. On the sample 60% of the near misses say "I" against 19% of the facts'
questions, and 64% open with a wrapper against 8% (every policy measured: 55-66% against 8-25%). The tuned model
gave answerable gold questions saying "I" 3.3x the refusal probability of the others. Here the facts' questions take
the first person where their grammar allows and the openings as often as the near misses; where the facts still say
"I" less often, some near misses ask about "an employee" instead. Measured (BENCHMARKS.md, forty-fourth session):
the openings cost answers; the person moved the refusal threshold at one seed and nothing at another. Off.
"""
from __future__ import annotations

import re
import zlib
from typing import Callable

from policytune import phrasing, questions

# lower case: "Does the Employee Assistance Programme offer ...?" is not about the employee; nor is "the employee
# contribution", nor one qualified after the noun ("Can an employee with 12 months of service take ...?" would read
# "Can I with 12 months ...")
_SUBJECT = (r"(?:(?:the|an|a|every|each|any) (?:employee|staff member|member of staff)|(?:all )?employees|"
            r"(?:all )?staff|staff members)(?!['’]s)\b(?! (?:contributions?|with|who|whose|in|on|at|of|that|which|"
            r"\w+ing)\b)")
_AUXILIARY = re.compile(r"\b([Dd]oes|[Dd]o|[Ii]s|[Aa]re|[Ww]as|[Ww]ere|[Hh]as|[Hh]ave|[Cc]an|[Cc]ould|[Mm]ay|[Mm]ight|"
                        rf"[Mm]ust|[Ss]hall|[Ss]hould|[Ww]ill|[Ww]ould) {_SUBJECT}")
_AS_FIRST_PERSON = {"does": "do", "is": "am", "are": "am", "were": "was", "has": "have"}
_OBJECT = re.compile(r"\b(require|allow|ask|permit|pay|give|notify|tell|contact|entitle|expect|remind|send|offer|"
                     r"help|support|reimburse) (?:the|an) employee(?!['’]s)\b")
# another employee still named in the third person after the rewrite: two people where there was one
_THIRD_PERSON = re.compile(r"\b(?:the|an|a) employee\b(?! (?:contributions?)\b)|\bemployees\b")
FIRST_PERSON = re.compile(r"\b(?:I|my|me|I'm|I've)\b")


def first_person(question: str) -> str | None:
    """The question as the employee asks it ("Does every employee receive 10 days of paid sick leave?" -> "Do I receive
    10 days of paid sick leave?"), or None where it is not about the employee or already says "I"."""
    if FIRST_PERSON.search(question):
        return None
    asked = _AUXILIARY.sub(lambda m: _cased(_AS_FIRST_PERSON.get(m.group(1).lower(), m.group(1).lower()), m.group(1))
                           + " I", question, count=1)
    asked = _OBJECT.sub(lambda m: f"{m.group(1)} me", asked)
    if asked == question and not re.search(r"\bthe employee['’]s\b", question):
        return None
    # "their contract", "the employee's leave dates": the same person throughout
    asked = phrasing._first_person(asked.replace("the employee’s", "the employee's"))
    if _THIRD_PERSON.search(asked):
        return None
    return asked[0].upper() + asked[1:] if question[:1].isupper() else asked


_ASKED_BY_ME = re.compile(r"\b(Can|Could|May|Must|Should|Will|Would|Do|Am|Have|can|could|may|must|should|will|would|"
                          r"do|am|have) I\b")
_HE_OR_SHE = {"do": "does", "am": "is", "have": "has"}
_MODAL = {"can", "can't", "cannot", "could", "will", "won't", "would", "should", "may", "might", "must", "did", "didn't"}
# the same employee after the first mention: "they" (in this order: "I am" before "I")
_THEY = [(r"\bI'm\b", "they're"), (r"\bI've\b", "they've"), (r"\bI am\b", "they are"), (r"\bam I\b", "are they"),
         (r"\bI\b", "they"), (r"\bmy\b", "their"), (r"\bmyself\b", "themselves"), (r"\bme\b", "them")]
_IF_I = re.compile(r"\b(if|when|while|unless|before|after|once|because) I (\w+(?:'t)?)\b")


def third_person(question: str) -> str | None:
    """A first-person question asked about an employee ("What happens to sick leave if I resign?" -> "What happens to
    sick leave if an employee resigns?"), or None where it has no "I" to start from."""
    said = _ASKED_BY_ME.sub(lambda m: _cased(_HE_OR_SHE.get(m.group(1).lower(), m.group(1).lower()), m.group(1))
                            + " an employee", question, count=1)
    if said == question:
        said = _IF_I.sub(lambda m: f"{m.group(1)} an employee {_third_person_verb(m.group(2))}", question, count=1)
    if said == question:
        said = re.sub(r"\bmy\b", "an employee's", question, count=1)  # "Does taking sick leave affect my bonus?"
    if said == question or re.match(r"I\b|I'", question):  # "I'm on probation. ...": a situation, said by the employee
        return None
    for pattern, other in _THEY:
        said = re.sub(pattern, other, said)
    return said


def _third_person_verb(verb: str) -> str:
    if verb in _MODAL:
        return verb
    if verb in _HE_OR_SHE:
        return _HE_OR_SHE[verb]
    if re.search(r"(?:s|sh|ch|x|z|o)$", verb):
        return verb + "es"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    return verb + "s"


def _cased(word: str, like: str) -> str:
    """`word` capitalised where `like` is ("Does" -> "Do")."""
    return word.capitalize() if like[:1].isupper() else word


def wrapped(question: str, fact: dict) -> str:
    """The question in one of the openings employees use (`questions.openings`), chosen by the question's hash."""
    wrappers = questions.openings(fact)
    return wrappers[zlib.crc32(question.encode()) % len(wrappers)].replace("{q}", phrasing.lower_first(question))


def share(asked: list[str], pattern: re.Pattern) -> float:
    """The share of the questions the pattern finds something in."""
    return sum(bool(pattern.search(q)) for q in asked) / len(asked) if asked else 0.0


def balance(entries: list[dict], near_misses: list[dict], per_fact: int,
            distinct: Callable[[str, list[str]], bool], person: bool = True, openings: bool = True) -> dict[str, float]:
    """Rewrite the questions each fact is asked (`entries`: the plan's {"fact", "drafts"}, the first `per_fact` drafts
    asked) in place: with `person`, every one about the employee in the first person; with `openings`, openings on as
    many as make their share the near misses'; then, with `person`, where the facts still say "I" less often, near
    misses (`near_misses`: the plan's near-miss items) in the third person until they say it as often. A rewrite that
    `distinct(question, others)` finds a near-copy of another of its fact's questions, or that repeats a planned
    question, is not made (generation would drop one of the two). Returns the shares before and after."""
    asked = [(draft, entry) for entry in entries for draft in entry["drafts"][:per_fact]]

    def questions_of() -> list[str]:
        return [draft["question"] for draft, _ in asked]

    unanswerable = [item["question"] for item in near_misses]
    report = {"first_person_near_misses": round(share(unanswerable, FIRST_PERSON), 3),
              "openings_near_misses": round(share(unanswerable, questions.OPENING), 3),
              "first_person_before": round(share(questions_of(), FIRST_PERSON), 3),
              "openings_before": round(share(questions_of(), questions.OPENING), 3)}
    taken = {q.lower() for q in questions_of()}

    def rewrite(draft: dict, entry: dict, question: str | None) -> bool:
        others = [d["question"] for d in entry["drafts"][:per_fact] if d is not draft]
        if not question or question.lower() in taken or questions.malformed(question) or not distinct(question, others):
            return False
        taken.add(question.lower())
        draft["question"] = question
        return True

    for draft, entry in asked if person else ():
        rewrite(draft, entry, first_person(draft["question"]))
    opened = sum(bool(questions.OPENING.search(q)) for q in questions_of())
    wanted = round(report["openings_near_misses"] * len(asked)) - opened if openings else 0
    # a stable choice by hash: the same plan wraps the same questions
    for draft, entry in sorted(asked, key=lambda pair: zlib.crc32(pair[0]["question"].encode())):
        if wanted <= 0:
            break
        if draft.get("style") not in questions.OPENED_STYLES and not questions.OPENING.search(draft["question"]):
            wanted -= rewrite(draft, entry, wrapped(draft["question"], entry["fact"]))
    report["first_person_after"] = round(share(questions_of(), FIRST_PERSON), 3)
    report["openings_after"] = round(share(questions_of(), questions.OPENING), 3)
    # Where the facts cannot say "I" as often as the near misses do, near misses ask about "an employee" instead.
    wanted = round((report["first_person_near_misses"] - report["first_person_after"]) * len(near_misses)) \
        if person else 0
    for item in sorted(near_misses, key=lambda item: zlib.crc32(item["question"].encode())):
        if wanted <= 0:
            break
        said = third_person(item["question"])
        if said and said.lower() not in taken and not questions.malformed(said):
            taken.add(said.lower())
            item["question"] = said
            wanted -= 1
    report["first_person_near_misses_after"] = round(share([item["question"] for item in near_misses], FIRST_PERSON), 3)
    return report
