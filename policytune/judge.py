"""The LLM judge of the quality gate: one 1-5 score per instruction pair, cached and resumable.

Three scorers, all through `policytune.llm` (the endpoint layer generation uses):
- likelihood (small local models, the default with the embedded server): a 135M model cannot
  answer "is this supported?" better than chance (measured: P(yes) ranked 2-3 of 5 good/bad twins
  right), but it copies well. So we teacher-force the answer after the excerpt and the question,
  one token per call (assistant prefill, max_tokens=1, top logprobs), and again without the
  excerpt. The gain in log-probability the excerpt gives each content word of the answer (its
  pointwise mutual information) is high for words copied from the excerpt and about zero or
  negative for a wrong number or a name from elsewhere. Score = 3 + gain of the weakest words,
  clipped to 1..5. A refusal is the reference point ("saying nothing") and scores exactly the
  threshold: an answer passes only when the excerpt supports it better than saying nothing. Whether
  a refusal is right is then the heuristics' call (`heuristics.answering_sentence`).
- verdict (capable endpoints with logprobs): a yes/no question; score = 1 + 4 P(yes)/(P(yes)+P(no)).
- rubric (endpoints without logprobs): JSON schema with integer faithfulness/relevance/clarity.
Every call's result is appended to a JSONL cache keyed by record id, content, prompt hash, model,
mode and vote, so a killed run resumes and a rerun makes no calls.
"""
from __future__ import annotations

import dataclasses
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from policytune import heuristics, io, llm, normalize
from policytune.config import UserError

try:
    import generated_prompt as prompts
except ModuleNotFoundError:
    # generated_prompt.py sits at the project root beside the stage scripts, where users edit it;
    # code that is not started from there (tests, notebooks) finds it through the package's location.
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    import generated_prompt as prompts

MODES = ("auto", "likelihood", "verdict", "rubric")
TOP_LOGPROBS = 2000         # llama-server lists this many alternatives in ~0.04 s; a rare name needs them
REMOTE_TOP_LOGPROBS = 20    # the OpenAI API's maximum
MAX_KEY_WORDS = 4           # words scored per answer: numbers and names first (each costs 1-3 calls)
PIECE_MARGIN = 2.0          # nats: how much less likely a longer matching piece may be and still win
MAX_WORD_TOKENS = 4         # a word longer than this in tokens is judged on its first ones
# An answer of at least this many words found verbatim in its excerpt is a copied policy sentence
# (generation's evidence answers); a shorter copy may be the wrong number or name from elsewhere
# in the excerpt, so it is still scored.
VERBATIM_MIN_WORDS = 5
WEAKEST_WORDS = 2           # the score follows the least supported words: one wrong number must count


class NoLogprobs(llm.LLMError):
    """The endpoint answered without token log-probabilities."""


def prompt_sha(mode: str) -> str:
    """Hash of the prompts a mode uses: changing one re-judges what it affects."""
    parts: dict[str, Any] = {"system": prompts.JUDGE_SYSTEM_PROMPT}
    if mode == "likelihood":
        parts.update(context=prompts.JUDGE_CONTEXT_PROMPT, no_context=prompts.JUDGE_NO_CONTEXT_PROMPT,
                     leads=prompts.JUDGE_ANSWER_LEADS, top=TOP_LOGPROBS, words=MAX_KEY_WORDS, tokens=MAX_WORD_TOKENS)
    elif mode == "verdict":
        parts.update(a=prompts.JUDGE_VERDICT_ANSWERABLE, u=prompts.JUDGE_VERDICT_UNANSWERABLE)
    else:
        parts.update(rubric=prompts.JUDGE_RUBRIC_PROMPT, schema=prompts.JUDGE_RUBRIC_SCHEMA)
    return io.content_hash(mode, parts)


def _top_logprobs(response: Any) -> list[tuple[str, float]]:
    choice = response.choices[0] if response.choices else None
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content or not content[0].top_logprobs:
        raise NoLogprobs("the endpoint returned no logprobs")
    return [(t.token, t.logprob) for t in content[0].top_logprobs]


# --- likelihood ---------------------------------------------------------------------------------

