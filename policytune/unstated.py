"""Providers a policy mentions without naming them: near misses that ask for the name.

A policy refers to "the company's occupational health provider" without naming the company, or to
"dental insurance" without saying who insures it. An employee asks exactly that, and a small model
answers with an invented name. Each such mention becomes a question for the name, kept only when no
fact of the document that shares the mention's distinctive words holds a name (other than the
organisation's own): any doubt drops it. Amounts are left out on purpose: a policy states them in
too many other words ("100% of base salary") for a lexical check to be sure they are missing.
"""
from __future__ import annotations

import re

from policytune import facts as facts_lib

# The head noun of a mention whose name the policy may leave out: who provides it.
PROVIDER_HEADS = r"provider|insurer|administrator|adviser|advisor|agency|broker|carrier|vendor|supplier"
COVER_HEADS = r"insurance|assurance|cover|scheme|programme|program|pension plan|health plan"
# A mention: a determiner, one to three lower-case modifiers (no capitalised name among them), the head noun.
_MENTION = re.compile(rf"\b(?:the|our|its|their|any|a|an)\s+(?:company's\s+)?((?:[a-z][a-z-]+\s+){{1,3}}?"
                      rf"(?:{PROVIDER_HEADS}|{COVER_HEADS}))s?\b")
_NAME = re.compile(r"(?<![.!?:]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*")
QUESTIONS = {
    "provider": ["Which company is our {mention}?", "What is the name of our {mention}?"],
    "cover": ["Which insurer provides our {mention}?", "Which company runs our {mention}?"],
}
# Modifier words that make a phrase something other than a named service ("have agency", "the same scheme").
_NOT_MODIFIER = re.compile(r"\b(?:to|have|has|this|that|each|every|following|same|other|any|all|own|relevant|"
                           r"appropriate|new|current|existing|such)\b")


def mentions(text: str) -> list[tuple[str, str]]:
    """(kind, mention) for each provider or cover the statement mentions without a name: "occupational health
    provider", "dental insurance"."""
    out = []
    for match in _MENTION.finditer(text):
        words = match.group(1).strip()
        if _NOT_MODIFIER.search(words) or _NAME.match(text[match.end():].lstrip(" (:,")):
            continue  # "the same scheme" points back; "the insurer, Meridian Health" names it
        kind = "provider" if re.search(rf"(?:{PROVIDER_HEADS})$", words) else "cover"
        out.append((kind, words))
    return out


def stated_anywhere(mention: str, index: facts_lib.Index, common: set[str]) -> dict | None:
    """A fact that names a distinctive word of the mention and holds a name (other than the organisation's own, in
    `common`): the provider may be named there."""
    words = set(facts_lib.tokens(mention))
    distinctive = index.distinctive(list(words), max_share=0.2) or words
    for fact in index.mostly_naming(distinctive):
        names = {n for n in _NAME.findall(fact["text"]) if not set(n.split()) <= common}
        if names:
            return fact
    return None


def near_misses(fact_list: list[dict], index: facts_lib.Index) -> tuple[list[dict], list[dict]]:
    """Questions for the names the document never states, one set per mention: (kept, dropped with the fact that may
    state it)."""
    # The organisation's own name is in many facts and names no provider.
    counts: dict[str, int] = {}
    for fact in fact_list:
        for name in set(" ".join(_NAME.findall(fact["text"])).split()):
            counts[name] = counts.get(name, 0) + 1
    common = {name for name, n in counts.items() if n >= 3 and n > 0.05 * len(fact_list)}
    kept, dropped, seen = [], [], set()
    for fact in fact_list:
        for kind, mention in mentions(fact["text"]):
            if mention in seen:
                continue
            seen.add(mention)
            hit = stated_anywhere(mention, index, common)
            for template in QUESTIONS[kind]:
                question = template.format(mention=mention)
                if hit:
                    dropped.append({"question": question, "aspect": f"unstated_{kind}",
                                    "reason": "the document may name it", "fact_id": hit["id"], "fact": hit["text"]})
                else:
                    kept.append({"question": question, "aspect": f"unstated_{kind}", "fact": fact})
    return kept, dropped
