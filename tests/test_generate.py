"""Stage 1b: policy-constrained synthetic pairs, against the embedded server and a misbehaving one."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import ROOT
from fault_server import FaultServer, hang, invalid_json, length_cut, ok, raw, refused_url, schema_mismatch, status
from policytune import absent, chat, citation, facts, faq, generate, io, llm, questions

RECORD_FIELDS = {"id", "chunk_id", "doc", "pages", "headings", "question", "answer", "answerable", "type", "model",
                 "prompt_sha", "sampling"}


def make_chunks(n: int, facts_per_chunk: int = 3) -> list[dict]:
    """Small real-looking policy chunks, each with a unique marker so requests can be traced to it."""
    chunks = []
    for i in range(n):
        sentences = [f"Employees in office {i} receive {10 + i} days of paid leave per year.",
                     f"Requests for office {i} must be submitted through PeopleHub using Form LV-{i}.",
                     f"Employees who have completed {i + 1} months of service are eligible for the office {i} bonus."]
        text = " ".join(sentences[:facts_per_chunk])
        chunks.append({"id": io.content_hash(text), "doc": "policy.pdf", "pages": [i + 1],
                       "headings": ["Policy", f"{i + 1}. Leave", f"{i + 1}.1 Office {i} leave"], "text": text,
                       "context_text": text, "n_tokens": 40, "kind": "text"})
    return chunks


def grounded_reply(body: dict) -> dict:
    """What a well-behaved teacher returns: a question and an answer copied from the excerpt."""
    user = body["messages"][-1]["content"]
    excerpt = re.search(r"<excerpt>\n(.*?)\n</excerpt>", user, re.S).group(1)
    words = excerpt.split()
    schema = body["response_format"]["json_schema"]["schema"]
    if "answer" in schema["properties"]:
        return {"question": f"What does the policy say about {' '.join(words[:-2])}?", "answer": " ".join(words[:5])}
    return {"question": f"Is there a rule about {io.content_hash(user, length=6)} for this leave?"}


def statement_of(answer: str) -> str:
    """The policy statement of an evidence answer, without the "Yes." or "No." that leads a yes/no question's."""
    return re.sub(r"^(?:Yes|No)\. ", "", answer)


def fault_options(server_url: str, **overrides) -> llm.LLMOptions:
    return llm.LLMOptions(base_url=server_url, **{"model": "fault-teacher", "max_retries": 1, "request_timeout": 1.0, **overrides})


def run_generation(url: str, chunks: list[dict], cache, **kwargs):
    with llm.connect(fault_options(url, **kwargs.pop("options", {}))) as endpoint:
        return generate.generate_pairs(endpoint, chunks, cache, progress=False, **kwargs)


def test_plan_asks_about_every_fact_with_drafts_that_point_at_it_and_meets_the_unanswerable_share():
    chunks = make_chunks(10)
    fact_list, _ = facts.inventory(chunks)
    assert len(fact_list) == 30
    chunk_plan, report = generate.plan(chunks, fact_list, 3, 0.3, generate.prompts()["unanswerable_templates"])
    planned = [e for c in chunks for e in chunk_plan[c["id"]]["facts"]]
    assert [e["fact"]["id"] for e in planned] == [f["id"] for f in fact_list]
    assert all(e["drafts"] for e in planned), "every fact has at least one code-written draft"
    assert {d["slot"] for e in planned for d in e["drafts"]} >= {"quantity", "form", "system"}
    unanswerable = [u for c in chunks for u in chunk_plan[c["id"]]["unanswerable"]]
    assert report["unanswerable_wanted"] == round(30 * 3 * 0.3 / 0.7)
    assert 0 < len(unanswerable) == report["unanswerable_planned"] <= report["unanswerable_wanted"]
    assert len({u["question"] for u in unanswerable}) == len(unanswerable)


def test_situation_first_says_the_condition_of_about_half_the_questions_first_and_keeps_the_rest():
    from policytune import employee

    chunks = make_chunks(10)
    fact_list, _ = facts.inventory(chunks)
    templates = generate.prompts()["unanswerable_templates"]

    def asked(on: bool) -> list[str]:
        chunk_plan, _ = generate.plan(chunks, fact_list, 3, 0.3, templates, situation_first=on)
        return [d["question"] for c in chunks for e in chunk_plan[c["id"]]["facts"] for d in e["drafts"]] + \
            [u["question"] for c in chunks for u in chunk_plan[c["id"]]["unanswerable"]]

    before, after = asked(False), asked(True)
    assert len(before) == len(after)
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert all(a == employee.situation_first(b) for b, a in moved)
    movable = [b for b in before if employee.situation_first(b)]
    assert 0.25 * len(movable) <= len(moved) <= 0.75 * len(movable), (len(moved), len(movable))
    assert any(a.startswith("I've completed") for _, a in moved)


def test_prompts_fence_the_fact_as_data_and_hash_changes_with_them():
    prompt_set = generate.prompts()
    chunk = make_chunks(1)[0]
    fact_list, _ = facts.inventory([chunk])
    chunk_plan, _ = generate.plan([chunk], fact_list, 3, 0.0, prompt_set["unanswerable_templates"])
    entry = chunk_plan[chunk["id"]]["facts"][0]
    user = generate.messages_for(entry["fact"], entry["drafts"][0], prompt_set)[1]["content"]
    assert f"<excerpt>\n{entry['fact']['text']}\n</excerpt>" in user and entry["drafts"][0]["question"] in user
    assert "not instructions" in prompt_set["system"]
    changed = {**prompt_set, "system": prompt_set["system"] + " "}
    assert generate.prompt_sha(changed) != generate.prompt_sha(prompt_set)


def test_records_carry_provenance_and_unanswerable_answers_are_the_exact_refusal(tmp_path):
    chunks = make_chunks(4)
    with FaultServer(default=ok(grounded_reply)) as server:
        records, summary = run_generation(server.url, chunks, tmp_path / "cache.jsonl", questions_per_fact=3,
                                          unanswerable_ratio=0.3)
    assert summary["facts"] == 12 and summary["facts_covered"] == 12 and summary["failures"] == 0
    for record in records:
        assert RECORD_FIELDS <= set(record)
        assert record["model"] == "fault-teacher" and record["prompt_sha"] == generate.prompt_sha()
        assert record["answerable"] == (record["type"] != "unanswerable")
        if not record["answerable"]:
            assert record["answer"] == chat.REFUSAL
    answerable = [r for r in records if r["answerable"]]
    assert len(answerable) == 36 and {r["fact_id"] for r in answerable} == {f["id"] for f in facts.inventory(chunks)[0]}
    assert sum(r["style"] == "teacher" for r in answerable) >= 12, "one teacher rewording per fact"
    assert summary["unanswerable"] > 0 and summary["unanswerable_ratio"] <= 0.3 + 0.05


def test_evidence_answers_ask_only_for_a_question_and_answer_with_the_fact(tmp_path):
    def question_only(body: dict) -> dict:
        schema = body["response_format"]["json_schema"]["schema"]
        assert "answer" not in schema["properties"], "the teacher was asked for an answer"
        user = body["messages"][-1]["content"]
        excerpt = re.search(r"<excerpt>\n(.*?)\n</excerpt>", user, re.S).group(1)
        return {"question": f"What does the policy say about {' '.join(excerpt.split()[:-2])}?"}

    chunks = make_chunks(3)
    with FaultServer(default=ok(question_only)) as server:
        records, summary = run_generation(server.url, chunks, tmp_path / "cache.jsonl", unanswerable_ratio=0.3,
                                          teacher_answers=False)
    answerable = [r for r in records if r["answerable"]]
    assert answerable and summary["failures"] == 0 and summary["teacher_answers"] is False
    for record in answerable:
        # the policy's own statement, led by "Yes." or "No." where the question is a yes/no one
        reply, _, statement = record["answer"].partition(" ") if record["answer"].startswith(("Yes. ", "No. ")) \
            else ("", "", record["answer"])
        assert record["answer_source"] == "evidence" and statement == record["evidence"]
        assert statement in next(c["text"] for c in chunks if c["id"] == record["chunk_id"])
        # a situation said first ("I'm on probation. Am I ...?", "If I join ..., do I ...?") leads the question
        asked = re.sub(r"^(?:[^?]+?\. |If [^,?]+, )", "", record["question"])
        assert not reply or re.match(r"(?:Is|Are|Do|Does|Can|Must|Will|Should|Am)\b", asked, re.I)


