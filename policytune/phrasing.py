"""Turning a policy statement into the questions an employee would type, by rule.

The 135M teacher rewords poorly, so the code writes questions that read as English on their own:
a yes/no question made by inverting the statement's main clause ("Forfeited days are not paid
out." -> "Are forfeited days paid out?"), a wh-question that fronts the slot asked about ("How many
days of annual leave do I receive per year?"), and "what does the policy say about <subject>?".
Statements about employees are asked in the first person, as employees ask. Where the grammar is
not recognised these return None rather than a malformed question.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

_MODALS = {"may": "can", "can": "can", "cannot": "can", "must": "must", "will": "will", "should": "should",
           "shall": "will", "would": "would", "could": "could"}
_BE_HAVE_DO = {"is", "are", "was", "were", "has", "have", "does", "do"}
# words that can only go on a subject before them: "Employees on probation: [-] Cannot take ..."
MODAL_OR_BE = {*_MODALS, *_BE_HAVE_DO, "am"}
_OBJECT_VERBS = {"receive", "get", "take", "claim", "use", "submit", "complete", "provide", "upload", "keep", "offer",
                 "cover", "include", "reimburse", "accrue", "earn", "book", "request", "need", "require", "repay",
                 "declare", "attach", "bring", "fill"}
# "What happens to X?" reads well where X is something done to (forfeited, paid out, carried over ...)
_HAPPENS_TO = re.compile(r"(?:forfeited|paid|carried|deducted|reimbursed|lost|suspended|recorded|credited|cancelled|"
                         r"extended|refunded|transferred|reduced|converted|rolled|counted|kept|held|"
                         r"frozen|continued|stopped|withdrawn|returned|prorated|pro-rated)$")
# Words that open an object: "works on", "receives the", "matches 100%" make the word before them a verb.
_OBJECT_START = {"the", "a", "an", "their", "his", "her", "my", "its", "our", "your", "everyone", "everybody",
                 "anyone", "people", "us", "you", "team", "teams", "staff", "employees", "over", "out", "off", "back",
                 "down", "away", "this", "these", "those", "any", "each",
                "every", "no", "all", "some", "up", "to", "on", "for", "in", "at", "with", "from", "only", "both",
                "it", "them", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "whole", "half", "full", "paid", "unpaid", "additional", "reasonable", "same"}


# Company-name endings: a phrase or subject ending in one names an organisation, not a benefit or a provider's product.
COMPANY_SUFFIXES = ("Ltd", "Inc", "LLC", "plc")


@lru_cache(maxsize=None)
def lemmas(word: str) -> dict:
    """lemminflect's lemmas of `word` by part of speech ({"NOUN": ("leave",), "VERB": ("leave",)})."""
    import lemminflect

    return lemminflect.getAllLemmas(word)


def verb_form(word: str, previous: str = "", following: str = "", plural: bool = False,
              named_subject: bool = False) -> tuple[str, str] | None:
    """(base form, "does" or "do") when `word` reads as the present-tense verb of a statement, else None.

    The lexicon says what a word can be; position decides between readings: "holidays" after "Floating"
    is a noun, "works" before "on" is a verb, and a plural verb follows a plural subject (`plural`: the subject so
    far holds a plural noun, as in "Employees on contracts of 6 months or longer receive"; `named_subject`: the
    subject is a determiner and one noun, as in "The company matches")."""
    lowered = word.lower().strip(",")
    if not lowered.isalpha() or previous in _NOT_BEFORE_VERB:
        return None
    forms = lemmas(lowered)
    if "VERB" not in forms:
        return None
    base = forms["VERB"][0]
    ambiguous = any(pos in forms for pos in ("NOUN", "ADJ", "PROPN"))
    starts_object = following in _OBJECT_START or following[:1].isdigit() or following[:1] in "£$€"
    if lowered != base and lowered.endswith("s"):
        if ambiguous and not following:
            return None  # "... information services" ending the clause is a noun
        return (base, "does") if not ambiguous or starts_object or named_subject else None
    if lowered != base and re.search(r"(?:ed|ent|ook|ave|ade|ought|old)$", lowered) and \
            previous in ("we", "they", "you", "i", "he", "she", "it"):
        return (base, "did")  # "We extended our bereavement policy": a past tense straight after a pronoun
    if lowered == base:
        plural_subject = previous.endswith("s") or previous in ("they", "we", "you", "i", "staff", "people")
        if not ambiguous:
            return (base, "do") if plural_subject or plural else None
        pronoun = previous in ("they", "we", "you", "i")  # "We offer parental leave": after a pronoun, a verb
        return (base, "do") if plural_subject and (starts_object or pronoun) else None
    return None


# "An employee who works on a recognised public holiday receives ..." -> "... if I work on a recognised public holiday?"
# Only an employee as such: "Hourly-paid employees clock in" is not "Do I clock in?" for every reader.
_EMPLOYEE = re.compile(r"^(?:all |any |every |each )?(?:employees?|staff|"
                       r"staff members?|the employee|an employee|the employees|you|team members?|teammates?)"
                       r"(?: (who|whose|that) (.+))?$", re.I)
_LEAD = re.compile(r"^((?:where|if|when|once|after|before|during|for|on|at|following|unless|while|until|in|from|as|to|because|"
                   r"although|since|wherever|whenever|like|unlike|whether|here (?:at|in))\b[^,]{3,160}),\s+",
                   re.I)
