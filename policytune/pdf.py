"""Parse policy documents with Docling and cut them into heading-aware chunks sized in base-model tokens.

PDFs go through Docling's standard PDF pipeline with the rule-based layout and table models of
`policytune.layout` (offline), or with Docling's own models when the user has them
(`--artifacts-path` / DOCLING_ARTIFACTS_PATH). DOCX, HTML and Markdown use Docling's own backends.
Chunks come from Docling's HybridChunker with the base model's tokenizer.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

from policytune import models  # noqa: F401  (sets HF_HUB_OFFLINE before Docling is imported)
from policytune import facts, io  # `layout` imports Docling (seconds): imported where a document is read
from policytune.config import UserError, first_line

SUFFIX_FORMATS = {".pdf": "PDF", ".docx": "DOCX", ".html": "HTML", ".htm": "HTML", ".md": "MD", ".markdown": "MD"}
MIN_WORDS = 25          # fewer words than this is not a policy worth generating questions from
# A document with this share of its word 6-grams in another is that one again (a PDF and its DOCX export share
# 100%; the four policies here share none with each other)
REPEATED_SHARE = 0.8
RUNNING_TEXT_SHARE = 0.5  # margin text repeated on at least this share of pages is a running header/footer


def parse_documents(paths: list[str], tokenizer, max_chunk_tokens: int, ocr: bool = False,
                    artifacts_path: str | None = None) -> tuple[list[dict], dict]:
    """Parse each document and chunk it: (chunk records, stats with "pages", "seconds", "documents")."""
    if max_chunk_tokens < 32:
        raise UserError(f"--max-chunk-tokens must be at least 32, got {max_chunk_tokens}")
    for path in paths:
        check_input(path)
    artifacts_path = artifacts_path or os.environ.get("DOCLING_ARTIFACTS_PATH") or None
    converter = make_converter(ocr=ocr, artifacts_path=artifacts_path)
    chunker = make_chunker(tokenizer, max_chunk_tokens)

    chunks: list[dict] = []
    seen: set[str] = set()
    stats: dict = {"pages": 0, "seconds": 0.0, "documents": []}
    read: dict[str, str] = {}  # content digest -> the path read with it
    titles: dict[str, str] = {}
    texts: dict[str, set[tuple[str, ...]]] = {}  # each document's word 6-grams, for one policy given twice
    names = document_names(paths)
    for path in paths:
        digest = io.file_sha256(path)
        if digest in read:
            # The same facts twice under two names would tie every question between its two copies.
            print(f"warning: {shown(path)} has the same content as {shown(read[digest])}: read once", file=sys.stderr,
                  flush=True)
            continue
        read[digest] = path
        started = time.perf_counter()
        document = convert(converter, path, ocr=ocr)
        pages = max(len(document.pages), 1)
        name = names[path]
        titles[name] = document_title(document, name)
        doc_chunks = chunk_document(document, chunker, name)
        if not doc_chunks:
            raise UserError(f"{path}: no chunks: the document has no body text after headers and footers")
        words = sum(len(c["text"].split()) for c in doc_chunks)
        if words < MIN_WORDS:
            raise UserError(f"{path}: only {words} words of text: too little to be a policy document")
        text = shingles(doc_chunks)
        if copy_of := next((other for other, theirs in texts.items() if len(text & theirs) >= REPEATED_SHARE * len(text)),
                           None):
            print(f"warning: {name} repeats {len(text & texts[copy_of]) / len(text):.0%} of {copy_of}'s text (the same "
                  f"policy in another format or version?): {name} is left out; give only the version to train on",
                  file=sys.stderr, flush=True)
            continue
        for other in [o for o, theirs in texts.items() if len(text & theirs) >= REPEATED_SHARE * len(theirs)]:
            print(f"warning: {name} holds {len(text & texts[other]) / len(texts[other]):.0%} of {other}'s text (the "
                  f"same policy in another format or version?): {other} is left out; give only the version to train on",
                  file=sys.stderr, flush=True)
            chunks = [c for c in chunks if c["doc"] != other]
            stats["documents"] = [d for d in stats["documents"] if d["doc"] != other]
            del texts[other], titles[other]
        texts[name] = text
        duplicates = 0
        for chunk in doc_chunks:
            if chunk["id"] in seen:
                duplicates += 1  # identical text repeated in one document: one record is enough
                continue
            seen.add(chunk["id"])
            chunks.append(chunk)
        seconds = time.perf_counter() - started
        stats["pages"] += pages
        stats["seconds"] += seconds
        stats["documents"].append({"doc": name, "pages": pages, "chunks": len(doc_chunks) - duplicates,
                                   "duplicates_dropped": duplicates, "seconds": round(seconds, 2)})
        # Markdown, HTML and DOCX have no pages (Docling gives them none; they count as one)
        paged = f"{pages} pages -> " if document.pages else ""
        print(f"{shown(path)}: {paged}{len(doc_chunks) - duplicates} chunks in {seconds:.1f}s"
              + (f" ({seconds / pages:.2f} s/page)" if document.pages else ""), flush=True)
    stats["pages"] = sum(d["pages"] for d in stats["documents"])  # a document left out for another is not counted
    if separated := separate_sections(chunks, titles, chunker.tokenizer.count_tokens):
        print(f"{separated} chunks sit under a heading path another document has too (\"1. Purpose\", \"Eligibility\"): "
              "each is named after its document's title, so the two are not taken for one section", flush=True)
    return chunks, stats


def shingles(chunks: list[dict], n: int = 6) -> set[tuple[str, ...]]:
    """A document's runs of n words, whatever its format broke its lines or paragraphs at."""
    words = re.findall(r"[a-z0-9]+", " ".join(c["text"] for c in chunks).lower())
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def document_names(paths: list[str]) -> dict[str, str]:
    """The name each document is stored under: its file name, with as many of its folders as tell it apart from
    another document of the same file name ("uk/leave.md", "us/leave.md"), whose facts were otherwise one document's
    and their shared sentences dropped as duplicates."""
    parts = {path: Path(os.path.abspath(path)).parts for path in paths}
    names = {}
    for path in paths:
        depth = 1
        while depth < len(parts[path]) and any(other != path and parts[other][-depth:] == parts[path][-depth:]
                                                and parts[other] != parts[path] for other in paths):
            depth += 1
        names[path] = shown("/".join(parts[path][-depth:]))
    return names


