"""Questions written by rule from policy statements: they read as questions and ask what the statement answers."""
from collections import Counter

from policytune import employee, facts, keyphrases, phrasing, questions


def test_statements_become_yes_no_questions_in_the_first_person_with_their_condition():
    assert phrasing.polar("Forfeited days are not paid out.") == "Are forfeited days paid out?"
    assert phrasing.polar("Employees may take up to 5 days of paid leave for their move.") == \
        "Can I take up to 5 days of paid leave for my move?"
    assert phrasing.polar("Employees who join on or after 1 July receive 1 floating holiday in their first year.") == \
        "Do I receive 1 floating holiday in my first year, if I join on or after 1 July?"
    assert phrasing.polar("Where the child is born prematurely, the employee may begin the first block at once.") == \
        "Can I begin the first block at once where the child is born prematurely?"
    # the verb is found by the lexicon and its position, not a fixed list: "recognises" is a verb, "holidays" a noun
    assert phrasing.polar("Northwind recognises 10 paid public holidays in each calendar year.") == \
        "Does Northwind recognise 10 paid public holidays in each calendar year?"
    assert phrasing.polar("Floating holidays must be taken as whole days and require 5 days' notice.") == \
        "Must floating holidays be taken as whole days?"


def test_wh_questions_front_the_slot_with_its_preposition_and_never_invert_a_negated_rule():
    def ask(text: str, kind: str) -> str | None:
        slot = next(s for s in questions.slots(text) if s["kind"] == kind)
        return phrasing.wh(text, slot, questions._wh(slot))

    assert ask("Employees receive 25 days of annual leave per year.", "quantity") == \
        "How many days of annual leave do I receive per year?"
    assert ask("Carried-over days must be used by 31 March of the new leave year.", "date") == \
        "By what date must carried-over days be used?"
    assert ask("TOIL must be used within 3 months of the date it was earned, or it expires.", "quantity") == \
        "Within how many months of the date it was earned must TOIL be used?"
    assert ask("Volunteer leave is recorded in PeopleHub under the leave type Volunteering.", "system") == \
        "In which system is volunteer leave recorded under the leave type Volunteering?"
    assert ask("Weekly working time must not exceed 48 hours over any 17-week period.", "quantity") is None
    # an amount inside a noun phrase does not front into nonsense
    assert ask("It offers a confidential telephone helpline available 24 hours a day.", "quantity") is None


def test_times_and_named_providers_are_asked_for_and_ranges_or_qualifying_names_are_not():
    facts_text = ["Line managers must approve or query timesheets by 12:00 on the following Monday.",
                  "Employees on flexible hours must notify their line manager no later than 09:45 on the first day.",
                  "Northwind provides private medical insurance through the Meridian Health Plan.",
                  "The standard working day is 09:00 to 17:30 with a one-hour unpaid lunch break.",
                  "Activate your account via the Deel platform.", "Book it on the PTO by Roots app in Slack."]
    fact_list = [{"text": t} for t in facts_text]
    with phrasing.document_names(facts.proper_nouns(fact_list) | {"Northwind"}, {"Northwind"}):
        asked = [[d["question"] for d in questions.templates({"text": t, "kind": "sentence", "topic": "Hours"})]
                 for t in facts_text]
        assert [s["value"] for s in questions.slots(facts_text[2])] == ["Meridian Health Plan"]
        assert [questions.slots(t) for t in facts_text[3:]] == [[], [], []]
    assert "By what time must line managers approve or query timesheets on the following Monday?" in asked[0]
    # a time's colon is not a clause break: "Who must approve or query timesheets by 12?" was asked
    assert "Who must approve or query timesheets by 12:00 on the following Monday?" in asked[0]
    assert "By what time must employees on flexible hours notify their line manager on the first day?" in asked[1]
    assert "Which provider does Northwind provide private medical insurance through?" in asked[2]


