"""The hand-written gold question set (sample/gold.jsonl) is well formed and grounded in the policy.

Fast and model-free: it reads sample/gold.jsonl and sample/policy_source.md and checks the schema,
the counts and coverage, and that every keyword can be matched against the policy's own wording
under the same normalisation the scorer uses (policytune.metrics.normalise_words).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from policytune import chat
from policytune.metrics import normalise_words

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "sample" / "gold.jsonl"
SOURCE = ROOT / "sample" / "policy_source.md"

KEYS = {"id", "question", "answer", "answerable", "keywords", "section", "type"}
ANSWERABLE_TYPES = {"numeric", "entity", "procedure", "eligibility"}
MIN_ANSWERABLE = 85
MIN_UNANSWERABLE = 35
MIN_PER_TYPE = 12
GAP_SECTIONS = ("6.2", "7.4", "11.5", "13.4")
COPY_RUN = 8  # a question sharing this many consecutive normalised words with the policy copies it


def load_gold(path: Path = GOLD) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def policy_text() -> str:
    """The policy as rendered into the PDF: the maintainers' HTML comment (which names the gaps) removed."""
    return re.sub(r"<!--.*?-->", "", SOURCE.read_text(encoding="utf-8"), flags=re.S)


def top_level_sections(text: str) -> list[str]:
    return re.findall(r"^## (\d+)\.", text, flags=re.M)


def subsection_numbers(text: str) -> set[str]:
    return set(re.findall(r"^### (\d+\.\d+)\b", text, flags=re.M))


