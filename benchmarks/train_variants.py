"""The models compared by train_throughput.py: the no-adapter floor, DiaBlo (einsum/fused) and PEFT LoRA."""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from diablo_core.base_models import load_base_model
from diablo_core.config import DEFAULT_TARGET_MODULES, DiaBloConfig
from diablo_core.model import apply_diablo, diablo_modules, trainable_parameters

VARIANTS = ("floor", "diablo", "diablo-fused", "lora-matched", "lora-r32")
NUM_BLOCKS = 64


def load_plain(name: str, device: str, dtype: torch.dtype) -> Any:
    """The base model: ``"default"`` (SmolLM2-135M-Instruct) or ``"tiny"`` (a random 2-layer Llama)."""
    if name == "tiny":
        torch.manual_seed(0)
        config = LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=256,
        )
        return LlamaForCausalLM(config).to(device=device, dtype=dtype)
    return load_base_model(name, device=device, dtype=dtype).model


def lora_parameter_count(model: Any, rank: int) -> int:
    """Parameters LoRA of ``rank`` adds on the default targets: ``rank * (in + out)`` per target linear."""
    total = 0
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and path.rpartition(".")[2] in DEFAULT_TARGET_MODULES:
            total += rank * (module.in_features + module.out_features)
    return total


def matched_rank(model: Any, target: int) -> int:
    """The LoRA rank whose parameter count is nearest ``target`` (DiaBlo's count) on the same targets."""
    per_rank = lora_parameter_count(model, 1)
    low = max(1, target // per_rank)
    return min((low, low + 1), key=lambda r: abs(r * per_rank - target))


def diablo_count(model: Any) -> int:
    """DiaBlo N=64 parameter count on the default targets, computed on a throw-away copy-free pass."""
    from diablo_core.layer import block_layout

    total = 0
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and path.rpartition(".")[2] in DEFAULT_TARGET_MODULES:
            count, block_in, block_out = block_layout(module.in_features, module.out_features, NUM_BLOCKS)
            total += count * block_in * block_out
    return total


def with_lora(model: Any, rank: int, dropout: float = 0.0) -> Any:
    """PEFT LoRA of ``rank`` (alpha = 2 * rank) on the DiaBlo default targets."""
    targets = list(DEFAULT_TARGET_MODULES)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout, target_modules=targets)
    return get_peft_model(model, config)


def build_variant(name: str, variant: str, device: str, dtype: torch.dtype) -> tuple[Any, int]:
    """Returns ``(model ready to train, trainable parameter count)`` for one benchmark variant.

    Adapter dropout is 0 everywhere so that the variants compute the same kind of step (and the fused
    DiaBlo path is taken).
    """
    model = load_plain(name, device, dtype)
    if variant == "floor":
        model.requires_grad_(False)
        model.enable_input_require_grads()  # backward runs through every layer, updating nothing
        return model, 0
    if variant in ("diablo", "diablo-fused"):
        apply_diablo(model, DiaBloConfig(num_blocks=NUM_BLOCKS, dropout=0.0))
        for layer in diablo_modules(model).values():
            layer.blocks.data.normal_(std=1e-3)  # non-zero, as after some training
            layer.fused = variant == "diablo-fused"
        return model, trainable_parameters(model)
    if variant.startswith("lora"):
        rank = 32 if variant == "lora-r32" else matched_rank(model, diablo_count(model))
        model = with_lora(model, rank)
        return model, sum(p.numel() for p in model.parameters() if p.requires_grad)
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