def document_title(document, name: str) -> str:
    """What a document calls itself: its title, else its first heading, else its file name in words."""
    from docling_core.types.doc import DocItemLabel

    for label in (DocItemLabel.TITLE, DocItemLabel.SECTION_HEADER):
        for item in document.texts:
            if item.label == label and item.text.strip():
                return " ".join(item.text.split())
    return " ".join(re.split(r"[_\s-]+", Path(name).stem)).strip() or name


def separate_sections(chunks: list[dict], titles: dict[str, str], count_tokens) -> int:
    """Put its document's title before every heading path that chunks of two documents share: two policies' "1. Purpose"
    (or two documents without headings) are otherwise one section to every later stage, their facts restated, held out
    and contrasted together. Returns how many chunks were renamed; one document's chunks are left as they are."""
    if len(set(titles.values())) < len(titles):  # two documents with one title are told apart by their file names
        titles = {name: f"{title} ({name})" for name, title in titles.items()}
    documents = defaultdict(set)
    for chunk in chunks:
        documents[tuple(chunk["headings"])].add(chunk["doc"])
    renamed = 0
    for chunk in chunks:
        title = titles[chunk["doc"]]
        if len(documents[tuple(chunk["headings"])]) > 1 and chunk["headings"][:1] != [title]:
            chunk["headings"] = [title, *chunk["headings"]]
            chunk["context_text"] = f"{title}\n{chunk['context_text']}"
            chunk["n_tokens"] = count_tokens(chunk["context_text"])
            renamed += 1
    return renamed


def shown(path: str | os.PathLike) -> str:
    """A path as text that can be printed and stored as UTF-8: a file name in another encoding (bytes Python keeps as
    lone surrogates) gets replacement characters."""
    return os.fsencode(path).decode("utf-8", "replace")


def check_input(path: str) -> None:
    """Reject what Docling would fail on obscurely: missing, empty, mislabelled or locked files."""
    file = Path(path)
    if file.is_dir():
        raise UserError(f"{path}: is a folder, not a document (name the files in it)")
    if not file.is_file():
        raise UserError(f"{path}: file not found")
    if file.stat().st_size == 0:
        raise UserError(f"{path}: file is empty")
    suffix = file.suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise UserError(f"{path}: unsupported file type {suffix or '(none)'}; use PDF, DOCX, HTML or Markdown")
    with open(file, "rb") as handle:
        head = handle.read(65536)
    if SUFFIX_FORMATS[suffix] in ("HTML", "MD") and not head.startswith(b"%PDF-") and is_binary(head):
        # Docling reads any bytes as text: a binary file named .html became dozens of chunks of garbage
        raise UserError(f"{path}: binary content, not text (HTML and Markdown documents are text files)")
    if suffix != ".pdf":
        return
    if b"%PDF-" not in head:
        raise UserError(f"{path}: not a PDF file (no %PDF header; is it another format renamed to .pdf?)")
    if "password" in (pdfium_problem(path) or "").lower():
        raise UserError(f"{path}: the PDF is password-protected; remove the password and try again")
    # Anything else (a cut-off file, a broken xref) goes on to Docling, whose parser recovers the
    # readable pages of many damaged files; convert() reports what it cannot read.


