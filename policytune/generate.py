"""Synthetic instruction pairs from the fact inventory: plan, draft, reword, check, cache, summarise.

Every fact of the policy (`facts.py`) gets `questions_per_fact` questions. The code decides what
each asks and drafts it (`questions.py`); the teacher rewords `rewordings_per_fact` of the drafts
the way an employee would ask. A question is kept only when it points at its own fact more than at
any other fact of its section (BM25), so a reworded question that drifted is retried, then
dropped with its reason. Answers are the fact itself (or, with teacher answers, a short answer the
teacher copied from it). Unanswerable questions are near misses on each section's topic that the
whole document is silent about; their answer is `chat.REFUSAL`, written here, never by the model.

Finished chunks (the facts of a chunk and the unanswerable questions planned for it) are appended
to a JSONL cache keyed by chunk id + prompt hash + model + plan + sampling, so a rerun after a
crash asks only for the missing chunks and gives the same final file.
"""
from __future__ import annotations

import re
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from policytune import chat, details, employee, heuristics, io, keyphrases, llm, normalize, phrasing, questions
from policytune import absent, balance, faq, unstated
from policytune import facts as facts_lib
from policytune.config import redact_url

TYPES = ("numeric", "entity", "procedure", "eligibility")
# Bumped when the code that turns replies into records changes, so cached chunks are redone.
RECORD_LOGIC_VERSION = 3
# A teacher's rewording must point at its fact this much more than at any other fact of the section: at
# 1.05, 5 of 11 reviewed rewordings on the sample asked something their fact does not answer.
TEACHER_MARGIN = 1.5
# How a teacher's rewording is checked against its fact (`--reword-check`): (margin, shared words), or None for
# only "asks about the policy, not the prompt" (the quality gate's judge then decides whether the fact answers it).
# strict suits a weak teacher; it also drops what employees ask: of the sample's 230 answerable gold questions, each
# offered as its fact's rewording, strict keeps 89, loose 137 (BENCHMARKS.md, forty-third session).
REWORD_CHECKS: dict[str, tuple[float, int] | None] = {"strict": (TEACHER_MARGIN, 2), "loose": (1.05, 1), "topic": None}
# Token Jaccard at which two questions of one fact count as the same phrasing (preprocessing's default).
NEAR_DUPLICATE = 0.8
# The largest share of the near-miss questions one aspect (tax, deadline, backdating ...) may take.
MAX_ASPECT_SHARE = 0.25


def prompts() -> dict[str, Any]:
    """The generation prompt constants (read from generated_prompt.py, which users edit)."""
    import importlib.util

    # generated_prompt.py sits at the project root beside the stage scripts, not inside the package.
    path = Path(__file__).resolve().parent.parent / "generated_prompt.py"
    spec = importlib.util.spec_from_file_location("generated_prompt", path)
    gp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gp)
    return {"system": gp.GENERATION_SYSTEM_PROMPT, "answerable": gp.ANSWERABLE_PROMPT,
            "question_only": gp.QUESTION_ONLY_PROMPT, "type_hints": gp.TYPE_HINTS,
            "unanswerable_templates": gp.UNANSWERABLE_TEMPLATES, "not_a_benefit": gp.NOT_A_BENEFIT,
            "near_miss_topics": f"{gp.LEAVE_TOPICS}|{gp.MONEY_TOPICS}", "employee_words": gp.EMPLOYEE_WORDS,
            "absent_benefits": gp.ABSENT_BENEFITS, "absent_benefits_for": gp.ABSENT_BENEFITS_FOR}


def prompt_sha(prompt_set: dict[str, Any] | None = None) -> str:
    """Hash of the generation prompt constants, stored on every record."""
    return io.content_hash(prompt_set or prompts())


def answerable_schema(max_chars: int = 150) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["question", "answer"],
            "properties": {"question": {"type": "string", "minLength": 8, "maxLength": max_chars},
                           "answer": {"type": "string", "minLength": 1, "maxLength": max_chars}}}


def question_schema(max_chars: int = 150) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["question"],
            "properties": {"question": {"type": "string", "minLength": 8, "maxLength": max_chars}}}


# An FAQ's answer opens with its own yes or no ("Yes! We do not have a waiting period for Medical Leave."): it answers
# the FAQ's question, not the one asked here, and after a reply of ours reads "No. Yes! We do not have ...".
_OWN_REPLY = re.compile(r"^(?:yes|no)\s*[!,.;:]+\s*(?=\w)", re.I)


def answer_for(fact: dict, draft: dict) -> str:
    """The answer a code-written question is trained on: the policy's statement, without a yes or no of its own, led
    by "Yes." or "No." for a yes/no question ("Are forfeited days paid out?" -> "No. Forfeited days are not paid
    out.")."""
    text = fact["text"]
    own = _OWN_REPLY.match(text)
    if own:
        text = text[own.end()].upper() + text[own.end() + 1:]
    return f"{draft['reply']} {text}" if draft.get("reply") else text


def not_near_copy(question: str, others: list[str]) -> bool:
    """True when the question is not a near-copy of any of the others, as preprocessing measures it (content-word
    Jaccard >= NEAR_DUPLICATE): a copy planned here would be dropped there."""
    seen = normalize.NearDuplicates([*others, question], NEAR_DUPLICATE)
    for other in others:
        seen.add(other)
    return seen.find(question) is None


def near_misses_for(answerable: int, unanswerable_ratio: float) -> int:
    """How many near misses make `unanswerable_ratio` of all questions beside `answerable` answerable ones."""
    return round(answerable * unanswerable_ratio / max(1e-9, 1.0 - unanswerable_ratio))


