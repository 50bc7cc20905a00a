"""Stage 6: deploy the adapter for Ollama and llama.cpp, and prove it is applied.

    uv run python -m policytune.deploy               # adapter.gguf + base.gguf + Modelfile, then verify
    uv run python -m policytune.deploy --merge       # also a merged 16-bit safetensors model
    uv run python -m policytune.deploy --serve --port 8080   # OpenAI-compatible server, base + adapter
    ollama create policytune -f Modelfile && ollama run policytune

Writes checkpoints/adapter.gguf (the PEFT adapter converted with the `gguf` package),
checkpoints/base.gguf (the base model's GGUF, linked so the Modelfile can use a relative path),
the top-level Modelfile, and checkpoints/deploy_report.json with the verification figures. The files are
moved into place only once verified: a deployment that fails its check leaves the one before it.

Verification does not trust the conversion: llama.cpp (base GGUF + adapter.gguf) and transformers
(HF base + PEFT adapter) are teacher-forced over the answers of a few questions and their
next-token log-probabilities compared. With an unquantised (f32) base written from the HF weights
the two must agree almost exactly; with the deployed quantised base, quantisation already moves
log-probabilities (0.4-0.7 here, about 1.3 in the design notes), so there the adapter's effect
(tuned minus base, in each engine) is compared instead. The adapter must also change llama.cpp's
output versus the base alone, and the Modelfile's Go template must render exactly the training
chat format. A deployed base that is not the trained base (e.g. an instruct GGUF for an adapter
trained on the base model) shows up as low agreement on the deployed base.

A full fine-tune (train.py --method full) deploys as its own file instead: checkpoints/model.gguf
(f16, written from the tuned weights with the base GGUF's metadata and tokenizer) and a Modelfile
whose FROM is that file, verified the same way (llama.cpp on model.gguf against transformers on the
tuned weights, and its effect against the f32 base).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from policytune import chat, config, gguf_adapter, io, llm, modelfile, models
from policytune.config import UserError

# Questions with the sample policy's answers, used when no eval split exists yet: short answers
# and one refusal, so the adapter's effect is measured on the kind of text it was trained on.
DEFAULT_EXAMPLES = [
    ("How many days of annual leave per year does an employee with less than 2 years of service get?",
     "20 days per year."),
    ("How many paid public holidays does Northwind recognise each year?", "10 paid public holidays."),
    ("By when must carried-over annual leave days be used?", "By 31 March of the new leave year."),
    ("What is the amount of the relocation allowance?", chat.REFUSAL),
]


def modelfile_path(modelfile: str, checkpoint_dir: str) -> Path:
    """Where the Modelfile goes: the --modelfile given, else the top-level one for the default checkpoints only."""
    if modelfile:
        return Path(modelfile)
    default = Path(config.Base.checkpoint_dir)
    # "$PWD/checkpoints" is the default folder too
    return Path("Modelfile") if Path(checkpoint_dir).resolve() == default.resolve() else Path(checkpoint_dir) / "Modelfile"


@dataclass
class DeployConfig(config.Base):
    """Stage 6 flags (see the module docstring for commands)."""

    adapter_dir: str = field(default="", metadata={"help": "PEFT adapter folder (default: --checkpoint-dir)"})
    base_model: str = field(default="", metadata={"help": "base model the adapter was trained on (default: adapter_config.json's base_model_name_or_path)"})
    base_gguf: str = field(default="", metadata={"help": "GGUF of that exact base (default: the embedded model's packaged GGUF; required for hub models)"})
    modelfile: str = field(default="", metadata={
        "help": "where to write the Ollama Modelfile (default: ./Modelfile for the default --checkpoint-dir, else "
                "<checkpoint-dir>/Modelfile, so deploying another run does not rewrite the repository's)"})
    modelfile_from: str = field(default="", metadata={"help": "FROM line instead of the base GGUF, e.g. an Ollama tag with the SAME weights as the trained base"})
    verify: bool = field(default=True, metadata={"help": "compare llama.cpp with transformers and check the template (--no-verify skips)"})
    strict_f32: bool = field(default=True, metadata={"help": "also verify against an f32 GGUF of the base written from the HF weights (cached)"})
    verify_questions: str = field(default="", metadata={"help": "JSON records with instruction/output to verify on (default: data/eval_split.json if present, else built-in sample questions)"})
    verify_n: int = field(default=4, metadata={"help": "questions to verify on (each answer token is one compared position)"})
    verify_answer_tokens: int = field(default=24, metadata={"help": "answer tokens compared per question (llama.cpp is asked once per token)"})
    top_k: int = field(default=20, metadata={"help": "llama.cpp log-probabilities returned per position"})
    min_top1_f32: float = field(default=0.95, metadata={"help": "top-1 agreement required with the f32 base (measured: 1.0)"})
    max_logprob_diff_f32: float = field(default=0.1, metadata={"help": "largest |log p| difference allowed with the f32 base (measured: 0.014-0.024)"})
    min_top1_quantized: float = field(default=0.7, metadata={"help": "top-1 agreement required with a quantised base (design notes: 0.92 for Q4_1)"})
    max_effect_diff_quantized: float = field(default=2.5, metadata={"help": "largest difference allowed between the adapter's log-prob change in llama.cpp and in transformers, quantised base (measured: 0.63 right, 6.9 with q/k rows not reordered)"})
    min_effect_correlation: float = field(default=0.8, metadata={"help": "correlation required between the adapter's effect in llama.cpp and in transformers"})
    min_adapter_effect: float = field(default=0.05, metadata={"help": "smallest max |log p| change the adapter must cause in llama.cpp"})
    threads: int = field(default=0, metadata={"help": "CPU threads for llama.cpp and torch (0: all cores)"})
    merge: bool = field(default=False, metadata={"help": "also save the adapter merged into a 16-bit base (checkpoints/merged) + checkpoints/Modelfile.merged"})
    merge_dtype: str = field(default="float16", metadata={"help": "dtype of the merged model", "choices": ("float16", "bfloat16")})
    serve: bool = field(default=False, metadata={"help": "serve base + adapter as an OpenAI-compatible endpoint until Ctrl-C"})
    port: int = field(default=8080, metadata={"help": "port for --serve (127.0.0.1 only)"})
    serve_parallel: int = field(default=2, metadata={"help": "requests --serve handles at once"})

    def __post_init__(self) -> None:
        if self.verify_n < 1:
            raise UserError("--verify-n must be at least 1")
        if self.verify_answer_tokens < 1:
            raise UserError("--verify-answer-tokens must be at least 1")
        if self.top_k < 1:
            raise UserError("--top-k must be at least 1")
        if not 0 <= self.port <= 65535:  # llama.cpp took 70000 as 4464 while the log said 70000
            raise UserError(f"--port must be 0 (a free one) to 65535, got {self.port}")
        if self.modelfile and os.path.isdir(self.modelfile):
            raise UserError(f"--modelfile {self.modelfile}: is a folder; name the file to write (e.g. "
                            f"{os.path.join(self.modelfile, 'Modelfile')})")

    def adapter_path(self) -> Path:
        return Path(self.adapter_dir or self.checkpoint_dir)


@dataclass
class Deployment:
    """Where the deployable files are, once convert() has run."""

    base: models.BaseModel
    adapter_dir: Path
    adapter_gguf: Path | None   # None for a fully fine-tuned model
    base_gguf: Path | None      # a llama.cpp-loadable base file (None: only an Ollama tag is known)
    modelfile: Path
    model_gguf: Path | None = None  # the fully fine-tuned model itself (train.py --method full)
    modelfile_target: Path | None = None  # where publish() writes the Modelfile (None: it is published already)
    modelfile_from: str = ""  # FROM as an Ollama tag instead of the base file
    comment: str = ""


def _threads(requested: int) -> int:
    return requested if requested > 0 else max(1, os.cpu_count() or 1)


def resolve_base(cfg: DeployConfig) -> models.BaseModel:
    """The base the adapter was trained on: --base-model, else what adapter_config.json names."""
    spec = cfg.base_model
    if not spec and models.is_full_model(cfg.adapter_path()):
        spec = models.trained_base_name(cfg.adapter_path()) or models.EMBEDDED
    if not spec:
        path = cfg.adapter_path() / "adapter_config.json"
        adapter_config = io.read_json(path, "adapter config")
        if not isinstance(adapter_config, dict):
            raise UserError(f"{path}: adapter config file must hold a JSON object (train again?)")
        spec = adapter_config.get("base_model_name_or_path") or models.EMBEDDED
    # a trainer checkpoint names the embedded base by its cache folder (the published adapter says "embedded"),
    # which has no GGUF of its own: it is the embedded model, GGUF included
    if spec != models.EMBEDDED and os.path.isdir(spec) and \
            Path(spec).resolve() == Path(models.resolve(models.EMBEDDED).hf_path).resolve():
        spec = models.EMBEDDED
    return models.resolve(spec)


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put `source` at `target` (hard link when possible: the embedded GGUF is 98 MB)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and os.path.samefile(source, target):
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def check_gguf(path: str | os.PathLike, flag: str = "--base-gguf") -> None:
    """A GGUF file starts with the bytes GGUF: anything else is refused before a file is written."""
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path}: no such file")
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise UserError(f"{flag} {path}: not a GGUF file")


def modelfile_comment(base_name: str, path: Path = Path("Modelfile"), full: bool = False) -> str:
    """The Modelfile's opening comment, with the command that loads it from where it is written."""
    made = (f"for a full fine-tune of {base_name}.\n" if full else
            f"for base model {base_name}.\nThe adapter only works on the exact base it was trained on.\n")
    return (f"Generated by `uv run python -m policytune.deploy` {made}"
            f"ollama create policytune -f {shlex.quote(str(path))} && ollama run policytune")