_CUT = re.compile(r";|:\s+(?=(?:The|This|These|You|We|If|When|It|They|Your|Our)\s)|\s[—–-]\s|"
                  r", (?:for example|e\.g\.|which|including|unless|otherwise|so that|and|or|but|plus|in which|"
                  r"whichever|whether)\b|\.\s|\s\("
                  # a second clause with its own subject: "contribute 5% and PostHog contributes 4%", "and we match"
                  r"|\s(?:and|but) (?=[A-Z][a-z]+[A-Za-z]* [a-z]+s\b|(?:we|they|you|he|she) [a-z]+\b)")
_ADVERBS = {"also", "only", "normally", "usually", "always", "strongly", "generally", "still", "then", "now", "often",
            "typically", "automatically", "currently", "actively", "fully", "already"}
_NOT_BEFORE_VERB = {"the", "a", "an", "to", "of", "and", "or", "for", "in", "on", "with", "by", "this", "that", "their",
                    "its", "any", "each", "every", "no", "not"}
_PREPOSITIONS = {"by", "on", "from", "until", "before", "after", "within", "at", "for", "in", "to", "through", "via",
                 "with", "under"}
_DROP_BEFORE_AMOUNT = re.compile(r"\b(?:up to|at least|a maximum of|a minimum of|no more than|no less than|"
                                 r"at most|more than|less than|over|under)\s+$", re.I)


# Words that start a statement in capitals only because they start it; any other capitalised word
# ("Northwind", "Leave" of a heading) is kept as written inside a question.
_FUNCTION_WORDS = set("""a an the this these those that each every any all some no our your their its his her my if in on
for by within after before during under to through where when once while until unless following from as is are am do at with
does can must may should will how what which who whom whose why there it they we you i employees employee staff leave
requests claims pay hours days weeks months time work managers line""".split())


# Words a shortened question cannot end on: "Must I give notice to the?"
DANGLING = frozenset({"the", "a", "an", "of", "to", "for", "in", "on", "at", "by", "or", "and", "with", "from", "their",
                      "its", "that", "which", "who", "is", "are", "be", "even", "only", "just"})

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"  # for patterns: "31 March", "1st of January"
PROPER_NOUNS: set[str] = set()  # the document's names while `document_names` is in effect
ORGANISATION: set[str] = set()  # names in many of its statements: the organisation itself ("PostHog", "Northwind")


@contextmanager
def document_names(names: set[str], organisation: set[str] = frozenset()) -> Iterator[None]:
    """While drafting one document's questions: the words it only ever writes capitalised ("Northwind", "PeopleHub"),
    kept as written in questions, and the organisation's own name, which is never the system or form asked about."""
    saved = set(PROPER_NOUNS), set(ORGANISATION)
    PROPER_NOUNS.clear()
    PROPER_NOUNS.update(names)
    ORGANISATION.clear()
    ORGANISATION.update(organisation)
    try:
        yield
    finally:
        PROPER_NOUNS.clear()
        PROPER_NOUNS.update(saved[0])
        ORGANISATION.clear()
        ORGANISATION.update(saved[1])


def lower_first(text: str) -> str:
    """ "The wellness allowance" -> "the wellness allowance"; "Northwind", "PeopleHub" and "TOIL" stay as written."""
    words = text.split(" ", 2) if text else [""]
    first = words[0].strip("\"'(“")
    if not first or first == "I" or re.fullmatch(r"[A-Z0-9-]{2,}|[A-Z][a-z]+[A-Z]\w*", first):
        return text
    if first.lower() in _FUNCTION_WORDS:
        return text[0].lower() + text[1:]
    # without the document's names (a statement asked on its own) a word the English lexicon does not know is a name
    name = first in PROPER_NOUNS or (not PROPER_NOUNS and not lemmas(first.lower().split("-")[0])) or \
        (len(words) > 1 and re.match(r"[A-Z]", words[1]) is not None)  # "Form MED-1", "Meridian Health"
    return text if name else text[0].lower() + text[1:]


_CONTRACTIONS = {"won't": "will not", "can't": "cannot", "don't": "do not", "doesn't": "does not", "isn't": "is not",
                 "aren't": "are not", "it's": "it is", "they're": "they are", "we're": "we are", "you're": "you are",
                 "we've": "we have", "you've": "you have", "didn't": "did not", "shouldn't": "should not",
                 "wouldn't": "would not", "haven't": "have not", "hasn't": "has not", "we'll": "we will",
                 "you'll": "you will"}