def word_logprob(endpoint: llm.Endpoint, messages: list[dict], text: str, start: int, end: int,
                 pieces: list[str] | None = None) -> tuple[float, list[str]]:
    """log P(text[start:end] | messages, text[:start]) by teacher forcing, one token per call.

    The assistant turn is prefilled with text up to the word (its leading space belongs to the
    word's first token). Without `pieces`, tokens are found by matching the endpoint's top
    alternatives against the rest of the word; with `pieces` (the split found
    in the other condition) the same split is scored, so both conditions compare like with like.
    A piece outside the alternatives gets the lowest logprob listed (an upper bound) and ends the word.
    Returns the log-probability and the pieces.
    """
    position, total, found = len(text[:start].rstrip()), 0.0, []
    for step in range(MAX_WORD_TOKENS):
        if position >= end or (pieces is not None and step >= len(pieces)):
            break
        response = llm.complete(endpoint, messages + [{"role": "assistant", "content": text[:position]}],
                                max_tokens=1, temperature=0.0, logprobs=True,
                                top_logprobs=TOP_LOGPROBS if endpoint.local else REMOTE_TOP_LOGPROBS)
        top = _top_logprobs(response)
        rest = text[position:]
        if pieces is not None:
            matches = [(tok, lp) for tok, lp in top if tok == pieces[step]]
        else:
            matches = [(tok, lp) for tok, lp in top if tok.strip() and rest.startswith(tok)] or \
                      [(tok, lp) for tok, lp in top if tok and rest.startswith(tok)]
        if not matches:
            return total + min(lp for _, lp in top), found
        # The longest piece among the likely ones: longest alone can pick a rare token that matches
        # by accident ("Wise" where "W" is near-certain); likeliest alone can pick " P" over " People".
        best = max(lp for _, lp in matches)
        token, logprob = max((m for m in matches if m[1] >= best - PIECE_MARGIN), key=lambda m: len(m[0]))
        total += logprob
        found.append(token)
        position += len(token)
    return total, found


def key_words(question: str, answer: str) -> list[tuple[int, int]]:
    """Spans of the answer's words that carry what the question does not: numbers and names first."""
    asked = {heuristics.stem(w) for w in heuristics.content_words(question)}
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", answer)
             if any(heuristics.stem(w) not in asked for w in heuristics.content_words(m.group()))]
    facts = [s for s in spans if re.search(r"\d|[A-Z]{2,}|[a-z][A-Z]", answer[s[0]:s[1]])]
    chosen = (facts + [s for s in spans if s not in facts])[:MAX_KEY_WORDS]
    return sorted(chosen)  # in text order, so each prefill extends the last and the prompt cache holds


def score_likelihood(endpoint: llm.Endpoint, record: dict, vote: int) -> dict:
    """Log-probabilities of the answer's key words with and without the excerpt (see module doc)."""
    if not record["answerable"]:
        return {"refusal": True}
    if record.get("answer_source") == "evidence":
        # The fact inventory's own statement (a table row read with its header, a list item with its
        # opening): policy text by construction, even where the chunk's line breaks keep it from matching.
        return {"verbatim": True}
    answer = normalize.normalize_text(record["output"]).lower()
    if len(answer.split()) >= VERBATIM_MIN_WORDS and answer in normalize.normalize_text(record.get("context", "")).lower():
        return {"verbatim": True}  # a copied passage is the most support the excerpt can give: no call measures more
    lead = prompts.JUDGE_ANSWER_LEADS[vote % len(prompts.JUDGE_ANSWER_LEADS)]
    system = {"role": "system", "content": prompts.JUDGE_SYSTEM_PROMPT}
    with_excerpt = [system, {"role": "user", "content": prompts.JUDGE_CONTEXT_PROMPT.format(
        excerpt=record["context"], question=record["instruction"])}]
    without_excerpt = [system, {"role": "user", "content": prompts.JUDGE_NO_CONTEXT_PROMPT.format(
        question=record["instruction"])}]
    text = f"{lead} {record['output']}"
    offset = len(lead) + 1
    spans = [(start + offset, end + offset) for start, end in key_words(record["instruction"], record["output"])]
    # The pieces each word was split into with the excerpt are scored again without it: like with like.
    scored = [word_logprob(endpoint, with_excerpt, text, start, end) for start, end in spans]
    inside = [logprob for logprob, _ in scored]
    outside = [word_logprob(endpoint, without_excerpt, text, start, end, pieces)[0]
               for (start, end), (_, pieces) in zip(spans, scored)]
    return {"words": [[text[s:e], round(i, 3), round(o, 3)] for (s, e), i, o in zip(spans, inside, outside)]}


