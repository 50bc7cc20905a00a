"""Details a policy leaves out about something it names: near misses that ask for them.

A policy says "The company offers a pet bereavement day in some circumstances" and nothing more: not
whether it is paid, how much notice it needs, who approves it. Employees ask exactly that, and a small
model trained only on what the policy states answers with an invented figure. Each benefit the policy
names (a leave, a day, an allowance, a pilot, ...) is asked for the details of each kind that no fact
about it gives: a fact about it is one that names its distinctive words, in its text or headings. The
check is by cue words over those facts; any cue drops the question. A benefit named in too many facts
for its words to pick them out ("annual leave") is not asked about.
"""
from __future__ import annotations

import re

from policytune import facts as facts_lib

LEAVE_HEADS = r"leave|day|holiday|time off"
MONEY_HEADS = r"allowance|assistance|reimbursement|budget|bonus|stipend|grant|subsidy|fund"
PROGRAMME_HEADS = r"pilot|programme|program|scheme"
ANY_HEAD = "|".join((LEAVE_HEADS, MONEY_HEADS, PROGRAMME_HEADS, "pay"))
# Praise, not a kind of benefit: "a generous annual education stipend" names the annual education stipend.
EVALUATIVE = r"generous|competitive|fair|good|great|flexible|reasonable"
# A named benefit: a determiner, any praise, one to three modifiers, the head noun ("the childcare support pilot").
_THING = re.compile(rf"\b(?:[Tt]he|[Aa]n?|[Oo]ur|[Aa]ny|[Ii]ts|[Tt]heir)\s+(?:(?:{EVALUATIVE})\s+)*"
                    rf"((?:[a-z][a-z-]+\s+){{1,3}}?(?:{ANY_HEAD}))\b")
_NOT_MODIFIER = re.compile(
    r"\b(?:the|a|an|to|have|has|had|take|takes|taking|use|get|this|that|each|every|following|same|other|any|all|own|"
    r"relevant|such|more|less|further|additional|extra|unused|remaining|new|current|one|first|last|next|per|whole|"
    rf"{EVALUATIVE}|"
    # what says which leave, not what kind: "the exact leave and return-to-work dates", "a dedicated leave case manager"
    r"exact|dedicated|specific|particular|actual|appropriate|applicable|requested|planned|approved|expected|intended|"
    r"proposed|upcoming|previous|prior|entire|total|initial|final|"
    r"half|full|normal|usual|standard|separate|which|what|and|or|of|for|in|on|at|by|with|from|is|are|be|may|can|"
    r"will|must|should|receives?|accrues?|provides?|offers?|needs?|gives?|gets?|requests?|books?|qualif\w*)\b")
BENEFIT_HEADS = f"{LEAVE_HEADS}|{MONEY_HEADS}|{PROGRAMME_HEADS}"

# kind: (heads it applies to, cue words by which a fact about the benefit may give that detail, questions)
KINDS = {
    "amount": (MONEY_HEADS + "|pay",
               r"[$£€%]|\d|\bper ?cent|\bamount|\brate\b|\bsalary|\bcost|\bfull\b|\bhalf\b|\bfree\b|\bcover|"
               r"\bup to\b|\bmaximum|\blimit",
               ["How much is {the}{thing}?", "What is the maximum {thing} I can get?"]),
    "days": (LEAVE_HEADS,
             r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|single|a day|a week|unlimited|no limit|"
             r"as much|as many|as long)\b",
             ["How many days of {thing} can I take?", "How much {thing} do I get a year?"]),
    "paid": (LEAVE_HEADS,
             r"\bpaid\b|\bunpaid\b|\bpay\b|\bsalary|\bwage|\bdaily rate|\bfull pay|\bsick pay|\ballowance|"
             r"\bcompensat|\bearn",
             ["Is {the}{thing} paid?", "Do I still get my salary during {the}{thing}?"]),
    "approver": (BENEFIT_HEADS,
                 r"approv|authori|permission|sign(?:ed|s)? off|\bdecid|decision|discretion|\bagree|consent|manager|"
                 r"director|committee|people operations|\bhr\b|\bteam lead|\bmessage|\bsee fit|\bcheck with",
                 ["Who approves {the}{thing}?", "Who has to sign off on {the}{thing}?"]),
    "notice": (LEAVE_HEADS,
               r"notice|advance|\bbefore\b|\bprior\b|\bahead\b|\bwithin\b|as soon as|deadline|\brequest|\bbook|"
               r"\bnotify|\btell|\binform|\bimmediately|\bfirst day",
               ["How much notice do I need to give for {the}{thing}?", "How far ahead must I request {the}{thing}?"]),
    "eligibility": (BENEFIT_HEADS,
                    r"eligib|available to|entitle|qualif|employees who|staff who|anyone|everyone|everybody|"
                    r"all employees|"
                    r"every (?:team ?member|teammate|employee|staff member)|all (?:team ?members|teammates|staff)|"
                    r"regardless of|"
                    r"\bafter\b|\bservice\b|\bonly\b|apply to|applies to|open to|must have|probation|\bif\b|"
                    r"\bwhere\b|\bwhen\b|\bwho\b|circumstances|\bcase",
                    ["Who is eligible for {the}{thing}?", "Do I qualify for {the}{thing}?"]),
    "apply": (BENEFIT_HEADS,
              r"\bappl|\brequest|\bform\b|\bsystem|\bsubmit|\bportal|hub\b|\bemail|\bcontact|\bbook|\bclaim|"
              r"\brecord|\bthrough\b|\bvia\b|\bask\b|\bspeak|\bnotify|\btell\b|\binform|\bregister|\bsign up|"
              r"\benrol|\bjoin|\bmessage|\bset (?:it |this )?up|\bget started|\bactivat|\bcheck with|\bsend|\bfill|"
              r"\bslack\b|\bcontact|\bsee fit|without asking|no need to",
              ["How do I apply for {the}{thing}?", "Where do I sign up for {the}{thing}?"]),
    "tax": (MONEY_HEADS + "|pay",
            r"\btax|\bgross\b|\bnet\b|\bpayroll|\bsacrifice|national insurance|social security",
            ["Is {the}{thing} taxed?", "Do I pay tax on {the}{thing}?"]),
    "repay": (MONEY_HEADS,
              r"\brepa|\bpay back|\bpaid back|\brefund|\breturn|\brecover|\bclaw|\bleave the company|\bresign|"
              r"employment ends|\bleaver|\bleaves\b",
              ["Do I have to pay back {the}{thing} if I leave?", "Is {the}{thing} repayable if I resign?"]),
}
# Details a policy often sets once for every leave, under a heading of its own ("14. Leave Requests and Approvals").
GENERAL_KINDS = ("approver", "notice", "apply", "paid")
# Details a section often sets once for all it names (a "payroll" run there says nothing of an allowance's tax).
SECTION_KINDS = ("approver", "notice", "apply")
PROCESS_HEADING = r"\b(?:book\w*|request\w*|apply\w*|approv\w*|notice|notif\w*|permission\w*|absence)\b"
# Heads read without "the": "Is volunteer leave paid?", "Is the pet bereavement day paid?".
_BARE = re.compile(r"(?:leave|time off|pay|assistance|reimbursement)$")