def plan(chunks: list[dict], fact_list: list[dict], questions_per_fact: int, unanswerable_ratio: float,
         unanswerable_templates: dict[str, dict], near_miss_topics: str = ".",
         not_a_benefit: str = r"$^", contrast_figures: bool = True,
         near_miss_check: str = "topic", detail_near_misses: bool = True,
         employee_words: dict[str, list[str]] | None = None,
         about_phrases: bool = True, near_miss_openings: bool = True,
         situation_first: bool = False,
         absent_benefits: dict[str, dict] | None = None, absent_for: str = ".",
         recall_questions: bool = False, faq_questions: bool = True,
         topic_near_misses_last: bool = True, figure_free: bool = False,
         balanced_styles: str = "off") -> tuple[dict[str, dict], dict]:
    """Decide every question of every chunk before asking the teacher anything.

    Per chunk: its facts, each with the code's drafts that point at it (consistency-checked
    against the other facts of its section), and the unanswerable questions assigned to it. The
    unanswerable count hits `unanswerable_ratio` of all planned questions, drawn round-robin over
    sections so every topic gets near misses; a candidate that some fact of the document may
    answer is dropped with that fact named ("document": any fact alike that holds a cue word; "topic": not one that
    is about another of the document's topics). With `employee_words`, each fact's third question is one of its
    first ones in everyday words (`employee.py`). With `about_phrases`, a fact still short of questions is asked
    about its own noun phrases (`keyphrases.py`), and with `recall_questions` so is one whose every question holds its
    answer's words (`questions.recall_check`). With `near_miss_openings`, near misses short of the ratio are asked
    again in employees' openings. With `situation_first`, half the questions that end in "if I ..." (facts and near
    misses alike, picked by hash) say it first (`employee.situation_first`). With `absent_benefits`, the benefits of that
    inventory the document never names are asked about too, where a heading matches `absent_for` (`absent.py`). With
    `topic_near_misses_last`, the aspects of `unanswerable_templates` are asked only where the other near misses, in all
    their openings, fall short of the ratio. With `figure_free`, a fact whose yes/no question is asked with a wrong
    figure is also asked it without the figure, answered "Yes.", as its third question (`contrast.without_figure`).
    With `faq_questions`, each FAQ entry's own question is asked too,
    answered by its statements (`faq.py`). Returns (plan by chunk id, report of what was left out).
    """
    by_section: dict[str, list[dict]] = {}
    for fact in fact_list:
        by_section.setdefault(fact["section"], []).append(fact)
    section_index = {name: facts_lib.Index(members) for name, members in by_section.items()}
    document_index = facts_lib.Index(fact_list) if fact_list else None
    chunk_plan: dict[str, dict] = {c["id"]: {"facts": [], "unanswerable": [], "faq": []} for c in chunks}
    rejected_drafts: list[dict] = []
    short_names = employee.abbreviations(fact_list)
    employee_words = employee.usable(employee_words, fact_list) if employee_words else None
    with phrasing.document_names(facts_lib.proper_nouns(fact_list), facts_lib.organisation_names(fact_list)):
        templates = {fact["id"]: questions.templates(fact, contrast_figures, figure_free) for fact in fact_list}

    def passes(draft: dict, fact: dict) -> bool:
        """Whether the draft points at its fact and does not hold its answer; a failure is recorded with its reason."""
        problem = questions.consistent(draft["question"], fact, section_index[fact["section"]],
                                       margin=0.0 if draft.get("anchored") else 1.05)
        # a question that already holds its whole answer teaches only copying (the quality gate drops it too)
        problem = problem or heuristics.no_answer_leak(draft["question"], answer_for(fact, draft))
        if problem:
            rejected_drafts.append({"fact_id": fact["id"], "question": draft["question"], "reason": problem})
        return not problem

    for fact in fact_list:
        drafts = [draft for draft in templates[fact["id"]] if passes(draft, fact)]
        distinct = []  # near-copies do not count towards the questions a fact has
        for draft in drafts:
            if not_near_copy(draft["question"], [d["question"] for d in distinct]):
                distinct.append(draft)
        if recall_questions and about_phrases and not any(map(questions.recall_check(fact["text"]),
                                                                 (d["question"] for d in distinct))):
            # every question holds the answer's words ("Do we host a monthly book club called BookHog?"): one about a
            # noun phrase of the fact makes the model recall it ("What should I know about a monthly book club?")
            distinct += [draft for draft in keyphrases.questions(fact, document_index.frequency, 3)
                         if not questions.malformed(draft["question"]) and passes(draft, fact)
                         and not_near_copy(draft["question"], [d["question"] for d in distinct])][:1]
        distinct = questions.recall_first(distinct, fact["text"], words=recall_questions)
        if employee_words:
            everyday = [{**d, "question": q, "style": "everyday"} for d in distinct
                        if (q := employee.reword(d["question"], employee_words, short_names))
                        and not questions.malformed(q)]
            everyday = [d for d in everyday if not_near_copy(d["question"], [x["question"] for x in distinct])]
            # a fact's "Yes." beside its "No." comes before the everyday words: without it the fact teaches only "No."
            lead = 3 if len(distinct) > 2 and distinct[2]["style"] == "figure_free" else 2
            distinct = distinct[:lead] + everyday[:1] + distinct[lead:] + everyday[1:]
        drafts = distinct + questions.wrapped(distinct, fact, questions_per_fact, not_near_copy)
        if len(drafts) < questions_per_fact and about_phrases:
            # what the rules could not read is still named: "What should I know about routine check-ups?"
            # two spares: another fact may already ask about the same phrase (the cross-fact pass below drops it)
            for draft in keyphrases.questions(fact, document_index.frequency, questions_per_fact + 2):
                if len(drafts) >= questions_per_fact + 2:
                    break
                if (problem := questions.malformed(draft["question"])):
                    rejected_drafts.append({"fact_id": fact["id"], "question": draft["question"], "reason": problem})
                elif passes(draft, fact) and not_near_copy(draft["question"], [d["question"] for d in drafts]):
                    drafts.append(draft)
        chunk_plan[fact["chunk_id"]]["facts"].append({"fact": fact, "drafts": drafts})
    # Across facts too: preprocessing keeps the first of two near-copies wherever they come from, so a fact whose
    # question copies an earlier fact's gets its next draft instead ("What is the form for annual leave?").
    entries = [entry for chunk in chunks for entry in chunk_plan[chunk["id"]]["facts"]]
    taken = normalize.NearDuplicates([d["question"] for e in entries for d in e["drafts"]], NEAR_DUPLICATE)
    # An FAQ's question is its writer's, asked first: a fact's draft that copies it gets the fact's next draft.
    for item in faq.entries(fact_list) if faq_questions else ():
        asked = [q for q in faq.phrasings(item, questions_per_fact, not_near_copy) if taken.find(q) is None]
        for question in asked:
            taken.add(question)
        if asked:
            chunk_plan[item["fact"]["chunk_id"]]["faq"].append({**item, "phrasings": asked})
    for entry in entries:
        fresh = [d for d in entry["drafts"] if taken.find(d["question"]) is None]
        rejected_drafts += [{"fact_id": entry["fact"]["id"], "question": d["question"],
                             "reason": "near-copy of another fact's question"}
                            for d in entry["drafts"] if d not in fresh]
        for draft in fresh[:questions_per_fact]:
            taken.add(draft["question"])
        entry["drafts"] = fresh

    wanted = near_misses_for(len(fact_list) * questions_per_fact, unanswerable_ratio)
    candidates = {name: questions.unanswerable_candidates(members, unanswerable_templates, near_miss_topics,
                                                          not_a_benefit)
                  for name, members in by_section.items()}
    # What each benefit asked about is called in words few facts use ("sabbatical", "tuition"), for telling a fact
    # about another benefit from one that may answer a near miss. Only benefits: "Who This Policy Covers" is not one,
    # and its "Contractors ... are not covered" answers every "Does X apply to contractors?".
    topic_words: set[str] = set()
    if document_index is not None and near_miss_check == "topic":
        for topic in {c["topic"] for queue in candidates.values() for c in queue}:
            topic_words |= document_index.specific(facts_lib.tokens(topic))
    answered: list[dict] = []
    outside_domain: list[dict] = []
    survivors: list[tuple[str, dict]] = []
    seen_questions: set[str] = set()
    # Round-robin over sections, one candidate each per pass, so every topic gets near misses.
    while any(candidates.values()):
        for name in list(candidates):
            if not candidates[name]:
                continue
            candidate = candidates[name].pop(0)
            if candidate["question"] in seen_questions:
                continue  # sibling sections under a generic heading ask about their parent: once is enough
            seen_questions.add(candidate["question"])
            hit = questions.answered_elsewhere(candidate["question"], candidate["cues"], document_index,
                                               candidate["topic"], other_topics=topic_words,
                                               by_heading=near_miss_check == "topic", doc=by_section[name][0].get("doc"))
            if hit:
                answered.append({"question": candidate["question"], "aspect": candidate["aspect"], "section": name,
                                 "reason": "the document may answer it", "fact_id": hit["id"], "fact": hit["text"]})
            else:
                survivors.append((name, candidate))
    # One phrasing found answered is enough to doubt the others of the same aspect and topic: "How far in advance
    # ...?" met "agreed at least 2 business days in advance" while "What is the deadline ...?" ranked other facts.
    doubted = {(item["section"], item["aspect"]) for item in answered} if near_miss_check == "topic" else set()
    answered += [{"question": c["question"], "aspect": c["aspect"], "section": name,
                  "reason": "another phrasing of the same aspect may be answered"}
                 for name, c in survivors if (name, c["aspect"]) in doubted]
    survivors = [(name, c) for name, c in survivors if (name, c["aspect"]) not in doubted]
    topical = {c["aspect"] for _, c in survivors}
    # Providers the policy mentions without naming them ("our occupational health provider"): asked by name.
    if document_index is not None:
        named, unnamed_dropped = unstated.near_misses(fact_list, document_index)
        answered += [{**d, "section": ""} for d in unnamed_dropped]
        survivors += [(item["fact"]["section"], {"question": item["question"], "aspect": item["aspect"]})
                      for item in named if item["question"] not in seen_questions]
    # Details of a named benefit that no fact about it gives ("Is volunteer leave paid?").
    if document_index is not None and detail_near_misses:
        kept, details_dropped = details.near_misses(fact_list, document_index)
        answered += [{**d, "section": ""} for d in details_dropped]
        survivors += [(item["fact"]["section"], {"question": item["question"], "aspect": item["aspect"]})
                      for item in kept if item["question"] not in seen_questions]
    # No aspect above a quarter of the near misses (nor above an equal share): a model that sees mostly "backdate" questions refused learns to
    # refuse a word, not what the policy leaves out.
    # Taken round-robin over aspects, so a share met early is met by every aspect alike.
    by_aspect: dict[str, list[tuple[str, dict]]] = {}
    for name, candidate in survivors:
        by_aspect.setdefault(candidate["aspect"], []).append((name, candidate))
    # an equal share where one or two aspects survive for every topic ("Is X different for union members?")
    cap = max(8, round(min(MAX_ASPECT_SHARE, 1 / max(1, len(by_aspect))) * len(survivors)))
    # Benefits the policy does not have at all ("Do I get leave to foster a child?"), each its own aspect of two
    # questions, outside the share above (which they would lower for the others); planned under the section most
    # alike, where an employee would have looked.
    if document_index is not None and absent_benefits:
        kept, absent_dropped = absent.near_misses(fact_list, absent_benefits, absent_for)
        # a policy outside the inventory's domain (no heading names a leave) leaves them unasked, answered or not
        (answered if absent.applies(fact_list, absent_for) else outside_domain).extend(
            {**d, "section": ""} for d in absent_dropped)
        for item in kept:
            if item["question"] not in seen_questions:
                alike = document_index.top(item["question"], 1)  # none where no word is shared
                section = alike[0][0]["section"] if alike else fact_list[0]["section"]
                by_aspect.setdefault(item["aspect"], []).append((section, item))

    def choose(queues: dict[str, list[tuple[str, dict]]]) -> tuple[list[dict], Counter]:
        """The near misses planned from these queues, in chunk order (each with its home fact), and their aspects."""
        per_aspect: Counter = Counter()
        per_section: Counter = Counter()
        queues = {aspect: list(queue) for aspect, queue in queues.items()}
        by_chunk: dict[str, list[dict]] = {c["id"]: [] for c in chunks}
        chosen = 0
        while chosen < wanted and any(queues.values()):
            for aspect, queue in queues.items():
                if chosen >= wanted or not queue or per_aspect[aspect] >= cap:
                    queue.clear()
                    continue
                # within an aspect, the topic asked least so far: "home office equipment" does not take every aspect
                name, candidate = queue.pop(min(range(len(queue)), key=lambda i: per_section[queue[i][0]]))
                per_section[name] += 1
                per_aspect[aspect] += 1
                home = by_section[name][0]
                by_chunk[home["chunk_id"]].append({"question": candidate["question"], "aspect": aspect, "fact": home})
                chosen += 1
        # Fewer near misses than wanted: each is also asked in the openings employees use, as facts are, so a refusal
        # is learnt from the question and not from one wording of it.
        planned = [item for chunk in chunks for item in by_chunk[chunk["id"]]]
        # preprocessing drops a near-copy ("Under our policy, ..." adds only stopwords): only distinct forms are planned
        asked = normalize.NearDuplicates([item["question"] for item in planned], NEAR_DUPLICATE)
        for item in planned:
            asked.add(item["question"])
        said = set(seen_questions)
        for wrapper in questions.WRAPPERS if near_miss_openings else ():
            for item in planned:
                if chosen >= wanted:
                    break
                topic = questions.near_miss_topic(item["fact"].get("headings") or [], item["fact"].get("topic") or "")
                if "{topic}" in wrapper and not questions.speakable(topic):
                    continue
                question = wrapper.format(q=phrasing.lower_first(item["question"]), topic=questions.topic_phrase(topic))
                if topic and question not in said and asked.find(question) is None:
                    said.add(question)
                    asked.add(question)
                    by_chunk[item["fact"]["chunk_id"]].append({**item, "question": question})
                    chosen += 1
        return [item for chunk in chunks for item in by_chunk[chunk["id"]]], per_aspect

    # The aspects every benefit is asked (union members, age, resigning ...) repeat a section's topic with the refusal:
    # on a short policy a topic's refusals weigh as much as its answers, and the model learns to refuse the topic
    # (PostHog, twenty-ninth session: without them, at the same number of near misses, false refusals 0.28 -> 0.14).
    # So they are the fallback: asked only where the policy's own near misses, in all their openings, fall short.
    # Short is judged against the questions the facts did get (the records' ratio is trimmed to them afterwards).
    own = {aspect: queue for aspect, queue in by_aspect.items() if aspect not in topical}
    answerable_planned = sum(min(len(e["drafts"]), questions_per_fact) for e in entries) + \
        sum(len(e["phrasings"]) for c in chunks for e in chunk_plan[c["id"]]["faq"])
    tried_own = topic_near_misses_last and len(own) < len(by_aspect)
    chosen_items, per_aspect = choose(own) if tried_own else ([], Counter())
    own_fill = tried_own and len(chosen_items) >= min(wanted, near_misses_for(answerable_planned, unanswerable_ratio))
    if not own_fill:
        chosen_items, per_aspect = choose(by_aspect)
    for item in chosen_items:
        chunk_plan[item["fact"]["chunk_id"]]["unanswerable"].append(item)
    chosen = len(chosen_items)
    styles = balance.balance(entries, chosen_items, questions_per_fact, not_near_copy,
                             person=balanced_styles in ("person", "both"),
                             openings=balanced_styles in ("openings", "both")) if balanced_styles != "off" else None
    if situation_first:
        # Employees open with their situation ("I'm on probation. Can I ...?") and no planned question did. Done last, on
        # questions already checked: the words stay the same, only their order changes.
        every = [d for e in entries for d in e["drafts"]] + \
            [u for chunk in chunks for u in chunk_plan[chunk["id"]]["unanswerable"]]
        for item in every:
            if zlib.crc32(item["question"].encode()) % 2 and (said := employee.situation_first(item["question"])):
                item["question"] = said
    return chunk_plan, {"rejected_drafts": rejected_drafts, "unanswerable_answered_by_document": answered,
                        "unanswerable_outside_domain": outside_domain,
                        "unanswerable_wanted": wanted, "unanswerable_planned": chosen,
                        "unanswerable_per_aspect": dict(per_aspect.most_common()),
                        "topic_aspects_left_out": own_fill, **({"styles": styles} if styles else {})}


