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
from typing import Any, Callable

from policytune import contrast, heuristics
from policytune import facts as facts_lib
from policytune import phrasing

# "3 consecutive calendar days", "10 paid public holidays": a count with up to three modifiers before its noun
_UNIT = (r"(?:(?!(?:or|and|of|the|to|more|less|than|per|a|an|in|at|for|by|with|on|from|each|every)\b)[a-z-]+ ){0,3}"
         r"(?:days?|weeks?|months?|years?|hours?|times?|sessions?|nights?|minutes?|instalments?|holidays?|appointments?|"
         r"kilometres?|miles?)")
_NUMBER = r"(?:\d[\d,]*(?:\.\d+)?(?:\s?[-–]\s?\d[\d,]*)?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty)"
_SLOT_PATTERNS = [
    ("money", re.compile(r"[£$€]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:per|a|each) (?:calendar |academic |leave |working )?\w+)?")),
    ("percent", re.compile(rf"\b{_NUMBER}\s?(?:%|per ?cent)")),
    ("quantity", re.compile(rf"\b{_NUMBER}\s+{_UNIT}\b", re.I)),
    ("date", re.compile(rf"\b\d{{1,2}} (?:{phrasing.MONTHS})(?: \d{{4}})?\b")),
    ("form", re.compile(r"\bForm [A-Z]{1,4}-?\d+[A-Za-z]?(?: [A-Z][a-z]+)*")),
    ("system", re.compile(r"\b[A-Z][a-z]+[A-Z][A-Za-z]+(?: (?!Form\b)[A-Z][a-z]+)*\b")),  # "PeopleHub Expenses"
    ("role", re.compile(r"\b(?:(?:Director|Head|Chief|Vice President) of [A-Z][a-z]+(?: [A-Z][a-z]+)*|"
                        r"(?:[A-Z][a-z]+ )+(?:Administrator|Officer|Manager|Committee|Team|Operations|Desk)\b|"
                        r"(?:line|skip-level) manager)")),
    # "by 12:00 on the following Monday"; a range ("between 07:30 and 10:00") does not front as one time
    ("time", re.compile(r"(?<!between )(?<![\d:])\b(?:[01]?\d|2[0-3]):[0-5]\d\b(?! (?:and|to) \d)")),
    # a named provider or plan that ends its phrase ("through the Meridian Health Plan.", "administered by Keystone
    # Pensions"), not a name that qualifies a noun ("via the Deel platform") or a product's ("PTO by Roots");
    # kept only when it holds one of the document's own names (`_provider`)
    ("provider", re.compile(r"(?<=[a-z] )(?:through|by|via|from) (?:the )?(?P<slot>(?:[A-Z][a-z]+ ){0,3}[A-Z][a-z]+)"
                            r"(?=[.,;:)]|$| and | or | for | in | to )")),
]
_WH = {"money": "how much", "percent": "what percentage", "date": "what date", "form": "which form",
       "system": "which system", "role": "who", "time": "what time", "provider": "which provider"}
_NOT_A_PROVIDER = re.compile(rf"(?:{phrasing.MONTHS}|"
                             r"Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|Table|Section|"
                             r"Christmas|Year's|Day|Limited|" + "|".join(phrasing.COMPANY_SUFFIXES) + r")\b")
def slots(text: str) -> list[dict[str, Any]]:
    """What a fact can be asked about: quantities with units, money, dates, forms, systems, roles (left to right)."""
    found: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _SLOT_PATTERNS:
        for match in pattern.finditer(text):
            group = "slot" if "slot" in pattern.groupindex else 0
            start, end = match.span(group)
            if match.start() == 0 and kind == "role" and not text[:end].istitle():
                continue
            if kind == "system" and match.group(0) in phrasing.ORGANISATION:
                continue  # "advertise PostHog": the organisation is not a system to ask for
            if kind == "system" and re.search(r"\b(?:called|named|known as)\s+$", text[:start]):
                continue  # "a monthly book club called BookHog": the name of the thing before it, not a system
            if kind == "provider" and not _provider(match.group(group)):
                continue
            if kind == "time" and re.search(r"\d (?:and|to) $", text[:start]):
                continue  # the end of "between 07:30 and 10:00", "09:00 to 17:30"
            if any(start < b and a < end for a, b in taken):
                continue
            taken.append((start, end))
            found.append({"kind": kind, "value": match.group(group), "start": start, "end": end})
    return sorted(found, key=lambda s: s["start"])


def _provider(name: str) -> bool:
    """Whether a capitalised run names a provider or plan: one of the document's own names ("Meridian", "Keystone"),
    not the organisation alone, a date, a day or a heading word."""
    words = name.split()
    return (any(w in phrasing.PROPER_NOUNS for w in words) and not _NOT_A_PROVIDER.search(name)
            and not all(w in phrasing.ORGANISATION for w in words))


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
    wh = _wh(slot)
    if wh == "who" and re.search(r"\b(?:by|to|with|from|for)\s+$", before, re.I):
        wh = "whom"  # "granted only in writing by whom?"
    return _question(f"{before}{wh}{after}")


def _lower_first(text: str) -> str:
    """ "The wellness allowance" -> "the wellness allowance"; "Northwind", "PeopleHub" and "TOIL" stay as written."""
    return phrasing.lower_first(text)


def topic_phrase(topic: str) -> str:
    """A heading as it reads inside a question: "Adoption and Surrogacy Leave" -> "adoption and surrogacy leave"."""
    return " ".join(w.lower() if re.fullmatch(r"[A-Z][a-z]+(?:-[a-z]+)*", w) else w for w in topic.split())


