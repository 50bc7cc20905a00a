"""A rule-based layout model and table model for Docling's PDF pipeline, for use without its hub models.

Docling's own layout model (docling-layout-heron) is downloaded on first use, which fails offline
(see ../shared/design/embedded-defaults.md). These two models read the words Docling's PDF parser
already extracted and label regions from typography alone: headings from font size, weight and
numbering; list items from bullets and enumerators; tables from column alignment; running page
headers and footers from the page margins. Docling's own stages (page assembly, reading order,
heading levels, chunking) then run unchanged on what they predict.

`register()` plugs both into Docling's model factories in-process: the factories are the
`lru_cache`d singletons the pipeline asks, so no entry point (and no pyproject change) is needed.
"""
from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from docling.datamodel.base_models import Cluster, LayoutPrediction, Page, Table, TableStructurePrediction
from docling.datamodel.document import ConversionResult
from docling.datamodel.pipeline_options import BaseLayoutOptions, BaseTableStructureOptions
from docling.models.base_layout_model import BaseLayoutModel
from docling.models.base_table_model import BaseTableStructureModel
from docling.models.factories import get_layout_factory, get_table_structure_factory
from docling_core.types.doc import BoundingBox, CoordOrigin, DocItemLabel, TableCell

BULLET = re.compile(r"^[\u2022\u2023\u25aa\u25cf\u25e6\u2043\u2219\u00b7\u25a0\u25a1\u2013\u2014*-]$")
ENUMERATOR = re.compile(r"^(\(?\d{1,2}[.)]|\(?[a-z][.)]|\(?[ivx]{1,4}[.)]|\([a-z]\)|\([ivx]{1,4}\))$")
SECTION_NUMBER = re.compile(r"^(\d+(\.\d+)*\.?|[A-Z]\.|[IVX]+\.|(Section|Part|Chapter|Article)\s+\w+[.:]?)(\s|$)")
CAPTION = re.compile(r"^(Table|Figure|Fig\.)\s+\d+[.:]", re.IGNORECASE)
PAGE_NUMBER = re.compile(r"^(page\s*)?\d{1,4}(\s*(of|/)\s*\d{1,4})?$|^-\s*\d{1,4}\s*-$", re.IGNORECASE)
BOLD_NAME = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)

# Page margins that hold running headers/footers, as a fraction of the page height. Body text
# rarely starts in the top or bottom 8% of a page; repeated text there is cut later (pdf.py).
MARGIN = 0.08
HEADING_SIZE_RATIO = 1.12      # a line this much taller than body text is heading-sized
HEADING_MAX_WORDS = 18
COLUMN_GAP_EM = 1.2            # a horizontal gap wider than this many line heights splits columns


@dataclass
class Segment:
    """A run of words on one visual line, with no column-sized gap inside."""

    words: list = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(w.text.strip() for w in self.words if w.text.strip())

    @property
    def l(self) -> float:
        return min(w.box.l for w in self.words)

    @property
    def r(self) -> float:
        return max(w.box.r for w in self.words)


@dataclass
class Line:
    """A visual text line (top-left coordinates): its words, split into column segments."""

    words: list
    segments: list[Segment] = field(default_factory=list)
    numbered: bool = False  # starts with a bare list number ("2   Record the absence")

    @property
    def top(self) -> float:
        return min(w.box.t for w in self.words)

    @property
    def bottom(self) -> float:
        return max(w.box.b for w in self.words)

    @property
    def left(self) -> float:
        return min(w.box.l for w in self.words)

    @property
    def height(self) -> float:
        # words of three letters or more: only they can correct a box that is too flat (Word.size), and a line of
        # questions is mostly "do", "I", "if", "my"
        sized = [w.size for w in self.words if len(w.text.strip()) >= 3] or [w.size for w in self.words]
        return statistics.median(sized)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