def convert_full(cfg: DeployConfig, base: models.BaseModel) -> Deployment:
    """A fully fine-tuned model (train.py --method full) as its own f16 GGUF, with the base's metadata and tokenizer,
    and a Modelfile whose FROM is that file (no ADAPTER line)."""
    folder = cfg.adapter_path()
    reference = cfg.base_gguf or base.gguf_path
    if not reference or not os.path.isfile(reference):
        raise UserError(f"a GGUF of the base {base.name} is needed for the fine-tuned model's metadata and tokenizer: "
                        "pass --base-gguf FILE")
    check_gguf(reference)
    model_gguf = gguf_adapter.write_base_gguf(str(folder), reference, staged(cfg.checkpoint_path("model.gguf")), dtype="f16")
    print(f"converted {published(model_gguf).name} ({model_gguf.stat().st_size / 1e6:.1f} MB, f16, every weight "
          "fine-tuned)", flush=True)
    base_gguf = link_or_copy(reference, staged(cfg.checkpoint_path("base.gguf")))
    target = modelfile_path(cfg.modelfile, cfg.checkpoint_dir)
    comment = modelfile_comment(base.name, target, full=True)
    path = modelfile.write_modelfile(staged(cfg.checkpoint_path("Modelfile")), str(model_gguf), None, comment=comment)
    return Deployment(base=base, adapter_dir=folder, adapter_gguf=None, base_gguf=base_gguf, modelfile=path,
                      model_gguf=model_gguf, modelfile_target=target, comment=comment)


