"""LoRA adapter files in PEFT's own format, so PEFT, vLLM and LoRAX load them unchanged.

A directory holds PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` (written by
``PeftModel.save_pretrained``) and our ``diablo_base_model.json``: the base identity (name, content hash,
quantization) that PEFT's config has no field for. Readers that do not know it ignore it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from diablo_core.errors import AdapterError, ConfigError
from diablo_core.methods.diablo.adapter_io import check_base
from diablo_core.methods.diablo.config import CONFIG_FILE, WEIGHTS_FILE
from diablo_core.methods.lora.config import IDENTITY_FILE, METHOD, LoRAConfig
from diablo_core.methods.lora.model import apply_lora, get_lora_config, load_lora_state_dict, peft_model_of
from diablo_core.models.identity import BaseModelIdentity, model_identity

PEFT_TYPE = "LORA"


def is_lora_adapter(directory: str | Path) -> bool:
    """Whether ``directory``'s ``adapter_config.json`` is a PEFT LoRA config (not a DiaBlo one)."""
    try:
        data = json.loads((Path(directory) / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("peft_type") == PEFT_TYPE


def save_lora_adapter(
    model: nn.Module,
    directory: str | Path,
    base_model: BaseModelIdentity | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Writes the model's LoRA adapter with ``save_pretrained`` plus the base identity file.

    Raises:
        AdapterError: ``adapter_not_found`` when the model has no LoRA; ``adapter_config_invalid`` when
            given gathered ``tensors`` (a sharded LoRA run is not supported).
    """
    wrapper = peft_model_of(model)
    if wrapper is None:
        raise AdapterError("the model has no LoRA adapter to save (apply_lora first)", "adapter_not_found")
    if tensors is not None:
        raise AdapterError(
            "LoRA adapters are saved from the model itself, not sharded", "adapter_config_invalid"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wrapper.save_pretrained(str(directory), safe_serialization=True)
    identity = base_model or model_identity(model)
    (directory / IDENTITY_FILE).write_text(json.dumps({"base_model": identity.to_dict()}, indent=2) + "\n")
    return directory


def read_lora_config(directory: str | Path) -> dict[str, Any]:
    """Our document of a LoRA adapter: ``{"method": "lora", rank, alpha, dropout, target_modules, layers,
    "base_model", "peft": <PEFT's config>}``.

    Raises:
        AdapterError: ``adapter_not_found`` or ``adapter_config_invalid``.
    """
    directory = Path(directory)
    if not all((directory / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE, IDENTITY_FILE)):
        message = f"{directory} holds no LoRA adapter ({CONFIG_FILE} + {WEIGHTS_FILE} + {IDENTITY_FILE})"
        raise AdapterError(message, "adapter_not_found")
    try:
        peft = json.loads((directory / CONFIG_FILE).read_text())
        base = json.loads((directory / IDENTITY_FILE).read_text())["base_model"]
        config = LoRAConfig(
            rank=peft["r"],
            alpha=peft["lora_alpha"],
            dropout=peft["lora_dropout"],
            target_modules=tuple(sorted(peft["target_modules"])),
            layers=None if peft.get("layers_to_transform") is None else tuple(peft["layers_to_transform"]),
        )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise AdapterError(
            f"{directory}: invalid LoRA adapter config ({error})", "adapter_config_invalid"
        ) from error
    if peft.get("peft_type") != PEFT_TYPE or peft.get("use_dora") or peft.get("use_rslora"):
        message = f"{directory}: only plain LoRA is supported (peft_type LORA, no DoRA, no rsLoRA)"
        raise AdapterError(message, "adapter_config_invalid")
    return {"method": METHOD, **config.to_dict(), "base_model": base, "peft": peft}


def load_lora_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """The adapter tensors (CPU) as PEFT saved them.

    Raises:
        AdapterError: ``adapter_config_invalid`` when the file is unreadable.
    """
    try:
        return load_file(Path(directory) / WEIGHTS_FILE, device="cpu")
    except (SafetensorError, OSError) as error:
        message = f"{Path(directory) / WEIGHTS_FILE}: unreadable ({error})"
        raise AdapterError(message, "adapter_config_invalid") from error


def load_lora_adapter(
    model: nn.Module, directory: str | Path, *, allow_quantization_mismatch: bool = False
) -> LoRAConfig:
    """Loads a LoRA adapter into ``model`` (applying LoRA first when it has none), checking the base.

    Raises:
        AdapterError: ``adapter_not_found``, ``adapter_config_invalid``, ``adapter_base_mismatch``,
            ``adapter_quantization_mismatch`` or ``adapter_missing_tensor``.
    """
    document = read_lora_config(directory)
    config = LoRAConfig.from_dict({key: document[key] for key in LoRAConfig.__dataclass_fields__})
    check_base(document["base_model"], model_identity(model), allow_quantization_mismatch)
    current = get_lora_config(model)
    if current is None:
        apply_lora(model, config)
    elif (current.rank, set(current.target_modules), current.layers) != (
        config.rank,
        set(config.target_modules),
        config.layers,
    ):
        raise AdapterError(
            f"adapter config {config} differs from the model's LoRA {current}", "adapter_config_invalid"
        )
    try:
        load_lora_state_dict(model, load_lora_tensors(directory))
    except ConfigError as error:
        raise AdapterError(str(error), error.code) from error
    return config