def test_handbook_prose_with_lists_asides_and_second_clauses_reads_as_one_question():
    from policytune import contrast, keyphrases

    assert phrasing.polar("As we have unlimited, permissionless time off, PostHog doesn't offer 'sabbaticals' in the "
                          "way that some companies do.").startswith("Does PostHog offer 'sabbaticals'")
    assert phrasing.polar("After this, if you need to stagger your return to work, you can come back at 50% capacity "
                          "on 50% pay afterwards.") == \
        "Can I come back at 50% capacity on 50% pay afterwards, if I need to stagger my return to work?"
    # a second clause with its own subject is not asked as part of the first
    asked = [d["question"] for d in questions.templates(
        {"text": "Team members contribute 5% and PostHog contributes 4%.", "kind": "sentence", "topic": "Pensions"})]
    assert "What percentage do I contribute?" in asked and not any("PostHog contributes" in q for q in asked)
    def drafts(text: str) -> list[str]:
        return [d["question"] for d in questions.templates({"text": text, "kind": "sentence", "topic": "X"})]

    assert "Do we encourage people and teams to meet up in person in addition to the offsites?" in \
        drafts("We also encourage people and teams to meet up in person in addition to the offsites.")
    assert "What do we offer in countries?" not in \
        drafts("We offer private health insurance in countries where it is considered market to do so.")
    assert drafts("Unfortunately, we are currently legally unable to provide pensions to contractors.")[0] == \
        "Are we currently legally unable to provide pensions to contractors?"
    assert "Do we offer a Training budget and free books?" in \
        drafts("We currently offer a Training budget and free books - you can find more on the relevant pages.")
    assert not any(q.startswith("At what percentage") for q in drafts(
        "You can come back at 50% capacity on 50% pay afterwards."))
    assert phrasing.polar("We do regular team offsites - recent trips have included Mexico.") == \
        "Do we do regular team offsites?"
    assert phrasing.polar("For Ireland, Spain, Netherlands, Portugal & Canada the health insurer varies depending on "
                          "market.") == "Does the health insurer vary depending on market for Ireland, Spain, " \
                                       "Netherlands, Portugal & Canada?"
    assert drafts("Please note that any free merch received outside of your birthday kit, work anniversary kit, or new "
                  "hire kit is considered a taxable benefit.") == []  # never a list cut at its first comma
    assert not any("about some people" in q or q.endswith(" even?") for q in drafts(
        "Some people also prefer to work on certain days even if they are considered a public holiday in the country."))
    # an aside ends at its own comma, not at the one inside "$3,400"
    assert "$3,400 per year" in phrasing._tidy("We offer a Flexible Savings Account (FSA), which is an account that "
                                               "allows you to contribute up to $3,400 per year to be used on expenses.")
    assert contrast.wrong_figure("Is our 401k plan managed by Vestwell?", "Our 401k plan is managed by Vestwell.") is None
    # a phrase about nothing in particular is not asked about
    assert keyphrases.ranked("Like the training budget, this isn't a hard limit.", Counter()) == \
        ["the training budget"]
    link = "[Everyone in the team has unlimited, permissionless time off.](file:///handbook/people/time-off)"
    assert [f["text"] for f in facts.inventory([{"id": "c", "doc": "d", "pages": [1], "headings": ["Time off"],
                                                 "text": link}])[0]] == \
        ["Everyone in the team has unlimited, permissionless time off."]
    # a sentence a line break cuts before a link reads as one fact, not as a fragment starting "the typical steps"
    cut = "To report Court Leave, follow\n[the typical steps for entering a leave request in HR Links.](https://x.gov/a)"
    assert [f["text"] for f in facts.inventory([{"id": "c", "doc": "d", "pages": [1], "headings": ["Court leave"],
                                                 "text": cut}])[0]] == \
        ["To report Court Leave, follow the typical steps for entering a leave request in HR Links."]


def test_conditions_and_things_done_to_a_subject_become_what_happens_questions():
    assert phrasing.what_happens("If the employee is absent for a pregnancy-related reason in the 4 weeks before the "
                                 "birth, maternity leave will start automatically.") == \
        ["What happens if I am absent for a pregnancy-related reason in the 4 weeks before the birth?"]
    assert phrasing.what_happens("Any balance above that maximum is forfeited automatically at midnight on 31 December.") \
        == ["What happens to any balance above that maximum?"]
    assert phrasing.what_happens("Line managers are expected to agree a plan with the employee.") == []


