"""Training benchmark (issue 17): tokens/s, peak RSS and model FLOP utilisation (MFU) of train.py's
defaults against the defaults of commit 22841b0, and of each speed-up on its own.

    uv run python bench/train.py                       # baseline, each change alone, the defaults (< 10 min)
    uv run python bench/train.py --threads 1           # the same on one thread (a shared, busy machine)
    uv run python bench/train.py --variants default,batch16,batch32 --rss-variants none
    uv run python bench/train.py --variants default,compile --rss-variants none
    uv run python bench/train.py --variants default,threads-1 --rounds 3 --rss-variants none
    uv run python bench/train.py --variants default,attn-only,mlp-only,r128,r256,full --rss-variants none
    uv run python bench/train.py --variants baseline,default --profile       # where the step time goes
    uv run python bench/train.py --parity              # the same tokens through baseline and defaults: losses

Variants are trained side by side in ONE process, taking turns one optimizer step at a time (the
order rotated every round), each with its own model, optimizer and data iterator, so a burst of
load from other jobs on a shared machine hits every variant alike; in a round each variant trains
on the same number of examples. Every variant sees the same records in the same order, tokenised
by policytune.training as train.py does, in padding-free batches. The baseline is the 22841b0 code
path: plain SFTTrainer (TRL's head scores every position), SDPA over the whole packed batch, LoRA
r=64/alpha 128/dropout 0.05 on all linear layers, batch 8, lr 1e-3. "default" reads train.py's
current defaults, so the bench follows the script. Threads: every physical core (train.py's
default) unless --threads says otherwise.

Per variant: one untimed warm-up step (it holds torch.compile's compile time: "1st step s"), then
--rounds timed rounds. Tokens/s counts the examples' real tokens (a shared prompt prefix computed
once still counts once per example: those are the tokens trained on). CPU seconds (the process's,
all threads, during that variant's steps) are reported beside wall time. Peak RSS comes from a
separate fresh process per variant (--rss-variants) that builds it and trains two steps.

MFU = useful FLOP/s / fp32 matmul peak; the peak is a 2048^3 torch.matmul at the same thread count,
measured before, between the rounds (same process: same load as the steps) and after; the best is
used. Useful FLOPs, one formula for every variant, counted on the tokens actually computed (a
shared prefix counts once):
  per token:          2 x frozen linear params (forward) + 2 x frozen linear params (input gradients)
                      + 6 x LoRA params (forward, input and weight gradients)
  per example:        12 x layers x hidden x length^2 (attention scores and values, fwd + bwd)
  per answer token:   4 x vocab x hidden (LM head forward + input gradient; the loss needs no other row)
  full fine-tuning:   6 x (all linear params) per token and 6 x vocab x hidden per answer token.
The baseline's head also runs at prompt positions, and without prefix sharing every example
recomputes the system prompt: that is work, not useful FLOPs.

--profile splits the step time of the listed variants (torch.profiler, two steps) into the LM
head + loss, LoRA layers (A, B, dropout, scaling, add), frozen linear layers, attention, the rest
of the decoder, the optimizer and everything else; backward time is charged to the forward op
that recorded it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import common

from policytune import config, cpu, io, models, training

GOAL_SPEEDUP = 2.0
GOAL_MFU = 0.4

# train.py at 22841b0 (the baseline), as options of `prepare`.
BASELINE = {"answer_only_head": False, "attention": "sdpa", "share_prompt_prefix": False, "lora_r": 64,
            "lora_alpha": 128, "lora_dropout": 0.05, "target_modules": ["all-linear"], "batch_size": 8,
            "learning_rate": 1e-3, "compile": False, "thread_delta": 0, "full_finetune": False, "bf16": False,
            "float32_attention": True, "split_saving": 1.0, "cite_section": False}
ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP_PROJECTIONS = ["gate_proj", "up_proj", "down_proj"]

# key: (label, start from "baseline" or "default", changes). Single changes, to see what each buys.
VARIANTS = {
    "baseline": ("baseline (22841b0 defaults)", "baseline", {}),
    "head": ("baseline + answer-only head", "baseline", {"answer_only_head": True}),
    "attention": ("baseline + per-example attention", "baseline", {"attention": "per-example"}),
    "dropout0": ("baseline + LoRA dropout 0", "baseline", {"lora_dropout": 0.0}),
    "no-prefix": ("defaults, prompt prefix not shared", "default", {"share_prompt_prefix": False}),
    "default": ("train.py defaults", "default", {}),
    # Larger batches with the learning rate scaled by sqrt(batch ratio) (Adam's usual rule).
    "batch8": ("defaults, batch 8 lr 1e-3", "default", {"batch_size": 8, "learning_rate": 1e-3}),
    "batch16": ("defaults, batch 16 lr 1.4e-3", "default", {"batch_size": 16, "learning_rate": 1.4e-3}),
    "batch32": ("defaults, batch 32 lr 2e-3", "default", {"batch_size": 32, "learning_rate": 2e-3}),
    "compile": ("defaults + torch.compile", "default", {"compile": True}),
    "threads-1": ("defaults, one thread fewer", "default", {"thread_delta": -1}),
    "attn-only": ("defaults, LoRA on attention only", "default", {"target_modules": ATTENTION_PROJECTIONS}),
    "mlp-only": ("defaults, LoRA on MLP only", "default", {"target_modules": MLP_PROJECTIONS}),
    "r128": ("defaults, r=128 alpha 256", "default", {"lora_r": 128, "lora_alpha": 256}),
    "r256": ("defaults, r=256 alpha 512", "default", {"lora_r": 256, "lora_alpha": 512}),
    "full": ("defaults, full fine-tuning (no LoRA)", "default", {"full_finetune": True, "learning_rate": 5e-5}),
    "fp32": ("defaults without bf16 autocast", "default", {"bf16": False}),
    "bf16-attention": ("defaults, attention in bf16 too", "default", {"float32_attention": False}),
    "one-call": ("defaults, attention padded to the batch's longest", "default", {"split_saving": 1.0}),
}
CORE = ["baseline", "head", "attention", "dropout0", "no-prefix", "default"]


@dataclass
class TrainBenchConfig(config.Base):
    variants: list[str] = field(default_factory=lambda: list(CORE), metadata={
        "help": "variants trained side by side, ratios against the first (see VARIANTS in this file)",
        "choices": list(VARIANTS)})
    rounds: int = field(default=2, metadata={
        "help": "timed rounds after one warm-up step each; in a round every variant trains on the same number of "
                "examples (the largest batch: a batch-8 variant takes 4 steps where a batch-32 one takes 1)"})
    threads: int = field(default=0, metadata={"help": "torch threads (0: every physical core, as train.py)"})
    rss_variants: list[str] = field(default_factory=lambda: ["baseline", "default"], metadata={
        "help": "variants whose peak RSS is measured alone in a fresh process (two steps each; 'none' to skip)",
        "choices": [*VARIANTS, "none"]})
    max_length: int = field(default=384, metadata={"help": "train.py's --max-length"})
    profile: bool = field(default=False, metadata={"help": "also split the step time of each variant by part (torch.profiler)"})
    parity: bool = field(default=False, metadata={
        "help": "instead of speed: train --parity-variants on the same records for --parity-epochs and compare losses"})
    parity_epochs: float = field(default=3.0, metadata={"help": "epochs of the parity run"})
    parity_records: int = field(default=48, metadata={"help": "records of the parity run (85%% train, 15%% eval)"})
    parity_variants: list[str] = field(default_factory=lambda: ["baseline", "default"], metadata={
        "help": "variants the parity run compares", "choices": list(VARIANTS)})
    base_model: str = field(default=models.EMBEDDED, metadata={"help": "base model (as train.py's --base-model)"})
    input: str = field(default="", metadata={"help": "instruction records (default: data/train_split.json or instructionquality.json, else built-in)"})


def builtin_records(n: int = 96) -> list[dict]:
    """Policy-like Q/A pairs shaped like the pipeline's: ~55-token prompts, 10-60-token answers, refusals."""
    from policytune import chat

    records = []
    for i in range(n):
        question = common.QUESTIONS[i % len(common.QUESTIONS)]
        if i % 4 == 3:
            answer = chat.REFUSAL
        else:
            clauses = 1 + (i * 7) % 3  # 1-3 clauses: about 20 to 60 answer tokens
            answer = " ".join(f"Under section {i % 9 + 1}.{c}, employees are entitled to {5 + c + i % 20} working days "
                              "with manager approval." for c in range(clauses))
        records.append({"id": f"bench-{i}", "instruction": f"{question} (case {i})", "output": answer,
                        "answerable": answer != chat.REFUSAL})
    return records