@dataclass
class Word:
    """A parsed text cell with its box in top-left page coordinates."""

    cell: object
    box: BoundingBox

    @property
    def text(self) -> str:
        return self.cell.text

    @property
    def font(self) -> str:
        return getattr(self.cell, "font_name", "") or ""

    @property
    def size(self) -> float:
        """Font-size proxy: the box height, unless that is far below 1.5 average character widths.
        Some PDFs' font metrics give words boxes a third of their real height."""
        height = self.box.b - self.box.t
        text = self.text.strip()
        if len(text) < 3:
            return height
        from_width = 1.5 * (self.box.r - self.box.l) / len(text)
        return from_width if height < 0.6 * from_width else height


def _words(cells: list, page_height: float) -> list[Word]:
    return [Word(cell, cell.rect.to_bounding_box().to_top_left_origin(page_height))
            for cell in cells if cell.text.strip()]


def page_words(page: Page) -> list:
    """The page's word cells (text-layer words, or OCR lines when the page has none)."""
    parsed = page.parsed_page
    if parsed is None:
        return []
    cells = parsed.word_cells if parsed.has_words and parsed.word_cells else page.cells
    return _words(cells, page.size.height)


def build_lines(words: list) -> list[Line]:
    """Group words into visual lines (vertical overlap), then split lines at column gaps."""
    lines: list[Line] = []
    for word in sorted(words, key=lambda w: (w.box.t, w.box.l)):
        middle = (word.box.t + word.box.b) / 2
        for line in reversed(lines[-3:]):
            if line.top - 1 <= middle <= line.bottom + 1:
                line.words.append(word)
                break
        else:
            lines.append(Line(words=[word]))
    for line in lines:
        line.words.sort(key=lambda w: w.box.l)
        gap_limit = COLUMN_GAP_EM * line.height
        segments = [Segment(words=[line.words[0]])]
        for word in line.words[1:]:
            previous = segments[-1]
            gap = word.box.l - previous.words[-1].box.r
            is_marker = len(previous.words) == 1 and _is_marker(previous.text)
            if gap > gap_limit and not is_marker:
                segments.append(Segment(words=[word]))
            else:
                previous.words.append(word)
        if len(segments) == 2 and re.fullmatch(r"\d{1,2}", segments[0].text):
            # A bare number far left of one text run is a list marker, not a two-column table row.
            segments = [Segment(words=segments[0].words + segments[1].words)]
            line.numbered = True
        line.segments = segments
    lines.sort(key=lambda ln: ln.top)
    return lines


def _is_marker(text: str) -> bool:
    return bool(BULLET.match(text) or ENUMERATOR.match(text))


def _starts_list_item(line: Line) -> bool:
    first = line.words[0].text.strip()
    if line.numbered:
        return True
    return _is_marker(first) and len(line.words) > 1 or bool(first[:1] in "\u2022\u25aa\u25cf\u25e6" and len(first) > 1)


@dataclass
class Typography:
    """What body text looks like on this page: the most common font and the median line height."""

    font: str
    size: float

    @classmethod
    def of(cls, lines: list[Line]) -> "Typography":
        fonts: dict[str, int] = {}
        heights: list[float] = []
        for line in lines:
            for word in line.words:
                fonts[word.font] = fonts.get(word.font, 0) + len(word.text)
                heights.extend([word.size] * len(word.text))
        font = max(fonts, key=fonts.get) if fonts else ""
        return cls(font=font, size=statistics.median(heights) if heights else 10.0)