def _tidy(text: str) -> str:
    """The statement without the asides that interrupt its clause (", or decline cover,", "(including weekends)"),
    contractions spelled out, and a handbook's instruction ("Please take at least 2 weeks", "Book it in Slack") read
    as what the reader should do ("You should take at least 2 weeks")."""
    text = " ".join(text.replace("’", "'").split())
    text = re.sub(r"\b(" + "|".join(_CONTRACTIONS) + r")\b",
                  lambda m: _CONTRACTIONS[m.group(1).lower()] if m.group(1).islower() else
                  _CONTRACTIONS[m.group(1).lower()].capitalize(), text, flags=re.I)
    text = re.sub(r"^(?:Instead|However|Also|Additionally|Otherwise|In addition|In practice|Generally|Usually|"
                  r"Typically|Of course|Importantly|Note that|So|But|And|After this|After that|Then|Unfortunately|"
                  r"Fortunately|In other words|As always|As a rule of thumb|Yes),?\s+", "", text)
    text = text[:1].upper() + text[1:]
    text = re.sub(r"^Please\s+", "You should ", text)
    # "If you are hourly, yes please adjust the hours": the instruction after a condition, read the same way
    text = re.sub(r"^((?:If|When|Once|While|Before|After|Whenever)\b[^,]*),\s+(?:yes,?\s+)?please\s+", r"\1, you should ",
                  text)
    words = text.split(" ", 2)
    if len(words) == 3 and words[0][:1].isupper() and words[0].lower() not in _FUNCTION_WORDS | {"like"} and \
            lemmas(words[0].lower()).get("VERB") == (words[0].lower(),) and \
            words[1].lower() in _OBJECT_START | {"as", "it", "them", "us", "out", "up", "off"}:
        text = f"You should {words[0].lower()} {words[1]} {words[2]}"  # "Take as much time as you need"
    text = re.sub(r"\b(Ltd|Inc|Co|No|e\.g|i\.e|etc)\.", r"\1", text)
    # "Unplanned absences, such as sickness, bereavement and family emergencies, are reported": the example list runs
    # to the comma before the verb
    text = re.sub(r", (?:such as|including|for example|e\.g\.) [^;]{1,100}?,(?= (?:are|is|must|may|can|will|should|do|"
                  r"does|have|has|cannot)\b)", "", text)
    # an aside runs to its closing comma, not to the comma inside "$3,400"
    text = re.sub(r", (?:(?:or|and) )?(?:who|which|whose)\b(?:[^,;]|(?<=\d),(?=\d)){1,90},(?!\d)", "", text)
    text = re.sub(r", (?:under|where possible)\b(?:[^,;]|(?<=\d),(?=\d)){1,60},(?!\d)", "", text)
    text = re.sub(r",? (?:such as|for example|e\.g\.)\b[^;]*", "", text)  # an example list runs to the clause's end
    # an aside ("..., or decline cover, in writing"), not the last member of a list ("childbirth, adoption, or foster
    # placement to ...")
    text = re.sub(r"(?<!,)( \w+), (?:or|and|but) (?:\w+ ){1,3}\w+,(?= (?:in|on|at|by|to|for|with|through|from|within)\b)",
                  r"\1", text)
    return re.sub(r"\s*\([^()]{1,80}\)", "", text)


def main_clause(text: str) -> str:
    """The statement up to its first clause break (";", ", for example", ", which" ...), without the full stop."""
    text = _tidy(text)
    # ", or" / ", and" after a list's members ("childbirth, adoption, or foster placement") ends the list, not the clause
    match = next((m for m in _CUT.finditer(text) if not (re.match(r", (?:and|or)\b", m.group(0))
                                                       and re.search(r",\s*[A-Za-z][\w-]*$", text[: m.start()]))), None)
    clause = text[: match.start()] if match else text
    return clause.strip().rstrip(".:,")


def _split_lead(text: str) -> tuple[str, str]:
    """ "If an employee resigns, or is dismissed, after receiving it, they must repay ..." -> (the condition, the rest):
    the condition runs to the first comma after which a subject starts."""
    match = _LEAD.match(text)
    if not match:
        return "", text
    for comma in re.finditer(r",\s+", text):
        if comma.start() < len(match.group(1)):
            continue
        rest = text[comma.end():]
        first = rest.split(" ", 1)[0]
        if first.islower() and first not in _FUNCTION_WORDS and (not lemmas(first) or set(lemmas(first)) <= {"ADJ", "ADV"}):
            continue  # "As we have unlimited, permissionless time off, PostHog ...": a list of modifiers, not a subject
        if re.match(r"[A-Z][a-z]+(?:,| &| and) ", rest):
            continue  # "For Ireland, Spain, Netherlands, Portugal & Canada the health insurer ...": a list of names
        if re.match(r"[a-z][\w' -]{0,40}? (?:or|and) [\w' -]{1,40},\s+(?:you|we|they|I|employees|staff|teammates)\b", rest):
            continue  # "For birth, adoption or placement of a new child, you can use ...": the lead's list runs on
        if not re.match(r"(?:or|and|after|before|including|such as|for|in|on|with|which|who|unless|except|but|if|when|"
                        r"where|while|once)\b", rest, re.I):
            return text[: comma.start()], rest
    return "", text


def clauses(text: str) -> list[str]:
    """The statement, then each later sentence or clause that stands on its own ("...; a half day is 3.75 hours",
    "... . The dates of each block may be changed ..."): each is asked about in its own right."""
    text = " ".join(text.split())
    out = [text]
    for piece in re.split(r"(;\s+|(?<=[a-z0-9)])\.\s+(?=[A-Z])|,\s+(?:but|and|or|while|whereas)\s+(?=(?:the|a|an|any|this|"
                          r"these|they|it|employees?|[A-Z]\w+)\b))", text)[2::2]:
        piece = piece.strip()
        parts = parse(piece) if piece else None
        # after ", and" / ", or" only a clause with its own auxiliary: "..., or any other reason the employee chooses"
        # is a noun phrase, not a statement
        if parts and (parts["verb"] == "" or not re.search(r",\s+(?:but|and|or|while|whereas)\s+$", text[: text.find(piece)])):
            out.append(piece[0].upper() + piece[1:])
    return out