def load_records(cfg: TrainBenchConfig) -> tuple[list[dict], str]:
    candidates = [cfg.input] if cfg.input else [str(cfg.data_path("train_split.json")), str(cfg.data_path("instructionquality.json"))]
    for path in candidates:
        if Path(path).is_file():
            return io.read_records(path, "training data"), path
    if cfg.input:
        raise config.UserError(f"{cfg.input}: not found")
    return builtin_records(), "built-in records (no data/train_split.json yet)"


def train_defaults() -> dict:
    """train.py's current defaults, as `prepare`'s options."""
    import torch

    d = common.load_stage("train.py").TrainConfig()
    return {**BASELINE, "bf16": training.use_bf16(d.bf16, torch.cuda.is_available()),
            "answer_only_head": d.answer_only_head, "attention": d.attention,
            "share_prompt_prefix": d.share_prompt_prefix, "lora_r": d.lora_r, "lora_alpha": d.lora_alpha,
            "lora_dropout": d.lora_dropout, "target_modules": d.target_modules, "batch_size": d.batch_size,
            "learning_rate": d.learning_rate, "compile": d.compile, "split_saving": training.SPLIT_SAVING,
            "cite_section": d.cite_section}


def variant_options(key: str, defaults: dict) -> dict:
    _, start, changes = VARIANTS[key]
    return {**(BASELINE if start == "baseline" else defaults), **changes}


