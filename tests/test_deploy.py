"""Stage 6: the GGUF adapter, the Modelfile and the proof that llama.cpp applies the adapter."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_script, stage_module
from policytune import chat, deploy, gguf_adapter, llm, modelfile, models
from policytune.config import UserError


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory, trained_checkpoint) -> Path:
    """The adapter the session's train.py run wrote (conftest's trained_checkpoint), copied because deploy
    writes next to it, with held_out.json: questions that run never saw, which verification uses."""
    target = copy_adapter(trained_checkpoint.checkpoint, tmp_path_factory.mktemp("deploy") / "checkpoints")
    (target / "held_out.json").write_text(json.dumps(trained_checkpoint.held_out))
    return target


def held_out_pair(trained_checkpoint, answerable: bool) -> tuple[str, str]:
    """The first held-out question (and its answer) that the policy answers, or that it leaves open."""
    record = next(r for r in trained_checkpoint.held_out if r["answerable"] is answerable)
    return record["instruction"], record["output"]


def deploy_config(checkpoints: Path, **overrides) -> deploy.DeployConfig:
    """Verification on the held-out questions (one answer, one refusal) when the folder has them."""
    held_out = checkpoints / "held_out.json"
    values = dict(checkpoint_dir=str(checkpoints), data_dir=str(checkpoints / "no-data"),
                  verify_questions=str(held_out) if held_out.is_file() else "",
                  verify_n=2, verify_answer_tokens=8, threads=1)
    return deploy.DeployConfig(**(values | overrides))


def copy_adapter(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy(source / name, target / name)
    if (source / "held_out.json").is_file():
        shutil.copy(source / "held_out.json", target / "held_out.json")
    return target


# --- the Modelfile's Go template ------------------------------------------------------------

def test_go_template_renders_exactly_the_training_chat_format():
    question = "How many days of annual leave do I get?"
    assert modelfile.ollama_prompt(chat.OLLAMA_TEMPLATE, question) == chat.format_prompt(question)
    # A finished exchange (history) renders as the training example.
    full = modelfile.render_go_template(chat.OLLAMA_TEMPLATE, {"System": chat.SYSTEM_PROMPT, "Prompt": question,
                                                               "Response": "20 days."})
    assert full == chat.format_example(question, "20 days.") + "\n"
    assert modelfile.template_mismatches(chat.OLLAMA_TEMPLATE, question, chat.REFUSAL) == []


def test_go_template_check_catches_a_drifted_template():
    drifted = chat.OLLAMA_TEMPLATE.replace("<|im_start|>assistant\n", "<|im_start|>assistant ")
    problems = modelfile.template_mismatches(drifted, "Q?", "A.")
    assert problems and "prompt differs" in problems[0]
    no_system = "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}"
    assert modelfile.template_mismatches(no_system, "Q?", "A.")


def test_go_template_subset_trims_branches_and_rejects_what_it_cannot_render():
    template = "{{- if .System }}S={{ .System }}{{ else }}none{{ end -}}  \n|{{ .Prompt }}"
    assert modelfile.render_go_template(template, {"System": "", "Prompt": "p"}) == "none|p"
    assert modelfile.render_go_template(template, {"System": "x", "Prompt": "p"}) == "S=x|p"
    with pytest.raises(modelfile.TemplateError):
        modelfile.render_go_template("{{ range .Messages }}{{ .Content }}{{ end }}", {})
    with pytest.raises(modelfile.TemplateError):
        modelfile.render_go_template("{{ if .System }}x", {"System": "s"})


def test_committed_modelfile_is_what_deploy_writes_for_the_embedded_model():
    parsed = modelfile.read_modelfile(ROOT / "Modelfile")
    assert parsed["FROM"] == "./checkpoints/base.gguf"
    assert parsed["ADAPTER"] == "./checkpoints/adapter.gguf"
    assert parsed["TEMPLATE"] == chat.OLLAMA_TEMPLATE
    assert parsed["SYSTEM"] == chat.SYSTEM_PROMPT
    assert [v for k, v in parsed["PARAMETER"] if k == "stop"] == chat.STOP
    assert ("temperature", "0") in parsed["PARAMETER"]
    expected = modelfile.render_modelfile("./checkpoints/base.gguf", "./checkpoints/adapter.gguf",
                                          comment=deploy.modelfile_comment("embedded"))
    assert (ROOT / "Modelfile").read_text() == expected


# --- the converter ---------------------------------------------------------------------------

def test_rotary_reordering_interleaves_the_two_halves_of_each_head():
    rows = np.arange(8)[:, None].repeat(3, axis=1)  # 2 heads of 4 rows
    assert gguf_adapter.rotary_rows_to_gguf(rows, n_heads=2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_unsupported_architecture_is_a_clear_error(trained_adapter, tmp_path):
    with pytest.raises(UserError, match="architecture 'gpt2' is not supported by the GGUF adapter converter .*use --merge"):
        gguf_adapter.convert_adapter(trained_adapter, tmp_path / "a.gguf", {"model_type": "gpt2"})
    assert not list(tmp_path.iterdir())


def test_missing_adapter_exits_2_with_one_line(tmp_path):
    result = run_script("-m", "policytune.deploy", "--checkpoint-dir", str(tmp_path), "--modelfile",
                        str(tmp_path / "Modelfile"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "adapter_config.json" in result.stderr
    assert not (tmp_path / "Modelfile").exists()


def test_a_base_that_is_not_a_gguf_is_refused_before_a_deployed_file_is_touched(tmp_path):
    """A bad --base-gguf once replaced the deployed base.gguf (a link to the bad file) before failing. A killed
    deploy's half-written files (named .tmp<pid>) are cleared by the next one once their process is gone."""
    import os
    import subprocess
    import sys

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": models.EMBEDDED}))
    (ckpt / "base.gguf").write_bytes(b"GGUF the deployed base")
    (ckpt / "Modelfile").write_text("FROM ./base.gguf\nADAPTER ./adapter.gguf\n")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale, live = ckpt / f"adapter.gguf.tmp{gone.stdout.strip()}", ckpt / f"base.gguf.tmp{os.getpid()}"
    stale.write_bytes(b"half an adapter")
    live.write_bytes(b"another deploy's file in progress")
    deployed = {p.name: p.read_bytes() for p in ckpt.iterdir() if p != stale}
    result = run_script("-m", "policytune.deploy", "--checkpoint-dir", str(ckpt), "--modelfile", str(ckpt / "Modelfile"),
                        "--base-gguf", str(ROOT / "README.md"), timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == f"error: --base-gguf {ROOT / 'README.md'}: not a GGUF file"
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == deployed, "a deployed file changed, or the stale one stayed"


def test_settings_deploy_would_find_wrong_late_are_refused_before_a_file_is_touched(tmp_path):
    """A folder as --modelfile, --merge on a full fine-tune and a port taken by another program each failed after the
    files were converted (and published, for the two last, the port reported as a corrupt adapter); a port above
    65535 was served on another one while the log named it."""
    import socket

    with pytest.raises(UserError, match="--port must be 0 .* to 65535, got 70000"):
        deploy.DeployConfig(port=70000)
    with pytest.raises(UserError, match="is a folder; name the file to write"):
        deploy.DeployConfig(modelfile=str(tmp_path))
    full = tmp_path / "full"
    full.mkdir()
    for name in ("model.safetensors", "config.json"):
        (full / name).write_text("{}")
    before = sorted(p.name for p in full.iterdir())
    with pytest.raises(UserError, match="a full fine-tune is already one model"):
        deploy.run(deploy.DeployConfig(checkpoint_dir=str(full), merge=True))
    assert sorted(p.name for p in full.iterdir()) == before
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"--port {port}: in use by another program"):
            deploy.run(deploy.DeployConfig(checkpoint_dir=str(full), serve=True, port=port))
    assert sorted(p.name for p in full.iterdir()) == before


