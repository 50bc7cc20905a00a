from policytune import augment


def _facts(n: int, section: str = "2. Annual Leave > 2.1 Entitlement") -> list[dict]:
    return [{"id": f"f{i}", "section": section, "topic": "Annual leave",
             "text": f"Statement number {i} says employees with {i} years of service get {20 + i} days."}
            for i in range(n)]


def test_a_repeated_section_lists_the_same_statements_in_another_order_part_by_part():
    facts = _facts(30) + _facts(3, "3. Sick Leave")
    records = augment.knowledge_records(facts, section_restatements=3, fact_statements=0, permute=True)
    by_question: dict[str, list[str]] = {}
    for record in records:
        by_question.setdefault(record["instruction"], []).append(record["output"])
    # 30 statements of ~14 words are more than one 180-word part: each part keeps its own statements in every order
    assert any("(part 1 of" in q for q in by_question)
    for question, outputs in by_question.items():
        assert len(outputs) == 3
        statements = [sorted(o.rstrip(".").split(". ")) for o in outputs]
        assert statements[0] == statements[1] == statements[2], question
    long_part = next(o for q, o in by_question.items() if "(part 1 of" in q)
    assert long_part[0] != long_part[1] != long_part[2] != long_part[0]
    assert long_part[0].startswith("Statement number 0 ")  # the first restatement is in the policy's order
    assert len({r["id"] for r in records}) == len(records)
    # the same run writes the same records
    assert records == augment.knowledge_records(facts, section_restatements=3, fact_statements=0, permute=True)


def test_by_default_repeats_are_identical():
    records = augment.knowledge_records(_facts(30), section_restatements=2, fact_statements=0)
    first = [r["output"] for r in records[:len(records) // 2]]
    assert first == [r["output"] for r in records[len(records) // 2:]]


def test_an_faq_entry_is_restated_under_its_question_with_one_question_mark():
    records = augment.section_records(_facts(2, "Benefits > FAQ > Q: Does Sourcegraph match my 401k?"))
    assert [r["instruction"] for r in records] == ["What does the policy say about Benefits > FAQ > Q: Does Sourcegraph "
                                                   "match my 401k?"]