@pytest.mark.parametrize("fault", [invalid_json(), status(500), status(429, retry_after=1), hang(3),
                                   schema_mismatch(), length_cut()],
                         ids=["invalid_json", "500", "429_retry_after", "hang", "schema_mismatch", "length_cut"])
def test_one_fault_is_retried_and_the_pair_still_made(tmp_path, fault):
    with FaultServer(default=ok(grounded_reply)) as server:
        server.script(fault)
        started = time.monotonic()
        records, summary = run_generation(server.url, make_chunks(1, facts_per_chunk=1), tmp_path / "c.jsonl",
                                          questions_per_fact=1, unanswerable_ratio=0.0)
        assert len(server.requests) == 2
    assert len(records) == 1 and records[0]["style"] == "teacher" and summary["failures"] == 0
    if fault[0] == "status" and fault[1] == 429:
        assert time.monotonic() - started >= 1.0, "Retry-After was not honoured"


@pytest.mark.parametrize("fault", [invalid_json(), status(500), schema_mismatch(), length_cut(), hang(3)],
                         ids=["invalid_json", "500", "schema_mismatch", "length_cut", "hang"])
def test_persistent_fault_is_bounded_logged_and_the_code_drafts_still_cover_the_facts(tmp_path, fault):
    chunks = make_chunks(2, facts_per_chunk=1)
    with FaultServer(default=fault) as server:
        records, summary = run_generation(server.url, chunks, tmp_path / "c.jsonl", questions_per_fact=1,
                                          unanswerable_ratio=0.0, concurrency=2)
        # One rewording and one retry per fact; max_retries=1: at most 2 attempts of the transport, each
        # at most 2 attempts of the JSON check.
        assert len(server.requests) <= 2 * 2 * 2 * 2
    assert summary["failures"] == 4 and {f["chunk_id"] for f in summary["failed"]} == {c["id"] for c in chunks}
    assert all(f["reason"].startswith("llm:") for f in summary["failed"])
    assert len(records) == 2 and all(r["style"].startswith("template:") for r in records)


def test_reword_check_strict_drops_an_employee_wording_topic_keeps_it_and_both_drop_questions_about_the_prompt(
        tmp_path):
    def employee(body: dict) -> dict:
        # a capable teacher's rewording: the days fact asked in other words than the policy's, the others about the prompt
        excerpt = re.search(r"<excerpt>\n(.*?)\n</excerpt>", body["messages"][-1]["content"], re.S).group(1)
        if "days of paid leave" in excerpt:
            return {"question": "How much holiday can I take every twelve months?"}
        return {"question": "Which form does the sentence name?"}

    chunks = make_chunks(1)
    cache = tmp_path / "c.jsonl"
    kept = {}
    with FaultServer(default=ok(employee)) as server:
        for check in ("strict", "loose", "topic"):
            records, summary = run_generation(server.url, chunks, cache, questions_per_fact=3, unanswerable_ratio=0.0,
                                              teacher_answers=False, rewordings_per_fact=1, reword_check=check)
            # each check is its own cache entry: a chunk checked one way is not reused for another
            assert summary["reword_check"] == check and summary["chunks_from_cache"] == 0
            kept[check] = [r for r in records if r["style"] == "teacher"]
            reasons = Counter(f["reason"] for f in summary["failed"])
            assert reasons["question talks about the task, not the topic"] >= 2, check  # every mode drops those
            if check != "topic":
                assert reasons["question shares too few words with its fact"] >= 1, check
            assert len({r["fact_id"] for r in records}) == 3, "the code's drafts still cover every fact"
        asked = len(server.requests)
        _, summary = run_generation(server.url, chunks, cache, questions_per_fact=3, unanswerable_ratio=0.0,
                                    teacher_answers=False, rewordings_per_fact=1, reword_check="topic")
        assert summary["chunks_from_cache"] == 1 and len(server.requests) == asked
    assert kept["strict"] == [] and kept["loose"] == []
    assert [r["question"] for r in kept["topic"]] == ["How much holiday can I take every twelve months?"]
    assert kept["topic"][0]["answer"] == kept["topic"][0]["evidence"] and "10 days of paid leave" in kept["topic"][0]["answer"]


@pytest.mark.parametrize("fault, asked_again", [(status(500), True), (status(400), True), (invalid_json(), False),
                                                 (schema_mismatch(), False)],
                         ids=["500", "400", "invalid_json", "schema_mismatch"])
def test_a_failed_request_is_asked_again_by_a_rerun_and_a_bad_answer_is_not(tmp_path, fault, asked_again):
    # A request the endpoint failed says nothing about the chunk: cached, it would stand for the chunk's answer in
    # every rerun, long after the endpoint recovered. A bad answer at a fixed seed is the answer.
    chunks = make_chunks(2, facts_per_chunk=1)
    cache = tmp_path / "c.jsonl"
    with FaultServer(default=fault) as server:
        _, summary = run_generation(server.url, chunks, cache, questions_per_fact=1, unanswerable_ratio=0.0,
                                    concurrency=2)
        assert summary["failures"] == 4 and summary["chunks_to_retry"] == (2 if asked_again else 0)
        server.default = ok(grounded_reply)  # the endpoint recovers
        server.requests.clear()
        records, summary = run_generation(server.url, chunks, cache, questions_per_fact=1, unanswerable_ratio=0.0)
        assert bool(server.requests) == asked_again
    assert summary["chunks_from_cache"] == (0 if asked_again else 2)
    assert all(r["style"] == "teacher" for r in records) == asked_again


@pytest.mark.parametrize("reply", [raw("<html><body>Welcome to nginx!</body></html>", "text/html"),
                                   raw('{"choices": "nope"}'), raw('{"result": {"text": "hello"}}')],
                         ids=["web_page", "choices_not_a_list", "another_api"])
def test_an_endpoint_that_is_not_a_chat_api_stops_the_stage_in_one_line(tmp_path, reply):
    chunks = make_chunks(2)
    with FaultServer(default=reply) as server:
        with pytest.raises(llm.EndpointDown, match="does not answer as an OpenAI-compatible chat API"):
            run_generation(server.url, chunks, tmp_path / "c.jsonl", questions_per_fact=1)
    assert not (tmp_path / "c.jsonl").exists() or not (tmp_path / "c.jsonl").read_text().strip()


def test_connection_refused_stops_with_endpoint_down_and_keeps_the_cache(tmp_path):
    chunks = make_chunks(2)
    cache = tmp_path / "c.jsonl"
    with FaultServer(default=ok(grounded_reply)) as server:
        run_generation(server.url, chunks[:1], cache, questions_per_fact=1)
    before = cache.read_text()
    with pytest.raises(llm.EndpointDown, match="cannot reach"):
        run_generation(refused_url(), chunks, cache, questions_per_fact=1, options={"max_retries": 0})
    assert cache.read_text() == before


def test_changing_the_prompt_or_model_regenerates_and_same_settings_reuse_the_cache(tmp_path, monkeypatch):
    chunks = make_chunks(2)
    cache = tmp_path / "c.jsonl"
    with FaultServer(default=ok(grounded_reply)) as server:
        first, _ = run_generation(server.url, chunks, cache, questions_per_fact=2)
        asked = len(server.requests)
        again, summary = run_generation(server.url, chunks, cache, questions_per_fact=2)
        assert len(server.requests) == asked and again == first and summary["chunks_from_cache"] == 2
        run_generation(server.url, chunks, cache, questions_per_fact=2, options={"model": "other-teacher"})
        assert len(server.requests) == 2 * asked
        original = generate.prompts

        def edited_prompts():
            return {**original(), "system": original()["system"] + " Be brief."}

        monkeypatch.setattr(generate, "prompts", edited_prompts)
        run_generation(server.url, chunks, cache, questions_per_fact=2)
        assert len(server.requests) == 3 * asked


def test_two_endpoints_that_call_their_model_alike_are_two_teachers(tmp_path):
    chunks = make_chunks(2)
    cache = tmp_path / "c.jsonl"
    local = {"model": "local"}  # what the README suggests naming a llama-server's model
    with FaultServer(default=ok(grounded_reply)) as first, FaultServer(default=ok(grounded_reply)) as second:
        records, _ = run_generation(first.url, chunks, cache, questions_per_fact=2, options=local)
        asked = len(first.requests)
        _, summary = run_generation(second.url, chunks, cache, questions_per_fact=2, options=local)
        assert summary["chunks_from_cache"] == 0 and len(second.requests) == asked
        again, summary = run_generation(first.url + "/", chunks, cache, questions_per_fact=2, options=local)
        assert summary["chunks_from_cache"] == 2 and len(first.requests) == asked and again == records


