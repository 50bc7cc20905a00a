"""Evaluation benchmark: answers per second of evaluate.py's generation, batched vs one by one.

    uv run python bench/evaluate.py                         # 16 questions, batch 8 vs 1, 1 thread
    uv run python bench/evaluate.py --questions 64 --batch-size 16 --threads 2

Uses evaluate.py's own `generate` (greedy, left-padded batches, stops at <|im_end|>) on the same
questions and model for both variants, interleaved (batched, one-by-one, batched, ...) in one
process, best of each kept. The model is base + the trained adapter when checkpoints/ has one,
else base + a fresh LoRA adapter of train.py's shape (the same compute: LoRA B starts at zero).
Questions come from data/eval_split.json when it exists, else a fixed list of HR questions.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import common

from policytune import answers as answers_lib
from policytune import config, io, models



@dataclass
class EvalBenchConfig(config.Base):
    questions: int = field(default=16, metadata={"help": "number of questions (eval split first, then the built-in list, repeated)"})
    batch_size: int = field(default=8, metadata={"help": "batch size of the batched variant (evaluate.py's default is 8)"})
    max_new_tokens: int = field(default=48, metadata={"help": "answer length cap (evaluate.py's default)"})
    rounds: int = field(default=2, metadata={"help": "interleaved rounds of (batched, one-by-one); best of each kept"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1: the other core is busy on a shared machine)"})
    adapter: str = field(default="", metadata={"help": "adapter folder (default: --checkpoint-dir when it has one, else a fresh LoRA)"})


def pick_questions(cfg: EvalBenchConfig) -> list[str]:
    split = cfg.data_path("eval_split.json")
    pool = [r["instruction"] for r in io.read_records(split, "eval split")] if split.is_file() else []
    pool += common.QUESTIONS
    return [pool[i % len(pool)] for i in range(cfg.questions)]


def load_model(cfg: EvalBenchConfig, stage):
    """The model evaluate.py would use: base + adapter (trained, or a fresh one of the same shape)."""
    adapter = Path(cfg.adapter or cfg.checkpoint_dir)
    if (adapter / "adapter_config.json").is_file():
        folder, base = stage.find_adapter(stage.EvalConfig(adapter=str(adapter)))
        return stage.load_tuned(base, folder, "auto"), base, str(folder)
    from peft import LoraConfig, get_peft_model

    base = models.resolve()
    lora = LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return get_peft_model(models.load_model(base), lora).eval(), base, "fresh LoRA r=16 (no checkpoint found)"


def main(cfg: EvalBenchConfig) -> None:
    config.show(cfg)
    try:
        stage = common.load_stage("evaluate.py")
    except (SystemExit, ImportError) as exc:
        raise config.UserError(f"evaluate.py is not ready yet (issue 7: {exc}): nothing to benchmark") from None

    import torch

    torch.set_num_threads(cfg.threads)
    model, base, adapter = load_model(cfg, stage)
    tokenizer = models.load_tokenizer(base)
    questions = pick_questions(cfg)
    print(f"{len(questions)} questions, {adapter}, {cfg.threads} thread(s)", flush=True)
    answers_lib.greedy(model, tokenizer, questions[:2], 2, 4, "warm-up")

    variants = {f"batched ({cfg.batch_size})": cfg.batch_size, "one by one": 1}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    tokens: dict[str, int] = {}
    for round_no in range(cfg.rounds):
        for name, batch_size in variants.items():
            started = time.perf_counter()
            answers = answers_lib.greedy(model, tokenizer, questions, batch_size, cfg.max_new_tokens, name)
            seconds[name].append(time.perf_counter() - started)
            tokens[name] = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
            print(f"  round {round_no + 1} {name}: {seconds[name][-1]:.1f}s", flush=True)

    rows = [{"variant": name, "questions": len(questions), "best seconds": min(s),
             "answers/s": len(questions) / min(s), "answer tokens/s": tokens[name] / min(s)}
            for name, s in seconds.items()]
    print(common.table(rows))
    speedup = rows[0]["answers/s"] / rows[1]["answers/s"]
    print(f"ratio batched / one by one (answers/s): {speedup:.2f}x", flush=True)
    common.report("evaluate", {"config": config.as_dict(cfg), "model": base.name, "adapter": adapter, "rows": rows,
                               "ratios": {"batched / one by one (answers/s)": speedup}, "seconds": seconds})


if __name__ == "__main__":
    config.run(main, EvalBenchConfig)
