"""Stage 1: parse policy documents into context-aware chunks, then generate instruction pairs.

    uv run python syntheticdatageneration.py --pdf data/sample_policy.pdf              # both halves
    uv run python syntheticdatageneration.py --pdf policy.pdf --parse-only            # chunks only
    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_MODEL=llama3.1 \\
        uv run python syntheticdatageneration.py --pdf policy.pdf                     # another teacher

Outputs: data/chunks.json, then data/syntheticdata.json.
"""
from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path
from dataclasses import dataclass, field

from policytune import config, facts, generate, io, llm, models, pdf


@dataclass
class GenerationConfig(llm.LLMOptions):
    pdf: list[str] = field(default_factory=lambda: ["data/sample_policy.pdf"],
                           metadata={"help": "policy document(s): PDF, DOCX, HTML or Markdown; several: --pdf docs/*.pdf, the flag repeated, or comma-separated"})
    parse_only: bool = field(default=False, metadata={"help": "stop after writing chunks.json"})
    reuse_chunks: bool = field(default=False, metadata={"help": "generate from the existing chunks.json instead of parsing again (pipeline.py parses as its own stage)"})
    max_chunk_tokens: int = field(default=384, metadata={"help": "chunk size in base-model tokens (HybridChunker max_tokens)"})
    base_model: str = field(default=models.EMBEDDED, metadata={"help": "base model whose tokenizer sizes the chunks"})
    ocr: bool = field(default=False, metadata={"help": "OCR pages without a text layer (needs the 'ocr' extra: onnxruntime + rapidocr)"})
    artifacts_path: str = field(default="", metadata={"help": "Docling's real model folder (else DOCLING_ARTIFACTS_PATH); empty: rule-based layout"})
    # Measured on the sample (issue 15): 3 questions per fact keep every fact asked in several forms
    # within the time budget; the held-out split keeps one phrasing of a trained fact out.
    questions_per_fact: int = field(default=3, metadata={
        "help": "questions kept per fact of the inventory (different phrasings and slots; train.py holds one out "
                "for evaluation)"})
    # The embedded 135M teacher makes 0.45-0.74 requests/s on a 2-core CPU: one rewording per fact of
    # the sample costs 12-17 minutes, half the pipeline's budget, and 5 of 11 of its rewordings asked
    # something else in a hand review (BENCHMARKS.md). A real endpoint words them well and fast.
    rewordings_per_fact: int = field(default=-1, metadata={
        "help": "of those, how many the teacher rewords from the code's drafts; where the code has fewer drafts than "
                "--questions-per-fact, the teacher writes the rest (0: code-written questions only, no teacher calls; "
                "-1: 1 with a configured endpoint or --teacher-gguf, 0 with the embedded 135M teacher)"})
    reword_check: str = field(default="strict", metadata={
        "help": "how a teacher's rewording must point at its fact: strict (shares 2 words with it, BM25 1.5x any other "
                "fact of its section: a weak teacher's drift is dropped, and so are most questions in an employee's own "
                "words), loose (1 word, 1.05x: the code's drafts' rule), topic (only not about the prompt: the quality "
                "gate's judge decides; for a capable endpoint)", "choices": ["strict", "loose", "topic"]})
    unanswerable_ratio: float = field(default=0.3, metadata={
        "help": "share of questions the document does not answer (answer: the exact refusal); near misses that the "
                "whole document is silent on, so fewer may be found"})
    # A fact's own yes/no question is answered "Yes." (363 of 409 on the sample) and the model learned to say
    # "Yes." to any yes/no question, near misses included.
    contrast_figures: bool = field(default=True, metadata={
        "help": "ask a fact's yes/no question with a wrong figure where it has one, answered \"No.\" and the fact"})
    # On the sample a fact with a figure was asked yes/no only with a wrong one, so employees' yes/no questions that
    # name no figure ("Can I get paid time off for antenatal appointments?") were answered "No." 17 and 16 times in 32
    # (two seeds) where the policy says yes; with this, 8 and 8, but accuracy +0.03 and -0.04: within noise, off
    # (BENCHMARKS.md, forty-first session).
    figure_free: bool = field(default=False, metadata={
        "help": "also ask such a fact's yes/no question without its figure ('Do I get annual leave a year?'), answered "
                "\"Yes.\" and the fact, as its third question"})
    # The near misses say "I" and open "According to the policy, ..." far more often than the facts' questions (60% and
    # 64% against 19% and 8% on the sample), and the tuned model refused first-person questions more. Measured on the
    # sample (2 passes, paired; BENCHMARKS.md, forty-fourth session): the openings -0.07 accuracy (seed 42); the person
    # -0.06 / -0.17 / -0.08 at seed 42, +0.03 / -0.04 / +0.01 at seed 7, separability +0.03 and +0.02. Off.
    balanced_styles: str = field(default="off", metadata={
        "help": "person: the facts' questions in the first person where their grammar allows ('Do I receive ...?' for "
                "'Does every employee receive ...?'), then near misses about 'an employee' until both say 'I' as often; "
                "openings: the facts' questions in employees' openings as often as the near misses; both; off "
                "(policytune/balance.py)", "choices": ["off", "person", "openings", "both"]})
    detail_near_misses: bool = field(default=True, metadata={
        "help": "also ask for a detail (amount, approver, notice, ...) of something the policy names but leaves "
                "unspecified, where no fact naming it gives that detail (policytune/details.py)"})
    employee_words: bool = field(default=True, metadata={
        "help": "ask each fact once more in everyday words (generated_prompt.EMPLOYEE_WORDS) and the document's "
                "abbreviations: employees say 'a year' and 'my manager', not 'per calendar year' and 'the line manager'"})
    about_phrases: bool = field(default=True, metadata={
        "help": "give a fact the rules could not ask enough about questions on its own noun phrases ('What should I "
                "know about routine check-ups and hygiene visits?', policytune/keyphrases.py)"})
    # Measured in BENCHMARKS.md (thirty-seventh and thirty-eighth sessions), paired: PostHog at 4 passes, accuracy
    # +0.08 [+0.01, +0.15] and +0.06 over two seeds; the sample -0.09 and +0.01; 18F +0.03; Sourcegraph -0.01 with
    # false refusals +0.11 [+0.03, +0.19]. The gain is PostHog's alone. Off.
    recall_questions: bool = field(default=False, metadata={
        "help": "give a fact whose every question holds most of its answer's words ('Do we host a monthly book club "
                "called BookHog?') a question about one of its noun phrases, asked first ('What should I know about a "
                "monthly book club?'): answering it means recalling the fact, not copying the question"})
    # Sourcegraph's handbook: 66 FAQ entries over 145 of its 361 facts (BENCHMARKS.md, thirty-ninth session); the
    # sample, PostHog and 18F have none, and their pairs are the same with it on or off.
    faq_questions: bool = field(default=True, metadata={
        "help": "ask each FAQ entry's own question ('Q. Does Sourcegraph match my 401k?'), answered by the statements "
                "under it (policytune/faq.py), in up to --questions-per-fact openings"})
    near_miss_openings: bool = field(default=True, metadata={
        "help": "ask near misses again in employees' openings ('According to the policy, ...') while fewer than "
                "--unanswerable-ratio were found"})
    # Measured on the sample's gold set at 2.5 passes (BENCHMARKS.md, eighteenth session): no change on the questions
    # that open with the asker's situation (0.09 -> 0.12 of 69, within noise) nor overall; so off.
    situation_first: bool = field(default=False, metadata={
        "help": "say the condition of half the questions that end in one first, as employees open with their situation "
                "('I'm on probation. Am I covered?' for 'Am I covered, if I am on probation?')"})
    # Measured on three policies' gold sets at 2 passes (BENCHMARKS.md, twenty-fourth session): refusal recall +0.10
    # (sample) and +0.26 (18F), false refusals -0.13 (PostHog), separability up on all three; accuracy -0.02 to -0.06,
    # within noise each time. A second seed on 18F at 1 pass: recall -0.03, false refusals -0.05, accuracy -0.01.
    absent_benefits: bool = field(default=True, metadata={
        "help": "also ask about everyday benefits the policy never names at all (generated_prompt.ABSENT_BENEFITS: "
                "fostering, a company car, ...), answered with the refusal (policytune/absent.py)"})
    topic_near_misses: bool = field(default=True, metadata={
        "help": "ask each section the aspects of generated_prompt.UNANSWERABLE_TEMPLATES its policy is silent on ('Is "
                "parental leave different for union members?'); without, near misses are the details, providers and "
                "benefits the policy leaves out"})
    topic_near_misses_last: bool = field(default=True, metadata={
        "help": "ask those aspects only where the policy's own near misses (details it leaves out, providers it does "
                "not name, benefits it never names), in all their openings, fall short of --unanswerable-ratio"})
    near_miss_check: str = field(default="topic", metadata={
        "help": "drop a near miss when a fact alike holds its aspect's cue words: any such fact (document), or one not "
                "about another of the policy's topics (topic: 'study leave ... performance' says nothing of sick leave)",
        "choices": ["topic", "document"]})
    temperature: float = field(default=0.7, metadata={"help": "teacher sampling temperature (>0 so the slots of one chunk differ)"})
    max_tokens: int = field(default=200, metadata={"help": "max tokens per teacher reply; a reply cut here is retried, then skipped"})
    answers: str = field(default="auto", metadata={
        "help": "teacher: the teacher writes each answer (replaced by the policy sentence when ungrounded); "
                "evidence: the answer is the policy sentence, the teacher writes only the question; "
                "auto: evidence with the embedded 135M teacher, teacher with any other",
        "choices": ["auto", "teacher", "evidence"]})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.unanswerable_ratio <= 1.0:
            raise config.UserError(f"--unanswerable-ratio must be between 0 and 1, got {self.unanswerable_ratio}")
        if self.questions_per_fact < 1:
            raise config.UserError(f"--questions-per-fact must be at least 1, got {self.questions_per_fact}")
        if self.temperature < 0 or self.max_tokens < 1:
            raise config.UserError(f"--temperature must be 0 or more and --max-tokens at least 1, got "
                                   f"{self.temperature:g} and {self.max_tokens}")
        if self.rewordings_per_fact < -1:
            raise config.UserError(f"--rewordings-per-fact must be -1 (auto), 0 or more, got {self.rewordings_per_fact}")


