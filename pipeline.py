"""The whole pipeline in one command: parse, generate, preprocess, quality, train, evaluate, deploy.

    uv run python pipeline.py                                  # the bundled sample, embedded defaults
    uv run python pipeline.py --pdf handbook.pdf --pdf leave.pdf
    uv run python pipeline.py --from train --train.epochs 6    # rerun from training, with a stage flag
    uv run python pipeline.py --force                          # rerun everything

Each stage is its own script, run here as a subprocess exactly as a user would run it. A stage is
skipped when its outputs exist, are newer than its inputs, and its command line is unchanged since
it last succeeded (recorded in <data-dir>/pipeline_state.json). Stage flags pass through as
`--<stage>.<flag> value` (e.g. `--generate.questions-per-fact 4`); POLICYTUNE_* environment variables
reach every stage.
"""
from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from policytune import config, deploy, io

STAGE_NAMES = ["parse", "generate", "preprocess", "quality", "train", "evaluate", "deploy"]
ROOT = Path(__file__).resolve().parent  # the stage scripts, the prompts and the sample's gold set live here
# What a full fine-tune (--train.method full) writes in place of the adapter's files.
FULL_MODEL_FILES = {"adapter_model.safetensors": "model.safetensors", "adapter.gguf": "model.gguf"}


@dataclass
class PipelineConfig(config.Base):
    pdf: list[str] = field(default_factory=lambda: ["data/sample_policy.pdf"], metadata={"help": "policy document(s): PDF, DOCX, HTML or Markdown; several: --pdf docs/*.pdf, the flag repeated, or comma-separated"})
    reports_dir: str = field(default="reports", metadata={"help": "where evaluation reports go"})
    force: bool = field(default=False, metadata={"help": "rerun every selected stage even if up to date"})
    from_stage: str = field(default="parse", metadata={"help": "first stage to run", "choices": STAGE_NAMES})
    to_stage: str = field(default="deploy", metadata={"help": "last stage to run", "choices": STAGE_NAMES})


@dataclass
class Stage:
    name: str
    command: list[str]  # a script and its flags, or "-m", a module and its flags
    inputs: list[Path]
    outputs: list[Path]
    # The config class the script reads its flags into: the pipeline reads them the same way before the first
    # stage runs (`stage_config`), so a flag the train stage cannot read stops it then, not after generation.
    config: str
    settings: config.Base | None = None  # what `stage_config` read, kept so each command line is read once
    # Inputs compared by their content, not only their time: a user's document replaced by one with an older
    # modification time (`cp -p`, an unpacked archive) is still a new document.
    by_content: bool = False


