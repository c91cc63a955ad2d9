"""Which method a model carries, and that method's operations: what trains, how it saves and loads.

Training, checkpoints and the worker go through here, so they train and save whichever adapter a model has
(DiaBlo blocks or PEFT's LoRA matrices) without knowing the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from diablo_core.methods.diablo import adapter_io as diablo_io
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, diablo_modules, unload_diablo
from diablo_core.methods.lora import adapter_io as lora_io
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.methods.lora.model import apply_lora, lora_modules, lora_parameters, unload_lora

AdapterConfig = DiaBloConfig | LoRAConfig


@dataclass(frozen=True)
class AdapterMethod:
    """One method's operations on a model that carries it.

    Attributes:
        name: ``"diablo"`` or ``"lora"``.
        trainable: The adapter parameters, in a fixed order (the optimizer's).
        save: Writes the adapter directory: ``save(model, directory, base_model=, tensors=)``.
        load: Loads an adapter directory into the model; returns the adapter's config.
        unload: Removes the adapter from the model, merged into the base weights with ``merge=True``;
            returns the plain model.
    """

    name: str
    trainable: Callable[[nn.Module], list[nn.Parameter]]
    save: Callable[..., Path]
    load: Callable[[nn.Module, Path], Any]
    unload: Callable[..., nn.Module]


DIABLO = AdapterMethod(
    "diablo",
    lambda model: [module.blocks for module in diablo_modules(model).values()],
    diablo_io.save_adapter,
    diablo_io.load_adapter,
    unload_diablo,
)
LORA = AdapterMethod(
    "lora", lora_parameters, lora_io.save_lora_adapter, lora_io.load_lora_adapter, unload_lora
)


def method_of(model: nn.Module) -> AdapterMethod | None:
    """The method applied to ``model`` (DiaBlo or LoRA), or None for a plain model."""
    if diablo_modules(model):
        return DIABLO
    if lora_modules(model):
        return LORA
    return None


def adapter_method(directory: str | Path) -> AdapterMethod:
    """The method whose adapter files ``directory`` holds (LoRA for PEFT's config, else DiaBlo)."""
    return LORA if lora_io.is_lora_adapter(directory) else DIABLO


def recorded_quantization(directory: str | Path) -> str | None:
    """The quantization of the base the adapter in ``directory`` was trained on (None: full precision).

    Raises:
        AdapterError: ``adapter_not_found`` or ``adapter_config_invalid``.
    """
    if lora_io.is_lora_adapter(directory):
        document = lora_io.read_lora_config(directory)
    else:
        document = diablo_io.read_adapter_config(directory)
    return document["base_model"].get("quantization")


def apply_adapter(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Applies the method ``config`` belongs to (``apply_diablo`` or ``apply_lora``); returns adapted paths.

    Raises:
        ConfigError: As the method's apply does (no target matched, already applied, ...).
    """
    if isinstance(config, LoRAConfig):
        return apply_lora(model, config)
    return apply_diablo(model, config)


def read_any_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The adapter document of either method (``"method"`` says which; LoRA's holds PEFT's config).

    Raises:
        AdapterError: ``adapter_not_found`` or ``adapter_config_invalid``.
    """
    if lora_io.is_lora_adapter(directory):
        return lora_io.read_lora_config(directory)
    return diablo_io.read_adapter_config(directory)