def test_list_items_are_asked_as_terms_cases_and_members_of_their_list():
    definition = {"kind": "list_item", "topic": "Definitions", "intro": "",
                  "text": "Daily rate: base salary divided by 260."}
    assert "What is meant by daily rate?" in [d["question"] for d in questions.templates(definition)]
    case = {"kind": "list_item", "topic": "Bereavement Leave", "intro": "",
            "text": "On the death of a member of the employee's immediate family: up to 5 business days."}
    assert "How much bereavement leave do I get on the death of a member of my immediate family?" in \
        [d["question"] for d in questions.templates(case)]
    member = {"kind": "list_item", "topic": "Recognised Public Holidays", "intro": "The recognised holidays are:",
              "text": "The recognised holidays are: Founders' Day (the third Monday in February)"}
    asked = [d["question"] for d in questions.templates(member)]
    assert "Is Founders' Day one of the recognised holidays?" in asked and "When is Founders' Day?" in asked
    row = {"kind": "table_row", "topic": "Notice Periods",
           "text": "Leave type: Unpaid leave; Minimum notice: 4 weeks; Form: Form LV-4 Unpaid Leave Request."}
    assert "What is the minimum notice for unpaid leave?" in [d["question"] for d in questions.templates(row)]


def test_misread_grammar_is_caught_and_every_draft_reads_as_one_question():
    assert questions.malformed("The employee must notify who and upload a copy of the summons?")
    assert questions.malformed("What does the policy say about purpose and exists entitlements of the?")
    assert questions.malformed("Does if an employee become ill during a period of annual leave?")
    assert questions.malformed("How many days of annual leave do I receive per year?") is None
    text = ("Employees receive 25 days of annual leave per year. Any balance above 5 days is forfeited on 31 December. "
            "A half day is 3.75 hours for a full-time employee.")
    for fact in facts.inventory([{"id": "c1", "doc": "p.pdf", "pages": [1], "headings": ["2. Annual Leave"],
                                  "text": text}])[0]:
        drafts = questions.templates(fact)
        assert len(drafts) >= 3
        assert all(d["question"].endswith("?") and d["question"].count("?") == 1 for d in drafts)
        assert all(questions.malformed(d["question"]) is None for d in drafts)


def test_names_keep_their_capitals_and_other_words_are_lowered_inside_a_question():
    with phrasing.document_names(facts.proper_nouns([{"text": "Claims go through PeopleHub, which Northwind runs."}])):
        assert phrasing.lower_first("Northwind provides paid leave") == "Northwind provides paid leave"
        assert phrasing.lower_first("Itemised receipts are required") == "itemised receipts are required"
        assert phrasing.lower_first("PeopleHub sends reminders") == "PeopleHub sends reminders"
    assert not phrasing.PROPER_NOUNS, "the names of one document do not leak into the next"


def test_handbook_prose_in_the_second_person_and_the_imperative_is_asked_by_the_reader():
    assert phrasing.polar("Please take at least 2 weeks of paid leave.") == "Should I take at least 2 weeks of paid leave?"
    assert phrasing.polar("If you don't do this, your holiday won't show up in the team calendar.") == \
        "Will my holiday show up in the team calendar if I do not do this?"
    assert phrasing.polar("We also offer parental leave for new parents.") == "Do we offer parental leave for new parents?"
    assert phrasing.polar("We extended our bereavement policy to cover pregnancy loss.") == \
        "Did we extend our bereavement policy to cover pregnancy loss?"
    asked = [d["question"] for d in questions.templates(
        {"kind": "sentence", "topic": "Sabbaticals", "text": "Instead, we encourage team members to take a full month "
                                                           "off every 3-4 years."})]
    assert all(not q.startswith(("Do Instead", "Instead")) for q in asked) and all("3-how" not in q for q in asked)
    # an instruction after a condition, and discourse markers, are not part of the question
    assert phrasing.polar("If you are hourly, yes please adjust the pre-populated hours.") == \
        "Should I adjust the pre-populated hours, if I am hourly?"
    assert phrasing.polar("In other words, all teammates are eligible for Parental Leave on day 1.") == \
        "Am I eligible for Parental Leave on day 1?"
    assert not phrasing.polar("As always, please ensure you comply with your resident country's legislated time off "
                              "entitlements, if applicable.").endswith("as always?")