def is_binary(head: bytes) -> bool:
    """Bytes no text file holds: a NUL, or control characters beyond 1% (text in any 8-bit encoding has none; UTF-16,
    which has NULs, starts with its byte-order mark)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    controls = sum(1 for byte in head if byte < 32 and byte not in b"\t\n\r\f\x1b" or byte == 127)
    return b"\x00" in head or controls > len(head) / 100


def pdfium_problem(path: str) -> str | None:
    """Why PDFium cannot open the file ("Failed to load document (PDFium: Data format error)"), or None."""
    import pypdfium2

    try:
        pypdfium2.PdfDocument(str(path)).close()
    except pypdfium2.PdfiumError as exc:
        return first_line(exc).rstrip(".")
    return None


def make_converter(ocr: bool = False, artifacts_path: str | None = None):
    """One Docling converter for all documents of a run (pipelines are built once, then reused)."""
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import HeadingHierarchyOptions, PdfPipelineOptions, RapidOcrOptions
    from docling.document_converter import DocumentConverter, PdfFormatOption

    from policytune import layout

    if ocr and not (importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("rapidocr")):
        raise UserError("--ocr needs the 'ocr' extra (onnxruntime and rapidocr): uv sync --extra ocr")
    options = PdfPipelineOptions(
        do_ocr=ocr,
        # Heading levels are assigned after conversion (assign_heading_levels), where a FAQ's "Q:" is
        # not read as the letter Q of an (a), (b), (c) enumeration.
        heading_hierarchy_options=HeadingHierarchyOptions(enabled=False),
        generate_parsed_pages=True,  # the heading-level style fallback reads the parsed cells
    )
    if ocr:
        options.ocr_options = RapidOcrOptions(backend="onnxruntime")
    if artifacts_path:
        if not Path(artifacts_path).is_dir():
            raise UserError(f"{artifacts_path}: Docling artifacts folder not found")
        options.artifacts_path = artifacts_path
    else:
        layout.register()
        options.layout_options = layout.RuleLayoutOptions()
        options.table_structure_options = layout.RuleTableOptions()
    return DocumentConverter(
        allowed_formats=[InputFormat.PDF, InputFormat.DOCX, InputFormat.HTML, InputFormat.MD],
        format_options={InputFormat.PDF: PdfFormatOption(pipeline_options=options)},
    )


def convert(converter, path: str, ocr: bool = False):
    """Convert one file; failures become one-line UserErrors, failed pages of a partial PDF a warning."""
    from docling.datamodel.base_models import ConversionStatus
    from docling.exceptions import ConversionError

    # Docling logs "Input document X is not valid." for a file it cannot open, before this function can say
    # why: the one error line below replaces it.
    docling_log = logging.getLogger("docling.document_converter")
    level = docling_log.level
    docling_log.setLevel(logging.ERROR)
    try:
        result = converter.convert(path, raises_on_error=False)
    except ConversionError as exc:
        raise UserError(f"{path}: Docling cannot convert it ({first_line(exc)})") from None
    except Exception as exc:  # backends raise assorted errors on malformed files
        raise UserError(f"{path}: unreadable document ({type(exc).__name__}: {first_line(exc)})") from None
    finally:
        docling_log.setLevel(level)
    if result.status in (ConversionStatus.FAILURE, ConversionStatus.SKIPPED):
        # Docling's own reason for an unloadable PDF is a hash ("could not load document 6dbe5f...");
        # PDFium's names the fault.
        problem = pdfium_problem(path) if Path(path).suffix.lower() == ".pdf" else None
        if problem:
            raise UserError(f"{path}: conversion failed: damaged or cut-off PDF ({problem})")
        reason = "; ".join(sorted({first_line(e.error_message) for e in result.errors})) or "no reason given"
        raise UserError(f"{path}: conversion failed ({reason})")
    document = result.document
    if result.pages:  # a PDF: DOCX, HTML and Markdown carry their heading levels
        assign_heading_levels(result, path)
    if result.status == ConversionStatus.PARTIAL_SUCCESS:
        failed = sorted({e.page_no for e in result.errors if e.page_no is not None})
        print(f"warning: {shown(path)}: pages {failed or '?'} could not be parsed and are skipped", file=sys.stderr, flush=True)
    if not any(item.text.strip() for item in document.texts) and not document.tables:
        if Path(path).suffix.lower() != ".pdf":
            raise UserError(f"{path}: no text found in the document")
        if ocr:
            raise UserError(f"{path}: no text found, even with OCR")
        raise UserError(f"{path}: no text layer (scanned/image-only?); install the 'ocr' extra and pass --ocr")
    drop_running_text(document)
    return document


# "Q: How do I ...?", "Q. When ...?" and "Step 2: ..." open a question or a step, not the 17th item of a lettered
# list or a numbered section.
KEYWORD_MARKER = re.compile(r"^\s*(?:[QA]\s?[:.]|Step\s+\d+\s*[:.])\s+", re.I)
UNSET_LEVEL = 99


def assign_heading_levels(result, path: str) -> None:
    """Heading levels of a PDF: from numbering (5. > 5.2 > (a)), else from type size and weight.

    Not from bookmarks: Docling ranks them above numbering, and exported outlines are often flat or partial
    (LibreOffice's HTML import puts h2 sections at the outline's top level). Docling's numbering reads a FAQ's "Q:"
    as a letter enumerator and "Step 2:" as a section number, and ranked every question above the sections around
    it (on the Sourcegraph handbook a question became the parent of the next policy), so those markers are hidden
    from it; its style fallback is replaced by the layout model's own measure of type size (`layout.style_levels`).
    """
    from docling.datamodel.pipeline_options import HeadingHierarchyOptions
    from docling.models.stages.heading_hierarchy.heading_hierarchy_model import HeadingHierarchyModel
    from docling_core.types.doc import SectionHeaderItem

    from policytune import layout

    headings = [item for item in result.document.texts if isinstance(item, SectionHeaderItem)]
    hidden = []
    for item in headings:
        item.level = UNSET_LEVEL
        if KEYWORD_MARKER.match(item.text):
            hidden.append((item, item.text, item.orig))
            item.text = item.orig = KEYWORD_MARKER.sub("", item.text)
    try:
        numbering = HeadingHierarchyOptions(enabled=True, use_bookmarks=False, use_style=False)
        HeadingHierarchyModel(numbering).assign_heading_levels(result.document)
    finally:
        for item, text, orig in hidden:
            item.text, item.orig = text, orig
    by_style = layout.style_levels(layout.heading_styles(result, path))
    if not by_style and headings:  # pdfium cannot open the file: Docling's own (text-line) measure of type size
        numbered = {id(item): item.level for item in headings if item.level != UNSET_LEVEL}
        parsed = {page.page_no: page.parsed_page for page in result.pages if page.parsed_page is not None}
        style_only = HeadingHierarchyOptions(enabled=True, use_bookmarks=False, use_numbering=False)
        HeadingHierarchyModel(style_only).assign_heading_levels(result.document, parsed_pages=parsed)
        by_style = {id(item): item.level for item in headings}
        for item in headings:
            item.level = numbered.get(id(item), UNSET_LEVEL)
    for item in headings:
        if item.level == UNSET_LEVEL:
            item.level = min(by_style.get(id(item), 1), 6)
    questions_as_siblings(headings)


def questions_as_siblings(headings: list) -> None:
    """An FAQ's next question is the next entry, not a part of the one before: a question heading that follows a
    question heading takes its level where type size put it deeper. Sourcegraph's handbook sets some of its questions
    a size smaller than the one before them, so "Q. Does Sourcegraph match my 401k?" sat under "Q. What is Sequoia
    Consulting Group?" (and 57 of its 145 FAQ facts under another entry's question) in every heading path."""
    for before, item in zip(headings, headings[1:]):
        if facts.asks(before.text) and facts.asks(item.text) and item.level > before.level:
            item.level = before.level


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\d+", "#", text.lower())).strip()