def messages_for(fact: dict, draft: dict, prompt_set: dict[str, Any], teacher_answers: bool = True) -> list[dict]:
    """The chat messages of one rewording request."""
    template = prompt_set["answerable"] if teacher_answers else prompt_set["question_only"]
    kind = questions.question_type(draft["slot"], draft["question"])
    user = template.format(sentence=fact["text"], topic=fact.get("topic") or "the policy", draft=draft["question"],
                           type_hint=prompt_set["type_hints"][kind])
    return [{"role": "system", "content": prompt_set["system"]}, {"role": "user", "content": user}]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


QUESTION_WORDS = {"what", "how", "who", "when", "where", "which", "why", "can", "could", "do", "does", "did", "is",
                  "are", "will", "may", "should", "must", "if", "am", "would", "whom", "whose"}
def clean_question(text: str) -> str | None:
    """The first question in the model's text, or None when there is none."""
    text = " ".join(text.split()).strip(" \"'")
    # A small teacher labels its reply ("Question 2: How do I ...?"); the label is not part of the question.
    text = re.sub(r"^(?:(?:rewritten |new )?question\s*\d*|q\d*)\s*[:.)-]\s*", "", text, flags=re.I)
    if "?" in text:
        question = text[: text.index("?") + 1].strip(" \"'")
    elif _words(text)[:1] and _words(text)[0] in QUESTION_WORDS:
        # A small teacher often drops the question mark; a question word at the start is enough.
        question = re.split(r"(?<=[.!])\s", text)[0].rstrip(".! ") + "?"
    else:
        return None
    if len(_words(question)) < 3 or re.search(r"\b(excerpt|key sentence)\b", question, re.I):
        return None
    return question