def test_providers_named_nowhere_are_asked_for_and_named_ones_are_not():
    from policytune import unstated

    fact_list = facts.inventory([{"id": "c1", "doc": "p.pdf", "pages": [1], "headings": ["4. Sick Leave"], "text": (
        "After 20 days of absence the line manager will refer the employee to the company's occupational health "
        "provider. Dental insurance is provided by BrightSmile Dental. The company pays 80% of the dental insurance "
        "premium.")}])[0]
    kept, dropped = unstated.near_misses(fact_list, facts.Index(fact_list))
    assert "Which company is our occupational health provider?" in [k["question"] for k in kept]
    assert not any("dental insurance" in k["question"] for k in kept)
    assert any("dental insurance" in d["question"] for d in dropped), "BrightSmile names the dental insurer"


def test_each_fact_is_first_asked_so_that_the_model_must_recall_its_figure():
    # counts with modifiers are slots, asked for with their modifiers
    assert [s["value"] for s in questions.slots("Northwind recognises 10 paid public holidays in each calendar year.")] \
        == ["10 paid public holidays"]
    assert questions._wh(questions.slots("absences of up to 3 consecutive calendar days")[0]) == \
        "how many consecutive calendar days"
    assert questions.slots("2 or more days") == []  # "or more" is not a modifier of the count
    fact = {"text": "Employees may take up to 5 days of paid compassionate leave per calendar year to deal with a "
                    "serious illness, serious injury or emergency affecting a member of their immediate family or a "
                    "dependant, such as a hospital admission.", "kind": "sentence", "topic": "Compassionate Leave"}
    drafts = questions.templates(fact)
    asked = [d["question"] for d in drafts]
    # a fronted question too long for an employee falls back to its first clause; the purpose after the period goes
    assert "How much paid compassionate leave can I take per calendar year to deal with a serious illness?" in asked
    assert "How much paid compassionate leave can I take per calendar year?" in asked
    ordered = questions.recall_first(drafts, fact["text"])
    # first a question whose answer holds a figure the question leaves out, then one asking a wrong figure ("No."),
    # never first one that holds the figure ("Who can take up to 5 days ...?")
    assert "5 days" not in ordered[0]["question"] and ordered[0]["style"] != "contrast"
    assert ordered[1]["style"] == "contrast" and "5 days" not in ordered[1]["question"]
    assert sorted(map(id, ordered)) == sorted(map(id, drafts))
    given = [{"question": "Who can take up to 5 days of paid compassionate leave?", "style": "who_what"},
             {"question": "Can I take up to 5 days of paid compassionate leave?", "style": "yes_no"},
             {"question": "What does the policy say about compassionate leave?", "style": "about"},
             {"question": "How many days of paid compassionate leave can I take?", "style": "wh"}]
    assert [d["style"] for d in questions.recall_first(given, fact["text"])] == ["wh", "who_what", "yes_no", "about"]
    assert not questions.recalls("Who can take up to 5 days of paid compassionate leave?", fact["text"])


def test_a_question_is_also_asked_in_everyday_words_and_the_documents_abbreviations():
    import generated_prompt

    # "ClearPath Wellbeing (CPW)": the capitals do not spell it, so it is not taken for an abbreviation
    facts_ = [{"text": "The Employee Assistance Programme (EAP) is provided by ClearPath Wellbeing (CPW).",
               "headings": ["11. Health", "11.3 Employee Assistance Programme"]},
              {"text": "Northwind recognises 10 paid public holidays.", "headings": ["3. Public Holidays"]}]
    assert employee.abbreviations(facts_) == {"Employee Assistance Programme": "EAP"}
    words = employee.usable(generated_prompt.EMPLOYEE_WORDS, facts_)
    assert employee.reword("Does the Employee Assistance Programme offer counselling?", words,
                           employee.abbreviations(facts_)) == "Does the EAP offer counselling?"
    said = employee.reword("How many days of annual leave do I receive per calendar year?", words)
    assert "annual leave" not in said and "per calendar year" not in said and "do I get" in said
    # "holiday" names this policy's public holidays, so annual leave is never called that here
    assert employee.usable({r"\bannual leave\b": ["holiday", "vacation"]}, facts_) == {r"\bannual leave\b": ["vacation"]}
    # a policy phrase inside a name is the name: the form keeps its title
    assert employee.reword("Must the Form MED-1 Medical Certificate be uploaded?", words) is None
    assert employee.reword("Who approves it?", words) is None  # nothing to say differently


