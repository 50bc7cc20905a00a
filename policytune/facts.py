"""The fact inventory: every statement a policy makes, one record each, with where it stands.

A fact is a sentence, a list item, or a table row read with its header ("Years of service: Less
than 2 years; Days per year: 20 days"). Titles, headings, captions, list introductions, link-only
lines and boilerplate are not facts. Generation asks about every fact (coverage is measured per
fact, not per chunk), training restates them, and the lexical index over them decides whether
the document answers a question anywhere (`Index`), not only in the chunk it came from.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from policytune import io, phrasing

MIN_FACT_WORDS = 4
# What a stage needs of each record of chunks.json and of facts.json (`io.read_records` checks them).
CHUNK_KEYS = {"id": str, "text": str}
KEYS = {"id": str, "text": str, "section": str}

# Abbreviations whose full stop does not end a sentence (policy prose is full of "Ltd." and "e.g.").
_ABBREVIATIONS = re.compile(r"(\b(?:Ltd|Inc|Co|No|e\.g|i\.e|etc|approx|incl|St|Dr|Mr|Mrs|Ms|vs|cf|Art|Sec|para|U\.S|U\.K)\.)$",
                            re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'“‘])")
_BULLET = re.compile(r"^\s*(?:[-*•·▪◦]|\(?[a-z0-9]{1,3}[.)])\s+")
_CAPTION = re.compile(r"^(Table|Figure|Chart|Exhibit)\s+[\dA-Z]+[.:]", re.I)
_URL = re.compile(r"https?://\S+|www\.\S+")
_MARKDOWN_LINK = re.compile(r"\[([^\[\]]+)\]\([^()\s]*\)")
_SEPARATOR_CELL = re.compile(r"^:?-{1,}:?$")
# Lines that only point elsewhere or restate the document's own structure say nothing to ask about.
_NOTICE_HEADING = re.compile(r"\b(?:licen[cs]e|copyright|terms of use)\b", re.I)
_BOILERPLATE = re.compile(r"^(see|read|click|visit|for more|more information|back to|contents|page \d+|this page)\b", re.I)
# A sentence that stops on one of these words lost its end (a link the PDF did not keep: "please submit a copy of the
# email thread to"); "...; and" and "... or" close a list item and stay.
_CUT_END = re.compile(r"\s(?:to|at|for|with|from|of|by|on|in|into|the|a|an|your|our|their|its|my)$", re.I)


def _lines(text: str) -> list[str]:
    """Chunk text as logical lines: a line cut by a page break is joined back to its start."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        starts_block = line.startswith("|") or bool(_BULLET.match(line))
        # A page break cuts a sentence mid-way: the rest starts in lower case ("... sabbaticals or" / "tuition
        # assistance."), or with a link whose text does ("... you can send a copy to" / "[kc-payroll@... to expedite
        # the process.](mailto:...)"); a capitalised line after an unpunctuated one is a new paragraph.
        continues = bool(re.match(r"\[?[a-z0-9(,;£$€%]", line))
        # "... for you or a family member *" / "Mental health care * ...": a list run into one paragraph goes on
        dangling = bool(out) and (out[-1].endswith(" *") or bool(_CUT_END.search(out[-1])))  # "... shown in" / "Table 1."
        if out and (continues or dangling) and not starts_block and not out[-1].startswith("|") and \
                not re.search(r"[.!?:;]$", out[-1]):
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return out


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph, not split after abbreviations such as "Ltd." or "e.g."."""
    pieces = _SENTENCE_END.split(paragraph)
    merged: list[str] = []
    for piece in pieces:
        if merged and _ABBREVIATIONS.search(merged[-1]):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return [s.strip() for s in merged if s.strip()]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table_rows(lines: list[str]) -> list[str]:
    """Markdown table lines -> one statement per row, each cell named by its column header.

    A two-column table with no header of its own (a key/value list such as a policy's front
    matter) reads as "key: value" for every row, its first row included."""
    rows = [_cells(line) for line in lines]
    has_separator = len(rows) > 1 and all(_SEPARATOR_CELL.match(c) for c in rows[1] if c)
    body = [r for r in rows if not all(_SEPARATOR_CELL.match(c) for c in r if c)]
    if not body:
        return []
    width = max(len(r) for r in body)
    key_value = width == 2
    if key_value or not has_separator:
        header, data = None, body
    else:
        header, data = body[0], body[1:]
    statements = []
    for row in data:
        # A key cell may carry its own colon ("Step 1:"), which the joining colon would double.
        if header and len(header) == len(row):
            parts = [f"{h.rstrip(': ')}: {c}" for h, c in zip(header, row) if h and c]
            text = "; ".join(parts)
        elif key_value:
            cells = [c for c in row if c]
            text = ": ".join([cells[0].rstrip(": ")] + cells[1:] if len(cells) > 1 else cells)
        else:
            text = "; ".join(c for c in row if c)
        if text:
            statements.append(text.rstrip(".") + ".")
    return statements


def _is_fact(text: str, kind: str = "sentence") -> str | None:
    """None when the text states something; else why it is not a fact."""
    if _CAPTION.match(text):
        return "caption"
    rest = _URL.sub("", text)
    if rest != text and len(rest.split()) < MIN_FACT_WORDS:
        return "link only"
    # A table row names its column, so "Version: 3.2" is a whole statement.
    min_words = 2 if kind == "table_row" else MIN_FACT_WORDS
    if len(re.findall(r"[A-Za-z0-9£$€%]+", _URL.sub("", text))) < min_words:
        return "too short"
    if text.rstrip().endswith(":"):
        return "list introduction"
    if _BOILERPLATE.match(text):
        return "navigation"
    if kind == "sentence" and _untitled_line(text):
        return "title"
    return None


def _untitled_line(text: str) -> bool:
    """ "PostHog team policies (handbook snapshot)": a short line with no full stop and no verb is a title the
    layout did not mark, not a statement ("Policy reference: HR-POL-007." and table rows are kept)."""
    words = re.findall(r"[A-Za-z][\w'-]*", text)
    if re.search(r"[.!?:;][\"”’)]?$", text.strip()) or re.search(r"\d", text) or len(words) > 10:
        return False
    classes = [set(phrasing.lemmas(w.lower())) for w in words]
    return not any(c & {"VERB", "AUX"} and not c & {"NOUN", "ADJ"} for c in classes)


_FAQ_ANSWER = re.compile(r"^A\s?:\s+")  # "A: You may take ..." answers a FAQ's "Q:" heading: not part of the statement


def statements(text: str) -> list[tuple[str, str, str]]:
    """(kind, statement, list introduction) of a chunk's text: sentences, list items and table rows, in order."""
    lines = _lines(text)
    out: list[tuple[str, str, str]] = []
    intro = ""  # the sentence that opens a list ("The recognised holidays are:") reads with each item
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("|"):
            intro = ""
            block = []
            while index < len(lines) and lines[index].startswith("|"):
                block.append(lines[index])
                index += 1
            out += [("table_row", row, "") for row in table_rows(block)]
            continue
        index += 1
        if _BULLET.match(line):
            item = _FAQ_ANSWER.sub("", _BULLET.sub("", line, count=1).replace("**", "").strip())
            # An item such as "after 2 complete years: 50% vested" means nothing without its list's opening.
            out.append(("list_item", f"{intro} {item}" if intro else item, intro))
            continue
        run_in = [p.strip() for p in re.split(r"\s+\*(?:\s+|$)", line.replace("**", "")) if p.strip()]
        if len(run_in) > 2 and run_in[0].endswith(":"):
            # "You can use Sick Leave for: * Doctor and medical appointments * Mental health care": a list the
            # layout ran into one paragraph reads as its items, each with its opening
            # a list of titles under a label ("OPM Fact Sheets: * Leave Year Beginning and Ending Dates") is links
            if all(w[0].isupper() or w in ("of", "and", "the", "for", "to", "in", "on", "a", "an")
                   for w in re.findall(r"[A-Za-z][\w'-]*", run_in[0])):
                out += [("sentence", item, "") for item in run_in[1:]]
            else:
                out += [("list_item", f"{run_in[0]} {item}", run_in[0]) for item in run_in[1:]]
            intro = ""
            continue
        sentences = split_sentences(_FAQ_ANSWER.sub("", line.replace("**", "")))
        out += [("sentence", s, "") for s in sentences]
        intro = sentences[-1] if sentences and sentences[-1].endswith(":") else ""
    return out