def convert(cfg: DeployConfig) -> Deployment:
    """Write adapter.gguf, base.gguf and the Modelfile (or model.gguf for a fully fine-tuned model) under staged
    names beside the deployed ones (`staged`); `publish` moves them into place."""
    base = resolve_base(cfg)
    adapter_dir = cfg.adapter_path()
    if models.is_full_model(adapter_dir):
        return convert_full(cfg, base)
    source_gguf = cfg.base_gguf or base.gguf_path
    if source_gguf:
        check_gguf(source_gguf)  # before anything is written: a bad file must not replace a good deployment's
    hf_config = gguf_adapter.read_hf_config(base.hf_path)
    adapter_gguf = gguf_adapter.convert_adapter(adapter_dir, staged(cfg.checkpoint_path("adapter.gguf")), hf_config)
    print(f"converted {published(adapter_gguf).name} ({adapter_gguf.stat().st_size / 1e6:.1f} MB)", flush=True)

    base_gguf = None
    if source_gguf:
        base_gguf = link_or_copy(source_gguf, staged(cfg.checkpoint_path("base.gguf")))
    elif not cfg.modelfile_from:
        raise UserError(
            f"base model {base.name} has no GGUF: convert that exact base to GGUF (llama.cpp's "
            "convert_hf_to_gguf.py) and pass --base-gguf FILE, or pass --modelfile-from with an Ollama "
            "model of the same weights; or use --merge and FROM the merged folder")
    from_line = cfg.modelfile_from or str(base_gguf)
    target = modelfile_path(cfg.modelfile, cfg.checkpoint_dir)
    comment = modelfile_comment(base.name, target)
    path = modelfile.write_modelfile(staged(cfg.checkpoint_path("Modelfile")), from_line, str(adapter_gguf), comment=comment)
    return Deployment(base=base, adapter_dir=adapter_dir, adapter_gguf=adapter_gguf, base_gguf=base_gguf, modelfile=path,
                      modelfile_target=target, modelfile_from=cfg.modelfile_from, comment=comment)