def variant_threads(opts: dict, cfg: TrainBenchConfig) -> int:
    return max(1, (cfg.threads or cpu.physical_cores()) + opts["thread_delta"])


def shares_prefix(opts: dict) -> bool:
    return opts["share_prompt_prefix"] and opts["answer_only_head"] and opts["attention"] == "per-example"


def build_trainer(opts: dict, rows: list[dict], cfg: TrainBenchConfig, max_steps: int, eval_rows=None,
                  schedule: str = "constant"):
    """An SFTTrainer set up as train.py sets it up, with `opts` deciding what the variants change."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    base = models.resolve(cfg.base_model)
    tokenizer = models.load_tokenizer(base)
    model = models.load_model(base)
    if opts["attention"] == "per-example":
        training.use_varlen_attention(model)
    targets = opts["target_modules"]
    lora = None if opts["full_finetune"] else LoraConfig(
        r=opts["lora_r"], lora_alpha=opts["lora_alpha"], lora_dropout=opts["lora_dropout"], task_type="CAUSAL_LM",
        target_modules=targets[0] if targets == ["all-linear"] else targets)
    args = SFTConfig(
        output_dir=str(common.RESULTS / "train-scratch"), max_steps=max_steps,
        per_device_train_batch_size=opts["batch_size"], per_device_eval_batch_size=opts["batch_size"],
        learning_rate=opts["learning_rate"], lr_scheduler_type=schedule,
        warmup_steps=math.ceil(0.05 * max_steps) if schedule != "constant" else 0,
        logging_steps=1, save_strategy="no", report_to="none", eval_strategy="no",
        padding_free=True, packing=False, completion_only_loss=True, max_length=None,
        bf16=opts["bf16"], use_cpu=not torch.cuda.is_available(),
        seed=42, data_seed=42, disable_tqdm=True, dataloader_pin_memory=False)
    trainer_class = training.answer_only_trainer_class(shares_prefix(opts)) if opts["answer_only_head"] else SFTTrainer
    return trainer_class(model=model, args=args, processing_class=tokenizer, peft_config=lora,
                         train_dataset=Dataset.from_list(rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None)


def flop_counts(trainer, opts: dict) -> dict:
    """Parameter counts the useful-FLOPs formula needs (see the module docstring)."""
    import torch

    model = trainer.model
    head = model.get_output_embeddings()
    frozen = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            if ".lora_A." in name or ".lora_B." in name:
                lora += module.weight.numel()
            else:
                frozen += module.weight.numel()
    return {"frozen": 0 if opts["full_finetune"] else frozen, "full": frozen if opts["full_finetune"] else 0,
            "lora": lora, "vocab_hidden": head.weight.numel(), "layers": model.config.num_hidden_layers,
            "hidden": model.config.hidden_size}


def useful_flops(counts: dict, lengths: list[int], computed_tokens: int, answer_tokens: int) -> float:
    """FLOPs a step needs (module docstring); a shared prompt prefix counts once (computed_tokens)."""
    per_token = 4 * counts["frozen"] + 6 * counts["full"] + 6 * counts["lora"]
    attention = sum(12 * counts["layers"] * counts["hidden"] * n * n for n in lengths)
    head = (6 if counts["full"] else 4) * counts["vocab_hidden"] * answer_tokens
    return per_token * computed_tokens + attention + head


def prepare(key: str, opts: dict, records: list[dict], cfg: TrainBenchConfig, steps: int) -> dict:
    """A variant ready to step: trainer, (compiled) model, optimizer, data iterator, batch log."""
    import torch

    tokenizer = models.load_tokenizer(models.resolve(cfg.base_model))
    examples = training.build_examples(records, opts["cite_section"])
    rows = training.tokenize_examples(examples, tokenizer, cfg.max_length).rows
    rows = rows * math.ceil(steps * opts["batch_size"] / len(rows))  # no epoch end inside the run
    trainer = build_trainer(opts, rows, cfg, steps)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    model = torch.compile(trainer.model) if opts["compile"] else trainer.model
    return {"key": key, "opts": opts, "trainer": trainer, "model": model,
            "data": iter(trainer.get_train_dataloader()), "threads": variant_threads(opts, cfg),
            "counts": flop_counts(trainer, opts), "steps": [],
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}


def step(variant: dict) -> dict:
    """One optimizer step of a prepared variant, as the Trainer's loop does it; its wall and CPU time."""
    import torch

    trainer, model = variant["trainer"], variant["model"]
    torch.set_num_threads(variant["threads"])
    started, cpu_started = time.perf_counter(), time.process_time()
    batch = next(variant["data"])
    items = trainer._get_num_items_in_batch([batch], trainer.args.device)
    training.FLOAT32_CPU_ATTENTION = variant["opts"]["float32_attention"]
    training.SPLIT_SAVING = variant["opts"]["split_saving"]
    # train.py's Trainer autocasts through accelerate's wrapped forward, which calling training_step skips
    with torch.autocast(trainer.args.device.type, dtype=torch.bfloat16, enabled=variant["opts"]["bf16"]):
        loss = trainer.training_step(model, batch, items)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    model.zero_grad(set_to_none=True)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["position_ids"].shape[1]]
    computed = training.share_prompt_prefix(batch) if shares_prefix(variant["opts"]) else batch
    record = {"lengths": [b - a for a, b in zip(starts, starts[1:])], "computed": computed["input_ids"].shape[1],
              "answer_tokens": int((batch["labels"] != training.IGNORE_INDEX).sum()),
              "seconds": seconds, "cpu_seconds": cpu_seconds, "loss": float(loss)}
    variant["steps"].append(record)
    return record