def likelihood_score(result: dict, threshold: float) -> tuple[float, str]:
    """1-5 score and reason from a cached likelihood result."""
    if result.get("refusal"):
        return threshold, "refusal: the reference point of likelihood scoring"
    if result.get("verbatim"):
        return 5.0, "the answer is copied verbatim from the excerpt"
    words = result.get("words") or []
    if not words:
        return 1.0, "the answer adds no word to the question"
    gains = sorted(((inside - outside, word) for word, inside, outside in words))
    weakest = gains[:WEAKEST_WORDS]
    gain = statistics.fmean(g for g, _ in weakest)
    score = min(5.0, max(1.0, 3.0 + gain))
    described = ", ".join(f"{w!r} {g:+.1f}" for g, w in weakest)
    return score, f"excerpt support of the weakest words: {described}"


# --- verdict and rubric ---------------------------------------------------------------------

def score_verdict(endpoint: llm.Endpoint, record: dict, vote: int) -> dict:
    """P(yes) of a yes/no question about the pair, from the first token's top logprobs."""
    template = prompts.JUDGE_VERDICT_ANSWERABLE if record["answerable"] else prompts.JUDGE_VERDICT_UNANSWERABLE
    messages = [{"role": "system", "content": prompts.JUDGE_SYSTEM_PROMPT},
                {"role": "user", "content": template.format(excerpt=record["context"], question=record["instruction"],
                                                           answer=record["output"])}]
    response = llm.complete(endpoint, messages, max_tokens=1, logprobs=True, top_logprobs=20,
                            temperature=0.0 if vote == 0 else 1.0, seed=endpoint.options.seed + vote)
    top = _top_logprobs(response)
    p_yes = sum(math.exp(lp) for tok, lp in top if tok.strip().lower() == "yes")
    p_no = sum(math.exp(lp) for tok, lp in top if tok.strip().lower() == "no")
    if p_yes + p_no == 0:
        raise llm.LLMError("neither yes nor no among the top tokens")
    return {"p_yes": round(p_yes / (p_yes + p_no), 4)}


def verdict_score(result: dict, answerable: bool) -> tuple[float, str]:
    p_good = result["p_yes"] if answerable else 1.0 - result["p_yes"]
    return 1.0 + 4.0 * p_good, f"P(supported)={p_good:.2f}" if answerable else f"P(not answered)={p_good:.2f}"


def score_rubric(endpoint: llm.Endpoint, record: dict, vote: int) -> dict:
    """Integer faithfulness/relevance/clarity scores and a reason (JSON schema output)."""
    messages = [{"role": "system", "content": prompts.JUDGE_SYSTEM_PROMPT},
                {"role": "user", "content": prompts.JUDGE_RUBRIC_PROMPT.format(
                    excerpt=record["context"], question=record["instruction"], answer=record["output"])}]
    # Votes are independent calls: another seed, and some temperature so they can differ.
    voter = dataclasses.replace(endpoint, options=dataclasses.replace(endpoint.options,
                                                                      seed=endpoint.options.seed + 1000 * vote))
    parsed, _ = llm.chat_json(voter, messages, prompts.JUDGE_RUBRIC_SCHEMA, name="judgement", max_tokens=200,
                              temperature=0.0 if vote == 0 else 0.7)
    return parsed


def rubric_score(result: dict) -> tuple[float, str]:
    score = float(min(result["faithfulness"], result["relevance"], result["clarity"]))
    return score, (f"faithfulness {result['faithfulness']}, relevance {result['relevance']}, "
                   f"clarity {result['clarity']}: {result['reason']}")


SCORERS = {"likelihood": score_likelihood, "verdict": score_verdict, "rubric": score_rubric}


def to_score(mode: str, result: dict, record: dict, threshold: float) -> tuple[float, str]:
    """1-5 score and reason of one cached call."""
    if mode == "likelihood":
        return likelihood_score(result, threshold)
    if mode == "verdict":
        return verdict_score(result, record["answerable"])
    return rubric_score(result)