# "you" as an object: after a preposition or one of these verbs ("contact you"), or before what follows an object
# ("pay you according to", "expect you to", "remove you from") rather than a verb ("if you spend")
_YOU_OBJECT = re.compile(r"\b(?:(to|for|with|about|from|on|at|of|by|help|let|ask|tell|give|require|trust|contact) you\b|"
                         r"you(?=\s+(?:to|according|for|with|from|a|an|the|some|any|up|back|in|at|on|by|as|well)\b|"
                         r"[?,.]))")


def _you_as_object(text: str) -> str:
    return _YOU_OBJECT.sub(lambda m: f"{m.group(1)} me" if m.group(1) else "me", text)


def _first_person(rest: str) -> str:
    rest = re.sub(r"\b(?:they are|I am) members of\b", "I am a member of", rest)
    rest = re.sub(r"\b(their|his or her|the employee's|your)\b", "my", rest)
    rest = re.sub(r"\b(?:you|they) are\b", "I am", rest)
    rest = re.sub(r"\bthey were\b", "I was", rest)
    rest = _you_as_object(rest)
    rest = re.sub(r"\byou\b", "I", rest)
    rest = re.sub(r"\bthemselves\b", "myself", rest)
    rest = re.sub(r"\bthem\b", "me", rest)
    return re.sub(r"\bthey\b", "I", rest)


def you_as_me(question: str) -> str:
    """A question asked in the first person with the handbook's "you" left in it, in the first person throughout:
    "Do we care about my results, not how long you work?" -> "..., not how long I work?"."""
    if not re.search(r"\b(?:I|my|me)\b", question) or not re.search(r"\byou(?:r|rs|rself)?\b", question, re.I):
        return question
    question = re.sub(r"\byou are\b", "I am", question)
    question = re.sub(r"\byou were\b", "I was", question)
    question = re.sub(r"\byourself\b", "myself", question)
    question = re.sub(r"\byours\b", "mine", question)
    question = re.sub(r"\byour\b", "my", question)
    question = _you_as_object(question)
    return re.sub(r"\byou\b", "I", question)


def _verb_to_base(clause: str) -> str:
    """ "works on a holiday" -> "work on a holiday" (the verb of a who-clause, for "if I ...")."""
    words = clause.split()
    form = verb_form(words[0], "they", words[1] if len(words) > 1 else "the") if words else None
    if words and words[0].lower() in ("is", "are", "was", "were"):
        words[0] = "am" if words[0].lower() in ("is", "are") else "was"
    elif words and words[0].lower() == "has":
        words[0] = "have"
    elif form:
        words[0] = form[0]
    return " ".join(words)


