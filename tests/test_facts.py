"""The fact inventory and the code-written questions: what counts as a fact, what a question asks about."""
from __future__ import annotations

import re

from policytune import facts, phrasing, questions

CHUNK_TEXT = """Northwind team policies (handbook snapshot)
Table 1: Annual leave accrual by years of service

| Years of service | Days per year | Maximum carry-over |
| - | - | - |
| Less than 2 years | 20 days | 5 days |
| 2 to less than 5 years | 22 days | 5 days |
Employees who join part way through the year accrue leave only for the months in which they are employed. Leave
requests are made in PeopleHub.
The recognised holidays are:
- New Year's Day
- Founders' Day (the third Monday in February)
Company matching contributions vest as follows:
- after 2 complete years: 50% vested;
See https://example.org/handbook
Annual Leave"""


def chunk(text: str = CHUNK_TEXT, headings=("2. Annual Leave", "2.1 Accrual")) -> dict:
    return {"id": "c1", "doc": "p.pdf", "pages": [3], "headings": list(headings), "text": text}


def test_table_rows_read_with_their_header_and_captions_links_and_headings_are_not_facts():
    found, skipped = facts.inventory([chunk()])
    texts = [f["text"] for f in found]
    assert "Years of service: Less than 2 years; Days per year: 20 days; Maximum carry-over: 5 days." in texts
    row = next(f for f in found if f["text"].startswith("Years of service: 2 to less"))
    # a row is asked as an employee names it: its measure with its unit, its key with what it counts
    assert "How many days per year with 2 to less than 5 years of service?" in questions.table_questions(row)
    assert not any(t.startswith("Table 1") or "https://" in t or t == "Annual Leave" for t in texts)
    assert {s["reason"] for s in skipped} >= {"caption", "link only", "title"}
    assert not any("snapshot" in t for t in texts), "a short line with no verb and no full stop is a title"
    assert all(f["section"] == "2. Annual Leave > 2.1 Accrual" and f["topic"] == "Accrual" for f in found)


def test_a_sentence_cut_by_a_page_break_is_one_fact_and_list_items_keep_their_opening():
    texts = [f["text"] for f in facts.inventory([chunk()])[0]]
    assert ("Employees who join part way through the year accrue leave only for the months in which they are employed."
            in texts)
    assert "Leave requests are made in PeopleHub." in texts
    assert "The recognised holidays are: New Year's Day" in texts
    assert "Company matching contributions vest as follows: after 2 complete years: 50% vested;" in texts


def test_a_list_the_layout_ran_into_one_paragraph_reads_as_its_items_and_a_list_of_titles_is_not_facts():
    text = ("You can use Sick Leave for: * Doctor and medical appointments for you or a family member *\n"
            "Mental health care * Recovering from illness, for you or a family member * Any other health\nneed\n"
            "OPM Fact Sheets: * Leave Year Beginning and Ending Dates * Advanced Annual Leave")
    texts = [f["text"] for f in facts.inventory([chunk(text=text)])[0]]
    assert texts == ["You can use Sick Leave for: Doctor and medical appointments for you or a family member",
                     "You can use Sick Leave for: Mental health care",
                     "You can use Sick Leave for: Recovering from illness, for you or a family member",
                     "You can use Sick Leave for: Any other health need"]


def test_key_value_tables_and_abbreviations_do_not_split_or_vanish():
    text = "| Policy owner | Director of People Operations |\n| - | - |\n| Version | 3.2 |\n" \
           "| Step 1: | Discuss the dates with the line manager. |\n" \
           "Northwind Analytics Ltd. pays expenses monthly, e.g. travel and hotels."
    texts = [f["text"] for f in facts.inventory([chunk(text)])[0]]
    assert texts == ["Policy owner: Director of People Operations.", "Version: 3.2.",
                     "Step 1: Discuss the dates with the line manager.",  # one colon, not "Step 1::"
                     "Northwind Analytics Ltd. pays expenses monthly, e.g. travel and hotels."]
    assert facts.split_sentences("Staff of the U.S. General Services Administration may vote. Leave is paid.") == \
        ["Staff of the U.S. General Services Administration may vote.", "Leave is paid."]
    assert facts.heading_name("3.1 About PPL:") == "PPL"  # "Quick question about PPL", not "about about PPL"


def test_slots_find_quantities_money_forms_and_systems_and_cloze_asks_for_them():
    fact = "Employees must submit Form PL-1 Parental Leave Notification through PeopleHub at least 8 weeks before the birth."
    kinds = {s["kind"]: s["value"] for s in questions.slots(fact)}
    assert kinds == {"form": "Form PL-1 Parental Leave Notification", "system": "PeopleHub", "quantity": "8 weeks"}
    by_kind = {s["kind"]: s for s in questions.slots(fact)}
    assert questions.cloze(fact, by_kind["quantity"]).endswith("at least how many weeks before the birth?")
    assert questions.cloze(fact, by_kind["form"]).startswith("Employees must submit which form through PeopleHub")
    # A name given to the thing before it is not a system to ask "which system" about.
    assert [s["kind"] for s in questions.slots("We host a monthly book club called BookHog.")] == []
    assert [s["value"] for s in questions.slots("Book club orders go through BookHog.")] == ["BookHog"]


