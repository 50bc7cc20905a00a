"""Generation benchmark: kept questions per second from the embedded llama-server, one request at a time
(--concurrency 1, one server slot) vs the stage's default concurrency (that many requests in flight
and as many server slots, so llama.cpp batches their decoding). Kept questions, not requests, are
what the stage delivers: a fast request whose rewording fails the consistency check is waste.

    uv run python bench/generate.py                         # 4 chunks, 3 questions/fact, 1 vs 4, 1 server thread
    uv run python bench/generate.py --chunks 12 --concurrency 8 --server-threads 2

Same chunks, same prompts, same sampling (seeded) and the same generate.generate_pairs the stage
calls; each variant starts its own server and writes to a fresh resume cache (nothing is reused).
Interleaved rounds (sequential, concurrent, sequential, ...), best of each. Goal: >= 1.5x.
Chunks come from data/chunks.json, else the sample PDF is parsed first.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import common

from policytune import config, generate, io, llm, models

GOAL_SPEEDUP = 1.5


@dataclass
class GenerateBenchConfig(config.Base):
    chunks: int = field(default=4, metadata={"help": "chunks to generate from (the first N of data/chunks.json)"})
    questions_per_fact: int = field(default=3, metadata={"help": "questions kept per fact (the stage's default)"})
    rewordings_per_fact: int = field(default=1, metadata={"help": "teacher rewordings per fact (the stage's default)"})
    concurrency: int = field(default=llm.DEFAULT_PARALLEL, metadata={"help": "the concurrent variant's requests in flight and server slots"})
    server_threads: int = field(default=1, metadata={"help": "llama-server CPU threads (1: the other core is busy on a shared machine)"})
    rounds: int = field(default=2, metadata={"help": "interleaved rounds of (sequential, concurrent); best of each kept"})
    max_tokens: int = field(default=200, metadata={"help": "max tokens per answer (the stage's default)"})


def load_chunks(cfg: GenerateBenchConfig) -> list[dict]:
    path = cfg.data_path("chunks.json")
    if path.is_file():
        chunks = io.read_records(path, "chunks")
    else:
        from policytune import pdf

        print(f"{path} not found: parsing {common.SAMPLE_PDF.name} first", flush=True)
        tokenizer = models.load_tokenizer(models.resolve())
        chunks, _ = pdf.parse_documents([str(common.SAMPLE_PDF)], tokenizer=tokenizer, max_chunk_tokens=384)
    # Text chunks with some substance: what the teacher is mostly asked about.
    usable = [c for c in chunks if c.get("kind", "text") == "text" and len(c["text"]) > 300] or chunks
    return usable[:cfg.chunks]


def run_variant(chunks: list[dict], concurrency: int, cfg: GenerateBenchConfig) -> dict:
    """One server with `concurrency` slots, generate_pairs with that many requests in flight."""
    options = llm.LLMOptions(concurrency=concurrency, server_threads=cfg.server_threads, seed=0)
    with tempfile.TemporaryDirectory() as scratch, llm.connect(options) as endpoint:
        started = time.perf_counter()
        records, summary = generate.generate_pairs(endpoint, chunks, Path(scratch) / "cache.jsonl",
                                                   questions_per_fact=cfg.questions_per_fact,
                                                   rewordings_per_fact=cfg.rewordings_per_fact, max_tokens=cfg.max_tokens,
                                                   concurrency=concurrency, progress=False)
        seconds = time.perf_counter() - started
    teacher = sum(r.get("style") == "teacher" for r in records)
    failed = sum(f["reason"].startswith(("llm", "no usable", "another fact", "question", "duplicate"))
                 for f in summary.get("failed", []))
    return {"seconds": seconds, "pairs": len(records), "failures": summary.get("failures", 0),
            "requests": teacher + failed, "teacher_kept": teacher}


def main(cfg: GenerateBenchConfig) -> None:
    config.show(cfg)
    chunks = load_chunks(cfg)
    variants = {"sequential (1)": 1, f"concurrent ({cfg.concurrency})": cfg.concurrency}
    print(f"{len(chunks)} chunks, {cfg.questions_per_fact} questions/fact ({cfg.rewordings_per_fact} reworded); "
          f"server threads {cfg.server_threads}", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for round_no in range(cfg.rounds):
        for name, concurrency in variants.items():
            result = run_variant(chunks, concurrency, cfg)
            runs[name].append(result)
            print(f"  round {round_no + 1} {name}: {result['pairs']} pairs in {result['seconds']:.1f}s "
                  f"({result['failures']} failed requests)", flush=True)

    rows = []
    for name, results in runs.items():
        # Requests per second is the fair rate when a request fails validation in one run and not the
        # other; pairs/s (usable pairs) is what the stage delivers.
        rows.append({"variant": name, "requests": results[0]["requests"],
                     "kept questions/s": max(r["pairs"] / r["seconds"] for r in results),
                     "kept teacher questions/s": max(r["teacher_kept"] / r["seconds"] for r in results),
                     "requests/s": max(r["requests"] / r["seconds"] for r in results),
                     "best seconds": min(r["seconds"] for r in results),
                     "pairs (best run)": min(results, key=lambda r: r["seconds"])["pairs"]})
    print(common.table(rows))
    ratios = {"concurrent / sequential (requests/s)": rows[1]["requests/s"] / rows[0]["requests/s"]}
    if rows[0]["kept questions/s"] > 0:
        ratios["concurrent / sequential (kept questions/s)"] = rows[1]["kept questions/s"] / rows[0]["kept questions/s"]
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.2f}x", flush=True)
    print(common.goal(f"concurrent generation >= {GOAL_SPEEDUP}x sequential", ratios["concurrent / sequential (requests/s)"] >= GOAL_SPEEDUP))
    common.report("generate", {"config": config.as_dict(cfg), "chunk_ids": [c["id"] for c in chunks], "rows": rows,
                               "ratios": ratios, "runs": runs})


if __name__ == "__main__":
    config.run(main, GenerateBenchConfig)
