"""Stage 4: LoRA (or QLoRA, or full) supervised fine-tuning on the kept instruction pairs.

    uv run python train.py                                     # embedded SmolLM2-135M, CPU, defaults
    uv run python train.py --epochs 6 --learning-rate 5e-4     # longer / different schedule
    uv run python train.py --resume                            # continue after a kill
    uv run python train.py --method full                       # every weight, saved as model.safetensors
    uv run python train.py --base-model meta-llama/Llama-3.2-1B --quantization 4bit   # QLoRA on a GPU
    uv run torchrun --nproc_per_node 2 train.py                # several processes (CPU: gloo)
    uv run accelerate launch --num_processes 2 train.py        # several GPUs

Reads data/instructionquality.json; writes, once trained, data/train_split.json and data/eval_split.json (the
held-out split evaluate.py scores; its hash goes into training_config.json), and checkpoints/: adapter_model.safetensors,
adapter_config.json, tokenizer files, training_config.json and, last, metrics.json (a run that
has metrics.json finished). Trainer checkpoints for --resume live in checkpoints/trainer/.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policytune import augment, chat, config, cpu, factkey, facts, heldout, io, models, training

QUANTIZATIONS = ["auto", "4bit", "8bit", "none"]


@dataclass
class TrainConfig(config.Base):
    base_model: str = field(default=models.EMBEDDED, metadata={
        "help": "'embedded' (SmolLM2-135M-Instruct shipped in a package), a local HF folder, a .gguf or a hub id "
                "such as meta-llama/Llama-3.2-1B"})
    input: str = field(default="", metadata={"help": "kept instruction records (default: <data-dir>/instructionquality.json)"})
    facts: str = field(default="", metadata={"help": "fact inventory for knowledge augmentation (default: <data-dir>/facts.json)"})
    section_restatements: int = field(default=2, metadata={
        "help": "times each section's statements are trained as the answer to 'What does the policy say about "
                "<heading path>?' (0: none); mixed into the same run as the Q/A pairs"})
    # Measured on the sample's gold set (BENCHMARKS.md, ninth session): no difference from identical repeats.
    permute_restatements: bool = field(default=False, metadata={
        "help": "each section restatement after the first lists its statements in another order (off: identical "
                "repeats)"})
    fact_statements: int = field(default=0, metadata={
        "help": "times each fact is trained as the completion of its topic and opening words (0: none)"})
    eval_fraction: float = field(default=0.15, metadata={
        "help": "share of records held out for evaluation, per answerable/unanswerable stratum"})
    # Every held-out record costs an eval-loss pass at every evaluation, and is a phrasing training does not see.
    eval_max_records: int = field(default=80, metadata={"help": "cap on the held-out records (0: no cap)"})
    # The user's design deploys a LoRA adapter on the base GGUF. Full fine-tuning is measured against it
    # (Biderman et al. 2024: LoRA learns new knowledge less); at 135M parameters it trains as fast on a CPU.
    method: str = field(default="lora", metadata={
        "help": "lora: a LoRA adapter (adapter_model.safetensors, loaded on the base by the Modelfile); full: every "
                "weight trained, saved as a whole model (model.safetensors, deployed as its own GGUF)",
        "choices": ["lora", "full"]})
    # LoRA: r=64/alpha=128 from the seed text (QLoRA-style adapters on every linear projection). Measured on the
    # sample's gold set (BENCHMARKS.md, sixteenth session): r 128 +0.02 accuracy, r 256 +0.06 (full fine-tuning's
    # figure) but a 313 MB adapter, larger than the tuned model's own GGUF, at 0.74x the speed; 64 stays.
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input (0: none, and no copy of the input per adapter)"})
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={
        "help": "modules that get adapters; 'all-linear' = every linear projection except the output head"})
    quantization: str = field(default="auto", metadata={
        "help": "auto = 4-bit NF4 (QLoRA) on CUDA, none on CPU (4-bit is slower there)", "choices": QUANTIZATIONS})
    # Schedule. Generation asks about every fact (433 on the sample, 3 questions each, plus the section
    # restatements: about 1,500 examples, 160k tokens a pass). On a 2-core AVX2 CPU one pass takes about 16 minutes,
    # the whole budget; a CPU with native bf16 (AVX-512 BF16, AMX) or a GPU does a pass in a fraction of it, and
    # more passes store more of the facts (BENCHMARKS.md: 0.56 of them answered in their trained wording after one
    # pass, 0.82 after 1.5). So by default the passes follow the hardware.
    epochs: float = field(default=0.0, metadata={
        "help": "passes over the training split (0: the fewest half passes that fill --time-budget, timed on this "
                "machine before training starts, from 1 to --max-auto-epochs; the schedule runs on the clock and ends "
                "when the budget does)"})
    # Sample gold set (BENCHMARKS.md, tenth session, AVX-512 BF16 machine), accuracy / refusal recall / false refusals
    # by passes: 1: 0.12 / 0.15 / 0.18, 2: 0.15 / 0.27 / 0.16, 3: 0.19 / 0.21 / 0.07, 4: 0.24 / 0.25 / 0.07, then flat.
    # Passes are the lever, and the default pipeline must stay within 30 minutes, the other stages taking 4-8 of them.
    # Until the twenty-third session the pass was timed on a heavier step than training runs (993 s a pass measured
    # against 567 s on the real step, AVX2 CPU; on bf16 CPUs the passes ran 1.0-1.2x the heavier measurement, and 24
    # minutes chose 2.5-3 of them). Timed on the real step, 24 minutes would choose a third pass there that the
    # deadline cuts short; 22 should choose 2.5-3 as before (on an AMX Xeon, twenty-sixth session: 3 chosen at 366 s
    # a pass timed, the steps then ran 1.5x slower and the deadline stopped at 2.5; 27 min 11 s in all). On the
    # AVX2 CPU of that session it chooses 2 passes where 1 was chosen: a 25 min 36 s pipeline, gold 0.21 / 0.25 /
    # 0.03 against 0.11 / 0.25 / 0.08 after 1 pass (twenty-second session); a slower AVX2 CPU still trains the 1-pass
    # minimum.
    time_budget: float = field(default=22.0, metadata={
        "help": "minutes of training (steps and held-out evaluations) that --epochs 0 fills; if the machine turns out "
                "slower than measured, the learning-rate schedule follows the time spent and training ends, annealed, "
                "when this is up (never before a whole pass)"})
    max_auto_epochs: float = field(default=4.0, metadata={"help": "most passes --epochs 0 chooses"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps (0: use --epochs)"})
    learning_rate: float = field(default=0.0, metadata={
        "help": "peak learning rate (0: 1e-3 for LoRA, 3e-4 for full fine-tuning, which moves every weight)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of steps with a linear warm-up"})
    # Measured on the gold sets (BENCHMARKS.md, twenty-fifth, twenty-sixth, thirty-third and thirty-fourth sessions):
    # ratio 4 answers more on the sample (+0.09 at 2 passes, paired) but sharpens each policy's refusal lean (sample
    # recall -0.15, PostHog false refusals +0.25). Ratio 2 gained +0.06 accuracy with the same refusals once and did
    # not repeat it: the same seed on a bf16 CPU +0.02, seed 7 -0.02, 18F +0.01 (paired, within noise); so off.
    loraplus_ratio: float = field(default=0.0, metadata={
        "help": "LoRA+ (Hayou et al. 2024): the B matrices learn this many times faster than A (0: plain LoRA)"})
    # The model answers its training wordings and not an employee's (BENCHMARKS.md, "What limits it"); noise on the
    # input embeddings is a regulariser said to make a tuned model less tied to its training wordings. Measured on the
    # sample's gold set at 2.5 passes (BENCHMARKS.md, twenty-seventh session), alpha 15 against the same data and seed:
    # accuracy -0.01, refusal recall -0.10 [-0.20, -0.02], false refusals -0.01, separability 0.69 -> 0.67; so off.
    neftune_alpha: float = field(default=0.0, metadata={
        "help": "NEFTune (Jain et al. 2023): uniform noise of scale alpha / sqrt(tokens x width) on the input "
                "embeddings in training steps; a padding-free batch counts every token of the batch, so alpha 15 here "
                "is about 5-7 per example at batch 8 (0: off)"})
    # The tuned model's refusal threshold sits far on the answering side (sample gold, twenty-seventh session: false
    # refusals 0.04, refusal recall 0.35; the issue asks for <= 0.15 and >= 0.80), with near misses 15% of the
    # sample's questions. Measured at 2.5 passes against the same data and seed (BENCHMARKS.md, twenty-eighth
    # session): twice a pass, refusal recall -0.08 [-0.17, -0.02] and false refusals -0.04 (fewer refusals of every
    # kind, separability 0.69 -> 0.62); three times, -0.02 / +0.01, separability 0.69: the refusals learnt stay
    # with the questions trained, not the threshold; so 1.
    near_miss_repeats: int = field(default=1, metadata={
        "help": "times each near miss (a question answered with the refusal) is trained per pass; 1: once, like "
                "every other question"})
    # Measured on the sample's gold set at 2.5 passes (BENCHMARKS.md, eleventh session): weight 3 gave the same
    # accuracy (+0.00 [-0.05, +0.05]) and lower refusal recall (-0.10 [-0.20, -0.02]); so off.
    fact_weight: float = field(default=1.0, metadata={
        "help": "loss weight of the answer tokens its question does not hold (the figure, name or yes/no a fact "
                "adds) against the words it repeats; refusals keep 1; 1: the plain mean"})
    # Measured on the sample's gold set at 2.5 passes (BENCHMARKS.md, eighteenth session): accuracy +0.00, refusal
    # recall +0.06 and false refusals +0.05 (the threshold moved, separability did not); so off.
    question_loss: bool = field(default=False, metadata={
        "help": "also train on each training question's tokens, not only its answer's (loss over instructions, Shi et "
                "al. 2024; held-out loss stays on answers)"})
    # Measured after one pass on a 2-core AVX2 CPU (BENCHMARKS.md, twenty-second session), paired against the same
    # data without labels: on the sample's gold set refusal recall +0.15 [+0.05, +0.25], false refusals -0.01,
    # accuracy -0.00 (within noise); on 18F's +0.23 [+0.08, +0.38], +0.09 [+0.03, +0.15], +0.03; a second seed on
    # the sample +0.13, +0.08, -0.06. Without it the tuned model refused no more near misses than its base there;
    # with it, more on every run, at up to 0.09 more false refusals (separability 0.59-0.63: mostly a threshold).
    # After two passes (twenty-third session): accuracy +0.06 [+0.01, +0.11], refusal recall +0.02, false refusals
    # -0.11 [-0.16, -0.07] (0.15 -> 0.03), separability 0.56 -> 0.62.
    cite_section: bool = field(default=True, metadata={
        "help": "open each answerable training answer with the name of its section (\"Volunteer Leave: ...\"), so the "
                "model names a section before it recalls a fact from it and refuses where it names none"})
    # A fact's name after its section's ("... > short-term counselling sessions: It offers ..."), the same in each of the
    # fact's answers (`factkey.py`). Measured in the forty-second session (BENCHMARKS.md).
    cite_fact: bool = field(default=False, metadata={
        "help": "with --cite-section, name the fact too, by its rarest noun phrase, after the section's name, so the "
                "model names the fact an employee's words point at before it recalls it"})
    # Measured on the sample after 2 passes (BENCHMARKS.md, thirty-sixth session), paired: seed 42 accuracy +0.05
    # [-0.00, +0.11], refusal recall -0.06, false refusals -0.00; seed 7 +0.02 / -0.04 / -0.02; separability +0.01 and
    # +0.04; 18F after 1 pass within noise. More answers for fewer refusals, each within noise: off.
    lead_with_value: bool = field(default=False, metadata={
        "help": "open a training answer with the figure or name its question asks for (\"$150. Employees may claim "
                "...\"), so it is recalled from the question, not from the policy sentence's own words"})
    batch_size: int = field(default=8, metadata={"help": "examples per device per step"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    max_length: int = field(default=384, metadata={
        "help": "longest tokenised example (prompt ~70 tokens + answer); longer ones are dropped, not truncated"})
    padding_free: bool = field(default=True, metadata={
        "help": "concatenate a batch into one sequence instead of padding (same loss, fewer tokens computed)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in backward: less memory, about 30% slower; for big models on small GPUs"})
    eval_steps: int = field(default=0, metadata={"help": "evaluate and save a checkpoint every N steps (0: twice per epoch)"})
    early_stopping_patience: int = field(default=3, metadata={
        "help": "stop after N evaluations without a better --select-by figure (answers: none within one standard "
                "error of the best score; 0: never stop early)"})
    # Eval loss on held-out phrasings said little: it kept falling while the model refused trained facts,
    # and a refusal's few tokens weigh nothing in it. Answers are what the product is judged on.
    select_by: str = field(default="answers", metadata={
        "help": "what keep-best and early stopping follow: answers = greedy answers to held-out phrasings scored as "
                "evaluate.py does (mean of answerable accuracy and refusal recall); loss = eval loss",
        "choices": ["answers", "loss"]})
    heldout_answers: int = field(default=48, metadata={
        "help": "held-out records answered at each evaluation with --select-by answers (half unanswerable where "
                "there are enough)"})
    # Measured on 48 hand-made records: eval loss on held-out (unseen) facts was best after 1 epoch
    # (1.38) and rose to 1.97 by epoch 6 while train loss fell to 0.03: the closed-book goal
    # (recite trained facts) wants the last checkpoint, the held-out loss wants an early one.
    keep_best: bool = field(default=True, metadata={
        "help": "publish the best checkpoint by --select-by (answers: the latest within one standard error of the "
                "best score, policytune/heldout.py; --no-keep-best: the last one)"})
    logging_steps: int = field(default=2, metadata={"help": "record the training loss every N steps"})
    # Measured on the 2-core box (bench/train.py): other core idle, 2 threads 1.7x faster than 1; another
    # job on it, 2 threads 2.7-5x slower than 1. So 0 follows the load, re-checked every few seconds.
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads (0: every physical core, one fewer while other jobs keep a core busy)"})
    # Throughput (issue 17, bench/train.py and BENCHMARKS.md): on a CPU, tokens/s is the knowledge budget.
    answer_only_head: bool = field(default=True, metadata={
        "help": "compute the 49k-vocabulary LM head and the loss only where an answer token is predicted (same loss; "
                "--no-answer-only-head: TRL's head over every position)"})
    attention: str = field(default="per-example", metadata={
        "help": "per-example: attention within each example of a padding-free batch; sdpa: one masked attention "
                "over the whole concatenated batch (cost grows with the square of the batch)",
        "choices": ["per-example", "sdpa"]})
    share_prompt_prefix: bool = field(default=True, metadata={
        "help": "compute the prompt prefix every example of a batch shares (the system prompt: ~40 of ~85 tokens) "
                "once per batch instead of once per example; same loss; needs --answer-only-head and "
                "--attention per-example"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (inductor)"})
    bf16: str = field(default="auto", metadata={
        "help": "bf16 autocast: auto = on a CUDA GPU with bf16 or a CPU with native bf16 (AVX512_BF16 / AMX), never "
                "where it would be emulated", "choices": ["auto", "on", "off"]})
    seed: int = field(default=42, metadata={"help": "random seed (data order, LoRA init, dropout)"})
    resume: bool = field(default=False, metadata={"help": "continue from the last complete checkpoint in <checkpoint-dir>/trainer"})
    fresh: bool = field(default=False, metadata={
        "help": "start from step 0 even when <checkpoint-dir>/trainer holds a killed run with the same settings and "
                "data (which is otherwise resumed automatically)"})

    def __post_init__(self) -> None:
        # nan or inf passes every comparison below, then fails deep inside the trainer
        unusable = [f.name for f in dataclasses.fields(self)
                    if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))]
        if unusable:
            raise ValueError(f"--{unusable[0].replace('_', '-')} must be a finite number, got {getattr(self, unusable[0])}")
        if not 0.0 <= self.lora_dropout < 1.0 or not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError("--lora-dropout must be in [0, 1) and --warmup-ratio in [0, 1]")
        if self.logging_steps < 1 or self.threads < 0 or self.section_restatements < 0 or self.fact_statements < 0:
            raise ValueError("--logging-steps must be at least 1; --threads, --section-restatements and "
                             "--fact-statements 0 or more")
        if self.lora_r <= 0 or self.lora_alpha <= 0:
            raise ValueError("--lora-r and --lora-alpha must be positive")
        if self.batch_size <= 0 or self.grad_accum <= 0 or self.max_length <= 0:
            raise ValueError("--batch-size, --grad-accum and --max-length must be positive")
        if self.epochs < 0 or self.max_steps < 0:
            raise ValueError("--epochs and --max-steps must be 0 (automatic) or positive")
        tied = {"embed_tokens", "lm_head"} & {m.rsplit(".", 1)[-1] for m in self.target_modules}
        if tied:
            # SmolLM2 and Llama-3.2-1B tie the two: merging such an adapter (evaluation, deployment) changes both, and
            # the merged model answers gibberish (BENCHMARKS.md, sixteenth session); TRL refuses lm_head outright
            raise ValueError(f"--target-modules: {', '.join(sorted(tied))} cannot take an adapter (the input "
                             "embeddings and the output head share one matrix); train them with --method full")
        if self.time_budget <= 0 or self.max_auto_epochs < 1:
            raise ValueError("--time-budget must be positive and --max-auto-epochs at least 1")
        if self.method == "full" and self.quantization in ("4bit", "8bit"):
            raise ValueError("--method full trains every weight: quantized weights cannot be trained (use --quantization none)")
        if self.learning_rate < 0:
            raise ValueError("--learning-rate must be positive (0: the method's default)")
        if self.fact_weight <= 0:
            raise ValueError("--fact-weight must be positive (1: every answer token alike)")
        if self.fact_weight != 1.0 and self.question_loss:
            raise ValueError("--fact-weight weighs answer tokens against their question: not with --question-loss")
        if self.fact_weight != 1.0 and not self.answer_only_head:
            raise ValueError("--fact-weight needs --answer-only-head (the weighted loss is computed there)")
        if self.loraplus_ratio < 0 or 0 < self.loraplus_ratio < 1:
            raise ValueError("--loraplus-ratio must be 0 (off) or at least 1")
        if self.neftune_alpha < 0:
            raise ValueError("--neftune-alpha must be 0 (off) or positive")
        if self.near_miss_repeats < 1:
            raise ValueError("--near-miss-repeats must be 1 or more")

    def peak_learning_rate(self) -> float:
        # Full fine-tuning at 2.5 passes on the sample (BENCHMARKS.md, fifteenth session): 1e-4 stored less than LoRA,
        # 3e-4 more (gold accuracy 0.17 and 0.25 against LoRA's 0.20).
        return self.learning_rate or (3e-4 if self.method == "full" else 1e-3)


def _read_key(path: Path, field: str = "run_key"):
    try:
        return json.loads(path.read_text()).get(field)
    except (OSError, ValueError, AttributeError):
        return None  # a damaged key only means the run is not resumed


# Settings that shape the trained weights: a checkpoint trained with others cannot be loaded into this run's model.
SHAPE_SETTINGS = ("method", "base_model", "lora_r", "target_modules", "quantization")


def check_resumable(saved: dict | None, current: dict[str, Any], trainer_dir: Path) -> None:
    """--resume asks to continue a killed run with other settings; those that shape the weights cannot change."""
    if not isinstance(saved, dict):
        return  # a run from before the key existed: loading the checkpoint decides
    changed = [k for k in SHAPE_SETTINGS if k in saved and saved[k] != current.get(k)]
    if changed:
        was = ", ".join(f"--{k.replace('_', '-')} {saved[k]}" for k in changed)
        raise config.UserError(f"--resume: the checkpoints in {trainer_dir} were trained with {was}, which this run "
                               "changes; rerun with those settings, or without --resume to start afresh")


def same_settings(saved: dict | None, current: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether a run saved with the settings `saved` is the run `current` asks for: every setting it had is the same,
    and one it did not have (a flag an upgrade added since) is at its default, which is what that run trained with.
    Without the second rule any new flag would restart every killed run."""
    if not isinstance(saved, dict):
        return False
    return all(saved[k] == v if k in saved else v == defaults.get(k, v) for k, v in current.items())