def check_answer(answer: str, sentence: str, min_overlap: float = 0.6) -> str | None:
    """None when the answer is grounded in the key sentence, else why not."""
    words = _words(answer)
    if not words:
        return "empty answer"
    if chat.is_refusal(answer):
        return "answerable slot answered with the refusal"
    present = set(_words(sentence))
    overlap = sum(w in present for w in words) / len(words)
    if overlap < min_overlap:
        return f"answer not grounded in the excerpt ({overlap:.0%} of its words)"
    return None


def _record(chunk: dict, fact: dict, question: str, answer: str, answerable: bool, kind: str, source: str,
            style: str, model: str, sha: str, sampling: dict) -> dict:
    return {
        "id": io.content_hash(chunk["id"], question, answer),
        "chunk_id": chunk["id"], "doc": chunk.get("doc"), "pages": fact.get("pages") or chunk.get("pages", []),
        "headings": fact.get("headings") or chunk.get("headings", []), "fact_id": fact["id"],
        "section": fact.get("section", ""), "question": question, "answer": answer, "answerable": answerable,
        "type": kind, "style": style, "evidence": fact["text"] if answerable else "", "answer_source": source,
        "model": model, "prompt_sha": sha, "sampling": sampling,
    }


def generate_chunk(endpoint: llm.Endpoint, chunk: dict, chunk_plan: dict, prompt_set: dict[str, Any], sha: str,
                   temperature: float, max_tokens: int, teacher_answers: bool = True, questions_per_fact: int = 3,
                   rewordings_per_fact: int = 1, section_indexes: dict[str, facts_lib.Index] | None = None,
                   reword_check: str = "strict") -> dict:
    """All questions of one chunk: {records, failures}. Bad replies become failures, never exceptions.

    Each fact gets up to `rewordings_per_fact` teacher rewordings (one retry each with another draft
    and seed), then the code's drafts fill it up to `questions_per_fact`."""
    records, failures, seen = [], [], set()
    check = REWORD_CHECKS[reword_check]
    for entry in chunk_plan["faq"]:
        for question in entry["phrasings"]:
            seen.add(question.lower())
            records.append(_record(chunk, entry["fact"], question, entry["answer"], True,
                                   questions.question_type("statement", question), "evidence", "faq", endpoint.model,
                                   sha, {}))
    for entry in chunk_plan["facts"]:
        fact, drafts = entry["fact"], entry["drafts"]
        index = (section_indexes or {}).get(fact["section"])
        kept: list[dict] = []
        where = {"chunk_id": chunk["id"], "fact_id": fact["id"]}
        # The teacher also fills in where the code could not draft enough questions that point at the fact.
        wanted_teacher = min(questions_per_fact, max(rewordings_per_fact, questions_per_fact - len(drafts))) \
            if rewordings_per_fact else 0
        # a fact the code cannot phrase still has a target for the teacher to word: its topic
        pool = drafts or questions.templates(fact)[:1] or [
            {"question": f"What does the policy say about {fact.get('topic') or 'this'}?", "style": "topic_only",
             "slot": "statement"}]
        for attempt in range(2 * wanted_teacher if pool else 0):
            if sum(k["style"] == "teacher" for k in kept) >= wanted_teacher:
                break
            draft = pool[attempt % len(pool)]
            seed = endpoint.options.seed + 1000 * attempt + int(fact["id"][:6], 16) % 997
            schema = answerable_schema() if teacher_answers else question_schema()
            try:
                parsed, _ = llm.chat_json(endpoint, messages_for(fact, draft, prompt_set, teacher_answers), schema,
                                          name="qa_pair", max_tokens=max_tokens, temperature=temperature, seed=seed)
            except llm.LLMError as exc:
                # a failed request (not a bad answer) is tried again by the next run: see `finished`
                failure = {**where, "reason": f"llm: {exc}"}
                if isinstance(exc, llm.TransportError):
                    failure["retry"] = True
                failures.append(failure)
                continue
            question = clean_question(parsed["question"])
            problem = None if question else "no usable question"
            if question and check is None:
                problem = questions.about_the_task(question)
            elif question and index is not None:
                problem = questions.consistent(question, fact, index, margin=check[0], min_shared=check[1])
            if question and not problem and question.lower() in seen:
                problem = "duplicate question"
            if problem:
                failures.append({**where, "reason": problem, "question": question or parsed["question"][:200]})
                continue
            answer, source = fact["text"], "evidence"
            if teacher_answers and not check_answer(" ".join(parsed.get("answer", "").split()), fact["text"]):
                answer, source = " ".join(parsed["answer"].split()), "model"
            seen.add(question.lower())
            kept.append({"question": question, "answer": answer, "source": source, "style": "teacher", "slot": draft["slot"],
                         "seed": seed})
        for draft in drafts:
            if len(kept) >= questions_per_fact:
                break
            # A near-copy of a question already kept teaches no new phrasing (and preprocessing drops it).
            if draft["question"].lower() in seen or not not_near_copy(draft["question"], [k["question"] for k in kept]):
                continue
            seen.add(draft["question"].lower())
            kept.append({"question": draft["question"], "answer": answer_for(fact, draft), "source": "evidence",
                         "style": f"template:{draft['style']}", "slot": draft["slot"], "seed": None})
        if len(kept) < questions_per_fact:
            failures.append({**where, "reason": f"only {len(kept)} of {questions_per_fact} questions", "uncovered": True})
        for item in kept:
            sampling = {"temperature": temperature, "seed": item["seed"], "max_tokens": max_tokens} if item["seed"] is not None else {}
            records.append(_record(chunk, fact, item["question"], item["answer"], True,
                                   questions.question_type(item["slot"], item["question"]), item["source"],
                                   item["style"], endpoint.model, sha, sampling))
    for entry in chunk_plan["unanswerable"]:
        if entry["question"].lower() in seen:
            continue
        seen.add(entry["question"].lower())
        records.append(_record(chunk, entry["fact"], entry["question"], chat.REFUSAL, False, "unanswerable", "refusal",
                               f"template:{entry['aspect']}", endpoint.model, sha, {}))
    return {"records": records, "failures": failures}


