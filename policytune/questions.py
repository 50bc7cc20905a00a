"""Questions whose structure is decided by code: what each one asks about, and whether the policy answers it.

A 135M teacher cannot be trusted to pick what to ask (it asked for "the posthoc handbook" and put
refusal labels on stated facts), so the code picks the target of every question - the fact, its
topic and the slot asked about (a quantity with its unit, a named form, system or role, a
condition) - and writes a first wording itself. The teacher only rewords those (`generate.py`).

Unanswerable questions are near misses on the policy's own topics, built from aspect templates
(`generated_prompt.UNANSWERABLE_TEMPLATES`), and kept only when the whole document is silent on
them: no fact of the section, and none of the facts most similar to the question, mentions the
aspect's cue words.
"""
from __future__ import annotations

import re
from typing import Any

from policytune import facts as facts_lib

_UNIT = r"(?:business |calendar |working |full |consecutive |complete |paid |unpaid )?(?:days?|weeks?|months?|years?|hours?|times?|sessions?|nights?|minutes?|instalments?)"
_NUMBER = r"(?:\d[\d,]*(?:\.\d+)?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty)"
_SLOT_PATTERNS = [
    ("money", re.compile(r"[£$€]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:per|a|each) \w+)?")),
    ("percent", re.compile(rf"\b{_NUMBER}\s?(?:%|per ?cent)")),
    ("quantity", re.compile(rf"\b{_NUMBER}\s+{_UNIT}\b", re.I)),
    ("date", re.compile(r"\b\d{1,2} (?:January|February|March|April|May|June|July|August|September|October|November|December)(?: \d{4})?\b")),
    ("form", re.compile(r"\bForm [A-Z]{1,4}-?\d+[A-Za-z]?(?: [A-Z][a-z]+)*")),
    ("system", re.compile(r"\b[A-Z][a-z]+[A-Z][A-Za-z]+\b")),
    ("role", re.compile(r"\b(?:(?:Director|Head|Chief|Vice President) of [A-Z][a-z]+(?: [A-Z][a-z]+)*|"
                        r"(?:[A-Z][a-z]+ )+(?:Administrator|Officer|Manager|Committee|Team|Operations|Desk)\b|"
                        r"(?:line|skip-level) manager)")),
]
_WH = {"money": "how much", "percent": "what percentage", "date": "what date", "form": "which form",
       "system": "which system", "role": "who"}
# "Employees (who ...) may/must/receive ..." -> "Can I / Do I have to / Do I receive ...". The who-clause is
# short and the verb a modal or "receive": "... accrue leave only for the months in which they are employed"
# once became "Am I employed?".
_SUBJECT = re.compile(r"^(?:all |eligible |full-time |part-time |new )?(?:employees|an employee|the employee|staff|each employee)"
                      r"(?: who [^,]{1,40}?)?\s+(may|can|must|should|are entitled to|is entitled to|receive|receives|get|will)\b",
                      re.I)


def slots(text: str) -> list[dict[str, Any]]:
    """What a fact can be asked about: quantities with units, money, dates, forms, systems, roles (left to right)."""
    found: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _SLOT_PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if match.start() == 0 and kind == "role" and not text[:end].istitle():
                continue
            if any(start < b and a < end for a, b in taken):
                continue
            taken.append((start, end))
            found.append({"kind": kind, "value": match.group(0), "start": start, "end": end})
    return sorted(found, key=lambda s: s["start"])


def _wh(slot: dict) -> str:
    if slot["kind"] == "quantity":
        unit = re.sub(rf"^{_NUMBER}\s+", "", slot["value"], flags=re.I)
        unit = unit if unit.endswith("s") else unit + "s"
        return f"how many {unit}"
    return _WH[slot["kind"]]


def _question(text: str) -> str:
    text = " ".join(text.split()).strip(" ;,.?")
    text = re.sub(r"\s+([,;:?])", r"\1", text)
    return text[0].upper() + text[1:] + "?" if text else ""


def cloze(fact: str, slot: dict) -> str:
    """The fact with its slot replaced by the question word: "Form PL-1 must be submitted ..." -> "Which form must be submitted ...?"."""
    before, after = fact[: slot["start"]], fact[slot["end"]:]
    if slot["kind"] in ("role", "form", "system"):
        before = re.sub(r"\b(the|a|an|their|its)\s+$", "", before, flags=re.I)  # "the who" reads as nonsense
    return _question(f"{before}{_wh(slot)}{after}")