def test_a_questions_condition_can_be_said_first_as_the_askers_situation():
    assert employee.situation_first("Am I covered, if I am still within my probationary period?") == \
        "I'm still within my probationary period. Am I covered?"
    assert employee.situation_first("According to the policy, what happens if I have been absent for 20 days?") == \
        "I've been absent for 20 days. According to the policy, what happens?"
    assert employee.situation_first("Do I keep my job, if I have a disability?") == \
        "I have a disability. Do I keep my job?"
    # other verbs keep their "if", moved to the front; so does the opening a question was wrapped in
    assert employee.situation_first("How many floating holidays do I receive, if I join on or after 1 July?") == \
        "If I join on or after 1 July, how many floating holidays do I receive?"
    assert employee.situation_first("Quick question about sick leave: who do I tell if my manager can't be reached?") \
        == "Quick question about sick leave: if my manager can't be reached, who do I tell?"
    # nothing to move, or too little left to ask
    assert employee.situation_first("How many days of annual leave do I get?") is None
    assert employee.situation_first("What if I resign?") is None


def test_pronouns_and_agreement_read_right_in_rule_built_questions():
    # an employee subject's "they are" becomes "I am"; a "their" nobody in the question owns is a misparse
    assert phrasing.polar("Employees who join part way through the year accrue leave only for the months in which "
                          "they are employed.") == \
        "Do I accrue leave only for the months in which I am employed, if I join part way through the year?"
    assert questions.malformed("What will be deducted from their final pay?")
    assert not questions.malformed("Must blackout periods be published at least 3 months before they begin?")
    assert not questions.malformed("Who accrues leave only for the months in which they are employed?")
    # a role asked for after a preposition is "whom"
    assert questions.cloze("Exceptions may be granted only in writing by the Director of People Operations.",
                           next(s for s in questions.slots("Exceptions may be granted only in writing by the Director "
                                                           "of People Operations.") if s["kind"] == "role")) == \
        "Exceptions may be granted only in writing by whom?"
    # a near miss about a plural topic takes a plural verb
    section = [{"text": "Floating holidays must be booked in advance.", "headings": ["3. Public Holidays",
                                                                                    "3.3 Floating Holidays"],
                "topic": "Floating Holidays"}]
    asked = [c["question"] for c in questions.unanswerable_candidates(
        section, {"union": {"cues": ["union"], "questions": ["Is {topic} different for union members?"]}})]
    assert asked == ["Are floating holidays different for union members?"]
    # "The reason we think ...", "The better you are at your job, the better ...": no subject to ask about
    assert phrasing.parse("The reason we think books can be more helpful than just Googling stuff, is that the level "
                          "of quality has to be higher.") is None
    assert phrasing.parse("The better you are at your job, the better PostHog is overall!") is None
    assert questions.malformed("What can be used for those books as well?")


