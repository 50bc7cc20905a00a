"""Evaluation benchmark: answers per second of evaluate.py's generation, today's against earlier paths.

    uv run python bench/evaluate.py                         # 64 questions, 2 threads
    uv run python bench/evaluate.py --questions 128 --threads 1

Variants, all through `policytune.answers.greedy` (greedy, stops at <|im_end|>) on the same
questions and model, interleaved in one process (every variant once per round, best of each kept):
  before:     batches of 32 in the order given, left-padded, every prompt computed in full (c260f75)
  generate:   evaluate.py's batch size, by length, the shared system turn computed once per run, every row
              decoded by model.generate until the batch's longest answer ends (2f7fd1b)
  default:    the same, a row leaving its batch when its answer ends
Every variant must give the same answers (greedy decoding of the same prompts); the table counts
the answers that differ from the first variant's. The model is base + the trained adapter when
checkpoints/ has one, else base + a fresh LoRA adapter (the same compute: LoRA B starts at zero).
Questions come from sample/gold.jsonl (an employee's wording), else data/eval_split.json, else a
fixed list of HR questions.
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
    questions: int = field(default=64, metadata={"help": "number of questions (gold set, eval split, then the built-in list)"})
    batch_size: int = field(default=0, metadata={"help": "batch size of the default variant (0: evaluate.py's default)"})
    max_new_tokens: int = field(default=48, metadata={"help": "answer length cap (evaluate.py's default)"})
    rounds: int = field(default=2, metadata={"help": "interleaved rounds of every variant; best of each kept"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads (1: the other core is busy on a shared machine)"})
    adapter: str = field(default="", metadata={"help": "adapter folder (default: --checkpoint-dir when it has one, else a fresh LoRA)"})


def pick_questions(cfg: EvalBenchConfig, gold: Path) -> list[str]:
    split = cfg.data_path("eval_split.json")
    pool = [r["question"] for r in io.read_jsonl(gold)]
    pool += [r["instruction"] for r in io.read_records(split, "eval split")] if split.is_file() else []
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
    questions = pick_questions(cfg, stage.SAMPLE_GOLD)
    print(f"{len(questions)} questions, {adapter}, {cfg.threads} thread(s)", flush=True)
    answers_lib.greedy(model, tokenizer, questions[:2], 2, 4, "warm-up")

    batch_size = cfg.batch_size or stage.EvalConfig().batch_size
    variants = {"before (32, in order)": dict(batch_size=32, by_length=False, share_prefix=False, drop_finished=False),
                f"generate ({batch_size}, by length, shared prefix)": dict(batch_size=batch_size, drop_finished=False),
                f"default ({batch_size}, by length, shared prefix, rows leave when done)": dict(batch_size=batch_size)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    answers: dict[str, list[str]] = {}
    for round_no in range(cfg.rounds):
        names = list(variants)[round_no % len(variants):] + list(variants)[:round_no % len(variants)]
        for name in names:
            opts = dict(variants[name])
            started = time.perf_counter()
            answers[name] = answers_lib.greedy(model, tokenizer, questions, opts.pop("batch_size"), cfg.max_new_tokens,
                                               name, **opts)
            seconds[name].append(time.perf_counter() - started)
            print(f"  round {round_no + 1} {name}: {seconds[name][-1]:.1f}s", flush=True)

    first = answers[next(iter(variants))]
    rows = [{"variant": name, "questions": len(questions), "best seconds": min(s),
             "answers/s": len(questions) / min(s),
             "answer tokens/s": sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers[name]) / min(s),
             "answers unlike the first variant's": sum(a != b for a, b in zip(first, answers[name]))}
            for name, s in seconds.items()]
    print(common.table(rows))
    ratios = {f"{row['variant']} / {rows[0]['variant']} (answers/s)": row["answers/s"] / rows[0]["answers/s"]
              for row in rows[1:]}
    for label, ratio in ratios.items():
        print(f"ratio {label}: {ratio:.2f}x", flush=True)
    common.report("evaluate", {"config": config.as_dict(cfg), "model": base.name, "adapter": adapter, "rows": rows,
                               "ratios": ratios, "seconds": seconds})


if __name__ == "__main__":
    config.run(main, EvalBenchConfig)
