"""Stage 1: parse policy documents into context-aware chunks, then generate instruction pairs.

    uv run python syntheticdatageneration.py --pdf data/sample_policy.pdf              # both halves
    uv run python syntheticdatageneration.py --pdf policy.pdf --parse-only            # chunks only
    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_MODEL=llama3.1 \\
        uv run python syntheticdatageneration.py --pdf policy.pdf                     # another teacher

Outputs: data/chunks.json, then data/syntheticdata.json.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from policytune import config, io, llm, models, pdf


@dataclass
class GenerationConfig(llm.LLMOptions):
    pdf: list[str] = field(default_factory=lambda: ["data/sample_policy.pdf"],
                           metadata={"help": "policy document(s): PDF, DOCX, HTML or Markdown; repeat the flag for several"})
    parse_only: bool = field(default=False, metadata={"help": "stop after writing chunks.json"})
    max_chunk_tokens: int = field(default=384, metadata={"help": "chunk size in base-model tokens (HybridChunker max_tokens)"})
    base_model: str = field(default=models.EMBEDDED, metadata={"help": "base model whose tokenizer sizes the chunks"})
    ocr: bool = field(default=False, metadata={"help": "OCR pages without a text layer (needs the 'ocr' extra: onnxruntime + rapidocr)"})
    artifacts_path: str = field(default="", metadata={"help": "Docling's real model folder (else DOCLING_ARTIFACTS_PATH); empty: rule-based layout"})


def main(cfg: GenerationConfig) -> None:
    config.show(cfg)
    chunks_path = cfg.data_path("chunks.json")

    started = time.perf_counter()
    tokenizer = models.load_tokenizer(models.resolve(cfg.base_model))
    chunks, stats = pdf.parse_documents(cfg.pdf, tokenizer=tokenizer, max_chunk_tokens=cfg.max_chunk_tokens,
                                        ocr=cfg.ocr, artifacts_path=cfg.artifacts_path or None)
    io.write_json_atomic(chunks_path, chunks)
    config.save(cfg, cfg.data_path("syntheticdatageneration_config.json"))
    seconds = time.perf_counter() - started
    pages = stats["pages"]
    print(f"parsed {len(cfg.pdf)} document(s), {pages} pages into {len(chunks)} chunks in {seconds:.1f}s "
          f"({pages / max(seconds, 1e-9):.2f} pages/s) -> {chunks_path}", flush=True)
    if cfg.parse_only:
        return

    raise config.UserError("generation is not implemented yet (issue 4); use --parse-only")


if __name__ == "__main__":
    config.run(main, GenerationConfig)
