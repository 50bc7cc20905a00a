"""Write GGUF files for llama.cpp and Ollama with the `gguf` package: a LoRA adapter from a PEFT
folder, and a full-precision base model from a Hugging Face folder.

Two layout facts matter, both checked by measurement in `policytune.deploy.verify`:
- Orientation: PEFT stores lora_A as [r, in] and lora_B as [out, r]. GGUF lists dimensions
  innermost first, so those numpy arrays are exactly llama.cpp's `lora_a` (ne = [in, r]) and
  `lora_b` (ne = [r, out]), which it multiplies as B (A x) * alpha / r, the same as PEFT.
- Rotary layout: Hugging Face llama rotates dimension i of a head together with i + head_dim/2
  (`rotate_half`), llama.cpp's llama graph rotates neighbours 2i and 2i+1. So the output rows of
  q_proj and k_proj are reordered per head in GGUF, and every matrix whose rows are those outputs
  (the base weights, and LoRA B of q and k) must get the same reordering.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from policytune.config import UserError

# HF model_type -> llama.cpp architecture whose tensor names and rotary layout we know. Mistral
# models are llama models to llama.cpp (same names, same graph).
SUPPORTED_MODEL_TYPES = {"llama": "llama", "mistral": "llama"}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEFT_PREFIX = "base_model.model."


@contextlib.contextmanager
def _gguf_file(out_path: str | os.PathLike, arch) -> Iterator:
    """A GGUFWriter on a temporary file that replaces out_path only when everything was written."""
    import gguf

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    try:
        yield writer
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)


def _gguf_arch(model_type: str):
    import gguf

    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"architecture {model_type!r} is not supported by the GGUF adapter converter "
                        f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)}); use --merge and convert the merged model")
    return gguf.MODEL_ARCH.LLAMA


def rotary_rows_to_gguf(rows: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the output rows of a q/k projection (or its LoRA B) from HF to llama.cpp layout.

    Within each head, HF row i (i < head_dim/2) pairs with row i + head_dim/2; llama.cpp wants
    the pair on rows 2i and 2i+1. Viewing a head's rows as [2, head_dim/2] and transposing to
    [head_dim/2, 2] interleaves the halves.
    """
    out_dim = rows.shape[0]
    if out_dim % (2 * n_heads):
        raise UserError(f"cannot split {out_dim} rows into {n_heads} rotary heads")
    half = out_dim // n_heads // 2
    return (rows.reshape(n_heads, 2, half, *rows.shape[1:])
            .swapaxes(1, 2)
            .reshape(rows.shape))


def read_hf_config(hf_path: str) -> dict:
    """The base model's config.json as a dict (clear error when it is not a model folder)."""
    path = Path(hf_path) / "config.json"
    if not path.is_file():
        try:
            from transformers import AutoConfig

            return AutoConfig.from_pretrained(hf_path).to_dict()
        except Exception:
            raise UserError(f"{hf_path}: no config.json, cannot tell the base model's architecture") from None
    return json.loads(path.read_text())


def _heads(hf_config: dict) -> tuple[int, int, int]:
    n_layers = int(hf_config["num_hidden_layers"])
    n_heads = int(hf_config["num_attention_heads"])
    n_kv = int(hf_config.get("num_key_value_heads") or n_heads)
    return n_layers, n_heads, n_kv


def read_peft_adapter(adapter_dir: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """(adapter_config.json, tensors by name) of a PEFT LoRA folder, with clear errors."""
    from safetensors.numpy import load_file

    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(f"{adapter_dir}: no PEFT adapter here (need adapter_config.json and "
                        "adapter_model.safetensors; run train.py first)")
    try:
        adapter_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{config_path}: not valid JSON ({exc.msg})") from None
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{config_path}: peft_type {adapter_config.get('peft_type')!r} is not LoRA")
    if adapter_config.get("use_dora"):
        raise UserError(f"{config_path}: DoRA adapters have no llama.cpp equivalent; use --merge")
    if adapter_config.get("modules_to_save"):
        raise UserError(f"{config_path}: modules_to_save {adapter_config['modules_to_save']} cannot be "
                        "expressed as a GGUF LoRA; use --merge")
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:
        raise UserError(f"{weights_path}: cannot read the adapter weights ({exc})") from None
    return adapter_config, tensors


def _peft_scaling(adapter_config: dict, module_path: str, rank: int) -> float:
    """The factor PEFT multiplies B A by for one module (alpha/r, rsLoRA and per-module patterns)."""
    def pattern_value(patterns: dict, default):
        # PEFT matches pattern keys against the end of the module name.
        for key, value in (patterns or {}).items():
            if module_path == key or module_path.endswith("." + key):
                return value
        return default

    alpha = float(pattern_value(adapter_config.get("alpha_pattern"), adapter_config["lora_alpha"]))
    return alpha / math.sqrt(rank) if adapter_config.get("use_rslora") else alpha / rank


def convert_adapter(adapter_dir: str | os.PathLike, out_path: str | os.PathLike, hf_config: dict | None = None) -> Path:
    """Convert a PEFT LoRA folder into a llama.cpp/Ollama GGUF LoRA adapter at out_path."""
    import gguf

    from policytune import models

    adapter_config, tensors = read_peft_adapter(adapter_dir)
    if hf_config is None:
        hf_config = read_hf_config(models.resolve(adapter_config.get("base_model_name_or_path") or models.EMBEDDED).hf_path)
    model_type = hf_config.get("model_type", "?")
    arch = _gguf_arch(model_type)
    n_layers, n_heads, n_kv = _heads(hf_config)
    names = gguf.get_tensor_name_map(arch, n_layers)

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if ".lora_A." in key or ".lora_B." in key:
            module = key.split(".lora_")[0].removeprefix(PEFT_PREFIX)
            pairs.setdefault(module, {})[key.split(".lora_")[1][0]] = value
        elif ".lora_embedding_" in key or ".lora_magnitude_vector" in key:
            raise UserError(f"{adapter_dir}: tensor {key} cannot be expressed as a GGUF LoRA; use --merge")
    if not pairs:
        raise UserError(f"{adapter_dir}: the adapter holds no LoRA A/B tensors")

    # llama.cpp scales every pair by the one file-wide alpha / its rank; PEFT patterns or rsLoRA
    # that differ from that are folded into B so the product stays what PEFT computes.
    file_alpha = float(adapter_config["lora_alpha"])
    with _gguf_file(out_path, arch) as writer:
        writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, file_alpha)
        writer.add_name(f"policytune LoRA for {adapter_config.get('base_model_name_or_path', '?')}")
        for module in sorted(pairs):
            pair = pairs[module]
            if set(pair) != {"A", "B"}:
                raise UserError(f"{adapter_dir}: module {module} lacks its lora_{'B' if 'A' in pair else 'A'} tensor")
            gguf_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
            if gguf_name is None or module.rsplit(".", 1)[-1] not in LORA_TARGETS:
                raise UserError(f"{adapter_dir}: LoRA on {module} is not supported by the GGUF adapter converter "
                                f"(supported targets: {', '.join(LORA_TARGETS)}); use --merge")
            lora_a = pair["A"].astype(np.float32)
            lora_b = pair["B"].astype(np.float32)
            rank = lora_a.shape[0]
            if lora_b.shape[1] != rank:
                raise UserError(f"{adapter_dir}: {module} has lora_A rank {rank} but lora_B {lora_b.shape}")
            correction = _peft_scaling(adapter_config, module, rank) / (file_alpha / rank)
            if not math.isclose(correction, 1.0):
                lora_b = lora_b * np.float32(correction)
            if module.endswith("self_attn.q_proj"):
                lora_b = rotary_rows_to_gguf(lora_b, n_heads)
            elif module.endswith("self_attn.k_proj"):
                lora_b = rotary_rows_to_gguf(lora_b, n_kv)
            writer.add_tensor(gguf_name + ".lora_a", np.ascontiguousarray(lora_a))
            writer.add_tensor(gguf_name + ".lora_b", np.ascontiguousarray(lora_b))
    return Path(out_path)