def resolve_mode(endpoint: llm.Endpoint, mode: str) -> str:
    """'auto': likelihood on a local llama-server, else verdict where logprobs come back, else rubric."""
    if mode != "auto":
        return mode
    if endpoint.local:
        return "likelihood"
    try:
        _top_logprobs(llm.complete(endpoint, [{"role": "user", "content": "Say yes."}], max_tokens=1,
                                   logprobs=True, top_logprobs=5, temperature=0.0))
        return "verdict"
    except llm.LLMError:
        return "rubric"


def cache_key(record: dict, mode: str, judge_model: str, vote: int) -> str:
    """What a cached verdict depends on; `judge_model` is the endpoint's identity (its GGUF's content, or its URL and model
    name), not the name the cache lines carry."""
    return io.content_hash(record["id"], record["instruction"], record["output"], record.get("context", ""),
                           prompt_sha(mode), judge_model, mode, vote)


def judge(endpoint: llm.Endpoint, records: list[dict], cache_path: str | Path, mode: str, votes: int,
          threshold: float, concurrency: int, progress: bool = True) -> dict[str, dict]:
    """Score every record (cached calls reused); returns id -> {score, passed, reason, votes, mode}."""
    from tqdm import tqdm

    mode = resolve_mode(endpoint, mode)
    scorer = SCORERS[mode]
    with io.JsonlLog(cache_path) as log:
        cached = {line["key"]: line for line in log.records() if "key" in line}
        units = [(record, vote) for record in records for vote in range(votes)]
        keys = {(record["id"], vote): cache_key(record, mode, endpoint.identity, vote) for record, vote in units}
        # Same-chunk requests one after another let llama-server reuse the excerpt's prompt cache.
        todo = sorted((u for u in units if keys[(u[0]["id"], u[1])] not in cached),
                      key=lambda u: (u[0].get("chunk_id", ""), u[0]["id"], u[1]))
        errors: dict[str, str] = {}
        bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=f"judge ({mode})", unit="call",
                   disable=not progress)

        def done(unit: tuple[dict, int], result: dict | None, error: Exception | None) -> None:
            record, vote = unit
            bar.update(1)
            if error is not None:
                if not isinstance(error, llm.LLMError):
                    raise error
                errors[record["id"]] = str(error)
                return
            line = {"key": keys[(record["id"], vote)], "id": record["id"], "vote": vote, "mode": mode,
                    "model": endpoint.model, "prompt_sha": prompt_sha(mode), "result": result}
            log.append(line)
            cached[line["key"]] = line

        llm.run_concurrently(lambda unit: scorer(endpoint, unit[0], unit[1]), todo, concurrency, done)
        bar.close()
    # Failed calls are not cached and their pairs would be rejected: when most failed, the endpoint is at fault,
    # not the pairs, and this run must not stand as the gate's verdict.
    asked = {record["id"] for record, _ in todo}
    if errors and 2 * len(errors) > len(asked):
        first = next(iter(errors.values()))
        raise UserError(f"the judge failed on {len(errors)} of the {len(asked)} pairs it was asked about "
                        f"(first: {first}); a rerun asks again ({len(asked) - len(errors)} answers are cached)")

    verdicts = {}
    for record in records:
        if record["id"] in errors:
            verdicts[record["id"]] = {"mode": mode, "score": None, "passed": False,
                                      "reason": f"judge_error: {errors[record['id']]}", "votes": []}
            continue
        scored = [to_score(mode, cached[keys[(record["id"], v)]]["result"], record, threshold) for v in range(votes)]
        passes = sum(score >= threshold for score, _ in scored)
        passed = passes * 2 > votes
        score = statistics.median(s for s, _ in scored)
        reason = min(scored)[1] if not passed else max(scored)[1]
        verdicts[record["id"]] = {"mode": mode, "score": round(score, 3), "passed": passed,
                                  "votes": [round(s, 3) for s, _ in scored],
                                  "reason": f"judge ({mode}): score {score:.2f} < {threshold:g}; {reason}" if not passed
                                  else reason}
    return verdicts

