"""Stage 5: compare the base model and base + adapter on held-out questions, closed-book.

Both models see exactly the training chat format (no policy text in the prompt) and decode
greedily. One model sits in memory: "base" answers come with the LoRA adapter disabled, "tuned"
answers with it enabled. Besides answer scores it measures how far the adapter moved next-token
distributions (KL(tuned || base), top-1 agreement) and how much probability each model puts on
starting the refusal.

    uv run python evaluate.py                               # data/eval_split.json (+ sample/gold.jsonl on the sample)
    uv run python evaluate.py --gold gold.jsonl             # your own questions (JSON lines) instead
    uv run python evaluate.py --gold gold.jsonl --eval-file data/eval_split.json   # both
    uv run python evaluate.py --gold none                   # the held-out split only, even on the sample
    uv run python evaluate.py --adapter runs/a --limit 20 --batch-size 4 --threads 1

Gold lines: {"id": "...", "question": "...", "answer": "...", "answerable": true,
"keywords": ["25|twenty-five", "days"], "section": "4.2", "type": "numeric"}; only id and question
are required. With the default `--gold auto`, the hand-written sample/gold.jsonl is scored beside
the held-out split when <data-dir>/chunks.json holds only the bundled sample policy. Each question
keeps its split ("held_out" or "gold"), and metrics, 95% bootstrap intervals and the per-section
table are reported per split, never pooled.
Writes reports/eval.json, reports/eval.md and a self-contained reports/eval.html.
"""
from __future__ import annotations

import contextlib
import json
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policytune import answers as answers_lib
from policytune import chat, config, io, metrics, models, report

# The bundled sample policy and its hand-written gold questions: `--gold auto` uses them together only.
SAMPLE_DOC = "sample_policy.pdf"            # chunks.json names a document by its file name
SAMPLE_COMPANY = "Northwind Analytics"      # the sample's fictional employer: a renamed own PDF is not the sample
SAMPLE_GOLD = Path(__file__).resolve().parent / "sample" / "gold.jsonl"
SPLITS = ("held_out", "gold")
# The divergence holds two models' logits over the whole vocabulary at every position of a batch (about 1.5 GB at 32
# rows of SmolLM2's 49k; Llama-3.2-1B's vocabulary is 2.6 times larger): larger generation batches do not raise it.
DIVERGENCE_BATCH = 32