def test_a_question_that_points_at_another_fact_of_the_section_is_inconsistent():
    text = ("Employees receive 20 days of annual leave per year. Unused annual leave of up to 5 days may be carried "
            "over into the next leave year. Sick leave is paid for up to 10 days.")
    found = facts.inventory([chunk(text)])[0]
    index = facts.Index(found)
    carry = next(f for f in found if "carried" in f["text"])
    assert questions.consistent("How many days of unused annual leave can be carried over?", carry, index) is None
    assert questions.consistent("How many days of sick leave are paid?", carry, index) == \
        "another fact of the section answers it better"
    assert "task" in questions.consistent("What does the excerpt say about carrying over leave?", carry, index)


def test_every_fact_gets_drafts_and_templates_do_not_repeat():
    for fact in facts.inventory([chunk()])[0]:
        drafts = questions.templates(fact)
        assert drafts and len({d["question"].lower() for d in drafts}) == len(drafts)
        assert all(d["question"].endswith("?") and not d["question"].endswith("??") for d in drafts)


def test_a_faq_answer_marker_is_not_part_of_the_statement_and_a_label_is_not_asked():
    said = facts.statements("A: You may take a total of 12 weeks of leave.\n- A: Yes, medical leave covers mental health.")
    assert [text for _, text, _ in said] == ["You may take a total of 12 weeks of leave.",
                                             "Yes, medical leave covers mental health."]
    asked = [d["question"] for d in questions.sentence_questions("Reminder: HR Links is separate from Tock.")]
    assert asked and not any("Reminder" in q for q in asked), asked
    asked = [d["question"] for d in questions.sentence_questions("US teammates: Employees receive 20 days of leave.")]
    assert asked and not any("teammates:" in q for q in asked), asked
    # a label over a list of whole sentences is not their subject, and a label is never a clause's subject
    labelled = facts.inventory([chunk(text="US teammates:\n- Please use the links below to download the app.\n"
                                           "- You have 30 days from your start date to enroll in Rippling.\n"
                                           "- Unlike Rippling, you need an invite to log in to Sequoia.")])[0]
    asked = [d["question"] for fact in labelled for d in questions.templates(fact)]
    assert "Should I use the links below to download the app?" in asked, asked
    assert not any("teammates" in q or "pleases" in q for q in asked), asked
    assert phrasing.parse("US teammates: Please use the links below.") is None
    labelled = facts.inventory([chunk(text="Preparing for your first day back:\n- Your Slack status may still be set "
                                           "as OOO.\n- IMPORTANT: If your return-to-work date changes, please notify "
                                           "People Ops.")])[0]
    asked = [d["question"] for fact in labelled for d in questions.templates(fact)]
    assert "Can my Slack status still be set as OOO?" in asked, asked
    assert not any(re.search(r"preparing|important", q, re.I) for q in asked), asked
    # the same long label before a sentence that is a fact of its own (not a list item)
    asked = [d["question"] for d in questions.sentence_questions(
        "Preparing for your first day back: If your return-to-work date changes, you should notify People Ops.")]
    assert asked and not any(re.search(r"preparing", q, re.I) for q in asked), asked
    # a person named by a job title is asked for with "who"
    assert phrasing.who_or_what("Your Workforce Relations HR Specialist can advise which paperwork is needed.") == \
        "Who can advise which paperwork is needed?"


def test_a_sentence_that_stops_on_a_preposition_goes_on_in_the_next_line_or_is_not_a_fact():
    text = ("Employees may carry unused leave up to the maximum carry-over shown in\nTable 1. Any balance above it is "
            "forfeited.\nAll leave is booked in PeopleHub. Once approvals are received, please submit a copy of the "
            "email thread to\nIf you receive a")
    found, skipped = facts.inventory([chunk(text=text)])
    texts = [f["text"] for f in found]
    assert "Employees may carry unused leave up to the maximum carry-over shown in Table 1." in texts
    assert "Any balance above it is forfeited." in texts
    assert "All leave is booked in PeopleHub." in texts  # its cut second sentence is left out, not asked about
    assert not any(t.endswith((" to", " a")) for t in texts)
    assert any("If you receive a" in s["text"] for s in skipped if s["reason"] == "cut off")


def test_items_that_are_sentences_of_their_own_do_not_read_on_from_a_whole_opening_sentence():
    item = {"intro": "We do have some ground rules that we expect Teammates to follow:", "topic": "PTO ground rules",
            "kind": "list_item", "text": "We do have some ground rules that we expect Teammates to follow: If you are "
            "paid through Remote.com, you also need to submit your PTO request in the Remote.com system."}
    asked = [d["question"] for d in questions.list_item_questions(item)]
    assert asked and not any("ground rules" in q for q in asked)
    # "you" as an object is "me" in an employee's question
    assert phrasing.you_as_me("Will my specialist work with Payroll to remove you from the VLTP program?") == \
        "Will my specialist work with Payroll to remove me from the VLTP program?"