def section_of(headings: list[str]) -> str:
    """The heading path a fact sits under, e.g. "5. Parental Leave > 5.3 Paternity and Partner Leave"."""
    return " > ".join(h.strip() for h in headings if h and h.strip())


def heading_name(heading: str) -> str:
    """A heading in words: its numbering stripped (not a name's digits: "401k contribution"), a trailing colon
    ("Benefits Support:") and an "About" before what it names ("About PPL": "Quick question about PPL")."""
    name = re.sub(r"^\d+(?:\.\d+)*\.?\s+", "", heading).strip().rstrip(":").strip()
    return re.sub(r"^About\s+(?=\S)", "", name)


# "Q: Can I extend my LOA past 4 weeks?", "Pregnant? Here is what to know": FAQ pages title their entries with questions
_ASKS = re.compile(r"^\s*q\s?[.:]|\?", re.I)


# A heading that holds an FAQ's entries names the page's form, no part of the policy: "FAQ", "Q&A", "Frequently asked
# questions", "FAQ for US-based Teammates" (not "FAQ bonus").
_FAQ_CONTAINER = re.compile(r"^(?:faqs?|frequently asked questions|questions(?: and answers)?|q\s*&\s*a)"
                            r"(?:$|\s*[-–:(]|\s+(?:for|about|on|from)\b)", re.I)


