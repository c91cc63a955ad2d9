"""A merged Llama checkpoint as one GGUF file for llama.cpp and Ollama, written tensor by tensor.

Follows llama.cpp's convert_hf_to_gguf.py for ``LlamaForCausalLM``: gguf-py's tensor-name map, the q/k rows
permuted from Hugging Face's rotate-half layout to llama.cpp's interleaved rope pairs, 1-D tensors (norms) in
float32, every other tensor in float16 or Q8_0. Only one tensor is held in memory at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer

from diablo_core.errors import ExportError
from diablo_core.export.gguf_vocab import add_vocab

QUANTIZATIONS = {
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)


@dataclass(frozen=True)
class _Tensor:
    """One output tensor: its GGUF name, where it comes from, and how it is stored."""

    name: str
    source: str
    file: Path
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType


def check_exportable(config: Any) -> None:
    """Raise ExportError ``export_unsupported`` unless llama.cpp's llama loader runs this model as is."""
    architectures = list(getattr(config, "architectures", None) or [])
    if getattr(config, "model_type", None) != "llama" or architectures != list(SUPPORTED_ARCHITECTURES):
        raise ExportError(
            f"GGUF export supports {list(SUPPORTED_ARCHITECTURES)}; this model is "
            f"{architectures or [getattr(config, 'model_type', '?')]}"
        )
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ExportError(f"GGUF export does not handle rope scaling {rope.get('rope_type')!r}")


def permute_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a q/k projection from rotate-half order to llama.cpp's interleaved pairs (convert_hf_to_gguf).

    Per head, Hugging Face rotates dimension ``i`` with ``i + d/2``; llama.cpp rotates ``2i`` with ``2i + 1``.
    """
    rows = weight.shape[0]
    split = weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])  # (H, 2, d/2, ...)
    return split.swapaxes(1, 2).reshape(weight.shape)  # (H, d/2, 2, ...) -> (rows, ...)


def unpermute_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute_rope (llama.cpp order back to Hugging Face's)."""
    rows = weight.shape[0]
    split = weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:])  # (H, d/2, 2, ...)
    return split.swapaxes(1, 2).reshape(weight.shape)


def write_gguf(
    directory: Path, target: Path, quantization: str = "f16", name: str = "", description: str = ""
) -> Path:
    """Convert the Llama checkpoint in ``directory`` into the GGUF file ``target``.

    ``name`` and ``description`` become ``general.name`` and ``general.description``.

    Raises:
        ExportError: ``export_invalid`` for an unknown quantization; ``export_unsupported`` for an
            architecture, rope scaling or tokenizer that llama.cpp's llama loader would not run as is.
    """
    if quantization not in QUANTIZATIONS:
        message = f"quantization must be one of {sorted(QUANTIZATIONS)}, got {quantization!r}"
        raise ExportError(message, "export_invalid")
    config = AutoConfig.from_pretrained(directory)
    check_exportable(config)
    qtype, file_type = QUANTIZATIONS[quantization]
    tensors = list(_plan(directory, config, qtype))
    writer = gguf.GGUFWriter(target, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _add_metadata(writer, config, file_type, name or directory.name, description)
        add_vocab(writer, directory, AutoTokenizer.from_pretrained(directory), config.vocab_size)
        for tensor in tensors:
            nbytes = _nbytes(tensor)
            raw = None if tensor.qtype != gguf.GGMLQuantizationType.Q8_0 else tensor.qtype
            dtype = np.uint8 if raw is not None else _NUMPY[tensor.qtype]
            shape = gguf.quant_shape_to_byte_shape(tensor.shape, raw) if raw is not None else tensor.shape
            writer.add_tensor_info(tensor.name, shape, np.dtype(dtype), nbytes, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in tensors:
            writer.write_tensor_data(_convert(tensor, config))
    finally:
        writer.close()
    return target


_NUMPY = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}


def _add_metadata(writer: gguf.GGUFWriter, config: Any, file_type: int, name: str, description: str) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_name(name)
    if description:
        writer.add_description(description)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _plan(directory: Path, config: Any, qtype: gguf.GGMLQuantizationType) -> Iterator[_Tensor]:
    """Every tensor of the checkpoint, named and typed for the GGUF, without reading any weights."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{directory} holds no safetensors weights", "export_invalid")
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for source in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if source.endswith("rotary_emb.inv_freq"):
                    continue
                name = names.get_name(source, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise ExportError(f"GGUF export does not know where the tensor {source!r} goes")
                shape = tuple(handle.get_slice(source).get_shape())
                yield _Tensor(name, source, file, shape, _storage(shape, qtype))


def _storage(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    """1-D tensors stay float32; Q8_0 needs rows in whole 32-value blocks, else the tensor is float16."""
    if len(shape) == 1:
        return gguf.GGMLQuantizationType.F32
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16


def _nbytes(tensor: _Tensor) -> int:
    if tensor.qtype in _NUMPY:
        return math.prod(tensor.shape) * np.dtype(_NUMPY[tensor.qtype]).itemsize
    return math.prod(gguf.quant_shape_to_byte_shape(tensor.shape, tensor.qtype))


def _convert(tensor: _Tensor, config: Any) -> np.ndarray:
    """Read one tensor, permute q/k for llama.cpp's rope, and store it in its GGUF type."""
    with safe_open(tensor.file, framework="pt") as handle:
        data = handle.get_tensor(tensor.source).to(torch.float32).numpy()  # (out, in) or (n,)
    if ".q_proj." in tensor.source:
        data = permute_rope(data, config.num_attention_heads)
    elif ".k_proj." in tensor.source:
        data = permute_rope(data, config.num_key_value_heads)
    if tensor.qtype in _NUMPY:
        return data.astype(_NUMPY[tensor.qtype])
    return gguf.quants.quantize(data, tensor.qtype)