def table_cells(text: str) -> list[list[str]]:
    """A table row's [header, value] cells ("Benefit: Dental insurance; Waiting period: 3 months"); [] for text that
    does not open with a cell."""
    parts: list[list[str]] = []
    for piece in text.rstrip(".").split("; "):
        if ": " in piece:
            parts.append(piece.split(": ", 1))
        elif parts:  # a cell with its own ";" ("Raised the allowance; added ...") continues the cell before it
            parts[-1][1] += f"; {piece}"
        else:
            return []
    return parts


def table_questions(fact: dict) -> list[str]:
    """A table row "Benefit: Vision insurance; Company contribution: 100% ..." asks each column of its row;
    a two-cell row ("Version: 3.2", "Step 1: Complete Form ED-3 ...") asks for its key."""
    parts = table_cells(fact["text"])
    if not parts:
        return []
    topic = topic_phrase(fact.get("topic") or "the policy")
    if len(parts) == 1:
        key, value = parts[0][0].rstrip(":").strip(), parts[0][1].lstrip(": ")
        step = re.match(r"step (\d+)$", key, re.I)
        if step:
            out = [_question(f"What is step {step.group(1)} of {topic}"),
                   _question(f"What do I do at step {step.group(1)} when it comes to {topic}")]
            # "Complete Form ED-3 ..." is an instruction to the employee; "The line manager will respond ..." a statement
            first = value.split()[0].lower() if value.split() else ""
            instruction = "VERB" in phrasing.lemmas(first) and first not in ("the", "a", "an", "your", "their")
            steps = sentence_questions(f"The employee must {value[:1].lower()}{value[1:]}" if instruction else value)
            return out + [item["question"] for item in steps if item["style"] != "check"]
        if re.search(r"\b(?:by|of|to|for|from|with)$", key, re.I):
            return []  # "Approved by: ..." does not make "What is the approved by?"
        return [_question(f"What is the {key.lower()} of the {topic_phrase(fact.get('topic') or 'policy')}"),
                _question(f"What is the policy's {key.lower()}")]
    row, row_header = _lower_first(parts[0][1]), parts[0][0].lower()
    # "Years of service: 2 to less than 5 years" reads as "with 2 to less than 5 years of service"
    measure = re.match(r"(\w+?)s? of (.+)$", row_header)
    row_phrase = f"with {row} of {measure.group(2)}" if measure and re.search(
        rf"\b{measure.group(1)}s?\b", row) else f"for {row}"
    first, second = [], []
    for header, _ in parts[1:]:
        if re.match(r"(?:how|what|who|when|where|which)\b", header, re.I):
            continue  # "How to reach: ..." makes no question of its own
        counted = re.match(r"(?:\w+ )?(?:days|weeks|months|hours|years)\b", header, re.I)  # "Days per year: 22 days"
        first.append(_question(f"{'How many' if counted else 'What is the'} {header.lower()} {row_phrase}"))
        second.append(_question(f"What is the {header.lower()} when the {row_header} is {row}"))
    return first + second


_ENUMERATION = re.compile(r"^(.{3,80}?)\s+(?:are|include|includes|is|covers?)\s*:$", re.I)
_FOLLOWING = re.compile(r"\s*(?:(?:both|all|each|any|one|either) of )?(?:the following(?: \w+)?(?: apply| applies)?|"
                        r"as follows(?: [^:]*)?)\s*:$", re.I)


# an opening that the item must finish: "You can use Sick Leave for: [-] Doctor appointments"
_OPEN_END = r"\b(?:for|to|of|in|on|at|by|with|from|into|include|includes|are|is|be|receive|receives|get|gets)$"


def _inner(item: str) -> str:
    """A list item read inside a sentence: "The day after Christmas Day" -> "the day after Christmas Day"."""
    return re.sub(r"^(?:The|An?|Your|Our|Their|When|Where|How|What)\b", lambda m: m.group(0).lower(), item)


