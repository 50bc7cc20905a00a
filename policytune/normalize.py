"""Text normalisation for instruction pairs: Unicode, quotes, artefacts, refusals, near-duplicates.

A weak teacher writes "Answer: ...", wraps answers in quotes, adds "I hope this helps!" and says
"the text does not mention it" in a dozen ways. Training wants one clean form of each, and exactly
one refusal string (`chat.REFUSAL`), so these rules run once here, before the quality gate.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from policytune import chat

# Curly quotes, primes and dashes that NFKC leaves alone.
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                         "\u00ab": '"', "\u00bb": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-",
                         "\u00a0": " ", "\u200b": ""})

_QUESTION_LABEL = re.compile(r"^\s*(?:(?:\d+|[a-z])[.)]\s+|[-*]\s+)?(?:\**\s*(?:q|question|user|query)\s*\d*\s*\**\s*[:.)-]\s*)+",
                             re.IGNORECASE)
_ANSWER_LABEL = re.compile(r"^\s*(?:\**\s*(?:a|answer|response|assistant|reply|output)\s*\d*\s*\**\s*[:.)-]\s*)+",
                           re.IGNORECASE)
# Chatter a chat model appends after the fact it was asked for.
_TRAILING_CHATTER = re.compile(
    r"(?:\s+|^)(?:I hope (?:this|that) helps|Hope (?:this|that) helps|Let me know if|Feel free to|Please let me know|"
    r"If you have any (?:other|more|further) questions|Is there anything else|Thank you for|"
    r"Note: (?:this|the) (?:answer|question)|\(Source:|Source:)[^\n]*$",
    re.IGNORECASE | re.DOTALL)
_CHAT_MARKERS = re.compile(r"<\|im_(?:start|end)\|>(?:assistant|user|system)?|</?s>|<\|endoftext\|>")

# Every way the teacher says "the excerpt is silent" that we have seen or expect. Matching is on
# the whole (short) answer, so "not specified" inside a real answer ("unless specified") is safe.
_REFUSAL_PATTERNS = [
    r"not specified",
    r"(?:is|are|was|were) not (?:mentioned|stated|specified|provided|given|included|covered|described|defined|addressed|indicated|listed|detailed|discussed)",
    r"(?:does|do|did) not (?:specify|mention|state|say|provide|include|cover|describe|define|address|indicate|list|contain|give|detail|discuss)",
    r"(?:doesn't|don't|didn't) (?:specify|mention|state|say|provide|include|cover|describe|define|address|indicate|list|contain|give|detail|discuss)",
    r"no (?:information|mention|details?|data|specifics?|answer)(?: is| are)? (?:given|provided|available|about|on|regarding|in|of|to)",
    r"(?:no|not any) (?:such )?information",
    r"cannot be (?:determined|answered|found|inferred)",
    r"(?:can't|cannot|can not|unable to) (?:be )?(?:determine|answer|find|tell|say)",
    r"not (?:enough|sufficient) information",
    r"(?:isn't|aren't|not) (?:mentioned|stated|specified|provided|addressed|covered)",
    r"^(?:unknown|n/?a|none given|not available|unanswerable)\.?$",
]
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in _REFUSAL_PATTERNS), re.IGNORECASE)
# A refusal longer than this is probably an answer that happens to contain "not specified".
MAX_REFUSAL_WORDS = 30

# Function words: ignored when comparing questions and when looking for an answer's facts.
STOPWORDS = frozenset("""
a an the of to in on at by for and or nor but is are be been being was were am with as that this these those it
its their they them there then than from into onto over under about after before during per via within without
what which who whom whose when where why how do does did done doing can could should would will shall may might
must have has had having not no yes any all each every some such so if else also only other more most much many
i you he she we me my your our his her us one ones up out off i.e e.g etc
""".split())

_WORD = re.compile(r"[a-z0-9]+(?:['.,:/-][a-z0-9]+)*")


def normalize_text(text: str) -> str:
    """NFKC, straight quotes and dashes, no chat markers, single spaces, trimmed."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _CHAT_MARKERS.sub(" ", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return re.sub(r"\s+", " ", text).strip()


