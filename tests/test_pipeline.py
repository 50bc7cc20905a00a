"""pipeline.py: stage flags reach their stage only, --from/--to select stages, a failing stage stops the
run with its exit code and keeps what finished, a corrupt state file is a one-line error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, run_script, stage_module
from policytune import config
from test_preprocessing import write_sample
from test_reliability import assert_one_line_error, snapshot


def _pipeline():
    """pipeline.py imported as a module (it is a script at the project root, not in the package)."""
    return stage_module("pipeline.py")


def test_stage_flags_pass_through_to_their_stage_only():
    pipeline = _pipeline()
    own, extra = pipeline.split_stage_flags(
        ["--train.epochs", "2", "--from", "train", "--generate.pairs-per-chunk=4", "--quality.no-balance",
         "--force", "--to", "evaluate", "--train.learning-rate", "-1e-4", "--data-dir", "d"])
    assert own == ["--from-stage", "train", "--force", "--to-stage", "evaluate", "--data-dir", "d"]
    assert extra == {"train": ["--epochs", "2", "--learning-rate", "-1e-4"], "generate": ["--pairs-per-chunk", "4"],
                     "quality": ["--no-balance"]}

    cfg = config.parse(pipeline.PipelineConfig, own)
    assert (cfg.from_stage, cfg.to_stage, cfg.force, cfg.data_dir) == ("train", "evaluate", True, "d")
    extra["train"][-1] = "1e-4"  # planning reads the train stage's flags, and a negative rate is no rate
    commands = {stage.name: stage.command for stage in pipeline.plan(cfg, extra)}
    assert commands["train"][0] == "train.py" and commands["train"][-4:] == ["--epochs", "2", "--learning-rate", "1e-4"]
    assert commands["generate"][-2:] == ["--pairs-per-chunk", "4"] and commands["quality"][-1] == "--no-balance"
    for name in ("parse", "preprocess", "evaluate", "deploy"):
        assert not {"--epochs", "--pairs-per-chunk", "--no-balance"} & set(commands[name]), name
    # A changed stage flag changes that stage's fingerprint, so the stage reruns.
    again = {s.name: s for s in pipeline.plan(cfg, {**extra, "train": ["--epochs", "3"]})}
    first = {s.name: s for s in pipeline.plan(cfg, extra)}
    assert pipeline.fingerprint(again["train"]) != pipeline.fingerprint(first["train"])
    assert pipeline.fingerprint(again["evaluate"]) == pipeline.fingerprint(first["evaluate"])


def test_the_repository_modelfile_is_written_for_the_default_checkpoints_only():
    pipeline = _pipeline()
    deploy_outputs = {s.name: s for s in pipeline.plan(config.parse(pipeline.PipelineConfig, []), {})}["deploy"].outputs
    assert Path("Modelfile") in deploy_outputs
    from policytune import deploy
    # the default folder however it is written ("$PWD/checkpoints" put the Modelfile in checkpoints/)
    assert deploy.modelfile_path("", str(Path.cwd() / "checkpoints")) == Path("Modelfile")
    other = config.parse(pipeline.PipelineConfig, ["--checkpoint-dir", "runs/b/checkpoints"])
    assert Path("runs/b/checkpoints/Modelfile") in {s.name: s for s in pipeline.plan(other, {})}["deploy"].outputs
    given = {s.name: s for s in pipeline.plan(other, {"deploy": ["--modelfile", "M"]})}["deploy"].outputs
    assert Path("M") in given


def test_a_full_fine_tune_counts_as_trained_and_deployed_by_its_own_files(tmp_path):
    """train.py --method full writes model.safetensors and deploy model.gguf, no adapter: a rerun must find them and
    skip both stages, not train for another twenty minutes."""
    pipeline = _pipeline()
    cfg = config.parse(pipeline.PipelineConfig, ["--data-dir", str(tmp_path / "data"),
                                                 "--checkpoint-dir", str(tmp_path / "ckpt")])
    stages = {s.name: s for s in pipeline.plan(cfg, {"train": ["--method", "full"]})}
    ckpt = tmp_path / "ckpt"
    assert stages["train"].outputs[0] == ckpt / "model.safetensors"
    assert stages["evaluate"].inputs[0] == ckpt / "model.safetensors"
    assert stages["deploy"].outputs[0] == ckpt / "model.gguf"
    assert {s.name: s for s in pipeline.plan(cfg, {})}["train"].outputs[0] == ckpt / "adapter_model.safetensors"

    (tmp_path / "data").mkdir()
    ckpt.mkdir()
    for path in stages["train"].inputs + stages["train"].outputs + stages["deploy"].outputs:
        path.write_text("x")
    state = {name: pipeline.fingerprint(stages[name]) for name in ("train", "deploy")}
    assert pipeline.up_to_date(stages["train"], state) and pipeline.up_to_date(stages["deploy"], state)
    (ckpt / "model.gguf").unlink()
    assert not pipeline.up_to_date(stages["deploy"], state)


def test_a_document_replaced_by_one_with_an_older_time_is_parsed_again(tmp_path):
    """`cp -p`, tar and rsync -a keep a file's modification time: a new policy copied over the old one can be older
    than the chunks parsed from the old one, and must still be parsed."""
    import os

    pipeline = _pipeline()
    document = tmp_path / "policy.pdf"
    document.write_bytes(b"%PDF-1.7 the old policy")
    cfg = config.parse(pipeline.PipelineConfig, ["--data-dir", str(tmp_path / "data"), "--pdf", str(document)])
    parse = pipeline.plan(cfg, {})[0]
    parse.outputs[0].parent.mkdir()
    parse.outputs[0].write_text("[]")
    state = {"parse": pipeline.fingerprint(parse)}
    assert pipeline.up_to_date(parse, state)
    older = parse.outputs[0].stat().st_mtime - 3600
    document.write_bytes(b"%PDF-1.7 the new policy")
    os.utime(document, (older, older))
    assert not pipeline.up_to_date(parse, state)
    document.write_bytes(b"%PDF-1.7 the old policy")
    os.utime(document, (older, older))
    assert pipeline.up_to_date(parse, state), "the same content, at any time, is the same document"


def test_the_pipeline_looks_for_the_modelfile_where_deploy_writes_it(tmp_path, monkeypatch):
    pipeline = _pipeline()
    cfg = config.parse(pipeline.PipelineConfig, [])

    def modelfile(extra: dict) -> Path:
        return {s.name: s for s in pipeline.plan(cfg, extra)}["deploy"].outputs[-1]

    monkeypatch.setenv("POLICYTUNE_MODELFILE", str(tmp_path / "from-env"))
    assert modelfile({}) == tmp_path / "from-env"
    monkeypatch.delenv("POLICYTUNE_MODELFILE")
    deploy_config = tmp_path / "deploy.json"
    deploy_config.write_text(json.dumps({"modelfile": str(tmp_path / "from-file")}))
    assert modelfile({"deploy": ["--config", str(deploy_config)]}) == tmp_path / "from-file"
    assert modelfile({"deploy": ["--modelfile", "M", "--config", str(deploy_config)]}) == Path("M")


def test_a_stage_flag_the_stage_cannot_read_stops_the_pipeline_before_its_first_stage(tmp_path):
    result = pipeline_run(tmp_path, "--deploy.verify-n", "0")
    assert_one_line_error(result, "deploy stage: --verify-n must be at least 1")
    result = pipeline_run(tmp_path, "--deploy.no-such-flag", "1")
    assert_one_line_error(result, "unrecognized arguments: --no-such-flag 1")
    result = pipeline_run(tmp_path, "--train.lora-r", "0")
    assert_one_line_error(result, "train stage: --lora-r and --lora-alpha must be positive")
    result = pipeline_run(tmp_path, "--train.target-modules", "q_proj,embed_tokens")
    assert_one_line_error(result, "train stage: --target-modules: embed_tokens cannot take an adapter")
    result = pipeline_run(tmp_path, "--generate.questions-per-fact", "many")
    assert_one_line_error(result, "generate stage: --questions-per-fact: expected int, got 'many'")
    assert not (tmp_path / "data").exists()


def test_from_after_to_is_a_one_line_error(tmp_path):
    result = run_script("pipeline.py", "--from", "train", "--to", "parse", "--data-dir", str(tmp_path / "data"), timeout=60)
    assert_one_line_error(result, "--from-stage train comes after --to-stage parse")
    assert not (tmp_path / "data").exists()


def pipeline_run(tmp_path: Path, *flags: str):
    return run_script("pipeline.py", "--data-dir", str(tmp_path / "data"), "--checkpoint-dir", str(tmp_path / "ckpt"),
                      "--reports-dir", str(tmp_path / "reports"), *flags, timeout=120)


def test_failing_stage_stops_the_pipeline_with_its_exit_code_and_keeps_earlier_outputs(tmp_path):
    data = tmp_path / "data"
    write_sample(data)
    # an input that is not there makes dataquality.py exit 2 when it runs (a flag it cannot read would stop the
    # pipeline before its first stage)
    failed = pipeline_run(tmp_path, "--from", "preprocess", "--to", "quality", "--quality.input", "missing.json")
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "== preprocess:" in failed.stdout and "== quality:" in failed.stdout and "== train" not in failed.stdout
    assert "error: " in failed.stderr and "missing.json" in failed.stderr
    assert "pipeline stopped at stage 'quality' (exit 2)" in failed.stderr
    kept = (data / "instructions.json").read_bytes()
    state = json.loads((data / "pipeline_state.json").read_text())
    assert set(state) == {"preprocess"} and not (data / "instructionquality.json").exists()

    fixed = pipeline_run(tmp_path, "--from", "preprocess", "--to", "quality", "--quality.judge-mode", "off")
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "== preprocess: up to date, skipped" in fixed.stdout
    assert "== quality: " in fixed.stdout and "--judge-mode off" in fixed.stdout and "== train" not in fixed.stdout
    assert (data / "instructions.json").read_bytes() == kept
    assert json.loads((data / "instructionquality.json").read_text())
    assert set(json.loads((data / "pipeline_state.json").read_text())) == {"preprocess", "quality"}


@pytest.mark.parametrize("content", ['{"parse": "3f2a', "", "[]"], ids=["truncated", "empty", "a_list"])
def test_corrupt_pipeline_state_is_a_one_line_error_and_nothing_runs(tmp_path, content):
    data = tmp_path / "data"
    write_sample(data)
    (data / "pipeline_state.json").write_text(content)
    before = snapshot(tmp_path)
    result = pipeline_run(tmp_path, "--from", "preprocess", "--to", "quality")
    assert_one_line_error(result, str(data / "pipeline_state.json"))
    assert "== " not in result.stdout, "no stage may run on a state file that cannot be read"
    assert snapshot(tmp_path) == before


def test_the_pipeline_runs_from_another_folder_on_a_file_named_like_a_flag(tmp_path):
    """From another folder the stage scripts were looked for there ("can't open file .../syntheticdatageneration.py");
    a document named "-leave.md" reached the stage as a flag; the closing lines named an adapter, a GGUF and a
    Modelfile that a run stopped after preprocessing never wrote."""
    policy = tmp_path / "-leave, 2026.md"
    policy.write_text("## Annual leave\n\nEmployees receive 25 days of paid annual leave each calendar year. Requests "
                      "must be approved by the line manager at least 10 working days before the leave starts. Up to "
                      "5 unused days may be carried over into the first quarter of the next year.\n")
    result = run_script(str(ROOT / "pipeline.py"), f"--pdf={policy.name}", "--to", "preprocess", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "data" / "chunks.json").is_file() and (tmp_path / "data" / "instructions.json").is_file()
    chunks = json.loads((tmp_path / "data" / "chunks.json").read_text())
    assert {c["doc"] for c in chunks} == {policy.name}
    echoed = [line for line in result.stdout.splitlines() if line.startswith("== parse: ")][0]
    assert f"'--pdf={policy.name}'" in echoed, echoed  # quoted, so that it can be copied and run
    closing = result.stdout.split("pipeline finished", 1)[1]
    assert not any(word in closing for word in ("adapter:", "gguf:", "Modelfile:", "report:")), closing


POLICY_MD = ("## Annual leave\n\nEmployees receive {days} days of paid annual leave each calendar year. Requests must be "
             "approved by the line manager at least 10 working days before the leave starts. Up to 5 unused days may "
             "be carried over into the first quarter of the next year.\n")


def test_outputs_rewritten_since_a_stage_ran_or_settings_read_elsewhere_decide_what_reruns(tmp_path):
    """A stage run by hand on another document rewrote chunks.json, and the pipeline then skipped parsing and
    generated from the other document; a POLICYTUNE_* variable that only the quality gate reads reran every stage
    (training included); a misspelt one was silently ignored; a --config file edited in place was not seen."""
    mine, theirs = tmp_path / "mine.md", tmp_path / "theirs.md"
    mine.write_text(POLICY_MD.format(days=25))
    theirs.write_text(POLICY_MD.format(days=30).replace("Annual leave", "Holiday"))
    data = tmp_path / "data"

    def pipeline(*flags: str, env: dict | None = None):
        result = run_script(str(ROOT / "pipeline.py"), "--data-dir", str(data), "--pdf", str(mine), "--to", "parse",
                            *flags, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    assert "== parse: python" in pipeline().stdout
    assert "parse: up to date, skipped" in pipeline().stdout
    by_hand = run_script("syntheticdatageneration.py", "--data-dir", str(data), "--pdf", str(theirs), "--parse-only")
    assert by_hand.returncode == 0, by_hand.stderr[-2000:]
    assert "== parse: python" in pipeline().stdout, "chunks.json was another document's"
    assert {c["doc"] for c in json.loads((data / "chunks.json").read_text())} == {"mine.md"}

    read_elsewhere = pipeline(env={"POLICYTUNE_JUDGE_THRESHOLD": "3", "POLICYTUNE_JUGDE_MODE": "off"})
    assert "parse: up to date, skipped" in read_elsewhere.stdout
    assert "POLICYTUNE_JUGDE_MODE is not a setting of any stage" in read_elsewhere.stderr
    assert "POLICYTUNE_JUDGE_THRESHOLD" not in read_elsewhere.stderr

    # a file a setting names counts by its content, whatever its time
    settings = tmp_path / "quality.json"
    settings.write_text('{"judge_threshold": 3}')
    cfg = config.parse(_pipeline().PipelineConfig, ["--data-dir", str(data), "--pdf", str(mine)])
    plan = lambda: {s.name: s for s in _pipeline().plan(cfg, {"quality": ["--config", str(settings)]})}  # noqa: E731
    before = _pipeline().fingerprint(plan()["quality"])
    stat = settings.stat()
    settings.write_text('{"judge_threshold": 4}')
    import os
    os.utime(settings, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _pipeline().fingerprint(plan()["quality"]) != before


def test_a_second_pipeline_on_one_data_folder_stops_and_sigterm_stops_the_running_stage(tmp_path):
    """Two pipelines at once rewrote each other's files and state; SIGTERM to the pipeline left its stage running
    under init, still writing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import SAMPLE_PDF

    data = tmp_path / "data"

    def stages() -> list[str]:
        found = subprocess.run(["pgrep", "-f", f"(syntheticdatageneration|preprocessing).py --data-dir {data}"],
                               capture_output=True, text=True)
        return found.stdout.split()

    first = subprocess.Popen([sys.executable, str(ROOT / "pipeline.py"), "--data-dir", str(data), "--pdf",
                              str(SAMPLE_PDF), "--to", "preprocess"], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not stages():  # a stage runs: the first pipeline holds the folder
            assert time.time() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.2)
        second = run_script(str(ROOT / "pipeline.py"), "--data-dir", str(data), "--to", "parse", timeout=120)
        assert_one_line_error(second, "another pipeline.py is running on this data folder")
        while not stages():
            assert time.time() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGTERM)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 128 + signal.SIGTERM and "stopped by signal 15" in err, err[-2000:]
        assert not stages(), "the stage outlived the pipeline"
    finally:
        if first.poll() is None:
            first.kill()