def staged(path: Path) -> Path:
    """Where a deployed file waits for verification: beside its own name, as this process's temporary file, so a
    deploy that fails or is killed leaves the deployment it found (`io.clear_stale_temporaries` removes the rest)."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


published = io.published_name  # the name a staged file is published under: `staged`'s without its ".tmp<pid>"


def publish(deployment: Deployment) -> Deployment:
    """Move the verified files into place, the Modelfile last: it is what users load, and it names the others. Its
    FROM and ADAPTER are written again for its own folder (the staged one lies beside the checkpoints)."""
    if deployment.modelfile_target is None:
        return deployment
    moved = {}
    for name in ("adapter_gguf", "model_gguf", "base_gguf"):
        path = getattr(deployment, name)
        if path is not None:
            moved[name] = published(path)
            os.replace(path, moved[name])
    final = dataclasses.replace(deployment, **moved, modelfile_target=None)
    base = deployment.modelfile_from or str(final.model_gguf or final.base_gguf)
    final.modelfile = modelfile.write_modelfile(deployment.modelfile_target, base,
                                                str(final.adapter_gguf) if final.adapter_gguf else None,
                                                comment=deployment.comment)
    deployment.modelfile.unlink(missing_ok=True)
    print(f"published {', '.join(str(p) for p in moved.values())} and {final.modelfile} "
          f"(FROM {modelfile.read_modelfile(final.modelfile)['FROM']})", flush=True)
    return final


def f32_base_gguf(base: models.BaseModel, reference_gguf: Path | None) -> Path | None:
    """An f32 GGUF of the HF base weights (cached), with model and tokenizer metadata copied from
    reference_gguf; None when there is no reference."""
    if reference_gguf is None:
        return None
    # Keyed by content: checkpoints/base.gguf is a link whose path says nothing about its weights.
    key = io.content_hash(str(Path(base.hf_path).resolve()), io.file_sha256(reference_gguf))
    target = models.cache_dir() / "gguf" / f"{Path(base.hf_path).name}-{key}-f32.gguf"
    if not target.is_file():
        print(f"writing an f32 GGUF of the base for strict verification (once): {target}", flush=True)
        gguf_adapter.write_base_gguf(base.hf_path, str(reference_gguf), target, dtype="f32")
    return target


def verification_examples(cfg: DeployConfig) -> list[tuple[str, str]]:
    """(question, answer) pairs to teacher-force: --verify-questions, the eval split, or built-ins."""
    source = cfg.verify_questions or str(cfg.data_path("eval_split.json"))
    if cfg.verify_questions or os.path.isfile(source):
        records = io.read_records(source, "verification questions")
        pairs = [(r["instruction"], r["output"]) for r in records if r.get("instruction") and r.get("output")]
        if not pairs and not cfg.verify_questions:  # a run on a few records holds none out
            print(f"{source} holds no question to verify on: using the built-in ones", flush=True)
            return DEFAULT_EXAMPLES[:cfg.verify_n]
        if not pairs:
            raise UserError(f"{source}: no records with instruction and output to verify on")
        # Keep refusals in the mix: they are half of what the adapter learned.
        answerable = [p for p in pairs if not chat.is_refusal(p[1])]
        refusals = [p for p in pairs if chat.is_refusal(p[1])]
        mixed = [p for pair in zip(answerable, refusals) for p in pair] + answerable[len(refusals):] + refusals[len(answerable):]
        return mixed[:cfg.verify_n]
    return DEFAULT_EXAMPLES[:cfg.verify_n]


def _tokenize(tokenizer, question: str, answer: str) -> tuple[list[int], int]:
    """Token ids of prompt + completion (tokenised separately, as the trainer does) and the
    prompt length."""
    prompt = tokenizer(chat.format_prompt(question))["input_ids"]
    completion = tokenizer(chat.format_completion(answer), add_special_tokens=False)["input_ids"]
    return list(prompt) + list(completion), len(prompt)


def _hf_logprobs(cfg: DeployConfig, deployment: Deployment, sequences: list[tuple[list[int], int]]) -> tuple[list, list]:
    """Log-probabilities of transformers at each answer position: (tuned, base alone)."""
    import contextlib

    import torch
    from peft import PeftModel

    torch.set_num_threads(_threads(cfg.threads))
    model = models.load_model(deployment.base, dtype="float32")
    if deployment.model_gguf is not None:
        fine_tuned = models.load_full_model(deployment.adapter_dir, dtype="float32").eval()
        tuned_model, plain_model, plain_context = fine_tuned, model.eval(), contextlib.nullcontext
    else:
        model = PeftModel.from_pretrained(model, str(deployment.adapter_dir)).eval()
        tuned_model, plain_model, plain_context = model, model, model.disable_adapter
    tuned, plain = [], []
    with torch.no_grad():
        for ids, prompt_len in sequences:
            inputs = torch.tensor([ids])
            positions = slice(prompt_len - 1, len(ids) - 1)
            tuned.append(torch.log_softmax(tuned_model(inputs).logits[0, positions].float(), -1))
            with plain_context():
                plain.append(torch.log_softmax(plain_model(inputs).logits[0, positions].float(), -1))
    return tuned, plain


def _start(gguf: Path, lora: Path | None, parallel: int, threads: int, ctx: int, port: int = 0):
    if port:
        check_port(port)
    try:
        return llm.start_local_server(str(gguf), parallel, threads, ctx, lora=str(lora) if lora else None, port=port)
    except UserError:
        if lora is None:
            raise
        raise UserError(f"llama.cpp could not load {gguf.name} with the adapter {lora} "
                        "(corrupt adapter, or one made for a different base?)") from None


def check_port(port: int) -> None:
    """A port taken by another program was reported as a corrupt adapter (llama.cpp only says it failed to start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise UserError(f"--port {port}: in use by another program on 127.0.0.1 (pick another, or 0 for a free one)") \
                from None


def _llama_logprobs(cfg: DeployConfig, gguf: Path, lora: Path | None, sequences, label: str) -> list[list[dict[int, float]]]:
    """Top-k log-probabilities of llama.cpp at each answer position, teacher-forced token by token."""
    from tqdm import tqdm

    ctx = max(len(ids) for ids, _ in sequences) + 16
    server = _start(gguf, lora, 1, _threads(cfg.threads), ctx)
    out = []
    total = sum(len(ids) - prompt_len for ids, prompt_len in sequences)
    with tqdm(total=total, desc=f"llama.cpp {label}", unit="pos", leave=False, mininterval=2) as bar:
        for ids, prompt_len in sequences:
            per_position = []
            for end in range(prompt_len, len(ids)):
                response = server.handle_completions({
                    "prompt": ids[:end], "n_predict": 1, "n_probs": cfg.top_k, "temperature": 0.0,
                    "cache_prompt": True, "samplers": ["top_k"], "top_k": 1})
                if "error" in response:
                    raise UserError(f"llama.cpp failed on {gguf.name}: {response['error']}")
                top = response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
                per_position.append({entry["id"]: entry["logprob"] for entry in top})
                bar.update(1)
            out.append(per_position)
    del server
    return out


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sxx * syy) ** 0.5