def cache_key(chunk_id: str, sha: str, teacher: str, chunk_plan: dict, temperature: float, max_tokens: int, seed: int,
              teacher_answers: bool = True, questions_per_fact: int = 3, rewordings_per_fact: int = 1,
              reword_check: str = "strict") -> str:
    """What a chunk's cached result depends on: a change in any of these regenerates it. `teacher` is the endpoint's
    identity (its GGUF's content, or its URL and model name), not the name its records carry."""
    planned = ([(e["fact"]["id"], [d["question"] for d in e["drafts"]]) for e in chunk_plan["facts"]],
               [u["question"] for u in chunk_plan["unanswerable"]],
               [(e["answer"], e["phrasings"]) for e in chunk_plan["faq"]])
    # the check joins the key only when it is not the default, so caches written before it existed stay valid
    return io.content_hash(chunk_id, sha, teacher, planned, temperature, max_tokens, seed, teacher_answers,
                           questions_per_fact, rewordings_per_fact, RECORD_LOGIC_VERSION,
                           *([reword_check] if reword_check != "strict" and rewordings_per_fact else []))


# Measured with the embedded 135M teacher on the 2-core AMD EPYC box (BENCHMARKS.md): 0.74 requests/s
# with 2 server threads on an idle machine, 0.45 with 1. Slots do not add speed on a CPU: prefill
# is compute-bound, so the estimate does not divide by --concurrency.
SECONDS_PER_REQUEST = (1.4, 2.2)