def parse(text: str) -> dict | None:
    """The main clause split into lead ("Where ..."), subject, auxiliary and the rest; None when not recognised.

    {"lead", "subject", "aux" (modal/be/have/do or a do-support "do"/"does"), "verb" (base form under
    do-support, else ""), "rest", "negated", "person" ("I" when the subject is the employee, else "")}"""
    lead, clause = _split_lead(_tidy(text).rstrip("."))
    clause = main_clause(clause)
    words = clause.split()
    relative = 0  # verbs after "who"/"that" belong to the relative clause ("who do not have ..." holds two)
    skip_noun = False
    # "Employees whose working hours do not allow them enough time to vote ... may take": an employee subject with a
    # relative clause can be long, and becomes the question's condition
    employee_subject = bool(_EMPLOYEE.match(clause))
    window, longest = (26, 24) if employee_subject else (18, 16)
    for i, word in enumerate(words[:window]):
        lowered = word.lower().strip(",;:")
        if skip_noun:  # "whose partner gives birth": the noun after "whose" is not a verb
            skip_noun = False
            continue
        following_word = words[i + 1].lower().strip(",") if i + 1 < len(words) else ""
        # "that" opens a relative clause before a verb ("benefits that apply"), not before a noun ("that maximum")
        if lowered == "whose":
            relative, skip_noun = 1, True
            continue
        if lowered in ("who", "which") or (lowered == "that" and (
                following_word in _MODALS or following_word in _BE_HAVE_DO or "VERB" in lemmas(following_word))):
            relative = 1
            continue
        if i == 0:
            continue
        # the subject's last word, past an adverb: "We also offer", "we strongly encourage"
        back = i - 1
        while back > 0 and words[back].lower() in _ADVERBS:
            back -= 1
        previous = words[back].lower()
        following = words[i + 1].lower() if i + 1 < len(words) else ""
        plural = any(w.lower().endswith("s") and not w.lower().endswith("ss") or w.lower() == "and" for w in words[:i])
        named = (i == 2 and words[0].lower() in ("the", "a", "an", "each", "every", "this", "our")) or bool(
            i >= 2 and re.match(r"[A-Z]", words[i - 1]) and following and following.strip(",") not in _MODALS
            and following.strip(",") not in _BE_HAVE_DO)  # "The Employee Assistance Programme offers"
        # "... enough time to vote in a public election ... may take": an infinitive is never the finite verb
        # "The specific dates are published": a word followed by an auxiliary ends the subject, it is not the verb
        form = verb_form(lowered, previous, following, plural, named) \
            if i and words[i - 1].lower() != "to" and following.strip(",") not in _MODALS \
            and following.strip(",") not in _BE_HAVE_DO else None
        if relative == 2 and lowered == "not":
            continue
        if relative == 2 and (form or "VERB" in lemmas(lowered.strip(","))) and \
                previous in (_MODALS.keys() | _BE_HAVE_DO | {"not"}):
            relative = 0  # "who do not allow": the lexical verb after the relative clause's auxiliary
            continue
        if relative == 1 and ("VERB" in lemmas(lowered.strip(",")) or lowered in _MODALS or lowered in _BE_HAVE_DO):
            relative = 2 if lowered in _MODALS or lowered in _BE_HAVE_DO else 0
            continue
        aux, verb = None, ""
        if lowered in _BE_HAVE_DO and re.search(r"\b(?:who|that|which)\b", " ".join(words[:i]), re.I) and any(
                w.lower() in _MODALS for w in words[i + 1:18]):
            continue  # "An employee who believes a request has been declined may appeal": the verb is "may appeal"
        if lowered in _MODALS or lowered in _BE_HAVE_DO:
            aux = lowered
        elif form:
            verb, aux = form
        if aux is None:
            continue
        subject = " ".join(words[:back + 1]) if back < i - 1 else " ".join(words[:i])  # "We also" -> "We"

        # "The reason we think ...": a subject ending in a pronoun is a clause's subject; "The better you are ..., the
        # better ...": a comparison, not a statement about a subject
        if re.search(r"\w \b(?:we|you|they|I|he|she)$", subject) or \
                re.match(r"the (?:better|more|less|sooner|earlier)\b", subject, re.I):
            return None
        if len(words[:i]) > longest or re.search(r"\bthat (?:the|a|an|their|its)\b|^(?:nothing|none|no one)\b", subject, re.I):
            return None  # too long, or "fees for modules that the employee fails ...": a relative clause's subject
        if not lead and re.match(r"(?:during|in|on|after|before|for|within|from|following|under|to)\b", subject, re.I):
            # "During the 3-month probationary period an employee may ...", "To take maternity leave the employee must":
            # the subject starts at its last determiner
            starts = [m.start() for m in re.finditer(r"\b(?:an?|the|each|every|all|any|we|you|they|employees)\b", subject,
                                                     re.I) if m.start()]
            if starts and (len(subject[: starts[-1]].split()) >= 2 or
                           re.match(r"(?:we|you|they|employees)\b", subject[starts[-1]:], re.I)):
                lead, subject = subject[: starts[-1]].strip(" ,"), subject[starts[-1]:]
        if re.match(r"(?:if|when|where|unless|while|whether|although|because|as|once|to|since|after|before|during|"
                    r"until|with|without|by|in|on|at|for|under|outside)\b", subject, re.I) and not lead:
            return None  # a subordinate clause too long to split off: not a subject
        rest = " ".join(words[i + 1:])
        negated = False
        if aux == "cannot" or re.match(r"not\b", rest):
            negated = True
            rest = re.sub(r"^not\s+", "", rest)
        if verb == "" and aux in ("does", "do") and rest:  # "does not include" -> aux "does", verb "include"
            first, _, tail = rest.partition(" ")
            if negated or "VERB" in lemmas(first.lower()):
                verb, rest = first, tail
            else:  # "We do regular team offsites": "do" is the verb itself
                verb = "do"
        if aux in ("has", "have") and rest and not re.match(r"(?:been|\w+(?:ed|en|wn|ne|ght))\b", rest.split()[0]):
            aux, verb = ("does" if aux == "has" else "do"), "have"  # "We have an annual budget": to have, not a tense
        # "must be taken as whole days and require ..." asks about the first of two coordinated verbs only.
        second_clause = re.search(r",?\s(?:and|but)\s(?:the|a|an|any|their|this|these|our|your)\s\w+\s(?:\w+\s)?"
                                  r"(?:is|are|will|must|may|can|\w+s)\b", rest)
        if second_clause:  # "rolls over and the contribution limit resets": a second statement
            rest = rest[: second_clause.start()]
        for coordinated in re.finditer(r"\s(?:and|or)\s(?:not\s)?(\w+)\s?(\w*)", rest):
            word, after = coordinated.group(1).lower(), coordinated.group(2).lower()
            if not verb and " " not in rest[: coordinated.start()] and word not in _MODALS and word not in _BE_HAVE_DO:
                continue  # "must approve or decline a request": two verbs sharing one object stay together
            if after == "to" and word.endswith("s") and word not in _BE_HAVE_DO:
                continue  # "encourage people and teams to meet up": a plural noun with its infinitive
            if word in _MODALS or word in _BE_HAVE_DO or verb_form(word, "employees", after):
                rest = rest[: coordinated.start()]
                break
        if not rest and not verb:
            return None  # "Employees are encouraged, but ..." leaves nothing to ask
        if not verb and len(rest.split()) < 2 and aux in _MODALS:
            return None  # "should complete" with its object cut away asks nothing
        if re.search(r":(?!\d)", subject):
            return None  # "US teammates: Please use the links below": a label and an instruction, not a subject
        person, condition = "", ""
        employee = _EMPLOYEE.match(subject)
        if subject.lower() in ("they", "he or she") and re.search(r"\b(?:an|the) employee\b", lead):
            person, lead = "I", _clause_first_person(lead)  # "If an employee resigns, ..., they must repay"
        elif employee:
            person = "I"
            if employee.group(1) and employee.group(1).lower() == "whose":
                # "whose partner gives birth" -> "if my partner gives birth"; "... allow them" -> "... allow me"
                condition = _first_person(f"if my {employee.group(2)}")
            elif employee.group(1):
                condition = _first_person(f"if I {_verb_to_base(_first_person(employee.group(2)))}")
        return {"lead": f"{lead}, {condition}" if lead and condition else lead or condition, "condition": lead,
                "subject": subject, "aux": aux, "verb": verb, "rest": rest, "negated": negated, "person": person}
    return None


