"""Tiny Llama models built from a config (no files, no hub) for fast diablo_core tests."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.model_shapes import TINY_LLAMA


def tiny_llama_config(**overrides: object) -> LlamaConfig:
    """A 2-layer Llama config (hidden 64, intermediate 128, 4 heads, 2 kv heads); keywords override it."""
    return LlamaConfig(**{**TINY_LLAMA, **overrides})


def tiny_llama(seed: int = 0, **overrides: object) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama in eval mode; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(**overrides)).eval()


def token_batch(batch: int = 2, length: int = 12, vocab: int = 256, seed: int = 1) -> torch.Tensor:
    """Random input ids of shape (batch, length)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator)


def randomize_blocks(model: torch.nn.Module, seed: int = 2, scale: float = 0.05) -> None:
    """Fills every DiaBlo block tensor with random non-zero values (as if trained)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".blocks"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
