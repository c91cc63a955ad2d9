"""The identity of a base model: its name and a content hash of its frozen weights."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from diablo_core.methods.diablo.layer import DiaBloLinear
from diablo_core.models.quantization import dequantized_weight, model_quantization, quantization_of

IDENTITY_ATTRIBUTE = "diablo_base_identity"
_CHUNK_ELEMENTS = 1 << 22  # 16 MiB of fp32 per hash update keeps peak extra memory small


@dataclass(frozen=True)
class BaseModelIdentity:
    """Name and content hash of the exact base weights an adapter belongs to, and how they are stored.

    ``content_hash`` identifies the full-precision checkpoint; ``quantization`` (``"nf4"``, ``"int8"`` or
    None) says whether the model computes with it as is or with a quantized copy of its linear layers.
    ``source`` says where the weights really come from when the name alone would mislead (the default model
    is named after its hub id but is dequantized from a GGUF); it is description only: adapters are checked
    against ``content_hash``.
    """

    name: str
    content_hash: str
    source: str = ""
    quantization: str | None = None

    def to_dict(self) -> dict[str, str]:
        """``{"name", "content_hash"}``, plus ``"source"`` when set and ``"quantization"`` when quantized."""
        data = {"name": self.name, "content_hash": self.content_hash}
        if self.source:
            data["source"] = self.source
        if self.quantization is not None:
            data["quantization"] = self.quantization
        return data


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _base_parameters(model: nn.Module) -> dict[str, torch.Tensor | nn.Module]:
    """Canonical name -> base weight, as the plain (un-adapted, unmerged) model would name and hold them.

    A DiaBloLinear's ``<path>.base.weight`` is reported as ``<path>.weight`` and its blocks are skipped;
    a merged layer contributes ``W - delta``. A quantized layer's packed weight is given as the layer
    itself, dequantized when hashed (one layer at a time). Tied parameters appear once, under their first
    name.
    """
    adapted = {path: module for path, module in model.named_modules() if isinstance(module, DiaBloLinear)}
    skipped = {_join(path, "blocks") for path in adapted}
    renamed = {_join(path, "base.bias"): (_join(path, "bias"), None) for path in adapted}
    renamed.update(
        {_join(path, "base.weight"): (_join(path, "weight"), module) for path, module in adapted.items()}
    )
    quantized = {
        _join(path, "weight"): module for path, module in model.named_modules() if quantization_of(module)
    }
    params: dict[str, torch.Tensor | nn.Module] = {}
    for name, parameter in model.named_parameters():
        if name in skipped:
            continue
        canonical, module = renamed.get(name, (name, None))
        tensor = parameter.detach()
        if module is not None and module.merged:
            tensor = tensor - module.delta_weight().detach().to(
                tensor.dtype
            )  # (out, in): the unmerged weight
        params[canonical] = quantized.get(name, tensor)
    return params


def compute_content_hash(model: nn.Module) -> str:
    """sha256 over the sorted names, shapes and fp32 bytes of the model's base weights.

    Adapter blocks are excluded, so a plain model and the same model with DiaBlo applied hash the same.
    A quantized layer is hashed with its dequantized weight (so the hash of a model quantized by hand names
    those weights; ``load_base_model`` attaches the full-precision checkpoint's hash instead).
    A merged layer is hashed with ``W - delta``, the weight unmerge() would restore; fp32 rounding can make
    that differ from the original in the last bit, so a model that was merged is best identified by the
    identity attached when it was loaded (see model_identity).

    Returns:
        ``"sha256:<hex>"``.
    """
    digest = hashlib.sha256()
    for name, held in sorted(_base_parameters(model).items()):
        tensor = dequantized_weight(held) if isinstance(held, nn.Module) else held  # (out, in) if a layer
        if tensor.is_meta:
            raise ValueError(f"cannot hash {name}: its weights are on the meta device (not loaded)")
        digest.update(f"{name}:{list(tensor.shape)}\n".encode())
        flat = tensor.reshape(-1)
        for start in range(0, flat.numel(), _CHUNK_ELEMENTS):
            chunk = flat[start : start + _CHUNK_ELEMENTS].to(device="cpu", dtype=torch.float32).contiguous()
            digest.update(chunk.numpy().data)
    return f"sha256:{digest.hexdigest()}"


def attach_identity(model: nn.Module, identity: BaseModelIdentity) -> None:
    """Records ``identity`` on the model so that model_identity need not hash the weights again."""
    setattr(model, IDENTITY_ATTRIBUTE, identity)


def model_identity(model: nn.Module) -> BaseModelIdentity:
    """The attached identity if any, else one named by ``model.config.name_or_path`` with a computed hash
    and the quantization its linears have."""
    attached = getattr(model, IDENTITY_ATTRIBUTE, None)
    if attached is not None:
        return attached
    config = getattr(model, "config", None)
    name = getattr(config, "name_or_path", "") or type(model).__name__
    hashed = compute_content_hash(model)
    return BaseModelIdentity(name=str(name), content_hash=hashed, quantization=model_quantization(model))
