"""The one chat format and the one refusal string.

Generation, training, evaluation and the Ollama Modelfile all render conversations through this
module, so what the adapter was trained on is exactly what it sees when deployed. The format is
ChatML, the template SmolLM2 ships with; for a base model without these special tokens (e.g.
Llama-3.2-1B base) the markers are ordinary text, still identical everywhere.
"""
from __future__ import annotations

REFUSAL = "Not specified in the provided excerpt."

# Kept short on purpose: it is in every training example, and on a CPU its tokens were half the
# compute of a typical example (52 of 104 tokens) with the longer wording.
SYSTEM_PROMPT = (
    "Answer from the organisation's policy only, with its exact numbers and names. "
    f"If the policy does not say, reply exactly: {REFUSAL}"
)

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Stop strings for servers and Ollama: the end of a turn, and the start of a new one in case a
# model forgets to close its turn.
STOP = [IM_END, IM_START]


def turn(role: str, content: str) -> str:
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def format_prompt(question: str, system: str = SYSTEM_PROMPT) -> str:
    """Everything the model sees before its answer: system turn, user turn, open assistant turn."""
    return turn("system", system) + turn("user", question) + f"{IM_START}assistant\n"


def format_completion(answer: str) -> str:
    """What the model is trained to write: the answer and the end-of-turn marker."""
    return f"{answer}{IM_END}"


def format_example(question: str, answer: str, system: str = SYSTEM_PROMPT) -> str:
    return format_prompt(question, system) + format_completion(answer)


def messages(question: str, answer: str | None = None, system: str = SYSTEM_PROMPT) -> list[dict]:
    """The same conversation as OpenAI-style messages (for JSONL export and chat endpoints)."""
    out = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    if answer is not None:
        out.append({"role": "assistant", "content": answer})
    return out


def with_excerpt(question: str, excerpt: str = "") -> str:
    """The user turn of a record made with its policy text (preprocessing.py --input-format with_context), fenced as
    the generation prompts fence it; the question alone when there is none (closed book)."""
    return f"<excerpt>\n{excerpt.strip()}\n</excerpt>\n\n{question}" if excerpt and excerpt.strip() else question


# Jinja chat template equal to format_prompt/format_example, installed on every tokenizer we
# train or evaluate with, so `apply_chat_template` cannot drift from this module.
JINJA_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Ollama's Go template for the same format (`.System`, `.Prompt`, `.Response`).
OLLAMA_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)


def is_refusal(text: str) -> bool:
    """True when an answer is the refusal (exact string, tolerant of whitespace and the end marker)."""
    return text.replace(IM_END, "").strip() == REFUSAL