def test_a_teacher_gguf_is_known_by_its_content_not_its_file_name_or_port(tmp_path):
    from policytune import models

    chunks = make_chunks(1, facts_per_chunk=1)
    teacher, copy, other = tmp_path / "a/teacher.gguf", tmp_path / "copy/smol.gguf", tmp_path / "b/teacher.gguf"
    for path in (teacher, copy, other):
        path.parent.mkdir()
        shutil.copyfile(models.embedded_gguf(), path)
    # Another model under the same file name: llama.cpp loads it as it does the original, only its name differs.
    with open(other, "r+b") as handle:
        handle.seek(handle.read(1 << 16).index(b"Smollm2 135M"))
        handle.write(b"Smollm3 135M")

    def generation(gguf):
        opts = llm.LLMOptions(teacher_gguf=str(gguf), concurrency=1, server_threads=1, max_retries=1)
        with llm.connect(opts) as endpoint:
            return generate.generate_pairs(endpoint, chunks, tmp_path / "c.jsonl", questions_per_fact=1,
                                           unanswerable_ratio=0.0, progress=False)

    records, summary = generation(teacher)
    assert summary["chunks_generated"] == 1 and {r["model"] for r in records} == {"teacher.gguf"}
    # a new server (another port) on a copy of the same file is the same teacher; another file of its name is not
    _, summary = generation(copy)
    assert summary["chunks_from_cache"] == 1
    records, summary = generation(other)
    assert summary["chunks_from_cache"] == 0 and summary["chunks_generated"] == 1
    assert {r["model"] for r in records} == {"teacher.gguf"}


DRIVER = """
import json, sys
from policytune import generate, io, llm
url, chunks_path, cache, out = sys.argv[1:5]
chunks = json.load(open(chunks_path))
with llm.connect(llm.LLMOptions(base_url=url, model="fault-teacher", max_retries=1)) as endpoint:
    records, summary = generate.generate_pairs(endpoint, chunks, cache, questions_per_fact=2, unanswerable_ratio=0.0,
                                               concurrency=2, progress=False)
io.write_json_atomic(out, records)
"""


def chunk_of(body: dict, chunks: list[dict]) -> str:
    user = body["messages"][-1]["content"]
    return next(c["id"] for c in chunks if re.search(rf"office {c['pages'][0] - 1}\b", user))


def test_sigkill_midway_then_rerun_asks_no_finished_chunk_again_and_loses_nothing(tmp_path):
    chunks = make_chunks(12)
    chunks_path = tmp_path / "chunks.json"
    io.write_json_atomic(chunks_path, chunks)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with FaultServer(default=ok(grounded_reply), delay=0.15) as server:
        reference = tmp_path / "reference.json"
        subprocess.run([sys.executable, "-c", DRIVER, server.url, str(chunks_path), str(tmp_path / "ref.jsonl"),
                        str(reference)], env=env, check=True, timeout=120)
        server.requests.clear()

        cache = tmp_path / "cache.jsonl"
        output = tmp_path / "syntheticdata.json"
        args = [sys.executable, "-c", DRIVER, server.url, str(chunks_path), str(cache), str(output)]
        process = subprocess.Popen(args, env=env)
        deadline = time.monotonic() + 60
        while (not cache.exists() or cache.read_text().count("\n") < 4) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        finished_before_kill = {entry["chunk_id"] for entry in io.read_jsonl(cache)}
        assert 4 <= len(finished_before_kill) < len(chunks), "the kill should land midway"
        assert not output.exists()
        server.requests.clear()

        subprocess.run(args, env=env, check=True, timeout=120)
        asked_again = {chunk_of(body, chunks) for body in server.requests}
    assert not asked_again & finished_before_kill
    assert asked_again | finished_before_kill == {c["id"] for c in chunks}
    records = json.loads(output.read_text())
    assert records == json.loads(reference.read_text())
    assert len({r["id"] for r in records}) == len(records) == 12 * 3 * 2


@pytest.mark.slow
def test_embedded_teacher_rewords_drafts_into_schema_valid_records_with_provenance(tmp_path):
    chunks = json.loads(json.dumps(make_chunks(2)))
    opts = llm.LLMOptions(concurrency=1, server_threads=1, max_retries=1)
    with llm.connect(opts) as endpoint:
        records, summary = generate.generate_pairs(endpoint, chunks, tmp_path / "c.jsonl", questions_per_fact=2,
                                                   unanswerable_ratio=0.5, progress=False)
    assert summary["facts"] == 6 and summary["facts_covered"] == 6, summary["uncovered_facts"]
    teacher = [r for r in records if r["style"] == "teacher"]
    # Every fact got a rewording request; what the 135M teacher wrote is kept or failed with a reason.
    assert len(teacher) + sum(f["reason"] != "only" for f in summary["failed"]) >= 6
    for record in records:
        assert RECORD_FIELDS <= set(record)
        assert record["model"].endswith(".gguf") and record["chunk_id"] in {c["id"] for c in chunks}
        assert record["question"].endswith("?")
        assert (record["answer"] == chat.REFUSAL) == (not record["answerable"])


def test_ungrounded_teacher_answer_is_replaced_by_the_policy_sentence(tmp_path):
    chunk = make_chunks(1)

    def wrong_answer(body: dict) -> dict:
        reply = grounded_reply(body)
        return {**reply, "answer": "Thirty days, according to national law."} if "answer" in reply else reply

    with FaultServer(default=ok(wrong_answer)) as server:
        records, _ = run_generation(server.url, chunk, tmp_path / "c.jsonl", questions_per_fact=2, unanswerable_ratio=0.0)
    assert any(r["style"] == "teacher" for r in records)
    assert records and all(r["answer_source"] == "evidence" and statement_of(r["answer"]) == r["evidence"]
                           for r in records)
    assert all(statement_of(r["answer"]) in chunk[0]["text"] for r in records)


def test_question_cleaning_keeps_one_question_and_rejects_non_questions():
    assert generate.clean_question("How many days? Also, what else?") == "How many days?"
    assert generate.clean_question("what form is used for leave") == "what form is used for leave?"
    assert generate.clean_question("The annual entitlement increases.") is None
    assert generate.clean_question("What is the key sentence in the excerpt?") is None
    assert generate.clean_question("Question 2: How do I request double pay?") == "How do I request double pay?"


def test_unanswerable_surplus_is_trimmed_to_the_ratio_by_id():
    records = [{"id": f"a{i}", "chunk_id": "c", "question": f"q{i}?", "answerable": True} for i in range(7)]
    records += [{"id": f"u{i}", "chunk_id": "c", "question": f"u{i}?", "answerable": False} for i in range(6)]
    kept, dropped = generate.rebalance(records, 0.3)
    assert sum(not r["answerable"] for r in kept) == 3 == round(7 * 0.3 / 0.7)
    assert [d["id"] for d in dropped] == ["u3", "u4", "u5"] and all(d["reason"].startswith("rebalanced") for d in dropped)


def test_an_unanswerable_question_that_another_section_answers_is_dropped(tmp_path):
    """Section 1 never mentions tax, so "Is bereavement leave taxed?" looks like a near miss for it; section 2
    states the tax treatment of bereavement pay. The whole-document check must drop the question."""
    def chunk(headings: list[str], text: str) -> dict:
        return {"id": io.content_hash(text), "doc": "p.pdf", "pages": [1], "headings": headings, "text": text,
                "context_text": text, "n_tokens": 40, "kind": "text"}

    chunks = [chunk(["1. Bereavement Leave"], "Employees may take up to 5 days of paid bereavement leave. "
                    "Requests are made through PeopleHub on the first day of absence."),
              chunk(["2. Pay and Tax"], "Bereavement leave pay is taxed in the same way as normal salary. "
                    "Payslips are issued on the last business day of each month."),
              # A scope rule far from the topic, outranked by the topic's own facts: still found.
              chunk(["0. Scope"], "Contractors and interns are not covered by this policy.")]
    fact_list, _ = facts.inventory(chunks)
    templates = {"tax": {"cues": ["tax"], "questions": ["Is {topic} taxed?"]},
                 "contractors": {"cues": ["contractor"], "questions": ["Does {topic} apply to contractors?"]},
                 "part_time": {"cues": ["part-time"], "questions": ["Is {topic} pro rata for part-time staff?"]}}
    chunk_plan, report = generate.plan(chunks, fact_list, 3, 0.5, templates)
    planned = [u["question"] for c in chunks for u in chunk_plan[c["id"]]["unanswerable"]]
    assert "Is bereavement leave taxed?" not in planned
    dropped = {d["question"]: d for d in report["unanswerable_answered_by_document"]}
    assert dropped["Is bereavement leave taxed?"]["fact"].startswith("Bereavement leave pay is taxed")
    assert dropped["Does bereavement leave apply to contractors?"]["fact"].startswith("Contractors and interns")
    assert "Is bereavement leave pro rata for part-time staff?" in planned  # silent everywhere: kept


