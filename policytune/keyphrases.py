"""Questions about a fact's own noun phrases, for the facts whose grammar the rule-built questions cannot read.

"Dental insurance covers routine check-ups and hygiene visits twice a year, as well as fillings ..." has no
subject-verb split the phrasing rules trust, but it names what an employee asks about: "What should I know about
routine check-ups and hygiene visits?". A phrase is a run of nouns with their modifiers (one "of" or "and" inside),
ranked by how rare its words are in the document, so the question points at this fact and not at its neighbours
(the plan's consistency check still has the last word).
"""
from __future__ import annotations

import re
from collections import Counter

from policytune import facts as facts_lib
from policytune import phrasing

# Each phrase is asked in a different opening, so two questions about one fact are not near-copies.
ABOUT = ("What does the policy say about {phrase}?", "What should I know about {phrase}?",
         "What are the rules on {phrase}?")

_DETERMINERS = {"the", "a", "an"}
_JOINS = {"of", "and", "for"}
# words that never sit inside a phrase an employee would name
_BOUNDARY = {"their", "its", "his", "her", "your", "our", "my", "this", "these", "those", "that", "each", "every",
             "any", "all", "some", "such", "no", "which", "who", "whom", "whose", "what", "it", "they", "them", "we",
             "you", "he", "she", "there", "not", "or", "but", "to", "in", "on", "at", "by", "for", "with", "from",
             "as", "if", "when", "where", "unless", "than", "up", "more", "less", "most", "least", "only", "also",
             "may", "must", "can", "will", "should", "would", "could", "shall", "is", "are", "was", "were", "be",
             "been", "being", "has", "have", "had", "do", "does", "did", "per", "via", "into", "within", "before",
             "after", "during", "until", "between", "through", "without", "other", "same", "further", "down", "once",
             "out", "off", "away", "over", "back", "otherwise", "instead", "while", "outside", "inside", "just", "then",
             "very", "really", "quite", "even", "still", "already", "own", "like", "beyond", "us", "me",
             "him", "much", "many", "few", "under", "above", "below", "across", "along", "around", "among", "upon",
             "about", "near", "past", "since", "kind", "sort", "first", "better", "worse", "entire", "enough",
             "everyone", "everybody", "anyone", "someone", "need", "various", "several", "certain", "quick",
             "whether"} | _JOINS  # the lexicon has "whether" as a noun
_OBJECT_START = {"their", "its", "his", "her", "your", "our", "my", "this", "these", "those", "each", "every", "any",
                 "all", "some", "no", "up", "not", "only", "also"}
_VERB_BEFORE = {"to", "can", "could", "will", "would", "may", "might", "must", "should", "shall", "we", "you", "they",
                "i", "just", "then", "please", "also", "not", "and", "or", "never", "always", "simply"}
_NOT_IN_LEXICON = {"although", "because", "cannot", "against", "whether", "though", "whereas", "whilst", "amongst",
                   "towards", "onto", "etc", "ie", "eg"}
# words too common to be what a question is about ("take time", "two years")
_EVERYDAY = {"time", "day", "days", "year", "years", "week", "month", "people", "thing", "way", "lot", "bit", "kind",
             "part", "work", "job", "team", "member", "one", "two", "three", "first", "new", "good", "better", "best"}
# phrases that name everyone's subject, not one fact's
_GENERIC = {"employee", "employees", "company", "policy", "section", "staff", "line manager", "line managers",
            "manager", "managers", "people",
            "person", "day", "days", "week", "weeks", "month", "months", "year", "years", "time", "case", "cases",
            "amount", "number", "period", "reason", "request", "requests"}

# nouns that name no subject of their own: "a hard limit", "sole source", "the holiday length and type", "legal right"
_NOT_A_HEAD = _EVERYDAY | _GENERIC | {
    "limit", "limits", "source", "type", "types", "length", "return", "way", "ways", "thing", "things", "idea", "ideas",
    "sense", "matter", "point", "fact", "example", "examples", "basis", "side", "end", "level", "situation",
    "circumstances", "purpose", "note", "question", "questions", "expectation", "right", "rights", "terms", "term",
    "area", "areas", "place", "rest", "whole", "range", "instance", "approach", "period", "periods", "hours",
    "event", "events", "market", "quality", "concept", "concepts", "industry", "update", "updates", "scenery",
    "cheerleader", "money", "startups"}


