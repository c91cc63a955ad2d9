"""The identity of a base model: its name and a content hash of its frozen weights."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from diablo_core.methods.diablo.layer import DiaBloLinear

IDENTITY_ATTRIBUTE = "diablo_base_identity"
_CHUNK_ELEMENTS = 1 << 22  # 16 MiB of fp32 per hash update keeps peak extra memory small


@dataclass(frozen=True)
class BaseModelIdentity:
    """Name and content hash of the exact base weights an adapter belongs to.

    ``source`` says where the weights really come from when the name alone would mislead (the default model
    is named after its hub id but is dequantized from a GGUF); it is description only: adapters are checked
    against ``content_hash``.
    """

    name: str
    content_hash: str
    source: str = ""

    def to_dict(self) -> dict[str, str]:
        described = {"source": self.source} if self.source else {}
        return {"name": self.name, "content_hash": self.content_hash, **described}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _base_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Canonical name -> base weight, as the plain (un-adapted, unmerged) model would name and hold them.

    A DiaBloLinear's ``<path>.base.weight`` is reported as ``<path>.weight`` and its blocks are skipped;
    a merged layer contributes ``W - delta``. Tied parameters appear once, under their first name.
    """
    adapted = {path: module for path, module in model.named_modules() if isinstance(module, DiaBloLinear)}
    skipped = {_join(path, "blocks") for path in adapted}
    renamed = {_join(path, "base.bias"): (_join(path, "bias"), None) for path in adapted}
    renamed.update(
        {_join(path, "base.weight"): (_join(path, "weight"), module) for path, module in adapted.items()}
    )
    params = {}
    for name, parameter in model.named_parameters():
        if name in skipped:
            continue
        canonical, module = renamed.get(name, (name, None))
        tensor = parameter.detach()
        if module is not None and module.merged:
            tensor = tensor - module.delta_weight().detach().to(
                tensor.dtype
            )  # (out, in): the unmerged weight
        params[canonical] = tensor
    return params


def compute_content_hash(model: nn.Module) -> str:
    """sha256 over the sorted names, shapes and fp32 bytes of the model's base weights.

    Adapter blocks are excluded, so a plain model and the same model with DiaBlo applied hash the same.
    A merged layer is hashed with ``W - delta``, the weight unmerge() would restore; fp32 rounding can make
    that differ from the original in the last bit, so a model that was merged is best identified by the
    identity attached when it was loaded (see model_identity).

    Returns:
        ``"sha256:<hex>"``.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(_base_parameters(model).items()):
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
    """The attached identity if any, else one named by ``model.config.name_or_path`` with a computed hash."""
    attached = getattr(model, IDENTITY_ATTRIBUTE, None)
    if attached is not None:
        return attached
    config = getattr(model, "config", None)
    name = getattr(config, "name_or_path", "") or type(model).__name__
    return BaseModelIdentity(name=str(name), content_hash=compute_content_hash(model))
