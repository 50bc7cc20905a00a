"""Stage 1a: Docling parses policy documents offline into heading-aware chunks; bad input exits 2."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, SAMPLE_PDF, run_script
from policytune import facts, io, pdf
from policytune.config import UserError

FOOTER = "Acme Corp confidential - do not distribute"
MAX_TOKENS = 256


@pytest.fixture(scope="module")
def tokenizer(embedded_base):
    from policytune import models

    return models.load_tokenizer(embedded_base)


def parse(path, tokenizer, **kwargs):
    return pdf.parse_documents([str(path)], tokenizer=tokenizer, max_chunk_tokens=MAX_TOKENS, **kwargs)


def policy_story():
    """A two-page policy: numbered headings at two levels, bullets, a numbered list, a table."""
    from reportlab.lib import colors
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import ListFlowable, ListItem, Paragraph, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    sentence = ("Employees should read this section carefully because it explains how the entitlement "
                "is earned, requested and recorded in the HR system. ")
    story = [Paragraph("Acme Leave Policy", styles["Title"])]
    story += [Paragraph("1. Annual Leave", styles["Heading1"]), Paragraph("1.1 Entitlement", styles["Heading2"]),
              Paragraph("Full-time employees receive 25 days of paid annual leave per year. " + sentence, body),
              Paragraph("1.2 Carry-Over", styles["Heading2"]),
              Paragraph("Up to 5 unused days may be carried into the next year. " + sentence, body),
              ListFlowable([ListItem(Paragraph(text, body)) for text in (
                  "Carried days must be used by 31 March.",
                  "Days above the limit are forfeited.",
                  "Forfeited days are not paid out.")], bulletType="bullet")]
    story += [Paragraph("2. Sick Leave", styles["Heading1"]), Paragraph("2.1 Reporting an Absence", styles["Heading2"]),
              Paragraph("To report an absence, follow these steps in order:", body),
              ListFlowable([ListItem(Paragraph(text, body)) for text in (
                  "Call your line manager before 10:00 on the first day.",
                  "Record the absence in PeopleHub the same day.",
                  "Send a doctor's note after 7 calendar days.")], bulletType="1")]
    story += [Spacer(1, 300), Paragraph("3. Parental Leave", styles["Heading1"]),
              Paragraph("3.1 Pay During Leave", styles["Heading2"]),
              Paragraph("Pay during parental leave depends on the type of leave, as the table shows. " + sentence, body)]
    table = Table([["Leave type", "Paid weeks", "Pay rate"],
                   ["Maternity leave", "16 weeks", "100% of salary"],
                   ["Paternity leave", "4 weeks", "100% of salary"],
                   ["Shared parental leave", "6 weeks", "90% of salary"]])
    table.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                               ("GRID", (0, 0), (-1, -1), 0.5, colors.grey)]))
    story += [table, Paragraph("Employees on parental leave keep accruing annual leave. " + sentence, body)]
    return story


def build_pdf(path: Path, story=None, encrypt: str | None = None) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import SimpleDocTemplate

    def furniture(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.drawString(60, 20, FOOTER)
        canvas.drawRightString(A4[0] - 60, 20, f"Page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(str(path), pagesize=A4, encrypt=encrypt)
    doc.build(story if story is not None else policy_story(), onFirstPage=furniture, onLaterPages=furniture)
    return path


@pytest.fixture(scope="module")
def policy_pdf(tmp_path_factory) -> Path:
    return build_pdf(tmp_path_factory.mktemp("pdf") / "acme_policy.pdf")


@pytest.fixture(scope="module")
def policy_chunks(policy_pdf, tokenizer):
    return parse(policy_pdf, tokenizer)


def test_chunks_carry_the_section_path_with_levels_from_numbering(policy_chunks):
    chunks, stats = policy_chunks
    assert stats["pages"] == 2
    paths = [c["headings"] for c in chunks]
    assert ["1. Annual Leave", "1.1 Entitlement"] in paths
    assert ["1. Annual Leave", "1.2 Carry-Over"] in paths
    assert ["2. Sick Leave", "2.1 Reporting an Absence"] in paths
    assert any(p[-2:] == ["3. Parental Leave", "3.1 Pay During Leave"] for p in paths)
    entitlement = next(c for c in chunks if c["headings"][-1:] == ["1.1 Entitlement"])
    assert "25 days of paid annual leave" in entitlement["text"]
    assert entitlement["context_text"].startswith("1. Annual Leave\n1.1 Entitlement\n")


def test_list_items_are_kept_as_items(policy_chunks):
    chunks, _ = policy_chunks
    text = "\n".join(c["text"] for c in chunks)
    for item in ("Carried days must be used by 31 March.", "Days above the limit are forfeited.",
                 "Record the absence in PeopleHub the same day."):
        line = next(ln for ln in text.splitlines() if item in ln)
        assert re.match(r"^(- |\d+\. )", line), line  # Docling serialises list items with their marker


def test_table_rows_stay_with_their_header(policy_chunks):
    chunks, _ = policy_chunks
    tables = [c for c in chunks if c["kind"] == "table"]
    assert tables, "the table was not recognised"
    for row in ("Maternity leave", "Paternity leave", "Shared parental leave"):
        holder = next(c for c in tables if row in c["text"])
        assert re.search(r"\|\s*Leave type\s*\|\s*Paid weeks\s*\|\s*Pay rate\s*\|", holder["text"])
    assert re.search(r"\|\s*Paternity leave\s*\|\s*4 weeks\s*\|\s*100% of salary\s*\|", tables[0]["text"])


def test_page_footer_and_page_numbers_are_not_body_text(policy_chunks):
    chunks, _ = policy_chunks
    for chunk in chunks:
        assert FOOTER not in chunk["context_text"]
        assert not re.search(r"\bPage \d\b", chunk["context_text"])


def test_chunk_records_follow_the_contract(policy_chunks, policy_pdf, tokenizer):
    chunks, _ = policy_chunks
    for chunk in chunks:
        assert set(chunk) == {"id", "doc", "pages", "headings", "text", "context_text", "n_tokens", "kind"}
        assert chunk["doc"] == "acme_policy.pdf" and chunk["pages"] and set(chunk["pages"]) <= {1, 2}
        assert 0 < chunk["n_tokens"] <= MAX_TOKENS
        assert chunk["n_tokens"] == len(tokenizer(chunk["context_text"], add_special_tokens=False)["input_ids"])
    assert len({c["id"] for c in chunks}) == len(chunks)
    again, _ = parse(policy_pdf, tokenizer)  # same document, same text: same ids
    assert [c["id"] for c in again] == [c["id"] for c in chunks]


def test_small_token_budget_splits_a_table_by_rows_repeating_the_header(policy_pdf, tokenizer):
    chunks, _ = pdf.parse_documents([str(policy_pdf)], tokenizer=tokenizer, max_chunk_tokens=72)
    tables = [c for c in chunks if c["kind"] == "table"]
    assert len(tables) >= 2
    for chunk in tables:
        if re.search(r"(Maternity|Paternity|Shared parental) leave", chunk["text"]):
            assert "Leave type" in chunk["text"] and "Paid weeks" in chunk["text"]


# --- bad input: one line naming the file, exit 2, nothing written ---------------------------

def few_words_pdf(path: Path) -> Path:
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph

    return build_pdf(path, story=[Paragraph("Hello world, draft.", getSampleStyleSheet()["BodyText"])])


def image_only_pdf(path: Path) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    page = canvas.Canvas(str(path), pagesize=A4)
    page.setFillGray(0.2)
    for row in range(30):  # grey bars standing in for a scanned page: ink, but no text layer
        page.rect(60, 760 - row * 22, 420 - (row % 3) * 60, 9, stroke=0, fill=1)
    page.showPage()
    page.save()
    return path


def written(data: bytes):
    def make(path: Path) -> Path:
        path.write_bytes(data(path) if callable(data) else data)
        return path
    return make


BAD_INPUTS = {
    "empty": (written(b""), "file is empty"),
    "not_a_pdf": (written(b"<html><body>Leave policy</body></html>"), "not a PDF"),
    "truncated": (written(lambda p: build_pdf(p).read_bytes()[:400]), "damaged or cut-off PDF"),
    "corrupt": (written(b"%PDF-1.7\n" + bytes(range(256)) * 40), "damaged or cut-off PDF"),
    "password": (lambda p: build_pdf(p, encrypt="s3cret"), "password-protected"),
    "image_only": (image_only_pdf, "no text layer"),
    "few_words": (few_words_pdf, "too little to be a policy"),
    # Docling reads any bytes as text: 20 kB of noise named .html were 57 chunks of garbage
    "noise.html": (written(__import__("random").Random(0).randbytes(20000)), "binary content, not text"),
    "noise.md": (written(b"# Leave\n" + bytes(range(256)) * 8), "binary content, not text"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_is_a_one_line_user_error_naming_the_file(kind, tmp_path, tokenizer):
    make, reason = BAD_INPUTS[kind]
    path = make(tmp_path / (kind if "." in kind else f"{kind}.pdf"))
    with pytest.raises(UserError) as error:
        parse(path, tokenizer)
    message = str(error.value)
    assert message.startswith(str(path) + ":") and "\n" not in message
    assert reason in message


def test_bad_input_exits_2_and_leaves_existing_chunks_untouched(tmp_path):
    bad = tmp_path / "policy.pdf"
    bad.write_text("PK\x03\x04 this is a zip archive renamed to .pdf")
    out = tmp_path / "out"
    out.mkdir()
    (out / "chunks.json").write_text("[]\n")
    result = run_script("syntheticdatageneration.py", "--pdf", str(bad), "--parse-only", "--data-dir", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    error_lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and str(bad) in error_lines[0]
    assert (out / "chunks.json").read_text() == "[]\n"
    assert sorted(p.name for p in out.iterdir()) == ["chunks.json"]


# Through the command line a user types: a locked or corrupt PDF exits 2 with one error line naming
# the file and the reason, and writes nothing (a scanned one: in the several-PDFs test below).
CLI_BAD_INPUTS = ["password", "corrupt"]


def parse_cli(out: Path, *pdfs: Path):
    return run_script("syntheticdatageneration.py", *[arg for path in pdfs for arg in ("--pdf", str(path))],
                      "--parse-only", "--data-dir", str(out), timeout=600)


def assert_failed_naming(result, path: Path, reason: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith(f"error: {path}:"), result.stderr[-2000:]
    # Docling's own "Input document X is not valid." would be a second, vaguer line about the same fault.
    assert not any("not valid" in ln for ln in lines), result.stderr[-2000:]
    assert reason in errors[0], errors[0]


@pytest.mark.parametrize("kind", CLI_BAD_INPUTS)
def test_bad_pdf_through_the_command_line_exits_2_with_one_line_and_writes_nothing(kind, tmp_path):
    make, reason = BAD_INPUTS[kind]
    path = make(tmp_path / (kind if "." in kind else f"{kind}.pdf"))
    result = parse_cli(tmp_path / "data", path)
    assert_failed_naming(result, path, reason)
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").rglob("*"))


def test_several_pdfs_with_one_bad_exit_2_and_write_no_chunks(tmp_path, policy_pdf):
    """The good document is converted first; the bad one after it still leaves no chunks.json
    (nor a partial one): a run with several documents is all or nothing."""
    bad = BAD_INPUTS["image_only"][0](tmp_path / "scanned.pdf")
    out = tmp_path / "data"
    result = parse_cli(out, policy_pdf, bad)
    assert_failed_naming(result, bad, "no text layer")
    assert f"{policy_pdf}: 2 pages ->" in result.stdout  # the good one was parsed before the bad one failed
    assert not out.exists() or not list(out.rglob("*"))


def test_one_document_under_two_names_is_read_once_and_any_file_name_is_stored_as_text(tmp_path, policy_pdf,
                                                                                      tokenizer, capsys):
    """The same facts twice tie every question between their two copies; a file name in another encoding than
    UTF-8 (bytes Python keeps as lone surrogates) must still be printable and storable."""
    import os

    latin1 = os.fsdecode(bytes(tmp_path) + b"/caf\xe9 policy.pdf")
    copy = tmp_path / "copy.pdf"
    for target in (latin1, copy):
        Path(target).write_bytes(policy_pdf.read_bytes())
    chunks, stats = pdf.parse_documents([latin1, str(copy)], tokenizer=tokenizer, max_chunk_tokens=MAX_TOKENS)
    alone, _ = parse(policy_pdf, tokenizer)
    assert len(chunks) == len(alone) and {c["doc"] for c in chunks} == {"caf\ufffd policy.pdf"}
    assert [d["doc"] for d in stats["documents"]] == ["caf\ufffd policy.pdf"]
    assert "copy.pdf has the same content as" in capsys.readouterr().err
    io.write_json_atomic(tmp_path / "chunks.json", chunks)  # stored as UTF-8 text


def two_policies(folder: Path, second_title: str) -> list[str]:
    """Two policies whose numbered headings are the same words, written as a PDF flattens them: the title one more
    heading at the top level, not above the others."""
    bodies = {"leave.md": ("Leave Policy", "how employees of Acme request and take paid annual leave and sick leave",
                           "with three months of service are eligible for 25 days of paid annual leave each year"),
              "expenses.md": (second_title, "how employees of Acme claim back travel costs they paid for themselves",
                              "who travel more than 50 kilometres may claim mileage at 45 cents per kilometre")}
    paths = []
    for name, (title, purpose, eligibility) in bodies.items():
        (folder / name).write_text(f"## {title}\n\n## 1. Purpose\n\nThis policy explains {purpose} during the year.\n\n"
                                   f"## 2. Eligibility\n\nAll permanent employees {eligibility}.\n\n"
                                   f"## 3. {title} contacts\n\nQuestions about this policy go to the People team by email.\n")
        paths.append(str(folder / name))
    return paths


def test_two_documents_with_the_same_headings_keep_their_sections_apart(tmp_path, tokenizer, capsys):
    """Both policies' "1. Purpose" were one section: their facts restated, held out and contrasted together, a
    restatement of one policy's purpose answered with the other's."""
    chunks, _ = pdf.parse_documents(two_policies(tmp_path, "Travel Expenses Policy"), tokenizer=tokenizer,
                                    max_chunk_tokens=MAX_TOKENS)
    headings = {(c["doc"], c["text"].split()[0]): c["headings"] for c in chunks}
    assert headings[("leave.md", "This")] == ["Leave Policy", "1. Purpose"]
    assert headings[("expenses.md", "This")] == ["Travel Expenses Policy", "1. Purpose"]
    assert headings[("expenses.md", "All")] == ["Travel Expenses Policy", "2. Eligibility"]
    assert headings[("leave.md", "Questions")] == ["3. Leave Policy contacts"], "a heading no other document has"
    assert all(c["context_text"].startswith(c["headings"][0] + "\n") for c in chunks)
    assert "named after its document's title" in capsys.readouterr().out
    fact_list, _ = facts.inventory(chunks)
    sections = {f["section"]: {x["doc"] for x in fact_list if x["section"] == f["section"]} for f in fact_list}
    assert all(len(docs) == 1 for docs in sections.values()), sections
    assert {"Leave Policy > 2. Eligibility", "Travel Expenses Policy > 2. Eligibility"} <= set(sections)

    # one document alone is left as it is; two with one title are told apart by their file names
    alone, _ = pdf.parse_documents(two_policies(tmp_path, "Travel Expenses Policy")[:1], tokenizer=tokenizer,
                                   max_chunk_tokens=MAX_TOKENS)
    assert [c["headings"] for c in alone] == [["1. Purpose"], ["2. Eligibility"], ["3. Leave Policy contacts"]]
    same, _ = pdf.parse_documents(two_policies(tmp_path, "Leave Policy"), tokenizer=tokenizer, max_chunk_tokens=MAX_TOKENS)
    assert {tuple(c["headings"][:1]) for c in same if c["text"].startswith("This")} == \
        {("Leave Policy (leave.md)",), ("Leave Policy (expenses.md)",)}


def test_two_documents_with_one_file_name_are_two_documents(tmp_path, tokenizer):
    """uk/leave.md and us/leave.md were both stored as "leave.md": one document, whose sentences the two share were
    dropped from the second as duplicates."""
    shared = "Leave requests are approved by the line manager through the HR portal before the leave starts."
    paths = []
    for country, days in (("uk", 25), ("us", 15)):
        (tmp_path / country).mkdir()
        paths.append(tmp_path / country / "leave.md")
        paths[-1].write_text(f"## Annual leave\n\nEmployees in the {country.upper()} office receive {days} days of "
                             f"paid annual leave each calendar year. {shared}\n")
    chunks, stats = pdf.parse_documents([str(p) for p in paths], tokenizer=tokenizer, max_chunk_tokens=MAX_TOKENS)
    assert [d["doc"] for d in stats["documents"]] == ["uk/leave.md", "us/leave.md"]
    fact_list, skipped = facts.inventory(chunks)
    assert sorted((f["doc"], f["text"]) for f in fact_list if f["text"] == shared) == \
        [("uk/leave.md", shared), ("us/leave.md", shared)]
    assert not [s for s in skipped if s["reason"] == "duplicate"]
    alone, _ = pdf.parse_documents([str(paths[0])], tokenizer=tokenizer, max_chunk_tokens=MAX_TOKENS)
    assert {c["doc"] for c in alone} == {"leave.md"}


FORMATTED = {  # one paragraph with bold, italic, code and a link, in each format; and plain
    "md": "## Working from home\n\nEmployees may work from home **up to 3 days per week** if their role allows it. "
          "Requests must be approved by the _line manager_ in advance. Equipment is ordered through the `IT-REQ` "
          "portal, see [the IT page](https://example.com/it). The home office allowance is *a one-off payment of "
          "300 EUR* and is paid with the next salary.\n",
    "html": "<html><body><h2>Working from home</h2><p>Employees may work from home <b>up to 3 days per week</b> if "
            "their role allows it. Requests must be approved by the <i>line manager</i> in advance. Equipment is "
            "ordered through the <code>IT-REQ</code> portal, see <a href=\"https://example.com/it\">the IT page</a>. "
            "The home office allowance is <em>a one-off payment of 300 EUR</em> and is paid with the next salary."
            "</p></body></html>\n",
}


@pytest.mark.parametrize("kind", sorted(FORMATTED))
def test_formatted_text_in_markdown_and_html_gives_whole_sentences_without_markup(kind, tmp_path, tokenizer):
    """The chunker wrote each bold, italic, code or linked span on its own line with its markup, so the facts were
    "The home office allowance is" and "*a one-off payment of 300 EUR* and ...", and the questions asked about
    "the * *"."""
    path = tmp_path / f"remote.{kind}"
    path.write_text(FORMATTED[kind])
    chunks, _ = parse(path, tokenizer)
    fact_list, _ = facts.inventory(chunks)
    assert [f["text"] for f in fact_list] == [
        "Employees may work from home up to 3 days per week if their role allows it.",
        "Requests must be approved by the line manager in advance.",
        "Equipment is ordered through the IT-REQ portal, see the IT page.",
        "The home office allowance is a one-off payment of 300 EUR and is paid with the next salary."]
    assert not re.search(r"[*_`\[\]]|https?:", " ".join(c["text"] for c in chunks))


def test_one_policy_in_two_formats_is_read_once(tmp_path, tokenizer, capsys):
    """A policy and its export to another format (not byte-identical) were two documents: every fact twice, each
    copy's questions rejected as near-copies of the other's, and the coverage of the facts halved."""
    for kind, text in FORMATTED.items():
        (tmp_path / f"remote.{kind}").write_text(text)
    other = two_policies(tmp_path, "Travel Expenses Policy")[1]
    chunks, stats = pdf.parse_documents([str(tmp_path / "remote.md"), other, str(tmp_path / "remote.html")],
                                        tokenizer=tokenizer, max_chunk_tokens=MAX_TOKENS)
    assert [d["doc"] for d in stats["documents"]] == ["remote.md", "expenses.md"]
    assert {c["doc"] for c in chunks} == {"remote.md", "expenses.md"}
    assert "remote.html repeats 100% of remote.md's text" in capsys.readouterr().err
    # the longer one given later keeps its text, and the one it holds is left out
    longer = tmp_path / "longer.md"
    longer.write_text(FORMATTED["md"] + "\nLaptops are replaced every 4 years by the IT team at no cost to employees.\n")
    chunks, stats = pdf.parse_documents([str(tmp_path / "remote.html"), str(longer)], tokenizer=tokenizer,
                                        max_chunk_tokens=MAX_TOKENS)
    assert [d["doc"] for d in stats["documents"]] == ["longer.md"] and {c["doc"] for c in chunks} == {"longer.md"}
    assert "remote.html is left out" in capsys.readouterr().err


def test_a_folder_given_as_a_document_says_so(tmp_path):
    with pytest.raises(UserError, match="is a folder, not a document"):
        pdf.check_input(str(tmp_path))


def test_truncated_pdf_keeps_what_docling_can_read(tmp_path, tokenizer):
    data = build_pdf(tmp_path / "full.pdf").read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: int(len(data) * 0.9)])  # the cross-reference table at the end is lost
    chunks, stats = parse(cut, tokenizer)
    assert stats["pages"] == 2
    assert any(c["headings"][-1:] == ["1.1 Entitlement"] for c in chunks)


# --- real documents --------------------------------------------------------------------------

def markdown_headings(path: Path, levels: bool = False) -> list:
    text = re.sub(r"<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.S)
    found = [(len(line) - len(line.lstrip("#")), re.sub(r"[*_`]", "", line.lstrip("#").strip()))
             for line in text.splitlines() if re.match(r"^#{1,6} ", line)]
    return found if levels else [heading for _, heading in found]


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@pytest.mark.slow
def test_sample_policy_keeps_every_section_heading_and_table(tokenizer):
    if not SAMPLE_PDF.exists():
        pytest.skip("data/sample_policy.pdf not built yet")
    # In-process (the CLI path is covered by the exit-2 test): a second interpreter start costs 25 s.
    chunks, _ = pdf.parse_documents([str(SAMPLE_PDF)], tokenizer=tokenizer, max_chunk_tokens=384)
    json.dumps(chunks)  # what the script writes must be plain JSON
    found = {_key(h) for c in chunks for h in c["headings"]}
    source = markdown_headings(ROOT / "sample" / "policy_source.md")
    numbered = [h for h in source if re.match(r"^\d+(\.\d+)*\.? ", h)]
    assert numbered and [h for h in numbered if _key(h) not in found] == []
    # Each Markdown table of the source: every row sits in a table chunk together with the header.
    tables = re.findall(r"((?:^\|.*\|\n)+)", (ROOT / "sample" / "policy_source.md").read_text(), flags=re.M)
    table_chunks = [_key(c["text"]) for c in chunks if c["kind"] == "table"]
    for table in tables:
        rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.strip().splitlines()]
        header, body = rows[0], [r for r in rows[2:]]
        for row in body:
            assert any(_key("".join(row[:2])) in c and all(_key(h) in c for h in header) for c in table_chunks), row


@pytest.mark.slow
def test_real_policies_parse_with_their_headings(shared_docs, tokenizer):
    for pdf_path in sorted(shared_docs.glob("*.pdf")):
        chunks, stats = parse(pdf_path, tokenizer)
        source = markdown_headings(pdf_path.with_suffix(".md"), levels=True)
        expected = {_key(h) for _, h in source}
        found = {_key(h) for c in chunks for h in c["headings"]}
        recall = len(expected & found) / len(expected)
        assert recall >= 0.95, (pdf_path.name, recall)
        # Nesting: along every chunk's heading path, a heading sits deeper than the headings above it in the source
        # (headings whose text the source uses at two levels are left out: the path cannot say which is meant).
        counts = Counter(_key(h) for _, h in source)
        level = {_key(h): lvl for lvl, h in source if counts[_key(h)] == 1}
        for chunk in chunks:
            path = [level[_key(h)] for h in chunk["headings"] if _key(h) in level]
            assert path == sorted(set(path)), (pdf_path.name, chunk["headings"])
            # an FAQ's entries are siblings: no question sits under another question
            assert not any(facts.asks(a) and facts.asks(b) for a, b in zip(chunk["headings"], chunk["headings"][1:])), \
                (pdf_path.name, chunk["headings"])
        assert stats["seconds"] / stats["pages"] < 2.0  # the goal is 0.2 s/page; CI machines are shared


def test_a_question_heading_after_a_question_heading_is_its_sibling():
    def heading(text: str, level: int) -> SimpleNamespace:
        return SimpleNamespace(text=text, level=level)

    found = [heading("Health benefits", 1), heading("FAQ:", 2), heading("Q. What is Sequoia Consulting Group?", 3),
             heading("Q. Does Sourcegraph match my 401k?", 4), heading("Q: When can I enroll in my 401k plan?", 5),
             heading("Plan details", 4), heading("Who is eligible?", 2), heading("Can part-time staff enrol?", 2)]
    pdf.questions_as_siblings(found)
    assert [h.level for h in found] == [1, 2, 3, 3, 3, 4, 2, 2]


def libreoffice_pdf(tmp_path: Path) -> Path:
    """A policy written as HTML and exported to PDF by LibreOffice Writer. Skips only when LibreOffice
    is not installed; a conversion that fails where it is installed fails the test."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if not soffice:
        pytest.skip("LibreOffice not installed (apt-get install libreoffice-writer-nogui)")
    html = tmp_path / "lo_policy.html"
    html.write_text("""<html><body>
<p>Acme Working Time Policy</p>
<h1>1. Working Hours</h1><h2>1.1 Core Hours</h2>
<p>Core hours are 10:00 to 16:00 on business days. Employees agree any other pattern with their line
manager in writing and record it in the HR system before it starts.</p>
<h2>1.2 Overtime</h2><p>Overtime must be approved in advance and is paid at 1.5 times the hourly rate
for hours above 40 in a week. Time off in lieu may be taken instead of overtime pay.</p>
<ul><li>Approval comes from the line manager.</li><li>Overtime is recorded weekly.</li></ul>
<h1>2. Remote Work</h1><h2>2.1 Equipment</h2><p>The company provides a laptop and a one-off home office
allowance of 300 EUR to every employee who works remotely at least two days a week.</p>
<table border="1"><tr><th align="left">Item</th><th align="left">Allowance</th></tr><tr><td>Home office</td><td>300 EUR</td></tr>
<tr><td>Internet</td><td>25 EUR per month</td></tr></table>
</body></html>""")
    # A profile of its own: a user's running LibreOffice or a stale lock cannot make it exit early.
    profile = (tmp_path / "lo-profile").as_uri()
    result = subprocess.run([soffice, f"-env:UserInstallation={profile}", "--headless", "--convert-to",
                             "pdf:writer_pdf_Export", "--outdir", str(tmp_path), str(html)],
                            capture_output=True, text=True, timeout=300)
    out = tmp_path / "lo_policy.pdf"
    if not out.is_file() or out.stat().st_size == 0:
        pytest.fail(f"{soffice} is installed but did not convert {html.name} to PDF (exit {result.returncode}):\n"
                    f"{result.stdout[-1500:]}{result.stderr[-1500:]}")
    return out


@pytest.mark.slow
def test_libreoffice_pdf_headings_lists_and_table(tmp_path, tokenizer):
    path = libreoffice_pdf(tmp_path)
    chunks, _ = parse(path, tokenizer)
    paths = [c["headings"] for c in chunks]
    assert ["1. Working Hours", "1.2 Overtime"] in paths or any(p[-2:] == ["1. Working Hours", "1.2 Overtime"] for p in paths)
    assert any(p[-2:] == ["2. Remote Work", "2.1 Equipment"] for p in paths)
    text = "\n".join(c["text"] for c in chunks)
    assert re.search(r"^- Approval comes from the line manager\.", text, flags=re.M)
    assert re.search(r"\|\s*Internet\s*\|\s*25 EUR per month\s*\|", text)