def _word_kind(word: str, next_word: str, has_noun: bool, first: bool, previous: str = "") -> str:
    """ "det", "adj", "noun" or "stop" for one word in its place."""
    bare = word.strip(",.;:()\"'“”‘’")
    lowered = bare.lower()
    if not re.search(r"[A-Za-z]", bare) or lowered in _BOUNDARY or re.fullmatch(r"[\d.,%$£€]+", bare) \
            or re.search(r"n['’]t$|['’](?:ll|re|ve|d|m)$", lowered):
        return "stop"
    if lowered in _DETERMINERS:
        return "det"
    known = phrasing.lemmas(lowered) if re.fullmatch(r"[a-z][a-z'-]*", lowered) else {}
    if re.match(r"[A-Z]", bare) and (not known or not first and not set(known) <= {"VERB", "AUX", "ADV"}):
        return "noun"  # PeopleHub, Form PL-1, ClockWise, TOIL; not "Employed under ..."
    if lowered.endswith("'s") or lowered.endswith("’s"):
        return "adj"  # "the employee's department"
    kinds = set(known)
    if not kinds:  # not in the lexicon: "long-term" modifies, "lifecycle" names; "although", "cannot" are neither
        if "-" in lowered and not has_noun:
            return "adj"
        return "stop" if lowered in phrasing._FUNCTION_WORDS or lowered in _NOT_IN_LEXICON else "noun"
    if kinds <= {"VERB", "AUX"}:
        # "paid sick leave", "an approved qualification": a participle before a noun modifies it; elsewhere it is
        # the statement's verb ("the enhanced pay described in Table 2")
        following = phrasing.lemmas(next_word.lower().strip(",.;:")) if next_word else {}
        if re.search(r"(?:ed|en)$", lowered) and ("NOUN" in following or "ADJ" in following) and not has_noun \
                and next_word[:1].islower():  # "paid sick leave", not "(we) included Mexico"
            return "adj"
        return "stop"
    if "VERB" in kinds and not has_noun and previous.lower().strip(",") in _VERB_BEFORE:
        return "stop"  # "you can take time", "to hire people": a verb with its object
    following = next_word.lower().strip(",.;:")
    if "VERB" in kinds and lowered.endswith("ing") and not set(phrasing.lemmas(following)) & {"NOUN"}:
        return "stop"  # "comfortable doing": not "standing desk", "working hours"
    if "VERB" in kinds and has_noun and (lowered.endswith("ing") or re.search(r"[^s]s$", lowered) and (
            not following or following in _BOUNDARY - _JOINS or following in _DETERMINERS or following == "because")):
        return "stop"  # "team members working", "the employee works beyond": not "hygiene visits twice a year"
    if "NOUN" in kinds and "VERB" in kinds and has_noun and "ADJ" not in phrasing.lemmas(previous.lower()):
        # "Dental insurance covers routine check-ups": after a noun, a noun/verb word with an object is the verb
        if following and not re.match(r"[A-Z]", next_word) and not re.search(r"[,;:.]$", word) and (
                following in _DETERMINERS or following in _OBJECT_START or
                following not in _BOUNDARY and set(phrasing.lemmas(following)) & {"ADJ", "NOUN"}):
            return "stop"
        return "noun"
    if "NOUN" in kinds:
        return "noun"
    if "ADJ" in kinds and not ("VERB" in kinds and re.match(r"[A-Z]", next_word)):
        return "adj"  # "an included benefit"; not "(we have) included Mexico"
    return "stop"


def is_noun(word: str) -> bool:
    """Whether the lexicon reads a word alone as a noun ("sessions", not "is" or "afterwards")."""
    return _word_kind(word, "", False, False) == "noun"


