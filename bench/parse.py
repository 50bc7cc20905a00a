"""Parsing benchmark: seconds per page and peak RSS of the project's parse (Docling + rule-based
layout + HybridChunker) against model-free baselines, measured in the same run.

    uv run python bench/parse.py                          # sample + ../shared/eval-docs (when present)
    uv run python bench/parse.py --pdf my.pdf --rounds 3  # other documents, more repeats

Variants, each in its own fresh process (so the peak RSS is its own), interleaved round by round:
- pypdfium2: raw text of every page, nothing else (the floor: what reading the PDF costs);
- native: Docling's model-free NativePdfPipeline (flat text lines, no headings or tables);
- rule-based: policytune.pdf.parse_documents, the real stage 1a (layout, tables, chunks).
Each process times a cold first pass (imports done, converter not yet built) and then warm passes;
the table reports the best warm pass. Goal (issue 10): rule-based <= 0.2 s/page.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import common

from policytune import config

GOAL_S_PER_PAGE = 0.2
VARIANTS = ("pypdfium2", "native", "rule-based")


@dataclass
class ParseBenchConfig(config.Base):
    pdf: list[str] = field(default_factory=list, metadata={"help": "PDFs to parse (default: the sample and ../shared/eval-docs/*.pdf)"})
    rounds: int = field(default=2, metadata={"help": "interleaved rounds; each variant runs once per round in a fresh process"})
    repeats: int = field(default=2, metadata={"help": "warm passes over all PDFs inside each process (best kept)"})
    threads: int = field(default=1, metadata={"help": "torch / parser threads (1: the other core is busy on a shared machine)"})
    max_chunk_tokens: int = field(default=384, metadata={"help": "chunk size for the rule-based variant (stage 1a's default)"})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={"help": f"which variants to run: {', '.join(VARIANTS)}"})


def count_pages(paths: list[str]) -> int:
    import pypdfium2

    total = 0
    for path in paths:
        document = pypdfium2.PdfDocument(path)
        total += len(document)
        document.close()
    return total


def _timed_passes(run_once, repeats: int) -> dict:
    started = time.perf_counter()
    extra = run_once()
    first = time.perf_counter() - started
    warm = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_once()
        warm.append(time.perf_counter() - started)
    return {"seconds_cold": first, "seconds_warm": min(warm) if warm else first, **extra}


def measure_pypdfium2(paths: list[str], repeats: int, threads: int, max_chunk_tokens: int) -> dict:
    """Text of every page with pypdfium2: the cost of reading the PDF at all."""
    import pypdfium2

    def run_once() -> dict:
        characters = 0
        for path in paths:
            document = pypdfium2.PdfDocument(path)
            for page in document:
                characters += len(page.get_textpage().get_text_range())
            document.close()
        return {"characters": characters}

    return _timed_passes(run_once, repeats)


def measure_native(paths: list[str], repeats: int, threads: int, max_chunk_tokens: int) -> dict:
    """Docling's model-free NativePdfPipeline: flat text lines, no layout model."""
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions
    from docling.document_converter import DocumentConverter, NativePdfFormatOption

    state: dict = {}

    def run_once() -> dict:
        if "converter" not in state:  # built inside the first (cold) pass, as a user's first run pays it
            options = NativePdfPipelineOptions(parser_threads=threads)
            state["converter"] = DocumentConverter(format_options={InputFormat.PDF: NativePdfFormatOption(pipeline_options=options)})
        characters = 0
        for path in paths:
            document = state["converter"].convert(path).document
            characters += sum(len(item.text) for item in document.texts)
        return {"characters": characters}

    return _timed_passes(run_once, repeats)