def plan(cfg: PipelineConfig, extra: dict[str, list[str]]) -> list[Stage]:
    """The stages in order, with their command lines and the files that decide whether to rerun."""
    data, ckpt, reports = Path(cfg.data_dir), Path(cfg.checkpoint_dir), Path(cfg.reports_dir)
    common = ["--data-dir", cfg.data_dir, "--checkpoint-dir", cfg.checkpoint_dir]
    # "--pdf=-x.pdf": a file name that starts with a dash is not read as a flag by the stage
    pdfs = [arg for p in cfg.pdf for arg in ((f"--pdf={p}",) if p.startswith("-") else ("--pdf", p))]
    prompts = ROOT / "generated_prompt.py"  # users edit it by hand: an edit reruns generation and judging
    stages = [
        Stage("parse", ["syntheticdatageneration.py", *common, *pdfs, "--parse-only"], [Path(p) for p in cfg.pdf],
              [data / "chunks.json"], "GenerationConfig", by_content=True),
        Stage("generate", ["syntheticdatageneration.py", *common, *pdfs, "--reuse-chunks"], [data / "chunks.json", prompts],
              [data / "syntheticdata.json", data / "facts.json"], "GenerationConfig"),
        Stage("preprocess", ["preprocessing.py", *common], [data / "syntheticdata.json", data / "chunks.json"],
              [data / "instructions.json"], "PreprocessConfig"),
        Stage("quality", ["dataquality.py", *common], [data / "instructions.json", prompts],
              [data / "instructionquality.json", data / "quality_report.json"], "QualityConfig"),
        Stage("train", ["train.py", *common], [data / "instructionquality.json", data / "facts.json"],
              [ckpt / "adapter_model.safetensors", ckpt / "metrics.json", data / "eval_split.json"], "TrainConfig"),
        Stage("evaluate", ["evaluate.py", *common, "--reports-dir", cfg.reports_dir],
              [ckpt / "adapter_model.safetensors", data / "eval_split.json", ROOT / "sample" / "gold.jsonl"],
              [reports / "eval.json"], "EvalConfig"),
        Stage("deploy", ["-m", "policytune.deploy", *common, "--verify"], [ckpt / "adapter_model.safetensors"],
              [ckpt / "adapter.gguf"], "DeployConfig"),
    ]
    for stage in stages:
        stage.command += extra.get(stage.name, [])
    # A full fine-tune saves and deploys a whole model, not an adapter: without its file names the train and deploy
    # stages would never look finished, and every rerun of the pipeline would train again.
    if stage_config(stages[STAGE_NAMES.index("train")]).method == "full":
        def whole_model(paths: list[Path]) -> list[Path]:
            return [ckpt / FULL_MODEL_FILES.get(p.name, p.name) if p.parent == ckpt else p for p in paths]
        for stage in stages:
            stage.inputs, stage.outputs = whole_model(stage.inputs), whole_model(stage.outputs)
    # deploy writes the Modelfile where its own flags, a --config file or POLICYTUNE_MODELFILE say
    deploy_cfg = stage_config(stages[-1])
    stages[-1].outputs.append(deploy.modelfile_path(deploy_cfg.modelfile, deploy_cfg.checkpoint_dir))
    return stages


def stage_config(stage: Stage) -> config.Base:
    """The config a stage will run with, read from its command line as the stage reads it."""
    if stage.settings is None:
        as_module = stage.command[0] == "-m"
        module = importlib.import_module(stage.command[1]) if as_module else config.load_script(ROOT / stage.command[0])
        try:
            stage.settings = config.parse(getattr(module, stage.config), stage.command[2 if as_module else 1:])
        except config.UserError as exc:
            raise config.UserError(f"{stage.name} stage: {exc}") from None
    return stage.settings


