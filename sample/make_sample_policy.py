"""Render the bundled sample HR policy (sample/policy_source.md) to a PDF.

policytune needs a realistic, multi-page policy PDF to exercise the whole pipeline
(PDF extraction, chunking, question generation, fine-tuning, evaluation) without
shipping anyone's real HR documents. The policy text lives in Markdown so it can be
reviewed and diffed; this script turns it into a PDF that looks like a typical
corporate policy: a title page, numbered headings, bullet and step lists, gridded
tables, and a running header and footer on every page.

The output is byte-for-byte reproducible (reportlab's ``invariant`` mode), so the
committed PDF only changes when the source text or the layout code changes.

Run:
    uv run python sample/make_sample_policy.py [--source sample/policy_source.md]
                                               [--out data/sample_policy.pdf]
"""

from __future__ import annotations

import argparse
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from policytune.io import write_bytes_atomic
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    ListFlowable,
    ListItem,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE / "policy_source.md"
DEFAULT_OUT = HERE.parent / "data" / "sample_policy.pdf"

PAGE_SIZE = A4
MARGIN_X = 2.2 * cm
MARGIN_TOP = 2.4 * cm
MARGIN_BOTTOM = 2.2 * cm

_SECTION_RE = re.compile(r"^##\s+(\d+)\.\s+(.*)$")
_SUBSECTION_RE = re.compile(r"^###\s+(\d+\.\d+)\s+(.*)$")
_CAPTION_RE = re.compile(r"^Table\s+\d+:\s+")
_STEP_RE = re.compile(r"^(Step\s+\d+:)\s+(.*)$")
_LETTER_RE = re.compile(r"^(\([a-z]\))\s+(.*)$")
_META_RE = re.compile(r"^\*\*(.+?):\*\*\s*(.+)$")
_SEPARATOR_RE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


@dataclass
class Block:
    """One renderable unit of the source document."""

    kind: str  # section | subsection | para | caption | bullets | item | table
    text: str = ""
    label: str = ""
    items: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class PolicyDoc:
    """The parsed policy: title-page material plus the body blocks."""

    title: str
    company: str
    metadata: dict[str, str]
    intro: list[str]
    body: list[Block]


def _split_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_markdown(text: str) -> PolicyDoc:
    """Parse the deliberately small Markdown dialect used by policy_source.md.

    Only what the sample needs is supported (title, ``##``/``###`` numbered headings,
    paragraphs, ``- `` bullets, ``(a)``/``Step N:`` items, pipe tables, ``**bold**``);
    a full Markdown library would add a dependency for no benefit.
    """
    # HTML comments carry notes for maintainers (e.g. the list of deliberate gaps)
    # and must never leak into the PDF, where they would become "policy facts".
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    lines = text.splitlines()

    title = ""
    company = ""
    metadata: dict[str, str] = {}
    intro: list[str] = []
    body: list[Block] = []
    in_body = False
    para: list[str] = []

    def flush_para() -> None:
        nonlocal company
        if not para:
            return
        joined = " ".join(s.strip() for s in para)
        para.clear()
        if not in_body:
            meta = _META_RE.match(joined)
            if meta:
                metadata[meta.group(1).strip()] = meta.group(2).strip()
            elif re.fullmatch(r"\*\*[^*]+\*\*", joined) and not company:
                company = joined.strip("*")
            else:
                intro.append(joined)
            return
        if _CAPTION_RE.match(joined):
            body.append(Block("caption", text=joined))
        else:
            body.append(Block("para", text=joined))

    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.rstrip()
        stripped = line.strip()

        if not stripped:
            flush_para()
            i += 1
            continue

        if stripped.startswith("# ") and not title:
            flush_para()
            title = stripped[2:].strip()
            i += 1
            continue

        m = _SECTION_RE.match(stripped)
        if m:
            flush_para()
            in_body = True
            body.append(Block("section", text=m.group(2).strip(), label=m.group(1) + "."))
            i += 1
            continue

        m = _SUBSECTION_RE.match(stripped)
        if m:
            flush_para()
            body.append(Block("subsection", text=m.group(2).strip(), label=m.group(1)))
            i += 1
            continue

        if stripped.startswith("|"):
            flush_para()
            rows: list[list[str]] = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                row_line = lines[i].strip()
                if not _SEPARATOR_RE.match(row_line):
                    rows.append(_split_row(row_line))
                i += 1
            body.append(Block("table", rows=rows))
            continue

        if stripped.startswith("- "):
            flush_para()
            items: list[str] = []
            while i < len(lines):
                cur = lines[i].rstrip()
                if cur.strip().startswith("- "):
                    items.append(cur.strip()[2:].strip())
                elif cur.startswith((" ", "\t")) and cur.strip() and items:
                    # Indented continuation of a wrapped bullet.
                    items[-1] += " " + cur.strip()
                else:
                    break
                i += 1
            body.append(Block("bullets", items=items))
            continue

        m = _STEP_RE.match(stripped) or _LETTER_RE.match(stripped)
        if m and in_body:
            flush_para()
            text_parts = [m.group(2)]
            i += 1
            while i < len(lines) and lines[i].strip() and not _is_block_start(lines[i].strip()):
                text_parts.append(lines[i].strip())
                i += 1
            body.append(Block("item", label=m.group(1), text=" ".join(text_parts)))
            continue

        para.append(line)
        i += 1

    flush_para()
    if not title:
        raise ValueError("policy source has no '# Title' line")
    return PolicyDoc(title=title, company=company, metadata=metadata, intro=intro, body=body)


