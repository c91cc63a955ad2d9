"""OpenAI's preference format for DPO: one prompt, a preferred answer and a non-preferred one (torch-free).

A line is ``{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", "content": ...}],
"non_preferred_output": [{"role": "assistant", "content": ...}]}``. Each pair is tokenized as two chat
examples that share the prompt; only the answer's tokens carry labels (the prompt's assistant turns too are
context, not learned). ``datasets`` validates the lines; ``training.dpo`` trains on the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diablo_core.data.tokenization import TokenizedExample, count_example_tokens, tokenize_example

PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output")
OUTPUT_KEYS = ("preferred_output", "non_preferred_output")
PREFERENCE_EXAMPLE = (
    '{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", "content": ...}], '
    '"non_preferred_output": [{"role": "assistant", "content": ...}]}'
)


@dataclass
class PreferencePair:
    """The tokens of one preference example: the prompt with the preferred and with the other answer."""

    chosen: TokenizedExample
    rejected: TokenizedExample

    @property
    def num_tokens(self) -> int:
        """Tokens in both sequences (what a DPO step processes)."""
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)

    @property
    def longest(self) -> int:
        """Tokens in the longer of the two sequences (what ``max_length`` bounds)."""
        return max(len(self.chosen.input_ids), len(self.rejected.input_ids))


def is_preference(example: dict[str, Any]) -> bool:
    """Whether a parsed line announces the preference format (by its keys)."""
    return any(key in example for key in PREFERENCE_KEYS)


def preference_conversations(example: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two chat examples of a valid preference line: prompt + preferred, prompt + non-preferred."""
    prompt = [
        {**message, "weight": 0} if message.get("role") == "assistant" else message
        for message in example["input"]["messages"]
    ]
    return (
        {"messages": [*prompt, *example["preferred_output"]]},
        {"messages": [*prompt, *example["non_preferred_output"]]},
    )


def tokenize_preference(
    example: dict[str, Any], tokenizer: Any, max_length: int | None = 256
) -> PreferencePair:
    """Tokenize a valid preference line into its chosen and rejected sequences, each cut to ``max_length``."""
    chosen, rejected = preference_conversations(example)
    return PreferencePair(
        tokenize_example(chosen, tokenizer, max_length), tokenize_example(rejected, tokenizer, max_length)
    )


def count_preference_tokens(example: dict[str, Any], tokenizer: Any) -> tuple[int, int]:
    """The tokens of :func:`tokenize_preference`'s two sequences (untruncated), counted without labels."""
    chosen, rejected = preference_conversations(example)
    return count_example_tokens(chosen, tokenizer), count_example_tokens(rejected, tokenizer)


def example_tokens(
    example: dict[str, Any], tokenizer: Any, labels: bool
) -> tuple[TokenizedExample | PreferencePair | None, tuple[int, ...]]:
    """Any example (chat, prompt/completion or preference) tokenized, None unless ``labels``, and its
    sequences' lengths (two for a preference). Without labels the lengths come from one render each."""
    preference = is_preference(example)
    if not labels:
        if preference:
            return None, count_preference_tokens(example, tokenizer)
        return None, (count_example_tokens(example, tokenizer),)
    if preference:
        pair = tokenize_preference(example, tokenizer, max_length=None)
        return pair, (len(pair.chosen.input_ids), len(pair.rejected.input_ids))
    tokens = tokenize_example(example, tokenizer, max_length=None)
    return tokens, (len(tokens.input_ids),)