def things(text: str) -> list[str]:
    """The benefits a statement names: "a pet bereavement day", "the childcare support pilot" ->
    ["pet bereavement day", "childcare support pilot"]; not a name ("the Keystone Pension Plan")."""
    out = []
    for match in _THING.finditer(text):
        phrase = match.group(1).strip()
        if re.search(r"\b(?:for example|e\.g\.|such as|like)\b[^.;)]*$|\([^)]*$", text[:match.start()]):
            continue  # "(for example, a wedding or a pre-paid holiday)": an example, not a benefit
        if not _NOT_MODIFIER.search(" ".join(phrase.split()[:-1])):
            out.append(phrase)
    return out


def _question(template: str, thing: str) -> str:
    question = template.format(the="" if _BARE.search(thing) else "the ", thing=thing)
    return question[0].upper() + question[1:]


def near_misses(fact_list: list[dict], index: facts_lib.Index,
                max_share: float = 0.05) -> tuple[list[dict], list[dict]]:
    """Questions for the details of each named benefit that no fact about it gives: (kept, dropped with the fact
    that may give it). A benefit's facts are those naming at least half of its words found in at most `max_share`
    of the facts (in their text or headings; of those but the head noun's where it has others), and for a leave's
    approver, notice, application and pay also the facts under a heading about booking, requesting or approving; a
    benefit less than half of whose words are that rare is skipped."""
    kept, dropped, seen = [], [], set()
    for fact in fact_list:
        # the benefit a section is about, named by its heading ("7.4 Volunteer Leave"), and those its facts name
        heading = re.sub(r"^\d+(?:\.\d+)*\.?\s+", "", (fact.get("headings") or [""])[-1]).strip().lower()
        titled = [heading] if re.fullmatch(rf"(?:[a-z][a-z-]+\s+){{1,3}}(?:{ANY_HEAD})", heading) and \
            not _NOT_MODIFIER.search(heading.rsplit(" ", 1)[0]) else []
        for thing in titled + things(fact["text"]):
            if thing in seen:
                continue
            seen.add(thing)
            words = set(facts_lib.tokens(thing))
            distinctive = index.distinctive(list(words), max_share=max_share)
            if 2 * len(distinctive) < len(words):
                continue  # "team unlimited time off" is the policy's time off: "unlimited" cannot find its facts
            # a benefit's facts name what sets it apart ("relocation" of "the relocation allowance"), not only its
            # kind: the jury service's "loss-of-earnings allowance" says nothing of relocation. Half of it is enough:
            # "check with your nursery that they are part of the scheme" is about "the workplace nursery scheme"
            modifiers = distinctive - set(facts_lib.tokens(thing.split()[-1]))
            about = index.mostly_naming(modifiers or distinctive, headings=True)
            for kind, (heads, cues, templates) in KINDS.items():
                if not re.search(rf"(?:{heads})$", thing):
                    continue
                if kind == "days" and re.search(r"(?:day|holiday)$", thing):
                    templates = ["How many {thing}s can I take a year?"]
                # how any leave is booked and approved ("Book it on the PTO by Roots app", "All planned leave must
                # be requested through PeopleHub") answers it for this one too
                scope = about + [f for f in index.facts if kind in GENERAL_KINDS and re.search(LEAVE_HEADS, thing)
                                 and re.search(PROCESS_HEADING, " ".join(f.get("headings") or []), re.I)]
                # and how its own section has everything it covers approved, claimed or notified: "Claims are approved
                # by the line manager" answers "Who approves the daily meal allowance?" in the section naming it
                if kind in SECTION_KINDS:
                    scope += [f for f in index.facts if f["section"] == fact["section"]]
                hit = next((f for f in scope if re.search(cues, f["text"], re.I)), None)
                for template in templates:
                    question = _question(template, thing)
                    if hit:
                        dropped.append({"question": question, "aspect": f"detail_{kind}",
                                        "reason": "a fact about it may give it", "fact_id": hit["id"],
                                        "fact": hit["text"]})
                    else:
                        kept.append({"question": question, "aspect": f"detail_{kind}", "fact": fact})
    return kept, dropped
