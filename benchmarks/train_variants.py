"""The models compared by train_throughput.py and the training step they all take.

Variants: the no-adapter floor, DiaBlo N=64 (einsum and fused forward) and PEFT LoRA (matched and r=32).
Every variant takes the service's step: response-only loss through
``diablo_core.training.loss.accumulate_gradients``,
gradient clipping at 1.0, AdamW over the trainable parameters, ``zero_grad``.

Precision as the service trains: in ``bf16`` every frozen weight is stored in bf16 and the trainable ones
(DiaBlo blocks, LoRA A/B) stay fp32 master weights, as ``diablo_core.training.mixed_precision`` holds them
(PEFT keeps its adapter weights in fp32 on a bf16 base by default too).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.model_shapes import RANDOM_CONFIGS
from diablo_core.data.tokenization import IGNORE_INDEX, TokenizedExample
from diablo_core.methods.diablo.config import DEFAULT_TARGET_MODULES, DiaBloConfig
from diablo_core.methods.diablo.layer import block_layout
from diablo_core.methods.diablo.model import apply_diablo, diablo_modules
from diablo_core.models.loading import load_base_model
from diablo_core.precision.hardware import torch_dtype
from diablo_core.training.loss import StepStats, accumulate_gradients

VARIANTS = ("floor", "diablo", "lora-matched", "lora-r32", "diablo-fused")
# Adapter dropout 0.05, DiaBlo's default: the fused (dropped-position) path, the einsum path, and LoRA.
OPTIONAL_VARIANTS = ("diablo-dropout", "diablo-dropout-einsum", "lora-dropout")
NUM_BLOCKS = 64


@dataclass
class Variant:
    """One benchmark contestant: the module the step calls and the optimizer over its trainable parameters."""

    name: str
    model: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer | None
    precision: str = "fp32"

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.params)


def load_plain(name: str, device: str, dtype: torch.dtype) -> Any:
    """The base model: ``"default"`` (SmolLM2-135M-Instruct) or a random Llama from ``RANDOM_CONFIGS``."""
    if name in RANDOM_CONFIGS:
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(**RANDOM_CONFIGS[name])).to(device=device, dtype=dtype)
    return load_base_model(name, device=device, dtype=dtype).model


def _target_linears(model: nn.Module) -> list[nn.Linear]:
    return [
        module
        for path, module in model.named_modules()
        if isinstance(module, nn.Linear) and path.rpartition(".")[2] in DEFAULT_TARGET_MODULES
    ]


def lora_parameter_count(model: nn.Module, rank: int) -> int:
    """Parameters LoRA of ``rank`` adds on the default targets: ``rank * (in + out)`` per target linear."""
    return sum(rank * (linear.in_features + linear.out_features) for linear in _target_linears(model))


def matched_rank(model: nn.Module, target: int) -> int:
    """The LoRA rank whose parameter count is nearest ``target`` (DiaBlo's count) on the same targets."""
    per_rank = lora_parameter_count(model, 1)
    low = max(1, target // per_rank)
    return min((low, low + 1), key=lambda r: abs(r * per_rank - target))


def diablo_count(model: nn.Module) -> int:
    """DiaBlo N=64 parameter count on the default targets of an unadapted model."""
    total = 0
    for linear in _target_linears(model):
        count, block_in, block_out = block_layout(linear.in_features, linear.out_features, NUM_BLOCKS)
        total += count * block_in * block_out
    return total


def with_lora(model: nn.Module, rank: int, dropout: float = 0.0) -> Any:
    """PEFT LoRA of ``rank`` (alpha = 2 * rank) on the DiaBlo default targets; returns the PeftModel."""
    targets = list(DEFAULT_TARGET_MODULES)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout, target_modules=targets)
    return get_peft_model(model, config)


def _adapt(model: nn.Module, variant: str) -> nn.Module:
    """Adapts ``model`` in place for ``variant`` and returns the module the training step calls."""
    if variant == "floor":
        model.requires_grad_(False)
        model.enable_input_require_grads()  # backward runs through every layer, updating nothing
        return model
    if variant.startswith("diablo"):
        dropout = DiaBloConfig().dropout if variant.startswith("diablo-dropout") else 0.0
        apply_diablo(model, DiaBloConfig(num_blocks=NUM_BLOCKS, dropout=dropout))
        for layer in diablo_modules(model).values():
            layer.blocks.data.normal_(std=1e-3)  # non-zero, as after some training
            layer.fused = variant in ("diablo-fused", "diablo-dropout")
        return model
    if variant in ("lora-matched", "lora-r32", "lora-dropout"):
        rank = 32 if variant == "lora-r32" else matched_rank(model, diablo_count(model))
        dropout = DiaBloConfig().dropout if variant == "lora-dropout" else 0.0
        # PEFT injects the LoRA layers into the model itself; calling it directly (not the PeftModel,
        # whose **kwargs forward hides ``logits_to_keep``) gives LoRA the same response-only output head.
        return with_lora(model, rank, dropout).get_base_model()
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS + OPTIONAL_VARIANTS}")


def make_variant(
    base: nn.Module, variant: str, copy_base: bool = True, precision: str = "fp32", name: str | None = None
) -> Variant:
    """Builds ``variant`` from ``base`` (deep-copied unless ``copy_base`` is False), in train mode.

    ``precision`` (resolved) stores the frozen weights in its dtype, trainable ones in fp32; ``name`` labels
    the result (default: ``variant``).
    """
    torch.manual_seed(0)  # same random blocks / LoRA init whatever the order of construction
    model = _adapt(copy.deepcopy(base) if copy_base else base, variant).train()
    params = [p for p in model.parameters() if p.requires_grad]
    _store_frozen(model, torch_dtype(precision))
    optimizer = (
        torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0) if params else None
    )
    return Variant(name or variant, model, params, optimizer, precision)


def _store_frozen(model: nn.Module, dtype: torch.dtype) -> None:
    """Frozen parameters to ``dtype``, trainable ones to fp32 (master weights); buffers keep theirs."""
    with torch.no_grad():
        for parameter in model.parameters():
            wanted = torch.float32 if parameter.requires_grad else dtype
            if parameter.is_floating_point() and parameter.dtype != wanted:
                parameter.data = parameter.data.to(wanted)


def synthetic_batch(vocab: int, batch: int, seq_len: int, response_len: int) -> list[TokenizedExample]:
    """``batch`` random rows of ``seq_len`` tokens whose last ``response_len`` tokens are the response."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=generator).tolist()  # (B, T)
    prompt = seq_len - response_len
    return [TokenizedExample(row, [IGNORE_INDEX] * prompt + row[prompt:]) for row in ids]


def train_step(variant: Variant, batch: list[TokenizedExample], device: str) -> StepStats:
    """One optimizer step of the service's loop (one micro-batch; the floor only runs forward/backward).

    Returns:
        The step's mean response loss and token accuracy (before the update).
    """
    stats = accumulate_gradients(variant.model, batch, len(batch), 0, device, variant.precision)
    if variant.optimizer is None:
        return stats
    torch.nn.utils.clip_grad_norm_(variant.params, 1.0)
    variant.optimizer.step()
    variant.optimizer.zero_grad(set_to_none=True)
    return stats
