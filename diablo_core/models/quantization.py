"""Quantized base models: the frozen linears of a base stored in 4-bit NF4 or 8-bit int8 (bitsandbytes).

``quantize_model`` replaces every plain ``nn.Linear`` of a model (except the output head and any layer whose
weight is tied to another module) by a bitsandbytes ``Linear4bit`` (NF4, double-quantized statistics, as
QLoRA) or ``Linear8bitLt`` (LLM.int8(), outlier threshold 6.0), one layer at a time, so only one layer's
full-precision weight exists beside the packed model. Embeddings, norms and the head stay in the compute
dtype, which is also the dtype the quantized layers compute in.

bitsandbytes is imported on first use only: it costs over a second of start-up (it imports torch._dynamo),
and a model holds bitsandbytes layers only after something here imported it, so the cheap checks
(``quantization_of``) look it up in ``sys.modules`` instead of importing it.
"""

from __future__ import annotations

import functools
import logging
import sys
from types import ModuleType

import torch
from torch import Tensor, nn

from diablo_core.models.quantization_names import check_quantization

SKIPPED_MODULES: tuple[str, ...] = ("lm_head",)
INT8_OUTLIER_THRESHOLD = 6.0  # LLM.int8()'s default, as transformers' load_in_8bit uses it


@functools.cache
def bitsandbytes() -> ModuleType:
    """Imports bitsandbytes once, with two of its log warnings silenced as noise.

    Its CPU backend warns at import when the optional ``kernels`` package (a faster 4-bit inference kernel
    fetched from the hub) is absent; the built-in kernels serve then. And LLM.int8() warns on every call
    that its inputs are cast to float16 for quantization, which is how it always computes.
    """
    cpu_ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = cpu_ops.level
    cpu_ops.setLevel(logging.ERROR)
    try:
        import bitsandbytes as bnb
    finally:
        cpu_ops.setLevel(level)
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    return bnb


def quantization_of(module: nn.Module) -> str | None:
    """``"nf4"``/``"int8"`` for a bitsandbytes linear (``"fp4"`` if someone built one), else None."""
    bnb_nn = sys.modules.get("bitsandbytes.nn")
    if bnb_nn is None:
        return None
    if isinstance(module, bnb_nn.Linear4bit):
        return str(module.weight.quant_type)
    if isinstance(module, bnb_nn.Linear8bitLt):
        return "int8"
    return None


def model_quantization(model: nn.Module) -> str | None:
    """The quantization of the model's quantized linears, or None when it has none.

    Raises:
        ValueError: The model mixes quantizations.
    """
    found = {kind for module in model.modules() if (kind := quantization_of(module)) is not None}
    if len(found) > 1:
        raise ValueError(f"the model mixes quantizations {sorted(found)}")
    return found.pop() if found else None


def compute_dtype_of(linear: nn.Module) -> torch.dtype:
    """The dtype a linear layer computes in: its weight's dtype, or a quantized layer's compute dtype."""
    if quantization_of(linear) is None:
        return linear.weight.dtype
    return getattr(linear, "compute_dtype", None) or torch.float32


def quantize_linear(
    linear: nn.Linear, quantization: str, compute_dtype: torch.dtype, device: torch.device | str
) -> nn.Linear:
    """A frozen bitsandbytes copy of ``linear`` quantized on ``device`` (``linear`` is left unchanged).

    The CPU inference repacking of ``Linear4bit`` is turned off: it rewrites the packed weight in place on
    the first no-grad eval forward, and the repacked layer then gives no input gradient when training
    resumes (and no longer dequantizes with ``dequantize_4bit``).
    """
    check_quantization(quantization)
    bnb = bitsandbytes()
    has_bias = linear.bias is not None
    shape = (linear.in_features, linear.out_features)
    # Quantized from the float32 upcast of the stored weight (exact), so the codes do not depend on the
    # compute dtype; bitsandbytes quantizes int8 only when moving a CPU weight, so it starts on the CPU.
    weight = linear.weight.detach().to(device="cpu", dtype=torch.float32)  # (out, in)
    if quantization == "nf4":
        layer = bnb.nn.Linear4bit(
            *shape, bias=has_bias, compute_dtype=compute_dtype, quant_type="nf4", device="meta"
        )
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", module=layer)
        layer.support_avx512bf16_for_cpu = False
    else:
        layer = bnb.nn.Linear8bitLt(
            *shape, bias=has_bias, has_fp16_weights=False, threshold=INT8_OUTLIER_THRESHOLD, device="meta"
        )
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        layer.compute_dtype = compute_dtype
    if has_bias:
        bias = linear.bias.detach().to(device="cpu", dtype=compute_dtype)  # (out,)
        layer.bias = nn.Parameter(bias, requires_grad=False)
    return layer.to(device).train(linear.training)  # moving to the device quantizes the weight


