"""What the engine counts (for monitoring, benchmarks and tests) and the model's context window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Tokenizers without a known limit report a huge sentinel (transformers uses 1e30) as model_max_length.
_UNKNOWN_LENGTH = 10**9


@dataclass
class EngineStats:
    """Counters of the engine thread (read them for monitoring and benchmarks)."""

    prefills: int = 0  # groups of new rows whose prompts are fully in the cache
    prefill_chunks: int = 0  # prefill forwards, each of at most prefill_chunk_tokens prompt tokens
    decode_steps: int = 0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    peak_batch_size: int = 0
    admitted: int = 0  # requests that got a row
    cancelled: int = 0  # requests ended by handle.cancel(), waiting or running
    isolation_retries: int = 0  # shared decode forwards that failed and were rerun row by row


def model_context_length(model: Any, tokenizer: Any) -> int | None:
    """The smaller known limit of the model config's max_position_embeddings and the tokenizer's."""
    limits = [
        getattr(getattr(model, "config", None), "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    known = [limit for limit in limits if isinstance(limit, int) and 0 < limit < _UNKNOWN_LENGTH]
    return min(known, default=None)