def fingerprint(stage: Stage) -> str:
    """What decides a stage's output besides its inputs' times: its command line, the environment its config reads,
    and the content of inputs compared by content. The API key is left out on purpose: it must not be stored, and
    it does not change results."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(config.ENV_PREFIX) or k in ("OPENAI_BASE_URL", "OPENAI_MODEL")}
    contents = [io.file_sha256(p) if p.is_file() else None for p in stage.inputs] if stage.by_content else []
    return io.content_hash(stage.command, sorted(env.items()), *contents)


def up_to_date(stage: Stage, state: dict) -> bool:
    if state.get(stage.name) != fingerprint(stage):
        return False
    if not all(p.exists() for p in stage.outputs):
        return False
    newest_input = max((p.stat().st_mtime for p in stage.inputs if p.exists()), default=0.0)
    return min(p.stat().st_mtime for p in stage.outputs) >= newest_input


def runnable(command: list[str]) -> list[str]:
    """The stage's command as run and shown: its script found beside this one when the pipeline runs from another
    folder (the stage's files stay relative to where the user is)."""
    if command[0] != "-m" and Path.cwd().resolve() != ROOT:
        return [str(ROOT / command[0]), *command[1:]]
    return command


def split_stage_flags(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Separate `--<stage>.<flag> [value]` pass-through flags from the pipeline's own flags."""
    own: list[str] = []
    extra: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        arg = {"--from": "--from-stage", "--to": "--to-stage"}.get(argv[i], argv[i])
        name = arg[2:].split(".", 1)[0] if arg.startswith("--") else ""
        if name in STAGE_NAMES and "." in arg:
            flag = "--" + arg.split(".", 1)[1]
            flag, eq, value = flag.partition("=")
            extra.setdefault(name, []).append(flag)
            if eq:
                extra[name].append(value)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                extra[name].append(argv[i + 1])
                i += 1
        else:
            own.append(arg)
        i += 1
    return own, extra


def headline(reports_dir: Path) -> None:
    path = reports_dir / "eval.json"
    if not path.exists():
        return
    report = json.loads(path.read_text())
    splits = report.get("splits") or {"held_out": {"metrics": report.get("metrics", {})}}
    keys = ["answerable_accuracy", "refusal_recall", "false_refusal_rate", "hallucination_rate"]
    for split, body in splits.items():
        metrics = body.get("metrics", {})
        print(f"\nheadline ({split.replace('_', '-')} questions, closed-book):")
        print(f"  {'metric':<22}{'base':>8}{'tuned':>8}")
        for key in keys:
            base, tuned = metrics.get("base", {}).get(key), metrics.get("tuned", {}).get(key)
            if base is not None and tuned is not None:
                print(f"  {key:<22}{base:>8.2f}{tuned:>8.2f}")


def main(cfg: PipelineConfig, extra: dict[str, list[str]]) -> None:
    config.show(cfg)
    stages = plan(cfg, extra)
    for stage in stages:
        if stage.name in extra:
            stage_config(stage)
    first, last = STAGE_NAMES.index(cfg.from_stage), STAGE_NAMES.index(cfg.to_stage)
    if first > last:
        raise config.UserError(f"--from-stage {cfg.from_stage} comes after --to-stage {cfg.to_stage}")
    state_path = Path(cfg.data_dir) / "pipeline_state.json"
    state = io.read_json(state_path, "pipeline state") if state_path.exists() else {}
    if not isinstance(state, dict):
        raise config.UserError(f"{state_path}: pipeline state file must hold a JSON object (delete it to rerun every stage)")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    for index, stage in enumerate(stages):
        if not first <= index <= last:
            continue
        if not cfg.force and up_to_date(stage, state):
            print(f"== {stage.name}: up to date, skipped", flush=True)
            continue
        print(f"== {stage.name}: {config.redact_url(shlex.join(['python', *runnable(stage.command)]))}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, *runnable(stage.command)])
        timings[stage.name] = round(time.perf_counter() - t0, 1)
        if code != 0:
            print(f"pipeline stopped at stage '{stage.name}' (exit {code}); finished stages are kept and "
                  "skipped on the next run", file=sys.stderr, flush=True)
            raise SystemExit(code)
        state[stage.name] = fingerprint(stage)
        io.write_json_atomic(state_path, state)
        # A rerun stage makes every later stage stale, even if its output did not change.
        for later in stages[index + 1:]:
            state.pop(later.name, None)
    total = time.perf_counter() - started
    print(f"\npipeline finished in {total:.0f}s; stage times: {timings or 'all skipped'}")
    # what the stages run up to --to-stage wrote: a later stage's files, if any, are an earlier run's
    trained = next(s for s in stages if s.name == "train").outputs[0]
    shown = {"train": [("model:" if trained.name == "model.safetensors" else "adapter:", trained)],
             "evaluate": [("report:", Path(cfg.reports_dir) / "eval.html")],
             "deploy": [("gguf:", stages[-1].outputs[0]), ("Modelfile:", stages[-1].outputs[-1].resolve())]}
    for name, files in shown.items():
        for label, path in files if STAGE_NAMES.index(name) <= last else []:
            print(f"  {label:<11}{path}")
    if last >= STAGE_NAMES.index("evaluate"):
        headline(Path(cfg.reports_dir))


if __name__ == "__main__":
    own_argv, stage_flags = split_stage_flags(sys.argv[1:])
    config.run(lambda cfg: main(cfg, stage_flags), PipelineConfig, own_argv)