def compare(sequences, hf_tuned, hf_plain, llama_tuned, llama_plain) -> dict:
    """Agreement figures between llama.cpp and transformers, and the adapter's effect in each."""
    positions = agree = 0
    max_diff = 0.0
    llama_effect = hf_effect = effect_diff = 0.0
    top1_changed_llama = 0
    d_hf, d_llama = [], []
    for (ids, prompt_len), tuned, plain, l_tuned, l_plain in zip(sequences, hf_tuned, hf_plain, llama_tuned, llama_plain):
        for i, (lt, lp) in enumerate(zip(l_tuned, l_plain)):
            positions += 1
            target = ids[prompt_len + i]
            hf_top = int(tuned[i].argmax())
            agree += max(lt, key=lt.get) == hf_top
            top1_changed_llama += max(lt, key=lt.get) != max(lp, key=lp.get)
            max_diff = max(max_diff, max(abs(v - float(tuned[i][t])) for t, v in lt.items()))
            # Both effects over the same tokens: those llama.cpp reports with and without the adapter.
            shared = set(lt) & set(lp)
            if shared:
                llama_effect = max(llama_effect, max(abs(lt[t] - lp[t]) for t in shared))
                hf_effect = max(hf_effect, max(abs(float(tuned[i][t] - plain[i][t])) for t in shared))
                # The adapter's effect compared directly: quantisation moves both runs of an engine
                # alike, so this stays small on a quantised base when the adapter is right.
                effect_diff = max(effect_diff, max(abs((lt[t] - lp[t]) - float(tuned[i][t] - plain[i][t]))
                                                   for t in shared))
            if target in shared:
                d_llama.append(lt[target] - lp[target])
                d_hf.append(float(tuned[i][target] - plain[i][target]))
    correlation = _pearson(d_hf, d_llama)
    # What the adapter was trained to do, not only that it changes something: the answers' own tokens made
    # likelier, per token, in each engine over the same positions.
    gain_llama = sum(d_llama) / len(d_llama) if d_llama else None
    gain_hf = sum(d_hf) / len(d_hf) if d_hf else None
    return {
        "positions": positions,
        "top1_agreement": round(agree / positions, 4) if positions else 0.0,
        "max_logprob_diff": round(max_diff, 4),
        "adapter_effect_llama": round(llama_effect, 4),
        "adapter_effect_hf": round(hf_effect, 4),
        "max_effect_diff": round(effect_diff, 4),
        "top1_changed_by_adapter_llama": top1_changed_llama,
        "effect_correlation": round(correlation, 4) if correlation is not None else None,
        "effect_points": len(d_hf),
        "answer_logprob_gain_llama": round(gain_llama, 4) if gain_llama is not None else None,
        "answer_logprob_gain_hf": round(gain_hf, 4) if gain_hf is not None else None,
    }