def faq_container(heading: str) -> bool:
    """Whether a heading (in words) holds an FAQ's entries rather than naming a part of the policy."""
    return bool(_FAQ_CONTAINER.match(heading.strip()))


def asks(heading: str) -> bool:
    """Whether a heading asks a question rather than naming a part of the policy."""
    return bool(_ASKS.search(heading))


def topic(headings: list[str], doc: str = "the policy") -> str:
    """The innermost heading in words (`heading_name`): what a question about the fact is about."""
    names = [heading_name(h) for h in headings or []]
    names = [n for n in names if n]
    return names[-1] if names else doc


def _without_cut_sentence(text: str) -> str:
    """The text without a last sentence that stops mid-way ("" when that is all of it)."""
    if not _CUT_END.search(text.rstrip()):
        return text
    ends = list(re.finditer(r"[.!?][\"')]?\s+(?=[A-Z(\"])", text))
    return text[: ends[-1].start() + 1] if ends else ""


def inventory(chunks: list[dict]) -> tuple[list[dict], list[dict]]:
    """Every fact of every chunk, and what was left out (with the reason). Ids are content hashes."""
    facts: list[dict] = []
    skipped: list[dict] = []
    seen: set[str] = set()
    for chunk in chunks:
        headings = list(chunk.get("headings") or [])
        # A licence or copyright notice appended to a document states nothing about the policy.
        if any(_NOTICE_HEADING.search(h) for h in headings):
            skipped += [{"chunk_id": chunk["id"], "text": text, "reason": "licence notice"}
                        for _, text, _ in statements(chunk.get("text") or "")]
            continue
        for kind, text, intro in statements(chunk.get("text") or ""):
            text = " ".join(_MARKDOWN_LINK.sub(r"\1", text).split())  # a web page's "[text](url)" reads as its text
            kept = _without_cut_sentence(text)
            reason = _is_fact(kept, kind) if kept else "cut off"
            text = kept or text  # a fact cut off whole is reported as it read
            # A statement that only repeats a heading is the heading, not a fact.
            if reason is None and any(text.rstrip(".").lower() == re.sub(r"^[\d.]+\s*", "", h).lower() for h in headings):
                reason = "heading"
            key = io.content_hash(chunk.get("doc"), text.lower())
            if reason is None and key in seen:
                reason = "duplicate"
            if reason:
                skipped.append({"chunk_id": chunk["id"], "text": text, "reason": reason})
                continue
            seen.add(key)
            facts.append({
                "id": key[:16], "chunk_id": chunk["id"], "doc": chunk.get("doc"), "pages": chunk.get("pages", []),
                "headings": headings, "section": section_of(headings), "topic": topic(headings, ""),
                "kind": kind, "text": text, **({"intro": intro} if intro else {}),
            })
    return facts, skipped


def proper_nouns(facts: list[dict]) -> set[str]:
    """Words written capitalised inside a sentence and never in lower case: names such as "Northwind" or "PeopleHub"."""
    lower, capital = set(), set()
    for fact in facts:
        for match in re.finditer(r"[A-Za-z][A-Za-z'-]*", fact["text"]):
            word = match.group(0)
            if word[0].islower():
                lower.add(word)
            elif not re.search(r"(?:^|[.:;!?(\"“]\s*)$", fact["text"][: match.start()]):  # not a sentence's first word
                capital.add(word)
    return {w for w in capital if w.lower() not in lower}


