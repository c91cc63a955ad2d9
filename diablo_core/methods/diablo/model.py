"""Applying DiaBlo to a model: wrapping target linears, freezing the rest, merging, adapter state."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from diablo_core.errors import AdapterError, ConfigError
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.layer import DiaBloLinear
from diablo_core.models.quantization import quantization_of

CONFIG_ATTRIBUTE = "diablo_config"
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


def layer_index(module_path: str) -> int | None:
    """The decoder layer index in a module path (``model.layers.3.mlp.up_proj`` -> 3), or None."""
    match = _LAYER_INDEX.search(module_path)
    return int(match.group(1)) if match else None


def _linear_children(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    """Every ``(path, parent, child name, linear)`` of the model, plain or quantized, in module order."""
    found = []
    for parent_path, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if type(child) is nn.Linear or quantization_of(child) is not None:
                path = f"{parent_path}.{child_name}" if parent_path else child_name
                found.append((path, parent, child_name, child))
    return found


def _select_targets(model: nn.Module, config: DiaBloConfig) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    linears = _linear_children(model)
    targets = [item for item in linears if item[2] in config.target_modules]
    if not targets:
        existing = sorted({child_name for _, _, child_name, _ in linears})
        raise ConfigError(
            f"no nn.Linear child is named any of {list(config.target_modules)}; linear child names in this "
            f"model: {existing}",
            code="no_target_modules",
        )
    _refuse_tied(model, targets)
    if config.layers is None:
        return targets
    present = {layer_index(path) for path, *_ in targets} - {None}
    absent = sorted(set(config.layers) - present)
    if absent:
        raise ConfigError(
            f"layers {absent} do not exist among the target modules (present: {sorted(present)})",
            code="layers_out_of_range",
        )
    return [item for item in targets if layer_index(item[0]) in config.layers]


def _refuse_tied(model: nn.Module, targets: list[tuple[str, nn.Module, str, nn.Linear]]) -> None:
    """Merging into a weight shared with another module (a tied lm_head) would change both: refuse it."""
    counts = Counter(id(parameter) for _, parameter in model.named_parameters(remove_duplicate=False))
    tied = [path for path, *_, linear in targets if counts[id(linear.weight)] > 1]
    if tied:
        raise ConfigError(
            f"cannot adapt {tied}: their weights are tied to other modules", code="tied_target_weight"
        )


def apply_diablo(model: nn.Module, config: DiaBloConfig) -> list[str]:
    """Wraps every target ``nn.Linear`` in a DiaBloLinear and freezes every other parameter.

    Matching is exact on the child name (``q_proj``), never a substring of the path. With
    ``config.layers`` set, only modules under ``...layers.<i>...`` for a listed ``i`` are adapted.

    Args:
        model: The model to adapt in place.
        config: Which modules and how many blocks.

    Returns:
        The adapted module paths, in module order.

    Raises:
        ConfigError: DiaBlo is already applied (``diablo_already_applied``), no module matched
            (``no_target_modules``, listing the linear child names that exist) or a listed layer is absent
            (``layers_out_of_range``).
    """
    if diablo_modules(model):
        raise ConfigError(
            "DiaBlo is already applied to this model; call unload_diablo() before applying again",
            code="diablo_already_applied",
        )
    targets = _select_targets(model, config)
    model.requires_grad_(False)
    for _, parent, child_name, linear in targets:
        layer = DiaBloLinear(linear, config.num_blocks, config.dropout)
        setattr(parent, child_name, layer.train(linear.training))  # an eval model stays in eval mode
    setattr(model, CONFIG_ATTRIBUTE, config)
    return [path for path, *_ in targets]


def get_diablo_config(model: nn.Module) -> DiaBloConfig | None:
    """The config ``apply_diablo`` stored on the model, or None for a plain model."""
    return getattr(model, CONFIG_ATTRIBUTE, None)


def diablo_modules(model: nn.Module) -> dict[str, DiaBloLinear]:
    """Module path -> DiaBloLinear, for every adapted layer of the model."""
    return {path: module for path, module in model.named_modules() if isinstance(module, DiaBloLinear)}


@contextmanager
def diablo_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Switches every DiaBlo layer off for the block: the model computes its base alone.

    No second copy of the base is made: DPO's reference log-probabilities come from the model being
    trained, with its adapter off. The previous state of each layer is restored on exit.

    Raises:
        RuntimeError: On a forward through a merged layer (its update lives in the weight).
    """
    modules = list(diablo_modules(model).values())
    before = [module.disabled for module in modules]
    for module in modules:
        module.disabled = True
    try:
        yield model
    finally:
        for module, state in zip(modules, before, strict=True):
            module.disabled = state


def merge_diablo(model: nn.Module) -> None:
    """Adds every layer's update into its frozen weight (idempotent); the forward then skips the branch.

    Raises:
        ConfigError: ``merge_into_quantized_base`` when a base layer is quantized (nothing is merged).
    """
    modules = diablo_modules(model).values()
    quantized = next((module for module in modules if module.quantization is not None), None)
    if quantized is not None:
        quantized.merge()  # raises the error that explains what to do
    for module in modules:
        module.merge()


def unmerge_diablo(model: nn.Module) -> None:
    """Removes every merged update from its frozen weight (idempotent)."""
    for module in diablo_modules(model).values():
        module.unmerge()


def unload_diablo(model: nn.Module, merge: bool = False) -> nn.Module:
    """Replaces every DiaBloLinear by its base ``nn.Linear`` (merged first if ``merge``); returns the model.

    With ``merge=True`` the result is a plain model whose weights include the update (for export);
    otherwise the original base weights are restored.

    Raises:
        ConfigError: ``merge_into_quantized_base`` with ``merge=True`` over a quantized base.
    """
    if merge:
        merge_diablo(model)
    for path, module in diablo_modules(model).items():
        if merge:
            module.merge()
        else:
            module.unmerge()
        parent_path, _, child_name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), child_name, module.base)
    if hasattr(model, CONFIG_ATTRIBUTE):
        delattr(model, CONFIG_ATTRIBUTE)
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (after apply_diablo: the adapter blocks only)."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``"<module path>.blocks"`` -> detached blocks (views sharing storage with the model)."""
    return {f"{path}.blocks": module.blocks.detach() for path, module in diablo_modules(model).items()}


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copies adapter blocks into the model, strictly.

    Tensors are cast to each layer's blocks dtype and device. A merged layer is unmerged, loaded and merged
    again, so its weight reflects the new blocks.

    Raises:
        AdapterError: ``adapter_missing_tensor``, ``adapter_extra_tensor`` or ``adapter_shape_mismatch``,
            naming the tensors; nothing is copied in that case.
    """
    modules = {f"{path}.blocks": module for path, module in diablo_modules(model).items()}
    missing = sorted(set(modules) - set(state))
    if missing:
        raise AdapterError(f"adapter lacks tensors for {missing}", code="adapter_missing_tensor")
    extra = sorted(set(state) - set(modules))
    if extra:
        raise AdapterError(f"adapter has tensors for unknown modules {extra}", code="adapter_extra_tensor")
    for key, module in modules.items():
        if tuple(state[key].shape) != tuple(module.blocks.shape):
            raise AdapterError(
                f"{key}: adapter shape {list(state[key].shape)} != model shape {list(module.blocks.shape)}",
                code="adapter_shape_mismatch",
            )
    with torch.no_grad():
        for key, module in modules.items():
            was_merged = module.merged
            module.unmerge()
            module.blocks.copy_(state[key])
            if was_merged:
                module.merge()