def verify(cfg: DeployConfig, deployment: Deployment) -> dict:
    """Prove the deployed files reproduce the trained model; returns figures with "passed"."""
    started = time.time()
    failures: list[str] = []
    examples = verification_examples(cfg)

    # 1. The Modelfile on disk renders exactly the training chat format.
    written = modelfile.read_modelfile(deployment.modelfile)
    template_problems = [p for q, a in examples for p in modelfile.template_mismatches(written.get("TEMPLATE", ""), q, a)]
    if written.get("SYSTEM") != chat.SYSTEM_PROMPT:
        template_problems.append("SYSTEM differs from chat.SYSTEM_PROMPT")
    stops = [value for name, value in written["PARAMETER"] if name == "stop"]
    if chat.IM_END not in stops:
        template_problems.append(f"no PARAMETER stop {chat.IM_END!r}: generation would not end")
    failures += [f"Modelfile: {p}" for p in template_problems]

    # 2. llama.cpp and transformers agree on every answer position.
    tokenizer = models.load_tokenizer(deployment.base)
    sequences = [(ids[:prompt_len + cfg.verify_answer_tokens], prompt_len)
                 for ids, prompt_len in (_tokenize(tokenizer, q, a) for q, a in examples)]
    hf_tuned, hf_plain = _hf_logprobs(cfg, deployment, sequences)
    bases: dict[str, Path] = {}
    if cfg.strict_f32:
        reference = deployment.base_gguf or deployment.base.gguf_path
        f32 = f32_base_gguf(deployment.base, Path(reference) if reference else None)
        if f32 is not None:
            bases["f32"] = f32
    if deployment.base_gguf is not None:
        bases["deployed"] = deployment.base_gguf
    if not bases:
        raise UserError("no base GGUF to verify with: pass --base-gguf (the same weights as the Modelfile's FROM)")
    # (label, the tuned model's GGUF, its adapter, the base GGUF it is compared with): a LoRA adapter on each base;
    # a full fine-tune is one file, compared with the most exact base (its "effect" is tuned minus base).
    if deployment.model_gguf is not None:
        runs = [("model", deployment.model_gguf, None, next(iter(bases.values())))]
    else:
        runs = [(label, gguf, deployment.adapter_gguf, gguf) for label, gguf in bases.items()]
    figures: dict[str, dict] = {}
    for label, gguf, lora, plain_gguf in runs:
        llama_tuned = _llama_logprobs(cfg, gguf, lora, sequences, f"{label}+adapter" if lora else label)
        llama_plain = _llama_logprobs(cfg, plain_gguf, None, sequences, f"{published(plain_gguf).stem} alone")
        result = compare(sequences, hf_tuned, hf_plain, llama_tuned, llama_plain)
        result["gguf"] = published(gguf).name  # the name it is deployed under, not the staged one
        quantized = label != "f32" and not _is_unquantized(gguf)
        result["quantized"] = quantized
        figures[label] = result
        prefix = f"{label} base ({published(gguf).name})"
        if result["adapter_effect_llama"] < cfg.min_adapter_effect:
            failures.append(f"{prefix}: the adapter does not change llama.cpp's output "
                            f"(max log-prob change {result['adapter_effect_llama']:.4f} < {cfg.min_adapter_effect})")
        if quantized:
            if result["top1_agreement"] < cfg.min_top1_quantized:
                failures.append(f"{prefix}: top-1 agreement {result['top1_agreement']:.3f} < {cfg.min_top1_quantized}")
            if result["max_effect_diff"] > cfg.max_effect_diff_quantized:
                failures.append(f"{prefix}: the adapter changes llama.cpp's log-probs differently from transformers' "
                                f"(max difference {result['max_effect_diff']:.3f} > {cfg.max_effect_diff_quantized})")
        else:
            if result["top1_agreement"] < cfg.min_top1_f32:
                failures.append(f"{prefix}: top-1 agreement {result['top1_agreement']:.3f} < {cfg.min_top1_f32}")
            if result["max_logprob_diff"] > cfg.max_logprob_diff_f32:
                failures.append(f"{prefix}: max log-prob difference {result['max_logprob_diff']:.4f} > {cfg.max_logprob_diff_f32}")
        correlation = result["effect_correlation"]
        if result["adapter_effect_hf"] >= cfg.min_adapter_effect and (correlation is None or correlation < cfg.min_effect_correlation):
            failures.append(f"{prefix}: the adapter's effect in llama.cpp does not follow transformers "
                            f"(correlation {correlation} < {cfg.min_effect_correlation})")
    return {
        "passed": not failures,
        "failures": failures,
        "template_identical": not template_problems,
        "questions": len(examples),
        "bases": figures,
        "seconds": round(time.time() - started, 1),
    }