def parse(cfg: GenerationConfig, chunks_path: Path) -> list[dict]:
    started = time.perf_counter()
    if not cfg.pdf:
        raise config.UserError("no document to parse: --pdf (or POLICYTUNE_PDF) names none")
    for path in cfg.pdf:
        pdf.check_input(path)  # fail fast on a missing, empty or mislabelled file, before loading anything
    tokenizer = models.load_tokenizer(models.resolve(cfg.base_model))
    chunks, stats = pdf.parse_documents(cfg.pdf, tokenizer=tokenizer, max_chunk_tokens=cfg.max_chunk_tokens,
                                        ocr=cfg.ocr, artifacts_path=cfg.artifacts_path or None)
    io.write_json_atomic(chunks_path, chunks)
    seconds = time.perf_counter() - started
    pages = stats["pages"]
    print(f"parsed {len(stats['documents'])} document(s), {pages} pages into {len(chunks)} chunks in {seconds:.1f}s "
          f"(Docling {stats['seconds']:.1f}s: {pages / max(stats['seconds'], 1e-9):.2f} pages/s, "
          f"{stats['seconds'] / max(pages, 1):.2f} s/page) -> {chunks_path}", flush=True)
    return chunks


def main(cfg: GenerationConfig) -> None:
    config.show(cfg)
    chunks_path = cfg.data_path("chunks.json")

    if cfg.reuse_chunks and chunks_path.exists():
        chunks = io.read_records(chunks_path, "chunks", facts.CHUNK_KEYS)
        print(f"reusing {len(chunks)} chunks from {chunks_path}", flush=True)
    else:
        chunks = parse(cfg, chunks_path)
    if cfg.parse_only:
        config.save(cfg, cfg.data_path("syntheticdatageneration_config.json"))
        return
    if not chunks:
        raise config.UserError(f"{chunks_path}: no chunks to generate from (parse the documents again?)")

    # The fact inventory: every statement of every document, the unit that questions cover. It is written with the
    # pairs made from it: a run that fails (an endpoint, a missing model name) leaves the last run's files together.
    fact_list, skipped = facts.inventory(chunks)
    left_out = ", ".join(f"{k} {v}" for k, v in Counter(s["reason"] for s in skipped).most_common())
    print(f"fact inventory: {len(fact_list)} facts in {len(facts.per_section(fact_list))} sections"
          + (f" ({len(skipped)} lines left out: {left_out})" if skipped else ""), flush=True)

    # Generation: the code plans and drafts every question; the teacher rewords; finished chunks land in a resume cache.
    output_path = cfg.data_path("syntheticdata.json")
    embedded_teacher = llm.embedded_teacher(cfg)
    teacher_answers = cfg.answers == "teacher" or (cfg.answers == "auto" and not embedded_teacher)
    rewordings = cfg.rewordings_per_fact if cfg.rewordings_per_fact >= 0 else (0 if embedded_teacher else 1)
    if cfg.rewordings_per_fact < 0:
        print(f"teacher rewordings per fact: {rewordings} "
              f"({'embedded 135M teacher: code-written questions only' if embedded_teacher else 'configured teacher'})",
              flush=True)
    # With no rewording planned the code writes every question: no teacher is started or called.
    teacher = llm.connect(cfg) if rewordings else contextlib.nullcontext(llm.offline(cfg))
    with teacher as endpoint:
        records, summary = generate.generate_pairs(
            endpoint, chunks, cfg.data_path("syntheticdata.cache.jsonl"), fact_list=fact_list,
            rewordings_per_fact=rewordings,
            unanswerable_ratio=cfg.unanswerable_ratio, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
            concurrency=cfg.concurrency, progress=cfg.progress, teacher_answers=teacher_answers,
            questions_per_fact=cfg.questions_per_fact, contrast_figures=cfg.contrast_figures,
            near_miss_check=cfg.near_miss_check, detail_near_misses=cfg.detail_near_misses,
            employee_words=cfg.employee_words, about_phrases=cfg.about_phrases,
            near_miss_openings=cfg.near_miss_openings, situation_first=cfg.situation_first,
            absent_benefits=cfg.absent_benefits, topic_near_misses=cfg.topic_near_misses,
            recall_questions=cfg.recall_questions, faq_questions=cfg.faq_questions,
            topic_near_misses_last=cfg.topic_near_misses_last, figure_free=cfg.figure_free,
            reword_check=cfg.reword_check, balanced_styles=cfg.balanced_styles)
    print(generate.format_summary(summary), flush=True)
    if not records:  # the pairs of an earlier run, and their summary, stay as they were
        reasons = ", ".join(f"{k}: {v}" for k, v in list(summary["failure_reasons"].items())[:3])
        raise config.UserError(f"no usable pairs ({summary['failures']} failures{': ' + reasons if reasons else ''}); "
                               f"nothing written to {output_path}")
    io.write_json_atomic(cfg.data_path("facts.json"), fact_list)
    io.write_json_atomic(output_path, records)
    io.write_json_atomic(cfg.data_path("syntheticdata_summary.json"), summary)
    config.save(cfg, cfg.data_path("syntheticdatageneration_config.json"))
    print(f"{len(records)} pairs -> {output_path}; facts -> {cfg.data_path('facts.json')}", flush=True)


if __name__ == "__main__":
    config.run(main, GenerationConfig)