def _tied_weights(model: nn.Module) -> set[int]:
    """ids of parameters reachable under more than one name (a head tied to the embedding)."""
    seen: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        seen[id(parameter)] = seen.get(id(parameter), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def quantize_model(
    model: nn.Module,
    quantization: str,
    compute_dtype: torch.dtype,
    device: torch.device | str,
    skip: tuple[str, ...] = SKIPPED_MODULES,
) -> list[str]:
    """Replaces every plain ``nn.Linear`` (not named in ``skip``, weight not tied) by its quantized copy.

    Each original layer is dropped as soon as its copy exists, so the peak is the packed model plus one
    full-precision layer. Other parameters are left where they are (move the model afterwards).

    Returns:
        The quantized module paths, in module order.
    """
    check_quantization(quantization)
    tied = _tied_weights(model)
    targets = [
        (f"{parent_path}.{name}" if parent_path else name, parent, name, child)
        for parent_path, parent in model.named_modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear and name not in skip and id(child.weight) not in tied
    ]
    for _, parent, name, child in targets:
        setattr(parent, name, quantize_linear(child, quantization, compute_dtype, device))
    return [path for path, *_ in targets]


def stored_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict, each tensor once: a packed layer counts its codes and statistics."""
    tensors = {
        (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape)): tensor.numel() * tensor.element_size()
        for tensor in model.state_dict().values()
        if isinstance(tensor, Tensor)
    }
    return sum(tensors.values())


def dequantized_weight(linear: nn.Module) -> Tensor:
    """The ``(out, in)`` float32 weight a quantized linear computes with (a plain linear's weight as is)."""
    kind = quantization_of(linear)
    if kind is None:
        return linear.weight.detach()
    functional = bitsandbytes().functional
    weight = linear.weight
    if kind == "int8":
        scales = weight.SCB if weight.SCB is not None else linear.state.SCB  # (out,): moved on first forward
        return functional.int8_vectorwise_dequant(weight.data, scales).float()  # (out, in)
    return functional.dequantize_4bit(weight.data, weight.quant_state).float()  # (out, in)


def dequantize_linear(linear: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Linear:
    """A plain ``nn.Linear`` holding ``linear``'s dequantized weight (and bias) in ``dtype``."""
    weight = dequantized_weight(linear)
    plain = nn.Linear(
        linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta", dtype=dtype
    )
    plain.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    if linear.bias is not None:
        plain.bias = nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
    return plain.train(linear.training)


def dequantize_model(model: nn.Module, dtype: torch.dtype = torch.float32) -> list[str]:
    """Replaces every quantized linear (adapted layers' bases included) by a plain ``nn.Linear`` in ``dtype``.

    This is what a merged export does first: the merge then adds the blocks into the exact weights the
    adapter was trained against, and the result is written in full precision.

    Returns:
        The replaced module paths.
    """
    targets = [
        (f"{parent_path}.{name}" if parent_path else name, parent, name, child)
        for parent_path, parent in model.named_modules()
        for name, child in parent.named_children()
        if quantization_of(child) is not None
    ]
    for _, parent, name, child in targets:
        setattr(parent, name, dequantize_linear(child, dtype))
    return [path for path, *_ in targets]