def generate_pairs(endpoint: llm.Endpoint, chunks: list[dict], cache_path: str | Path, *, questions_per_fact: int = 3,
                   rewordings_per_fact: int = 1, unanswerable_ratio: float = 0.3, temperature: float = 0.7,
                   max_tokens: int = 200, concurrency: int = 4, progress: bool = True, teacher_answers: bool = True,
                   fact_list: list[dict] | None = None, contrast_figures: bool = True,
                   near_miss_check: str = "topic", detail_near_misses: bool = True,
                   employee_words: bool = True, about_phrases: bool = True,
                   near_miss_openings: bool = True, situation_first: bool = False,
                   absent_benefits: bool = True, topic_near_misses: bool = True,
                   recall_questions: bool = False, faq_questions: bool = True,
                   topic_near_misses_last: bool = True, figure_free: bool = False,
                   reword_check: str = "strict", balanced_styles: str = "off") -> tuple[list[dict], dict]:
    """Generate (or resume) questions for every fact of every chunk; returns (records in chunk order, summary).
    Without `topic_near_misses` no section is asked the aspects of `UNANSWERABLE_TEMPLATES`; near misses then come
    from the details, providers and benefits the policy leaves out."""
    from tqdm import tqdm

    started = time.perf_counter()
    prompt_set = prompts()
    sha = prompt_sha(prompt_set)
    if fact_list is None:
        fact_list, _ = facts_lib.inventory(chunks)
    chunk_plan, plan_report = plan(chunks, fact_list, questions_per_fact, unanswerable_ratio,
                                   prompt_set["unanswerable_templates"] if topic_near_misses else {},
                                   prompt_set["near_miss_topics"],
                                   prompt_set["not_a_benefit"], contrast_figures, near_miss_check,
                                   detail_near_misses, prompt_set["employee_words"] if employee_words else None,
                                   about_phrases, near_miss_openings, situation_first,
                                   prompt_set["absent_benefits"] if absent_benefits else None,
                                   prompt_set["absent_benefits_for"], recall_questions=recall_questions,
                                   faq_questions=faq_questions, topic_near_misses_last=topic_near_misses_last,
                                   figure_free=figure_free, balanced_styles=balanced_styles)
    section_indexes = {}
    for fact in fact_list:
        section_indexes.setdefault(fact["section"], []).append(fact)
    section_indexes = {name: facts_lib.Index(members) for name, members in section_indexes.items()}
    keys = {c["id"]: cache_key(c["id"], sha, endpoint.identity, chunk_plan[c["id"]], temperature, max_tokens,
                               endpoint.options.seed, teacher_answers, questions_per_fact, rewordings_per_fact,
                               reword_check)
            for c in chunks}
    cache = io.JsonlLog(cache_path)
    done = {entry["key"]: entry for entry in cache.records() if entry.get("key") in keys.values()}
    pending = [c for c in chunks if keys[c["id"]] not in done]
    from_cache = len(chunks) - len(pending)
    if from_cache:
        print(f"resuming: {from_cache} of {len(chunks)} chunks already in {cache_path}", flush=True)
    requests = sum(min(questions_per_fact, max(rewordings_per_fact, questions_per_fact - len(e["drafts"])))
                   for c in pending for e in chunk_plan[c["id"]]["facts"]) if rewordings_per_fact else 0
    # the time to expect: measured for a local model on a 2-core CPU; an endpoint's speed is its own
    low, high = requests * SECONDS_PER_REQUEST[0] / 60, requests * 2 * SECONDS_PER_REQUEST[1] / 60
    estimate = ("" if not requests else
                f" (at {redact_url(endpoint.base_url)}'s speed)" if not endpoint.local else
                f" (at the embedded 135M teacher's speed on a 2-core CPU "
                + (f"about {low:.0f}-{high:.0f} min" if high >= 1 else "under a minute")
                + f": {SECONDS_PER_REQUEST[0]}-{SECONDS_PER_REQUEST[1]} s per request, a failed rewording is retried once)")
    print(f"plan: {len(fact_list)} facts x {questions_per_fact} questions, {plan_report['unanswerable_planned']} "
          f"unanswerable; {requests} teacher requests for {len(pending)} chunks{estimate}", flush=True)

    bar = tqdm(total=len(pending), unit="chunk", disable=not progress, dynamic_ncols=True)
    new_pairs = 0

    def work(chunk: dict) -> dict:
        return generate_chunk(endpoint, chunk, chunk_plan[chunk["id"]], prompt_set, sha, temperature, max_tokens,
                              teacher_answers, questions_per_fact, rewordings_per_fact, section_indexes, reword_check)

    def finished(chunk: dict, result: dict | None, error: Exception | None) -> None:
        nonlocal new_pairs
        if error is not None:  # a bug or an unexpected reply: log the chunk and go on
            result = {"records": [], "failures": [{"chunk_id": chunk["id"], "reason": f"error: {error!r}"[:300],
                                                   "retry": True}]}
        entry = {"key": keys[chunk["id"]], "chunk_id": chunk["id"], **result}
        # This run uses what it got; the cache keeps only chunks whose every request was answered, so a rerun
        # (after the endpoint recovers) asks again instead of reusing the failures.
        if not any(f.get("retry") for f in result["failures"]):
            cache.append(entry)
        done[entry["key"]] = entry
        new_pairs += len(result["records"])
        bar.update(1)
        bar.set_postfix_str(f"{new_pairs / max(time.perf_counter() - started, 1e-9):.2f} kept/s")

    try:
        llm.run_concurrently(work, pending, concurrency, finished)
    finally:
        bar.close()
        cache.close()

    records = [r for c in chunks for r in done[keys[c["id"]]]["records"]]
    failures = [f for c in chunks for f in done[keys[c["id"]]]["failures"]]
    records, dropped = rebalance(records, unanswerable_ratio)
    seconds = time.perf_counter() - started
    summary = summarise(records, failures, chunks, fact_list, questions_per_fact, requested_ratio=unanswerable_ratio)
    summary["dropped"] = dropped
    summary["unanswerable_answered_by_document"] = plan_report["unanswerable_answered_by_document"]
    summary["unanswerable_outside_domain"] = plan_report["unanswerable_outside_domain"]
    summary["rejected_drafts"] = len(plan_report["rejected_drafts"])
    summary["unanswerable_per_aspect"] = plan_report["unanswerable_per_aspect"]
    summary["topic_aspects_left_out"] = plan_report["topic_aspects_left_out"]
    if "styles" in plan_report:
        summary["styles"] = plan_report["styles"]
    summary.update({"chunks_from_cache": from_cache, "chunks_generated": len(pending), "new_pairs": new_pairs,
                    "chunks_to_retry": len({f["chunk_id"] for f in failures if f.get("retry")}),
                    "seconds": round(seconds, 1), "pairs_per_second": round(new_pairs / max(seconds, 1e-9), 3),
                    "seconds_per_fact": round(seconds / max(1, len(fact_list)), 3),
                    "model": endpoint.model, "prompt_sha": sha, "rewordings_per_fact": rewordings_per_fact,
                    "reword_check": reword_check,
                    "teacher_answers": teacher_answers, "questions_per_fact": questions_per_fact,
                    "sampling": {"temperature": temperature, "seed": endpoint.options.seed, "max_tokens": max_tokens}})
    return records, summary


