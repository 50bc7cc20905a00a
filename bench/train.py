"""Training benchmark: tokens/s, peak RSS, padding and model FLOP utilisation (MFU) of train.py's
default batching (padding-free: a batch is one concatenated sequence) against a naive baseline
(every example padded to --max-length), same model, LoRA, data and number of steps.

    uv run python bench/train.py                          # 3 steps each (1 warm-up), batch 4, 1 thread
    uv run python bench/train.py --steps 10 --batch-size 8 --threads 2 --rounds 2

Each variant trains in its own fresh process (its peak RSS is its own) with TRL's SFTTrainer set up
as train.py sets it up (LoRA r=64 on all linear layers, completion-only loss, same tokenisation via
policytune.training). The first step is a warm-up and is not timed. Tokens/s counts real tokens
only (padding is work, not progress). The fp32 matmul peak is measured in this run, before and
after training, with the same thread count; MFU = useful FLOP/s / best peak, where useful FLOPs
per real token = 4 x (frozen matmul parameters) (forward + input gradients; no weight gradients)
+ 6 x (LoRA parameters) + 12 x layers x hidden x sequence length (attention scores and values,
forward and backward). HFU counts the padded tokens too. Goals: >= 2x tokens/s, >= 50% MFU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import common

from policytune import config, io, models, training

GOAL_SPEEDUP = 2.0
GOAL_MFU = 0.5
VARIANTS = ("padding-free (train.py default)", "padded to max length (naive)")


@dataclass
class TrainBenchConfig(config.Base):
    steps: int = field(default=3, metadata={"help": "optimizer steps per variant (the first is an untimed warm-up)"})
    batch_size: int = field(default=4, metadata={"help": "examples per step (train.py's default is 8; 4 keeps the naive run within 10 minutes here)"})
    max_length: int = field(default=384, metadata={"help": "train.py's --max-length: the naive baseline pads to it"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank (train.py's default)"})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha (train.py's default)"})
    threads: int = field(default=1, metadata={"help": "torch threads (1: comparable on a shared box; train.py uses every physical core)"})
    rounds: int = field(default=1, metadata={"help": "interleaved rounds of the two variants; best of each kept"})
    input: str = field(default="", metadata={"help": "instruction records (default: data/train_split.json or instructionquality.json, else built-in)"})


def builtin_records(n: int = 64) -> list[dict]:
    """Policy-like Q/A pairs with answers of varied length, as a real split has (refusals included)."""
    from policytune import chat

    records = []
    for i in range(n):
        question = common.QUESTIONS[i % len(common.QUESTIONS)]
        if i % 4 == 3:
            answer = chat.REFUSAL
        else:
            clauses = 1 + (i * 7) % 6  # 1-6 clauses: 10 to 70 answer tokens
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


def attention_dims(model) -> tuple[int, int]:
    return model.config.num_hidden_layers, model.config.hidden_size


def measure(variant: str, records: list[dict], cfg: TrainBenchConfig) -> dict:
    """Train cfg.steps steps with one variant's batching; time steps 2..N from inside the trainer."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(cfg.threads)
    padding_free = variant == VARIANTS[0]
    base = models.resolve()
    tokenizer = models.load_tokenizer(base)
    tokenized = training.tokenize_examples(training.build_examples(records), tokenizer, cfg.max_length)
    model = models.load_model(base)
    frozen_matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    layers, hidden = attention_dims(model)
    args = SFTConfig(
        output_dir=str(common.RESULTS / "train-scratch"), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=5e-4, lr_scheduler_type="constant", logging_steps=10 ** 6, save_strategy="no", report_to="none",
        # The two variants differ only here: concatenate the batch, or pad every row to max_length.
        padding_free=padding_free, packing=False, completion_only_loss=True,
        max_length=None if padding_free else cfg.max_length, pad_to_multiple_of=None if padding_free else cfg.max_length,
        use_cpu=not torch.cuda.is_available(), seed=42, data_seed=42, disable_tqdm=True, dataloader_pin_memory=False)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules="all-linear")
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, peft_config=lora,
                         train_dataset=Dataset.from_list(tokenized.rows))
    lora_params = trainer.model.get_nb_trainable_parameters()[0]

    batches: list[dict] = []
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        if "attention_mask" in batch:
            real = batch["attention_mask"].sum(dim=1).tolist()
        elif "position_ids" in batch:  # padding-free: one row, each example restarts its positions at 0
            starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["position_ids"].shape[1]]
            real = [b - a for a, b in zip(starts, starts[1:])]
        else:
            real = [batch["input_ids"].shape[1]] * batch["input_ids"].shape[0]
        batches.append({"computed": batch["input_ids"].numel(), "real": sum(real), "lengths": real,
                        "row_length": batch["input_ids"].shape[1]})
        return batch

    trainer.data_collator = counting_collator
    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    trainer.add_callback(StepClock())
    trainer.train()

    timed = batches[1:cfg.steps]  # step 1 is the warm-up
    seconds = step_ends[-1] - step_ends[0]
    real = sum(b["real"] for b in timed)
    computed = sum(b["computed"] for b in timed)
    per_token = 4 * frozen_matmul + 6 * lora_params
    # Attention: each example attends over its own length (padding-free) or the padded row (naive).
    useful_flops = sum(n * (per_token + 12 * layers * hidden * n) for b in timed for n in b["lengths"])
    computed_flops = sum(b["computed"] * (per_token + 12 * layers * hidden * b["row_length"]) if not padding_free
                         else b["computed"] * per_token + sum(12 * layers * hidden * n * n for n in b["lengths"])
                         for b in timed)
    return {"variant": variant, "timed_steps": len(timed), "seconds": seconds, "real_tokens": real,
            "computed_tokens": computed, "padding_fraction": 1 - real / computed,
            "tokens_per_s": real / seconds, "useful_gflops_per_s": useful_flops / seconds / 1e9,
            "computed_gflops_per_s": computed_flops / seconds / 1e9, "frozen_matmul_params": frozen_matmul,
            "lora_params": lora_params, "threads": cfg.threads}


