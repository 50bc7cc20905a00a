"""The whole pipeline in one command: parse, generate, preprocess, quality, train, evaluate, deploy.

    uv run python pipeline.py                                  # the bundled sample, embedded defaults
    uv run python pipeline.py --pdf handbook.pdf --pdf leave.pdf
    uv run python pipeline.py --from train --train.epochs 6    # rerun from training, with a stage flag
    uv run python pipeline.py --force                          # rerun everything

Each stage is its own script, run here as a subprocess exactly as a user would run it. A stage is
skipped when its outputs exist, are newer than its inputs and are the files it wrote when it last succeeded (a
stage run by hand, or by another data folder sharing the checkpoints, has rewritten them), and its settings (as the
stage reads them: flags, POLICYTUNE_* environment, --config files), the files they name and its inputs' content are
unchanged (recorded in <data-dir>/pipeline_state.json). Stage flags pass through as `--<stage>.<flag> value` (e.g.
`--generate.questions-per-fact 4`); POLICYTUNE_* environment variables reach every stage. One pipeline runs on a
data folder at a time.
"""
from __future__ import annotations

import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from policytune import config, deploy, io

STAGE_NAMES = ["parse", "generate", "preprocess", "quality", "train", "evaluate", "deploy"]
ROOT = Path(__file__).resolve().parent  # the stage scripts, the prompts and the sample's gold set live here
# Files at most this large enter a stage's fingerprint by their content; larger ones (a model) by size and time.
HASHED_BYTES = 16 << 20
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


def signature(path: Path) -> list | str | None:
    """A file as a fingerprint sees it: its content's hash, or size and time for one too large to hash each run."""
    if not path.is_file():
        return None
    stat = path.stat()
    return io.file_sha256(path) if stat.st_size <= HASHED_BYTES else [stat.st_size, stat.st_mtime_ns]


def fingerprint(stage: Stage) -> str:
    """What decides a stage's output: its command line, its settings as the stage reads them (so a POLICYTUNE_*
    variable or --config file counts where the stage reads it, and nowhere else), the files those settings name
    (a gold set, a config file, a teacher GGUF), its inputs' content (an edited generated_prompt.py with its time
    kept) and the environment outside its settings that it reads. The API key is left out on purpose: it must not
    be stored, and it does not change results."""
    env = {k: v for k, v in os.environ.items() if k in ("OPENAI_BASE_URL", "OPENAI_MODEL", "DOCLING_ARTIFACTS_PATH")}
    settings = config.as_dict(stage_config(stage))
    named = sorted({v for value in settings.values() for v in (value if isinstance(value, list) else [value])
                    if isinstance(v, str) and v and os.path.isfile(v)})
    return io.content_hash(stage.command, sorted(env.items()), settings, [(n, signature(Path(n))) for n in named],
                           [signature(p) for p in stage.inputs])


def legacy_fingerprint(stage: Stage) -> str:
    """The fingerprint pipeline_state.json held before 2026-12-06: a stage recorded then is not rerun for the
    change of formula alone (the sample's training is 22 minutes)."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(config.ENV_PREFIX) or k in ("OPENAI_BASE_URL", "OPENAI_MODEL")}
    contents = [io.file_sha256(p) if p.is_file() else None for p in stage.inputs] if stage.by_content else []
    return io.content_hash(stage.command, sorted(env.items()), *contents)


def record(stage: Stage) -> dict:
    """What pipeline_state.json keeps of a stage that succeeded: its fingerprint and the files it wrote."""
    return {"fingerprint": fingerprint(stage),
            "outputs": {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in stage.outputs if p.exists()}}


def up_to_date(stage: Stage, state: dict) -> bool:
    entry = state.get(stage.name)
    if isinstance(entry, str):  # recorded before outputs were
        if entry not in (fingerprint(stage), legacy_fingerprint(stage)):
            return False
    elif not isinstance(entry, dict) or entry.get("fingerprint") != fingerprint(stage):
        return False
    if not all(p.exists() for p in stage.outputs):
        return False
    # the files this stage wrote, not the same names rewritten since (a stage run by hand on another document,
    # another data folder's training into the same checkpoints, a run killed between two of its writes)
    if isinstance(entry, dict) and any(entry["outputs"].get(str(p)) != [p.stat().st_size, p.stat().st_mtime_ns]
                                       for p in stage.outputs):
        return False
    newest_input = max((p.stat().st_mtime for p in stage.inputs if p.exists()), default=0.0)
    return min(p.stat().st_mtime for p in stage.outputs) >= newest_input


def run_stage(command: list[str]) -> int:
    """Run a stage and return its exit code. SIGTERM or SIGHUP to the pipeline reach the stage, and the pipeline
    waits for it: the stage went on writing under init, and a rerun started a second copy beside it."""
    child = subprocess.Popen([sys.executable, *command])

    def forward(signum, _frame) -> None:
        child.send_signal(signum)
        stopped.append(signum)

    stopped: list[int] = []
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            code = child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the stage too (one process group); a SIGINT sent to the pipeline alone is passed on
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGINT)
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
            raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        print(f"pipeline stopped by signal {stopped[0]}; the stage was stopped with it, finished stages are kept",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + stopped[0])
    return code


def hold(folder: Path) -> int | None:
    """An exclusive lock on the data folder itself (no file is added to it) for this run, or a one-line error: two
    pipelines at once rewrote each other's files and state (the last to finish recorded a stage with the other's
    settings). Returns the descriptor that holds it until the process ends."""
    try:
        import fcntl
    except ImportError:  # Windows: one run at a time is the user's job there
        return None
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise config.UserError(f"{folder}: another pipeline.py is running on this data folder; wait for it, or use "
                               "another --data-dir") from None
    return descriptor


def unknown_variables(stages: list[Stage]) -> list[str]:
    """POLICYTUNE_* variables that no stage (nor the pipeline) reads: a misspelt one is otherwise ignored."""
    import dataclasses

    known = {config.env_name(f.name) for cls in [PipelineConfig, *(type(stage_config(s)) for s in stages)]
             for f in dataclasses.fields(cls)} | {config.env_name("config")}
    return sorted(k for k in os.environ if k.startswith(config.ENV_PREFIX) and k not in known)


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
    lock = hold(Path(cfg.data_dir))  # noqa: F841  (held until the process ends)
    state_path = Path(cfg.data_dir) / "pipeline_state.json"
    state = io.read_json(state_path, "pipeline state") if state_path.exists() else {}
    if not isinstance(state, dict):
        raise config.UserError(f"{state_path}: pipeline state file must hold a JSON object (delete it to rerun every stage)")
    for name in unknown_variables(stages):
        print(f"warning: {name} is not a setting of any stage: it is ignored (misspelt?)", file=sys.stderr, flush=True)
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
        code = run_stage(runnable(stage.command))
        timings[stage.name] = round(time.perf_counter() - t0, 1)
        if code != 0:
            print(f"pipeline stopped at stage '{stage.name}' (exit {code}); finished stages are kept and "
                  "skipped on the next run", file=sys.stderr, flush=True)
            raise SystemExit(code)
        state[stage.name] = record(stage)
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