def rebalance(records: list[dict], unanswerable_ratio: float) -> tuple[list[dict], list[dict]]:
    """Drop unanswerable pairs beyond the requested share; returns (kept, dropped with reasons).

    A small teacher fails answerable slots more often (off-topic questions), which would tilt the
    data towards refusals. The surplus is chosen by record id (a content hash), so it is spread over
    the document and the same on every rerun.
    """
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    if unanswerable_ratio >= 1.0 or not unanswerable:
        return records, []
    allowed = near_misses_for(len(answerable), unanswerable_ratio)
    if len(unanswerable) <= allowed:
        return records, []
    surplus = {r["id"] for r in sorted(unanswerable, key=lambda r: r["id"])[allowed:]}
    kept = [r for r in records if r["id"] not in surplus]
    dropped = [{"id": r["id"], "chunk_id": r["chunk_id"], "question": r["question"],
                "reason": f"rebalanced: unanswerable share above --unanswerable-ratio {unanswerable_ratio:g}"}
               for r in records if r["id"] in surplus]
    return kept, dropped


def summarise(records: list[dict], failures: list[dict], chunks: list[dict], fact_list: list[dict],
              questions_per_fact: int, requested_ratio: float) -> dict:
    """Counts for the end-of-stage summary: coverage per fact and section, split, types, failures by reason."""
    unanswerable = sum(not r["answerable"] for r in records)
    reasons = Counter(re.sub(r"\d+", "N", f["reason"].split(" (")[0])[:80] for f in failures)
    per_fact = Counter(r["fact_id"] for r in records if r["answerable"])
    covered = sum(per_fact[f["id"]] >= questions_per_fact for f in fact_list)
    sections: dict[str, dict] = {}
    for fact in fact_list:
        row = sections.setdefault(fact["section"] or "(no heading)", {"facts": 0, "covered": 0, "answerable": 0,
                                                                      "unanswerable": 0})
        row["facts"] += 1
        row["covered"] += per_fact[fact["id"]] >= questions_per_fact
        row["answerable"] += per_fact[fact["id"]]
    for record in records:
        if not record["answerable"]:
            sections.setdefault(record.get("section") or "(no heading)",
                                {"facts": 0, "covered": 0, "answerable": 0, "unanswerable": 0})["unanswerable"] += 1
    uncovered = [{"fact_id": f["id"], "section": f["section"], "text": f["text"][:200], "questions": per_fact[f["id"]],
                  "reason": next((x["reason"] for x in failures if x.get("fact_id") == f["id"] and x.get("uncovered")),
                                 "fewer drafts than questions wanted")}
                 for f in fact_list if per_fact[f["id"]] < questions_per_fact]
    return {
        "chunks": len(chunks), "chunks_with_pairs": len({r["chunk_id"] for r in records}),
        "facts": len(fact_list), "facts_covered": covered,
        "facts_covered_share": round(covered / len(fact_list), 3) if fact_list else 0.0,
        "uncovered_facts": uncovered, "per_section": sections,
        "pairs": len(records), "answerable": len(records) - unanswerable, "unanswerable": unanswerable,
        "unanswerable_ratio": round(unanswerable / len(records), 3) if records else 0.0,
        "requested_unanswerable_ratio": requested_ratio,
        "per_type": dict(Counter(r["type"] for r in records).most_common()),
        "per_style": dict(Counter(r.get("style", "?").removeprefix("template:") for r in records).most_common()),
        "answer_source": dict(Counter(r.get("answer_source", "model") for r in records).most_common()),
        "failures": len(failures), "failure_reasons": dict(reasons.most_common()),
        "failed": failures,
    }