def contains_words(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def keyword_problems(items: list[dict], source: str) -> list[str]:
    """Answerable items' keywords none of whose `|` alternatives occur, as whole normalised words, in the source."""
    source_words = normalise_words(source)
    problems = []
    for item in items:
        if not item["answerable"]:
            continue
        for keyword in item["keywords"]:
            alternatives = [normalise_words(alt) for alt in keyword.split("|")]
            if not any(contains_words(source_words, alt) for alt in alternatives):
                problems.append(f"{item['id']}: {keyword!r}")
    return problems


def copied_questions(items: list[dict], source: str, run: int = COPY_RUN) -> list[str]:
    """Questions that share a run of `run` consecutive normalised words with the source."""
    words = normalise_words(source)
    runs = {tuple(words[i:i + run]) for i in range(len(words) - run + 1)}
    copied = []
    for item in items:
        q = normalise_words(item["question"])
        if any(tuple(q[i:i + run]) in runs for i in range(len(q) - run + 1)):
            copied.append(f"{item['id']}: {item['question']}")
    return copied


@pytest.fixture(scope="module")
def gold() -> list[dict]:
    return load_gold()


@pytest.fixture(scope="module")
def source() -> str:
    return policy_text()


def answerable(items: list[dict]) -> list[dict]:
    return [item for item in items if item["answerable"]]


def unanswerable(items: list[dict]) -> list[dict]:
    return [item for item in items if not item["answerable"]]


# Schema


def test_every_item_has_exactly_the_gold_keys_with_the_right_types(gold):
    for item in gold:
        assert set(item) == KEYS, item.get("id")
        assert isinstance(item["id"], str) and re.fullmatch(r"g\d{3,}", item["id"]), item["id"]
        assert isinstance(item["question"], str) and item["question"].strip(), item["id"]
        assert isinstance(item["answer"], str) and item["answer"].strip(), item["id"]
        assert isinstance(item["answerable"], bool), item["id"]
        assert isinstance(item["keywords"], list), item["id"]
        assert all(isinstance(k, str) and k.strip() for k in item["keywords"]), item["id"]
        assert isinstance(item["section"], str) and re.fullmatch(r"\d+\.\d+", item["section"]), item["id"]
        assert isinstance(item["type"], str), item["id"]


def test_ids_are_unique(gold):
    duplicates = [i for i, n in Counter(item["id"] for item in gold).items() if n > 1]
    assert not duplicates


def test_questions_are_unique_after_normalisation(gold):
    counts = Counter(" ".join(normalise_words(item["question"])) for item in gold)
    assert not [q for q, n in counts.items() if n > 1]


def test_answerable_items_have_an_answerable_type_and_unanswerable_items_the_unanswerable_type(gold):
    for item in gold:
        if item["answerable"]:
            assert item["type"] in ANSWERABLE_TYPES, item["id"]
        else:
            assert item["type"] == "unanswerable", item["id"]


def test_unanswerable_items_expect_the_exact_refusal_and_have_no_keywords(gold):
    for item in unanswerable(gold):
        assert item["answer"] == chat.REFUSAL, item["id"]
        assert item["keywords"] == [], item["id"]


def test_answerable_items_have_one_to_three_keywords_and_a_real_answer(gold):
    for item in answerable(gold):
        assert 1 <= len(item["keywords"]) <= 3, item["id"]
        assert item["answer"] != chat.REFUSAL, item["id"]
        assert all(alt.strip() for k in item["keywords"] for alt in k.split("|")), item["id"]


# Counts and coverage


def test_there_are_enough_answerable_and_unanswerable_items(gold):
    assert len(answerable(gold)) >= MIN_ANSWERABLE
    assert len(unanswerable(gold)) >= MIN_UNANSWERABLE


def test_every_answerable_type_appears_at_least_the_minimum_number_of_times(gold):
    counts = Counter(item["type"] for item in answerable(gold))
    for kind in sorted(ANSWERABLE_TYPES):
        assert counts[kind] >= MIN_PER_TYPE, (kind, counts[kind])


def test_every_numbered_section_of_the_policy_has_an_answerable_question(gold, source):
    sections = top_level_sections(source)
    assert sections == [str(n) for n in range(1, len(sections) + 1)]  # 1..N, in order
    covered = {item["section"].split(".")[0] for item in answerable(gold)}
    assert set(sections) - covered == set()


def test_each_deliberate_gap_has_an_unanswerable_question(gold):
    gap_items = Counter(item["section"] for item in unanswerable(gold))
    assert [gap for gap in GAP_SECTIONS if gap_items[gap] == 0] == []


def test_every_section_value_is_a_subsection_heading_of_the_policy(gold, source):
    headings = subsection_numbers(source)
    assert {item["section"] for item in gold} - headings == set()


# Grounding


def test_every_answerable_keyword_occurs_in_the_policy_source(gold, source):
    assert keyword_problems(gold, source) == []


def test_no_question_copies_a_run_of_eight_words_from_the_policy(gold, source):
    assert copied_questions(gold, source) == []


# The checks above can fail: each helper flags a planted fault.


def test_the_keyword_check_flags_a_misspelt_keyword(source):
    item = {"id": "x1", "answerable": True, "keywords": ["PeopleHub", "ClokWise|Clockwize"]}
    assert keyword_problems([item], source) == ["x1: 'ClokWise|Clockwize'"]


def test_the_keyword_check_flags_a_number_the_policy_writes_differently(source):
    # The policy writes 0.45; "045" and a unit-less fragment of a phrase are different words.
    item = {"id": "x2", "answerable": True, "keywords": ["045"]}
    assert keyword_problems([item], source) == ["x2: '045'"]


def test_the_keyword_check_accepts_number_words_and_thousands_separators(source):
    item = {"id": "x3", "answerable": True, "keywords": ["four times", "4000", "twenty business days"]}
    assert keyword_problems([item], source) == []


def test_the_copy_check_flags_a_question_lifted_from_the_policy(source):
    lifted = {"id": "x4", "question": "Can employees may carry unused annual leave into the next leave year?"}
    own_words = {"id": "x5", "question": "Can I carry my unused holiday into next year?"}
    assert copied_questions([lifted, own_words], source) == [f"x4: {lifted['question']}"]


def test_the_section_and_gap_helpers_read_the_policy_headings(source):
    assert top_level_sections(source)[:3] == ["1", "2", "3"]
    assert {"2.2", "6.2", "7.4", "11.5", "13.4"} <= subsection_numbers(source)
    assert "deliberately" not in policy_text()  # the maintainers' comment is not part of the policy


# The gold sets for policies nobody here wrote (bench/gold/posthog.jsonl, bench/gold/18f.jsonl,
# bench/gold/sourcegraph.jsonl). Their sources stay out of the repository (../shared/eval-docs/), so the checks
# against the source skip where it is absent.

EVAL_DOCS = ROOT.parent / "shared" / "eval-docs"
POSTHOG_GOLD = ROOT / "bench" / "gold" / "posthog.jsonl"
POSTHOG_SOURCE = EVAL_DOCS / "posthog-time-off-benefits.md"
F18_GOLD = ROOT / "bench" / "gold" / "18f.jsonl"
F18_SOURCE = EVAL_DOCS / "18f-leave-policy.md"
SOURCEGRAPH_GOLD = ROOT / "bench" / "gold" / "sourcegraph.jsonl"
SOURCEGRAPH_SOURCE = EVAL_DOCS / "sourcegraph-leave-benefits.md"

OTHER_POLICY_GOLD_SETS = pytest.mark.parametrize(
    ("gold_path", "source_path", "prefix"),
    [(POSTHOG_GOLD, POSTHOG_SOURCE, "p"), (F18_GOLD, F18_SOURCE, "f"), (SOURCEGRAPH_GOLD, SOURCEGRAPH_SOURCE, "s")],
    ids=["posthog", "18f", "sourcegraph"],
)


@OTHER_POLICY_GOLD_SETS
def test_the_gold_set_for_a_policy_nobody_here_wrote_is_well_formed(gold_path, source_path, prefix):
    items = load_gold(gold_path)
    assert len(answerable(items)) >= 80 and len(unanswerable(items)) >= 25
    assert len({item["id"] for item in items}) == len(items)
    assert len({" ".join(normalise_words(item["question"])) for item in items}) == len(items)
    for item in items:
        assert set(item) == KEYS and re.fullmatch(rf"{prefix}\d{{3,}}", item["id"]), item
        if item["answerable"]:
            assert item["type"] in ANSWERABLE_TYPES and 1 <= len(item["keywords"]) <= 3, item["id"]
        else:
            assert item["type"] == "unanswerable" and item["keywords"] == [], item["id"]
            assert item["answer"] == chat.REFUSAL, item["id"]


@OTHER_POLICY_GOLD_SETS
def test_the_gold_set_for_a_policy_nobody_here_wrote_is_grounded_in_it_and_copies_none_of_it(
        gold_path, source_path, prefix):
    if not source_path.exists():
        pytest.skip("../shared/eval-docs is not here")
    items, source = load_gold(gold_path), source_path.read_text(encoding="utf-8")
    headings = {h.strip() for h in re.findall(r"^#+\s+(.+)$", source, flags=re.M)}
    assert {item["section"] for item in items} - headings == set()
    assert keyword_problems(items, source) == []
    assert copied_questions(items, source) == []