def test_rewordings_default_to_auto_and_below_minus_one_is_a_one_line_error(tmp_path):
    from conftest import ROOT, run_script

    result = run_script(str(ROOT / "syntheticdatageneration.py"), "--data-dir", str(tmp_path), "--reuse-chunks",
                        "--rewordings-per-fact", "-2", cwd=tmp_path)
    assert result.returncode != 0 and "--rewordings-per-fact must be -1 (auto), 0 or more" in result.stderr


def test_near_misses_are_asked_about_benefits_only_and_no_aspect_takes_over():
    spec = generate.prompts()
    section = [{"headings": ["4. Wellness Allowance"], "topic": "Wellness Allowance",
                "text": "Employees may claim up to $600 per calendar year for gym memberships."}]
    asked = questions_of(section, spec)
    assert any("taxed" in q for q in asked), "a paid benefit invites a tax near miss"
    assert not any("backdate" in q.lower() and "$600" in q for q in asked)
    process = [{"headings": ["2. Booking Leave and Blackout Periods"], "topic": "Booking Leave and Blackout Periods",
                "text": "Annual leave must be requested through PeopleHub before it is taken."}]
    assert questions_of(process, spec) == [], "a process heading is not a benefit to ask near misses about"
    tasks = [{"headings": ["Medical Leave", "Step 3: Pre-leave Tasks"], "topic": "Step 3: Pre-leave Tasks",
              "text": "Work with your manager to create an out of office plan."}]
    assert questions_of(tasks, spec) == [], "'Can I take pre-leave tasks during my notice period?' is not a question"
    full_time = [{"headings": ["Medical Leave"], "topic": "Medical Leave",
                  "text": "Teammates are eligible if they work full-time and have a doctor's note."}]
    asked = questions_of(full_time, spec)
    assert asked and not any("part time" in q or "part-time" in q for q in asked), "full-time only answers part time"
    accrual = [{"headings": ["2. Annual Leave", "2.1 Accrual"], "topic": "Accrual",
                "text": "Leave accrues on the last calendar day of each month."}]
    assert not any("taxed" in q for q in questions_of(accrual, spec)), "'Is accrual taxed?' is not a question"

    chunks = make_chunks(10)
    fact_list, _ = facts.inventory(chunks)
    _, report = generate.plan(chunks, fact_list, 3, 0.3, spec["unanswerable_templates"], spec["near_miss_topics"],
                              spec["not_a_benefit"])
    per_aspect = report["unanswerable_per_aspect"]
    assert len(per_aspect) >= 2 and max(per_aspect.values()) - min(per_aspect.values()) <= 1, "aspects taken in turn"

    # Short of the ratio (more than these facts leave open), near misses are asked again in employees' openings,
    # unless told not to.
    one_chunk = make_chunks(1)
    one_chunk_facts, _ = facts.inventory(one_chunk)

    def near_misses(**flags) -> list[str]:
        chunk_plan, _ = generate.plan(one_chunk, one_chunk_facts, 3, 0.9, spec["unanswerable_templates"],
                                      spec["near_miss_topics"], spec["not_a_benefit"], **flags)
        return [u["question"] for plan in chunk_plan.values() for u in plan["unanswerable"]]

    openings = tuple(w.split("{")[0] for w in questions.WRAPPERS)
    padded, plain = near_misses(), near_misses(near_miss_openings=False)
    assert any(q.startswith(openings) for q in padded) and len(padded) > len(plain)
    assert plain and not any(q.startswith(openings) for q in plain) and set(plain) <= set(padded)


def test_no_near_miss_names_a_heading_that_asks_speaks_to_the_reader_or_names_an_act():
    """FAQ headings, clauses, "Take your leave" and "Donating leave" would be written into the aspect's template as if
    they named a benefit: "Can I carry unused what if I need to be out on leave ...? forward to next year?"."""
    spec = generate.prompts()
    text = "Employees may take up to 12 weeks of medical leave, paid at full salary."

    def asked(*headings: str) -> list[str]:
        return questions_of([{"headings": list(headings), "topic": facts.topic(list(headings)), "text": text}], spec)

    assert asked("Medical Leave"), "the plain benefit heading is asked about"
    for heading in ("Q: What if I need to be out on leave for more than 12 weeks?", "Q. When is my leave effective?", "Q. How do I change my plan (QLE)?",
                    "For general uses and vacation, you can use:", "Step 5: Take your leave", "Donating leave",
                    "Using donated leave", "Formally kick-off leave process", "Reasons someone can take leave",
                    "Leave types", "Types of leave", "Other paid leave", "Taking advanced leave",
                    "Understanding travel comp time"):
        assert asked("Medical Leave", heading) == [], heading
    assert asked("Paid Parental Leave"), "a participle names a kind of leave, not an act"
    assert asked("Fostering leave") and asked("Training budget") and asked("Learning and development budget"), \
        "a gerund before one noun, or joined to another, names a benefit"
    law = asked("Family Medical Leave Act (FMLA)")
    assert law and all(" act" not in q.lower() for q in law), "a law is asked about as the leave it gives"
    assert all("support:" not in q.lower() for q in asked("Leave Support:")), "a heading's trailing colon is not asked"


def questions_of(section: list[dict], spec: dict) -> list[str]:
    from policytune import questions

    return [c["question"] for c in questions.unanswerable_candidates(section, spec["unanswerable_templates"],
                                                                     spec["near_miss_topics"], spec["not_a_benefit"])]


def test_a_yes_no_question_is_asked_with_a_wrong_figure_and_answered_no():
    """The fact's own yes/no question would be answered "Yes." and only repeat the fact; the figure it asserts is
    changed and the reply is "No." with the fact. A condition's figure is never the one changed."""
    from policytune import contrast, questions

    fact = {"id": "f", "kind": "sentence", "topic": "Annual Leave", "headings": ["2. Annual Leave"],
            "text": "Employees receive 25 days of annual leave per calendar year."}
    drafts = questions.templates(fact)
    denied = [d for d in drafts if d["style"] == "contrast"]
    assert denied and all(d["reply"] == "No." and "25 days" not in d["question"] for d in denied)
    assert generate.answer_for(fact, denied[0]) == "No. " + fact["text"]
    # an FAQ's own yes or no answered another question
    faq = {**fact, "text": "Yes! We do not have a waiting period for Medical Leave."}
    assert generate.answer_for(faq, {"reply": "No."}) == "No. We do not have a waiting period for Medical Leave."
    assert generate.answer_for(faq, {}) == "We do not have a waiting period for Medical Leave."
    assert generate.answer_for({**fact, "text": "No more than 5 days carry over."}, {}) == "No more than 5 days carry over."
    assert generate.answer_for({**fact, "text": "eBay vouchers are taxed."}, {}) == "eBay vouchers are taxed."
    assert not [d for d in questions.templates(fact, contrast_figures=False) if d["style"] == "contrast"]

    stated = "Employees with 10 or more years of service receive 28 days of annual leave."
    assert contrast.wrong_figure("Do employees with 10 or more years of service receive 28 days?", stated) == \
        ("Do employees with 10 or more years of service receive 42 days?", "42")
    assert contrast.wrong_figure("Is leave after 6 months of service paid?", "Leave after 6 months is paid.") is None
    # a wrong figure the statement gives elsewhere might make the answer "Yes.": the next one is asked
    assert contrast.wrong_figure("Do I get 10 days?", "You get 10 days, or 15 after five years.")[1] == "20"
    assert contrast.wrong_figure("Is the 2026 rate $40?", "The 2026 rate is $40.")[0] == "Is the 2026 rate $60?"