def _aux_for(parts: dict) -> str:
    aux = parts["aux"]
    if parts["person"]:
        aux = {"is": "am", "are": "am", "was": "was", "were": "was", "has": "have", "does": "do"}.get(aux, aux)
        if aux == "must":
            return "do I have to"
        return f"{_MODALS.get(aux, aux)} I"
    return f"{_MODALS.get(aux, aux)} {lower_first(parts['subject'])}"


def _finish(text: str) -> str:
    text = " ".join(text.split()).strip(" ,;:.")
    text = re.sub(r"\s+([,;:?])", r"\1", text)
    return text[0].upper() + text[1:] + "?" if text else ""


def _tail(parts: dict, body: str) -> str:
    # "you" in a handbook is the employee asking: "if you need ..." -> "if I need ..."
    body = _first_person(body) if parts["person"] else re.sub(r"\byour\b", "my", body)
    lead = _first_person(parts["lead"]) if re.search(r"\byou\b", parts["lead"]) else parts["lead"]
    if lead:
        lead = lower_first(lead)
        return f"{body}, {lead}" if parts["person"] and lead.startswith("if I") else f"{body} {lead}"
    return body


def polar(text: str, max_words: int = 34) -> str | None:
    """ "Forfeited days are not paid out." -> "Are forfeited days paid out?"; None when not recognised."""
    parts = parse(text)
    if not parts:
        return None
    whole = _tidy(text).rstrip(".")
    following = whole[whole.find(parts["rest"]) + len(parts["rest"]):] if parts["rest"] in whole else ""
    if "," in parts["rest"] and re.match(r",? (?:or|and) ", following):
        return None  # the clause was cut inside a list: "outside of your birthday kit, work anniversary kit"
    first, _, after = parts["rest"].partition(",")
    # "outside of your birthday kit, work anniversary kit, or new hire kit": a list is not cut at its first comma
    in_list = re.match(r"\s*(?:[\w'-]+ ){0,4}[\w'-]+,? (?:or|and) ", after)
    for rest in (parts["rest"],) + (() if in_list else (first,)):
        body = " ".join(w for w in (_aux_for(parts), parts["verb"], rest) if w)
        for question in (_finish(_tail(parts, body)), _finish(body)):  # long: without its list, then its condition
            if len(question.split()) <= max_words:
                return question
    return None