def test_a_trainer_checkpoint_of_the_embedded_model_deploys_on_its_gguf(tmp_path):
    """A trainer checkpoint names its base by the embedded model's cache folder, which has no GGUF of its own: deploy
    said to convert the base by hand, or to merge (which stopped at the same error)."""
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": models.resolve().hf_path}))
    base = deploy.resolve_base(deploy.DeployConfig(checkpoint_dir=str(tmp_path)))
    assert base.name == models.EMBEDDED and base.gguf_path


# --- verification ----------------------------------------------------------------------------

@pytest.mark.slow
def test_deploy_writes_gguf_and_modelfile_and_verification_passes(trained_adapter):
    cfg = deploy_config(trained_adapter)
    figures = deploy.run(cfg)
    assert figures["passed"], figures["failures"]
    assert (trained_adapter / "adapter.gguf").is_file() and (trained_adapter / "base.gguf").is_file()
    # Not the default checkpoint folder: the Modelfile goes beside the adapter, the repository's is left alone.
    parsed = modelfile.read_modelfile(trained_adapter / "Modelfile")
    assert parsed["FROM"] == "./base.gguf" and parsed["ADAPTER"] == "./adapter.gguf"
    # its comment's command loads it from where it is (it said "-f Modelfile" wherever it was written)
    assert f"ollama create policytune -f {trained_adapter / 'Modelfile'} " in (trained_adapter / "Modelfile").read_text()
    f32, deployed = figures["bases"]["f32"], figures["bases"]["deployed"]
    assert deployed["gguf"] == "base.gguf", "the report named the staged file, gone once published"
    assert f32["top1_agreement"] >= 0.95 and f32["max_logprob_diff"] <= 0.1
    assert f32["effect_correlation"] > 0.95
    # The deployed adapter makes the held-out answers likelier, by what transformers measures.
    assert f32["answer_logprob_gain_hf"] > 0
    assert abs(f32["answer_logprob_gain_llama"] - f32["answer_logprob_gain_hf"]) <= 0.05
    assert deployed["quantized"] and deployed["adapter_effect_llama"] > 1.0
    assert deployed["max_effect_diff"] <= cfg.max_effect_diff_quantized
    report = json.loads((trained_adapter / "deploy_report.json").read_text())
    assert report["passed"] and report["bases"]["f32"]["positions"] == f32["positions"]


