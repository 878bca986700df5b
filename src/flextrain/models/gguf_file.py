"""Write a transformers decoder model as one GGUF file, the format llama.cpp and Ollama run.

The file holds the model's hyperparameters, its weights under llama.cpp's tensor
names, and its tokenizer (flextrain.models.gguf_tokenizer: tokens, merges or scores,
special tokens, whether BOS is added) with the chat template, so a runtime needs
nothing else to answer as the trained model does. Names come from the `gguf`
package's own tensor-name maps (`get_tensor_name_map`), never from a table kept here.

Two facts of llama.cpp's format shape the conversion:
- llama.cpp applies rotary embeddings to interleaved pairs of a head's dimensions,
  transformers' Llama to its two halves; so for the Llama family the rows of the
  query and key projections are reordered, within each head, from "first half,
  second half" to "pairs". Qwen2/3 use the halves layout in llama.cpp as well and
  are written as they are.
- One-dimensional tensors (norm weights, biases) stay float32; matrices are
  written in the requested type. A matrix whose rows do not split into whole
  quantisation blocks (32 values for q8_0) is written as f16 instead, as llama.cpp
  itself does.

q4_k_m needs llama.cpp's own quantiser (the `gguf` package can read K-quants but
not write them): the f16 file is written first and quantised by llama.cpp, which
the optional `flextrain[gguf]` extra (llama-cpp-python) provides.

The file is written under a temporary name beside the target and renamed at the
end: a failure leaves no partial file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flextrain.models.gguf_tokenizer import GGUFConversionError, write_tokenizer

GGUFQuant = Literal["f16", "q8_0", "q4_k_m"]
GGUF_QUANTS: tuple[GGUFQuant, ...] = ("f16", "q8_0", "q4_k_m")


@dataclass(frozen=True)
class _Arch:
    """How one transformers architecture is written: llama.cpp's architecture, whether
    query/key rows are reordered for interleaved rotary embeddings, and whether norm
    weights are stored as transformers' Gemma keeps them (the scale minus one) while
    llama.cpp wants the scale itself."""

    gguf_name: str
    reorder_rotary: bool
    norm_plus_one: bool = False


# transformers architecture -> how llama.cpp names and lays it out. Mistral is the Llama
# graph (llama.cpp converts it as "llama" too); Phi-3 keeps its fused qkv and gate/up
# projections, which llama.cpp's phi3 reads as they are.
_ARCHES = {
    "LlamaForCausalLM": _Arch("LLAMA", reorder_rotary=True),
    "MistralForCausalLM": _Arch("LLAMA", reorder_rotary=True),
    "Qwen2ForCausalLM": _Arch("QWEN2", reorder_rotary=False),
    "Qwen3ForCausalLM": _Arch("QWEN3", reorder_rotary=False),
    "Phi3ForCausalLM": _Arch("PHI3", reorder_rotary=False),
    "Gemma2ForCausalLM": _Arch("GEMMA2", reorder_rotary=False, norm_plus_one=True),
}
SUPPORTED_ARCHITECTURES = tuple(sorted(_ARCHES))


@dataclass(frozen=True)
class GGUFWritten:
    """What was written: the file, its size, and the type each kind of tensor got."""

    path: Path
    size_bytes: int
    architecture: str
    tensor_types: dict[str, int]  # GGML type name -> number of tensors


def supported_architecture(config: dict[str, Any]) -> str:
    """The config's architecture when it can be written as GGUF, else GGUFConversionError
    naming it and what is supported."""
    names = config.get("architectures") or [config.get("model_type", "?")]
    name = str(names[0])
    if name not in _ARCHES:
        raise GGUFConversionError(
            f"format gguf: the architecture {name} cannot be converted to GGUF here. "
            f"Supported: {', '.join(SUPPORTED_ARCHITECTURES)}. Fix: export it as a "
            "safetensors folder (--format vllm), which vLLM and transformers load."
        )
    return name


def write_gguf(
    folder: Path, target: Path, quant: GGUFQuant, *, name: str, quantizer: Any = None
) -> GGUFWritten:
    """Write the model in `folder` (config.json, safetensors weights, tokenizer.json) to
    the GGUF file `target` in `quant`. `quantizer` (llama.cpp's, for q4_k_m) turns an
    f16 file into a K-quant file: `quantizer(source, destination)`."""
    import gguf

    config = json.loads((folder / "config.json").read_text())
    architecture = supported_architecture(config)
    arch = _ARCHES[architecture]
    if quant == "q4_k_m" and quantizer is None:
        raise GGUFConversionError(
            "quant q4_k_m is written by llama.cpp's quantiser, which is not installed. Fix: "
            "pip install 'flextrain[gguf]' (builds llama.cpp; minutes), or use q8_0 or f16."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    f16_step = target.with_name(f".{target.name}.f16.partial")
    try:
        first = f16_step if quant == "q4_k_m" else partial
        types = _write(
            gguf, folder, first, config, arch, "f16" if quant == "q4_k_m" else quant, name
        )
        if quant == "q4_k_m":
            quantizer(first, partial)
            types = {"Q4_K_M (llama.cpp)": sum(types.values())}
        os.replace(partial, target)
    finally:
        for leftover in (partial, f16_step):
            leftover.unlink(missing_ok=True)
    return GGUFWritten(target, target.stat().st_size, architecture, types)


def _write(
    gguf: Any,
    folder: Path,
    path: Path,
    config: dict[str, Any],
    arch: _Arch,
    quant: str,
    name: str,
) -> dict[str, int]:
    model_arch = getattr(gguf.MODEL_ARCH, arch.gguf_name)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[model_arch])
    try:
        _hyperparameters(gguf, writer, config, quant, name)
        write_tokenizer(gguf, writer, folder, int(config["vocab_size"]))
        types = _tensors(gguf, writer, folder, config, model_arch, arch, quant)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return types


def _hyperparameters(gguf: Any, writer: Any, config: dict[str, Any], quant: str, name: str) -> None:
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise GGUFConversionError(
            f"format gguf: rope scaling '{rope.get('rope_type')}' is not written to GGUF by "
            "flextrain yet. Fix: export as a safetensors folder (--format vllm)."
        )
    writer.add_name(name)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_dimension_count(int(head_dim * float(config.get("partial_rotary_factor", 1.0))))
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(int(config["vocab_size"]))
    if head_dim != hidden // heads or config.get("model_type") == "gemma2":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if config.get("sliding_window"):
        writer.add_sliding_window(int(config["sliding_window"]))
    if config.get("model_type") == "gemma2":
        _gemma2(writer, config, head_dim)
    file_types = {"f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}
    writer.add_file_type(int(getattr(gguf.LlamaFileType, file_types[quant])))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _gemma2(writer: Any, config: dict[str, Any], head_dim: int) -> None:
    """Gemma 2's soft caps; its query scaling must be llama.cpp's (by the head size)."""
    scalar = config.get("query_pre_attn_scalar")
    if scalar is not None and int(scalar) != head_dim:
        raise GGUFConversionError(
            f"format gguf: this Gemma 2 scales queries by {scalar}, not its head size "
            f"{head_dim}, which llama.cpp's gemma2 assumes. Fix: export as a safetensors "
            "folder (--format vllm)."
        )
    if config.get("attn_logit_softcapping") is not None:
        writer.add_attn_logit_softcapping(float(config["attn_logit_softcapping"]))
    if config.get("final_logit_softcapping") is not None:
        writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))


def reorder_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a query or key projection from transformers' rotary layout (per head: the
    first half of the dimensions, then the second) to llama.cpp's (per head: pairs
    (0, half), (1, half + 1), ...)."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def encode(gguf: Any, array: np.ndarray, quant: str) -> tuple[np.ndarray, Any]:
    """The data and GGML type a tensor is written with: float32 for vectors, the requested
    type for matrices (f16 when their rows do not split into whole blocks)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    types = gguf.GGMLQuantizationType
    if array.ndim == 1:
        return array, types.F32
    if quant == "f16":
        return array.astype(np.float16), types.F16
    block = gguf.GGML_QUANT_SIZES[types.Q8_0][0]
    if array.shape[-1] % block:
        return array.astype(np.float16), types.F16
    return gguf.quants.quantize(array, types.Q8_0), types.Q8_0


def _tensors(
    gguf: Any,
    writer: Any,
    folder: Path,
    config: dict[str, Any],
    model_arch: Any,
    arch: _Arch,
    quant: str,
) -> dict[str, int]:
    from safetensors import safe_open

    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    names = gguf.get_tensor_name_map(model_arch, layers)
    tied = bool(config.get("tie_word_embeddings"))
    counts: dict[str, int] = {}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GGUFConversionError(f"format gguf: {folder} has no safetensors weights.")
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open has no __iter__
                if tied and key == "lm_head.weight":
                    continue  # runtimes tie the output to the embedding when it is absent
                gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise GGUFConversionError(
                        f"format gguf: the weight '{key}' has no GGUF name for "
                        f"{config.get('architectures')}. Fix: export as a safetensors folder."
                    )
                array = weights.get_tensor(key).float().numpy()  # bf16 has no numpy type
                if arch.reorder_rotary and key.endswith("q_proj.weight"):
                    array = reorder_rotary_rows(array, heads)
                elif arch.reorder_rotary and key.endswith("k_proj.weight"):
                    array = reorder_rotary_rows(array, kv_heads)
                if arch.norm_plus_one and key.endswith("norm.weight"):
                    array = array + 1.0
                data, kind = encode(gguf, array, quant)
                quantized = kind not in (
                    gguf.GGMLQuantizationType.F32,
                    gguf.GGMLQuantizationType.F16,
                )
                writer.add_tensor(gguf_name, data, raw_dtype=kind if quantized else None)
                counts[kind.name] = counts.get(kind.name, 0) + 1
    return counts