def organisation_names(facts: list[dict]) -> set[str]:
    """The names in the document's title (its facts' outermost heading): the organisation's own ("PostHog Handbook")."""
    titles = Counter(f["headings"][0] for f in facts if f.get("headings"))
    title = titles.most_common(1)[0][0] if titles else ""
    return set(re.findall(r"\b[A-Z][A-Za-z]+\b", title))


def per_section(facts: list[dict]) -> Counter:
    """Facts per heading path, in document order."""
    return Counter(f["section"] or "(no heading)" for f in facts)


# ------------------------------------------------------------------ lexical index

_STOP = set("""a an the of to in on for and or but if is are was were be been by with as at from that this these those
it its their there them they he she his her we our you your i my me do does did can could may might will would
shall should must not no any all each every per than then so such which who whom whose what when where why how
about into out up over under also only other same more most less least into policy employee employees company""".split())


def tokens(text: str) -> list[str]:
    """Lower-case word and number tokens with a light plural/suffix stem; stopwords dropped."""
    words = re.findall(r"[a-z0-9]+(?:[.,][0-9]+)*", text.lower())
    out = []
    for word in words:
        if word in _STOP:
            continue
        for suffix in ("ies", "ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix) and not word[0].isdigit():
                word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
                break
        out.append(word)
    return out


class Index:
    """BM25 over the facts (each fact read with its topic), for "which facts could answer this?"."""

    def __init__(self, facts: list[dict]) -> None:
        import bm25s

        self.facts = facts
        self.words = [set(tokens(f["text"])) for f in facts]  # each fact's word set, tokenised once
        self.frequency = Counter(w for fact_words in self.words for w in fact_words)  # in how many facts each word is
        self.heading_words = [set(tokens(" ".join(f.get("headings") or []))) for f in facts]
        self._bm25 = bm25s.BM25()
        corpus = [tokens(f"{f.get('topic', '')} {f['text']}") or ["_"] for f in facts]
        self._bm25.index(corpus, show_progress=False)

    def scores(self, question: str) -> Any:
        """BM25 score of every fact for the question (numpy array in fact order)."""
        import numpy as np

        query = [t for t in tokens(question) if t in self._bm25.vocab_dict]
        if not query:
            return np.zeros(len(self.facts), dtype="float32")
        return self._bm25.get_scores(query)

    def distinctive(self, words: list[str], max_share: float = 0.1) -> set[str]:
        """The words that occur in at most max_share of the facts ("leave" is in most; "sabbatical" is not)."""
        return {w for w in set(words) if self.frequency[w] <= max_share * len(self.facts)}

    def specific(self, words: list[str], max_share: float = 0.05) -> set[str]:
        """The distinctive words most of whose facts sit under a heading that holds them: "volunteer" is used under
        "Volunteer Leave"; "term" of "Long-Term Disability" is used all over ("their terms are set by ...")."""
        out = set()
        for word in self.distinctive(words, max_share):
            under = [word in heading_words for fact_words, heading_words in zip(self.words, self.heading_words)
                     if word in fact_words]
            if under and 2 * sum(under) >= len(under):
                out.add(word)
        return out

    def naming(self, words: set[str]) -> list[dict]:
        """The facts that contain any of these words."""
        return [f for f, fact_words in zip(self.facts, self.words) if fact_words & words]

    def mostly_naming(self, words: set[str], headings: bool = False) -> list[dict]:
        """The facts that name at least half of these words (in their headings too, with `headings`): facts about
        "occupational health", not every "health" benefit."""
        return [f for f, fact_words, heading_words in zip(self.facts, self.words, self.heading_words)
                if 2 * len(words & (fact_words | heading_words if headings else fact_words)) >= len(words)]

    def about(self, words: set[str]) -> list[dict]:
        """The facts that contain any of these words, or sit under a heading that does ("Requesting Bereavement and
        Compassionate Leave: The leave should be recorded in PeopleHub" is about compassionate leave)."""
        return [f for f, fact_words, heading_words in zip(self.facts, self.words, self.heading_words)
                if (fact_words | heading_words) & words]

    def top(self, question: str, k: int = 5) -> list[tuple[dict, float]]:
        """The k facts that best match the question, best first."""
        scores = self.scores(question)
        order = scores.argsort()[::-1][:k]
        return [(self.facts[i], float(scores[i])) for i in order if scores[i] > 0]
