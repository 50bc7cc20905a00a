"""Foundation: config, atomic IO, the chat format, the embedded model and the embedded endpoint."""
from __future__ import annotations

import gc
import json
import re
import os
import socket
from dataclasses import dataclass, field

import pytest

from conftest import ROOT, SAMPLE_PDF, run_script
from policytune import chat, config, io, llm


@dataclass
class DemoConfig(config.Base):
    steps: int = field(default=3, metadata={"help": "demo"})
    api_key: str = ""
    names: list[str] = field(default_factory=list)


@dataclass
class ChoiceConfig(config.Base):
    mode: str = field(default="a", metadata={"choices": ["a", "b"]})
    parts: list[str] = field(default_factory=lambda: ["x"], metadata={"choices": ["x", "y"]})


def test_choices_are_checked_for_single_and_list_values(monkeypatch):
    assert config.parse(ChoiceConfig, ["--parts", "x,y", "--mode", "b"]).parts == ["x", "y"]
    assert config.parse(ChoiceConfig, ["--parts", "x", "--parts", "y"]).parts == ["x", "y"]
    with pytest.raises(config.UserError, match="'z' is not one of"):
        config.parse(ChoiceConfig, ["--parts", "x,z"])
    monkeypatch.setenv("POLICYTUNE_MODE", "c")
    with pytest.raises(config.UserError, match="'c' is not one of"):
        config.parse(ChoiceConfig, [])


@dataclass
class PercentConfig(config.Base):
    level: float = field(default=0.5, metadata={"help": "share kept, e.g. 50% of the rows"})


def test_help_prints_a_percent_sign_in_a_flag_description(capsys):
    with pytest.raises(SystemExit) as stop:
        config.parse(PercentConfig, ["--help"])
    assert stop.value.code == 0
    assert "50% of the rows" in capsys.readouterr().out


@pytest.mark.parametrize("script, cls", [("syntheticdatageneration.py", "GenerationConfig"),
                                         ("preprocessing.py", "PreprocessConfig"), ("dataquality.py", "QualityConfig"),
                                         ("train.py", "TrainConfig"), ("evaluate.py", "EvalConfig"),
                                         ("pipeline.py", "PipelineConfig")])
def test_every_stage_help_prints_and_names_files_that_exist(script, cls, capsys):
    """train.py --help printed "about 30%% slower". Every policytune/*.py a help text names must exist."""
    from conftest import ROOT

    with pytest.raises(SystemExit) as stop:
        config.parse(getattr(config.load_script(ROOT / script), cls), ["--help"])
    text = capsys.readouterr().out
    assert stop.value.code == 0 and "%%" not in text
    assert all((ROOT / name).is_file() for name in re.findall(r"policytune/\w+\.py", text.replace("\n", "")))


@pytest.mark.parametrize("flags, needle", [
    (["--request-timeout", "-5"], "--request-timeout must be more than 0 seconds"),
    (["--max-retries", "-1"], "--max-retries must be at least 0"),
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--temperature", "-1"], "--temperature must be 0 or more"),
    (["--max-question-words", "2"], "--max-question-words (2) is below --min-question-words (3)"),
    (["--min-content-overlap", "5"], "--min-content-overlap is a share between 0 and 1"),
    (["--balance-tolerance", "-1"], "--balance-tolerance is a share between 0 and 1"),
])
def test_endpoint_and_gate_settings_out_of_range_are_one_line_errors(flags, needle):
    # each would fail later as a traceback from the HTTP client, or pass every run with nothing kept
    generation, quality = (config.load_script(ROOT / name) for name in ("syntheticdatageneration.py", "dataquality.py"))
    cls = quality.QualityConfig if flags[0] in {"--max-question-words", "--min-content-overlap", "--balance-tolerance"} \
        else generation.GenerationConfig
    with pytest.raises(config.UserError) as error:
        config.parse(cls, flags)
    assert needle in str(error.value)


def test_flags_override_env_override_defaults(monkeypatch):
    assert config.parse(DemoConfig, []).steps == 3
    monkeypatch.setenv("POLICYTUNE_STEPS", "5")
    assert config.parse(DemoConfig, []).steps == 5
    assert config.parse(DemoConfig, ["--steps", "7"]).steps == 7
    assert config.parse(DemoConfig, ["--names", "a", "--names", "b"]).names == ["a", "b"]


def test_a_list_flag_takes_a_shell_glob_and_a_file_name_with_a_comma(tmp_path, monkeypatch):
    """`--names *.pdf` stopped at "unrecognized arguments", and "Leave, 2026.pdf" was split into two files that do
    not exist, on the command line, in the environment and when pipeline.py passed it on to a stage."""
    comma = tmp_path / "Leave, 2026.pdf"
    comma.write_bytes(b"%PDF-")
    assert config.parse(DemoConfig, ["--names", "a.pdf", "b.pdf", "--steps", "2"]).names == ["a.pdf", "b.pdf"]
    assert config.parse(DemoConfig, ["--names", str(comma)]).names == [str(comma)]
    assert config.parse(DemoConfig, ["--names", str(comma), "--names", "x,y"]).names == [str(comma), "x", "y"]
    monkeypatch.setenv("POLICYTUNE_NAMES", str(comma))
    assert config.parse(DemoConfig, []).names == [str(comma)]
    monkeypatch.setenv("POLICYTUNE_NAMES", "a.pdf, b.pdf")
    assert config.parse(DemoConfig, []).names == ["a.pdf", "b.pdf"]