def list_item_questions(fact: dict) -> list[dict[str, str]]:
    """An item read with its list's opening: a term and its meaning, a case and its rule, a member of a list, or a
    sentence that the opening starts ("An employee who works on a holiday receives both of the following: ...")."""
    intro = fact.get("intro", "")
    item = fact["text"][len(intro):].strip() if intro and fact["text"].startswith(intro) else fact["text"]
    topic = fact.get("topic") or "the policy"
    topic_l = topic_phrase(topic)
    out: list[dict[str, str]] = []

    def add(question: str | None, style: str, slot: str = "statement") -> None:
        if question:
            out.append({"question": question, "style": style, "slot": slot})

    key_value = re.match(r"^([^:]{2,70}):\s+(.+)$", item)
    if key_value and re.fullmatch(_LABEL_WORDS, key_value.group(1).strip(), re.I):
        return sentence_questions(key_value.group(2), topic)  # "IMPORTANT: If your return-to-work date ..." is a note
    if key_value and re.search(r"\b(?:includes?|is|are|covers?|means?)$", key_value.group(1).strip(), re.I):
        # "Immediate family includes: child, spouse, parent.": a sentence with a colon, not a term and its meaning
        return sentence_questions(f"{key_value.group(1).strip()} {key_value.group(2)}", topic)
    if key_value and len(key_value.group(1).split()) <= 12:
        key, value = key_value.group(1).strip(), key_value.group(2)
        key_l = _lower_first(key)
        found = slots(value)
        if re.search(r"definition|glossary|terms|meaning", topic, re.I):
            add(_question(f"What is meant by {key_l}"), "definition")
            add(_question(f"How does the policy define {key_l}"), "definition")
            add(_question(f"What does {key_l} mean in the policy"), "definition")
        elif re.match(r"(?:on|after|before|for|following|if|when|where|in|during|within|from|between|above|below) ",
                      key, re.I):
            if found and found[0]["kind"] in ("quantity", "money", "percent"):
                add(_question(f"How much {topic_l} do I get {phrasing._first_person(key_l)}"), "case", found[0]["kind"])
            add(_question(f"What {topic_l} applies {phrasing._first_person(key_l)}"), "case")
            add(_question(f"What does the policy say about {topic_l} {key_l}"), "case")
            add(_question(f"What is the rule {key_l}"), "case")
        else:
            noun = re.search(r"the following (\w+?)s?\b(?: apply| applies)?", intro or "", re.I)
            if noun and noun.group(1).lower() not in ("rule", "thing", "item", "point"):
                add(_question(f"What is the {noun.group(1).lower()} for {key_l}"), "case")
            treated = phrasing.parse(intro.rstrip(":")) if intro else None
            if treated and re.search(r"\bas follows\b", treated["rest"]):
                rest = re.sub(r"\s*as follows\s*", " ", treated["rest"]).strip()
                plural = key_l.endswith("s") and not key_l.endswith("ss")
                add(_question(f"How {'are' if plural else 'is'} {key_l} {rest}"), "case")
            add(_question(f"What does the policy say about {key_l}"), "case")
            if not names_nothing(topic):  # not "... under Q. what is Sequoia Consulting Group?"
                add(_question(f"What is the rule for {key_l} under {topic_l}"), "case")
        return out
    enumeration = _ENUMERATION.match(intro) if intro else None
    if enumeration and len(item.split()) <= 14 and not phrasing.parse(item):
        name = _inner(re.sub(r"\s*\(.*?\)\s*", " ", item).strip(" .;"))
        group = _lower_first(enumeration.group(1))
        add(_question(f"Is {name} one of {group}"), "member")
        add(_question(f"Does the policy include {name} in {group}"), "member")
        for draft in out:
            draft["reply"] = "Yes."
        add(_question(f"What does the policy say about {name}"), "member")
        if "(" in item:
            add(_question(f"When is {name}"), "member", "date")
        return out
    opening = _FOLLOWING.sub("", intro).strip().rstrip(":") if intro else ""
    opening = re.sub(r"^It\b", f"The {topic}", opening)
    item = re.sub(r"^[(]?[a-z][).]\s+", "", item)  # "(a) that they are unwell" reads on from its opening
    if opening.endswith(","):  # "During any period of unpaid leave, [the following rules apply:] Life assurance ..."
        item = _lower_first(item)
    elif opening and re.match(r"[\d$£€]", item) and not phrasing.verb_form(opening.split()[-1], "they", "the") and \
            opening.split()[-1].lower() not in ("is", "are", "be", "receive", "receives", "repay", "get", "gets"):
        item = f"at {item}"  # "The company matches employee contributions [as follows:] 100% of ..." reads "at 100%"
    # each parse once: both readings below ask whether the item, and the opening, are sentences of their own
    item_parses = bool(opening) and phrasing.parse(item) is not None
    opening_parses = bool(opening) and phrasing.parse(opening) is not None
    if opening and re.match(r"(?:Please|You|We|Our|Your|If|When|Once|Unless|Unlike|As|This|These|All|Each|Every|The|"
                            r"There|It|They)\b", item) and \
            (item_parses or (opening_parses and not re.search(_OPEN_END, opening))):
        # "US teammates: [-] Please use the links below", "Preparing for your first day back: [-] Your Slack status may
        # still be set as OOO": a label over whole sentences, not their start; nor is "... ground rules that we expect
        # Teammates to follow: [-] If you are paid through Remote.com, you ..." or "... depends on your salary level:
        # [-] The amount of overtime you can receive depends on ..."
        opening = ""
    elif opening and not opening.endswith(",") and item[:1].isupper() and \
            (not opening_parses or re.search(r"\bbelow\b|\bsteps$", opening)) and \
            item.split(" ", 1)[0].lower() not in phrasing.MODAL_OR_BE:
        # under a label or "... the requirements below:", an item is a sentence of its own ("US teammates: [-] Benefits
        # are effective on your date of hire") or a title ("Benefits plans & summaries", "Work full-time"), not the
        # rest of the opening's sentence; "Employees on probation: [-] Cannot take sabbatical leave" still reads on
        if not item_parses:
            return []
        opening = ""
    sentence = f"{opening} {_inner(item)}" if opening else item
    return sentence_questions(sentence, topic)


# A label before the statement ("A: Time taken on medical leave ...", "US teammates: You can use ...", "Reminder: HR
# Links is separate from Tock.") is not part of what is asked: "Do A: Please reach out ...?" reads as nothing. The
# answer, the statement itself, keeps it.
_LABEL_WORDS = r"Q|A|Note|NB|Important|Reminder|Tip|Please note"
_LABEL = re.compile(rf"^(?:(?:{_LABEL_WORDS})\s?:\s+|[A-Z][\w-]*(?: [\w-]+){{0,2}}:\s+(?=[A-Z])|"
                    rf"[A-Z][\w-]*(?: [\w-]+){{3,6}}:\s+(?=(?:If|When|Please|You|We)\b))")  # "Preparing for ... back: If"