def table_questions(fact: dict) -> list[str]:
    """A table row "Benefit: Vision insurance; Company contribution: 100% ..." asks each column of its row."""
    parts = [p.split(": ", 1) for p in fact["text"].rstrip(".").split("; ")]
    if len(parts) < 2 or any(len(p) != 2 for p in parts):
        return []
    row = parts[0][1]
    out = []
    for header, _ in parts[1:]:
        out.append(_question(f"What is the {header.lower()} for {row}"))
        out.append(_question(f"{row}: {header.lower()}"))
    return out


def subject_query(fact: dict) -> str:
    """The topic and the opening words of the fact's first clause: "Time Off in Lieu: what about occasional short periods of extra work?"."""
    clause = re.split(r"[,;:()]| (?:may|must|can|will|is|are|does|do|should|has|have)\b", fact["text"], maxsplit=1)[0]
    words = clause.split()[:7]
    return _question(f"{fact.get('topic') or 'The policy'}: what is the rule for {' '.join(words).lower()}")


def short_query(fact: dict, slot: dict) -> str:
    """Topic plus the question word and the words around the slot, as people type into a search box."""
    text = fact["text"]
    tail = re.split(r"[,;.:()]", text[slot["end"]:], maxsplit=1)[0].split()[:8]
    if len(tail) < 2:
        tail = re.split(r"[,;:()]", text[: slot["start"]])[-1].split()[-6:]
    while tail and tail[-1].lower() in _DANGLING:  # "... of the?" reads as a cut-off question
        tail = tail[:-1]
    topic = fact.get("topic") or ""
    return _question(f"{topic}: {_wh(slot)} {' '.join(tail)}")


_DANGLING = {"the", "a", "an", "of", "to", "for", "in", "on", "at", "by", "or", "and", "with", "from", "their", "its",
             "that", "which", "who", "is", "are", "be"}


def first_person(fact: str) -> str | None:
    """ "Employees may take ..." -> "Can I take ...?"; None when the fact is not about what employees may or must do."""
    match = _SUBJECT.match(fact)
    if not match:
        return None
    verb = match.group(1).lower()
    rest = fact[match.end():]
    rest = re.sub(r"\b(their|his or her)\b", "my", rest)
    rest = re.sub(r"\bthey\b", "I", rest)
    lead = {"may": "Can I", "can": "Can I", "must": "Do I have to", "should": "Should I", "will": "Will I",
            "receive": "Do I receive", "receives": "Do I receive", "get": "Do I get",
            "are entitled to": "Am I entitled to", "is entitled to": "Am I entitled to"}[verb]
    return _question(f"{lead}{rest}")


def about_query(fact: dict, index_words: set[str] | None = None) -> str:
    """For a fact with no slot: what the section says about its most specific words."""
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z-]+", fact["text"]) if w.lower() not in facts_lib._STOP and len(w) > 3]
    topic_words = set(facts_lib.tokens(fact.get("topic", "")))
    specific = [w for w in words if facts_lib.tokens(w) and facts_lib.tokens(w)[0] not in topic_words]
    picked = list(dict.fromkeys(w.lower() for w in specific))[:3]
    topic = fact.get("topic") or "the policy"
    return _question(f"What does the policy say about {topic.lower()} and {' '.join(picked)}" if picked
                     else f"What does the policy say about {topic.lower()}")


def templates(fact: dict) -> list[dict[str, str]]:
    """Code-written questions about one fact, most specific first: [{"question", "style", "slot"}]."""
    found = slots(fact["text"])
    out: list[dict[str, str]] = []
    if fact.get("kind") == "table_row":
        found_kind = found[0]["kind"] if found else "statement"
        out += [{"question": q, "style": "table", "slot": found_kind} for q in table_questions(fact)]
    for slot in found[:2]:
        out.append({"question": cloze(fact["text"], slot), "style": "cloze", "slot": slot["kind"]})
    personal = first_person(fact["text"])
    if personal:
        out.append({"question": personal, "style": "first_person", "slot": "condition"})
    for slot in found[:2]:
        out.append({"question": short_query(fact, slot), "style": "query", "slot": slot["kind"]})
    kind = found[0]["kind"] if found else "statement"
    out.append({"question": subject_query(fact), "style": "subject", "slot": kind})
    out.append({"question": about_query(fact), "style": "about", "slot": kind})
    seen, unique = set(), []
    for item in out:
        key = item["question"].lower()
        if item["question"] and key not in seen and 3 <= len(item["question"].split()) <= 60:
            seen.add(key)
            unique.append(item)
    return unique