def test_config_file_with_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"stepz": 1}))
    with pytest.raises(config.UserError, match=r"unknown config keys \['stepz'\] for DemoConfig$"):
        config.parse(DemoConfig, ["--config", str(path)])


def test_a_config_file_in_the_environment_names_who_read_it_and_how_to_give_it_to_one_stage(tmp_path, monkeypatch):
    """POLICYTUNE_CONFIG with the quality gate's settings stopped pipeline.py itself with "unknown config keys",
    not saying that the pipeline had read it, nor how to give a file to one stage."""
    path = tmp_path / "quality.json"
    path.write_text(json.dumps({"judge_threshold": 4}))
    monkeypatch.setenv("POLICYTUNE_CONFIG", str(path))
    with pytest.raises(config.UserError, match=r"for DemoConfig \(read through POLICYTUNE_CONFIG.*--<stage>\.config FILE"):
        config.parse(DemoConfig, [])


def test_secrets_are_masked_when_saved(tmp_path):
    cfg = config.parse(DemoConfig, ["--api-key", "sk-very-secret"])
    config.save(cfg, tmp_path / "cfg.json")
    assert "sk-very-secret" not in (tmp_path / "cfg.json").read_text()


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.json"
    io.write_json_atomic(path, {"good": True})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        io.write_json_atomic(path, {"bad": Unserialisable()})
    assert json.loads(path.read_text()) == {"good": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_cache_entry_being_filled_by_one_process_is_waited_for_by_another(tmp_path):
    """Two test workers (or two runs) on a fresh cache: the second waits for the first's lock, then finds the entry."""
    import subprocess
    import sys

    lock, entry = tmp_path / "entry.lock", tmp_path / "entry"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from policytune import io
with io.exclusive({str(lock)!r}):
    print("held", flush=True)
    time.sleep(1.0)
    open({str(entry)!r}, "w").write("filled")
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with io.exclusive(lock):
        assert entry.read_text() == "filled", "the lock was taken while the other process still held it"
    assert holder.wait(timeout=30) == 0


def test_corrupt_json_is_a_one_line_error_naming_the_file(tmp_path):
    path = tmp_path / "chunks.json"
    path.write_text('[{"id": "a", "text": "cut')
    with pytest.raises(config.UserError, match="chunks.json.*not valid JSON"):
        io.read_json(path)


def test_jsonl_log_drops_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n{"n": ')
    with io.JsonlLog(path) as log:
        log.append({"n": 3})
    assert [r["n"] for r in io.read_jsonl(path, strict=True)] == [1, 2, 3]


def test_chat_format_is_chatml_and_refusal_is_exact():
    text = chat.format_example("How many days?", "25 days")
    assert text == ("<|im_start|>system\n" + chat.SYSTEM_PROMPT + "<|im_end|>\n"
                    "<|im_start|>user\nHow many days?<|im_end|>\n<|im_start|>assistant\n25 days<|im_end|>")
    assert chat.REFUSAL == "Not specified in the provided excerpt."
    assert chat.is_refusal(" Not specified in the provided excerpt.<|im_end|>")
    assert not chat.is_refusal("Not specified.")


def test_tokenizer_template_renders_the_chat_format(embedded_base):
    from policytune import models

    tokenizer = models.load_tokenizer(embedded_base)
    rendered = tokenizer.apply_chat_template(chat.messages("Q?"), tokenize=False, add_generation_prompt=True)
    assert rendered == chat.format_prompt("Q?")


def test_embedded_server_returns_schema_json_and_stops():
    schema = {"type": "object", "properties": {"days": {"type": "integer"}, "unit": {"type": "string"}},
              "required": ["days", "unit"], "additionalProperties": False}
    with llm.connect(llm.LLMOptions(concurrency=1, server_threads=1)) as endpoint:
        assert endpoint.local and endpoint.base_url.startswith("http://127.0.0.1:")
        address = endpoint.server.listening_address
        parsed, response = llm.chat_json(
            endpoint, [{"role": "user", "content": "Employees get 25 days of leave. Reply with days and unit."}],
            schema, max_tokens=64)
    assert llm.validate(parsed, schema) is None
    assert isinstance(parsed["days"], int)
    gc.collect()
    host, port = address.split("//")[1].split(":")
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0, "embedded server still listening after exit"


def test_embedded_base_model_loads_from_cache_and_generates(embedded_base):
    import torch

    from policytune import models

    assert os.path.isfile(os.path.join(embedded_base.hf_path, "model.safetensors"))
    tokenizer = models.load_tokenizer(embedded_base)
    model = models.load_model(embedded_base)
    inputs = tokenizer(chat.format_prompt("What is annual leave?"), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_missing_base_model_path_exits_2_naming_it(tmp_path):
    missing = tmp_path / "no-such-model"
    result = run_script("-m", "policytune.models", "--base-model", str(missing))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0]


def test_sample_policy_pdf_has_text_and_at_least_15_pages():
    import pypdfium2

    assert (ROOT / "sample" / "make_sample_policy.py").is_file()
    document = pypdfium2.PdfDocument(str(SAMPLE_PDF))
    assert len(document) >= 15
    text = document[2].get_textpage().get_text_range()
    assert len(text.split()) > 100