@pytest.mark.slow
def test_a_deployment_that_fails_verification_leaves_the_deployed_files_as_they_were(trained_adapter, tmp_path):
    """The files were once written in place and verified after: a failed check replaced a working deployment with
    the one that failed. Now they wait under staged names and are moved into place only once verified."""
    folder = copy_adapter(trained_adapter, tmp_path / "checkpoints")
    deployed = {"adapter.gguf": b"GGUF the deployed adapter", "base.gguf": b"GGUF the deployed base",
                "Modelfile": b"FROM ./base.gguf\nADAPTER ./adapter.gguf\n"}
    for name, data in deployed.items():
        (folder / name).write_bytes(data)
    cfg = deploy_config(folder, strict_f32=False, min_adapter_effect=1e9)  # no adapter moves log-probs that far
    with pytest.raises(UserError, match="left as they were .*does not change llama.cpp's output"):
        deploy.run(cfg)
    assert {name: (folder / name).read_bytes() for name in deployed} == deployed
    assert not list(folder.glob("*.tmp*")), "staged files were left behind"
    assert json.loads((folder / "deploy_report.failed.json").read_text())["published"] is False
    assert not (folder / "deploy_report.json").exists()

    figures = deploy.run(dataclasses.replace(cfg, min_adapter_effect=deploy.DeployConfig.min_adapter_effect))
    assert figures["passed"] and not list(folder.glob("*.tmp*"))
    assert (folder / "adapter.gguf").read_bytes()[:4] == b"GGUF" and (folder / "adapter.gguf").stat().st_size > 10**6
    parsed = modelfile.read_modelfile(folder / "Modelfile")
    assert parsed["FROM"] == "./base.gguf" and parsed["ADAPTER"] == "./adapter.gguf"
    assert json.loads((folder / "deploy_report.json").read_text())["published"] is True
    assert not (folder / "deploy_report.failed.json").exists()