def question_type(slot_kind: str, question: str) -> str:
    """The evaluation type of a question (numeric, entity, procedure, eligibility) from its slot."""
    if slot_kind in ("money", "percent", "quantity", "date"):
        return "numeric"
    if slot_kind in ("form", "system", "role"):
        return "entity"
    if re.search(r"\b(eligible|qualif|entitled|who can|am i|can i)\b", question, re.I):
        return "eligibility"
    return "procedure"


def consistent(question: str, fact: dict, section_index: facts_lib.Index, margin: float = 1.05,
               min_shared: int = 1) -> str | None:
    """None when the question points at its fact more than at any other fact of the section; else why not.

    `min_shared`: content words (besides the topic's) the question must share with its fact; a teacher's
    rewording is held to more than the code's own drafts, which are cut from the fact."""
    if re.search(r"\b(the excerpt|that asks|this question|the sentence|key sentence|the text above|this request)\b",
                 question, re.I):
        return "question talks about the task, not the topic"
    topic_words = set(facts_lib.tokens(fact.get("topic", "")))
    shared = (set(facts_lib.tokens(question)) & set(facts_lib.tokens(fact["text"]))) - topic_words
    if len(shared) < min_shared:
        return "question shares too few words with its fact"
    scores = section_index.scores(question)
    own = next(i for i, f in enumerate(section_index.facts) if f["id"] == fact["id"])
    best_other = max((float(s) for i, s in enumerate(scores) if i != own), default=0.0)
    if float(scores[own]) <= 0:
        return "question shares no words with its fact"
    if float(scores[own]) < margin * best_other:
        return "another fact of the section answers it better"
    return None


# Subsection names that say what kind of text follows, not what it is about ("Overview and Eligibility").
_GENERIC_HEADING = re.compile(r"\b(overview|eligibility|purpose|scope|definitions|effect|requesting|applying|records|"
                              r"appeals|contacts|history|exceptions|timelines|timing|notice|requirements|rules)\b", re.I)


def near_miss_topic(headings: list[str], topic: str) -> str:
    """The benefit a near-miss question names: the subsection, or its parent where the subsection name is generic."""
    names = [re.sub(r"^[\d.]+\s*", "", h).strip() for h in headings if h and h.strip()]
    if _GENERIC_HEADING.search(topic) and len(names) >= 2:
        return names[-2]
    return topic


def unanswerable_candidates(section_facts: list[dict], templates_by_aspect: dict[str, dict]) -> list[dict]:
    """Near-miss questions about a section's topic, one per aspect its facts never mention."""
    topic = near_miss_topic(section_facts[0].get("headings") or [], section_facts[0].get("topic") or "this policy")
    text = " ".join(f["text"] for f in section_facts).lower()
    out = []
    for aspect, spec in templates_by_aspect.items():
        if any(cue.lower() in text for cue in spec["cues"]):
            continue
        for template in spec["questions"]:
            out.append({"aspect": aspect, "question": _question(template.format(topic=topic.lower())),
                        "cues": spec["cues"], "topic": topic})
    return out


def answered_elsewhere(question: str, cues: list[str], index: facts_lib.Index, topic: str = "", k: int = 20) -> dict | None:
    """A fact of the whole document that may answer the question: one holding an aspect cue word among the k facts
    most like the question, or anywhere in a fact that names the topic's distinctive words.

    A section's own facts fill the top of the ranking ("The recognised holidays are: ..." ten times), so the
    ranking alone missed "Contractors ... are not covered by this policy" for "Do public holidays apply to
    contractors?"; and the deadline of unpaid leave sits in another subsection than the one asked about."""
    def holds_cue(fact: dict) -> bool:
        lowered = fact["text"].lower()
        return any(cue.lower() in lowered for cue in cues)

    for fact, _ in index.top(question, k):
        if holds_cue(fact):
            return fact
    for fact in index.naming(index.distinctive(facts_lib.tokens(topic))):
        if holds_cue(fact):
            return fact
    return None
