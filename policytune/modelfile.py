"""The Ollama Modelfile: written from `policytune.chat`, read back, and its Go template rendered.

Ollama renders a template without `.Messages` once per exchange; for the turn the model must
answer it drops the `{{ .Response }}` action and everything after it (ollama/template/template.go),
so what the model sees is the text up to `.Response`; a template that names neither `.Response` nor
`.Messages` gets a `{{ .Response }}` appended when Ollama parses it. `render_go_template` implements
that subset of Go's text/template (`{{ .Field }}`, `{{ if .Field }}...{{ else }}...{{ end }}`,
`{{-`/`-}}` trimming of ASCII spaces, tabs and newlines) so the check needs no Go toolchain; anything
else in a template is an error, not a guess. tests/test_modelfile_go.py holds it against Go's.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from policytune import chat, io
from policytune.config import UserError

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_GO_SPACE = " \t\r\n"  # what Go's trim markers remove (not Unicode spaces such as U+00A0)


class TemplateError(UserError):
    """The template uses Go template features this renderer does not know."""


def _tokens(template: str) -> list[tuple[str, str]]:
    """Split a Go template into ("text", s) and ("action", s) tokens, applying trim markers."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(template):
        text = template[pos:match.start()]
        if trim_next:
            text = text.lstrip(_GO_SPACE)
        if match.group(1):
            text = text.rstrip(_GO_SPACE)
        tokens.append(("text", text))
        tokens.append(("action", match.group(2)))
        trim_next = bool(match.group(3))
        pos = match.end()
    text = template[pos:]
    tokens.append(("text", text.lstrip(_GO_SPACE) if trim_next else text))
    return tokens


def _field(expr: str) -> str:
    if not re.fullmatch(r"\.[A-Za-z_][A-Za-z0-9_]*", expr):
        raise TemplateError(f"unsupported Go template expression {{{{ {expr} }}}}")
    return expr[1:]


def render_go_template(template: str, values: dict[str, str], cut_at_response: bool = False) -> str:
    """Render the subset of Go templates that chat templates use; with cut_at_response, stop
    where `{{ .Response }}` is, as Ollama does for the turn being generated."""
    out: list[str] = []
    # Stack of (branch taken, currently emitting) for nested ifs.
    stack: list[tuple[bool, bool]] = []
    emitting = True
    tokens = _tokens(template)
    named = " ".join(value for kind, value in tokens if kind == "action")
    if "Response" in values and not re.search(r"\.(response|messages)\b", named, re.I):
        tokens.append(("action", ".Response"))  # as Ollama's parser does
    for kind, value in tokens:
        if kind == "text":
            if emitting:
                out.append(value)
            continue
        if value.startswith("if "):
            taken = bool(values.get(_field(value[3:].strip()), ""))
            stack.append((taken, emitting))
            emitting = emitting and taken
        elif value == "else":
            if not stack:
                raise TemplateError("{{ else }} without {{ if }}")
            taken, outer = stack[-1]
            emitting = outer and not taken
        elif value == "end":
            if not stack:
                raise TemplateError("{{ end }} without {{ if }}")
            _, emitting = stack.pop()
        else:
            name = _field(value)
            if cut_at_response and name == "Response":
                return "".join(out)
            if name not in values:
                raise TemplateError(f"template uses .{name}, which Ollama does not provide here")
            if emitting:
                out.append(values[name])
    if stack:
        raise TemplateError("{{ if }} without {{ end }}")
    return "".join(out)


def ollama_prompt(template: str, question: str, system: str = chat.SYSTEM_PROMPT) -> str:
    """The text Ollama sends the model for one question (system + user turn, answer pending)."""
    return render_go_template(template, {"System": system, "Prompt": question, "Response": ""}, cut_at_response=True)


def template_mismatches(template: str, question: str, answer: str) -> list[str]:
    """Differences between the Go template's rendering and the training chat format (empty: none)."""
    problems = []
    prompt = ollama_prompt(template, question)
    if prompt != chat.format_prompt(question):
        problems.append(f"prompt differs: Ollama would send {prompt!r}, training used {chat.format_prompt(question)!r}")
    full = render_go_template(template, {"System": chat.SYSTEM_PROMPT, "Prompt": question, "Response": answer})
    if not full.startswith(chat.format_example(question, answer)):
        problems.append(f"a past exchange renders as {full!r}, training used {chat.format_example(question, answer)!r}")
    return problems


def _quoted(text: str) -> str:
    if '"""' in text:
        raise UserError('a Modelfile value cannot contain """')
    return f'"""{text}"""'


def relative_to(path: str | os.PathLike, modelfile: str | os.PathLike) -> str:
    """A path as Ollama resolves it from the Modelfile's folder (./x for files below it)."""
    rel = os.path.relpath(Path(path).resolve(), Path(modelfile).resolve().parent)
    return rel if rel.startswith("..") else "./" + rel


def render_modelfile(base: str, adapter: str | None = None, system: str = chat.SYSTEM_PROMPT,
                     template: str = chat.OLLAMA_TEMPLATE, stop: list[str] | None = None,
                     temperature: float = 0.0, comment: str = "") -> str:
    """Modelfile text: FROM, ADAPTER, TEMPLATE, SYSTEM, stop tokens and temperature."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()] if comment else []
    lines.append(f"FROM {base}")
    if adapter:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f"TEMPLATE {_quoted(template)}")
    lines.append(f"SYSTEM {_quoted(system)}")
    for token in stop if stop is not None else chat.STOP:
        lines.append(f'PARAMETER stop "{token}"')
    # Greedy decoding: answers must be the policy's words, not a sample around them.
    lines.append(f"PARAMETER temperature {temperature:g}")
    return "\n".join(lines) + "\n"


def write_modelfile(path: str | os.PathLike, base: str, adapter: str | None = None, comment: str = "", **kwargs) -> Path:
    """Write the Modelfile atomically; base/adapter may be files (made relative) or Ollama tags."""
    def as_reference(value: str) -> str:
        return relative_to(value, path) if os.path.exists(value) else value

    text = render_modelfile(as_reference(base), as_reference(adapter) if adapter else None, comment=comment, **kwargs)
    io.write_text_atomic(path, text)
    return Path(path)


def read_modelfile(path: str | os.PathLike) -> dict:
    """Parse a Modelfile into {"FROM", "ADAPTER", "TEMPLATE", "SYSTEM", "PARAMETER": [(name, value)]}."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: Modelfile not found") from None
    parsed: dict = {"PARAMETER": []}
    pattern = re.compile(r'^(FROM|ADAPTER|TEMPLATE|SYSTEM|PARAMETER|LICENSE|MESSAGE)\s+("""(.*?)"""|[^\n]*)',
                         re.S | re.M | re.I)
    for match in pattern.finditer(text):
        command = match.group(1).upper()
        value = match.group(3) if match.group(3) is not None else match.group(2).strip()
        if command == "PARAMETER":
            name, _, rest = value.partition(" ")
            parsed["PARAMETER"].append((name, rest.strip().strip('"')))
        else:
            parsed[command] = value
    if "FROM" not in parsed:
        raise UserError(f"{path}: no FROM line")
    return parsed