def _strip_wrapping_quotes(text: str) -> str:
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`*":
        text = text[1:-1].strip()
    return text


def clean_question(text: str) -> str:
    """The question without labels ("Q:", "1."), wrapping quotes or markdown emphasis."""
    text = normalize_text(text)
    text = _QUESTION_LABEL.sub("", text).strip()
    text = _strip_wrapping_quotes(text)
    # A teacher sometimes writes the answer on the same line: "...? Answer: 10 days".
    text = re.split(r"\s+(?:A|Answer)\s*:\s", text, maxsplit=1)[0].strip()
    return _strip_wrapping_quotes(text)


def clean_answer(text: str) -> str:
    """The answer without labels ("Answer:"), wrapping quotes or trailing chatter."""
    text = normalize_text(text)
    text = _ANSWER_LABEL.sub("", text).strip()
    text = _strip_wrapping_quotes(text)
    previous = None
    while previous != text:
        previous = text
        text = _TRAILING_CHATTER.sub("", text).strip()
        text = _strip_wrapping_quotes(text)
    return text


def is_refusal_variant(answer: str) -> bool:
    """True when the answer says, in any wording, that the excerpt does not give the answer."""
    text = normalize_text(answer)
    if chat.is_refusal(text):
        return True
    return len(text.split()) <= MAX_REFUSAL_WORDS and bool(_REFUSAL.search(text))


def canonical_answer(answer: str) -> str:
    """Cleaned answer; every refusal variant becomes exactly chat.REFUSAL."""
    text = clean_answer(answer)
    return chat.REFUSAL if is_refusal_variant(text) else text


def words(text: str) -> list[str]:
    """Lower-case word tokens (numbers like 1.67, 09:45 and codes like LV-2 stay whole)."""
    return _WORD.findall(normalize_text(text).lower())


def question_key(question: str) -> str:
    """The form two questions share when they are exact duplicates (case, spacing, punctuation)."""
    return " ".join(words(question))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


# Small words that turn a question into another one: "the day after Christmas Day" is not "Christmas Day".
_MEANING_WORDS = frozenset({"after", "before", "not", "without"})


def content_tokens(text: str) -> set[str]:
    """The token set near-duplicate checks compare: content words ("sick leave" vs "study leave" differ by more than one
    word in ten) and the few small words that change what is asked, all words where a text has no content word."""
    return set(w for w in words(text) if w not in STOPWORDS or w in _MEANING_WORDS) or set(words(text))


def _numbers(tokens: set[str]) -> set[str]:
    return {t for t in tokens if any(c.isdigit() for c in t)}


def _asks(tokens: set[str]) -> tuple[set[str], set[str]]:
    return _numbers(tokens), tokens & _MEANING_WORDS


class NearDuplicates:
    """Texts seen so far, to ask whether a new one is a near-copy of one of them (same content words, or token Jaccard
    >= threshold).

    Exact all-pairs similarity with prefix filtering (Bayardo et al., "Scaling up all pairs
    similarity search", 2007): two sets with Jaccard >= t must share a token among the first
    |s| - ceil(t*|s|) + 1 tokens of each under one global order (rare first, counted over `corpus`),
    so only those are indexed."""

    def __init__(self, corpus: Iterable[str], threshold: float = 0.8) -> None:
        self.threshold = threshold
        self.frequency: dict[str, int] = {}
        for text in corpus:
            for token in content_tokens(text):
                self.frequency[token] = self.frequency.get(token, 0) + 1
        self.sets: list[set[str]] = []
        self.index: dict[str, list[int]] = {}
        self.keys: dict[str, int] = {}

    def _prefix(self, tokens: set[str]) -> list[str]:
        import math

        ordered = sorted(tokens, key=lambda tok: (self.frequency.get(tok, 0), tok))
        return ordered[:len(ordered) - math.ceil(self.threshold * len(ordered)) + 1] if ordered else []

    def find(self, text: str) -> int | None:
        """The index of the earlier text this one copies, or None."""
        tokens = content_tokens(text)
        key = " ".join(sorted(tokens))
        if key in self.keys:
            return self.keys[key]
        candidates = sorted({j for token in self._prefix(tokens) for j in self.index.get(token, ())})
        # "... for less than 2 years?" and "... for 2 to less than 5 years?" ask for different rows: texts whose
        # numbers differ are never copies of each other, however many words they share; nor are "the day after
        # Christmas Day" and "Christmas Day"
        asks = _asks(tokens)
        return next((j for j in candidates if jaccard(tokens, self.sets[j]) >= self.threshold
                     and _asks(self.sets[j]) == asks), None)

    def add(self, text: str) -> int:
        tokens = content_tokens(text)
        self.sets.append(tokens)
        i = len(self.sets) - 1
        self.keys.setdefault(" ".join(sorted(tokens)), i)
        for token in self._prefix(tokens):
            self.index.setdefault(token, []).append(i)
        return i


def near_duplicates(texts: Iterable[str], threshold: float = 0.8) -> dict[int, int]:
    """Map index -> index of the earlier text it duplicates (same content words, or token Jaccard >= threshold)."""
    texts = list(texts)
    seen = NearDuplicates(texts, threshold)
    duplicate_of: dict[int, int] = {}
    position: list[int] = []  # the seen-set entry of each kept text -> its index in `texts`
    for i, text in enumerate(texts):
        match = seen.find(text)
        if match is not None:
            duplicate_of[i] = position[match]
            continue
        seen.add(text)
        position.append(i)
    return duplicate_of
