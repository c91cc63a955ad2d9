"""Applying LoRA to a model through PEFT (``get_peft_model``), in place.

``get_peft_model`` replaces each target ``nn.Linear`` of the model itself by PEFT's ``lora.Linear``
(``base_layer`` + ``lora_A``/``lora_B``) and returns a ``PeftModel`` wrapper. The training loop, generation
and identity keep working on the model they were given; the wrapper is kept on it (outside the module tree)
for ``save_pretrained``, so the adapter files are PEFT's own.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from diablo_core.errors import ConfigError
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.models.identity import attach_identity, model_identity

PEFT_ATTRIBUTE = "_diablo_peft_model"
CONFIG_ATTRIBUTE = "_diablo_lora_config"
ADAPTER_NAME = "default"  # PEFT's name for a model's single adapter


def peft_config(config: LoRAConfig, base_name: str | None = None) -> PeftLoraConfig:
    """PEFT's ``LoraConfig`` for ``config`` (exact child-name matching, no bias, causal LM)."""
    return PeftLoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=None if config.layers is None else list(config.layers),
        layers_pattern=None if config.layers is None else "layers",
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_name,
    )


def lora_modules(model: nn.Module) -> dict[str, LoraLayer]:
    """Module path -> PEFT LoRA layer, for every adapted layer of the model."""
    return {path: module for path, module in model.named_modules() if isinstance(module, LoraLayer)}


def peft_model_of(model: nn.Module) -> PeftModel | None:
    """The PeftModel ``apply_lora`` wrapped ``model`` in, or None."""
    return model.__dict__.get(PEFT_ATTRIBUTE)


def get_lora_config(model: nn.Module) -> LoRAConfig | None:
    """The config ``apply_lora`` applied, or None for a model without LoRA."""
    return model.__dict__.get(CONFIG_ATTRIBUTE)


def apply_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Adds LoRA (PEFT) to every target linear layer in place and freezes every other parameter.

    The base identity is computed (or taken as attached) first, so the adapter records the plain weights.

    Returns:
        The adapted module paths, in module order.

    Raises:
        ConfigError: ``lora_already_applied``, or ``no_target_modules`` when nothing matched.
    """
    if lora_modules(model):
        raise ConfigError("LoRA is already applied to this model", code="lora_already_applied")
    attach_identity(model, model_identity(model))
    name = getattr(getattr(model, "config", None), "name_or_path", None) or None
    try:
        wrapper = get_peft_model(model, peft_config(config, name))
    except ValueError as error:
        raise ConfigError(f"LoRA found no layer to adapt: {error}", code="no_target_modules") from error
    # Plain attributes, not submodules: the wrapper holds ``model``, so registering it would make a cycle.
    model.__dict__[PEFT_ATTRIBUTE] = wrapper
    model.__dict__[CONFIG_ATTRIBUTE] = config
    # PEFT's new layers start in training mode (their dropout on) whatever the model's mode: an adapter
    # loaded into a model in eval mode, to answer or to evaluate, must not drop anything.
    model.train(model.training)
    return list(lora_modules(model))


def unload_lora(model: nn.Module, merge: bool = False) -> nn.Module:
    """Replaces every LoRA layer by its base ``nn.Linear`` (PEFT's ``merge_and_unload`` when ``merge``, else
    ``unload``); returns the model, a plain one again.

    With ``merge=True`` the base weights become ``W + (alpha / r) * B @ A`` in their own dtype (for export).

    Raises:
        ConfigError: ``lora_not_applied`` for a model without LoRA.
    """
    wrapper = _wrapper(model)
    plain = wrapper.merge_and_unload() if merge else wrapper.unload()
    for attribute in (PEFT_ATTRIBUTE, CONFIG_ATTRIBUTE):
        plain.__dict__.pop(attribute, None)
    return plain


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA matrices, in module order (A then B of each layer)."""
    return [parameter for name, parameter in model.named_parameters() if ".lora_" in name]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors as PEFT saves them (``base_model.model.<path>.lora_A.weight`` ...)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(_wrapper(model))


def load_lora_state_dict(model: nn.Module, state: dict[str, Any]) -> None:
    """Copies saved PEFT tensors into the model's LoRA layers, strictly.

    Raises:
        ConfigError: ``adapter_missing_tensor`` when a LoRA matrix of the model is not in ``state``.
    """
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(_wrapper(model), state)
    missing = [key for key in result.missing_keys if ".lora_" in key]
    if missing:
        raise ConfigError(f"LoRA adapter lacks tensors for {missing[:4]}", code="adapter_missing_tensor")


def _wrapper(model: nn.Module) -> PeftModel:
    wrapper = peft_model_of(model)
    if wrapper is None:
        raise ConfigError("the model has no LoRA adapter (apply_lora first)", code="lora_not_applied")
    return wrapper
