"""The deployed Modelfile's TEMPLATE, rendered by Go's text/template the way Ollama renders it
(tests/go/render.go), is the training chat format byte for byte; the project's own renderer
(policytune/modelfile.py, used by deploy's check) agrees with Go's on awkward inputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from policytune import chat, deploy, modelfile, models
from test_train import tiny_model  # noqa: F401 (a fixture: a 2-layer random Llama)

RENDER_GO = Path(__file__).resolve().parent / "go" / "render.go"

# Questions as users type them: plain, several lines, characters a template or a shell could trip on.
QUESTIONS = [
    "How many days of annual leave do I get?",
    "I joined in March.\nI work part-time (3 days).\n\n  How much leave do I get?",
    'What does "{{ .System }}" mean in clause 4.2 \\ section {{- end }}? 100% & <b>bold</b> $HOME `x`',
    "Zürich office – is 25 € the allowance? ✓ 🙂",
    "Trailing spaces and a Windows newline \r\n ",
]
ANSWERS = ["20 days per year.", chat.REFUSAL, "Line one.\nLine two: {{ .Prompt }} <|im_start|>"]

# Ollama's own template for Llama 3 instruct models (what `FROM llama3.2` brings unless the Modelfile
# overrides it): a different format from the one the adapter was trained on.
LLAMA3_TEMPLATE = (
    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
    "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"
)
# Templates within the subset policytune's renderer claims: trim markers (which remove ASCII
# whitespace only, not a no-break space), else branches, .Response inside a branch, and no .Response
# at all (Ollama appends one).
SUBSET_TEMPLATES = {
    "chatml": chat.OLLAMA_TEMPLATE,
    "llama3": LLAMA3_TEMPLATE,
    "trimmed": "{{- if .System }}S={{ .System }}{{ else }}none{{ end -}}  \n|{{ .Prompt }}\n  {{- .Response }} tail",
    "response_in_branch": "{{ if .Prompt }}Q: {{ .Prompt }}\nA: {{ .Response }}.{{ else }}empty{{ end }}\n--",
    "no_break_space_at_trim": "<p> {{- .Prompt -}} \u00a0\t\n|{{ .Response }}",
    "no_response": "{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}\n",
}


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    """render(template, values, execute=False) -> what Go's text/template prints (tests/go/render.go)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain is absent (apt-get install golang-go; .ci/run installs it)")
    work = tmp_path_factory.mktemp("go-render")
    # Standard library only: no module download, an empty cache of our own, never the network.
    env = {**os.environ, "GOCACHE": str(work / "cache"), "GOPATH": str(work / "gopath"), "GOFLAGS": "",
           "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOTELEMETRY": "off", "CGO_ENABLED": "0"}
    binary = work / "render"
    built = subprocess.run([go, "build", "-o", str(binary), str(RENDER_GO)], cwd=work, env=env,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, f"go build failed:\n{built.stderr}"
    calls = iter(range(1 << 30))

    def render(template: str, values: dict, execute: bool = False) -> str:
        n = next(calls)
        template_file, values_file = work / f"template{n}", work / f"values{n}.json"
        template_file.write_bytes(template.encode())
        values_file.write_bytes(json.dumps(values).encode())
        result = subprocess.run([str(binary), *(["-execute"] if execute else []), str(template_file), str(values_file)],
                                capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    return render


def peft_adapter(base: models.BaseModel, folder: Path, base_name: str) -> Path:
    """An (untrained) PEFT LoRA adapter on `base`, saved as train.py saves one."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(models.load_model(base, dtype="float32"),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(folder)
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_name
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, embedded_base, tiny_model):  # noqa: F811
    """The Modelfile deploy writes for the embedded SmolLM2 base (FROM its GGUF) and for a Llama
    model deployed onto an Ollama Llama 3 tag (FROM llama3.2:1b), read back from disk."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("deployed")
    out = {}
    cases = {"embedded": (embedded_base, "embedded", ""),
             "llama3": (models.resolve(str(tiny_model)), str(tiny_model), "llama3.2:1b")}
    for name, (base, base_name, modelfile_from) in cases.items():
        folder = peft_adapter(base, root / name, base_name)
        cfg = deploy.DeployConfig(checkpoint_dir=str(folder), data_dir=str(folder / "no-data"),
                                  modelfile=str(folder / "Modelfile"), modelfile_from=modelfile_from, threads=1)
        out[name] = modelfile.read_modelfile(deploy.publish(deploy.convert(cfg)).modelfile)  # as deploy.run publishes it
    return out


@pytest.mark.parametrize("base", ["embedded", "llama3"])
def test_ollama_sends_the_deployed_modelfile_exactly_the_training_prompt(deployed, go_render, base):
    parsed = deployed[base]
    assert parsed["FROM"] == ("./base.gguf" if base == "embedded" else "llama3.2:1b")
    template, system = parsed["TEMPLATE"], parsed["SYSTEM"]
    assert system == chat.SYSTEM_PROMPT
    for question in QUESTIONS:
        # The turn the model answers: what `ollama run` / /api/chat sends for one question.
        assert go_render(template, {"System": system, "Prompt": question}) == chat.format_prompt(question)
        assert go_render(template, {"Messages": chat.messages(question, system=system)}) == chat.format_prompt(question)
        for answer in ANSWERS:
            # A finished exchange (conversation history): the training example, then the newline
            # that separates ChatML turns.
            full = go_render(template, {"System": system, "Prompt": question, "Response": answer}, execute=True)
            assert full == chat.format_example(question, answer) + "\n"


@pytest.mark.parametrize("name", sorted(SUBSET_TEMPLATES))
def test_project_renderer_agrees_with_go_on_awkward_inputs(go_render, name):
    template = SUBSET_TEMPLATES[name]
    for system in (chat.SYSTEM_PROMPT, "", "Line one\n\nline {{ two }} \"quoted\""):
        for question in QUESTIONS:
            assert modelfile.ollama_prompt(template, question, system) == \
                go_render(template, {"System": system, "Prompt": question}), (system, question)
            for answer in ANSWERS:
                values = {"System": system, "Prompt": question, "Response": answer}
                assert modelfile.render_go_template(template, values) == go_render(template, values, execute=True), \
                    (system, question, answer)


def test_a_changed_newline_or_another_format_is_caught(go_render):
    """The comparison can fail: templates one newline away from ours, and Llama 3's own, render
    something else in Go, and deploy's own check (the project's renderer) reports each of them."""
    question, answer = QUESTIONS[1], ANSWERS[0]
    drifted = {
        "no newline after the assistant marker": chat.OLLAMA_TEMPLATE.replace("assistant\n", "assistant"),
        "blank line after the user turn": chat.OLLAMA_TEMPLATE.replace("{{ .Prompt }}<|im_end|>\n",
                                                                       "{{ .Prompt }}<|im_end|>\n\n"),
        "no system turn": chat.OLLAMA_TEMPLATE.split("{{ end }}", 1)[1],
        "Llama 3's own template": LLAMA3_TEMPLATE,
    }
    for what, template in drifted.items():
        assert go_render(template, {"System": chat.SYSTEM_PROMPT, "Prompt": question}) != chat.format_prompt(question), what
        assert modelfile.template_mismatches(template, question, answer), what
    # A newline lost after the end marker only shows in the conversation history.
    history_drift = chat.OLLAMA_TEMPLATE.removesuffix("\n")
    assert go_render(history_drift, {"System": chat.SYSTEM_PROMPT, "Prompt": question}) == chat.format_prompt(question)
    assert go_render(history_drift, {"System": chat.SYSTEM_PROMPT, "Prompt": question, "Response": answer},
                     execute=True) != chat.format_example(question, answer) + "\n"