# Keys of a reference GGUF that describe the weights' encoding, not the model: a rewritten f32
# file must not claim the old quantisation.
_ENCODING_KEYS = {"general.file_type", "general.quantization_version", "general.alignment"}


def write_base_gguf(hf_path: str, reference_gguf: str, out_path: str | os.PathLike, dtype: str = "f32") -> Path:
    """Write the HF base weights as an unquantised GGUF (f32 or f16), with the model and tokenizer
    metadata copied from a GGUF of the same model (e.g. the embedded Q4_1 file)."""
    import gguf
    from safetensors import safe_open

    hf_config = read_hf_config(hf_path)
    arch = _gguf_arch(hf_config.get("model_type", "?"))
    n_layers, n_heads, n_kv = _heads(hf_config)
    names = gguf.get_tensor_name_map(arch, n_layers)
    reader = gguf.GGUFReader(reference_gguf)
    reference_tensors = {t.name for t in reader.tensors}
    np_dtype = {"f32": np.float32, "f16": np.float16}[dtype]

    files = sorted(Path(hf_path).glob("*.safetensors"))
    if not files:
        raise UserError(f"{hf_path}: no safetensors weights to write a base GGUF from")
    written = set()
    with _gguf_file(out_path, arch) as writer:
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in _ENCODING_KEYS or key == gguf.Keys.General.ARCHITECTURE:
                continue
            value_type = field.types[0]
            if value_type == gguf.GGUFValueType.ARRAY:
                writer.add_key_value(key, field.contents(), value_type, sub_type=field.types[-1])
            else:
                writer.add_key_value(key, field.contents(), value_type)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

        for file in files:
            with safe_open(str(file), "np") as weights:
                for hf_name in weights.keys():
                    gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                    if gguf_name is None:
                        if "rotary_emb" in hf_name:
                            continue
                        raise UserError(f"{hf_path}: no GGUF name for tensor {hf_name}")
                    if gguf_name not in reference_tensors:
                        continue  # e.g. lm_head of a tied-embedding model: llama.cpp reuses token_embd
                    tensor = weights.get_tensor(hf_name).astype(np.float32)
                    if hf_name.endswith("self_attn.q_proj.weight"):
                        tensor = rotary_rows_to_gguf(tensor, n_heads)
                    elif hf_name.endswith("self_attn.k_proj.weight"):
                        tensor = rotary_rows_to_gguf(tensor, n_kv)
                    # llama.cpp needs 1-D tensors (norms) in f32 whatever the file type.
                    tensor = tensor if tensor.ndim == 1 else tensor.astype(np_dtype)
                    writer.add_tensor(gguf_name, np.ascontiguousarray(tensor))
                    written.add(gguf_name)
        # Tensors llama.cpp computes at conversion time and HF does not store (e.g. Llama 3's
        # rope_freqs) come from the reference unchanged when they are plain f32.
        for tensor in reader.tensors:
            if tensor.name not in written and tensor.tensor_type == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(tensor.name, np.array(tensor.data, dtype=np.float32).reshape(tuple(reversed(
                    [int(n) for n in tensor.shape]))))
                written.add(tensor.name)
        missing = reference_tensors - written
        if missing:
            raise UserError(f"{hf_path}: tensors of {Path(reference_gguf).name} not found in the HF weights: "
                            f"{sorted(missing)[:5]}")
    return Path(out_path)