def test_a_fact_with_a_figure_is_also_asked_yes_no_without_it_and_answered_yes():
    """With only its wrong-figure question a fact with a figure teaches "No." to every yes/no question about it; asked
    also without the figure ("Can partners ... attend antenatal appointments?"), answered "Yes." and the fact, it
    teaches that the benefit exists. A figure that cannot go without a hole is never asked so."""
    from policytune import contrast

    fact = {"id": "f", "kind": "sentence", "topic": "Antenatal Appointments", "headings": ["5. Antenatal Appointments"],
            "text": "Partners of pregnant employees may take paid time off to attend up to 2 antenatal appointments."}
    asked = questions.templates(fact, figure_free=True)
    free = [d for d in asked if d["style"] == "figure_free"]
    assert [d["question"] for d in free] == \
        ["Can partners of pregnant employees take paid time off to attend antenatal appointments?"]
    assert generate.answer_for(fact, free[0]) == "Yes. " + fact["text"]
    assert not [d for d in questions.templates(fact) if d["style"] == "figure_free"], "off unless asked for"
    # taken third, after the recall question and the wrong figure, before the everyday words
    order = [d["style"] for d in questions.recall_first(asked, fact["text"])]
    assert order[1:3] == ["contrast", "figure_free"]

    cases = {
        ("Do I get 20 days of annual leave a year?", "Employees get 20 days of annual leave a year."):
            "Do I get annual leave a year?",
        ("Do I receive an on-call allowance of $50 for each weekday night?", "An on-call allowance of $50 applies."):
            "Do I receive an on-call allowance for each weekday night?",
        ("Can a refresh allowance of up to $400 be claimed once every 3 years?", "An allowance of up to $400 ..."):
            "Can a refresh allowance be claimed once every 3 years?",
        ("Must the certificate be uploaded to PeopleHub within 7 calendar days of returning to work?",
         "The certificate must be uploaded within 7 calendar days of returning to work."):
            "Must the certificate be uploaded to PeopleHub?",
        ("Must Form PL-1 be submitted at least 8 weeks before the expected week of childbirth, with the form?",
         "Form PL-1 must be submitted at least 8 weeks before the expected week of childbirth."):
            "Must Form PL-1 be submitted, with the form?",
        # the figure is what is asked: no question is left without it
        ("Is the probationary period for all new employees 3 months from their start date?",
         "The probationary period is 3 months from the start date."): None,
        ("Are all figures below for a full-time employee working 37.5 hours per week?", "working 37.5 hours"): None,
        ("Can People Operations ask for a certificate for the following 6 months?", "the following 6 months"): None,
        ("Do I have to contribute at least 3%?", "Employees must contribute at least 3%."): None,
        ("Is the tuition refund up to a maximum of $4,000 per calendar year?", "a maximum of $4,000"): None,
        ("Is leave after 6 months of service paid?", "Leave after 6 months is paid."): None,
    }
    for (question, stated), expected in cases.items():
        assert contrast.without_figure(question, stated) == expected, question


def test_a_duration_is_asked_how_much_or_how_long_as_employees_ask_it():
    fact = {"id": "f", "kind": "sentence", "topic": "Compassionate Leave", "headings": ["7. Compassionate Leave"],
            "text": "Employees may take up to 5 days of paid compassionate leave per calendar year."}
    asked = [d["question"] for d in questions.templates(fact) if d["style"] == "wh"]
    assert asked and asked[0].startswith("How much paid compassionate leave can") and "days" not in asked[0]
    assert questions.unit_free("For how many years are leave records kept after employment ends?") == \
        "How long are leave records kept after employment ends?"
    assert questions.unit_free("How many months is the probationary period?") == "How long is the probationary period?"
    assert questions.unit_free("Under our policy, how many business days' notice must I give?") == \
        "Under our policy, how much notice must I give?"
    for kept in ("How many days per year with 10 years of service?",  # a count per row, not an amount of leave
                 "How many years of service do I need?",
                 "Within how many months of the date it was earned must TOIL be used?",  # "within how much the date"
                 "How many days of my accrued leave can I take during probation?",
                 "How many days can I carry over?"):  # "how long can I carry over" asks something else
        assert questions.unit_free(kept) is None, kept


def test_details_a_named_benefit_leaves_out_are_asked_and_stated_ones_are_not():
    """"Volunteer leave" is named with no figure, pay, approver or notice: each is a near miss. The relocation
    allowance's amount is stated in another section, so "How much is the relocation allowance?" is not asked."""
    from policytune import details

    def fact(headings: list[str], text: str) -> dict:
        return {"id": io.content_hash(text), "headings": headings, "text": text, "section": " > ".join(headings)}

    fact_list = [fact(["7. Civic Leave", "7.4 Volunteer Leave"],
                      "Volunteer leave may be available to support a registered charity."),
                 fact(["13. Allowances", "13.4 Relocation"], "The company may offer a relocation allowance."),
                 fact(["13. Allowances", "13.5 Amounts"], "The relocation allowance is up to $5,000."),
                 # another allowance's repayment says nothing of relocation's
                 fact(["7. Civic Leave", "7.1 Jury Service"],
                      "The employee must repay any loss-of-earnings allowance received from the court."),
                 *[fact(["2. Annual Leave"], f"Annual leave rule {i} is applied by the line manager.")
                   for i in range(60)]]
    kept, dropped = details.near_misses(fact_list, facts.Index(fact_list))
    asked = {k["question"] for k in kept}
    assert {"Is volunteer leave paid?", "How many days of volunteer leave can I take?",
            "Who approves volunteer leave?", "How much notice do I need to give for volunteer leave?"} <= asked
    assert "How much is the relocation allowance?" not in asked
    assert any(d["question"] == "How much is the relocation allowance?" and "$5,000" in d["fact"] for d in dropped)
    assert "Do I have to pay back the relocation allowance if I leave?" in asked
    assert not any("loss-of-earnings" in q for q in asked), "the allowance it names is stated: repaid to the company"
    assert not any("annual leave" in q for q in asked), "named in too many facts to tell which speak of it"
    assert details.things("Leave booked before joining (for example, a pre-paid holiday) is honoured.") == []
    # which leave, not a kind of leave (the Sourcegraph handbook: "How much exact leave do I get a year?" was asked)
    assert details.things("Log the exact leave and return-to-work dates in Slack.") == []
    assert details.things("Tilt has a dedicated leave case manager for each leave.") == []
    # praise is not a kind of benefit: the stipend is named without it, and praised time off names none
    assert details.things("We have a generous annual education stipend.") == ["annual education stipend"]
    assert details.things("We offer generous time off and a flexible schedule.") == []
    # "for every team member" says who is eligible
    budget = [fact(["9. Learning"], "We have an annual learning budget for every team member."),
              *fact_list[4:]]
    asked = {k["question"] for k in details.near_misses(budget, facts.Index(budget))[0]}
    assert "How much is the annual learning budget?" in asked
    assert "Who is eligible for the annual learning budget?" not in asked
    # what a section says of all it covers answers for each thing it names: the expenses section's approver is the
    # meal allowance's ("Who approves the daily meal allowance?" was a near miss)
    expenses = [fact(["4. Travel and Expenses"], "Employees on business travel receive a daily meal allowance of 60 EUR."),
                fact(["4. Travel and Expenses"], "Expense claims are approved by the line manager."),
                *fact_list[4:]]
    kept, dropped = details.near_misses(expenses, facts.Index(expenses))
    assert not any(re.search(r"who approves", k["question"], re.I) for k in kept), [k["question"] for k in kept]
    assert any(d["question"] == "Who approves the daily meal allowance?" and "line manager" in d["fact"] for d in dropped)