def sentence_questions(text: str, topic: str = "") -> list[dict[str, str]]:
    """A statement's questions, clause by clause: a wh-question per slot (fronted, else the statement with the slot
    asked for), its yes/no form, when / what questions, and "what does the policy say about <subject>?"."""
    out: list[dict[str, str]] = []
    text = re.sub(r"!+(?=\s|$)", ".", text)  # "... with the team afterwards!" is a statement too
    text = _LABEL.sub("", text, count=1)
    for clause in phrasing.clauses(text)[:3]:
        out += _clause_questions(clause)
    return out


# "How many weeks of paternity leave ...?" as employees ask it: "How much paternity leave ...?"; "How many months is
# probation?": "How long is probation?". The gold sets ask "how long" and "how much" more than "how many", the
# training data had no "how long" at all, and a question without the unit makes the answer recall the unit too.
_DURATION = r"(?:(?:calendar|business|working|work|paid|unpaid|consecutive) )*(?:days|weeks|months|years|hours)"
_HOW_MANY_OF = re.compile(rf"\bhow many {_DURATION}(?: of (?!(?:my|your|their|the|this|that|any)\b)"
                          rf"(?=(?:[\w-]+ ){{0,3}}?(?:leave|pay|holidays?|notice|absence|time|sickness|training|study|"
                          rf"toil)\b)|['’] (?=notice\b))", re.I)
_HOW_MANY_LONG = re.compile(rf"(?:^|(?<=, )|(?<=: ))(?:for )?how many {_DURATION} (?=(?:is|are)\b)", re.I)


def unit_free(question: str) -> str | None:
    """The question asking "how much <noun>" or "how long" where it asks how many days, weeks, months or years of
    something; None where it asks neither way."""
    for pattern, words in ((_HOW_MANY_OF, "how much "), (_HOW_MANY_LONG, "how long ")):
        match = pattern.search(question)
        if match:
            words = words.capitalize() if question[match.start()].isupper() else words
            return question[:match.start()] + words + question[match.end():]
    return None


_POINTS_BACK = re.compile(r"(?:this|these|those|both|such|each of these|all of these|the same)\b", re.I)


