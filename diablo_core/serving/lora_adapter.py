"""Reading a LoRA adapter (PEFT's files) for the shared model: checked tensors, as per-layer pairs."""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from diablo_core.errors import AdapterError
from diablo_core.methods.diablo.config import WEIGHTS_FILE
from diablo_core.methods.lora.adapter_io import read_lora_config
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.serving.adapter_ref import AdapterRef
from diablo_core.serving.multi_adapter import LowRankPair, MultiAdapterModel

PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained names the wrapped model's modules
MATRICES = (".lora_A.weight", ".lora_B.weight")


def _paths(tensors: dict[str, torch.Tensor], where: str) -> set[str]:
    paths = set()
    for key in tensors:
        suffix = next((end for end in MATRICES if key.endswith(end)), None)
        if not key.startswith(PEFT_PREFIX) or suffix is None:
            raise AdapterError(f"{where}: tensor {key!r} is not a LoRA A/B matrix", "adapter_extra_tensor")
        paths.add(key.removeprefix(PEFT_PREFIX).removesuffix(suffix))
    return paths


def _pair(
    tensors: dict[str, torch.Tensor], path: str, config: LoRAConfig, model: MultiAdapterModel
) -> LowRankPair:
    """``(A (r, in), B * scaling (out, r))`` of the layer at ``path``, checked against the model's layer."""
    linear = model.linear(path)
    if linear is None:
        raise AdapterError(
            f"adapter tensor {path!r} names no linear layer of this model", "adapter_extra_tensor"
        )
    keys = [f"{PEFT_PREFIX}{path}{end}" for end in MATRICES]
    missing = [key for key in keys if key not in tensors]
    if missing:
        raise AdapterError(f"LoRA adapter lacks {missing}", "adapter_missing_tensor")
    down, up = (tensors[key] for key in keys)
    expected = ((config.rank, linear.in_features), (linear.out_features, config.rank))
    if (tuple(down.shape), tuple(up.shape)) != expected:
        raise AdapterError(
            f"{path}: LoRA shapes {list(down.shape)}, {list(up.shape)} != {[list(s) for s in expected]} "
            f"expected for this model's {linear.in_features}->{linear.out_features} layer at r={config.rank}",
            "adapter_shape_mismatch",
        )
    return down.float(), up.float() * config.scaling


def read_lora_pairs(
    ref: AdapterRef, data: bytes, model: MultiAdapterModel
) -> tuple[dict, LoRAConfig, dict[str, LowRankPair]]:
    """The document, config and module path -> pair of the LoRA adapter at ``ref`` (``data``: its weights).

    Raises:
        AdapterError: ``adapter_config_invalid``, ``adapter_missing_tensor``, ``adapter_extra_tensor`` or
            ``adapter_shape_mismatch``.
    """
    document = read_lora_config(ref.path)
    config = LoRAConfig.from_dict({key: document[key] for key in LoRAConfig.__dataclass_fields__})
    try:
        tensors = load_safetensors(data)
    except SafetensorError as error:
        raise AdapterError(
            f"{ref.path / WEIGHTS_FILE}: unreadable ({error})", "adapter_config_invalid"
        ) from error
    pairs = {path: _pair(tensors, path, config, model) for path in sorted(_paths(tensors, str(ref.path)))}
    return document, config, pairs
