"""Fast, deterministic checks on instruction pairs, each rejection with a reason.

The rules are cheap text tests, run before the LLM judge so the judge only sees plausible pairs.
Each rule returns None (pass) or a short reason; `check` runs them in order and reports the first
failure as "rule: detail", so the quality report can count rejections per rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from policytune import chat, normalize

STOPWORDS = normalize.STOPWORDS

# Words that say what kind of thing is asked, not which thing: they do not need to be in the
# answer sentence for the excerpt to answer the question.
QUESTION_FRAME = frozenset("""
policy policies employee employees staff company excerpt text document section mentioned stated specified say
says according long soon often number amount get gets receive received entitled allowed required need needs
take taken provide provided give given apply applies applicable exactly specific
""".split())

INTERROGATIVES = frozenset("""what which who whom whose when where why how is are was were do does did can could
should would will shall may might must has have had if under in for to according""".split())

_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
# Names of systems, forms and codes: capitalised inside a sentence, all caps, or with a digit.
_NAME = re.compile(r"\b(?:[A-Z][a-z]+[A-Z]\w*|[A-Z]{2,}\w*|[A-Z]+-?\d+\w*)\b")
# A small teacher sometimes writes about the task instead of asking ("What is the answer to the
# following question: ...", "Question: ..."); employees never phrase a policy question that way.
_META = re.compile(r"\b(question|answer)\s*:|\banswer to (the|this|that)\b|\b(following|above) question\b", re.I)
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+|\s+-\s+|\s*\|\s*")


@dataclass
class Rules:
    """Thresholds of the heuristic gate (the dataquality.py flags of the same names)."""

    min_question_words: int = 3
    max_question_words: int = 60
    max_answer_words: int = 80
    max_answer_share_of_chunk: float = 0.6   # an answer holding most of the chunk is a copy, not an answer
    min_content_overlap: float = 0.7         # share of the answer's content words found in the excerpt


def content_words(text: str) -> list[str]:
    """Words that carry meaning: not stopwords, not one letter (one digit counts: '5 days')."""
    return [w for w in normalize.words(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]


def stem(word: str) -> str:
    """A crude stem so 'approves' meets 'approved', 'days' meets 'day', 'employees' meets 'employee'."""
    for suffix in ("ations", "ation", "ments", "ment", "ingly", "ings", "ing", "ies", "ied", "ers", "er", "ed", "es", "s"):
        if len(word) - len(suffix) >= 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word[:6]


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(normalize.normalize_text(text))}


def names(text: str) -> set[str]:
    return set(_NAME.findall(normalize.normalize_text(text)))


def question_well_formed(question: str, rules: Rules) -> str | None:
    """A real question: enough words, not too many, ends with '?' or starts like a question."""
    tokens = normalize.words(question)
    if len(tokens) < rules.min_question_words:
        return f"{len(tokens)} words"
    if len(tokens) > rules.max_question_words:
        return f"{len(tokens)} words, more than {rules.max_question_words}"
    # "What do I do if my medication is not covered?" asks; "The excerpt does not cover leave." is a refusal
    if chat.REFUSAL.lower() in question.lower() or \
            (not question.rstrip().endswith("?") and normalize.is_refusal_variant(question)):
        return "the question is a refusal"
    if not question.rstrip().endswith("?") and tokens[0] not in INTERROGATIVES:
        return "neither ends with '?' nor starts like a question"
    if question.count("?") > 2:
        return "several questions in one"
    if _META.search(question):
        return "talks about the task, not the policy"
    return None


def answer_length(answer: str, context: str, rules: Rules) -> str | None:
    """Not empty, not a bare yes/no, not a copy of most of the chunk; short facts ('CAPPS') pass."""
    tokens = normalize.words(answer)
    if not tokens:
        return "empty answer"
    if len(tokens) <= 2 and tokens[0] in ("yes", "no", "true", "false", "ok", "okay"):
        return f"bare {tokens[0]!r} without the policy's words"
    if len(tokens) > rules.max_answer_words:
        return f"{len(tokens)} words, more than {rules.max_answer_words}"
    chunk_tokens = normalize.words(context)
    if len(tokens) >= 25 and chunk_tokens and len(tokens) / len(chunk_tokens) > rules.max_answer_share_of_chunk:
        return f"answer repeats {len(tokens) / len(chunk_tokens):.0%} of the chunk"
    return None


def grounded(answer: str, context: str, rules: Rules) -> str | None:
    """Numbers, names and most content words of the answer appear in the excerpt."""
    context_numbers = numbers(context)
    missing_numbers = sorted(n for n in numbers(answer) if n not in context_numbers)
    if missing_numbers:
        return f"number {missing_numbers[0]} not in the excerpt"
    context_lower = normalize.normalize_text(context).lower()
    missing_names = sorted(n for n in names(answer) if n.lower() not in context_lower)
    if missing_names:
        return f"name {missing_names[0]!r} not in the excerpt"
    answer_words = content_words(answer)
    if not answer_words:
        return None
    context_stems = {stem(w) for w in content_words(context)}
    found = sum(stem(w) in context_stems for w in answer_words)
    share = found / len(answer_words)
    if share < rules.min_content_overlap:
        return f"only {share:.0%} of the answer's content words are in the excerpt"
    return None


def key_terms(question: str) -> set[str]:
    """The stems a sentence must contain to be about what the question asks."""
    return {stem(w) for w in content_words(question) if w not in QUESTION_FRAME}


def answering_sentence(question: str, context: str) -> str | None:
    """A sentence of the excerpt that looks like it answers the question, or None.

    Simple on purpose: the sentence holds every key term of the question (at least two), and a
    number when the question asks 'how many / how much / how long / when'.
    """
    terms = key_terms(question)
    if len(terms) < 2:
        return None
    wants_number = bool(re.search(r"\bhow (?:many|much|long|soon|often)\b|\bwhat (?:percentage|amount|rate|time)\b|\bwhen\b",
                                  question, re.IGNORECASE))
    for sentence in _SENTENCE.split(normalize.normalize_text(context)):
        stems = {stem(w) for w in content_words(sentence)}
        if terms <= stems and (not wants_number or numbers(sentence)):
            return sentence
    return None


def truly_unanswerable(question: str, answer: str, context: str) -> str | None:
    """The refusal is exact and no sentence of the excerpt answers the question."""
    if answer != chat.REFUSAL:
        return f"refusal is not exactly {chat.REFUSAL!r}"
    sentence = answering_sentence(question, context)
    if sentence:
        return f"the excerpt seems to answer it: {sentence[:120]!r}"
    return None


def no_answer_leak(question: str, answer: str) -> str | None:
    """The question must not already contain the answer (then the pair teaches nothing)."""
    answer_words = content_words(answer)
    if not answer_words or normalize.words(answer)[0] in ("yes", "no"):
        return None
    answer_text = " ".join(normalize.words(answer))
    question_text = " ".join(normalize.words(question))
    if len(answer_text) >= 3 and answer_text in question_text:
        return "the question contains the answer"
    question_stems = {stem(w) for w in content_words(question)}
    if all(stem(w) in question_stems for w in answer_words):
        return "the answer only repeats words of the question"
    return None


def check(record: dict, rules: Rules | None = None) -> str | None:
    """First failing rule as 'rule: detail', or None when the record passes every rule."""
    rules = rules or Rules()
    question, answer, context = record["instruction"], record["output"], record.get("context", "")
    reason = question_well_formed(question, rules)
    if reason:
        return f"question_malformed: {reason}"
    if record["answerable"]:
        # An FAQ entry's statements are all of its chunk by design (`faq.py`): the writer's answer, not a copy of it.
        share_of = "" if record.get("style") == "faq" else context
        for name, rule in (("answer_length", lambda: answer_length(answer, share_of, rules)),
                           ("ungrounded", lambda: grounded(answer, context, rules)),
                           ("answer_leak", lambda: no_answer_leak(question, answer))):
            reason = rule()
            if reason:
                return f"{name}: {reason}"
        return None
    reason = truly_unanswerable(question, answer, context)
    return f"unanswerable_answered: {reason}" if reason else None


def rule_name(reason: str) -> str:
    """'ungrounded: number 30 ...' -> 'ungrounded' (the key the report counts by)."""
    return reason.split(":", 1)[0]