@pytest.mark.slow
def test_zeroed_adapter_fails_verification(trained_adapter, tmp_path):
    from safetensors.numpy import load_file, save_file

    zeroed = copy_adapter(trained_adapter, tmp_path / "zeroed")
    tensors = load_file(str(zeroed / "adapter_model.safetensors"))
    save_file({k: np.zeros_like(v) if ".lora_B." in k else v for k, v in tensors.items()},
              str(zeroed / "adapter_model.safetensors"))
    cfg = deploy_config(zeroed)
    deployment = dataclasses.replace(deploy.convert(cfg), base_gguf=None)  # the strict f32 check alone
    result = deploy.verify(cfg, deployment)
    assert not result["passed"]
    assert any("does not change llama.cpp's output" in f for f in result["failures"])


@pytest.mark.slow
def test_adapter_without_rotary_reordering_fails_verification_even_on_the_q4_base(trained_adapter, tmp_path, monkeypatch):
    """A q/k LoRA B left in HF row order still moves the right tokens (top-1 often agrees), so the
    check on the quantised base must compare the adapter's effect itself."""
    broken = copy_adapter(trained_adapter, tmp_path / "broken")
    cfg = deploy_config(broken, strict_f32=False)
    monkeypatch.setattr(gguf_adapter, "rotary_rows_to_gguf", lambda rows, n_heads: rows)
    deployment = deploy.convert(cfg)
    monkeypatch.undo()
    result = deploy.verify(cfg, deployment)
    assert not result["passed"]
    assert list(result["bases"]) == ["deployed"] and result["bases"]["deployed"]["quantized"]
    assert any("changes llama.cpp's log-probs differently" in f for f in result["failures"]), result


def test_truncated_adapter_gguf_is_a_clear_error(trained_adapter, tmp_path):
    cfg = deploy_config(copy_adapter(trained_adapter, tmp_path / "cut"))
    deployment = deploy.convert(cfg)
    data = deployment.adapter_gguf.read_bytes()
    deployment.adapter_gguf.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="could not load .* with the adapter"):
        deploy.start_server(dataclasses.replace(cfg, port=0, serve_parallel=1), deployment)


# --- serving ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_served_endpoint_answers_with_the_adapter_applied(trained_adapter, trained_checkpoint, tmp_path):
    from openai import OpenAI

    cfg = deploy_config(copy_adapter(trained_adapter, tmp_path / "serve"), port=0, serve_parallel=1)
    deployment = deploy.convert(cfg)
    tuned_server = deploy.start_server(cfg, deployment)
    base_server = llm.start_local_server(str(deployment.base_gguf), 1, 1, 2048)

    # Questions train.py never saw: a new phrasing of a trained fact, and one the policy leaves open.
    questions = [held_out_pair(trained_checkpoint, True)[0], held_out_pair(trained_checkpoint, False)[0]]

    def answers(server) -> list[str]:
        client = OpenAI(base_url=server.listening_address + "/v1", api_key="local", max_retries=0, timeout=120)
        out = []
        for question in questions:
            response = client.chat.completions.create(model="policytune", messages=chat.messages(question),
                                                      max_tokens=24, temperature=0, stop=chat.STOP)
            out.append(response.choices[0].message.content.strip())
        return out

    tuned, base = answers(tuned_server), answers(base_server)
    assert tuned_server.listening_address.startswith("http://127.0.0.1:")
    assert any(t != b for t, b in zip(tuned, base)), (tuned, base)
    # The trained refusal comes back exactly through the served endpoint, on a question it was not trained on.
    assert chat.is_refusal(tuned[1]) and not chat.is_refusal(base[1]), (tuned, base)