def drop_running_text(document) -> None:
    """Move text repeated in the page margins (running headers/footers) out of the body."""
    from docling_core.types.doc import ContentLayer, CoordOrigin

    from policytune import layout

    if len(document.pages) < 2:
        return
    pages_by_text: dict[str, set[int]] = defaultdict(set)
    margin_items = []
    for item in document.texts:
        if item.content_layer != ContentLayer.BODY or not item.prov:
            continue
        prov = item.prov[0]
        page = document.pages.get(prov.page_no)
        if page is None:
            continue
        height = page.size.height
        box = prov.bbox if prov.bbox.coord_origin == CoordOrigin.TOPLEFT else prov.bbox.to_top_left_origin(height)
        if box.b < layout.MARGIN * height or box.t > (1 - layout.MARGIN) * height:
            key = _normalise(item.text)
            pages_by_text[key].add(prov.page_no)
            margin_items.append((key, item))
    needed = max(2, RUNNING_TEXT_SHARE * len(document.pages))
    for key, item in margin_items:
        if len(pages_by_text[key]) >= needed or layout.PAGE_NUMBER.match(item.text.strip()):
            item.content_layer = ContentLayer.FURNITURE


def make_chunker(tokenizer, max_chunk_tokens: int):
    """Docling's HybridChunker measuring chunks in the base model's own tokens."""
    from docling_core.transforms.chunker.hierarchical_chunker import ChunkingDocSerializer, ChunkingSerializerProvider
    from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
    from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer
    from docling_core.transforms.serializer.markdown import MarkdownTableSerializer

    class MarkdownTables(ChunkingSerializerProvider):
        # Markdown tables (not Docling's default "row, column = value" triplets) keep the header
        # line that HybridChunker repeats when it has to split a long table by rows; compact (no
        # column padding) so the padding spends no tokens and rows fit beside the header.
        def get_serializer(self, doc):
            return ChunkingDocSerializer(doc=doc, table_serializer=MarkdownTableSerializer(),
                                         params=plain_params(compact_tables=True))

    return HybridChunker(tokenizer=HuggingFaceTokenizer(tokenizer=tokenizer, max_tokens=max_chunk_tokens),
                         merge_peers=True, repeat_table_header=True, serializer_provider=MarkdownTables())