@dataclass
class EvalConfig(config.Base):
    adapter: str = field(default="", metadata={"help": "PEFT adapter folder (default: --checkpoint-dir)"})
    base_model: str = field(default="", metadata={
        "help": "base model ('embedded', folder, .gguf, hub id); default: the adapter's base_model_name_or_path"})
    eval_file: str = field(default="", metadata={
        "help": "held-out split from train.py (default: <data-dir>/eval_split.json when --gold is not given)"})
    gold: str = field(default="auto", metadata={
        "help": "gold questions, JSON lines with id, question and optional answer, answerable, keywords, type, "
                "section: a FILE (scored instead of the held-out split unless --eval-file is given), 'auto' "
                "(sample/gold.jsonl beside the held-out split when <data-dir>/chunks.json is only the bundled "
                "sample) or 'none'"})
    reports_dir: str = field(default="reports", metadata={"help": "where eval.json, eval.md and eval.html go"})
    batch_size: int = field(default=128, metadata={"help": "prompts per generation batch (rows leave as their answers end, so a "
                                                          "larger batch has fewer decode steps: BENCHMARKS.md); the "
                                                          f"divergence scores at most {DIVERGENCE_BATCH} at a time"})
    divergence_max: int = field(default=96, metadata={
        "help": "questions the next-token divergence is measured on, spread evenly over all of them (0: all, "
                "-1: none); it costs two forward passes per question"})
    max_new_tokens: int = field(default=48, metadata={"help": "answer length cap; policy answers are one or two sentences"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    limit: int = field(default=0, metadata={"help": "evaluate only N questions, taken from each split and kind "
                                                    "(answerable, near miss) in proportion (0: all)"})
    f1_threshold: float = field(default=metrics.DEFAULT_F1_THRESHOLD, metadata={
        "help": "token F1 at which an answer without keywords counts as correct"})
    dtype: str = field(default="auto", metadata={"help": "model dtype (auto: bfloat16 on a GPU that has it, else float32)",
                                                 "choices": ["auto", "float32", "bfloat16", "float16"]})
    bootstrap_resamples: int = field(default=metrics.BOOTSTRAP_RESAMPLES, metadata={
        "help": "resamples for the 95% percentile-bootstrap intervals (fixed seed)"})
    resume: bool = field(default=True, metadata={
        "help": "reuse answers logged in <reports-dir>/eval.answers.jsonl by an interrupted or earlier run "
                "with the same base model, adapter weights and --max-new-tokens"})

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.limit < 0 or self.threads < 0:
            raise config.UserError("--batch-size and --max-new-tokens must be >= 1; --limit and --threads >= 0")
        if self.bootstrap_resamples < 100:
            raise config.UserError("--bootstrap-resamples must be >= 100 (a 95% interval needs its 2.5% tails)")
        if not 0.0 <= self.f1_threshold <= 1.0:
            raise config.UserError("--f1-threshold must be between 0 and 1")


# ---------------------------------------------------------------- inputs

def is_sample_only(chunks_path: Path) -> bool:
    """Whether chunks.json holds chunks of the bundled sample policy and of no other document."""
    if not chunks_path.is_file():
        return False
    try:
        chunks = io.read_records(chunks_path, "chunks")
    except config.UserError:
        return False  # the stage that needs chunks.json reports it; here it only means "not known to be the sample"
    return (bool(chunks) and all(c.get("doc") == SAMPLE_DOC for c in chunks)
            and any(SAMPLE_COMPANY in str(c.get("text", "")) for c in chunks))


def resolve_gold(setting: str, chunks_path: Path, sample_gold: Path) -> tuple[str, str]:
    """The gold file --gold means ("" for none) and why, for the log."""
    if setting.strip().lower() in ("", "none"):
        return "", "disabled (--gold none)"
    if setting.strip().lower() != "auto":  # "Auto" was taken for a file name
        return setting, "given with --gold"
    if not chunks_path.is_file():
        return "", f"no {chunks_path} to tell whether the input is the bundled sample; pass --gold FILE to score one"
    if not is_sample_only(chunks_path):
        return "", f"{chunks_path} is not only the bundled sample policy; pass --gold FILE for your documents"
    if not sample_gold.is_file():
        return "", f"the input is the bundled sample but {sample_gold} does not exist"
    return str(sample_gold), f"{chunks_path} holds only the bundled sample policy"


def section_from_headings(headings: Any) -> str | None:
    """The numbered section ("4.2") of a chunk's innermost numbered heading ("4.2 Notice Requirements")."""
    for heading in reversed(headings if isinstance(headings, list) else []):
        match = re.match(r"\s*(\d+(?:\.\d+)*)\.?\s", str(heading))
        if match:
            return match.group(1)
    return None


def load_eval_split(path: Path) -> list[dict[str, Any]]:
    """Held-out instruction records from train.py as evaluation items."""
    items = []
    if path.suffix == ".jsonl":  # "not valid JSON (Extra data at line 2)" said nothing of what it is
        raise config.UserError(f"{path}: JSON lines, as a gold set is; an eval split is train.py's JSON list: pass "
                               "the file as --gold")
    for index, record in enumerate(io.read_records(path, "eval split")):
        missing = [k for k in ("id", "instruction", "output", "answerable") if k not in record]
        if missing:
            raise config.UserError(f"{path}: record {index} lacks {', '.join(missing)}")
        if not isinstance(record["answerable"], bool) or not str(record["instruction"]).strip():
            raise config.UserError(f"{path}: record {index}: 'answerable' must be true/false and 'instruction' non-empty")
        items.append({
            "id": str(record["id"]), "question": record["instruction"], "answer": record["output"],
            "answerable": record["answerable"], "keywords": record.get("keywords") or None,
            "type": record.get("type") or ("answerable" if record["answerable"] else "unanswerable"),
            "split": "held_out",
            # The chunk's headings, or the fact's heading path ("5. Parental Leave > 5.3 Paternity Leave").
            "section": section_from_headings(record.get("headings") or str(record.get("section") or "").split(" > ")),
            "source": {"file": str(path), **{k: record[k] for k in ("doc", "pages", "chunk_id") if k in record}},
        })
    return items


GOLD_KEYS = {"id", "question", "answer", "answerable", "keywords", "section", "type", "note"}


def load_gold(path: Path) -> list[dict[str, Any]]:
    """Gold questions (JSON lines); a malformed line is an error naming its line number."""
    if not path.is_file():
        raise config.UserError(f"{path}: gold file not found")
    items = []
    unknown: dict[str, int] = {}
    # a file saved with a byte-order mark (Windows editors) is still UTF-8 JSON lines
    for number, line in enumerate(io.read_text(path, "gold").removeprefix("\ufeff").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise config.UserError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise config.UserError(f"{where}: expected a JSON object")
        for key in ("id", "question"):
            value = record.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise config.UserError(f"{where}: '{key}' is missing or empty")
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise config.UserError(f"{where}: '{key}' must be a string{' or a whole number' if key == 'id' else ''}, "
                                       f"got {value!r}")
        for key in set(record) - GOLD_KEYS:
            unknown.setdefault(key, number)
        answer, answerable, keywords = record.get("answer"), record.get("answerable"), record.get("keywords")
        if answer is not None and not isinstance(answer, str):
            raise config.UserError(f"{where}: 'answer' must be a string")
        if answerable is not None and not isinstance(answerable, bool):
            raise config.UserError(f"{where}: 'answerable' must be true or false")
        if keywords is not None and (not isinstance(keywords, list) or not all(isinstance(k, str) and k.strip() for k in keywords)):
            raise config.UserError(f"{where}: 'keywords' must be a list of non-empty strings")
        section = record.get("section")
        # A JSON number would turn "4.10" into 4.1: sections are strings (or whole numbers).
        if section is not None and (isinstance(section, bool) or not isinstance(section, (str, int))):
            raise config.UserError(f"{where}: 'section' must be a string such as \"4.2\"")
        if answerable is None and (answer or keywords):
            # The refusal as the expected answer means "the policy is silent on this".
            answerable = not (answer and metrics.is_exact_refusal(answer))
        kind = record.get("type") or {True: "answerable", False: "unanswerable", None: "unlabelled"}[answerable]
        items.append({"id": str(record["id"]), "question": str(record["question"]), "answer": answer,
                      "answerable": answerable, "keywords": keywords or None, "type": str(kind),
                      "split": "gold", "section": str(section) if section is not None else None,
                      "source": {"file": str(path), "line": number}})
    for key, number in sorted(unknown.items(), key=lambda kv: kv[1]):
        # "answerabel" left the label to be guessed from the answer, "keyword" the scoring to F1
        print(f"warning: {path}: line {number}: key {key!r} is not read (the keys are {', '.join(sorted(GOLD_KEYS))})",
              file=sys.stderr, flush=True)
    return items


def default_eval_file(cfg: EvalConfig) -> str:
    """--eval-file, else the held-out split unless an explicit gold file replaces it."""
    explicit_gold = cfg.gold.strip().lower() not in ("", "auto", "none")
    return cfg.eval_file or ("" if explicit_gold else str(cfg.data_path("eval_split.json")))


def load_items(cfg: EvalConfig, gold: str) -> list[dict[str, Any]]:
    """The eval split and/or the gold file, checked for duplicate ids, cut to --limit."""
    items: list[dict[str, Any]] = []
    eval_file = default_eval_file(cfg)
    if eval_file:
        items += load_eval_split(Path(eval_file))
    if gold:
        items += load_gold(Path(gold))
    seen_at: dict[str, dict] = {}
    for item in items:
        if item["id"] in seen_at:
            where = [f"{s['file']}" + (f" line {s['line']}" if "line" in s else "") for s in (seen_at[item["id"]]["source"],
                                                                                         item["source"])]
            raise config.UserError(f"duplicate question id {item['id']!r} ({where[0]} and {where[1]})")
        seen_at[item["id"]] = item
    if cfg.limit:
        items = limited(items, cfg.limit)
    if not items:
        raise config.UserError(f"no questions to evaluate in {' and '.join(filter(None, [eval_file, gold]))}")
    return items


def limited(items: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """`limit` questions taken from each split and kind (answerable, near miss, unlabelled) in proportion, at least one
    of each where the limit allows, in their order: the first N were all answerable (the split lists them first), so
    a quick `--limit 20` measured no refusal at all."""
    if limit >= len(items):
        return items
    groups: dict[tuple, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault((item["split"], item["answerable"]), []).append(index)
    shares = {key: limit * len(members) / len(items) for key, members in groups.items()}
    counts = {key: min(len(groups[key]), max(1, int(share))) for key, share in shares.items()}
    # the remaining places to the groups whose share was rounded down most
    for key in sorted(groups, key=lambda k: shares[k] - int(shares[k]), reverse=True):
        if sum(counts.values()) >= limit:
            break
        counts[key] = min(len(groups[key]), counts[key] + 1)
    while sum(counts.values()) > limit:  # more groups than places: the largest give theirs back
        largest = max(counts, key=counts.get)
        counts[largest] -= 1
    chosen = sorted(index for key, members in groups.items() for index in members[:counts[key]])
    return [items[index] for index in chosen]


def tuned_weights(folder: Path) -> Path:
    """The file that holds what training changed: the adapter, or the whole model."""
    names = ("model.safetensors",) if models.is_full_model(folder) else ("adapter_model.safetensors", "adapter_model.bin")
    return next(folder / name for name in names if (folder / name).is_file())


def find_adapter(cfg: EvalConfig) -> tuple[Path, models.BaseModel]:
    """The adapter (or fully fine-tuned model) folder and the base model it belongs to (checked before anything
    loads)."""
    adapter = Path(cfg.adapter or cfg.checkpoint_dir)
    if models.is_full_model(adapter):
        base_spec = cfg.base_model or models.trained_base_name(adapter)
        if not base_spec:
            raise config.UserError(f"{adapter}: a full model without training_config.json; pass --base-model")
        return adapter, models.resolve(base_spec)
    adapter_config = adapter / "adapter_config.json"
    if not adapter_config.is_file():
        raise config.UserError(f"{adapter}: no adapter_config.json (train an adapter with train.py, or pass --adapter)")
    if not any((adapter / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise config.UserError(f"{adapter}: adapter_config.json but no adapter_model.safetensors")
    saved = io.read_json(adapter_config, "adapter config")
    base_spec = cfg.base_model or (saved.get("base_model_name_or_path") if isinstance(saved, dict) else "") or ""
    if not base_spec:
        raise config.UserError(f"{adapter_config}: no base_model_name_or_path; pass --base-model")
    return adapter, models.resolve(base_spec)


def split_matches(cfg: EvalConfig, adapter: Path) -> bool | None:
    """Whether the held-out split is the one this adapter was trained beside (None: not known). A training run
    stopped after writing its split, or another run's split, holds questions the published adapter trained on, and
    held-out figures measured on them are training figures: a warning, and `split_matches_adapter` in the report (an
    error would refuse a split the user extended by hand)."""
    split = Path(default_eval_file(cfg)) if default_eval_file(cfg) else None
    saved = adapter / "training_config.json"
    if split is None or not split.is_file() or not saved.is_file():
        return None
    expected = io.read_json(saved, "training config")
    expected = expected.get("eval_split_sha256") if isinstance(expected, dict) else None
    if not expected:
        return None
    if io.file_sha256(split) == expected:
        return True
    print(f"warning: {split} is not the held-out split {adapter} was trained beside (another training run wrote it, "
          "or it was edited): its held-out figures may count questions the adapter trained on", file=sys.stderr,
          flush=True)
    return False


# ---------------------------------------------------------------- models

class FullModel:
    """A fully fine-tuned model beside its base, answering to the adapter calls evaluation makes: with
    `disable_adapter()` the base model answers; merging is nothing to do."""

    def __init__(self, base, tuned) -> None:
        self.base, self.tuned, self.current = base, tuned, tuned

    @property
    def device(self):
        return self.current.device

    def __call__(self, *args, **kwargs):
        return self.current(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.current.generate(*args, **kwargs)

    def get_base_model(self):
        """The transformers model answering now (PEFT's name for it: answers reads its forward's arguments)."""
        return self.current

    @contextlib.contextmanager
    def disable_adapter(self):
        previous, self.current = self.current, self.base
        try:
            yield
        finally:
            self.current = previous

    def merge_adapter(self) -> None:
        pass

    def unmerge_adapter(self) -> None:
        pass


def load_tuned(base: models.BaseModel, adapter: Path, dtype: str):
    """The base model with the adapter attached (disable it to get the base model back), or a FullModel."""
    import torch
    from peft import PeftModel

    from peft.utils import get_peft_model_state_dict

    model = models.load_model(base, dtype=dtype)
    if models.is_full_model(adapter):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        tuned = models.load_full_model(adapter, dtype=dtype)
        return FullModel(model.to(device).eval(), tuned.to(device).eval())
    with warnings.catch_warnings():
        # PEFT looks up base_model_name_or_path ("embedded") as a hub id to check the vocabulary.
        warnings.filterwarnings("ignore", message="Could not find a config file")
        try:
            model = PeftModel.from_pretrained(model, str(adapter))
        except Exception as exc:  # shape mismatches, corrupt safetensors: the adapter does not fit this base
            raise config.UserError(f"{adapter}: cannot attach the adapter to {base.name} "
                                   f"({config.first_line(exc, 300)})") from None
        # PEFT silently skips adapter tensors whose layer the base lacks (e.g. fewer layers): an adapter
        # that is only partly applied would make "tuned" a different model than the one trained.
        not_applied = sorted(set(adapter_tensor_names(adapter)) - set(get_peft_model_state_dict(model)))
    if not_applied:
        raise config.UserError(f"{adapter}: {len(not_applied)} adapter tensors match no layer of {base.name} "
                               f"(trained on another base model?), e.g. {not_applied[0]}")
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model


def adapter_tensor_names(adapter: Path) -> list[str]:
    """Names of the tensors saved in a PEFT adapter folder."""
    safetensors_file = adapter / "adapter_model.safetensors"
    if safetensors_file.is_file():
        from safetensors import safe_open

        with safe_open(str(safetensors_file), "pt") as handle:
            return list(handle.keys())
    import torch

    return list(torch.load(adapter / "adapter_model.bin", map_location="cpu", weights_only=True))


def spread(total: int, most: int) -> list[int]:
    """Up to `most` indices spread evenly over range(total) (all of them when most is 0 or enough, none below 0)."""
    if most < 0:
        return []
    if most == 0 or total <= most:
        return list(range(total))
    return sorted({round(k * (total - 1) / (most - 1)) for k in range(most)}) if most > 1 else [0]


def divergence(model, tokenizer, questions: list[str], targets: list[str], batch_size: int) -> list[dict[str, Any]]:
    """Teacher-forced on each target answer: KL(tuned || base), top-1 agreement, P(refusal starts).

    As in the answers, each model reads the system turn every prompt shares from a cache computed once and the
    tuned one runs with its adapter merged; the head scores only the positions that predict an answer token."""
    import torch
    from tqdm import tqdm

    refusal_first = tokenizer(chat.REFUSAL, add_special_tokens=False)["input_ids"][0]
    prompt_ids = [tokenizer(chat.format_prompt(q), add_special_tokens=False)["input_ids"] for q in questions]
    # The answer is tokenised on its own, as generation sees it after the prompt.
    target_ids = [tokenizer(chat.format_completion(t), add_special_tokens=False)["input_ids"] for t in targets]
    head = prompt_ids[0][:answers_lib.shared_prefix_length(prompt_ids)]
    shared = len(head)
    with merged(model):
        tuned_prefix = answers_lib.prefix_cache(model, head)
    with model.disable_adapter():
        base_prefix = answers_lib.prefix_cache(model, head)
    results = []
    for start in tqdm(range(0, len(questions), batch_size), desc="divergence", unit="batch"):
        prompts = [p[shared:] for p in prompt_ids[start:start + batch_size]]
        answers = target_ids[start:start + batch_size]
        rows = [p + t for p, t in zip(prompts, answers)]
        width = max(map(len, rows))
        # Right padding keeps every real token at its natural position, after the cached system turn.
        input_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows], device=model.device)
        attention = torch.tensor([[1] * (shared + len(r)) + [0] * (width - len(r)) for r in rows], device=model.device)
        # Position i predicts token i + 1: a row's answer tokens are predicted from len(prompt) - 1 on.
        scored = max(map(len, answers))
        positions = torch.tensor([[min(len(p) - 1 + k, width - 1) for k in range(scored)] for p in prompts],
                                 device=model.device)
        with torch.no_grad():
            with merged(model):
                tuned_logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=positions,
                                     **answers_lib.repeated(tuned_prefix, len(rows))).logits
            with model.disable_adapter():
                base_logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=positions,
                                    **answers_lib.repeated(base_prefix, len(rows))).logits
        for row, target in enumerate(answers):
            span = slice(0, len(target))
            kl, agree = metrics.next_token_divergence(tuned_logits[row, span], base_logits[row, span])
            results.append({
                "kl": round(sum(kl) / len(kl), 6), "top1_agreement": round(sum(agree) / len(agree), 4),
                "positions": len(kl),
                "refusal_first_token_prob": {
                    "base": round(float(torch.softmax(base_logits[row, 0].float(), -1)[refusal_first]), 6),
                    "tuned": round(float(torch.softmax(tuned_logits[row, 0].float(), -1)[refusal_first]), 6)},
            })
    return results


# ---------------------------------------------------------------- stage

@contextlib.contextmanager
def merged(model):
    """The adapter folded into the base weights while the tuned model runs (about 1.2-1.4x faster on a CPU
    than running the LoRA matmuls at every step), unfolded afterwards for the base model's passes."""
    model.merge_adapter()
    try:
        yield model
    finally:
        model.unmerge_adapter()


def answer_questions(model, tokenizer, questions: list[str], cfg: EvalConfig, base: models.BaseModel,
                     adapter: Path, log_path: Path) -> dict[str, list[str]]:
    """Base answers (adapter disabled) and tuned answers, logged per batch so a rerun resumes."""
    weights = tuned_weights(adapter)
    # A logged answer is reused only when everything that determines it is unchanged.
    setting = (base.hf_path, cfg.dtype, cfg.max_new_tokens, chat.SYSTEM_PROMPT)
    run_keys = {"base": io.content_hash(*setting), "tuned": io.content_hash(*setting, io.file_sha256(weights))}
    if not cfg.resume:
        log_path.unlink(missing_ok=True)
    answers = {}
    with io.JsonlLog(log_path) as log:
        logged = log.records()
        for name in ("base", "tuned"):
            done = {r["question"]: r["answer"] for r in logged if r.get("run") == run_keys[name]}
            reused = len(set(questions) & set(done))  # the log may hold answers to questions not asked this time
            if reused:
                print(f"resuming: {reused} of {len(questions)} {name} answers from {log_path}", flush=True)

            def record(chunk: list[str], new: list[str], name: str = name) -> None:
                for question, answer in zip(chunk, new):
                    log.append({"run": run_keys[name], "model": name, "question": question, "answer": answer})

            with model.disable_adapter() if name == "base" else merged(model):
                answers[name] = answers_lib.greedy(model, tokenizer, questions, cfg.batch_size, cfg.max_new_tokens,
                                         f"{name} answers", done, record)
    return answers


def score(items: list[dict[str, Any]], answers: dict[str, list[str]], shifts: list[dict[str, Any] | None],
          f1_threshold: float) -> list[dict[str, Any]]:
    """One eval.json item per question: both answers, both judgements, the divergence, provenance."""
    results = []
    for index, item in enumerate(items):
        scores = {name: metrics.judge(answers[name][index], item["answerable"], item["answer"], item["keywords"], f1_threshold)
                  for name in ("base", "tuned")}
        results.append({
            "id": item["id"], "question": item["question"], "type": item["type"],
            "split": item["split"], "section": item["section"],
            "answerable": item["answerable"], "expected_answer": item["answer"], "keywords": item["keywords"],
            "base_answer": answers["base"][index], "tuned_answer": answers["tuned"][index],
            "base_correct": scores["base"]["correct"], "tuned_correct": scores["tuned"]["correct"],
            "regression": scores["base"]["correct"] is True and scores["tuned"]["correct"] is False,
            "base_scores": scores["base"], "tuned_scores": scores["tuned"],
            "divergence": shifts[index] and {**shifts[index],
                                             "teacher_forced_on": "expected_answer" if item["answer"] else "tuned_answer"},
            "source": item["source"],
        })
    return results


def model_rows(results: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """One model's judgements in the row shape policytune.metrics takes."""
    return [{"answerable": r["answerable"], "type": r["type"], "section": r.get("section"), "scores": r[f"{name}_scores"]}
            for r in results]


def summarise(results: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One model's metrics, overall, per question type and per policy section (the same code for base and tuned)."""
    rows = model_rows(results, name)
    return {**metrics.summarise(rows), "per_type": metrics.summarise_by_type(rows),
            "per_section": metrics.summarise_by_section(rows)}


def summarise_splits(results: list[dict[str, Any]], resamples: int) -> dict[str, dict[str, Any]]:
    """Per split present (held-out, gold): both models' metrics and bootstrap intervals, never pooled."""
    out = {}
    for split in SPLITS:
        group = [r for r in results if r["split"] == split]
        if group:
            out[split] = {"n": len(group), "metrics": {name: summarise(group, name) for name in ("base", "tuned")},
                          "intervals": metrics.confidence_intervals(model_rows(group, "base"), model_rows(group, "tuned"),
                                                                    resamples=resamples)}
    return out


def main(cfg: EvalConfig) -> None:
    config.show(cfg)
    gold, why = resolve_gold(cfg.gold, cfg.data_path("chunks.json"), SAMPLE_GOLD)
    print(f"gold questions: {gold or 'none'} ({why})", flush=True)
    items = load_items(cfg, gold)
    adapter, base = find_adapter(cfg)
    split_matches_adapter = split_matches(cfg, adapter)
    print(f"evaluating {len(items)} questions: {base.name} vs {base.name} + {adapter}", flush=True)

    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tokenizer = models.load_tokenizer(base)
    model = load_tuned(base, adapter, cfg.dtype)

    questions = [item["question"] for item in items]
    reports = Path(cfg.reports_dir)
    answers = answer_questions(model, tokenizer, questions, cfg, base, adapter, reports / "eval.answers.jsonl")
    # Teacher forcing needs a reference: the expected answer, else what the tuned model said.
    targets = [item["answer"] or tuned for item, tuned in zip(items, answers["tuned"])]
    picked = spread(len(items), cfg.divergence_max)
    measured = divergence(model, tokenizer, [questions[i] for i in picked], [targets[i] for i in picked],
                          min(cfg.batch_size, DIVERGENCE_BATCH)) if picked else []
    shifts: list[dict[str, Any] | None] = [None] * len(items)
    for index, shift in zip(picked, measured):
        shifts[index] = shift

    results = score(items, answers, shifts, cfg.f1_threshold)
    splits = summarise_splits(results, cfg.bootstrap_resamples)
    # `metrics` stays one split's (held-out when present), named in run.metrics_split, for readers
    # of the earlier format such as pipeline.py's headline; `splits` has every split.
    primary = next(iter(splits))
    evaluation = {
        "metrics": splits[primary]["metrics"],
        "splits": splits,
        "divergence": summarise_divergence(results),
        "run": {"base_model": base.name, "base_path": base.hf_path, "adapter": str(adapter),
                "eval_file": default_eval_file(cfg), "split_matches_adapter": split_matches_adapter,
                "gold": gold, "gold_setting": cfg.gold,
                "n_items": len(results), "metrics_split": primary, "splits": {s: v["n"] for s, v in splits.items()},
                "max_new_tokens": cfg.max_new_tokens, "decoding": "greedy",
                "prompt": "closed-book, chat.format_prompt(question)", "f1_threshold": cfg.f1_threshold,
                "bootstrap": {"method": "percentile, paired for tuned - base", "resamples": cfg.bootstrap_resamples,
                              "seed": metrics.BOOTSTRAP_SEED, "level": metrics.BOOTSTRAP_LEVEL}},
        "items": results,
    }

    io.write_json_atomic(reports / "eval.json", evaluation)
    io.write_text_atomic(reports / "eval.md", report.markdown(evaluation))
    io.write_text_atomic(reports / "eval.html", report.html(evaluation))
    config.save(cfg, reports / "eval_config.json")
    print(f"wrote {reports / 'eval.json'}, {reports / 'eval.md'}, {reports / 'eval.html'}", flush=True)
    print(report.headline(evaluation), flush=True)


def summarise_divergence(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean KL and top-1 agreement over items, and mean refusal-start probability by answerability."""
    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 6) if values else None

    measured = [r for r in results if r["divergence"]]
    shifts = [r["divergence"] for r in measured]
    refusal_prob = {name: {group: mean(metrics.refusal_start_probs(measured, name, flag))
                           for group, flag in (("answerable", True), ("unanswerable", False))}
                    for name in ("base", "tuned")}
    return {"items": len(measured),
            "mean_kl_tuned_base": mean([s["kl"] for s in shifts]),
            "max_kl_tuned_base": max((s["kl"] for s in shifts), default=None),
            "mean_top1_agreement": mean([s["top1_agreement"] for s in shifts]),
            "refusal_first_token_prob": refusal_prob,
            # whether the models tell near misses from answerable questions at all, wherever their threshold lies
            "refusal_separability": metrics.refusal_separability(measured),
            "positions": sum(s["positions"] for s in shifts)}


if __name__ == "__main__":
    config.run(main, EvalConfig)