def test_benefits_the_policy_never_names_are_refused_and_a_word_anywhere_keeps_a_benefit_out(tmp_path):
    """The real inventory against a short leave policy: fostering and a company car are never named, so they are
    asked and answered with the refusal; adoption is named only in a heading, jury service only as "court", so
    neither is asked. Without the inventory every other near miss is still planned; a policy with no kind of leave
    gets none of it."""
    def chunk(headings: list[str], text: str) -> dict:
        return {"id": io.content_hash(text), "doc": "p.pdf", "pages": [1], "headings": headings, "text": text,
                "context_text": text, "n_tokens": 40, "kind": "text"}

    chunks = [chunk(["2. Annual Leave"], "Employees receive 25 days of annual leave per year. Annual leave is "
                    "booked in PeopleHub at least 2 weeks ahead."),
              chunk(["5. Adoption Leave"], "Eligible employees receive 26 weeks of leave at full pay."),
              chunk(["7. Civic Duties"], "Staff summoned to court are paid as normal for up to 10 days.")]
    fact_list, _ = facts.inventory(chunks)
    inventory = generate.prompts()["absent_benefits"]
    kept, dropped = absent.near_misses(fact_list, inventory)
    asked = {k["question"] for k in kept}
    assert {"Do I get any leave when I start fostering a child?", "Do I get a company car?"} <= asked
    assert not any("adopt" in q.lower() or "jury" in q.lower() or "witness" in q.lower() for q in asked)
    assert {d["aspect"]: d["reason"] for d in dropped}["absent_adoption"] == "the document names 'adopt'"
    assert {d["aspect"] for d in dropped} >= {"absent_annual_leave", "absent_jury"}

    def planned(inventory: dict | None) -> list[str]:
        chunk_plan, _ = generate.plan(chunks, fact_list, 3, 0.9, {}, absent_benefits=inventory)
        return [u["question"] for c in chunks for u in chunk_plan[c["id"]]["unanswerable"]]

    with_inventory, without = planned(inventory), planned(None)
    assert "Do I get a company car?" in with_inventory and "Do I get a company car?" not in without
    unwrapped = {q for q in without if not any(q.startswith(w.split("{")[0]) for w in questions.WRAPPERS)}
    assert unwrapped <= set(with_inventory), "the other near misses are all still asked (fewer openings repeat them)"
    with FaultServer(default=ok(grounded_reply)) as server:
        records, summary = run_generation(server.url, chunks, tmp_path / "cache.jsonl", rewordings_per_fact=0,
                                          unanswerable_ratio=0.9, absent_benefits=True)
    car = [r for r in records if r["question"] == "Do I get a company car?"]
    assert len(car) == 1 and car[0]["answer"] == chat.REFUSAL and not car[0]["answerable"]
    assert summary["unanswerable_per_aspect"]["absent_company_car"] >= 1
    # an expenses policy names no kind of leave: not the domain of the inventory, so nothing of it is asked
    expenses = [chunk(["2. Expenses", "2.1 Claims"], "Expense claims are submitted on Form EXP-14 within 30 days.")]
    expense_facts, _ = facts.inventory(expenses)
    skipped, why = absent.near_misses(expense_facts, inventory, generate.prompts()["absent_benefits_for"])
    assert skipped == [] and len(why) == len(inventory), "the report says which benefit was not asked, and why"
    assert all(d["question"] and d["aspect"].startswith("absent_") and "no heading matches" in d["reason"] for d in why)
    _, expense_report = generate.plan(expenses, expense_facts, 3, 0.9, {}, absent_benefits=inventory,
                                      absent_for=generate.prompts()["absent_benefits_for"])
    assert {d["question"] for d in expense_report["unanswerable_outside_domain"]} == {d["question"] for d in why}
    assert not any(d["aspect"].startswith("absent_") for d in expense_report["unanswerable_answered_by_document"]), \
        "not asked because the policy is about something else, not because it answers them"
    _, report = generate.plan(chunks, fact_list, 3, 0.9, {}, absent_benefits=inventory)
    assert report["unanswerable_outside_domain"] == []
    assert absent.near_misses(fact_list, inventory, generate.prompts()["absent_benefits_for"])[0] == kept


def test_a_near_miss_is_not_dropped_for_a_fact_about_another_benefit_but_is_for_a_scope_rule():
    """Sick leave never mentions performance reviews; study leave does. With the topic check the study leave fact
    does not answer "Will sick leave count against my performance review?"; a scope rule naming no benefit still
    answers "Does sick leave apply to contractors?"."""
    def chunk(headings: list[str], text: str) -> dict:
        return {"id": io.content_hash(text), "doc": "p.pdf", "pages": [1], "headings": headings, "text": text,
                "context_text": text, "n_tokens": 40, "kind": "text"}

    chunks = [chunk(["1. Scope", "1.2 Who This Policy Covers"], "Contractors and interns are not covered."),
              chunk(["4. Sick Leave"], "Employees receive 10 days of paid sick leave per year. Sick leave is "
                    "recorded in PeopleHub on the first day of absence."),
              chunk(["8. Study Leave"], "Study leave is available to employees whose last performance rating was "
                    "good. Study leave needs a course with a recognised college."),
              chunk(["2. Annual Leave"], " ".join(f"Annual leave rule {i} is applied by the line manager."
                                                  for i in range(40)))]
    fact_list, _ = facts.inventory(chunks)
    templates = {"bonus": {"cues": ["performance"], "questions": ["Will {topic} count against my performance review?"]},
                 "contractors": {"cues": ["contractor"], "questions": ["Does {topic} apply to contractors?"]}}

    def planned(check: str) -> tuple[set[str], set[str]]:
        chunk_plan, report = generate.plan(chunks, fact_list, 3, 0.5, templates, near_miss_check=check,
                                           detail_near_misses=False)
        return ({u["question"] for c in chunks for u in chunk_plan[c["id"]]["unanswerable"]},
                {d["question"] for d in report["unanswerable_answered_by_document"]})

    asked, dropped = planned("topic")
    assert "Will sick leave count against my performance review?" in asked
    assert "Does sick leave apply to contractors?" in dropped and "Does sick leave apply to contractors?" not in asked
    asked, dropped = planned("document")
    assert "Will sick leave count against my performance review?" in dropped


def test_a_fact_the_rules_cannot_read_is_asked_about_its_own_noun_phrases():
    from policytune import keyphrases

    # the phrases an employee would name, never a verb with its object, a contraction or a figure's unit
    assert keyphrases.noun_phrases("Dental insurance covers routine check-ups and hygiene visits twice a year, as well "
                                   "as fillings.")[:2] == ["Dental insurance", "routine check-ups and hygiene visits"]
    assert "fees for modules" in keyphrases.ranked(
        "Fees for modules that the employee fails, withdraws from or does not complete are not reimbursed.", Counter())[0].lower()
    said = keyphrases.noun_phrases("You can take time off whenever you don't need to be around, and we won't mind if "
                                   "you save money on 6 months of continuous service.")
    assert not {"take time", "save money", "don't", "won't mind", "months of continuous service"} & set(said)
    assert "the teammate" in keyphrases.noun_phrases("We can support the teammate whether it is through PTO or leave.")

    def chunk(headings: list[str], text: str) -> dict:
        return {"id": io.content_hash(text), "doc": "p.pdf", "pages": [1], "headings": headings, "text": text,
                "context_text": text, "n_tokens": 40, "kind": "text"}

    unreadable = ("Dental insurance covers routine check-ups and hygiene visits twice a year, as well as fillings, "
                  "extractions and emergency treatment.")
    chunks = [chunk(["11. Insurance Benefits", "11.2 Teeth"], unreadable + " Orthodontic treatment for children under 16 "
                    "is covered up to $1,500 per child.")]
    fact_list, _ = facts.inventory(chunks)
    target = next(f for f in fact_list if f["text"] == unreadable)
    assert questions.templates(target) == [], "the phrasing rules find no subject and verb they trust here"
    for about, wanted in ((False, 0), (True, 3)):
        chunk_plan, _ = generate.plan(chunks, fact_list, 3, 0.0, {}, about_phrases=about)
        drafts = next(e["drafts"] for e in chunk_plan[chunks[0]["id"]]["facts"] if e["fact"]["id"] == target["id"])
        assert len(drafts) == wanted
    asked = [d["question"] for d in drafts]
    assert all(q.startswith("What") and q.endswith("?") and not questions.malformed(q) for q in asked)
    assert "What does the policy say about routine check-ups and hygiene visits?" in asked
    # each question points at its fact, not at the section's other one
    index = facts.Index(fact_list)
    assert all(index.top(q, 1)[0][0]["id"] == target["id"] for q in asked)


def test_a_fact_whose_questions_all_hold_its_words_is_asked_one_that_makes_the_model_recall_it():
    def chunk(headings: list[str], text: str) -> dict:
        return {"id": io.content_hash(text), "doc": "p.pdf", "pages": [1], "headings": headings, "text": text,
                "context_text": text, "n_tokens": 40, "kind": "text"}

    copied = "You can use your books budget towards audiobooks as well if you prefer."
    chunks = [chunk(["Learning", "Books"], copied + " Books do not have to be tied directly to your area, and they only "
                    "need to be loosely relevant to your work.")]
    fact_list, _ = facts.inventory(chunks)
    target = next(f for f in fact_list if f["text"] == copied)
    assert not any(questions.recalls(d["question"], copied) for d in questions.templates(target))
    # a figure left out is recall; for a fact without one, most of its words left out is
    assert questions.recalls("What should I know about audiobooks?", copied)
    assert not questions.recalls("Can I use my books budget towards audiobooks as well if I prefer?", copied)
    asked = {}
    for on in (False, True):
        chunk_plan, _ = generate.plan(chunks, fact_list, 3, 0.0, {}, recall_questions=on)
        asked[on] = next(e["drafts"] for e in chunk_plan[chunks[0]["id"]]["facts"] if e["fact"]["id"] == target["id"])
    assert not any(questions.recalls(d["question"], copied) for d in asked[False])
    first = asked[True][0]
    assert first["style"] == "keyphrase" and questions.recalls(first["question"], copied), first
    assert not questions.malformed(first["question"])
    # the fact's other questions stay: the recall question comes first, it does not replace them
    assert [d["question"] for d in asked[False]][:2] == [d["question"] for d in asked[True][1:3]]


