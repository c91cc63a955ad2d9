"""Trainable parameter counts against the paper's numbers, on models built on the meta device."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.model_shapes import LLAMA2_7B
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, trainable_parameters

SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}


def meta_model(**config: object) -> LlamaForCausalLM:
    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**config))


def test_llama2_7b_at_64_blocks_has_the_papers_count() -> None:
    model = meta_model(**LLAMA2_7B)
    total = sum(p.numel() for p in model.parameters())
    names = apply_diablo(model, DiaBloConfig(num_blocks=64))
    assert len(names) == 32 * 5
    assert trainable_parameters(model) == 70_254_592
    assert round(100 * 70_254_592 / total, 2) == 1.04
    assert all(p.is_meta for p in model.parameters())


def test_llama2_7b_at_128_blocks_has_half() -> None:
    model = meta_model(**LLAMA2_7B)
    apply_diablo(model, DiaBloConfig(num_blocks=128))
    # q/k/v: 128 blocks of 32x32; up/down: 128 blocks of 32x86 (ceil(11008 / 128) = 86)
    assert trainable_parameters(model) == 32 * (3 * 128 * 32 * 32 + 2 * 128 * 32 * 86) == 35_127_296
    assert trainable_parameters(model) * 2 == 70_254_592


def test_default_model_shape_at_64_blocks_has_1_09m() -> None:
    model = meta_model(**SMOLLM2_135M)
    apply_diablo(model, DiaBloConfig())
    # q 576->576: 64x9x9, k/v 576->192: 64x9x3, up/down 576<->1536: 64x9x24
    assert trainable_parameters(model) == 30 * (5184 + 2 * 1728 + 2 * 13824) == 1_088_640