def plain_params(**update):
    """Docling's chunking serializer settings without markup: a policy's facts are its words, and "**", "_" or a
    code fence in them reached the questions and answers ("Who must requests be approved by the * * in advance?")."""
    from docling_core.transforms.chunker.hierarchical_chunker import ChunkingDocSerializer

    return ChunkingDocSerializer.model_fields["params"].default.model_copy(update={
        "include_formatting": False, "include_hyperlinks": False, "format_code_blocks": False, **update})


def join_inline_groups(document) -> int:
    """Make each paragraph that mixes plain and formatted text (bold, italic, code, a link: Markdown, HTML and DOCX
    inline groups) one text item of its words; returns how many. The chunker writes each span of such a paragraph on
    its own line, so its sentences fell apart into facts such as "The home office allowance is"."""
    from docling_core.transforms.chunker.hierarchical_chunker import ChunkingDocSerializer
    from docling_core.types.doc import DocItemLabel, GroupLabel

    serializer = ChunkingDocSerializer(doc=document, params=plain_params())
    groups = [g for g in document.groups if g.label == GroupLabel.INLINE
              and not (g.parent and getattr(g.parent.resolve(document), "label", None) == GroupLabel.INLINE)]
    for group in groups:
        text = " ".join(serializer.serialize(item=group).text.split())
        text = re.sub(r"\s+([.,;:!?)])", r"\1", text)  # "see the IT page ." where a link ended the span
        provs = [prov for child in group.children for prov in getattr(child.resolve(document), "prov", None) or []]
        document.insert_text(sibling=group, label=DocItemLabel.TEXT, text=text, prov=provs[0] if provs else None)
        document.delete_items(node_items=[group])
    return len(groups)


def chunk_document(document, chunker, doc_name: str) -> list[dict]:
    """The document's chunks as chunks.json records (see the data contract in the README)."""
    from docling_core.types.doc import DocItemLabel

    join_inline_groups(document)
    records = []
    for chunk in chunker.chunk(dl_doc=document):
        text = chunk.text.strip()
        if not text:
            continue
        context_text = chunker.contextualize(chunk=chunk)
        pages = sorted({prov.page_no for item in chunk.meta.doc_items for prov in item.prov})
        is_table = any(item.label == DocItemLabel.TABLE for item in chunk.meta.doc_items)
        records.append({
            "id": io.content_hash(doc_name, text),
            "doc": doc_name,
            "pages": pages,
            "headings": list(chunk.meta.headings or []),
            "text": text,
            "context_text": context_text,
            "n_tokens": chunker.tokenizer.count_tokens(context_text),
            "kind": "table" if is_table else "text",
        })
    return records