def measure_rule_based(paths: list[str], repeats: int, threads: int, max_chunk_tokens: int) -> dict:
    """The project's stage 1a: policytune.pdf.parse_documents (layout rules, tables, chunking)."""
    import torch

    from policytune import models, pdf

    torch.set_num_threads(threads)
    tokenizer = models.load_tokenizer(models.resolve())

    def run_once() -> dict:
        chunks, stats = pdf.parse_documents(paths, tokenizer=tokenizer, max_chunk_tokens=max_chunk_tokens)
        return {"characters": sum(len(c["text"]) for c in chunks), "chunks": len(chunks),
                "tables": sum(c.get("kind") == "table" for c in chunks)}

    return _timed_passes(run_once, repeats)


MEASURE = {"pypdfium2": measure_pypdfium2, "native": measure_native, "rule-based": measure_rule_based}


def default_pdfs() -> list[str]:
    paths = [str(common.SAMPLE_PDF)] if common.SAMPLE_PDF.is_file() else []
    if common.SHARED_DOCS.is_dir():
        paths += sorted(str(p) for p in common.SHARED_DOCS.glob("*.pdf"))
    return paths


def stage_available() -> bool:
    try:
        from policytune import pdf
    except ImportError:
        return False
    return hasattr(pdf, "parse_documents")


def main(cfg: ParseBenchConfig) -> None:
    config.show(cfg)
    paths = cfg.pdf or default_pdfs()
    if not paths:
        raise config.UserError("no PDFs: data/sample_policy.pdf is missing and no --pdf given")
    variants = list(cfg.variants)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise config.UserError(f"--variants: unknown {unknown} (use {', '.join(VARIANTS)})")
    if "rule-based" in variants and not stage_available():
        print("policytune.pdf.parse_documents is not there yet (issue 3): skipping the rule-based variant", flush=True)
        variants.remove("rule-based")
    pages = count_pages(paths)
    print(f"{len(paths)} PDF(s), {pages} pages; {cfg.rounds} round(s) x {variants}", flush=True)

    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for round_no in range(cfg.rounds):
        for variant in variants:  # interleaved: a burst of load on the shared box hits every variant alike
            result = common.in_fresh_process(MEASURE[variant], paths, cfg.repeats, cfg.threads, cfg.max_chunk_tokens)
            runs[variant].append(result)
            print(f"  round {round_no + 1} {variant}: warm {result['seconds_warm']:.2f}s, "
                  f"cold {result['seconds_cold']:.2f}s, peak RSS {result['peak_rss_mb']:.0f} MiB", flush=True)

    rows = []
    for variant, results in runs.items():
        warm = common.best([r["seconds_warm"] for r in results], higher_is_better=False)
        cold = common.best([r["seconds_cold"] for r in results], higher_is_better=False)
        rows.append({"variant": variant, "pages": pages, "s/page (warm)": warm / pages, "s/page (cold)": cold / pages,
                     "peak RSS MiB": max(r["peak_rss_mb"] for r in results),
                     "characters": results[0]["characters"], "chunks": results[0].get("chunks", "")})
    by_name = {row["variant"]: row for row in rows}
    print(common.table(rows))

    ratios = {}
    if "rule-based" in by_name:
        rule = by_name["rule-based"]
        for baseline in ("native", "pypdfium2"):
            if baseline in by_name:
                ratios[f"rule-based / {baseline} (time per page)"] = rule["s/page (warm)"] / by_name[baseline]["s/page (warm)"]
        for name, value in ratios.items():
            print(f"ratio {name}: {value:.1f}x", flush=True)
        print(common.goal(f"parsing <= {GOAL_S_PER_PAGE} s/page (rule-based, warm: {rule['s/page (warm)']:.3f}; "
                          f"cold, with converter start-up: {rule['s/page (cold)']:.3f})",
                          rule["s/page (warm)"] <= GOAL_S_PER_PAGE), flush=True)
    common.report("parse", {"config": config.as_dict(cfg), "pdfs": paths, "pages": pages, "rows": rows,
                            "ratios": ratios, "runs": runs, "goal_s_per_page": GOAL_S_PER_PAGE})


if __name__ == "__main__":
    config.run(main, ParseBenchConfig)