def _is_unquantized(gguf: Path) -> bool:
    import gguf as gguf_lib

    reader = gguf_lib.GGUFReader(str(gguf))
    kinds = {t.tensor_type for t in reader.tensors}
    return kinds <= {gguf_lib.GGMLQuantizationType.F32, gguf_lib.GGMLQuantizationType.F16,
                     gguf_lib.GGMLQuantizationType.BF16}


def print_figures(result: dict) -> None:
    """One line per base, the figures the issue asks for."""
    print(f"template: {'identical to the training chat format' if result['template_identical'] else 'MISMATCH'}", flush=True)
    for label, f in result["bases"].items():
        print(f"{'fine-tuned' if label == 'model' else label + ' base'} {f['gguf']}: top-1 agreement {f['top1_agreement']:.1%} over {f['positions']} positions, "
              f"max |log p| diff {f['max_logprob_diff']:.4f}; adapter effect llama.cpp {f['adapter_effect_llama']:.3f} "
              f"vs transformers {f['adapter_effect_hf']:.3f}, max effect diff {f['max_effect_diff']:.4f}, "
              f"correlation {f['effect_correlation']}", flush=True)
        if f.get("answer_logprob_gain_llama") is not None:
            print(f"  answer log-prob gain per token over {f['effect_points']} positions: llama.cpp "
                  f"{f['answer_logprob_gain_llama']:+.3f} vs transformers {f['answer_logprob_gain_hf']:+.3f}", flush=True)
    for failure in result["failures"]:
        print(f"FAILED: {failure}", flush=True)
    print("verification " + ("passed" if result["passed"] else "FAILED"), flush=True)


def merge(cfg: DeployConfig, deployment: Deployment) -> dict:
    """Merge the adapter into a 16-bit copy of the base, saved as safetensors + a Modelfile for it.
    Returns how closely the merged 16-bit weights reproduce base + adapter on the check questions."""
    import torch
    from peft import PeftModel

    if deployment.model_gguf is not None:
        raise UserError("--merge folds an adapter into its base; a full fine-tune is already one model (model.gguf)")

    torch.set_num_threads(_threads(cfg.threads))
    target = cfg.checkpoint_path("merged")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tokenizer = models.load_tokenizer(deployment.base)
    sequences = [_tokenize(tokenizer, q, a) for q, a in verification_examples(cfg)]
    model = PeftModel.from_pretrained(models.load_model(deployment.base, dtype="float32"), str(deployment.adapter_dir))
    with torch.no_grad():
        before = [torch.log_softmax(model(torch.tensor([ids])).logits[0, p - 1:-1], -1) for ids, p in sequences]
        model = model.merge_and_unload().to(getattr(torch, cfg.merge_dtype))
        # Run the rounded 16-bit weights in fp32: CPUs lack fast 16-bit matmuls, and rounding is
        # what we want to measure.
        check = copy_to_float32(model)
        after = [torch.log_softmax(check(torch.tensor([ids])).logits[0, p - 1:-1], -1) for ids, p in sequences]
    del check
    figures = {
        "positions": sum(len(b) for b in before),
        "top1_agreement": round(sum(int((b.argmax(-1) == a.argmax(-1)).sum()) for b, a in zip(before, after))
                                / max(1, sum(len(b) for b in before)), 4),
        "max_logprob_diff": round(max(float((b - a).abs().max()) for b, a in zip(before, after)), 4),
    }
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for path in Path(tmp).iterdir():  # safetensors writes 0600; Ollama's service user reads these
        io.ordinary_mode(path)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    merged_modelfile = cfg.checkpoint_path("Modelfile.merged")
    modelfile.write_modelfile(merged_modelfile, str(target), None,
                              comment="The adapter merged into the base: no ADAPTER line needed.\n"
                                      f"ollama create policytune-merged -f {merged_modelfile}")
    print(f"wrote {target} ({cfg.merge_dtype}) and {merged_modelfile}; merged vs base + adapter: top-1 agreement "
          f"{figures['top1_agreement']:.1%} over {figures['positions']} positions, max |log p| diff "
          f"{figures['max_logprob_diff']:.4f}", flush=True)
    return figures