def noun_phrases(text: str) -> list[str]:
    """The fact's noun phrases in order ("routine check-ups and hygiene visits", "Form PL-1 Parental Leave
    Notification"), each ending on a noun, without a leading "a"/"an"."""
    words = text.replace("(", " ( ").replace(")", " ) ").split()
    out: list[str] = []
    current: list[str] = []
    kinds: list[str] = []
    joins = 0
    after_number = False  # "6 months of continuous service": the unit of a figure is not a topic

    def close() -> None:
        while kinds and kinds[-1] != "noun":
            current.pop(), kinds.pop()
        while kinds and kinds[0] == "det" and current[0].lower() in ("a", "an"):
            current.pop(0), kinds.pop(0)
        if current and re.search(r"['’]s$", current[0]):
            current.pop(0), kinds.pop(0)  # "an employee's contract": the possessive needs the article it lost
        if "noun" in kinds and not after_number:
            out.append(" ".join(w.strip(",.;:\"“”") for w in current))
        current.clear(), kinds.clear()

    for i, word in enumerate(words):
        next_word = words[i + 1] if i + 1 < len(words) else ""
        lowered = word.lower().strip(",.;:")
        if lowered in _JOINS and word == lowered and kinds and kinds[-1] == "noun" and joins < 1 \
                and not re.search(r"[,;:.]$", current[-1]) \
                and _word_kind(next_word, "", False, False) in ("det", "adj", "noun"):
            current.append(word), kinds.append("join")
            joins += 1
            continue
        if re.match(r"[\"'“‘]", word) and kinds:
            close()  # "doesn't offer 'sabbaticals'": a quoted word starts a phrase of its own
            joins = 0
        kind = _word_kind(word, next_word, "noun" in kinds, i == 0, words[i - 1] if i else "")
        if kind == "stop" or (kind == "det" and kinds):
            close()
            joins = 0
            after_number = bool(re.fullmatch(r"[\d.,%$£€-]+", word.strip(",.;:()")))
            if kind == "det":
                current.append(word), kinds.append(kind)
            continue
        current.append(word), kinds.append(kind)
        if re.search(r"[,;:.)]$", word):
            close()
            joins = 0
    close()
    return out


def _vague(phrase: str) -> bool:
    """Whether a phrase names nothing in particular: a side of its "and" whose nouns on both sides of "of"/"for" are
    all abstract ("the level of quality"; not "the expected week of childbirth"; a name's last word is part of the
    name, "Executive Leadership Team"), or the organisation joined to something ("PostHog and leave")."""
    sides = phrase.split(" and ")
    for side in sides:
        heads = [piece.split()[-1] for piece in re.split(r" (?:of|for) ", side) if piece.split()]
        if all(head.islower() and head in _NOT_A_HEAD for head in heads):
            return True
    return len(sides) > 1 and any(all(w in phrasing.ORGANISATION for w in side.split()) for side in sides)


def rarity(words: list[str], document_frequency: Counter) -> float:
    """How rare a phrase's words (`facts.tokens`) are in the document: the more facts hold a word, the less it adds."""
    return sum(1.0 / (1 + document_frequency.get(w, 0)) for w in set(words))


def ranked(text: str, document_frequency: Counter, avoid: set[str] = frozenset()) -> list[str]:
    """The fact's phrases worth a question, rarest words first: two or more content words, at least one of them
    not in `avoid` (the heading's words), not the document's everyday subjects."""
    scored = []
    for at, phrase in enumerate(dict.fromkeys(noun_phrases(text))):
        words = facts_lib.tokens(phrase)
        bare = re.sub(r"^the ", "", phrase.lower())
        if len(words) < 2 or len(phrase.split()) > 8 or bare in _GENERIC or not set(words) - avoid or \
                not set(words) - _EVERYDAY or _vague(phrase) or \
                re.search(r"(?<![A-Za-z-])\d|[\[\]]|\b(?:aka|etc|vs)$|\b(?:how|what|when|where|why|who)\b", phrase, re.I) or \
                phrase.endswith(phrasing.COMPANY_SUFFIXES):
            continue
        scored.append((-rarity(words, document_frequency), at, phrase))
    return [phrase for _, _, phrase in sorted(scored)]


def questions(fact: dict, document_frequency: Counter, wanted: int) -> list[dict[str, str]]:
    """Up to `wanted` "about" questions for the fact, one phrase per opening (`ABOUT`)."""
    avoid = set(facts_lib.tokens(" ".join(fact.get("headings") or []) + " " + (fact.get("topic") or "")))
    phrases = ranked(fact["text"], document_frequency, avoid)
    phrases = [phrasing.lower_first(p) for p in phrases]  # a sentence's first word is not a name; "Roots app" is
    # each phrase in its own opening, then the best phrase in the openings left (the plan drops near-copies)
    pairs = [(phrase, ABOUT[i % len(ABOUT)]) for i, phrase in enumerate(phrases)]
    pairs += [(phrases[0], opening) for opening in ABOUT[len(phrases):]] if phrases else []
    return [{"question": opening.format(phrase=phrase), "style": "keyphrase", "slot": "statement"}
            for phrase, opening in pairs][:wanted]