def interleaved(keys: list[str], options: dict, records: list[dict], cfg: TrainBenchConfig) -> dict:
    """Warm up every variant, then cfg.rounds rounds; in a round the variants take turns, one step at a
    time (order rotated every round), until each has trained on the same number of examples.

    The matmul peak is measured in between as well (same process and threads), so it sees the same
    load as the steps; MFU uses the best peak of the whole run.
    """
    largest = max(options[key]["batch_size"] for key in keys)
    per_round = {key: max(1, largest // options[key]["batch_size"]) for key in keys}
    variants = {key: prepare(key, options[key], records, cfg, 1 + cfg.rounds * per_round[key]) for key in keys}
    thread_counts = sorted({v["threads"] for v in variants.values()})
    peaks = {n: [] for n in thread_counts}

    def measure_peaks() -> None:
        for n in thread_counts:
            peaks[n].append(common.matmul_peak_gflops(n, size=2048, seconds=1.0))

    for key in keys:
        record = step(variants[key])
        print(f"  warm-up {key}: {record['seconds']:.1f} s", flush=True)
    measure_peaks()
    for round_no in range(cfg.rounds):
        order = keys[round_no % len(keys):] + keys[:round_no % len(keys)]
        for turn in range(max(per_round.values())):
            for key in order:
                if turn < per_round[key]:
                    step(variants[key])
        measure_peaks()
        print(f"  round {round_no + 1}/{cfg.rounds}: " + ", ".join(
            f"{key} {sum(s['seconds'] for s in variants[key]['steps'][-per_round[key]:]):.1f} s" for key in keys)
            + "; matmul peak " + ", ".join(f"{peaks[n][-1]:.0f}" for n in thread_counts) + " GFLOP/s", flush=True)
    out = {"matmul_peaks": peaks}
    for key, variant in variants.items():
        first, timed = variant["steps"][0], variant["steps"][1:]
        wall = sum(s["seconds"] for s in timed)
        cpu = sum(s["cpu_seconds"] for s in timed)
        tokens = sum(sum(s["lengths"]) for s in timed)
        flops = sum(useful_flops(variant["counts"], s["lengths"], s["computed"], s["answer_tokens"]) for s in timed)
        out[key] = {"variant": key, "threads": variant["threads"], "timed_steps": len(timed), "tokens": tokens,
                    "computed_tokens": sum(s["computed"] for s in timed),
                    "answer_tokens": sum(s["answer_tokens"] for s in timed), "seconds": wall, "cpu_seconds": cpu,
                    "first_step_seconds": first["seconds"], "tokens_per_s": tokens / wall,
                    "tokens_per_cpu_s": tokens / cpu, "useful_gflops_per_s": flops / wall / 1e9,
                    "step_seconds": [s["seconds"] for s in variant["steps"]], "losses": [s["loss"] for s in variant["steps"]],
                    "trainable_params": variant["trainable_params"], **variant["counts"]}
    return out


def lone_peak_rss(key: str, opts: dict, records: list[dict], cfg: TrainBenchConfig) -> dict:
    """Build one variant alone and train two steps (run in a fresh process: its peak RSS is its own)."""
    variant = prepare(key, opts, records, cfg, 2)
    step(variant)
    step(variant)
    return {"variant": key}


# --- Where the time goes (torch.profiler) ---

PARTS = ["LM head + loss", "LoRA layers", "frozen linear", "attention", "decoder other", "optimizer", "rest"]


def profile_parts(key: str, opts: dict, records: list[dict], cfg: TrainBenchConfig, steps: int = 2) -> dict:
    """Seconds per part over `steps` profiled steps after a warm-up step; see PARTS."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    variant = prepare(key, opts, records, cfg, 1 + steps)
    trainer, model = variant["trainer"], variant["trainer"].model
    head = model.get_output_embeddings()
    open_labels: list = []

    def label(module: torch.nn.Module, name: str) -> None:
        def enter(*_):
            open_labels.append(record_function(name))
            open_labels[-1].__enter__()

        def leave(*_):
            open_labels.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)

    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
            label(module, "LoRA layers")
        elif leaf == "base_layer" or (isinstance(module, torch.nn.Linear) and module is not head
                                      and ".lora_A." not in name and ".lora_B." not in name):
            label(module, "frozen linear")
        elif leaf == "self_attn":
            label(module, "attention")
        elif type(module).__name__.endswith("Model") and hasattr(module, "layers"):
            label(module, "decoder other")
    original_compute_loss = trainer.compute_loss

    def labelled_compute_loss(*args, **kwargs):  # what is not the decoder inside it: the head and the loss
        with record_function("LM head + loss"):
            return original_compute_loss(*args, **kwargs)

    trainer.compute_loss = labelled_compute_loss
    step(variant)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            step(variant)
        seconds = time.perf_counter() - started
    events = profiler.events()
    top = sorted(events.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return {"variant": key, "seconds": seconds, "steps": steps, "parts": _split_by_part(events, seconds),
            "top_ops": [(e.key, e.count, e.self_cpu_time_total / 1e6) for e in top if e.key not in PARTS][:25]}


def _split_by_part(events, total_seconds: float) -> dict:
    """Self time of every op, charged to the nearest labelled ancestor; backward ops to their forward op's label."""
    def own_label(event) -> str | None:
        if event.name in PARTS:
            return event.name
        if event.name.startswith("Optimizer."):
            return "optimizer"
        return None

    forward_label: dict[int, str] = {}
    backward_label: dict[int, str] = {}

    def enclosing(event) -> str | None:
        while event is not None:
            found = own_label(event) or backward_label.get(id(event))
            if found:
                return found
            event = event.cpu_parent
        return None

    for event in events:
        if event.sequence_nr >= 0 and not event.name.startswith("autograd::"):
            found = enclosing(event)
            if found and event.sequence_nr not in forward_label:
                forward_label[event.sequence_nr] = found
    for event in events:
        if event.name.startswith("autograd::engine::evaluate_function") and event.sequence_nr in forward_label:
            backward_label[id(event)] = forward_label[event.sequence_nr]
    parts = dict.fromkeys(PARTS, 0.0)
    for event in events:
        part = enclosing(event)
        if part and event.name not in PARTS:  # an annotation's own time is Python between ops: left to "rest"
            parts[part] += event.self_cpu_time_total / 1e6
    parts["rest"] = max(0.0, total_seconds - sum(v for k, v in parts.items() if k != "rest"))
    return parts


# --- Loss parity: the same tokens through the baseline and the defaults ---

def parity_run(key: str, opts: dict, records: list[dict], cfg: TrainBenchConfig) -> dict:
    """Train on one split for cfg.parity_epochs with train.py's schedule (cosine, 5% warm-up); losses."""
    import torch

    torch.set_num_threads(variant_threads(opts, cfg))
    tokenizer = models.load_tokenizer(models.resolve(cfg.base_model))
    train_records, eval_records = training.split_records(records[:cfg.parity_records], 0.15)
    rows = training.tokenize_examples(training.build_examples(train_records), tokenizer, cfg.max_length).rows
    eval_rows = training.tokenize_examples(training.build_examples(eval_records), tokenizer, cfg.max_length).rows
    steps = math.ceil(len(rows) / opts["batch_size"] * cfg.parity_epochs)
    trainer = build_trainer(opts, rows, cfg, steps, eval_rows=eval_rows, schedule="cosine")
    before = trainer.evaluate()["eval_loss"]
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    after = trainer.evaluate()["eval_loss"]
    history = [h for h in trainer.state.log_history if "loss" in h]
    last_epoch = [h["loss"] for h in history if h["epoch"] > cfg.parity_epochs - 1 + 1e-9]
    tokens = round(sum(len(r["input_ids"]) for r in rows) * steps * opts["batch_size"] / len(rows))  # examples seen
    return {"variant": key, "steps": steps, "seconds": seconds, "tokens": tokens, "eval_loss_before": before,
            "eval_loss_after": after, "last_epoch_train_loss": sum(last_epoch) / max(1, len(last_epoch)),
            "train_losses": [h["loss"] for h in history]}


def parity(cfg: TrainBenchConfig, records: list[dict], source: str, defaults: dict) -> None:
    rows, runs = [], []
    for key in dict.fromkeys(cfg.parity_variants):
        result = common.in_fresh_process(parity_run, key, variant_options(key, defaults), records, cfg)
        runs.append(result)
        rows.append({"variant": VARIANTS[key][0], "steps": result["steps"], "tokens": result["tokens"],
                     "seconds": result["seconds"], "tokens/s": result["tokens"] / result["seconds"],
                     "eval loss before": result["eval_loss_before"], "eval loss after": result["eval_loss_after"],
                     "last-epoch train loss": result["last_epoch_train_loss"], "peak RSS MiB": result["peak_rss_mb"]})
        print(f"  {key}: eval loss {result['eval_loss_before']:.3f} -> {result['eval_loss_after']:.3f}, "
              f"{result['seconds']:.0f} s", flush=True)
    print(common.table(rows))
    common.report("train-parity", {"config": config.as_dict(cfg), "records": source, "rows": rows, "runs": runs})


def main(cfg: TrainBenchConfig) -> None:
    config.show(cfg)
    if cfg.rounds < 1:
        raise config.UserError("--rounds must be >= 1")
    records, source = load_records(cfg)
    defaults = train_defaults()
    print(f"{len(records)} records from {source}; CPU {common.cpu_model()}; native bf16: {training.cpu_has_native_bf16()}",
          flush=True)
    if cfg.parity:
        return parity(cfg, records, source, defaults)
    keys = list(dict.fromkeys(cfg.variants))
    if defaults["bf16"] is False:
        for key in [k for k in ("fp32", "bf16-attention") if k in keys]:
            print(f"{key}: skipped, train.py does not autocast to bf16 here (no native bf16: no avx512_bf16 / amx_bf16 "
                  "flag), so it is the defaults", flush=True)
            keys.remove(key)
    if not keys:
        raise config.UserError("no variant left to run")
    options = {key: variant_options(key, defaults) for key in keys}
    thread_counts = sorted({variant_threads(o, cfg) for o in options.values()})
    peaks = {n: [common.matmul_peak_gflops(n, size=2048, seconds=2.0)] for n in thread_counts}

    results = common.in_fresh_process(interleaved, keys, options, records, cfg)
    results.pop("peak_rss_mb", None)  # the side-by-side process holds every variant: not one variant's figure
    for n in thread_counts:
        peaks[n] += results["matmul_peaks"][n]
        peaks[n].append(common.matmul_peak_gflops(n, size=2048, seconds=2.0))
    for n in thread_counts:
        print(f"fp32 matmul peak, {n} thread(s), 2048^3: {max(peaks[n]):.0f} GFLOP/s (best of: before "
              f"{peaks[n][0]:.0f}, between rounds {', '.join(f'{p:.0f}' for p in peaks[n][1:-1])}, after {peaks[n][-1]:.0f})",
              flush=True)
    rss = {}
    for key in [k for k in dict.fromkeys(cfg.rss_variants) if k in keys]:
        rss[key] = common.in_fresh_process(lone_peak_rss, key, options[key], records, cfg)["peak_rss_mb"]
        print(f"  peak RSS {key} (alone, 2 steps): {rss[key]:.0f} MiB", flush=True)

    first = results[keys[0]]
    rows = []
    for key in keys:
        r = results[key]
        rows.append({"variant": VARIANTS[key][0], "threads": r["threads"], "tokens/s": r["tokens_per_s"],
                     f"x {keys[0]}": r["tokens_per_s"] / first["tokens_per_s"],
                     f"CPU-time x {keys[0]}": r["tokens_per_cpu_s"] / first["tokens_per_cpu_s"],
                     "MFU %": 100 * r["useful_gflops_per_s"] / max(peaks[r["threads"]]),
                     "peak RSS MiB": rss.get(key, ""), "1st step s": r["first_step_seconds"],
                     "trainable M": r["trainable_params"] / 1e6})
    print(f"{cfg.rounds} timed rounds, variants interleaved step by step; tokens/s = real tokens of the examples / wall seconds")
    print(common.table(rows))
    report = {"config": config.as_dict(cfg), "records": source, "matmul_peak_gflops": peaks, "rows": rows,
              "runs": results, "peak_rss_mb": rss, "native_bf16": training.cpu_has_native_bf16()}
    if "baseline" in keys and "default" in keys:
        speedup = results["default"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
        mfu = rows[keys.index("default")]["MFU %"]
        print(common.goal(f"train.py defaults >= {GOAL_SPEEDUP}x the 22841b0 defaults in tokens/s (measured {speedup:.2f}x)",
                          speedup >= GOAL_SPEEDUP))
        print(common.goal(f"MFU >= {100 * GOAL_MFU:.0f}% (measured {mfu:.0f}%)", mfu / 100 >= GOAL_MFU))
        report["ratios"] = {"default / baseline (tokens/s)": speedup}
    if cfg.profile:
        # Uncompiled: the profiler's labels would be traced by torch.compile (and recompile it).
        report["profile"] = [common.in_fresh_process(profile_parts, key, {**options[key], "compile": False}, records, cfg)
                             for key in keys]
        print(common.table([{"variant": VARIANTS[p["variant"]][0], "profiled s": p["seconds"],
                             **{f"{name} %": 100 * p["parts"][name] / p["seconds"] for name in PARTS}}
                            for p in report["profile"]]))
    common.report("train", report)


if __name__ == "__main__":
    config.run(main, TrainBenchConfig)