def test_without_topic_near_misses_no_section_is_asked_the_template_aspects(tmp_path):
    """The templates ask every section the aspects it is silent on ("Is annual leave different for union members?");
    off, the near misses left are the details and benefits the policy leaves out, and the answerable pairs are the
    same."""
    chunks = make_chunks(6)
    templates = generate.prompts()["unanswerable_templates"]

    def generated(topic_near_misses: bool, cache: str) -> tuple[list[dict], dict]:
        with FaultServer(default=ok(grounded_reply)) as server:
            # last: off, so these few facts' absent benefits do not fill the share before the templates are asked
            return run_generation(server.url, chunks, tmp_path / cache, rewordings_per_fact=0, unanswerable_ratio=0.3,
                                  topic_near_misses=topic_near_misses, topic_near_misses_last=False)

    with_records, with_summary = generated(True, "a.jsonl")
    without_records, without_summary = generated(False, "b.jsonl")
    assert set(with_summary["unanswerable_per_aspect"]) & set(templates), "the templates ask these sections something"
    assert not set(without_summary["unanswerable_per_aspect"]) & set(templates)
    assert [r["question"] for r in with_records if r["answerable"]] == \
        [r["question"] for r in without_records if r["answerable"]]


def test_an_faq_entry_is_asked_its_own_question_and_answered_by_its_statements(tmp_path):
    """"Not at this time." has no words a question could ask about; the FAQ's heading is the question it answers. Off,
    or on a policy without FAQ headings, the pairs are what they were."""
    def chunk(headings: list[str], text: str) -> dict:
        return {"id": io.content_hash(text), "doc": "p.pdf", "pages": [1], "headings": headings, "text": text,
                "context_text": text, "n_tokens": 40, "kind": "text"}

    faq_headings = ["Health benefits", "FAQ:"]
    chunks = [chunk(["Health benefits"], "Sourcegraph covers 100% of premiums for teammates and dependents."),
              chunk(faq_headings + ["Q. Does Sourcegraph match my 401k?"], "Not at this time."),
              chunk(faq_headings + ["Q: When can I enroll in my 401k plan? (this only applies to US Employees)"],
                    "US teammates: You are eligible to enroll immediately upon hire. You can change your contribution "
                    "amount at any time in Human Interest. " + " ".join(["Contributions are taken from every paycheck "
                                                                         "after you enroll."] * 6)),
              chunk(faq_headings + ["Questions?"], "Write to people-ops@sourcegraph.com with any question.")]
    fact_list, _ = facts.inventory(chunks)
    found = {e["question"]: e for e in faq.entries(fact_list)}
    assert set(found) == {"Does Sourcegraph match my 401k?", "When can I enroll in my 401k plan?"}
    assert found["Does Sourcegraph match my 401k?"]["answer"] == "Not at this time."
    # whole statements, up to faq.MAX_WORDS: a long entry's first ones
    enroll = found["When can I enroll in my 401k plan?"]["answer"]
    assert enroll.startswith("US teammates: You are eligible to enroll immediately upon hire.")
    assert len(enroll.split()) <= faq.MAX_WORDS and enroll.endswith(".")

    def generated(on: bool, cache: str) -> list[dict]:
        with FaultServer(default=ok(grounded_reply)) as server:
            records, _ = run_generation(server.url, chunks, tmp_path / cache, rewordings_per_fact=0,
                                        unanswerable_ratio=0.0, faq_questions=on)
        return records

    with_faq, without = generated(True, "a.jsonl"), generated(False, "b.jsonl")
    asked = {r["question"]: r for r in with_faq if r["style"] == "faq"}
    assert "Does Sourcegraph match my 401k?" in asked and "According to the policy, does Sourcegraph match my 401k?" in asked
    match = asked["Does Sourcegraph match my 401k?"]
    assert match["answer"] == "Not at this time." and match["answerable"] and match["evidence"] == "Not at this time."
    assert not any(q.startswith("Questions") or "applies to US" in q for q in asked)
    assert not [r for r in without if r["style"] == "faq"]
    # the facts keep their own questions beside the FAQ's
    assert {r["question"] for r in without} <= {r["question"] for r in with_faq} | set(asked)
    no_faq = [c for c in chunks if not any("?" in h for h in c["headings"])]
    assert [r["question"] for r in generated(True, "c.jsonl") if r["chunk_id"] in {c["id"] for c in no_faq}] == \
        [r["question"] for r in without if r["chunk_id"] in {c["id"] for c in no_faq}]


def test_faq_question_phrasings_keep_the_asking_sentence_whole():
    distinct = generate.not_near_copy
    fact = {"headings": ["Medical Leave Policy", "FAQ", "Q: I just joined recently. Am I eligible for medical leave?"]}
    said = faq.phrasings({"question": faq.question(fact["headings"][-1]), "fact": fact}, 3, distinct)
    assert said[0] == "I just joined recently. Am I eligible for medical leave?"
    assert "I just joined recently. According to the policy, am I eligible for medical leave?" in said
    # the asking words come after the situation: no opening fits
    fact = {"headings": ["FAQ", "I'm expecting a new child, is that covered by our LOA policy?"]}
    assert faq.phrasings({"question": faq.question(fact["headings"][-1]), "fact": fact}, 3, distinct) == \
        ["I'm expecting a new child, is that covered by our LOA policy?"]
    for heading in ("Paid Parental Leave", "Questions?", "Pregnant? Here is what to know", "Step 2: Notify your manager"):
        assert faq.question(heading) is None, heading
    assert faq.question("Q:How do I login to Tilt?") == "How do I login to Tilt?"


def test_a_fact_under_an_faq_entry_is_not_asked_about_the_faq():
    """Its question heading is no benefit's name, so the opening falls back to the heading above: "FAQ" names the
    page's form ("Quick question about FAQ: is there a restart on the timeline?")."""
    fact = {"headings": ["Parental Leave Policy", "FAQ", "Q: What happens to my promotion eligibility?"],
            "topic": "Q: What happens to my promotion eligibility?"}
    drafts = [{"question": "Is there a restart on the promotion timeline after leave?", "style": "yes_no"}]
    said = [d["question"] for d in questions.wrapped(drafts, fact, 4, generate.not_near_copy)]
    assert said and not [q for q in said if "FAQ" in q or "Quick question" in q], said
    for container in ("FAQ", "FAQs", "Frequently Asked Questions", "Questions and answers", "Q&A",
                      "FAQ for US-based Teammates"):
        assert questions.names_nothing(container), container
        assert citation.label(["Parental Leave", container]) == "Parental Leave", "one rule for labels and openings"
    assert not questions.names_nothing("Parental Leave") and not questions.names_nothing("FAQ bonus")
    assert citation.label(["Parental Leave", "FAQ bonus"]) == "FAQ bonus"


def test_topic_near_misses_are_asked_only_where_the_policys_own_fall_short():
    """On a short policy the benefits it never names, in employees' openings, fill the refusal share alone; the aspects
    every section is asked ("Is office 0 leave different for union members?") repeat its topic with the refusal."""
    spec = generate.prompts()
    chunks = make_chunks(1)
    fact_list, _ = facts.inventory(chunks)
    topical = set(spec["unanswerable_templates"])
    left_out = []

    def aspects(**flags) -> list[str]:
        templates = flags.pop("templates", spec["unanswerable_templates"])
        chunk_plan, report = generate.plan(chunks, fact_list, 3, 0.3, templates, spec["near_miss_topics"],
                                           spec["not_a_benefit"],
                                           absent_benefits=flags.pop("absent", spec["absent_benefits"]),
                                           absent_for=spec["absent_benefits_for"], **flags)
        left_out.append(report["topic_aspects_left_out"])
        return [u["aspect"] for plan in chunk_plan.values() for u in plan["unanswerable"]]

    own_first, mixed = aspects(), aspects(topic_near_misses_last=False)
    assert own_first and not topical & set(own_first), own_first
    assert len(own_first) >= len(mixed) and topical & set(mixed), "off, both kinds share the quota"
    short = aspects(absent=None)  # no benefit left to name: the policy's own near misses fall short
    assert topical & set(short)
    no_templates = aspects(templates={})  # none to leave out: the log must not say they were
    assert no_templates and not topical & set(no_templates)
    assert left_out == [True, False, False, False], "the summary says so only where the own near misses filled it"