def main(cfg: TrainBenchConfig) -> None:
    config.show(cfg)
    if cfg.steps < 2:
        raise config.UserError("--steps must be >= 2 (the first step is an untimed warm-up)")
    records, source = load_records(cfg)
    print(f"{len(records)} records from {source}; {cfg.steps} steps x batch {cfg.batch_size}, {cfg.threads} thread(s)", flush=True)

    peaks = [common.matmul_peak_gflops(cfg.threads)]
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for round_no in range(cfg.rounds):
        for variant in VARIANTS:
            result = common.in_fresh_process(measure, variant, records, cfg)
            runs[variant].append(result)
            print(f"  round {round_no + 1} {variant}: {result['tokens_per_s']:.0f} tokens/s, "
                  f"padding {100 * result['padding_fraction']:.0f}%, peak RSS {result['peak_rss_mb']:.0f} MiB", flush=True)
    peaks.append(common.matmul_peak_gflops(cfg.threads))
    peak = max(peaks)
    print(f"fp32 matmul peak ({cfg.threads} thread(s), 1024x1024): {peak:.0f} GFLOP/s (before/after: "
          f"{peaks[0]:.0f}/{peaks[1]:.0f})", flush=True)

    rows = []
    for variant, results in runs.items():
        fastest = max(results, key=lambda r: r["tokens_per_s"])
        rows.append({"variant": variant, "tokens/s": fastest["tokens_per_s"], "padding %": 100 * fastest["padding_fraction"],
                     "peak RSS MiB": max(r["peak_rss_mb"] for r in results),
                     "useful GFLOP/s": fastest["useful_gflops_per_s"], "MFU %": 100 * fastest["useful_gflops_per_s"] / peak,
                     "HFU %": 100 * fastest["computed_gflops_per_s"] / peak})
    print(common.table(rows))
    speedup = rows[0]["tokens/s"] / rows[1]["tokens/s"]
    print(f"ratio padding-free / naive (tokens/s): {speedup:.2f}x", flush=True)
    print(common.goal(f"training >= {GOAL_SPEEDUP}x the naive baseline in tokens/s", speedup >= GOAL_SPEEDUP))
    print(common.goal(f"MFU >= {100 * GOAL_MFU:.0f}% on CPU (measured {rows[0]['MFU %']:.0f}%)", rows[0]["MFU %"] / 100 >= GOAL_MFU))
    common.report("train", {"config": config.as_dict(cfg), "records": source, "matmul_peak_gflops": peaks, "rows": rows,
                            "ratios": {"padding-free / naive (tokens/s)": speedup}, "runs": runs})


if __name__ == "__main__":
    config.run(main, TrainBenchConfig)