def _is_heading(line: Line, body: Typography) -> bool:
    text = line.text
    if len(line.segments) != 1 or not re.search(r"[A-Za-z]", text):
        return False
    if len(text.split()) > HEADING_MAX_WORDS or text.rstrip().endswith((",", ";")) or CAPTION.match(text):
        return False
    larger = line.height >= HEADING_SIZE_RATIO * body.size
    fonts = {w.font for w in line.words}
    # A font whose name says its weight counts only when bold; bare resource keys ("/F2", as
    # reportlab writes) say nothing, so there any single font other than the body's counts.
    named = all(not re.fullmatch(r"/?F\d+", f) for f in fonts)
    emphasised = body.font not in fonts and (
        all(BOLD_NAME.search(f) for f in fonts) if named else len(fonts) == 1)
    if _starts_list_item(line) and not (SECTION_NUMBER.match(text) and (larger or emphasised)):
        return False  # "1. Submit the form" in body type is a list item; "1. Purpose" in bold is a heading
    if larger:
        return not text.rstrip().endswith(".") or bool(SECTION_NUMBER.match(text))
    if emphasised and line.height >= 1.05 * body.size and not text.rstrip().endswith("."):
        return True  # "New hire benefits enrollment:" in bold type a size up names a section
    # Same size, different (bold) font: a heading only when it is not a sentence or a lead-in
    # ("Overview:" in bold opens a paragraph or list; it names no section).
    return emphasised and not text.rstrip().endswith((".", ":"))


def find_tables(lines: list[Line]) -> list[tuple[int, int]]:
    """Index ranges [start, end) of lines that form tables: rows whose segments share column starts."""
    tables = []
    i = 0
    while i < len(lines):
        if len(lines[i].segments) < 2 or _starts_list_item(lines[i]):
            i += 1
            continue
        starts = [s.l for s in lines[i].segments]
        j = i + 1
        multi_rows = 1
        while j < len(lines):
            line, previous = lines[j], lines[j - 1]
            if line.top - previous.bottom > 3 * max(line.height, previous.height):
                break
            if len(line.segments) < len(starts):
                _split_at_columns(line, starts)
            aligned = all(any(abs(s.l - c) < 6 or (c < s.l and s.r < _next(starts, c)) for c in starts)
                          for s in line.segments)
            if len(line.segments) >= 2 and aligned:
                multi_rows += 1
            elif not (aligned and line.left > starts[0] + 6) and not (
                    aligned and line.top - previous.bottom < 0.6 * line.height):
                break
            j += 1
        if multi_rows >= 2:
            tables.append((i, j))
            i = j
        else:
            i += 1
    return tables


def _next(starts: list[float], column_start: float) -> float:
    later = [s for s in starts if s > column_start + 6]
    return min(later) if later else float("inf")