def wh(text: str, slot: dict, wh_phrase: str, max_words: int = 34) -> str | None:
    """A question that fronts the slot: "Carried-over days must be used by 31 March." -> "By what date must
    carried-over days be used?". None where the slot is not inside the clause after the verb."""
    parts = parse(text)
    if not parts or parts["negated"]:
        return None  # "must not exceed 48 hours" asked as "how many hours must it exceed?" inverts the rule
    rest = parts["rest"]
    value = slot["value"]
    at = rest.find(value)
    if at < 0:
        return None
    before, after = rest[:at], rest[at + len(value):]
    if "," in before:
        return None  # "amend this policy ..., giving employees at least 30 days' notice" does not front
    if re.search(r"\b(?:unless|if|when|where|because|although|while|that|which|who|whose)\b", before, re.I):
        return None  # the slot belongs to a subordinate clause ("forfeited unless the line manager cancelled ...")
    if slot["kind"] in ("quantity", "money", "percent"):
        if re.search(r"\d", before):
            return None  # "contribute 5% and PostHog contributes 4%": the second figure's clause does not front
        if slot["kind"] != "quantity" and re.match(r"\s+[a-z]+\b", after) and \
                not re.match(r"\s+(?:of|per|a|an|each|every|in|on|at|for|from|to|and|or|if|when|up|off|more|less|"
                             r"over|under|after|before|within|until|by|with)\b", after):
            return None  # "come back at 50% capacity": the amount modifies the noun after it
        last = _DROP_BEFORE_AMOUNT.sub("", before).split()
        last = [w for w in last if w.lower() not in _PREPOSITIONS]
        if last and "VERB" not in lemmas(last[-1].lower()) and last[-1].lower() not in _BE_HAVE_DO:
            return None  # "a helpline available 24 hours a day": the amount sits inside a noun phrase
        if any(w.lower() in _PREPOSITIONS for w in _DROP_BEFORE_AMOUNT.sub("", before).split()[:-1]):
            return None  # "for a full-time employee working 37.5 hours": inside a prepositional phrase
    before = _DROP_BEFORE_AMOUNT.sub("", before)
    if slot["kind"] in ("time", "date"):
        before = re.sub(r"\bno later than\s*$", "by ", before)  # "By what time ...?", not "... no later than?"
    preposition = ""
    trailing = before.rstrip().split(" ")[-1].lower() if before.strip() else ""
    if trailing in _PREPOSITIONS:
        preposition = trailing
        before = before.rstrip()[: -len(trailing)]
    if re.search(r"\b(?:and|or)\s*$", before) or re.match(r"\s+(?:and|or)\b", after) or slot["value"].endswith(" times"):
        return None  # "... Director and People Operations" or "1.5 times the rate" do not front
    if slot["kind"] == "provider" and re.match(r"(?:a|an)\s", before):
        return None  # "is a defined contribution plan administered by Keystone Pensions": inside the complement
    if before.strip() and slot["kind"] in ("form", "system", "role", "provider"):
        if len(before.split()) > 6:
            return None  # "reimburse up to $40 of any fee charged for completing <form>" fronts into nonsense
        before = re.sub(r"\b(the|a|an|their|its)\s+$", "", before.rstrip() + " ")
    if slot["kind"] == "quantity":
        of = re.match(r"\s+(of (?:[a-z-]+ ){0,3}?(?:leave|pay|service|holiday|holidays|notice|absence|allowance|"
                      r"work|time|sickness|training|study|TOIL))\b", after)
        if of:
            wh_phrase, after = f"{wh_phrase} {of.group(1)}", after[of.end():]
        elif re.match(r"['’]\s*notice\b", after):
            wh_phrase, after = f"{wh_phrase}' notice", re.sub(r"^['’]\s*notice", "", after)
        elif preposition in ("within", "before", "after") and re.match(r"\s+of [^,;]+", after):
            # "within 3 months of the date it was earned" is one period: "Within how many months of the date ..."
            span = re.match(r"\s+of [^,;]+", after)
            wh_phrase, after = f"{wh_phrase} {span.group(0).strip()}", after[span.end():]
    if slot["kind"] == "date":
        after = re.sub(r"^\s+of the (?:\w+ ){0,2}year\b", "", after)
    lead_words = f"{preposition} {'whom' if preposition and wh_phrase == 'who' else wh_phrase}".strip()
    for tail in (after.strip(), after.split(",")[0].strip()):  # long: without what follows a comma, then the condition
        body = " ".join(w for w in (_aux_for(parts), parts["verb"], before.strip(), tail) if w)
        for question in (_finish(_tail(parts, f"{lead_words} {body}")), _finish(f"{lead_words} {body}")):
            if len(question.split()) <= max_words:
                return question
    return None


_GENERIC_SUBJECT = re.compile(r"^(?:it|this|they|this policy|the policy|the company|we|you|he|she|there|these|"
                              r"this document|this section|that|which|such)$", re.I)


def subject_phrase(text: str) -> str | None:
    """The statement's subject when it names something specific ("Carried-over days", "The wellness allowance")."""
    parts = parse(text)
    if not parts or parts["person"]:
        return None
    subject = parts["subject"].strip(" ,")
    if re.match(r"(?:after|before|during|in|on|for|with|from|nothing|none|no one)\b", subject, re.I) or \
            re.search(r"\b(?:they|them|it)\b", subject, re.I):
        return None
    if _GENERIC_SUBJECT.match(subject) or len(subject.split()) > 8 or not re.search(r"[A-Za-z]{4}", subject):
        return None
    return lower_first(subject)


_TIME = re.compile(r"\b(?:no later than|on|by|at|before|after|until|from)\s+(?:midnight|noon|\d{1,2}:\d{2}|\d{1,2}(?:st|nd|rd|th)? "
                   rf"(?:{MONTHS})|"
                   r"the (?:last|first|next|\d{1,2}(?:st|nd|rd|th)) (?:\w+ ){0,2}day)")


def when(text: str, max_words: int = 30) -> str | None:
    """ "Any balance above that maximum is forfeited automatically at midnight on 31 December." ->
    "When is any balance above that maximum forfeited automatically?"."""
    parts = parse(text)
    if not parts:
        return None
    match = _TIME.search(parts["rest"])
    if not match or re.search(r"\b(?:who|whose|which|that)\b", parts["rest"][: match.start()]):
        return None  # "a plan with any employee whose balance on 1 October ...": the date belongs to the relative clause
    rest = parts["rest"][: match.start()].strip(" ,")
    if not rest and not parts["verb"] or re.search(r"\b(?:than|more|less|received|up|to|of|the|a)$", rest):
        return None
    body = " ".join(w for w in (_aux_for(parts), parts["verb"], rest) if w)
    question = _finish(_tail(parts, f"when {body}"))
    return question if len(question.split()) <= max_words else None