@pytest.mark.slow
def test_merge_writes_a_16bit_model_that_reproduces_base_plus_adapter(trained_adapter, tmp_path):
    cfg = deploy_config(copy_adapter(trained_adapter, tmp_path / "merge"), verify_n=1)
    deployment = deploy.convert(cfg)
    figures = deploy.merge(cfg, deployment)
    assert figures["top1_agreement"] == 1.0 and figures["max_logprob_diff"] < 0.1, figures
    merged = Path(cfg.checkpoint_dir) / "merged"
    assert json.loads((merged / "config.json").read_text())["dtype"] == "float16"
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    assert (merged / "model.safetensors").stat().st_mode & 0o044, "safetensors wrote it 0600: no other user reads it"
    parsed = modelfile.read_modelfile(Path(cfg.checkpoint_dir) / "Modelfile.merged")
    assert parsed["FROM"] == "./merged" and "ADAPTER" not in parsed
    assert parsed["TEMPLATE"] == chat.OLLAMA_TEMPLATE


@pytest.mark.slow
def test_a_full_fine_tune_deploys_as_its_own_gguf_and_evaluates_like_the_adapter(trained_adapter, tmp_path):
    """A fully fine-tuned model (here: the session's adapter folded into every weight, saved as train.py --method full
    saves) is written as model.gguf with FROM pointing at it, verified against transformers, and evaluation loads it
    beside its base: its logits are the adapter's."""
    import torch
    from peft import PeftModel

    from policytune import answers, models

    base = models.resolve("embedded")
    with_adapter = PeftModel.from_pretrained(models.load_model(base, dtype="float32"), str(trained_adapter)).eval()
    folder = tmp_path / "full"
    copy = PeftModel.from_pretrained(models.load_model(base, dtype="float32"), str(trained_adapter)).merge_and_unload()
    copy.save_pretrained(folder)
    models.load_tokenizer(base).save_pretrained(folder)
    (folder / "training_config.json").write_text(json.dumps({"base_model_name": "embedded", "method": "full"}))
    shutil.copy(trained_adapter / "held_out.json", folder / "held_out.json")
    assert models.is_full_model(folder) and not models.is_full_model(trained_adapter)

    cfg = deploy_config(folder)
    figures = deploy.run(cfg)
    assert figures["passed"], figures["failures"]
    parsed = modelfile.read_modelfile(deploy.modelfile_path(cfg.modelfile, cfg.checkpoint_dir))
    assert parsed["FROM"] == "./model.gguf" and "ADAPTER" not in parsed
    fine_tuned = figures["bases"]["model"]
    assert fine_tuned["top1_agreement"] >= 0.95 and fine_tuned["max_logprob_diff"] <= 0.1
    assert fine_tuned["adapter_effect_llama"] > 1.0 and fine_tuned["effect_correlation"] > 0.95
    assert json.loads((folder / "deploy_report.json").read_text())["model_gguf"].endswith("model.gguf")

    stage = stage_module("evaluate.py")
    found, found_base = stage.find_adapter(stage.EvalConfig(adapter=str(folder)))
    pair = stage.load_tuned(found_base, found, "float32")
    ids = torch.tensor([models.load_tokenizer(base)(chat.format_prompt("How many days of annual leave?"))["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(pair(ids).logits, with_adapter(ids).logits, atol=1e-3)
        with pair.disable_adapter(), with_adapter.disable_adapter():
            assert torch.allclose(pair(ids).logits, with_adapter(ids).logits, atol=1e-4)
    # and evaluation's answers and divergence run on it as on the adapter (the shared system turn's cache included)
    tokenizer = models.load_tokenizer(base)
    questions = ["How many days of annual leave do I get?", "Leave?", "Who approves sick leave after three days?"]
    assert answers.greedy(pair, tokenizer, questions, 2, 12, progress=False) == \
        answers.greedy(with_adapter, tokenizer, questions, 2, 12, progress=False)
    shifts = [stage.divergence(model, tokenizer, questions, [chat.REFUSAL] * 3, 2) for model in (pair, with_adapter)]
    assert [s["kl"] for s in shifts[0]] == pytest.approx([s["kl"] for s in shifts[1]], abs=1e-3)
    assert min(s["kl"] for s in shifts[0]) > 0  # the fine-tuned model is not its base