def main(cfg: TrainConfig) -> None:
    started = time.monotonic()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    is_main = rank == 0
    if is_main:
        config.show(cfg)

    # 1. Records -> split -> prompt/completion examples. Everything is checked before anything is written.
    input_path = Path(cfg.input) if cfg.input else cfg.data_path("instructionquality.json")
    records = io.read_records(input_path, "training data")
    if not records:
        raise config.UserError(f"{input_path}: no training records (did every pair fail the quality stage?)")
    training.check_records(records, input_path)
    training.build_examples(records)  # raises on records without a question or an answer
    train_records, eval_records = training.split_records(records, cfg.eval_fraction, cfg.eval_max_records)
    # Knowledge augmentation: the policy's own statements as loss-bearing text, shuffled in with the Q/A pairs.
    facts_path = Path(cfg.facts) if cfg.facts else cfg.data_path("facts.json")
    if facts_path.is_file() and (cfg.section_restatements or cfg.fact_statements):
        knowledge = augment.knowledge_records(io.read_records(facts_path, "fact inventory", facts.KEYS), cfg.section_restatements,
                                              cfg.fact_statements, cfg.permute_restatements)
        train_records = train_records + knowledge
        if is_main:
            print(f"knowledge augmentation: {len(knowledge)} records from {facts_path} (sections x{cfg.section_restatements}, "
                  f"facts x{cfg.fact_statements})", flush=True)
    elif is_main and (cfg.section_restatements or cfg.fact_statements):
        print(f"knowledge augmentation: none ({facts_path} not found; the generate stage writes it)", flush=True)
    if cfg.near_miss_repeats > 1:
        near_misses = [r for r in train_records if not r.get("answerable", True)]
        train_records = train_records + near_misses * (cfg.near_miss_repeats - 1)
        if is_main:
            print(f"near misses: {len(near_misses)} trained {cfg.near_miss_repeats} times a pass", flush=True)
    base = models.resolve(cfg.base_model)
    trainer_dir = cfg.checkpoint_path("trainer")
    key_path = trainer_dir / "run_key.json"
    if cfg.resume and training.latest_complete_checkpoint(trainer_dir):
        check_resumable(_read_key(key_path, "settings"), config.as_dict(cfg), trainer_dir)

    import torch
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig, SFTTrainer
    from datasets import Dataset

    physical_cores = cpu.physical_cores()
    torch.set_num_threads(cfg.threads or physical_cores)
    on_cuda = torch.cuda.is_available()
    quantization = ("4bit" if on_cuda and cfg.method == "lora" else "none") if cfg.quantization == "auto" \
        else cfg.quantization
    tokenizer = models.load_tokenizer(base)
    # held-out phrasings name their fact as its trained answers do: the keys are counted over both splits
    fact_keys = factkey.keys(train_records + eval_records) if cfg.cite_fact else None
    train_tok = training.tokenize_examples(
        training.build_examples(train_records, cfg.cite_section, cfg.lead_with_value, fact_keys), tokenizer,
        cfg.max_length, cfg.question_loss)
    eval_tok = training.tokenize_examples(
        training.build_examples(eval_records, cfg.cite_section, cfg.lead_with_value, fact_keys), tokenizer,
        cfg.max_length)
    if not train_tok.rows:
        raise config.UserError(f"no training example fits --max-length {cfg.max_length} tokens")
    # 2. Base model and LoRA adapter (none with --method full: every weight is trained).
    model = models.load_model(base, quantization=quantization)
    if is_main:
        print(f"split: {len(train_records)} train / {len(eval_records)} eval records (eval stratified by answerable; "
              f"written with the {'adapter' if cfg.method == 'lora' else 'model'})"
              + (f"; {train_tok.dropped_too_long + eval_tok.dropped_too_long} longer than {cfg.max_length} tokens dropped"
                 if train_tok.dropped_too_long + eval_tok.dropped_too_long else ""), flush=True)
    if cfg.attention == "per-example" and cfg.padding_free:
        training.use_varlen_attention(model)
    if quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, task_type="CAUSAL_LM",
                      target_modules=cfg.target_modules[0] if cfg.target_modules == ["all-linear"] else cfg.target_modules
                      ) if cfg.method == "lora" else None

    # 3. Schedule: evaluate and checkpoint at the same steps so the best checkpoint can be kept.
    steps_per_epoch = math.ceil(len(train_tok.rows) / (cfg.batch_size * cfg.grad_accum * world))
    auto_epochs = cfg.epochs == 0 and cfg.max_steps == 0
    epochs = cfg.epochs or 1.0  # --epochs 0: one pass until this machine's speed is measured (below)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * epochs)
    eval_steps = cfg.eval_steps or training.half_pass_steps(steps_per_epoch)
    has_eval = bool(eval_tok.rows)
    by_answers = has_eval and cfg.select_by == "answers"
    resume_from = None
    if is_main:
        training.remove_incomplete_checkpoints(trainer_dir)
    # A killed run with the same settings and data resumes by itself, so rerunning the command (or
    # the pipeline) after a kill loses nothing; anything else starts clean.
    speed_only = ("resume", "fresh", "threads", "answer_only_head", "attention", "share_prompt_prefix", "compile")  # same numbers either way
    settings = {k: v for k, v in config.as_dict(cfg).items() if k not in speed_only}
    defaults = config.as_dict(TrainConfig())
    data_key = io.content_hash(train_records, eval_records, world)
    run_key = {"data_key": data_key, "settings": settings}
    same_run = _read_key(key_path, "data_key") == data_key and \
        same_settings(_read_key(key_path, "settings"), settings, defaults)
    if cfg.resume or (same_run and not cfg.fresh):
        resume_from = training.latest_complete_checkpoint(trainer_dir)
        if is_main:
            print(f"resuming from {resume_from}" if resume_from else f"no checkpoint in {trainer_dir}, starting fresh",
                  flush=True)
    # the passes the killed run chose, read before this run's key replaces its key
    chosen_before = _read_key(key_path, "epochs") if resume_from else None

    try:
        args = SFTConfig(
            output_dir=str(trainer_dir),
            num_train_epochs=epochs, max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
            per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            learning_rate=cfg.peak_learning_rate(), lr_scheduler_type="cosine", warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
            max_length=None if cfg.padding_free else cfg.max_length,  # examples are already filtered to max_length
            padding_free=cfg.padding_free, packing=False, completion_only_loss=True,
            gradient_checkpointing=cfg.gradient_checkpointing,
            bf16=training.use_bf16(cfg.bf16, on_cuda), fp16=False, torch_compile=cfg.compile,
            logging_steps=cfg.logging_steps, logging_first_step=True,
            eval_strategy="steps" if has_eval else "no", eval_steps=eval_steps,
            save_strategy="steps", save_steps=eval_steps, save_total_limit=2,
            load_best_model_at_end=has_eval and cfg.keep_best,
            metric_for_best_model=heldout.KEPT if by_answers else "eval_loss", greater_is_better=by_answers,
            # Padding-free batches have no padding to leave out; padded ones count the attention mask.
            include_num_input_tokens_seen="all" if cfg.padding_free else "non_padding",
            # use_cpu makes accelerate form a gloo group under torchrun; without it each CPU rank trains alone.
            use_cpu=not on_cuda,
            seed=cfg.seed, data_seed=cfg.seed, report_to="none", dataloader_pin_memory=on_cuda,
            ddp_find_unused_parameters=False, disable_tqdm=not is_main,
            neftune_noise_alpha=cfg.neftune_alpha or None,
        )
    except ValueError as exc:  # a combination of settings the trainer refuses
        raise config.UserError(f"training settings: {config.first_line(exc)}") from None
    metrics_cb = training.metrics_callback()
    # Listed before early stopping: it adds the figure early stopping and keep-best read (heldout.KEPT).
    answers_cb = heldout.callback(heldout.balanced_sample(eval_records, cfg.heldout_answers)) if by_answers else None
    pass_tokens = sum(len(row["input_ids"]) for row in train_tok.rows)
    # Passes chosen by the budget run their schedule on the clock if the machine turns out slower than measured (and
    # are rounded up to fill the budget). Under DDP every rank goes by rank 0's clock, so they stop together.
    deadline_cb = training.deadline_callback(cfg.time_budget * 60, min_steps=steps_per_epoch) if auto_epochs else None
    # batches differ several-fold in cost (a restated section against a few short questions): a run of hundreds of
    # steps is timed over ten of them before it says how long it will take
    callbacks = [metrics_cb, training.time_estimate_callback(
        after_steps=max(3, min(11, total_steps // 20)), evaluates=has_eval,
        eval_batches=math.ceil(len(eval_tok.rows) / (cfg.batch_size * world)), tokens_per_step=pass_tokens / steps_per_epoch,
        budget_seconds=cfg.time_budget * 60 if deadline_cb else 0.0, min_steps=steps_per_epoch)]
    if deadline_cb:
        callbacks.append(deadline_cb)
    if cfg.threads == 0 and world == 1 and not on_cuda and physical_cores > 1:
        callbacks.append(training.adaptive_threads_callback(physical_cores, os.cpu_count() or physical_cores))
    if answers_cb:
        callbacks.append(answers_cb)
    if has_eval and cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    # the refusal's tokens, which --fact-weight leaves at 1
    refusal_ids = training.tokenize_examples(
        [{"prompt": chat.format_prompt("?"), "completion": chat.format_completion(chat.REFUSAL)}], tokenizer, None
    ).answers[0] if cfg.fact_weight != 1.0 else []
    trainer_class = (training.answer_only_trainer_class(share_prefix=cfg.share_prompt_prefix and cfg.attention == "per-example",
                                                        fact_weight=cfg.fact_weight, refusal_ids=refusal_ids)
                     if cfg.answer_only_head else SFTTrainer)
    if cfg.loraplus_ratio and lora is not None:
        trainer_class = training.loraplus_trainer_class(trainer_class, cfg.loraplus_ratio)
    trainer = trainer_class(
        model=model, args=args, processing_class=tokenizer, peft_config=lora,
        train_dataset=Dataset.from_list(train_tok.rows),
        eval_dataset=Dataset.from_list(eval_tok.rows) if has_eval else None,
        callbacks=callbacks,
    )
    print(f"rank {trainer.args.process_index}/{trainer.args.world_size} joined", flush=True)
    checkpoint = training.checkpoint_bytes(trainer.model)  # a full fine-tune's is about 1.6 GB at 135M parameters
    if is_main:
        training.check_disk_space(trainer_dir, checkpoint, args.save_total_limit)

    # 4. Prove the loss sees the answers only (with --question-loss, the questions too), with the trainer's own data
    # and collator.
    try:
        mask_check = training.check_loss_mask(trainer.data_collator, trainer.train_dataset, train_tok.answers, tokenizer)
    except RuntimeError as exc:
        raise config.UserError(str(exc)) from None
    if is_main:
        trained = "question and answer" if cfg.question_loss else "answer"
        print(f"loss mask check: {mask_check['label_tokens']} label tokens = {mask_check['answer_tokens']} {trained} tokens "
              f"in the first {mask_check['checked_examples']} examples", flush=True)

    # Only now, with every setting accepted, is a previous run's state replaced.
    if is_main:
        if not resume_from and trainer_dir.exists():
            shutil.rmtree(trainer_dir)  # a fresh run must not resume or rotate a previous run's checkpoints
        io.write_json_atomic(key_path, run_key)

    # 5. Passes: with --epochs 0, as many as this machine does in --time-budget. A resumed run keeps its choice.
    if auto_epochs:
        chosen = chosen_before
        if chosen is None:
            per_token = training.seconds_per_token(trainer, args.bf16)
            pass_seconds = per_token * pass_tokens / world
            chosen = training.passes_in_budget(pass_seconds, cfg.time_budget * 60, cfg.max_auto_epochs)
            if world > 1:  # every rank must run the same schedule: the slowest one's
                import torch.distributed as dist

                agreed = torch.tensor([chosen], device=trainer.args.device)
                dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
                chosen = float(agreed.item())
            if is_main:
                print(f"passes: {chosen:g} ({pass_seconds:.0f} s a pass measured on this machine, "
                      f"{cfg.time_budget:g} min budget, at most {cfg.max_auto_epochs:g})", flush=True)
        epochs = trainer.args.num_train_epochs = chosen
        total_steps = math.ceil(steps_per_epoch * epochs)
        trainer.args.warmup_steps = math.ceil(cfg.warmup_ratio * total_steps)
        if is_main:
            io.write_json_atomic(key_path, {**run_key, "epochs": epochs})
    if is_main:
        if lora is not None:
            trainable, total = trainer.model.get_nb_trainable_parameters()
        else:
            total = sum(p.numel() for p in trainer.model.parameters())
            trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        print(f"training {trainable:,} {'LoRA' if lora is not None else 'model'} parameters "
              f"({100 * trainable / total:.2f}% of {total:,}) at learning rate {cfg.peak_learning_rate():g} for {total_steps} steps, "
              f"{steps_per_epoch} steps/epoch, world size {trainer.args.world_size}, quantization {quantization}, "
              f"{torch.get_num_threads()} threads", flush=True)

    # 6. Train (resumable), keep the best checkpoint by eval loss.
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except Exception as exc:
        if not training.out_of_space(exc, trainer_dir, checkpoint):
            raise
        raise config.UserError(f"{trainer_dir}: the disk filled up while saving a checkpoint at step "
                               f"{trainer.state.global_step} ({type(exc).__name__}: {config.first_line(exc, 120)}); "
                               "free some space and rerun the same command: it resumes from the last complete "
                               "checkpoint") from None
    if not trainer.is_world_process_zero():
        return

    # 7. Publish: the split first, then stage everything, move it into checkpoints/, metrics.json last. The split is
    # written only now (a run stopped earlier left a new held-out split beside the old adapter, which had trained on
    # most of it), and the adapter records its hash, so evaluation can refuse a split of another run.
    io.write_json_atomic(cfg.data_path("train_split.json"), train_records)
    io.write_json_atomic(cfg.data_path("eval_split.json"), eval_records)
    print(f"split -> {cfg.data_path('train_split.json')}, {cfg.data_path('eval_split.json')}", flush=True)
    out_dir = Path(cfg.checkpoint_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # named like every temporary file (".tmp<pid>"): a run killed while publishing leaves it to the next stage to remove
    staging = Path(tempfile.mkdtemp(prefix=".publish-", suffix=f".tmp{os.getpid()}", dir=out_dir))
    try:
        if lora is None:
            trainer.model.set_attn_implementation("sdpa")  # the per-example attention is registered by train.py only
        trainer.model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if lora is not None:
            adapter_config = json.loads((staging / "adapter_config.json").read_text())
            adapter_config["base_model_name_or_path"] = base.name  # resolvable again, not the cache folder
            io.write_json_atomic(staging / "adapter_config.json", adapter_config)
        io.write_json_atomic(staging / "training_config.json", {
            **config.as_dict(cfg), "base_model_name": base.name, "quantization_used": quantization,
            "train_records": len(train_records), "eval_records": len(eval_records),
            "world_size": trainer.args.world_size, "method": cfg.method, "learning_rate_used": cfg.peak_learning_rate(),
            "epochs_used": epochs if cfg.max_steps == 0 else None,
            "chat_format": "chatml", "system_prompt": chat.SYSTEM_PROMPT,
            "refusal": chat.REFUSAL, "eval_split_sha256": io.file_sha256(cfg.data_path("eval_split.json"))})
        history = trainer.state.log_history
        best = trainer.state.best_model_checkpoint
        best_step = int(best.rsplit("-", 1)[1]) if best else None
        train_log = [h for h in history if "loss" in h]
        eval_log = [h for h in history if "eval_loss" in h]
        metrics = {
            "train_loss": [round(h["loss"], 5) for h in train_log],
            "train_loss_steps": [h["step"] for h in train_log],
            "eval_loss": [round(h["eval_loss"], 5) for h in eval_log],
            "eval_loss_steps": [h["step"] for h in eval_log],
            "best_eval_loss": min((h["eval_loss"] for h in eval_log), default=None) if by_answers else trainer.state.best_metric,
            "selected_by": "eval_answer_score" if by_answers else "eval_loss",
            "selection": "the latest checkpoint within one standard error of the best score" if by_answers else "best",
            "best_metric": next((h["eval_answer_score"] for h in eval_log
                                 if h["step"] == best_step and "eval_answer_score" in h), None)
            if by_answers else trainer.state.best_metric,
            "heldout_answers": heldout.curve(history),
            "best_checkpoint": Path(best).name if best else None,
            "published": "best" if args.load_best_model_at_end else "last",
            "global_step": trainer.state.global_step, "epochs": round(trainer.state.epoch or 0, 3),
            "stopped_by_time_budget": bool(deadline_cb and deadline_cb.stopped_at),
            "final_train_loss": round(result.training_loss, 5),
            "resumed_from": resume_from.name if resume_from else None,
            **metrics_cb.summary(trainer.state), **training.peak_memory(),
            "seconds": round(time.monotonic() - started, 2),
            "threads": torch.get_num_threads(), "world_size": trainer.args.world_size,
            "dropped_too_long": train_tok.dropped_too_long + eval_tok.dropped_too_long,
            "loss_mask_check": mask_check,
        }
        io.write_json_atomic(staging / "metrics.json", metrics)
        # what the other method left here would be loaded instead of (or beside) this run's weights
        training.publish(staging, out_dir, last="metrics.json",
                         stale=training.FULL_FILES if lora is not None else training.ADAPTER_FILES)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    key_path.unlink(missing_ok=True)  # finished: a rerun trains again instead of resuming a complete run
    saved = "adapter_model.safetensors" if lora is not None else "model.safetensors"
    print(f"{'adapter' if lora is not None else 'model'} saved: {out_dir}/{saved} (best {metrics['selected_by']} {metrics['best_metric']}, "
          f"{metrics['tokens_per_second']} tokens/s, peak RSS {metrics['peak_rss_mb']} MB, {metrics['seconds']} s)", flush=True)


if __name__ == "__main__":
    config.run(main, TrainConfig)