def what_object(text: str, max_words: int = 30) -> str | None:
    """ "A department may declare blackout periods ..." -> "What can a department declare?"; the object of the
    statement's verb asked for."""
    parts = parse(text)
    if not parts or parts["negated"]:
        return None
    words = parts["rest"].split()
    verb = parts["verb"]
    if not verb and parts["aux"] in _MODALS and words and words[0].lower() not in ("be", "have") and \
            "VERB" in lemmas(words[0].lower()):
        verb, words = words[0], words[1:]
    if not verb or not words or words[0].lower() in _PREPOSITIONS or words[0].lower() in (
            "not", "be", "to", "up", "at", "no", "more", "less", "only", "also"):
        return None
    # Only verbs whose object is a thing the employee gets, gives or uses ("What do I receive ...?", "What does the
    # plan cover?"); "What do roles with fixed shifts follow by their department?" came from any other verb.
    lemma = lemmas(verb.lower()).get("VERB", (verb.lower(),))[0]
    if lemma not in _OBJECT_VERBS:
        return None
    # the object runs to the first preposition or clause break; what follows it stays in the question
    end = next((i for i, w in enumerate(words) if i and (w.lower() in _PREPOSITIONS or w.endswith(","))), len(words))
    # an object that runs into a list ("a laptop, a headset and ...") is dropped whole, with what follows it
    after = " ".join(words[end:]) if end < len(words) and words[end].lower() in _PREPOSITIONS else ""
    body = " ".join(w for w in (_aux_for({**parts, "aux": parts["aux"] if parts["aux"] in _MODALS else parts["aux"]}),
                                verb, after) if w)
    question = _finish(_tail(parts, f"what {body}"))
    return question if 5 <= len(question.split()) <= max_words else None  # "What do I receive?" asks nothing


def _clause_first_person(clause: str) -> str:
    """ "an employee becomes ill" -> "I become ill" (a condition as the employee asks it)."""
    def person(match: re.Match) -> str:
        words = match.group(2).split(" ", 1)
        return f"I {_verb_to_base(' '.join(words))}"
    clause = re.sub(r"\b(an|the) employee (is|are|has|\w+s)\b", lambda m: person(m), clause)
    return _first_person(clause)


def what_happens(text: str, max_words: int = 30) -> list[str]:
    """ "If X, Y." -> "What happens if X?"; "Any balance above that maximum is forfeited ..." -> "What happens to any
    balance above that maximum?"."""
    parts = parse(text)
    if not parts:
        return []
    out = []
    lead = parts["condition"]  # the statement's own condition, not "if I <who-clause>"
    if re.match(r"(?:if|where|when|once)\b", lead, re.I):
        condition = re.sub(r"^where\b", "if", lower_first(lead), flags=re.I)
        if not re.match(r"(?:if|when) (?:this|that|it|so)\b", condition):  # "What happens if this happens?"
            out.append(_finish(f"what happens {_clause_first_person(condition)}"))
    subject = subject_phrase(text)
    rest = re.sub(r"^(?:be |not |automatically |normally )+", "", parts["rest"]).split()
    passive = bool(rest) and _HAPPENS_TO.match(rest[0].lower()) is not None
    if subject and passive and parts["aux"] in ("is", "are", "will", "may", "must", "can", "cannot", "should") and \
            not (len(rest) > 1 and rest[1].lower() == "to"):  # "are expected to agree" is not something done to them
        out.append(_finish(f"what happens to {subject}"))
    return [q for q in out if 4 <= len(q.split()) <= max_words]


_PERSON = re.compile(r"\b(?:employees?|staff|managers?|directors?|administrator|officer|team|operations|parents?|"
                     r"adopters?|partners?|members?|people|anyone|everyone|contractors?|interns?|workers?|supervisors?|specialists?|"
                     r"advis[eo]rs?|coordinators?|representatives?|advocates?|physicians?|practitioners?|doctors?|"
                     r"colleagues?|co-?workers?|teammates?|counsell?ors?|consultants?|leaders?|leads?|HR)\b", re.I)


def who_or_what(text: str, max_words: int = 30) -> str | None:
    """The question the statement's subject answers: "Employees who join on or after 1 July receive 1 floating
    holiday in their first year." -> "Who receives 1 floating holiday in their first year?"."""
    import lemminflect

    parts = parse(text)
    if not parts or _GENERIC_SUBJECT.match(parts["subject"].strip(" ,")) or parts["negated"] or \
            (len(parts["subject"].split()) < 2 and not _PERSON.search(parts["subject"])):
        return None  # "Codecademy is a good place to start" -> "What is a good place to start?" asks nothing
    subject = parts["subject"].strip(" ,")
    if parts["aux"] in ("is", "are") and re.match(r"[\d$£€]", parts["rest"]):
        return None  # "The standard working week is 37.5 hours" asks for the value (a wh question), not a subject
    # the head noun decides: "A public holiday that falls during an employee's leave" is a thing
    head = re.split(r"\s(?:who|that|which|whose|of|for|in|on|at|with|during|from|under)\s|'s\s", subject)[0].split()[-1]
    person = _PERSON.search(head) or re.fullmatch(r"the company|we", subject, re.I) or (
        subject in PROPER_NOUNS and not subject.isupper())  # "Northwind" is somebody, "TOIL" is something
    wh_word = "who" if person else "what"
    aux, verb = parts["aux"], parts["verb"]
    if verb:
        verb = (lemminflect.getInflection(verb, "VBZ") or (verb,))[0]
        head = verb
    else:
        head = {"are": "is", "were": "was", "have": "has", "do": "does"}.get(aux, aux)
        head = "can" if head == "may" else head
    rest = re.split(r",? (?:and|or|but) (?:the|a|an|their|this|these|it|they)\b|:(?!\d)", parts["rest"])[0]  # not 12:00
    rest = rest if len(rest.split()) <= 18 else rest.split(",")[0]
    question = _finish(f"{wh_word} {head} {rest}")
    return question if 5 <= len(question.split()) <= max_words else None
