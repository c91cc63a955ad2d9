"""A tiny byte-level tokenizer with SmolLM2's ChatML template, built in code (no files, no hub).

Every byte is one token (ids 0-255, no merges), so multi-byte characters span several tokens, which
exercises the streaming decoder. Special tokens follow at 256+.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from diablo_core.data.tokenization import IGNORE_INDEX, TokenizedExample

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test assistant<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tiny_tokenizer(chat_template: str | None = CHATML_TEMPLATE) -> PreTrainedTokenizerFast:
    """Build a byte-level tokenizer (259 tokens) whose eos is ``<|im_end|>`` and pad ``<|endoftext|>``."""
    vocab = {char: index for index, char in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocab = {char: index for index, char in enumerate(sorted(vocab))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def make_tiny_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer random Llama with ``vocab_size`` outputs, in eval mode."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=512,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 3,
    )
    return LlamaForCausalLM(config).eval()


def learned_segments(example: TokenizedExample, tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """Decode each contiguous run of labelled positions separately."""
    segments, current = [], []
    for label in [*example.labels, IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            segments.append(tokenizer.decode(current))
            current = []
    return segments