def format_summary(summary: dict) -> str:
    """A few human-readable lines of the summary."""
    lines = [
        f"facts: {summary['facts']}, with at least {summary['questions_per_fact']} kept questions: "
        f"{summary['facts_covered']} ({summary['facts_covered_share']:.0%})",
        f"chunks: {summary['chunks']} ({summary['chunks_from_cache']} from cache), pairs: {summary['pairs']}, "
        f"{summary['pairs_per_second']} kept/s, {summary['seconds_per_fact']} s/fact",
        f"answerable: {summary['answerable']}, unanswerable: {summary['unanswerable']} "
        f"(ratio {summary['unanswerable_ratio']:.2f}, requested {summary['requested_unanswerable_ratio']:.2f}); "
        f"unanswerable candidates dropped because the document may answer them: "
        f"{len(summary.get('unanswerable_answered_by_document', []))}; benefits not asked about, the policy being "
        f"outside their domain: {len(summary.get('unanswerable_outside_domain', []))}",
        "per type: " + ", ".join(f"{k} {v}" for k, v in summary["per_type"].items()),
        "near misses per aspect: " + ", ".join(f"{k} {v}" for k, v in summary.get("unanswerable_per_aspect", {}).items())
        + (" (no template aspect: the policy's own near misses fill the share)"
           if summary.get("topic_aspects_left_out") else ""),
        "per style: " + ", ".join(f"{k} {v}" for k, v in summary["per_style"].items()),
        f"dropped to keep the ratio: {len(summary.get('dropped', []))}",
        f"failures: {summary['failures']}" + ("" if not summary["failure_reasons"] else " (" + ", ".join(
            f"{k}: {v}" for k, v in summary["failure_reasons"].items()) + ")")
        + (f"; {summary['chunks_to_retry']} chunks had failed requests and are asked again by a rerun"
           if summary.get("chunks_to_retry") else ""),
        "facts per section (covered/facts, unanswerable):",
    ]
    lines += [f"  {row['covered']:>3}/{row['facts']:<3} {row['unanswerable']:>3}  {name[:90]}"
              for name, row in summary["per_section"].items()]
    return "\n".join(lines)
