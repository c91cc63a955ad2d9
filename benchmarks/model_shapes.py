"""Shapes of the random-weight Llamas that benchmarks (and the unit tests' tiny models) are built from."""

from __future__ import annotations

# The tiny Llama of the unit tests (tests/core/tiny.py): 2 layers, hidden 64, 4 heads, 2 kv heads.
TINY_LLAMA: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
}
# Random-weight Llamas, for speed and memory only: "tiny" for tests, "llama-1b" (TinyLlama shape) for GPUs.
RANDOM_CONFIGS: dict[str, dict[str, int]] = {
    "tiny": TINY_LLAMA,
    "llama-1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
    },
}
# LLaMA-2-7B's shape: the paper's trainable-parameter counts (tests/core/test_param_count.py) and the NF4
# memory benchmark (benchmarks/quantized_7b.py).
LLAMA2_7B: dict[str, int] = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