def _is_block_start(stripped: str) -> bool:
    return bool(
        stripped.startswith(("#", "|", "- "))
        or _STEP_RE.match(stripped)
        or _LETTER_RE.match(stripped)
    )


def inline_markup(text: str) -> str:
    """Escape text for reportlab's mini-HTML and convert ``**bold**`` to <b>."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def _styles() -> dict[str, ParagraphStyle]:
    body = ParagraphStyle(
        "Body", fontName="Helvetica", fontSize=10.5, leading=14.2, spaceAfter=6
    )
    return {
        "body": body,
        "section": ParagraphStyle(
            "Section", parent=body, fontName="Helvetica-Bold", fontSize=15, leading=19,
            spaceBefore=16, spaceAfter=8, keepWithNext=1,
        ),
        "subsection": ParagraphStyle(
            "Subsection", parent=body, fontName="Helvetica-Bold", fontSize=12, leading=15,
            spaceBefore=10, spaceAfter=5, keepWithNext=1,
        ),
        "caption": ParagraphStyle(
            "Caption", parent=body, fontName="Helvetica-Bold", fontSize=10, leading=13,
            spaceBefore=6, spaceAfter=4, keepWithNext=1,
        ),
        "bullet": ParagraphStyle("Bullet", parent=body, spaceAfter=2),
        # Hanging indents wide enough for the label, so wrapped lines align with the
        # text rather than running under "(a)" or "Step 1:".
        "item": ParagraphStyle(
            "Item", parent=body, leftIndent=1.4 * cm, bulletIndent=0.5 * cm, spaceAfter=4,
        ),
        "step": ParagraphStyle(
            "Step", parent=body, leftIndent=2.1 * cm, bulletIndent=0.5 * cm,
            bulletFontName="Helvetica-Bold", spaceAfter=4,
        ),
        "cell": ParagraphStyle("Cell", parent=body, fontSize=9.5, leading=12, spaceAfter=0),
        "cell_head": ParagraphStyle(
            "CellHead", parent=body, fontName="Helvetica-Bold", fontSize=9.5, leading=12,
            spaceAfter=0,
        ),
        "title": ParagraphStyle(
            "Title", parent=body, fontName="Helvetica-Bold", fontSize=28, leading=34,
            alignment=TA_CENTER, spaceAfter=14,
        ),
        "company": ParagraphStyle(
            "Company", parent=body, fontName="Helvetica", fontSize=16, leading=20,
            alignment=TA_CENTER, textColor=colors.HexColor("#1F3A5F"), spaceAfter=36,
        ),
    }


def _column_widths(rows: list[list[str]], total: float) -> list[float]:
    # Proportional to (capped) text length so short numeric columns do not waste
    # space while long "Eligibility"-style columns still get room to wrap.
    ncols = max(len(r) for r in rows)
    weights = []
    for c in range(ncols):
        longest = max((len(r[c]) for r in rows if c < len(r)), default=0)
        weights.append(min(max(longest, 10), 48))
    scale = total / sum(weights)
    return [w * scale for w in weights]


def _table(rows: list[list[str]], styles: dict[str, ParagraphStyle], width: float) -> Table:
    ncols = max(len(r) for r in rows)
    cells = []
    for r_idx, row in enumerate(rows):
        style = styles["cell_head"] if r_idx == 0 else styles["cell"]
        padded = row + [""] * (ncols - len(row))
        cells.append([Paragraph(inline_markup(c), style) for c in padded])
    table = Table(cells, colWidths=_column_widths(rows, width), repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#7F7F7F")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#DCE3EC")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 3),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
                ("LEFTPADDING", (0, 0), (-1, -1), 4),
                ("RIGHTPADDING", (0, 0), (-1, -1), 4),
            ]
        )
    )
    return table


def build_story(doc: PolicyDoc, frame_width: float) -> list[Flowable]:
    """Turn the parsed policy into reportlab flowables (a fresh list on every call)."""
    st = _styles()
    story: list[Flowable] = [Spacer(1, 5 * cm), Paragraph(inline_markup(doc.title), st["title"])]
    if doc.company:
        story.append(Paragraph(inline_markup(doc.company), st["company"]))
    if doc.metadata:
        meta_rows = [
            [Paragraph(f"<b>{inline_markup(k)}</b>", st["cell"]),
             Paragraph(inline_markup(v), st["cell"])]
            for k, v in doc.metadata.items()
        ]
        meta = Table(meta_rows, colWidths=[5 * cm, 8 * cm], hAlign="CENTER")
        meta.setStyle(
            TableStyle(
                [
                    ("LINEABOVE", (0, 0), (-1, 0), 0.75, colors.HexColor("#1F3A5F")),
                    ("LINEBELOW", (0, -1), (-1, -1), 0.75, colors.HexColor("#1F3A5F")),
                    ("TOPPADDING", (0, 0), (-1, -1), 4),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
                ]
            )
        )
        story += [meta, Spacer(1, 1.5 * cm)]
    story += [Paragraph(inline_markup(p), st["body"]) for p in doc.intro]
    story.append(PageBreak())

    caption: Paragraph | None = None
    for block in doc.body:
        if block.kind != "table" and caption is not None:
            # A caption not followed by a table is kept as ordinary emphasised text.
            story.append(caption)
            caption = None
        if block.kind == "section":
            story.append(Paragraph(f"{block.label} {inline_markup(block.text)}", st["section"]))
        elif block.kind == "subsection":
            story.append(Paragraph(f"{block.label} {inline_markup(block.text)}", st["subsection"]))
        elif block.kind == "para":
            story.append(Paragraph(inline_markup(block.text), st["body"]))
        elif block.kind == "caption":
            caption = Paragraph(inline_markup(block.text), st["caption"])
        elif block.kind == "bullets":
            story.append(
                ListFlowable(
                    [ListItem(Paragraph(inline_markup(t), st["bullet"]), leftIndent=0.9 * cm)
                     for t in block.items],
                    bulletType="bullet", start="\u2022", leftIndent=0.9 * cm,
                    bulletFontSize=10.5, bulletOffsetY=-1, spaceAfter=6,
                )
            )
        elif block.kind == "item":
            style = st["step"] if block.label.startswith("Step") else st["item"]
            story.append(Paragraph(inline_markup(block.text), style, bulletText=block.label))
        elif block.kind == "table":
            parts: list[Flowable] = [caption] if caption is not None else []
            parts.append(_table(block.rows, st, frame_width))
            caption = None
            # Headings directly above the table join the same group; nested
            # keep-with-next groups do not hold together reliably in platypus.
            while (story and isinstance(story[-1], Paragraph)
                   and getattr(story[-1].style, "keepWithNext", 0)):
                parts.insert(0, story.pop())
            # Short tables move to the next page whole rather than splitting, so a
            # caption is never stranded away from its rows; long ones split with the
            # header row repeated.
            if len(block.rows) <= 12:
                story.append(KeepTogether(parts))
            else:
                story.extend(parts)
            story.append(Spacer(1, 8))
    if caption is not None:
        story.append(caption)
    return story


def _page_decorator(
    header: str, footer: str, total_pages: int | None
) -> Callable[[Canvas, SimpleDocTemplate], None]:
    width, height = PAGE_SIZE

    def draw(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.setStrokeColor(colors.HexColor("#999999"))
        canvas.setLineWidth(0.5)
        top = height - 1.4 * cm
        canvas.drawString(MARGIN_X, top, header)
        canvas.line(MARGIN_X, top - 4, width - MARGIN_X, top - 4)
        bottom = 1.2 * cm
        canvas.line(MARGIN_X, bottom + 10, width - MARGIN_X, bottom + 10)
        canvas.drawString(MARGIN_X, bottom, footer)
        page = canvas.getPageNumber()
        label = f"Page {page} of {total_pages}" if total_pages else f"Page {page}"
        canvas.drawRightString(width - MARGIN_X, bottom, label)
        canvas.restoreState()

    return draw


def render_pdf(doc: PolicyDoc) -> bytes:
    """Render the policy to PDF bytes, reproducibly, with "Page N of M" footers."""
    header = f"{doc.company or 'Company'} \u2014 {doc.title}"
    version = doc.metadata.get("Version", "")
    effective = doc.metadata.get("Effective date", "")
    footer = "Confidential"
    if version:
        footer += f" \u2014 Version {version}"
    if effective:
        footer += f", effective {effective}"

    def build(total_pages: int | None) -> tuple[bytes, int]:
        buf = io.BytesIO()
        template = SimpleDocTemplate(
            buf,
            pagesize=PAGE_SIZE,
            leftMargin=MARGIN_X,
            rightMargin=MARGIN_X,
            topMargin=MARGIN_TOP,
            bottomMargin=MARGIN_BOTTOM,
            title=f"{doc.title} \u2014 {doc.company}",
            author=doc.company,
            subject=doc.metadata.get("Policy reference", doc.title),
            creator="policytune sample/make_sample_policy.py",
            # Fixed timestamps and IDs so the same source always gives the same bytes.
            invariant=1,
        )
        deco = _page_decorator(header, footer, total_pages)
        template.build(build_story(doc, template.width), onFirstPage=deco, onLaterPages=deco)
        return buf.getvalue(), template.page

    # The total page count is only known after layout, so lay out twice; the footer
    # text is the same width class in both passes, so pagination does not shift.
    _, pages = build(None)
    pdf, pages_again = build(pages)
    if pages_again != pages:
        pdf, _ = build(pages_again)
    return pdf


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: parse the source, render, write the PDF."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="Markdown policy source (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output PDF path (default: %(default)s)")
    args = parser.parse_args(argv)

    doc = parse_markdown(args.source.read_text(encoding="utf-8"))
    pdf = render_pdf(doc)
    write_bytes_atomic(args.out, pdf)
    print(f"wrote {args.out} ({len(pdf):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