def copy_to_float32(model):
    """An fp32 copy of a (16-bit) model, for checking it on CPU."""
    import copy

    import torch

    return copy.deepcopy(model).to(torch.float32)


def start_server(cfg: DeployConfig, deployment: Deployment):
    """llama.cpp's OpenAI-compatible server with base + adapter on 127.0.0.1:--port (0: a free port)."""
    if deployment.model_gguf is not None:
        return _start(deployment.model_gguf, None, cfg.serve_parallel, _threads(cfg.threads), 2048, cfg.port)
    if deployment.base_gguf is None:
        raise UserError("--serve needs a base GGUF file (--base-gguf)")
    return _start(deployment.base_gguf, deployment.adapter_gguf, cfg.serve_parallel, _threads(cfg.threads), 2048, cfg.port)


def serve(cfg: DeployConfig, deployment: Deployment, stop: threading.Event | None = None) -> None:
    """Serve base + adapter until Ctrl-C (or `stop` is set)."""
    server = start_server(cfg, deployment)
    print(f"serving the tuned model at {server.listening_address}/v1 (OpenAI-compatible; Ctrl-C stops)", flush=True)
    # the training system prompt in the example: without one, llama.cpp's template puts SmolLM's own in its place
    body = json.dumps({"messages": chat.messages("How many days of annual leave do I get?"), "temperature": 0})
    print(f"  curl {server.listening_address}/v1/chat/completions -H 'Content-Type: application/json' "
          f"-d {shlex.quote(body)}", flush=True)
    print("  (send the system prompt as above, policytune.chat.SYSTEM_PROMPT: chat.messages() does)", flush=True)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        # A service manager stops with SIGTERM (and background jobs ignore SIGINT): stop cleanly.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        del server
    print("server stopped", flush=True)


def run(cfg: DeployConfig) -> dict:
    """Convert, verify, then publish the files and the Modelfile, optionally merge; returns the verification figures.
    Raises UserError when verification fails (its report is written as deploy_report.failed.json, the deployed files
    are left as they were)."""
    folder = Path(cfg.checkpoint_dir)
    if cfg.merge and models.is_full_model(cfg.adapter_path()):  # found only after the files were published
        raise UserError("--merge folds an adapter into its base; a full fine-tune is already one model (model.gguf)")
    if cfg.serve and cfg.port:
        check_port(cfg.port)  # before converting and verifying, not once the files are published
    io.clear_stale_temporaries(folder)
    result: dict = {"passed": None, "verified": False}
    try:
        deployment = convert(cfg)
        if cfg.verify:
            result = verify(cfg, deployment) | {"verified": True}
            print_figures(result)
        passed = not cfg.verify or result["passed"]
        target = deployment.modelfile_target
        if passed:
            deployment = publish(deployment)
    finally:
        io.clear_stale_temporaries(folder, own=True)
    if passed and cfg.merge:
        result["merged"] = merge(cfg, deployment)

    def named(path: Path | None) -> str | None:
        return str(published(path)) if path else None

    report = {"adapter_gguf": named(deployment.adapter_gguf), "model_gguf": named(deployment.model_gguf),
              "base_gguf": named(deployment.base_gguf), "modelfile": str(target or deployment.modelfile),
              "published": passed, "base_model": deployment.base.name, "config": config.as_dict(cfg)} | result
    # The report of a deployment that failed goes beside the deployed one's, which still describes what is deployed.
    failed = cfg.checkpoint_path("deploy_report.failed.json")
    io.write_json_atomic(cfg.checkpoint_path("deploy_report.json") if passed else failed, report)
    if not passed:
        raise UserError(f"deploy verification failed, so the deployed files were left as they were (report: {failed}; "
                        "--no-verify publishes without the check): " + "; ".join(result["failures"]))
    failed.unlink(missing_ok=True)
    if cfg.serve:
        serve(cfg, deployment)
    return result


def main(cfg: DeployConfig) -> None:
    config.show(cfg)
    run(cfg)


if __name__ == "__main__":
    config.run(main, DeployConfig)