def table_grid(lines: list[Line]) -> list[list[list[Segment]]]:
    """Rows x columns of segments: a line with fewer segments than columns, close below the row
    before it, continues that row's cells (a wrapped cell); otherwise it starts a new row."""
    columns = sorted(_column_starts(lines))
    for line in lines:
        _split_at_columns(line, columns)
    pitches = sorted(b.top - a.top for a, b in zip(lines, lines[1:]))
    row_pitch = pitches[(3 * len(pitches)) // 4] if pitches else 0.0  # most rows are one line
    rows: list[list[list[Segment]]] = []
    previous = None
    for line in lines:
        pitch = line.top - previous.top if previous is not None else 0.0
        wrapped = previous is not None and rows and (
            pitch < 0.75 * row_pitch  # tighter than the row spacing: the cells above wrapped
            or len(line.segments) < len(columns) and line.top - previous.bottom < 0.6 * line.height)
        if not wrapped:
            rows.append([[] for _ in columns])
        for segment in line.segments:
            column = max((k for k, c in enumerate(columns) if c <= segment.l + 6), default=0)
            rows[-1][column].append(segment)
        previous = line
    return rows


def _split_at_columns(line: Line, columns: list[float]) -> None:
    """Split a segment where a word starts exactly at a known column start: tight tables leave
    less than the usual column gap between one cell's text and the next cell's."""
    segments = []
    for segment in line.segments:
        current = Segment(words=[segment.words[0]])
        for word in segment.words[1:]:
            gap = word.box.l - current.words[-1].box.r
            if gap > 0.25 * line.height and any(abs(word.box.l - c) < 3 for c in columns):
                segments.append(current)
                current = Segment(words=[word])
            else:
                current.words.append(word)
        segments.append(current)
    line.segments = segments


def _column_starts(lines: list[Line]) -> list[float]:
    starts: list[float] = []
    widest = max(lines, key=lambda ln: len(ln.segments))
    for segment in widest.segments:
        starts.append(segment.l)
    for line in lines:
        for segment in line.segments:
            if not any(abs(segment.l - c) < 6 for c in starts) and not any(
                    c < segment.l and segment.r < _next(starts, c) + 1 for c in starts):
                starts.append(segment.l)
    return starts


def _cluster(cluster_id: int, label: DocItemLabel, lines: list[Line]) -> Cluster:
    words = [w for line in lines for w in line.words]
    return Cluster(
        id=cluster_id, label=label, confidence=1.0, cells=[w.cell for w in words],
        bbox=BoundingBox(l=min(w.box.l for w in words), t=min(w.box.t for w in words),
                         r=max(w.box.r for w in words), b=max(w.box.b for w in words),
                         coord_origin=CoordOrigin.TOPLEFT),
    )


def _same_block(previous: Line, line: Line, label: DocItemLabel) -> bool:
    # Line pitch (top to top), not the gap between boxes: some fonts' boxes are far too short.
    if line.top - previous.top > 1.7 * max(previous.height, line.height):
        return False
    if label == DocItemLabel.LIST_ITEM:
        return line.left > previous.words[0].box.l + 2 and not _starts_list_item(line)
    same_fonts = {w.font for w in line.words} == {w.font for w in previous.words}
    if label == DocItemLabel.SECTION_HEADER:
        # A heading wraps onto a line that reads on from it ("... extend it longer" / "than 12-weeks?"); a line that
        # starts afresh is the next heading ("FAQ" / "FAQ for all Teammates", "Reason for the policy" / "Resources").
        reads_on = bool(re.match(r"[a-z0-9(]", line.text)) or bool(
            re.search(r"(?:\b(?:and|or|of|the|a|an|to|for|in|on|with|by)|[,:–-])$", previous.text.strip())) or \
            previous.text.count("(") > previous.text.count(")")  # "... (this only applies to US" / "Employees)"
        # word boxes follow the glyphs ("event (QLE)?" stands taller than "a qualifying life"): a loose size match
        return reads_on and abs(line.height - previous.height) < 0.25 * previous.height
    return same_fonts or abs(line.height - previous.height) < 0.15 * previous.height


def layout_page(page: Page) -> list[Cluster]:
    """Label one page's lines as headings, list items, paragraphs, tables, page headers/footers."""
    words = page_words(page)
    if not words:
        return []
    lines = build_lines(words)
    height = page.size.height
    body = Typography.of([ln for ln in lines if MARGIN * height < ln.top < (1 - MARGIN) * height] or lines)
    table_at = {start: end for start, end in find_tables(lines)}

    clusters: list[Cluster] = []
    block: list[Line] = []
    block_label = DocItemLabel.TEXT

    def close() -> None:
        nonlocal block
        if block:
            clusters.append(_cluster(len(clusters), block_label, block))
        block = []

    i = 0
    while i < len(lines):
        line = lines[i]
        if i in table_at:
            close()
            clusters.append(_cluster(len(clusters), DocItemLabel.TABLE, lines[i:table_at[i]]))
            i = table_at[i]
            continue
        in_margin = line.bottom < MARGIN * height or line.top > (1 - MARGIN) * height
        # Small print or a page number in the margin is furniture; anything else there is kept
        # as its own block and dropped later only if it repeats across pages (pdf.py).
        if in_margin and (PAGE_NUMBER.match(line.text.strip()) or line.height < body.size):
            label = DocItemLabel.PAGE_HEADER if line.top < height / 2 else DocItemLabel.PAGE_FOOTER
        elif _is_heading(line, body):
            label = DocItemLabel.SECTION_HEADER
        elif CAPTION.match(line.text):
            label = DocItemLabel.CAPTION
        elif _starts_list_item(line):
            label = DocItemLabel.LIST_ITEM
        elif block and block_label == DocItemLabel.LIST_ITEM and _same_block(block[-1], line, block_label):
            label = DocItemLabel.LIST_ITEM
        else:
            label = DocItemLabel.TEXT
        starts_new = (
            not block or label != block_label or in_margin
            or label in (DocItemLabel.LIST_ITEM,) and _starts_list_item(line)
            or not _same_block(block[-1], line, label)
            or label == DocItemLabel.SECTION_HEADER and bool(SECTION_NUMBER.match(line.text))
        )
        if starts_new:
            close()
            block_label = label
        block.append(line)
        if in_margin:
            close()
        i += 1
    close()
    return clusters


class RuleLayoutOptions(BaseLayoutOptions):
    """Selects the rule-based layout model (no model weights)."""

    kind: ClassVar[str] = "policytune_rule_layout"


class RuleLayoutModel(BaseLayoutModel):
    """Docling layout model from typography: no weights, no network."""

    # Our clusters already carry their cells; Docling's postprocessor would re-derive them from
    # model-style overlapping boxes and could merge a heading into the paragraph below it.
    requires_layout_postprocessing = False

    def __init__(self, options: RuleLayoutOptions, artifacts_path=None, accelerator_options=None,
                 enable_remote_services: bool = False):
        self.options = options

    @classmethod
    def get_options_type(cls) -> type[RuleLayoutOptions]:
        return RuleLayoutOptions

    def predict_layout(self, conv_res: ConversionResult, pages: Sequence[Page]) -> Sequence[LayoutPrediction]:
        predictions = []
        for page in pages:
            if page._backend is None or not page._backend.is_valid():
                predictions.append(LayoutPrediction())
                continue
            predictions.append(LayoutPrediction(clusters=layout_page(page)))
        return predictions


class RuleTableOptions(BaseTableStructureOptions):
    """Selects the rule-based table structure model (no model weights)."""

    kind: ClassVar[str] = "policytune_rule_tables"


class RuleTableModel(BaseTableStructureModel):
    """Docling table structure from column alignment of the words inside a table region."""

    def __init__(self, enabled: bool, options: RuleTableOptions, artifacts_path=None, accelerator_options=None,
                 enable_remote_services: bool = False):
        self.enabled = enabled
        self.options = options

    @classmethod
    def get_options_type(cls) -> type[RuleTableOptions]:
        return RuleTableOptions

    def predict_tables(self, conv_res: ConversionResult, pages: Sequence[Page]) -> Sequence[TableStructurePrediction]:
        predictions = []
        for page in pages:
            prediction = TableStructurePrediction()
            layout = page.predictions.layout
            for cluster in (layout.clusters if layout else []):
                if cluster.label == DocItemLabel.TABLE:
                    prediction.table_map[cluster.id] = table_from_cluster(page, cluster)
            predictions.append(prediction)
        return predictions


def table_from_cluster(page: Page, cluster: Cluster) -> Table:
    """Rebuild the grid of a TABLE cluster from its words; the first row is the column header."""
    grid = table_grid(build_lines(_words(cluster.cells, page.size.height)))
    cells = []
    otsl: list[str] = []
    for r, row in enumerate(grid):
        for c, segments in enumerate(row):
            words = [w for s in segments for w in s.words]
            otsl.append("fcel" if words else "ecel")
            if not words:
                continue
            cells.append(TableCell(
                text=" ".join(s.text for s in segments),
                bbox=BoundingBox(l=min(w.box.l for w in words), t=min(w.box.t for w in words),
                                 r=max(w.box.r for w in words), b=max(w.box.b for w in words),
                                 coord_origin=CoordOrigin.TOPLEFT),
                row_span=1, col_span=1, start_row_offset_idx=r, end_row_offset_idx=r + 1,
                start_col_offset_idx=c, end_col_offset_idx=c + 1, column_header=r == 0))
        otsl.append("nl")
    return Table(otsl_seq=otsl, table_cells=cells, num_rows=len(grid), num_cols=len(grid[0]) if grid else 0,
                 id=cluster.id, page_no=page.page_no, cluster=cluster, label=cluster.label)


def register() -> None:
    """Make both models available to Docling's factories (idempotent)."""
    layouts = get_layout_factory(allow_external_plugins=False)
    if RuleLayoutOptions not in layouts.classes:
        layouts.register(RuleLayoutModel, "policytune", __name__)
    tables = get_table_structure_factory(allow_external_plugins=False)
    if RuleTableOptions not in tables.classes:
        tables.register(RuleTableModel, "policytune", __name__)


def heading_styles(result: ConversionResult, path: str) -> dict[int, tuple[float, bool]]:
    """(font size, bold) of every section heading of the converted PDF at `path`, keyed by id(item).

    Read from the PDF's own text objects (pdfium's font size and weight of the characters under the heading), not
    from box heights: Docling's style fallback measures text-line cells, which a two-line heading or the glyphs
    distort (on the Sourcegraph handbook five FAQ questions ranked above every policy title), and word boxes vary
    with ascenders and descenders as much as 18pt and 16pt type differ."""
    import ctypes

    import pypdfium2
    import pypdfium2.raw as pdfium_c
    from docling_core.types.doc import SectionHeaderItem

    by_page: dict[int, list] = {}
    for item in result.document.texts:
        if isinstance(item, SectionHeaderItem) and item.prov:
            by_page.setdefault(item.prov[0].page_no, []).append(item)
    styles: dict[int, tuple[float, bool]] = {}
    if not by_page:
        return styles
    try:
        pdf = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError:
        return styles  # a damaged file whose pages Docling's own parser recovered: the caller measures otherwise
    try:
        for page_no, items in by_page.items():
            textpage = pdf[page_no - 1].get_textpage()
            page_height = pdf[page_no - 1].get_height()
            chars = []
            left, right, bottom, top = (ctypes.c_double() for _ in range(4))
            name = ctypes.create_string_buffer(128)
            flags = ctypes.c_int()
            for i in range(textpage.count_chars()):
                size = pdfium_c.FPDFText_GetFontSize(textpage.raw, i)
                if size <= 0 or not pdfium_c.FPDFText_GetCharBox(textpage.raw, i, left, right, bottom, top):
                    continue
                pdfium_c.FPDFText_GetFontInfo(textpage.raw, i, name, len(name), ctypes.byref(flags))
                bold = bool(BOLD_NAME.search(name.value.decode("latin-1", "replace")))
                chars.append(((left.value + right.value) / 2, bottom.value, top.value, size, bold))
            for item in items:
                # characters whose box meets the heading's: a word box can be flatter than its glyphs ("FAQ")
                box = item.prov[0].bbox.to_bottom_left_origin(page_height)
                under = [(size, bold) for x, low, high, size, bold in chars
                         if box.l - 1 <= x <= box.r + 1 and low <= box.t + 1 and high >= box.b - 1]
                if under:
                    styles[id(item)] = (round(statistics.median(s for s, _ in under), 1),
                                        sum(b for _, b in under) * 2 >= len(under))
    finally:
        pdf.close()
    return styles


def style_levels(styles: dict[int, tuple[float, bool]], tolerance: float = 0.04) -> dict[int, int]:
    """Heading level from style: larger type first, bold before regular at the same size (1 = most prominent).
    Sizes within `tolerance` of the next larger one share a level (word boxes vary a little with the glyphs)."""
    cluster: dict[float, int] = {}
    index, previous = 0, None
    for size in sorted({size for size, _ in styles.values()}, reverse=True):
        if previous is not None and previous - size > tolerance * previous:
            index += 1
        cluster[size] = index
        previous = size
    keys = {key: (cluster[size], not bold) for key, (size, bold) in styles.items()}
    ranked = {value: level for level, value in enumerate(sorted(set(keys.values())), start=1)}
    return {key: ranked[value] for key, value in keys.items()}