def _clause_questions(text: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    found = slots(text)
    kind = found[0]["kind"] if found else "statement"
    parts = phrasing.parse(text)
    if parts and _POINTS_BACK.match(parts["subject"].strip()):
        return out  # "Both of these are taxable benefits": no question keeps what "these" are
    for slot in found[:2]:
        question = phrasing.wh(text, slot, _wh(slot), max_words=25)
        clause = phrasing.main_clause(text)
        if not question and parts and not parts["lead"] and not parts["person"] and slot["value"] in clause and \
                clause.find(slot["value"]) >= clause.find(parts["subject"]) >= 0:
            # the statement with its slot asked for reads as a question when the slot is in a short main clause
            at = clause.find(slot["value"])
            question = cloze(clause, {**slot, "start": at, "end": at + len(slot["value"])})
            if question and (len(question.split()) > 20 or re.search(r"\b(?:the|a|of|from|and) (?:how|what|which|who)\b|"
                                                                     r"\b(?:whose|which|who|that)\b.+\b(?:how|what)\b",
                                                                     question)):
                question = None
        if question and len(question.split()) <= 25:
            out.append({"question": unit_free(question) or question, "style": "wh", "slot": slot["kind"]})
    polar = phrasing.polar(text)
    if polar:
        out.append({"question": polar, "style": "yes_no", "slot": kind if kind != "statement" else "condition",
                    "reply": yes_or_no(parts)})
    for style, question in (("when", phrasing.when(text)), ("what", phrasing.what_object(text)),
                            ("who_what", phrasing.who_or_what(text))):
        if question:
            out.append({"question": question, "style": style, "slot": "date" if style == "when" else kind})
    out += [{"question": q, "style": "what_happens", "slot": "condition"} for q in phrasing.what_happens(text)]
    subject = phrasing.subject_phrase(text)
    content = [w for w in re.findall(r"[A-Za-z][\w'-]*", subject or "") if w.lower() not in facts_lib._STOP]
    organisation = subject and all(w in phrasing.PROPER_NOUNS or w in phrasing.COMPANY_SUFFIXES for w in content)
    if subject and len(content) >= 2 and not organisation and not re.match(
            r"(?:some|any|many|most|few|several|all|each|every|no|other|such|both)\b", subject, re.I) \
            and not re.search(r"\b(?:following|above|below|these|those|remaining|relevant|"
                                                       r"questions|it|this|that)\b", subject, re.I):
        out.append({"question": _question(f"What does the policy say about {subject}"), "style": "about", "slot": kind})
    return out


# What a rule-built question looks like when the statement's grammar was misread: a question word left
# inside the sentence next to a conjunction ("notify who and upload"), a cut-off end ("... of the?"), an
# amount's "up to" left behind ("What can I claim to $600"), a subordinate clause in the subject's place.
_MALFORMED = re.compile(
    r"\b(?:who|which \w+|how many \w+|how much|what percentage|what date) (?:and|or)\b|"
    r"\b(?:of|the|a|an|to|for|with|by|and|or|whose|which|that|from|in|on|at)\?$|"
    r"^what \w+ (?:I|\w+) \w+ to [$£€]?\d|"
    r"^(?:does|do|is|are|can|must|will|should) (?:if|when|where|to|any other)\b|"
    r"\?.+\?|\bI (?:is|are|has|does)\b|\b(?:in|for) (?:that|this) case\b|\bthe above\b|\babove\?|"
    # a subject that points back at a sentence the question does not have: "Does this apply ...?", "Are both of
    # these taxable?", "Does the same rule as above apply?"; a pronoun left at the end: "... interested in this?"
    r"(?:^|, )(?:does|do|is|are|can|will|should|must|was|were|has|have|would|could|may) (?:this|these|those|that|"
    r"they|both|such|the same)\b|\bas above\b|\b(?:this|these|that|those|them)\?$|"
    # a sentence adverb left after the verb ("Are unfortunately, we ...?"), a conjunction at the end ("..., nor?"),
    # a cut number ("What does the policy say about a lump sum equal to 3?")
    r"^\w+ (?:unfortunately|likewise|however|also|instead|otherwise|additionally|alternatively|similarly|"
    r"therefore|thus|finally|first|then),|\b(?:nor|but|as|than|if|because)\?$|\babout [^?]*\b\d+\?$|"
    # a list or an exclamation run into the question, a condition that says nothing
    r"!|\s-\s|:\s*-|(?:^|, )what happens if (?:possible|necessary|needed|applicable|so|not)\?|\?\?|"
    # a subject phrase cut at a comma ("about permissionless time off, PostHog?"), a quote left open ('a "use it?'),
    # a second clause run into a wh-question ("What is managed by Vestwell and we match up to 4%?")
    r"\babout [^?]*, [^?]*\?$|^[^\"]*\"[^\"]*\?$|^(?:what|who|which)\b[^?]* and (?:we|you|I|they)\b|"
    r"\bthis (?:purpose|reason)\b|\b(?:for example|for instance|e\.g)\.?\?$|"
    # a sentence run into the question after a colon the layout lost: "What depends on your salary level The amount ...?"
    r"(?-i:[a-z,] (?:The|This|These|If|When|You|We|Our|Your|An?) [a-z])|"
    # a list cut after its first member: "Who should I notify my, Account Manager?", "used for the birth, adoption?"
    r"\b(?:my|your|our|their|the|a|an), |\b(?:the|a|an|my|your) \w+, \w+\?$|"
    # "What will be deducted from their final pay?": whose, the question never says
    r"\b(?:those|these) \w+s\b(?! (?:who|which|that|whose|with|in|on|at|for|of)\b)|"  # "used for those books"
    r"^(?!who\b)(?:(?!\b(?!(?:does|goes|this|thus|less|unless|always|perhaps|whereas)\b)(?:[a-z]{2,}[^su\W]s|everyone|"
    r"anyone|someone|everybody|staff|people|children|both|each|every|an? \w+|the employee|employee's)\b)[^?])*"
    r"\b(?:their|they|them)\b", re.I)


def malformed(question: str) -> str | None:
    """Why a code-written question does not read as a question, or None when it does."""
    if _MALFORMED.search(question) or question.count("(") != question.count(")"):
        return "malformed question"
    if not 4 <= len(question.split()) <= 36:
        return "question too short or too long"
    return None


def yes_or_no(parts: dict | None) -> str:
    """How the statement answers its own yes/no question: "No." for "... are not paid out", "Yes." for a plain rule,
    "" where a word such as "never" or "only" makes the short reply unsafe."""
    if not parts or re.search(r"\b(?:never|no longer|none|neither|nor|only|unless|except)\b", parts["rest"], re.I):
        return ""
    return "No." if parts["negated"] else "Yes."


def with_topic(question: str, topic: str) -> str | None:
    """ "How many days do I get?" -> "For bereavement leave, how many days do I get?" when the question does not name
    its topic (a question employees ask names the benefit)."""
    if not topic or set(facts_lib.tokens(topic)) <= set(facts_lib.tokens(question)) or not speakable(topic):
        return None
    return f"For {topic_phrase(topic)}, {_lower_first(question)}"


def speakable(topic: str) -> bool:
    """Whether a heading reads as the name of a benefit inside a question: not "You are sick", "How to book time off
    in PTO by Roots" or "Relationship to Law and Employment Contracts"."""
    return len(topic.split()) <= 5 and not names_nothing(topic)


# A heading that is itself a question ("Q: Can I extend my LOA past 4 weeks?", "Q. When are my benefits effective?")
# or a clause ("For general uses and vacation", "If you are sick") does not name a benefit.
# Speaking to the reader anywhere ("Take your leave") is the same, and so is a clause inside ("Reasons someone can take
# leave") or a list of benefits ("Leave types", "Types of leave"): "Is reasons someone can take leave taxed?".
_NOT_A_NAME = re.compile(r"(?:if|when|how|why|what|who|where|which|we|our|my|i|for|to|can|could|should|"
                         r"do|does|is|are|will|may|must|other)\b|.*\b(?:you|your|yours|someone|anyone|everyone|they|"
                         r"can|could|may|might|must|should|would|types?|kinds?)\b", re.I)


def names_nothing(topic: str) -> bool:
    """Whether a heading cannot stand for the benefit inside another question: it asks, opens or holds a clause, lists
    kinds of benefit, speaks to the reader or holds an FAQ ("Quick question about FAQ: ...")."""
    topic = topic.strip()
    return not topic or facts_lib.asks(topic) or bool(_NOT_A_NAME.match(topic)) or facts_lib.faq_container(topic)


# -ing words that qualify a benefit rather than name an act: "Floating holidays", "Qualifying life events"
_MODIFYING = {"floating", "working", "matching", "remaining", "existing", "living", "caring", "continuing",
              "qualifying", "acting", "rolling", "recurring", "outstanding", "accrued", "accruing"}


def names_an_act(topic: str) -> bool:
    """Whether a heading names an act, not a benefit: it opens with a verb or an adverb ("Donating leave", "Requesting
    bereavement leave", "Formally kick-off leave process"). "Quick question about donating leave:" reads well; "Does
    taking donating leave affect my bonus?" does not."""
    words = topic.strip().split()
    if not words:
        return False
    first = words[0].lower()
    kinds = phrasing.lemmas(first)
    if first in _MODIFYING or not kinds:
        return False
    # a gerund with an object of more than one word is an act even where it is also a noun ("Taking advanced leave",
    # "Understanding travel comp time"); with one word, or joined to another noun, it may name a benefit ("Fostering
    # leave", "Training budget", "Learning and development")
    if first.endswith("ing") and "VERB" in kinds and len(words) > 2 and words[1].lower() not in ("and", "or", "&"):
        return True
    if kinds.keys() & {"NOUN", "PROPN", "ADJ"}:
        return False
    # a participle names a kind of benefit ("Paid time off", "Extended illness pay"); a gerund or a bare verb an act
    return "VERB" not in kinds or first.endswith("ing") or first in kinds["VERB"]


def shorter(question: str, keep_condition: bool = False) -> str | None:
    """The question without its condition, list or trailing clause, as employees ask it in few words:
    "Do I have to tell my line manager ... on the first day of absence, if I am unable to work?" -> "... absence?".
    With `keep_condition` only a list or trailing clause goes: a yes/no question's "Yes." may hold only under its
    condition ("Should I let my manager know?" is true if I am sick)."""
    body = question.rstrip("?")
    # "... can I take per calendar year to deal with a serious illness, ...?": the purpose after a period goes too
    patterns = (r",? if I [^?]+$", r" (?:where|when|if|unless|except|provided) [^?]{10,}$",
                r"(?:(?<=year)|(?<=month)|(?<=week)|(?<=days)|(?<=weeks)|(?<=months)|(?<=leave)|(?<=hours)|(?<= off))"
                r" to (?!(?:the|a|an|my|their|be|work)\b)"
                r"[a-z]+ [^?]{8,}$", r"[:,] [^?]+$")
    for pattern in patterns[3:] if keep_condition else patterns:
        cut = re.sub(pattern, "", body).rstrip(" ,:;")
        if cut == body or len(cut.split()) < 6 or re.search(r"\b(?:" + "|".join(phrasing.DANGLING) + r")$", cut, re.I) or \
                re.search(r"\b(?:that|who|which)(?: \w+){0,2}$", cut) or re.search(r"\b(?:in|for) \w+s$", cut):
            # "... in countries where it is market to do so" without its clause: "in countries" says nothing
            continue
        if pattern.startswith("[:,]") and (re.search(r"\b(?:whether|that|which|who|if|when|where|between)\b",
                                                    " ".join(cut.split()[2:]), re.I) or not re.match(
                r"[:,] (?:and|or|but|in|on|at|by|for|with|from|within|before|after|unless|while|provided|giving|"
                r"using|including|less|plus|which|where|when|[a-z]+ing)\b|:", body[len(cut):])):
            continue  # "Should I say whether any urgent work" or "have a safe, private workspace" cut in half
        return cut + "?"
    return None


# How employees open the same question in a chat; used for facts that have fewer forms of their own than wanted.
WRAPPERS = ("According to the policy, {q}", "Quick question about {topic}: {q}", "Under our policy, {q}")
# The openings WRAPPERS puts in front of a question ("According to the policy, ...")
OPENING = re.compile("^(?:" + "|".join(re.escape(w.split("{q}")[0]).replace(re.escape("{topic}"), "[^:?]+")
                                        for w in WRAPPERS) + ")", re.I)


# Draft styles that already open as an employee would, or ask about the topic: another opening in front reads twice
# ("Quick question about books: what should I know ...?").
OPENED_STYLES = ("topic", "wrapped", "keyphrase")


def openings(fact: dict) -> list[str]:
    """WRAPPERS with the fact's topic in them ("Quick question about sick leave: {q}"); the one naming a topic only
    where the topic reads as the name of a benefit."""
    topic = near_miss_topic(fact.get("headings") or [], fact.get("topic") or "")
    wrappers = WRAPPERS if speakable(topic) else [w for w in WRAPPERS if "{topic}" not in w]
    return [w.replace("{topic}", topic_phrase(topic)) for w in wrappers]


def wrapped(drafts: list[dict], fact: dict, wanted: int, distinct: Callable[[str, list[str]], bool]) -> list[dict]:
    """More phrasings of a fact's checked drafts, until `wanted`: each (shortened where it can be) in an opening
    employees use. `distinct(question, others)` says whether a new question is not a near-copy of the others."""
    out: list[dict] = []
    wrappers = openings(fact)
    for item in drafts:
        if len(drafts) + len(out) >= wanted:
            break
        if item["style"] in OPENED_STYLES:
            continue
        for wrapper in wrappers:
            bases = (shorter(item["question"], keep_condition=item["style"] in ("yes_no", "figure_free")),
                     item["question"])
            for base in dict.fromkeys(q for q in bases
                                      if q and item.get("figure", "") in q):
                question = wrapper.replace("{q}", _lower_first(base))
                if len(drafts) + len(out) < wanted and distinct(question, [d["question"] for d in drafts + out]):
                    out.append({**item, "question": question, "style": "wrapped"})
                    break
    return out


def contrasted(items: list[dict], fact_text: str, figure_free: bool = False) -> list[dict]:
    """Each yes/no question answered "Yes." asked instead with a wrong figure where it has one, answered "No."
    (`contrast.py`): a fact's own yes/no question only repeats it. With `figure_free`, the question without its figure
    stays beside it, answered "Yes." (`contrast.without_figure`): otherwise a fact with a figure has only "No." to
    teach, and an employee's "Can I get paid time off for antenatal appointments?" was answered "No."."""
    out = []
    for item in items:
        changed = contrast.wrong_figure(item["question"], fact_text) \
            if item["style"] == "yes_no" and item.get("reply") == "Yes." else None
        out.append({**item, "question": changed[0], "style": "contrast", "reply": "No.", "figure": changed[1]}
                   if changed else item)
        if changed and figure_free and (free := contrast.without_figure(item["question"], fact_text)):
            out.append({**item, "question": free, "style": "figure_free"})
    return out


# A question holding 70% of its fact's content words leaves little to recall: on PostHog 22% of the facts had only
# such questions ("Do we host a monthly book club called BookHog?"), on the sample 12%.
COPYING_SHARE = 0.7


def recall_check(fact_text: str, words: bool = True) -> Callable[[str], bool]:
    """Whether answering a question means recalling part of the fact: a figure or name it leaves out ("How many days
    of compassionate leave can I take?" against "Can I take up to 5 days ...?"), or, with `words`, for a fact with
    neither, most of its words ("What do we use in the UK?" against "In the UK, we use Royal London."). The fact is
    read once; the check is asked of each of its questions."""
    return _recall_check(fact_text, [slot["value"].lower() for slot in slots(fact_text)], words)


def _recall_check(fact_text: str, values: list[str], words: bool) -> Callable[[str], bool]:
    if values or not words:
        return lambda question: _leaves_out(question, values)
    fact_words = _stems(fact_text)
    # a question holding COPYING_SHARE of the fact's content words: its answer can be written back from it
    return lambda question: not fact_words or len(fact_words & _stems(question)) < COPYING_SHARE * len(fact_words)


def recalls(question: str, fact_text: str) -> bool:
    """`recall_check` for one question."""
    return recall_check(fact_text)(question)


def _stems(text: str) -> set[str]:
    return {heuristics.stem(w) for w in heuristics.content_words(text)}


def _leaves_out(question: str, values: list[str]) -> bool:
    asked = question.lower()
    return any(value not in asked for value in values)


def recall_first(drafts: list[dict], fact_text: str, words: bool = True) -> list[dict]:
    """The drafts in the order a fact's few questions are taken: one that makes the model recall a figure or name
    (with `words`, for a fact with neither: most of its words), then a yes/no question with a wrong figure (its
    answer gives the right one), then the other recall questions. A question holding its fact's figures only
    teaches copying them from the question."""
    values = [slot["value"].lower() for slot in slots(fact_text)]  # once per fact, not once per draft
    recalled = _recall_check(fact_text, values, words)
    # "What does the policy say about compassionate leave?" asks for no figure; of a fact without one it asks all
    yes_no = ("contrast", "yes_no", "figure_free")
    not_recall = (*yes_no, "about") if values or not words else yes_no
    recall = [d for d in drafts if d["style"] not in not_recall and recalled(d["question"])]
    contrasts = [d for d in drafts if d["style"] == "contrast"]
    figure_free = [d for d in drafts if d["style"] == "figure_free"]
    head = recall[:1] + contrasts[:1] + figure_free[:1] + recall[1:]
    return head + [d for d in drafts if d not in head]


def templates(fact: dict, contrast_figures: bool = True, figure_free: bool = False) -> list[dict[str, str]]:
    """Code-written questions about one fact, most specific first: [{"question", "style", "slot"}]. With
    `contrast_figures`, a yes/no question with a figure asks a wrong one and is answered "No.", and with
    `figure_free` it is also asked without the figure, answered "Yes." (`contrasted`)."""
    found = slots(fact["text"])
    kind = found[0]["kind"] if found else "statement"
    out: list[dict[str, str]] = []
    # A question that names its row or term ("What is the minimum notice for unpaid leave?") points at its fact by
    # construction, however many other facts share its words: it is "anchored" (no section-ranking check).
    if fact.get("kind") == "table_row":
        out += [{"question": q, "style": "table", "slot": kind, "anchored": True} for q in table_questions(fact)]
    elif fact.get("kind") == "list_item":
        out += [{**item, "anchored": item["style"] in ("definition", "case", "member")}
                for item in list_item_questions(fact)]
    if not out and not fact.get("intro"):  # a list item is asked as its opening reads with it, or not at all
        out += sentence_questions(fact["text"], fact.get("topic") or "")
    if contrast_figures:
        out = contrasted(out, fact["text"], figure_free)
    # a shorter form must keep the wrong figure its "No." denies
    out += [{**item, "question": short, "style": "short"} for item in list(out)
            if item["style"] in ("yes_no", "wh", "what", "contrast")
            and (short := shorter(item["question"], keep_condition=item["style"] == "yes_no"))
            and item.get("figure", "") in short]
    topical = [with_topic(item["question"], fact.get("topic") or "") if item["style"] != "about" else None
               for item in out[:2]]
    out += [{**item, "question": q, "style": "topic"} for q, item in zip(topical, out) if q]
    # "Do we care about my results, not how long you work?": a first-person question keeps one person throughout
    out = [{**item, "question": phrasing.you_as_me(item["question"])} for item in out]
    seen, unique = set(), []
    for item in out:
        key = item["question"].lower()
        if item["question"] and key not in seen and not malformed(item["question"]):
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


def about_the_task(question: str) -> str | None:
    """Why a teacher's reply asks about the prompt ("Which form does the sentence name?"), not the policy; else None."""
    if re.search(r"\b(the excerpt|that asks|this question|the sentence|key sentence|the text above|this request)\b",
                 question, re.I):
        return "question talks about the task, not the topic"
    return None


def consistent(question: str, fact: dict, section_index: facts_lib.Index, margin: float = 1.05,
               min_shared: int = 1) -> str | None:
    """None when the question points at its fact more than at any other fact of the section; else why not.

    `min_shared`: content words (besides the topic's) the question must share with its fact; a teacher's
    rewording is held to more than the code's own drafts, which are cut from the fact."""
    if problem := about_the_task(question):
        return problem
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
    """The benefit a near-miss question names: the subsection, or its parent where the subsection name is generic;
    its first name only ("Jury duty / voting / childcare disasters, aka 'life stuff'" -> "Jury duty")."""
    names = [facts_lib.heading_name(h) for h in headings if h and h.strip()]
    if _GENERIC_HEADING.search(topic) and len(names) >= 2:
        topic = names[-2]
    topic = topic.split(": ", 1)[-1]  # "PostHog Handbook: Time Off, Benefits and Training" names "Time Off"
    topic = re.split(r"\s+/\s+|,\s*aka\b|,\s|\s+\(", topic)[0].strip()
    return re.sub(r"(?<=\bLeave) Act$", "", topic, flags=re.I)  # the leave a law gives: "Family Medical Leave Act"


def unanswerable_candidates(section_facts: list[dict], templates_by_aspect: dict[str, dict], benefit_topics: str = ".",
                            not_a_benefit: str = r"$^") -> list[dict]:
    """Near-miss questions about a section's topic, every phrasing of each aspect its facts never mention and that
    fits the topic: the topic names a benefit (`benefit_topics`, not `not_a_benefit`) and the aspect's own "topics"."""
    # text under no heading names no benefit to ask about ("Can I use the policy while on probation?")
    topic = near_miss_topic(section_facts[0].get("headings") or [], section_facts[0].get("topic") or "")
    if names_nothing(topic) or names_an_act(topic) or not re.search(benefit_topics, topic, re.I) or \
            re.search(not_a_benefit, topic, re.I):
        return []
    text = " ".join(f["text"] for f in section_facts).lower()
    if re.search(r"\b(?:do(?:es)?n[o']?t|not|never|no longer)\s+(?:offer|provide|have|cover|apply|exist)", text.replace("'", "'")):
        return []  # "PostHog doesn't offer sabbaticals": whatever is asked about them, the section answers "none"
    out = []
    for aspect, spec in templates_by_aspect.items():
        if spec.get("topics") and not re.search(spec["topics"], topic, re.I):
            continue
        if any(cue.lower() in text for cue in spec["cues"]):
            continue
        for template in spec["questions"]:
            out.append({"aspect": aspect, "question": _agree(_question(template.format(topic=topic_phrase(topic))),
                                                             topic_phrase(topic)),
                        "cues": spec["cues"], "topic": topic})
    return out


def _agree(question: str, topic: str) -> str:
    """"Is floating holidays different ...?" -> "Are floating holidays different ...?": the verb before a plural topic."""
    plural = " and " in topic or re.search(r"[a-z]s$", topic) and not re.search(r"(?:ss|us|is)$", topic)
    for singular, many in (("Is", "Are"), ("Does", "Do"), ("Has", "Have")):
        if plural and question.lower().startswith(f"{singular} {topic}".lower()):
            return f"{many}{question[len(singular):]}"
    return question


def answered_elsewhere(question: str, cues: list[str], index: facts_lib.Index, topic: str = "", k: int = 20,
                       other_topics: set[str] = frozenset(), by_heading: bool = True, doc: str | None = None) -> dict | None:
    """A fact of the whole document that may answer the question: one holding an aspect cue word among the k facts
    most like the question, or anywhere in a fact that names the topic's distinctive words (in its text, or with
    `by_heading` in its headings too). Among the k most alike,
    a fact that names another topic's distinctive words and none of this one's (`other_topics`) is about that other
    topic: "Study leave is available after 12 months ... performance" does not say whether sick leave counts
    against a performance review. With `doc`, a fact of another document answers only if it names the topic: among
    four policies, "Employees sign a repayment agreement" (one) does not answer "Who signs off on sick leave?" (another),
    and such matches took 18F's near misses from 380 alone to 14.

    A section's own facts fill the top of the ranking ("The recognised holidays are: ..." ten times), so the
    ranking alone missed "Contractors ... are not covered by this policy" for "Do public holidays apply to
    contractors?"; and the deadline of unpaid leave sits in another subsection than the one asked about."""
    def holds_cue(fact: dict) -> bool:
        lowered = fact["text"].lower()
        return any(cue.lower() in lowered for cue in cues)

    own = index.distinctive(facts_lib.tokens(topic))
    foreign = set(other_topics) - own
    about = index.about(own) if by_heading else index.naming(own)
    about_ids = {fact["id"] for fact in about}
    for fact, _ in index.top(question, k):
        if foreign & set(facts_lib.tokens(fact["text"])) and fact["id"] not in about_ids:
            continue
        if doc is not None and fact.get("doc") != doc and fact["id"] not in about_ids:
            continue
        if holds_cue(fact):
            return fact
    for fact in about:
        if holds_cue(fact):
            return fact
    return None