def test_leads_with_lists_labels_over_titles_and_cut_lists_read_right():
    # a lead's own list runs to the comma before the subject; "Here at <organisation>," is a lead too
    assert phrasing.polar("For birth, adoption or placement of a new child, you can use paid parental leave.") == \
        "Can I use paid parental leave for birth, adoption or placement of a new child?"
    assert phrasing.polar("Here at Sourcegraph, we have a flexible paid time off (PTO) policy.") == \
        "Do we have a flexible paid time off policy here at Sourcegraph?"
    # under a label, an item is a sentence of its own or a title, never the rest of the label's sentence
    label = {"intro": "US teammates:", "topic": "Q. What information can I find on the Sequoia app?", "kind": "list_item"}
    assert questions.list_item_questions({**label, "text": "US teammates: Benefits plans & summaries"}) == []
    asked = [d["question"] for d in questions.list_item_questions(
        {**label, "text": "US teammates: Benefits are effective on your date of hire."})]
    assert asked[0] == "Are benefits effective on my date of hire?"
    assert [d["question"] for d in questions.list_item_questions(
        {"intro": "Employees on probation:", "text": "Employees on probation: Cannot take sabbatical leave.",
         "topic": "Sabbaticals", "kind": "list_item"})] == ["Can employees on probation take sabbatical leave?"]
    below = {"intro": "You are eligible if you meet all the requirements below:", "topic": "Medical leave",
             "kind": "list_item", "text": "You are eligible if you meet all the requirements below: Work full-time"}
    assert not any("below" in d["question"] for d in questions.list_item_questions(below))
    steps = {"intro": "Please see below for a step by step breakdown:", "topic": "Booking PTO", "kind": "list_item",
             "text": "Please see below for a step by step breakdown: Go to your Slack app"}
    assert [d["question"] for d in questions.list_item_questions(steps)][:1] == ["Should I go to my Slack app?"]
    # an FAQ's "Yes," opens the answer, not the statement
    assert phrasing.polar("Yes, our LOA policy covers any medical or disability leave during pregnancy.") == \
        "Does our LOA policy cover any medical or disability leave during pregnancy?"
    # "X includes: a, b, c" is a sentence with a colon, not a term and its meaning
    asked = [d["question"] for d in questions.list_item_questions(
        {"text": "Immediate family includes: child, spouse, parent.", "topic": "Caregiving leave", "kind": "list_item"})]
    assert "Does immediate family include child, spouse, parent?" in asked
    assert not any("includes?" in q for q in asked)
    # a list cut after its first member is not a question
    assert questions.malformed("Who should I notify my, Account Manager?")
    assert questions.malformed("What can be used for the birth, adoption?")
    assert not questions.malformed("Can I carry over leave, if needed?")
    # "[email address]" and a phrase ending in "aka" name nothing
    aka = 'Travel comp time is for "temporary duty" aka "TDY" travel, not local travel.'
    assert "temporary duty aka" in keyphrases.noun_phrases(aka)
    assert keyphrases.ranked(aka, Counter()) == ["TDY travel", "local travel"]
    placeholder = "Please email [email address] and your request will be directed to the appropriate party."
    assert "[email address]" in keyphrases.noun_phrases(placeholder)
    assert not any("[" in p for p in keyphrases.ranked(placeholder, Counter()))


def test_list_items_read_inside_their_opening_and_run_in_sentences_are_not_questions():
    holidays = {"intro": "The recognised holidays are:", "topic": "Public Holidays", "kind": "list_item",
                "text": "The recognised holidays are: The day after Christmas Day"}
    assert "Is the day after Christmas Day one of the recognised holidays?" in \
        [d["question"] for d in questions.list_item_questions(holidays)]
    # an opening that is a whole sentence is not finished by the next item; one that ends on "for" is
    salary = {"intro": "Your ability to use these options depends on your salary level:", "topic": "Comp time",
              "kind": "list_item", "text": "Your ability to use these options depends on your salary level: The amount "
              "of overtime or comp time you can receive depends on your salary level."}
    assert not any("level the amount" in d["question"].lower() for d in questions.list_item_questions(salary))
    fmla = {"intro": "FMLA entitles you to take up to 12 weeks of unpaid leave for:", "topic": "FMLA",
            "kind": "list_item", "text": "FMLA entitles you to take up to 12 weeks of unpaid leave for: The birth of a child"}
    assert any("for the birth of a child" in d["question"] for d in questions.list_item_questions(fmla))
    assert phrasing.main_clause("Your ability depends on your salary level: The amount you receive depends on it.") == \
        "Your ability depends on your salary level"
    assert questions.malformed("What depends on your salary level The amount of overtime?")
    assert not questions.malformed("Can I take a day off for a funeral?")
    # the last member of a list is not an aside
    assert "adoption, or foster placement to" in phrasing._tidy(
        "Send documentation to show childbirth, adoption, or foster placement to your HR Specialist.")
    assert phrasing._tidy("Employees may accept the offer, or decline cover, in writing.") == \
        "Employees may accept the offer in writing."
    no_matter = "All federal employees, no matter how long they have worked, accrue sick leave."
    assert "matter how long" in keyphrases.noun_phrases(no_matter)
    assert keyphrases.ranked(no_matter, Counter()) == ["sick leave"]
    # ", or" after a list's members ends the list, not the clause; a date's comma is no list
    assert phrasing.main_clause("You must send documentation to show childbirth, adoption, or foster placement to "
                                "your HR Specialist.").endswith("or foster placement to your HR Specialist")
    assert phrasing.main_clause("It is June 19th, 2022, and the Leave Year ends on December 31st.") == \
        "It is June 19th, 2022"
    assert questions.malformed("Is a psychologist, therapist, or counselor not)?")