def _leave_sections() -> list[dict]:
    """Six leave sections: an entitlement, a notice rule, an approver and a confirmation of "the employee's" dates."""
    chunks = []
    for i, (leave, days, who) in enumerate([("sick", 10, "People Operations"), ("study", 5, "the Head of Learning"),
                                            ("volunteer", 2, "the line manager"), ("bereavement", 5, "People Operations"),
                                            ("jury service", 15, "the Head of HR"), ("parental", 20, "the Director")]):
        text = (f"Every employee receives {days} days of paid {leave} leave per calendar year. "
                f"Employees must notify their line manager at least {days + 2} business days before {leave} leave begins. "
                f"Requests for {leave} leave are approved by {who} through PeopleHub. "
                f"People Operations will confirm the employee's {leave} leave dates in writing within {days - 1} business "
                "days.")
        chunks.append({"id": io.content_hash(text), "doc": "policy.pdf", "pages": [i + 1],
                       "headings": ["Leave Policy", f"{i + 1}. {leave.title()} Leave"], "text": text,
                       "context_text": text, "n_tokens": 60, "kind": "text"})
    return chunks


def test_balanced_styles_give_the_facts_questions_the_near_misses_openings_and_the_first_person():
    from policytune import balance

    chunks = _leave_sections()
    fact_list, _ = facts.inventory(chunks)
    # two aspects a section: the near misses fall short of half the questions and are asked again in openings
    templates = {k: v for k, v in generate.prompts()["unanswerable_templates"].items() if k in ("resigning", "contractors")}

    def asked(on: bool) -> tuple[list[list[str]], list[str], dict]:
        chunk_plan, report = generate.plan(chunks, fact_list, 3, 0.5, templates, balanced_styles="both" if on else "off")
        per_fact = [[d["question"] for d in e["drafts"][:3]] for c in chunks for e in chunk_plan[c["id"]]["facts"]]
        return per_fact, [u["question"] for c in chunks for u in chunk_plan[c["id"]]["unanswerable"]], report

    def share(questions_asked: list[str], pattern: re.Pattern) -> float:
        return sum(bool(pattern.search(q)) for q in questions_asked) / len(questions_asked)

    off, off_near, off_report = asked(False)
    on, on_near, on_report = asked(True)
    before, after = sum(off, []), sum(on, [])
    assert "styles" not in off_report and on_near == off_near, "near misses are not touched, nor anything when off"
    assert share(off_near, questions.OPENING) > 0.5 and share(before, questions.OPENING) == 0, "the imbalance"
    assert len(after) == len(before) and len(set(after)) == len(after)
    assert abs(share(after, questions.OPENING) - share(on_near, questions.OPENING)) <= 1 / len(after)
    assert on_report["styles"]["openings_after"] == round(share(after, questions.OPENING), 3)
    assert share(after, balance.FIRST_PERSON) > share(before, balance.FIRST_PERSON)
    assert any(re.search(r"confirm my sick leave dates", q) for q in after)
    assert not any(re.search(r"the employee's", q) for q in after)
    # a rewrite never makes two of a fact's questions near-copies (generation would keep one of them)
    assert all(generate.not_near_copy(q, [o for o in qs if o != q]) for qs in on for q in qs)
    # the same words under the opening: a wrapped question is its unwrapped one, in the first person where it changed
    for b, a in zip(before, after):
        core = questions.OPENING.sub("", a)
        assert core.lower().rstrip("?") in {b.lower().rstrip("?"), (balance.first_person(b) or b).lower().rstrip("?")}


def test_first_person_rewrites_questions_about_the_employee_and_leaves_the_rest():
    from policytune.balance import first_person

    assert first_person("Does every employee receive 10 days of paid sick leave?") == \
        "Do I receive 10 days of paid sick leave?"
    assert first_person("Are employees entitled to 25 days?") == "Am I entitled to 25 days?"
    assert first_person("Must staff notify their line manager?") == "Must I notify my line manager?"
    assert first_person("Can the company require the employee to take some of their leave?") == \
        "Can the company require me to take some of my leave?"
    for left in ("What is the employee contribution for dental insurance?",      # a kind of contribution
                 "Does the Employee Assistance Programme offer 6 sessions?",     # a name
                 "Can an employee with 12 months of service take leave?",        # "Can I with 12 months ..."
                 "Who holds a meeting with the employee within 3 days of the employee's return?",  # two people
                 "Can I carry over 5 days?", "When must timesheets be submitted?"):
        assert first_person(left) is None, left


def test_near_misses_ask_about_an_employee_where_the_facts_cannot_say_i_as_often():
    from policytune import balance

    fact = {"headings": ["Leave Policy", "2. Sick Leave"], "topic": "Sick Leave"}
    drafts = [{"question": q, "style": "wh"} for q in ("When must timesheets be submitted?",
                                                        "Which system records sick leave?")]
    entries = [{"fact": fact, "drafts": [dict(d) for d in drafts]}]
    near = [{"question": q} for q in ("What happens to sick leave if I resign?",
                                      "Can I take sick leave during my notice period?",
                                      "Does taking sick leave affect my bonus?", "Is sick leave taxed?")]
    report = balance.balance(entries, near, 3, generate.not_near_copy, person=True, openings=False)
    assert [d["question"] for d in entries[0]["drafts"]] == [d["question"] for d in drafts], "nothing to say as 'I'"
    assert report["first_person_near_misses"] == 0.75 and report["first_person_near_misses_after"] == 0.0
    assert {n["question"] for n in near} == {"What happens to sick leave if an employee resigns?",
                                             "Can an employee take sick leave during their notice period?",
                                             "Does taking sick leave affect an employee's bonus?", "Is sick leave taxed?"}
    assert balance.third_person("Am I covered if I am on probation?") == "Is an employee covered if they are on probation?"
    assert balance.third_person("Which form do I fill in?") == "Which form does an employee fill in?"
    assert balance.third_person("I'm on probation. Can I use sick leave?") is None  # a situation, said by the employee


def test_a_policy_without_headings_is_never_asked_about_by_its_file_name(tmp_path):
    """A fact under no heading took its document's file name as its topic: "For travel_policy_v2_FINAL.md, is the
    daily meal allowance 60 EUR?", "Can I use travel_policy_v2_FINAL.md while I am still on probation?" (12 of 30)."""
    from conftest import run_script

    policy = tmp_path / "travel_policy_v2_FINAL.md"
    policy.write_text(
        "Employees travelling on company business receive a daily meal allowance of 60 EUR. Hotel bookings must be "
        "made through the Navan travel portal at least 14 days before departure. Economy class is used for all "
        "flights under 6 hours. Expense claims must be submitted within 30 days of returning from the trip, with "
        "receipts attached. Employees on probation may travel only with written approval from their line manager.\n")
    result = run_script(str(ROOT / "syntheticdatageneration.py"), "--data-dir", str(tmp_path), "--pdf", str(policy))
    assert result.returncode == 0, result.stderr[-2000:]
    pairs = json.loads((tmp_path / "syntheticdata.json").read_text())
    asked = [p["question"] for p in pairs]
    assert len([p for p in pairs if p["answerable"]]) >= 10, asked
    assert not [q for q in asked if re.search(r"travel_policy|FINAL|\.md\b", q)], asked
    assert not [q for q in asked if re.search(r"\b(?:use|get more|for) the policy\b", q, re.I)], asked


@pytest.mark.slow
def test_a_policy_keeps_its_near_misses_beside_another_policy(tmp_path, shared_docs):
    """A near miss was dropped when any of the k facts most like it, in any document, held one of its aspect's cue
    words: beside the sample, "Employees sign a repayment agreement" (the sample) answered 18F's "Who signs off on sick
    leave?", and 18F kept 45 of the 379 near misses it has alone. A fact of another document now answers a near miss
    only where it names the near miss's topic."""
    from conftest import SAMPLE_PDF, run_script

    counts = {}
    for name, documents in (("alone", [shared_docs / "18f-leave-policy.pdf"]),
                            ("together", [SAMPLE_PDF, shared_docs / "18f-leave-policy.pdf"])):
        result = run_script(str(ROOT / "syntheticdatageneration.py"), "--data-dir", str(tmp_path / name), "--no-progress",
                            "--pdf", *map(str, documents))
        assert result.returncode == 0, result.stderr[-2000:]
        pairs = json.loads((tmp_path / name / "syntheticdata.json").read_text())
        counts[name] = Counter(p["doc"] for p in pairs if not p["answerable"])
    assert counts["together"]["18f-leave-policy.pdf"] >= 0.5 * counts["alone"]["18f-leave-policy.pdf"], counts
    assert counts["together"]["sample_policy.pdf"] >= 150, counts
